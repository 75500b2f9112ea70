"""Per-call cost, counted rather than timed (issue 21): how many Python-level function
calls, and how many signal-mask changes, one spawn() or clone() makes.

Timings on a shared machine decide nothing, so no test here reads a clock: the counts
are exact for a given Python, and the bounds sit far from where the old code was (1,219
Python calls and 12 pthread_sigmask calls per plain spawn()+wait()+close() through
Lib/signal.py's enum wrapper; clone() ran inspect.signature on every call).  The
benchmarks (bench/bench_spawn.py, bench/bench_clone.py) give the times.

The semantics the cheap signal hold must keep are tested here too: a handler that
raises while the hold or the release runs leaves the caller's mask as it was.
"""

from __future__ import annotations

import collections
import functools
import inspect
import operator
import os
import signal
import subprocess
import sys
from typing import Any, Callable, Counter, Dict, Iterator

import pytest

import portclone
from portclone import _api, _loader, _sigfd

#: the C functions that change the signal mask, and Lib/signal.py's wrapper of the first
MASK_CALLS = {"pthread_sigmask", "sigmask_hold", "sigmask_restore"}

linux_only = pytest.mark.skipif(
    portclone.current_backend().name != "linux", reason="bounds measured on the linux backend"
)


def count_calls(fn: Callable[[], None]) -> Counter[str]:
    """Python-level calls (``python``) and signal-mask changes (``mask``) one ``fn()``
    makes in this process, after a first, uncounted call (first use loads modules)."""
    fn()
    counts: Counter[str] = collections.Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            counts["python"] += 1
            if frame.f_code.co_name == "pthread_sigmask":  # signal.py's wrapper
                counts["mask"] += 1
        elif event == "c_call" and getattr(arg, "__name__", "") in MASK_CALLS:
            if frame.f_code.co_name != "pthread_sigmask":  # the wrapper's own call: counted
                counts["mask"] += 1

    sys.setprofile(profile)  # a fork-like child inherits it, and counts in its own copy
    try:
        fn()
    finally:
        sys.setprofile(None)
    return counts


def _noop() -> None:
    return None


def spawn_plain() -> None:
    child = portclone.spawn(["true"])
    child.wait()
    child.close()


def spawn_pipes() -> None:
    child = portclone.spawn(["true"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    child.communicate()
    child.close()


def clone_plain() -> None:
    child = portclone.clone(_noop)
    child.wait()
    child.close()


@linux_only
def test_plain_spawn_makes_no_python_level_signal_hold() -> None:
    # _native.spawn blocks every signal around the clone itself, and a spawn() that opens
    # no fd has nothing for a Python-level hold to protect (the old code made 12 calls)
    counts = count_calls(spawn_plain)
    assert counts["mask"] == 0, counts
    # the old code: 1,219 (most of them the enum conversions of Lib/signal.py); now ~90
    assert counts["python"] <= 150, counts


@linux_only
def test_spawn_with_pipes_holds_signals_twice_at_most() -> None:
    # around the opening of the pipes, and around handing them over; the old code: 15
    counts = count_calls(spawn_pipes)
    assert counts["mask"] <= 4, counts
    assert counts["python"] <= 250, counts  # the old code: 2,063; now ~125


@linux_only
def test_clone_binds_plain_functions_without_inspect() -> None:
    counts = count_calls(clone_plain)
    assert counts["mask"] == 0, counts  # _native.clone blocks every signal itself
    assert counts["python"] <= 30, counts  # the old code: 39 (inspect.signature); now 23


def test_every_backend_holds_signals_cheaply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the backend, no call goes through the enum wrapper any more."""
    for name in portclone.available_backends():
        with portclone.use_backend(name):
            for fn in (spawn_plain, spawn_pipes, clone_plain):
                counts = count_calls(fn)
                assert counts["mask"] <= 8, (name, fn.__name__, counts)
                if name != "fork":  # the fallback's Python path varies with the Python (3.9:
                    # no os.posix_spawn for some requests, so fork + exec in Python)
                    assert counts["python"] <= 400, (name, fn.__name__, counts)


# -- the hold's semantics, with and without the extension ----------------------------


class Raised(Exception):
    pass


@pytest.fixture(params=["native", "fallback"])
def implementation(request: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    native, _ = _loader.native_status()
    if request.param == "native":
        if native is None:
            pytest.skip("no native extension")
    else:
        monkeypatch.setattr(_loader, "_native", None)
    yield request.param


@pytest.fixture
def raising_usr1() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise Raised()

    previous = signal.signal(signal.SIGUSR1, handler)
    before = signal.pthread_sigmask(signal.SIG_SETMASK, {signal.SIGUSR2})  # a mask to keep
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _mask() -> Any:
    return signal.pthread_sigmask(signal.SIG_BLOCK, ())


def _in_one_c_stretch(*calls: Callable[[], Any]) -> list:  # type: ignore[type-arg]
    """Call ``calls`` from C (map), one after the other: no bytecode runs between them,
    so a signal the first one sends is still pending for Python when the next starts."""
    return list(map(operator.methodcaller("__call__"), calls))


@pytest.mark.usefixtures("raising_usr1")
def test_a_handler_raising_during_the_hold_leaves_the_mask(implementation: str) -> None:
    before = _mask()
    kill = functools.partial(os.kill, os.getpid(), signal.SIGUSR1)
    hold = _loader._native.sigmask_hold if implementation == "native" else _sigfd.hold_signals
    with pytest.raises(Raised):
        _in_one_c_stretch(kill, hold)
    assert _mask() == before


@pytest.mark.usefixtures("raising_usr1")
def test_a_handler_raising_at_the_release_finds_the_mask_restored(implementation: str) -> None:
    before = _mask()
    saved = _sigfd.hold_signals()
    assert _mask() == set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    os.kill(os.getpid(), signal.SIGUSR1)  # blocked: pending until the release
    with pytest.raises(Raised):
        _sigfd.release_signals(saved)
    assert _mask() == before
    assert set(_sigfd.signals_in(saved)) == {signal.SIGUSR2}


def test_close_fds_with_nothing_to_close_changes_no_mask() -> None:
    counts: Dict[str, int] = collections.Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and getattr(arg, "__name__", "") in MASK_CALLS:
            counts["mask"] += 1

    sys.setprofile(profile)
    try:
        _sigfd.close_fds([])
    finally:
        sys.setprofile(None)
    assert counts["mask"] == 0


# -- clone()'s bind check without inspect agrees with inspect -----------------------


def _f0() -> None: ...
def _f1(a: int) -> None: ...
def _f2(a: int, b: int = 1) -> None: ...
def _fv(a: int, *rest: int) -> None: ...
def _fk(a: int = 0, *, key: int) -> None: ...
def _fkd(*, key: int = 0) -> None: ...
def _fpos(a: int, /, b: int = 2) -> None: ...
def _fkw(**kw: int) -> None: ...


@functools.wraps(_f1)
def _wrapped(*args: Any, **kwargs: Any) -> None: ...


def _with_signature(*args: Any) -> None: ...


_with_signature.__signature__ = inspect.signature(_f0)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "fn", [_f0, _f1, _f2, _fv, _fk, _fkd, _fpos, _fkw, _wrapped, _with_signature, lambda x=1: x]
)
@pytest.mark.parametrize("nargs", [0, 1, 2, 3])
def test_the_plain_bind_check_never_passes_what_inspect_refuses(fn: Any, nargs: int) -> None:
    args = tuple(range(nargs))
    try:
        inspect.signature(fn).bind(*args)
        binds = True
    except TypeError:
        binds = False
    if _api._binds_plainly(fn, nargs):
        assert binds
    if binds:  # and clone()'s check as a whole passes exactly those
        _api._check_call(fn, args, {})
    else:
        with pytest.raises(TypeError, match="cannot take these arguments"):
            _api._check_call(fn, args, {})
