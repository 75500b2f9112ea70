"""python -m portclone: info, demo, flags."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest

import portclone


def cli(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, "-m", "portclone", *args], capture_output=True, text=True, timeout=120
    )


def test_info_json_reports_the_probed_facts() -> None:
    result = cli("info", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    backend = portclone.current_backend()
    assert facts["backend"] == backend.name
    assert facts["platform"] == sys.platform
    assert facts["supported_flags"] == str(backend.supported_flags).split("|")
    capabilities = facts["capabilities"]
    for name, cap in capabilities.items():  # one shape for every capability
        assert set(cap) == {"available", "reason"}, name
        assert isinstance(cap["available"], bool), name
        assert (cap["reason"] is None) == cap["available"], name
    if backend.name == "linux":
        assert capabilities["native_extension"]["available"]
        assert {"clone3", "pidfd", "libc_tid_repair"} <= set(capabilities)
        assert {n.split()[1] for n in capabilities if n.startswith("namespace ")} == {
            "mnt",
            "cgroup",
            "uts",
            "ipc",
            "user",
            "pid",
            "net",
            "time",
        }


def test_info_text() -> None:
    result = cli("info")
    assert result.returncode == 0, result.stderr
    name = portclone.current_backend().name
    assert re.search(rf"^backend +{name}$", result.stdout, re.M), result.stdout


@pytest.mark.requires("root", "CLONE_NEWUTS")
def test_demo_is_the_man_page_example() -> None:
    result = cli("demo", "--hostname", "pc-demo-test")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "uts.nodename in child:  pc-demo-test"
    assert lines[1].startswith("clone() returned ")
    assert lines[2] == f"uts.nodename in parent: {socket.gethostname()}"
    assert socket.gethostname() != "pc-demo-test"


def test_flags_lists_every_flag_with_reasons() -> None:
    result = cli("flags")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") >= len(portclone.CloneFlags.__members__)
    reason = portclone.current_backend().why_refused(portclone.CLONE_VM)
    assert "no  CLONE_VM" in result.stdout and str(reason) in result.stdout


def _declared(section: str, name: str) -> str:
    """The value pyproject.toml gives ``name`` in ``[section]`` (3.9 has no tomllib)."""
    text = (pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    body = text.split(f"[{section}]", 1)[1].split("\n[", 1)[0]
    found = re.search(rf'^{name}\s*=\s*"([^"]+)"', body, re.M)
    assert found, f"pyproject.toml declares no {name} in [{section}]"
    return found.group(1)


def test_console_script_entry_point_runs_the_cli() -> None:
    module, _, function = _declared("project.scripts", "portclone").partition(":")
    main = getattr(importlib.import_module(module), function)
    assert main(["flags", "--markdown"]) == 0


def test_package_ships_py_typed() -> None:
    assert os.path.exists(os.path.join(os.path.dirname(portclone.__file__), "py.typed"))


@pytest.mark.parametrize("text", ["", ",", " | "])
def test_check_with_no_flags_is_a_usage_error(text: str) -> None:
    """A CI gate written as ``check "$FLAGS"`` must not pass when $FLAGS is empty."""
    out = cli("check", text)
    assert out.returncode == 1 and "no flags given" in out.stderr, out
    assert "Traceback" not in out.stderr
