"""portclone: Linux clone semantics for Python children, on every POSIX system.

    >>> import portclone
    >>> child = portclone.clone(print, "hello from the child",
    ...                         flags=portclone.CLONE_NEWUTS)
    >>> child.wait()
    0

See the README for the flag availability table and the backends.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
#: The ABI of portclone._native this Python code was written for.
NATIVE_ABI = 5

from ._api import check, clone  # noqa: E402
from ._backend import (  # noqa: E402
    Backend,
    available_backends,
    current_backend,
    get_backend,
    use_backend,
)
from ._child import Child  # noqa: E402
from ._errors import (  # noqa: E402
    BackendUnavailableError,
    InvalidFlagsError,
    PortcloneError,
    TimeoutExpired,
    UnsupportedFlagError,
)
from ._flags import RETIRED_NAMES, CloneFlags  # noqa: E402
from ._spawn import DEVNULL, PIPE, STDOUT, spawn  # noqa: E402

# Module-level CLONE_* constants, for code ported from C.
CLONE_NEWTIME = CloneFlags.CLONE_NEWTIME
CLONE_VM = CloneFlags.CLONE_VM
CLONE_FS = CloneFlags.CLONE_FS
CLONE_FILES = CloneFlags.CLONE_FILES
CLONE_SIGHAND = CloneFlags.CLONE_SIGHAND
CLONE_PIDFD = CloneFlags.CLONE_PIDFD
CLONE_PTRACE = CloneFlags.CLONE_PTRACE
CLONE_VFORK = CloneFlags.CLONE_VFORK
CLONE_PARENT = CloneFlags.CLONE_PARENT
CLONE_THREAD = CloneFlags.CLONE_THREAD
CLONE_NEWNS = CloneFlags.CLONE_NEWNS
CLONE_SYSVSEM = CloneFlags.CLONE_SYSVSEM
CLONE_SETTLS = CloneFlags.CLONE_SETTLS
CLONE_PARENT_SETTID = CloneFlags.CLONE_PARENT_SETTID
CLONE_CHILD_CLEARTID = CloneFlags.CLONE_CHILD_CLEARTID
CLONE_DETACHED = CloneFlags.CLONE_DETACHED
CLONE_UNTRACED = CloneFlags.CLONE_UNTRACED
CLONE_CHILD_SETTID = CloneFlags.CLONE_CHILD_SETTID
CLONE_NEWCGROUP = CloneFlags.CLONE_NEWCGROUP
CLONE_NEWUTS = CloneFlags.CLONE_NEWUTS
CLONE_NEWIPC = CloneFlags.CLONE_NEWIPC
CLONE_NEWUSER = CloneFlags.CLONE_NEWUSER
CLONE_NEWPID = CloneFlags.CLONE_NEWPID
CLONE_NEWNET = CloneFlags.CLONE_NEWNET
CLONE_IO = CloneFlags.CLONE_IO
CLONE_CLEAR_SIGHAND = CloneFlags.CLONE_CLEAR_SIGHAND
CLONE_INTO_CGROUP = CloneFlags.CLONE_INTO_CGROUP
CLONE_AUTOREAP = CloneFlags.CLONE_AUTOREAP
CLONE_NNP = CloneFlags.CLONE_NNP
CLONE_PIDFD_AUTOKILL = CloneFlags.CLONE_PIDFD_AUTOKILL
CLONE_EMPTY_MNTNS = CloneFlags.CLONE_EMPTY_MNTNS


def __getattr__(name: str) -> Any:
    if name in RETIRED_NAMES:
        raise AttributeError(f"module 'portclone' has no attribute {name!r}: {RETIRED_NAMES[name]}")
    raise AttributeError(f"module 'portclone' has no attribute {name!r}")


__all__ = [
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "get_backend",
    "use_backend",
    "Child",
    "CloneFlags",
    "InvalidFlagsError",
    "PortcloneError",
    "TimeoutExpired",
    "UnsupportedFlagError",
    "check",
    "clone",
    "current_backend",
    "spawn",
    "PIPE",
    "DEVNULL",
    "STDOUT",
] + [name for name in CloneFlags.__members__]
