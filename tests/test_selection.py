"""Choosing the backend: the platform default, PORTCLONE_BACKEND, use_backend(), the plugin."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
from typing import Dict, Optional

import pytest
from conftest import run_python

import portclone

REPORT = """
import json, portclone
try:
    name = portclone.current_backend().name
except portclone.BackendUnavailableError as e:
    name = "error: " + str(e)
print(json.dumps({"backend": name, "available": portclone.available_backends()}))
"""


def report(env: dict) -> dict:  # type: ignore[type-arg]
    full = {k: v for k, v in os.environ.items() if k != "PORTCLONE_BACKEND"}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", REPORT], capture_output=True, text=True, env=full, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.requires("linux")
def test_linux_is_the_default_here() -> None:
    result = report({})
    assert result == {"backend": "linux", "available": ["linux", "netbsd", "fork"]}


@pytest.mark.parametrize("name", ["linux", "netbsd", "fork"])
def test_env_var_picks_the_backend(name: str) -> None:
    if name not in portclone.available_backends():
        pytest.skip(f"missing the {name} backend here")
    assert report({"PORTCLONE_BACKEND": name})["backend"] == name


def test_env_var_unknown_name_is_a_clear_error() -> None:
    result = report({"PORTCLONE_BACKEND": "plan9"})["backend"]
    assert result.startswith("error: portclone backend 'plan9' is not usable")
    assert "linux, netbsd, fork" in result and "PORTCLONE_BACKEND=plan9" in result


def test_use_backend_overrides_and_restores() -> None:
    before = portclone.current_backend().name
    with portclone.use_backend("fork") as backend:
        assert backend.name == "fork" and portclone.current_backend() is backend
        with portclone.clone(os.getpid) as child:
            assert child.backend == "fork" and child.syscall == "fork"
            child.wait(timeout=30)
    assert portclone.current_backend().name == before


def test_use_backend_unknown_or_unusable() -> None:
    with pytest.raises(portclone.BackendUnavailableError, match="unknown backend 'vms'") as info:
        with portclone.use_backend("vms"):
            pass
    assert isinstance(info.value, LookupError) and info.value.backend == "vms"


def test_windows_import_works_and_clone_explains() -> None:
    """SIMULATED Windows (no os.fork, no SIGCHLD, sys.platform win32): it cannot be had here."""
    result = run_python("""
        import os, signal, sys
        del os.fork
        del signal.SIGCHLD
        sys.platform = "win32"
        import portclone
        print(portclone.available_backends())
        try:
            portclone.clone(print)
        except portclone.BackendUnavailableError as e:
            print("refused:", e)
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1].startswith("refused: ") and "neither fork nor clone" in lines[1]


DOWNSTREAM = textwrap.dedent("""
    import concurrent.futures
    import portclone

    def test_each(portclone_backend):
        with portclone.clone(lambda: 7) as child:
            assert child.wait(timeout=30) == 7
        assert child.backend == portclone_backend.name

    def test_each_from_a_worker_thread(portclone_backend):
        def work():
            with portclone.spawn(["true"]) as child:
                child.wait(timeout=30)
            return child.backend

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            assert pool.submit(work).result() == portclone_backend.name
""")


def _registered() -> bool:
    """Is portclone installed as a distribution, with its pytest11 entry point?"""
    import importlib.metadata as md

    eps = md.entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", [])
    return any(ep.value == "portclone.pytest_plugin" for ep in group)


def _pytest(path: str, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """``pytest -v`` on the downstream test file ``path``, with the plugin loaded once."""
    load = [] if _registered() else ["-p", "portclone.pytest_plugin"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *load, *args, path],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(path),
        env=env,
    )


def test_plugin_entry_point_names_the_plugin() -> None:
    """pyproject.toml's pytest11 entry point is the plugin module, with pytest's hooks; an
    installed portclone (not the VM guests' source tree) has it registered."""
    text = (pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    section = text.split("[project.entry-points.pytest11]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^portclone\s*=\s*"portclone\.pytest_plugin"', section, re.M), section
    plugin = importlib.import_module("portclone.pytest_plugin")
    assert callable(plugin.pytest_addoption) and callable(plugin.pytest_generate_tests)
    if importlib.util.find_spec("portclone") and "site-packages" in (portclone.__file__ or ""):
        assert _registered()


@pytest.mark.host_only  # a pytest run in a fresh interpreter: seconds under emulation
def test_pytest_plugin_runs_a_downstream_test_under_each_backend(tmp_path: os.PathLike) -> None:  # type: ignore[type-arg]
    path = os.path.join(str(tmp_path), "test_downstream.py")
    with open(path, "w") as f:
        f.write(DOWNSTREAM)
    out = _pytest(path)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in portclone.available_backends():
        assert f"test_each[{name}] PASSED" in out.stdout
        assert f"test_each_from_a_worker_thread[{name}] PASSED" in out.stdout
    one = _pytest(path, "--portclone-backend", "fork")
    assert one.returncode == 0 and "test_each[fork] PASSED" in one.stdout
    assert "test_each[linux]" not in one.stdout


@pytest.mark.host_only  # a pytest run in a fresh interpreter: seconds under emulation
def test_pytest_plugin_follows_the_environment_and_refuses_unknown_names(tmp_path: os.PathLike) -> None:  # type: ignore[type-arg]
    """PORTCLONE_BACKEND=netbsd pytest narrows the fixture to netbsd, as the README says;
    an unknown name there or in --portclone-backend is a usage error, not ignored."""
    path = os.path.join(str(tmp_path), "test_downstream.py")
    with open(path, "w") as f:
        f.write(DOWNSTREAM)

    def pytest_run(*args: str, env: Dict[str, str]) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
        return _pytest(path, *args, env={**os.environ, **env})

    if "netbsd" in portclone.available_backends():
        narrowed = pytest_run(env={"PORTCLONE_BACKEND": "netbsd"})
        assert narrowed.returncode == 0, narrowed.stdout + narrowed.stderr
        assert "test_each[netbsd] PASSED" in narrowed.stdout
        assert "test_each[fork]" not in narrowed.stdout
    if "netbsd" in portclone.available_backends():  # read as portclone reads it
        spaced = pytest_run(env={"PORTCLONE_BACKEND": " netbsd "})
        assert spaced.returncode == 0 and "test_each[netbsd] PASSED" in spaced.stdout
    bogus = pytest_run(env={"PORTCLONE_BACKEND": "bogus"})
    assert bogus.returncode == 4 and "unknown backend" in bogus.stderr, bogus.stdout + bogus.stderr
    option = pytest_run("--portclone-backend", "bogus", env={})
    assert option.returncode == 4, option.stdout + option.stderr


@pytest.mark.host_only  # a pytest run in a fresh interpreter: seconds under emulation
def test_pytest_plugin_probes_nothing_in_a_session_that_does_not_use_it(tmp_path: os.PathLike) -> None:  # type: ignore[type-arg]
    """The plugin loads in every pytest session where portclone is installed: a session
    whose tests do not take the fixture must not load the extension or probe backends."""
    path = os.path.join(str(tmp_path), "test_other.py")
    with open(path, "w") as f:
        f.write(
            "import sys\n"
            "def test_other():\n"
            "    assert 'portclone._native' not in sys.modules\n"
            "    assert not [m for m in sys.modules if m.startswith('portclone.backends')]\n"
            "    assert 'portclone._child' not in sys.modules  # nor the library's bulk\n"
        )
    out = _pytest(path, env={k: v for k, v in os.environ.items() if k != "PORTCLONE_BACKEND"})
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.host_only  # a pytest run in a fresh interpreter: seconds under emulation
def test_pytest_plugin_leaves_a_test_its_own_backend_choice(tmp_path: os.PathLike) -> None:  # type: ignore[type-arg]
    """A test that parametrizes portclone_backend itself (indirect=True) keeps its choice;
    before the fix the plugin parametrized it again and collection failed ("duplicate
    parametrization of 'portclone_backend'").  A backend named twice runs once."""
    path = os.path.join(str(tmp_path), "test_own_choice.py")
    with open(path, "w") as f:
        f.write(
            "import pytest\n"
            "import portclone\n"
            "@pytest.mark.parametrize('portclone_backend', ['fork'], indirect=True)\n"
            "def test_only_fork(portclone_backend):\n"
            "    assert portclone.current_backend().name == 'fork'\n"
            "@pytest.mark.parametrize('n, portclone_backend', [(1, 'fork')],\n"
            "                         indirect=['portclone_backend'])\n"
            "def test_pair(n, portclone_backend):\n"
            "    assert portclone_backend.name == 'fork'\n"
            "def test_each(portclone_backend):\n"
            "    pass\n"
        )
    out = _pytest(path, "--portclone-backend", "fork", "--portclone-backend", "fork")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "test_only_fork[fork] PASSED" in out.stdout
    assert "test_pair[1-fork] PASSED" in out.stdout
    assert "test_each[fork] PASSED" in out.stdout and "test_each[fork0]" not in out.stdout
