"""What ``import portclone`` loads, and that every public name still arrives on first use.

The package loads its modules lazily (PEP 562 ``__getattr__``); the figures live in
``bench/bench_import.py`` and ``bench/results-import.txt``.
"""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest
from conftest import run_python

import portclone

#: what the package must not load at import (its weight, ``bench/bench_import.py``)
HEAVY = ["typing", "dataclasses", "inspect", "traceback", "platform", "subprocess", "enum"]


def test_import_loads_none_of_its_modules_nor_their_weight() -> None:
    result = run_python(
        f"""
        import json, sys
        before = set(sys.modules)
        import portclone
        new = sorted(set(sys.modules) - before)
        print(json.dumps({{"new": new, "heavy": [m for m in {HEAVY!r} if m in new]}}))
        """
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["new"] == ["portclone"], report
    assert report["heavy"] == []


def test_every_public_name_arrives_on_first_use() -> None:
    result = run_python(
        """
        import json, portclone
        missing = [n for n in portclone.__all__ if getattr(portclone, n, None) is None]
        star = {}
        exec("from portclone import *", star)
        print(json.dumps({"missing": missing, "star": sorted(set(portclone.__all__) - set(star)),
                          "dir": sorted(set(portclone.__all__) - set(dir(portclone)))}))
        """
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"missing": [], "star": [], "dir": []}


def test_public_names_are_the_objects_of_their_home_modules() -> None:
    from portclone import _api, _child, _errors, _flags

    assert portclone.clone is _api.clone and portclone.Child is _child.Child
    assert portclone.PortcloneError is _errors.PortcloneError
    assert portclone.CLONE_NEWPID is _flags.CloneFlags.CLONE_NEWPID
    assert isinstance(portclone.CLONE_NEWPID, portclone.CloneFlags)


@pytest.mark.parametrize("name", ["CLONE_NEWPDI", "clon", "_HOMES_", "CLONE_"])
def test_a_misspelt_name_is_an_attribute_error(name: str) -> None:
    with pytest.raises(AttributeError, match=f"no attribute {name!r}"):
        getattr(portclone, name)


def test_a_retired_name_says_why() -> None:
    with pytest.raises(AttributeError, match=r"CLONE_PIDFD since Linux 5\.2"):
        portclone.CLONE_PID  # noqa: B018


@pytest.mark.parametrize("name", ["CLONE_NEWPID", "spawn"])
def test_emfile_at_first_use_says_so_and_is_not_remembered(name: str) -> None:
    """At EMFILE the module behind a name cannot be opened: that is an OSError saying
    nothing is remembered (the constants' path included), and the next use loads it."""
    result = run_python(
        f"""
        import errno, json, os, resource
        import portclone
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            getattr(portclone, {name!r})
            first = "loaded"
        except OSError as e:
            first = [errno.errorcode[e.errno], str(e)]
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        print(json.dumps({{"first": first, "then": repr(getattr(portclone, {name!r}))}}))
        """
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["first"][0] == "EMFILE", report
    assert f"portclone.{name} could not be loaded now" in report["first"][1]
    assert "nothing is remembered" in report["first"][1]
    assert name in report["then"]


def test_dir_shows_the_public_names_only() -> None:
    names = [n for n in dir(portclone) if not n.startswith("__")]
    assert names == sorted(portclone.__all__)


@pytest.mark.requires("linux", "root")
def test_the_documented_preload_survives_a_chroot(tmp_path: pathlib.Path) -> None:
    """docs/backends.md: after current_backend(), a program whose root no longer holds
    Python or portclone can still clone, wait, check and spawn.  The new root has a /proc
    (as docs/backends.md says it needs before Linux 6.11, for the namespace flags)."""
    (tmp_path / "proc").mkdir()
    subprocess.run(["mount", "-t", "proc", "proc", str(tmp_path / "proc")], check=True)
    try:
        _chrooted(tmp_path)
    finally:
        subprocess.run(["umount", str(tmp_path / "proc")], check=True)


def _chrooted(tmp_path: pathlib.Path) -> None:
    result = run_python(
        f"""
        import os, portclone
        portclone.current_backend()
        os.chroot({str(tmp_path)!r})
        os.chdir("/")
        child = portclone.clone(lambda a, b=2: a + b, 1, flags=portclone.CLONE_NEWUTS, hostname="x")
        print(child.wait(timeout=30), int(portclone.check(portclone.CLONE_NEWPID)))
        try:
            portclone.spawn(["/bin/true"])  # not in the new root: the OSError subprocess gives
        except FileNotFoundError:
            pass
        print(portclone.available_backends() == ["linux", "netbsd", "fork"])
        print(portclone.why_unusable("fork"))
        with portclone.use_backend("fork") as backend:
            print(backend.name)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", str(int(portclone.CLONE_NEWPID)), "True", "None", "fork"]


@pytest.mark.requires("linux", "root")
def test_after_a_chroot_a_call_that_cannot_bind_fails_in_the_child(tmp_path: pathlib.Path) -> None:
    """docs/backends.md: inspect is loaded only when a callable is not a plain function; after
    a chroot it cannot be, and the child tells (status 1) instead of a TypeError here."""
    result = run_python(
        f"""
        import functools, os, portclone
        portclone.current_backend()
        os.chroot({str(tmp_path)!r})
        os.chdir("/")
        child = portclone.clone(functools.partial(lambda a: a, 1), 2)
        print(child.wait(timeout=30))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1"]
