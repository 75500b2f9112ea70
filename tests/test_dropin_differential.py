"""``portclone unshare`` and ``portclone nsenter`` against the host's util-linux, line by line.

Each case is a shell line with ``{U}`` (or ``{N}``) where the tool goes.  It runs once with
util-linux's command there and once with portclone's, as whoever runs the suite
(tools/in_setting.py runs this module as root, as an unprivileged user, inside a PID
namespace that sees the outer /proc, and as root of a user namespace), and the two must
agree: the same exit status, the same standard output once the tool's name is
normalised, and standard error empty in both or in neither.

A case whose option the host's util-linux does not have (it answers "unrecognized
option") is skipped with that reason; tests/test_dropin.py covers those options alone.
A case where util-linux fails here (no permission, no helper) compares that failure.
"""

from __future__ import annotations

import functools
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

import pytest
from conftest import foreign_proc

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="util-linux's tools are Linux's"),
    pytest.mark.skipif(
        shutil.which("unshare") is None or shutil.which("nsenter") is None,
        reason="util-linux's unshare and nsenter are not installed here (apt install util-linux)",
    ),
]

#: a FIFO handshake instead of a sleep: the program says it is ready, the shell reads it
_STOPPED = 'while [ "$(cut -d" " -f3 /proc/$p/stat 2>/dev/null)" != T ]; do :; done'

UNSHARE: List[str] = [
    # namespaces and ids
    "{U} -r id -u",
    "{U} -r id -g",
    "{U} --map-root-user cat /proc/self/uid_map",
    "{U} -U id -u",
    "{U} -U cat /proc/self/setgroups",
    "{U} -r cat /proc/self/setgroups",
    "{U} -r --setgroups=allow cat /proc/self/setgroups",
    "{U} -r --setgroups allow true",
    "{U} --map-user=5 id -u",
    "{U} --map-user=5 -r id -u",
    "{U} -r --map-user=5 id -u",
    "{U} --map-group=7 id -g",
    "{U} --map-user=nobody id -u",
    "{U} --map-user=4294967295 id -u",
    "{U} --map-user=nosuchuser true",
    "{U} -c id -u",
    "{U} --map-current-user cat /proc/self/uid_map",
    "{U} -Ur hostname",
    "{U} -Uru sh -c 'hostname inner && hostname'",
    "{U} -rn ip -o link 2>/dev/null | wc -l",
    "{U} -ri true",
    "{U} -rC true",
    "{U} -rm sh -c 'grep -c . /proc/self/mountinfo >/dev/null && echo ok'",
    "{U} -rpf sh -c 'echo $$'",
    "{U} -rp sh -c 'test $$ -gt 1 && echo not-pid-1'",
    "{U} -rfp --mount-proc sh -c 'echo $$; cat /proc/1/comm'",
    "{U} -rfp --mount-proc ps -o pid= -p 1",
    "{U} -rT --monotonic=100 true",
    "{U} -r --monotonic=100 true",
    "{U} -rT --boottime=5 true",
    "{U} -r --boottime=5 true",
    "{U} -rm --propagation=slave true",
    "{U} -rm --propagation=unchanged true",
    "{U} -rm --propagation=bogus true",
    "{U} -r --setgroups=maybe true",
    "{U} -r --map-group=0 --setgroups=allow true",
    # the process model: exit statuses, signals, fds, groups
    "{U} -r sh -c 'exit 3'",
    "{U} -rf sh -c 'exit 4'",
    "{U} -r sh -c 'kill -TERM $$'; echo status=$?",
    "{U} -rf sh -c 'kill -TERM $$'; echo status=$?",
    "{U} -r no-such-program-here",
    "{U} -r /etc/hostname",
    "{U} -r /",
    "{U} -r sh -c 'cat <&7' 7</etc/hostname",
    "{U} -rf sh -c 'cat <&7' 7</etc/hostname",
    "{U} -r sh -c 'echo x >&9' 9>&1",
    "{U} -r sh -c 'test $PPID = '$$' && echo child-of-shell'",
    '[ "$({U} -r sh -c \'ps -o pgid= -p $$\')" = "$(ps -o pgid= -p $$)" ] && echo same-group',
    "mkfifo $D/f; {U} -r sh -c 'echo $$ > '$D/f'; exec sleep 1000' & p=$!; read q < $D/f;"
    " [ $p = $q ] && echo program-is-the-command; kill -KILL $p; wait $p; echo status=$?;"
    " kill -0 $q 2>/dev/null && echo orphan-left || echo gone",
    "mkfifo $D/f; {U} -rf --kill-child sh -c 'echo $$ > '$D/f'; exec sleep 1000' & p=$!;"
    " read q < $D/f; kill -KILL $p; wait $p; echo status=$?",
    "{U} -r sh -c 'kill -STOP $$; echo resumed' & p=$!; "
    + _STOPPED
    + "; kill -CONT $p; wait $p; echo status=$?",
    "{U} -r --kill-child=SIGUSR1 true",
    "{U} -r --kill-child=NOSUCH true",
    "{U} -r --kill-child=RTMIN+2 true",
    # directories, ids, environment
    "{U} -r -w /tmp pwd",
    "{U} -r --wd=/etc pwd",
    "{U} -r -w /nonexistent pwd",
    "{U} -r -R / pwd",
    "{U} -r -R /nonexistent true",
    "{U} -r -S 0 -G 0 id -u",
    "{U} -r -S x true",
    "{U} -r -S 5 id -u",
    "{U} -r --keep-caps sh -c 'grep CapAmb /proc/self/status'",
    "{U} -r sh -c 'grep CapAmb /proc/self/status'",
    "X=1 {U} -r sh -c 'echo ${X:-unset}'",
    # the grammar: order, abbreviations, mistakes
    "{U} --bogus true",
    "{U} -x true",
    "{U} --map-r id -u",
    "{U} --ma id -u",
    "{U} --map-user id -u",
    "{U} -r -- id -u",
    "{U} -r id -u -r",
    "{U} --fork=yes true",
    "{U} -w",
    "{U} --help | head -3 | tail -1",
    "{U} -r -w/tmp pwd",
]

NSENTER: List[str] = [
    "{N} -t $T -u hostname",
    "{N} -t $T -a hostname",
    "{N} --target=$T --uts hostname",
    "{N} -t $T -U -u sh -c 'id -u; hostname'",
    "{N} -t $T -U --preserve-credentials id -u",
    "{N} -t $T -n ip -o link 2>/dev/null | wc -l",
    "{N} -t $T -m -u -i -n -U hostname",
    "{N} --uts=/proc/$T/ns/uts hostname",
    "{N} --net=/nonexistent true",
    "{N} -u hostname",
    "{N} -t 0 -a true",
    "{N} -t x -u true",
    "{N} -t $T true",
    "{N} -t 1 -t $T -u hostname",
    "{N} -t $T -u -r pwd",
    "{N} -t $T -u -w/ pwd",
    "{N} -t $T -u -W /tmp pwd",
    "{N} -t $T -u -w -W /tmp pwd",
    "{N} -t $T -u no-such-program-here",
    "{N} -t $T -u sh -c 'exit 5'",
    "{N} -t $T -u sh -c 'cat <&7' 7</etc/hostname",
    "{N} -t $T -u -S 0 -G 0 id -u",
    "{N} -t $T --bogus true",
    "{N} -t $T -u -F sh -c 'echo $$' | grep -c .",
]

#: nsenter's target: a process in its own user, UTS and network namespaces, made by the
#: host's unshare for both runs; it reports ready through a FIFO, and ends after the line.
_TARGET = (
    "mkfifo $D/t; unshare -Urun sh -c 'hostname inner; echo > '$D/t'; exec sleep 1000' & T=$!;"
    " read x < $D/t; "
)


def _tool(name: str, ours: str) -> str:
    if not ours:
        return shlex.quote(shutil.which(name) or name)
    return " ".join(shlex.quote(w) for w in (sys.executable, "-m", "portclone", ours))


def _run(line: str, ours: bool, nsenter: bool, unshare_as: str = "unshare") -> Tuple[int, str, str]:
    """``line`` with util-linux's tools, or (``ours``) portclone's: ``unshare_as`` is the
    portclone command that stands for unshare (``run`` takes unshare's lines too)."""
    with tempfile.TemporaryDirectory() as d:
        script = line.replace("{U}", _tool("unshare", unshare_as if ours else "")).replace(
            "{N}", _tool("nsenter", "nsenter" if ours else "")
        )
        if nsenter:
            script = _TARGET + "(" + script + "); s=$?; kill $T; wait $T 2>/dev/null; exit $s"
        env = dict(os.environ, D=d, LC_ALL="C")
        result = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120, cwd=d
        )
    out = (
        result.stdout.replace(d, "$D")
        .replace(f"portclone {unshare_as}", "unshare")
        .replace("portclone nsenter", "nsenter")
    )
    return result.returncode, out, result.stderr


#: Lines whose util-linux behaviour changed between releases: the releases that behave as
#: the drop-ins do (from, up to but not including), and what the others do.  The drop-ins
#: follow 2.38, Debian bookworm's.
_CHANGED: Dict[str, Tuple[Tuple[int, int], Tuple[int, int], str]] = {
    "{U} -rf sh -c 'kill -TERM $$'; echo status=$?": (
        (2, 38),
        (99, 0),
        "before 2.38, unshare -f set SIGINT and SIGTERM to SIG_IGN before its fork, and the "
        "child inherited them ignored (util-linux v2.36:sys-utils/unshare.c); 2.38 blocks "
        "them in the parent only",
    ),
    "{U} --map-user=4294967295 id -u": (
        (2, 38),
        (2, 39),
        "2.38 takes (uid_t) -1 as no mapping; newer releases (sid's) refuse it: 'failed to parse uid'",
    ),
    "{N} -t $T true": (
        (2, 38),
        (2, 39),
        "2.38 runs the program with -t alone; newer releases (sid's) say 'no namespace specified'",
    ),
    "{N} -t $T -u -W /tmp pwd": (
        (2, 38),
        (2, 39),
        "2.38's -W takes the next word as its directory; newer releases' (sid's) take an "
        "attached one only, and /tmp becomes the program",
    ),
}

#: Lines whose util-linux result, before a release, came from undefined behaviour that the
#: CPU decided: (the release that fixed it, the machines whose CPU gives the fixed result).
_CPU_DECIDED: Dict[str, Tuple[Tuple[int, int], Tuple[str, ...], str]] = {
    "{U} -r --keep-caps sh -c 'grep CapAmb /proc/self/status'": (
        (2, 40),
        ("x86_64", "i686", "i386", "aarch64"),
        "before 2.40, --keep-caps tested capability N with (1 << N) on an int, undefined from "
        "N = 32 on: x86 and arm64 take the shift modulo 32 and raise every capability, as 2.40 "
        "and portclone do; s390x gets 0 and raises none from 32 on (util-linux "
        "v2.38.1:sys-utils/unshare.c; fixed by 01a0a5560 in lib/caputils.c)",
    ),
}


@functools.cache
def _util_linux() -> Tuple[int, int]:
    """The host's util-linux release, from ``unshare --version`` (util-linux 2.38.1)."""
    out = subprocess.run(["unshare", "--version"], capture_output=True, text=True).stdout
    words = out.split()[-1].split(".") if out.split() else []
    try:
        return (int(words[0]), int(words[1]))
    except (IndexError, ValueError):
        return (0, 0)


def _skip_if_changed(line: str) -> None:
    release = ".".join(map(str, _util_linux()))
    if line in _CHANGED:
        since, until, why = _CHANGED[line]
        if not since <= _util_linux() < until:
            pytest.skip(f"util-linux {release} here: {why}")
    if line in _CPU_DECIDED:
        fixed, machines, why = _CPU_DECIDED[line]
        if _util_linux() < fixed and platform.machine() not in machines:
            pytest.skip(f"util-linux {release} on {platform.machine()} here: {why}")


def _unrecognized(stderr: str) -> bool:
    return "unrecognized option" in stderr or "invalid option" in stderr


_CASES: List[Tuple[str, bool]] = [(line, False) for line in UNSHARE] + [(line, True) for line in NSENTER]


@pytest.mark.parametrize(("line", "nsenter"), _CASES, ids=[line[:60] for line, _ in _CASES])
def test_portclone_agrees_with_util_linux(line: str, nsenter: bool) -> None:
    if foreign_proc() and (nsenter or "/proc/$p" in line):
        pytest.skip(
            "/proc belongs to an outer PID namespace here: the line's /proc/PID (nsenter's own "
            "lookups included) names another process; test_dropin reaches the target by pidfd"
        )
    _skip_if_changed(line)
    theirs = _run(line, ours=False, nsenter=nsenter)
    ours = _run(line, ours=True, nsenter=nsenter)
    if _unrecognized(theirs[2]) and not _unrecognized(ours[2]):
        pytest.skip(f"the host's util-linux has no such option: {theirs[2].strip().splitlines()[0]}")
    report: Dict[str, object] = {"util-linux": theirs, "portclone": ours}
    assert ours[0] == theirs[0], report
    assert ours[1] == theirs[1], report
    assert bool(ours[2].strip()) == bool(theirs[2].strip()), report


def _run_takes(line: str) -> bool:
    """Whether every option of ``line``'s unshare is one that ``portclone run`` has (run
    takes a subset of unshare's, in the same grammar); --help's text is run's own."""
    from portclone.cli._run import OPTS

    longs = [o.long for o in OPTS if o.long != "help"]
    letters = {o.short: o.arg for o in OPTS if o.short and o.long != "help"}
    lexer = shlex.shlex(line.split("{U}", 1)[1], posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    for word in lexer:  # up to the program, or the end of the command (; | & ))
        if word == "--" or not word.startswith("-") or word == "-":
            return True
        if word.startswith("--"):
            name = word[2:].split("=")[0]
            if name in ("help", "version") or not any(long.startswith(name) for long in longs):
                return False
            continue
        for letter in word[1:]:
            if letter not in letters:
                return False
            if letters[letter]:  # takes a value: the rest of the word, or the next word
                break
    return True


_RUN_CASES = [line for line in UNSHARE if _run_takes(line)]


@pytest.mark.parametrize("line", _RUN_CASES, ids=[line[:60] for line in _RUN_CASES])
def test_run_agrees_with_util_linux_unshare(line: str) -> None:
    """``portclone run`` on unshare's lines that use only its options: unshare's process
    model, so the same statuses and output."""
    if foreign_proc() and "/proc/$p" in line:
        pytest.skip(
            "/proc belongs to an outer PID namespace here: the line's /proc/PID names another process"
        )
    _skip_if_changed(line)
    theirs = _run(line, ours=False, nsenter=False)
    ours = _run(line, ours=True, nsenter=False, unshare_as="run")
    if _unrecognized(theirs[2]) and not _unrecognized(ours[2]):
        pytest.skip(f"the host's util-linux has no such option: {theirs[2].strip().splitlines()[0]}")
    report: Dict[str, object] = {"util-linux": theirs, "portclone run": ours}
    assert ours[0] == theirs[0], report
    assert ours[1] == theirs[1], report
    assert bool(ours[2].strip()) == bool(theirs[2].strip()), report


def test_the_lists_are_long_enough() -> None:
    """The issue's floor: 50 unshare lines and 15 nsenter lines; run takes most of unshare's."""
    assert len(UNSHARE) >= 50 and len(NSENTER) >= 15 and len(_RUN_CASES) >= 40
