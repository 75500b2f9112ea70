"""The backend-independent stage of the checking pipeline (portclone._check).

Argument types, bits nobody knows, and the kernel's EINVAL rules from the flag table,
given the conditions the other arguments make true.  What a particular backend can
honour is the backend's ``refusals()``.  Nothing here creates a process, opens a file
descriptor or changes any state.
"""

from __future__ import annotations

import operator
import os
import signal
import stat
from collections.abc import Iterable, Sequence

from ._common import TYPE_CHECKING, NamedTuple
from ._errors import Refusal
from ._flags import CLONE3_ONLY, CSIGNAL, KNOWN_BITS, RULES, SIGCHLD, CloneFlags

if TYPE_CHECKING:
    from typing import Callable, FrozenSet, List, Optional, Tuple, Union

    CgroupArg = Union[int, str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
    #: a user namespace's uid_map/gid_map: (inside, outside, count) triples, or their text
    IdMap = Union[str, Sequence[Tuple[int, int, int]], None]

__all__ = [
    "Request",
    "broken_rules",
    "exit_signal_hazard",
    "parse_id_map",
    "validate",
]


_NO_FLAGS = CloneFlags(0)
MAX_SET_TID = 32  # MAX_PID_NS_LEVEL, torvalds/linux:include/linux/pid_namespace.h


class Request(NamedTuple):
    """A validated clone request: what the caller asked for, normalized."""

    flags: CloneFlags
    exit_signal: int
    cgroup: Optional[CgroupArg] = None
    set_tid: Optional[Tuple[int, ...]] = None
    #: only clone3 can express it (clone3-only flags, set_tid or a cgroup)
    needs_clone3: bool = False
    #: exactly what fork() does: no flag but CLONE_PIDFD, SIGCHLD, nothing else
    plain_fork: bool = False
    #: the setup options given (_flags.OPTIONS), and the flags they added
    options: FrozenSet[str] = frozenset()
    implied: CloneFlags = _NO_FLAGS

    @classmethod
    def make(
        cls,
        flags: int,
        exit_signal: int,
        cgroup: Optional[CgroupArg] = None,
        set_tid: Optional[Tuple[int, ...]] = None,
        options: FrozenSet[str] = frozenset(),
        implied: int = 0,
    ) -> Request:
        needs_clone3 = bool(flags & CLONE3_ONLY) or set_tid is not None or cgroup is not None
        plain_fork = (
            not flags & ~CloneFlags.CLONE_PIDFD
            and exit_signal == SIGCHLD
            and not needs_clone3
            and not options
        )
        return cls(
            CloneFlags(flags),
            exit_signal,
            cgroup,
            set_tid,
            needs_clone3,
            plain_fork,
            options,
            CloneFlags(implied),
        )


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None


def _set_tid(value: object) -> Optional[Tuple[int, ...]]:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TypeError("set_tid must be an int or a sequence of ints")
    if isinstance(value, Sequence):
        return tuple(_as_int(v, "set_tid entries") for v in value)
    return (_as_int(value, "set_tid"),)


def _cgroup(value: object) -> Optional[CgroupArg]:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("cgroup must be a file descriptor or a path, not bool")
    if isinstance(value, int):
        return value
    if isinstance(value, (str, bytes, os.PathLike)):
        return value
    raise TypeError(f"cgroup must be a file descriptor or a path, not {type(value).__name__}")


def _pid_ns_levels() -> int:
    """How many PID namespaces this process is in (1 outside containers)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return len(line.split()) - 1
    except OSError:
        pass
    return 1


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4194304  # PID_MAX_LIMIT on 64-bit kernels


def cgroup_problem(cgroup: CgroupArg) -> Optional[str]:
    """Why ``cgroup`` is not a cgroup v2 directory, or None.  Raises OSError
    (FileNotFoundError, EBADF...) when it cannot be looked at at all."""
    if isinstance(cgroup, int):
        if cgroup < 0:
            return f"cgroup fd {cgroup} is negative"
        st = os.fstat(cgroup)
        if not stat.S_ISDIR(st.st_mode):
            return f"cgroup fd {cgroup} is not a directory"
        try:
            os.stat("cgroup.controllers", dir_fd=cgroup)
        except FileNotFoundError:
            return f"cgroup fd {cgroup} is not a cgroup v2 directory (no cgroup.controllers)"
        return None
    path = os.fsdecode(cgroup)
    if "\0" in path:
        return "the cgroup path contains a NUL byte"
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return f"{path!r} is not a directory"
    if not os.path.exists(os.path.join(path, "cgroup.controllers")):
        return (
            f"{path!r} is not a cgroup v2 directory (no cgroup.controllers); "
            "CLONE_INTO_CGROUP refuses cgroup v1"
        )
    return None


def _lifted(feature: str) -> bool:
    return True


def validate(
    flags: object,
    *,
    exit_signal: object = SIGCHLD,
    cgroup: object = None,
    set_tid: object = None,
    has_feature: Callable[[str], bool] = _lifted,
    options: FrozenSet[str] = frozenset(),
    implied: int = 0,
    joins_pid: bool = False,
    conditions: FrozenSet[str] = frozenset(),
) -> Tuple[Optional[Request], List[Refusal]]:
    """The request, and every Refusal that is true on every backend: the kernel's rules
    for the flags, given the ``conditions`` the other arguments make true (_flags.CONDITIONS;
    those of the exit signal, the cgroup and the caller are added here).  The request is
    None when the flag word is not 64 bits; unknown bits are refused, and the request
    holds the known ones, so that every other refusal is found as well.  Bad
    types raise TypeError; a cgroup that cannot be looked at raises its OSError, unless the
    request is malformed anyway (the kernel's order: EINVAL before the cgroup fd).
    ``joins_pid``: the child is created in a PID namespace of join=, whose depth (what
    set_tid may hold) the kernel checks at the clone.  ``has_feature`` tells whether the
    kernel has the feature that lifts a rule (``Rule.lifted_by``); by default every such
    rule counts as lifted.
    """
    value = _as_int(flags, "flags")
    sig = _as_int(exit_signal, "exit_signal")
    tids = _set_tid(set_tid)
    cg = _cgroup(cgroup)

    found: List[Refusal] = []
    readable = 0 <= value < 1 << 64
    if not readable:
        found.append(Refusal(f"{value:#x} is not a 64-bit flag word", field="flags", invalid=True))
        value = 0  # the other arguments are still checked
    unknown = value & ~KNOWN_BITS & ~CSIGNAL
    if unknown:
        reason = (
            "not a clone flag portclone knows (newer kernels may define it); portclone never "
            "passes unknown bits on (legacy clone would ignore them silently)"
        )
        found.append(Refusal(reason, CloneFlags(unknown)))
        value &= ~unknown  # the known bits are still checked
    if cg is not None:
        value |= CloneFlags.CLONE_INTO_CGROUP
    implied &= ~value  # what the options add beyond what was asked
    value |= implied

    bad_low = int(value & CSIGNAL & ~CloneFlags.CLONE_NEWTIME)
    if bad_low:
        found.append(
            Refusal(
                f"the low byte ({bad_low:#x}) is legacy clone's exit signal, "
                "not a flag: pass exit_signal= instead",
                field="flags",
                invalid=True,
            )
        )
    if not 0 <= sig < signal.NSIG:
        reason = f"{sig} is not a signal number (0 to {signal.NSIG - 1})"
        found.append(Refusal(reason, field="exit_signal", invalid=True))
    present = set(conditions)
    if sig:
        present.add("exit_signal")
    if os.getpid() == 1:
        present.add("caller_is_init")
    if cg is None:
        present.add("no_cgroup")
    found += broken_rules(value, frozenset(present), has_feature)
    if tids is not None:
        problem = _set_tid_problem(tids, value, joins_pid)
        if problem:
            found.append(Refusal(problem, field="set_tid", invalid=True))
    if cg is not None:
        try:
            problem = cgroup_problem(cg)
        except OSError as e:
            if not found:  # the kernel's order: a malformed request is EINVAL first
                raise OSError(e.errno, f"cgroup={cg!r}: {e.strerror}") from None
        else:
            if problem:
                found.append(Refusal(problem, field="cgroup", invalid=True))
    if not readable:
        return None, found
    return Request.make(value, sig, cg, tids, options, implied), found


def broken_rules(
    flags: int,
    present: FrozenSet[str] = frozenset(),
    has_feature: Callable[[str], bool] = _lifted,
) -> List[Refusal]:
    """The RULES ``flags`` breaks, given the conditions ``present`` (see _flags.CONDITIONS)
    and the kernel features that lift a rule."""
    found = []
    for rule in RULES:
        if rule.broken_by(flags, present) and not (rule.lifted_by and has_feature(rule.lifted_by)):
            # the flags at fault: those set, or (a rule about an option) the one it lacks
            found.append(Refusal(rule.message, rule.all_of or rule.missing, rule.field or rule.label, True))
    return found


def _set_tid_problem(tids: Tuple[int, ...], flags: int, joins_pid: bool = False) -> Optional[str]:
    if not 1 <= len(tids) <= MAX_SET_TID:
        return f"must hold 1 to {MAX_SET_TID} pids, not {len(tids)}"
    pid_max = _pid_max()
    for i, tid in enumerate(tids):
        if not 0 < tid < pid_max:  # pid_max itself is not a pid (alloc_pid: tid >= pid_max)
            return f"set_tid[{i}] = {tid} is outside 1..{pid_max - 1} (/proc/sys/kernel/pid_max is {pid_max})"
    levels = _pid_ns_levels() + (1 if flags & CloneFlags.CLONE_NEWPID else 0)
    if len(tids) > levels and not joins_pid:
        return (
            f"{len(tids)} pids given, but the child lives in {levels} PID namespace(s) "
            "(one pid per level, innermost first)"
        )
    if flags & CloneFlags.CLONE_NEWPID and tids[0] != 1:
        return "with CLONE_NEWPID the child is the new namespace's init: set_tid[0] must be 1"
    return None


#: Signals whose default action neither ends nor stops a process (signal(7)).
_HARMLESS_BY_DEFAULT = frozenset(
    getattr(signal, name)
    for name in ("SIGCHLD", "SIGURG", "SIGWINCH", "SIGCONT", "SIGINFO")
    if hasattr(signal, name)
)


def exit_signal_hazard(sig: int) -> Optional[str]:
    """Why ``sig`` as an exit signal would end or stop this process, or None.

    Asked on every call with another exit signal than SIGCHLD: the disposition is the
    process's current one, so it is never remembered.
    """
    if not 0 < sig < signal.NSIG or sig in _HARMLESS_BY_DEFAULT:
        return None  # none, harmless, or no signal at all (validate() refuses that)
    try:
        handler = signal.getsignal(sig)
    except (ValueError, OSError):
        return None
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    if handler is None:  # not Python's: glibc reserves 32 and 33, C code may own others
        return (
            f"signal {name}'s disposition is not Python's to see or set (libc reserves "
            "32 and 33), so portclone cannot tell whether the child's exit would end "
            "this process: use SIGCHLD or a signal Python handles"
        )
    if handler is signal.default_int_handler:  # Python's own SIGINT handler
        return (
            f"{name}'s handler is Python's default one, which raises KeyboardInterrupt in this "
            f"process when the child exits: install a handler with signal.signal({name}, ...) "
            "or ignore it first, or use SIGCHLD"
        )
    if handler != signal.SIG_DFL:
        return None  # a handler, or SIG_IGN
    return (
        f"{name} is at its default action here, which would end (or stop) this process "
        f"when the child exits: install a handler with signal.signal({name}, ...) or "
        "ignore it first, or use SIGCHLD"
    )


# What /proc/PID/[ug]id_map accepts (torvalds/linux:kernel/user_namespace.c, map_write and
# mappings_overlap; include/linux/user_namespace.h): ids are u32 and (u32)-1 is the invalid
# id, so a start is at most 2**32 - 2 and start + count may not wrap past 2**32 - 1; count is
# at least 1; no two lines overlap on either side; at most UID_GID_MAP_MAX_EXTENTS lines
# (340 since Linux 4.15, 5 before); and the text is less than a page.  Anything else is
# EINVAL, after the child exists, or, for ids of 2**32 and more, silently truncated.
_ID_LIMIT = 2**32 - 1
_MAX_EXTENTS = 340


def parse_id_map(value: IdMap, what: str) -> Optional[bytes]:
    """``value`` checked as the kernel will, as canonical /proc text; None stays None.

    ``value`` is a sequence of ``(inside, outside, count)`` triples of ints, or text with
    one whitespace-separated triple per line.  TypeError or ValueError, naming ``what``
    (``uid_map``...), for anything the kernel would refuse or truncate.
    """
    if value is None:
        return None
    if isinstance(value, str):
        lines = str.__str__(value).splitlines()  # the text itself, whatever a subclass says
        triples: Iterable[object] = [_text_line(line, what) for line in lines if line.strip()]
    elif isinstance(value, (bytes, bytearray)) or not isinstance(value, Iterable):
        raise TypeError(
            f"{what} must be a str or a sequence of (inside, outside, count) "
            f"triples, not {type(value).__name__}"
        )
    else:
        triples = value
    extents = [_extent(entry, what) for entry in triples]
    if not extents:
        raise ValueError(f"{what} is empty")
    if len(extents) > _MAX_EXTENTS:
        raise ValueError(f"{what} has {len(extents)} lines; Linux takes at most {_MAX_EXTENTS}")
    for side, name in ((0, "inside"), (1, "outside")):
        ranges = sorted((e[side], e[side] + e[2]) for e in extents)
        for (_, end), (start, _) in zip(ranges, ranges[1:]):
            if start < end:
                raise ValueError(f"{what}: two lines map {name} id {start}; ranges may not overlap")
    text = "".join(f"{a} {b} {c}\n" for a, b, c in extents).encode("ascii")
    page = os.sysconf("SC_PAGE_SIZE")
    if len(text) >= page:
        raise ValueError(f"{what} is {len(text)} bytes as text; the kernel takes less than a page ({page})")
    return text


def _text_line(line: str, what: str) -> Tuple[int, ...]:
    fields = line.split()
    if len(fields) != 3 or not all(f.isascii() and f.isdigit() for f in fields):
        raise ValueError(f"{what} lines are 'inside outside count' in decimal, not {line!r}")
    return tuple(int(f) for f in fields)


def _extent(entry: object, what: str) -> Tuple[int, int, int]:
    if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence):
        raise TypeError(f"{what} entries are (inside, outside, count) triples, not {type(entry).__name__}")
    items = tuple(entry)  # read once: the length checked is the length used
    if len(items) != 3:
        raise ValueError(f"{what} entries are (inside, outside, count) triples, not {entry!r}")
    numbers: List[int] = []
    for n in items:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{what} entries are triples of ints, not {entry!r}")
        numbers.append(int.__index__(n))  # the number itself, whatever a subclass says
    inside, outside, count = numbers
    if not (0 <= inside < _ID_LIMIT and 0 <= outside < _ID_LIMIT):
        raise ValueError(
            f"{what}: ids are 0 to {_ID_LIMIT - 1} ({_ID_LIMIT} is the invalid id), not {entry!r}"
        )
    if count < 1 or inside + count > _ID_LIMIT or outside + count > _ID_LIMIT:
        raise ValueError(
            f"{what}: count must be at least 1 and keep both ranges below {_ID_LIMIT}, not {entry!r}"
        )
    return inside, outside, count
