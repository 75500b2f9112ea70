"""Run the namespace tests in the settings users run portclone in (issue 19).

    python tools/in_setting.py [--junit-dir DIR] [SETTING ...] [-- PYTEST-ARGS]

Each SETTING (default: all of them) runs MODULES with this interpreter, entered from the
root this script must run as:

    unpriv      an unprivileged user (uid/gid 65534, no supplementary groups)
    pidns       a new PID namespace that still sees the host's /proc
    userns      root of a user namespace made by that unprivileged user (rootless containers)
    pidns-proc  a new PID and mount namespace with its own /proc

Each writes DIR/junit-setting-NAME.xml (script/test sums .tox/junit-*.xml) and says its
counts and time.  The exit status is 1 when a setting failed; pytest's 5 (nothing collected)
is not a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: the tests that create or join namespaces, write id maps, take setup options, or run
#: check/info and the CLI: the one place the selection is made
MODULES = [
    "tests/test_setup_options.py",
    "tests/test_namespaced_caller.py",
    "tests/test_linux.py",
    "tests/test_contract.py",
    "tests/test_spawn.py",
    "tests/test_cli.py",
    "tests/test_cli_run.py",
    "tests/test_adversity_probes.py",
    "tests/test_dropin.py",
    "tests/test_dropin_differential.py",
    "tests/test_subids.py",
    "tests/test_examples.py",
]

NOBODY = 65534
DROP = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
SETTINGS: Dict[str, List[str]] = {
    "unpriv": DROP,
    "pidns": ["unshare", "--pid", "--fork", "--kill-child", "--"],
    "userns": [*DROP, "unshare", "--map-root-user", "--"],
    "pidns-proc": ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--"],
}

#: a hung run (a join that never returns, say) ends the setting, not CI
TIMEOUT = 900


def reachable_by_nobody(path: str) -> bool:
    """Whether uid 65534 can reach ``path``: every directory on the way is o+x."""
    path = os.path.realpath(path)
    while path != "/":
        path = os.path.dirname(path)
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def path_for_nobody(path: str) -> str:
    """PATH without the directories uid 65534 cannot search (root's own, say): an exec of a
    missing program meets EACCES there and is a PermissionError, not the FileNotFoundError a
    user with their own PATH gets."""
    return os.pathsep.join(d for d in path.split(os.pathsep) if d and reachable_by_nobody(d + "/."))


def counts(junit: str) -> str:
    t = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        for key in t:
            t[key] += int(suite.get(key, 0))
    failed = t["failures"] + t["errors"]
    return f"{t['tests'] - failed - t['skipped']} passed, {failed} failed, {t['skipped']} skipped"


def add_crashes(junit: str, crashed: List[str]) -> None:
    """Each test that killed the interpreter, as an error in the junit report."""
    tree = ET.parse(junit)
    suite = next(tree.getroot().iter("testsuite"))
    for nodeid in crashed:
        path, _, test = nodeid.partition("::")
        case = ET.SubElement(suite, "testcase", classname=path[:-3].replace("/", "."), name=test)
        ET.SubElement(case, "error", message="the test killed the interpreter (see its output above)")
    for key in ("tests", "errors"):
        suite.set(key, str(int(suite.get(key, 0)) + len(crashed)))
    tree.write(junit)


def run(name: str, junit_dir: str, pytest_args: List[str]) -> bool:
    work = tempfile.mkdtemp(prefix=f"portclone-setting-{name}-")
    try:
        os.chmod(work, 0o755)
        os.chown(work, NOBODY, NOBODY)
        junit = os.path.join(work, "junit.xml")
        now = os.path.join(work, "now")  # tests/conftest.py writes each test's id there
        env = dict(os.environ, HOME=work, TMPDIR=work, XDG_CACHE_HOME=work, PYTHONDONTWRITEBYTECODE="1")
        env["PORTCLONE_TEST_NOW"] = now
        if SETTINGS[name][: len(DROP)] == DROP:
            env["PATH"] = path_for_nobody(env.get("PATH", os.defpath))
        cmd = [
            *SETTINGS[name],
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={work}/pytest",
            f"--junitxml={junit}",
            "-o",
            f"junit_suite_name=setting-{name}",
            *MODULES,
            *pytest_args,
        ]
        print(f"\n== setting {name}: {' '.join(SETTINGS[name][:-1])}", flush=True)
        start = time.monotonic()
        crashed: List[str] = []
        while True:  # a test that kills the interpreter fails alone; the rest run again
            deselect = [f"--deselect={nodeid}" for nodeid in crashed]
            try:
                code = subprocess.run([*cmd, *deselect], cwd=ROOT, env=env, timeout=TIMEOUT).returncode
            except subprocess.TimeoutExpired:
                code = "timed out"  # type: ignore[assignment]
            nodeid = open(now).read() if os.path.exists(now) else None
            if not (isinstance(code, int) and code < 0 and nodeid and nodeid not in crashed):
                break
            print(f"\n== setting {name}: {nodeid} killed the interpreter (signal {-code})", flush=True)
            crashed.append(nodeid)
        if crashed and os.path.exists(junit):
            add_crashes(junit, crashed)
        took = time.monotonic() - start
        said = counts(junit) if os.path.exists(junit) else "no junit report"
        if os.path.exists(junit):
            shutil.copy(junit, os.path.join(junit_dir, f"junit-setting-{name}.xml"))
        code_said = f"pytest exit {code}" + (f", {len(crashed)} crashed it" if crashed else "")
        print(f"== setting {name}: {said} in {took:.0f} s ({code_said})", flush=True)
        return code in (0, 5) and not crashed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: List[str]) -> int:
    cut = argv.index("--") if "--" in argv else len(argv)
    args, pytest_args = argv[:cut], argv[cut + 1 :]
    junit_dir = os.path.join(ROOT, ".tox")
    if args[:1] == ["--junit-dir"]:
        junit_dir, args = args[1], args[2:]
    unknown = [a for a in args if a not in SETTINGS]
    if unknown:
        print(f"unknown setting {unknown[0]!r}: have {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("in_setting.py enters each setting from root: run it as root", file=sys.stderr)
        return 2
    chosen = args or list(SETTINGS)
    drops = any(SETTINGS[name][: len(DROP)] == DROP for name in chosen)
    if drops and not reachable_by_nobody(os.path.realpath(sys.executable)):
        print(
            f"uid {NOBODY} cannot reach {os.path.realpath(sys.executable)}: use an interpreter "
            "outside a private directory (tox.ini's settings env uses /usr/bin/python3.11, or "
            "PORTCLONE_SETTINGS_PYTHON)",
            file=sys.stderr,
        )
        return 2
    opened = _let_nobody_through([sys.prefix + "/.", ROOT + "/tox.ini"]) if drops else []
    try:
        os.makedirs(junit_dir, exist_ok=True)
        results = [run(name, junit_dir, pytest_args) for name in chosen]
    finally:
        for path, mode in reversed(opened):
            os.chmod(path, mode)
    return 0 if all(results) else 1


def _let_nobody_through(paths: List[str]) -> List[Tuple[str, int]]:
    """o+x on each directory above ``paths`` that lacks it (a checkout under /root, say),
    for the runs; (directory, mode) to put back afterwards."""
    opened = []
    for target in paths:
        path = os.path.abspath(target)
        while path != "/":
            path = os.path.dirname(path)
            mode = os.stat(path).st_mode
            if not mode & 0o001:
                print(f"in_setting.py: o+x on {path} for uid {NOBODY}, until the runs end", flush=True)
                os.chmod(path, (mode & 0o7777) | 0o001)
                opened.append((path, mode & 0o7777))
    return opened


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
