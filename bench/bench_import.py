"""What ``import portclone`` costs, side by side with ``import subprocess`` in one run.

Each measurement is a fresh interpreter run with ``-X importtime -c "import M"``; the
figure is the cumulative time CPython reports for M's own line (what M and everything it
imports, beyond what the interpreter had loaded at startup, took), with bytecode caches
written by a first, uncounted run, as an installed package has them.  The modules alternate,
and the best of the rounds counts, so that a busy machine does not decide the ratio.

Two more rows measure first use, for honesty: ``import portclone; portclone.spawn``
loads the API (the package itself loads its modules lazily, on first use of a name),
against ``import subprocess; subprocess.Popen``; and the first call, ``import portclone;
portclone.spawn(["true"]).wait()`` against ``subprocess.Popen(["true"]).wait()`` (what a
program pays to start its first child), timed with perf_counter in the process.

    python bench/bench_import.py                        # this Python, best of 5
    python bench/bench_import.py --rounds 9 --python python3.9 --python python3.13

portclone is imported from this checkout's ``src`` unless it is installed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from typing import Dict, List

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
MODULES = ["subprocess", "portclone"]


def bench_env(python: str) -> Dict[str, str]:
    """The environment of each measured run: bytecode cached, as installed; the checkout's
    ``src`` on PYTHONPATH only when ``python`` has no portclone installed (PYTHONPATH comes
    before site-packages, so adding it always would measure the checkout instead)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    installed = (
        subprocess.run(
            [python, "-c", "import portclone"], env=env, capture_output=True, check=False
        ).returncode
        == 0
    )
    if not installed:
        env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def import_us(python: str, module: str) -> int:
    """Microseconds the importtime line of ``module`` reports, in a fresh ``python``."""
    env = bench_env(python)
    out = subprocess.run(
        [python, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", line)
        if m and m.group(2) == module:
            return int(m.group(1))
    raise RuntimeError(f"{python}: no importtime line for {module}:\n{out.stderr}")


def first_use_us(python: str, code: str) -> int:
    """Microseconds ``code`` takes in a fresh ``python`` (bytecode cached)."""
    env = bench_env(python)
    timed = f"import time\nt = time.perf_counter_ns()\n{code}\nprint((time.perf_counter_ns() - t) // 1000)"
    out = subprocess.run([python, "-c", timed], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout)


FIRST_USE = {
    "subprocess": "import subprocess\nsubprocess.Popen",
    "portclone": "import portclone\nportclone.spawn",
}
FIRST_CALL = {
    "subprocess": "import subprocess\nsubprocess.Popen(['true']).wait()",
    "portclone": "import portclone\nportclone.spawn(['true']).wait()",
}


def version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--python", action="append", help="interpreter (repeatable)")
    args = parser.parse_args()
    pythons: List[str] = args.python or [sys.executable]
    print(f"# best of {args.rounds} fresh interpreters each; import: python -X importtime -c 'import M';")
    print("# first use: import M; M.Popen / M.spawn, timed with perf_counter in the process")
    print("# first call: import M; M.Popen(['true']).wait() / M.spawn(['true']).wait(), likewise")
    print("| Python | measure | subprocess ms | portclone ms | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for python in pythons:
        best: Dict[str, int] = {}
        first: Dict[str, int] = {}
        call: Dict[str, int] = {}
        for module in MODULES:
            import_us(python, module)  # writes the bytecode caches
        for _ in range(args.rounds):
            for module in MODULES:
                us = import_us(python, module)
                best[module] = min(best.get(module, us), us)
                us = first_use_us(python, FIRST_USE[module])
                first[module] = min(first.get(module, us), us)
                us = first_use_us(python, FIRST_CALL[module])
                call[module] = min(call.get(module, us), us)
        v = version(python)
        for measure, figures in (("import", best), ("first use", first), ("first call", call)):
            ratio = figures["portclone"] / figures["subprocess"]
            print(
                f"| {v} | {measure} | {figures['subprocess'] / 1000:.2f} | "
                f"{figures['portclone'] / 1000:.2f} | {ratio:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
