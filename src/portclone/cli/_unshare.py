"""``portclone unshare``: unshare(1) of util-linux, as a drop-in.

The grammar is util-linux's (2.38 and the newer options up to 2.41: ``--map-users``,
``--map-auto``, ``--forward-signals``, ``--clear-env``...), parsed with getopt's rules and
applied in order, so a later option wins.  The process model is util-linux's too: the
command unshares itself, sets itself up and executes the program in the same process;
with ``-f`` it forks first and its parent waits (util-linux/util-linux:sys-utils/unshare.c
for the order of the steps, unshare(1) for their meaning).

On the netbsd and fork backends what a process can do to itself is done (``-w``, ``-R``,
``-S``, ``-G``, ``-f``, ``--forward-signals``, the environment options); any other option
ends the command with status 1, naming the option and the backend's reason.
"""

from __future__ import annotations

import os
import signal
import sys

from .._common import TYPE_CHECKING
from .._flags import CloneFlags
from ._dropin import (
    BY_OPTION,
    NAMESPACES,
    NO_FLAG,
    PROG_NAME,
    Failure,
    Tool,
    backend_refusal,
    become,
    end_as,
    flush,
    keep_caps,
    number,
    os_failure,
    pidfd_open,
    set_ids,
    signal_number,
    unsigned,
    user_id,
)
from ._getopt import NO, OPTIONAL, REQUIRED, Opt
from ._idmaps import (
    SUBGID,
    SUBUID,
    Range,
    map_ranges_from_child,
    parse_range,
    proc_dir_of,
    ranges_with,
    subid_range,
    write_file,
)

if TYPE_CHECKING:
    from typing import Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

F = CloneFlags

OPTS: Tuple[Opt, ...] = (
    Opt("help", "h"),
    Opt("version", "V"),
    *(Opt(n.option, n.letter, OPTIONAL, short_arg=NO) for n in NAMESPACES),
    Opt("fork", "f"),
    Opt("kill-child", "", OPTIONAL),
    Opt("forward-signals"),
    Opt("mount-proc", "", OPTIONAL),
    Opt("mount-binfmt", "", OPTIONAL),
    Opt("map-user", "", REQUIRED),
    Opt("map-users", "", REQUIRED),
    Opt("map-group", "", REQUIRED),
    Opt("map-groups", "", REQUIRED),
    Opt("map-root-user", "r"),
    Opt("map-current-user", "c"),
    Opt("map-auto"),
    Opt("map-subids"),
    Opt("owner", "", REQUIRED),
    Opt("propagation", "", REQUIRED),
    Opt("setgroups", "", REQUIRED),
    Opt("keep-caps"),
    Opt("setuid", "S", REQUIRED),
    Opt("setgid", "G", REQUIRED),
    Opt("root", "R", REQUIRED),
    Opt("wd", "w", REQUIRED),
    Opt("monotonic", "", REQUIRED),
    Opt("boottime", "", REQUIRED),
    Opt("load-interp", "l", REQUIRED),
    Opt("clear-env"),
    Opt("whitelist-env", "", REQUIRED),
)

HELP = """\

Usage:
 {prog} [options] [<program> [<argument>...]]

Run a program with some namespaces unshared from the parent.

Options:
 -m, --mount[=<file>]      unshare mounts namespace
 -u, --uts[=<file>]        unshare UTS namespace (hostname etc)
 -i, --ipc[=<file>]        unshare System V IPC namespace
 -n, --net[=<file>]        unshare network namespace
 -p, --pid[=<file>]        unshare pid namespace
 -U, --user[=<file>]       unshare user namespace
 -C, --cgroup[=<file>]     unshare cgroup namespace
 -T, --time[=<file>]       unshare time namespace

 --mount-proc[=<dir>]      mount proc filesystem first (implies --mount)
 --mount-binfmt[=<dir>]    mount binfmt filesystem first (implies --user and --mount)
 -l, --load-interp <file>  load binfmt definition in the namespace (implies --mount-binfmt)
 --propagation slave|shared|private|unchanged
                           modify mount propagation in mount namespace
 -R, --root <dir>          run the command with root directory set to <dir>
 -w, --wd <dir>            change working directory to <dir>

 -S, --setuid <uid>        set uid in entered namespace
 -G, --setgid <gid>        set gid in entered namespace
 --map-user <uid>|<name>   map current user to uid (implies --user)
 --map-group <gid>|<name>  map current group to gid (implies --user)
 -r, --map-root-user       map current user to root (implies --user)
 -c, --map-current-user    map current user to itself (implies --user)
 --map-auto                map users and groups automatically (implies --user)
 --map-subids              map the first block of user IDs owned by euid (implies --user)
 --map-users <inneruid>:<outeruid>:<count>|<outeruid>,<inneruid>,<count>|auto|subids|all
                           map count users from outeruid to inneruid (implies --user)
 --map-groups <innergid>:<outergid>:<count>|<outergid>,<innergid>,<count>|auto|subids|all
                           map count groups from outergid to innergid (implies --user)
 --owner <uid>:<gid>       set the user namespace owner (implies --user)

 -f, --fork                fork before launching <program>
 --kill-child[=<signame>]  when dying, kill the forked child (implies --fork)
                             defaults to SIGKILL
 --forward-signals         forward SIGTERM and SIGINT to child (implies --fork)

 --setgroups allow|deny    control the setgroups syscall in user namespaces
 --keep-caps               retain capabilities granted in user namespaces

 --monotonic <offset>      set clock monotonic offset (seconds) in time namespaces
 --boottime <offset>       set clock boottime offset (seconds) in time namespaces
 --clear-env               do not inherit environment variables from the calling process
 --whitelist-env <list>    clear environment except for specified variables

 -h, --help                display this help
 -V, --version             display version

portclone's unshare(1): the same options, exit statuses and process model
(docs/cli.md says where backends other than linux refuse an option).
"""

_PROPAGATION = {"slave": "slave", "shared": "shared", "private": "private", "unchanged": ""}


class Request:
    """What the options asked for, each applied as it came."""

    def __init__(self, euid: int, egid: int) -> None:
        self.flags: CloneFlags = NO_FLAG
        self.used: Dict[str, str] = {}  # option -> as spelled, for refusals
        self.persist: Dict[str, str] = {}  # ns option -> file
        self.fork: bool = False
        self.forward: bool = False
        self.kill_child: int = 0
        self.mount_proc: Optional[str] = None
        self.binfmt: Optional[str] = None
        self.interp: Optional[str] = None
        self.map_user: int = -1
        self.map_group: int = -1
        self.user_ranges: List[Range] = []
        self.group_ranges: List[Range] = []
        self.owner: Optional[Tuple[int, int]] = None
        self.setgroups: Optional[str] = None
        self.propagation: str = "private"
        self.keep_caps: bool = False
        self.uid: Optional[int] = None
        self.gid: Optional[int] = None
        self.root: Optional[str] = None
        self.wd: Optional[str] = None
        self.monotonic: Optional[int] = None
        self.boottime: Optional[int] = None
        self.euid: int = euid  # ours before unsharing (after it, until mapped, the overflow id)
        self.egid: int = egid
        self.clear_env: bool = False
        self.keep_env: List[str] = []
        #: the new UTS namespace's hostname: not an option of unshare's, but of portclone run's
        self.hostname: Optional[str] = None


def _offset(text: str, what: str) -> int:
    """strtos64_or_err's manners: a signed 64-bit number, in decimal, hex or octal."""
    word = text.strip()
    body = word[1:] if word[:1] in ("+", "-") else word
    try:
        value = int(word, 0) if body.isascii() and body[:1].isdigit() else None
    except ValueError:
        value = None
    if value is None or not -(2**63) <= value < 2**63:
        raise Failure(f"failed to parse {what} offset: '{text}'")
    return value


def _unset_if_all_ones(value: int) -> int:
    """(uid_t) -1 is util-linux's "no map": a user namespace with nothing mapped."""
    return -1 if value == 2**32 - 1 else value


def parse(found: Sequence[Tuple[Opt, Optional[str]]]) -> Request:
    r = Request(os.geteuid(), os.getegid())
    for opt, value in found:
        apply(r, opt.long, value)
    return finish(r)


def apply(r: Request, name: str, value: Optional[str]) -> None:
    """One option, as it comes: a later one overrides what an earlier one set."""
    r.used[name] = f"--{name}" + (f"={value}" if value is not None else "")
    if name in BY_OPTION:
        ns = BY_OPTION[name]
        r.flags |= ns.flag
        if value is not None:
            r.persist[name] = value
    elif name == "fork":
        r.fork = True
    elif name == "kill-child":
        r.fork = True
        r.kill_child = signal_number(value) if value is not None else int(signal.SIGKILL)
    elif name == "forward-signals":
        r.fork = r.forward = True
    elif name == "mount-proc":
        r.flags |= F.CLONE_NEWNS
        r.mount_proc = "/proc" if value is None else value
    elif name in ("mount-binfmt", "load-interp"):
        r.flags |= F.CLONE_NEWNS | F.CLONE_NEWUSER
        if name == "load-interp":
            r.interp = value
        if value is None or name == "load-interp":
            if r.binfmt is None:
                r.mount_proc = r.mount_proc or "/proc"
                r.binfmt = "/proc/sys/fs/binfmt_misc"
        else:
            r.binfmt = value
    elif name == "map-user":
        r.flags |= F.CLONE_NEWUSER
        r.map_user = _unset_if_all_ones(user_id(value or "", "user"))
    elif name == "map-group":
        r.flags |= F.CLONE_NEWUSER
        r.map_group = _unset_if_all_ones(user_id(value or "", "group"))
    elif name == "map-root-user":
        r.flags |= F.CLONE_NEWUSER
        r.map_user = r.map_group = 0
    elif name == "map-current-user":
        r.flags |= F.CLONE_NEWUSER
        r.map_user, r.map_group = r.euid, r.egid
    elif name == "map-users":
        r.flags |= F.CLONE_NEWUSER
        r.user_ranges += parse_range(value or "", "uid", SUBUID)
    elif name == "map-groups":
        r.flags |= F.CLONE_NEWUSER
        r.group_ranges += parse_range(value or "", "gid", SUBGID)
    elif name in ("map-auto", "map-subids"):
        r.flags |= F.CLONE_NEWUSER
        r.user_ranges.append(subid_range(SUBUID, identity=name == "map-subids"))
        r.group_ranges.append(subid_range(SUBGID, identity=name == "map-subids"))
    elif name == "owner":
        r.flags |= F.CLONE_NEWUSER
        uid_text, sep, gid_text = (value or "").partition(":")
        owner = (unsigned(uid_text), unsigned(gid_text))
        if not sep or owner[0] is None or owner[1] is None:
            raise Failure(f"failed to parse owner: '{value}'")
        r.owner = (owner[0], owner[1])
    elif name == "setgroups":
        if value not in ("allow", "deny"):
            raise Failure(f"unsupported --setgroups argument '{value}'")
        r.setgroups = value
    elif name == "propagation":
        if value not in _PROPAGATION:
            raise Failure(f"unsupported propagation mode: {value}")
        r.propagation = _PROPAGATION[value]
    elif name == "keep-caps":
        r.keep_caps = True
    elif name == "setuid":
        r.uid = number(value or "", "uid")
    elif name == "setgid":
        r.gid = number(value or "", "gid")
    elif name == "root":
        r.root = value
    elif name == "wd":
        r.wd = value
    elif name == "monotonic":
        r.monotonic = _offset(value or "", "monotonic")
    elif name == "boottime":
        r.boottime = _offset(value or "", "boottime")
    elif name == "clear-env":
        r.clear_env = True
    elif name == "whitelist-env":
        r.keep_env += [v for v in (value or "").split(",") if v]


def finish(r: Request) -> Request:
    """The checks on the options together, once all are applied."""
    if (r.monotonic is not None or r.boottime is not None) and not r.flags & F.CLONE_NEWTIME:
        raise Failure("options --monotonic and --boottime require unsharing of a time namespace (-T)")
    return r


#: Each option that needs more than a process can do to itself, with the flag or setup
#: option whose row in the flag table says which backends honour it.
_NEEDS: Dict[str, Tuple[CloneFlags, str]] = {
    **{n.option: (n.flag, "") for n in NAMESPACES},
    "kill-child": (F(0), "pdeathsig"),
    "mount-proc": (F(0), "mount_proc"),
    "mount-binfmt": (F.CLONE_NEWNS, ""),
    "load-interp": (F.CLONE_NEWNS, ""),
    "map-user": (F(0), "uid_map"),
    "map-group": (F(0), "gid_map"),
    "map-root-user": (F(0), "map_root"),
    "map-current-user": (F(0), "uid_map"),
    "map-users": (F(0), "uid_map"),
    "map-groups": (F(0), "gid_map"),
    "map-auto": (F(0), "uid_map"),
    "map-subids": (F(0), "uid_map"),
    "owner": (F.CLONE_NEWUSER, ""),
    "setgroups": (F(0), "setgroups"),
    "propagation": (F(0), "propagation"),
    "keep-caps": (F.CLONE_NEWUSER, ""),
    "monotonic": (F(0), "time_offsets"),
    "boottime": (F(0), "time_offsets"),
}


def refuse_what_the_backend_cannot(r: Request) -> None:
    for name, spelled in r.used.items():
        if name in _NEEDS:
            flag, option = _NEEDS[name]
            why = backend_refusal(flag, option)
            if why is not None:
                raise Failure(f"{spelled}: {why}")


# -- the steps, in util-linux's order ------------------------------------------------------


def _fork_helper() -> Tuple[int, int]:
    """A child that waits until we have unshared (util-linux's fork_and_wait): (pid, fd to
    write one byte to once it may go on).  In the child: (0, fd to read)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        return 0, r
    os.close(r)
    return pid, w


def _helper_wait(fd: int) -> None:
    if os.read(fd, 1) != b"1":
        os._exit(0)  # the parent failed before unsharing: nothing to do
    os.close(fd)


def _helper_run(job: Callable[[], None]) -> NoReturn:
    try:
        job()
    except Failure as e:
        print(f"{PROG_NAME[0]}: {e}", file=sys.stderr)
        flush()
        os._exit(1)
    except OSError as e:
        print(f"{PROG_NAME[0]}: {e.strerror or e}", file=sys.stderr)
        flush()
        os._exit(1)
    flush()
    os._exit(0)


def _bind_persistent(parent_pidfd: int, persist: Dict[str, str]) -> None:
    """Bind each new namespace onto its file (unshare --uts=FILE...), so it outlives us."""
    from . import _syscalls

    directory = proc_dir_of(parent_pidfd)
    for option, path in persist.items():
        source = f"{directory}/ns/{BY_OPTION[option].persist}"
        try:
            _syscalls.mount(source, path, None, _syscalls.MS_BIND)
        except OSError as e:
            raise os_failure(f"mount {source} on {path} failed", e) from None


def _wait_helper(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise Failure("")  # the helper said why


def _settime(offset: int, clock: str) -> None:
    write_file("/proc/self/timens_offsets", f"{clock} {offset} 0")


def _propagation(mode: str) -> None:
    from . import _syscalls

    flag = {"private": _syscalls.MS_PRIVATE, "slave": _syscalls.MS_SLAVE, "shared": _syscalls.MS_SHARED}[mode]
    try:
        _syscalls.mount("none", "/", None, _syscalls.MS_REC | flag)
    except OSError as e:
        raise os_failure("cannot change root filesystem propagation", e) from None


def _env(r: Request) -> None:
    if r.clear_env or r.keep_env:
        kept = {k: os.environ[k] for k in r.keep_env if k in os.environ}
        os.environ.clear()
        os.environ.update(kept)


def execute(r: Request, command: List[str]) -> int:
    from . import _syscalls

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if r.user_ranges or (r.map_user != -1 and r.owner is not None):
        r.user_ranges = ranges_with(r.user_ranges, r.euid, r.map_user)
        r.map_user = -1
    if r.group_ranges or (r.map_group != -1 and r.owner is not None):
        r.group_ranges = ranges_with(r.group_ranges, r.egid, r.map_group)
        r.map_group = -1
    helped = r.flags and (r.persist or r.user_ranges or r.group_ranges)
    me = pidfd_open(os.getpid()) if helped else -1  # what the helpers reach us by
    binder = mapper = 0
    bind_fd = map_fd = -1
    if r.persist and r.flags & (F.CLONE_NEWNS | F.CLONE_NEWUSER):
        binder, bind_fd = _fork_helper()
        if binder == 0:
            _helper_wait(bind_fd)
            _helper_run(lambda: _bind_persistent(me, r.persist))
    if r.user_ranges or r.group_ranges:
        mapper, map_fd = _fork_helper()
        if mapper == 0:
            _helper_wait(map_fd)
            _helper_run(lambda: map_ranges_from_child(me, r.user_ranges, r.group_ranges))
    try:
        if r.owner is not None:
            os.setgroups([])
            os.setgid(r.owner[1])
            os.setuid(r.owner[0])
        _syscalls.unshare(int(r.flags))
    except OSError as e:
        for fd in (bind_fd, map_fd):
            if fd >= 0:
                os.close(fd)  # the helpers see EOF and leave
        for pid in (binder, mapper):
            if pid:
                os.waitpid(pid, 0)
        what = (
            "unshare failed" if not isinstance(e, PermissionError) or r.owner is None else "setuid() failed"
        )
        raise os_failure(what, e) from None
    if mapper:
        os.write(map_fd, b"1")
        os.close(map_fd)
        _wait_helper(mapper)
    if r.boottime is not None:
        _settime(r.boottime, "boottime")
    if r.monotonic is not None:
        _settime(r.monotonic, "monotonic")
    child = 0
    parent_fd = -1
    if r.fork:
        child, parent_fd = _fork(r)
    if r.persist and (child or not r.fork):
        if binder:
            os.write(bind_fd, b"1")
            os.close(bind_fd)
            _wait_helper(binder)
        else:
            _bind_persistent(me if me >= 0 else pidfd_open(os.getpid()), r.persist)
    if child:
        return _wait_child(child, r.forward)
    if bind_fd >= 0 and r.fork:
        os.close(bind_fd)
    _setup_self(r, parent_fd)
    become(command)


#: what the waiting parent blocks from before its fork; forwarding, CHLD too, and it takes
#: all three with sigwait
_HELD = frozenset({signal.SIGINT, signal.SIGTERM})
_FORWARDING = _HELD | {signal.SIGCHLD}


def _fork(r: Request) -> Tuple[int, int]:
    """Fork as unshare -f does: the parent blocks INT and TERM from before the fork until
    its child ends, the child gets the caller's mask back.  With --forward-signals the
    parent blocks CHLD too, and _wait_child takes all three as they come."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDING if r.forward else _HELD)
    parent_fd = pidfd_open(os.getpid()) if r.kill_child and hasattr(os, "pidfd_open") else -1
    flush()
    try:
        pid = os.fork()
    except OSError as e:
        raise os_failure("fork failed", e) from None
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return 0, parent_fd
    if parent_fd >= 0:
        os.close(parent_fd)
    return pid, -1


def _wait_child(pid: int, forward: bool) -> int:
    """The child's end, as ours.  Forwarding, INT and TERM stay blocked and are taken with
    sigwait beside CHLD, each sent on to the child: a Python handler runs only between
    bytecodes, so a signal that came just before a blocking wait would wait with it, and
    the child, never told, would never end."""
    if not forward:
        _, status = os.waitpid(pid, 0)
        return end_as(status)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return end_as(status)
        sig = signal.sigwait(_FORWARDING)  # a CHLD since the waitpid is pending: no exit is missed
        if sig != signal.SIGCHLD:
            os.kill(pid, sig)


def _setup_self(r: Request, parent_fd: int) -> None:
    from . import _syscalls

    if r.kill_child:
        try:
            _syscalls.set_pdeathsig(r.kill_child)
        except OSError as e:
            raise os_failure("prctl failed", e) from None
        if parent_fd >= 0:
            import select

            poller = select.poll()
            poller.register(parent_fd, select.POLLIN)
            if poller.poll(0):
                os._exit(1)  # our parent is gone already: nobody waits for our status
            os.close(parent_fd)
    if r.map_user != -1:
        write_file("/proc/self/uid_map", f"{r.map_user} {r.euid} 1")
    if r.map_group != -1:
        if r.setgroups == "allow":
            raise Failure("options --setgroups=allow and --map-group are mutually exclusive")
        write_file("/proc/self/setgroups", "deny")
        write_file("/proc/self/gid_map", f"{r.map_group} {r.egid} 1")
    if r.setgroups is not None:
        write_file("/proc/self/setgroups", r.setgroups)
    if r.flags & F.CLONE_NEWNS and r.propagation:
        _propagation(r.propagation)
    wd = r.wd
    if r.root is not None:
        try:
            os.chroot(r.root)
        except OSError as e:
            raise os_failure(f"cannot change root directory to '{r.root}'", e) from None
        wd = wd or "/"
    if wd is not None:
        try:
            os.chdir(wd)
        except OSError as e:
            raise os_failure(f"cannot change directory to {wd}", e) from None
    if r.mount_proc is not None:
        if r.root is None and r.propagation != "private":
            try:
                _syscalls.mount("none", r.mount_proc, None, _syscalls.MS_PRIVATE | _syscalls.MS_REC)
            except OSError as e:
                if e.errno != 22:  # EINVAL: nothing mounted there, as with a DIR of one's own
                    raise os_failure(f"cannot change {r.mount_proc} filesystem propagation", e) from None
        try:
            flags = _syscalls.MS_NOSUID | _syscalls.MS_NOEXEC | _syscalls.MS_NODEV
            _syscalls.mount("proc", r.mount_proc, "proc", flags)
        except OSError as e:
            raise os_failure(f"mount {r.mount_proc} failed", e) from None
    if r.binfmt is not None:
        try:
            flags = _syscalls.MS_NOSUID | _syscalls.MS_NOEXEC | _syscalls.MS_NODEV
            _syscalls.mount("binfmt_misc", r.binfmt, "binfmt_misc", flags)
        except OSError as e:
            raise os_failure(f"mount {r.binfmt} failed", e) from None
    if r.interp is not None and r.binfmt is not None:
        write_file(f"{r.binfmt}/register", r.interp)
    if r.hostname is not None:
        import socket

        try:
            socket.sethostname(r.hostname)
        except OSError as e:
            raise os_failure(f"sethostname {r.hostname} failed", e) from None
    set_ids(r.uid, r.gid)
    if r.keep_caps and r.flags & F.CLONE_NEWUSER:
        keep_caps()
    _env(r)


TOOL = Tool("unshare", OPTS, HELP, parse, refuse_what_the_backend_cannot, execute)
main = TOOL.main
