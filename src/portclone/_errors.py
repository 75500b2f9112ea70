"""portclone's exceptions, and the one place OS errors become them (``translate``)."""

from __future__ import annotations

import enum
import errno as _errno
import os
import subprocess

from ._common import PLATFORM, TYPE_CHECKING, NamedTuple
from ._flags import CloneFlags, describe

if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Sequence, Tuple

__all__ = [
    "PortcloneError",
    "Refusal",
    "Stage",
    "translate",
    "UnsupportedFlagError",
    "InvalidFlagsError",
    "TimeoutExpired",
    "BackendUnavailableError",
    "platform_string",
    "kernel_error",
    "not_now",
    "TRANSIENT_ERRNOS",
]

#: Errors that say "not now", not "never": a probe that meets one raises it and remembers
#: nothing, so the next call asks the kernel again.
TRANSIENT_ERRNOS = frozenset({_errno.EMFILE, _errno.ENFILE, _errno.ENOMEM, _errno.EAGAIN, _errno.EINTR})


def platform_string() -> str:
    """``Linux 6.18.44 x86_64``: where a refusal happened (uname(2); the platform name elsewhere)."""
    if not hasattr(os, "uname"):
        return PLATFORM
    u = os.uname()
    return f"{u.sysname} {u.release} {u.machine}"


def _rebuild_error(cls: type[BaseException], args: Tuple[Any, ...], state: Dict[str, Any]) -> BaseException:
    """Unpickle a portclone error without calling its ``__init__`` (see __reduce__)."""
    error: BaseException = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class PortcloneError(Exception):
    """Base class of portclone's own errors."""

    def __reduce__(self) -> Tuple[Any, ...]:
        # BaseException's own reduce calls cls(*self.args), which our constructors (backend,
        # refusals, ...) do not take: pickling (multiprocessing, concurrent.futures,
        # pytest-xdist) and copy.copy would fail, and a ProcessPoolExecutor would break.
        # The message and every attribute travel as they are.
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


_NO_FLAGS = CloneFlags(0)


class Refusal(NamedTuple):
    """One thing wrong with a request: the flags (or the argument, ``field``) at fault, why."""

    reason: str
    flags: CloneFlags = _NO_FLAGS
    field: str = ""
    #: the kernel refuses it everywhere (InvalidFlagsError); else only this backend or
    #: kernel cannot honour it (UnsupportedFlagError)
    invalid: bool = False

    @property
    def label(self) -> str:
        """``CLONE_NEWUSER|CLONE_FS``, or the argument's name (``exit_signal``...)."""
        return self.field or describe(int(self.flags))


class _FlagError(PortcloneError):
    def __init__(
        self, backend: str, refusals: Sequence[Refusal], *, supported: Optional[int] = None, headline: str
    ) -> None:
        offending = 0
        reasons: Dict[str, str] = {}
        for refusal in refusals:
            offending |= int(refusal.flags)
            if refusal.label in reasons:  # two reasons under one name: both are said
                reasons[refusal.label] += f"; and {refusal.reason}"
            else:
                reasons[refusal.label] = refusal.reason
        self.flags = CloneFlags(offending)
        self.backend = backend
        self.refusals = tuple(refusals)
        #: what is wrong, by flag name (or field name: ``exit_signal``, ``set_tid``...)
        self.reasons = reasons
        self.reason = "; ".join(f"{k}: {v}" for k, v in self.reasons.items())
        self.supported = None if supported is None else CloneFlags(supported)
        lines = [f"{headline} [backend {backend!r} on {platform_string()}]:"]
        lines += [f"  {k}: {v}" for k, v in self.reasons.items()]
        if self.supported is not None:
            lines.append(f"  supported here instead: {describe(int(self.supported))}")
        super().__init__("\n".join(lines))


class UnsupportedFlagError(_FlagError, NotImplementedError):
    """This backend, kernel or Python cannot honour these flags.

    Raised before anything is created.  ``.flags`` holds every offending
    flag, ``.reasons`` the reason for each (by flag or argument name),
    ``.supported`` what the backend honours instead.
    """

    def __init__(self, backend: str, refusals: Sequence[Refusal], *, supported: Optional[int] = None) -> None:
        flags = 0
        for refusal in refusals:
            flags |= int(refusal.flags)
        what = describe(flags) if flags else ", ".join(r.label for r in refusals)
        super().__init__(backend, refusals, supported=supported, headline=f"{what} cannot be honoured")


class InvalidFlagsError(_FlagError, ValueError):
    """A request the kernel refuses everywhere (its EINVAL rules), or that would break a
    promise (a spawn() option that would act on the parent).

    Raised before anything is created.
    """

    def __init__(self, backend: str, refusals: Sequence[Refusal]) -> None:
        super().__init__(backend, refusals, headline="invalid clone request")


class BackendUnavailableError(PortcloneError, LookupError):
    """A backend name that does not exist, or cannot work on this machine."""

    def __init__(self, name: str, reason: str) -> None:
        self.backend = name
        self.reason = reason
        super().__init__(f"portclone backend {name!r} is not usable on {platform_string()}: {reason}")


class TimeoutExpired(PortcloneError, subprocess.TimeoutExpired):
    """``Child.wait(timeout)`` ran out; the child is still running."""

    def __init__(self, pid: int, timeout: float, cmd: str = "") -> None:
        subprocess.TimeoutExpired.__init__(self, cmd or f"pid {pid}", timeout)
        self.pid = pid

    def __str__(self) -> str:
        return f"child {self.pid} did not exit within {self.timeout} seconds"


_HINTS = {
    _errno.EPERM: "namespaces other than user namespaces, set_tid and CLONE_INTO_CGROUP need "
    "privilege (CAP_SYS_ADMIN in the owning user namespace); a new user namespace is refused "
    "inside a chroot or when the caller's uid/gid are unmapped",
    _errno.ENOSPC: "a namespace limit was reached (nesting depth 32, or /proc/sys/user/max_*_namespaces)",
    _errno.EAGAIN: "a process limit was reached (RLIMIT_NPROC, pids cgroup or /proc/sys/kernel/threads-max)",
    _errno.EUSERS: "a namespace limit was reached",
    _errno.EEXIST: "a pid asked for with set_tid is already in use",
    _errno.EBUSY: "CLONE_INTO_CGROUP: the target cgroup has controllers enabled for its "
    "children (the no-internal-process rule) or is being removed",
    _errno.EOPNOTSUPP: "CLONE_INTO_CGROUP: the target cgroup is not a valid domain",
    _errno.ENOMEM: "the kernel could not allocate the child, or the PID namespace it would be "
    "created in has no init any more (its pid 1 has exited: pid_namespaces(7))",
    _errno.EMFILE: "the process is at its descriptor limit (RLIMIT_NOFILE), which the child's pidfd or "
    "its copy of the descriptor table needs; no child was left behind",
    _errno.ENFILE: "the system's file table is full: no pidfd for the child; no child was left behind",
    _errno.EINVAL: "the running kernel refused a request portclone's validation accepted; "
    "a namespace type may not be configured in this kernel",
    _errno.EBADF: "CLONE_INTO_CGROUP: the cgroup fd is not an open cgroup v2 directory",
}


def kernel_error(err: int, syscall: str, flags: int, exit_signal: int) -> OSError:
    """The OSError subclass for ``err`` with the request in its message."""
    hint = _HINTS.get(err)
    if err == _errno.EINVAL and flags & (CloneFlags.CLONE_NEWPID | CloneFlags.CLONE_NEWUSER):
        hint = (
            "Linux refuses CLONE_NEWPID and CLONE_NEWUSER while this thread's PID namespace for "
            "children is not its own (after its own unshare(CLONE_NEWPID) or setns into one); "
            "otherwise a namespace type may not be configured in this kernel"
        )
    text = f"{os.strerror(err)}: {syscall}(flags={describe(flags)}, exit_signal={exit_signal})"
    if hint:
        text += f": {hint}"
    return OSError(err, text)


class Stage(enum.IntEnum):
    """Where starting a child failed: an OSError's ``portclone_stage``.

    ``_native.spawn`` (``_spawn.c``) and the fork backend set it; ``tools/gen_constants.py``
    writes these values into ``_constants.h`` for the C.
    """

    CLONE = 0  # the clone (or fork) call, in the parent
    EXEC = 1
    CHDIR = 2
    FDS = 3  # moving stdio into place, marking fds close-on-exec
    HOSTNAME = 4
    JOIN = 5  # setns() into a namespace of join=
    TIME = 6  # the time namespace and its offsets
    MOUNT_PROC = 7
    PDEATHSIG = 8
    PROCESS_GROUP = 9  # setpgid() for process_group=
    PROPAGATION = 10  # every mount's propagation, for propagation= or before mount_proc=
    MAPS = -1  # the parent writing the child's uid_map, gid_map or setgroups


def translate(
    error: OSError,
    *,
    syscall: str,
    flags: int,
    exit_signal: int,
    program: str = "",
    cwd: Optional[bytes] = None,
    stage: Optional[Stage] = None,
) -> Exception:
    """The exception the caller of clone() or spawn() gets for ``error`` (_translate), an
    OSError keeping ``portclone_stage``: where the start failed (the command line tells the
    program's failures from its own by it)."""
    result = _translate(
        error,
        syscall=syscall,
        flags=flags,
        exit_signal=exit_signal,
        program=program,
        cwd=cwd,
        stage=stage,
    )
    where = getattr(error, "portclone_stage", stage)
    if where is None and hasattr(error, "portclone_syscall"):
        where = Stage.CLONE
    if isinstance(result, OSError) and where is not None:
        result.portclone_stage = Stage(where)  # type: ignore[attr-defined]
    return result


def _translate(
    error: OSError,
    *,
    syscall: str,
    flags: int,
    exit_signal: int,
    program: str = "",
    cwd: Optional[bytes] = None,
    stage: Optional[Stage] = None,
) -> Exception:
    """The exception the caller of clone() or spawn() gets for ``error``.

    ``error.portclone_stage`` (a :class:`Stage`), or else ``stage``, says where the start
    failed; an error with neither, and not from a system call (``portclone_syscall``),
    comes from preparing the start and already says what failed.  Exec-child failures become what subprocess
    raises (FileNotFoundError naming the program...).
    """
    stage = getattr(error, "portclone_stage", stage)
    if stage is None:
        if not hasattr(error, "portclone_syscall"):
            return error
        stage = Stage.CLONE
    err = error.errno or 0
    if stage == Stage.CLONE:
        return kernel_error(err, syscall, flags, exit_signal)
    if stage == Stage.EXEC:
        return OSError(err, os.strerror(err), program)
    if stage == Stage.CHDIR:
        return OSError(err, os.strerror(err), os.fsdecode(cwd or b""))
    if stage == Stage.FDS:
        return OSError(err, f"{os.strerror(err)}: setting up the child's file descriptors")
    if stage in _SETUP_STEPS:
        doing, hint = _SETUP_STEPS[Stage(stage)]
        if stage == Stage.MOUNT_PROC and err == _errno.EPERM and not flags & CloneFlags.CLONE_NEWPID:
            hint = (
                "a /proc is mounted only with privilege over the user namespace that owns its PID "
                "namespace, and the caller's PID namespace belongs to one above the child's: add "
                "CLONE_NEWPID, whose new namespace the child's user namespace then owns"
            )
        elif stage == Stage.JOIN and err == _errno.EACCES:
            hint = (
                "the calling thread enters a PID namespace of join= around the clone and must "
                "return to its own afterwards, which Linux allows only with CAP_SYS_ADMIN over "
                "the user namespace that owns it; inside a user namespace this thread has none "
                "over the namespace it came from: name the user namespace that owns it in join= "
                "too (a helper process then enters both), run the caller itself in the "
                "target's PID namespace (nsenter -p), or create the namespace from here "
                "(CLONE_NEWPID)"
            )
        elif stage == Stage.JOIN and err == _errno.EINVAL:
            hint = (
                "Linux enters a PID namespace only if it is the caller's own or a descendant of "
                "it, never an ancestor; a user namespace only if it is not the caller's own; "
                "a mount or user namespace only for a child with a filesystem context of its own"
            )
        if hint and (err == _errno.EPERM or (stage == Stage.JOIN and err in (_errno.EINVAL, _errno.EACCES))):
            doing += f" ({hint})"
        elif err == _errno.EACCES and stage == Stage.TIME:
            doing += (
                " (a process that changed its uid is not dumpable, and its children's "
                "/proc/self files are then root's: prctl(PR_SET_DUMPABLE, 1) first)"
            )
        return OSError(err, f"{os.strerror(err)}: {doing}")
    what = getattr(error, "portclone_map", "maps")
    if what == "go-ahead":
        return OSError(
            err, f"{os.strerror(err)}: the child ended while it waited for its maps (killed from outside?)"
        )
    if what == "proc":
        if err == _errno.ESRCH:
            why = "the child ended before its maps were written (killed from outside?)"
        elif err == _errno.ENOENT:
            why = "/proc is not mounted: the maps are written in the child's /proc directory"
        elif err == _errno.EACCES:
            why = (
                "this process may not read its own /proc/self/fdinfo, where the child's pidfd "
                "says which directory is the child's: before Linux 5.14 those files are root's "
                "for a process that is not dumpable (one that changed its uid); "
                "prctl(PR_SET_DUMPABLE, 1) makes it so again"
            )
        else:
            why = (
                "no directory of the mounted /proc can be proved to be the child's: that /proc "
                "belongs to a PID namespace which does not show it (mount a /proc for this "
                "namespace, as unshare --mount-proc does)"
            )
        return OSError(err, f"{os.strerror(err)}: finding the child's /proc directory ({why})")
    hint = "the parent needs privilege over the ids it maps; unprivileged, only its own uid and gid"
    if what == "gid_map" and err == _errno.EPERM:
        hint += (
            "; an unprivileged gid map also needs setgroups 'deny' (the default: "
            "setgroups='allow' makes the kernel refuse it)"
        )
    if err == _errno.EACCES:
        hint = (
            "the child's /proc files belong to root: a process that changed its uid is "
            "not dumpable (prctl(PR_SET_DUMPABLE, 1) makes it so again)"
        )
    elif err == _errno.ENOENT and not os.path.isdir("/proc/self"):
        hint = f"/proc is not mounted: the maps are written to /proc/<pid>/{what}"
    return OSError(err, f"{os.strerror(err)}: writing the child's {what} ({hint})")


_PRIVILEGE = (
    "it needs CAP_SYS_ADMIN over the namespace's owning user namespace: run as "
    "root, or create a user namespace with it (map_root=True)"
)
#: The child's setup steps (portclone._setup): what failed, and a hint for EPERM.
_SETUP_STEPS: Dict[Stage, tuple[str, str]] = {
    Stage.HOSTNAME: ("sethostname in the child", _PRIVILEGE),
    Stage.JOIN: (
        "entering a namespace of join= (setns; a PID namespace is entered by the "
        "calling thread around the clone, the others by the child)",
        "it needs CAP_SYS_ADMIN over the namespace joined and in the child's own "
        "user namespace; a child in a new user namespace has none over the caller's",
    ),
    Stage.TIME: (
        "creating the child's time namespace and writing its offsets (/proc/self/timens_offsets)",
        _PRIVILEGE,
    ),
    Stage.MOUNT_PROC: ("mounting /proc in the child (mount_proc=)", _PRIVILEGE),
    Stage.PROPAGATION: ("changing every mount's propagation in the child (propagation=)", _PRIVILEGE),
    Stage.PDEATHSIG: ("prctl(PR_SET_PDEATHSIG) in the child", ""),
    Stage.PROCESS_GROUP: ("setpgid() in the child (process_group=)", ""),
}


def not_now(error: OSError, doing: str) -> OSError:
    """A transient failure of a probe (TRANSIENT_ERRNOS), as the OSError the caller gets."""
    err = error.errno or 0
    return OSError(err, f"{os.strerror(err)}: {doing} (nothing is remembered: the next call asks again)")
