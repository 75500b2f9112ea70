"""``portclone run``: unshare(1)'s and nsenter(1)'s options merged into one grammar, with
unshare's process model.

The command joins the namespaces that ``--join`` and ``--join-ns`` name (nsenter's two
passes; a joined PID namespace is the children's, so it forks then, as nsenter does), then
unshares and sets itself up with ``portclone unshare``'s steps (_unshare.execute) and
becomes the program; ``-f`` forks first and waits.  Options are parsed with getopt's rules
and applied in order.  Each option is a row of ``RUN_OPTIONS``, which builds the getopt
table and --help, says what the option sets, and writes the docs' table of options
against backends (``run_option_table``).
"""

from __future__ import annotations

import errno
import os

from .._common import BACKENDS, TYPE_CHECKING, NamedTuple
from .._flags import INFO, JOIN_ORDER, NS_FLAGS, OPTION, CloneFlags, bits, describe
from . import _unshare
from ._common import digits, parse_flags
from ._dropin import Failure, Tool, backend_name, backend_refusal, os_failure, task_pidfd
from ._getopt import NO, OPTIONAL, REQUIRED, Opt

if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence, Tuple

    from ._getopt import Found

_NO_FLAGS = CloneFlags(0)


class RunOption(NamedTuple):
    """One option of ``portclone run``: its spellings, the unshare/nsenter option it
    stands for, and what it sets (a clone flag, a setup option of _flags.OPTIONS, or an
    argument every backend takes)."""

    names: Tuple[str, ...]
    origin: str  # the unshare(1)/nsenter(1) spelling, or "" for portclone's own
    help: str
    flag: CloneFlags = _NO_FLAGS
    option: str = ""  # the setup option it sets (_flags.OPTIONS), if any
    metavar: str = ""  # "": a switch; else it takes a value
    optional: bool = False  # the value may be left out (--mount-proc[=DIR])
    repeat: bool = False

    @property
    def dest(self) -> str:
        return self.names[-1].lstrip("-").replace("-", "_")

    def reason(self, backend: str) -> Optional[str]:
        """None if ``backend`` honours the option for a program, else why not."""
        if self.option:
            why = OPTION[self.option].reason(backend)
            if why is not None:
                return why
        if self.flag:
            return INFO[int(self.flag)].reason(backend, exec_child=True)
        return None


F = CloneFlags
RUN_OPTIONS: Tuple[RunOption, ...] = (
    RunOption(("-U", "--user"), "unshare -U, --user", "new user namespace", F.CLONE_NEWUSER),
    RunOption(("-p", "--pid"), "unshare -p, --pid", "new PID namespace", F.CLONE_NEWPID),
    RunOption(
        ("-m", "--mount"),
        "unshare -m, --mount",
        "new mount namespace (every mount "
        "made private, as unshare does, unless --propagation says otherwise)",
        F.CLONE_NEWNS,
    ),
    RunOption(("-u", "--uts"), "unshare -u, --uts", "new UTS namespace", F.CLONE_NEWUTS),
    RunOption(("-i", "--ipc"), "unshare -i, --ipc", "new IPC namespace", F.CLONE_NEWIPC),
    RunOption(("-n", "--net"), "unshare -n, --net", "new network namespace", F.CLONE_NEWNET),
    RunOption(("-C", "--cgroup"), "unshare -C, --cgroup", "new cgroup namespace", F.CLONE_NEWCGROUP),
    RunOption(("-T", "--time"), "unshare -T, --time", "new time namespace", F.CLONE_NEWTIME),
    RunOption(
        ("-r", "--map-root", "--map-root-user"),
        "unshare -r, --map-root-user",
        "map our uid and gid to root (implies --user)",
        option="map_root",
    ),
    RunOption(
        ("--map-user",),
        "unshare --map-user=UID",
        "map our uid to UID (a number or a name; implies --user)",
        option="uid_map",
        metavar="UID",
    ),
    RunOption(
        ("--map-group",),
        "unshare --map-group=GID",
        "map our gid to GID (a number or a name; implies --user and --setgroups=deny)",
        option="gid_map",
        metavar="GID",
    ),
    RunOption(
        ("--setgroups",),
        "unshare --setgroups=allow|deny",
        "the user namespace's setgroups (deny by default with a gid map)",
        option="setgroups",
        metavar="allow|deny",
    ),
    RunOption(
        ("--mount-proc",),
        "unshare --mount-proc[=DIR]",
        "mount a fresh /proc (or at DIR) in a new mount namespace",
        option="mount_proc",
        metavar="DIR",
        optional=True,
    ),
    RunOption(
        ("--monotonic",),
        "unshare --monotonic=SECS",
        "CLOCK_MONOTONIC offset in a new time namespace",
        option="time_offsets",
        metavar="SECS",
    ),
    RunOption(
        ("--boottime",),
        "unshare --boottime=SECS",
        "CLOCK_BOOTTIME offset in a new time namespace",
        option="time_offsets",
        metavar="SECS",
    ),
    RunOption(
        ("--kill-child",),
        "unshare --kill-child[=SIGNAL]",
        "the program gets SIGNAL (default SIGKILL) when run dies (implies --fork)",
        option="pdeathsig",
        metavar="SIGNAL",
        optional=True,
    ),
    RunOption(
        ("--propagation",),
        "unshare --propagation=MODE",
        "every mount's propagation in the new mount namespace",
        option="propagation",
        metavar="private|shared|slave|unchanged",
    ),
    RunOption(("-w", "--wd"), "unshare -w, --wd=DIR", "the program's working directory", metavar="DIR"),
    RunOption(("-f", "--fork"), "unshare -f, --fork", "fork, and wait for the program as its parent"),
    RunOption(
        ("--forward-signals",),
        "unshare --forward-signals",
        "forward SIGTERM and SIGINT to the program (implies --fork)",
    ),
    RunOption(
        ("--join",),
        "nsenter -t PID -a",
        "enter every namespace of PID that differs from ours",
        option="join",
        metavar="PID",
    ),
    RunOption(
        ("--join-ns",),
        "nsenter -t PID --NS, --NS=PATH",
        "enter one namespace: NAME=PID "
        "or NAME=PATH (user, mnt, pid, net, uts, ipc, cgroup, time; repeatable)",
        option="join",
        metavar="NAME=PID|PATH",
        repeat=True,
    ),
    RunOption(("--hostname",), "", "the hostname, in a new UTS namespace", option="hostname", metavar="NAME"),
    RunOption(
        ("--flags",),
        "",
        "clone flags by name, with or without CLONE_ (see `python -m portclone flags`)",
        metavar="NEWUSER,NEWPID,...",
    ),
)


def run_option_table() -> str:
    """Markdown: unshare/nsenter option -> portclone run option -> backends that honour it."""
    notes: Dict[str, int] = {}
    rows = [
        "| unshare / nsenter | portclone run | " + " | ".join(BACKENDS) + " | sets |",
        "| --- | --- | " + " | ".join("---" for _ in BACKENDS) + " | --- |",
    ]
    for opt in RUN_OPTIONS:
        cells = []
        for backend in BACKENDS:
            why = opt.reason(backend)
            cells.append("yes" if why is None else f"no [{notes.setdefault(why, len(notes) + 1)}]")
        sets = (
            describe(int(opt.flag))
            if opt.flag
            else f"{opt.option}="
            if opt.option
            else "cwd="
            if opt.dest == "wd"
            else "flags="
            if opt.dest == "flags"
            else "-"
        )
        spelled = ", ".join(
            n
            + (
                f"[={opt.metavar}]"
                if opt.optional
                else f"={opt.metavar}"
                if opt.metavar and n.startswith("--")
                else f" {opt.metavar}"
                if opt.metavar
                else ""
            )
            for n in opt.names
        )
        origin = opt.origin or "(portclone)"
        # a "|" inside a cell (allow|deny) would end it: GitHub and MyST read "\\|" as "|"
        origin, spelled, sets = (cell.replace("|", "\\|") for cell in (origin, spelled, sets))
        rows.append(f"| {origin} | `{spelled}` | " + " | ".join(cells) + f" | `{sets}` |")
    rows.append("")
    rows += [f"{n}. {why}" for why, n in notes.items()]
    return "\n".join(rows)


#: run's options that unshare has under another long name
_UNSHARE_NAME = {"map-root": "map-root-user"}
#: what unshare(2) takes besides namespaces, which --flags may name: the calling process's
#: own fd table, filesystem context (cwd, root, umask) and System V semaphore undo list
_IN_PLACE = CloneFlags.CLONE_FILES | CloneFlags.CLONE_FS | CloneFlags.CLONE_SYSVSEM


def _opts() -> Tuple[Opt, ...]:
    """The getopt table, from RUN_OPTIONS: each long name, with its letter where it has one."""
    found = [Opt("help", "h")]
    for row in RUN_OPTIONS:
        letter = next((n[1] for n in row.names if not n.startswith("--")), "")
        arg = NO if not row.metavar else OPTIONAL if row.optional else REQUIRED
        # every long spelling carries the letter: getopt takes them for one option
        found += [Opt(name[2:], letter, arg) for name in row.names if name.startswith("--")]
    return tuple(found)


OPTS = _opts()
#: every namespace flag: what --flags may name besides _IN_PLACE
NS_FLAGS_ALL = CloneFlags(0)
for _flag in NS_FLAGS.values():
    NS_FLAGS_ALL |= _flag


class Request:
    """What run's options ask for: the joins first, then ``portclone unshare``'s request."""

    def __init__(self) -> None:
        self.unshare = _unshare.Request(os.geteuid(), os.getegid())
        #: --join and --join-ns in order: (option as given, namespace or "" for every one,
        #: pid or path); a later one overrides what an earlier one said for a namespace
        self.joins: List[Tuple[str, str, object]] = []
        self.flags_given = ""  # --flags, as given
        self.flags = _NO_FLAGS  # what --flags asked for
        self.hostname_given = ""  # --hostname, as given


def parse(found: Found) -> Request:
    r = Request()
    for opt, value in found:
        name = opt.long
        spelled = f"--{name}" + (f"={value}" if value is not None else "")
        try:
            _apply(r, name, value, spelled)
        except (ValueError, Failure) as e:  # said with the option as given
            why = str(e) if len(str(e)) <= 200 else str(e)[:197] + "..."
            raise Failure(f"{_shown(spelled)}: {why}", getattr(e, "status", 1)) from None
    _unshare.finish(r.unshare)
    return r


def _apply(r: Request, name: str, value: Optional[str], spelled: str) -> None:
    if name == "join":
        if value is None or not digits(value) or not 0 < int(value) < 2**31:
            raise ValueError("a pid is a number of ASCII digits")
        r.joins.append((spelled, "", int(value)))
    elif name == "join-ns":
        ns, sep, target = (value or "").partition("=")
        if not sep or not target or ns not in NS_FLAGS:
            raise ValueError(f"NAME=PID or NAME=PATH, NAME one of {', '.join(NS_FLAGS)}")
        r.joins.append((spelled, ns, int(target) if digits(target) else target))
    elif name == "hostname":
        r.unshare.flags |= CloneFlags.CLONE_NEWUTS
        r.unshare.hostname = value
        r.hostname_given = spelled
    elif name == "flags":
        for bit in bits(int(parse_flags(value or ""))):
            flag = CloneFlags(bit)
            if not (flag & NS_FLAGS_ALL or flag & _IN_PLACE):
                raise ValueError(
                    f"{describe(bit)} needs a new process, and run unshares itself in place "
                    "(unshare(2), as unshare(1)); portclone.spawn() can ask for it"
                )
            r.unshare.flags |= flag
            r.flags |= flag
        r.flags_given = spelled
    else:
        _unshare.apply(r.unshare, _UNSHARE_NAME.get(name, name), value)


def refuse_what_the_backend_cannot(r: Request) -> None:
    _unshare.refuse_what_the_backend_cannot(r.unshare)
    for spelled, _, _ in r.joins:
        why = backend_refusal(_NO_FLAGS, "join")
        if why is not None:
            raise Failure(f"{spelled}: {why}")
    if r.hostname_given:
        why = backend_refusal(_NO_FLAGS, "hostname")
        if why is not None:
            raise Failure(f"{r.hostname_given}: {why}")
    for bit in bits(int(r.flags)):
        if CloneFlags(bit) & _IN_PLACE:
            why = None if backend_name() == "linux" else "unshare(2) is Linux's, and the linux backend's"
        else:
            why = backend_refusal(CloneFlags(bit))
        if why is not None:
            raise Failure(f"{r.flags_given}: {describe(bit)}: {why}")


def _open_joins(r: Request) -> Dict[str, Tuple[str, int]]:
    """An fd of each namespace to join, by name, with the option that named it; those that
    are ours already left out.  --join names every namespace of its target, as nsenter -a
    does: one that run also creates is then created inside the target's, as nsenter then
    unshare would."""
    from .._procns import ns_of, open_ns_file, own_ns

    have = os.path.isdir("/proc/self/ns")  # else: every name, and the kernel answers
    every = [n for n in NS_FLAGS if not have or os.path.exists(f"/proc/self/ns/{n}")]
    wanted: Dict[str, Tuple[str, object]] = {}
    for spelled, ns, target in r.joins:  # in order: a later option overrides
        for name in [ns] if ns else every:
            wanted[name] = (spelled, target)
    fds: Dict[str, Tuple[str, int]] = {}
    pidfds: Dict[int, int] = {}
    try:
        for ns, (spelled, target) in wanted.items():
            try:
                if isinstance(target, int):
                    if target not in pidfds:
                        pidfds[target] = task_pidfd(target)
                    fd = ns_of(pidfds[target], ns, f"the {ns} namespace of {target}")
                else:
                    fd = open_ns_file(str(target), ns, _shown(spelled))
            except ValueError as e:  # no namespace file: it says so, with the option
                raise Failure(str(e)) from None
            except OSError as e:
                if not isinstance(target, int):  # open_ns_file's words name the option
                    raise Failure(e.strerror or str(e), step=spelled, errno=e.errno or 0) from None
                raise os_failure(_shown(spelled), e) from None
            ours = own_ns(ns)
            st = os.fstat(fd)
            if ours is not None and (ours.st_dev, ours.st_ino) == (st.st_dev, st.st_ino):
                os.close(fd)  # ours already (setns cannot re-enter one's own user namespace)
                continue
            fds[ns] = (spelled, fd)
    except BaseException:
        for _, fd in fds.values():
            os.close(fd)
        raise
    finally:
        for fd in pidfds.values():
            os.close(fd)
    return fds


def _join(fds: Dict[str, Tuple[str, int]], r: Request) -> None:
    """nsenter's two passes: every namespace but the user one (failures left for later),
    then the user namespace and the rest, in nsenter's order; a joined PID namespace is
    the children's, so the command forks as nsenter does and goes on in the child.  The
    credentials stay (nsenter --preserve-credentials), so the ids unshare then maps are
    the ones this process has in the joined user namespace."""
    from . import _syscalls
    from ._nsenter import _continue_as_child

    pending = dict(fds)
    for first in (True, False):
        for ns in JOIN_ORDER:
            if ns not in pending or (first and ns == "user"):
                continue
            spelled, fd = pending[ns]
            try:
                _syscalls.setns(fd, int(NS_FLAGS[ns]))
            except OSError as e:
                if first:
                    continue
                raise os_failure(f"{_shown(spelled)}: entering the {ns} namespace failed", e) from None
            os.close(fd)
            del pending[ns]
    if "pid" in fds:
        _continue_as_child()
    r.unshare.euid, r.unshare.egid = os.geteuid(), os.getegid()


def _shown(spelled: str) -> str:
    """An option as given, cut short for a message (a value may be any length)."""
    return spelled if len(spelled) <= 80 else spelled[:77] + "..."


def execute(r: Request, command: List[str]) -> int:
    if r.joins:
        _join(_open_joins(r), r)
    try:
        return _unshare.execute(r.unshare, command)
    except Failure as e:
        if (
            e.step == "unshare failed"
            and e.errno == errno.EPERM
            and not r.unshare.flags & CloneFlags.CLONE_NEWUSER
            and os.geteuid() != 0
        ):
            hint = "add --user or --map-root-user to create namespaces without privilege"
            raise Failure(f"{e} ({hint})") from None
        raise


def _help() -> str:
    lines = ["", "Usage:", " {prog} [options] [--] [<program> [<argument>...]]", ""]
    lines.append("Run a program in new or joined namespaces: unshare(1)'s and nsenter(1)'s options")
    lines.append("in one grammar, with unshare's process model.")
    lines += ["", "Options:"]
    for row in RUN_OPTIONS:
        spelled = ", ".join(
            n + (f"[={row.metavar}]" if row.optional else f" <{row.metavar}>" if row.metavar else "")
            for n in row.names
        )
        lines.append(f" {spelled}")
        lines.append(f"      {row.help}")
    lines += [" -h, --help", "      display this help", "", _epilog(), ""]
    return "\n".join(lines)


def _epilog() -> str:
    name = backend_name()
    honoured = [
        describe(int(flag)).replace("CLONE_", "")
        for flag in (*NS_FLAGS.values(), *(CloneFlags(b) for b in bits(int(_IN_PLACE))))
        if backend_refusal(flag) is None and (name == "linux" or not flag & _IN_PLACE)
    ]
    refused = [row.names[-1] for row in RUN_OPTIONS if row.reason(name) is not None]
    text = f"The {name} backend honours these --flags for run here: {', '.join(honoured) or 'none'}."
    if refused:
        text += f" It refuses: {', '.join(refused)}."
    return text + (
        " Exit status: the program's (run dies of the program's signal); 126/127 "
        "when it cannot be run or found; 1 for run's own failures and usage errors. "
        "Example: portclone run -Urpf --mount-proc -- sh"
    )


def main(argv: Sequence[str], prog: str) -> int:
    return Tool("run", OPTS, _help, parse, refuse_what_the_backend_cannot, execute).main(argv, prog)
