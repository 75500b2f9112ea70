"""The documentation: README.md is a front page that fits on a screenful or five, every
Python block in it and in the docs' pages runs as written, and every public name is in
the API reference.

The snippet tests run each block as a program of its own, as a reader would paste it.
The built site's inventory is checked when ``PORTCLONE_DOCS_HTML`` names it (``tox -e
docs`` builds the site, then runs this file).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import zlib
from typing import List, Set, Tuple

import pytest

import portclone

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
#: pages whose ```python blocks are whole programs (other pages include files or show
#: listings with literalinclude)
SNIPPET_PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^```python\n(.*?)^```\s*$", re.S | re.M)


def python_blocks() -> List[Tuple[str, str]]:
    """(where, code) for every ```python block of the snippet pages."""
    blocks = []
    for page in SNIPPET_PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return blocks


def test_readme_is_a_front_page() -> None:
    lines = README.read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines: move the detail to docs/ (at most 250)"


#: README.md is also the package's description on PyPI, where relative links break: it
#: links to the repository's files by their address there
REPOSITORY = "https://github.com/portclone/portclone/blob/main/"


def test_readme_links_resolve() -> None:
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#]+)\)", text)
    assert targets
    for target in targets:
        assert "://" in target, f"README.md links to {target}: relative links break on PyPI"
        if target.startswith(REPOSITORY):
            path = target[len(REPOSITORY) :]
            assert (ROOT / path).exists(), f"README.md links to {path}, which does not exist"


def test_there_are_snippets_to_run() -> None:
    where = {w.split(":")[0] for w, _ in python_blocks()}
    assert "README.md" in where and "docs/tutorial.md" in where


@pytest.mark.requires("linux", "root", "CLONE_NEWUSER", "CLONE_NEWPID", "CLONE_NEWNS")
@pytest.mark.host_only
@pytest.mark.parametrize("where,code", python_blocks(), ids=[w for w, _ in python_blocks()])
def test_python_block_runs_as_written(where: str, code: str) -> None:
    env = dict(os.environ)
    env.pop("PORTCLONE_BACKEND", None)  # the snippets show the default backend
    src = str(pathlib.Path(portclone.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd="/"
    )
    assert result.returncode == 0, f"{where} exited {result.returncode}:\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, f"{where}:\n{result.stderr}"


@pytest.mark.requires("linux", "root")
@pytest.mark.host_only
@pytest.mark.parametrize("privileged", [True, False], ids=["root", "without-CAP_SYS_ADMIN"])
def test_the_plugin_example_passes_with_and_without_privilege(
    tmp_path: pathlib.Path, privileged: bool
) -> None:
    """docs/backends.md's pytest example, run by pytest under every backend: as root, and
    as root without CAP_SYS_ADMIN (setpriv drops it from the bounding set), the caller a
    hosted CI runner's unprivileged user is for namespaces."""
    (code,) = [c for w, c in python_blocks() if "test_degrades_cleanly" in c]
    (tmp_path / "test_example.py").write_text(code)
    drop = [] if privileged else ["setpriv", "--bounding-set", "-sys_admin"]
    env = dict(os.environ)
    env.pop("PORTCLONE_BACKEND", None)
    src = str(pathlib.Path(portclone.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    from test_selection import _registered  # the plugin is loaded once: by its entry point, or -p

    load = [] if _registered() else ["-p", "portclone.pytest_plugin"]
    result = subprocess.run(
        [*drop, sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *load,
         str(tmp_path / "test_example.py")],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for name in portclone.available_backends():
        assert f"test_degrades_cleanly[{name}] PASSED" in result.stdout, result.stdout


# -- every public name is documented ---------------------------------------------------

DIRECTIVE = re.compile(r"^\.\. (?:auto)?(?:function|class|exception|data)::[ \t]+(.*(?:\n {10}\S.*)*)", re.M)


def api_rst_names() -> Set[str]:
    """The names api.rst documents (autodoc directives and ``.. data::``, several names
    to a directive), under ``.. module:: portclone``."""
    text = (DOCS / "api.rst").read_text()
    text = text.split(".. py:currentmodule::")[0]  # after it: private modules' aliases
    names = set()
    for match in DIRECTIVE.finditer(text):
        for name in match.group(1).split():
            names.add(name.split("(")[0])
    return names


def test_every_public_name_is_in_the_api_reference() -> None:
    undocumented = sorted(set(portclone.__all__) - api_rst_names())
    assert not undocumented, f"add these to docs/api.rst: {', '.join(undocumented)}"


def inventory_names(path: pathlib.Path) -> Set[str]:
    """The object names of a Sphinx objects.inv (version 2: four header lines, then
    zlib-compressed lines "name domain:role priority uri dispname")."""
    data = path.read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    assert data.startswith(b"# Sphinx inventory version 2"), path
    lines = zlib.decompress(data[header_end:]).decode().splitlines()
    return {line.split(" ", 1)[0] for line in lines if line.startswith("portclone.")}


def test_every_public_name_is_in_the_built_site() -> None:
    html = os.environ.get("PORTCLONE_DOCS_HTML")
    if not html:
        pytest.skip("the site is not built here: tox -e docs builds it and runs this test")
    names = inventory_names(pathlib.Path(html) / "objects.inv")
    missing = sorted(n for n in portclone.__all__ if f"portclone.{n}" not in names)
    assert not missing, f"not in the built API reference: {', '.join(missing)}"
