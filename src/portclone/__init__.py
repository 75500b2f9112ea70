"""portclone: Linux clone semantics for Python children, on every POSIX system.

On Linux, a child in a new UTS namespace, root in a new user namespace (so that no
privilege is needed):

    >>> import portclone
    >>> child = portclone.clone(print, "hello from the child",
    ...                         flags=portclone.CLONE_NEWUTS, map_root=True)
    >>> child.wait()
    0

The documentation (docs/, https://portclone.readthedocs.io) has the flag availability
table, the backends and the API reference.

Importing the package loads none of its modules: each public name is loaded on first
use (PEP 562), so that a program that imports portclone and does not use it pays
nothing for it.  ``bench/bench_import.py`` measures what it costs.
"""

__version__ = "0.1.0"

# typing.TYPE_CHECKING without importing typing: type checkers take this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._api import check, clone, spawn
    from ._backend import Backend
    from ._child import Child
    from ._errors import (
        BackendUnavailableError,
        InvalidFlagsError,
        PortcloneError,
        TimeoutExpired,
        UnsupportedFlagError,
    )
    from ._flags import NS_FLAGS, CloneFlags
    from ._plan import DEVNULL, PIPE, STDOUT
    from ._registry import available_backends, current_backend, get_backend, use_backend, why_unusable

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

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "Child",
    "CloneFlags",
    "DEVNULL",
    "InvalidFlagsError",
    "NS_FLAGS",
    "PIPE",
    "PortcloneError",
    "STDOUT",
    "TimeoutExpired",
    "UnsupportedFlagError",
    "available_backends",
    "check",
    "clone",
    "current_backend",
    "get_backend",
    "spawn",
    "use_backend",
    "why_unusable",
    "CLONE_NEWTIME",
    "CLONE_VM",
    "CLONE_FS",
    "CLONE_FILES",
    "CLONE_SIGHAND",
    "CLONE_PIDFD",
    "CLONE_PTRACE",
    "CLONE_VFORK",
    "CLONE_PARENT",
    "CLONE_THREAD",
    "CLONE_NEWNS",
    "CLONE_SYSVSEM",
    "CLONE_SETTLS",
    "CLONE_PARENT_SETTID",
    "CLONE_CHILD_CLEARTID",
    "CLONE_DETACHED",
    "CLONE_UNTRACED",
    "CLONE_CHILD_SETTID",
    "CLONE_NEWCGROUP",
    "CLONE_NEWUTS",
    "CLONE_NEWIPC",
    "CLONE_NEWUSER",
    "CLONE_NEWPID",
    "CLONE_NEWNET",
    "CLONE_IO",
    "CLONE_CLEAR_SIGHAND",
    "CLONE_INTO_CGROUP",
    "CLONE_AUTOREAP",
    "CLONE_NNP",
    "CLONE_PIDFD_AUTOKILL",
    "CLONE_EMPTY_MNTNS",
]

#: Where each public name lives (the constants: portclone._flags.CloneFlags).
_HOMES = {
    "check": "_api",
    "clone": "_api",
    "spawn": "_api",
    "Backend": "_backend",
    "Child": "_child",
    "BackendUnavailableError": "_errors",
    "InvalidFlagsError": "_errors",
    "PortcloneError": "_errors",
    "TimeoutExpired": "_errors",
    "UnsupportedFlagError": "_errors",
    "NS_FLAGS": "_flags",
    "CloneFlags": "_flags",
    "DEVNULL": "_plan",
    "PIPE": "_plan",
    "STDOUT": "_plan",
    "available_backends": "_registry",
    "current_backend": "_registry",
    "get_backend": "_registry",
    "use_backend": "_registry",
    "why_unusable": "_registry",
}


def _load_all(what: str) -> object:
    """Import every module behind the public names and bind the names here.

    All at once, at the first use of any name: a program that changes its root or drops
    privileges after that first use (``portclone.current_backend()``, which also loads the
    backend and the C extension) finds nothing left to load.  An OSError (EMFILE, ENOMEM: a
    module's file could not be opened now) says that nothing is remembered: the next use
    imports again.
    """
    try:
        # the builtin, not importlib: nothing is imported before the modules themselves
        homes = {
            home: __import__(f"portclone.{home}", fromlist=["_"]) for home in sorted(set(_HOMES.values()))
        }
    except OSError as e:
        raise OSError(
            e.errno,
            f"{e.strerror}: portclone.{what} could not be loaded now ({e}); "
            "nothing is remembered: the next use tries again",
        ) from e
    found = {name: getattr(homes[home], name) for name, home in _HOMES.items()}
    found.update({n: m for n, m in homes["_flags"].CloneFlags.__members__.items() if n in __all__})
    globals().update(found)  # plain attributes from now on
    return homes["_flags"]


if not TYPE_CHECKING:  # to a type checker, a misspelt name must stay an error, not Any

    def __getattr__(name: str) -> object:
        if name in __all__:
            _load_all(name)
            return globals()[name]
        if name.startswith("CLONE_"):
            retired = _load_all(name).RETIRED_NAMES
            if name in retired:
                raise AttributeError(f"module 'portclone' has no attribute {name!r}: {retired[name]}")
        raise AttributeError(f"module 'portclone' has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})


del TYPE_CHECKING  # not a public name
