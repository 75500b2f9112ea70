"""The one table of clone-flag knowledge.

Validation (:mod:`portclone._validate`), error messages, ``python -m portclone
info`` and the docs' availability table (docs/flags.md) are all derived from ``TABLE`` and
``RULES`` below; nothing else in portclone spells out what a flag means or
where it works.

Sources: torvalds/linux:include/uapi/linux/sched.h (values),
torvalds/linux:kernel/fork.c (copy_process, clone3_args_valid,
copy_clone_args_from_user: the EINVAL rules), man clone(2).
"""

from __future__ import annotations

import enum
import re
import signal

from ._common import BACKENDS, TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from typing import Dict, FrozenSet, Iterator, Optional, Tuple

__all__ = [
    "BACKENDS",
    "CONDITIONS",
    "CSIGNAL",
    "NS_FLAGS",
    "OPTION",
    "OPTIONS",
    "RULES",
    "SIGCHLD",
    "TABLE",
    "CloneFlags",
    "FlagInfo",
    "OptionInfo",
    "Rule",
    "describe",
]

#: The low byte of legacy clone's flags word: the exit signal, not a flag.
CSIGNAL = 0xFF

#: The default exit signal.  Windows has no SIGCHLD: importing portclone works
#: there, and clone() explains that no backend can run.
SIGCHLD: int = getattr(signal, "SIGCHLD", 0)


class CloneFlags(enum.IntFlag):
    """Every ``CLONE_*`` flag Linux defines (clone(2), clone3(2), linux/sched.h).

    ``CLONE_PID`` (Linux 2.0-2.5.15) is deliberately absent: its bit, 0x1000,
    has meant ``CLONE_PIDFD`` since Linux 5.2.
    """

    CLONE_NEWTIME = 0x00000080
    CLONE_VM = 0x00000100
    CLONE_FS = 0x00000200
    CLONE_FILES = 0x00000400
    CLONE_SIGHAND = 0x00000800
    CLONE_PIDFD = 0x00001000
    CLONE_PTRACE = 0x00002000
    CLONE_VFORK = 0x00004000
    CLONE_PARENT = 0x00008000
    CLONE_THREAD = 0x00010000
    CLONE_NEWNS = 0x00020000
    CLONE_SYSVSEM = 0x00040000
    CLONE_SETTLS = 0x00080000
    CLONE_PARENT_SETTID = 0x00100000
    CLONE_CHILD_CLEARTID = 0x00200000
    CLONE_DETACHED = 0x00400000
    CLONE_UNTRACED = 0x00800000
    CLONE_CHILD_SETTID = 0x01000000
    CLONE_NEWCGROUP = 0x02000000
    CLONE_NEWUTS = 0x04000000
    CLONE_NEWIPC = 0x08000000
    CLONE_NEWUSER = 0x10000000
    CLONE_NEWPID = 0x20000000
    CLONE_NEWNET = 0x40000000
    CLONE_IO = 0x80000000
    CLONE_CLEAR_SIGHAND = 1 << 32
    CLONE_INTO_CGROUP = 1 << 33
    CLONE_AUTOREAP = 1 << 34
    CLONE_NNP = 1 << 35
    CLONE_PIDFD_AUTOKILL = 1 << 36
    CLONE_EMPTY_MNTNS = 1 << 37

    # Python 3.11 changed str()/repr() of IntFlag; these are the same everywhere.
    def __str__(self) -> str:
        return describe(int(self))

    def __repr__(self) -> str:
        return f"<CloneFlags {describe(int(self))}: {int(self):#x}>"

    def __format__(self, spec: str) -> str:
        # an int's format for a spec (f"{flags:#x}"); before 3.11 a str __str__ made
        # IntFlag format through str, so any spec raised ValueError
        return format(int(self), spec) if spec else str(self)

    @classmethod
    def parse(cls, text: str) -> CloneFlags:
        """``"NEWUSER,NEWPID"`` or ``"CLONE_NEWUSER|CLONE_NEWPID"`` -> flags."""
        value = cls(0)
        for word in filter(None, (w.strip() for w in re.split(r"[|,\s]+", text))):
            name = word.upper()
            if not name.startswith("CLONE_"):
                name = "CLONE_" + name
            if name == "CLONE_PID":
                raise ValueError(RETIRED_NAMES["CLONE_PID"])
            try:
                value |= cls[name]
            except KeyError:
                raise ValueError(f"unknown clone flag {word!r}") from None
        return value


#: Names that exist in old headers but that portclone does not define, and why.
RETIRED_NAMES = {
    "CLONE_PID": "CLONE_PID (Linux 2.0 to 2.5.15) is obsolete: its bit, 0x1000, has meant "
    "CLONE_PIDFD since Linux 5.2, so portclone does not define it",
}

#: The backends the table knows; each FlagInfo says for each whether it works.


class FlagInfo(NamedTuple):
    """What portclone knows about one flag.

    ``linux``, ``netbsd`` and ``fork`` are ``None`` where that backend honours
    the flag for a Python child, else the reason it refuses it.
    """

    flag: CloneFlags
    since: str  # first Linux version with the flag
    meaning: str  # what the child gets
    linux: Optional[str]
    netbsd: Optional[str]
    fork: Optional[str]
    clone3_only: bool = False  # legacy clone cannot express it
    ns: str = ""  # for namespace flags: the name under /proc/self/ns
    #: for exec children (spawn()), (backend, reason-or-None) where they differ
    exec_child: Tuple[Tuple[str, Optional[str]], ...] = ()

    @property
    def name(self) -> str:
        return _NAMES[int(self.flag)]

    def reason(self, backend: str, exec_child: bool = False) -> Optional[str]:
        """None if ``backend`` honours the flag (for an exec child), else why not."""
        if exec_child:
            for name, why in self.exec_child:
                if name == backend:
                    return why
        value: Optional[str] = getattr(self, backend)
        return value


YES = None  # in the table: the backend honours the flag
_NO_PYTHON_USE = " (no meaningful Python use)"
_FORK_NEEDS = "; this needs the linux backend (Linux with portclone's native extension)"
_NB_IGNORES = "NetBSD's clone does not know it: its kernel would silently ignore the bit"
_NB_NO_NS = "NetBSD has no namespaces: its kernel would silently ignore the bit"
_FORK_NO_NS = "os.fork cannot create namespaces" + _FORK_NEEDS
_FORK_NO_PASS = "os.fork cannot pass it to the kernel"
_PY_SHARES_MEMORY = (
    "a Python child cannot share the interpreter's memory with its parent (both would run the "
    "same interpreter state at once); CLONE_VM is for exec children, or use CLONE_VFORK for a "
    "child that suspends the parent"
)
_PY_SHARES_HANDLERS = (
    "shared signal handlers need CLONE_VM (the kernel's rule), which a Python child cannot use; "
    "CLONE_CLEAR_SIGHAND resets the child's handlers instead"
)
_NEW_IN_71 = "not yet honoured: portclone does not use this Linux 7.1 flag yet; "


def _share(what: str) -> str:
    return f"os.fork cannot share {what} with the child" + _FORK_NEEDS


def _ns(flag: CloneFlags, since: str, what: str, ns: str) -> FlagInfo:
    return FlagInfo(flag, since, f"new {what} namespace", YES, _NB_NO_NS, _FORK_NO_NS, ns=ns)


TABLE: Tuple[FlagInfo, ...] = (
    FlagInfo(
        CloneFlags.CLONE_VM,
        "2.0",
        "shares the parent's memory (until an exec child execs)",
        linux=_PY_SHARES_MEMORY,
        netbsd=_PY_SHARES_MEMORY,
        fork=_share("memory"),
        exec_child=(("linux", YES), ("netbsd", YES), ("fork", YES)),
    ),  # os.posix_spawn: the parent is not copied either
    FlagInfo(
        CloneFlags.CLONE_FS,
        "2.0",
        "shares cwd, root and umask with the parent",
        linux=YES,
        netbsd=YES,
        fork=_share("cwd, root and umask"),
    ),
    FlagInfo(
        CloneFlags.CLONE_FILES,
        "2.0",
        "shares the file descriptor table with the parent",
        linux=YES,
        netbsd=YES,
        fork=_share("the file descriptor table"),
    ),
    FlagInfo(
        CloneFlags.CLONE_SIGHAND,
        "2.0",
        "shares signal handlers with the parent (needs CLONE_VM)",
        linux=_PY_SHARES_HANDLERS,
        netbsd=_PY_SHARES_HANDLERS,
        fork=_share("signal handlers"),
        exec_child=(("linux", YES), ("netbsd", YES)),
    ),
    FlagInfo(
        CloneFlags.CLONE_PIDFD,
        "5.2",
        "a pidfd for the child (portclone asks for one whenever it can)",
        linux=YES,
        netbsd="NetBSD has no pidfds: its kernel would silently ignore the bit",
        fork="no pidfd without the linux backend; Child.pidfd is None here",
    ),
    FlagInfo(
        CloneFlags.CLONE_PTRACE,
        "2.2",
        "the child is traced by the caller's tracer, if it has one",
        linux=YES,
        netbsd="NetBSD's kernel refuses CLONE_PTRACE (EINVAL)",
        fork="os.fork cannot start the child traced",
    ),
    FlagInfo(
        CloneFlags.CLONE_VFORK,
        "2.2",
        "the parent is suspended until the child exits or execs",
        linux=YES,
        netbsd=YES,
        fork=YES,
    ),
    FlagInfo(
        CloneFlags.CLONE_PARENT,
        "2.3.12",
        "the child's parent is the caller's parent (exit_signal=0)",
        linux=YES,
        netbsd=_NB_IGNORES,
        fork="os.fork always makes the caller the parent",
    ),
    FlagInfo(
        CloneFlags.CLONE_THREAD,
        "2.4.0",
        "the child is a thread in the caller's thread group",
        linux="a thread needs CLONE_VM and CLONE_SIGHAND, which a Python child cannot use; "
        "use the threading module for threads",
        netbsd=_NB_IGNORES,
        fork="os.fork cannot make threads; use the threading module",
    ),
    _ns(CloneFlags.CLONE_NEWNS, "2.4.19", "mount", "mnt"),
    FlagInfo(
        CloneFlags.CLONE_SYSVSEM,
        "2.5.10",
        "shares System V semaphore undo values",
        linux=YES,
        netbsd=_NB_IGNORES,
        fork=_share("System V semaphore undo lists"),
    ),
    FlagInfo(
        CloneFlags.CLONE_SETTLS,
        "2.5.32",
        "sets the child's thread-local storage pointer",
        linux="a new TLS pointer only makes sense for a thread with its own stack; a Python "
        "child keeps the parent's TLS layout" + _NO_PYTHON_USE,
        netbsd=_NB_IGNORES,
        fork="os.fork cannot set a TLS pointer",
    ),
    FlagInfo(
        CloneFlags.CLONE_PARENT_SETTID,
        "2.5.49",
        "stores the child's tid in the parent's memory",
        linux="writes a tid into raw parent memory; Child.pid already carries it" + _NO_PYTHON_USE,
        netbsd=_NB_IGNORES,
        fork="os.fork returns the pid; there is nothing to store",
    ),
    FlagInfo(
        CloneFlags.CLONE_CHILD_CLEARTID,
        "2.5.49",
        "clears a tid word in the child's memory at exit",
        linux="clears and wakes a futex word in the child's memory when it exits, for thread "
        "libraries joining threads" + _NO_PYTHON_USE,
        netbsd=_NB_IGNORES,
        fork=_FORK_NO_PASS,
    ),
    FlagInfo(
        CloneFlags.CLONE_DETACHED,
        "2.5.32",
        "obsolete: ignored since Linux 2.6.2, refused by clone3",
        linux="obsolete: Linux ignores it (legacy clone) or refuses it (clone3)",
        netbsd=_NB_IGNORES,
        fork="obsolete, and os.fork could not pass it on anyway",
    ),
    FlagInfo(
        CloneFlags.CLONE_UNTRACED,
        "2.5.46",
        "a tracer cannot force CLONE_PTRACE on the child",
        linux=YES,
        netbsd=_NB_IGNORES,
        fork=_FORK_NO_PASS,
    ),
    FlagInfo(
        CloneFlags.CLONE_CHILD_SETTID,
        "2.5.49",
        "stores the child's tid in the child's memory",
        linux="portclone uses it internally to repair libc's cached thread id in the child; "
        "Child.pid carries the tid" + _NO_PYTHON_USE,
        netbsd=_NB_IGNORES,
        fork=_FORK_NO_PASS,
    ),
    _ns(CloneFlags.CLONE_NEWCGROUP, "4.6", "cgroup", "cgroup"),
    _ns(CloneFlags.CLONE_NEWUTS, "2.6.19", "UTS (hostname)", "uts"),
    _ns(CloneFlags.CLONE_NEWIPC, "2.6.19", "IPC", "ipc"),
    _ns(CloneFlags.CLONE_NEWUSER, "3.8", "user", "user"),
    _ns(CloneFlags.CLONE_NEWPID, "2.6.24", "PID", "pid"),
    _ns(CloneFlags.CLONE_NEWNET, "2.6.29", "network", "net"),
    FlagInfo(
        CloneFlags.CLONE_IO,
        "2.6.25",
        "shares the I/O context (I/O scheduling) with the parent",
        linux=YES,
        netbsd=_NB_IGNORES,
        fork=_share("the I/O context"),
    ),
    FlagInfo(
        CloneFlags.CLONE_NEWTIME,
        "5.8",
        "new time namespace (its bit lies in the exit-signal byte)",
        linux=YES,
        netbsd=_NB_NO_NS,
        fork=_FORK_NO_NS,
        clone3_only=True,
        ns="time",
    ),
    FlagInfo(
        CloneFlags.CLONE_CLEAR_SIGHAND,
        "5.5",
        "the child's signal handlers are reset to SIG_DFL",
        linux=YES,
        netbsd="NetBSD's clone cannot reset handlers; reset them in the child with signal.signal",
        fork="os.fork keeps the handlers; reset them in the child with signal.signal",
        clone3_only=True,
    ),
    FlagInfo(
        CloneFlags.CLONE_INTO_CGROUP,
        "5.7",
        "the child starts in the cgroup v2 given as cgroup=",
        linux=YES,
        netbsd="NetBSD has no cgroups",
        fork="os.fork cannot choose the child's cgroup; write its pid to cgroup.procs after it starts",
        clone3_only=True,
    ),
    FlagInfo(
        CloneFlags.CLONE_AUTOREAP,
        "7.1",
        "the child is reaped automatically (no exit status)",
        linux="Child.wait() and returncode need the exit status, which an auto-reaped child "
        "never leaves; set SIGCHLD to SIG_IGN to discard statuses instead",
        netbsd=_NB_IGNORES,
        fork=_FORK_NO_PASS,
        clone3_only=True,
    ),
    FlagInfo(
        CloneFlags.CLONE_NNP,
        "7.1",
        "the child starts with no_new_privs set",
        linux=_NEW_IN_71 + "call prctl(PR_SET_NO_NEW_PRIVS) in the child instead",
        netbsd=_NB_IGNORES,
        fork=_FORK_NO_PASS,
        clone3_only=True,
    ),
    FlagInfo(
        CloneFlags.CLONE_PIDFD_AUTOKILL,
        "7.1",
        "the child is killed when its pidfd is closed",
        linux=_NEW_IN_71 + "kill the child from Child.close() or a finally block instead",
        netbsd=_NB_IGNORES,
        fork=_FORK_NO_PASS,
        clone3_only=True,
    ),
    # torvalds/linux "namespace: allow creating empty mount namespaces" (merged March 2026)
    FlagInfo(
        CloneFlags.CLONE_EMPTY_MNTNS,
        "7.1",
        "a new mount namespace holding only an empty root (implies CLONE_NEWNS)",
        linux=_NEW_IN_71 + "use CLONE_NEWNS and unmount what the child must not see",
        netbsd=_NB_NO_NS,
        fork=_FORK_NO_NS,
        clone3_only=True,
        ns="mnt",
    ),
)

_NAMES: Dict[int, str] = {int(m): name for name, m in CloneFlags.__members__.items()}
INFO: Dict[int, FlagInfo] = {int(i.flag): i for i in TABLE}
KNOWN_BITS = 0
for _info in TABLE:
    KNOWN_BITS |= int(_info.flag)
CLONE3_ONLY = CloneFlags(0)
for _info in TABLE:
    if _info.clone3_only:
        CLONE3_ONLY |= _info.flag
del _info


def bits(value: int) -> Iterator[int]:
    """The single set bits of ``value``, lowest first."""
    while value:
        low = value & -value
        yield low
        value ^= low


def describe(value: int) -> str:
    """``CLONE_NEWUSER|CLONE_NEWPID``; unknown bits as hex; ``0`` for none."""
    if not value:
        return "0"
    return "|".join(_NAMES.get(b, f"{b:#x}") for b in bits(int(value)))


_NONE = CloneFlags(0)

#: Why a program started by spawn() takes no exit signal but SIGCHLD.
EXEC_SIGNAL_REASON = (
    "a program started by spawn() always reports its exit with SIGCHLD: Linux resets the exit "
    "signal of a child that has exec'd (its exec id changed: torvalds/linux:kernel/exit.c, "
    "exit_notify), so another exit signal would silently not happen"
)


#: The conditions a Rule can depend on besides the flags, and what they mean.  Validation
#: (portclone._validate) says which hold for a request.
#: The flag of each namespace, by its name under /proc/self/ns: the names join= takes.
NS_FLAGS: Dict[str, CloneFlags] = {}
for _info in TABLE:
    if _info.ns and _info.ns not in NS_FLAGS:
        NS_FLAGS[_info.ns] = _info.flag
del _info
#: nsenter(1)'s order of entering namespaces (util-linux:sys-utils/nsenter.c, namespace_files):
#: the user namespace first, for the privileges it gives over the rest, the mount namespace
#: late, as it changes root and cwd.  join= and the command line's joins keep it.
JOIN_ORDER = ("user", "cgroup", "ipc", "uts", "net", "pid", "mnt", "time")

CONDITIONS = {
    "exit_signal": "an exit signal other than 0",
    "caller_is_init": "the caller is the init process of its PID namespace",
    "no_cgroup": "no cgroup= given",
    "cwd": "cwd= given",
    "stdio": "stdin, stdout or stderr redirected (spawn)",
    "pass_fds": "pass_fds= given",
    "close_fds": "close_fds=True",
    "maps": "uid_map, gid_map, map_root or setgroups given",
    "hostname": "hostname= given",
    "setup": "an option that sets the child up (maps, hostname, join...)",
    "clone_setup": "clone() with an option that sets the child up (maps, hostname, join...)",
    "exec": "spawn() (an exec child)",
    "mount_proc": "mount_proc= given",
    "propagation": "propagation= given",
    "enters_time": "time_offsets= given, or join= names a time namespace",
    "pdeathsig_not_sigkill": "pdeathsig= other than SIGKILL",
    **{f"joins_{ns}": f"join= names an existing {ns} namespace" for ns in JOIN_ORDER},
}


class Rule(NamedTuple):
    """A request the kernel refuses (EINVAL), or that would break a promise of portclone's.

    The rule is broken when every flag in ``all_of`` is set, none of ``missing`` is (when
    ``missing`` is non-zero), when ``when`` names conditions, one of them holds, and every
    condition in ``also`` holds.  ``field`` names the argument at fault when it is not a
    flag (``exit_signal``...).
    """

    all_of: CloneFlags
    message: str
    missing: CloneFlags = _NONE
    source: str = "torvalds/linux:kernel/fork.c (copy_process)"
    #: a kernel feature that lifts the rule, probed by the backend (Backend.has_feature);
    #: "" for rules every kernel keeps
    lifted_by: str = ""
    when: Tuple[str, ...] = ()
    field: str = ""
    also: Tuple[str, ...] = ()

    def broken_by(self, flags: int, present: FrozenSet[str] = frozenset()) -> bool:
        if self.when and present.isdisjoint(self.when):
            return False
        if self.also and not present.issuperset(self.also):
            return False
        if flags & self.all_of != self.all_of:
            return False
        return not self.missing or not flags & self.missing

    @property
    def label(self) -> str:
        """What an error names for this rule: the field, or the flags involved."""
        return self.field or describe(int(self.all_of | self.missing))


_PORTCLONE = "portclone (what the child does must stay the child's)"
RULES: Tuple[Rule, ...] = (
    Rule(CloneFlags.CLONE_SIGHAND, "CLONE_SIGHAND needs CLONE_VM", missing=CloneFlags.CLONE_VM),
    Rule(CloneFlags.CLONE_THREAD, "CLONE_THREAD needs CLONE_SIGHAND", missing=CloneFlags.CLONE_SIGHAND),
    Rule(
        CloneFlags.CLONE_NEWNS | CloneFlags.CLONE_FS,
        "a new mount namespace cannot share cwd and root with the parent (CLONE_NEWNS with CLONE_FS)",
    ),
    Rule(
        CloneFlags.CLONE_NEWUSER | CloneFlags.CLONE_FS,
        "a new user namespace cannot share cwd and root with the parent (CLONE_NEWUSER with CLONE_FS)",
    ),
    Rule(
        CloneFlags.CLONE_NEWIPC | CloneFlags.CLONE_SYSVSEM,
        "a new IPC namespace cannot share System V semaphore undo lists (CLONE_NEWIPC with CLONE_SYSVSEM)",
    ),
    Rule(CloneFlags.CLONE_NEWPID | CloneFlags.CLONE_THREAD, "a thread cannot start a new PID namespace"),
    Rule(CloneFlags.CLONE_NEWUSER | CloneFlags.CLONE_THREAD, "a thread cannot start a new user namespace"),
    Rule(
        CloneFlags.CLONE_PIDFD | CloneFlags.CLONE_THREAD,
        "a thread cannot have a pidfd on this kernel (CLONE_PIDFD with CLONE_THREAD; Linux 6.9 "
        "allows it, with pidfd_open's PIDFD_THREAD)",
        lifted_by="thread_pidfds",
    ),
    Rule(CloneFlags.CLONE_PIDFD | CloneFlags.CLONE_DETACHED, "CLONE_PIDFD with CLONE_DETACHED"),
    Rule(
        CloneFlags.CLONE_DETACHED,
        "CLONE_DETACHED is obsolete: clone3 refuses it (EINVAL) and legacy "
        "clone has ignored it since Linux 2.6.2",
        source="torvalds/linux:kernel/fork.c (clone3_args_valid)",
    ),
    # Linux 7.1's clone3 refuses these (EINVAL); older kernels refuse the flags themselves
    Rule(
        CloneFlags.CLONE_AUTOREAP | CloneFlags.CLONE_THREAD,
        "a thread cannot be auto-reaped (CLONE_AUTOREAP with CLONE_THREAD)",
    ),
    Rule(
        CloneFlags.CLONE_AUTOREAP | CloneFlags.CLONE_PARENT,
        "the caller's parent would have to reap it: not with CLONE_PARENT (CLONE_AUTOREAP with CLONE_PARENT)",
    ),
    Rule(
        CloneFlags.CLONE_NNP | CloneFlags.CLONE_THREAD,
        "no_new_privs is per thread group: not with CLONE_THREAD (CLONE_NNP with CLONE_THREAD)",
    ),
    # the pidfd series' selftests (tools/testing/selftests/pidfd/pidfd_autoreap_test.c:
    # autokill_requires_pidfd, autokill_requires_autoreap) and the empty-mount-namespace ones
    # (tools/testing/selftests/filesystems: CLONE_EMPTY_MNTNS | CLONE_FS is EINVAL)
    Rule(
        CloneFlags.CLONE_PIDFD_AUTOKILL,
        "CLONE_PIDFD_AUTOKILL kills through the clone's pidfd: it needs CLONE_PIDFD",
        missing=CloneFlags.CLONE_PIDFD,
    ),
    Rule(
        CloneFlags.CLONE_PIDFD_AUTOKILL,
        "CLONE_PIDFD_AUTOKILL needs CLONE_AUTOREAP",
        missing=CloneFlags.CLONE_AUTOREAP,
    ),
    Rule(
        CloneFlags.CLONE_EMPTY_MNTNS | CloneFlags.CLONE_FS,
        "a new mount namespace cannot share "
        "cwd and root with the parent (CLONE_EMPTY_MNTNS, which implies CLONE_NEWNS, with CLONE_FS)",
    ),
    Rule(
        CloneFlags.CLONE_SIGHAND | CloneFlags.CLONE_CLEAR_SIGHAND,
        "handlers cannot be both shared and reset (CLONE_SIGHAND with CLONE_CLEAR_SIGHAND)",
        source="torvalds/linux:kernel/fork.c (clone3_args_valid)",
    ),
    # the exit signal
    Rule(
        CloneFlags.CLONE_PARENT,
        "CLONE_PARENT takes the exit signal from the caller: pass exit_signal=0 (clone3 answers EINVAL)",
        when=("exit_signal",),
        field="exit_signal",
        source="torvalds/linux:kernel/fork.c (clone3_args_valid)",
    ),
    Rule(
        CloneFlags.CLONE_THREAD,
        "CLONE_THREAD takes the exit signal from the caller: pass exit_signal=0 (clone3 answers EINVAL)",
        when=("exit_signal",),
        field="exit_signal",
        source="torvalds/linux:kernel/fork.c (clone3_args_valid)",
    ),
    Rule(
        CloneFlags.CLONE_AUTOREAP,
        "an auto-reaped child signals nobody: pass exit_signal=0 (clone3 answers EINVAL)",
        when=("exit_signal",),
        field="exit_signal",
    ),
    Rule(
        CloneFlags.CLONE_PARENT,
        "the init process of a PID namespace has no parent to share",
        when=("caller_is_init",),
    ),
    Rule(
        CloneFlags.CLONE_INTO_CGROUP,
        "CLONE_INTO_CGROUP needs cgroup= (a cgroup v2 directory fd or path)",
        when=("no_cgroup",),
        source="torvalds/linux:kernel/fork.c (clone3_args_valid)",
    ),
    # spawn(): what the child does to itself must not happen to the parent
    Rule(
        CloneFlags.CLONE_FILES,
        "the child shares the parent's fd table: redirecting stdio, pass_fds or "
        "the maps' handshake would change the parent's",
        when=("stdio", "pass_fds", "maps"),
        source=_PORTCLONE,
    ),
    Rule(
        CloneFlags.CLONE_FILES,
        "the child shares the parent's fd table, so close_fds=True cannot be "
        "honoured (marking fds close-on-exec there would mark the parent's) and the program "
        "would get every inheritable fd; pass close_fds=False to accept that",
        when=("close_fds",),
        source=_PORTCLONE,
    ),
    Rule(
        CloneFlags.CLONE_FS,
        "the child shares the parent's cwd: cwd= would move the parent too",
        when=("cwd",),
        source=_PORTCLONE,
    ),
    Rule(
        CloneFlags.CLONE_VFORK,
        "with uid_map/gid_map the parent writes the maps while the child "
        "waits, which a vfork-suspended parent cannot do",
        when=("maps",),
        source=_PORTCLONE,
    ),
    Rule(
        CloneFlags.CLONE_FILES,
        "the child shares the parent's fd table, where the pipes that "
        "carry its setup's report would be closed under the parent",
        when=("clone_setup",),
        source=_PORTCLONE,
    ),
    Rule(
        CloneFlags.CLONE_PARENT,
        "a child whose setup fails is reaped by its parent, and with "
        "CLONE_PARENT that is the caller's parent, which may never do it",
        when=("setup",),
        source=_PORTCLONE,
    ),
    # join= and the options, against the flags (a flag an option implies counts)
    *(
        Rule(
            NS_FLAGS[ns],
            f"the child cannot both create a new {ns} namespace and join one",
            when=(f"joins_{ns}",),
            field="join",
            source=_PORTCLONE,
        )
        for ns in JOIN_ORDER
    ),
    Rule(
        CloneFlags.CLONE_SIGHAND,
        "entering a time namespace needs a child with memory of its own (Linux refuses "
        "setns to a process sharing its memory: EUSERS), and CLONE_SIGHAND needs shared "
        "memory",
        when=("enters_time",),
        also=("exec",),
        field="join",
        source="torvalds/linux:kernel/time/namespace.c (timens_install)",
    ),
    Rule(
        CloneFlags.CLONE_FS,
        "entering a mount or user namespace needs a child with a filesystem context "
        "of its own (Linux refuses setns to a process sharing it: EINVAL), and "
        "CLONE_FS shares the caller's",
        when=("joins_mnt", "joins_user"),
        field="join",
        source="torvalds/linux:fs/namespace.c (mntns_install), kernel/user_namespace.c (userns_install)",
    ),
    *(
        Rule(
            created,
            f"{option}= acts in a namespace the clone creates, which the caller's user "
            f"namespace owns; after joining another user namespace the child has no privilege "
            f"there (user_namespaces(7)): join first and create the namespace from inside "
            f"(nsenter, then unshare)",
            when=(option,),
            also=("joins_user",),
            field=option,
            source="man-pages: user_namespaces(7)",
        )
        for option, created in (
            ("hostname", CloneFlags.CLONE_NEWUTS),
            ("mount_proc", CloneFlags.CLONE_NEWNS),
            ("propagation", CloneFlags.CLONE_NEWNS),
        )
    ),
    Rule(
        CloneFlags.CLONE_NEWUSER,
        "the child is in its new user namespace from the clone on, and has no privilege "
        "over namespaces owned outside it, so it cannot join them (user_namespaces(7)): "
        "join first and create the user namespace from inside (nsenter, then unshare)",
        when=tuple(f"joins_{ns}" for ns in JOIN_ORDER if ns not in ("user", "pid")),
        field="join",
        source="man-pages: user_namespaces(7)",
    ),
    Rule(
        CloneFlags.CLONE_NEWUSER,
        "a /proc is mounted only with privilege over the user namespace that owns its PID "
        "namespace, and the child's new user namespace owns none but one it creates: add "
        "CLONE_NEWPID",
        missing=CloneFlags.CLONE_NEWPID,
        when=("mount_proc",),
        field="mount_proc",
        source="torvalds/linux:fs/proc/root.c (proc_init_fs_context: the PID namespace's user_ns)",
    ),
    Rule(
        CloneFlags.CLONE_NEWPID,
        "the child is the init of a new PID namespace, which gets no signal from outside "
        "at its default action but SIGKILL (pid_namespaces(7)): use pdeathsig=SIGKILL",
        when=("pdeathsig_not_sigkill",),
        field="pdeathsig",
        source="man-pages: pid_namespaces(7)",
    ),
)


class OptionInfo(NamedTuple):
    """What portclone knows about one option of clone(), spawn() and check() that sets the
    child up: the one place an option is declared.

    ``implies``: the flags the option adds to the request (a hostname needs a new UTS
    namespace...).  ``linux``, ``netbsd`` and ``fork`` are ``None`` where that backend
    honours the option, else the reason it refuses it.  ``default``: the value that means
    "not given" (the public signatures' default, checked by tests/test_contract.py);
    ``takes``: what it accepts (_setup.parse_options checks it); ``stage``: the
    _errors.Stage at which it acts, which a failure reports; ``field``: the field of
    _setup.NativeSetup it fills for the C (``""``: it fills others').
    """

    name: str
    implies: CloneFlags
    meaning: str
    since: str  # first Linux version with what it needs
    linux: Optional[str]
    netbsd: Optional[str]
    fork: Optional[str]
    default: object
    takes: str
    stage: str
    field: str

    def reason(self, backend: str) -> Optional[str]:
        """None if ``backend`` honours the option, else why not."""
        value: Optional[str] = getattr(self, backend)
        return value


def _needs_ns(what: str) -> Tuple[str, str]:
    return (f"NetBSD has no {what} namespaces", f"os.fork cannot create {what} namespaces" + _FORK_NEEDS)


_USER = _needs_ns("user")
OPTIONS: Tuple[OptionInfo, ...] = (
    OptionInfo(
        "uid_map",
        CloneFlags.CLONE_NEWUSER,
        "the child's uid map, written by the parent before the child runs",
        "3.8",
        YES,
        *_USER,
        default=None,
        takes="`[(inside, outside, count)]` or /proc text",
        stage="MAPS",
        field="uid_map",
    ),
    OptionInfo(
        "gid_map",
        CloneFlags.CLONE_NEWUSER,
        "the child's gid map, written by the parent before the child runs",
        "3.8",
        YES,
        *_USER,
        default=None,
        takes="`[(inside, outside, count)]` or /proc text",
        stage="MAPS",
        field="gid_map",
    ),
    OptionInfo(
        "map_root",
        CloneFlags.CLONE_NEWUSER,
        "maps the caller's uid and gid to root in the child",
        "3.8",
        YES,
        *_USER,
        default=False,
        takes="`True`",
        stage="MAPS",
        field="",
    ),
    OptionInfo(
        "setgroups",
        CloneFlags.CLONE_NEWUSER,
        '"deny" or "allow" in the child\'s '
        '/proc/PID/setgroups ("deny" by default whenever a gid map is written)',
        "3.19",
        YES,
        *_USER,
        default=None,
        takes='`"deny"` or `"allow"`',
        stage="MAPS",
        field="setgroups",
    ),
    OptionInfo(
        "hostname",
        CloneFlags.CLONE_NEWUTS,
        "the child's hostname, in a new UTS namespace",
        "2.6.19",
        YES,
        *_needs_ns("UTS"),
        default=None,
        takes="a `str` of 1 to 64 bytes",
        stage="HOSTNAME",
        field="hostname",
    ),
    OptionInfo(
        "time_offsets",
        CloneFlags.CLONE_NEWTIME,
        "CLOCK_MONOTONIC and CLOCK_BOOTTIME offsets of a new time namespace, set before the child enters it",
        "5.6",
        YES,
        *_needs_ns("time"),
        default=None,
        takes='`{"monotonic": s, "boottime": s}`',
        stage="TIME",
        field="time_offsets",
    ),
    OptionInfo(
        "mount_proc",
        CloneFlags.CLONE_NEWNS,
        "a fresh /proc in a new mount namespace, every mount made private first",
        "2.4.19",
        YES,
        *_needs_ns("mount"),
        default=False,
        takes="`True` or a directory",
        stage="MOUNT_PROC",
        field="mount_proc",
    ),
    OptionInfo(
        "propagation",
        CloneFlags.CLONE_NEWNS,
        "every mount made private, shared or "
        "slave (recursively) in the child's new mount namespace, or left unchanged",
        "2.6.15",
        YES,
        *_needs_ns("mount"),
        default=None,
        takes='`"private"`, `"shared"`, `"slave"` or `"unchanged"`',
        stage="PROPAGATION",
        field="propagation",
    ),
    OptionInfo(
        "join",
        _NONE,
        "enters existing namespaces (setns) before the child runs",
        "3.8",
        YES,
        "NetBSD has no namespaces to join",
        "os.fork cannot enter namespaces" + _FORK_NEEDS,
        default=None,
        takes="`{namespace: pid, Child or path}`",
        stage="JOIN",
        field="join",
    ),
    OptionInfo(
        "pdeathsig",
        _NONE,
        "the signal the child gets when its parent thread ends (PR_SET_PDEATHSIG)",
        "2.1.57",
        YES,
        "NetBSD has no parent-death signal (no prctl(PR_SET_PDEATHSIG))",
        "os.fork cannot set a parent-death signal" + _FORK_NEEDS,
        default=None,
        takes="a signal number",
        stage="PDEATHSIG",
        field="pdeathsig",
    ),
)
OPTION: Dict[str, OptionInfo] = {o.name: o for o in OPTIONS}
