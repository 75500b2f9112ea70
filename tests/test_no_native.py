"""Without the native extension (no compiler): import works, the fork fallback serves.

The extension is really absent here: the pure-Python package is copied to a
temporary directory without it, and a fresh interpreter imports that copy.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
from typing import Optional

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
        "from portclone.cli import main; main(['info', '--json'])",
        env={"PYTHONPATH": str(pure_copy)},
        cwd=str(pure_copy),
    )
    facts = json.loads(result.stdout)
    assert "Warning" not in result.stderr  # the CLI says it in its output instead
    assert facts["backend"] == "fork"
    native = facts["capabilities"]["native_extension"]
    assert native["available"] is False
    assert native["reason"].startswith("portclone._native could not be imported")
    assert facts["supported_flags"] == ["CLONE_VFORK"]  # emulated with a close-on-exec pipe


#: Every first use, with every warning recorded ("always": a second warning would show), and
#: nothing at import.  ``PLATFORM`` is set before portclone is imported.
WARN_SCRIPT = """
import json, sys, warnings
PLATFORM
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as at_import:
    import portclone
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    backend = portclone.current_backend().name
    portclone.check()
    for _ in range(3):
        with portclone.clone(lambda: 0) as child:
            child.wait(timeout=30)
    with portclone.spawn(["/bin/true"]) as child:
        child.wait(timeout=30)
print(json.dumps({
    "backend": backend,
    "at_import": [str(w.message) for w in at_import],
    "warnings": [[w.category.__name__, str(w.message), w.filename] for w in seen],
}))
"""


def _warnings(pure_copy: pathlib.Path, platform: str = "", backend: str = "") -> dict:  # type: ignore[type-arg]
    code = WARN_SCRIPT.replace("PLATFORM", f"sys.platform = {platform!r}" if platform else "pass")
    result = run_python(
        code, env={"PYTHONPATH": str(pure_copy), "PORTCLONE_BACKEND": backend}, cwd=str(pure_copy)
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the extension is expected on Linux")
def test_missing_extension_warns_once_at_first_use(pure_copy: pathlib.Path) -> None:
    """On Linux without the extension: one RuntimeWarning, at the first backend selection
    (not at import, not per call), naming why and the fork fallback, pointing at the caller."""
    report = _warnings(pure_copy)
    assert report["backend"] == "fork"
    assert report["at_import"] == []
    assert len(report["warnings"]) == 1, report["warnings"]
    category, message, filename = report["warnings"][0]
    assert category == "RuntimeWarning"
    assert "the linux backend is unusable" in message and "fork fallback serves" in message
    assert "portclone._native could not be imported" in message
    # pip caches the extension-less wheel it built from the sdist and reuses it after a
    # compiler is installed: a plain reinstall changes nothing
    assert "--no-cache-dir" in message
    assert filename == "<string>"  # the caller's line, not portclone's


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a system that has fork and /bin/true")
def test_no_warning_where_fork_is_the_design(pure_copy: pathlib.Path) -> None:
    """SIMULATED macOS (sys.platform = "darwin" before import, on Linux): the fork backend
    is the platform's own, so nothing warns; nor when PORTCLONE_BACKEND=fork asks for it."""
    darwin = _warnings(pure_copy, platform="darwin")
    assert darwin["backend"] == "fork" and darwin["warnings"] == [] and darwin["at_import"] == []
    chosen = _warnings(pure_copy, backend="fork")
    assert chosen["backend"] == "fork" and chosen["warnings"] == []


@pytest.mark.skipif(portclone.current_backend().name != "linux", reason="needs the extension built")
def test_no_warning_with_the_extension() -> None:
    source = str(pathlib.Path(portclone.__file__).resolve().parent.parent)
    code = WARN_SCRIPT.replace("PLATFORM", "pass")
    result = run_python(code, env={"PYTHONPATH": source, "PORTCLONE_BACKEND": ""})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == "linux" and report["warnings"] == [] and report["at_import"] == []


def test_a_warning_turned_error_raises_once(pure_copy: pathlib.Path) -> None:
    """With -W error the first use raises the warning; the fallback is chosen all the same
    and the next call works without raising again."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the extension is expected on Linux")
    result = run_python(
        """
        import warnings, portclone
        warnings.simplefilter("error")
        try:
            portclone.current_backend()
        except RuntimeWarning as e:
            print("raised:", "fork fallback" in str(e))
        with portclone.clone(lambda: 5) as child:
            print("then:", child.wait(timeout=30), child.backend)
        """,
        env={"PYTHONPATH": str(pure_copy), "PORTCLONE_BACKEND": ""},
        cwd=str(pure_copy),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["raised: True", "then: 5 fork"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the extension is expected on Linux")
def test_first_use_from_many_threads_warns_once(pure_copy: pathlib.Path) -> None:
    """Eight threads released together into their first use (check, current_backend,
    clone), with the "always" filter so that the warnings registry cannot hide a second
    warning: exactly one RuntimeWarning per process.  (Before the fix: 2-8 in most runs.)"""
    code = """
        import threading, warnings, portclone
        warnings.simplefilter("always")
        gate = threading.Barrier(8)
        calls = [lambda: portclone.check(0), portclone.current_backend,
                 lambda: portclone.clone(lambda: 0).wait(timeout=30)]
        def first_use(i):
            gate.wait()
            calls[i % len(calls)]()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            threads = [threading.Thread(target=first_use, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        print(sum(issubclass(w.category, RuntimeWarning) for w in caught))
        """
    counts = []
    for _ in range(5):  # bounded: five fresh interpreters
        result = run_python(
            code, env={"PYTHONPATH": str(pure_copy), "PORTCLONE_BACKEND": ""}, cwd=str(pure_copy)
        )
        assert result.returncode == 0, result.stderr
        counts.append(int(result.stdout))
    assert counts == [1] * 5


def test_info_refuses_a_stale_extension_without_a_traceback(pure_copy: pathlib.Path) -> None:
    """A stale _native (another ABI: an old in-place build) makes `info` say so and exit 1,
    as clone() refuses it: no traceback (the CLI's promise).  (Before the fix: a traceback.)"""
    (pure_copy / "portclone" / "_native.py").write_text("ABI = -1\n")
    result = run_python(
        "import sys; from portclone.cli import main; sys.exit(main(['info']))",
        env={"PYTHONPATH": str(pure_copy), "PORTCLONE_BACKEND": ""},
        cwd=str(pure_copy),
    )
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert "stale build (ABI -1" in result.stderr and "reinstall portclone" in result.stderr


class _FakeDist:
    """A distribution as importlib.metadata gives it, installed at ``where``."""

    def __init__(self, where: str, direct_url: Optional[str]) -> None:
        self.where, self.direct_url = where, direct_url

    def locate_file(self, name: str) -> str:
        return os.path.join(self.where, name)

    def read_text(self, name: str) -> Optional[str]:
        return self.direct_url if name == "direct_url.json" else None


@pytest.mark.parametrize(
    "direct_url, advice",
    [
        (None, "pip install --force-reinstall --no-cache-dir portclone"),
        ('{"url": "file:///home/u/src/portclone", "dir_info": {}}', "--no-cache-dir /home/u/src/portclone"),
        ('{"url": "file:///home/u/pc", "dir_info": {"editable": true}}', "--no-cache-dir -e /home/u/pc"),
        (
            '{"url": "https://example.org/pc.git", "vcs_info": {"vcs": "git", "commit_id": "0"}}',
            "--no-cache-dir git+https://example.org/pc.git",
        ),
    ],
    ids=["index", "path", "editable", "vcs"],
)
def test_the_reinstall_advice_fits_how_portclone_was_installed(
    monkeypatch: pytest.MonkeyPatch, direct_url: Optional[str], advice: str
) -> None:
    from importlib import metadata

    from portclone import _registry

    site = os.path.dirname(os.path.dirname(os.path.realpath(_registry.__file__)))
    monkeypatch.setattr(metadata, "distribution", lambda name: _FakeDist(site, direct_url))
    assert advice in _registry._reinstall_advice()


def test_the_reinstall_advice_for_a_copy_on_sys_path_names_the_copy(pure_copy: pathlib.Path) -> None:
    result = run_python(
        "from portclone._registry import _reinstall_advice; print(_reinstall_advice())",
        env={"PYTHONPATH": str(pure_copy)},
        cwd=str(pure_copy),
    )
    assert result.returncode == 0, result.stderr
    assert str(pure_copy) in result.stdout
    assert "--force-reinstall --no-cache-dir portclone" not in result.stdout
