"""The commands parsed with argparse: ``info``, ``flags``, ``check`` and ``demo`` (``run`` is
listed in the help; it parses its own words, as the drop-ins do: _run)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from .. import __version__
from .._common import TYPE_CHECKING
from .._errors import PortcloneError
from ._common import PROG, Parser, cli_message, die_of
from ._reports import _check, _demo, _flags, _print_info

if TYPE_CHECKING:
    from typing import List


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description=(
            "portclone: Linux clone semantics on every POSIX system. The subcommands report what "
            "this machine's backend honours, check requests, and run programs in new or "
            "existing namespaces (a portable unshare and nsenter)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"portclone {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    # parsed by their own modules, with util-linux's grammar: listed here for --help
    sub.add_parser("unshare", help="util-linux's unshare(1), a drop-in: its options and process model")
    sub.add_parser("nsenter", help="util-linux's nsenter(1), a drop-in: its options and process model")
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
    # listed for the help only: "run" never reaches argparse (cli.main hands it to _run)
    sub.add_parser(
        "run",
        help="run a program in new or joined namespaces: unshare's and nsenter's options in "
        "one grammar, with unshare's process model (run --help)",
        add_help=False,
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


def main(words: List[str]) -> int:
    try:
        args = _parser().parse_args(words)
        code = _dispatch(args)
        if sys.stdout is not None:
            sys.stdout.flush()
        return code
    except BrokenPipeError:  # `portclone flags | head -1`: the reader left, as it may
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return die_of(signal.SIGINT)
    except (PortcloneError, ValueError, OSError) as e:
        print(f"{PROG} {words[0] if words else ''}: {cli_message(e)}", file=sys.stderr)
        return 1
