"""uid_map=/gid_map= beyond the caller's own ids, for a caller without CAP_SETUID/SETGID:
through newuidmap and newgidmap, as /etc/subuid and /etc/subgid grant (portclone._subids).

The unprivileged cases run as uid 65534 in ``script/test --settings`` (the unpriv setting;
.ci/run gives nobody the range 200000:65536); as root they take the direct path, which the
first test checks too."""

from __future__ import annotations

import os
import shutil
import sys
from typing import List, Optional, Tuple

import pytest
from conftest import no_side_effects

import portclone
from portclone import _subids

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="user namespaces are Linux's"),
    pytest.mark.requires("linux", "CLONE_NEWUSER"),
]


def _privileged() -> bool:
    return _subids._has_cap(7) and _subids._has_cap(6)


def _granted_range() -> Optional[Tuple[int, int]]:
    """A range /etc/subuid and /etc/subgid both grant this user, or None."""
    try:
        uids = _subids._granted("uid")
        gids = _subids._granted("gid")
    except PermissionError:
        return None
    for lo, hi in uids:
        if any(glo <= lo and lo + 10 <= ghi for glo, ghi in gids) and hi - lo >= 10:
            return lo, 10
    return None


def _mapped_range() -> Optional[int]:
    """A start of 10 ids both our uid_map and gid_map map, clear of our own ids (a child's
    map may only use ids mapped in its parent's namespace)."""

    def inside(path: str) -> List[Tuple[int, int]]:
        with open(path) as f:
            return [(int(a), int(a) + int(c)) for a, _, c in (line.split() for line in f)]

    own = {os.geteuid(), os.getegid()}
    for start in (200000, 1000, 100):
        span = set(range(start, start + 10))
        if span & own:
            continue
        if all(
            any(lo <= start and start + 10 <= hi for lo, hi in inside(p))
            for p in ("/proc/self/uid_map", "/proc/self/gid_map")
        ):
            return start
    return None


def _maps(
    own_uid: int, own_gid: int, start: int
) -> Tuple[List[Tuple[int, int, int]], List[Tuple[int, int, int]]]:
    return [(0, own_uid, 1), (1, start, 10)], [(0, own_gid, 1), (1, start, 10)]


def _read_maps() -> str:
    with open("/proc/self/uid_map") as u, open("/proc/self/gid_map") as g:
        return " ".join([*u.read().split(), "|", *g.read().split()])


@pytest.mark.parametrize("how", ["spawn", "clone"])
def test_a_range_beyond_our_own_ids_is_mapped(how: str) -> None:
    """Privileged: written directly; without privilege: through newuidmap/newgidmap."""
    if _privileged():
        start = _mapped_range()
        if start is None:
            pytest.skip("this user namespace maps no 10 ids beside our own: nothing to map a range from")
    else:
        if shutil.which("newuidmap") is None:
            pytest.skip("no newuidmap here (apt install uidmap; .ci/run does)")
        granted = _granted_range()
        if granted is None:
            pytest.skip("/etc/subuid and /etc/subgid grant this user no range (.ci/run gives nobody one)")
        start = granted[0]
    uid_map, gid_map = _maps(os.geteuid(), os.getegid(), start)
    want = f"0 {os.geteuid()} 1 1 {start} 10 | 0 {os.getegid()} 1 1 {start} 10"
    if how == "spawn":
        child = portclone.spawn(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
                "from test_subids import _read_maps; print(_read_maps())",
            ],
            uid_map=uid_map,
            gid_map=gid_map,
            stdout=portclone.PIPE,
        )
        out = child.stdout.read().decode()
        assert (child.wait(), out.strip()) == (0, want)
    else:
        r, w = os.pipe()

        def report() -> int:
            os.write(w, _read_maps().encode())
            return 0

        child = portclone.clone(report, uid_map=uid_map, gid_map=gid_map)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            got = f.read().decode()
        assert (child.wait(), got) == (0, want)


def test_a_missing_newuidmap_is_refused_before_anything_is_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    if _privileged():
        pytest.skip("this caller has CAP_SETUID: it writes the maps itself (the unpriv setting runs this)")
    monkeypatch.setenv("PATH", str(tmp_path))
    missing = r"writing the child's uid_map .* newuidmap, which is not installed \(the uidmap package\)"
    with no_side_effects():
        with pytest.raises(PermissionError, match=missing):
            portclone.spawn(["true"], uid_map=[(0, os.geteuid(), 1), (1, 200000, 10)])


def test_a_range_the_table_does_not_grant_names_the_file() -> None:
    if _privileged():
        pytest.skip("this caller has CAP_SETUID: it writes the maps itself (the unpriv setting runs this)")
    if shutil.which("newuidmap") is None:
        pytest.skip("no newuidmap here (apt install uidmap; .ci/run does)")
    ungranted = r"writing the child's uid_map .*/etc/subuid does not grant"
    with no_side_effects():
        with pytest.raises(PermissionError, match=ungranted):
            portclone.spawn(["true"], uid_map=[(0, os.geteuid(), 1), (1, 7, 10)])
    with pytest.raises(PermissionError, match=ungranted):
        portclone.check(portclone.CLONE_NEWUSER, uid_map=[(0, os.geteuid(), 1), (1, 7, 10)])


def test_our_own_id_alone_needs_no_helper() -> None:
    """The one line the kernel lets anyone write never goes through newuidmap."""
    own = f"0 {os.geteuid()} 1\n".encode()
    assert _subids.helper("uid", own) is None
