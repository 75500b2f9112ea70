"""What every backend shares, and choosing the backend.

A backend only decides what it can honour (``refusals``) and launches
(``launch``); validation, the child's life and the Child handle are shared.
Backends are imported lazily, so one that cannot work here is never loaded
(as multiprocessing does with its start methods).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import signal
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Iterator, List, Optional, Tuple

from ._child import Child
from ._errors import (
    TRANSIENT_ERRNOS,
    BackendUnavailableError,
    InvalidFlagsError,
    UnsupportedFlagError,
)
from ._flags import SIGCHLD, TABLE, CloneFlags, bits, describe
from ._validate import Request, make_request

if TYPE_CHECKING:
    from ._spawn import SpawnPlan

_INT_TYPES = (int, CloneFlags, signal.Signals)

#: Why spawn() takes no exit signal but SIGCHLD (seen on Linux 6.18 by tests/test_spawn.py).
EXEC_EXIT_SIGNAL = (
    "a program started by spawn() always reports its exit with SIGCHLD: Linux resets the exit "
    "signal of a child that has exec'd (its exec id changed: torvalds/linux:kernel/exit.c, "
    "exit_notify), so another exit signal would silently not happen")
_PARENT = int(CloneFlags.CLONE_PARENT)

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "available_backends",
    "current_backend",
    "get_backend",
    "native_status",
    "threaded_warning",
    "use_backend",
]


class Backend:
    """One way of creating children.  Subclasses set ``name`` and ``launch``."""

    name: ClassVar[str] = ""
    #: whether clone() must emit the multi-threaded DeprecationWarning itself
    warns_on_threads: ClassVar[bool] = True

    def __init__(self) -> None:
        # (flags, exit_signal, exec_child) -> checked Request, for requests without
        # cgroup/set_tid.  Beyond saving the work, a small footprint matters: after every
        # fork the parent's first write to each page faults, and refcounts make reads writes.
        self._checked: Dict[Tuple[int, int, bool], Request] = {}

    def request(self, flags: object, exit_signal: object, cgroup: object,
                set_tid: object, exec_child: bool = False) -> Request:
        """make_request() and check(), remembering requests that passed."""
        simple = (cgroup is None and set_tid is None and type(flags) in _INT_TYPES
                  and type(exit_signal) in _INT_TYPES)
        if simple:
            hit = self._checked.get((flags, exit_signal, exec_child))  # type: ignore[arg-type]
            if hit is not None:
                return hit
        request = make_request(flags, exit_signal=exit_signal, cgroup=cgroup, set_tid=set_tid,
                               backend=self.name, has_feature=self.has_feature)
        self.check(request, exec_child)
        # CLONE_PARENT's validity depends on being a namespace's init: never remembered
        if simple and not request.value & _PARENT and len(self._checked) < 256:
            self._checked[(request.value, request.exit_signal, exec_child)] = request
        return request

    def refusals(self, request: Request, exec_child: bool = False) -> Dict[str, str]:
        """What in ``request`` this backend cannot honour, and why (by name)."""
        found: Dict[str, str] = {}
        if exec_child and request.exit_signal != SIGCHLD and not (
                request.exit_signal == 0 and request.value & _PARENT):  # PARENT needs 0
            found["exit_signal"] = EXEC_EXIT_SIGNAL
        for bit in bits(int(request.flags)):
            reason = self.flag_refusal(CloneFlags(bit), exec_child)
            if reason is not None:
                found[describe(bit)] = reason
        return found

    def flag_refusal(self, flag: CloneFlags, exec_child: bool = False) -> Optional[str]:
        """Why this backend refuses ``flag`` for a Python child (or an exec child), or None."""
        for info in TABLE:
            if info.flag == flag:
                return info.reason(self.name, exec_child)
        return "not a clone flag portclone knows"

    def _supported(self, exec_child: bool) -> CloneFlags:
        value = CloneFlags(0)
        for info in TABLE:
            if self.flag_refusal(info.flag, exec_child) is None:
                value |= info.flag
        return value

    @property
    def supported_flags(self) -> CloneFlags:
        """The flags this backend honours for a Python child (clone()), as probed."""
        return self._supported(False)

    @property
    def supported_exec_flags(self) -> CloneFlags:
        """The flags this backend honours for an exec child (spawn()), as probed."""
        return self._supported(True)

    def has_feature(self, name: str) -> bool:
        """Whether the kernel has the feature that lifts a Rule (its ``lifted_by``).  Only
        the linux backend probes; the others refuse the flags such rules concern anyway."""
        return True

    def invalid(self, request: Request) -> Dict[str, str]:
        """What this backend's kernel refuses with EINVAL beyond the universal rules."""
        return {}

    def check(self, request: Request, exec_child: bool = False) -> None:
        bad = self.invalid(request)
        if bad:
            raise InvalidFlagsError(request.value, self.name, bad)
        found = self.refusals(request, exec_child)
        if found:
            offending = 0
            for label in found:
                try:
                    offending |= int(CloneFlags.parse(label))
                except ValueError:
                    pass  # a field such as exit_signal or set_tid
            raise UnsupportedFlagError(offending, self.name, found,
                                       supported=int(self._supported(exec_child)))

    def launch(self, request: Request, fn: Callable[..., object],
               args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Child:
        raise NotImplementedError

    def spawn(self, request: Request, plan: SpawnPlan) -> Child:
        """Start ``plan``'s program in an exec child (see portclone._spawn)."""
        raise NotImplementedError

    def details(self) -> Dict[str, Any]:
        """Facts for ``python -m portclone info``."""
        return {}

    def __repr__(self) -> str:
        return f"<portclone backend {self.name!r}: {describe(int(self.supported_flags))}>"


# -- the native extension ----------------------------------------------------

_native: Any = None
_native_error: Optional[str] = None


def native_status() -> Tuple[Any, Optional[str]]:
    """(the loaded ``portclone._native`` module or None, why it is not loaded).

    Why it is not loaded is remembered: the backend choice rests on it.  Except when
    loading failed for want of a resource (EMFILE, ENFILE, ENOMEM: the shared library
    could not be opened or mapped now): then this raises that OSError, remembers
    nothing, and the next call imports again.  A process that meets its fd limit at
    first use gets an error for that call, not the fork backend for good.
    """
    global _native, _native_error
    if _native is None and _native_error is None:
        try:
            from . import _native as module
        except ImportError as e:
            err = _transient_errno(e)
            if err:
                raise OSError(err, f"{os.strerror(err)}: portclone._native could not be loaded "
                                   f"now ({e}); nothing is remembered: the next call tries "
                                   "again") from e
            _native_error = f"portclone._native could not be imported ({e}); build it with a C compiler"
        else:
            from . import NATIVE_ABI

            if getattr(module, "ABI", None) != NATIVE_ABI:
                raise ImportError(
                    f"portclone._native at {module.__file__} is a stale build (ABI "
                    f"{getattr(module, 'ABI', None)}, this portclone needs {NATIVE_ABI}): "
                    "reinstall portclone")
            _native = module
    return _native, _native_error


def _transient_errno(error: ImportError) -> int:
    """The transient errno behind a failed import, or 0.  dlopen() reports its errno only
    in its message (dlerror: "cannot open shared object file: Too many open files")."""
    for cause in (error.__cause__, error.__context__):
        if isinstance(cause, OSError) and cause.errno in TRANSIENT_ERRNOS:
            return cause.errno
    text = str(error)
    for err in sorted(TRANSIENT_ERRNOS):
        if os.strerror(err) in text:
            return err
    return 0


# -- selection ----------------------------------------------------------------

#: Every backend portclone has, in order of preference.
BACKEND_NAMES = ("linux", "netbsd", "fork")
ENV_VAR = "PORTCLONE_BACKEND"


def _why_unusable(name: str) -> Optional[str]:
    """Why backend ``name`` cannot work in this process, or None."""
    if name not in BACKEND_NAMES:
        return f"unknown backend {name!r}: portclone has {', '.join(BACKEND_NAMES)}"
    if not hasattr(os, "fork"):
        return (f"{sys.platform} has neither fork nor clone; use subprocess or "
                "multiprocessing's spawn start method")
    if name == "fork":
        return None
    native, why = native_status()
    if name == "linux":
        if not sys.platform.startswith("linux"):
            return f"the linux backend needs Linux, this is {sys.platform}"
        return why
    # netbsd: NetBSD's own libc clone(), or on Linux glibc's clone() with the same
    # signature and flag values, checked against NetBSD's rules
    if not (sys.platform.startswith("netbsd") or sys.platform.startswith("linux")):
        return f"the netbsd backend needs NetBSD (or Linux, to test its rules), this is {sys.platform}"
    if why is None and not hasattr(native, "libc_clone"):
        return "portclone._native was built without libc clone()"
    return why


def available_backends() -> List[str]:
    """The backends that work on this machine, best first."""
    return [name for name in BACKEND_NAMES if _why_unusable(name) is None]


def _platform_default() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform.startswith("netbsd"):
        return "netbsd"
    return "fork"


_instances: Dict[str, Backend] = {}
_default: Optional[str] = None
_override: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "portclone_backend", default=None)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; BackendUnavailableError if it cannot work here."""
    backend = _instances.get(name)
    if backend is None:
        why = _why_unusable(name)
        if why is not None:
            raise BackendUnavailableError(name, why)
        if name == "linux":
            if sys.platform == "linux":  # _why_unusable said so; this tells type checkers
                from ._linux import LinuxBackend

                backend = LinuxBackend(native_status()[0])
            else:
                raise BackendUnavailableError(name, f"this is {sys.platform}")
        elif name == "netbsd":
            from ._netbsd import NetBSDBackend

            backend = NetBSDBackend(native_status()[0])
        else:
            from ._fork import ForkBackend

            backend = ForkBackend()
        backend = _instances.setdefault(name, backend)
    return backend


def current_backend() -> Backend:
    """The backend clone() uses here and now.

    Chosen once, at first use, from the platform (Linux -> linux, NetBSD ->
    netbsd, any other POSIX system -> fork), unless ``PORTCLONE_BACKEND``
    names one; :func:`use_backend` overrides it for a block of code.
    """
    global _default
    name = _override.get()
    if name is None:
        if _default is None:
            chosen = os.environ.get(ENV_VAR, "").strip()
            if chosen:
                why = _why_unusable(chosen)
                if why is not None:
                    raise BackendUnavailableError(chosen, f"{why} (from {ENV_VAR}={chosen})")
            else:
                chosen = _platform_default()
                # no native extension: the fallback serves, info says why.  (A transient
                # failure to load it raises from native_status, and nothing is chosen.)
                if chosen != "fork" and _why_unusable(chosen) is not None:
                    chosen = "fork"
            _default = chosen
        name = _default
    return get_backend(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Use backend ``name`` for clone() inside the ``with`` block (this thread or task)."""
    backend = get_backend(name)
    token = _override.set(name)
    try:
        yield backend
    finally:
        _override.reset(token)


# -- the multi-threaded warning ----------------------------------------------

@functools.cache
def _thread_counter() -> Callable[[], int]:
    """The cheapest way to count this process's threads here, chosen once."""
    native, _ = native_status()
    if native is not None and hasattr(native, "thread_count"):
        return native.thread_count  # type: ignore[no-any-return]  # C: no Python objects
    return _thread_count_slow


def _thread_count_slow() -> int:
    """The count from /proc/self/stat; without /proc (or an fd to read it), the threads
    Python knows (threading.active_count: native threads not started by Python are missed)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[17])  # field 20 of stat(5); fields[0] is field 3
    except (OSError, IndexError, ValueError):
        import threading

        return threading.active_count()


def thread_count() -> int:
    """The kernel's thread count (native threads too), as CPython 3.12 counts."""
    count = _thread_counter()()
    # the native counter answers -1 when it cannot read /proc/self/stat now (EMFILE, no /proc)
    return count if count > 0 else _thread_count_slow()


def threaded_warning(name: str, stacklevel: int) -> None:
    """CPython's ``os.fork`` DeprecationWarning, raised *before* the child exists."""
    if thread_count() > 1:  # clone() asks first; other callers rely on this test
        warnings.warn(
            f"This process (pid={os.getpid()}) is multi-threaded, use of {name}() may lead "
            "to deadlocks in the child.", DeprecationWarning, stacklevel=stacklevel + 1)
