"""The command line: ``python -m portclone info|flags|check|run|demo``.

``run`` is a portable unshare(1) and nsenter(1): their option letters, their exit
statuses, signals forwarded to the program.  Each of its options is a row of
``RUN_OPTIONS``, which builds the parser, says what the option sets in the API, and
writes the docs' table of options against backends (``run_option_table``).
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import os
import platform
import re
import signal
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

from . import __version__, available_backends, check, clone, current_backend, spawn
from ._caller import causes
from ._errors import PortcloneError, Stage
from ._flags import BACKENDS, INFO, NS_FLAGS, OPTION, TABLE, CloneFlags, bits, describe
from ._loader import StaleExtensionError, native_status
from ._validate import broken_rules

PROG = "portclone"
#: Signals run forwards to its program (as well as a terminal's, which the program gets
#: itself: see _Forwarder).
FORWARDED = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
_NO_FLAGS = CloneFlags(0)
_SI_KERNEL = 0x80  # si_code of a signal the kernel sent (a terminal's ^C), Linux


@dataclass(frozen=True)
class RunOption:
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


# -- errors fit for a command line ----------------------------------------------------------

#: The API's words in error messages, as run's options say them (regular expressions).
_CLI_WORDS: Tuple[Tuple[str, Any], ...] = (
    (r"pass close_fds=False to accept that", "run cannot (it closes every other fd)"),
    (r"pass exit_signal=0 \(clone3 answers EINVAL\)", "run cannot set an exit signal"),
    (r"needs cgroup= \(a cgroup v2 directory fd or path\)", "needs a cgroup, which run has no option for"),
    (r"setgroups='allow'", "--setgroups=allow"),
    (r"setgroups 'deny'", "--setgroups=deny"),
    (r"time_offsets\['(\w+)'\]", r"--\1"),
    (r"join\['(\w+)'\]: '([^']*)'", r"--join-ns \1=\2:"),
    (r"join\['(\w+)'\]", r"--join-ns \1="),
    (r"pdeathsig=SIGKILL", "--kill-child=SIGKILL"),
    (r"; None for no signal", ""),
    (r"(?m)^(\s*)pdeathsig:", r"\1--kill-child:"),
    (r"\bpdeathsig\b", "--kill-child"),
    (r"(?m)^(\s*)join:", r"\1--join/--join-ns:"),
    (r"\bjoin=", "--join/--join-ns "),
    (r"uid_map/gid_map", "--map-user/--map-group/--map-root-user"),
    (
        r"(?m)^(\s*)(uid_map|gid_map|map_root|setgroups|hostname|mount_proc|propagation):",
        lambda m: f"{m[1]}--{m[2].replace('_', '-')}:",
    ),
    (r"\b(map_root|mount_proc|hostname|propagation)=(True)?", lambda m: f"--{m[1].replace('_', '-')}"),
    (r"(?m)^(\s*)time_offsets:", r"\1--monotonic/--boottime:"),
    (r"(?m)^(\s*)set_tid:", r"\1(set_tid, which run does not set):"),
)


def cli_message(error: BaseException) -> str:
    """``error``'s message in run's words (an OSError's without its "[Errno N]")."""
    text = str(error)
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror + (f": {error.filename}" if error.filename else "")
    for pattern, replacement in _CLI_WORDS:
        text = re.sub(pattern, replacement, text)
    return text


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1, as unshare's and nsenter's do."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word.upper(), choices, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def parse_flags(text: str) -> CloneFlags:
    """``NEWUSER,NEWPID`` as flags; ValueError naming the nearest real names otherwise."""
    try:
        return CloneFlags.parse(text)
    except ValueError as e:
        names = [name[len("CLONE_") :] for name in CloneFlags.__members__]
        bad = [
            w
            for w in text.replace("|", ",").split(",")
            if w.strip() and w.strip().upper().replace("CLONE_", "", 1) not in names
        ]
        hint = _suggest(bad[0].strip().upper().replace("CLONE_", "", 1), names) if bad else ""
        raise ValueError(f"{e}{hint}; `python -m portclone flags` lists them") from None


# -- run ------------------------------------------------------------------------------------


def _signal_number(text: str) -> int:
    """A signal by number or name (TERM, SIGTERM), as kill(1) takes it."""
    if text.isdecimal():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise ValueError(f"--kill-child takes a signal name or number, not {text!r}")


def _id(text: str, database: str) -> int:
    if text.isdigit():
        return int(text)
    import grp
    import pwd

    try:
        return pwd.getpwnam(text).pw_uid if database == "user" else grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"no {database} named {text!r}") from None


def _join_every_namespace(pid_text: str, creating: CloneFlags) -> Dict[str, Any]:
    """nsenter -a: every namespace of PID this kernel has, but those run creates anew.
    spawn() reaches them through PID's pidfd and skips those that are ours already."""
    if not pid_text.isdecimal() or not 0 < int(pid_text) < 2**31:
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
        kw["uid_map"] = [(_id(uid, "user"), os.geteuid(), 1)]
    if gid is not None:
        kw["gid_map"] = [(_id(gid, "group"), os.getegid(), 1)]
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
        kw["pdeathsig"] = _signal_number(args.kill_child) if args.kill_child else signal.SIGKILL
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
        join[name] = int(target) if target.isdecimal() else target
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


def _die_of(sig: int) -> int:
    """End this process by ``sig``, as the program ended (unshare does so, and callers
    then see the signal); 128 + sig where its default action is not to end."""
    sys.stdout is not None and sys.stdout.flush()
    sys.stderr is not None and sys.stderr.flush()
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            return 128 + sig
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    return 128 + sig


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
    return _die_of(-code) if code < 0 else code


# -- info, flags, check, demo ---------------------------------------------------------------


def _capability(available: bool, reason: Optional[str] = None) -> Dict[str, Any]:
    return {"available": available, "reason": None if available else reason}


def _info() -> Dict[str, Any]:
    backend = current_backend()
    native, why = native_status()
    facts: Dict[str, Any] = {
        "portclone": __version__,
        "backend": backend.name,
        "available_backends": available_backends(),
        "platform": sys.platform,
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    other = f"the {backend.name} backend does not use it"
    capabilities: Dict[str, Any] = {
        "native_extension": _capability(native is not None, why),
        "clone3": _capability(False, other),
        "pidfd": _capability(False, other),
        "libc_tid_repair": _capability(False, other),
    }
    details = backend.details()
    capabilities.update(details.pop("capabilities", {}))
    facts.update(details)
    probe = getattr(backend, "probe", None)
    for info in TABLE:
        # each namespace's line is the flag that makes a new one (CLONE_NEWNS for mnt), not
        # another flag with the same ns (CLONE_EMPTY_MNTNS)
        if info.ns and info.name.startswith("CLONE_NEW"):
            problem = probe(info.flag) if probe is not None else backend.why_refused(info.flag)
            if problem is not None and probe is not None:
                found = causes(int(info.flag))
                problem += f"; here: {'; '.join(found)}" if found else ""
            capabilities[f"namespace {info.ns}"] = _capability(problem is None, problem)
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            facts["max_user_namespaces"] = int(f.read())
    except (OSError, ValueError):
        pass
    facts["capabilities"] = capabilities
    # what the backend and kernel honour, and of that what this caller may use now: the
    # namespace lines above are this caller's trials
    supported = backend.supported_flags
    refused = [
        NS_FLAGS[key.split()[1]]
        for key, cap in capabilities.items()
        if key.startswith("namespace ") and not cap["available"]
    ]
    usable = supported & ~F(sum(int(flag) for flag in refused))
    facts["supported_flags"] = describe(int(supported)).split("|")
    facts["usable_flags"] = describe(int(usable)).split("|") if usable else []
    return facts


_LIST_NOTES = {
    "supported_flags": "what the backend and kernel honour, for a caller they let",
    "usable_flags": "of those, what this caller may use now: see the namespace lines",
}


def _print_info(as_json: bool) -> int:
    facts = _info()
    if as_json:
        print(json.dumps(facts, indent=2, sort_keys=True))
        return 0
    width = max(len(k) for k in [*facts, *facts["capabilities"]]) + 2
    for key, value in facts.items():
        if key == "capabilities":
            print("capabilities (namespaces: tried by this caller now):")
            for name, cap in value.items():
                state = "yes" if cap["available"] else f"no: {cap['reason']}"
                print(f"  {name:<{width - 2}} {state}")
        elif isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<{width - 2}} {v}")
        elif isinstance(value, list):
            print(f"{key:<{width}} {', '.join(map(str, value))}")
            if key in _LIST_NOTES:
                print(f"{'':<{width}} ({_LIST_NOTES[key]})")
        else:
            print(f"{key:<{width}} {value}")
    return 0


def _demo_child() -> int:
    print(f"uts.nodename in child:  {os.uname().nodename}", flush=True)
    return 0


def _demo(hostname: str) -> int:
    """clone(2)'s example: a child in a new UTS (and user) namespace has its own hostname."""
    try:
        child = clone(_demo_child, hostname=hostname, map_root=os.geteuid() != 0)
    except (PortcloneError, ValueError, OSError) as e:
        print(f"{PROG} demo: {cli_message(e)}", file=sys.stderr)
        return 1
    with child:
        code = child.wait()  # the child's line first, always
    print(f"clone() returned {child.pid} ({child.syscall}, flags {child.flags}, backend {child.backend})")
    print(f"uts.nodename in parent: {os.uname().nodename}")
    print(f"child exited with status {code}")
    return code


def _flags(markdown: bool) -> int:
    if markdown:
        from ._docs import availability_table

        print(availability_table())
        return 0
    backend = current_backend()
    supported = backend.supported_flags
    for info in sorted(TABLE, key=lambda i: int(i.flag)):
        mark = "yes" if info.flag & supported else "no "
        print(f"{mark} {info.name:<22} {int(info.flag):#12x}  {info.meaning}")
        if not info.flag & supported:
            print(f"{'':27}{backend.why_refused(info.flag)}")
    return 0


#: the bits a --exec check tries in a clone() child: what a caller may lack is a namespace
_NAMESPACES = F(sum(int(flag) for flag in NS_FLAGS.values()))


def _check(flag_text: str, exec_child: bool, static: bool = False) -> int:
    """Exit 0 when this backend honours the request, for this caller now (tried in a
    throwaway child) unless ``static``; else every reason against it (the kernel's rules,
    this backend's refusals, what the trial met), exit 1."""
    if not any(c.isalnum() for c in flag_text):
        # a gate written as `check "$FLAGS"` must not pass when $FLAGS is empty
        raise ValueError(
            "no flags given: name at least one (NEWPID,NEWNS); `python -m portclone flags` lists them"
        )
    flags = parse_flags(flag_text)
    backend = current_backend()
    what = "a program (spawn)" if exec_child else "a Python child (clone)"
    asked = flags | F.CLONE_VM if exec_child else flags
    present = {"exit_signal", "no_cgroup"} | ({"close_fds"} if exec_child else set())
    reasons = [
        f"{r.label}: {r.reason}" for r in broken_rules(int(asked), frozenset(present), backend.has_feature)
    ]
    for bit in bits(int(asked)):
        why = backend.why_refused(F(bit), exec_child)
        if why is not None:
            reasons.append(f"{describe(bit)}: {why}")
    if not reasons:
        try:  # what the rules and the table do not know: probes, the kernel's answers
            if exec_child:
                backend.request(asked, signal.SIGCHLD, None, None, exec_child=True)
            else:
                check(flags)
        except PortcloneError as e:
            reasons.append(str(e))
    if not reasons and not static:
        try:  # the namespaces are what a caller may lack: tried in a child that exits
            check(flags & _NAMESPACES if exec_child else flags, probe=True)
        except (PortcloneError, OSError) as e:
            reasons.append(cli_message(e))
    if reasons:
        whom = "" if static else " here"
        print(f"{backend.name} cannot honour {describe(int(flags))} for {what}{whom}:", file=sys.stderr)
        for reason in dict.fromkeys(reasons):
            print(f"  {reason}", file=sys.stderr)
        return 1
    whom = " (for any caller it lets: --static)" if static else " here, for this caller"
    print(f"{backend.name} honours {describe(int(flags))} for {what}{whom}")
    return 0


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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "portclone: Linux clone semantics on every POSIX system. The subcommands report what "
            "this machine's backend honours, check requests, and run programs in new or "
            "existing namespaces (a portable unshare and nsenter)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"portclone {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    p_info = sub.add_parser("info", help="backend, kernel features and capabilities, as probed")
    p_info.add_argument("--json", action="store_true", help="machine-readable output")
    p_flags = sub.add_parser("flags", help="every clone flag and whether this backend honours it")
    p_flags.add_argument(
        "--markdown", action="store_true", help="the docs' availability table (docs/flags.md)"
    )
    p_check = sub.add_parser("check", help="exit 0 if this backend honours FLAGS, else say why and exit 1")
    p_check.add_argument("check_flags", metavar="FLAGS", help="NEWPID,NEWNS,...")
    p_check.add_argument(
        "--exec",
        action="store_true",
        dest="exec_child",
        help="for a program (spawn) rather than a Python child (clone)",
    )
    p_check.add_argument(
        "--static",
        action="store_true",
        help="answer for the request alone (whoever makes it), without trying it: by default "
        "the request is tried in a throwaway child, so the answer is for this caller now",
    )
    p_run = sub.add_parser(
        "run",
        help="run a program in new or joined namespaces: a portable unshare/nsenter",
        epilog=_run_epilog(),
        allow_abbrev=False,
    )
    for opt in RUN_OPTIONS:
        kwargs: Dict[str, Any] = {"help": opt.help, "dest": opt.dest}
        if not opt.metavar:
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = opt.metavar
            if opt.optional:
                kwargs.update(nargs="?", const="")
            if opt.repeat:
                kwargs["action"] = "append"
            if opt.choices:
                kwargs["choices"] = opt.choices
        p_run.add_argument(*opt.names, **kwargs)
    p_run.add_argument(
        "cmd",
        nargs="*",
        metavar="PROGRAM",
        help="the program and its arguments, after the options or after --; default: $SHELL",
    )
    p_demo = sub.add_parser(
        "demo",
        help="clone(2)'s example: a child sets its hostname in a new "
        "UTS namespace; the parent's is unchanged",
    )
    p_demo.add_argument("--hostname", default="portclone-demo", help="the child's hostname")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "info":
        return _print_info(args.json)
    if args.command == "check":
        return _check(args.check_flags, args.exec_child, args.static)
    if args.command == "demo":
        return _demo(args.hostname)
    return _flags(args.markdown)


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
                raise _UsageError(
                    f"{'unknown' if not matches else 'ambiguous'} option "
                    f"{name}" + (f" (could be {', '.join(matches)})" if matches else "")
                )
            opt, full = longs[matches[0]], matches[0]
            if not opt.metavar:
                if eq:
                    raise _UsageError(f"option {full} takes no value")
                out.append(full)
            elif eq or opt.optional:
                out.append(f"{full}={value}")
            else:
                if i + 1 >= len(words):
                    raise _UsageError(f"option {full} needs a value ({opt.metavar})")
                out.append(f"{full}={words[i + 1]}")
                i += 1
        elif word.startswith("-") and word != "-":
            j = 1
            while j < len(word):
                opt_ = shorts.get(word[j])
                if opt_ is None:
                    raise _UsageError(f"unknown option -{word[j]}")
                if not opt_.metavar:
                    out.append(opt_.names[-1])
                    j += 1
                    continue
                value = word[j + 1 :]
                if not value:
                    if i + 1 >= len(words):
                        raise _UsageError(f"option -{word[j]} needs a value ({opt_.metavar})")
                    value = words[i + 1]
                    i += 1
                out.append(f"{opt_.names[-1]}={value}")
                break
        else:
            return out, words[i:]
        i += 1
    return out, []


class _UsageError(Exception):
    pass


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; never a traceback for what a user can get wrong."""
    # the fork fallback's one-time RuntimeWarning is for programs: the CLI shows the backend
    # in force and why (`info`), and the warning would point into runpy
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "portclone: the .* backend is unusable", RuntimeWarning)
        try:
            return _main(argv)
        except StaleExtensionError as e:  # any command (the parser's epilog asks the backend)
            print(f"portclone: {e}", file=sys.stderr)
            return 1


def _main(argv: Optional[List[str]]) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    forwarder = _Forwarder() if "run" in words else None  # before anything can take time
    parser = _parser()
    try:
        command: List[str] = []
        if "run" in words:
            cut = words.index("run") + 1
            try:
                options, command = _split_run(words[cut:])
            except _UsageError as e:
                return _usage("run", str(e))
            words = words[:cut] + options
        args = parser.parse_args(words)
        if args.command == "run":
            args.cmd = command
            assert forwarder is not None
            return _run(args, forwarder)
        code = _dispatch(args)
        if sys.stdout is not None:
            sys.stdout.flush()
        return code
    except BrokenPipeError:  # `portclone flags | head -1`: the reader left, as it may
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return _die_of(signal.SIGINT)
    except (PortcloneError, ValueError, OSError) as e:
        print(f"{PROG} {words[0] if words else ''}: {cli_message(e)}", file=sys.stderr)
        return 1
    finally:
        if forwarder is not None:
            forwarder.restore()


def _usage(command: str, message: str) -> int:
    print(f"usage: {PROG} {command} [options] [--] [PROGRAM [ARGS...]]", file=sys.stderr)
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)
    return 1
