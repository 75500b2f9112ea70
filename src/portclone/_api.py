"""The public functions: clone(), spawn() and check()."""

from __future__ import annotations

import signal
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ._backend import Backend
from ._child import Child, hold_signals, reap_orphans
from ._errors import InvalidFlagsError, Refusal
from ._flags import SIGCHLD, CloneFlags
from ._loader import thread_count, threaded_warning
from ._plan import DEVNULL, PIPE, SpawnPlan, StdArg, StrOrBytesPath, prepare
from ._registry import current_backend
from ._validate import CgroupArg, IdMap, Request, exit_signal_hazard

__all__ = ["check", "clone", "spawn"]

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
    # the common case stays a few calls (see Backend.__init__ on page faults after a fork)
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
            raise InvalidFlagsError(backend.name, [Refusal(hazard, field="exit_signal")])
    return request


def spawn(
    argv: Sequence[StrOrBytesPath],
    /,
    *,
    flags: int = 0,
    exit_signal: int = SIGCHLD,
    executable: Optional[StrOrBytesPath] = None,
    env: Optional[Mapping[Any, Any]] = None,
    cwd: Optional[StrOrBytesPath] = None,
    pass_fds: Sequence[int] = (),
    stdin: StdArg = None,
    stdout: StdArg = None,
    stderr: StdArg = None,
    close_fds: bool = True,
    restore_signals: bool = True,
    uid_map: IdMap = None,
    gid_map: IdMap = None,
    map_root: bool = False,
    hostname: Optional[str] = None,
    cgroup: Optional[CgroupArg] = None,
    set_tid: SetTid = None,
) -> Child:
    """Start ``argv`` as a new program in a child created with clone ``flags``.

    Like ``subprocess.Popen`` for the process part (PATH lookup, ``env``,
    ``cwd``, ``pass_fds``, ``close_fds``, ``restore_signals``, stdio as fds,
    file objects, ``PIPE``, ``DEVNULL``, ``STDOUT``; bytes only, no shell),
    plus Linux clone semantics: namespaces, sharing flags, a pidfd, a cgroup,
    ``set_tid``.  ``exit_signal`` stays SIGCHLD: Linux resets the exit signal
    of a child that has exec'd, so spawn() refuses any other.  With
    CLONE_NEWUSER, ``uid_map``/``gid_map`` (``[(inside, outside, count)]`` or
    /proc text) or ``map_root=True`` are written before the program starts;
    ``hostname`` is set in a new UTS namespace.

    On Linux the child is created with CLONE_VM (and CLONE_VFORK unless maps
    must be written), runs C only, and costs the same whatever the parent's
    size.  A program that cannot be started raises the OSError subprocess
    would (FileNotFoundError, PermissionError, NotADirectoryError for cwd...)
    and leaves no child behind.
    """
    backend = current_backend()
    if isinstance(flags, int) and not isinstance(flags, bool):
        flags |= CloneFlags.CLONE_VM  # what every backend does for a program: CLONE_SIGHAND may follow
    request = backend.request(flags, exit_signal, cgroup, set_tid, exec_child=True)
    reap_orphans()
    # prepare() opens the pipes and /dev/null: with signals blocked until ``plan`` holds
    # them, so that a handler that raises cannot leave an fd in nobody's hands (in this
    # thread; another thread can still trip a Python handler here).
    opens_fds = any(v in (PIPE, DEVNULL) for v in (stdin, stdout, stderr))
    mask = hold_signals() if opens_fds else None
    plan: Optional[SpawnPlan] = None
    try:
        try:
            plan = prepare(argv, executable=executable, env=env, cwd=cwd, pass_fds=pass_fds,
                           stdin=stdin, stdout=stdout, stderr=stderr, close_fds=close_fds,
                           uid_map=uid_map, gid_map=gid_map, map_root=map_root,
                           hostname=hostname, flags=int(request.flags), backend=backend.name,
                           restore_signals=restore_signals)
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # pending handlers run here
        return plan.finish(backend.spawn(request, plan))
    except BaseException:
        if plan is not None:
            plan.close_all()  # what finish() had not yet handed to the child
        raise

