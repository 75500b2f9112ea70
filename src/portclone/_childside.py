"""The code a Python child runs: its function, its exit status, and its way out.

Every backend's child comes here after the clone or fork: :func:`run_child` runs the
caller's function with the caller's signal mask, :func:`exit_child` leaves through
``_exit`` once handlers and stdio are dealt with; the child never returns into the
caller's code."""

from __future__ import annotations

import os
import signal
import sys
import threading

from ._common import TYPE_CHECKING
from ._sigfd import ALL_SIGNALS, SIG_BLOCK, block_signals, pthread_sigmask

if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn, Optional, Tuple

__all__ = ["exit_child", "exit_code", "flush_std_streams", "reset_caught_handlers", "run_child"]


def print_exc() -> None:
    """traceback.print_exc() without importing traceback beforehand: the interpreter's own
    display (sys.__excepthook__), which imports what it needs only when an error is shown.
    traceback pulls in much at import (on 3.14 dataclasses and inspect, through
    _colorize): a cost on every first use, for a child that fails."""
    sys.__excepthook__(*sys.exc_info())


def flush_std_streams() -> None:
    """Flush Python's stdio buffers so a fork-like child does not print them again."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


def exit_code(value: object) -> int:
    """The exit status ``sys.exit(value)`` would give."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    try:
        print(value, file=sys.stderr)
    except Exception:
        pass
    return 1


def run_child(
    fn: Callable[..., object],
    args: Tuple[Any, ...],
    kwargs: dict,  # type: ignore[type-arg]
    unblock: Callable[[], object],
    prepare: Optional[Callable[[], None]] = None,
) -> int:
    """Run ``fn`` in the new child and return its exit status, as ``sys.exit`` would give.

    Called with every signal blocked, so that no signal handler can raise before this
    ``try``; ``unblock`` restores the caller's signal mask inside it.  What calls it
    (``_native``'s child main, or :func:`exit_child` for the fork backend) blocks the
    signals again, flushes stdio and leaves through ``_exit``: the child never returns
    into the caller's code.
    """
    code = 1
    try:
        unblock()
        try:
            if prepare is not None:
                prepare()
            result = fn(*args, **kwargs)
        except SystemExit as e:
            result = e.code
        code = exit_code(result)
        # Wait for non-daemon threads the child started, as interpreter exit does.  Only
        # when there are some: every page the child touches is a copy-on-write fault.
        if threading.active_count() > 1:
            shutdown = getattr(threading, "_shutdown", None)
            if shutdown is not None:
                shutdown()
        block_signals()
    except BaseException:
        code = 1
        try:
            block_signals()
        finally:
            try:
                print_exc()
            except BaseException:
                pass
    return code


def reset_caught_handlers() -> None:
    """Every signal with a Python handler back to SIG_DFL, as exec (or CLONE_CLEAR_SIGHAND)
    resets caught signals."""
    for signum in ALL_SIGNALS:
        try:
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass


def exit_child(runner: Callable[[], int]) -> NoReturn:
    """The fork backend's child main: ``runner()``, then ``os._exit`` with its status.

    The native backends do this in C, where nothing can interrupt it.  In Python, a
    signal handler may raise between any two instructions while signals are unblocked;
    ``runner`` blocks them as its last step, and :func:`_exit_levels` nests enough
    ``try``/``finally`` levels that the handlers of signals which arrived before the
    block (at most one per signal number) cannot get past an ``os._exit``.
    """
    code = 1
    try:
        code = runner()
    finally:
        _exit_levels(code, signal.NSIG)


def _exit_levels(code: int, depth: int) -> NoReturn:
    """Block signals, run pending handlers, flush stdio, ``os._exit(code)``.  An exception
    raised anywhere below level ``depth`` ends in that level's ``finally``: one more
    pending handler is needed per level to get out."""
    try:
        if depth > 0:
            _exit_levels(code, depth - 1)
        block_signals()
        code = _drain_handlers(code)
        code = _flush_at_exit(code)
    finally:
        os._exit(code)


def _drain_handlers(code: int) -> int:
    """With signals blocked: run the handlers of signals that arrived before, reporting
    what they raise as uncaught exceptions (status 1)."""
    for _ in range(2 * signal.NSIG):
        try:
            pthread_sigmask(SIG_BLOCK, ())  # runs pending handlers
            return code
        except SystemExit as e:
            code = exit_code(e.code)
        except BaseException:
            code = 1
            try:
                print_exc()
            except BaseException:
                pass
    return code


def _flush_at_exit(code: int) -> int:
    """Flush stdio as the interpreter does at exit: a failure is reported and gives 120."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except BaseException:
            code = 120
            if stream is sys.stdout:
                try:
                    print_exc()
                except BaseException:
                    pass
    return code
