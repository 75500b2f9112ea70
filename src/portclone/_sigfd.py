"""Signal masks and groups of fds, as the parent holds them while it starts a child and
as a child blocks them while it starts and ends: shared by every backend."""

from __future__ import annotations

import os
import signal
import sys

from . import _loader
from ._common import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, List

__all__ = [
    "ALL_SIGNALS",
    "FdGroup",
    "block_signals",
    "close_fds",
    "close_held",
    "hold_signals",
    "pthread_sigmask",
    "release_signals",
    "signals_in",
]

#: Every signal: what a child blocks while it starts and while it ends.
ALL_SIGNALS = frozenset(signal.valid_signals())

# The signal masks below go through _signal, the C module under Lib/signal.py: the
# wrapper there turns every mask it returns into a set of Signals enums, which cost more
# than the rest of a spawn() did (issue 21).  Same calls, same semantics otherwise.
#: the C function under Lib/signal.py's wrapper, which makes every mask a set of enums
_signal: Any = sys.modules["_signal"]  # loaded by signal; no stub names it
pthread_sigmask = _signal.pthread_sigmask
SIG_BLOCK = _signal.SIG_BLOCK
SIG_SETMASK = _signal.SIG_SETMASK


def block_signals() -> None:
    pthread_sigmask(SIG_BLOCK, ALL_SIGNALS)


def hold_signals() -> Any:
    """Block every signal in this thread and return the mask to restore (opaque: give it
    to :func:`release_signals`).

    Blocking runs the handlers of signals that arrived before it returns, so one may
    raise after the block took effect: then the old mask is put back before the
    exception goes on, and the caller is left as it was.  Once portclone._native is
    loaded this is one C call (sigmask_hold: two system calls, no Python objects but the
    saved mask); without it, _signal.pthread_sigmask twice.
    """
    native = _loader._native
    if native is not None:
        return native.sigmask_hold()
    mask = pthread_sigmask(SIG_BLOCK, ())  # changes nothing if it raises
    try:
        pthread_sigmask(SIG_BLOCK, ALL_SIGNALS)
    except BaseException:
        pthread_sigmask(SIG_SETMASK, mask)
        raise
    return mask


def release_signals(saved: Any) -> None:
    """Put back the mask :func:`hold_signals` returned; the handlers of signals that
    arrived meanwhile run here (and may raise), with the mask already restored."""
    if type(saved) is bytes:  # sigmask_hold's: the extension is loaded, and stays
        _loader._native.sigmask_restore(saved)
    else:
        pthread_sigmask(SIG_SETMASK, saved)


def signals_in(saved: Any) -> Any:
    """The signal numbers in a mask :func:`hold_signals` returned."""
    if type(saved) is bytes:
        return _loader._native.sigmask_signals(saved)
    return saved


class FdGroup(list[int]):
    """A list of fds that closes what it still holds when it is freed: the backstop for a
    signal handler that raises again while an earlier exception is being cleaned up."""

    def __del__(self) -> None:
        while self:  # a finalizer's exception is only reported: close all the same
            try:
                close_fds(self)
            except BaseException:
                pass


def close_fds(fds: List[int]) -> None:
    """Close and forget every fd in ``fds``, with signals held: a handler cannot raise
    between closing one and forgetting it (a leak, or a second close of a number that
    may be another file's by then), nor stop the loop half way."""
    if not fds:
        return  # nothing to close: nothing a handler could interrupt
    mask = hold_signals()
    try:
        close_held(fds)
    finally:
        release_signals(mask)  # pending handlers run here


def close_held(fds: List[int]) -> None:
    """close_fds() for a caller that holds the signals already."""
    while fds:
        try:
            os.close(fds[-1])
        except OSError:
            pass
        fds.pop()
