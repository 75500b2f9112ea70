"""src/portclone/_native.pyi, shipped in the wheel, says what portclone._native has: mypy's
stubtest against the loaded extension (keyword-only spawn() arguments included, which
stubtest cannot see in a C function: checked here by name against _spawn.c's list)."""

import pathlib
import re
import subprocess
import sys

import pytest

import portclone
from portclone._loader import native_status

#: the build, packaging and CI definitions are the same on every kernel and architecture:
#: the emulated guests deselect these (vm/guest-init.sh)
pytestmark = pytest.mark.host_only


SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "portclone"


def _native_dir() -> pathlib.Path:
    native, why = native_status()
    if native is None:
        pytest.skip(f"needs the extension: {why}")
    return pathlib.Path(portclone.__file__).resolve().parent.parent


def test_stubtest_finds_nothing() -> None:
    pytest.importorskip("mypy", reason="needs mypy (tox -e type)")
    root = _native_dir()
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "portclone._native"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(root),
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_spawn_keywords_match_the_c() -> None:
    c = (SRC / "_spawn.c").read_text()
    listed = re.search(r"spawn_keywords\[\] = \{(.*?)NULL", c, re.S)
    assert listed is not None
    keywords = [k for k in re.findall(r'"([a-z_]*)"', listed.group(1)) if k]
    stub = (SRC / "_native.pyi").read_text()
    spawn = re.search(r"def spawn\((.*?)\) -> None", stub, re.S)
    assert spawn is not None
    stubbed = re.findall(r"^\s+([a-z_]+):", spawn.group(1), re.M)
    assert stubbed[1:] == keywords  # stubbed[0] is the positional-only child ("" in the C)
