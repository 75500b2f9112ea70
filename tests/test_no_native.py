"""Without the native extension (no compiler): import works, the fork fallback serves.

The extension is really absent here: the pure-Python package is copied to a
temporary directory without it, and a fresh interpreter imports that copy.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import pytest
from conftest import run_python

import portclone

SCRIPT = """
import json, signal, portclone
report = {"backend": portclone.current_backend().name, "file": portclone.__file__}
with portclone.clone(lambda: 9) as child:
    report["plain"] = [child.wait(timeout=30), child.pidfd, child.syscall]
for name, kw in [("uts", dict(flags=portclone.CLONE_NEWUTS)),
                 ("sigusr1", dict(exit_signal=signal.SIGUSR1)),
                 ("set_tid", dict(set_tid=[4242]))]:
    try:
        portclone.clone(lambda: 0, **kw)
        report[name] = "created"
    except portclone.UnsupportedFlagError as e:
        report[name] = str(e)
print(json.dumps(report))
"""


@pytest.fixture
def pure_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    source = pathlib.Path(portclone.__file__).parent
    target = tmp_path / "portclone"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    assert not list(target.glob("*.so"))  # the extension is really gone
    return tmp_path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the message names Linux")
def test_import_and_fork_fallback_without_the_extension(pure_copy: pathlib.Path) -> None:
    result = run_python(SCRIPT, env={"PYTHONPATH": str(pure_copy)}, cwd=str(pure_copy))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["file"].startswith(str(pure_copy))
    assert report["backend"] == "fork"
    assert report["plain"] == [9, None, "fork"]
    for name in ("uts", "sigusr1", "set_tid"):
        assert "fork fallback on linux" in report[name], report[name]
        assert "portclone._native could not be imported" in report[name], report[name]


def test_info_says_why(pure_copy: pathlib.Path) -> None:
    result = run_python(
        "from portclone._cli import main; main(['info', '--json'])",
        env={"PYTHONPATH": str(pure_copy)},
        cwd=str(pure_copy),
    )
    facts = json.loads(result.stdout)
    assert facts["backend"] == "fork"
    native = facts["capabilities"]["native_extension"]
    assert native["available"] is False
    assert native["reason"].startswith("portclone._native could not be imported")
    assert facts["supported_flags"] == ["CLONE_VFORK"]  # emulated with a close-on-exec pipe
