"""The C extension is built with Python 3.9's limited API or not at all: an extension named
_native.abi3.so in a cp39-abi3 wheel but compiled against the full API (setup.py's
define_macros lost) passed tox -e packaging (tools/check_dist.py looks at names only)."""

import os
import pathlib
import shutil
import subprocess
import sysconfig

import pytest

#: the build, packaging and CI definitions are the same on every kernel and architecture:
#: the emulated guests deselect these (vm/guest-init.sh)
pytestmark = pytest.mark.host_only


SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "portclone"


def _compile(*defines: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    cc = shutil.which(os.environ.get("CC", "cc"))
    include = sysconfig.get_paths()["include"]
    if cc is None or not os.path.exists(os.path.join(include, "Python.h")):
        pytest.skip("needs a C compiler and Python's headers")
    return subprocess.run(
        [cc, "-fsyntax-only", "-std=gnu99", f"-I{include}", *defines, str(SRC / "_common.c")],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_the_limited_api_the_build_stops() -> None:
    result = _compile()
    assert result.returncode != 0
    assert "built with Py_LIMITED_API=0x03090000 only" in result.stderr


def test_another_limited_api_version_stops_it_too() -> None:
    result = _compile("-DPy_LIMITED_API=0x030C0000")
    assert result.returncode != 0
    assert "built with Py_LIMITED_API=0x03090000 only" in result.stderr


def test_with_the_limited_api_of_3_9_it_compiles() -> None:
    result = _compile("-DPy_LIMITED_API=0x03090000")
    assert result.returncode == 0, result.stderr
