"""Make clone3 fail with a chosen errno in *this* process, as container runtimes do.

A SIMULATION of a kernel without clone3 (ENOSYS) or a seccomp profile that
refuses it (EPERM), since no kernel older than 5.3 can be had here.  Seccomp
filters are permanent and inherited: use this only in a throwaway subprocess.
"""

from __future__ import annotations

import ctypes
import os
import sys

SYS_CLONE3 = 435  # the same on every architecture
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


SYS_CLOSE_RANGE = 436  # the same on every architecture
BPF_JSET_K = 0x45
#: seccomp_data: nr, arch, instruction_pointer, then args[6] of 8 bytes each
_ARG2_LOW = 16 + 2 * 8 + (4 if sys.byteorder == "big" else 0)


def refuse_clone3(errno_value: int) -> None:
    _install(
        SockFilter(BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        SockFilter(BPF_JEQ_K, 0, 1, SYS_CLONE3),
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno_value),
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    )


def refuse_close_range(errno_value: int, only_flags: int = 0) -> None:
    """close_range fails with ``errno_value``: always, or (``only_flags``) when its flags
    have one of those bits, as CLOSE_RANGE_CLOEXEC does before Linux 5.11 (EINVAL).  A
    SIMULATION of Linux 5.9/5.10 (EINVAL for the flag) or older (ENOSYS)."""
    _install(
        SockFilter(BPF_LD_W_ABS, 0, 0, 0),
        SockFilter(BPF_JEQ_K, 0, 3, SYS_CLOSE_RANGE),
        SockFilter(BPF_LD_W_ABS, 0, 0, _ARG2_LOW),
        SockFilter(BPF_JSET_K, 0, 1, only_flags) if only_flags else SockFilter(BPF_JEQ_K, 0, 0, 0),
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno_value),
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    )


def _install(*instructions: SockFilter) -> None:
    program = (SockFilter * len(instructions))(*instructions)
    fprog = SockFprog(len(program), program)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
