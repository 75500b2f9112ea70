"""Start /bin/true: portclone.spawn() against os.posix_spawn and subprocess.

All methods run in one process, interleaved in a shuffled order each round, at
each parent size; the table reports medians and ratios.  spawn() creates its
child with CLONE_VM(|CLONE_VFORK), so its cost should not grow with the
parent; the namespace variant is compared with what Python offers without
portclone: subprocess with preexec_fn=unshare, which forces a full fork.

    python bench/bench_spawn.py                       # 50 MB, 1 GB and 4 GB parents
    python bench/bench_spawn.py --sizes 50M,1G --rounds 50
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
from typing import Callable, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_clone import header, measure, occupy, parse_size

import portclone
from portclone import CloneFlags as F

TRUE = "/bin/true"
NS = F.CLONE_NEWUSER | F.CLONE_NEWPID | F.CLONE_NEWNS | F.CLONE_NEWUTS | F.CLONE_NEWIPC
_libc = ctypes.CDLL(None, use_errno=True)


def spawn_true() -> None:
    child = portclone.spawn([TRUE])
    child.wait()
    child.close()


def spawn_ns() -> None:
    child = portclone.spawn([TRUE], flags=NS)
    child.wait()
    child.close()


def posix_spawn_true() -> None:
    os.waitpid(os.posix_spawn(TRUE, [TRUE], os.environ), 0)


def subprocess_true() -> None:
    subprocess.run([TRUE], check=True)


def _unshare() -> None:
    if _libc.unshare(int(NS)) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


def subprocess_unshare() -> None:
    # os.unshare exists from 3.12 on; ctypes does the same call on every version
    subprocess.run([TRUE], check=True, preexec_fn=_unshare)


PLAIN: Dict[str, Callable[[], None]] = {
    "portclone.spawn([/bin/true])": spawn_true,
    "os.posix_spawn(/bin/true)": posix_spawn_true,
    "subprocess.run([/bin/true])": subprocess_true,
}
NAMESPACES: Dict[str, Callable[[], None]] = {
    "portclone.spawn(..., flags=USER|PID|NS|UTS|IPC)": spawn_ns,
    "subprocess.run(..., preexec_fn=unshare(USER|PID|NS|UTS|IPC))": subprocess_unshare,
}


#: namespaces need the linux backend (and privilege or user namespaces)
WITH_NS = portclone.current_backend().name == "linux"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50M,1G,4G")
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="rounds per size (default: 200 up to 100 MB, 60 to 1 GB, 20 above)",
    )
    args = parser.parse_args()
    header("bench_spawn.py", args, f", euid {os.geteuid()}")
    print("| parent | method | median ms | p90 ms | vs os.posix_spawn |")
    print("| --- | --- | --- | --- | --- |")
    medians: Dict[str, Dict[str, float]] = {}
    for text in args.sizes.split(","):
        size = parse_size(text)
        ballast = occupy(size)
        rounds = args.rounds or (200 if size <= 100 << 20 else 60 if size <= 1 << 30 else 20)
        times = measure({**PLAIN, **(NAMESPACES if WITH_NS else {})}, rounds)
        base = statistics.median(times["os.posix_spawn(/bin/true)"])
        medians[text] = {}
        for name, samples in times.items():
            med = statistics.median(samples)
            medians[text][name] = med
            p90 = sorted(samples)[-(-len(samples) * 9 // 10) - 1]  # nearest rank
            print(f"| {text} | {name} | {med:.3f} | {p90:.3f} | {med / base:.2f}x |")
        del ballast
        sys.stdout.flush()
    sizes = args.sizes.split(",")
    spawn = "portclone.spawn([/bin/true])"
    print()
    print(
        f"flat: spawn at {sizes[-1]} / spawn at {sizes[0]} = "
        f"{medians[sizes[-1]][spawn] / medians[sizes[0]][spawn]:.2f}x"
    )
    for text in sizes if WITH_NS else ():
        ns = medians[text]
        ratio = (
            ns["subprocess.run(..., preexec_fn=unshare(USER|PID|NS|UTS|IPC))"]
            / ns["portclone.spawn(..., flags=USER|PID|NS|UTS|IPC)"]
        )
        print(f"namespaces at {text}: spawn is {ratio:.1f}x faster than preexec_fn=unshare")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
