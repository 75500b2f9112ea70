"""``Child.communicate``: feed stdin, drain stdout/stderr, wait; resumable like subprocess.

What one exchange has done so far lives in an :class:`Exchange` kept on the Child, so a
call cut short by ``TimeoutExpired`` or by an exception from a signal handler
(KeyboardInterrupt) can be repeated and returns everything (subprocess keeps the same
state in ``_fileobj2output`` and ``_input_offset``).

Nothing read or written may be lost to such an exception.  Python runs signal handlers
between bytecodes, including right after a call such as ``os.read`` returns, so
``data = os.read(...)`` can lose ``data``.  Here each read and write is recorded by
``list.extend(map(os.read, ...))``: the call and the append happen inside one C call, with
no bytecode between them, so the result is either recorded or never happened.
"""

from __future__ import annotations

import os
import selectors
import time

from ._common import TYPE_CHECKING
from ._errors import TimeoutExpired

if TYPE_CHECKING:
    from typing import IO, List, Optional, Tuple

    from ._child import Child

__all__ = ["Exchange", "communicate"]

_CHUNK = 65536


class Exchange:
    """The state of one child's communicate(), kept between calls."""

    __slots__ = ("err", "input", "out", "source", "stderr", "stdin", "stdout", "written")

    def __init__(self, child: Child, data: Optional[bytes]) -> None:
        self.stdin = child.stdin
        self.stdout = child.stdout
        self.stderr = child.stderr
        #: the caller's input object: a retry may pass it again
        self.source = data
        self.input = memoryview(data or b"").cast("B")
        #: bytes of input written so far: the sum of this list (see _send)
        self.written: List[int] = [0]
        #: what was read, chunk by chunk; a final b"" marks EOF
        self.out: Optional[List[bytes]] = [] if self.stdout is not None else None
        self.err: Optional[List[bytes]] = [] if self.stderr is not None else None

    def result(self) -> Tuple[Optional[bytes], Optional[bytes]]:
        return (
            None if self.out is None else b"".join(self.out),
            None if self.err is None else b"".join(self.err),
        )


def communicate(
    child: Child, data: Optional[bytes], timeout: Optional[float]
) -> Tuple[Optional[bytes], Optional[bytes]]:
    deadline = None if timeout is None else time.monotonic() + timeout
    state = child._exchange
    if state is None:
        if data and child.stdin is None:  # subprocess drops it silently
            raise ValueError("communicate(input=...) needs a child started with stdin=PIPE")
        if child.stdin is not None and not child.stdin.closed:
            try:
                child.stdin.flush()  # what the caller wrote to child.stdin goes first
            except BrokenPipeError:
                pass
        child._exchange = state = Exchange(child, data)
    elif data and data is not state.source:
        # The same object again is a retry: an interrupt can come before the caller
        # can know whether the exchange (and the input with it) was taken on.
        raise ValueError("cannot send other input after starting communication")

    with selectors.DefaultSelector() as selector:
        stdin = state.stdin
        if stdin is not None and not stdin.closed:
            if sum(state.written) < len(state.input):
                os.set_blocking(stdin.fileno(), False)  # write what the pipe takes, never wait
                selector.register(stdin, selectors.EVENT_WRITE)
            else:
                _close(stdin)
        for stream, chunks in ((state.stdout, state.out), (state.stderr, state.err)):
            if stream is None or chunks is None or stream.closed:
                continue
            if chunks and not chunks[-1]:
                stream.close()  # EOF was read before an interrupt
            else:
                selector.register(stream, selectors.EVENT_READ)

        while selector.get_map():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise _timeout(child, state, timeout)
            for key, _ in selector.select(remaining):
                if key.fileobj is stdin:
                    assert stdin is not None
                    if _send(key.fd, state):
                        selector.unregister(stdin)
                        _close(stdin)
                    continue
                chunks = state.out if key.fileobj is state.stdout else state.err
                assert chunks is not None
                chunks.extend(map(os.read, (key.fd,), (_CHUNK,)))
                if not chunks[-1]:
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]

    if deadline is None:
        child.wait()
    else:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except TimeoutExpired:
            raise _timeout(child, state, timeout) from None
    return state.result()


def _send(fd: int, state: Exchange) -> bool:
    """Write what the (non-blocking) pipe takes now; True once done or the reader is gone."""
    written = state.written
    offset = sum(written)
    try:
        written.extend(map(os.write, (fd,), (state.input[offset : offset + _CHUNK],)))
    except BlockingIOError:
        return False  # full again already (the program shares the pipe with another writer)
    except BrokenPipeError:
        return True  # the program stopped reading: as subprocess, that is not an error
    # One store replaces the list's items: the sum is right at every bytecode boundary.
    written[:] = [sum(written)]
    return written[0] >= len(state.input)


def _close(stream: IO[bytes]) -> None:
    try:
        stream.close()
    except BrokenPipeError:
        pass


def _timeout(child: Child, state: Exchange, timeout: Optional[float]) -> TimeoutExpired:
    """TimeoutExpired carrying the output so far, as subprocess's does."""
    error = TimeoutExpired(child.pid, timeout or 0.0)
    error.stdout, error.stderr = state.result()
    return error
