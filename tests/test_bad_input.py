"""Bad input to every public entry point: a clear exception and no side effect (no child,
no fd, cwd/umask/handlers unchanged), on every backend.  The per-argument tables of
clone() and spawn() live in test_validate.py and test_spawn.py; these are the rest."""

from __future__ import annotations

import os
import pathlib
import signal
from typing import Any, Callable, Dict

import pytest
from conftest import NulFree, never_runs, no_side_effects

import portclone
from portclone import Backend, BackendUnavailableError, InvalidFlagsError, UnsupportedFlagError


def closed_fd() -> int:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return r


CLONE_CASES: Dict[str, Any] = {
    "exit_signal 65": ({"exit_signal": 65}, InvalidFlagsError),
    "exit_signal -1": ({"exit_signal": -1}, InvalidFlagsError),
    "exit_signal 2**40": ({"exit_signal": 1 << 40}, InvalidFlagsError),
    "exit_signal float": ({"exit_signal": 17.0}, TypeError),
    "flags None": ({"flags": None}, TypeError),
    "unknown bit 40": ({"flags": 1 << 40}, UnsupportedFlagError),
    "signal in the flags": ({"flags": int(signal.SIGCHLD)}, InvalidFlagsError),
    "set_tid dict": ({"set_tid": {1: 2}}, TypeError),
    "set_tid negative": ({"set_tid": [-5]}, InvalidFlagsError),
    "set_tid of 33": ({"set_tid": [1] * 33}, InvalidFlagsError),
    "cgroup closed fd": ({"cgroup": closed_fd}, OSError),
    "cgroup bytes file": ({"cgroup": b"/etc/hostname"}, InvalidFlagsError),
    "cgroup pathlib dir": ({"cgroup": pathlib.Path("/")}, InvalidFlagsError),
}


@pytest.mark.parametrize("case", list(CLONE_CASES))
def test_clone_and_check(portclone_backend: Backend, case: str) -> None:
    kwargs, exc = CLONE_CASES[case]
    kwargs = {k: v() if callable(v) else v for k, v in kwargs.items()}
    with no_side_effects(), pytest.raises(exc):
        portclone.clone(never_runs, **kwargs)
    with no_side_effects(), pytest.raises(exc):
        portclone.check(**kwargs)


SPAWN_CASES: Dict[str, Any] = {
    "argv bytes with NUL": ({"argv": [b"true", b"a\0"]}, ValueError),
    "argv None": ({"argv": None}, TypeError),
    "executable int": ({"argv": ["true"], "executable": 3}, TypeError),
    "executable NUL": ({"argv": ["true"], "executable": "/bin/tr\0ue"}, ValueError),
    "cwd NUL": ({"argv": ["true"], "cwd": "/tm\0p"}, ValueError),
    "cwd missing": ({"argv": ["true"], "cwd": "/nonexistent-portclone"}, FileNotFoundError),
    "env key int": ({"argv": ["true"], "env": {1: "x"}}, TypeError),
    "env huge": ({"argv": ["true"], "env": {"BIG": "x" * (64 << 20)}}, OSError),  # E2BIG
    "pass_fds closed": ({"argv": ["true"], "pass_fds": [closed_fd]}, OSError),
    "pass_fds str": ({"argv": ["true"], "pass_fds": ["3"]}, TypeError),
    "stdin negative": ({"argv": ["true"], "stdin": -5}, ValueError),
    "stdout closed": ({"argv": ["true"], "stdout": closed_fd}, OSError),
    "flags unknown": ({"argv": ["true"], "flags": 1 << 45}, UnsupportedFlagError),
    "set_tid 0": ({"argv": ["true"], "set_tid": [0]}, InvalidFlagsError),
    "cgroup file": ({"argv": ["true"], "cgroup": "/etc/hostname"}, InvalidFlagsError),
    # a bytes subclass is read as the bytes it holds (the C reads them up to the NUL)
    "argv NUL in a bytes subclass": ({"argv": [NulFree(b"/bin/true\0x")]}, ValueError),
    "executable NUL in a bytes subclass": ({"argv": ["x"], "executable": NulFree(b"/bin/tr\0")}, ValueError),
    "cwd NUL in a bytes subclass": ({"argv": ["true"], "cwd": NulFree(b"/tmp\0/x")}, ValueError),
    "env NUL in a bytes subclass": ({"argv": ["true"], "env": {b"A": NulFree(b"1\0")}}, ValueError),
}


@pytest.mark.parametrize("case", list(SPAWN_CASES))
def test_spawn(portclone_backend: Backend, case: str) -> None:
    kwargs, exc = SPAWN_CASES[case]
    kwargs = {k: v() if callable(v) and k != "argv" else v for k, v in kwargs.items()}
    if isinstance(kwargs.get("pass_fds"), list):
        kwargs["pass_fds"] = [f() if callable(f) else f for f in kwargs["pass_fds"]]
    argv = kwargs.pop("argv")
    with no_side_effects(), pytest.raises(exc):
        portclone.spawn(argv, **kwargs)


def _finished_child() -> portclone.Child:
    child = portclone.clone(lambda: 0)
    child.wait(timeout=60)
    return child


CHILD_CASES: Dict[str, Any] = {
    "wait timeout str": (lambda c: c.wait(timeout="1"), TypeError),
    "send_signal str": (lambda c: c.send_signal("TERM"), TypeError),
    "send_signal 0x7fff": (lambda c: c.send_signal(0x7FFF), (ValueError, OSError)),
    "communicate without pipes": (lambda c: c.communicate(b"x"), ValueError),
}


@pytest.mark.parametrize("case", list(CHILD_CASES))
def test_child_methods(case: str) -> None:
    call, exc = CHILD_CASES[case]
    child = portclone.clone(signal.pause)
    try:
        with no_side_effects(), pytest.raises(exc):
            call(child)
    finally:
        child.kill()
        child.wait(timeout=60)
        child.close()


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda: portclone.use_backend("bsd").__enter__(), BackendUnavailableError),
        (lambda: portclone.get_backend(3), (BackendUnavailableError, TypeError)),
        (lambda: portclone.CloneFlags.parse("NEWNOTHING"), ValueError),
        (lambda: portclone.CloneFlags.parse("PID"), ValueError),
        (lambda: portclone.clone("not callable"), TypeError),
    ],
)
def test_selection_and_parsing(call: Callable[[], object], exc: Any) -> None:
    with no_side_effects(), pytest.raises(exc):
        call()
