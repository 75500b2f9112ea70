"""Command lines parsed as glibc's ``getopt_long`` parses them, for the drop-in commands.

util-linux's tools parse with ``getopt_long(argc, argv, "+...", longopts)``: options are
taken in the order given (the tool applies each as it comes, so a later one wins), the
first word that is not an option ends them ("+"), ``--`` ends them too, long options may
be abbreviated to a unique prefix, a required value comes attached or as the next word,
and an optional value only attached (``--mount-proc=/p``, ``-w/tmp``).  Short options
cluster (``-Urf``).  glibc's rules are in bminor/glibc:posix/getopt.c; this is a work-alike
written from its documented behaviour (getopt(3)).
"""

from __future__ import annotations

from .._common import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from typing import List, Optional, Sequence, Tuple

    Found = List[Tuple["Opt", Optional[str]]]

NO, REQUIRED, OPTIONAL = 0, 1, 2


class Opt(NamedTuple):
    """One option: its long name, its letter ("" for none) and whether it takes a value;
    ``short_arg`` where the letter differs (unshare's ``-m`` takes none, ``--mount[=FILE]``
    an optional one)."""

    long: str
    short: str = ""
    arg: int = NO
    short_arg: int = -1

    @property
    def letter_arg(self) -> int:
        return self.arg if self.short_arg == -1 else self.short_arg


class GetoptError(Exception):
    """A usage error, worded as getopt words it."""


def getopt_long(argv: Sequence[str], opts: Sequence[Opt]) -> Tuple[Found, List[str]]:
    """``(options, operands)``: each option found with its value (None for a switch or an
    optional value left out), in order, and the words after them."""
    by_long = {o.long: o for o in opts}
    by_short = {o.short: o for o in opts if o.short}
    found: Found = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return found, list(argv[i + 1 :])
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            opt = by_long.get(name)
            if opt is None:
                matches = [o for o in opts if o.long.startswith(name)] if name else []
                if not matches:
                    raise GetoptError(f"unrecognized option '--{name}'")
                if len(matches) > 1 and not _one_option(matches):
                    spelled = " ".join(f"'--{o.long}'" for o in matches)
                    raise GetoptError(f"option '--{name}' is ambiguous; possibilities: {spelled}")
                opt = matches[0]
            if opt.arg == NO and eq:
                raise GetoptError(f"option '--{opt.long}' doesn't allow an argument")
            if opt.arg == REQUIRED and not eq:
                if i + 1 >= len(argv):
                    raise GetoptError(f"option '--{opt.long}' requires an argument")
                i += 1
                value = argv[i]
            found.append((opt, value if eq or opt.arg == REQUIRED else None))
        elif word.startswith("-") and word != "-":
            j = 1
            while j < len(word):
                letter = word[j]
                sopt = by_short.get(letter)
                if sopt is None:
                    raise GetoptError(f"invalid option -- '{letter}'")
                if sopt.letter_arg == NO:
                    found.append((sopt, None))
                    j += 1
                    continue
                value = word[j + 1 :]
                if not value and sopt.letter_arg == REQUIRED:
                    if i + 1 >= len(argv):
                        raise GetoptError(f"option requires an argument -- '{letter}'")
                    i += 1
                    value = argv[i]
                found.append((sopt, value if value or sopt.letter_arg == REQUIRED else None))
                break
        else:
            return found, list(argv[i:])
        i += 1
    return found, []


def _one_option(matches: List[Opt]) -> bool:
    """Whether the long names a prefix matches are spellings of one option (glibc's rule:
    the same letter and argument; getopt_long then takes the first)."""
    return bool(matches[0].short) and len({(o.short, o.arg) for o in matches}) == 1
