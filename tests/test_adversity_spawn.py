"""spawn() and its Child under adversity (issue 10): pipes, odd input, fd hygiene, odd
environments, other reapers, running out of fds.

Anything that could hang or that changes process-wide state (signal dispositions, mounts,
rlimits) runs in a throwaway interpreter under a time limit.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import textwrap
from typing import Any, Iterator

import pytest
from conftest import TESTS_DIR, missing, no_side_effects, run_python

import portclone
from portclone import PIPE, Backend, InvalidFlagsError
from portclone import CloneFlags as F

#: these tests read /proc (fd tables, children, status): Linux
pytestmark = pytest.mark.requires("proc")

BACKENDS = portclone.available_backends()
#: where this portclone came from, for throwaway interpreters
SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(portclone.__file__)))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with portclone.use_backend(request.param) as chosen:
        yield chosen


def fresh(backend: str, code: str, timeout: float = 60) -> Any:
    """Run ``code`` under ``backend`` in a new interpreter; the JSON it printed last."""
    result = run_python(code, timeout=timeout, env={"PORTCLONE_BACKEND": backend, "PYTHONPATH": SOURCE})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


# -- communicate() ---------------------------------------------------------------------

#: Reads stdin 4 KiB at a time and answers each read with 8 times as much on stdout
#: (the chunk, then dots), until EOF or, with argv[1], until it has read that much;
#: then it stops reading and waits for a signal.
SLOW_READER = textwrap.dedent("""
    import os, signal, sys
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else None
    total = 0
    while limit is None or total < limit:
        data = os.read(0, 4096)
        if not data:
            break
        total += len(data)
        out = data + b"." * (7 * len(data))
        while out:
            out = out[os.write(1, out):]
    os.write(2, str(total).encode())
    if limit is not None:
        signal.pause()
""")

COMMUNICATE_SLOW_READER = """
import json, sys, time, portclone
data = b"abcdefgh" * (1 << 17)  # 1 MiB
child = portclone.spawn([sys.executable, "-c", {program!r}] + {args!r},
                        stdin=portclone.PIPE, stdout=portclone.PIPE, stderr=portclone.PIPE)
start = time.monotonic()
try:
    out, err = child.communicate(data, timeout={timeout})
    result = {{"same": out.replace(b".", b"") == data, "out": len(out), "err": err.decode()}}
except portclone.TimeoutExpired as e:
    result = {{"timeout": True, "partial": len(e.stdout or b""), "alive": child.poll() is None}}
    child.kill()
    child.communicate()
result["seconds"] = time.monotonic() - start
print(json.dumps(result))
"""


def test_communicate_slow_reader_big_writer_does_not_deadlock(backend: Backend) -> None:
    """Defect 2: poll() says writable for PIPE_BUF; a blocking 64 KiB write then waited for
    a program that was itself waiting for us to read its output."""
    code = COMMUNICATE_SLOW_READER.format(program=SLOW_READER, args=[], timeout=60)
    result = fresh(backend.name, code)
    assert result == {"same": True, "out": 8 << 20, "err": str(1 << 20), "seconds": result["seconds"]}


#: communicate() with a short timeout, retried until the program has said on stderr that
#: it stopped reading and all it wrote has come: every call must time out, and each brings
#: the output so far.  Lost output never arrives, and the interpreter's timeout fails it.
COMMUNICATE_UNTIL_STOPPED = """
import json, sys, portclone
data = b"abcdefgh" * (1 << 17)  # 1 MiB: more than the program reads
child = portclone.spawn([sys.executable, "-c", {program!r}, "200000"],
                        stdin=portclone.PIPE, stdout=portclone.PIPE, stderr=portclone.PIPE)
calls = 0
while True:
    calls += 1
    try:
        child.communicate(data, timeout=0.2)
        result = {{"returned": True}}
        break
    except portclone.TimeoutExpired as e:
        said = (e.stderr or b"").decode()  # once it has stopped reading
        if said and len(e.stdout or b"") >= int(said) * 8:  # and all it wrote has come
            result = {{"timeout": True, "partial": len(e.stdout), "said": said,
                       "alive": child.poll() is None}}
            break
child.kill()
child.communicate()
result["calls"] = calls
print(json.dumps(result))
"""


def test_communicate_timeout_fires_when_the_program_stops_reading(backend: Backend) -> None:
    """The timeout fires while the program waits with its stdin unread, and brings what it
    wrote before.  The program says when it has stopped reading, so no clock decides."""
    result = fresh(backend.name, COMMUNICATE_UNTIL_STOPPED.format(program=SLOW_READER))
    assert result.get("timeout") is True, result
    assert int(result["said"]) >= 200000  # it read all it would before it stopped
    assert result["partial"] == int(result["said"]) * 8  # all it wrote came with the timeout
    assert result["alive"] is True  # the timeout, not the program's end, ended the wait


#: Writes 1 MiB (more than a pipe holds), waits for a byte on the gate fd (argv[1]),
#: then copies stdin to stdout.
GATED = textwrap.dedent("""
    import os, sys
    os.write(2, b"started\\n")
    big = b"x" * (1 << 20)
    while big:
        big = big[os.write(1, big):]
    os.read(int(sys.argv[1]), 1)
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        while data:
            data = data[os.write(1, data):]
""")


@pytest.mark.parametrize("with_input", [True, False], ids=["input", "no-input"])
def test_communicate_resumes_after_timeout_with_nothing_lost(backend: Backend, with_input: bool) -> None:
    data = bytes(range(256)) * 8192 if with_input else None  # 2 MiB: more than the pipe
    gate_r, gate_w = os.pipe()
    try:
        child = portclone.spawn(
            [sys.executable, "-c", GATED, str(gate_r)],
            pass_fds=(gate_r,),
            stdin=PIPE,
            stdout=PIPE,
            stderr=PIPE,
        )
    finally:
        os.close(gate_r)
    with child:
        try:
            with pytest.raises(portclone.TimeoutExpired) as first:
                child.communicate(data, timeout=0.5)  # the program waits at the gate
            os.write(gate_w, b"g")
            out, err = child.communicate(timeout=60)
        finally:
            os.close(gate_w)
            child.kill()
    assert out == b"x" * (1 << 20) + (data or b"")
    assert err == b"started\n"
    assert out.startswith(first.value.stdout)
    assert child.returncode == 0 or child.returncode == -9


COMMUNICATE_INTERRUPTED = """
import json, random, signal, sys, portclone

armed = [False]

def interrupt(signum, frame):
    # Only inside communicate(): the loop below must be able to catch and retry.  A timer
    # that fires before communicate() is entered (a slow machine) fires again soon.
    while frame is not None:
        if frame.f_code.co_name == "communicate" and "portclone" in frame.f_code.co_filename:
            raise KeyboardInterrupt
        frame = frame.f_back
    if armed[0]:
        signal.setitimer(signal.ITIMER_REAL, 0.00005)

data = bytes(range(1, 256)) * 16448  # 4 MiB
signal.signal(signal.SIGALRM, interrupt)
rng = random.Random(10)
interrupts, wrong = 0, []
for round in range(20):
    child = portclone.spawn(["cat"], stdin=portclone.PIPE, stdout=portclone.PIPE,
                            stderr=portclone.PIPE)
    hits = 0
    while True:
        # one interrupt per attempt, at a random point of communicate(); at most 5 per
        # round, so the round ends whatever the pace
        armed[0] = hits < 5
        delay = rng.uniform(0.00005, 0.002) if armed[0] else 0
        signal.setitimer(signal.ITIMER_REAL, delay)
        try:
            out, err = child.communicate(data)  # the same input object: a retry
            break
        except KeyboardInterrupt:
            interrupts += 1
            hits += 1
        except Exception as e:
            out, err = repr(e).encode(), b""
            child.kill()
            break
    armed[0] = False
    signal.setitimer(signal.ITIMER_REAL, 0)
    code = child.wait(timeout=60)
    if out != data or err != b"" or code != 0:
        wrong.append([round, len(out), out[:80].decode(errors="replace"), err.decode(), code])
print(json.dumps({"interrupts": interrupts, "wrong": wrong}))
"""


def test_communicate_resumes_after_keyboard_interrupts(backend: Backend) -> None:
    """A SIGALRM handler raises KeyboardInterrupt at a random point of each communicate();
    each retry goes on where the last stopped: the program's output is its input, exactly."""
    result = fresh(backend.name, COMMUNICATE_INTERRUPTED, timeout=90)
    assert result["wrong"] == []
    assert result["interrupts"] >= 20


# -- uid/gid maps -------------------------------------------------------------------------

BAD_MAPS = {
    "outside id of 2**40 (the kernel keeps 32 bits: root)": ([(0, 2**40, 1)], ValueError),
    "inside id of 2**32": ([(2**32, 0, 1)], ValueError),
    "the invalid id 2**32 - 1": ([(0, 2**32 - 1, 1)], ValueError),
    "negative id": ([(-1, 0, 1)], ValueError),
    "count 0": ([(0, 0, 0)], ValueError),
    "range wrapping past 2**32 - 1": ([(0, 2**32 - 2, 2)], ValueError),
    "bool id": ([(True, 0, 1)], TypeError),
    "bool count": ([(0, 0, True)], TypeError),
    "float id": ([(0.0, 0, 1)], TypeError),
    "pair": ([(0, 0)], ValueError),
    "bare int": ([0], TypeError),
    "bytes": (b"0 0 1", TypeError),
    "empty": ([], ValueError),
    "inside ranges overlap": ([(0, 0, 10), (5, 100, 1)], ValueError),
    "outside ranges overlap": ([(0, 0, 10), (100, 5, 1)], ValueError),
    "341 lines": ([(i, i, 1) for i in range(341)], ValueError),
    "str, id of 2**32": ("0 4294967296 1", ValueError),
    "str, count 0": ("0 0 0\n", ValueError),
    "str, two fields": ("0 0\n", ValueError),
    "str, junk": ("0 0 1 x\n", ValueError),
    "str, not decimal": ("0 0x10 1\n", ValueError),
    "str, negative": ("-1 0 1\n", ValueError),
    "str, overlap": ("0 0 10\n9 100 1\n", ValueError),
    "str, blank": (" \n", ValueError),
}


@pytest.mark.parametrize("case", list(BAD_MAPS))
def test_malformed_id_maps_are_refused_before_any_child(case: str) -> None:
    """Defect 9: they passed, and the kernel truncated ids or the child started anyway."""
    if "linux" not in BACKENDS:
        pytest.skip("maps need the linux backend")
    value, error = BAD_MAPS[case]
    with portclone.use_backend("linux"), no_side_effects(), pytest.raises(error):
        portclone.spawn(["true"], flags=F.CLONE_NEWUSER, uid_map=value, gid_map=[(0, 0, 1)])


def test_id_map_text_is_parsed_and_rewritten_canonically() -> None:
    from portclone._validate import parse_id_map

    assert parse_id_map(" 0   1000 1\n\n10\t2000 5", "uid_map") == b"0 1000 1\n10 2000 5\n"
    assert parse_id_map([(0, 1000, 1), [10, 2000, 5]], "uid_map") == b"0 1000 1\n10 2000 5\n"
    assert parse_id_map([(4294967294, 0, 1)], "uid_map") == b"4294967294 0 1\n"
    assert parse_id_map([(0, 0, 4294967295)], "uid_map") == b"0 0 4294967295\n"
    assert parse_id_map([(i, i, 1) for i in range(340)], "gid_map") is not None
    assert parse_id_map(None, "uid_map") is None


# -- fd hygiene ---------------------------------------------------------------------------


def test_clone_files_is_refused_unless_close_fds_is_false(backend: Backend) -> None:
    """Defect 10: with CLONE_FILES, close_fds=True was ignored and the program got the
    parent's inheritable fds.  The child shares the parent's table, so it cannot be honoured."""
    refusal = backend.why_refused(F.CLONE_FILES, exec_child=True)
    if refusal:
        pytest.skip(refusal)
    r, w = os.pipe()
    os.set_inheritable(r, True)
    try:
        with no_side_effects(), pytest.raises(InvalidFlagsError, match="close_fds=False"):
            portclone.spawn(["true"], flags=F.CLONE_FILES)
        # asked for: the program gets the fd
        child = portclone.spawn(
            [sys.executable, "-c", f"import os; os.fstat({r})"], flags=F.CLONE_FILES, close_fds=False
        )
        with child:
            assert child.wait(timeout=60) == 0
    finally:
        os.close(r)
        os.close(w)


# -- odd environments -----------------------------------------------------------------------


def test_env_without_path_searches_os_defpath(
    backend: Backend, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 11: env= without PATH searched the parent's PATH; subprocess searches
    os.defpath (os.get_exec_path(env))."""
    program = tmp_path / "portclone-only-on-the-parents-path"
    program.write_text("#!/bin/sh\nexit 7\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
    with portclone.spawn([program.name]) as child:  # our PATH, as before
        assert child.wait(timeout=60) == 7
    with portclone.spawn([program.name], env={"PATH": str(tmp_path)}) as child:
        assert child.wait(timeout=60) == 7
    for env in ({}, {"HOME": "/"}):
        with no_side_effects(), pytest.raises(FileNotFoundError):
            portclone.spawn([program.name], env=env)
    with portclone.spawn(["true"], env={}) as child:  # found in os.defpath
        assert child.wait(timeout=60) == 0


# -- other reapers ---------------------------------------------------------------------------

SIGCHLD_IGNORED = """
import json, signal, portclone
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
raised = {}
for case, kwargs in [("path", {}), ("path, cwd", {"cwd": "/"}),
                     ("PATH lookup", {"executable": "portclone-no-such-program"})]:
    try:
        portclone.spawn(["/nonexistent/portclone-no-such-program"], **kwargs).wait()
        raised[case] = None
    except Exception as e:
        raised[case] = type(e).__name__
print(json.dumps(raised))
"""


def test_failed_exec_with_sigchld_ignored_is_file_not_found(backend: Backend) -> None:
    """Defect 12: the fork backend reported ChildProcessError: with SIGCHLD ignored, its
    waitpid for the failed child found none.  Both of its paths (posix_spawn, and fork + exec
    for cwd=) and the native backends must raise what subprocess raises."""
    assert fresh(backend.name, SIGCHLD_IGNORED) == {
        "path": "FileNotFoundError",
        "path, cwd": "FileNotFoundError",
        "PATH lookup": "FileNotFoundError",
    }


NO_PROC = """
import ctypes, json, os, sys, portclone
portclone.current_backend()  # chosen and loaded while /proc is there
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_REC, MS_PRIVATE, MNT_DETACH = 0x20000, 0x4000, 1 << 18, 2
assert libc.unshare(CLONE_NEWNS) == 0, ctypes.get_errno()  # mounts of our own, then:
assert libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0, ctypes.get_errno()
assert libc.umount2(b"/proc", MNT_DETACH) == 0, ctypes.get_errno()
assert not os.path.exists("/proc/self/fd")
r, w = os.pipe()
os.set_inheritable(r, True)
# exit 0 when the program does not have fd r, 3 when it does
check = f"import os, sys\\ntry:\\n    os.fstat({r})\\nexcept OSError:\\n    sys.exit(0)\\nsys.exit(3)"
result = {}
for case, kwargs in [("default", {}), ("cwd", {"cwd": "/"}), ("pass_fds", {"pass_fds": [w]}),
                     ("close_fds=False", {"close_fds": False})]:
    try:
        result[case] = portclone.spawn([sys.executable, "-c", check], **kwargs).wait(timeout=60)
    except Exception as e:
        result[case] = repr(e)
print(json.dumps(result))
"""


@pytest.mark.requires("root")
def test_spawn_without_proc_keeps_fds_from_the_program(backend: Backend) -> None:
    """Defect 8 (second half): without /proc the fork backend failed on /dev/fd, a link into
    it.  /proc is unmounted after portclone was loaded: the choice is made per call."""
    assert fresh(backend.name, NO_PROC) == {"default": 0, "cwd": 0, "pass_fds": 0, "close_fds=False": 3}


OLD_KERNEL = """
import ctypes, json, os, sys
sys.path.insert(0, TESTS)
import seccomp_filter, portclone
portclone.current_backend()  # chosen and loaded first
seccomp_filter.refuse_close_range(ERRNO, FLAGS)
if not WITH_PROC:
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNS, MS_REC, MS_PRIVATE, MNT_DETACH = 0x20000, 0x4000, 1 << 18, 2
    assert libc.unshare(CLONE_NEWNS) == 0, ctypes.get_errno()
    assert libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0, ctypes.get_errno()
    assert libc.umount2(b"/proc", MNT_DETACH) == 0, ctypes.get_errno()
    assert not os.path.exists("/proc/self/fd")
r, w = os.pipe()
os.set_inheritable(r, True)
far = os.dup2(r, 900)  # far above the others: a walk that stops early misses it
# exit 0 when the program has neither r nor far, 3 when it has them
check = (f"import os, sys\\nfor fd in ({r}, {far}):\\n    try:\\n        os.fstat(fd)\\n"
         f"    except OSError:\\n        continue\\n    sys.exit(3)\\nsys.exit(0)")
result = {}
for case, kwargs in [("default", {}), ("pass_fds", {"pass_fds": [w]}),
                     ("close_fds=False", {"close_fds": False})]:
    try:
        result[case] = portclone.spawn([sys.executable, "-c", check], **kwargs).wait(timeout=60)
    except Exception as e:
        result[case] = repr(e)
print(json.dumps(result))
"""


@pytest.mark.parametrize(
    "kernel, errno_value, flags, with_proc",
    [
        ("5.10: no CLOSE_RANGE_CLOEXEC", errno.EINVAL, 4, True),
        ("5.10 without /proc", errno.EINVAL, 4, False),
        ("before 5.9: no close_range", errno.ENOSYS, 0, True),
        ("before 5.9 without /proc", errno.ENOSYS, 0, False),
    ],
)
def test_spawn_on_kernels_without_close_range_cloexec(
    backend: Backend, kernel: str, errno_value: int, flags: int, with_proc: bool
) -> None:
    """SIMULATED with a seccomp filter (tests/seccomp_filter.py): close_range refuses
    CLOSE_RANGE_CLOEXEC as Linux 5.9 and 5.10 do, or is missing as before 5.9; with /proc
    unmounted too, nothing lists the open fds.  The program still gets no fd but stdio
    and pass_fds (bullseye's 5.10 failed with FileNotFoundError without /proc)."""
    if not with_proc and missing("root"):
        pytest.skip(f"{missing('root')}: /proc is unmounted in a mount namespace")
    code = (
        OLD_KERNEL.replace("TESTS", repr(TESTS_DIR))
        .replace("ERRNO", str(errno_value))
        .replace("FLAGS", str(flags))
        .replace("WITH_PROC", str(with_proc))
    )
    assert fresh(backend.name, code) == {"default": 0, "pass_fds": 0, "close_fds=False": 3}, kernel


# -- transient resource failures ---------------------------------------------------------

OUT_OF_FDS = """
import json, os, resource, portclone
portclone.spawn(["true"]).wait(timeout=60)  # the backend loaded, its probes answered
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
fillers = []
try:
    while True:
        fillers.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
except OSError:
    pass  # EMFILE: the table is full
for fd in fillers[len(fillers) - FREE:]:
    os.close(fd)  # FREE slots left
try:
    portclone.spawn(["true"], **KWARGS).wait(timeout=60)
    failure = None
except OSError as e:
    failure = {"errno": e.errno, "message": str(e)}
for fd in fillers[:len(fillers) - FREE]:
    os.close(fd)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
child = portclone.spawn(["true"])  # nothing remembered from the burst
print(json.dumps({"failure": failure, "after": child.wait(timeout=60)}))
"""


def out_of_fds(backend: str, free: int, **kwargs: Any) -> Any:
    """spawn(["true"], **kwargs) with ``free`` slots left in a full descriptor table."""
    return fresh(backend, OUT_OF_FDS.replace("FREE", str(free)).replace("KWARGS", repr(kwargs)))


@pytest.mark.parametrize("backend", [b for b in portclone.available_backends() if b != "fork"])
def test_a_plain_spawn_needs_no_descriptor_but_its_pidfd(backend: str) -> None:
    """A child that shares our memory and holds us until its exec reports its failures in
    that memory: spawn() opens no pipe, and works while one slot is free (the pidfd's;
    the netbsd backend has none and needs no slot at all).  (The fork backend's fork +
    exec reports through a pipe, as subprocess does.)"""
    assert out_of_fds(backend, 1) == {"failure": None, "after": 0}
    result = out_of_fds(backend, 0)
    if backend == "netbsd":
        assert result == {"failure": None, "after": 0}
        return
    failure = result["failure"]
    assert failure is not None and failure["errno"] == errno.EMFILE, result
    assert "descriptor limit" in failure["message"] and "pidfd" in failure["message"], failure
    assert result["after"] == 0


@pytest.mark.requires("linux", "CLONE_NEWTIME")
def test_a_failed_clone_is_named_with_its_own_flags() -> None:
    """A child entering a time namespace is cloned without CLONE_VM (it needs memory of
    its own): the failure of that clone (EMFILE for its pidfd, once the pipe took the
    last two slots) names the flags it had, not the CLONE_VM spawn() asks for."""
    result = out_of_fds("linux", 2, time_offsets={"monotonic": 5})
    failure = result["failure"]
    assert failure is not None and failure["errno"] == errno.EMFILE, result
    assert "clone3(flags=CLONE_NEWTIME," in failure["message"], failure
    assert "CLONE_VM" not in failure["message"], failure


@pytest.mark.requires("linux", "CLONE_NEWUSER")
def test_out_of_fds_names_portclones_pipe_not_the_clone() -> None:
    """Defect 15: EMFILE while creating spawn's internal error pipe was reported as a
    failed clone3(...).  A child whose maps the parent writes (no CLONE_VFORK) reports
    through that pipe."""
    result = out_of_fds("linux", 0, map_root=True)
    failure = result["failure"]
    assert failure is not None and failure["errno"] == errno.EMFILE, result
    assert "internal pipe" in failure["message"] and "clone3(" not in failure["message"]
    assert "clone(" not in failure["message"]
    assert result["after"] == 0


def test_an_fd_another_thread_opens_meanwhile_never_reaches_the_program() -> None:
    """close_fds=True in a process with another thread: an inheritable fd that thread
    opens between the fork backend's listing of fds and the start never reaches the
    program.  SIMULATED timing: the listing itself opens fd 77 right after it looks, in
    the parent, as the other thread (which exists, idle) could; a real thread hits that
    window too rarely for a test.  A fresh interpreter has no other inheritable fd, so
    the listing alone decides between posix_spawn and fork + exec."""
    out = run_python(
        """
        import os, sys, threading, portclone
        from portclone.backends import fork
        listing, parent = fork._inheritable_fds, os.getpid()
        source = os.open(os.devnull, os.O_RDONLY)
        def listing_then_a_new_fd():
            fds = listing()
            if os.getpid() == parent:
                os.dup2(source, 77, inheritable=True)
            return fds
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
        fork._inheritable_fds = listing_then_a_new_fd
        probe = [sys.executable, "-S", "-c", "import os; print(os.path.exists('/proc/self/fd/77'))"]
        with portclone.use_backend("fork"):
            with portclone.spawn(probe, stdout=portclone.PIPE) as child:
                seen, _ = child.communicate(timeout=60)
        stop.set()
        print(child.syscall, seen.decode().strip())
    """,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["fork", "False"], out.stdout


@pytest.mark.requires("linux", "CLONE_NEWTIME")
def test_spawn_never_waits_for_a_stranger_holding_its_error_pipe() -> None:
    """A fork-like child another thread clones while spawn() runs inherits spawn()'s
    internal error pipe.  A thread that copies every new pipe fd it sees stands for it
    (and holds the copies for good): spawn() must still return at once.  A plain spawn()
    has no pipe (its child reports in the memory it shares with us); one whose child
    enters a time namespace has its own memory, and a pipe.  (The fork backend's fork +
    exec waits for EOF, as subprocess does: SECURITY.md.)"""
    out = run_python(
        """
        import os, stat, threading, portclone
        known = set(os.listdir("/proc/self/fd"))
        held, stop = [], threading.Event()
        def copy_new_pipes():
            while not stop.is_set():
                for name in os.listdir("/proc/self/fd"):
                    try:
                        fd = int(name)
                        if name not in known and fd not in held and stat.S_ISFIFO(os.fstat(fd).st_mode):
                            held.append(os.dup(fd))
                    except OSError:
                        pass
        thread = threading.Thread(target=copy_new_pipes, daemon=True)
        thread.start()
        spawns = 0
        with portclone.use_backend("linux"):
            while len(held) < 3 and spawns < 3000:
                portclone.spawn(["/bin/true"], time_offsets={"monotonic": 0}).wait()
                spawns += 1
        stop.set()
        thread.join()
        print(len(held), spawns)
    """,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    if out.stdout.split()[0] == "0":
        pytest.skip("the copying thread never caught spawn()'s pipe in 3,000 spawns here")
