"""The contract, for every backend available here (linux, netbsd rules, fork).

For every flag in the table, a backend either honours it, and the flag's real
effect is observed, or refuses it with exactly the documented reason, before
anything exists.  The ``portclone_backend`` fixture comes from portclone's own
pytest plugin (``--portclone-backend NAME`` narrows it).
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import select
import signal
import socket
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Tuple

import pytest
from conftest import (
    GUARDS,
    broken_rules,
    cgroup2_root,
    child_value,
    missing,
    never_runs,
    no_side_effects,
    ns_inode,
    our_pid,
    proc_path,
    temporary_cgroup,
)

import portclone
from portclone import Backend, InvalidFlagsError, UnsupportedFlagError
from portclone import CloneFlags as F
from portclone._flags import TABLE

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
WALL = 0x40000000


def status_field(pid: int, name: str) -> str:
    with open(proc_path(pid, "status")) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1]
    raise KeyError(name)


# -- one real effect per flag ---------------------------------------------------------


def effect_namespace(flag: F, ns: str) -> Callable[[], None]:
    def check() -> None:
        assert child_value(ns_inode, ns, flags=flag) != ns_inode(ns)
        assert child_value(ns_inode, ns) == ns_inode(ns)

    return check


def effect_newuts() -> None:
    before = socket.gethostname()

    def child() -> str:
        socket.sethostname("portclone-test")
        return socket.gethostname()

    assert child_value(child, flags=F.CLONE_NEWUTS) == "portclone-test"
    assert socket.gethostname() == before


def effect_newpid() -> None:
    assert child_value(lambda: [os.getpid(), os.getppid()], flags=F.CLONE_NEWPID) == [1, 0]


def effect_newns() -> None:
    MS_REC, MS_PRIVATE = 0x4000, 1 << 18
    with tempfile.TemporaryDirectory() as where:

        def child() -> list:  # type: ignore[type-arg]
            # keep the mount from propagating back if / is shared
            if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
            if libc.mount(b"tmpfs", where.encode(), b"tmpfs", 0, None) != 0:
                raise OSError(ctypes.get_errno(), "mount tmpfs")
            pathlib.Path(where, "inside").write_text("x")
            return os.listdir(where)

        assert child_value(child, flags=F.CLONE_NEWNS) == ["inside"]
        assert os.listdir(where) == []


def effect_newnet() -> None:
    theirs = child_value(lambda: [n for _, n in socket.if_nameindex()], flags=F.CLONE_NEWNET)
    assert theirs == ["lo"]
    effect_namespace(F.CLONE_NEWNET, "net")()


def effect_newuser() -> None:
    def child() -> list:  # type: ignore[type-arg]
        with open("/proc/self/uid_map") as f:
            return [os.geteuid(), f.read()]

    assert child_value(child, flags=F.CLONE_NEWUSER) == [65534, ""]  # unmapped until mapped
    effect_namespace(F.CLONE_NEWUSER, "user")()


def effect_files() -> None:
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    path = tempfile.mktemp()

    def child() -> int:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)  # lands in the shared table
        os.write(ready_w, str(fd).encode())
        os.fstat(int(os.read(go_r, 32)))  # the parent's fd opened after clone() is here too
        return 0

    handle = portclone.clone(child, flags=F.CLONE_FILES)
    fd = int(os.read(ready_r, 32))
    assert os.path.samestat(os.fstat(fd), os.stat(path))
    mine = os.open("/dev/null", os.O_RDONLY)
    os.write(go_w, str(mine).encode())
    assert handle.wait(timeout=30) == 0
    for f in (fd, mine, ready_r, ready_w, go_r, go_w):
        os.close(f)
    handle.close()
    os.unlink(path)
    # and without the flag the table is a copy
    leaked = child_value(lambda: os.open("/dev/null", os.O_RDONLY))
    with pytest.raises(OSError):
        os.fstat(leaked)


def effect_fs() -> None:
    start = os.getcwd()
    old_umask = os.umask(0o022)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:

            def child() -> int:
                os.chdir(a)
                os.umask(0o077)
                os.write(ready_w, b"1")
                os.read(go_r, 1)
                return 0 if os.getcwd() == os.path.realpath(b) and os.umask(0o077) == 0o027 else 3

            handle = portclone.clone(child, flags=F.CLONE_FS)
            os.read(ready_r, 1)
            assert os.getcwd() == os.path.realpath(a)  # the child's chdir moved us
            assert os.umask(0o027) == 0o077
            os.chdir(b)  # and ours moves the child
            os.write(go_w, b"1")
            assert handle.wait(timeout=30) == 0
            handle.close()
    finally:
        os.chdir(start)
        os.umask(old_umask)
        for f in (ready_r, ready_w, go_r, go_w):
            os.close(f)
    assert child_value(lambda: os.chdir("/") or os.getcwd()) == "/"
    assert os.getcwd() == start  # without the flag, the cwd is the child's own


def effect_vfork() -> None:
    for vfork in (True, False):
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        os.set_blocking(r, False)

        def child(w: int = w, go_r: int = go_r, vfork: bool = vfork) -> int:
            if not vfork:  # a suspended parent could never say go
                os.read(go_r, 1)
            os.write(w, b"done")
            return 0

        handle = portclone.clone(child, flags=F.CLONE_VFORK if vfork else 0)
        try:
            if vfork:  # the parent resumed only once the child was done
                assert os.read(r, 16) == b"done"
            else:  # the parent runs on while the child waits for it
                with pytest.raises(BlockingIOError):
                    os.read(r, 16)
                os.write(go_w, b"!")
            assert handle.wait(timeout=30) == 0
        finally:
            handle.close()
            for fd in (r, w, go_r, go_w):
                os.close(fd)


def effect_pidfd() -> None:
    r, w = os.pipe()
    handle = portclone.clone(lambda: os.read(r, 1) and 6, flags=F.CLONE_PIDFD)
    assert handle.pidfd is not None and not os.get_inheritable(handle.pidfd)
    poller = select.poll()
    poller.register(handle.pidfd, select.POLLIN)
    assert poller.poll(100) == []  # still running
    os.write(w, b"x")
    assert poller.poll(10_000) != []  # readable once it has exited
    result = os.waitid(os.P_PIDFD, handle.pidfd, os.WEXITED)
    assert result is not None and result.si_status == 6 and result.si_pid == handle.pid
    handle.close()
    os.close(r)
    os.close(w)


class Sembuf(ctypes.Structure):
    _fields_ = [("num", ctypes.c_ushort), ("op", ctypes.c_short), ("flg", ctypes.c_short)]


def effect_sysvsem() -> None:
    IPC_PRIVATE, IPC_CREAT, IPC_RMID, GETVAL, SEM_UNDO = 0, 0o1000, 0, 12, 0x1000
    for share in (True, False):
        semid = libc.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)
        assert semid >= 0, os.strerror(ctypes.get_errno())
        try:

            def child(semid: int = semid) -> int:
                op = Sembuf(0, 1, SEM_UNDO)
                return 0 if libc.semop(semid, ctypes.byref(op), 1) == 0 else 9

            with portclone.clone(child, flags=F.CLONE_SYSVSEM if share else 0) as handle:
                assert handle.wait(timeout=30) == 0
            # a private undo list is applied when the child exits; a shared one lives on
            assert libc.semctl(semid, 0, GETVAL) == (1 if share else 0)
        finally:
            libc.semctl(semid, 0, IPC_RMID)


PTRACE_TRACEME, PTRACE_CONT, PTRACE_DETACH, PTRACE_SETOPTIONS = 0, 7, 17, 0x4200
PTRACE_O_TRACEFORK = 0x2


def grandchild_tracer(flags: int, tracefork: bool) -> int:
    """A child traced by us clones a grandchild with ``flags``: whom does it trace to?

    We are the tracer: we continue the traced child through its ptrace-stops (its
    SIGSTOP, a fork event, its SIGCHLD) until it exits, and return the grandchild's
    TracerPid as it was while it ran.
    """
    pid_r, pid_w = os.pipe()
    go_r, go_w = os.pipe()

    def traced_caller() -> int:
        if libc.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
            return 7
        os.kill(os.getpid(), signal.SIGSTOP)  # let the tracer set its options
        grandchild = portclone.clone(lambda: os.read(go_r, 1) and 0, flags=flags)
        os.write(pid_w, f"{grandchild.pid}\n".encode())
        return grandchild.wait()

    caller = portclone.clone(traced_caller)
    os.set_blocking(pid_r, False)
    tracer = None
    deadline = time.monotonic() + 30
    try:
        while True:
            assert time.monotonic() < deadline, "traced child did not finish"
            pid, status = os.waitpid(caller.pid, os.WNOHANG | WALL)
            if pid and os.WIFEXITED(status):
                caller.returncode = os.waitstatus_to_exitcode(status)
                break
            if pid and os.WIFSTOPPED(status):
                if os.WSTOPSIG(status) == signal.SIGSTOP and status >> 16 == 0 and tracer is None:
                    libc.ptrace(PTRACE_SETOPTIONS, caller.pid, None, PTRACE_O_TRACEFORK if tracefork else 0)
                libc.ptrace(PTRACE_CONT, caller.pid, None, None)  # suppress the signal
            if tracer is None:
                try:
                    grandchild = int(os.read(pid_r, 32))
                except BlockingIOError:
                    time.sleep(0.005)
                    continue
                seen = int(status_field(grandchild, "TracerPid"))  # as /proc names pids
                tracer = our_pid(seen) if seen else 0
                if tracer == os.getpid():  # let it go: it starts in a SIGSTOP ptrace-stop
                    os.waitpid(grandchild, WALL)
                    assert libc.ptrace(PTRACE_DETACH, grandchild, None, None) == 0
                os.write(go_w, b"x")
            time.sleep(0.002)
        assert caller.returncode == 0
    finally:
        caller.close()
        for f in (pid_r, pid_w, go_r, go_w):
            os.close(f)
    assert tracer is not None
    return tracer


def effect_ptrace() -> None:
    """CLONE_PTRACE: if the caller is traced, its tracer traces the child too."""
    assert grandchild_tracer(F.CLONE_PTRACE, tracefork=False) == os.getpid()
    assert grandchild_tracer(F.CLONE_IO, tracefork=False) == 0


def effect_untraced() -> None:
    """CLONE_UNTRACED: a tracer's PTRACE_O_TRACEFORK cannot attach to the child."""
    assert grandchild_tracer(F.CLONE_IO, tracefork=True) == os.getpid()
    assert grandchild_tracer(F.CLONE_UNTRACED, tracefork=True) == 0


def effect_parent() -> None:
    r, w = os.pipe()

    def middle() -> int:
        sibling = portclone.clone(
            lambda: os.write(w, f"ppid {os.getppid()}\n".encode()) and 0, flags=F.CLONE_PARENT, exit_signal=0
        )
        assert not sibling.reapable
        with pytest.raises(ChildProcessError, match="CLONE_PARENT"):
            sibling.wait()
        os.write(w, f"pid {sibling.pid}\n".encode())
        return 0

    handle = portclone.clone(middle)
    assert handle.wait(timeout=30) == 0
    os.close(w)
    with os.fdopen(r) as f:
        report = dict(line.split() for line in f.read().splitlines())
    assert int(report["ppid"]) == os.getpid()  # our child's child reports to us
    _, status = os.waitpid(int(report["pid"]), WALL)  # ours to reap; exit signal 0: __WALL
    assert os.waitstatus_to_exitcode(status) == 0
    handle.close()


def effect_io() -> None:
    """CLONE_IO shares the I/O context, which holds no user-visible state since the I/O
    priority moved into the task (Linux 5.x): what can be checked is that the kernel
    accepted the flag on the raw clone path and the child ran."""
    with portclone.clone(lambda: 5, flags=F.CLONE_IO) as handle:
        assert handle.wait(timeout=30) == 5
    assert handle.syscall in ("clone3", "clone")


def caught_mask() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    raise KeyError("SigCgt")


def effect_clear_sighand() -> None:
    old = signal.signal(signal.SIGUSR2, lambda *a: None)
    try:

        def child() -> list:  # type: ignore[type-arg]
            caught = bool(caught_mask() & (1 << (signal.SIGUSR2 - 1)))
            return [caught, signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL]

        # the kernel and Python's own table agree in the child
        assert child_value(child, flags=F.CLONE_CLEAR_SIGHAND) == [False, True]
        assert child_value(child, flags=F.CLONE_IO) == [True, False]
    finally:
        signal.signal(signal.SIGUSR2, old)


def cgroup_of_self() -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return ""


def effect_into_cgroup() -> None:
    with temporary_cgroup("portclone-test") as (path, expected):
        with no_side_effects():
            assert child_value(cgroup_of_self, cgroup=path) == expected
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert child_value(cgroup_of_self, cgroup=fd) == expected
        finally:
            os.close(fd)
        assert cgroup_of_self() != expected


#: flag -> (its effect, what it needs)
EFFECTS: Dict[int, Tuple[Callable[[], None], Tuple[str, ...]]] = {
    F.CLONE_FS: (effect_fs, ()),
    F.CLONE_FILES: (effect_files, ()),
    F.CLONE_PIDFD: (effect_pidfd, ("pidfd",)),
    F.CLONE_PTRACE: (effect_ptrace, ("root",)),
    F.CLONE_VFORK: (effect_vfork, ()),
    F.CLONE_PARENT: (effect_parent, ()),
    F.CLONE_NEWNS: (effect_newns, ("root", "CLONE_NEWNS")),
    F.CLONE_SYSVSEM: (effect_sysvsem, ()),
    F.CLONE_UNTRACED: (effect_untraced, ("root",)),
    F.CLONE_NEWCGROUP: (effect_namespace(F.CLONE_NEWCGROUP, "cgroup"), ("root", "CLONE_NEWCGROUP")),
    F.CLONE_NEWUTS: (effect_newuts, ("root", "CLONE_NEWUTS")),
    F.CLONE_NEWIPC: (effect_namespace(F.CLONE_NEWIPC, "ipc"), ("root", "CLONE_NEWIPC")),
    F.CLONE_NEWUSER: (effect_newuser, ("CLONE_NEWUSER",)),
    F.CLONE_NEWPID: (effect_newpid, ("root", "CLONE_NEWPID")),
    F.CLONE_NEWNET: (effect_newnet, ("root", "CLONE_NEWNET")),
    F.CLONE_IO: (effect_io, ()),
    F.CLONE_NEWTIME: (effect_namespace(F.CLONE_NEWTIME, "time"), ("root", "CLONE_NEWTIME")),
    F.CLONE_CLEAR_SIGHAND: (effect_clear_sighand, ("clone3",)),
    F.CLONE_INTO_CGROUP: (effect_into_cgroup, ("root", "clone3", "cgroup2")),
}


def request_for(flag: F) -> Dict[str, Any]:
    """The smallest request that uses ``flag`` and is valid everywhere."""
    kwargs: Dict[str, Any] = {"flags": flag}
    if flag in (F.CLONE_SIGHAND,):
        kwargs["flags"] = flag | F.CLONE_VM
    if flag == F.CLONE_THREAD:
        kwargs["flags"] = flag | F.CLONE_SIGHAND | F.CLONE_VM
    if flag in (F.CLONE_PARENT, F.CLONE_THREAD, F.CLONE_AUTOREAP):
        kwargs["exit_signal"] = 0
    if flag == F.CLONE_INTO_CGROUP:
        root = cgroup2_root()
        if root is None:
            pytest.skip("missing cgroup2: no cgroup v2 hierarchy to name in the request")
        kwargs["cgroup"] = root
    return kwargs


@pytest.mark.parametrize("flag", [info.flag for info in TABLE], ids=[info.name for info in TABLE])
def test_flag_has_its_effect_or_its_documented_error(portclone_backend: Backend, flag: F) -> None:
    if flag == F.CLONE_PARENT and missing("not-pid1"):
        pytest.skip(f"missing not-pid1: {missing('not-pid1')}")
    reason = portclone_backend.why_refused(flag)
    if reason is None:
        assert int(flag) in EFFECTS, f"{flag} is honoured by {portclone_backend.name} but has no effect test"
        effect, needs = EFFECTS[int(flag)]
        for feature in ("proc", *needs):  # each effect is seen in /proc
            why = missing(feature)
            if why:
                pytest.skip(f"missing {feature}: {why}")
        effect()
        return
    kwargs = request_for(flag)
    alone_invalid = broken_rules(int(kwargs["flags"]))
    if alone_invalid:  # CLONE_DETACHED: invalid on every backend, whatever the table says
        with no_side_effects(), pytest.raises(InvalidFlagsError) as invalid:
            portclone.clone(never_runs, **kwargs)
        error = invalid.value
        assert [refusal.reason for refusal in error.refusals if refusal.invalid] == alone_invalid
        if reason is not None:  # what the backend says of the flag is named too
            assert reason in [refusal.reason for refusal in error.refusals]
        return
    with no_side_effects(), pytest.raises(UnsupportedFlagError) as info:
        portclone.clone(never_runs, **kwargs)
    error = info.value
    assert error.backend == portclone_backend.name
    assert flag & error.flags
    assert error.reasons[str(flag)] == reason
    assert f"backend {portclone_backend.name!r}" in str(error)
    assert not error.supported & flag


# -- exit signals and set_tid ----------------------------------------------------------


def exit_signal_support(backend: Backend, sig: int) -> Optional[str]:
    try:
        portclone.check(0, exit_signal=sig)
    except UnsupportedFlagError as e:
        return e.reasons["exit_signal"]
    return None


@pytest.mark.parametrize("sig", [signal.SIGUSR1, 0])
def test_exit_signal_is_delivered_reaped_or_refused(portclone_backend: Backend, sig: int) -> None:
    got = []
    # a handler first: at its default action SIGUSR1 would end this process (refused)
    old = signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    try:
        why = exit_signal_support(portclone_backend, sig)
        if why is not None:
            assert portclone_backend.name == "fork" and "SIGCHLD" in why
            with no_side_effects(), pytest.raises(UnsupportedFlagError):
                portclone.clone(never_runs, exit_signal=sig)
            return
        handle = portclone.clone(lambda: 3, exit_signal=sig)
        os.waitid(os.P_PID, handle.pid, os.WEXITED | os.WNOWAIT | WALL)  # exited, not reaped
        with pytest.raises(ChildProcessError):  # invisible to a plain waitpid
            os.waitpid(handle.pid, os.WNOHANG)
        assert handle.wait(timeout=30) == 3
        if sig:
            deadline = time.monotonic() + 5 * GUARDS  # a guard: the signal comes at the exit
            while not got and time.monotonic() < deadline:
                time.sleep(0.01)
            assert got == [sig]
        else:
            assert got == []
        handle.close()
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_netbsd_exit_signal_range() -> None:
    if "netbsd" not in portclone.available_backends():
        pytest.skip("missing the netbsd backend: portclone._native is not built here")
    with portclone.use_backend("netbsd"), no_side_effects():
        with pytest.raises(portclone.InvalidFlagsError, match="NetBSD's exit signals are 0 to 63"):
            portclone.clone(never_runs, exit_signal=64)


def test_set_tid_only_where_the_kernel_can(portclone_backend: Backend) -> None:
    if portclone_backend.name == "linux" and missing("clone3") is None:
        # accepted; its effect (the chosen pid) is tested in test_linux.py
        assert portclone.check(0, set_tid=[4242]) == 0
        return
    with no_side_effects(), pytest.raises(UnsupportedFlagError) as info:
        portclone.clone(never_runs, set_tid=[4242])
    assert "set_tid" in info.value.reasons


def test_nothing_leaks_on_refused_calls(portclone_backend: Backend) -> None:
    refused = [info.flag for info in TABLE if portclone_backend.why_refused(info.flag)]
    with no_side_effects():
        for _ in range(20):
            for flag in refused:
                with pytest.raises((UnsupportedFlagError, portclone.InvalidFlagsError)):
                    portclone.clone(never_runs, **request_for(flag))
