"""What every child gets, on any backend: exit codes, streams, hooks, the handle."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from conftest import child_value, run_python

import portclone


def returns(value: object) -> object:
    return value


def raises_system_exit(code: object) -> None:
    sys.exit(code)


def raises_error() -> None:
    raise RuntimeError("boom in the child")


@pytest.mark.parametrize(
    "fn, arg, code",
    [
        (returns, None, 0),
        (returns, 7, 7),
        (returns, 256 + 3, 3),
        (returns, "message", 1),
        (raises_system_exit, None, 0),
        (raises_system_exit, 42, 42),
        (raises_system_exit, "bye", 1),
    ],
)
def test_exit_codes_follow_sys_exit(fn: object, arg: object, code: int) -> None:
    with portclone.clone(fn, arg) as child:  # type: ignore[arg-type]
        assert child.wait(timeout=30) == code
    assert child.returncode == code and child.pidfd is None


def test_exception_prints_traceback_and_exits_1() -> None:
    result = run_python("""
        import portclone
        def fail():
            raise RuntimeError("boom in the child")
        print(portclone.clone(fail).wait())
    """)
    assert result.stdout.strip() == "1"
    assert "Traceback" in result.stderr and "RuntimeError: boom in the child" in result.stderr


def test_child_never_returns_into_the_caller() -> None:
    result = run_python(
        """
        import os, portclone
        child = portclone.clone(lambda: None)
        print("after clone in", "child" if os.getpid() != PARENT else "parent", flush=True)
        child.wait()
    """.replace("PARENT", "os.getpid()")
    )
    # the child leaves through os._exit inside clone(): only the parent prints
    assert result.stdout.count("after clone") == 1, result.stdout


def test_stdio_buffers_are_not_printed_twice() -> None:
    result = run_python("""
        import sys, portclone
        sys.stdout = open(sys.stdout.fileno(), "w", buffering=65536, closefd=False)
        print("buffered before clone")
        portclone.clone(print, "from child").wait()
        sys.stdout.flush()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("buffered before clone") == 1, result.stdout
    assert "from child" in result.stdout


def test_register_at_fork_hooks_run() -> None:
    result = run_python("""
        import os, portclone
        # one write(2) per line: print() writes the text and the newline apart when
        # unbuffered (PYTHONUNBUFFERED), and parent and child lines would interleave
        os.register_at_fork(before=lambda: os.write(1, b"before\\n"),
                            after_in_parent=lambda: os.write(1, b"parent\\n"),
                            after_in_child=lambda: os.write(1, b"child\\n"))
        portclone.clone(lambda: 0).wait()
    """)
    lines = result.stdout.split()
    assert sorted(lines) == ["before", "child", "parent"], result.stdout
    assert lines[0] == "before"


def test_args_and_kwargs_reach_the_child() -> None:
    assert child_value(lambda a, b: [a, b], 1, "two") == [1, "two"]

    def kw(*, x: int) -> int:
        return x * 2

    r, w = os.pipe()
    with portclone.clone(lambda: os.write(w, str(kw(x=21)).encode()) and 0) as child:
        os.close(w)
        assert os.read(r, 10) == b"42"
        assert child.wait(timeout=30) == 0
    os.close(r)


def test_wait_timeout_then_kill() -> None:
    child = portclone.clone(time.sleep, 60)
    with pytest.raises(portclone.TimeoutExpired) as info:
        child.wait(timeout=0.2)
    assert info.value.pid == child.pid and info.value.timeout == 0.2
    import subprocess

    assert isinstance(info.value, subprocess.TimeoutExpired)
    assert child.poll() is None
    child.kill()
    assert child.wait(timeout=30) == -signal.SIGKILL
    child.kill()  # after reaping: a no-op, never a stray signal
    child.close()


def test_terminate_gives_negative_signal() -> None:
    with portclone.clone(time.sleep, 60) as child:
        child.terminate()
        assert child.wait(timeout=30) == -signal.SIGTERM


def test_wait_is_retried_when_signals_interrupt_it() -> None:
    """The child exits only after the third SIGALRM has interrupted the parent's wait."""
    hits = []
    r, w = os.pipe()

    def on_alarm(*args: object) -> None:
        hits.append(1)
        if len(hits) == 3:
            os.write(w, b"x")

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        child = portclone.clone(lambda: os.read(r, 1) and 0)
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        try:
            assert child.wait() == 0
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        child.close()
    finally:
        signal.signal(signal.SIGALRM, old)
        os.close(r)
        os.close(w)
    assert len(hits) >= 3


def test_unwaited_child_warns_and_is_reaped_later() -> None:
    r, w = os.pipe()
    child = portclone.clone(lambda: os.close(w) or (os.read(r, 1) and 0))  # EOF when we close w
    pid = child.pid
    with pytest.warns(ResourceWarning, match=f"child process {pid} is still running"):
        del child
        import gc

        gc.collect()
    os.close(w)  # the child's read ends: it exits
    os.close(r)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # it is a zombie now, still ours
    portclone.clone(lambda: 0).wait()  # reaps the orphan on the way
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
