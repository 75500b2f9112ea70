"""The leak check and the load check that tests/test_reliability.py runs small and
``python bench/soak.py`` runs full size (bench/results-soak.txt).

- cycles: N clone() + wait and N spawn() + wait cycles, after a warm-up; open fds,
  threads, zombie children, Python's allocated blocks, bytes in use by malloc (glibc's
  mallinfo) and RSS, before, halfway and after.  A leak grows both halves alike, a
  one-off step (a cache filled once) only one, so the smaller half is the leak figure.
  Blocks and malloc bytes are the measures: RSS also moves with the page cache and
  misses a leaked buffer nobody wrote to; it is reported, not judged.
- load: T threads, each R rounds of one clone() and one spawn() with an exit status of
  its own, concurrently; every status is checked, every child accounted for, no thread
  may hang.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import portclone

SH = "/bin/sh"


# -- what the process holds --------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # the listing's own fd


def threads() -> int:
    return (
        threading.active_count()
        if not os.path.exists("/proc/self/task")
        else len(os.listdir("/proc/self/task"))
    )


def children() -> List[int]:
    kids: List[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                kids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return kids


def zombies() -> int:
    count = 0
    for pid in children():
        try:
            with open(f"/proc/{pid}/stat") as f:
                count += f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            pass
    return count


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _mallinfo() -> Optional[Callable[[], int]]:
    """glibc's bytes in use by malloc (``uordblks``): mallinfo2 (2.33+), else mallinfo,
    whose int fields wrap at 4 GiB (harmless for the differences taken here)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    for name, word in (("mallinfo2", ctypes.c_size_t), ("mallinfo", ctypes.c_uint)):
        fn = getattr(libc, name, None)
        if fn is not None:
            fields = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
            fn.restype = type(name, (ctypes.Structure,), {"_fields_": [(f, word) for f in fields.split()]})
            return lambda: int(fn().uordblks)
    return None  # not glibc (musl, the BSDs): reported as 0


_malloc_in_use = _mallinfo()


def snapshot() -> Dict[str, int]:
    gc.collect()  # garbage awaiting the collector is not a leak
    return {
        "fds": open_fds(),
        "threads": threads(),
        "children": len(children()),
        "zombies": zombies(),
        "blocks": sys.getallocatedblocks(),
        "malloc_kib": _malloc_in_use() // 1024 if _malloc_in_use else 0,
        "rss_kib": rss_kib(),
    }


# -- cycles -------------------------------------------------------------------------------


def exit_with(code: int) -> int:
    return code


def one_clone(code: int) -> None:
    with portclone.clone(exit_with, code) as child:
        got = child.wait(timeout=60)
    if got != code:
        raise AssertionError(f"clone child {child.pid} exited {got}, expected {code}")


def one_spawn(code: int) -> None:
    with portclone.spawn([SH, "-c", f"exit {code}"]) as child:
        got = child.wait(timeout=60)
    if got != code:
        raise AssertionError(f"spawned {child.pid} exited {got}, expected {code}")


COUNTS = ("fds", "threads", "children", "zombies")  # must not change at all
# what half of the cycles may add, per cycle (one clone and one spawn): a leaked object
# per child or 128 malloc bytes per child passes these in both halves
LIMITS = {"blocks": 0.5, "malloc_kib": 0.125}


@dataclass
class Cycles:
    count: int
    before: Dict[str, int]
    halfway: Dict[str, int]
    after: Dict[str, int]
    seconds: float

    def growth(self) -> Dict[str, int]:
        return {k: self.after[k] - self.before[k] for k in self.before}

    def steady_growth(self, key: str) -> int:
        """The smaller half's growth: what every ``count / 2`` cycles add."""
        return min(self.halfway[key] - self.before[key], self.after[key] - self.halfway[key])

    def leaks(self) -> Dict[str, int]:
        """What leaked: any change in COUNTS, or a half's growth at or over LIMITS."""
        found = {k: self.after[k] - self.before[k] for k in COUNTS if self.after[k] != self.before[k]}
        found.update(
            {
                k: self.steady_growth(k)
                for k, per_cycle in LIMITS.items()
                if self.steady_growth(k) >= per_cycle * self.count / 2
            }
        )
        return found


def cycles(count: int, warmup: int = 200) -> Cycles:
    """``count`` clone()+wait and ``count`` spawn()+wait cycles, after ``warmup`` of each."""
    for i in range(warmup):
        one_clone(i % 256)
        one_spawn(i % 256)
    before = snapshot()
    start = time.monotonic()
    halfway = before
    for i in range(count):
        if i == count // 2:
            halfway = snapshot()
        one_clone(i % 256)
        one_spawn(i % 256)
    seconds = time.monotonic() - start
    return Cycles(count, before, halfway, snapshot(), seconds)


# -- load ---------------------------------------------------------------------------------


@dataclass
class Load:
    threads: int
    rounds: int
    children: int = 0
    errors: List[str] = field(default_factory=list)
    hung: int = 0
    seconds: float = 0.0
    after: Dict[str, int] = field(default_factory=dict)


def load(nthreads: int, rounds: int, deadline: float = 1200) -> Load:
    """``nthreads`` threads cloning and spawning concurrently, ``rounds`` rounds each."""
    result = Load(nthreads, rounds)
    lock = threading.Lock()
    stop = time.monotonic() + deadline

    def worker(n: int) -> None:
        for r in range(rounds):
            if time.monotonic() > stop:
                with lock:
                    result.errors.append(f"thread {n}: deadline reached at round {r}")
                return
            code = (n * 31 + r) % 256
            try:
                one_clone(code)
                one_spawn((code + 1) % 256)
            except Exception as e:  # counted, not hidden: the run fails on any
                with lock:
                    result.errors.append(f"thread {n} round {r}: {type(e).__name__}: {e}")
                continue
            with lock:
                result.children += 2

    start = time.monotonic()
    with warnings.catch_warnings():  # multi-threaded fork: expected here
        warnings.simplefilter("ignore", DeprecationWarning)
        workers = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(nthreads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(max(0.0, stop - time.monotonic()) + 60)
    result.hung = sum(t.is_alive() for t in workers)
    result.seconds = time.monotonic() - start
    result.after = snapshot()
    return result
