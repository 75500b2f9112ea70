"""python -m portclone run, check, and the CLI's manners: each run as a real subprocess."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Dict, List, Optional

import pytest
from conftest import GUARDS, alive, children_of, missing, ns_inode, proc_path

import portclone
from portclone.cli._run import RUN_OPTIONS, run_option_table


def cli(
    *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120
) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, "-m", "portclone", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


#: Runs the CLI as nobody: imports first (the tree may not be readable by nobody), then
#: drops privileges and makes the process dumpable again (a uid change clears it, and
#: the maps' /proc files of its children would be root's).
AS_NOBODY = textwrap.dedent("""
    import ctypes, os, sys
    import portclone, portclone.cli, portclone.cli._commands, portclone._procns
    from portclone.cli import _run, _unshare, _nsenter, _syscalls, _idmaps  # run's, lazily
    import difflib, gettext, grp, locale, pwd, shutil  # the CLI's lazy imports: nobody
    import fcntl, select, socket, stat                 # may not read the interpreter's tree
    portclone.current_backend()
    portclone.cli._commands._parser()
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
    sys.exit(portclone.cli.main(sys.argv[1:]))
""")


def cli_as_nobody(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    if missing("host-root"):  # uid 65534 is mapped only there
        pytest.skip(f"missing host-root: {missing('host-root')} (the CLI becomes uid 65534)")
    return subprocess.run(
        [sys.executable, "-c", AS_NOBODY, *args], capture_output=True, text=True, timeout=120
    )


linux_root = pytest.mark.requires("linux", "proc", "root")

#: The command line's logic is Python's and the same on every kernel: it runs on the host
#: matrix (py39-py313), not in the emulated guests, where each interpreter start costs
#: seconds; what it asks of the kernel is tested there through the API (test_setup_options).
pytestmark = pytest.mark.host_only


# -- options' real effects ---------------------------------------------------------------


@linux_root
@pytest.mark.requires("CLONE_NEWUSER", "CLONE_NEWPID", "CLONE_NEWNS")
def test_unshare_Urpm_mount_proc() -> None:
    result = cli(
        "run",
        "-Urpmf",
        "--mount-proc",
        "--",
        "sh",
        "-c",
        "echo $$ $(id -u); ls /proc | grep -c '^[0-9]'; cat /proc/self/setgroups",
    )
    assert result.returncode == 0, result.stderr
    pid, uid, count, groups = result.stdout.split()
    assert (pid, uid, groups) == ("1", "0", "deny") and int(count) <= 3
    # without -f, as unshare: the command is the program, in its own PID namespace; the
    # new one is its children's
    alone = cli("run", "-Urp", "--", "sh", "-c", "echo $$; sh -c 'echo $$'")
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.split()[0] != "1" and alone.stdout.split()[1] == "1", alone.stdout


@linux_root
@pytest.mark.parametrize(
    "letter, ns",
    [
        ("-u", "uts"),
        ("-i", "ipc"),
        ("-n", "net"),
        ("-C", "cgroup"),
        ("-T", "time"),
        ("-p", "pid"),
        ("-m", "mnt"),
        ("-U", "user"),
    ],
)
def test_each_namespace_letter(letter: str, ns: str) -> None:
    if portclone.current_backend().probe(portclone.NS_FLAGS[ns]):  # type: ignore[attr-defined]
        pytest.skip(f"no {ns} namespaces here")
    # run unshares itself, as unshare: a new PID/time namespace is its children's, so stat
    # runs as a child of the program (sh forks for a command that is not its last)
    result = cli("run", letter, "--", "sh", "-c", f"stat -L -c %i /proc/self/ns/{ns}; :")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) != ns_inode(ns)


@linux_root
@pytest.mark.requires("CLONE_NEWUSER", "setgroups-allow")
def test_map_user_group_and_setgroups() -> None:
    result = cli(
        "run",
        "--map-user=1234",
        "--map-group=5678",
        "--",
        "sh",
        "-c",
        "id -u; id -g; cat /proc/self/setgroups",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1234", "5678", "deny"]
    allow = cli("run", "-U", "--setgroups=allow", "--", "cat", "/proc/self/setgroups")
    assert allow.stdout.strip() == "allow", allow.stderr


@linux_root
@pytest.mark.requires("CLONE_NEWUTS", "CLONE_NEWTIME")
def test_hostname_wd_and_clock_offsets(tmp_path: object) -> None:
    result = cli(
        "run",
        "--hostname",
        "cli-box",
        "-T",  # unshare's rule: offsets need the time namespace asked for
        "--boottime=86400",
        "--monotonic",
        "10",
        "-w",
        str(tmp_path),
        "--",
        "sh",
        "-c",
        "hostname; pwd; cut -d' ' -f1 /proc/uptime; :",  # cut: a child, in the time namespace
    )
    assert result.returncode == 0, result.stderr
    host, cwd, uptime = result.stdout.split()
    assert host == "cli-box" and cwd == str(tmp_path)
    assert float(uptime) >= float(open("/proc/uptime").read().split()[0]) + 86400 - 1


@linux_root
def test_join_and_join_ns_enter_the_targets_namespaces() -> None:
    target = portclone.spawn(["sleep", "600"], hostname="cli-target", flags=portclone.CLONE_NEWNET)
    try:
        every = cli("run", "--join", str(target.pid), "--", "hostname")
        one = cli(
            "run",
            "--join-ns",
            f"net={proc_path(target.pid, 'ns', 'net')}",
            "--",
            "stat",
            "-L",
            "-c",
            "%i",
            "/proc/self/ns/net",
        )
        net = os.stat(proc_path(target.pid, "ns", "net")).st_ino
    finally:
        target.kill()
        target.wait()
    assert every.stdout.strip() == "cli-target", every.stderr
    assert int(one.stdout) == net, one.stderr
    dead = cli("run", "--join", str(target.pid), "--", "true")
    assert (dead.returncode == 1 and "no process" in dead.stderr) or "No such" in dead.stderr


@linux_root
@pytest.mark.requires("CLONE_NEWNS")
def test_propagation_and_fork_are_accepted() -> None:
    result = cli(
        "run", "-f", "-m", "--propagation=slave", "--", "grep", "-c", "master:", "/proc/self/mountinfo"
    )
    assert result.returncode in (0, 1), result.stderr  # grep's count, whatever it is
    bad = cli("run", "-m", "--propagation=sideways", "--", "true")
    assert bad.returncode == 1 and "--propagation=sideways" in bad.stderr and "unsupported" in bad.stderr


# -- signals -----------------------------------------------------------------------------


@pytest.mark.requires("proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1])
def test_signals_to_run_reach_the_program_and_no_orphan_remains(sig: int) -> None:
    # run leaves a signal it was started with ignored (nohup) alone, as documented: under
    # nohup (or any caller that ignores ``sig``) run is started with it at its default
    ignored = signal.getsignal(sig) == signal.SIG_IGN
    if ignored:
        signal.signal(sig, signal.SIG_DFL)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "portclone", "run", "--", "sh", "-c", "echo $$; exec sleep 600"],
            stdout=subprocess.PIPE,
            text=True,
        )
    finally:
        if ignored:
            signal.signal(sig, signal.SIG_IGN)
    # run became the program, as unshare does: the signal is the program's, and nothing
    # of run is left behind
    assert proc.stdout is not None and int(proc.stdout.readline()) == proc.pid
    assert children_of(proc.pid) == []
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    assert code == -sig


@pytest.mark.requires("linux", "proc")
def test_kill_child_ends_the_program_when_run_is_killed() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "portclone",
            "run",
            "--kill-child",
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 600",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    child = children_of(proc.pid)[0]
    proc.kill()
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30 * GUARDS  # a guard: the child dies with its parent
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child)


# -- exit statuses and messages ------------------------------------------------------------


def test_exit_statuses_follow_unshare(tmp_path: pathlib.Path) -> None:
    assert cli("run", "--", "sh", "-c", "exit 7").returncode == 7
    missing = cli("run", "--", "/nonexistent/portclone-cmd")
    assert missing.returncode == 127 and "No such file" in missing.stderr
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    not_exec = cli("run", "--", str(plain))
    assert not_exec.returncode == 126 and "Permission denied" in not_exec.stderr
    usage = cli("run", "--no-such-option", "true")
    assert usage.returncode == 1 and usage.stderr.count("\n") == 1
    assert "--no-such-option" in usage.stderr and "--help" in usage.stderr
    assert cli("run", "--map-group").returncode == 1  # a value is missing
    assert "Traceback" not in missing.stderr + not_exec.stderr + usage.stderr


@pytest.mark.requires("linux", "proc", "CLONE_NEWUSER", "CLONE_NEWPID")
def test_unprivileged_namespace_is_runs_own_failure_with_a_hint() -> None:
    refused = cli_as_nobody("run", "-p", "id")
    assert refused.returncode == 1, refused.stderr
    assert "Operation not permitted" in refused.stderr and "unshare failed" in refused.stderr
    assert "add --user or --map-root-user" in refused.stderr
    assert "Traceback" not in refused.stderr and "[Errno" not in refused.stderr
    ok = cli_as_nobody("run", "-Urp", "id", "-u")
    assert ok.returncode == 0 and ok.stdout.strip() == "0", ok.stderr


def test_no_tracebacks_for_user_errors() -> None:
    bogus = cli("info", env={"PORTCLONE_BACKEND": "bogus"})
    assert bogus.returncode == 1 and "unknown backend 'bogus'" in bogus.stderr
    assert "Traceback" not in bogus.stderr
    piped = subprocess.run(
        f"{sys.executable} -m portclone flags | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.stdout.count("\n") == 1 and "Traceback" not in piped.stderr
    assert "BrokenPipe" not in piped.stderr


def test_unknown_flag_names_suggest_the_nearest() -> None:
    result = cli("run", "--flags", "NEWUSR", "--", "true")
    assert result.returncode == 1
    assert "NEWUSER" in result.stderr and "python -m portclone flags" in result.stderr


def test_cli_errors_speak_in_options_not_keywords() -> None:
    done = portclone.spawn(["true"])
    done.wait()
    result = cli("run", "-m", "--join-ns", f"mnt={done.pid}", "--", "true")
    assert result.returncode == 1, result.stderr
    assert "--join-ns" in result.stderr and "join=" not in result.stderr


# -- check, help, the docs table -----------------------------------------------------------


def test_check_exit_codes() -> None:
    backend = portclone.current_backend()
    honoured = not backend.why_refused(portclone.CLONE_NEWPID)
    static = cli("check", "--static", "NEWPID,NEWNS")  # the request, whoever makes it
    assert static.returncode == (0 if honoured else 1), static.stderr
    try:  # and for this caller, now
        portclone.check(portclone.CLONE_NEWPID | portclone.CLONE_NEWNS, probe=True)
        here = True
    except (portclone.PortcloneError, OSError):
        here = False
    good = cli("check", "NEWPID,NEWNS")
    assert good.returncode == (0 if here else 1), good.stderr
    bad = cli("check", "VM")  # never for a Python child
    assert bad.returncode == 1 and "CLONE_VM" in bad.stderr
    assert cli("check", "VM", "--exec").returncode == 0
    assert cli("check", "NEWBANANA").returncode == 1


def test_help_lists_every_command_without_markup() -> None:
    text = cli("--help").stdout
    for command in ("info", "flags", "check", "run", "demo"):
        assert command in text
    assert "``" not in text


def test_docs_table_covers_every_run_option() -> None:
    table = run_option_table()
    for opt in RUN_OPTIONS:
        assert opt.names[-1] in table
    page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "cli.md")).read()
    assert table in page, "docs/cli.md's run table is stale: run `python tools/update_readme.py`"


def test_vmctl_names_missing_tools_and_their_packages(tmp_path: object) -> None:
    vmctl = os.path.join(os.path.dirname(__file__), "..", "vm", "vmctl.py")
    result = subprocess.run(
        [sys.executable, vmctl, "build", "bookworm-arm64"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": str(tmp_path), "PORTCLONE_VM_CACHE": str(tmp_path)},
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "qemu-system-aarch64" in result.stderr and "apt-get install" in result.stderr
    assert "qemu-system-arm" in result.stderr


# -- found by an adversarial pass over the CLI ---------------------------------------------


def test_words_after_the_program_are_the_programs() -> None:
    for word in ("--u", "--p", "--m", "--j", "--f", "--h", "-x"):
        result = cli("run", "echo", word)
        assert (result.returncode, result.stdout) == (0, f"{word}\n"), result.stderr


def test_abbreviations_and_clusters_as_getopt_takes_them(tmp_path: pathlib.Path) -> None:
    assert cli("run", "--kill", "echo", "hi").stdout == "hi\n"  # --kill-child, no value
    assert cli("run", "-w", str(tmp_path), "--kill-child", "pwd").stdout == f"{tmp_path}\n"
    assert cli("run", f"-w{tmp_path}", "pwd").stdout == f"{tmp_path}\n"
    ambiguous = cli("run", "--map", "true")
    assert ambiguous.returncode == 1 and "ambiguous" in ambiguous.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGPIPE, signal.SIGALRM])
def test_run_dies_of_whatever_signal_ended_the_program(sig: int) -> None:
    result = cli("run", "--", "sh", "-c", f"kill -{int(sig)} $$")
    assert result.returncode == -sig, result.stderr


def test_closed_stdout_keeps_the_status_and_raises_nothing() -> None:
    for args, status in ((("run", "true"), 0), (("run", "portclone-no-such-cmd"), 127), (("flags",), 0)):
        result = subprocess.run(
            f"{sys.executable} -m portclone {' '.join(args)} >&-",
            shell=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == status and "Traceback" not in result.stderr, result.stderr


@pytest.mark.requires("proc")
def test_ignored_signals_stay_ignored_for_the_program() -> None:
    """nohup: SIGHUP ignored by run's caller stays ignored in the program, as with unshare."""
    result = subprocess.run(
        ["nohup", sys.executable, "-m", "portclone", "run", "--", "grep", "SigIgn", "/proc/self/status"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    mask = int(result.stdout.split()[1], 16)
    assert mask & (1 << (signal.SIGHUP - 1)), result.stdout + result.stderr


def test_sigchld_ignored_by_the_caller_does_not_hang_run() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "portclone", "run", "--", "sh", "-c", "exit 3"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN),
    )
    assert result.returncode == 3, result.stderr


@pytest.mark.requires("linux", "proc")
def test_join_refuses_what_it_cannot_look_at() -> None:
    done = portclone.spawn(["true"])
    pid = done.pid
    done.wait()
    gone = cli("run", "--join", str(pid), "--", "true")
    assert gone.returncode == 1 and "--join" in gone.stderr
    assert cli("run", "--join", "²", "--", "true").returncode == 1


@pytest.mark.requires("proc")
def test_a_group_signal_reaches_the_program_once() -> None:
    """kill -- -PGID (timeout(1), supervisors): run became the program, in the group it
    was started in, so the signal reaches it once."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "portclone",
            "run",
            "--",
            sys.executable,
            "-c",
            "import signal, sys, time\n"
            "n = []\n"
            "signal.signal(signal.SIGUSR1, lambda *a: n.append(1))\n"
            "print('ready', flush=True)\n"
            "time.sleep(1.5)\n"
            "print(len(n), flush=True)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    os.killpg(proc.pid, signal.SIGUSR1)
    out, _ = proc.communicate(timeout=60)
    assert out.strip() == "1"


def test_cli_messages_for_api_only_requests() -> None:
    if portclone.current_backend().name == "linux":  # unshare(2) unshares the fd table
        files = cli("run", "--flags=FILES", "true")
        assert files.returncode == 0 and not files.stderr, files.stderr
    parent = cli("run", "--flags=PARENT", "true")
    assert parent.returncode == 1 and parent.stderr.count("\n") == 1, parent.stderr
    assert "--flags=PARENT" in parent.stderr and "needs a new process" in parent.stderr
    assert "exit_signal=0" not in parent.stderr
    for args, option in (
        (("--kill-child=0",), "--kill-child"),
        (("--monotonic=abc",), "--monotonic"),
        (("--join-ns=net=/etc/passwd",), "--join-ns"),
    ):
        result = cli("run", *args, "true")
        assert result.returncode == 1 and option in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "None for no signal" not in result.stderr


def test_run_help_lists_only_flags_run_can_use() -> None:
    text = " ".join(cli("run", "--help").stdout.split())
    honoured = text.split("--flags for run here: ", 1)[1].split(".", 1)[0].split(", ")
    assert not {"PARENT", "INTO_CGROUP", "VM"} & set(honoured)


def test_demo_refuses_a_long_hostname_cleanly() -> None:
    result = cli("demo", "--hostname", "x" * 80)
    assert result.returncode == 1 and "64 bytes" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_says_every_reason() -> None:
    result = cli("check", "SETTLS,THREAD")
    assert result.returncode == 1
    assert "CLONE_SETTLS" in result.stderr and "CLONE_THREAD" in result.stderr


def test_exec_fallbacks_as_execvp(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "no-shebang"
    script.write_text("echo from-sh\n")
    script.chmod(0o755)
    assert cli("run", str(script)).stdout == "from-sh\n"
    assert cli("run", "").returncode == 127


def test_info_json_has_every_capability_on_every_backend() -> None:
    for name in ("fork", "netbsd"):
        facts = json.loads(cli("info", "--json", env={"PORTCLONE_BACKEND": name}).stdout)
        caps = facts["capabilities"]
        assert {"clone3", "pidfd", "namespace user", "namespace mnt"} <= set(caps), caps
        assert caps["namespace user"]["available"] is False and caps["namespace user"]["reason"]


def test_map_user_after_map_root_wins_and_no_program_runs_the_shell() -> None:
    if portclone.current_backend().name != "linux":
        pytest.skip("user namespaces: the linux backend")
    assert cli("run", "-r", "--map-user=5", "id", "-u").stdout == "5\n"
    shell = subprocess.run(
        [sys.executable, "-m", "portclone", "run"],
        input="echo $0\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SHELL": "/bin/sh"},
    )
    assert shell.stdout.strip() == "-sh", shell.stderr  # a login shell, as unshare starts it


@pytest.mark.requires("linux", "proc")
def test_join_of_a_process_whose_namespaces_are_unreadable_is_refused() -> None:
    """As nobody, a root process's /proc/PID/ns links cannot be read: --join said nothing
    and ran the program in our own namespaces (nsenter -a refuses)."""
    result = cli_as_nobody("run", "--join", str(os.getpid()), "--", "true")
    assert result.returncode == 1 and "Permission denied" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "args",
    [["--map-user=\u0665"], ["--kill-child=\u0665"], ["--join", "\u0661"]],
)
def test_numbers_in_other_scripts_digits_are_not_numbers(args: List[str]) -> None:
    """int() reads an Arabic-Indic 5 as 5: run takes ids, signals and pids in ASCII digits
    only, as unshare and nsenter do (the drop-ins' review found it there first)."""
    result = cli("run", *args, "--", "true")
    assert result.returncode == 1, result


def test_the_command_line_runs_twice_in_one_process() -> None:
    """cli.main is a function a program may call more than once: the second call must not
    find a name of the package rebound by a submodule's import (cli._dropin was both)."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import portclone.cli as c\n"
            "for words in (['unshare', '--help'], ['run', '--help'], ['nsenter', '--help']) * 2:\n"
            "    assert c.main(words) == 0, words",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@linux_root
@pytest.mark.requires("CLONE_NEWUTS", "CLONE_NEWUSER")
def test_join_then_create_makes_the_new_namespace_inside_the_targets() -> None:
    """nsenter -t T -a, then unshare: --join joins every namespace of its target, and what
    run then creates is made from the target's (the adversarial pass found the new
    namespaces copied from the caller's); options apply in order; a thread's id is a target,
    as nsenter's -t takes one; the ids -r maps are the caller's in the joined user namespace."""
    target = portclone.spawn(["sleep", "600"], hostname="cli-target", flags=portclone.CLONE_NEWNET)
    mapped = portclone.spawn(
        ["sleep", "600"], flags=portclone.CLONE_NEWUSER, uid_map="5 0 1", gid_map="5 0 1"
    )
    ready, release = threading.Event(), threading.Event()
    tids: List[int] = []

    def thread() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        release.wait(60)

    worker = threading.Thread(target=thread)
    worker.start()
    ready.wait(60)
    try:
        inside = cli("run", "--join", str(target.pid), "-u", "--", "hostname")
        later_wins = cli("run", "--join-ns", f"uts={os.getpid()}", "--join", str(target.pid), "hostname")
        earlier = cli("run", "--join", str(target.pid), "--join-ns", f"uts={os.getpid()}", "hostname")
        by_thread = cli("run", "--join", str(tids[0]), "--", "true")
        as_mapped = cli("run", "--join-ns", f"user={mapped.pid}", "-r", "--", "id", "-u")
    finally:
        release.set()
        worker.join()
        for child in (target, mapped):
            child.kill()
            child.wait()
    assert inside.stdout.strip() == "cli-target", inside.stderr
    assert later_wins.stdout.strip() == "cli-target", later_wins.stderr
    assert earlier.stdout.strip() == socket.gethostname(), earlier.stderr
    assert by_thread.returncode == 0, by_thread.stderr
    assert as_mapped.stdout.strip() == "0", as_mapped.stderr
