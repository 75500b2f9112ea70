"""``portclone unshare`` and ``portclone nsenter`` on their own: the grammar, the options the
host's util-linux (2.38) lacks, persistent namespaces, id ranges through newuidmap, and the
backends that refuse what they cannot do.  tests/test_dropin_differential.py compares the
rest with util-linux line by line."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

import conftest
import pytest
from conftest import foreign_proc, proc_path

from portclone.cli._getopt import OPTIONAL, REQUIRED, GetoptError, Opt, getopt_long

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the drop-ins' model is Linux's")

NOBODY = 65534


def tool(
    name: str, *args: str, env: Optional[Dict[str, str]] = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portclone", name, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        **kw,  # type: ignore[arg-type]
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# -- the grammar ------------------------------------------------------------------------------

OPTS = [
    Opt("map-root-user", "r"),
    Opt("map-user", "", REQUIRED),
    Opt("mount", "m", OPTIONAL, short_arg=0),
    Opt("mount-proc", "", OPTIONAL),
    Opt("wd", "w", REQUIRED),
    Opt("fork", "f"),
]


def names(argv: List[str]) -> List[object]:
    found, rest = getopt_long(argv, OPTS)
    return [(o.long, v) for o, v in found] + [rest]


def test_getopt_takes_options_in_order_and_stops_at_the_program() -> None:
    assert names(["-rf", "--map-user=5", "-r", "id", "-r"]) == [
        ("map-root-user", None),
        ("fork", None),
        ("map-user", "5"),
        ("map-root-user", None),
        ["id", "-r"],
    ]


def test_getopt_values_attached_or_next_and_optional_only_attached() -> None:
    assert names(["-w/tmp", "-w", "/etc", "--map-user", "7", "--mount-proc", "x"]) == [
        ("wd", "/tmp"),
        ("wd", "/etc"),
        ("map-user", "7"),
        ("mount-proc", None),
        ["x"],
    ]
    assert names(["--mount-proc=/p", "-mf"]) == [("mount-proc", "/p"), ("mount", None), ("fork", None), []]


def test_getopt_abbreviations_exact_names_and_ambiguity() -> None:
    assert names(["--map-r", "--mount", "--"]) == [("map-root-user", None), ("mount", None), []]
    with pytest.raises(GetoptError, match="'--ma' is ambiguous"):
        names(["--ma"])
    with pytest.raises(GetoptError, match="unrecognized option '--bogus'"):
        names(["--bogus"])
    with pytest.raises(GetoptError, match="invalid option -- 'x'"):
        names(["-rx"])
    with pytest.raises(GetoptError, match="'--fork' doesn't allow an argument"):
        names(["--fork=1"])
    with pytest.raises(GetoptError, match="requires an argument -- 'w'"):
        names(["-w"])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--bogus"], "--bogus"),
        (["--map-user=nosuchuser", "true"], "nosuchuser"),
        (["--propagation", "bogus", "true"], "bogus"),
        (["--kill-child=NOSUCH", "true"], "NOSUCH"),
        (["--setgroups=maybe", "true"], "maybe"),
        (["-S", "x", "true"], "x"),
        (["--map-users=1:2", "true"], "1:2"),
        (["--monotonic=soon", "-T", "true"], "soon"),
    ],
)
def test_usage_errors_are_one_line_naming_option_and_value(args: List[str], named: str) -> None:
    result = tool("unshare", *args)
    assert result.returncode == 1
    assert named in one_line(result.stderr)


def test_nsenter_usage_errors_are_one_line() -> None:
    for args, named in ((["--net=/nonexistent", "true"], "/nonexistent"), (["-t", "x", "-u"], "x")):
        result = tool("nsenter", *args)
        assert result.returncode == 1
        assert named in one_line(result.stderr)


def test_the_console_scripts_answer_to_their_link_name(tmp_path: object) -> None:
    """A link named unshare to the console script: messages carry that name."""
    code = (
        "import sys; sys.argv[0] = '/usr/local/bin/unshare'; "
        "from portclone.cli import unshare_main; sys.exit(unshare_main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--bogus"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert one_line(result.stderr).startswith("unshare: unrecognized option '--bogus'")
    code = code.replace("unshare", "nsenter")
    result = subprocess.run(
        [sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and " nsenter [options]" in result.stdout


# -- what util-linux 2.38 lacks ----------------------------------------------------------------


def test_clear_env_and_whitelist_env() -> None:
    env = dict(os.environ, KEEP="k", DROP="d")
    assert (
        tool("unshare", "--clear-env", "sh", "-c", 'echo "${KEEP:-none}${DROP:-none}"', env=env).stdout
        == "nonenone\n"
    )
    result = tool(
        "unshare", "--whitelist-env", "KEEP,PATH", "sh", "-c", 'echo "${KEEP:-none}${DROP:-none}"', env=env
    )
    assert result.stdout == "knone\n"


_WAITS_FOR_TERM = (
    "import os, signal, sys\n"
    "def on_term(*a):\n"
    "    print('got-term', flush=True); os._exit(7)\n"
    "signal.signal(signal.SIGTERM, on_term)\n"
    "os.write(int(sys.argv[1]), b'r'); os.close(int(sys.argv[1]))\n"
    "while True: signal.pause()\n"
)


@pytest.mark.requires("linux")
def test_forward_signals_hands_term_to_the_forked_program() -> None:
    """unshare --forward-signals (2.40): TERM to the command reaches the program, and the
    command ends as the program did.  While it waits, the command takes INT and TERM with
    sigwait, never through a Python handler: a TERM that came just before the handler's
    wait waited with it, and the program was never told (seen on arm64 under load)."""
    r, w = os.pipe()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "portclone",
            "unshare",
            "-r",
            "--forward-signals",
            sys.executable,
            "-c",
            _WAITS_FOR_TERM,
            str(w),
        ],
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(w,),
        start_new_session=True,  # the program is in its group: a hang ends them both
    )
    os.close(w)
    try:
        assert os.read(r, 1) == b"r"  # the program runs, its handler is in place
        os.close(r)
        caught = int(_status_field(proc.pid, "SigCgt"), 16)  # sigwait takes TERM: no handler
        assert not caught & (1 << (signal.SIGTERM - 1)), hex(caught)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60 * conftest.GUARDS)
    except (subprocess.TimeoutExpired, AssertionError):  # a hang: say where the TERM is
        state = _signal_state(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60 * conftest.GUARDS)
        pytest.fail(f"TERM was not forwarded; signal state: {state}")
    assert (proc.returncode, out) == (7, "got-term\n")


@pytest.mark.requires("linux")
def test_forward_signals_forwards_a_term_that_came_right_after_the_fork() -> None:
    """A TERM that reaches the command just after its fork, before it waits, is forwarded
    once it does: it never meets the default action, and is not lost (the fork here sends
    the parent a TERM as soon as it returns)."""
    out = conftest.run_python(
        """
import os, signal
from portclone.cli import _unshare

real_fork = os.fork
def fork_then_term():
    pid = real_fork()
    if pid:
        os.kill(os.getpid(), signal.SIGTERM)  # a TERM just after the fork
    return pid
os.fork = fork_then_term
_unshare.end_as = lambda status: os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1
request = _unshare.Request(os.geteuid(), os.getegid())
request.forward = True
pid, _ = _unshare._fork(request)
if pid == 0:
    os.execv("/bin/sleep", ["sleep", "600"])
print("child ended by", _unshare._wait_child(pid, True))
""",
        timeout=60 * conftest.GUARDS,
    )
    assert (out.returncode, out.stdout) == (0, f"child ended by {int(signal.SIGTERM)}\n"), out


def _status_field(pid: int, name: str) -> str:
    with open(conftest.proc_path(pid, "status")) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1]
    raise LookupError(name)


def _signal_state(pid: int) -> dict:  # type: ignore[type-arg]
    """The Sig* lines of ``pid`` and of its children, by pid (as this process sees pids)."""
    found = {}
    try:
        pids = [pid, *conftest.children_of(pid)]
    except OSError:
        pids = [pid]
    for each in pids:
        try:
            with open(conftest.proc_path(each, "status")) as f:
                found[each] = [line.strip() for line in f if line.startswith(("State", "Sig", "Shd"))]
        except OSError as e:
            found[each] = [repr(e)]
    return found


@pytest.mark.requires("linux", "host-root")
def test_owner_makes_the_namespace_someone_elses() -> None:
    """--owner UID:GID (2.40): the new user namespace belongs to UID (NS_GET_OWNER_UID)."""
    if os.geteuid() != 0:
        pytest.skip("--owner changes the uid before unsharing: it needs root")
    r, w = os.pipe()
    code = "import os, signal, sys; os.write(int(sys.argv[1]), b'r'); signal.pause()"
    argv = ["unshare", "--owner=4321:4321", "-r", "/usr/bin/python3", "-c", code, str(w)]
    proc = subprocess.Popen([sys.executable, "-m", "portclone", *argv], pass_fds=(w,))
    os.close(w)
    try:
        assert os.read(r, 1) == b"r"
        fd = os.open(proc_path(proc.pid, "ns", "user"), os.O_RDONLY)
        owner = bytearray(4)
        fcntl.ioctl(fd, 0xB704, owner)  # NS_GET_OWNER_UID, from outside: unmapped inside
        os.close(fd)
        assert struct.unpack("I", owner)[0] == 4321
    finally:
        os.close(r)
        proc.kill()
        proc.wait()


# -- persistent namespaces ---------------------------------------------------------------------


@pytest.mark.requires("host-root", "linux")
def test_a_persistent_uts_namespace_outlives_the_command() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "uts")
        open(path, "w").close()
        made = tool("unshare", f"--uts={path}", "hostname", "persisted")
        try:
            assert (made.returncode, made.stderr) == (0, "")
            assert tool("nsenter", f"--uts={path}", "hostname").stdout == "persisted\n"
            assert (
                subprocess.run(
                    ["nsenter", f"--uts={path}", "hostname"], capture_output=True, text=True
                ).stdout
                == "persisted\n"
            )
        finally:
            subprocess.run(["umount", path], check=False)


@pytest.mark.requires("host-root", "linux")
def test_a_persistent_user_and_pid_namespace_with_fork() -> None:
    """--user=FILE and --pid=FILE: bound by a helper after the unshare (and the fork that
    makes pid_for_children real), as util-linux binds them."""
    with tempfile.TemporaryDirectory() as d:
        user, pid = os.path.join(d, "user"), os.path.join(d, "pid")
        for path in (user, pid):
            open(path, "w").close()
        made = tool("unshare", f"--user={user}", f"--pid={pid}", "-r", "-f", "true")
        try:
            assert (made.returncode, made.stderr) == (0, "")
            result = subprocess.run(
                ["nsenter", f"--user={user}", "cat", "/proc/self/uid_map"], capture_output=True, text=True
            )
            assert result.stdout.split() == ["0", "0", "1"]
            assert os.stat(pid).st_ino != os.stat("/proc/self/ns/pid").st_ino
        finally:
            for path in (user, pid):
                subprocess.run(["umount", path], check=False)


# -- id ranges without privilege: newuidmap ------------------------------------------------------


def _as_nobody(*argv: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    python = "/usr/bin/python3"
    base = {
        "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__import__("portclone").__file__))),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "env",
            *(f"{k}={v}" for k, v in {**base, **(env or {})}.items()),
            python,
            "-m",
            "portclone",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )


def _nobody_setting() -> Optional[str]:
    if os.geteuid() != 0:
        return "drops to uid 65534 from root: runs as root"
    if shutil.which("setpriv") is None or not os.access("/usr/bin/python3", os.X_OK):
        return "needs setpriv and /usr/bin/python3 (reachable by uid 65534)"
    probe = _as_nobody("unshare", "-r", "true")
    if probe.returncode != 0:
        return f"uid 65534 cannot run portclone unshare -r here: {probe.stderr.strip()}"
    return None


def _nobody_has_subids() -> Optional[str]:
    for table in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(table) as f:
                if not any(line.startswith(("nobody:", f"{NOBODY}:")) for line in f):
                    return f"{table} grants uid 65534 no range (.ci/run adds nobody:200000:65536)"
        except OSError:
            return f"no {table} (.ci/run writes one)"
    if shutil.which("newuidmap") is None:
        return "newuidmap is not installed (apt install uidmap; .ci/run does)"
    return None


def test_map_auto_without_privilege_goes_through_newuidmap() -> None:
    why = _nobody_setting() or _nobody_has_subids()
    if why:
        pytest.skip(why)
    ours = _as_nobody("unshare", "--map-auto", "-r", "cat", "/proc/self/uid_map", "/proc/self/gid_map")
    theirs = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "unshare",
            "--map-auto",
            "-r",
            "cat",
            "/proc/self/uid_map",
            "/proc/self/gid_map",
        ],
        capture_output=True,
        text=True,
        cwd="/",
    )
    if theirs.returncode != 0 and foreign_proc():
        # util-linux hands newuidmap its pid, which this /proc gives to another process
        assert (ours.returncode, ours.stderr) == (0, "")
        return
    assert (ours.returncode, ours.stdout.split(), ours.stderr) == (
        theirs.returncode,
        theirs.stdout.split(),
        theirs.stderr,
    )
    assert ours.stdout.split()[:3] == ["0", str(NOBODY), "1"]  # root is us; the range follows


def test_a_missing_newuidmap_names_the_package() -> None:
    why = _nobody_setting()
    if why:
        pytest.skip(why)
    with tempfile.TemporaryDirectory() as empty:
        os.chmod(empty, 0o755)
        result = _as_nobody("unshare", "--map-users=1:200000:10", "true", env={"PATH": empty})
    assert result.returncode == 1
    assert "newuidmap not found: install the uidmap package" in one_line(result.stderr)


def test_a_missing_subuid_entry_names_the_file(tmp_path: object) -> None:
    why = _nobody_setting()
    if why:
        pytest.skip(why)
    result = _as_nobody("unshare", "--map-subids", "true", env={"HOME": "/"})
    if result.returncode == 0:
        pytest.skip("uid 65534 has a /etc/subuid range here: the missing-entry case cannot be made")
    assert "/etc/sub" in one_line(result.stderr)


# -- nsenter's newer options ------------------------------------------------------------------


@pytest.fixture
def target() -> object:
    """A process in its own user, UTS and network namespaces (made by portclone unshare),
    ready once it has written a byte; its environment carries TARGET_ONLY."""
    r, w = os.pipe()
    code = (
        "import os, signal, socket, sys; socket.sethostname('inner'); "
        "os.write(int(sys.argv[1]), b'r'); signal.pause()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "portclone", "unshare", "-run", "--", sys.executable, "-c", code, str(w)],
        pass_fds=(w,),
        env=dict(os.environ, TARGET_ONLY="yes"),
    )
    os.close(w)
    ready = os.read(r, 1)
    os.close(r)
    if ready != b"r":
        proc.wait()
        pytest.skip("portclone unshare -run cannot make a target here")
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.requires("linux")
def test_nsenter_reaches_the_target_through_its_pidfd(target: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """The target's namespaces, also where /proc belongs to an outer PID namespace (the
    pidns setting): there util-linux's /proc/PID is another process, or none."""
    ways = [["-U", "--preserve-credentials", "-u"]]
    if conftest.missing("host-root") is None:
        # -a tries the namespaces the target shares with us too, as util-linux does: only
        # host root may enter the host's mount and cgroup namespaces
        ways.append(["-a", "--preserve-credentials"])
    for how in ways:
        result = tool("nsenter", "-t", str(target.pid), *how, "hostname")
        assert (result.returncode, result.stdout, result.stderr) == (0, "inner\n", ""), how


@pytest.mark.requires("linux")
def test_nsenter_env_takes_the_targets_environment(target: subprocess.Popen) -> None:  # type: ignore[type-arg]
    argv = [
        "-t",
        str(target.pid),
        "-U",
        "--preserve-credentials",
        "-u",
        "-e",
        "sh",
        "-c",
        'echo "${TARGET_ONLY:-no}"',
    ]
    result = tool("nsenter", *argv)
    if result.returncode != 0 and "Permission denied" in result.stderr:
        pytest.skip(f"this caller may not read the target's environ: {result.stderr.strip()}")
    assert (result.returncode, result.stdout) == (0, "yes\n")


@pytest.mark.requires("linux")
def test_nsenter_user_parent_enters_the_owner_of_the_targets_user_namespace(target: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """--user-parent: the parent of the target's user namespace, here our own: entering
    one's own user namespace is EINVAL, as with util-linux."""
    result = tool("nsenter", "-t", str(target.pid), "--user-parent", "true")
    assert result.returncode == 1
    assert "reassociate to namespace 'ns/user' failed: Invalid argument" in one_line(result.stderr)


@pytest.mark.requires("host-root", "linux")
def test_nsenter_net_socket_enters_the_sockets_namespace() -> None:
    """-N FD (2.41): the network namespace of the target's socket, which need not be the
    target's own."""
    r, w = os.pipe()
    code = (
        "import os, socket, sys, signal\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "os.write(int(sys.argv[1]), str(s.fileno()).encode()); os.close(int(sys.argv[1]))\n"
        "signal.pause()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "portclone", "unshare", "-n", sys.executable, "-c", code, str(w)],
        pass_fds=(w,),
    )
    os.close(w)
    fd = os.read(r, 16).decode()
    os.close(r)
    try:
        theirs = os.readlink(proc_path(proc.pid, "ns", "net"))
        result = tool("nsenter", "-t", str(proc.pid), "-N", fd, "readlink", "/proc/self/ns/net")
        assert (result.returncode, result.stdout.strip(), result.stderr) == (0, theirs, "")
        assert theirs != os.readlink("/proc/self/ns/net")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.requires("linux", "cgroup2", "host-root")
def test_nsenter_join_cgroup(target: subprocess.Popen) -> None:  # type: ignore[type-arg]
    with open(proc_path(target.pid, "cgroup")) as f:
        theirs = f.read()
    result = tool("nsenter", "-t", str(target.pid), "-u", "-c", "cat", "/proc/self/cgroup")
    assert (result.returncode, result.stdout, result.stderr) == (0, theirs, "")


# -- backends that cannot ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["netbsd", "fork"])
def test_other_backends_refuse_namespace_options_by_name(backend: str) -> None:
    env = dict(os.environ, PORTCLONE_BACKEND=backend)
    for args, named in (
        (["-r", "true"], "--map-root-user"),
        (["--pid", "-f", "true"], "--pid"),
        (["--mount-proc", "-f", "true"], "--mount-proc"),
        (["--kill-child", "true"], "--kill-child"),
    ):
        result = tool("unshare", *args, env=env)
        assert result.returncode == 1, (args, result)
        line = one_line(result.stderr)
        assert named in line and ("NetBSD" in line or "fork" in line), line
    result = tool("nsenter", "-t", str(os.getpid()), "-u", "true", env=env)
    assert result.returncode == 1 and "--uts" in one_line(result.stderr)


@pytest.mark.parametrize("backend", ["netbsd", "fork"])
def test_other_backends_do_what_a_process_can_do_to_itself(backend: str) -> None:
    env = dict(os.environ, PORTCLONE_BACKEND=backend)
    assert tool("unshare", "-w", "/", "pwd", env=env).stdout == "/\n"
    assert tool("unshare", "-f", "--forward-signals", "sh", "-c", "exit 3", env=env).returncode == 3
    assert tool("unshare", "--clear-env", "sh", "-c", 'echo "${HOME:-none}"', env=env).stdout == "none\n"
    if os.geteuid() == 0:
        assert tool("unshare", "-R", "/", "-S", "0", "id", "-u", env=env).stdout == "0\n"


# -- the process model -----------------------------------------------------------------------


def test_the_command_becomes_the_program() -> None:
    """No fork: the program has the command's pid (a shell's $! and kill reach it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "portclone", "unshare", "sh", "-c", "echo $$"],
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=60)
    assert int(out) == proc.pid


def test_every_inherited_fd_reaches_the_program() -> None:
    r, w = os.pipe()
    os.set_inheritable(w, True)
    code = f"import os; os.write({w}, b'through\\n')"
    result = tool("unshare", sys.executable, "-c", code, pass_fds=(w,))
    os.close(w)
    with os.fdopen(r) as f:
        assert (result.returncode, f.read()) == (0, "through\n")


def test_the_program_gets_sigpipe_back_at_its_default() -> None:
    result = tool("unshare", "sh", "-c", "grep SigIgn /proc/self/status")
    ignored = int(result.stdout.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), result.stdout


# -- what an outside review found (each failed before its fix) --------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--map-users=200000,0,0", "-U", "true"], "200000,0,0"),  # dropped, unsaid
        (["--map-user=\u0665", "-U", "true"], "\u0665"),  # an Arabic-Indic 5, taken as 5
        (["-G", "\u0665", "true"], "\u0665"),
        (["--kill-child=9", "true"], "9"),  # util-linux takes names only
        (["-T", "--monotonic=99999999999999999999", "true"], "99999999999999999999"),
    ],
)
def test_values_util_linux_refuses_are_refused(args: List[str], named: str) -> None:
    result = tool("unshare", *args)
    assert result.returncode == 1
    assert named in one_line(result.stderr)


def test_an_empty_program_or_shell_is_not_found() -> None:
    for args, env in (([""], None), ([], dict(os.environ, SHELL=""))):
        result = tool("unshare", *args, env=env)
        assert result.returncode == 127, result
        assert "failed to execute" in one_line(result.stderr)


def test_nsenter_asks_nothing_of_a_target_it_does_not_use() -> None:
    """-t alone enters nothing (2.38): a target that does not exist is never opened."""
    assert tool("nsenter", "-t", "999999999", "true").returncode == 0
    assert tool("nsenter", "-t", "\u0665", "true").returncode == 1  # but it must parse


def test_the_version_ends_with_the_util_linux_release_of_its_options() -> None:
    line = tool("unshare", "--version").stdout.strip()
    assert line.split()[-1].startswith("2.") and "portclone" in line


def test_no_helper_process_runs_before_the_namespaces() -> None:
    """The C library is reached without ctypes.util.find_library, which runs ldconfig -p
    (a child, fds, a temporary file) before any namespace is entered."""
    code = (
        "import sys; from portclone.cli import _syscalls; _syscalls._c(); print('ctypes.util' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout == "False\n", result.stderr


@pytest.mark.requires("linux", "root")
def test_nsenter_enters_a_threads_namespaces() -> None:
    """-t TID of a thread that is not its process's first (a daemon with a namespace per
    thread): its pidfd is a thread's (PIDFD_THREAD)."""
    r, w = os.pipe()
    code = (
        "import os, socket, sys, threading\n"
        "def own():\n"
        "    os.unshare(os.CLONE_NEWUTS); socket.sethostname('threadns')\n"
        "    os.write(int(sys.argv[1]), str(threading.get_native_id()).encode()); threading.Event().wait()\n"
        "threading.Thread(target=own, daemon=True).start(); threading.Event().wait()\n"
    )
    if not hasattr(os, "unshare"):
        pytest.skip("os.unshare is Python 3.12's: the thread that unshares is made with it")
    proc = subprocess.Popen([sys.executable, "-c", code, str(w)], pass_fds=(w,))
    os.close(w)
    tid = os.read(r, 16).decode()
    os.close(r)
    try:
        if not tid:
            pytest.skip("the thread could not unshare its UTS namespace here")
        result = tool("nsenter", "-t", tid, "-u", "hostname")
        if result.returncode != 0 and "Invalid argument" in result.stderr:
            pytest.skip(
                f"this kernel gives no pidfd for a thread (PIDFD_THREAD is Linux 6.9's): {result.stderr}"
            )
        assert (result.returncode, result.stdout, result.stderr) == (0, "threadns\n", "")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.requires("linux", "CLONE_NEWUSER")
def test_a_failed_setgroups_is_named() -> None:
    """After -r the new namespace's setgroups is deny: -G fails at setgroups, and says so."""
    result = tool("unshare", "-r", "-G", "0", "true")
    assert result.returncode == 1
    assert "setgroups failed" in one_line(result.stderr)
