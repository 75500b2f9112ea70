"""A caller that is itself namespaced: each test builds its setting with unshare(1) and
runs a fresh interpreter in it.

- ``unshare -pf`` without ``--mount-proc``: the caller is pid 1 of a new PID namespace
  and ``/proc`` is still the outer one, where ``/proc/2`` is kthreadd, not its pid 2;
- a ``/proc`` that belongs to another PID namespace altogether;
- a caller inside a time namespace with offsets.

Every path from a pid to ``/proc/<pid>`` must be proved to name the right process or be
refused: these tests fail where portclone read or wrote through a guess.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from typing import List

import pytest
from conftest import no_side_effects

import portclone
from portclone import CloneFlags, InvalidFlagsError

pytestmark = [
    pytest.mark.requires("host-root", "linux", "pidfd"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare(1)"),
]


def _run(setting: List[str], code: str, tmp_path: object, timeout: float = 120) -> str:
    """``code`` in a fresh interpreter under the unshare(1) command line ``setting``; its
    stdout, asserting exit 0.  A hang is killed with its process group and fails."""
    script = os.path.join(str(tmp_path), "caller.py")
    with open(script, "w") as f:
        f.write(textwrap.dedent(code))
    proc = subprocess.Popen(
        [*setting, sys.executable, script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung for {timeout} s under {setting}:\n{out}\n{err}")
    assert proc.returncode == 0, f"exit {proc.returncode} under {setting}:\n{out}\n{err}"
    return out


OUTER_PROC = ["unshare", "--pid", "--fork", "--kill-child"]  # /proc stays the outer one
#: /proc replaced by one of a PID namespace that has ended: it shows no process
FOREIGN_PROC = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'unshare --pid --fork mount -t proc proc /proc && exec "$0" "$1"',
]


def test_maps_are_written_to_the_child_not_to_the_outer_procs_namesake(tmp_path: object) -> None:
    out = _run(
        OUTER_PROC,
        """
        import glob, os, subprocess, portclone

        def maps():
            found = {}
            for path in glob.glob("/proc/[0-9]*/uid_map") + glob.glob("/proc/[0-9]*/gid_map"):
                try:
                    with open(path) as f:
                        found[path] = f.read()
                except OSError:
                    pass
            return found

        # inner pids 2..4 taken, so the children get pids whose outer namesakes exist
        sleepers = [subprocess.Popen(["sleep", "300"]) for _ in range(3)]
        assert os.getpid() == 1
        before = maps()
        child = portclone.spawn(
            ["sh", "-c", "id -u; cat /proc/self/uid_map"], map_root=True, stdout=portclone.PIPE
        )
        out, _ = child.communicate()
        print("spawn", child.returncode, " ".join(out.decode().split()))

        def fn():
            with open("/proc/self/gid_map") as f:
                return 0 if os.getuid() == 0 and f.read().split() == ["0", "0", "1"] else 1

        with portclone.clone(fn, uid_map=[(0, 0, 1)], gid_map=[(0, 0, 1)]) as c:
            print("clone", c.wait())
        after = {p: v for p, v in maps().items() if p in before}
        changed = sorted(p for p in after if after[p] != before[p])
        print("changed", changed)
        for s in sleepers:
            s.kill()
            s.wait()
        """,
        tmp_path,
    )
    assert "spawn 0 0 0 0 1" in out
    assert "clone 0\n" in out, out
    assert "changed []" in out


def test_cli_map_root_inside_a_pid_namespace_that_sees_the_outer_proc(tmp_path: object) -> None:
    out = _run(
        OUTER_PROC,
        """
        import subprocess, sys
        r = subprocess.run([sys.executable, "-m", "portclone", "run", "-r", "--", "id", "-u"],
                           capture_output=True, text=True)
        print("run", r.returncode, r.stdout.strip(), r.stderr.strip())
        """,
        tmp_path,
    )
    assert "run 0 0" in out


def test_maps_through_a_proc_that_does_not_show_the_child_are_refused(tmp_path: object) -> None:
    out = _run(
        FOREIGN_PROC,
        """
        import portclone
        try:
            portclone.spawn(["true"], map_root=True)
        except (OSError, portclone.UnsupportedFlagError) as e:
            print("refused", e)  # at the maps, or before Linux 6.11 at the flags' check
        else:
            print("spawned")
        """,
        tmp_path,
    )
    assert "refused" in out, out
    assert "finding the child's /proc directory" in out or "does not show this process" in out, out


_TARGET = """
    import os, subprocess, sys, portclone
    # an inner pid whose outer namesake (kthreadd, pid 2) is in our UTS namespace
    target = subprocess.Popen(
        ["unshare", "--uts", "sh", "-c", "hostname inner-host && echo ready && exec sleep 300"],
        stdout=subprocess.PIPE, text=True,
    )
    assert target.stdout.readline() == "ready\\n"
"""


def test_join_by_pid_uses_the_targets_own_namespaces(tmp_path: object) -> None:
    out = _run(
        OUTER_PROC,
        _TARGET
        + """
    child = portclone.spawn(["hostname"], join={"uts": target.pid}, stdout=portclone.PIPE)
    print("api", child.communicate()[0].decode().strip())
    r = subprocess.run([sys.executable, "-m", "portclone", "run", "--join", str(target.pid), "--",
                        "hostname"], capture_output=True, text=True)
    print("cli", r.returncode, r.stdout.strip(), r.stderr.strip())
    target.kill()
    target.wait()
    """,
        tmp_path,
    )
    assert "api inner-host" in out
    assert "cli 0 inner-host" in out


def test_a_fifo_as_a_join_path_is_refused_without_blocking(tmp_path: object) -> None:
    out = _run(
        [],
        f"""
        import os, subprocess, sys, portclone
        fifo = os.path.join({str(tmp_path)!r}, "fifo")
        os.mkfifo(fifo)
        for call in (portclone.check, lambda **kw: portclone.spawn(["true"], **kw)):
            try:
                call(join={{"net": fifo}})
            except ValueError as e:
                print("refused", "not a namespace file" in str(e))
        r = subprocess.run([sys.executable, "-m", "portclone", "run", "--join-ns", "net=" + fifo,
                            "--", "true"], capture_output=True, text=True)
        print("cli", r.returncode != 0)
        """,
        tmp_path,
        timeout=60,
    )
    assert out.split("\n").count("refused True") == 2, out
    assert "cli True" in out


def test_join_enters_a_targets_older_namespaces_before_its_user_namespace(tmp_path: object) -> None:
    # the target's mount and net namespaces belong to the initial user namespace, its user
    # namespace is newer: root must enter those first (nsenter's order), then the user one
    out = _run(
        [],
        """
        import os, subprocess, portclone
        show = "stat -L -c %i /proc/self/ns/user /proc/self/ns/mnt /proc/self/ns/net"
        target = subprocess.Popen(
            ["unshare", "--mount", "--net", "unshare", "--user", "--map-root-user",
             "sh", "-c", show + " && echo ready && exec sleep 300"],
            stdout=subprocess.PIPE, text=True,
        )
        want = [int(target.stdout.readline()) for _ in range(3)]  # /proc/self is right anywhere
        assert target.stdout.readline() == "ready\\n"
        child = portclone.spawn(
            ["sh", "-c", "stat -L -c %i /proc/self/ns/user /proc/self/ns/mnt /proc/self/ns/net"],
            join={"user": target.pid, "mnt": target.pid, "net": target.pid},
            stdout=portclone.PIPE,
        )
        got = [int(x) for x in child.communicate()[0].split()]
        print("same", got == want, child.returncode)
        target.kill()
        target.wait()
        """,
        tmp_path,
    )
    assert "same True 0" in out


def test_join_pid_keeps_the_callers_own_pending_pid_namespace(tmp_path: object) -> None:
    out = _run(
        [],
        """
        import ctypes, os, portclone
        target = portclone.spawn(["sleep", "300"], flags=portclone.CLONE_NEWPID)
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.unshare(int(portclone.CLONE_NEWPID)) == 0, ctypes.get_errno()
        try:
            with portclone.spawn(["true"], join={"pid": target}) as c:
                c.wait()
        except OSError as e:  # the namespace cannot be saved: refused, nothing changed
            print("refused", e)
        child = portclone.spawn(["sh", "-c", "echo $$"], stdout=portclone.PIPE)
        print("first child pid", child.communicate()[0].decode().strip())
        target.kill()
        target.wait()
        """,
        tmp_path,
    )
    assert "first child pid 1\n" in out, out


def test_time_offsets_are_checked_against_the_hosts_clock(tmp_path: object) -> None:
    out = _run(
        ["unshare", "--time", "--fork", "--boottime", "10000", "--monotonic", "10000"],
        """
        import time, portclone
        host = time.clock_gettime(time.CLOCK_BOOTTIME) - 10000
        # the caller's clock reads host + 10000: an offset of -(host + 5000) leaves it at
        # 5000 s, but the kernel adds it to the host's clock (-5000 s): refused
        try:
            portclone.check(time_offsets={"boottime": -(host + 5000)})
        except ValueError as e:
            print("refused", e)
        else:
            print("accepted")
        with portclone.spawn(["cat", "/proc/uptime"], time_offsets={"boottime": 5},
                             stdout=portclone.PIPE) as c:
            up = float(c.communicate()[0].split()[0])
        print("near host", abs(up - (host + 5)) < 1000)
        """,
        tmp_path,
    )
    assert "refused" in out and "host" in out
    assert "near host True" in out


@pytest.mark.parametrize(
    "kw",
    [
        {"hostname": "h", "join": {"user": "USER"}},
        {"mount_proc": True, "join": {"user": "USER"}},
        {"map_root": True, "join": {"net": "NET"}},
    ],
    ids=["user+hostname", "user+mount_proc", "map_root+net"],
)
def test_join_with_a_namespace_the_child_cannot_act_in_is_refused_by_check(kw: dict) -> None:  # type: ignore[type-arg]
    target = portclone.spawn(["sleep", "300"], flags=CloneFlags.CLONE_NEWUSER | CloneFlags.CLONE_NEWNET)
    try:
        join = {name: target for name in kw["join"]}
        with pytest.raises(InvalidFlagsError):
            portclone.check(**{**kw, "join": join})
        with pytest.raises(InvalidFlagsError):
            portclone.spawn(["true"], **{**kw, "join": join})
    finally:
        target.kill()
        target.wait()


def test_join_mnt_with_clone_fs_is_refused_naming_it() -> None:
    with pytest.raises(InvalidFlagsError, match="CLONE_FS"):
        portclone.check(CloneFlags.CLONE_FS, join={"mnt": "/proc/1/ns/mnt"})


def test_check_join_raises_what_clone_raises(tmp_path: object) -> None:
    regular = os.path.join(str(tmp_path), "plain")
    open(regular, "w").close()
    gone = portclone.spawn(["true"])
    gone.wait()
    cases = [
        ({"net": "/proc/self/ns/uts"}, ValueError),
        ({"net": regular}, ValueError),
        ({"net": os.path.join(str(tmp_path), "missing")}, FileNotFoundError),
        ({"net": 2**31 - 1}, ProcessLookupError),
        ({"net": gone}, ProcessLookupError),
    ]
    for join, error in cases:
        with pytest.raises(error):
            portclone.clone(lambda: 0, join=join)
        with pytest.raises(error):
            portclone.check(join=join)


@pytest.mark.parametrize("kw", [{"propagation": 1}, {"setgroups": 1}, {"propagation": b"private"}])
def test_option_of_the_wrong_type_is_a_type_error(kw: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(TypeError):
        portclone.check(**kw)


def test_the_callers_function_inherits_none_of_the_setups_fds() -> None:
    target = portclone.spawn(["sleep", "300"], flags=CloneFlags.CLONE_NEWUTS)
    ours = set(os.listdir("/proc/self/fd"))  # the caller's own, target's pidfd among them

    def fn() -> int:
        extra = set(os.listdir("/proc/self/fd")) - ours
        return len(extra)  # listdir's own fd reuses a number portclone closed, or is new

    try:
        with portclone.clone(fn, join={"uts": target}, pdeathsig=signal.SIGKILL) as child:
            assert child.wait() <= 1
    finally:
        target.kill()
        target.wait()


def test_an_ancestor_pid_namespace_is_named_as_the_cause(tmp_path: object) -> None:
    out = _run(
        OUTER_PROC,
        """
        import os, portclone
        # /proc is the outer one: unshare(1), our parent there, is in the ancestor namespace
        outer = os.readlink("/proc/self")
        with open(f"/proc/{outer}/stat") as f:
            parent = f.read().rsplit(")", 1)[1].split()[1]
        try:
            portclone.spawn(["true"], join={"pid": f"/proc/{parent}/ns/pid"})
        except OSError as e:
            print("refused", e)
        """,
        tmp_path,
    )
    assert "refused" in out and "never an ancestor" in out, out


def test_clone_newpid_after_the_callers_own_unshare_names_the_cause(tmp_path: object) -> None:
    out = _run(
        [],
        """
        import ctypes, portclone
        assert ctypes.CDLL(None, use_errno=True).unshare(int(portclone.CLONE_NEWPID)) == 0
        try:
            portclone.spawn(["true"], flags=portclone.CLONE_NEWPID)
        except OSError as e:
            print("refused", e)
        """,
        tmp_path,
    )
    assert "refused" in out and "PID namespace for children is not its own" in out, out
    assert "clone3(" in out or "clone(" in out


def test_mount_proc_in_a_user_namespace_without_a_pid_namespace_names_clone_newpid() -> None:
    """Always refused by the kernel (the child's user namespace owns no PID namespace but
    one it creates): refused by check() and the call first, before any child exists."""
    with no_side_effects(), pytest.raises(portclone.InvalidFlagsError, match="add CLONE_NEWPID"):
        portclone.spawn(["true"], map_root=True, mount_proc=True)
    with pytest.raises(portclone.InvalidFlagsError, match="add CLONE_NEWPID"):
        portclone.check(map_root=True, mount_proc=True)
    assert portclone.check(CloneFlags.CLONE_NEWPID, map_root=True, mount_proc=True)


def _without_cap_sys_admin(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m portclone ARGS`` as root without CAP_SYS_ADMIN (setpriv drops it from
    the bounding set, so the exec'd interpreter has none): a caller that may create user
    namespaces but no other without one."""
    return subprocess.run(
        ["setpriv", "--bounding-set", "-sys_admin", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv(1)")
def test_check_answers_for_this_caller_unless_static() -> None:
    denied = _without_cap_sys_admin("-m", "portclone", "check", "NEWPID")
    assert denied.returncode == 1, denied.stdout + denied.stderr
    assert "CAP_SYS_ADMIN" in denied.stderr and "here" in denied.stderr
    static = _without_cap_sys_admin("-m", "portclone", "check", "--static", "NEWPID")
    assert static.returncode == 0, static.stderr
    with_user = _without_cap_sys_admin("-m", "portclone", "check", "NEWPID,NEWUSER")
    assert with_user.returncode == 0, with_user.stderr
    api = _without_cap_sys_admin(
        "-c",
        "import portclone\n"
        "portclone.check(portclone.CLONE_NEWNET)\n"
        "try:\n"
        "    portclone.check(portclone.CLONE_NEWNET, probe=True)\n"
        "except PermissionError as e:\n"
        "    print('refused', e)\n",
    )
    assert api.returncode == 0, api.stderr
    assert "refused" in api.stdout and "CAP_SYS_ADMIN" in api.stdout
    assert (
        "linux honours CLONE_NEWPID"
        in subprocess.run(
            [sys.executable, "-m", "portclone", "check", "NEWPID"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv(1)")
def test_info_does_not_contradict_itself_for_a_caller_without_privilege() -> None:
    import json

    out = _without_cap_sys_admin("-m", "portclone", "info", "--json")
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    caps = facts["capabilities"]
    assert not caps["namespace pid"]["available"]
    assert "CAP_SYS_ADMIN" in caps["namespace pid"]["reason"]
    assert "CLONE_NEWPID" in facts["supported_flags"]
    assert "CLONE_NEWPID" not in facts["usable_flags"]
    for name, cap in caps.items():
        if name.startswith("namespace ") and cap["available"]:
            flag = {"mnt": "CLONE_NEWNS"}.get(name.split()[1], "CLONE_NEW" + name.split()[1].upper())
            assert flag in facts["usable_flags"], name


def test_set_tid_for_each_level_of_a_joined_pid_namespace_is_accepted() -> None:
    # the kernel takes one pid per level of the namespace the child is created in: a
    # joined child namespace has two levels here (pid_namespaces(7), clone3 set_tid)
    target = portclone.spawn(["sleep", "300"], flags=CloneFlags.CLONE_NEWPID)
    outer = next(n for n in range(2000, 3000) if not os.path.exists(f"/proc/{n}"))  # free now
    try:
        portclone.check(set_tid=[2, outer], join={"pid": target})
        with portclone.spawn(
            ["sh", "-c", "echo $$"], set_tid=[2, outer], join={"pid": target}, stdout=portclone.PIPE
        ) as child:
            assert child.communicate()[0].split() == [b"2"]
            assert child.pid == outer
    finally:
        target.kill()
        target.wait()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv(1)")
def test_an_unprivileged_join_of_a_rootless_containers_user_and_pid_namespaces(tmp_path: object) -> None:
    # a rootless container: its user namespace and a PID namespace that it owns.  The caller
    # has no CAP_SYS_ADMIN, so its thread cannot enter the PID namespace around the clone;
    # nsenter --preserve-credentials -U -p enters the user namespace first, then the PID
    # namespace, then forks: the child must land in both, for clone() and spawn().
    out = _run(
        ["setpriv", "--bounding-set", "-sys_admin"],
        """
        import os, portclone
        from portclone._procns import ns_of
        target = portclone.spawn(  # needs no privilege: a user namespace owns the PID one
            ["sleep", "300"], flags=portclone.CLONE_NEWUSER | portclone.CLONE_NEWPID, map_root=True
        )
        join = {"user": target, "pid": target}
        # the target's namespaces through its pidfd: /proc/<pid> may be another process's
        # (the pidns setting's /proc is the outer namespace's)
        pidfd = os.pidfd_open(target.pid)
        theirs = [os.fstat(ns_of(pidfd, n, n)).st_ino for n in ("user", "pid")]
        try:
            portclone.check(join=join)
            with portclone.spawn(
                ["sh", "-c", "echo $$; stat -L -c %i /proc/self/ns/user /proc/self/ns/pid; read x"],
                join=join, stdin=portclone.PIPE, stdout=portclone.PIPE,
            ) as child:
                inner = child.stdout.readline().strip().decode()
                mine = [int(child.stdout.readline()) for _ in range(2)]
                print("spawn", inner, child.pid != int(inner), [a == b for a, b in zip(mine, theirs)])
                child.communicate(b"\\n")
            print("spawn status", child.returncode)
            r, w = os.pipe()
            child = portclone.clone(
                lambda: os.write(w, f"{os.getpid()} {os.stat('/proc/self/ns/user').st_ino}".encode()) and 0,
                join=join,
            )
            os.close(w)
            print("clone status", child.wait())
            pid, user = os.read(r, 200).decode().split()
            print("clone", pid, child.pid != int(pid), int(user) == theirs[0])
        finally:
            target.kill()
            target.wait()
        """,
        tmp_path,
    )
    assert "spawn 2 True [True, True]" in out and "spawn status 0" in out, out
    clone = next(
        line.split() for line in out.splitlines() if line.startswith("clone ") and "status" not in line
    )
    assert int(clone[1]) > 2 and clone[2:] == ["True", "True"] and "clone status 0" in out, out


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv(1)")
def test_a_child_made_through_the_join_helper_has_its_pidfd_from_the_clone(tmp_path: object) -> None:
    """The helper's child gets its pidfd at the clone (CLONE_PIDFD in the table the helper
    shares with the caller), not by pid afterwards: with SIGCHLD ignored the kernel reaps a
    child that exits at once, and a pidfd opened later found nothing (the adversarial pass
    lost 8 of 20)."""
    out = _run(
        ["setpriv", "--bounding-set", "-sys_admin"],
        """
        import os, signal, portclone
        target = portclone.spawn(
            ["sleep", "300"], flags=portclone.CLONE_NEWUSER | portclone.CLONE_NEWPID, map_root=True
        )
        join = {"user": target, "pid": target}
        before = sorted(os.listdir("/proc/self/fd"))
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        try:
            kids = [portclone.spawn(["true"], join=join) for _ in range(20)]
            kids += [portclone.clone(int, join=join) for _ in range(5)]
            print("pidfds", sum(k.pidfd is not None for k in kids), len(kids))
            for k in kids:
                try:
                    k.wait()  # through the pidfd (Linux 6.15 keeps the status for it)
                except ChildProcessError:
                    pass  # an older kernel: reaped with SIGCHLD ignored, the status is gone
                k.close()
        finally:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            target.kill()
            target.wait()
        print("fds", before == sorted(os.listdir("/proc/self/fd")))
        """,
        tmp_path,
    )
    assert "pidfds 25 25" in out and "fds True" in out, out


def test_a_join_through_a_pidfd_that_fails_names_its_target() -> None:
    zombie = subprocess.Popen(["true"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    try:
        for call in (portclone.check, lambda **kw: portclone.spawn(["true"], **kw)):
            with pytest.raises(OSError) as info:
                call(join={"net": zombie.pid})
            assert str(info.value).startswith(f"[Errno {info.value.errno}] join['net']: pid {zombie.pid}")
    finally:
        zombie.wait()


def test_maps_through_a_foreign_proc_do_not_say_proc_is_missing(tmp_path: object) -> None:
    out = _run(
        FOREIGN_PROC,
        """
        import portclone
        try:
            portclone.spawn(["true"], map_root=True)
        except (OSError, portclone.UnsupportedFlagError) as e:  # the latter before Linux 6.11
            print("refused", e)
        """,
        tmp_path,
    )
    assert "does not show" in out and "not mounted" not in out, out


def test_a_chroot_is_told_from_mountinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    from portclone import _caller

    assert not _caller._chrooted()  # this suite runs at its mount namespace's root
    inside = "40 30 254:0 /srv/jail/proc /proc rw - proc proc rw\n"  # what a chroot lists
    monkeypatch.setattr(_caller, "_read", lambda path: inside if path.endswith("mountinfo") else None)
    assert _caller._chrooted()


def test_info_names_the_call_spawn_really_uses_when_clone3_is_refused() -> None:
    import json

    # SIMULATED: a seccomp filter refuses clone3, as container runtimes' profiles do
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import errno, sys; sys.path.insert(0, {here!r})\n"
        "import seccomp_filter; seccomp_filter.refuse_clone3(errno.ENOSYS)\n"
        "from portclone.cli import main; main(['info', '--json'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert not facts["capabilities"]["clone3"]["available"]
    assert not facts["spawn"].startswith("clone3"), facts["spawn"]
