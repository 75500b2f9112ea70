"""The ``Child`` handle every backend returns, and the reaping of children whose handle is gone."""

from __future__ import annotations

import _thread
import errno
import os
import select
import signal
import threading
import time
import warnings
import weakref

from ._common import LINUX, MACOS, NETBSD, TYPE_CHECKING
from ._communicate import Exchange
from ._communicate import communicate as _communicate
from ._errors import TimeoutExpired
from ._flags import SIGCHLD, CloneFlags

if TYPE_CHECKING:
    from typing import IO, Any, Callable, ClassVar, Dict, NoReturn, Optional, Tuple

__all__ = ["Child", "reap_orphans", "register"]

#: Wait for children whatever their exit signal: a child whose exit signal is not
#: SIGCHLD is invisible to a plain waitpid.  Linux's __WALL; NetBSD's WALLSIG
#: (NetBSDfr/NetBSD-src:sys/sys/wait.h).
if LINUX:
    WALL = 0x40000000
elif NETBSD:
    WALL = 0x00000008
else:
    WALL = 0

#: threading.RLock() without its Python wrapper (one frame less per Child: see Child)
_RLock: Callable[[], Any] = getattr(_thread, "RLock", None) or threading.RLock

# Read once (every wait() asks): the platform cannot change under a running process.
_WAITID: Any = getattr(os, "waitid", None)  # macOS has none
_NO_WAITID = MACOS or _WAITID is None

#: pid -> (weak reference to the Child that owns it, the pidfd's owner or None), for every
#: child not yet reaped.  The native backends add the entry in C as the child is born,
#: before any Python code can run, so a Child that is collected at any moment (even with
#: its __del__ interrupted by a signal handler) is still found: reap_orphans() reaps
#: those whose Child is gone, without blocking, on the next clone() or spawn() (as
#: subprocess._cleanup does), through the pidfd where there is one, so never a process
#: that got the pid after something else reaped the child.  The entry keeps the pidfd
#: open until then.  A pid is only reused once it is reaped, and the newest child with a
#: pid replaces the entry.  No lock: dict operations are atomic under the GIL, and a
#: handler or finalizer may run while this code does.
_live: Dict[int, Tuple[weakref.ref[Child], Any]] = {}


class _Fd:
    """An fd that closes once (wait_async's duplicate of a pidfd)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


def _wait_for(pid: int, owner: Any, options: int) -> Optional[Tuple[int, int]]:
    """waitid() on the child: None (WNOHANG, still running) or (si_code, si_status).

    Through its pidfd (the owner's: see _pidfd_owner.c, PidfdOwner) where there is one, which
    cannot reach a process that got the pid after something else reaped the child; by
    pid otherwise, and on kernels without P_PIDFD (5.3).
    """
    if MACOS:  # callers check: macOS' Python has no waitid
        raise NotImplementedError("waitid")
    if owner is not None and LINUX:
        try:
            found: Optional[Tuple[int, int]] = owner.waitid(options)
            return found
        except ValueError:  # closed: portclone reaped it
            raise ChildProcessError(errno.ECHILD, "the child was reaped") from None
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    info = _WAITID(os.P_PID, pid, options)
    return None if info is None else (info.si_code, info.si_status)


def _peek(pid: int, block: bool, owner: Any = None) -> Optional[int]:
    """The exit status of child ``pid`` (returncode form), leaving it unreaped; None if it
    still runs (only when not ``block``).  Without waitid (macOS' Python) the status is read
    by reaping: a later send_signal by pid then relies on the reaper's lock alone."""
    if _NO_WAITID:
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if done else None
    found = _wait_for(pid, owner, os.WEXITED | os.WNOWAIT | WALL | (0 if block else os.WNOHANG))
    if found is None:
        return None
    code, status = found
    return status if code == os.CLD_EXITED else -status


def _reap_now(pid: int, owner: Any) -> bool:
    """Reap child ``pid`` if it has exited (without blocking); True once it is gone."""
    try:
        if _NO_WAITID:
            return os.waitpid(pid, os.WNOHANG | WALL)[0] != 0
        return _wait_for(pid, owner, os.WEXITED | os.WNOHANG | WALL) is not None
    except ChildProcessError:
        return True  # reaped already (by us, or by something else)


def register(child: Child) -> None:
    """Make ``child`` known to reap_orphans (the fork backend; _native does it in C)."""
    _live[child.pid] = (weakref.ref(child), None)


def _discard(pid: int, entry: Tuple[weakref.ref[Child], Any]) -> bool:
    """Remove ``_live[pid]`` if it is ``entry``; False if another thread removed it first.
    One dict.pop decides (atomic under the GIL and without it): a check, then a ``del``,
    would let two threads that both saw the entry both delete it.  An entry found that is
    not ``entry`` (a new child with the reused pid) is put back."""
    found = _live.pop(pid, None)
    if found is None:
        return False
    if found is not entry:
        _live.setdefault(pid, found)
        return False
    return True


def reap_orphans() -> None:
    """Reap, without blocking, the exited children whose Child is gone (see _live)."""
    if not _live:
        return
    for pid, entry in list(_live.items()):
        ref, owner = entry
        if ref() is None and _reap_now(pid, owner) and _discard(pid, entry):
            if owner is not None:
                owner.close()


class _Process:
    """The identity of this process, renewed in every child.

    A pid cannot tell a child from its parent: a child in a new PID namespace is pid 1,
    and so may be a container's init that made it.  CPython runs at-fork hooks in every
    child portclone or os.fork makes, so a new token there tells them apart.
    """

    token = object()

    @classmethod
    def renew(cls) -> None:
        cls.token = object()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Process.renew)


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
    #: where the native backends register the children of reapable Child objects
    _registry: ClassVar[Dict[int, Tuple[weakref.ref[Child], Any]]] = _live

    __slots__ = (
        "__weakref__",
        "_closed",
        "_exchange",
        "_lock",
        "_lost",
        "_owner",
        "_pidfd_owner",
        "_status",
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
        #: the child's process id
        self.pid = pid
        #: the clone flags the child was made with
        self.flags = flags if type(flags) is CloneFlags else CloneFlags(flags)
        #: the signal the parent gets when the child ends (SIGCHLD unless asked otherwise)
        self.exit_signal = exit_signal
        #: the backend that made the child
        self.backend = backend
        #: the call that made it: ``fork``, ``clone3`` or ``clone``
        self.syscall = syscall
        #: False for CLONE_PARENT children: their exit status goes to our parent
        self.reapable = reapable
        #: spawn() children: the argv the program got
        self.args: Optional[Tuple[bytes, ...]] = None
        self._closed = False
        self._lost = False  # reaped by something else, its status gone: nothing to reap
        self._status: Optional[int] = None  # the exit status, read before the reap
        self._owner = _Process.token
        #: _native's owner of the pidfd, which closes it (see _pidfd_owner.c, PidfdOwner)
        self._pidfd_owner: Any = None
        # held while reaping (a quick waitpid) and while signalling by pid; reentrant,
        # because a signal handler may wait for or signal the same child meanwhile
        self._lock = _RLock()
        self._exchange: Optional[Exchange] = None  # communicate()'s progress, between calls
        # Last: __del__ reads these first, so an __init__ interrupted before them (a signal
        # handler can raise between any two lines) leaves nothing for __del__ to do.
        #: None while the child runs; its exit code once reaped, ``-N`` if signal N killed it
        self.returncode: Optional[int] = None
        #: a close-on-exec pidfd where the kernel gives one, else None; None after close()
        self.pidfd = pidfd
        #: spawn() children: our ends of stdin/stdout/stderr=PIPE (binary file objects)
        self.stdin: Optional[IO[bytes]] = None
        self.stdout: Optional[IO[bytes]] = None
        self.stderr: Optional[IO[bytes]] = None

    def __repr__(self) -> str:
        return (
            f"<portclone.Child pid={self.pid} returncode={self.returncode} "
            f"flags={self.flags} backend={self.backend}>"
        )

    # -- reaping ---------------------------------------------------------
    def _not_reapable(self) -> ChildProcessError:
        return ChildProcessError(
            f"child {self.pid} was created with CLONE_PARENT: it is a child of pid "
            f"{os.getppid()}, which receives its exit status; watch child.pidfd for its exit"
        )

    def _reap(self, block: bool) -> bool:
        """Try to collect the exit status; True once returncode is set.

        The status is read without reaping (waitid WNOWAIT, no lock held: several threads
        may wait at once) and kept before the zombie is reaped, under the lock that
        signalling by pid also takes: a signal handler that raises between any two steps
        loses nothing, and no pid is signalled after portclone reaped it.
        """
        while self.returncode is None:
            if self._status is None:
                try:
                    status = _peek(self.pid, block, self._pidfd_owner)
                except ChildProcessError:
                    with self._lock:  # another waiter may be between its reap and returncode
                        if self.returncode is not None:  # reaped meanwhile, by us
                            break
                    status = self._lost_status()
                if status is None:
                    return False
                if self._status is None:
                    self._status = status
            with self._lock:
                if self.returncode is None:
                    _reap_now(self.pid, self._pidfd_owner)  # reaped already: status kept
                    self.returncode = self._status
        self._forget()
        return True

    def _forget(self) -> None:
        """The child is gone: drop its registry entry and, after close(), its pidfd."""
        entry = _live.get(self.pid)
        if entry is not None and entry[0]() is self:
            _discard(self.pid, entry)  # several waiters may forget it at once
        if self._closed and self._pidfd_owner is not None:
            self._pidfd_owner.close()  # close() left it open for this reap

    def _lost_status(self) -> int:
        """The status of a child something else reaped (SIGCHLD ignored, another waiter).

        Linux 6.15 and later keep it for the pidfd (PIDFD_GET_INFO with PIDFD_INFO_EXIT).
        Without a pidfd, or on older kernels, it is lost, and ChildProcessError says so:
        subprocess reports 0 there, a success the child may never have had.
        """
        owner = self._pidfd_owner  # the pidfd stays open there after close(), until the reap
        if owner is not None and LINUX:
            status = owner.exit_status()
            if status is not None:
                return os.waitstatus_to_exitcode(status)
        self._lost = True  # close() may give the pidfd up now: no reap will need it
        self._forget()
        raise ChildProcessError(
            errno.ECHILD,
            f"child {self.pid} was reaped by something else (SIGCHLD ignored, "
            "or another waitpid/waitid) and its exit status is lost: "
            + (
                "the kernel keeps it for a pidfd only since Linux 6.15"
                if owner is not None
                else "without a pidfd nothing keeps it"
            ),
        )

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

    async def wait_async(self) -> int:
        """Await the child's exit and return its returncode, without a thread.

        Linux: the event loop watches a duplicate of the pidfd (readable once the child
        has exited).  macOS and the BSDs: a kqueue watching the pid's exit.  Elsewhere
        (no pidfd, no kqueue): polled, every 1 ms growing to 50 ms.  Cancelling the await
        leaves the child as it was: running, and waitable again.
        """
        if self.returncode is not None:
            return self.returncode
        if not self.reapable:
            raise self._not_reapable()
        import asyncio

        loop = asyncio.get_running_loop()
        watch = self._exit_watch()
        delay = 0.001
        try:
            while not self._reap(block=False):
                if watch is None:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    continue
                ready = loop.create_future()
                loop.add_reader(watch.fileno(), _resolve, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(watch.fileno())
                if not self._reap(block=False):
                    # exited, yet not reapable: another process traces it and holds the
                    # zombie; the watch stays readable, so poll from now on
                    watch.close()
                    watch = None
        finally:
            if watch is not None:
                watch.close()
        assert self.returncode is not None
        return self.returncode

    def _exit_watch(self) -> Optional[Any]:
        """Something with fileno() that is readable once the child has exited (and close()),
        or None.  Each waiter has its own: a loop watches an fd for one reader only."""
        if self.pidfd is not None:
            try:
                return _Fd(os.dup(self.pidfd))
            except OSError:
                pass  # no fd to spare: polled
        if hasattr(select, "kqueue"):
            kq = select.kqueue()
            sel: Any = select  # kevent and its constants exist where kqueue does
            try:
                kq.control([sel.kevent(self.pid, sel.KQ_FILTER_PROC, sel.KQ_EV_ADD, sel.KQ_NOTE_EXIT)], 0, 0)
            except OSError:  # exited and reaped already: _reap() sees it
                kq.close()
                return None
            return kq
        return None

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
                if poller.poll(max(1, min(remaining, 0.05) * 1000)) and not self._reap(False):
                    poller = None  # exited, but another process's tracer holds it: sleep
            else:
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.05)

    # -- signals -----------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        """Send ``sig``; does nothing once the child has been reaped.

        With a pidfd the signal can only reach this child.  Without one, it goes by pid
        while portclone holds off reaping, so only while the pid is still this child's
        (unless something other than portclone reaps children: SECURITY.md).  After
        :meth:`close` the pidfd is gone and the pid may belong to another process by
        now: ValueError.
        """
        if self.returncode is not None:
            return
        if self._closed:
            raise ValueError(
                f"child {self.pid} is closed: its pid may have been reused, "
                "so it cannot be signalled any more"
            )
        owner = self._pidfd_owner
        if owner is not None:
            # one C step: a close() meanwhile (another thread, a handler) cannot leave a
            # recycled fd number to be signalled; False: closed or reaped meanwhile
            owner.send_signal(sig)
            return
        if not self.reapable:
            raise ValueError(
                f"child {self.pid} was created with CLONE_PARENT and has no "
                "pidfd: its pid may have been reused by now"
            )
        with self._lock:  # portclone does not reap it meanwhile (see _reap)
            if self.returncode is None:  # unreaped: the pid is still this child's
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    # -- resources -----------------------------------------------------------
    def communicate(self, input: Optional[bytes] = None, timeout: Optional[float] = None) -> Tuple[Any, Any]:
        """Send ``input`` to stdin=PIPE, read stdout/stderr=PIPE to EOF, wait for the exit.

        Returns ``(stdout, stderr)``: bytes, or None for streams that are not pipes.  It is
        typed as ``subprocess.Popen.communicate`` is, so that code written for subprocess
        type-checks unchanged.  ``input``
        without stdin=PIPE is a ValueError (subprocess would drop it silently).  As with
        subprocess, :class:`TimeoutExpired` leaves the child running, and so does an
        exception from a signal handler (KeyboardInterrupt): call ``communicate()`` again,
        with no ``input`` or the same ``input`` object, to go on; it returns all the
        output, none lost, and sends the input once.  The TimeoutExpired carries the output
        so far in ``.stdout`` and ``.stderr``.
        """
        return _communicate(self, input, timeout)

    def close(self) -> None:
        """Close our ends of any pipes, and give up the pidfd.  The child is not waited for.

        ``pidfd`` is None afterwards; portclone keeps the descriptor itself until the child
        is reaped (by a later wait(), or by the next clone() or spawn() once this Child is
        gone), so that the reap goes through it and never touches a process that got the
        pid meanwhile.
        """
        if self.stdin is not None or self.stdout is not None or self.stderr is not None:
            for name in ("stdin", "stdout", "stderr"):
                stream = getattr(self, name)
                if stream is not None:
                    setattr(self, name, None)
                    try:
                        stream.close()
                    except OSError:
                        pass
        self._closed = True
        self.pidfd = None
        owner = self._pidfd_owner
        if owner is not None and (self.returncode is not None or not self.reapable or self._lost):
            owner.close()  # in C: once, and only in the process that made the child

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        # A copy would share the pidfd and the pipes, and close them when collected.
        raise TypeError("a portclone.Child cannot be copied or pickled: it owns the child's pidfd and pipes")

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
            # stderr first: __init__ sets it last, so reading it tells whether it finished
            if (
                self.stderr is None
                and self.stdout is None
                and self.stdin is None
                and self.pidfd is None
                and self.returncode is not None
            ):
                return  # waited for and closed: the common case, nothing to do
        except AttributeError:
            return  # __init__ did not finish: nothing was opened
        if self._owner is not _Process.token:
            return  # a copy inherited by a child process: not ours to touch
        if self.returncode is None and self.reapable and self.pid > 0:
            try:
                if not self._reap(block=False):  # else reap_orphans() will (see _live)
                    warnings.warn(
                        f"child process {self.pid} is still running",
                        ResourceWarning,
                        source=self,
                        stacklevel=2,
                    )
            except Exception:
                pass
        self.close()
