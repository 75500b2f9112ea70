"""portclone's exceptions, and the one place OS errors become them."""

from __future__ import annotations

import enum
import errno as _errno
import os
import platform
import subprocess
from typing import Mapping, Optional

from ._flags import CloneFlags, describe

__all__ = [
    "PortcloneError",
    "UnsupportedFlagError",
    "InvalidFlagsError",
    "TimeoutExpired",
    "BackendUnavailableError",
    "platform_string",
    "kernel_error",
    "TRANSIENT_ERRNOS",
    "Stage",
]

#: Errors that say "not now", not "never": a probe that meets one raises it and remembers
#: nothing, so the next call asks the kernel again.
TRANSIENT_ERRNOS = frozenset({_errno.EMFILE, _errno.ENFILE, _errno.ENOMEM, _errno.EAGAIN,
                              _errno.EINTR})


def platform_string() -> str:
    """``Linux 6.18.44 x86_64``: where a refusal happened."""
    return f"{platform.system()} {platform.release()} {platform.machine()}"


class PortcloneError(Exception):
    """Base class of portclone's own errors."""


class _FlagError(PortcloneError):
    def __init__(
        self,
        flags: int,
        backend: str,
        reasons: Mapping[str, str],
        *,
        supported: Optional[int] = None,
        headline: str,
    ) -> None:
        self.flags = CloneFlags(flags)
        self.backend = backend
        #: what is wrong, by flag name (or field name: ``exit_signal``, ``set_tid``...)
        self.reasons = dict(reasons)
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
    flag, ``.reasons`` the reason for each, ``.supported`` what the backend
    honours instead.
    """

    def __init__(self, flags: int, backend: str, reasons: Mapping[str, str],
                 *, supported: Optional[int] = None) -> None:
        what = describe(flags) if flags else ", ".join(reasons)
        super().__init__(
            flags, backend, reasons, supported=supported,
            headline=f"{what} cannot be honoured",
        )


class InvalidFlagsError(_FlagError, ValueError):
    """A request the kernel refuses everywhere (its EINVAL rules).

    Raised before anything is created.
    """

    def __init__(self, flags: int, backend: str, reasons: Mapping[str, str]) -> None:
        super().__init__(flags, backend, reasons, headline="invalid clone request")


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
    _errno.ENOSPC: "a namespace limit was reached (nesting depth 32, or "
    "/proc/sys/user/max_*_namespaces)",
    _errno.EAGAIN: "a process limit was reached (RLIMIT_NPROC, pids cgroup or "
    "/proc/sys/kernel/threads-max)",
    _errno.EUSERS: "a namespace limit was reached",
    _errno.EEXIST: "a pid asked for with set_tid is already in use",
    _errno.EBUSY: "CLONE_INTO_CGROUP: the target cgroup has controllers enabled for its "
    "children (the no-internal-process rule) or is being removed",
    _errno.EOPNOTSUPP: "CLONE_INTO_CGROUP: the target cgroup is not a valid domain",
    _errno.ENOMEM: "the kernel could not allocate the child",
    _errno.EMFILE: "no free file descriptor for the child's pidfd (RLIMIT_NOFILE); no child "
    "was left behind",
    _errno.ENFILE: "the system's file table is full: no pidfd for the child; no child was "
    "left behind",
    _errno.EINVAL: "the running kernel refused a request portclone's validation accepted; "
    "a namespace type may not be configured in this kernel",
    _errno.EBADF: "CLONE_INTO_CGROUP: the cgroup fd is not an open cgroup v2 directory",
}


def kernel_error(err: int, syscall: str, flags: int, exit_signal: int) -> OSError:
    """The OSError subclass for ``err`` with the request in its message."""
    hint = _HINTS.get(err)
    text = f"{os.strerror(err)}: {syscall}(flags={describe(flags)}, exit_signal={exit_signal})"
    if hint:
        text += f": {hint}"
    return OSError(err, text)


class Stage(enum.IntEnum):
    """Where starting an exec child failed: an OSError's ``portclone_stage``.

    ``_native.spawn`` (``_spawn.c``) and the fork backend (``_fork.py``) set it;
    ``tools/gen_constants.py`` writes these values into ``_constants.h`` for the C.
    """

    CLONE = 0  # the clone system call itself: nothing was created
    EXEC = 1  # execve of every candidate path
    CHDIR = 2  # chdir to cwd=
    FDS = 3  # stdio, close_fds, pass_fds
    HOSTNAME = 4  # sethostname in the new UTS namespace
    MAPS = -1  # the parent, writing the child's uid_map, setgroups or gid_map
