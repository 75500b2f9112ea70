"""Fuzz the argument handling of portclone's C extension with atheris.

    python tests/fuzz_native.py -runs=50000      (or -max_total_time=60)

Every entry point of ``portclone._native`` gets arguments built from the
fuzzer's bytes (``spawn`` takes them as keywords): mostly well-typed values from the edges of each
parameter's range (so the deeper checks are reached), otherwise anything
(None, floats, str, bytes with NULs, huge ints, nested tuples, lists...).
The contract: an exception or a result, never a crash, and no child left
behind.  Calls that are valid really run: a fork-like child exits at once,
an exec child runs a program that does not exist or /bin/true.

What the harness leaves out, so that a valid call cannot hurt the run:
exit signals that stop or kill the parent (SIGKILL, SIGSTOP) or that
libFuzzer handles itself (SIGUSR1, SIGINT, SIGSEGV...),
CLONE_PARENT (the child would become the test runner's), and program paths
other than the two above.  The C is not built with libFuzzer's
instrumentation: coverage guides the fuzzer through the harness only.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable, Dict, List

import atheris

with atheris.instrument_imports():
    from portclone import _native

F_PIDFD, F_VFORK, F_VM, F_SIGHAND, F_THREAD = 0x1000, 0x4000, 0x100, 0x800, 0x10000
F_SETTLS, F_NEWUSER, F_NEWPID, F_CLEAR_SIGHAND = 0x80000, 0x10000000, 0x20000000, 1 << 32

INTS = [
    0,
    1,
    -1,
    2,
    3,
    17,
    64,
    65,
    255,
    256,
    1 << 31,
    (1 << 31) - 1,
    -(1 << 31),
    1 << 32,
    (1 << 63) - 1,
    1 << 63,
    -(1 << 63),
    (1 << 64) - 1,
    1 << 64,
    10**30,
    -(10**30),
]
FLAGS = [
    0,
    F_PIDFD,
    F_VFORK,
    F_VM,
    F_VM | F_VFORK,
    F_SIGHAND | F_VM,
    F_THREAD | F_SIGHAND | F_VM,
    F_SETTLS,
    F_NEWUSER,
    F_NEWPID | F_NEWUSER,
    F_CLEAR_SIGHAND,
    0x11,
    1 << 40,
    (1 << 64) - 1,
    1 << 64,
    -1,
]
SIGNALS = [0, int(signal.SIGCHLD), int(signal.SIGWINCH), 64, 65, 255, 256, -1, 1 << 31]
PATHS = [b"/nonexistent/portclone-fuzz", b"/bin/true", b"", b"/bin/\0true", b"x" * 5000]
BYTES = [b"", b"\0", b"a\0b", b"0 0 1\n", b"x" * 70000, b"/", b"HOME=/\0"]
MODES = [0, 1, 2, 3, -1, 1 << 40]

# A bug must not reach the machine: the run gets UTS and mount namespaces of its own
# (root only; elsewhere the C's guards are all there is), and every call is checked for
# changes to the hostname, the cwd and the umask, which would be a crash.
if os.geteuid() == 0:
    import ctypes

    if ctypes.CDLL(None, use_errno=True).unshare(0x04000000 | 0x00020000) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUTS|CLONE_NEWNS)")


def invariants() -> tuple:  # type: ignore[type-arg]
    mask = os.umask(0o22)
    os.umask(mask)
    return os.uname().nodename, os.getcwd(), mask


# the exit signals a valid call may deliver must not stop or kill this process
for _sig in signal.valid_signals():
    if _sig not in (signal.SIGKILL, signal.SIGSTOP):
        try:
            signal.signal(_sig, signal.SIG_IGN)
        except (OSError, ValueError):
            pass
# and libFuzzer's own handlers (it stops or reports a crash on these), and the signals
# Python cannot set (glibc keeps 32 and 33 for itself)
BAD_SIGNALS = {
    int(getattr(signal, name))
    for name in (
        "SIGKILL",
        "SIGSTOP",
        "SIGINT",
        "SIGTERM",
        "SIGUSR1",
        "SIGUSR2",
        "SIGSEGV",
        "SIGBUS",
        "SIGABRT",
        "SIGILL",
        "SIGFPE",
        "SIGXFSZ",
        "SIGALRM",
    )
}
BAD_SIGNALS |= set(range(1, signal.NSIG)) - {int(s) for s in signal.valid_signals()}


@atheris.instrument_func
def anything(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    kind = fdp.ConsumeIntInRange(0, 11)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.PickValueInList(INTS)
    if kind == 2:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 12))
    if kind == 3:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 32))
    if kind == 5:
        return fdp.ConsumeFloat()
    if kind in (6, 7) and depth < 3:
        items = tuple(anything(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 5)))
        return items if kind == 6 else list(items)
    if kind == 8:
        return fdp.ConsumeBool()
    if kind == 9:
        return fdp.PickValueInList(BYTES)
    if kind == 10:
        return object()
    return fdp.PickValueInList(PATHS)


def pick(fdp: atheris.FuzzedDataProvider, typed: Callable[[], Any]) -> Any:
    """A well-typed value three times in four, anything otherwise."""
    return typed() if fdp.ConsumeIntInRange(0, 3) else anything(fdp)


def tuple_of(fdp: atheris.FuzzedDataProvider, item: Callable[[], Any], most: int = 4) -> Any:
    return tuple(item() for _ in range(fdp.ConsumeIntInRange(0, most)))


def common(fdp: atheris.FuzzedDataProvider) -> List[Any]:
    """mode, flags, exit_signal, cgroup_fd, set_tid, legacy_ok: clone() and spawn() share them."""
    return [
        pick(fdp, lambda: fdp.PickValueInList(MODES)),
        pick(fdp, lambda: fdp.PickValueInList(FLAGS)),
        pick(fdp, lambda: fdp.PickValueInList(SIGNALS)),
        pick(fdp, lambda: fdp.PickValueInList([-1, -2, 0, 1, 999, 1 << 31])),
        pick(
            fdp,
            lambda: (
                None
                if fdp.ConsumeBool()
                else tuple_of(fdp, lambda: fdp.PickValueInList([*INTS, os.getpid(), 30000]), 40)
            ),
        ),
        pick(fdp, fdp.ConsumeBool),
    ]


COMMON_NAMES = ("mode", "flags", "exit_signal", "cgroup_fd", "set_tid", "legacy_ok")


def spawn_args(fdp: atheris.FuzzedDataProvider) -> Dict[str, Any]:
    def strings() -> Any:
        return tuple_of(fdp, lambda: fdp.PickValueInList(PATHS + BYTES))

    return {
        **dict(zip(COMMON_NAMES, common(fdp))),
        "paths": pick(fdp, strings),
        "argv": pick(fdp, strings),
        "envp": pick(fdp, lambda: None if fdp.ConsumeBool() else strings()),
        "cwd": pick(fdp, lambda: None if fdp.ConsumeBool() else fdp.PickValueInList(PATHS + BYTES)),
        "fds": pick(fdp, lambda: tuple_of(fdp, lambda: fdp.PickValueInList([-1, 0, 1, 2, 999]), 4)),
        "keep": pick(fdp, lambda: tuple_of(fdp, lambda: fdp.PickValueInList([*INTS, 0, 1, 2]), 6)),
        "close_fds": pick(fdp, fdp.ConsumeBool),
        "maps": pick(
            fdp,
            lambda: (
                None
                if fdp.ConsumeBool()
                else (
                    fdp.PickValueInList([None, *BYTES]),
                    fdp.PickValueInList([None, *BYTES]),
                    fdp.ConsumeBool(),
                )
            ),
        ),
        "hostname": pick(fdp, lambda: None if fdp.ConsumeBool() else fdp.PickValueInList(BYTES)),
        "restore_signals": pick(fdp, fdp.ConsumeBool),
    }


def unsafe(flags: Any, sig: Any) -> bool:
    """Valid calls the harness must not make (see the module docstring).  Legacy clone
    takes the exit signal in the flags' low byte: that counts too."""
    for value in (sig, flags & 0xFF if isinstance(flags, int) else None):
        if isinstance(value, int) and value in BAD_SIGNALS:
            return True
    return isinstance(flags, int) and bool(flags & 0x8000)  # CLONE_PARENT


def reap(pid: int, pidfd: int) -> None:
    if pidfd >= 0:
        os.close(pidfd)
    while True:
        try:
            os.waitpid(pid, os.__dict__.get("WALL", 0x40000000))
            return
        except ChildProcessError:
            return
        except InterruptedError:
            continue


@atheris.instrument_func
def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 5)
    kwargs: Dict[str, Any] = {}
    args: List[Any] = []
    if which <= 1:
        name, args = "clone", common(fdp)
    elif which <= 3:
        name, kwargs = "spawn", spawn_args(fdp)
    elif which == 4:
        name, args = "libc_clone", [pick(fdp, lambda: fdp.PickValueInList(FLAGS))]
    else:
        name = fdp.PickValueInList(["probe_clone3", "thread_count", "tid_offset"])
        args = [anything(fdp) for _ in range(fdp.ConsumeIntInRange(0, 2))]
    if name == "clone" and len(args) > 2 and unsafe(args[1], args[2]):
        return
    if name == "spawn" and unsafe(kwargs["flags"], kwargs["exit_signal"]):
        return
    if name == "libc_clone" and args and unsafe(args[0], None):
        return
    # the wrong arguments: too few, or spawn's keywords passed by position (the data's
    # end, which reads as zeros, makes well-formed calls)
    if fdp.ConsumeIntInRange(0, 15) == 15:
        args = args[: fdp.ConsumeIntInRange(0, len(args))]
        for key in fdp.PickValueInList([[], [*kwargs][-1:], [*kwargs][:3]]):
            del kwargs[key]
        if kwargs and fdp.ConsumeIntInRange(0, 3) == 3:
            args, kwargs = [*kwargs.values()], {}
    out = _Out()
    if name in ("clone", "libc_clone"):
        args = [out, _exit_zero, *args]  # the child runs _exit_zero and _exits in C
    elif name == "spawn":
        args = [out, *args]
    before = invariants()
    try:
        result = getattr(_native, name)(*args, **kwargs)
    except (TypeError, ValueError, OverflowError, OSError, SystemError) as e:
        if isinstance(e, SystemError):
            raise  # a C function that returned NULL without an exception: a bug
        return
    finally:
        after = invariants()
        if after != before:
            raise AssertionError(f"{name}{tuple(args)!r} {kwargs!r} changed the caller: {before} -> {after}")
    if name in ("clone", "spawn", "libc_clone"):
        assert result is None and out.pid > 0, (name, result)
        reap(out.pid, -1)  # the pidfd's owner closes it with ``out``


class _Out:
    """Where the native calls put the child's pid, pidfd, its owner and syscall (as on a
    Child)."""

    __slots__ = ("_pidfd_owner", "pid", "pidfd", "syscall")

    def __init__(self) -> None:
        self.pid, self.pidfd, self.syscall, self._pidfd_owner = 0, None, "", None


def _exit_zero() -> int:
    return 0


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
