"""spawn(): start a program in an exec child, with clone flags, at a flat cost.

Everything is checked and prepared here, before anything is created; the
backends only launch (Linux and NetBSD: ``_native.spawn``, a CLONE_VM child
running C only; the fork fallback: os.posix_spawn or fork + exec).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from dataclasses import dataclass, field
from typing import IO, Any, List, Mapping, Optional, Sequence, Tuple, Union

from ._backend import current_backend
from ._child import Child, hold_signals, reap_orphans
from ._errors import InvalidFlagsError, Stage
from ._flags import SIGCHLD, CloneFlags
from ._validate import CgroupArg, IdMap, parse_id_map

__all__ = ["spawn", "PIPE", "DEVNULL", "STDOUT", "SpawnPlan", "child_error"]

#: Same values as subprocess's, so either module's constants work.
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

F = CloneFlags
StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
StdArg = Union[None, int, IO[Any]]


@dataclass
class SpawnPlan:
    """What the child needs, as bytes and fds, plus what the parent keeps."""

    argv: Tuple[bytes, ...]
    paths: Tuple[bytes, ...]  # candidate executables, in PATH order
    name: str  # the program, as errors name it (executable or argv[0])
    envp: Optional[Tuple[bytes, ...]]
    env_dict: Optional[Mapping[bytes, bytes]]
    cwd: Optional[bytes]
    fds: Tuple[int, int, int]  # what becomes 0, 1, 2 in the child; -1: inherited
    keep: Tuple[int, ...]  # pass_fds, sorted
    close_fds: bool
    maps: Optional[Tuple[Optional[bytes], Optional[bytes], bool]]
    hostname: Optional[bytes]
    restore_signals: bool
    #: (index, our end) for PIPE: wrapped into child.stdin/stdout/stderr
    parent_ends: List[Tuple[int, int]] = field(default_factory=list)
    #: fds we opened for the child (its pipe ends, /dev/null): closed once it runs
    child_ends: List[int] = field(default_factory=list)

    def close_all(self) -> None:
        for fd in self.child_ends + [fd for _, fd in self.parent_ends]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.child_ends.clear()
        self.parent_ends.clear()

    def finish(self, child: Child) -> Child:
        """After a successful start: close the child's ends, hand ours to ``child``."""
        while self.child_ends:
            os.close(self.child_ends[-1])
            self.child_ends.pop()
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
        return child


def _fsencode(value: object, what: str) -> bytes:
    if isinstance(value, (str, bytes, os.PathLike)):
        data = os.fsencode(value)
    else:
        raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")
    if b"\0" in data:
        raise ValueError(f"embedded null byte in {what}")
    return data


def _environment(env: Optional[Mapping[Any, Any]]) -> Tuple[Optional[Tuple[bytes, ...]],
                                                             Optional[Mapping[bytes, bytes]]]:
    if env is None:
        return None, None
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping, not {type(env).__name__}")
    pairs = {}
    for key, value in env.items():
        k = _fsencode(key, "an environment variable name")
        v = _fsencode(value, f"environment variable {key!r}")
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
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid file descriptor {value}")
        os.fstat(value)  # EBADF now, not in the child
        return value
    fileno = getattr(value, "fileno", None)
    if fileno is None:
        raise TypeError(f"{type(value).__name__} is neither an fd nor a file object")
    return int(fileno())


def _pass_fd(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"pass_fds takes file descriptors (ints), not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"invalid file descriptor {value} in pass_fds")
    os.fstat(value)  # EBADF now, not in the child
    return value


def prepare(argv: Sequence[StrOrBytesPath], *, executable: Optional[StrOrBytesPath],
            env: Optional[Mapping[Any, Any]], cwd: Optional[StrOrBytesPath],
            pass_fds: Sequence[int], stdin: StdArg, stdout: StdArg, stderr: StdArg,
            close_fds: bool, uid_map: IdMap, gid_map: IdMap, map_root: bool,
            hostname: Optional[str], flags: int, restore_signals: bool = True) -> SpawnPlan:
    """Check everything and build the plan; fds are opened last, and only on success."""
    if isinstance(argv, (str, bytes, os.PathLike)) or not isinstance(argv, Sequence):
        raise TypeError("argv must be a sequence of arguments, like ['ls', '-l']")
    args = tuple(_fsencode(a, "argv") for a in argv)
    if not args:
        raise ValueError("argv must not be empty")
    envp, env_dict = _environment(env)
    program = _fsencode(executable, "executable") if executable is not None else args[0]
    name = os.fsdecode(program)
    paths = _candidates(program, env_dict)
    workdir = _fsencode(cwd, "cwd") if cwd is not None else None
    keep = tuple(sorted({_pass_fd(fd) for fd in pass_fds}))
    fds = (_std(stdin, 0), _std(stdout, 1), _std(stderr, 2))

    if map_root:
        if uid_map is not None or gid_map is not None:
            raise ValueError("map_root=True writes the maps itself: leave uid_map/gid_map out")
        uid_map = [(0, os.geteuid(), 1)]
        gid_map = [(0, os.getegid(), 1)]
    uid = parse_id_map(uid_map, "uid_map")
    gid = parse_id_map(gid_map, "gid_map")
    maps = (uid, gid, os.geteuid() != 0) if uid is not None or gid is not None else None
    host = None
    if hostname is not None:
        if not isinstance(hostname, str):
            raise TypeError("hostname must be a str")
        host = _fsencode(hostname, "hostname")
        if not 0 < len(host) <= 64:
            raise ValueError("hostname must be 1 to 64 bytes")

    conflicts = {}
    if maps is not None and not flags & F.CLONE_NEWUSER:
        conflicts["uid_map/gid_map"] = "a user namespace's maps need CLONE_NEWUSER"
    if maps is not None and flags & F.CLONE_VFORK:
        conflicts["CLONE_VFORK"] = ("with uid_map/gid_map the parent writes the maps while the "
                                    "child waits, which a vfork-suspended parent cannot do")
    if host is not None and not flags & F.CLONE_NEWUTS:
        conflicts["hostname"] = "setting the child's hostname needs CLONE_NEWUTS (or it is the host's)"
    if flags & F.CLONE_FILES and (any(fd >= 0 for fd in fds) or keep or stdin is not None
                                  or stdout is not None or stderr is not None or maps):
        conflicts["CLONE_FILES"] = ("the child shares the parent's fd table: redirecting stdio, "
                                    "pass_fds or the maps' handshake would change the parent's")
    elif flags & F.CLONE_FILES and close_fds:
        conflicts["CLONE_FILES"] = ("the child shares the parent's fd table, so close_fds=True "
                                    "cannot be honoured (marking fds close-on-exec there "
                                    "would mark the parent's) and the program would get every "
                                    "inheritable fd; pass close_fds=False to accept that")
    if flags & F.CLONE_FS and workdir is not None:
        conflicts["CLONE_FS"] = "the child shares the parent's cwd: cwd= would move the parent too"
    if conflicts:
        raise InvalidFlagsError(flags & (F.CLONE_FILES | F.CLONE_FS | F.CLONE_VFORK |
                                         F.CLONE_NEWUSER | F.CLONE_NEWUTS),
                                current_backend().name, conflicts)

    if flags & F.CLONE_SIGHAND:
        restore_signals = False  # the handler table is the parent's: leave it alone
    plan = SpawnPlan(args, paths, name, envp, env_dict, workdir, fds, keep, close_fds, maps, host,
                     restore_signals)
    # Now the fds: pipes and /dev/null, closed again on any failure.
    try:
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


def child_error(error: OSError, plan: SpawnPlan) -> OSError:
    """The exception subprocess would raise for the child's failure."""
    stage = getattr(error, "portclone_stage", Stage.CLONE)
    err = error.errno or 0
    if stage == Stage.EXEC:
        return OSError(err, os.strerror(err), plan.name)
    if stage == Stage.CHDIR:
        return OSError(err, os.strerror(err), os.fsdecode(plan.cwd or b""))
    if stage == Stage.FDS:
        return OSError(err, f"{os.strerror(err)}: setting up the child's file descriptors")
    if stage == Stage.HOSTNAME:
        return OSError(err, f"{os.strerror(err)}: sethostname in the child")
    if stage == Stage.MAPS:
        what = getattr(error, "portclone_map", "maps")
        hint = ("the parent needs privilege over the ids it maps; unprivileged, only its own "
                "uid and gid")
        if err == errno.EACCES:
            hint = ("the child's /proc files belong to root: a process that changed its uid is "
                    "not dumpable (prctl(PR_SET_DUMPABLE, 1) makes it so again)")
        elif err == errno.ENOENT and not os.path.isdir("/proc/self"):
            hint = f"/proc is not mounted: the maps are written to /proc/<pid>/{what}"
        return OSError(err, f"{os.strerror(err)}: writing the child's {what} ({hint})")
    return error


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
    set_tid: Union[int, Sequence[int], None] = None,
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
        flags |= F.CLONE_VM  # what every backend does for a program: CLONE_SIGHAND may follow
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
                           hostname=hostname, flags=request.value,
                           restore_signals=restore_signals)
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # pending handlers run here
        return plan.finish(backend.spawn(request, plan))
    except BaseException:
        if plan is not None:
            plan.close_all()  # what finish() had not yet handed to the child
        raise
