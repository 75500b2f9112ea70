"""The ``Child`` handle every backend returns, and the code a Python child runs."""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
import traceback
import warnings
from typing import IO, Any, Callable, List, NoReturn, Optional, Tuple

from ._communicate import Exchange
from ._communicate import communicate as _communicate
from ._errors import TimeoutExpired
from ._flags import SIGCHLD, CloneFlags

__all__ = ["Child", "run_child", "flush_std_streams", "reap_orphans"]

#: Wait for children whatever their exit signal: a child whose exit signal is not
#: SIGCHLD is invisible to a plain waitpid.  Linux's __WALL; NetBSD's WALLSIG
#: (NetBSDfr/NetBSD-src:sys/sys/wait.h).
if sys.platform.startswith("linux"):
    WALL = 0x40000000
elif sys.platform.startswith("netbsd"):
    WALL = 0x00000008
else:
    WALL = 0

# Pids of Child objects collected while their process still ran; reaped
# without blocking on the next clone() (subprocess._cleanup does the same).
_orphans: List[Tuple[int, int]] = []
_orphans_lock = threading.Lock()


def reap_orphans() -> None:
    if not _orphans:
        return
    with _orphans_lock:
        for entry in list(_orphans):
            pid, options = entry
            try:
                done, _ = os.waitpid(pid, os.WNOHANG | options)
            except ChildProcessError:
                done = pid
            if done:
                _orphans.remove(entry)


class Child:
    """A child process created by :func:`portclone.clone` (or ``spawn``).

    Like :class:`subprocess.Popen`: ``returncode`` is None while the child
    runs, its exit code once reaped, ``-N`` when signal N killed it.
    ``pidfd`` is a close-on-exec pidfd where the kernel gives one, else None;
    signals go through it, so they can never hit a recycled pid.
    """

    # Slots keep the handle small: it is built on every clone(), and each page the
    # parent writes around a fork costs a page fault (see Backend.__init__).  For the
    # same reason the reaping lock is made here, before the fork, and wait() and
    # close() do as little as they can in the common case: the parent runs them while
    # a fork-like child still shares its pages, so every page they write is copied.
    __slots__ = (
        "__weakref__",
        "_exchange",
        "_lock",
        "_owner",
        "args",
        "backend",
        "exit_signal",
        "flags",
        "pid",
        "pidfd",
        "reapable",
        "returncode",
        "stderr",
        "stdin",
        "stdout",
        "syscall",
    )

    def __init__(
        self,
        pid: int,
        pidfd: Optional[int],
        flags: int = 0,
        exit_signal: int = SIGCHLD,
        backend: str = "",
        syscall: str = "",
        reapable: bool = True,
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.flags = flags if type(flags) is CloneFlags else CloneFlags(flags)
        self.exit_signal = exit_signal
        #: the backend that made the child
        self.backend = backend
        #: the call that made it: ``fork``, ``clone3`` or ``clone``
        self.syscall = syscall
        #: False for CLONE_PARENT children: their exit status goes to our parent
        self.reapable = reapable
        self.returncode: Optional[int] = None
        #: spawn() children: our ends of stdin/stdout/stderr=PIPE (binary file objects)
        self.stdin: Optional[IO[bytes]] = None
        self.stdout: Optional[IO[bytes]] = None
        self.stderr: Optional[IO[bytes]] = None
        #: spawn() children: the argv the program got
        self.args: Optional[Tuple[bytes, ...]] = None
        self._owner = os.getpid()
        self._lock = threading.Lock()  # one waitpid at a time: a second would see ECHILD
        self._exchange: Optional[Exchange] = None  # communicate()'s progress, between calls

    def __repr__(self) -> str:
        return (f"<portclone.Child pid={self.pid} returncode={self.returncode} "
                f"flags={self.flags} backend={self.backend}>")

    # -- reaping ---------------------------------------------------------
    def _not_reapable(self) -> ChildProcessError:
        return ChildProcessError(
            f"child {self.pid} was created with CLONE_PARENT: it is a child of pid "
            f"{os.getppid()}, which receives its exit status; watch child.pidfd for its exit")

    def _reap(self, block: bool) -> bool:
        """Try to collect the exit status; True once returncode is set."""
        lock = self._lock
        if not lock.acquire(block):
            return False
        try:
            while self.returncode is None:
                options = WALL | (0 if block else os.WNOHANG)
                try:
                    pid, status = os.waitpid(self.pid, options)
                except ChildProcessError:
                    # SIGCHLD is ignored or somebody else reaped it: the status is
                    # lost.  subprocess reports 0 in this case; so do we.
                    self.returncode = 0
                    break
                if pid == 0:
                    return False
                if os.WIFSTOPPED(status):  # a ptrace or job-control stop, not an exit
                    if not block:
                        return False
                    continue
                self.returncode = os.waitstatus_to_exitcode(status)
            return True
        finally:
            lock.release()

    def poll(self) -> Optional[int]:
        """The returncode if the child has exited, else None; never blocks."""
        if self.returncode is None:
            if not self.reapable:
                raise self._not_reapable()
            self._reap(block=False)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the child to exit and return its returncode.

        Raises :class:`portclone.TimeoutExpired` when ``timeout`` seconds pass
        first; the child keeps running.  Signals interrupting the wait are
        retried (PEP 475).
        """
        if self.returncode is not None:
            return self.returncode
        if not self.reapable:
            raise self._not_reapable()
        if timeout is None:
            self._reap(block=True)
        else:
            self._wait_until(time.monotonic() + timeout, timeout)
        assert self.returncode is not None
        return self.returncode

    def _wait_until(self, deadline: float, timeout: float) -> None:
        poller = None
        if self.pidfd is not None:  # readable once the child has exited
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
        delay = 0.0005
        while not self._reap(block=False):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutExpired(self.pid, timeout)
            if poller is not None:
                poller.poll(max(1, min(remaining, 0.05) * 1000))
            else:
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.05)

    # -- signals -----------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        """Send ``sig``; does nothing once the child has been reaped."""
        if self.returncode is not None:
            return
        try:
            if sys.platform == "linux" and self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass  # exited and reaped meanwhile

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    # -- resources -----------------------------------------------------------
    def communicate(self, input: Optional[bytes] = None,
                    timeout: Optional[float] = None) -> Tuple[Optional[bytes], Optional[bytes]]:
        """Send ``input`` to stdin=PIPE, read stdout/stderr=PIPE to EOF, wait for the exit.

        Returns ``(stdout, stderr)`` (None for streams that are not pipes).  ``input``
        without stdin=PIPE is a ValueError (subprocess would drop it silently).  As with
        subprocess, :class:`TimeoutExpired` leaves the child running, and so does an
        exception from a signal handler (KeyboardInterrupt): call ``communicate()`` again,
        with no ``input`` or the same ``input`` object, to go on; it returns all the
        output, none lost, and sends the input once.  The TimeoutExpired carries the output
        so far in ``.stdout`` and ``.stderr``.
        """
        return _communicate(self, input, timeout)

    def close(self) -> None:
        """Close the pidfd and our ends of any pipes.  The child is not waited for."""
        if self.stdin is not None or self.stdout is not None or self.stderr is not None:
            for name in ("stdin", "stdout", "stderr"):
                stream = getattr(self, name)
                if stream is not None:
                    setattr(self, name, None)
                    try:
                        stream.close()
                    except OSError:
                        pass
        fd = self.pidfd
        if fd is not None:
            self.pidfd = None
            if os.getpid() == self._owner:
                os.close(fd)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.stdin is not None:  # as subprocess: let the program see EOF first
                try:
                    self.stdin.close()
                except OSError:
                    pass
                self.stdin = None
            if self.reapable:
                self.wait()
        finally:
            self.close()

    def __del__(self) -> None:
        try:
            if (self.returncode is not None and self.pidfd is None and self.stdin is None
                    and self.stdout is None and self.stderr is None):
                return  # waited for and closed: the common case, nothing to do
        except AttributeError:
            return  # __init__ did not finish: nothing was opened
        if self._owner != os.getpid():
            return  # a copy inherited by a child process: not ours to touch
        if self.returncode is None and self.reapable and self.pid > 0:
            try:
                if not self._reap(block=False):
                    warnings.warn(f"child process {self.pid} is still running",
                                  ResourceWarning, source=self, stacklevel=2)
                    with _orphans_lock:
                        _orphans.append((self.pid, WALL))
            except Exception:
                pass
        self.close()


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


def run_child(fn: Callable[..., object], args: Tuple[Any, ...], kwargs: dict,  # type: ignore[type-arg]
              prepare: Optional[Callable[[], None]] = None) -> NoReturn:
    """Run ``fn`` in the new child and end the process as ``sys.exit`` would.

    Never returns: whatever happens, the child leaves through ``os._exit`` and
    never runs the caller's code after clone().
    """
    code = 1
    try:
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
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
        code = 1
    finally:
        flush_std_streams()
        os._exit(code)
