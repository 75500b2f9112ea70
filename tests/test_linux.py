"""Linux-only behaviour: set_tid, kernel errors, libc's thread id, the kernel's own
EINVAL rules, the clone3 fallback and threads.  Per-flag effects are in test_contract.py."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import sys
import threading
import time
import warnings

import pytest
from conftest import (
    TESTS_DIR,
    busy_threads,
    child_value,
    missing,
    no_side_effects,
    ns_inode,
    rounds,
    run_python,
    status_or_hung,
)

import portclone
from portclone import CloneFlags as F
from portclone._errors import Stage
from portclone._flags import RULES

pytestmark = pytest.mark.requires("linux", "proc")
TESTS = TESTS_DIR


# -- the kernel's verdicts ------------------------------------------------------------------


@pytest.mark.requires("root", "CLONE_NEWPID", "not-pid1")
def test_newpid_with_parent_is_accepted_man_page_lags_kernel() -> None:
    """clone(2) lists NEWPID|PARENT as EINVAL; Linux accepts it since 3.13."""
    assert portclone.check(F.CLONE_NEWPID | F.CLONE_PARENT, exit_signal=0)


@pytest.mark.requires("pidfd")
@pytest.mark.parametrize("flags", [0, F.CLONE_PIDFD])
def test_plain_request_uses_libc_fork_and_still_gets_a_pidfd(flags: int) -> None:
    with portclone.clone(lambda: 0, flags=flags) as handle:
        assert handle.syscall == "fork"
        assert handle.pidfd is not None
        assert handle.wait(timeout=30) == 0


# -- set_tid ------------------------------------------------------------------------------


def _free_pid() -> int:
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    for candidate in range(pid_max - 1, 300, -1):
        try:  # not /proc/<candidate>: in a PID namespace /proc may name other processes
            os.kill(candidate, 0)
        except ProcessLookupError:
            return candidate
        except PermissionError:  # someone else's
            pass
    raise RuntimeError("no free pid")


@pytest.mark.requires("host-root", "clone3")
def test_set_tid_picks_the_pid() -> None:
    pid = _free_pid()
    with portclone.clone(lambda: 0, set_tid=[pid]) as handle:
        assert handle.pid == pid
        assert handle.wait(timeout=30) == 0


@pytest.mark.requires("host-root", "clone3", "CLONE_NEWPID")
def test_set_tid_with_newpid_sets_both_levels() -> None:
    pid = _free_pid()
    assert child_value(os.getpid, flags=F.CLONE_NEWPID, set_tid=[1, pid]) == 1


@pytest.mark.requires("host-root", "clone3")
def test_set_tid_taken_is_file_exists_error_naming_the_request() -> None:
    with no_side_effects(), pytest.raises(FileExistsError, match=r"clone3\(flags=0") as info:
        portclone.clone(lambda: 0, set_tid=[os.getpid()])
    assert "set_tid" in str(info.value)


def test_namespace_without_privilege_is_permission_error() -> None:
    result = run_python("""
        import os, portclone
        portclone.current_backend()  # loads the backend while the files are readable to us
        os.setgid(65534); os.setuid(65534)
        try:
            portclone.clone(lambda: 0, flags=portclone.CLONE_NEWUTS)
        except PermissionError as e:
            print("PermissionError", e)
    """)
    if missing("host-root"):  # uid 65534 is mapped only there
        pytest.skip(f"missing host-root: {missing('host-root')} (the subprocess becomes uid 65534)")
    assert result.stdout.startswith("PermissionError"), result.stderr
    assert "CLONE_NEWUTS" in result.stdout and "CAP_SYS_ADMIN" in result.stdout


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
        err = libc.pthread_setaffinity_np(
            ctypes.c_ulong(libc.pthread_self()), ctypes.sizeof(mask), ctypes.byref(mask)
        )
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

    out = subprocess.run(
        [sys.executable, "-c", KERNEL_PROBE, json.dumps(cases)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.requires("root", "clone3")
def test_every_rule_we_enforce_is_einval_in_the_kernel() -> None:
    cases = [(int(rule.all_of), 0) for rule in RULES if not rule.when]
    cases += [(int(rule.all_of), int(signal.SIGCHLD)) for rule in RULES if rule.when == ("exit_signal",)]
    cases += [(0, 65)]
    for (flags, sig), err in zip(cases, _kernel_verdicts(cases)):
        assert err == errno.EINVAL, f"kernel answered {err} for {F(flags)} exit_signal={sig}"
        with pytest.raises(portclone.InvalidFlagsError):
            portclone.check(flags, exit_signal=sig)


@pytest.mark.requires("root", "clone3", "CLONE_NEWPID", "CLONE_NEWUSER", "not-pid1")
def test_combinations_the_kernel_accepts_are_not_called_invalid() -> None:
    """clone(2) still lists these as EINVAL; the running kernel decides."""
    cases = [
        (int(F.CLONE_NEWPID | F.CLONE_PARENT), 0),
        (int(F.CLONE_NEWUSER | F.CLONE_PARENT), 0),
        (int(F.CLONE_NEWUSER | F.CLONE_NEWPID), 17),
    ]
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
def libc_tid_is_own():
    # libc's cached tid, repaired through CLONE_CHILD_SETTID (the argument order matters)
    import threading, time
    try:
        time.clock_gettime(time.pthread_getcpuclockid(threading.get_ident()))
    except OSError:
        # no repair without the offset (found by starting a thread: under the EPERM
        # filter glibc's pthread_create fails too, it falls back only on ENOSYS)
        return portclone._native.tid_offset() < 0
    return True
def child(name):
    return 0 if ns() == (name == "uts") and libc_tid_is_own() else 3
for name, flags in [("plain", F.CLONE_IO), ("uts", F.CLONE_NEWUTS)]:
    with portclone.clone(child, name, flags=flags) as c:
        report[name] = [c.syscall, c.wait(timeout=30), c.pidfd is not None]
for name, kw in [("newtime", dict(flags=F.CLONE_NEWTIME)), ("set_tid", dict(set_tid=[4242]))]:
    try:
        portclone.clone(lambda: 0, **kw)
        report[name] = "created"
    except portclone.UnsupportedFlagError as e:
        report[name] = str(e)
report["remembered"] = portclone.current_backend().details()["capabilities"]["clone3"]
report["tid_offset"] = portclone._native.tid_offset()
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
    assert report["remembered"]["available"] is False
    assert f"({err}" in report["remembered"]["reason"]
    if err == "ENOSYS" and missing("tid_repair") is None:
        assert report["tid_offset"] >= 0  # so the children above checked libc's tid


# -- threads -----------------------------------------------------------------------------


def test_multithreaded_parent_warns_and_does_not_hang() -> None:
    def churn() -> None:
        junk = {i: [str(i)] * 20 for i in range(200)}
        junk.clear()
        time.sleep(0)

    codes = []
    with busy_threads(churn), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(rounds(60, least=16)):
            flags = F.CLONE_IO if i % 2 else 0
            codes.append(
                status_or_hung(portclone.clone(lambda: len([str(n) for n in range(5000)]) and 0, flags=flags))
            )
    assert codes and set(codes) == {0}
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert messages and all("is multi-threaded, use of clone() may lead to deadlocks" in m for m in messages)
    assert all(w.filename == __file__ for w in caught if w.category is DeprecationWarning)


def test_warning_as_error_raises_before_the_child_exists() -> None:
    t = threading.Thread(target=time.sleep, args=(1,), daemon=True)
    t.start()
    with no_side_effects(), warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        with pytest.raises(DeprecationWarning):
            portclone.clone(lambda: 0)
    t.join()


# -- the C extension's own guards (found by tests/fuzz_native.py) ---------------------------


def _native() -> object:
    return sys.modules["portclone._native"]


@pytest.mark.parametrize(
    "flags",
    [F.CLONE_VM, F.CLONE_SIGHAND | F.CLONE_VM, F.CLONE_THREAD | F.CLONE_SIGHAND | F.CLONE_VM, F.CLONE_SETTLS],
)
def test_native_clone_refuses_what_would_share_the_interpreter(flags: int) -> None:
    native = _native()
    out = portclone.Child(0, None)
    with no_side_effects(), pytest.raises(ValueError, match="fork-like"):
        native.clone(
            out,
            int,
            native.MODE_CLONE3,
            int(flags),
            signal.SIGCHLD,
            -1,  # type: ignore
            None,
            True,
        )
    with no_side_effects(), pytest.raises(ValueError, match="fork-like"):
        native.libc_clone(out, int, int(flags) | signal.SIGCHLD)  # type: ignore[attr-defined]
    assert out.pid == 0


def test_native_calls_refuse_a_signal_in_the_flags() -> None:
    native = _native()
    with no_side_effects(), pytest.raises(ValueError, match="low byte"):
        native.clone(
            portclone.Child(0, None),
            int,
            native.MODE_CLONE3,
            0x11,  # type: ignore
            signal.SIGCHLD,
            -1,
            None,
            True,
        )


def _spawn_args(**change: object) -> dict:  # type: ignore[type-arg]
    native = _native()
    args = dict(
        child=portclone.Child(0, None),
        mode=native.MODE_CLONE3,  # type: ignore
        flags=int(F.CLONE_VM | F.CLONE_VFORK),
        exit_signal=int(signal.SIGCHLD),
        cgroup_fd=-1,
        set_tid=None,
        legacy_ok=True,
        paths=(b"/nonexistent",),
        argv=(b"x",),
        envp=None,
        cwd=None,
        fds=(-1, -1, -1),
        keep=(),
        close_fds=True,
        setup=None,
        restore_signals=True,
    )
    args.update(change)
    return args


def _setup(
    uid_map: object = None, hostname: object = None, join: object = (), pid_ns: int = -1, restore: int = -1
) -> tuple:  # type: ignore[type-arg]
    """_native's setup tuple (portclone._setup.ChildSetup.native)."""
    return (uid_map, None, None, hostname, None, None, join, 0, -1, 0, pid_ns, restore)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"setup": b"0 0 1"}, TypeError),  # was SystemError: PyArg_ParseTuple on a non-tuple
        ({"setup": _setup(uid_map=b"0 0 1\n")}, ValueError),  # with CLONE_VFORK: was a deadlock
        ({"setup": _setup(join=((-1, 0),))}, ValueError),
        ({"setup": _setup(join=(5,))}, TypeError),
        ({"setup": _setup(pid_ns=3)}, ValueError),  # no fd to come back to
        ({"flags": int(F.CLONE_VM) | 0x11}, ValueError),
        ({"exit_signal": 300}, ValueError),
        # the child thread's failed exec ended the whole process (_exit is exit_group)
        ({"flags": int(F.CLONE_THREAD | F.CLONE_SIGHAND | F.CLONE_VM)}, ValueError),
        # set the host's hostname (the fuzzer, as root, did: the C now checks for itself)
        ({"setup": _setup(hostname=b"portclone-fuzzed")}, ValueError),
        ({"flags": int(F.CLONE_VM | F.CLONE_VFORK | F.CLONE_FS), "cwd": b"/"}, ValueError),
        # the checks clone() and spawn() share (_common.c): pids, pid count, cgroup fd
        ({"set_tid": (0,)}, ValueError),
        ({"set_tid": tuple(range(1, 34))}, ValueError),
        ({"cgroup_fd": -2}, ValueError),
        ({"mode": 0}, ValueError),  # MODE_FORK: spawn has no fork mode
        ({"keep": (-1,)}, ValueError),
        ({"keep": (1 << 32,)}, ValueError),  # beyond any fd, not truncated to one
    ],
)
def test_native_spawn_argument_guards(change: dict, error: type) -> None:  # type: ignore[type-arg]
    native = _native()
    host = os.uname().nodename
    args = _spawn_args(**change)
    with no_side_effects(), pytest.raises(error):
        native.spawn(args.pop("child"), **args)  # type: ignore[attr-defined]
    assert os.uname().nodename == host


def test_native_spawn_takes_keywords() -> None:
    native = _native()
    args = _spawn_args()
    with no_side_effects(), pytest.raises(TypeError):
        native.spawn(*args.values())  # type: ignore[attr-defined]
    child = args.pop("child")
    with no_side_effects(), pytest.raises(FileNotFoundError) as info:
        native.spawn(child, **args)  # type: ignore[attr-defined]
    assert info.value.portclone_stage == Stage.EXEC == native.STAGE_EXEC  # type: ignore
    assert child.pid == 0


@pytest.mark.requires("root", "CLONE_NEWUTS")
def test_the_linux_backends_probe_probes_the_linux_backend() -> None:
    """probe() used the public clone(), so the backend in force: under the fork backend
    the linux backend's probe reported a namespace the kernel has as refused."""
    linux = portclone.get_backend("linux")
    with portclone.use_backend("fork"):
        assert linux.probe(F.CLONE_NEWIPC) is None  # type: ignore[attr-defined]
