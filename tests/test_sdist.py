"""The sdist holds what its own tests need: built from this checkout with setuptools' PEP 517
hook (no network), unpacked, and ``pytest --collect-only`` there collects every test module
of the checkout with no error; every file under tests/, tools/, examples/ and bench/ is in it."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: what the tests import, run or read, besides the package (tools/gen_constants.py,
#: examples/ and bench/ are run by tests; tests/kernel_verdict.c is compiled by one)
TREES = ("tests", "tools", "examples", "bench", "docs")

#: left out of the copy the sdist is built from: a stale egg-info's SOURCES.txt would be read
#: back into the sdist (setuptools' manifest_maker) and hide what MANIFEST.in lacks
NOT_COPIED = shutil.ignore_patterns(
    "*.egg-info",
    ".git",
    ".tox",
    "build",
    "dist",
    "wheelhouse",
    "__pycache__",
    "*.so",
    ".*_cache",
    ".hypothesis",
)

pytestmark = pytest.mark.host_only


def _setuptools_version() -> tuple:  # type: ignore[type-arg]
    out = subprocess.run(
        [sys.executable, "-c", "import setuptools; print(setuptools.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return tuple(int(p) for p in out.split(".")[:2] if p.isdigit()) if out else (0,)


def _version() -> str:
    """``__version__`` as src/portclone/__init__.py states it (not the imported package's,
    which may be another checkout's)."""
    text = (ROOT / "src" / "portclone" / "__init__.py").read_text()
    return text.split("__version__ = ", 1)[1].splitlines()[0].strip("\"'")


def _files(top: pathlib.Path) -> set:  # type: ignore[type-arg]
    found = set()
    for tree in TREES:
        for path in (top / tree).rglob("*"):
            rel = path.relative_to(top)
            # not caches or builds: .mypy_cache and other dot-directories, dot-files, docs/_build
            hidden = any(part.startswith(".") or part == "_build" for part in rel.parts)
            if path.is_file() and "__pycache__" not in rel.parts and not hidden:
                if path.suffix not in (".pyc", ".so"):
                    found.add(rel.as_posix())
    return found


def test_the_sdist_holds_what_its_tests_need(tmp_path: pathlib.Path) -> None:
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("not run from a checkout or an unpacked sdist")
    if _setuptools_version() < (77,):
        pytest.skip("needs setuptools>=77, as pyproject.toml's build-system says (CONTRIBUTING.md)")
    clean = tmp_path / "checkout"
    shutil.copytree(ROOT, clean, ignore=NOT_COPIED)
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))",
            str(tmp_path),
        ],
        cwd=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    name = build.stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as tar:
        tar.extractall(tmp_path / "unpacked")
    (top,) = (tmp_path / "unpacked").iterdir()

    # the metadata: one version (portclone.__version__, read by setuptools), SPDX license,
    # the project's addresses
    info = (top / "PKG-INFO").read_text()
    assert f"\nVersion: {_version()}\n" in info
    assert "\nLicense-Expression: MIT\n" in info and "\nLicense-File: LICENSE\n" in info
    for label in ("Homepage", "Documentation", "Source", "Issues", "Changelog"):
        assert f"\nProject-URL: {label}, https://" in info, label

    missing = sorted(_files(ROOT) - _files(top))
    assert not missing, f"not in the sdist: {missing}"
    # and nothing of a build or of the host's state
    names = [p.relative_to(top).as_posix() for p in top.rglob("*")]
    assert not [n for n in names if n.endswith(".so") or "__pycache__" in n or n.startswith("wheelhouse")]

    collect = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=top,
        env=dict(os.environ, PYTHONPATH=str(top / "src")),  # the sdist's package, not this one
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collect.returncode == 0, collect.stdout[-3000:] + collect.stderr[-2000:]
    assert "error" not in collect.stdout.splitlines()[-1].lower(), collect.stdout[-3000:]
    collected = {line.split("::", 1)[0] for line in collect.stdout.splitlines() if "::" in line}
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").glob("test_*.py")}
    assert collected == modules, f"not collected: {sorted(modules - collected)}"

    # the tests that read the project's files, rather than exercise the package, pass there
    readers = ["tests/test_docs.py", "tests/test_ci_definitions.py", "tests/test_layering.py"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *readers],
        cwd=top,
        env=dict(os.environ, PYTHONPATH=str(top / "src")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
