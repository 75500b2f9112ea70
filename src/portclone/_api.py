"""The public functions: clone() and check()."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

from ._backend import Backend, current_backend, thread_count, threaded_warning
from ._child import Child, reap_orphans
from ._errors import InvalidFlagsError
from ._flags import SIGCHLD, CloneFlags
from ._validate import CgroupArg, Request, exit_signal_hazard

__all__ = ["clone", "check"]

SetTid = Union[int, Sequence[int], None]


def clone(
    fn: Callable[..., object],
    /,
    *args: Any,
    flags: int = 0,
    exit_signal: int = SIGCHLD,
    cgroup: Optional[CgroupArg] = None,
    set_tid: SetTid = None,
    **kwargs: Any,
) -> Child:
    """Run ``fn(*args, **kwargs)`` in a new child process with Linux clone semantics.

    The child is a fork-like copy of the caller (no shared memory) created
    with ``flags`` (:class:`CloneFlags`), sending ``exit_signal`` to its
    parent when it ends (0: none).  ``cgroup`` (a cgroup v2 directory fd or
    path) implies ``CLONE_INTO_CGROUP``; ``set_tid`` picks the child's pid in
    each PID namespace level, innermost first.

    The child ends as ``sys.exit`` would: an int return is the exit code,
    None is 0, an exception prints its traceback and gives 1; it never
    returns into the caller's code.

    Everything is checked before anything is created: flags this backend,
    kernel or Python cannot honour raise :class:`UnsupportedFlagError`,
    requests the kernel refuses everywhere :class:`InvalidFlagsError`, bad
    types TypeError.  Kernel failures that remain (EPERM, ENOSPC, EAGAIN,
    EBUSY, EEXIST) raise the matching OSError subclass.
    """
    if not callable(fn):
        raise TypeError(f"clone() needs a callable, not {type(fn).__name__}")
    backend = current_backend()
    request = _request(backend, flags, exit_signal, cgroup, set_tid)
    # Every line here runs after the previous child's fork, where each page written faults
    # (python bench/bench_clone.py --breakdown): the common case is kept to a few calls.
    if backend.warns_on_threads and thread_count() > 1:
        threaded_warning("clone", stacklevel=2)
    reap_orphans()
    return backend.launch(request, fn, args, kwargs)


def check(
    flags: int = 0,
    *,
    exit_signal: int = SIGCHLD,
    cgroup: Optional[CgroupArg] = None,
    set_tid: SetTid = None,
) -> CloneFlags:
    """Validate a clone request without creating anything.

    Returns the flags clone() would use (``cgroup=`` adds CLONE_INTO_CGROUP);
    raises exactly what clone() would raise before creating the child.
    """
    return _request(current_backend(), flags, exit_signal, cgroup, set_tid).flags


def _request(backend: Backend, flags: int, exit_signal: int, cgroup: Optional[CgroupArg],
             set_tid: SetTid) -> Request:
    """The checked request, and (never remembered: dispositions change) an exit signal
    whose default action would end the caller refused."""
    request = backend.request(flags, exit_signal, cgroup, set_tid)
    if request.exit_signal != SIGCHLD:
        hazard = exit_signal_hazard(request.exit_signal)
        if hazard is not None:
            raise InvalidFlagsError(0, backend.name, {"exit_signal": hazard})
    return request
