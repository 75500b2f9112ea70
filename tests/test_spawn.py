"""spawn(): exec children, on every backend, and what only Linux can do with them."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import (
    TESTS_DIR,
    broken_rules,
    busy_threads,
    missing,
    no_side_effects,
    rounds,
    run_python,
    status_or_hung,
    temporary_cgroup,
)

import portclone
from portclone import DEVNULL, PIPE, STDOUT, Backend
from portclone import CloneFlags as F
from portclone._flags import TABLE


def output(*argv: str, **kwargs: object) -> bytes:
    with portclone.spawn(list(argv), stdout=PIPE, **kwargs) as child:  # type: ignore[arg-type]
        out, _ = child.communicate(timeout=60)
    assert child.returncode == 0, child.returncode
    assert out is not None
    return out


# -- the process part: like subprocess, on every backend --------------------------------


def test_runs_and_reports_exit_status(portclone_backend: Backend) -> None:
    with portclone.spawn(["sh", "-c", "exit 7"]) as child:
        assert child.wait(timeout=60) == 7
    assert child.backend == portclone_backend.name
    assert child.args == (b"sh", b"-c", b"exit 7")
    with portclone.spawn(["sh", "-c", "kill -TERM $$"]) as child:
        assert child.wait(timeout=60) == -signal.SIGTERM


def test_pipes_in_out_err(portclone_backend: Backend) -> None:
    child = portclone.spawn(["sh", "-c", "cat; echo oops >&2"], stdin=PIPE, stdout=PIPE, stderr=PIPE)
    out, err = child.communicate(b"hello\n" * 10000, timeout=60)
    assert out == b"hello\n" * 10000 and err == b"oops\n" and child.returncode == 0
    assert output("sh", "-c", "echo out; echo err >&2", stderr=STDOUT) == b"out\nerr\n"
    with portclone.spawn(["cat"], stdin=DEVNULL, stdout=PIPE) as child:
        assert child.communicate(timeout=60) == (b"", None)


def test_env_cwd_and_path_lookup(portclone_backend: Backend, tmp_path: object) -> None:
    where = str(tmp_path)
    script = os.path.join(where, "hello-portclone")
    with open(script, "w") as f:
        f.write('#!/bin/sh\necho "$GREETING from $(pwd)"\n')
    os.chmod(script, 0o755)
    env = {"GREETING": "hi", "PATH": where + ":/usr/bin:/bin"}
    assert output("hello-portclone", env=env, cwd="/") == b"hi from /\n"
    assert output("env", env={"ONLY": "this"}) == b"ONLY=this\n"


def test_exec_failures_raise_what_subprocess_raises(portclone_backend: Backend, tmp_path: object) -> None:
    not_executable = os.path.join(str(tmp_path), "plain-file")
    open(not_executable, "w").close()
    cases = [
        (["/nonexistent/program"], {}, FileNotFoundError, "/nonexistent/program"),
        (["no-such-program-portclone"], {}, FileNotFoundError, "no-such-program-portclone"),
        ([not_executable], {}, PermissionError, not_executable),
        (["true"], {"cwd": "/nonexistent-dir"}, FileNotFoundError, "/nonexistent-dir"),
        (["true"], {"cwd": not_executable}, NotADirectoryError, not_executable),
    ]
    for argv, kwargs, exc, filename in cases:
        with no_side_effects(), pytest.raises(exc) as info:  # no child, no fd left behind
            portclone.spawn(argv, stdout=PIPE, stderr=PIPE, **kwargs)  # type: ignore[arg-type]
        assert info.value.filename == filename, (argv, kwargs)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"argv": []}, ValueError),
        ({"argv": "ls -l"}, TypeError),
        ({"argv": ["ls", "a\0b"]}, ValueError),
        ({"argv": ["ls", 3]}, TypeError),
        ({"argv": ["true"], "env": {"A=B": "x"}}, ValueError),
        ({"argv": ["true"], "env": {"A": "x\0y"}}, ValueError),
        ({"argv": ["true"], "env": ["A=B"]}, TypeError),
        ({"argv": ["true"], "cwd": 42}, TypeError),
        ({"argv": ["true"], "pass_fds": [-1]}, ValueError),
        ({"argv": ["true"], "stderr": 987654}, OSError),
        ({"argv": ["true"], "stderr": "file"}, TypeError),
        ({"argv": ["true"], "exit_signal": signal.SIGUSR1}, portclone.UnsupportedFlagError),
        ({"argv": ["true"], "uid_map": [(0, 0)]}, ValueError),
        ({"argv": ["true"], "hostname": "x", "join": {"uts": 1}}, portclone.InvalidFlagsError),
        ({"argv": ["true"], "map_root": True, "flags": F.CLONE_VFORK}, portclone.InvalidFlagsError),
    ],
)
def test_bad_arguments_fail_before_anything_exists(kwargs: dict, exc: type) -> None:  # type: ignore[type-arg]
    argv = kwargs.pop("argv")
    with no_side_effects(), pytest.raises(exc):
        portclone.spawn(argv, stdout=PIPE, **kwargs)


def _fds_in_child(**kwargs: object) -> list:  # type: ignore[type-arg]
    # the shell's own fds, listed by ls (which opens one of its own, not the shell's); the
    # shell's pid as /proc names it from its own /proc/self (in a PID namespace that sees an
    # outer /proc, $$ names another process there)
    script = (
        'while read -r key pid _; do [ "$key" = NSpid: ] && break; done </proc/self/status; '
        'ls "/proc/$pid/fd"'
    )
    names = output("sh", "-c", script, **kwargs).split()
    return sorted(int(n) for n in names)


@pytest.mark.requires("proc")
def test_nothing_leaks_into_the_program(portclone_backend: Backend) -> None:
    leaky_r, leaky_w = os.pipe()
    os.set_inheritable(leaky_r, True)  # inheritable, yet not passed: must not arrive
    keep_r, keep_w = os.pipe()
    try:
        assert _fds_in_child() == [0, 1, 2]
        assert _fds_in_child(pass_fds=[keep_r]) == [0, 1, 2, keep_r]
        # pidfds and internal pipes of other children stay out too
        with portclone.spawn(["sleep", "5"]) as other:
            assert _fds_in_child() == [0, 1, 2]
            other.kill()
    finally:
        for fd in (leaky_r, leaky_w, keep_r, keep_w):
            os.close(fd)


@pytest.mark.requires("proc")
def test_pass_fds_reach_the_program(portclone_backend: Backend) -> None:
    r, w = os.pipe()
    try:
        # (dash redirects only to fds 0-9: name the fd through /proc/self/fd)
        with portclone.spawn(["sh", "-c", f"echo through >/proc/self/fd/{w}"], pass_fds=[w]) as child:
            assert child.wait(timeout=60) == 0
        assert os.read(r, 100) == b"through\n"
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.requires("proc")
def test_signals_as_subprocess_leaves_them(portclone_backend: Backend) -> None:
    def status(field: str, **kwargs: object) -> int:
        for line in output("cat", "/proc/self/status", **kwargs).decode().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
        raise KeyError(field)

    pipe_bit = 1 << (signal.SIGPIPE - 1)
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # Python's own setting
    assert not status("SigIgn") & pipe_bit  # restored for the program
    assert status("SigIgn", restore_signals=False) & pipe_bit
    assert status("SigBlk") == 0  # the mask blocked around the clone is not inherited


@pytest.mark.parametrize("flag", [info.flag for info in TABLE], ids=[info.name for info in TABLE])
def test_every_flag_starts_the_program_or_is_refused(portclone_backend: Backend, flag: F) -> None:
    """The contract for exec children: honoured flags start the program, the rest raise
    the documented reason before anything exists."""
    if flag == F.CLONE_PARENT and missing("not-pid1"):
        pytest.skip(f"missing not-pid1: {missing('not-pid1')}")
    kwargs: dict = {"flags": flag}  # type: ignore[type-arg]
    if flag in (F.CLONE_PARENT, F.CLONE_AUTOREAP):
        kwargs["exit_signal"] = 0  # the kernel's rule for these
    if flag == F.CLONE_THREAD:
        kwargs.update(flags=flag | F.CLONE_SIGHAND, exit_signal=0)
    if flag == F.CLONE_FILES:
        kwargs["close_fds"] = False  # a shared fd table cannot close the program's fds
    if flag == F.CLONE_INTO_CGROUP:
        from conftest import cgroup2_root

        if cgroup2_root() is None:
            pytest.skip("missing cgroup2: no cgroup v2 hierarchy to name")
        kwargs["cgroup"] = cgroup2_root()
    reason = portclone_backend.why_refused(flag, exec_child=True)
    if broken_rules(int(kwargs["flags"] | F.CLONE_VM)):  # CLONE_DETACHED (spawn adds CLONE_VM)
        with no_side_effects(), pytest.raises(portclone.InvalidFlagsError):
            portclone.spawn(["true"], **kwargs)
        return
    if reason is None:
        feature = flag.name if flag.name.startswith("CLONE_NEW") else None
        for need in (
            (
                ["root"]
                if flag
                & (
                    F.CLONE_INTO_CGROUP
                    | F.CLONE_NEWNS
                    | F.CLONE_NEWPID
                    | F.CLONE_NEWNET
                    | F.CLONE_NEWIPC
                    | F.CLONE_NEWUTS
                    | F.CLONE_NEWCGROUP
                    | F.CLONE_NEWTIME
                )
                else []
            )
            + ([feature] if feature and portclone_backend.name == "linux" else [])
            + (
                ["cgroup2"] if flag == F.CLONE_INTO_CGROUP else []  # the named cgroup is written to
            )
        ):
            why = missing(need)
            if why:
                pytest.skip(f"missing {need}: {why}")
        child = portclone.spawn(["true"], **kwargs)
        if child.reapable:
            assert child.wait(timeout=60) == 0
        child.close()
        return
    with no_side_effects(), pytest.raises(portclone.UnsupportedFlagError) as info:
        portclone.spawn(["true"], **kwargs)
    assert info.value.reasons[str(flag)] == reason


# -- Linux: clone flags for a program -------------------------------------------------

linux = pytest.mark.requires("linux")


@pytest.mark.requires("proc")
@linux
@pytest.mark.requires("root", "CLONE_NEWUSER", "CLONE_NEWPID", "CLONE_NEWUTS")
def test_namespaces_maps_and_hostname() -> None:
    flags = F.CLONE_NEWUSER | F.CLONE_NEWPID | F.CLONE_NEWNS | F.CLONE_NEWUTS | F.CLONE_NEWIPC
    with portclone.spawn(
        ["sh", "-c", "echo $$ $(id -u) $(hostname); cat /proc/self/uid_map"],
        flags=flags,
        map_root=True,
        hostname="inside",
        stdout=PIPE,
    ) as child:
        out, _ = child.communicate(timeout=60)
    pid, uid, host, *uid_map = out.decode().split()
    assert (pid, uid, host) == ("1", "0", "inside")
    assert uid_map == ["0", str(os.geteuid()), "1"]
    # the parent had to write maps while the child waited: CLONE_VM without CLONE_VFORK
    assert child.flags & F.CLONE_VM and not child.flags & F.CLONE_VFORK
    with portclone.spawn(["true"], flags=F.CLONE_NEWUSER) as plain:
        assert plain.flags & F.CLONE_VFORK  # nothing to write: vfork as usual
        plain.wait(timeout=60)


@linux
def test_vm_and_vfork_are_added_and_a_pidfd_given() -> None:
    with portclone.spawn(["true"]) as child:
        assert child.flags & (F.CLONE_VM | F.CLONE_VFORK) == F.CLONE_VM | F.CLONE_VFORK
        assert child.syscall in ("clone3", "clone")
        if missing("pidfd") is None:
            assert child.pidfd is not None and not os.get_inheritable(child.pidfd)
        assert child.wait(timeout=60) == 0


@linux
@pytest.mark.requires("pidfd")
def test_the_kernel_resets_an_execd_childs_exit_signal() -> None:
    """Why spawn() refuses exit_signal: a clone()d child with SIGUSR1 that execs reports
    with SIGCHLD (a plain waitpid sees it; SIGUSR1 never comes)."""
    got = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    try:
        child = portclone.clone(os.execv, "/bin/sleep", ["sleep", "0.2"], exit_signal=signal.SIGUSR1)
        # while it runs, a plain waitpid cannot see it (exit signal SIGUSR1); the reset
        # happens at its exit (exit_notify), so wait for that through the pidfd first
        assert child.pidfd is not None
        import select

        poller = select.poll()
        poller.register(child.pidfd, select.POLLIN)
        assert poller.poll(30_000)
        _, status = os.waitpid(child.pid, 0)  # no __WALL needed any more
        child.returncode = os.waitstatus_to_exitcode(status)
        # an exit signal is sent before the child becomes reapable (exit_notify): none is
        # pending, and a Python call lets the eval loop run any handler that was tripped
        assert signal.SIGUSR1 not in signal.sigpending()
        (lambda: None)()
        assert got == [] and child.returncode == 0
        child.close()
    finally:
        signal.signal(signal.SIGUSR1, old)
    with no_side_effects(), pytest.raises(portclone.UnsupportedFlagError, match="SIGCHLD"):
        portclone.spawn(["true"], exit_signal=signal.SIGUSR1)


@linux
@pytest.mark.requires("root", "clone3", "cgroup2")
def test_spawn_into_a_cgroup() -> None:
    with temporary_cgroup("portclone-spawn") as (path, expected):
        assert output("cat", "/proc/self/cgroup", cgroup=path).decode().endswith(f"0::{expected}\n")


@linux
@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"flags": F.CLONE_VFORK, "map_root": True}, "CLONE_VFORK"),
        ({"flags": F.CLONE_FILES, "stdout": PIPE}, "CLONE_FILES"),
        ({"flags": F.CLONE_FS, "cwd": "/"}, "CLONE_FS"),
    ],
)
def test_conflicts_with_sharing_flags(kwargs: dict, needle: str) -> None:  # type: ignore[type-arg]
    if kwargs.get("map_root"):
        kwargs["flags"] |= F.CLONE_NEWUSER
    with no_side_effects(), pytest.raises(portclone.InvalidFlagsError, match=needle):
        portclone.spawn(["true"], **kwargs)


@linux
def test_files_and_sighand_with_vm_are_honoured_for_programs() -> None:
    with portclone.spawn(
        ["true"], flags=F.CLONE_FILES | F.CLONE_SIGHAND | F.CLONE_FS, close_fds=False
    ) as child:
        assert child.wait(timeout=60) == 0
    with no_side_effects(), pytest.raises(portclone.UnsupportedFlagError, match="CLONE_THREAD"):
        portclone.spawn(["true"], flags=F.CLONE_THREAD | F.CLONE_SIGHAND, exit_signal=0)


UNPRIVILEGED = """
import collections, ctypes, os, portclone
portclone.current_backend()  # loads the backend while the files are readable to us
os.setgid(65534); os.setuid(65534)
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, as a user's own process is
"""


def run_unprivileged(code: str) -> str:
    """``code`` as uid/gid 65534 in a fresh interpreter; its stdout."""
    if missing("host-root"):  # uid 65534 is mapped only there
        pytest.skip(f"missing host-root: {missing('host-root')} (the subprocess becomes uid 65534)")
    if missing("CLONE_NEWUSER"):
        pytest.skip(f"missing CLONE_NEWUSER: {missing('CLONE_NEWUSER')}")
    result = run_python(UNPRIVILEGED + textwrap.dedent(code), timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.requires("proc")
@linux
def test_unprivileged_maps_of_foreign_ids_are_permission_errors() -> None:
    out = run_unprivileged("""
        report = []
        with portclone.spawn(["id", "-u"], flags=portclone.CLONE_NEWUSER, map_root=True,
                             stdout=portclone.PIPE) as c:
            report.append(c.communicate()[0].decode().strip())
        try:
            portclone.spawn(["true"], flags=portclone.CLONE_NEWUSER, uid_map=[(0, 0, 1)])
        except PermissionError as e:
            report.append(str(e))
        print(report)
    """)
    assert "['0', " in out and "writing the child's uid_map" in out


@pytest.mark.requires("proc")
@linux
def test_a_refused_map_is_reported_with_its_own_errno_every_time() -> None:
    """The exec child shares the parent's memory and libc's errno: with maps it runs while
    the parent writes them.  When the child's handler reset (which meets EINVAL) ran before
    its wait, QEMU guests saw EINVAL for this EPERM in 1 spawn in 100 (never on the host)."""
    out = run_unprivileged("""
        seen = collections.Counter()
        for _ in range(40):
            try:
                portclone.spawn(["true"], flags=portclone.CLONE_NEWUSER, uid_map=[(0, 0, 1)])
            except OSError as e:
                seen[type(e).__name__ + " " + str(e.errno)] += 1
        print(dict(seen))
    """)
    assert out.strip() == "{'PermissionError 1': 40}", out


@linux
@pytest.mark.requires("proc", "CLONE_NEWUSER")
def test_arguments_own_operators_decide_no_check() -> None:
    """The checks read spawn()'s arguments as the plan uses them: an int subclass's __or__,
    a stdio object equal to None and a falsy pass_fds each got a request past its rules,
    and then the flags or fds were not what was asked.  (close_fds is asked once.)"""

    class Flags(int):
        def __or__(self, other: object) -> int:  # drops every flag
            return int(other)  # type: ignore[call-overload]

    with no_side_effects(), pytest.raises(portclone.InvalidFlagsError):
        # CLONE_FILES with redirected stdio is refused: a stdout object that says it is None
        class LikeNone:
            def fileno(self) -> int:
                return 1

            def __eq__(self, other: object) -> bool:
                return other is None or other is self

            __hash__ = object.__hash__

        portclone.spawn(["true"], flags=F.CLONE_FILES, stdout=LikeNone())

    class Falsy(list):  # type: ignore[type-arg]
        def __bool__(self) -> bool:
            return False

    r, w = os.pipe()
    try:
        with no_side_effects(), pytest.raises(portclone.InvalidFlagsError):
            portclone.spawn(["true"], flags=F.CLONE_FILES, close_fds=False, pass_fds=Falsy([r]))
    finally:
        os.close(r)
        os.close(w)

    ours = os.readlink("/proc/self/ns/uts")
    flags = Flags(F.CLONE_NEWUTS | F.CLONE_NEWUSER)
    with portclone.spawn(["readlink", "/proc/self/ns/uts"], flags=flags, stdout=PIPE) as child:
        theirs = child.communicate(timeout=60)[0].decode().strip()
    assert theirs.startswith("uts:[") and theirs != ours


@linux
def test_threads_hammering_malloc_and_the_gil_never_hang_spawn() -> None:
    import warnings

    def churn() -> None:
        [bytes(200) for _ in range(500)]  # malloc/free under the GIL

    codes = []
    with busy_threads(churn), warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # spawn never warns
        for _ in range(rounds(200, least=50)):
            codes.append(status_or_hung(portclone.spawn(["true"])))
    assert codes and set(codes) == {0}


FALLBACK = """
import errno, json, sys
sys.path.insert(0, {tests!r})
import seccomp_filter
seccomp_filter.refuse_clone3(errno.{err})
import portclone
report = {{}}
with portclone.spawn(["sh", "-c", "echo $$"], flags=portclone.CLONE_NEWPID,
                     stdout=portclone.PIPE) as c:
    report["newpid"] = [c.syscall, c.communicate()[0].decode().strip(), c.pidfd is not None]
try:
    portclone.spawn(["true"], set_tid=[4242])
    report["set_tid"] = "created"
except portclone.UnsupportedFlagError as e:
    report["set_tid"] = str(e)
print(json.dumps(report))
"""


@pytest.mark.requires("proc")
@linux
@pytest.mark.requires("root", "seccomp", "clone3", "CLONE_NEWPID")
@pytest.mark.parametrize("err", ["ENOSYS", "EPERM"])
def test_spawn_falls_back_to_libc_clone(err: str) -> None:
    """SIMULATED: clone3 refused by a seccomp filter in a throwaway interpreter."""
    result = run_python(FALLBACK.format(tests=TESTS_DIR, err=err))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["newpid"] == ["clone", "1", True]
    assert "needs clone3" in report["set_tid"]


# -- the CLI ------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portclone", "run", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.requires("proc")
@pytest.mark.requires("linux", "CLONE_NEWUSER", "CLONE_NEWPID", "CLONE_NEWUTS")
def test_run_is_a_flag_checked_unshare() -> None:
    result = run_cli(
        "-f",  # as unshare: the new PID namespace is the children's
        "--flags",
        "NEWUSER,NEWPID,NEWNS",
        "--map-root",
        "--hostname",
        "jail",
        "--",
        "sh",
        "-c",
        "echo $$ $(id -u) $(hostname); exit 3",
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.split() == ["1", "0", "jail"]


def test_run_errors_and_help() -> None:
    assert run_cli("--flags", "NEWBANANA", "--", "true").returncode == 1  # as unshare's
    missing_cmd = run_cli("--", "no-such-command-portclone")
    assert missing_cmd.returncode == 127 and "No such file" in missing_cmd.stderr
    helptext = run_cli("--help").stdout
    backend = portclone.current_backend()
    assert f"The {backend.name} backend honours" in " ".join(helptext.split())
    fork = run_cli_env({"PORTCLONE_BACKEND": "fork"}, "--flags", "NEWPID", "--", "true")
    assert fork.returncode == 1 and "--flags=NEWPID" in fork.stderr and "os.fork cannot" in fork.stderr


def run_cli_env(env: dict, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, "-m", "portclone", "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


class _FakeFile:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


@pytest.mark.parametrize("slot", ["stdin", "stdout", "stderr"])
def test_a_file_objects_fd_is_checked_before_anything_starts(portclone_backend: Backend, slot: str) -> None:
    """As an int fd is: closed is EBADF, negative is ValueError, before any child exists."""
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with no_side_effects(), pytest.raises(OSError) as closed:
        portclone.spawn(["true"], **{slot: _FakeFile(w)})
    assert closed.value.errno == errno.EBADF
    with no_side_effects(), pytest.raises(ValueError, match="invalid file descriptor -5"):
        portclone.spawn(["true"], **{slot: _FakeFile(-5)})


@pytest.mark.parametrize("fd", [2**31, 2**40, -(2**40)])
def test_an_fd_beyond_a_c_int_is_a_value_error(fd: int) -> None:
    with no_side_effects(), pytest.raises(ValueError, match="invalid file descriptor"):
        portclone.spawn(["true"], pass_fds=[fd])


def test_every_reason_against_a_flag_is_said() -> None:
    """CLONE_FILES with stdout=PIPE and close_fds=True breaks two rules: both are said;
    a rule about a missing flag names that flag."""
    with no_side_effects(), pytest.raises(portclone.InvalidFlagsError) as info:
        portclone.spawn(["true"], flags=F.CLONE_FILES, stdout=PIPE)
    reason = info.value.reasons["CLONE_FILES"]
    assert "redirecting stdio" in reason and "close_fds=True" in reason
    assert len(info.value.refusals) == 2
    with no_side_effects(), pytest.raises(portclone.InvalidFlagsError) as info:
        portclone.spawn(["true"], uid_map="0 0 1", flags=F.CLONE_VFORK)
    assert info.value.flags == F.CLONE_VFORK


def test_process_group(portclone_backend: Backend) -> None:
    """process_group=0: the program leads a group of its own (subprocess's, 3.11)."""
    # the program's own getpgrp(): ps -p $$ would read /proc/<pid>, another process's in a
    # PID namespace that sees an outer /proc
    group = [sys.executable, "-c", "import os; print(os.getpgrp())"]

    class Unset(int):  # 0 that converts to -1, "stay in ours": the value decides, not int()
        def __int__(self) -> int:
            return -1

    for given in (0, Unset(0)):
        with portclone.spawn(group, process_group=given, stdout=PIPE) as child:
            out = child.communicate(timeout=60)[0].decode().strip()
        assert out == str(child.pid) and child.returncode == 0
    for bad, error in ((-1, ValueError), (True, TypeError), ("0", TypeError)):
        with no_side_effects(), pytest.raises(error, match="process_group"):
            portclone.spawn(["true"], process_group=bad)


def test_an_empty_argv0_runs_or_is_refused_before_the_start(portclone_backend: Backend) -> None:
    """argv[0] may be empty (subprocess runs ["", ...] with executable=); the fork backend's
    os.execve and os.posix_spawn refuse it, so that backend says so before anything starts,
    whichever of its paths (posix_spawn, or fork + exec for a cwd) the call would take."""
    for extra in ({}, {"cwd": "/"}):
        if portclone_backend.name == "fork":
            with no_side_effects(), pytest.raises(ValueError, match=r"argv\[0\] is empty.*fork backend"):
                portclone.spawn(["", "hello"], executable="/bin/echo", **extra)
            continue
        with portclone.spawn(["", "hello"], executable="/bin/echo", stdout=PIPE, **extra) as child:
            assert child.communicate(timeout=60)[0] == b"hello\n" and child.returncode == 0


def test_fork_exec_reports_an_exec_python_refuses() -> None:
    """The fork backend's fork + exec child reports any exception of its exec, not only an
    OSError: SIMULATED refusal (os.execve replaced by one raising ValueError, as Python's
    own argument checks do), in a fresh interpreter."""
    out = run_python(
        """
        import os, portclone
        def refuses(*args):
            raise ValueError("refused by Python")
        os.execve = refuses
        with portclone.use_backend("fork"):
            try:
                portclone.spawn(["/bin/true"], cwd="/")  # cwd: the fork + exec path
                print("started")
            except OSError as e:
                print("OSError", e.errno)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["OSError", str(errno.EINVAL)], out.stdout


def test_a_flag_word_beyond_64_bits_is_named_as_given(portclone_backend: Backend) -> None:
    """spawn() asks for CLONE_VM on the caller's behalf, but not in a word it refuses: the
    error names the caller's own word."""
    with no_side_effects(), pytest.raises(portclone.InvalidFlagsError, match="0x10000000000000000 is not"):
        portclone.spawn(["true"], flags=1 << 64)
