"""What a whole ``unshare -r true`` costs, portclone's against util-linux's, in one run.

Each row is a fresh command, as a shell script runs it, timed from the parent with
perf_counter around ``subprocess.run`` (start, unshare, exec of ``true``, exit, wait):

- ``unshare -r true``: util-linux's C command, the floor;
- ``python -c pass``: the interpreter's own start and exit, what any Python command pays;
- ``python -m portclone unshare -r true``: the drop-in (its first use in a process);
- ``python -m portclone run -r -- true``: run, which goes through spawn();
- ``python -c "subprocess.run(['true'])"``: issue 21's yardstick for a Python command;
- ``python -c "subprocess.run(['unshare', '-r', 'true'])"``: a Python program that calls
  util-linux's command, what a script gains by not shelling out.

The commands alternate and the median of the rounds counts, so a busy machine moves
every row alike; the ratios are against util-linux's command, ``python -c pass`` and
``subprocess.run(['true'])``.

    python bench/bench_dropin.py [--rounds 21]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def commands() -> Dict[str, List[str]]:
    py = sys.executable
    unshare = shutil.which("unshare") or "unshare"
    return {
        "unshare -r true (util-linux)": [unshare, "-r", "true"],
        "python -c pass": [py, "-c", "pass"],
        "python -m portclone unshare -r true": [py, "-m", "portclone", "unshare", "-r", "true"],
        "python -m portclone run -r -- true": [py, "-m", "portclone", "run", "-r", "--", "true"],
        "python: subprocess.run(true)": [py, "-c", "import subprocess; subprocess.run(['true'])"],
        "python: subprocess.run(unshare -r true)": [
            py,
            "-c",
            f"import subprocess; subprocess.run([{unshare!r}, '-r', 'true'])",
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if subprocess.run([sys.executable, "-c", "import portclone"], env=env, capture_output=True).returncode:
        env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    cmds = commands()
    for argv in cmds.values():  # bytecode caches written, and each works
        subprocess.run(argv, env=env, check=True, capture_output=True)
    times: Dict[str, List[float]] = {name: [] for name in cmds}
    for _ in range(args.rounds):
        for name, argv in cmds.items():
            start = time.perf_counter()
            subprocess.run(argv, env=env, check=True)
            times[name].append(time.perf_counter() - start)
    floor = statistics.median(times["unshare -r true (util-linux)"])
    python = statistics.median(times["python -c pass"])
    print(f"# median of {args.rounds} rounds, commands alternating; Python {sys.version.split()[0]}")
    run_true = statistics.median(times["python: subprocess.run(true)"])
    print("| command | ms | vs util-linux | vs python -c pass | vs subprocess.run(true) |")
    print("| --- | --- | --- | --- | --- |")
    for name, samples in times.items():
        m = statistics.median(samples)
        print(f"| {name} | {m * 1000:.1f} | {m / floor:.1f}x | {m / python:.2f}x | {m / run_true:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
