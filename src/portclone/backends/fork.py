"""The fork fallback: ``os.fork`` everywhere portclone has nothing better.

This is the exact code that runs on macOS, FreeBSD, OpenBSD and on Linux when
the native extension is missing.  It honours no sharing or namespace flag:
each refusal says what would be needed instead.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys

from .._backend import Backend
from .._child import Child, register
from .._childside import exit_child, flush_std_streams, reset_caught_handlers, run_child
from .._common import LINUX, PLATFORM, TYPE_CHECKING
from .._errors import Refusal, Stage
from .._flags import SIGCHLD, CloneFlags
from .._loader import native_status, thread_count
from .._sigfd import FdGroup, close_fds, hold_signals, release_signals, signals_in
from .._validate import Request

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

    from .._plan import SpawnPlan
    from .._setup import ChildSetup

__all__ = ["ForkBackend"]

_VFORK = int(CloneFlags.CLONE_VFORK)
# Python ignores these at startup; programs expect them at default (subprocess resets them too)
_RESTORED = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))


class ForkBackend(Backend):
    name = "fork"
    # os.fork warns by itself from Python 3.12 on
    warns_on_threads = sys.version_info < (3, 12)
    empty_argv0 = "os.execve and os.posix_spawn refuse an empty argv[0]"

    def _why_not_native(self) -> str:
        if not LINUX:
            return ""
        _, why = native_status()
        return f" ({why})" if why else ""

    def why_refused(self, flag: CloneFlags, exec_child: bool = False) -> Optional[str]:
        reason = super().why_refused(flag, exec_child)
        if reason is None:
            return None
        return f"fork fallback on {PLATFORM}: {reason}{self._why_not_native()}"

    def refusals(self, request: Request, exec_child: bool = False) -> List[Refusal]:
        found = super().refusals(request, exec_child)
        fields = {}
        if request.exit_signal != SIGCHLD:
            fields["exit_signal"] = "os.fork children always signal SIGCHLD; another exit signal"
        if request.set_tid is not None:
            fields["set_tid"] = "os.fork cannot choose the child's pid; set_tid"
        for name, why in fields.items():  # these replace the base class's reasons
            found = [r for r in found if r.field != name]
            found.append(
                Refusal(
                    f"fork fallback on {PLATFORM}: {why} needs the linux backend{self._why_not_native()}",
                    field=name,
                )
            )
        return found

    def launch(
        self,
        request: Request,
        fn: Callable[..., object],
        args: Tuple[Any, ...],
        kwargs: Dict[str, Any],
        setup: Optional[ChildSetup] = None,
    ) -> Child:
        if setup is not None and setup.options.names:  # refused by the flag table first
            raise ValueError(f"the {self.name} backend sets no child up: {setup.options.names}")
        child = Child(0, None, request.flags, request.exit_signal, self.name, "fork", True)
        vfork = bool(request.flags & _VFORK)
        flush_std_streams()
        # Every signal is blocked across the fork, so that no handler can raise in the
        # child before run_child's try (see exit_child), nor in the parent before the
        # pipe below is owned by a try; the parent's mask comes back right after.
        mask = hold_signals()
        done = FdGroup()  # CLONE_VFORK's pipe: our ends still open
        try:
            try:
                if vfork:
                    # CLONE_VFORK, emulated: the child holds the write end of a
                    # close-on-exec pipe (os.pipe's fds are not inheritable); the parent
                    # reads until it closes, which happens when the child exits or execs.
                    done.extend(os.pipe())
                try:
                    child.pid = os.fork()
                except OSError as e:
                    raise self.start_failure(e, request, syscall="fork", stage=Stage.CLONE) from None
                if child.pid == 0:
                    try:
                        exit_child(
                            functools.partial(
                                run_child,
                                fn,
                                args,
                                kwargs,
                                functools.partial(release_signals, mask),
                                functools.partial(os.close, done[0]) if vfork else None,
                            )
                        )
                    finally:
                        os._exit(1)
                register(child)
                if vfork:
                    os.close(done.pop())  # the write end: the child's alone now
            finally:
                release_signals(mask)  # pending handlers run here
            while done and os.read(done[0], 1):  # EINTR is retried (PEP 475)
                pass
        finally:
            close_fds(done)
        return child

    def spawn(self, request: Request, plan: SpawnPlan) -> Child:
        child = Child(0, None, request.flags, request.exit_signal, self.name, "", True)
        # Signals stay blocked until the Child owns the new process: a handler that
        # raised in between would leave it unowned.
        mask = hold_signals()
        try:
            pid = _posix_spawn(plan, mask) if _posix_spawn_fits(plan) else None
            if pid is not None:
                child.syscall = "posix_spawn"
                child.pid = pid
                register(child)
            else:
                child.syscall = "fork"
                _fork_exec(plan, child, mask)
        except OSError as e:
            if getattr(e, "portclone_stage", None) is None:
                raise  # the preparation's (its pipe...): its message says what failed
            # posix_spawn's clone was CLONE_VM|CLONE_VFORK; fork's copies the memory
            vm = child.syscall == "posix_spawn"
            flags = int(CloneFlags.CLONE_VM) if vm else int(request.flags) & ~int(CloneFlags.CLONE_VM)
            raise self.start_failure(e, request, plan, syscall=child.syscall, flags=flags) from None
        finally:
            release_signals(mask)
        return child

    def details(self) -> Dict[str, Any]:
        _, why = native_status()
        return {"why_fork": why or f"no clone backend for {PLATFORM}"}


# Where the open fds are listed: Linux's /proc/self/fd (/dev/fd is only a link to it that
# udev makes), the /dev/fd of other systems.  Tried on every call: /proc may be unmounted.
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def _inheritable_fds() -> Optional[List[int]]:
    """The inheritable fds above 2, or None when no directory lists them (no /proc, or no
    free fd to open one with)."""
    for where in _FD_DIRS:
        try:
            names = os.listdir(where)
        except OSError:
            continue
        fds = []
        for name in names:
            fd = int(name)
            try:
                if fd > 2 and os.get_inheritable(fd):
                    fds.append(fd)
            except OSError:
                pass  # the listing's own fd, gone again
        return fds
    return None


def _close_fds_but(keep: Sequence[int]) -> None:
    """Close every fd from 3 up to the soft RLIMIT_NOFILE except ``keep``: the child's
    close_fds without a listing (as subprocess's fallback, up to the same limit)."""
    start = 3
    for fd in [*sorted(set(keep)), _max_fd()]:
        if fd >= start:
            os.closerange(start, fd)
            start = fd + 1


def _max_fd() -> int:
    try:
        limit = os.sysconf("SC_OPEN_MAX")  # the soft RLIMIT_NOFILE
    except (OSError, ValueError):
        limit = -1
    return limit if limit > 0 else 256  # as subprocess.MAXFD


def _posix_spawn_fits(plan: SpawnPlan) -> bool:
    """os.posix_spawn (flat-cost on glibc and macOS) can do exactly what is asked."""
    if not hasattr(os, "posix_spawn") or plan.cwd is not None or plan.keep:
        return False
    if any(0 <= src < 3 and src != i for i, src in enumerate(plan.fds)):
        return False  # overlapping stdio moves: fork + exec orders them safely
    if not plan.close_fds:
        return True
    if thread_count() > 1:
        return False  # another thread could open an inheritable fd after the listing below
    inheritable = _inheritable_fds()  # None: unknown, so fork + exec closes them all
    ours = set(plan.fds)
    return inheritable is not None and not [fd for fd in inheritable if fd not in ours]


def _posix_spawn(plan: SpawnPlan, mask: Any) -> Optional[int]:
    """os.posix_spawn; the program starts with ``mask``, the caller's signal mask (spawn()
    blocks every signal around this call).  None when its failure is EPERM, which does not
    say what failed: fork + exec must then do it, and say so.

    glibc 2.31 (Debian bullseye) returns EPERM for any failure of the clone it makes the
    child with (sysdeps/unix/sysv/linux/spawni.c takes ``-new_pid`` for the error, and
    ``new_pid`` is -1), so a process limit (EAGAIN) came out as a PermissionError; glibc
    2.36 returns the clone's own errno.  A real EPERM (execve's, setpgid's, or a seccomp
    filter's refusal of clone3) is said again by fork + exec, with the step that failed.
    """
    actions = [(os.POSIX_SPAWN_DUP2, src, i) for i, src in enumerate(plan.fds) if src >= 0 and src != i]
    env: Mapping[Any, Any] = plan.env_dict if plan.env_dict is not None else os.environ
    last: Optional[OSError] = None
    for path in plan.paths:
        try:
            group: Dict[str, Any] = {"setpgroup": plan.process_group} if plan.process_group >= 0 else {}
            return os.posix_spawn(
                path,
                list(plan.argv),
                env,
                file_actions=actions,
                setsigmask=signals_in(mask),
                setsigdef=_RESTORED if plan.restore_signals else (),
                **group,
            )
        except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
            if e.errno == errno.EPERM:
                return None  # which step failed, fork + exec says (see above)
            last = e if last is None or not isinstance(last, PermissionError) else last
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.ENOMEM):
                # no process could be made (a process limit, memory): as a fork failure
                e.portclone_stage = Stage.CLONE  # type: ignore[attr-defined]
            raise
    assert last is not None
    raise OSError(last.errno, last.strerror, plan.name) from None


def _fork_exec(plan: SpawnPlan, child: Child, mask: Any) -> None:
    """fork + exec, reporting failures through a close-on-exec pipe (like subprocess).

    Called with every signal blocked; the child keeps them blocked until its Python
    handlers are reset (as exec would reset them), so none can raise there, and then
    restores ``mask``.
    """
    try:
        err_r, err_w = os.pipe()
    except OSError as e:
        raise OSError(
            e.errno, f"{e.strerror}: creating portclone's internal pipe for spawn (before the fork)"
        ) from None
    try:
        pid = child.pid = os.fork()
    except OSError as e:
        os.close(err_r)
        os.close(err_w)
        e.portclone_stage = Stage.CLONE  # type: ignore[attr-defined]
        raise
    except BaseException:
        os.close(err_r)
        os.close(err_w)
        raise
    if pid > 0:
        register(child)
    if pid == 0:
        stage = Stage.FDS
        try:
            reset_caught_handlers()
            release_signals(mask)
            os.close(err_r)
            src = list(plan.fds)
            for i in range(3):  # sources among 0..2 that a dup2 would overwrite move up
                if 0 <= src[i] < 3 and src[i] != i:
                    moved = os.dup(src[i])
                    src = [moved if s == src[i] else s for s in src]
            for i, fd in enumerate(src):
                if fd == i:
                    os.set_inheritable(i, True)
                elif fd >= 0:
                    os.dup2(fd, i)
            if plan.close_fds:
                inheritable = _inheritable_fds()
                if inheritable is None:
                    _close_fds_but((*plan.keep, err_w))
                else:
                    for fd in inheritable:
                        if fd not in plan.keep:
                            os.set_inheritable(fd, False)
            for fd in plan.keep:
                os.set_inheritable(fd, True)
            if plan.restore_signals:
                for sig in _RESTORED:
                    signal.signal(sig, signal.SIG_DFL)
            if plan.process_group >= 0:
                stage = Stage.PROCESS_GROUP
                os.setpgid(0, plan.process_group)
            if plan.cwd is not None:
                stage = Stage.CHDIR
                os.chdir(plan.cwd)
            stage = Stage.EXEC
            env: Mapping[Any, Any] = plan.env_dict if plan.env_dict is not None else os.environ
            error: OSError = FileNotFoundError(2, "No such file or directory")
            for path in plan.paths:
                try:
                    os.execve(path, list(plan.argv), env)
                except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
                    error = e if not isinstance(error, PermissionError) else error
                except OSError as e:
                    error = e
                    break
            raise error
        except OSError as e:
            os.write(err_w, f"{int(stage)}:{e.errno}".encode())
        except BaseException:  # refused by Python before the call (EINVAL): a failure all the same
            os.write(err_w, f"{int(stage)}:{errno.EINVAL}".encode())
        finally:
            os._exit(127)
    os.close(err_w)
    with os.fdopen(err_r, "rb") as pipe:
        report = pipe.read()  # EOF: the exec happened (close-on-exec), or the child died
    if report:
        try:
            child.wait()
        except ChildProcessError:
            pass  # reaped by the kernel (SIGCHLD ignored): its status is the report's
        where, err = (int(x) for x in report.split(b":"))
        failure = OSError(err, os.strerror(err))
        failure.portclone_stage = Stage(where)  # type: ignore[attr-defined]
        raise failure


#: This module's backend, as portclone._registry finds it.
BACKEND = ForkBackend
