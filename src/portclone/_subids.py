"""Id maps beyond the caller's own ids, for a caller without privilege: newuidmap.

Linux lets a process without CAP_SETUID write one line into a child's ``uid_map``: its
own effective uid, once (user_namespaces(7); CAP_SETGID and the effective gid for
``gid_map``).  Anything more is the work of shadow's setuid helpers newuidmap and
newgidmap (Debian's ``uidmap`` package), which grant what ``/etc/subuid`` and
``/etc/subgid`` list for the caller, as unshare(1)'s ``--map-users`` uses them.

:func:`helper` decides, before anything is created: None where the caller writes the map
itself, else the helper's words, once the helper is found and every range is granted;
PermissionError naming the package or the file otherwise.
"""

from __future__ import annotations

import errno
import os

from ._common import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import List, Optional, Set, Tuple

__all__ = ["helper"]

#: CAP_SETUID and CAP_SETGID (linux/capability.h), by map
_CAP = {"uid": 7, "gid": 6}
_TOOL = {"uid": "newuidmap", "gid": "newgidmap"}
_TABLE = {"uid": "/etc/subuid", "gid": "/etc/subgid"}


def _has_cap(bit: int) -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0  # no /proc to read: root is taken to have its capabilities


def _lines(text: bytes) -> List[Tuple[int, int, int]]:
    return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in text.splitlines())]


def _own_names(kind: str) -> Set[str]:
    """The caller's names in the table: its user's name and its uid (subuid(5) lists
    either; both files are keyed by the user, gids included)."""
    uid = os.getuid()
    names = {str(uid)}
    try:
        import pwd

        names.add(pwd.getpwuid(uid).pw_name)
    except (ImportError, KeyError):
        pass
    return names


def _granted(kind: str) -> List[Tuple[int, int]]:
    path = _TABLE[kind]
    try:
        with open(path) as f:
            rows = f.read().splitlines()
    except OSError as e:
        raise PermissionError(
            errno.EPERM,
            f"writing the child's {kind}_map needs privilege over ids beyond this process's "
            f"own, or {path}, which {_TOOL[kind]} reads and which cannot be read ({e.strerror})",
        ) from None
    names = _own_names(kind)
    granted = []
    for row in rows:
        fields = row.strip().split(":")
        if len(fields) == 3 and fields[0] in names and fields[1].isdecimal() and fields[2].isdecimal():
            granted.append((int(fields[1]), int(fields[1]) + int(fields[2])))
    return granted


def _which(name: str) -> Optional[str]:
    """``name`` on PATH, as shutil.which finds it (not imported: it is slow to import, and
    a later import can fail after a chroot or a privilege drop)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def helper(kind: str, text: Optional[bytes]) -> Optional[bytes]:
    """``path\\0inside\\0outside\\0count...`` for the ``kind`` ("uid" or "gid") map
    ``text`` where the caller may not write it itself; None where it may."""
    if text is None or _has_cap(_CAP[kind]):
        return None
    own = os.geteuid() if kind == "uid" else os.getegid()
    lines = _lines(text)
    if len(lines) == 1 and lines[0][1:] == (own, 1):
        return None  # the one line the kernel lets anyone write
    path = _which(_TOOL[kind])
    if path is None:
        raise PermissionError(
            errno.EPERM,
            f"writing the child's {kind}_map needs privilege (CAP_SET{kind[0].upper()}ID) over "
            f"ids beyond this process's own, or {_TOOL[kind]}, which is not installed (the "
            "uidmap package)",
        )
    granted = _granted(kind)
    for _, outside, count in lines:
        if count == 1 and outside == own:
            continue
        if not any(lo <= outside and outside + count <= hi for lo, hi in granted):
            raise PermissionError(
                errno.EPERM,
                f"writing the child's {kind}_map needs privilege over ids "
                f"{outside}-{outside + count - 1}, which {_TABLE[kind]} does not grant this "
                f"user either ({_TOOL[kind]} maps only what it lists)",
            )
    words = [path] + [str(n) for line in lines for n in line]
    return b"\0".join(os.fsencode(w) for w in words) + b"\0"
