"""What the argparse commands share: their name, messages fit for a terminal, flag names
with suggestions, ASCII digits, and dying as a child died."""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys

from .._common import TYPE_CHECKING
from .._flags import CloneFlags

if TYPE_CHECKING:
    from typing import NoReturn, Sequence

PROG = "portclone"


# -- errors fit for a command line ----------------------------------------------------------


def cli_message(error: BaseException) -> str:
    """``error``'s message on one line's terms: an OSError's without its "[Errno N]"."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return str(error)


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
