"""Signal storm: clone() and spawn() while another process sends signals whose handlers raise.

For each backend a worker interpreter, in a process group of its own, runs clone() and
spawn(cwd=..., stdout=PIPE, stderr=DEVNULL) cycles and waits for every child, while a
sender process signals the whole group (SIGINT, SIGUSR1, SIGUSR2, SIGALRM: every handler
in the worker and in its Python children raises) at sub-millisecond intervals.  The worker counts:

- children that ran the caller's code (a pid other than the worker's past clone());
- fds leaked and zombies left once the storm is over and dropped handles are reaped;
- hung waits (30 s each) and wrong statuses: a clone() child exits 7, or 1 when a handler
  raised in it; a program exits 7, or dies of one of the storm's signals;
- whether the worker's own signal mask changed (a storm against a blocked mask tests
  nothing).

Every count must be 0.  Bounded by --cycles and --seconds per backend.

    python bench/storm.py                        # 10,000 cycles per backend
    python bench/storm.py --cycles 300 --seconds 5
    python bench/soak.py --storm                 # the same, from soak.py

tests/test_adversity.py runs it with small counts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

from soak import children, open_fds  # bench/soak.py, beside this file

STORM = (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
KEYS = (
    "cycles",
    "interrupted_calls",
    "ran_caller_code",
    "leaked_fds",
    "zombies",
    "hung",
    "wrong_statuses",
    "mask_changed",
)


class Storm(Exception):
    """What the storm's handlers raise."""


#: How many more times the handlers may raise: armed (1) around each portclone call, so
#: that the worker's own bookkeeping, which is not under test, is never interrupted.
#: Children inherit the value the parent had at the clone.
_armed = 0


def _raise(signum: int, frame: object) -> None:
    global _armed
    if _armed > 0:
        _armed -= 1
        raise Storm(signum)


def _arm() -> None:
    global _armed
    _armed = 1


def _disarm() -> None:
    global _armed
    _armed = 0


def _fd_names() -> List[str]:
    """``fd -> what it is`` for each open fd (what a leak report names)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(f"fd {fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass
    return names


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        return f"child {pid}: {stat.split(')')[1].split()[0]} {cmd!r}"
    except OSError as e:
        return f"child {pid}: {e}"


def _seven() -> int:
    return 7


def settle(give_up_after: float = 30) -> None:
    """Let portclone finish with what the storm left before anything is counted: dropped
    handles collected and orphans reaped, once even when no child is left, then until
    none is.  A reap that a handler interrupted after its waitid leaves the pidfd of the
    child it reaped to portclone's next call (reap_orphans), as the docs say; counted
    before that call, it looked leaked."""
    from portclone._child import reap_orphans

    give_up = time.monotonic() + give_up_after
    while True:
        gc.collect()
        reap_orphans()
        if not children() or time.monotonic() > give_up:
            return
        time.sleep(0.01)  # polling a condition with a deadline


def worker(backend: str, cycles: int, seconds: float) -> Dict[str, Any]:
    """Runs in the storm: the counts, as a dict.  Called in a process of its own."""
    import portclone

    me = os.getpid()
    stats: Dict[str, Any] = dict.fromkeys(KEYS, 0)
    wrong: List[str] = []
    storm_statuses = {7} | {-int(s) for s in STORM}

    # A child that gets past clone() into this code leaves a byte here and exits 99: the
    # count does not depend on its parent still holding its handle to see the status.
    witness = tempfile.TemporaryFile()

    def caller_code() -> None:
        if os.getpid() != me:  # a child got here: the promise is broken
            os.write(witness.fileno(), b"!")
            os._exit(99)

    with portclone.use_backend(backend):
        portclone.spawn(["/bin/true"]).wait()  # warm-up: modules, probes, caches
        portclone.clone(_seven).wait()
        gc.collect()
        fds_before = open_fds()
        fd_names_before = _fd_names()
        for sig in STORM:
            signal.signal(sig, _raise)
        mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # disarmed: cannot raise
        print("ready", flush=True)
        deadline = time.monotonic() + seconds
        done = 0
        while done < cycles and time.monotonic() < deadline:
            is_clone = done % 2 == 0
            done += 1
            child = None
            try:
                _arm()
                if is_clone:
                    child = portclone.clone(_seven)
                else:
                    child = portclone.spawn(
                        ["/bin/sh", "-c", "exit 7"], cwd="/", stdout=portclone.PIPE, stderr=portclone.DEVNULL
                    )
                _disarm()
            except BaseException:  # the handler disarmed itself: nothing else raises here
                caller_code()
                if child is None:  # else the call had returned: wait for its child below
                    stats["interrupted_calls"] += 1
                    continue
            caller_code()
            status = None
            while status is None:
                try:
                    _arm()
                    status = child.wait(timeout=30)
                    _disarm()
                except portclone.TimeoutExpired:
                    _disarm()
                    stats["hung"] += 1
                    child.kill()
                except BaseException:
                    caller_code()  # an interrupted wait: wait again
            if status not in ({7, 1} if is_clone else storm_statuses):
                stats["wrong_statuses"] += 1
                wrong.append(f"{'clone' if is_clone else 'spawn'}: {status}")
            child.close()
        stats["cycles"] = done
        # the caller's own signal mask must be as it was (disarmed: cannot raise)
        stats["mask_changed"] = int(signal.pthread_sigmask(signal.SIG_BLOCK, ()) != mask_before)
        _disarm()
        for sig in STORM:
            signal.signal(sig, signal.SIG_IGN)
        settle()
        stats["zombies"] = len(children())
        stats["ran_caller_code"] = os.fstat(witness.fileno()).st_size
        stats["details"] = (
            wrong[:10]
            + [_describe(pid) for pid in children()[:5]]
            + sorted(set(_fd_names()) - set(fd_names_before))[:5]
        )
        stats["leaked_fds"] = open_fds() - fds_before
    return stats


def _sender(pgid: int, seconds: float) -> subprocess.Popen:  # type: ignore[type-arg]
    code = f"""
import os, signal, time
end = time.monotonic() + {seconds}
sigs = {[int(s) for s in STORM]}
i = 0
while time.monotonic() < end:
    try:
        os.killpg({pgid}, sigs[i % len(sigs)])
    except ProcessLookupError:
        break
    i += 1
    time.sleep(0.0002)
"""
    return subprocess.Popen([sys.executable, "-c", code])


def run(backend: str, cycles: int, seconds: float) -> Dict[str, Any]:
    """One backend's storm, in a worker process group of its own."""
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(here, "storm.py"),
            "--worker",
            backend,
            "--cycles",
            str(cycles),
            "--seconds",
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    assert proc.stdout is not None
    started = time.monotonic()
    ready = proc.stdout.readline()
    sender = _sender(proc.pid, seconds + 5) if ready.strip() == "ready" else None
    try:
        out, _ = proc.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"backend": backend, "error": "the worker hung", **dict.fromkeys(KEYS, -1)}
    finally:
        if sender is not None:
            sender.kill()
            sender.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a child that escaped would still be there
    except ProcessLookupError:
        pass
    result: Dict[str, Any] = {"backend": backend, "seconds": round(time.monotonic() - started, 1)}
    try:
        result.update(json.loads(out.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        result["error"] = f"worker exited {proc.returncode} without a report"
    return result


def failures(result: Dict[str, Any]) -> List[str]:
    """What in one backend's result breaks a promise."""
    bad = [f"{key} = {result.get(key)}" for key in KEYS[2:] if result.get(key) != 0]
    if "error" in result:
        bad.append(result["error"])
    return bad


def report(results: List[Dict[str, Any]], command: str) -> str:
    import portclone

    lines = [
        f"portclone {portclone.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        f"command: {command}",
        "",
        "storm: SIGINT/SIGUSR1/SIGUSR2/SIGALRM to the process group every ~0.2 ms, every handler raising",
        "",
        "| backend | cycles | interrupted calls | ran caller code | leaked fds | zombies "
        "| hung | wrong statuses | mask changed | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['backend']} | "
            + " | ".join(
                f"{r.get(k, '?'):,}" if isinstance(r.get(k), int) else str(r.get(k, "?"))
                for k in (*KEYS, "seconds")
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10_000, help="per backend")
    parser.add_argument("--seconds", type=float, default=120, help="at most, per backend")
    parser.add_argument("--backend", action="append", help="default: every available one")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.cycles, args.seconds)), flush=True)
        return 0
    import portclone

    results = [run(b, args.cycles, args.seconds) for b in args.backend or portclone.available_backends()]
    print(report(results, "python bench/storm.py " + " ".join(argv)))
    bad = {r["backend"]: failures(r) for r in results if failures(r)}
    for backend, what in bad.items():
        details = next(r.get("details") for r in results if r["backend"] == backend)
        print(f"FAILED {backend}: {', '.join(what)}; {details}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
