"""What every backend shares, and choosing the backend.

A backend only decides what it can honour (``refusals``) and launches
(``launch``); validation, the child's life and the Child handle are shared.
Backends are imported lazily, so one that cannot work here is never loaded
(as multiprocessing does with its start methods).
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

from ._child import Child
from ._errors import UnsupportedFlagError
from ._flags import TABLE, CloneFlags, bits, describe
from ._validate import Request, make_request

_INT_TYPES = (int, CloneFlags, signal.Signals)
_PARENT = int(CloneFlags.CLONE_PARENT)

__all__ = ["Backend", "current_backend", "native_status", "threaded_warning"]


class Backend:
    """One way of creating children.  Subclasses set ``name`` and ``launch``."""

    name: ClassVar[str] = ""
    #: whether clone() must emit the multi-threaded DeprecationWarning itself
    warns_on_threads: ClassVar[bool] = True

    def __init__(self) -> None:
        # (flags, exit_signal) -> checked Request, for requests without cgroup/set_tid.
        # Beyond saving the work, a small footprint matters: after every fork the
        # parent's first write to each page faults, and refcounts make reads writes.
        self._checked: Dict[Tuple[int, int], Request] = {}

    def request(self, flags: object, exit_signal: object, cgroup: object,
                set_tid: object) -> Request:
        """make_request() and check(), remembering requests that passed."""
        simple = (cgroup is None and set_tid is None and type(flags) in _INT_TYPES
                  and type(exit_signal) in _INT_TYPES)
        if simple:
            hit = self._checked.get((flags, exit_signal))  # type: ignore[arg-type]
            if hit is not None:
                return hit
        request = make_request(flags, exit_signal=exit_signal, cgroup=cgroup, set_tid=set_tid,
                               backend=self.name)
        self.check(request)
        # CLONE_PARENT's validity depends on being a namespace's init: never remembered
        if simple and not request.value & _PARENT and len(self._checked) < 256:
            self._checked[(request.value, request.exit_signal)] = request
        return request

    def refusals(self, request: Request) -> Dict[str, str]:
        """What in ``request`` this backend cannot honour, and why (by name)."""
        found: Dict[str, str] = {}
        for bit in bits(int(request.flags)):
            reason = self.flag_refusal(CloneFlags(bit))
            if reason is not None:
                found[describe(bit)] = reason
        return found

    def flag_refusal(self, flag: CloneFlags) -> Optional[str]:
        """Why this backend refuses ``flag`` for a Python child, or None."""
        for info in TABLE:
            if info.flag == flag:
                return info.reason(self.name)
        return "not a clone flag portclone knows"

    @property
    def supported_flags(self) -> CloneFlags:
        """The flags this backend honours here, as probed."""
        value = CloneFlags(0)
        for info in TABLE:
            if self.flag_refusal(info.flag) is None:
                value |= info.flag
        return value

    def check(self, request: Request) -> None:
        found = self.refusals(request)
        if found:
            offending = 0
            for label in found:
                try:
                    offending |= int(CloneFlags.parse(label))
                except ValueError:
                    pass  # a field such as exit_signal or set_tid
            raise UnsupportedFlagError(offending, self.name, found,
                                       supported=int(self.supported_flags))

    def launch(self, request: Request, fn: Callable[..., object],
               args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Child:
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
    """(the loaded ``portclone._native`` module or None, why it is not loaded)."""
    global _native, _native_error
    if _native is None and _native_error is None:
        try:
            from . import _native as module
        except ImportError as e:
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


# -- selection ----------------------------------------------------------------

_current: Optional[Backend] = None


def _select() -> Backend:
    native, _ = native_status()
    if sys.platform.startswith("linux") and native is not None:
        from ._linux import LinuxBackend

        return LinuxBackend(native)
    from ._fork import ForkBackend

    return ForkBackend()


def current_backend() -> Backend:
    """The backend clone() uses in this process, chosen once, at first use."""
    global _current
    if _current is None:
        _current = _select()
    return _current


# -- the multi-threaded warning ----------------------------------------------

def thread_count() -> int:
    """The kernel's thread count (native threads too), as CPython 3.12 counts."""
    native, _ = native_status()
    if native is not None and hasattr(native, "thread_count"):
        count = int(native.thread_count())  # no Python objects: see Backend.__init__
        if count > 0:
            return count
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[17])  # field 20 of stat(5); fields[0] is field 3
    except (OSError, IndexError, ValueError):
        import threading

        return threading.active_count()


def threaded_warning(name: str, stacklevel: int) -> None:
    """CPython's ``os.fork`` DeprecationWarning, raised *before* the child exists."""
    if thread_count() > 1:
        warnings.warn(
            f"This process (pid={os.getpid()}) is multi-threaded, use of {name}() may lead "
            "to deadlocks in the child.", DeprecationWarning, stacklevel=stacklevel + 1)
