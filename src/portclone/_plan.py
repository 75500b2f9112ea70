"""The spawn plan: a program's start, checked and turned into bytes and fds.

Everything is checked and prepared here, before anything is created; the
backends only launch (Linux and NetBSD: ``_native.spawn``, a CLONE_VM child
running C only; the fork fallback: os.posix_spawn or fork + exec).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from ._child import Child
from ._common import TYPE_CHECKING
from ._flags import CloneFlags
from ._setup import FS_ENCODING, FS_ERRORS, NO_OPTIONS, NO_SETUP, ChildSetup, Options, fsencode
from ._sigfd import FdGroup, close_fds, close_held, hold_signals, release_signals

if TYPE_CHECKING:
    from typing import IO, Any, FrozenSet, List, Optional, Tuple, Union

    StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
    StdArg = Union[None, int, IO[Any]]
    #: subprocess's ``env`` type (typeshed's ``subprocess._ENV``)
    Env = Union[Mapping[bytes, StrOrBytesPath], Mapping[str, StrOrBytesPath]]

__all__ = ["DEVNULL", "PIPE", "STDOUT", "SpawnPlan", "conditions", "prepare"]

#: Same values as subprocess's, so either module's constants work.
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

_SIGHAND = int(CloneFlags.CLONE_SIGHAND)


class SpawnPlan:
    """What the child needs, as bytes and fds, plus what the parent keeps."""

    __slots__ = (
        "argv",
        "child_ends",
        "close_fds",
        "cwd",
        "env_dict",
        "envp",
        "fds",
        "keep",
        "name",
        "parent_ends",
        "paths",
        "process_group",
        "restore_signals",
        "setup",
    )

    def __init__(
        self,
        argv: Tuple[bytes, ...],
        paths: Tuple[bytes, ...],
        name: str,
        envp: Optional[Tuple[bytes, ...]],
        env_dict: Optional[Mapping[bytes, bytes]],
        cwd: Optional[bytes],
        fds: Tuple[int, int, int],
        keep: Tuple[int, ...],
        close_fds: bool,
        restore_signals: bool,
        process_group: int,
        setup: Optional[ChildSetup] = None,
    ) -> None:
        self.argv = argv
        self.paths = paths  # candidate executables, in PATH order
        self.name = name  # the program, as errors name it (executable or argv[0])
        self.envp = envp
        self.env_dict = env_dict
        self.cwd = cwd
        self.fds = fds  # what becomes 0, 1, 2 in the child; -1: inherited
        self.keep = keep  # pass_fds, sorted
        self.close_fds = close_fds
        self.restore_signals = restore_signals
        self.process_group = process_group  # setpgid(0, it) in the child; -1: ours
        #: namespaces, maps, hostname...: what the child does to itself first (_setup)
        self.setup = setup if setup is not None else NO_SETUP
        #: (index, our end) for PIPE: wrapped into child.stdin/stdout/stderr
        self.parent_ends: List[Tuple[int, int]] = []
        #: fds we opened for the child (its pipe ends, /dev/null): closed once it runs
        self.child_ends: List[int] = FdGroup()

    def __del__(self) -> None:
        # a handler that raised again while a failure was cleaned up left fds here; a
        # finalizer's exception is only reported, so close all the same
        try:
            child_ends, parent_ends, setup = self.child_ends, self.parent_ends, self.setup
        except AttributeError:
            return  # __init__ was interrupted: what it set holds no fd yet
        while child_ends or parent_ends or setup.fds:
            try:
                self.close_all()
            except BaseException:
                pass

    def close_all(self) -> None:
        """Close every fd the plan still holds (after a failure)."""
        mask = hold_signals()
        try:
            self.child_ends.extend(fd for _, fd in self.parent_ends)
            self.parent_ends.clear()
            close_fds(self.child_ends)
            self.setup.close()
        finally:
            release_signals(mask)

    def finish(self, child: Child) -> Child:
        """After a successful start: close the child's ends, hand ours to ``child``.
        Signals are held meanwhile, so every fd is either closed, owned by ``child``, or
        still the plan's (for close_all) whatever a handler raises."""
        if not (self.child_ends or self.setup.fds or self.parent_ends):
            child.args = self.argv  # no fd to close or hand over: nothing to hold for
            return child
        mask = hold_signals()  # one hold for all of it (the fds were closed in two before)
        try:
            close_held(self.child_ends)
            close_held(self.setup.fds)
            while self.parent_ends:
                index, fd = self.parent_ends[-1]
                stream = os.fdopen(fd, "wb" if index == 0 else "rb")
                if index == 0:
                    child.stdin = stream
                elif index == 1:
                    child.stdout = stream
                else:
                    child.stderr = stream
                self.parent_ends.pop()  # the child owns it now
            child.args = self.argv
        finally:
            release_signals(mask)  # pending handlers run here
        return child


_CLOSE_FDS = frozenset(["close_fds"])
_NO_CONDITIONS: frozenset = frozenset()  # type: ignore[type-arg]


def conditions(
    cwd: object, pass_fds: Sequence[int], close_fds: bool, stdin: StdArg, stdout: StdArg, stderr: StdArg
) -> FrozenSet[str]:
    """The _flags.CONDITIONS that a spawn()'s process arguments make true (the setup
    options' are Options.conditions): what _flags.RULES holds against the flags."""
    if cwd is None and not pass_fds and stdin is None and stdout is None and stderr is None:
        return _CLOSE_FDS if close_fds is True else _NO_CONDITIONS  # the common case, in few steps
    given = (  # by identity and length: a value's own __eq__ or __bool__ decides nothing
        ("cwd", cwd is not None),
        ("pass_fds", len(pass_fds) > 0),
        ("close_fds", close_fds is True),
        ("stdio", stdin is not None or stdout is not None or stderr is not None),
    )
    return frozenset(name for name, present in given if present)


def _environment(
    env: Optional[Env],
) -> Tuple[Optional[Tuple[bytes, ...]], Optional[Mapping[bytes, bytes]]]:
    if env is None:
        return None, None
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping, not {type(env).__name__}")
    pairs = {}
    for key, value in env.items():
        k = fsencode(key, "an environment variable name")
        v = fsencode(value, f"environment variable {key!r}")
        if not k or b"=" in k:
            raise ValueError(f"illegal environment variable name {key!r}")
        pairs[k] = v
    return tuple(k + b"=" + v for k, v in pairs.items()), pairs


def _candidates(program: bytes, env: Optional[Mapping[bytes, bytes]]) -> Tuple[bytes, ...]:
    """Where to look for ``program``: itself if it has a slash, else the PATH of the
    program's environment (``env``, or ours), os.defpath when that has none (as subprocess)."""
    if b"/" in program:
        return (program,)
    dirs = os.get_exec_path(env)  # type: ignore[arg-type]  # it takes bytes keys too
    return tuple(os.path.join(os.fsencode(d or "."), program) for d in dirs)


def _std(value: StdArg, index: int) -> int:
    """The fd the caller means for stdio slot ``index`` (PIPE/DEVNULL resolved later)."""
    if value is None or value in (PIPE, DEVNULL) or (index == 2 and value == STDOUT):
        return -1
    if isinstance(value, bool):
        raise TypeError("stdin/stdout/stderr take an fd, a file object, PIPE or DEVNULL")
    if not isinstance(value, int):
        fileno = getattr(value, "fileno", None)
        if fileno is None:
            raise TypeError(f"{type(value).__name__} is neither an fd nor a file object")
        return _checked_fd(fileno(), "fileno()")
    return _checked_fd(value, "stdin/stdout/stderr")


def _checked_fd(value: object, what: str) -> int:
    """``value`` as an open fd: TypeError, ValueError or EBADF now, not in the child."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} takes file descriptors (ints), not {type(value).__name__}")
    if not 0 <= value <= 0x7FFFFFFF:  # an fd is a C int
        raise ValueError(f"invalid file descriptor {value} in {what}")
    os.fstat(value)
    return value


def prepare(
    argv: Sequence[StrOrBytesPath],
    *,
    executable: Optional[StrOrBytesPath],
    env: Optional[Env],
    cwd: Optional[StrOrBytesPath],
    pass_fds: Sequence[int],
    stdin: StdArg,
    stdout: StdArg,
    stderr: StdArg,
    close_fds: bool,
    options: Options,
    flags: int,
    restore_signals: bool = True,
    process_group: Optional[int] = None,
    backend: str = "",
    empty_argv0: Optional[str] = None,
) -> SpawnPlan:
    """Check the arguments and build the plan; fds are opened last, and only on success.
    (What the arguments rule out with the flags, ``conditions()``, portclone._check has
    checked.)"""
    if type(argv) not in (list, tuple) and (
        isinstance(argv, (str, bytes, os.PathLike)) or not isinstance(argv, Sequence)
    ):
        raise TypeError("argv must be a sequence of arguments, like ['ls', '-l']")
    args = tuple([fsencode(a, "argv") for a in argv])
    if not args:
        raise ValueError("argv must not be empty")
    if not args[0] and empty_argv0 is not None:
        raise ValueError(
            f"argv[0] is empty, and the {backend} backend cannot start such a program: {empty_argv0}"
        )
    envp, env_dict = (None, None) if env is None else _environment(env)
    program = fsencode(executable, "executable") if executable is not None else args[0]
    name = program.decode(FS_ENCODING, FS_ERRORS)  # os.fsdecode
    paths = _candidates(program, env_dict)
    workdir = fsencode(cwd, "cwd") if cwd is not None else None
    keep = tuple(sorted({_checked_fd(fd, "pass_fds") for fd in pass_fds})) if pass_fds else ()
    if stdin is None and stdout is None and stderr is None:
        fds = (-1, -1, -1)  # the common case: all three inherited
    else:
        fds = (_std(stdin, 0), _std(stdout, 1), _std(stderr, 2))

    if flags & _SIGHAND:
        restore_signals = False  # the handler table is the parent's: leave it alone
    if process_group is None:
        pgid = -1
    elif isinstance(process_group, bool) or not isinstance(process_group, int):
        raise TypeError(f"process_group must be an int, not {type(process_group).__name__}")
    else:
        pgid = int.__index__(process_group)  # the number itself, whatever a subclass says
        if not 0 <= pgid < 2**31:
            raise ValueError(
                f"process_group must be 0 (a group of its own) or a process group id, not {pgid}"
            )
    plan = SpawnPlan(
        args,
        paths,
        name,
        envp,
        env_dict,
        workdir,
        fds,
        keep,
        close_fds,
        restore_signals,
        pgid,
        NO_SETUP if options is NO_OPTIONS else ChildSetup(options),
    )
    # Now the fds: the setup's, pipes and /dev/null, closed again on any failure.
    try:
        plan.setup.open(flags)
        resolved = list(fds)
        for index, value in enumerate((stdin, stdout, stderr)):
            if value == PIPE:
                r, w = os.pipe()  # non-inheritable: the child gets a dup2'd copy
                ours, theirs = (w, r) if index == 0 else (r, w)
                plan.parent_ends.append((index, ours))
                plan.child_ends.append(theirs)
                resolved[index] = theirs
            elif value == DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                plan.child_ends.append(fd)
                resolved[index] = fd
        if stderr == STDOUT:
            resolved[2] = resolved[1] if resolved[1] >= 0 else 1
        plan.fds = (resolved[0], resolved[1], resolved[2])
    except BaseException:
        plan.close_all()
        raise
    return plan
