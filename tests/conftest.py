"""Shared test machinery: probe-driven skips, child helpers, side-effect checks."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from procs import children, live_children

import portclone
from portclone import CloneFlags

#: this directory (helpers such as seccomp_filter.py live here)
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

#: The share of its rounds that a test repeating a step to provoke a race runs
#: (``PORTCLONE_TEST_ROUNDS``, 1 when unset).  vm/vmctl.py sets 0.25 in a guest QEMU
#: emulates (TCG): such a guest is there for its kernel and its ABI (syscall numbers,
#: clone's argument order, struct layouts), and an emulated arm64 runs with the x86
#: host's stronger memory order, so repeating a race there finds nothing the host's full
#: count misses.  Each test keeps a floor of rounds that still shows its defect.
ROUNDS = float(os.environ.get("PORTCLONE_TEST_ROUNDS", "1"))


def rounds(full: int, least: int) -> int:
    """``full`` rounds on the host; in an emulated guest ROUNDS of them, ``least`` at fewest."""
    return max(least, min(full, round(full * ROUNDS)))


#: How much longer the helpers' guards against a hang wait (``PORTCLONE_TEST_GUARDS``, 1
#: when unset; vm/vmctl.py sets 5 under TCG, where an emulated s390x starts Python in
#: seconds).  A guard only ends a test that would never finish; none decides an outcome.
GUARDS = float(os.environ.get("PORTCLONE_TEST_GUARDS", "1"))


# -- features, probed (never guessed from version numbers) ---------------------


@contextlib.contextmanager
def temporary_cgroup(name: str) -> Iterator[Tuple[str, str]]:
    """A new cgroup v2 directory: (its path, its path as /proc/<pid>/cgroup names it)."""
    root = cgroup2_root()
    assert root is not None
    path = os.path.join(root, f"{name}-{os.getpid()}")
    os.mkdir(path)
    try:
        yield path, "/" + os.path.relpath(path, root)
    finally:
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(path)
                break
            except OSError:  # EBUSY until the last member is fully gone
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def cgroup2_root() -> Optional[str]:
    """Where cgroup v2 is mounted, from /proc/self/mountinfo."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split()[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        pass
    return None


def initial_user_namespace_missing() -> Optional[str]:
    """Why this process is not in the initial user namespace (where root is host root), or None."""
    try:
        with open("/proc/self/uid_map") as f:
            whole = f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return "needs the initial user namespace: /proc/self/uid_map cannot be read"
    return (
        None
        if whole
        else (
            "needs root of the initial user namespace (CAP_SYS_ADMIN over the host); this is "
            "root of a user namespace (/proc/self/uid_map maps only part of the ids)"
        )
    )


@functools.cache
def missing(feature: str) -> Optional[str]:
    """Why ``feature`` is unavailable here, or None."""
    backend = portclone.current_backend()
    if feature == "root":  # root of its user namespace: inside `unshare -Ur` too
        return None if os.geteuid() == 0 else "needs root (euid 0)"
    if feature == "host-root":
        if os.geteuid() != 0:
            return "needs root of the initial user namespace (euid 0 with CAP_SYS_ADMIN over the host)"
        return initial_user_namespace_missing()
    if feature == "setgroups-allow":
        try:
            with open("/proc/self/setgroups") as f:
                deny = f.read().strip() == "deny"
        except OSError:
            deny = False
        return (
            "this user namespace's /proc/self/setgroups is deny: the kernel refuses allow in "
            "every user namespace below it"
            if deny
            else None
        )
    if feature == "not-pid1":
        return (
            "this process is the init (pid 1) of its PID namespace: the kernel refuses "
            "CLONE_PARENT from it (it has no parent to share)"
            if os.getpid() == 1
            else None
        )
    if feature == "proc":
        return (
            None
            if os.path.isdir("/proc/self/fd")
            else ("/proc is not mounted here (macOS and the BSDs have none): the test reads it")
        )
    if feature == "linux":
        return None if backend.name == "linux" else f"needs the linux backend (have {backend.name})"
    if backend.name != "linux":
        return f"{feature}: needs the linux backend"
    if feature == "clone3":
        return backend.clone3_missing()  # type: ignore[attr-defined, no-any-return]
    if feature == "pidfd":
        return None if backend.pidfd_available() else "the kernel gives no pidfds"  # type: ignore
    if feature == "cgroup2":
        root = cgroup2_root()
        if root is None:
            return "no cgroup v2 hierarchy is mounted"
        return None if os.access(root, os.W_OK) else f"cgroup v2 at {root} is not writable"
    if feature == "2cpus":
        n = len(os.sched_getaffinity(0))
        return None if n >= 2 else f"needs 2 CPUs in the affinity mask, have {n}"
    if feature == "seccomp":
        if not os.path.exists("/proc/self/status"):
            return "/proc is not mounted: whether the kernel has seccomp cannot be read"
        with open("/proc/self/status") as f:
            return None if "Seccomp:" in f.read() else "the kernel has no seccomp"
    if feature == "tid_repair":
        native = sys.modules["portclone._native"]
        return None if native.tid_offset() >= 0 else "libc's thread descriptor tid was not found"
    if feature.startswith("CLONE_"):
        return backend.probe(CloneFlags[feature])  # type: ignore[attr-defined, no-any-return]
    raise ValueError(f"unknown feature {feature!r} in a requires marker")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("requires"):
        for feature in marker.args:
            why = missing(feature)
            if why:
                pytest.skip(f"missing {feature}: {why}")


# -- running code in children ----------------------------------------------------


def child_value(fn: Callable[..., Any], *args: Any, timeout: float = 60, **clone_kw: Any) -> Any:
    """Run ``fn(*args)`` in a clone()d child and return its JSON-able result."""
    r, w = os.pipe()

    def body() -> int:
        os.close(r)
        try:
            value: Any = {"ok": fn(*args)}
        except BaseException as e:  # report, don't hide: the test shows it
            value = {"error": f"{type(e).__name__}: {e}"}
        with os.fdopen(w, "w") as out:
            json.dump(value, out)
        return 0

    try:
        child = portclone.clone(body, **clone_kw)
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    with child:
        code = child.wait(timeout=timeout * GUARDS)
    assert code == 0, f"child exited with {code}"
    result = json.loads(data)
    assert "error" not in result, result["error"]
    return result["ok"]


def run_python(
    code: str,
    *,
    timeout: float = 120,
    env: Optional[Dict[str, str]] = None,
    cwd: Optional[str] = None,
    prefix: Tuple[str, ...] = (),
) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """Run ``code`` in a fresh interpreter (the place for seccomp filters and the like),
    under the command line ``prefix`` (``unshare ...``) if given.  ``timeout``: the guard
    against a hang, times GUARDS."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout * GUARDS,
        env=full_env,
        cwd=cwd,
    )


@contextlib.contextmanager
def busy_threads(work: Callable[[], None], count: int = 4) -> Iterator[None]:
    """``count`` daemon threads calling ``work`` in a loop until the block ends."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            work()

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(count)]
    for t in workers:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in workers:
            t.join(10)


def status_or_hung(child: portclone.Child, timeout: float = 30) -> object:
    """The child's exit status, or "hung" (and the child killed) after ``timeout`` (times
    GUARDS)."""
    try:
        return child.wait(timeout=timeout * GUARDS)
    except portclone.TimeoutExpired:
        child.kill()
        child.wait()
        return "hung"
    finally:
        child.close()


def broken_rules(flags: int) -> list:  # type: ignore[type-arg]
    """The messages of the kernel rules ``flags`` breaks on every kernel (CLONE_DETACHED's)."""
    from portclone._flags import RULES

    return [rule.message for rule in RULES if rule.broken_by(flags) and not rule.lifted_by]


# -- nothing happened ---------------------------------------------------------------


# -- pids as /proc names them ---------------------------------------------------------
# In a PID namespace that sees an outer /proc (unshare -pf without --mount-proc) the pid
# os.getpid() or Child.pid gives and the /proc/<pid> of that process differ: /proc names
# processes in the namespace it was mounted from.  /proc/self is always right.


@functools.cache
def _proc_depth() -> int:
    """How many PID namespaces /proc/self/status lists us in: 1 when /proc is our own."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return len(line.split()) - 1
    return 1  # a kernel before 4.1 says nothing: take /proc to be ours


def proc_pid(pid: int) -> int:
    """The number /proc gives process ``pid`` (a pid as this process sees pids), asked of the
    kernel through a pidfd: ProcessLookupError if it is gone (reaped)."""
    if _proc_depth() == 1:
        return pid
    fd = os.pidfd_open(pid)  # ProcessLookupError when no such process
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    seen = int(line.split()[1])
                    if seen <= 0:
                        raise ProcessLookupError(pid)
                    return seen
    finally:
        os.close(fd)
    raise OSError(f"/proc/self/fdinfo/{fd} has no Pid: line")


def pid_return_closed() -> bool:
    """Whether this thread, once in another PID namespace for its children, could not
    return to its own: Linux needs CAP_SYS_ADMIN over the namespace's owning user
    namespace (pidns_install), which a process of a user namespace lacks over one its
    user namespace does not own (``unshare -Ur`` without ``-p``).  portclone then refuses
    join={"pid": ...} before the clone."""
    import fcntl

    try:
        fd = os.open("/proc/thread-self/ns/pid_for_children", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        owner = fcntl.ioctl(fd, 0xB701)  # NS_GET_USERNS, torvalds/linux:include/uapi/linux/nsfs.h
    except OSError:
        return True  # EPERM: its owner is outside this process's user namespace
    finally:
        os.close(fd)
    try:
        return os.fstat(owner).st_ino != os.stat("/proc/self/ns/user").st_ino
    finally:
        os.close(owner)


def foreign_proc() -> bool:
    """Whether the mounted /proc belongs to an outer PID namespace (its numbers are not
    ours: ``unshare -pf`` without ``--mount-proc``)."""
    return _proc_depth() != 1


def proc_path(pid: int, *parts: str) -> str:
    """/proc/<pid>/<parts...> for process ``pid`` as this process sees pids."""
    return os.path.join("/proc", str(proc_pid(pid)), *parts)


def our_pid(seen: int) -> int:
    """The reverse of proc_pid: a pid /proc lists (a children file, say) as we see pids."""
    depth = _proc_depth()
    if depth == 1:
        return seen
    with open(f"/proc/{seen}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[depth])
    raise OSError(f"/proc/{seen}/status has no NSpid: line")


def children_of(pid: int) -> List[int]:
    """The children of process ``pid`` (its main thread's), as this process sees pids."""
    with open(proc_path(pid, "task", str(proc_pid(pid)), "children")) as f:
        return [our_pid(int(p)) for p in f.read().split()]


def _open_fds() -> List[str]:
    """This process's open fds, as listed in /proc/self/fd (or /dev/fd), else probed."""
    for where in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(where):
            return sorted(os.listdir(where))
    found = []
    for fd in range(min(os.sysconf("SC_OPEN_MAX"), 65536)):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(str(fd))
    return found


def _state() -> Dict[str, Any]:
    return {
        "fds": _open_fds(),
        "cwd": os.getcwd(),
        "umask": os.umask(os.umask(0)),
        "handlers": {
            s: signal.getsignal(s)
            for s in signal.valid_signals()
            if s not in (signal.SIGKILL, signal.SIGSTOP)
        },
        "children": children(),
    }


@contextlib.contextmanager
def no_side_effects() -> Iterator[None]:
    """Assert the block created no child, opened no fd and changed no cwd/umask/handler."""
    before = _state()
    yield
    after = _state()
    # listing /proc/self/fd opens one fd that is gone again: compare the sets
    assert after["fds"] == before["fds"], "file descriptors leaked"
    assert after["children"] == before["children"], "a child process was created"
    for key in ("cwd", "umask", "handlers"):
        assert after[key] == before[key], f"{key} changed"


def _end(seen: str) -> None:
    """Kill and reap a child a test left running, named by its pid as /proc names it;
    through a pidfd taken while it is still this process's unreaped child, so a pid
    recycled meanwhile is never signalled."""
    try:
        pid = our_pid(int(seen))
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return  # gone, or no pidfd_open (Python < 3.9): left as it is
    try:
        if seen not in children():
            return  # reaped before the pidfd was taken: the pid may be another's
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        return
    finally:
        os.close(fd)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # its owner reaped it


@pytest.fixture(autouse=True)
def no_child_left_running() -> Iterator[None]:
    """Fail the test that leaves a child of the test process running: a leak is then said
    by its cause, not by a later test that counts children.  Compared before with after,
    so children of higher-scoped fixtures are not counted.  A test whose children end
    asynchronously waits for them itself.  The leftovers are killed and reaped."""
    before = live_children()
    yield
    left = {seen: what for seen, what in live_children().items() if seen not in before}
    for seen in left:
        _end(seen)
    if left:
        pytest.fail(f"the test left {len(left)} child(ren) running: {left}", pytrace=False)


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    """Name the running test in $PORTCLONE_TEST_NOW: tools/in_setting.py says which test
    killed the interpreter (an abort in portclone) and runs the rest again without it."""
    now = os.environ.get("PORTCLONE_TEST_NOW")
    if now:
        with open(now, "w") as f:
            f.write(nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """pytest exits 5 when no test was collected (e.g. a -k that matches nothing):
    say so loudly, but do not fail the tox environment for it."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("\nportclone: no tests were collected; treating pytest's exit 5 as success")
        session.exitstatus = pytest.ExitCode.OK


class NulFree(bytes):
    """Bytes that deny holding a NUL byte: hostile input a check must read past."""

    def __contains__(self, item: object) -> bool:
        return False


def never_runs() -> int:
    """A child function for calls that must be refused: it fails if it ever runs."""
    raise AssertionError("the child must not exist")


def ns_inode(name: str) -> int:
    """The inode of this process's ``name`` namespace (/proc/self/ns/<name>)."""
    return os.stat(f"/proc/self/ns/{name}").st_ino


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (from /proc)."""
    try:
        with open(proc_path(pid, "stat")) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
