"""``portclone nsenter``: nsenter(1) of util-linux, as a drop-in.

The grammar is util-linux's (2.38 and the newer ``--user-parent``, ``-N``/``--net-socket``,
``-e``/``--env``, ``-c``/``--join-cgroup``), parsed with getopt's rules.  The command enters
the namespaces itself, in nsenter's two passes (every namespace but the user one first,
errors ignored, then what is left, errors reported), and executes the program in the same
process, forking first only where nsenter does (a PID namespace entered, unless ``-F``)
(util-linux/util-linux:sys-utils/nsenter.c for the steps, nsenter(1) for their meaning).
Where releases differ, this is 2.38's (Debian bookworm's): ``-W DIR`` takes its value as
the next word, ``--target`` may be repeated (the last wins), and no namespace at all is
not an error.

Unlike util-linux, a target's namespaces, root, working directory and environment are
reached through its pidfd, never through ``/proc/<pid>`` taken on trust: inside a PID
namespace that sees an outer ``/proc`` the two numbers differ (``portclone._procns``).

Every namespace option needs the linux backend; on the others the command ends with
status 1, naming the option and the backend's reason.
"""

from __future__ import annotations

import os
import signal

from .._common import TYPE_CHECKING
from .._flags import JOIN_ORDER, CloneFlags
from ._dropin import (
    BY_OPTION,
    NAMESPACES,
    Failure,
    Tool,
    backend_refusal,
    become,
    end_as,
    flush,
    keep_caps,
    number,
    os_failure,
    set_ids,
    task_pidfd,
    unsigned,
)
from ._getopt import OPTIONAL, REQUIRED, Opt

if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence, Tuple

F = CloneFlags

OPTS: Tuple[Opt, ...] = (
    Opt("all", "a"),
    Opt("help", "h"),
    Opt("version", "V"),
    Opt("target", "t", REQUIRED),
    *(Opt(n.option, n.letter, OPTIONAL) for n in NAMESPACES),
    Opt("net-socket", "N", REQUIRED),
    Opt("setuid", "S", REQUIRED),
    Opt("setgid", "G", REQUIRED),
    Opt("root", "r", OPTIONAL),
    Opt("wd", "w", OPTIONAL),
    Opt("wdns", "W", OPTIONAL, short_arg=REQUIRED),  # "W:" as in 2.38 (2.41: "W::")
    Opt("env", "e"),
    Opt("no-fork", "F"),
    Opt("join-cgroup", "c"),
    Opt("preserve-credentials"),
    Opt("keep-caps"),
    Opt("user-parent"),
    Opt("follow-context", "Z"),
)

HELP = """\

Usage:
 {prog} [options] [<program> [<argument>...]]

Run a program with namespaces of other processes.

Options:
 -a, --all                     enter all namespaces
 -t, --target <PID>            target process to get namespaces from
 -m, --mount[=<file>]          enter mount namespace
 -u, --uts[=<file>]            enter UTS namespace (hostname etc)
 -i, --ipc[=<file>]            enter System V IPC namespace
 -n, --net[=<file>]            enter network namespace
 -N, --net-socket <fd>         enter socket's network namespace (needs --target)
 -p, --pid[=<file>]            enter pid namespace
 -C, --cgroup[=<file>]         enter cgroup namespace
 -U, --user[=<file>]           enter user namespace
     --user-parent             enter parent user namespace
 -T, --time[=<file>]           enter time namespace
 -S, --setuid[=<uid>]          set uid in entered namespace
 -G, --setgid[=<gid>]          set gid in entered namespace
     --preserve-credentials    do not touch uids or gids
     --keep-caps               retain capabilities granted in user namespaces
 -r, --root[=<dir>]            set the root directory
 -w, --wd[=<dir>]              set the working directory
 -W, --wdns <dir>              set the working directory in namespace
 -e, --env                     inherit environment variables from target process
 -F, --no-fork                 do not fork before exec'ing <program>
 -c, --join-cgroup             join the cgroup of the target process
 -Z, --follow-context          set SELinux context according to --target PID

 -h, --help                    display this help
 -V, --version                 display version

portclone's nsenter(1): the same options, exit statuses and process model; a target is
reached through its pidfd (docs/cli.md).
"""

#: The order nsenter enters namespaces in (_flags.JOIN_ORDER), as its options
ENTER_ORDER = tuple(next(n for n in NAMESPACES if n.ns == ns) for ns in JOIN_ORDER)

_NS_GET_PARENT = 0xB702  # torvalds/linux:include/uapi/linux/nsfs.h
_SIOCGSKNS = 0x894C  # torvalds/linux:include/uapi/linux/sockios.h


class Target:
    """The process -t names, held by its pidfd; its files are opened under the /proc
    directory the pidfd proves to be its own."""

    def __init__(self, text: str) -> None:
        pid = unsigned(text)
        if pid is None or not 0 < pid < 2**31:
            raise Failure(f"failed to parse target PID: '{text}'")
        self.pid = pid
        self._pidfd = -1  # opened when first needed: -t alone asks nothing of the target

    @property
    def pidfd(self) -> int:
        if self._pidfd < 0:
            try:
                self._pidfd = task_pidfd(self.pid)
            except OSError as e:
                raise os_failure(f"cannot open /proc/{self.pid}", e) from None
        return self._pidfd

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def ns(self, name: str) -> int:
        from .._procns import ns_of

        try:
            return ns_of(self.pidfd, name, f"the target's {name} namespace")
        except OSError as e:
            raise os_failure(f"cannot open /proc/{self.pid}/ns/{name}", e) from None

    def open(self, name: str, flags: int = os.O_RDONLY) -> int:
        """/proc/PID/NAME of the target (root, cwd, environ...), opened and then proved
        to be the target's by its pidfd."""
        from .._procns import proc_pid

        try:
            n = proc_pid(self.pidfd)
            if n <= 0:
                raise ProcessLookupError(3, "No such process")
            fd = os.open(f"/proc/{n}/{name}", flags)
            if proc_pid(self.pidfd) != n:
                os.close(fd)
                raise ProcessLookupError(3, "No such process")
        except OSError as e:
            raise os_failure(f"cannot open /proc/{self.pid}/{name}", e) from None
        return fd

    def stat(self) -> os.stat_result:
        from .._procns import proc_pid

        n = proc_pid(self.pidfd)
        try:
            st = os.stat(f"/proc/{n}")
        except OSError as e:
            raise os_failure("can not get process stat", e) from None
        if proc_pid(self.pidfd) != n:
            raise Failure("can not get process stat: No such process")
        return st


class Request:
    def __init__(self) -> None:
        self.used: Dict[str, str] = {}
        self.enabled: Dict[str, Optional[str]] = {}  # option -> file given, or None
        self.all = False
        self.target: Optional[str] = None
        self.sock: Optional[int] = None
        self.uid: Optional[int] = None
        self.gid: Optional[int] = None
        self.follow_uid = self.follow_gid = False
        self.root: Optional[str] = None
        self.root_of_target = False
        self.wd: Optional[str] = None
        self.wd_of_target = False
        self.wdns: Optional[str] = None
        self.env = False
        self.fork: Optional[bool] = None
        self.cgroup = False
        self.preserve = False
        self.keep_caps = False
        self.user_parent = False
        self.selinux = False


def parse(found: Sequence[Tuple[Opt, Optional[str]]]) -> Request:
    r = Request()
    for opt, value in found:
        name = opt.long
        r.used[name] = f"--{name}" + (f"={value}" if value is not None else "")
        if name in ("wd", "wdns") and value is not None and value.startswith("="):
            value = value[1:]
        if name == "all":
            r.all = True
        elif name == "target":
            r.target = value  # a later --target wins, as in util-linux 2.38
        elif name in BY_OPTION:
            if value is not None and value.startswith("="):
                value = value[1:]
            if value is not None and value.startswith(":"):
                raise Failure(
                    f"--{name}={value}: namespace ids (:NSID) need nsfs file handles, "
                    "which portclone does not open"
                )
            r.enabled[name] = value
        elif name == "net-socket":
            r.sock = number(value or "", "file descriptor")
        elif name in ("setuid", "setgid"):
            follow = value == "follow"
            parsed = None if follow else number(value or "", "uid" if name == "setuid" else "gid")
            if name == "setuid":
                r.uid, r.follow_uid = parsed, follow
                r.uid = r.uid if not follow else -1
            else:
                r.gid, r.follow_gid = parsed, follow
                r.gid = r.gid if not follow else -1
        elif name == "root":
            r.root, r.root_of_target = value, value is None
        elif name == "wd":
            if r.wdns is not None:
                raise Failure("--wd and --wdns are mutually exclusive")
            r.wd, r.wd_of_target = value, value is None
        elif name == "wdns":
            if r.wd is not None or r.wd_of_target:
                raise Failure("--wd and --wdns are mutually exclusive")
            r.wdns = value
        elif name == "env":
            r.env = True
        elif name == "no-fork":
            r.fork = False
        elif name == "join-cgroup":
            r.cgroup = True
        elif name == "preserve-credentials":
            r.preserve = True
        elif name == "keep-caps":
            r.keep_caps = True
        elif name == "user-parent":
            r.user_parent = True
        elif name == "follow-context":
            r.selinux = True
    return r


def refuse_what_the_backend_cannot(r: Request) -> None:
    for name, spelled in r.used.items():
        flag = BY_OPTION[name].flag if name in BY_OPTION else F(0)
        if name in ("all", "net-socket", "user-parent", "keep-caps", "preserve-credentials"):
            flag = F.CLONE_NEWUSER if name != "net-socket" else F.CLONE_NEWNET
        if flag:
            why = backend_refusal(flag)
            if why is not None:
                raise Failure(f"{spelled}: {why}")


def _open_file(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as e:
        raise os_failure(f"cannot open {path}", e) from None


def _same_user_ns(fd: int) -> bool:
    try:
        mine = os.stat("/proc/self/ns/user")
    except OSError:
        return False
    theirs = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def execute(r: Request, command: List[str]) -> int:
    import fcntl

    from . import _syscalls

    target = Target(r.target) if r.target is not None else None
    fds: Dict[str, int] = {}  # option -> namespace fd
    for name, path in r.enabled.items():
        if path is not None:
            fds[name] = _open_file(path)
    if r.all:
        if target is None:
            raise Failure("no target PID specified for --all")
        for ns in NAMESPACES:
            if ns.option in r.enabled or not os.path.exists(f"/proc/self/ns/{ns.ns}"):
                continue
            fd = target.ns(ns.ns)
            if ns.flag == F.CLONE_NEWUSER and _same_user_ns(fd):
                os.close(fd)  # setns cannot re-enter one's own user namespace
                continue
            r.enabled[ns.option] = None
            fds[ns.option] = fd
    wanted = [name for name in r.enabled if name not in fds]
    if wanted or r.sock is not None or r.user_parent:
        if target is None:
            raise Failure("no target PID specified")
        for name in wanted:
            fds[name] = target.ns(BY_OPTION[name].ns)
    root_fd = wd_fd = env_fd = -1
    if r.root is not None:
        root_fd = _open_file(r.root)
    elif r.root_of_target:
        root_fd = _need(target, "root").open("root")
    if r.wd is not None:
        wd_fd = _open_file(r.wd)
    elif r.wd_of_target:
        wd_fd = _need(target, "cwd").open("cwd")
    if r.env:
        env_fd = _need(target, "environ").open("environ")
    owner = _need(target, "").stat() if r.follow_uid or r.follow_gid else None
    procs_fd = _cgroup_procs(_need(target, "cgroup")) if r.cgroup else -1
    if r.user_parent:
        assert target is not None
        user = fds.pop("user", None)
        child_ns = user if user is not None else target.ns("user")
        try:
            fds["user"] = fcntl.ioctl(child_ns, _NS_GET_PARENT)
        except OSError as e:
            raise os_failure("failed to open parent namespace", e) from None
        finally:
            os.close(child_ns)
        r.enabled["user"] = None
    if r.sock is not None:
        assert target is not None
        try:
            sock = _syscalls.pidfd_getfd(target.pidfd, r.sock)
        except OSError as e:
            raise os_failure(f"pidfd_getfd({r.sock}) failed", e) from None
        try:
            fds["net"] = fcntl.ioctl(sock, _SIOCGSKNS)
        except OSError as e:
            raise os_failure("ioctl(SIOCGSKNS) failed", e) from None
        finally:
            os.close(sock)
        r.enabled["net"] = None
    if r.selinux and target is not None:
        _follow_context(target)
    fork = r.fork if r.fork is not None else "pid" in fds
    enters_user = "user" in fds
    failed_setgroups = False
    if enters_user and not r.preserve:
        if r.uid is None:
            r.uid = 0
        if r.gid is None:
            r.gid = 0
        try:
            os.setgroups([])
        except OSError:
            failed_setgroups = True
    # the two passes: every namespace but the user one (errors ignored), then the rest with
    # the user namespace first, in nsenter's order (mnt after pid, so that /proc is theirs)
    for first in (True, False):
        for ns in ENTER_ORDER:
            held = fds.get(ns.option)
            if held is None or held < 0 or (first and ns.flag == F.CLONE_NEWUSER):
                continue
            try:
                _syscalls.setns(held, int(ns.flag))
            except OSError as e:
                if first:
                    continue
                raise os_failure(f"reassociate to namespace 'ns/{ns.ns}' failed", e) from None
            os.close(held)
            fds[ns.option] = -1
    if target is not None:
        target.close()
    if root_fd >= 0 and wd_fd < 0 and r.wdns is None:
        wd_fd = _open_file(".")
    if root_fd >= 0:
        try:
            os.fchdir(root_fd)
            os.chroot(".")
            os.chdir("/")
        except OSError as e:
            raise os_failure("chroot failed", e) from None
        os.close(root_fd)
    if r.wdns is not None:
        wd_fd = _open_file(r.wdns)
    if wd_fd >= 0:
        try:
            os.fchdir(wd_fd)
        except OSError as e:
            raise os_failure("change directory by working directory file descriptor failed", e) from None
        os.close(wd_fd)
    if env_fd >= 0:
        _take_environment(env_fd)
    if procs_fd >= 0:
        try:
            os.write(procs_fd, b"0")
        except OSError as e:
            raise os_failure("write cgroup.procs failed", e) from None
        os.close(procs_fd)
    if owner is not None:
        if r.follow_uid:
            r.uid = owner.st_uid
        if r.follow_gid:
            r.gid = owner.st_gid
    if fork:
        _continue_as_child()
    set_ids(r.uid, r.gid, setgroups_may_fail=not failed_setgroups)  # both failing is an error
    if r.keep_caps and enters_user:
        keep_caps()
    become(command)


def _need(target: Optional[Target], what: str) -> Target:
    if target is None:
        raise Failure(f"neither filename nor target pid supplied for {what or 'the ids'}")
    return target


def _cgroup_procs(target: Target) -> int:
    """cgroup.procs of the target's cgroup (v2 only, as nsenter -c)."""
    fd = target.open("cgroup")
    try:
        text = os.read(fd, 65536).decode(errors="replace")
    finally:
        os.close(fd)
    root = _cgroup2_root()
    for line in text.splitlines():
        if line.startswith("0::") and root is not None:
            path = root + line[3:]
            try:
                return os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY)
            except OSError as e:
                raise os_failure(f"cannot open {path}/cgroup.procs", e) from None
    raise Failure("--join-cgroup is only supported in cgroup v2")


def _cgroup2_root() -> Optional[str]:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified beside v1)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"]:
                return left.split()[4]
    return None


def _take_environment(fd: int) -> None:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    os.environ.clear()
    for item in b"".join(chunks).split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            os.environb[key] = value


def _follow_context(target: Target) -> None:
    """-Z: the target's SELinux context for the program, where SELinux is enabled (as
    nsenter, a no-op elsewhere)."""
    if not os.path.exists("/sys/fs/selinux/enforce"):
        return
    fd = target.open("attr/current")
    try:
        context = os.read(fd, 4096).rstrip(b"\0\n")
    finally:
        os.close(fd)
    try:
        with open("/proc/thread-self/attr/exec", "wb") as f:
            f.write(context)
    except OSError as e:
        raise os_failure(f"failed to set exec context to '{context.decode(errors='replace')}'", e) from None


def _continue_as_child() -> None:
    """nsenter's fork: the child returns; the parent waits, stops when the child stops
    (and continues it after), and ends as the child ended."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    flush()
    try:
        pid = os.fork()
    except OSError as e:
        raise os_failure("fork failed", e) from None
    if pid == 0:
        return
    while True:
        _, status = os.waitpid(pid, os.WUNTRACED)
        if os.WIFSTOPPED(status):
            os.kill(os.getpid(), signal.SIGSTOP)
            os.kill(pid, signal.SIGCONT)
            continue
        break
    code = end_as(status)
    flush()
    os._exit(code)


TOOL = Tool("nsenter", OPTS, HELP, parse, refuse_what_the_backend_cannot, execute)
main = TOOL.main
