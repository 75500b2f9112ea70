"""What SECURITY.md promises: no fd leaks into programs, no shell, argv and env as given,
and a failed exec that never runs the caller's code in the child."""

from __future__ import annotations

import os

import pytest
from conftest import run_python
from test_spawn import output

import portclone
from portclone import PIPE, Backend


@pytest.mark.requires("proc")
def test_every_fd_portclone_holds_is_close_on_exec(portclone_backend: Backend) -> None:
    """pidfds and stdio pipes of other children: none inheritable, none in a program."""
    with (
        portclone.spawn(["cat"], stdin=PIPE, stdout=PIPE, stderr=PIPE) as piped,
        portclone.clone(lambda: 0) as cloned,
    ):
        held = [f.fileno() for f in (piped.stdin, piped.stdout, piped.stderr) if f is not None]
        held += [c.pidfd for c in (piped, cloned) if c.pidfd is not None]
        assert held, "nothing to check"
        for fd in held:
            assert not os.get_inheritable(fd), f"fd {fd} is inheritable"
        names = output("sh", "-c", "ls /proc/$$/fd").split()
        assert sorted(int(n) for n in names) == [0, 1, 2]
        piped.communicate(timeout=60)
        cloned.wait(timeout=60)


def test_no_shell_argv_as_given(portclone_backend: Backend) -> None:
    words = ["$(touch /tmp/portclone-owned)", "`id`", "a b", "*", ";", "'", '"', "|", "", "\n"]
    assert output("printf", "%s|", *words) == "|".join(words).encode() + b"|"
    assert not os.path.exists("/tmp/portclone-owned")


def test_env_exactly_as_given(portclone_backend: Backend) -> None:
    env = {"A": "$(id)", "B": "x y", "EMPTY": "", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    got = output("env", "-0", env=env).split(b"\0")
    assert sorted(filter(None, got)) == sorted(f"{k}={v}".encode() for k, v in env.items())


FAILED_EXEC = """
import os, sys
sys.path.insert(0, {tests!r})
import portclone
marker = {marker!r}
os.register_at_fork(after_in_child=lambda: open(marker, "a").write("hook ran in a child\\n"))
with portclone.use_backend({backend!r}):
    for _ in range(3):
        try:
            portclone.spawn(["/nonexistent/portclone-program"])
        except FileNotFoundError:
            print("caught in", os.getpid(), flush=True)
print("end", os.getpid(), flush=True)
"""


@pytest.mark.requires("proc")
def test_a_failed_exec_never_runs_the_callers_code(portclone_backend: Backend, tmp_path: object) -> None:
    marker = os.path.join(str(tmp_path), "marker")
    out = run_python(
        FAILED_EXEC.format(tests=os.path.dirname(__file__), marker=marker, backend=portclone_backend.name)
    )
    assert out.returncode == 0, out.stderr
    pids = {line.split()[-1] for line in out.stdout.splitlines()}
    assert out.stdout.count("caught in") == 3 and out.stdout.count("end") == 1, out.stdout
    assert len(pids) == 1, f"caller's code ran in more than one process: {out.stdout}"
    # linux and netbsd run no Python in an exec child; the fork fallback uses posix_spawn
    # here (its os.fork + exec path, for cwd= and the like, runs at-fork hooks: SECURITY.md)
    assert not os.path.exists(marker), "Python ran in the child (an at-fork hook)"
