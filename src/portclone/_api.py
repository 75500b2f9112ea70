"""The public functions: clone(), spawn() and check()."""

from __future__ import annotations

import errno

from ._caller import causes
from ._check import build
from ._child import Child, reap_orphans
from ._common import TYPE_CHECKING
from ._flags import OPTIONS, SIGCHLD, CloneFlags
from ._loader import thread_count, threaded_warning
from ._plan import DEVNULL, PIPE, SpawnPlan, conditions, prepare
from ._registry import current_backend
from ._setup import NO_OPTIONS, ChildSetup, Options, parse_options
from ._sigfd import hold_signals, release_signals

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

    from ._plan import Env, StdArg, StrOrBytesPath
    from ._setup import JoinTarget
    from ._validate import CgroupArg, IdMap, Request

    SetTid = Union[int, Sequence[int], None]
    TimeOffsets = Optional[Mapping[str, float]]
    Join = Optional[Mapping[str, JoinTarget]]
    MountProc = Union[bool, StrOrBytesPath]

__all__ = ["check", "clone", "spawn"]

_VM = int(CloneFlags.CLONE_VM)
#: the stdio arguments for which spawn() opens fds
_OPENED = (PIPE, DEVNULL)


#: the setup options (_flags.OPTIONS, where each is declared), and their "not given" values
_OPTION_NAMES = tuple(option.name for option in OPTIONS)
_NOT_GIVEN = tuple(option.default for option in OPTIONS)
#: clone()'s own keywords: a keyword fn cannot take is compared with these
_CLONE_KEYWORDS = ("flags", "exit_signal", "cgroup", "set_tid", *_OPTION_NAMES)


def clone(
    fn: Callable[..., object],
    /,
    *args: Any,
    flags: int = 0,
    exit_signal: int = SIGCHLD,
    cgroup: Optional[CgroupArg] = None,
    set_tid: SetTid = None,
    uid_map: IdMap = None,
    gid_map: IdMap = None,
    map_root: bool = False,
    setgroups: Optional[str] = None,
    hostname: Optional[str] = None,
    time_offsets: TimeOffsets = None,
    join: Join = None,
    pdeathsig: Optional[int] = None,
    mount_proc: MountProc = False,
    propagation: Optional[str] = None,
    **kwargs: Any,
) -> Child:
    """Run ``fn(*args, **kwargs)`` in a new child process with Linux clone semantics.

    The child is a fork-like copy of the caller (no shared memory) created
    with ``flags`` (:class:`CloneFlags`), sending ``exit_signal`` to its
    parent when it ends (0: none).  ``cgroup`` (a cgroup v2 directory fd or
    path) implies ``CLONE_INTO_CGROUP``; ``set_tid`` picks the child's pid in
    each PID namespace level, innermost first.

    The child can be set up before ``fn`` runs, each option implying the namespace it
    needs: ``uid_map``/``gid_map`` (``[(inside, outside, count)]`` or /proc text) or
    ``map_root=True``, written by the parent while the child waits (by newuidmap and
    newgidmap, as /etc/subuid and /etc/subgid grant, where the caller lacks
    CAP_SETUID/CAP_SETGID and maps more than its own id), with ``setgroups``
    ("deny" by default with a gid map the parent writes, or "allow"); ``hostname``; ``time_offsets``
    (``{"monotonic": s, "boottime": s}``, counted from the host's clocks, those of the
    initial time namespace, even when the caller is in a time namespace of its own);
    ``mount_proc`` (True or a directory: a fresh
    /proc, every mount made private first unless ``propagation`` says otherwise);
    ``propagation`` ("private", "shared", "slave" or "unchanged": every mount's, as
    unshare --propagation); ``join`` (``{"net": pid, "uts": child,
    "mnt": "/proc/PID/ns/mnt"}``: existing namespaces to enter, in nsenter's two passes;
    a pid or a Child is reached through its pidfd, never through ``/proc/<pid>``, and
    those already ours are skipped); ``pdeathsig`` (the signal the child gets when the calling *thread* ends).
    A failure of the setup raises here, and no child is left.

    ``args`` and ``kwargs`` must fit ``fn``'s signature (TypeError otherwise, before any
    child exists, naming the clone option a stray keyword resembles).

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
    if kwargs or not _binds_plainly(fn, len(args)):
        _check_call(fn, args, kwargs)
    backend = current_backend()
    options = _options(
        (
            uid_map,
            gid_map,
            map_root,
            setgroups,
            hostname,
            time_offsets,
            mount_proc,
            propagation,
            join,
            pdeathsig,
        )
    )  # in _OPTION_NAMES' order
    request = build(backend, flags, exit_signal, cgroup, set_tid, options)
    if backend.warns_on_threads and thread_count() > 1:
        threaded_warning("clone", stacklevel=2)
    reap_orphans()
    if not options.names:
        return backend.launch(request, fn, args, kwargs)
    setup = ChildSetup(options)
    try:
        setup.open(int(request.flags))
        return backend.launch(request, fn, args, kwargs, setup)
    finally:
        setup.close()


def _options(values: Tuple[Any, ...]) -> Options:
    """The setup options, ``values`` in _OPTION_NAMES' order, checked by parse_options;
    NO_OPTIONS when none is given (each is its row's default object), in a few steps."""
    for value, default in zip(values, _NOT_GIVEN):
        if value is not default:
            return parse_options(**dict(zip(_OPTION_NAMES, values)))
    return NO_OPTIONS


def _nearest_keyword(key: str) -> Optional[str]:
    """The clone() keyword ``key`` resembles, if any."""
    try:
        import difflib  # for an error's hint only: loaded when one is needed
    except ImportError:  # a root changed since portclone was loaded: no hint
        return None
    close = difflib.get_close_matches(key, _CLONE_KEYWORDS, n=1, cutoff=0.6)
    return close[0] if close else None


#: types.FunctionType, without importing types
_FUNCTION = type(_nearest_keyword)
_CO_VARARGS = 0x04  # inspect.CO_VARARGS, without importing inspect


def _binds_plainly(fn: Callable[..., object], nargs: int) -> bool:
    """Whether ``fn(*args)`` (``nargs`` positional arguments, no keywords) binds, read off a
    plain function's code object as inspect.signature would find it.  False means "ask
    inspect": for anything but a plain function without __wrapped__ or __signature__, and
    for every call that does not bind (inspect's message is the one to give).

    Every clone() asks this: inspect.signature() touches ~100 pages of the parent per call
    after a fork, each one a copy-on-write fault (bench/bench_clone.py --breakdown).
    """
    if type(fn) is not _FUNCTION or getattr(fn, "__wrapped__", None) is not None:
        return False
    if getattr(fn, "__signature__", None) is not None:
        return False
    plain: Any = fn  # a plain function: type(fn) is FunctionType
    code = plain.__code__
    positional = code.co_argcount
    defaults = plain.__defaults__
    if nargs < positional - (len(defaults) if defaults else 0):
        return False
    if nargs > positional and not code.co_flags & _CO_VARARGS:
        return False
    if code.co_kwonlyargcount:
        kwdefaults = plain.__kwdefaults__ or {}
        names = code.co_varnames[positional : positional + code.co_kwonlyargcount]
        if any(name not in kwdefaults for name in names):
            return False
    return True


def _check_call(fn: Callable[..., object], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
    """TypeError now if ``fn(*args, **kwargs)`` cannot bind, rather than in the child;
    a stray keyword is compared with clone()'s own.  (clone() asks _binds_plainly first.)"""
    try:
        # only here, where _binds_plainly could not answer: inspect costs a third of
        # portclone's import.  After a chroot or a privilege drop it may not load: then,
        # as for a builtin without a signature, the child will tell.
        import inspect

        signature = inspect.signature(fn)
    except Exception:  # a builtin without one, a broken __signature__: the child will tell
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        hints = []
        for key in kwargs:
            if key not in signature.parameters:
                close = _nearest_keyword(key)
                if close:
                    hints.append(f"{key}= is not a clone() option: did you mean {close}=?")
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"clone(): {name}() cannot take these arguments ({e})"
            + ("; " + "; ".join(hints) if hints else "")
        ) from None


def check(
    flags: int = 0,
    *,
    exit_signal: int = SIGCHLD,
    cgroup: Optional[CgroupArg] = None,
    set_tid: SetTid = None,
    uid_map: IdMap = None,
    gid_map: IdMap = None,
    map_root: bool = False,
    setgroups: Optional[str] = None,
    hostname: Optional[str] = None,
    time_offsets: TimeOffsets = None,
    join: Join = None,
    pdeathsig: Optional[int] = None,
    mount_proc: MountProc = False,
    propagation: Optional[str] = None,
    probe: bool = False,
) -> CloneFlags:
    """Validate a clone request without creating anything.

    Returns the flags clone() would use: ``cgroup=`` adds CLONE_INTO_CGROUP, and each
    setup option the namespace it implies (``hostname=`` CLONE_NEWUTS...).  Raises
    exactly what clone() would raise before creating the child.

    That answer is for the request, whoever makes it.  With ``probe=True`` the answer is
    for this caller, here and now: the request is then tried in a throwaway child that
    exits at once, and what the kernel refuses (no privilege, user namespaces disabled or
    restricted, a seccomp filter, a chroot) is raised as clone() would raise it, naming
    the cause where it can be told.  The trial is a real clone (``set_tid`` takes its pid
    for a moment; ``cgroup`` gets a member that leaves at once).
    """
    options = _options(
        (
            uid_map,
            gid_map,
            map_root,
            setgroups,
            hostname,
            time_offsets,
            mount_proc,
            propagation,
            join,
            pdeathsig,
        )
    )  # in _OPTION_NAMES' order
    if not isinstance(probe, bool):
        raise TypeError(f"probe must be True or False, not {type(probe).__name__}")
    request = build(current_backend(), flags, exit_signal, cgroup, set_tid, options)
    if probe:
        _trial(request, options)
        return request.flags
    if options.join or options.maps:  # the targets opened, the maps checked, as clone() does
        setup = ChildSetup(options)
        try:
            setup.open(int(request.flags))
        finally:
            setup.close()
    return request.flags


def _exit_zero() -> int:
    return 0


def _trial(request: Request, options: Options) -> None:
    """check(probe=True): ``request`` made for real, by a child that exits at once."""
    backend = current_backend()
    setup = ChildSetup(options) if options.names else None
    try:
        if setup is not None:
            setup.open(int(request.flags))
        try:
            child = backend.launch(request, _exit_zero, (), {}, setup)
        except OSError as e:
            found = causes(int(request.flags), e.errno or 0)
            if found and e.errno in (errno.EPERM, errno.ENOSPC, errno.EACCES):
                raise type(e)(e.errno, f"{e.strerror}; here: {'; '.join(found)}") from None
            raise
    finally:
        if setup is not None:
            setup.close()
    with child:
        code = child.wait()
    if code != 0:  # the setup succeeded, so only a signal from outside gets here
        raise ChildProcessError(errno.ECHILD, f"the trial child ended with {code}")


def spawn(
    argv: Sequence[StrOrBytesPath],
    /,
    *,
    flags: int = 0,
    exit_signal: int = SIGCHLD,
    executable: Optional[StrOrBytesPath] = None,
    env: Optional[Env] = None,
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
    setgroups: Optional[str] = None,
    hostname: Optional[str] = None,
    time_offsets: TimeOffsets = None,
    join: Join = None,
    pdeathsig: Optional[int] = None,
    mount_proc: MountProc = False,
    propagation: Optional[str] = None,
    cgroup: Optional[CgroupArg] = None,
    set_tid: SetTid = None,
    process_group: Optional[int] = None,
) -> Child:
    """Start ``argv`` as a new program in a child created with clone ``flags``.

    ``argv`` is the program and its arguments, ``["ls", "-l"]``.  A single string is a
    TypeError here, though type checkers accept it (a ``str`` is a ``Sequence[str]``).

    Like ``subprocess.Popen`` for the process part (PATH lookup, ``env``,
    ``cwd``, ``pass_fds``, ``close_fds``, ``restore_signals``, ``process_group``
    (3.11's: 0 for a group of its own), stdio as fds,
    file objects, ``PIPE``, ``DEVNULL``, ``STDOUT``; bytes only, no shell),
    plus Linux clone semantics: namespaces, sharing flags, a pidfd, a cgroup,
    ``set_tid``.  ``exit_signal`` stays SIGCHLD: Linux resets the exit signal
    of a child that has exec'd, so spawn() refuses any other.  The setup
    options are clone()'s (maps, ``setgroups``, ``hostname``, ``time_offsets``,
    ``mount_proc``, ``join``, ``pdeathsig``), each implying its namespace, done
    before the program execs; a failure raises here.

    On Linux the child is created with CLONE_VM (and CLONE_VFORK unless maps
    must be written), runs C only, and costs the same whatever the parent's
    size.  A program that cannot be started raises the OSError subprocess
    would (FileNotFoundError, PermissionError, NotADirectoryError for cwd...)
    and leaves no child behind.
    """
    backend = current_backend()
    if isinstance(flags, int) and not isinstance(flags, bool) and 0 <= flags < 1 << 64:
        # what every backend does for a program (CLONE_SIGHAND may follow), as int's own |:
        # an int subclass's __or__ must not decide the flags
        flags = int.__or__(flags, _VM)
    if type(pass_fds) is not tuple:
        pass_fds = tuple(pass_fds)  # read once: the check and the plan see the same fds
    close_fds = bool(close_fds)  # asked once: the check and the plan see the same answer
    options = _options(
        (
            uid_map,
            gid_map,
            map_root,
            setgroups,
            hostname,
            time_offsets,
            mount_proc,
            propagation,
            join,
            pdeathsig,
        )
    )  # in _OPTION_NAMES' order
    request = build(
        backend,
        flags,
        exit_signal,
        cgroup,
        set_tid,
        options,
        exec_child=True,
        conditions=conditions(cwd, pass_fds, close_fds, stdin, stdout, stderr),
    )
    reap_orphans()
    # prepare() opens the pipes and /dev/null: with signals blocked until ``plan`` holds
    # them, so that a handler that raises cannot leave an fd in nobody's hands (in this
    # thread; another thread can still trip a Python handler here).
    opens_fds = stdin in _OPENED or stdout in _OPENED or stderr in _OPENED
    mask = hold_signals() if opens_fds else None
    plan: Optional[SpawnPlan] = None
    try:
        try:
            plan = prepare(
                argv,
                executable=executable,
                env=env,
                cwd=cwd,
                pass_fds=pass_fds,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                close_fds=close_fds,
                options=options,
                flags=int(request.flags),
                process_group=process_group,
                restore_signals=restore_signals,
                backend=backend.name,
                empty_argv0=backend.empty_argv0,
            )
        finally:
            if mask is not None:
                release_signals(mask)  # pending handlers run here
        return plan.finish(backend.spawn(request, plan))
    except BaseException:
        if plan is not None:
            plan.close_all()  # what finish() had not yet handed to the child
        raise
