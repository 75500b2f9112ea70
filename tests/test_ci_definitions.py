"""The GitHub workflow only asks for what exists: every tox environment it runs is defined
in tox.ini, and it does not load the pytest plugin a second time with ``-p`` (the
``pytest11`` entry point already loads it: pluggy refuses the same module under a second
name, "Plugin already registered under a different name", and pytest exits 3).  Before the
fix the checks job asked for ``package`` and the wheels job for ``wheels``, neither in
tox.ini, and the NetBSD and FreeBSD jobs ran ``pytest -p portclone.pytest_plugin``."""

from __future__ import annotations

import configparser
import pathlib
import re
import subprocess
import sys
from typing import Set

import pytest

#: the build, packaging and CI definitions are the same on every kernel and architecture:
#: the emulated guests deselect these (vm/guest-init.sh)
pytestmark = pytest.mark.host_only


ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKFLOW = (ROOT / ".github" / "workflows" / "ci.yml").read_text()


def _tox_envs() -> Set[str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    envs = {e.strip() for e in ini["tox"]["env_list"].split(",")}
    envs |= {s[len("testenv:") :] for s in ini.sections() if s.startswith("testenv:")}
    return envs


def test_every_tox_env_the_workflow_runs_is_defined() -> None:
    asked: Set[str] = set()
    for match in re.finditer(r"tox\S*\"? -e \"?([A-Za-z0-9_,.$()\"{} -]+)", WORKFLOW):
        for name in match.group(1).split('"')[0].split(","):
            name = name.strip()
            if name and "$" not in name:  # py$(...) comes from the Python matrix
                asked.add(name)
    assert asked, "no tox -e in the workflow?"
    assert asked <= _tox_envs(), sorted(asked - _tox_envs())


def test_workflow_does_not_load_the_plugin_twice() -> None:
    assert "-p portclone.pytest_plugin" not in WORKFLOW


def test_plugin_named_twice_is_what_the_workflow_must_avoid(tmp_path: pathlib.Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "portclone", "test_x.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr  # by its entry-point name: fine


# -- the guest manifest: vm/vmctl.py's MATRIX is the one list of the test guests ----------


def _needs(*paths: str) -> None:
    """The guest checks read the VM and CI files; an sdist may not carry them all."""
    missing = [p for p in paths if not (ROOT / p).exists()]
    if missing:
        pytest.skip(f"not in this tree: {', '.join(missing)}")


def _vmctl() -> object:
    _needs("vm/vmctl.py")
    sys.path.insert(0, str(ROOT / "vm"))
    try:
        import vmctl  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return vmctl


def test_the_matrix_names_real_guests() -> None:
    vmctl = _vmctl()
    assert set(vmctl.MATRIX) <= set(vmctl.GUESTS)  # type: ignore[attr-defined]
    assert set(vmctl.CI_PAIR) <= set(vmctl.MATRIX)  # type: ignore[attr-defined]


def test_tox_has_one_vm_env_per_matrix_guest() -> None:
    listed = re.search(r"\[testenv:vm-\{([^}]*)\}\]", (ROOT / "tox.ini").read_text())
    assert listed is not None
    assert listed.group(1).split(",") == list(_vmctl().MATRIX)  # type: ignore[attr-defined]


def test_the_vagrantfile_defines_the_matrix() -> None:
    _needs("vm/Vagrantfile")
    text = (ROOT / "vm" / "Vagrantfile").read_text()
    block = re.search(r"LINUX = %w\[(.*?)\]", text, re.S)
    assert block is not None
    assert block.group(1).split() == list(_vmctl().MATRIX)  # type: ignore[attr-defined]


def test_ci_runs_the_pair_and_the_readme_lists_every_guest() -> None:
    _needs(".ci/run", "vm/README.md")
    vmctl = _vmctl()
    ci = (ROOT / ".ci" / "run").read_text()
    assert " ".join(vmctl.CI_PAIR) in ci  # type: ignore[attr-defined]
    status = (ROOT / "vm" / "README.md").read_text()
    rows = set(re.findall(r"^\| ([a-z]+-[a-z0-9]+) \|", status, re.M))
    assert set(vmctl.MATRIX) <= rows  # type: ignore[attr-defined]
