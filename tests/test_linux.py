"""The Linux backend against the real kernel: every supported flag has its effect."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import pathlib
import select
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings

import pytest
from conftest import cgroup2_root, child_value, no_side_effects, run_python

import portclone
from portclone import CloneFlags as F
from portclone._flags import RULES

pytestmark = pytest.mark.requires("linux")
TESTS = os.path.dirname(os.path.abspath(__file__))


def ns_inode(name: str) -> int:
    return os.stat(f"/proc/self/ns/{name}").st_ino


# -- namespaces really isolate ----------------------------------------------------

@pytest.mark.requires("root", "CLONE_NEWUTS")
def test_newuts_hostname_stays_in_child() -> None:
    before = socket.gethostname()

    def child() -> str:
        socket.sethostname("portclone-test")
        return socket.gethostname()

    assert child_value(child, flags=F.CLONE_NEWUTS) == "portclone-test"
    assert socket.gethostname() == before


@pytest.mark.requires("root", "CLONE_NEWPID")
def test_newpid_child_is_pid_1() -> None:
    assert child_value(lambda: [os.getpid(), os.getppid()], flags=F.CLONE_NEWPID) == [1, 0]


@pytest.mark.requires("root", "CLONE_NEWNS")
def test_newns_mounts_stay_in_child() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
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


@pytest.mark.requires("root", "CLONE_NEWNET")
def test_newnet_has_only_loopback() -> None:
    ours = {name for _, name in socket.if_nameindex()}
    theirs = child_value(lambda: [n for _, n in socket.if_nameindex()], flags=F.CLONE_NEWNET)
    assert theirs == ["lo"]
    assert ours != {"lo"} or True  # the host may have only lo; the inode check is below
    assert child_value(ns_inode, "net", flags=F.CLONE_NEWNET) != ns_inode("net")


@pytest.mark.requires("root")
@pytest.mark.parametrize("flag, ns", [
    (F.CLONE_NEWIPC, "ipc"), (F.CLONE_NEWCGROUP, "cgroup"), (F.CLONE_NEWTIME, "time"),
    (F.CLONE_NEWUSER, "user"), (F.CLONE_NEWUTS, "uts"), (F.CLONE_NEWNS, "mnt"),
    (F.CLONE_NEWPID, "pid"),
])
def test_each_namespace_is_new(flag: F, ns: str) -> None:
    why = portclone.current_backend().probe(flag)  # type: ignore[attr-defined]
    if why:
        pytest.skip(f"missing {flag}: {why}")
    assert child_value(ns_inode, ns, flags=flag) != ns_inode(ns)
    assert child_value(ns_inode, ns) == ns_inode(ns)


@pytest.mark.requires("CLONE_NEWUSER")
def test_newuser_child_is_unmapped_until_mapped() -> None:
    def child() -> list:  # type: ignore[type-arg]
        with open("/proc/self/uid_map") as f:
            return [os.geteuid(), f.read()]

    assert child_value(child, flags=F.CLONE_NEWUSER) == [65534, ""]


# -- sharing is observed in both directions -------------------------------------------

def test_files_table_is_shared_both_ways() -> None:
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    path = tempfile.mktemp()

    def child() -> int:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)  # lands in the shared table
        os.write(ready_w, str(fd).encode())
        parents = int(os.read(go_r, 32))
        os.fstat(parents)  # the parent's fd opened after clone() is visible here
        return 0

    child_handle = portclone.clone(child, flags=F.CLONE_FILES)
    fd = int(os.read(ready_r, 32))
    assert os.path.samestat(os.fstat(fd), os.stat(path))  # the child's fd, seen by us
    mine = os.open("/dev/null", os.O_RDONLY)
    os.write(go_w, str(mine).encode())
    assert child_handle.wait(timeout=30) == 0
    for f in (fd, mine, ready_r, ready_w, go_r, go_w):
        os.close(f)
    child_handle.close()
    os.unlink(path)


def test_without_files_the_table_is_a_copy() -> None:
    fd = child_value(lambda: os.open("/dev/null", os.O_RDONLY))
    with pytest.raises(OSError):
        os.fstat(fd)


def test_fs_cwd_and_umask_shared_both_ways() -> None:
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


def test_without_fs_cwd_is_private() -> None:
    start = os.getcwd()
    assert child_value(lambda: os.chdir("/") or os.getcwd()) == "/"
    assert os.getcwd() == start


# -- sysvsem, ptrace, parent, io, untraced ---------------------------------------------

class Sembuf(ctypes.Structure):
    _fields_ = [("num", ctypes.c_ushort), ("op", ctypes.c_short), ("flg", ctypes.c_short)]


@pytest.mark.parametrize("share", [True, False])
def test_sysvsem_undo_list_shared(share: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    IPC_PRIVATE, IPC_CREAT, IPC_RMID, GETVAL, SEM_UNDO = 0, 0o1000, 0, 12, 0x1000
    semid = libc.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)
    assert semid >= 0, os.strerror(ctypes.get_errno())
    try:
        def child() -> int:
            op = Sembuf(0, 1, SEM_UNDO)
            return 0 if libc.semop(semid, ctypes.byref(op), 1) == 0 else 9

        flags = F.CLONE_SYSVSEM if share else 0
        with portclone.clone(child, flags=flags, exit_signal=signal.SIGCHLD) as handle:
            assert handle.wait(timeout=30) == 0
        # a private undo list is applied when the child exits; a shared one lives on with us
        assert libc.semctl(semid, 0, GETVAL) == (1 if share else 0)
    finally:
        libc.semctl(semid, 0, IPC_RMID)


def _status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1]
    raise KeyError(name)


@pytest.mark.parametrize("ptrace", [True, False])
def test_ptrace_child_of_a_traced_caller_is_traced_too(ptrace: bool) -> None:
    """CLONE_PTRACE: if the caller is traced, its tracer traces the child as well."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    PTRACE_TRACEME, PTRACE_DETACH, WALL = 0, 17, 0x40000000
    pid_r, pid_w = os.pipe()
    go_r, go_w = os.pipe()

    def traced_caller() -> int:
        if libc.ptrace(PTRACE_TRACEME, 0, None, None) != 0:
            return 7
        grandchild = portclone.clone(lambda: os.read(go_r, 1) and 0, exit_signal=0,
                                     flags=F.CLONE_PTRACE if ptrace else F.CLONE_IO)
        os.write(pid_w, f"{grandchild.pid}\n".encode())
        return grandchild.wait()

    caller = portclone.clone(traced_caller)
    grandchild = int(os.read(pid_r, 32))
    try:
        tracer = int(_status_field(grandchild, "TracerPid"))
        if ptrace:
            assert tracer == os.getpid()
            # it starts in a SIGSTOP ptrace-stop; let it go without the signal
            _, status = os.waitpid(grandchild, WALL)
            assert os.WIFSTOPPED(status)
            assert libc.ptrace(PTRACE_DETACH, grandchild, None, None) == 0
        else:
            assert tracer == 0
    finally:
        os.write(go_w, b"x")
        assert caller.wait(timeout=30) == 0
        caller.close()
        for f in (pid_r, pid_w, go_r, go_w):
            os.close(f)


@pytest.mark.parametrize("flag", [F.CLONE_IO, F.CLONE_UNTRACED])
def test_flags_without_visible_state_are_accepted_and_run(flag: F) -> None:
    with portclone.clone(lambda: 5, flags=flag) as handle:
        assert handle.wait(timeout=30) == 5
    assert handle.syscall in ("clone3", "clone")


def test_parent_makes_a_sibling() -> None:
    r, w = os.pipe()

    def middle() -> int:
        sibling = portclone.clone(lambda: os.write(w, f"{os.getppid()}\n".encode()) and 0,
                                  flags=F.CLONE_PARENT, exit_signal=0)
        assert not sibling.reapable
        with pytest.raises(ChildProcessError, match="CLONE_PARENT"):
            sibling.wait()
        os.write(w, f"{sibling.pid}\n".encode())
        return 0

    handle = portclone.clone(middle)
    assert handle.wait(timeout=30) == 0
    os.close(w)
    with os.fdopen(r) as f:
        lines = sorted(f.read().split())
    sibling_ppid, sibling_pid = sorted(lines, key=lambda x: int(x) != os.getpid())
    assert int(sibling_ppid) == os.getpid()  # our child's child reports to us
    # it is ours to reap (exit signal 0: only __WALL sees it)
    _, status = os.waitpid(int(sibling_pid), 0x40000000)
    assert os.waitstatus_to_exitcode(status) == 0
    handle.close()


@pytest.mark.requires("root", "CLONE_NEWPID")
def test_newpid_with_parent_is_accepted_man_page_lags_kernel() -> None:
    """clone(2) lists NEWPID|PARENT as EINVAL; Linux accepts it since 3.13."""
    assert portclone.check(F.CLONE_NEWPID | F.CLONE_PARENT, exit_signal=0)


# -- vfork, exit signals, pidfds -----------------------------------------------------------

@pytest.mark.parametrize("vfork", [True, False])
def test_vfork_suspends_the_parent_until_the_child_exits(vfork: bool) -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)

    def child() -> int:
        time.sleep(0.3)
        os.write(w, b"done")
        return 0

    # without VFORK, CLONE_IO keeps the comparison on the raw clone path
    handle = portclone.clone(child, flags=F.CLONE_VFORK if vfork else F.CLONE_IO)
    try:
        if vfork:  # the kernel woke us at the child's exit: its last write is there
            assert os.read(r, 16) == b"done"
        else:
            with pytest.raises(BlockingIOError):
                os.read(r, 16)
        assert handle.wait(timeout=30) == 0
    finally:
        handle.close()
        os.close(r)
        os.close(w)


def test_exit_signal_sigusr1_is_delivered_and_reaped() -> None:
    got = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    try:
        handle = portclone.clone(lambda: 3, exit_signal=signal.SIGUSR1)
        # a plain waitpid does not see a child whose exit signal is not SIGCHLD
        time.sleep(0.2)
        with pytest.raises(ChildProcessError):
            os.waitpid(handle.pid, os.WNOHANG)
        assert handle.wait(timeout=30) == 3
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [signal.SIGUSR1]
        handle.close()
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_exit_signal_zero_is_reaped() -> None:
    with portclone.clone(lambda: 4, exit_signal=0) as handle:
        assert handle.wait(timeout=30) == 4


@pytest.mark.requires("pidfd")
def test_pidfd_works_with_waitid_and_poll() -> None:
    r, w = os.pipe()
    handle = portclone.clone(lambda: os.read(r, 1) and 6)
    assert handle.pidfd is not None
    assert not os.get_inheritable(handle.pidfd)
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


@pytest.mark.requires("pidfd")
@pytest.mark.parametrize("flags", [0, F.CLONE_PIDFD])
def test_plain_request_uses_libc_fork_and_still_gets_a_pidfd(flags: int) -> None:
    with portclone.clone(lambda: 0, flags=flags) as handle:
        assert handle.syscall == "fork"
        assert handle.pidfd is not None
        assert handle.wait(timeout=30) == 0


# -- cgroups, set_tid ----------------------------------------------------------------------

@pytest.fixture
def cgroup_dir() -> str:  # type: ignore[misc]
    root = cgroup2_root()
    assert root is not None
    path = os.path.join(root, f"portclone-test-{os.getpid()}")
    os.mkdir(path)
    yield path
    deadline = time.monotonic() + 10
    while True:
        try:
            os.rmdir(path)
            break
        except OSError:  # EBUSY until the last member is fully gone
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _cgroup_of_self() -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return ""


@pytest.mark.requires("root", "clone3", "cgroup2")
@pytest.mark.parametrize("as_fd", [False, True])
def test_into_cgroup_puts_the_child_there(cgroup_dir: str, as_fd: bool) -> None:
    root = cgroup2_root()
    assert root is not None
    expected = "/" + os.path.relpath(cgroup_dir, root)
    if as_fd:
        fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with no_side_effects():
                assert child_value(_cgroup_of_self, cgroup=fd) == expected
        finally:
            os.close(fd)
    else:
        with no_side_effects():
            assert child_value(_cgroup_of_self, cgroup=cgroup_dir) == expected
    assert _cgroup_of_self() != expected


def _free_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    for candidate in range(pid_max - 1, 300, -1):
        if not os.path.exists(f"/proc/{candidate}"):
            return candidate
    raise RuntimeError("no free pid")


@pytest.mark.requires("root", "clone3")
def test_set_tid_picks_the_pid() -> None:
    pid = _free_pid()
    with portclone.clone(lambda: 0, set_tid=[pid]) as handle:
        assert handle.pid == pid
        assert handle.wait(timeout=30) == 0


@pytest.mark.requires("root", "clone3", "CLONE_NEWPID")
def test_set_tid_with_newpid_sets_both_levels() -> None:
    pid = _free_pid()
    assert child_value(os.getpid, flags=F.CLONE_NEWPID, set_tid=[1, pid]) == 1


@pytest.mark.requires("root", "clone3")
def test_set_tid_taken_is_file_exists_error_naming_the_request() -> None:
    with no_side_effects(), pytest.raises(FileExistsError, match=r"clone3\(flags=0") as info:
        portclone.clone(lambda: 0, set_tid=[os.getpid()])
    assert "set_tid" in str(info.value)


def test_namespace_without_privilege_is_permission_error() -> None:
    result = run_python("""
        import os, portclone
        os.setgid(65534); os.setuid(65534)
        try:
            portclone.clone(lambda: 0, flags=portclone.CLONE_NEWUTS)
        except PermissionError as e:
            print("PermissionError", e)
    """)
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges in the subprocess")
    assert result.stdout.startswith("PermissionError"), result.stderr
    assert "CLONE_NEWUTS" in result.stdout and "CAP_SYS_ADMIN" in result.stdout


# -- signal handlers -----------------------------------------------------------------------

def _caught_mask() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    raise KeyError("SigCgt")


@pytest.mark.requires("clone3")
@pytest.mark.parametrize("clear", [True, False])
def test_clear_sighand_resets_handlers_for_kernel_and_python(clear: bool) -> None:
    old = signal.signal(signal.SIGUSR2, lambda *a: None)
    try:
        def child() -> list:  # type: ignore[type-arg]
            caught = bool(_caught_mask() & (1 << (signal.SIGUSR2 - 1)))
            return [caught, signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL]

        flags = F.CLONE_CLEAR_SIGHAND if clear else F.CLONE_IO
        assert child_value(child, flags=flags) == ([False, True] if clear else [True, False])
    finally:
        signal.signal(signal.SIGUSR2, old)


# -- libc's idea of the thread ------------------------------------------------------------

@pytest.mark.requires("tid_repair", "2cpus")
def test_pthread_self_calls_in_the_child_act_on_the_child() -> None:
    """pthread_setaffinity_np(pthread_self()) uses libc's cached tid: in a raw-cloned
    child it must be the child's, or the parent's affinity changes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.pthread_self.restype = ctypes.c_ulong
    ours = os.sched_getaffinity(0)
    target = min(ours)

    def child() -> list:  # type: ignore[type-arg]
        mask = ctypes.c_ulong(1 << target)
        err = libc.pthread_setaffinity_np(ctypes.c_ulong(libc.pthread_self()),
                                          ctypes.sizeof(mask), ctypes.byref(mask))
        return [err, sorted(os.sched_getaffinity(0))]

    assert child_value(child, flags=F.CLONE_IO) == [0, [target]]
    assert os.sched_getaffinity(0) == ours


# -- the kernel agrees with every rule we enforce ----------------------------------------

KERNEL_PROBE = """
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
class Args(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in "flags pidfd child_tid parent_tid exit_signal "
                "stack stack_size tls set_tid set_tid_size cgroup".split()]
def clone3(flags, exit_signal):
    a = Args(flags=flags, exit_signal=exit_signal)
    r = libc.syscall(435, ctypes.byref(a), 64)
    if r == 0:
        os._exit(0)
    if r > 0:
        try:
            os.waitpid(r, 0x40000000)
        except ChildProcessError:  # CLONE_PARENT: our parent reaps it
            pass
        return 0
    return ctypes.get_errno()
cases = json.loads(sys.argv[1])
pid = os.fork()
if pid == 0:  # probe in a child, so CLONE_PARENT children land on this process
    print(json.dumps([clone3(f, s) for f, s in cases]), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
while True:
    try:
        os.waitpid(-1, 0x40000000)
    except ChildProcessError:
        break
"""


def _kernel_verdicts(cases: list) -> list:  # type: ignore[type-arg]
    import subprocess

    out = subprocess.run([sys.executable, "-c", KERNEL_PROBE, json.dumps(cases)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.requires("root", "clone3")
def test_every_rule_we_enforce_is_einval_in_the_kernel() -> None:
    cases = [(int(rule.all_of), 0) for rule in RULES]
    cases += [(int(F.CLONE_PARENT), int(signal.SIGCHLD)), (0, 65)]
    for (flags, sig), err in zip(cases, _kernel_verdicts(cases)):
        assert err == errno.EINVAL, f"kernel answered {err} for {F(flags)} exit_signal={sig}"
        with pytest.raises(portclone.InvalidFlagsError):
            portclone.check(flags, exit_signal=sig)


@pytest.mark.requires("root", "clone3", "CLONE_NEWPID", "CLONE_NEWUSER")
def test_combinations_the_kernel_accepts_are_not_called_invalid() -> None:
    """clone(2) still lists these as EINVAL; the running kernel decides."""
    cases = [(int(F.CLONE_NEWPID | F.CLONE_PARENT), 0), (int(F.CLONE_NEWUSER | F.CLONE_PARENT), 0),
             (int(F.CLONE_NEWUSER | F.CLONE_NEWPID), 17)]
    for (flags, sig), err in zip(cases, _kernel_verdicts(cases)):
        assert err == 0, f"kernel answered {err} for {F(flags)}"
        portclone.check(flags, exit_signal=sig)


# -- clone3 refused: the fallback (simulated with a seccomp filter in a subprocess) --------

FALLBACK = """
import errno, json, os, sys
sys.path.insert(0, {tests!r})
import seccomp_filter
seccomp_filter.refuse_clone3(errno.{err})
import portclone
F = portclone.CloneFlags
report = {{}}
def ns():
    return os.stat("/proc/self/ns/uts").st_ino != {uts}
for name, flags in [("plain", F.CLONE_IO), ("uts", F.CLONE_NEWUTS)]:
    with portclone.clone(lambda: 0 if ns() == (name == "uts") else 3, flags=flags) as c:
        report[name] = [c.syscall, c.wait(timeout=30), c.pidfd is not None]
for name, kw in [("newtime", dict(flags=F.CLONE_NEWTIME)), ("set_tid", dict(set_tid=[4242]))]:
    try:
        portclone.clone(lambda: 0, **kw)
        report[name] = "created"
    except portclone.UnsupportedFlagError as e:
        report[name] = str(e)
report["remembered"] = portclone.current_backend().details()["clone3"]
print(json.dumps(report))
"""


@pytest.mark.requires("root", "seccomp", "clone3", "CLONE_NEWUTS")
@pytest.mark.parametrize("err", ["ENOSYS", "EPERM"])
def test_clone3_refused_falls_back_to_legacy_clone(err: str) -> None:
    """SIMULATED: a seccomp filter makes clone3 answer ENOSYS (old kernel) or EPERM
    (container profile) in a throwaway interpreter."""
    result = run_python(FALLBACK.format(tests=TESTS, err=err, uts=ns_inode("uts")))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["plain"] == ["clone", 0, True]  # pidfd through legacy clone's ptid
    assert report["uts"] == ["clone", 0, True]
    for name in ("newtime", "set_tid"):
        assert "needs clone3" in report[name] and err in report[name], report[name]
    assert report["remembered"] == f"unavailable ({err})"


# -- threads -----------------------------------------------------------------------------

def test_multithreaded_parent_warns_and_does_not_hang() -> None:
    stop = threading.Event()

    def churn() -> None:
        junk: dict = {}  # type: ignore[type-arg]
        while not stop.is_set():
            for i in range(200):
                junk[i] = [str(i)] * 20
            junk.clear()
            time.sleep(0)

    workers = [threading.Thread(target=churn, daemon=True) for _ in range(4)]
    for t in workers:
        t.start()
    codes = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(60):
                flags = F.CLONE_IO if i % 2 else 0
                handle = portclone.clone(lambda: len([str(n) for n in range(5000)]) and 0,
                                         flags=flags)
                try:
                    codes.append(handle.wait(timeout=30))
                except portclone.TimeoutExpired:
                    handle.kill()
                    handle.wait()
                    codes.append("hung")
                handle.close()
    finally:
        stop.set()
        for t in workers:
            t.join(10)
    assert codes == [0] * 60
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert messages and all("is multi-threaded, use of clone() may lead to deadlocks" in m
                            for m in messages)
    assert all(w.filename == __file__ for w in caught if w.category is DeprecationWarning)


def test_warning_as_error_raises_before_the_child_exists() -> None:
    t = threading.Thread(target=time.sleep, args=(1,), daemon=True)
    t.start()
    with no_side_effects(), warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with pytest.raises(DeprecationWarning):
            portclone.clone(lambda: 0)
    t.join()
