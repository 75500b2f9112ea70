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
import functools
import multiprocessing
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
import types
from typing import Callable, Dict, List

import portclone
from portclone._check import build
from portclone._childside import run_child
from portclone._loader import native_status

TRUE = "/bin/true"
SIGCHLD = int(signal.SIGCHLD)
_PIDFD = int(portclone.CLONE_PIDFD)
_NATIVE = native_status()[0] if portclone.current_backend().name == "linux" else None


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


def portclone_floor() -> None:
    """portclone's mechanism alone: its C clone (libc fork + pidfd) and the child's run_child,
    without the API around them (no checks, no Child handle).  No API built on it can be
    cheaper; the gap between this and clone() is what the Python around it costs."""
    out = _Out()
    _NATIVE.clone(
        out,
        functools.partial(run_child, noop, (), {}, _NATIVE.unblock_signals),
        _NATIVE.MODE_FORK,
        _PIDFD,
        SIGCHLD,
        -1,
        None,
        True,
    )
    os.waitpid(out.pid, 0)
    if out.pidfd is not None:
        out._pidfd_owner.close()


class _Out:
    """Where _native.clone puts the child's pid and pidfd, and the pidfd's owner (a Child
    without its API)."""

    __slots__ = ("_pidfd_owner", "pid", "pidfd", "syscall")


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
    "os.posix_spawn(/bin/true)": posix_spawn_true,
    "subprocess.run([/bin/true])": subprocess_true,
}
if _NATIVE is not None:  # the linux backend's floor before clone(), its clone3 path after
    _items = list(METHODS.items())
    METHODS = dict(
        [
            *_items[:3],
            ("portclone's floor: _native.clone + run_child, no API", portclone_floor),
            *_items[3:4],
            ("portclone.clone(fn, flags=CLONE_UNTRACED) [clone3]", portclone_clone3),
            *_items[4:],
        ]
    )
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
    print(
        f"portclone {portclone.__version__}, backend {portclone.current_backend().name}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs{extra}"
    )
    print(
        f"command: python bench/{script} --sizes {args.sizes}"
        + (f" --rounds {args.rounds}" if args.rounds else "")
    )
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


def parent_faults(methods: Dict[str, Callable[[], None]], calls: int = 200) -> Dict[str, float]:
    """Minor page faults the parent takes per call (getrusage), each method on its own.

    After a fork every page of the parent is write-protected, so each page the parent
    then writes costs a fault; reference counting makes every object Python touches a
    write.  This is where clone()'s fixed cost over os.fork comes from."""
    import resource

    faults: Dict[str, float] = {}
    for name, fn in methods.items():
        fn()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(calls):
            fn()
        faults[name] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls
    return faults


def breakdown() -> Dict[str, Callable[[], None]]:
    """From portclone's floor to clone(), one step at a time (``--breakdown``)."""
    from portclone._child import Child
    from portclone._childside import flush_std_streams

    backend = portclone.current_backend()
    request = build(backend, 0)

    def flush() -> None:
        flush_std_streams()
        portclone_floor()

    def handle() -> None:
        child = Child(0, None, request.flags, SIGCHLD, backend.name, "", True)
        portclone_floor()
        child.returncode = 0

    def handle_wait() -> None:
        child = Child(0, None, request.flags, SIGCHLD, backend.name, "", True)
        _NATIVE.clone(
            child,
            functools.partial(run_child, noop, (), {}, _NATIVE.unblock_signals),
            _NATIVE.MODE_FORK,
            _PIDFD,
            SIGCHLD,
            -1,
            None,
            True,
        )
        child.wait()
        child.close()

    def launch() -> None:  # the backend's launch: handle, flush, clone, run_child
        child = backend.launch(request, noop, (), {})  # type: ignore[attr-defined]
        child.wait()
        child.close()

    # clone() itself, run with globals in which each of its checks is a constant answer
    from portclone import _api

    stubs = {
        "_binds_plainly": lambda fn, nargs: True,
        "current_backend": lambda: backend,
        "_options": lambda values: _api.NO_OPTIONS,
        "build": lambda *args: request,
        "thread_count": lambda: 1,
        "reap_orphans": lambda: None,
    }
    real = _api.clone
    unchecked_clone = types.FunctionType(real.__code__, {**vars(_api), **stubs}, "clone", real.__defaults__)
    unchecked_clone.__kwdefaults__ = real.__kwdefaults__

    def unchecked() -> None:
        child = unchecked_clone(noop)
        child.wait()
        child.close()

    return {
        "floor": portclone_floor,
        "floor + flush the parent's stdio": flush,
        "floor + build a Child handle": handle,
        "floor + build a Child handle, wait() and close() it": handle_wait,
        "backend.launch() (all of the above) + wait() + close()": launch,
        "portclone.clone() with each check a constant answer + wait() + close()": unchecked,
        "portclone.clone() (checks, then launch) + wait() + close()": portclone_plain,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50M,1G", help="parent sizes (default 50M,1G)")
    parser.add_argument(
        "--rounds", type=int, default=0, help="rounds per size (default: 200 up to 100 MB, 40 above)"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="parent page faults per call from portclone's floor to clone()",
    )
    args = parser.parse_args()
    if args.breakdown:
        if _NATIVE is None:
            parser.error("--breakdown needs the linux backend")
        ballast = occupy(parse_size(args.sizes.split(",")[0]))
        print("| step | parent page faults per call |\n| --- | --- |", flush=True)
        for name, faults in parent_faults(breakdown(), args.rounds or 300).items():
            print(f"| {name} | {faults:.0f} |")
        del ballast
        return 0
    header("bench_clone.py", args)
    print("| parent | method | median ms | p90 ms | vs os.fork | parent page faults per call |")
    # flushed before any fork: the floor's and os.fork's children would print it again
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for text in args.sizes.split(","):
        size = parse_size(text)
        ballast = occupy(size)
        rounds = args.rounds or (200 if size <= 100 << 20 else 40)
        times = measure(METHODS, rounds)
        faults = parent_faults(METHODS, rounds)
        base = statistics.median(times[BASELINE])
        for name, samples in times.items():
            med = statistics.median(samples)
            p90 = sorted(samples)[-(-len(samples) * 9 // 10) - 1]  # nearest rank
            print(f"| {text} | {name} | {med:.3f} | {p90:.3f} | {med / base:.3f}x | {faults[name]:.0f} |")
        del ballast
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
