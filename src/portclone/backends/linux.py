"""The Linux backend: clone3(2), falling back to clone(2), through ``_native``.

Requests that are plain fork semantics go through libc's fork() (with its
malloc/stdio protections) and get their pidfd from pidfd_open; everything
else goes through clone3, or legacy clone where clone3 is missing (ENOSYS,
remembered) or refused by a seccomp filter (EPERM) and the request fits it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os

from .._backend import Backend
from .._check import build
from .._child import Child
from .._childside import flush_std_streams, reset_caught_handlers, run_child
from .._common import LINUX, PLATFORM, TYPE_CHECKING
from .._errors import TRANSIENT_ERRNOS, Refusal, Stage, UnsupportedFlagError, not_now
from .._flags import CLONE3_ONLY, INFO, CloneFlags, describe
from .._loader import native_status
from .._sigfd import hold_signals, release_signals
from .._validate import Request

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

    from .._plan import SpawnPlan
    from .._setup import ChildSetup

__all__ = ["LinuxBackend"]

_PIDFD = int(CloneFlags.CLONE_PIDFD)
_VM = int(CloneFlags.CLONE_VM)
_VFORK = int(CloneFlags.CLONE_VFORK)
_FILES = int(CloneFlags.CLONE_FILES)
_PARENT = int(CloneFlags.CLONE_PARENT)
_CLEAR_SIGHAND = int(CloneFlags.CLONE_CLEAR_SIGHAND)
_NEWTIME = int(CloneFlags.CLONE_NEWTIME)


class LinuxBackend(Backend):
    name = "linux"

    @classmethod
    def why_unusable(cls) -> Optional[str]:
        why = super().why_unusable()
        if why is None and not LINUX:
            why = f"the linux backend needs Linux, this is {PLATFORM}"
        return why or native_status()[1]

    def __init__(self) -> None:
        super().__init__()
        self._native: Any = native_status()[0]

    # -- probes: each really makes the call -----------------------------------
    def clone3_errno(self) -> int:
        """What clone3(NULL, 0) answers: EINVAL means clone3 is usable."""
        return int(self._native.probe_clone3())

    def clone3_missing(self) -> Optional[str]:
        """Why clone3 cannot be used here, or None."""
        err = self.clone3_errno()
        if err == errno.EINVAL:
            return None
        if err == errno.ENOSYS:
            return (
                "this needs clone3, which the running kernel lacks (ENOSYS: Linux older "
                "than 5.3, or a seccomp filter hiding it)"
            )
        if err == errno.EPERM:
            return "this needs clone3, which a seccomp filter refuses here (EPERM)"
        return f"this needs clone3, which answers {errno.errorcode.get(err, err)} here"

    def pidfd_available(self) -> bool:
        return _pidfd_available()

    def has_feature(self, name: str) -> bool:
        if name == "thread_pidfds":
            return _thread_pidfds()
        raise ValueError(f"no probe for kernel feature {name!r}")

    def why_refused(self, flag: CloneFlags, exec_child: bool = False) -> Optional[str]:
        reason = super().why_refused(flag, exec_child)
        if reason is not None:
            return reason
        info = INFO[int(flag)]
        if info.ns:
            missing = _ns_missing(info.ns)
            if missing is not None:
                return missing
        if info.clone3_only:
            missing = self.clone3_missing()
            if missing is None and exec_child and not self._native.HAVE_CLONE3_SPAWN:
                missing = (
                    f"exec children need clone3 with a new stack, which portclone "
                    f"does not do on {self._native.ARCH} (libc's clone is used)"
                )
            return missing
        if flag == CloneFlags.CLONE_PIDFD and not self.pidfd_available():
            return "the running kernel gives no pidfds (Linux 5.3 or later does)"
        return None

    def refusals(self, request: Request, exec_child: bool = False) -> List[Refusal]:
        found = super().refusals(request, exec_child)
        if request.set_tid is not None:
            missing = self.clone3_missing()
            if missing:
                found.append(Refusal(missing, field="set_tid"))
        if not exec_child and not self._native.LEGACY_CLONE_ORDER and not request.needs_clone3:
            missing = self.clone3_missing()
            if missing and not request.plain_fork:
                found.append(
                    Refusal(
                        f"{missing}, and portclone does not know legacy clone's "
                        f"argument order on {self._native.ARCH}",
                        field="architecture",
                    )
                )
        return found

    # -- launching ---------------------------------------------------------------
    def launch(
        self,
        request: Request,
        fn: Callable[..., object],
        args: Tuple[Any, ...],
        kwargs: Dict[str, Any],
        setup: Optional[ChildSetup] = None,
    ) -> Child:
        cgroup = request.cgroup
        if cgroup is None or isinstance(cgroup, int):  # the common case: nothing to open
            return self._launch(request, fn, args, kwargs, -1 if cgroup is None else cgroup, False, setup)
        with _cgroup_fd(cgroup) as cgroup_fd:
            return self._launch(request, fn, args, kwargs, cgroup_fd, True, setup)

    def _launch(
        self,
        request: Request,
        fn: Callable[..., object],
        args: Tuple[Any, ...],
        kwargs: Dict[str, Any],
        cgroup_fd: int,
        own_fd: bool,
        setup: Optional[ChildSetup],
    ) -> Child:
        native = self._native
        flags = _kernel_flags(request, setup)
        # libc's fork() for plain requests: its malloc/stdio protections make the safest child
        mode = native.MODE_FORK if request.plain_fork else native.MODE_CLONE3
        legacy_ok = bool(native.LEGACY_CLONE_ORDER) and not request.needs_clone3
        # Everything the parent needs afterwards is built before the fork (see
        # Backend.__init__ on page faults).
        child = Child(0, None, request.flags, request.exit_signal, self.name, "", not flags & _PARENT)
        prepare = None
        if own_fd or flags & _CLEAR_SIGHAND:
            close_in_child = own_fd and not flags & _FILES
            prepare = functools.partial(
                _child_setup, cgroup_fd if close_in_child else -1, bool(flags & _CLEAR_SIGHAND)
            )
        runner = functools.partial(run_child, fn, args, kwargs, native.unblock_signals, prepare)
        try:
            flush_std_streams()
            # the child runs runner() and _exits in C; the parent's child is filled in
            native.clone(
                child,
                runner,
                mode,
                flags | (_PIDFD if _pidfd_available() else 0),
                request.exit_signal,
                cgroup_fd,
                request.set_tid,
                legacy_ok,
                setup.native() if setup is not None else None,
            )
        except OSError as e:
            raise self._failure(e, request) from None
        return child

    def spawn(self, request: Request, plan: SpawnPlan) -> Child:
        # CLONE_VM always: the child costs nothing to make; CLONE_VFORK unless the
        # parent has maps to write while the child waits (Go makes the same choice:
        # golang/go:src/syscall/exec_linux.go, forkAndExecInChild1).
        options = plan.setup.options
        flags = _kernel_flags(request, plan.setup) | _VM | (0 if options.maps else _VFORK)
        if options.time_offsets is not None or (
            options.join and any(name == "time" for name, _ in options.join)
        ):
            # Linux lets no process that shares its memory enter a time namespace (setns:
            # EUSERS), so this child gets a copy, as from fork, and enters it before the
            # exec (an exec enters the one for children only on newer kernels than 6.1)
            flags &= ~_VM
        # what the child got: the request's namespaces (a time namespace the child makes
        # itself included) and the sharing flags the clone used
        child = Child(
            0,
            None,
            CloneFlags(flags | (int(request.flags) & _NEWTIME)),
            request.exit_signal,
            self.name,
            "",
            not flags & _PARENT,
        )
        if _pidfd_available():
            flags |= _PIDFD
        cgroup = request.cgroup
        if cgroup is None or isinstance(cgroup, int):  # the common case: nothing to open
            return self._spawn(request, plan, child, flags, -1 if cgroup is None else cgroup)
        with _cgroup_fd(cgroup) as cgroup_fd:
            return self._spawn(request, plan, child, flags, cgroup_fd)

    def _spawn(self, request: Request, plan: SpawnPlan, child: Child, flags: int, cgroup_fd: int) -> Child:
        native = self._native
        try:
            native.spawn(
                child,
                mode=native.MODE_CLONE3,
                flags=flags,
                exit_signal=request.exit_signal,
                cgroup_fd=cgroup_fd,
                set_tid=request.set_tid,
                legacy_ok=not request.needs_clone3,
                paths=plan.paths,
                argv=plan.argv,
                envp=plan.envp,
                cwd=plan.cwd,
                fds=plan.fds,
                keep=plan.keep,
                close_fds=plan.close_fds,
                setup=plan.setup.native(),
                restore_signals=plan.restore_signals,
                process_group=plan.process_group,
            )
        except OSError as e:
            # the clone's own flags: without CLONE_VM when the child has memory of its own
            used = None if flags & _VM else int(request.flags) & ~_VM
            raise self._failure(e, request, plan, used) from None
        return child

    def _failure(
        self, error: OSError, request: Request, plan: Optional[SpawnPlan] = None, flags: Optional[int] = None
    ) -> Exception:
        return self.start_failure(
            error,
            request,
            plan,
            syscall=self._native.SYSCALL_NAMES[getattr(error, "portclone_syscall", 1)],
            flags=flags,
        )

    def refine(self, error: OSError, request: Request, plan: Optional[SpawnPlan]) -> Optional[Exception]:
        """A clone3 the kernel lacks (ENOSYS) or a seccomp filter refuses (EPERM), for a
        request only clone3 can make, is this backend's refusal, not the kernel's error."""
        if (
            (plan is None or hasattr(error, "portclone_syscall"))
            and getattr(error, "portclone_syscall", 1) == 1
            and getattr(error, "portclone_stage", Stage.CLONE) == Stage.CLONE
            and error.errno in (errno.ENOSYS, errno.EPERM)
            and request.needs_clone3
        ):
            missing = self.clone3_missing()  # EPERM may be real; ask clone3 itself
            if missing:
                needs = request.flags & CLONE3_ONLY
                return UnsupportedFlagError(
                    self.name,
                    [Refusal(missing, needs, "" if needs else "set_tid/cgroup")],
                    supported=int(self.supported_flags),
                )
        return None

    # -- information -------------------------------------------------------------
    def details(self) -> Dict[str, Any]:
        native = self._native
        c3 = self.clone3_errno()
        offset = int(native.tid_offset())  # -1: not found; -2: could not search now
        return {
            "arch": native.ARCH,
            "syscalls": {"clone": native.SYS_CLONE, "clone3": native.SYS_CLONE3},
            "legacy_clone_order": native.LEGACY_CLONE_ORDER or "unknown (clone3 only)",
            "spawn": (
                "clone3 with CLONE_VM, the child on its own stack"
                if native.HAVE_CLONE3_SPAWN and c3 == errno.EINVAL
                else "libc clone() with CLONE_VM (clone3 is unusable here: see its line)"
                if native.HAVE_CLONE3_SPAWN
                else "libc clone() with CLONE_VM (no clone3 trampoline for this architecture)"
            ),
            "capabilities": {
                "clone3": _capability(c3 == errno.EINVAL, self.clone3_missing()),
                "pidfd": _capability(
                    self.pidfd_available(), "the running kernel gives no pidfds (Linux 5.3 does)"
                ),
                "libc_tid_repair": _capability(
                    offset >= 0,
                    "libc's cached thread id stays the parent's in raw-cloned children"
                    if offset == -1
                    else "not known yet: the search for it could not start a "
                    "thread now (memory or thread limits); it runs again at the next clone",
                ),
            },
        }

    def probe(self, flag: CloneFlags) -> Optional[str]:
        """Clone a child that exits at once with ``flag``: None, or why it failed."""
        return _probe(self, int(flag))


# The probes below are functools.cache'd, which remembers only what returns: a transient
# failure (TRANSIENT_ERRNOS: EMFILE, ENOMEM...) raises and the next call asks again.


@functools.cache
def _pidfd_available() -> bool:
    """Whether the kernel gives pidfds (pidfd_open on ourselves)."""
    pidfd_open = getattr(os, "pidfd_open", None)  # Linux only, Python 3.9+
    if pidfd_open is None:
        return False
    try:
        fd = pidfd_open(os.getpid())
    except OSError as e:
        if e.errno in TRANSIENT_ERRNOS:
            raise not_now(e, "pidfd_open(), asking whether the kernel gives pidfds") from None
        return False
    os.close(fd)
    return True


@functools.cache
def _probe(backend: LinuxBackend, flag: int) -> Optional[str]:
    """Clone a child of ``backend`` with ``flag`` that exits at once (see probe())."""
    try:
        request = build(backend, flag)
        child = backend.launch(request, _exit_zero, (), {})
    except OSError as e:
        if e.errno in TRANSIENT_ERRNOS:
            raise
        return f"{describe(flag)}: {e}"
    except (NotImplementedError, ValueError) as e:
        return f"{describe(flag)}: {e}"
    with child:
        code = child.wait(timeout=30)
    return None if code == 0 else f"{describe(flag)}: probe child exited with {code}"


@functools.cache
def _thread_pidfds() -> bool:
    """Whether clone3 gives threads pidfds.  The kernel change that allows CLONE_PIDFD with
    CLONE_THREAD (Linux 6.9) makes them PIDFD_THREAD pidfds, which arrived with it: a kernel
    whose pidfd_open takes PIDFD_THREAD (O_EXCL) allows both (torvalds/linux:kernel/fork.c,
    copy_process; kernel/pid.c, pidfd_open)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return False
    try:
        fd = pidfd_open(os.getpid(), os.O_EXCL)
    except OSError as e:
        if e.errno in TRANSIENT_ERRNOS:
            raise not_now(e, "pidfd_open(PIDFD_THREAD), asking whether threads get pidfds") from None
        return False
    os.close(fd)
    return True


def _capability(available: bool, reason: Optional[str]) -> Dict[str, Any]:
    return {"available": available, "reason": None if available else reason}


def _kernel_flags(request: Request, setup: Optional[ChildSetup]) -> int:
    """The flags the clone itself gets: a time namespace with offsets is made by the child
    (unshare, then the offsets, then it enters it: portclone._setup), not by the clone,
    which would freeze its offsets at zero."""
    flags = int(request.flags)
    if setup is not None and setup.options.time_offsets is not None:
        flags &= ~int(CloneFlags.CLONE_NEWTIME)
    return flags


def _exit_zero() -> int:
    return 0


#: The pidfd ioctls that open a process's namespaces (Linux 6.11,
#: torvalds/linux:include/uapi/linux/pidfd.h), by their names under /proc/self/ns.
_PIDFD_GET_NAMESPACE = {
    "cgroup": 0xFF01,
    "ipc": 0xFF02,
    "mnt": 0xFF03,
    "net": 0xFF04,
    "pid": 0xFF05,
    "time": 0xFF07,
    "user": 0xFF09,
    "uts": 0xFF0A,
}


def _ns_missing(ns: str) -> Optional[str]:
    """Why the running kernel has no ``ns`` namespaces, or None.  /proc/self/ns answers
    where /proc is mounted; without /proc, the kernel itself (see _kernel_has_ns)."""
    if os.path.exists(f"/proc/self/ns/{ns}"):
        return None
    if os.path.isdir("/proc/self/ns"):
        return f"the running kernel has no {ns} namespaces (no /proc/self/ns/{ns}: not configured)"
    has = _kernel_has_ns(ns)
    if has is None:
        if os.path.ismount("/proc"):  # mounted, but not showing this process
            return (
                f"the mounted /proc does not show this process (it belongs to another PID "
                f"namespace), so portclone cannot tell whether the running kernel has {ns} "
                f"namespaces (mount a /proc of this PID namespace; Linux 6.11 or later tells "
                f"without it)"
            )
        return (
            f"/proc is not mounted, so portclone cannot tell whether the running kernel "
            f"has {ns} namespaces (mount /proc; Linux 6.11 or later tells without it)"
        )
    if not has:
        return f"the running kernel has no {ns} namespaces (not configured: it answers EOPNOTSUPP for them)"
    return None


@functools.cache
def _kernel_has_ns(ns: str) -> Optional[bool]:
    """Whether the kernel has ``ns`` namespaces, asked without /proc: the pidfd ioctl that
    opens this process's ``ns`` namespace succeeds, or fails with EOPNOTSUPP when the kernel
    is built without them (torvalds/linux:fs/pidfs.c, pidfd_ioctl).  None: this kernel cannot
    say (before Linux 6.11 the ioctl is unknown, ENOTTY)."""
    request = _PIDFD_GET_NAMESPACE.get(ns)
    if not LINUX or request is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        pidfd = os.pidfd_open(os.getpid())
    except OSError as e:
        if e.errno in TRANSIENT_ERRNOS:
            raise not_now(e, f"pidfd_open(), asking whether the kernel has {ns} namespaces") from None
        return None
    try:
        nsfd = fcntl.ioctl(pidfd, request)
    except OSError as e:
        if e.errno in TRANSIENT_ERRNOS:
            raise not_now(e, f"asking whether the kernel has {ns} namespaces") from None
        return False if e.errno == errno.EOPNOTSUPP else None
    finally:
        os.close(pidfd)
    os.close(nsfd)
    return True


@contextlib.contextmanager
def _cgroup_fd(cgroup: object) -> Iterator[int]:
    """The fd for clone_args.cgroup (-1: none).  A path is opened for the block and closed
    after it; signals are held until the try that closes it owns the fd, so a handler
    that raises cannot leak it."""
    if cgroup is None or isinstance(cgroup, int):
        yield -1 if cgroup is None else cgroup
        return
    path = os.fspath(cgroup)  # type: ignore[call-overload]
    mask = hold_signals()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except BaseException:
        release_signals(mask)
        raise
    try:
        release_signals(mask)  # pending handlers run here
        yield fd
    finally:
        os.close(fd)


def _child_setup(cgroup_fd: int, clear_sighand: bool) -> None:
    """First thing in the child, before the caller's function."""
    if cgroup_fd >= 0:
        os.close(cgroup_fd)  # our copy of the fd portclone opened (the parent closes its own)
    if clear_sighand:
        reset_caught_handlers()  # the kernel did; make Python's view agree


#: This module's backend, as portclone._registry finds it.
BACKEND = LinuxBackend
