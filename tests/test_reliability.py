"""Reliability: nothing leaks, load does not lose children, faults give typed errors.

The full-size figures (10,000 cycles, 8 threads x 1,000 rounds) come from
``python bench/soak.py`` (bench/results-soak.txt); here the same checks
(tests/leakcheck.py) run small enough for every test run.
"""

from __future__ import annotations

import errno
import faulthandler
import os
import signal

import leakcheck
import pytest
from conftest import (
    TESTS_DIR,
    no_side_effects,
    rounds,
    run_python,
    status_or_hung,
    temporary_cgroup,
)

import portclone
from portclone import Backend
from portclone import CloneFlags as F

#: these tests read /proc (fd tables, children, status): Linux
pytestmark = pytest.mark.requires("proc")

# -- leaks and load ------------------------------------------------------------------------


@pytest.mark.requires("linux")
def test_cycles_leave_nothing_behind() -> None:
    c = leakcheck.cycles(rounds(600, least=300), warmup=30)
    # fds, threads, children and zombies exactly; Python objects and malloc bytes per half,
    # not RSS: in a 2 GiB guest, file pages the kernel had dropped fault back in during the
    # cycles (CI once saw VmRSS +1,824 KiB, nothing leaking)
    assert c.leaks() == {}, f"{c.before} {c.halfway} {c.after}"


@pytest.mark.requires("linux")
def test_the_leak_check_sees_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """An object kept per clone(), and 256 malloc bytes per clone() (C), both fail it."""
    kept: list = []
    real = leakcheck.one_clone
    monkeypatch.setattr(leakcheck, "one_clone", lambda code: (kept.append(object()), real(code)))
    count = rounds(200, least=50)  # a leak per cycle is twice LIMITS: any count shows it
    assert "blocks" in leakcheck.cycles(count, warmup=10).leaks()
    if leakcheck._malloc_in_use is not None:
        import ctypes

        malloc = ctypes.CDLL(None).malloc
        malloc.restype = ctypes.c_void_p
        monkeypatch.setattr(leakcheck, "one_clone", lambda code: (malloc(256), real(code)))
        assert "malloc_kib" in leakcheck.cycles(count, warmup=10).leaks()


def test_the_child_check_sees_a_child_left_running() -> None:
    """conftest.no_child_left_running's view: a running child is seen, a waited one not."""
    from procs import live_children

    before = set(live_children())
    r, w = os.pipe()
    try:
        child = portclone.spawn(["cat"], stdin=r)
    finally:
        os.close(r)
    try:
        assert len(set(live_children()) - before) == 1
    finally:
        os.close(w)  # cat ends at EOF
        assert child.wait(timeout=60) == 0
    assert set(live_children()) - before == set()


@pytest.mark.requires("linux", "2cpus")
def test_threads_cloning_and_spawning_lose_nothing() -> None:
    before = set(leakcheck.children())  # a fixture's children are not this test's
    # the deadline only catches a hang: an emulated arm64 guest on a busy host needs ~4 min
    per_thread = rounds(40, least=10)
    result = leakcheck.load(8, per_thread, deadline=900)
    assert not result.errors, result.errors[:5]
    assert result.hung == 0
    assert result.children == 8 * per_thread * 2
    assert set(leakcheck.children()) - before == set()  # zombies or not: all were waited


# -- the child's end -------------------------------------------------------------------------


def test_child_that_raises_exits_1_with_its_traceback() -> None:
    out = run_python("""
        import portclone
        def boom():
            raise RuntimeError("from the child")
        print("status", portclone.clone(boom).wait(timeout=60), flush=True)
    """)
    assert out.returncode == 0, out.stderr
    assert "status 1" in out.stdout
    assert "RuntimeError: from the child" in out.stderr
    assert out.stdout.count("status") == 1  # the child never returned into the caller


def _wait_for_signal(ready: int) -> int:
    faulthandler.disable()  # pytest's: it would report the SIGSEGV and SIGABRT sent here
    # signal.pause() would race: a signal caught just before pause() starts leaves it
    # blocked for good. Python's wakeup fd records every caught signal, so a read on it
    # returns once one has arrived, and its handler runs right after.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    os.write(ready, b"!")  # a signal before the fork hooks end is dropped, as after os.fork
    while True:
        os.read(wake_r, 1)


COMMON = [
    "SIGTERM",
    "SIGKILL",
    "SIGINT",
    "SIGHUP",
    "SIGQUIT",
    "SIGSEGV",
    "SIGABRT",
    "SIGUSR1",
    "SIGPIPE",
    "SIGALRM",
]


@pytest.mark.parametrize("name", COMMON)
def test_child_killed_by_a_signal_reports_it(portclone_backend: Backend, name: str) -> None:
    sig = getattr(signal, name)
    # the child inherits the caller's dispositions, as after os.fork: Python's own SIGINT
    # handler raises KeyboardInterrupt (exit status 1), its ignored SIGPIPE stays ignored
    handler = signal.getsignal(sig)
    expected = (
        1 if handler is signal.default_int_handler else -signal.SIGKILL if handler == signal.SIG_IGN else -sig
    )
    r, w = os.pipe()
    with portclone.clone(_wait_for_signal, w) as child:
        os.close(w)
        assert os.read(r, 1) == b"!"
        os.close(r)
        child.send_signal(sig)
        if handler == signal.SIG_IGN:
            with pytest.raises(portclone.TimeoutExpired):
                child.wait(timeout=0.5)
            child.kill()
        assert status_or_hung(child, 60) == expected
        assert child.returncode == expected
    if handler == signal.SIG_IGN and name not in ("SIGPIPE", "SIGXFSZ"):
        return  # the caller ignores it (a background job, nohup): so does the program
    with portclone.spawn(["sleep", "60"]) as program:  # restore_signals: PIPE, XFSZ back
        program.send_signal(sig)
        assert program.wait(timeout=60) == -sig


def test_signals_to_a_finished_child_are_harmless(portclone_backend: Backend) -> None:
    with portclone.clone(lambda: 3) as child:
        assert child.wait(timeout=60) == 3
        child.kill()  # nothing to kill, and the pid must not be reused for a stranger
        child.send_signal(signal.SIGTERM)
    assert child.returncode == 3


# -- the kernel's limits ----------------------------------------------------------------------

NPROC = """
import errno, json, os, resource, sys
sys.path.insert(0, {tests!r})
import portclone
portclone.current_backend()  # loaded while still root (.tox is 0700 in a fresh clone)
os.setgid(65534)
os.setuid(65534)
hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
resource.setrlimit(resource.RLIMIT_NPROC, (0, hard))
out = {{}}
for name, start in (("clone", lambda: portclone.clone(lambda: 0)),
                    ("spawn", lambda: portclone.spawn(["true"]))):
    try:
        start().wait(timeout=60)
        out[name] = "started"
    except OSError as e:
        out[name] = [type(e).__name__, e.errno, str(e)]
resource.setrlimit(resource.RLIMIT_NPROC, (hard, hard))
out["after"] = portclone.clone(lambda: 7).wait(timeout=60)  # nothing lost: works again
print(json.dumps(out))
"""


@pytest.mark.requires("linux", "root")
def test_process_limit_is_blocking_io_error_and_nothing_is_lost() -> None:
    import json

    out = run_python(NPROC.format(tests=TESTS_DIR))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    for name in ("clone", "spawn"):
        kind, err, text = got[name]
        assert (kind, err) == ("BlockingIOError", errno.EAGAIN), got
        assert "process limit" in text, text
    assert got["after"] == 7


def _nest_pid_namespaces() -> str:
    """Each level clones the next into a new PID namespace; returns how deep it got."""
    r, w = os.pipe()

    def level(n: int) -> int:
        if n == 1:
            os.close(r)
        try:
            child = portclone.clone(level, n + 1, flags=F.CLONE_NEWPID)
        except OSError as e:
            os.write(w, f"{n} {e.errno} {type(e).__name__}|{e}".encode())
            return 0
        return child.wait(timeout=120)

    with portclone.clone(level, 1, flags=F.CLONE_NEWPID):
        pass
    os.close(w)
    with os.fdopen(r) as f:
        return f.read()


@pytest.mark.requires("linux", "root", "CLONE_NEWPID")
def test_pid_namespace_nesting_limit_is_enospc() -> None:
    report = _nest_pid_namespaces()
    where, err, rest = report.split(" ", 2)
    kind, text = rest.split("|", 1)
    assert int(err) == errno.ENOSPC and kind == "OSError", report
    assert "namespace limit" in text
    # MAX_PID_NS_LEVEL is 32: the 33rd level (counting the caller's) fails
    assert int(where) + portclone._validate._pid_ns_levels() == 33, report


def _cgroup_write(path: str, name: str, value: str) -> None:
    with open(os.path.join(path, name), "w") as f:
        f.write(value)


@pytest.mark.requires("linux", "root", "cgroup2", "clone3")
def test_invalid_domain_cgroup_is_eopnotsupp() -> None:
    """A domain cgroup whose sibling turned threaded is "domain invalid": no process may
    start there (torvalds/linux:Documentation/admin-guide/cgroup-v2.rst, threads)."""
    with temporary_cgroup("portclone-domain") as (parent, _):
        invalid, threaded = os.path.join(parent, "domain"), os.path.join(parent, "threaded")
        os.mkdir(invalid)
        os.mkdir(threaded)
        try:
            try:
                _cgroup_write(threaded, "cgroup.type", "threaded")
            except OSError as e:
                pytest.skip(f"missing threaded cgroups: writing cgroup.type failed ({e})")
            with open(os.path.join(invalid, "cgroup.type")) as f:
                assert f.read().strip() == "domain invalid"
            with no_side_effects(), pytest.raises(OSError) as info:
                portclone.clone(lambda: 0, cgroup=invalid)
            assert info.value.errno == errno.EOPNOTSUPP
            assert "not a valid domain" in str(info.value)
            assert portclone.clone(lambda: 5).wait(timeout=60) == 5  # nothing lost
        finally:
            os.rmdir(threaded)
            os.rmdir(invalid)


@pytest.mark.requires("linux", "root", "cgroup2", "clone3")
def test_cgroup_with_controllers_for_children_is_ebusy() -> None:
    with temporary_cgroup("portclone-busy") as (path, _):
        with open(os.path.join(path, "cgroup.controllers")) as f:
            controllers = f.read().split()
        if not controllers:
            pytest.skip(
                "missing cgroup2 controllers: none are delegated to the v2 hierarchy "
                "here, so no-internal-process cannot be set up"
            )
        os.mkdir(os.path.join(path, "leaf"))
        try:
            _cgroup_write(path, "cgroup.subtree_control", f"+{controllers[0]}")
            with no_side_effects(), pytest.raises(OSError) as info:
                portclone.clone(lambda: 0, cgroup=path)
            assert info.value.errno == errno.EBUSY
            assert "no-internal-process" in str(info.value)
        finally:
            _cgroup_write(path, "cgroup.subtree_control", f"-{controllers[0]}")
            os.rmdir(os.path.join(path, "leaf"))


@pytest.mark.requires("linux", "pidfd")
def test_a_child_whose_status_is_lost_gives_its_pidfd_up_on_close() -> None:
    """SIGCHLD ignored: the kernel reaps the child, and before Linux 6.15 nothing keeps its
    status for the pidfd (simulated here: the owner's exit_status answers None, as such a
    kernel's PIDFD_GET_INFO would).  wait() says the status is lost; close() then closes
    the pidfd, which no reap will need (the bookworm guest kept 25 open)."""
    result = run_python(
        """
        import os, signal, portclone
        from unittest import mock
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        before = sorted(os.listdir("/proc/self/fd"))
        kids = [portclone.spawn(["true"]) for _ in range(5)]
        lost = 0
        for k in kids:
            with mock.patch.object(type(k._pidfd_owner), "exit_status", lambda self: None):
                try:
                    k.wait()
                except ChildProcessError:
                    lost += 1
            k.close()
        print(lost, sorted(os.listdir("/proc/self/fd")) == before)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5", "True"], result.stdout
