"""portclone's errors survive pickling and copying (multiprocessing, concurrent.futures,
pytest-xdist, copy.copy): BaseException's reduce calls cls(*args), which their
constructors do not take, so before the fix unpickling raised TypeError and a
ProcessPoolExecutor whose worker raised one broke (BrokenProcessPool)."""

from __future__ import annotations

import copy
import pickle
import signal
from typing import List

import pytest
from conftest import run_python

import portclone


def _errors() -> List[BaseException]:
    found: List[BaseException] = []
    try:
        portclone.check(portclone.CLONE_VM)
    except portclone.UnsupportedFlagError as e:
        found.append(e)
    try:
        portclone.check(portclone.CLONE_SIGHAND, exit_signal=0)
    except portclone.InvalidFlagsError as e:
        found.append(e)
    try:
        portclone.get_backend("no-such-backend")
    except portclone.BackendUnavailableError as e:
        found.append(e)
    child = portclone.clone(signal.pause)
    try:
        child.wait(timeout=0.01)
    except portclone.TimeoutExpired as e:
        found.append(e)
    finally:
        child.kill()
        child.wait()
    assert [type(e).__name__ for e in found] == [
        "UnsupportedFlagError",
        "InvalidFlagsError",
        "BackendUnavailableError",
        "TimeoutExpired",
    ]
    return found


ATTRS = ("args", "flags", "backend", "reason", "reasons", "supported", "refusals", "pid", "timeout", "cmd")


HOWS = ["copy", "deepcopy"] + [f"pickle{p}" for p in range(pickle.HIGHEST_PROTOCOL + 1)]


@pytest.mark.parametrize("how", HOWS)
def test_errors_survive_pickle_and_copy(how: str) -> None:
    for error in _errors():
        if how == "copy":
            again = copy.copy(error)
        elif how == "deepcopy":
            again = copy.deepcopy(error)
        else:
            again = pickle.loads(pickle.dumps(error, int(how[len("pickle") :])))
        assert type(again) is type(error)
        assert str(again) == str(error)
        for name in ATTRS:
            assert getattr(again, name, None) == getattr(error, name, None), (type(error).__name__, name)


def test_error_raised_in_a_process_pool_reaches_the_caller() -> None:
    """In a throwaway interpreter: a pool's helpers outlive it there, until exit (Python
    3.14's default start method, forkserver, keeps a server and a resource tracker)."""
    out = run_python(
        """
        import concurrent.futures, portclone
        with concurrent.futures.ProcessPoolExecutor(1) as pool:
            try:
                pool.submit(portclone.check, portclone.CLONE_SIGHAND, exit_signal=0).result(timeout=30)
            except portclone.InvalidFlagsError as e:
                print(bool(e.flags & portclone.CLONE_SIGHAND), bool(e.reasons))
    """
    )
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr
