"""The flag table: names, values, and the documents generated from it."""

from __future__ import annotations

import pathlib
import re

import pytest

import portclone
import portclone._registry
from portclone import CloneFlags
from portclone._docs import BEGIN, END, availability_table
from portclone._flags import BACKENDS, CONDITIONS, RULES, TABLE, describe

# torvalds/linux:include/uapi/linux/sched.h, written out independently of the table
UAPI = {
    "CLONE_VM": 0x100,
    "CLONE_FS": 0x200,
    "CLONE_FILES": 0x400,
    "CLONE_SIGHAND": 0x800,
    "CLONE_PIDFD": 0x1000,
    "CLONE_PTRACE": 0x2000,
    "CLONE_VFORK": 0x4000,
    "CLONE_PARENT": 0x8000,
    "CLONE_THREAD": 0x10000,
    "CLONE_NEWNS": 0x20000,
    "CLONE_SYSVSEM": 0x40000,
    "CLONE_SETTLS": 0x80000,
    "CLONE_PARENT_SETTID": 0x100000,
    "CLONE_CHILD_CLEARTID": 0x200000,
    "CLONE_DETACHED": 0x400000,
    "CLONE_UNTRACED": 0x800000,
    "CLONE_CHILD_SETTID": 0x1000000,
    "CLONE_NEWCGROUP": 0x2000000,
    "CLONE_NEWUTS": 0x4000000,
    "CLONE_NEWIPC": 0x8000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
    "CLONE_IO": 0x80000000,
    "CLONE_CLEAR_SIGHAND": 1 << 32,
    "CLONE_INTO_CGROUP": 1 << 33,
    "CLONE_AUTOREAP": 1 << 34,
    "CLONE_NNP": 1 << 35,
    "CLONE_PIDFD_AUTOKILL": 1 << 36,
    "CLONE_EMPTY_MNTNS": 1 << 37,
    "CLONE_NEWTIME": 0x80,
}


def test_every_linux_flag_has_its_value() -> None:
    assert {name: int(m) for name, m in CloneFlags.__members__.items()} == UAPI


def test_module_constants_equal_the_enum() -> None:
    for name, value in UAPI.items():
        assert getattr(portclone, name) == value
        assert getattr(portclone, name) is CloneFlags[name]


def test_table_covers_every_flag_once_with_every_backend() -> None:
    assert sorted(int(i.flag) for i in TABLE) == sorted(UAPI.values())
    assert BACKENDS == tuple(portclone._registry.BACKENDS)
    for info in TABLE:
        for backend in BACKENDS:
            reason = info.reason(backend)
            assert reason is None or len(reason) > 10, (info.name, backend)


def test_netbsd_honours_exactly_what_its_kernel_does() -> None:
    """NetBSDfr/NetBSD-src:sys/kern/kern_fork.c sys___clone maps VM, FS, FILES, SIGHAND and
    VFORK and ignores every other bit; VM and SIGHAND are for exec children only."""
    honoured = {info.name for info in TABLE if info.reason("netbsd") is None}
    assert honoured == {"CLONE_FS", "CLONE_FILES", "CLONE_VFORK"}
    for info in TABLE:
        if info.name not in honoured | {"CLONE_VM", "CLONE_SIGHAND"}:
            assert "NetBSD" in (info.reason("netbsd") or ""), info.name


def test_clone_pid_is_refused_with_the_reason() -> None:
    with pytest.raises(AttributeError, match=r"CLONE_PIDFD since Linux 5\.2"):
        portclone.CLONE_PID  # noqa: B018
    with pytest.raises(ValueError, match="obsolete"):
        CloneFlags.parse("PID")


def test_parse_and_describe_round_trip() -> None:
    flags = CloneFlags.parse("NEWUSER, newpid|CLONE_NEWNS")
    assert flags == CloneFlags.CLONE_NEWUSER | CloneFlags.CLONE_NEWPID | CloneFlags.CLONE_NEWNS
    assert CloneFlags.parse(str(flags)) == flags
    assert describe(0) == "0"
    assert describe(1 << 40) == "0x10000000000"
    with pytest.raises(ValueError, match="unknown clone flag"):
        CloneFlags.parse("NEWBANANA")


def test_rules_name_real_flags() -> None:
    for rule in RULES:
        assert rule.all_of or rule.missing, rule
        assert set(rule.when) | set(rule.also) <= set(CONDITIONS), rule
        present = frozenset(rule.when) | frozenset(rule.also)
        assert rule.broken_by(int(rule.all_of), present) != bool(rule.missing & rule.all_of)
        if rule.when or rule.also:  # a conditional rule holds only under its conditions
            assert not rule.broken_by(int(rule.all_of))


def test_docs_table_is_generated_from_the_table() -> None:
    page = (pathlib.Path(__file__).parent.parent / "docs" / "flags.md").read_text()
    found = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), page, re.S)
    assert found, "docs/flags.md has no generated flag table"
    assert found.group(0) == availability_table(), (
        "docs/flags.md's flag table is stale: run `python tools/update_readme.py`"
    )


def test_format_specs_format_the_number() -> None:
    flags = CloneFlags.CLONE_NEWUSER | CloneFlags.CLONE_NEWPID
    assert f"{flags:#x}" == "0x30000000" and f"{flags:d}" == str(0x30000000)
    assert f"{flags}" == str(flags) == "CLONE_NEWUSER|CLONE_NEWPID"
    assert f"{CloneFlags(1 << 40):#x}" == "0x10000000000"


def test_netbsds_close_on_fork_refusal_is_read_by_its_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated NetBSD (no NetBSD kernel runs here): its clone answers EINVAL for CLONE_FILES
    while the descriptor table holds a close-on-fork descriptor (NetBSD-src:sys/kern/kern_fork.c,
    sys___clone).  The netbsd backend's refine() turns that into the refusal, on NetBSD only;
    every other failure goes the common way (Backend.start_failure)."""
    import errno

    from portclone._errors import Stage
    from portclone.backends import netbsd

    why = portclone.why_unusable("netbsd")
    if why is not None:
        pytest.skip(f"the netbsd backend is unusable here: {why}")
    backend = portclone.get_backend("netbsd")
    request = portclone._check.build(backend, CloneFlags.CLONE_FILES)
    error = OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(netbsd, "NETBSD", True)
    refused = backend.start_failure(error, request, syscall="clone", stage=Stage.CLONE)
    assert isinstance(refused, portclone.InvalidFlagsError) and "close-on-fork" in str(refused)
    assert refused.flags == CloneFlags.CLONE_FILES
    monkeypatch.setattr(netbsd, "NETBSD", False)
    plain = backend.start_failure(error, request, syscall="clone", stage=Stage.CLONE)
    assert type(plain) is OSError and "clone(flags=CLONE_FILES" in str(plain)
