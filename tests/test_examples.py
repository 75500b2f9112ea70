"""The porting guide's examples (examples/): each run as a program, as a porter would,
and checked for the behaviour of the man-pages program it ports."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import List

import conftest
import pytest

import portclone

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

#: host_only: each example is a Python program started anew, seconds each under emulation;
#: what they ask of the kernel is tested in the guests through the API (test_setup_options)
pytestmark = [pytest.mark.requires("linux", "proc", "root"), pytest.mark.host_only]


def run(name: str, *args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    # unbuffered (-u), print() writes a line's text and its newline apart, and a child's
    # line can fall between them: the examples run as a user runs them
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    src = str(pathlib.Path(portclone.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120, env=env
    )


def lines(result: subprocess.CompletedProcess) -> List[str]:  # type: ignore[type-arg]
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.requires("CLONE_NEWUTS")
def test_clone_uts_child_sees_its_hostname_parent_keeps_its_own() -> None:
    out = lines(run("clone_uts.py", "-s", "0.1", "porting-guide"))
    assert "uts.nodename in child:  porting-guide" in out
    assert f"uts.nodename in parent: {os.uname().nodename}" in out
    assert out[-1] == "child has terminated"


@pytest.mark.requires("CLONE_NEWPID", "CLONE_NEWNS")
def test_pidns_init_sleep_is_pid_1_with_parent_0() -> None:
    before = open("/proc/self/mountinfo").read()
    result = run("pidns_init_sleep.py", "-s", "0.1", "/proc")
    text = "\n".join(lines(result))  # parent and child write at once: lines may interleave
    assert "childFunc(): PID  = 1" in text and "childFunc(): PPID = 0" in text
    assert "PID returned by clone(): " in text
    assert open("/proc/self/mountinfo").read() == before


# it maps uids 1000 and 100000-100009, which only host root has to give
@pytest.mark.requires("host-root", "CLONE_NEWUSER", "CLONE_NEWPID")
def test_userns_child_exec_writes_maps_and_denies_setgroups() -> None:
    out = lines(
        run(
            "userns_child_exec.py",
            "-v",
            "-p",
            "-U",
            "-M",
            "0 1000 1,1 100000 10",
            "-G",
            "0 1000 1",
            "--",
            "sh",
            "-c",
            "echo $$; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups",
        )
    )
    said = [line for line in out if "userns_child_exec.py: " in line]  # after argv[0]
    assert "userns_child_exec.py: PID of child created by clone() is" in said[0]
    assert said[1].endswith("userns_child_exec.py: terminating") and said[1] == out[-1]
    child = [line for line in out if line not in said]  # printed while the parent runs
    assert child[0] == "1"
    assert [line.split() for line in child[1:4]] == [
        ["0", "1000", "1"],
        ["1", "100000", "10"],
        ["0", "1000", "1"],
    ]
    assert child[4] == "deny"
    z = lines(run("userns_child_exec.py", "-z", "-U", "id", "-u"))
    assert z == ["0"]


def test_userns_child_exec_usage_errors() -> None:
    assert run("userns_child_exec.py", "-z", "id").returncode == 2  # -z needs -U
    assert run("userns_child_exec.py", "-U", "-z", "-M", "0 0 1", "id").returncode == 2


def test_ns_exec_joins_the_namespace_of_the_file() -> None:
    target = portclone.spawn(["sleep", "600"], hostname="joined-by-file")
    try:
        out = lines(run("ns_exec.py", conftest.proc_path(target.pid, "ns", "uts"), "hostname"))
    finally:
        target.kill()
        target.wait()
    assert out == ["joined-by-file"]


@pytest.mark.requires("CLONE_NEWTIME")
def test_timens_offsets_shifts_the_commands_clocks_only() -> None:
    out = lines(run("timens_offsets.py", "--boottime", "86400"))
    outside = float(out[0].split()[1])
    inside = float(out[1].split()[0])
    assert 86400 <= inside - outside < 86400 + 60


@pytest.mark.parametrize(
    "args, status",
    [
        (("clone_uts.py", ""), 2),
        (("clone_uts.py", "x", "-s", "-1"), 2),
        (("clone_uts.py", "x", "-s", "nan"), 2),
        (("timens_offsets.py", "--monotonic", "nan"), 2),
        (("userns_child_exec.py", "-U", "-M", "garbage", "id"), 2),
        (("userns_child_exec.py", "-U", "-z", "portclone-no-such-cmd"), 1),
        (("ns_exec.py", "/nonexistent", "id"), 1),
        (("ns_exec.py", "/etc/passwd", "id"), 1),
        (("pidns_init_sleep.py", "/nonexistent-dir"), 1),
    ],
)
def test_examples_fail_as_programs_do(args: tuple, status: int) -> None:  # type: ignore[type-arg]
    result = run(*args)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip()
