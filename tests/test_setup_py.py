"""setup.py run directly (the CONTRIBUTING dev loop, `python3 setup.py build_ext --inplace`)
with the interpreter's own setuptools: one that cannot read pyproject.toml is named."""

import pathlib

import pytest
from conftest import run_python

#: the build, packaging and CI definitions are the same on every kernel and architecture:
#: the emulated guests deselect these (vm/guest-init.sh)
pytestmark = pytest.mark.host_only


ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_an_old_setuptools_is_named_before_anything_is_built() -> None:
    """pyenv's 3.9 carries setuptools 58 (it ignores [project]: build_ext --inplace exited 0
    with "not built ... Install a C compiler"), 3.10 carries 65 (an opaque
    `project.license` schema error).  SIMULATED: setuptools.__version__ set to 58.1.0."""
    pytest.importorskip("setuptools", reason="needs setuptools, as setup.py does")
    setup_py = ROOT / "setup.py"
    if not setup_py.exists():
        pytest.skip("needs setup.py (a checkout or the sdist)")
    result = run_python(
        f"""
        import sys, setuptools
        setuptools.__version__ = "58.1.0"
        sys.argv = ["setup.py", "--version"]
        exec(compile(open({str(setup_py)!r}).read(), "setup.py", "exec"))
        """,
        cwd=str(ROOT),
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "portclone needs setuptools>=77" in result.stderr
    assert "this is setuptools 58.1.0" in result.stderr
