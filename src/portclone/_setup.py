"""A child's setup: the options clone() and spawn() share.

``parse_options`` checks every option (types, values, and what contradicts the flags)
and changes nothing.  ``ChildSetup`` then opens what the child needs (the namespaces it
joins, the parent's pidfd for the parent-death race) with signals held, and ``native()``
is the tuple the C reads (``pc_setup_parse`` in ``_setup.c``), where the child does the
work before the caller's function runs or the program execs.

Each option implies the namespace it needs (``_flags.OPTIONS``): a hostname a new UTS
namespace, a map a new user namespace, time offsets a new time namespace, a fresh /proc
a new mount namespace.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import sys
import time
from collections.abc import Mapping

from ._common import TYPE_CHECKING, NamedTuple
from ._flags import CONDITIONS, JOIN_ORDER, NS_FLAGS, OPTION, CloneFlags
from ._procns import children_pid_ns, ns_of, open_ns_file, own_ns
from ._sigfd import FdGroup, close_fds, hold_signals, release_signals
from ._subids import helper as subid_helper
from ._validate import parse_id_map

if TYPE_CHECKING:
    from typing import Any, Dict, FrozenSet, List, Optional, Tuple, Union

    from ._child import Child
    from ._validate import IdMap

    StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
    #: What join= takes for each namespace: a Child, a pid, or the path of a namespace file.
    JoinTarget = Union[int, str, bytes, "os.PathLike[str]", "os.PathLike[bytes]", "Child"]

__all__ = ["JOIN_ORDER", "ChildSetup", "NO_OPTIONS", "NO_SETUP", "Options", "parse_options"]

#: The clocks a time namespace offsets (time_namespaces(7)), and their clock ids.
CLOCKS = {
    "monotonic": time.CLOCK_MONOTONIC,
    "boottime": getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC),
}
#: KTIME_SEC_MAX / 2: the kernel keeps an offset clock below it (ERANGE otherwise;
#: torvalds/linux:kernel/time/namespace.c, proc_timens_set_offset).
_TIME_LIMIT = (2**63 - 1) // 10**9 // 2
#: propagation=, numbered as the C takes it (PC_PROPAGATION_* in _native.h); 0: unset
PROPAGATION = {"private": 1, "shared": 2, "slave": 3, "unchanged": 4}

_NO_FLAGS = CloneFlags(0)


class Options(NamedTuple):
    """The setup options of one call, checked.  ``names``: those given."""

    names: FrozenSet[str] = frozenset()
    implied: CloneFlags = _NO_FLAGS
    uid_map: Optional[bytes] = None
    gid_map: Optional[bytes] = None
    setgroups: Optional[bytes] = None
    hostname: Optional[bytes] = None
    time_offsets: Optional[bytes] = None
    mount_proc: Optional[bytes] = None
    join: Tuple[Tuple[str, Any], ...] = ()  # (namespace, target) in JOIN_ORDER
    pdeathsig: int = 0
    propagation: int = 0  # PROPAGATION's number; 0: private before a /proc, else untouched

    @property
    def maps(self) -> bool:
        return self.uid_map is not None or self.gid_map is not None or self.setgroups is not None

    @property
    def joins_pid(self) -> bool:
        return any(name == "pid" for name, _ in self.join)

    def conditions(self) -> FrozenSet[str]:
        """The _flags.CONDITIONS these options make true (the rules of _flags.RULES that
        concern the options, checked by portclone._check)."""
        if not self.names:
            return frozenset()
        found = {"setup", *(f"joins_{ns}" for ns, _ in self.join)}
        found.update(name for name in self.names if name in CONDITIONS)  # "hostname= given"...
        if self.maps:
            found.add("maps")
        if self.time_offsets is not None or "joins_time" in found:
            found.add("enters_time")
        if self.pdeathsig and self.pdeathsig != signal.SIGKILL:
            found.add("pdeathsig_not_sigkill")
        return frozenset(found)


NO_OPTIONS = Options()


def parse_options(
    *,
    uid_map: IdMap = None,
    gid_map: IdMap = None,
    map_root: bool = False,
    setgroups: Optional[str] = None,
    hostname: Optional[str] = None,
    time_offsets: Optional[Mapping[str, float]] = None,
    join: Optional[Mapping[str, JoinTarget]] = None,
    pdeathsig: Optional[int] = None,
    mount_proc: Union[bool, StrOrBytesPath] = False,
    propagation: Optional[str] = None,
) -> Options:
    """Every option checked, as :class:`Options`; TypeError or ValueError naming the
    option otherwise.  Nothing is opened or changed."""
    names = []
    if not isinstance(map_root, bool):
        raise TypeError(f"map_root must be True or False, not {type(map_root).__name__}")
    if map_root:
        if uid_map is not None or gid_map is not None:
            raise ValueError("map_root=True writes the maps itself: leave uid_map/gid_map out")
        uid_map = [(0, os.geteuid(), 1)]
        gid_map = [(0, os.getegid(), 1)]
        names.append("map_root")
    uid = parse_id_map(uid_map, "uid_map")
    gid = parse_id_map(gid_map, "gid_map")
    names += [n for n, v in (("uid_map", uid), ("gid_map", gid)) if v is not None and not map_root]
    groups = _setgroups(setgroups, gid is not None)
    if setgroups is not None:
        names.append("setgroups")
    host = _hostname(hostname)
    offsets = _time_offsets(time_offsets)
    proc = _mount_proc(mount_proc)
    joined = _join(join)
    sig = _pdeathsig(pdeathsig)
    if propagation is not None:
        if not isinstance(propagation, str):
            raise TypeError(f"propagation must be a str, not {type(propagation).__name__}")
        propagation = str.__str__(propagation)  # the value itself, whatever a subclass says
    if propagation is not None and propagation not in PROPAGATION:
        raise ValueError(f"propagation is one of {', '.join(map(repr, PROPAGATION))}, not {propagation!r}")
    names += [
        n
        for n, v in (
            ("hostname", host),
            ("time_offsets", offsets),
            ("mount_proc", proc),
            ("propagation", propagation),
        )
        if v is not None
    ]
    names += [n for n, v in (("join", joined), ("pdeathsig", sig)) if v]
    implied = CloneFlags(0)
    for name in names:
        implied |= OPTION[name].implies
    return Options(
        frozenset(names),
        implied,
        uid,
        gid,
        groups,
        host,
        offsets,
        proc,
        joined,
        sig,
        0 if propagation is None else PROPAGATION[propagation],
    )


def _setgroups(value: object, gid_map: bool) -> Optional[bytes]:
    if value is None:
        return b"deny" if gid_map else None  # as unshare --map-root-user and user_namespaces(7)
    if not isinstance(value, str):
        raise TypeError(f"setgroups must be a str ('deny' or 'allow'), not {type(value).__name__}")
    text = str.__str__(value)  # what is checked is what is written, whatever a subclass says
    if text not in ("deny", "allow"):
        raise ValueError(f"setgroups is 'deny' or 'allow', not {text!r}")
    return text.encode()


def _hostname(value: object) -> Optional[bytes]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"hostname must be a str, not {type(value).__name__}")
    data = str.encode(value, "utf-8", "surrogateescape")
    if b"\0" in data:
        raise ValueError("embedded null byte in hostname")
    if not 0 < len(data) <= 64:  # HOST_NAME_MAX, torvalds/linux:include/uapi/linux/utsname.h
        raise ValueError(f"hostname must be 1 to 64 bytes, not {len(data)}")
    return data


def _time_offsets(value: object) -> Optional[bytes]:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(
            f"time_offsets must be a mapping like {{'monotonic': 3600}}, not {type(value).__name__}"
        )
    if not value:
        raise ValueError("time_offsets is empty: give 'monotonic' and/or 'boottime' seconds")
    lines = []
    own_offsets = _own_time_offsets()
    for clock, seconds in value.items():
        if clock not in CLOCKS:
            raise ValueError(
                f"time_offsets: {clock!r} is not a clock a time namespace offsets "
                f"(only {' and '.join(map(repr, CLOCKS))})"
            )
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(
                f"time_offsets[{clock!r}] must be seconds (int or float), not {type(seconds).__name__}"
            )
        if not math.isfinite(seconds):
            raise ValueError(f"time_offsets[{clock!r}] must be finite, not {seconds}")
        whole = math.floor(seconds)
        nanos = round((seconds - whole) * 1e9) if isinstance(seconds, float) else 0
        if nanos >= 10**9:
            whole, nanos = whole + 1, nanos - 10**9
        # the kernel adds an offset to the initial time namespace's clock, not ours
        now = time.clock_gettime(CLOCKS[clock]) - own_offsets.get(clock, 0.0)
        if not 0 <= now + seconds < _TIME_LIMIT:
            raise ValueError(
                f"time_offsets[{clock!r}] = {seconds} would put {clock} at "
                f"{now + seconds:.0f} s; a clock stays between 0 and {_TIME_LIMIT} "
                f"s (offsets count from the host's clock, which reads {now:.0f} s now)"
            )
        lines.append(f"{clock} {whole} {nanos}\n")
    return "".join(lines).encode("ascii")


def _own_time_offsets() -> Dict[str, float]:
    """The offsets of the caller's own time namespace from the host's clocks
    (/proc/self/timens_offsets; none without a time namespace or /proc)."""
    try:
        with open("/proc/self/timens_offsets", "rb") as f:
            text = f.read()
    except OSError:
        return {}
    found = {}
    for line in text.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].lstrip("-").isdigit() and parts[2].isdigit():
            found[parts[0]] = int(parts[1]) + int(parts[2]) / 1e9
    return found


#: what os.fsencode and os.fsdecode use (fixed at startup), for the common cases below:
#: every call to them is a few more pages written after a fork (see Backend.__init__)
FS_ENCODING = sys.getfilesystemencoding()
FS_ERRORS = sys.getfilesystemencodeerrors()


def fsencode(value: object, what: str) -> bytes:
    """``value`` (str, bytes or os.PathLike) as the exact bytes os.fsencode gives, read
    through str's and bytes' own methods: a subclass's overrides decide nothing (the C reads
    the object's own bytes).  TypeError for another type, ValueError for a NUL byte."""
    kind = type(value)
    given: Any = value  # the type tests are on type(value): exact str and bytes only
    data: bytes
    if kind is str:
        data = given.encode(FS_ENCODING, FS_ERRORS)  # as os.fsencode
    elif kind is bytes:
        data = given
    elif isinstance(value, (str, bytes, os.PathLike)):
        path = os.fspath(value)  # a subclass of str or bytes stays one
        if isinstance(path, str):
            data = str.encode(path, FS_ENCODING, FS_ERRORS)
        else:
            data = bytes.__getitem__(path, slice(None))  # its own bytes, as exact bytes
    else:
        raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")
    if b"\0" in data:
        raise ValueError(f"embedded null byte in {what}")
    return data


def _mount_proc(value: object) -> Optional[bytes]:
    if value is False:
        return None
    if value is True:
        return b"/proc"
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"mount_proc is True, False or a directory, not {type(value).__name__}")
    path = fsencode(value, "mount_proc")
    if not path:
        raise ValueError("mount_proc's directory must be a non-empty path without NUL bytes")
    return path


def _pdeathsig(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"pdeathsig must be a signal number, not {type(value).__name__}")
    value = int.__index__(value)  # the value itself, whatever a subclass's operators say
    if not 0 < value < signal.NSIG:
        raise ValueError(
            f"pdeathsig must be a signal (1 to {signal.NSIG - 1}), not {value}; None for no signal"
        )
    return value


def _join(value: object) -> Tuple[Tuple[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise TypeError(
            f"join must be a mapping of namespace name to target, like "
            f"{{'net': pid}}, not {type(value).__name__}"
        )
    if not value:
        raise ValueError("join is empty: give the namespaces to enter, like {'net': pid}, or leave join out")
    entries = []
    for name, target in value.items():
        if isinstance(name, str):
            name = str.__str__(name)  # the name itself, whatever a subclass's __eq__ says
        if name not in JOIN_ORDER:
            raise ValueError(f"join: {name!r} is not a namespace (one of {', '.join(JOIN_ORDER)})")
        if isinstance(target, bool):
            raise TypeError(f"join[{name!r}] takes a Child, a pid or a path, not bool")
        if isinstance(target, int):
            target = int.__index__(target)  # the pid itself, whatever a subclass says
            if not 0 < target < 2**31:
                raise ValueError(f"join[{name!r}]: {target} is not a pid")
        elif isinstance(target, (str, bytes, os.PathLike)):
            target = fsencode(target, f"join[{name!r}]")  # the path itself, as exact bytes
        elif not (hasattr(target, "pid") and hasattr(target, "poll")):
            raise TypeError(f"join[{name!r}] takes a Child, a pid or a path, not {type(target).__name__}")
        entries.append((name, target))
    return tuple(sorted(entries, key=lambda e: JOIN_ORDER.index(e[0])))


def _pidfd_open(pid: int) -> int:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        raise OSError(errno.ENOSYS, "pidfd_open() is not available here")
    return int(opener(pid))


def _same_ns(name: str, st: os.stat_result) -> bool:
    """Whether ``st`` is the namespace a child of this thread would be in anyway: this
    thread's own, or for "pid" and "time" its namespace for children."""
    ours = own_ns(name)
    if ours is None:
        return False  # cannot tell: join
    return (ours.st_dev, ours.st_ino) == (st.st_dev, st.st_ino)


class NativeSetup(NamedTuple):
    """What ``_native.clone``/``spawn`` take as ``setup``: its fields by the names the C
    reads them by (``_native.SETUP_FIELDS``, checked by tests/test_c_source.py)."""

    uid_map: Optional[bytes]
    gid_map: Optional[bytes]
    setgroups: Optional[bytes]
    hostname: Optional[bytes]
    time_offsets: Optional[bytes]
    mount_proc: Optional[bytes]
    join: Tuple[Tuple[int, int], ...]  # (fd, CLONE_NEW* type), in the order entered
    pdeathsig: int
    parent_pidfd: int
    parent_pid: int
    pid_ns: int
    pid_restore: int
    propagation: int
    uid_helper: Optional[bytes]
    gid_helper: Optional[bytes]


class ChildSetup:
    """The fds a setup needs, owned until the start is over (close(), or __del__ as the
    backstop when a handler raised during a cleanup)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.fds = FdGroup()
        self.join: List[Tuple[int, int]] = []
        self.pid_ns = -1  # the PID namespace the child is created in (join={"pid": ...})
        self.pid_restore = -1  # this thread's own one for children, to go back to
        self.parent_pidfd = -1
        self.parent_pid = 0
        self.uid_helper: Optional[bytes] = None  # newuidmap's words (_subids), or None
        self.gid_helper: Optional[bytes] = None

    def __del__(self) -> None:
        fds = getattr(self, "fds", None)  # None: __init__ was interrupted before it
        while fds:
            try:
                close_fds(fds)
            except BaseException:
                pass

    def close(self) -> None:
        close_fds(self.fds)

    def open(self, flags: int) -> None:
        """Open what the child needs; OSError (ProcessLookupError for a dead pid...) naming
        the target, with nothing left open; PermissionError for maps beyond this caller's
        own ids that newuidmap/newgidmap would not grant (_subids)."""
        if not self.options.names:
            return  # NO_SETUP, shared by every call given no option: nothing to open
        self.uid_helper = subid_helper("uid", self.options.uid_map)
        self.gid_helper = subid_helper("gid", self.options.gid_map)
        if not (self.options.pdeathsig or self.options.join):
            return  # nothing to open (see _open): no fd a handler could strand
        mask = hold_signals()
        try:
            try:
                self._open(flags)
            except BaseException:
                close_fds(self.fds)
                raise
        finally:
            release_signals(mask)

    def _keep(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def _open(self, flags: int) -> None:
        options = self.options
        if options.pdeathsig:
            parent = os.getppid() if flags & CloneFlags.CLONE_PARENT else os.getpid()
            if not flags & CloneFlags.CLONE_NEWPID:
                self.parent_pid = parent
            if hasattr(os, "pidfd_open"):
                try:
                    self.parent_pidfd = self._keep(os.pidfd_open(parent))
                except OSError as e:
                    if e.errno not in (errno.ENOSYS, errno.EINVAL):
                        raise
        pidfds: Dict[int, int] = {}
        for name, target in options.join:
            fd = self._target_fd(name, target, pidfds)
            if fd is None:
                continue  # already ours
            if name == "pid":
                self.pid_ns = fd
                self.pid_restore = self._restore_fd()
            else:
                self.join.append((fd, int(NS_FLAGS[name])))
        for pidfd in pidfds.values():  # the namespaces are open: the targets' pidfds are done
            self._drop(pidfd)

    def _target_fd(self, name: str, target: Any, pidfds: Dict[int, int]) -> Optional[int]:
        """An fd of the namespace to join, None when it is the child's anyway.  A pid or
        a Child is reached through its pidfd (portclone._procns), never /proc/<pid>."""
        what = f"join[{name!r}]"
        if isinstance(target, (str, bytes, os.PathLike)):
            path = os.fsdecode(target)
            fd = self._keep(open_ns_file(path, name, what))
        else:
            if not isinstance(target, int):  # a Child
                if target.poll() is not None:
                    raise ProcessLookupError(
                        errno.ESRCH, f"{what}: the child {target.pid} has exited: it has no namespaces left"
                    )
                target = target.pid
            if target not in pidfds:
                try:
                    pidfds[target] = self._keep(_pidfd_open(target))
                except OSError as e:
                    raise OSError(e.errno, f"{what}: pid {target}: {e.strerror}") from None
            fd = self._keep(ns_of(pidfds[target], name, f"{what}: pid {target}"))
        if not _same_ns(name, os.fstat(fd)):
            return fd
        self._drop(fd)
        return None

    def _drop(self, fd: int) -> None:
        """Close one of our fds now (signals are held: see open())."""
        self.fds.remove(fd)
        os.close(fd)

    def _restore_fd(self) -> int:
        """This thread's namespace for its children, to return to after the clone."""
        return self._keep(children_pid_ns())

    def native(self) -> Optional[NativeSetup]:
        """What ``_native.clone``/``spawn`` take as ``setup``; None for no setup."""
        o = self.options
        if not o.names:
            return None
        # newgidmap sets setgroups as /etc/subgid allows, unless the caller chose
        groups = o.setgroups if self.gid_helper is None or "setgroups" in o.names else None
        return NativeSetup(
            uid_map=o.uid_map,
            gid_map=o.gid_map,
            setgroups=groups,
            hostname=o.hostname,
            time_offsets=o.time_offsets,
            mount_proc=o.mount_proc,
            join=tuple(self.join),
            pdeathsig=o.pdeathsig,
            parent_pidfd=self.parent_pidfd,
            parent_pid=self.parent_pid,
            pid_ns=self.pid_ns,
            pid_restore=self.pid_restore,
            propagation=o.propagation,
            uid_helper=self.uid_helper,
            gid_helper=self.gid_helper,
        )


#: The setup of a child given no option, shared by every such call: it opens nothing, so
#: nothing in it changes.
NO_SETUP = ChildSetup(NO_OPTIONS)
