"""Process helpers that a test's own child interpreters import as well as the suite.

Nothing here imports pytest or the suite's conftest: a child interpreter that imported
conftest paid for pytest's import, a third of a second of CPU here and seconds in an emulated
guest, once per test that starts one.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Dict, List, Optional, Set


def children() -> Set[str]:
    """This process's children (zombies too): from /proc, else from ps(1) (macOS, BSDs),
    else (Linux without /proc, where ps needs it) the exited ones waitid() can see."""
    if not os.path.isdir("/proc/self/task"):
        out = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True)
        if out.returncode == 0:
            me = str(os.getpid())
            return {
                pid for pid, ppid in (line.split() for line in out.stdout.splitlines()) if ppid == me
            }  # ps itself was reaped by run() already
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return set()
        return {str(info.si_pid)} if info is not None else set()
    kids = set()
    for tid in os.listdir("/proc/self/task"):  # /proc/self: right in any PID namespace
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                kids.update(f.read().split())
        except OSError:
            pass
    return kids  # pids as /proc names them: compared only with each other


#: /proc/PID/stat's flag of a task in do_exit (include/linux/sched.h)
PF_EXITING = 0x00000004


def live_children() -> Dict[str, str]:
    """This process's children that have not exited, by their pid as /proc names it, with
    their state and command line.  Zombies are not counted: a dropped Child is reaped
    by portclone at its next call, not by the test.  Empty without /proc."""
    found: Dict[str, str] = {}
    if not os.path.isdir("/proc/self/task"):
        return found
    for seen in children():
        try:
            with open(f"/proc/{seen}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{seen}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            state, flags = fields[0], int(fields[6])
        except (OSError, IndexError, ValueError):
            continue  # reaped meanwhile
        # a child already exiting (killed as --kill-child's, an orphan given to this process
        # when it is a namespace's init) is no more running than a zombie
        if state != "Z" and not flags & PF_EXITING:
            found[seen] = f"state {state}: {command[:200]}"
    return found


class Strangers:
    """Processes another thread forks without pause, each holding every fd open at its
    fork, until the call it overlapped is over: ``call_done()`` lets go those forked so far
    (a pipe per generation: they wait for its EOF).  A call that waits for one of its own
    strangers therefore never returns, whatever the machine's pace.  At most one call's
    worth of strangers lives at a time, and no more than ``max_live`` (a hang must not fill
    an emulated guest's memory); ``release`` is idempotent, and says who let the last
    generation go."""

    def __init__(self, max_live: int = 64) -> None:
        #: a fork of a big process (pytest's own) holds its pages copy-on-write: each page
        #: the parent writes meanwhile is copied once per live stranger
        self.max_live = max_live
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.count = 0
        self.released_by: Optional[str] = None
        self._pids: List[int] = []
        self._live = 0  # in the current generation
        self._r, self._w = os.pipe()
        self._thread = threading.Thread(target=self._fork, daemon=True)

    def __enter__(self) -> Strangers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join()
        self.release("the test")
        self._reap(block=True)

    def _fork(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                if self._w < 0:
                    return
                if self._live < self.max_live:
                    pid = os.fork()
                    if pid == 0:  # the child has this thread only: the fds are its copies
                        os.close(self._w)
                        os.read(self._r, 1)  # EOF: this generation is let go
                        os._exit(0)
                    self._pids.append(pid)
                    self.count += 1
                    self._live += 1
            time.sleep(0.001)  # pacing only

    def call_done(self) -> None:
        """The call in progress returned: its strangers may go; the next call gets new ones."""
        with self.lock:
            if self._w < 0:
                return
            os.close(self._w)
            os.close(self._r)
            self._r, self._w = os.pipe()
            self._live = 0
        self._reap(block=False)

    def release(self, by: str) -> None:
        with self.lock:
            if self._w >= 0:
                os.close(self._w)
                os.close(self._r)
                self._r = self._w = -1
                self.released_by = by

    def _reap(self, block: bool) -> None:
        for pid in list(self._pids):
            if os.waitpid(pid, 0 if block else os.WNOHANG)[0]:
                self._pids.remove(pid)
