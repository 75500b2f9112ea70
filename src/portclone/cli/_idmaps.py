"""unshare's id maps: the ranges its options name (``--map-users``, ``--map-auto``,
``--map-subids``) and their writing, directly as root and otherwise through newuidmap and
newgidmap (util-linux/util-linux:sys-utils/unshare.c for the semantics, subuid(5))."""

from __future__ import annotations

import os

from .._common import TYPE_CHECKING
from ._dropin import Failure, os_failure, unsigned

if TYPE_CHECKING:
    from typing import List, Tuple

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"


class Range:
    """``count`` ids from ``outer`` (outside) mapped to ``inner``; inner -1: "from 0"
    (--map-auto)."""

    __slots__ = ("count", "inner", "outer")

    def __init__(self, inner: int, outer: int, count: int) -> None:
        self.inner, self.outer, self.count = inner, outer, count


def subid_range(path: str, identity: bool) -> Range:
    """The caller's first range in /etc/subuid or /etc/subgid (subuid(5)): by user name or
    by uid.  ``identity``: mapped onto itself (--map-subids), else from 0 (--map-auto)."""
    uid = os.geteuid()
    try:
        import pwd

        names = {pwd.getpwuid(uid).pw_name, str(uid)}
    except (KeyError, ImportError):
        names = {str(uid)}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise Failure(f"cannot open {path}: {e.strerror} (the uidmap package's helpers read it)") from None
    for line in lines:
        parts = line.strip().split(":")
        if (
            len(parts) == 3
            and parts[0] in names
            and unsigned(parts[1]) is not None
            and unsigned(parts[2]) is not None
        ):
            start, count = int(parts[1].strip()), int(parts[2].strip())
            return Range(start if identity else -1, start, count)
    raise Failure(f'no line matching user "{sorted(names)[-1]}" in {path}')


def _kernel_ranges(path: str) -> List[Range]:
    """--map-users=all: every range of our own map, each onto itself."""
    with open(path) as f:
        return [Range(int(inner), int(inner), int(count)) for inner, _, count in (line.split() for line in f)]


def parse_range(text: str, kind: str, table: str) -> List[Range]:
    if text == "auto":
        return [subid_range(table, identity=False)]
    if text == "subids":
        return [subid_range(table, identity=True)]
    if text == "all":
        return _kernel_ranges(f"/proc/self/{kind}_map")
    for sep in (":", ","):  # inner:outer:count (2.39 on), outer,inner,count (2.38's)
        parts = text.split(sep)
        numbers = [unsigned(p) for p in parts]
        if len(parts) == 3 and all(n is not None and n < 2**32 for n in numbers):
            first, second, count = (int(n or 0) for n in numbers)
            if count == 0:  # the kernel and newuidmap refuse it; never dropped unsaid
                raise Failure(f"invalid mapping '{text}': a range of 0 ids")
            return [Range(first, second, count) if sep == ":" else Range(second, first, count)]
    raise Failure(f"invalid mapping '{text}'")


def write_file(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        raise os_failure(f"cannot open {path}", e) from None
    try:
        os.write(fd, text.encode())
    except OSError as e:
        raise os_failure(f"write failed {path}", e) from None
    finally:
        os.close(fd)


def ranges_with(ranges: List[Range], outer: int, inner: int) -> List[Range]:
    """The ranges with the single mapping ``inner`` <- ``outer`` (--map-user beside
    --map-users) put first, and those two ids cut out of the others; auto ranges start at
    inner 0."""
    out: List[Range] = []
    for r in ranges:
        start = 0 if r.inner == -1 else r.inner
        pieces = [(start, r.outer, r.count)]
        if inner != -1:
            pieces = _split(start, r.outer, r.count, outer, inner)
        out += [Range(i, o, c) for i, o, c in pieces if c > 0]
    if inner != -1:
        out.insert(0, Range(inner, outer, 1))
    return out


def _split(
    inner: int, outer: int, count: int, skip_outer: int, skip_inner: int
) -> List[Tuple[int, int, int]]:
    """One range without the outer id ``skip_outer`` and the inner id ``skip_inner``: the
    ids on each side keep their pairing, each piece as long as both sides allow."""
    pieces: List[Tuple[int, int, int]] = []
    i, o, left = inner, outer, count
    while left > 0:
        if o == skip_outer:
            o += 1
            left -= 1
            continue
        if i == skip_inner:
            i += 1
            left -= 1
            continue
        run = left
        if o < skip_outer:
            run = min(run, skip_outer - o)
        if i < skip_inner:
            run = min(run, skip_inner - i)
        pieces.append((i, o, run))
        i, o, left = i + run, o + run, left - run
    return pieces


def proc_dir_of(pidfd: int) -> str:
    """/proc/N of the process behind ``pidfd``, N as the mounted /proc numbers it."""
    from .._procns import proc_pid

    n = proc_pid(pidfd)
    if n <= 0:
        raise Failure("cannot find our own /proc directory (this /proc does not show us)")
    return f"/proc/{n}"


def map_ranges_from_child(parent_pidfd: int, users: List[Range], groups: List[Range]) -> None:
    """In the helper: write the parent's maps, directly as root, else through newuidmap and
    newgidmap (setuid helpers of the uidmap package, checking /etc/subuid and /etc/subgid)."""
    directory = proc_dir_of(parent_pidfd)
    line = "".join
    if os.geteuid() == 0:
        if users:
            write_file(f"{directory}/uid_map", line(f"{m.inner} {m.outer} {m.count}\n" for m in users))
        if groups:
            write_file(f"{directory}/gid_map", line(f"{m.inner} {m.outer} {m.count}\n" for m in groups))
        return
    for tool, ranges in (("newuidmap", users), ("newgidmap", groups)):
        if not ranges:
            continue
        import shutil

        path = shutil.which(tool)
        if path is None:
            raise Failure(
                f"{tool} not found: install the uidmap package "
                "(its helpers map the ids /etc/subuid and /etc/subgid grant)"
            )
        argv = [path, directory.rsplit("/", 1)[1]]
        for m in ranges:
            argv += [str(m.inner), str(m.outer), str(m.count)]
        pid = os.fork()
        if pid == 0:
            try:
                os.execv(path, argv)
            finally:
                os._exit(127)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            raise Failure("")  # the helper said why, on stderr
