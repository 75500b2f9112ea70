"""The NetBSD backend: libc ``__clone(fn, stack, flags, arg)`` with NetBSD's rules.

What NetBSD's kernel does (``sys___clone``, NetBSDfr/NetBSD-src:sys/kern/kern_fork.c
rev. 1.234): it maps CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND and
CLONE_VFORK to FORK_SHAREVM/SHARECWD/SHAREFILES/SHARESIGS/PPWAIT and takes the
exit signal from the low byte (CLONE_CSIGNAL).  It answers EINVAL for exactly
four things: CLONE_PTRACE, SIGHAND without VM, an exit signal of _NSIG (64) or
more, and (since a revision between 1.231 and 1.234) CLONE_FILES while the
descriptor table holds close-on-fork descriptors.  **Every other bit is
silently ignored** (namespaces, THREAD, PIDFD...): portclone refuses them.

The call: libc's ``__clone`` (``clone`` is its weak alias, declared only under
_GNU_SOURCE: NetBSD/src:include/sched.h), which insists on a function and a
stack (EINVAL otherwise) and runs fn(arg) on that stack in the child
(NetBSD/src:lib/libc/arch/{x86_64,i386,aarch64}/sys/__clone.S).  The raw
``__clone`` system call would also accept a NULL stack and continue the child
on a copy of the caller's stack (cpu_lwp_fork moves the stack pointer only for
a non-NULL stack), but that call differs from Linux's; libc's does not.  So the
child starts on a small stack of its own and jumps straight back onto its copy
of the caller's stack (``_clone.c``, libc_clone), then goes on like a fork
child.  glibc's ``clone()`` has the same signature and Linux's flag values are
NetBSD's: on Linux this backend runs the very same C with NetBSD's rules, so
downstream projects can test their NetBSD paths on a Linux runner.

Children whose exit signal is not SIGCHLD (0 included) are reaped with
WALLSIG, NetBSD's __WALL (sys/sys/wait.h; kern_exit.c find_stopped_child).
"""

from __future__ import annotations

import errno
import functools
import os

from .._common import LINUX, NETBSD, PLATFORM, TYPE_CHECKING, WINDOWS

if not WINDOWS:  # loaded now, not after a chroot (docs/backends.md)
    import fcntl

from .._backend import Backend
from .._child import Child
from .._childside import flush_std_streams, run_child
from .._errors import InvalidFlagsError, Refusal, Stage
from .._flags import CloneFlags
from .._loader import native_status
from .._validate import Request

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

    from .._plan import SpawnPlan
    from .._setup import ChildSetup

__all__ = ["NetBSDBackend"]

#: NetBSD's _NSIG (NetBSDfr/NetBSD-src:sys/sys/signal.h): exit signals are 0.._NSIG-1.
NETBSD_NSIG = 64

_FILES = int(CloneFlags.CLONE_FILES)
_VM = int(CloneFlags.CLONE_VM)
_VFORK = int(CloneFlags.CLONE_VFORK)
# FD_CLOFORK, where Python exposes it; Linux has no close-on-fork descriptors.  Where a
# NetBSD Python lacks the constant, the kernel's EINVAL is translated after the call.
_CLOFORK = getattr(__import__("fcntl"), "FD_CLOFORK", None) if os.name == "posix" else None


class NetBSDBackend(Backend):
    name = "netbsd"
    #: CLONE_FILES is refused while close-on-fork descriptors are open
    state_dependent = 0 if _CLOFORK is None else _FILES

    @classmethod
    def why_unusable(cls) -> Optional[str]:
        why = super().why_unusable()
        if why is None and not (NETBSD or LINUX):
            why = f"the netbsd backend needs NetBSD (or Linux, to test its rules), this is {PLATFORM}"
        if why is None:
            native, why = native_status()
            if why is None and not hasattr(native, "libc_clone"):
                why = "portclone._native was built without libc clone()"
        return why

    def __init__(self) -> None:
        super().__init__()
        self._native: Any = native_status()[0]

    @property
    def emulated(self) -> bool:
        """True on Linux: glibc's clone() with NetBSD's rules."""
        return not NETBSD

    def refusals(self, request: Request, exec_child: bool = False) -> List[Refusal]:
        found = super().refusals(request, exec_child)
        if not 0 <= request.exit_signal < NETBSD_NSIG:
            found.append(
                Refusal(
                    f"NetBSD's exit signals are 0 to {NETBSD_NSIG - 1} (its kernel answers EINVAL)",
                    field="exit_signal",
                    invalid=True,
                )
            )
        if request.flags & _FILES:
            held = close_on_fork_fds()
            if held:
                found.append(
                    Refusal(
                        "NetBSD refuses to share a descriptor table that holds close-on-fork "
                        f"descriptors (kern_fork.c rev. 1.234): fds {', '.join(map(str, held))}",
                        CloneFlags.CLONE_FILES,
                        invalid=True,
                    )
                )
        if request.set_tid is not None:
            found.append(Refusal("NetBSD's clone cannot choose the child's pid", field="set_tid"))
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
        child = Child(0, None, request.flags, request.exit_signal, self.name, "clone", True)
        runner = functools.partial(run_child, fn, args, kwargs, self._native.unblock_signals)
        flush_std_streams()
        try:
            # the child runs runner() and _exits in C; the parent's child is filled in
            self._native.libc_clone(child, runner, int(request.flags) | request.exit_signal)
        except OSError as e:
            raise self.start_failure(e, request, syscall="clone", stage=Stage.CLONE) from None
        return child

    def spawn(self, request: Request, plan: SpawnPlan) -> Child:
        # CLONE_VM|CLONE_VFORK through libc's clone, the child running C only (_spawn_child.c)
        flags = int(request.flags) | _VM | _VFORK
        child = Child(0, None, CloneFlags(flags), request.exit_signal, self.name, "clone", True)
        native = self._native
        try:
            native.spawn(
                child,
                mode=native.MODE_LEGACY,
                flags=flags,
                exit_signal=request.exit_signal,
                cgroup_fd=-1,
                set_tid=None,
                legacy_ok=True,
                paths=plan.paths,
                argv=plan.argv,
                envp=plan.envp,
                cwd=plan.cwd,
                fds=plan.fds,
                keep=plan.keep,
                close_fds=plan.close_fds,
                setup=None,
                restore_signals=plan.restore_signals,
                process_group=plan.process_group,
            )
        except OSError as e:
            raise self.start_failure(e, request, plan, syscall="clone", flags=flags) from None
        return child

    def refine(self, error: OSError, request: Request, plan: Optional[SpawnPlan]) -> Optional[Exception]:
        """NetBSD's close-on-fork rule, which Python cannot check beforehand: its clone
        refuses to share a descriptor table holding close-on-fork descriptors (EINVAL)."""
        at_clone = getattr(error, "portclone_stage", Stage.CLONE) == Stage.CLONE
        if NETBSD and at_clone and error.errno == errno.EINVAL and request.flags & CloneFlags.CLONE_FILES:
            return InvalidFlagsError(
                self.name,
                [
                    Refusal(
                        "NetBSD refuses to share a descriptor table that holds close-on-fork "
                        "descriptors (kern_fork.c, sys___clone)",
                        CloneFlags.CLONE_FILES,
                    )
                ],
            )
        return None

    def details(self) -> Dict[str, Any]:
        return {
            "libc_clone": (
                "glibc clone() checked against NetBSD's rules (NetBSD emulated on Linux)"
                if self.emulated
                else "NetBSD libc clone()"
            ),
            "close_on_fork_rule": "checked"
            if _CLOFORK is not None
            else "not applicable (no close-on-fork descriptors here)",
        }


def close_on_fork_fds() -> Tuple[int, ...]:
    """The open descriptors marked close-on-fork, where such a mark exists."""
    if _CLOFORK is None:
        return ()
    held = []
    for name in os.listdir("/dev/fd"):
        fd = int(name)
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFD) & _CLOFORK:
                held.append(fd)
        except OSError:
            pass
    return tuple(held)


#: This module's backend, as portclone._registry finds it.
BACKEND = NetBSDBackend
