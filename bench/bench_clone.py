"""Create and reap a trivial child: portclone.clone() against os.fork and friends.

All methods run in one process, interleaved in a shuffled order each round, at
each parent size; the table reports medians and ratios against os.fork.  A
fork-like child costs O(parent memory) whatever the API (page tables are
copied), so the claim is "clone() costs what os.fork costs", at every size.

    python bench/bench_clone.py                  # 50 MB and 1 GB parents
    python bench/bench_clone.py --sizes 50M,1G,4G --rounds 100
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

import portclone

TRUE = "/bin/true"


def fork_exit() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def noop() -> None:
    return None


def fork_fn() -> None:
    """What any API that runs a Python callable in a fork child must do at least."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            noop()
            code = 0
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.waitpid(pid, 0)


def mp_process() -> None:
    proc = _mp.Process(target=noop)
    proc.start()
    proc.join()


def portclone_plain() -> None:
    child = portclone.clone(noop)
    child.wait()
    child.close()


def portclone_clone3() -> None:
    # CLONE_UNTRACED changes nothing for an untraced parent: it only forces the raw
    # clone3 path (no libc fork), so this is the cost of the syscall path itself.
    child = portclone.clone(noop, flags=portclone.CLONE_UNTRACED)
    child.wait()
    child.close()


def posix_spawn_true() -> None:
    pid = os.posix_spawn(TRUE, [TRUE], {})
    os.waitpid(pid, 0)


def subprocess_true() -> None:
    subprocess.run([TRUE], check=True)


_mp = multiprocessing.get_context("fork")

METHODS: Dict[str, Callable[[], None]] = {
    "os.fork + os._exit": fork_exit,
    "os.fork + fn() + flush + os._exit": fork_fn,
    "multiprocessing.Process (fork)": mp_process,
    "portclone.clone(fn)": portclone_plain,
    "portclone.clone(fn, flags=CLONE_UNTRACED) [clone3]": portclone_clone3,
    "os.posix_spawn(/bin/true)": posix_spawn_true,
    "subprocess.run([/bin/true])": subprocess_true,
}
BASELINE = "os.fork + os._exit"


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def occupy(size: int) -> bytearray:
    """Parent memory that is really there: every page touched."""
    buf = bytearray(size)
    buf[::4096] = b"\x01" * len(range(0, size, 4096))
    return buf


def header(script: str, args: argparse.Namespace, extra: str = "") -> None:
    """Where and how the figures were made, and the command that makes them again."""
    print(f"portclone {portclone.__version__}, backend {portclone.current_backend().name}, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()} "
          f"{platform.machine()}, {os.cpu_count()} CPUs{extra}")
    print(f"command: python bench/{script} --sizes {args.sizes}"
          + (f" --rounds {args.rounds}" if args.rounds else ""))
    print()


def measure(methods: Dict[str, Callable[[], None]], rounds: int) -> Dict[str, List[float]]:
    """Milliseconds per call of each method, interleaved in a new random order each round."""
    times: Dict[str, List[float]] = {name: [] for name in methods}
    names = list(methods)
    for fn in methods.values():  # warm up every path once
        fn()
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            start = time.perf_counter()
            methods[name]()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50M,1G", help="parent sizes (default 50M,1G)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="rounds per size (default: 200 up to 100 MB, 40 above)")
    args = parser.parse_args()
    header("bench_clone.py", args)
    print("| parent | method | median ms | p90 ms | vs os.fork |")
    print("| --- | --- | --- | --- | --- |")
    for text in args.sizes.split(","):
        size = parse_size(text)
        ballast = occupy(size)
        rounds = args.rounds or (200 if size <= 100 << 20 else 40)
        times = measure(METHODS, rounds)
        base = statistics.median(times[BASELINE])
        for name, samples in times.items():
            med = statistics.median(samples)
            p90 = sorted(samples)[int(len(samples) * 0.9) - 1]
            print(f"| {text} | {name} | {med:.3f} | {p90:.3f} | {med / base:.3f}x |")
        del ballast
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
