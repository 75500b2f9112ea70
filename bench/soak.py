"""Leaks and load: portclone's reliability figures (README, "Reliability").

Two runs, each bounded by timeouts and stopping by itself:

- cycles: N clone() + wait and N spawn() + wait cycles, after a warm-up;
  open fds, threads, zombie children and RSS before and after.
- load: T threads, each R rounds of one clone() and one spawn() with an exit
  status of its own, concurrently; every status is checked, every child
  accounted for, no thread may hang.

    python bench/soak.py                                  # 10,000 cycles, 8 threads x 1,000
    python bench/soak.py --cycles 1000 --threads 4 --rounds 100

tests/test_reliability.py runs the same functions with small counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List

import portclone

SH = "/bin/sh"


# -- what the process holds --------------------------------------------------------------

def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # the listing's own fd


def threads() -> int:
    return threading.active_count() if not os.path.exists("/proc/self/task") else len(
        os.listdir("/proc/self/task"))


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


def snapshot() -> Dict[str, int]:
    return {"fds": open_fds(), "threads": threads(), "children": len(children()),
            "zombies": zombies(), "rss_kib": rss_kib()}


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


@dataclass
class Cycles:
    count: int
    before: Dict[str, int]
    after: Dict[str, int]
    seconds: float

    def growth(self) -> Dict[str, int]:
        return {k: self.after[k] - self.before[k] for k in self.before}


def cycles(count: int, warmup: int = 200) -> Cycles:
    """``count`` clone()+wait and ``count`` spawn()+wait cycles, after ``warmup`` of each."""
    for i in range(warmup):
        one_clone(i % 256)
        one_spawn(i % 256)
    before = snapshot()
    start = time.monotonic()
    for i in range(count):
        one_clone(i % 256)
        one_spawn(i % 256)
    seconds = time.monotonic() - start
    return Cycles(count, before, snapshot(), seconds)


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
        workers = [threading.Thread(target=worker, args=(n,), daemon=True)
                   for n in range(nthreads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(max(0.0, stop - time.monotonic()) + 60)
    result.hung = sum(t.is_alive() for t in workers)
    result.seconds = time.monotonic() - start
    result.after = snapshot()
    return result


# -- the report ---------------------------------------------------------------------------

def report(c: Cycles, ld: Load) -> str:
    lines = [
        f"portclone {portclone.__version__}, backend {portclone.current_backend().name}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs",
        f"command: python bench/soak.py {' '.join(sys.argv[1:])}".rstrip(),
        "",
        f"cycles: {c.count:,} clone()+wait and {c.count:,} spawn()+wait in {c.seconds:.0f} s "
        "(after 200 warm-up cycles of each)",
        "",
        "| | before | after | change |",
        "| --- | --- | --- | --- |",
    ]
    for key, grew in c.growth().items():
        lines.append(f"| {key} | {c.before[key]:,} | {c.after[key]:,} | {grew:+,} |")
    lines += [
        "",
        f"load: {ld.threads} threads x {ld.rounds:,} rounds (one clone() and one spawn() each) "
        f"in {ld.seconds:.0f} s: {ld.children:,} children with the right exit status, "
        f"{len(ld.errors)} errors, {ld.hung} hung threads; afterwards {ld.after['children']} "
        f"children, {ld.after['zombies']} zombies, {ld.after['threads']} threads",
    ]
    lines += [f"  error: {e}" for e in ld.errors[:20]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1_000)
    args = parser.parse_args()
    c = cycles(args.cycles)
    ld = load(args.threads, args.rounds)
    print(report(c, ld))
    leaked = {k: v for k, v in c.growth().items() if k != "rss_kib" and v}
    ok = not leaked and not ld.errors and not ld.hung and ld.after["zombies"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
