"""Leaks and load: portclone's reliability figures (README, "Reliability").

Two runs, each bounded by timeouts and stopping by itself:

- cycles: N clone() + wait and N spawn() + wait cycles, after a warm-up;
  open fds, threads, zombie children, Python's allocated blocks, bytes in
  use by malloc (glibc's mallinfo) and RSS, before, halfway and after. A leak
  grows both halves alike, a one-off step (a cache filled once) only one, so
  the smaller half is the leak figure. Blocks and malloc bytes are the
  measures: RSS also moves with the page cache and misses a leaked buffer
  nobody wrote to; it is reported, not judged.
- load: T threads, each R rounds of one clone() and one spawn() with an exit
  status of its own, concurrently; every status is checked, every child
  accounted for, no thread may hang.

    python bench/soak.py                                  # 10,000 cycles, 8 threads x 1,000
    python bench/soak.py --cycles 1000 --threads 4 --rounds 100

tests/test_reliability.py runs the same checks (tests/leakcheck.py) with small counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import portclone

# the checks themselves live with the tests, which run them small
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from leakcheck import Cycles, Load, children, cycles, load, open_fds

__all__ = ["children", "main", "open_fds", "report"]


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
        "| | before | halfway | after | change | smaller half |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, grew in c.growth().items():
        lines.append(
            f"| {key} | {c.before[key]:,} | {c.halfway[key]:,} | {c.after[key]:,} "
            f"| {grew:+,} | {c.steady_growth(key):+,} |"
        )
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
    parser.add_argument(
        "--storm", action="store_true", help="run bench/storm.py instead (signals whose handlers raise)"
    )
    args = parser.parse_args()
    if args.storm:
        import storm  # bench/storm.py, beside this file

        return storm.main(["--cycles", str(args.cycles)])
    c = cycles(args.cycles)
    ld = load(args.threads, args.rounds)
    print(report(c, ld))
    ok = not c.leaks() and not ld.errors and not ld.hung and ld.after["zombies"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
