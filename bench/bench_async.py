"""Awaiting many children in one event loop: Child.wait_async() against asyncio's own
subprocesses, side by side in one run.

Each round starts N programs that all live at once (``sleep D``), then awaits them all;
the methods alternate round by round.  Reported: the median time from the first start
to the last reap, that time minus D (the overhead), the most threads seen while waiting
(wait_async uses none; an asyncio child watcher may use one per child), and the ratios.

    python bench/bench_async.py                  # 1,000 children, 5 rounds
    python bench/bench_async.py -n 200 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import threading
import time
from typing import Awaitable, Callable, Dict, List

import portclone

SLEEP = "0.5"


async def _await_all(waits: List[asyncio.Future[int]]) -> int:
    """Await every waiter; the most threads seen meanwhile."""
    most = threading.active_count()
    while not all(w.done() for w in waits):
        most = max(most, threading.active_count())
        await asyncio.sleep(0.01)
    assert [w.result() for w in waits] == [0] * len(waits)
    return most


async def _portclone(n: int) -> int:
    children = [portclone.spawn(["sleep", SLEEP]) for _ in range(n)]
    return await _await_all([asyncio.ensure_future(c.wait_async()) for c in children])


async def _asyncio(n: int) -> int:
    procs = [await asyncio.create_subprocess_exec("sleep", SLEEP) for _ in range(n)]
    return await _await_all([asyncio.ensure_future(p.wait()) for p in procs])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="children at once (1000)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * args.n + 64  # asyncio: 3 pipes' ends + a pidfd; portclone: pidfd + its dup
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    methods: Dict[str, Callable[[int], Awaitable[int]]] = {
        "portclone wait_async": _portclone,
        "asyncio subprocess": _asyncio,
    }
    times: Dict[str, List[float]] = {m: [] for m in methods}
    threads: Dict[str, int] = {m: 0 for m in methods}
    for r in range(args.rounds):
        order = list(methods) if r % 2 == 0 else list(reversed(list(methods)))
        for name in order:
            start = time.perf_counter()
            most = asyncio.run(methods[name](args.n))
            times[name].append(time.perf_counter() - start)
            threads[name] = max(threads[name], most)
    print(
        f"# {args.n} children at once (sleep {SLEEP}), {args.rounds} rounds, Python "
        f"{sys.version.split()[0]}, backend {portclone.current_backend().name}"
    )
    base = statistics.median(times["asyncio subprocess"]) - float(SLEEP)
    print(f"{'method':24} {'median s':>9} {'overhead s':>11} {'x asyncio':>10} {'threads':>8}")
    for name in methods:
        median = statistics.median(times[name])
        over = median - float(SLEEP)
        print(f"{name:24} {median:9.3f} {over:11.3f} {over / base:10.2f} {threads[name]:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
