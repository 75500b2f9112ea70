"""What every command of the command line shares: its name, messages fit for a terminal,
signal and id names as the tools take them, and dying as a child died."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import signal
import sys
from typing import Any, NoReturn, Sequence, Tuple

from .._flags import CloneFlags

PROG = "portclone"


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


class Parser(argparse.ArgumentParser):
    """Usage errors exit 1, as unshare's and nsenter's do."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def suggest(word: str, choices: Sequence[str]) -> str:
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
        hint = suggest(bad[0].strip().upper().replace("CLONE_", "", 1), names) if bad else ""
        raise ValueError(f"{e}{hint}; `python -m portclone flags` lists them") from None


def digits(text: str) -> bool:
    """Whether ``text`` is a number in ASCII digits (str.isdecimal also takes other scripts'
    digits, which int() reads: an Arabic-Indic 5 is not a pid)."""
    return text.isascii() and text.isdigit()


def signal_number(text: str) -> int:
    """A signal by number or name (TERM, SIGTERM), as kill(1) takes it."""
    if digits(text):
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise ValueError(f"--kill-child takes a signal name or number, not {text!r}")


def user_id(text: str, database: str) -> int:
    if digits(text):
        return int(text)
    import grp
    import pwd

    try:
        return pwd.getpwnam(text).pw_uid if database == "user" else grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"no {database} named {text!r}") from None


def die_of(sig: int) -> int:
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


class UsageError(Exception):
    pass


def usage(command: str, message: str) -> int:
    print(f"usage: {PROG} {command} [options] [--] [PROGRAM [ARGS...]]", file=sys.stderr)
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)
    return 1
