"""The Linux calls the drop-in commands make on themselves, which the os module lacks
before Python 3.12 (``unshare``, ``setns``) or at all (``mount``, ``prctl``, capabilities,
``pidfd_getfd``).  They go through the C library with ctypes, loaded on first use, so
only ``portclone unshare`` and ``portclone nsenter`` pay for it; each raises OSError with
the C library's errno, as the os module's functions do.
"""

from __future__ import annotations

import ctypes
import os

from .._common import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Optional

MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_BIND, MS_REC = 0x1000, 0x4000
MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 18, 1 << 19, 1 << 20
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 1, 47, 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

#: pidfd_getfd(2), Linux 5.6: one number on every architecture but alpha
#: (torvalds/linux:include/uapi/asm-generic/unistd.h, arch/*/syscall.tbl).
_SYS_PIDFD_GETFD = 438

_libc: Optional[Any] = None


def _c() -> Any:
    global _libc
    if _libc is None:
        # the symbols already loaded (libc's among them), never find_library: it runs
        # ldconfig -p, a child process and fds, before any namespace is entered
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str, filename: Optional[str] = None) -> int:
    if result == -1:
        number = ctypes.get_errno()
        raise (
            OSError(number, os.strerror(number), filename)
            if filename
            else OSError(number, os.strerror(number))
        )
    return result


def unshare(flags: int) -> None:
    if hasattr(os, "unshare"):
        os.unshare(flags)
    else:
        _check(_c().unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
    else:
        _check(_c().setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(
    source: Optional[str], target: str, fstype: Optional[str], flags: int, data: Optional[str] = None
) -> None:
    def b(text: Optional[str]) -> Optional[bytes]:
        return None if text is None else os.fsencode(text)

    result = _c().mount(b(source), b(target), b(fstype), ctypes.c_ulong(flags), b(data))
    _check(result, "mount", target)


def umount2(target: str, flags: int) -> None:
    _check(_c().umount2(os.fsencode(target), ctypes.c_int(flags)), "umount2", target)


def set_pdeathsig(sig: int) -> None:
    _check(_c().prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(sig), 0, 0, 0), "prctl")


def pidfd_getfd(pidfd: int, fd: int) -> int:
    call = _c().syscall
    return _check(
        call(ctypes.c_long(_SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0)), ""
    )


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def permitted_to_ambient() -> None:
    """Raise every permitted capability into the ambient set, so that it survives the exec
    of a program as a user other than root in the namespace (capabilities(7))."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_c().capget(ctypes.byref(header), data), "capget")
    permitted = data[0].permitted | (data[1].permitted << 32)
    for i in range(2):
        data[i].inheritable = data[i].permitted
    _check(_c().capset(ctypes.byref(header), data), "capset")
    for cap in range(64):
        if permitted >> cap & 1:
            _check(
                _c().prctl(
                    ctypes.c_int(PR_CAP_AMBIENT),
                    ctypes.c_ulong(PR_CAP_AMBIENT_RAISE),
                    ctypes.c_ulong(cap),
                    0,
                    0,
                ),
                "prctl",
            )
