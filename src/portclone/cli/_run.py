"""``portclone run``: a program in new or joined namespaces, with unshare(1)'s and
nsenter(1)'s option letters merged into one grammar.  Each option is a row of
``RUN_OPTIONS``, which builds the parser, says what the option sets in the API, and writes
the docs' table of options against backends (``run_option_table``)."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys

from .. import current_backend, spawn
from .._common import TYPE_CHECKING, NamedTuple
from .._errors import PortcloneError, Stage
from .._flags import BACKENDS, INFO, NS_FLAGS, OPTION, CloneFlags, bits, describe
from .._validate import broken_rules
from ._common import PROG, UsageError, cli_message, die_of, digits, parse_flags, signal_number, user_id

if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

#: itself: see _Forwarder).
FORWARDED = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
_NO_FLAGS = CloneFlags(0)
_SI_KERNEL = 0x80  # si_code of a signal the kernel sent (a terminal's ^C), Linux


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
    choices: Tuple[str, ...] = ()

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
        choices=("allow", "deny"),
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
        "the program gets SIGNAL (default SIGKILL) when run dies",
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
        choices=("private", "shared", "slave", "unchanged"),
    ),
    RunOption(("-w", "--wd"), "unshare -w, --wd=DIR", "the program's working directory", metavar="DIR"),
    RunOption(("-f", "--fork"), "unshare -f, --fork", "accepted: run always starts the program as its child"),
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


def _join_every_namespace(pid_text: str, creating: CloneFlags) -> Dict[str, Any]:
    """nsenter -a: every namespace of PID this kernel has, but those run creates anew.
    spawn() reaches them through PID's pidfd and skips those that are ours already."""
    if not digits(pid_text) or not 0 < int(pid_text) < 2**31:
        raise ValueError(f"--join takes a pid, not {pid_text!r}")
    pid = int(pid_text)
    have = os.path.isdir("/proc/self/ns")  # else: every name, and the kernel answers
    return {
        ns: pid
        for ns in NS_FLAGS
        if not creating & NS_FLAGS[ns] and (not have or os.path.exists(f"/proc/self/ns/{ns}"))
    }


def _seconds(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{option} takes seconds, not {text!r}") from None


def run_request(args: argparse.Namespace) -> Tuple[CloneFlags, Dict[str, Any]]:
    """The flags and spawn() keywords run's options ask for."""
    flags = parse_flags(args.flags or "")
    for opt in RUN_OPTIONS:
        if opt.flag and getattr(args, opt.dest):
            flags |= opt.flag
    kw: Dict[str, Any] = {}
    # -r is --map-user=0 --map-group=0 (unshare's words): a later --map-user/-group wins
    uid = args.map_user if args.map_user is not None else "0" if args.map_root_user else None
    gid = args.map_group if args.map_group is not None else "0" if args.map_root_user else None
    if uid is not None:
        kw["uid_map"] = [(user_id(uid, "user"), os.geteuid(), 1)]
    if gid is not None:
        kw["gid_map"] = [(user_id(gid, "group"), os.getegid(), 1)]
    if args.setgroups is not None:
        kw["setgroups"] = args.setgroups
    if args.mount_proc is not None:
        kw["mount_proc"] = True if args.mount_proc == "" else args.mount_proc
    offsets = {
        clock: _seconds(getattr(args, clock), f"--{clock}")
        for clock in ("monotonic", "boottime")
        if getattr(args, clock) is not None
    }
    if offsets:
        kw["time_offsets"] = offsets
    if args.kill_child is not None:
        kw["pdeathsig"] = signal_number(args.kill_child) if args.kill_child else signal.SIGKILL
    if args.propagation is not None:
        kw["propagation"] = args.propagation
    elif flags & F.CLONE_NEWNS:
        kw["propagation"] = "private"  # unshare's default for a new mount namespace
    creating = flags
    for name in ("uid_map", "gid_map", "setgroups", "mount_proc", "time_offsets"):
        if name in kw:
            creating |= OPTION[name].implies
    join: Dict[str, Any] = {} if args.join is None else _join_every_namespace(args.join, creating)
    for item in args.join_ns or ():
        name, sep, target = item.partition("=")
        if not sep or not target:
            raise ValueError(f"--join-ns takes NAME=PID or NAME=PATH, not {item!r}")
        join[name] = int(target) if digits(target) else target
    if join:
        kw["join"] = join
    if args.hostname is not None:
        kw["hostname"] = args.hostname
    if args.wd is not None:
        kw["cwd"] = args.wd
    return flags, kw


def _launch_failure(error: OSError, command: List[str], flags: CloneFlags) -> int:
    """run's message and exit status for a program that did not start: 127 not found,
    126 not executable (as shells and unshare say), 1 for run's own failures."""
    stage = getattr(error, "portclone_stage", None)
    if stage == Stage.EXEC:
        print(f"{PROG} run: {command[0]}: {error.strerror}", file=sys.stderr)
        return 127 if error.errno in (errno.ENOENT, errno.ENOTDIR) else 126
    message = cli_message(error)
    if (
        stage in (None, Stage.CLONE)
        and error.errno == errno.EPERM
        and not flags & F.CLONE_NEWUSER
        and os.geteuid() != 0
    ):
        message += " (add --user or --map-root-user to create namespaces without privilege)"
    print(f"{PROG} run: {message}", file=sys.stderr)
    return 1


def _start(command: List[str], flags: CloneFlags, kw: Dict[str, Any]) -> Any:
    """spawn(), with execvp(3)'s manners, as unshare has them: a file without a "#!" line
    (ENOEXEC) is run by /bin/sh."""
    if not command[0]:
        error = FileNotFoundError(errno.ENOENT, "No such file or directory", "")
        error.portclone_stage = Stage.EXEC  # type: ignore[attr-defined]
        raise error
    try:
        return spawn(command, flags=flags, **kw)
    except OSError as e:
        if getattr(e, "portclone_stage", None) != Stage.EXEC or e.errno != errno.ENOEXEC:
            raise
    return spawn(["/bin/sh", *command], flags=flags, **kw)


class _Forwarder:
    """Hands run's signals on to its program.

    Handlers record what arrives until the program exists.  Then, where the platform has
    sigwaitinfo, the signals and SIGCHLD are blocked and taken one at a time, which tells
    who sent them: a terminal's (^C: the kernel, to the whole foreground process group)
    reached the program already and is not sent twice.  Elsewhere the handlers forward.
    Signals run was started with ignored (nohup) stay ignored, for the program too.
    """

    def __init__(self) -> None:
        self.child: Any = None
        self.pending: List[int] = []
        self.watched = [sig for sig in FORWARDED if signal.getsignal(sig) != signal.SIG_IGN]
        self.saved = {sig: signal.signal(sig, self._handler) for sig in self.watched}
        if hasattr(signal, "SIGCHLD") and signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
            # its status would be discarded, and no SIGCHLD come: unshare resets it too
            self.saved[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def _handler(self, sig: int, frame: object) -> None:
        if self.child is None:
            self.pending.append(sig)
        elif self.child.returncode is None:
            self.child.send_signal(sig)

    def wait(self, child: Any) -> int:
        self.child = child
        for sig in self.pending:
            child.send_signal(sig)
        if not hasattr(signal, "sigwaitinfo"):
            return int(child.wait())
        watched = {*self.watched, signal.SIGCHLD}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        try:
            while child.poll() is None:
                info = signal.sigwaitinfo(watched)
                if info.si_signo == signal.SIGCHLD:
                    continue
                if info.si_code == _SI_KERNEL and _same_group(child.pid):
                    continue  # the terminal sent it to the program too
                if child.poll() is None:
                    child.send_signal(info.si_signo)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return int(child.returncode)

    def restore(self) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _in_terminal_foreground() -> bool:
    """Whether run is in its terminal's foreground process group (an interactive shell's
    job), where the program must share the group to use the terminal."""
    for fd in (0, 1, 2):
        try:
            return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


def _same_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == os.getpgrp()
    except OSError:
        return False


def _run(args: argparse.Namespace, forwarder: _Forwarder) -> int:
    command = list(args.cmd) or [os.environ.get("SHELL") or "/bin/sh"]  # unshare's default
    try:
        flags, kw = run_request(args)
    except (ValueError, OSError) as e:
        print(f"{PROG} run: {cli_message(e)}", file=sys.stderr)
        return 1
    if not _in_terminal_foreground():
        # a group of its own: a signal to run's group (kill -- -PGID, timeout(1)) reaches
        # the program once, through run; a terminal's job keeps one group for the tty
        kw["process_group"] = 0
    try:
        child = _start(command, flags, kw)
    except (PortcloneError, ValueError, TypeError) as e:
        print(f"{PROG} run: {cli_message(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        return _launch_failure(e, command, flags)
    with child:
        code = forwarder.wait(child)
    forwarder.restore()
    return die_of(-code) if code < 0 else code


def _run_epilog() -> str:
    try:
        backend = current_backend()
    except PortcloneError as e:
        return f"no backend: {cli_message(e)}"
    usable = [
        describe(bit).replace("CLONE_", "")
        for bit in bits(int(backend.supported_exec_flags))
        if not broken_rules(bit | int(F.CLONE_VM), frozenset({"exit_signal", "no_cgroup", "close_fds"}))
    ]
    refused = [opt.names[-1] for opt in RUN_OPTIONS if opt.reason(backend.name) is not None]
    text = f"The {backend.name} backend honours these --flags for run here: {', '.join(usable)}."
    if refused:
        text += f" It refuses: {', '.join(refused)}."
    return text + (
        " Exit status: the program's (run dies of the program's signal); 126/127 "
        "when it cannot be run or found; 1 for run's own failures and usage errors. "
        "Example: portclone run -Urpm --mount-proc -- sh"
    )


def _split_run(words: List[str]) -> Tuple[List[str], List[str]]:
    """run's words as (options, program): the options spelled out in full, the program
    and its arguments untouched, as unshare's getopt parses them.  Long options may be
    abbreviated to a unique prefix; optional values come only after "=" (--mount-proc[=DIR],
    --kill-child[=SIGNAL]); short switches combine (-Urpm) and -w takes its value attached
    or next.  The program starts at the first word that is not an option, or after --."""
    longs: Dict[str, RunOption] = {n: o for o in RUN_OPTIONS for n in o.names if n.startswith("--")}
    shorts: Dict[str, RunOption] = {n[1]: o for o in RUN_OPTIONS for n in o.names if not n.startswith("--")}
    out: List[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            return out, words[i + 1 :]
        if word in ("-h", "--help") or (word.startswith("--h") and "--help".startswith(word.split("=")[0])):
            out.append("--help")
        elif word.startswith("--"):
            name, eq, value = word.partition("=")
            matches = [n for n in longs if n == name] or [n for n in longs if n.startswith(name)]
            if len({longs[m].dest for m in matches}) != 1:
                raise UsageError(
                    f"{'unknown' if not matches else 'ambiguous'} option "
                    f"{name}" + (f" (could be {', '.join(matches)})" if matches else "")
                )
            opt, full = longs[matches[0]], matches[0]
            if not opt.metavar:
                if eq:
                    raise UsageError(f"option {full} takes no value")
                out.append(full)
            elif eq or opt.optional:
                out.append(f"{full}={value}")
            else:
                if i + 1 >= len(words):
                    raise UsageError(f"option {full} needs a value ({opt.metavar})")
                out.append(f"{full}={words[i + 1]}")
                i += 1
        elif word.startswith("-") and word != "-":
            j = 1
            while j < len(word):
                opt_ = shorts.get(word[j])
                if opt_ is None:
                    raise UsageError(f"unknown option -{word[j]}")
                if not opt_.metavar:
                    out.append(opt_.names[-1])
                    j += 1
                    continue
                value = word[j + 1 :]
                if not value:
                    if i + 1 >= len(words):
                        raise UsageError(f"option -{word[j]} needs a value ({opt_.metavar})")
                    value = words[i + 1]
                    i += 1
                out.append(f"{opt_.names[-1]}={value}")
                break
        else:
            return out, words[i:]
        i += 1
    return out, []
