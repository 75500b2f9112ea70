"""Loading portclone._native, and what the loaded extension answers about this process.

The C extension is optional: without it (no compiler at install time, an unsupported
platform) portclone serves through the fork backend, and ``native_status`` says why.
"""

from __future__ import annotations

import errno
import functools
import os
import warnings

from ._common import TYPE_CHECKING
from ._errors import TRANSIENT_ERRNOS

if TYPE_CHECKING:
    from typing import Any, Callable, Optional, Tuple

__all__ = ["NATIVE_ABI", "StaleExtensionError", "native_status", "thread_count", "threaded_warning"]

#: The ABI of portclone._native this Python code was written for (PORTCLONE_NATIVE_ABI in
#: _native.h); a stale build is refused.
NATIVE_ABI = 9


class StaleExtensionError(ImportError):
    """portclone._native is there but built for another portclone (its ABI differs)."""


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
                raise OSError(
                    err,
                    f"{os.strerror(err)}: portclone._native could not be loaded "
                    f"now ({e}); nothing is remembered: the next call tries "
                    "again",
                ) from e
            _native_error = f"portclone._native could not be imported ({e}); build it with a C compiler"
        else:
            if getattr(module, "ABI", None) != NATIVE_ABI:
                raise StaleExtensionError(
                    f"portclone._native at {module.__file__} is a stale build (ABI "
                    f"{getattr(module, 'ABI', None)}, this portclone needs {NATIVE_ABI}): "
                    "reinstall portclone"
                )
            _native = module
    return _native, _native_error


def _transient_errno(error: ImportError) -> int:
    """The transient errno behind a failed import, or 0.  dlopen() reports its errno only
    in its message (dlerror: "cannot open shared object file: Too many open files").

    A mapping that fails for want of address space (RLIMIT_AS, memory) says only "failed
    to map segment from shared object" (bminor/glibc:elf/dl-map-segments.h), with no
    errno; the same words followed by EPERM's or EACCES's text mean a noexec mount or a
    security policy, which stay.
    """
    for cause in (error.__cause__, error.__context__):
        if isinstance(cause, OSError) and cause.errno in TRANSIENT_ERRNOS:
            return cause.errno
    text = str(error)
    for err in sorted(TRANSIENT_ERRNOS):
        if os.strerror(err) in text:
            return err
    if "failed to map segment" in text and not any(
        os.strerror(err) in text for err in (errno.EPERM, errno.EACCES)
    ):
        return errno.ENOMEM
    return 0


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
            "to deadlocks in the child.",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
