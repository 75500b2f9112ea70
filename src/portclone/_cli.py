"""``portclone._cli``, kept for code that imported the command line from here: it lives in
the ``portclone.cli`` package."""

from .cli import main

__all__ = ["main"]
