"""The benchmarks still run (tiny sizes, no timing asserted: figures live in bench/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import TESTS_DIR

BENCH = os.path.join(os.path.dirname(TESTS_DIR), "bench")


def run_bench(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a pipe buffers
    out = subprocess.run(
        [sys.executable, os.path.join(BENCH, args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    table = [line for line in out.stdout.splitlines() if line.startswith("|")]
    # a line printed twice came from a fork child flushing the parent's buffer
    assert len(table) == len(set(table)), out.stdout
    return out.stdout


def test_bench_clone_prints_every_method_with_a_ratio() -> None:
    out = run_bench("bench_clone.py", "--sizes", "1M", "--rounds", "3")
    rows = [line for line in out.splitlines() if line.startswith("| 1M |")]
    assert any("portclone.clone(fn)" in row for row in rows)
    assert any("os.fork + os._exit" in row and "1.000x" in row for row in rows)
    assert all(row.count("|") == 7 for row in rows), rows  # six columns, faults included


@pytest.mark.requires("linux")
def test_bench_clone_breakdown_goes_from_the_floor_to_clone() -> None:
    out = run_bench("bench_clone.py", "--sizes", "1M", "--rounds", "5", "--breakdown")
    steps = [line.split("|")[1].strip() for line in out.splitlines()[2:] if line.startswith("|")]
    assert steps[0] == "floor" and steps[-1].startswith("portclone.clone()"), steps


def test_bench_spawn_runs() -> None:
    out = run_bench("bench_spawn.py", "--sizes", "1M", "--rounds", "2")
    assert "spawn" in out and "| 1M |" in out


@pytest.mark.host_only  # interpreters' start-up, the same on every kernel
def test_bench_import_compares_with_subprocess() -> None:
    out = run_bench("bench_import.py", "--rounds", "1")
    rows = [line for line in out.splitlines() if line.startswith("| 3.")]
    assert len(rows) == 3 and all(row.rstrip(" |").endswith("x") for row in rows), out
    assert [row.split("|")[2].strip() for row in rows] == ["import", "first use", "first call"], out


@pytest.mark.host_only  # interpreters' start-up, the same on every kernel
def test_bench_import_measures_the_installed_package_when_there_is_one() -> None:
    """Its docstring says the checkout's src is used only when portclone is not installed;
    before the fix it always put src first on PYTHONPATH, so it measured the checkout."""
    sys.path.insert(0, os.path.join(os.path.dirname(TESTS_DIR), "bench"))
    try:
        import bench_import  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    probe = subprocess.run([sys.executable, "-c", "import portclone"], capture_output=True)
    env = bench_import.bench_env(sys.executable)
    if probe.returncode == 0:  # importable as the environment stands: measured so, untouched
        assert env.get("PYTHONPATH") == os.environ.get("PYTHONPATH")
    else:
        assert env["PYTHONPATH"].split(os.pathsep)[0] == bench_import.SRC


def test_bench_dropin_compares_with_util_linux() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("util-linux's unshare is not installed: it is the row the others compare with")
    out = run_bench("bench_dropin.py", "--rounds", "1")
    assert "python -m portclone unshare -r true" in out and "vs util-linux" in out, out
