"""The command line: ``python -m portclone info|flags|check|run|unshare|nsenter|demo``.

``unshare`` and ``nsenter`` (util-linux's, as drop-ins: _unshare, _nsenter) and ``run``
(their options merged, _run) parse their own words with getopt's rules and follow
util-linux's process model; the others go through argparse (_commands).  Each is
imported when asked for, so a drop-in starts without the rest.
"""

from __future__ import annotations

import os
import sys
import warnings

from .._common import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Callable, List, Optional

#: the commands parsed with getopt, util-linux's way; the others go through argparse
DROP_INS = ("unshare", "nsenter", "run")


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; never a traceback for what a user can get wrong."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] and words[0] in DROP_INS:
        return _guarded(words[0], lambda: _getopt_command(words[0], words[1:], f"portclone {words[0]}"))

    def commands() -> int:
        from . import _commands

        return _commands.main(words)

    return _guarded("portclone", commands)


def _guarded(name: str, body: Callable[[], int]) -> int:
    # the fork fallback's one-time RuntimeWarning is for programs: the CLI shows the backend
    # in force and why (`info`), and the warning would point into runpy
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "portclone: the .* backend is unusable", RuntimeWarning)
        try:
            return body()
        except Exception as e:  # a stale extension, met by any command that loads it
            loader = sys.modules.get("portclone._loader")  # (not loaded: none was met)
            if loader is None or not isinstance(e, loader.StaleExtensionError):
                raise
            print(f"{name}: {e}", file=sys.stderr)
            return 1


def _getopt_command(tool: str, argv: List[str], prog: str) -> int:
    """A command parsed with getopt (unshare, nsenter, run), under the name ``prog`` in messages."""
    if tool == "unshare":
        from . import _unshare as module
    elif tool == "nsenter":
        from . import _nsenter as module  # type: ignore[no-redef]
    else:
        from . import _run as module  # type: ignore[no-redef]
    return module.main(argv, prog)


def _entry(tool: str) -> int:
    name = os.path.basename(sys.argv[0]) or f"portclone-{tool}"
    return _guarded(name, lambda: _getopt_command(tool, sys.argv[1:], name))


def unshare_main() -> int:
    """The ``portclone-unshare`` console script: a link or wrapper named ``unshare`` to it
    makes a drop-in unshare(1)."""
    return _entry("unshare")


def nsenter_main() -> int:
    """The ``portclone-nsenter`` console script (see unshare_main)."""
    return _entry("nsenter")
