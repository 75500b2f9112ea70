"""Bad requests are refused before anything exists, with every reason at once."""

from __future__ import annotations

import errno
import os
import signal
from typing import Iterator

import pytest
from conftest import never_runs, no_side_effects

import portclone
from portclone import CloneFlags as F
from portclone import InvalidFlagsError, UnsupportedFlagError
from portclone._validate import exit_signal_hazard


@pytest.mark.parametrize(
    "flags, exit_signal, message",
    [
        (F.CLONE_SIGHAND, signal.SIGCHLD, "CLONE_SIGHAND needs CLONE_VM"),
        (F.CLONE_THREAD | F.CLONE_SIGHAND | F.CLONE_VM, 0, None),  # valid, but unsupported
        (F.CLONE_NEWNS | F.CLONE_FS, signal.SIGCHLD, "mount namespace"),
        (F.CLONE_NEWUSER | F.CLONE_FS, signal.SIGCHLD, "user namespace"),
        (F.CLONE_NEWIPC | F.CLONE_SYSVSEM, signal.SIGCHLD, "IPC namespace"),
        (F.CLONE_PARENT, signal.SIGCHLD, "exit_signal=0"),
        (F.CLONE_NEWPID | 0x11, signal.SIGCHLD, "exit signal, not a flag"),
        (0, 65, "not a signal number"),
        (0, -1, "not a signal number"),
        (F.CLONE_INTO_CGROUP, signal.SIGCHLD, "needs cgroup="),
    ],
)
def test_invalid_everywhere(flags: int, exit_signal: int, message: str) -> None:
    with no_side_effects():
        if message is None:
            with pytest.raises(UnsupportedFlagError):
                portclone.clone(never_runs, flags=flags, exit_signal=exit_signal)
            return
        with pytest.raises(InvalidFlagsError, match=message) as info:
            portclone.clone(never_runs, flags=flags, exit_signal=exit_signal)
        with pytest.raises(InvalidFlagsError, match=message):
            portclone.check(flags, exit_signal=exit_signal)
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, portclone.PortcloneError)
    assert error.backend == portclone.current_backend().name
    assert error.backend in str(error)


def test_unsupported_lists_every_flag_with_its_reason() -> None:
    flags = F.CLONE_VM | F.CLONE_SETTLS | F.CLONE_CHILD_SETTID | F.CLONE_PARENT_SETTID
    with no_side_effects(), pytest.raises(UnsupportedFlagError) as info:
        portclone.clone(never_runs, flags=flags)
    error = info.value
    assert isinstance(error, NotImplementedError)
    assert error.flags == flags
    text = str(error)
    for name in ("CLONE_VM", "CLONE_SETTLS", "CLONE_CHILD_SETTID", "CLONE_PARENT_SETTID"):
        assert f"  {name}: " in text
    backend = portclone.current_backend()
    for flag in (F.CLONE_VM, F.CLONE_SETTLS):  # each with its own backend's reason
        assert str(backend.why_refused(flag)) in text
    assert "supported here instead:" in text
    assert error.supported == portclone.current_backend().supported_flags
    assert set(error.reasons) == {"CLONE_VM", "CLONE_SETTLS", "CLONE_CHILD_SETTID", "CLONE_PARENT_SETTID"}


def test_unknown_bits_are_refused_not_passed_on() -> None:
    with no_side_effects(), pytest.raises(UnsupportedFlagError, match="not a clone flag") as info:
        portclone.clone(never_runs, flags=1 << 50)
    assert info.value.flags == 1 << 50


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"flags": "CLONE_NEWPID"}, TypeError),
        ({"flags": 1.5}, TypeError),
        ({"flags": True}, TypeError),
        ({"flags": -1}, InvalidFlagsError),
        ({"flags": 1 << 64}, InvalidFlagsError),
        ({"exit_signal": "SIGCHLD"}, TypeError),
        ({"set_tid": "12"}, TypeError),
        ({"set_tid": [1.5]}, TypeError),
        ({"set_tid": []}, InvalidFlagsError),
        ({"set_tid": [0]}, InvalidFlagsError),
        ({"set_tid": list(range(1, 40))}, InvalidFlagsError),
        ({"set_tid": [1 << 40]}, InvalidFlagsError),
        ({"set_tid": [5, 5]}, InvalidFlagsError),  # deeper than our PID namespace nesting
        ({"cgroup": 1.0}, TypeError),
        ({"cgroup": -3}, InvalidFlagsError),
        ({"cgroup": "/nonexistent/cgroup"}, FileNotFoundError),
        ({"cgroup": "/etc/hostname"}, InvalidFlagsError),
        ({"cgroup": "/tmp"}, InvalidFlagsError),
        ({"cgroup": "bad\0path"}, (InvalidFlagsError, ValueError)),
    ],
)
def test_bad_arguments(kwargs: dict, exc: type) -> None:  # type: ignore[type-arg]
    with no_side_effects(), pytest.raises(exc):
        portclone.clone(never_runs, **kwargs)


def test_closed_cgroup_fd_is_a_clear_oserror() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with no_side_effects(), pytest.raises(OSError, match=f"cgroup={r}") as info:
        portclone.clone(never_runs, cgroup=r)
    assert info.value.errno == errno.EBADF


def test_not_callable() -> None:
    with no_side_effects(), pytest.raises(TypeError, match="callable"):
        portclone.clone(42)  # type: ignore[arg-type]


def test_check_returns_effective_flags() -> None:
    assert portclone.check(0) == 0
    assert isinstance(portclone.check(0), F)


def test_newpid_set_tid_must_start_with_1() -> None:
    with pytest.raises(InvalidFlagsError, match=r"set_tid\[0\] must be 1"):
        portclone.check(F.CLONE_NEWPID, set_tid=[5, 6000])


def test_python_s_own_sigint_handler_is_a_hazard_as_an_exit_signal() -> None:
    """SIGINT's handler is Python's default_int_handler unless changed: it raises
    KeyboardInterrupt in the caller when the child exits, so it is refused like a default
    action; another handler is accepted."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert exit_signal_hazard(signal.SIGINT) is not None
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        assert exit_signal_hazard(signal.SIGINT) is None
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def sigusr1_default() -> Iterator[None]:
    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"flags": F.CLONE_VM | F.CLONE_NEWNS | F.CLONE_FS}, {F.CLONE_VM, F.CLONE_NEWNS | F.CLONE_FS}),
        ({"flags": F.CLONE_VM, "exit_signal": signal.SIGUSR1}, {F.CLONE_VM, "exit_signal"}),
        ({"flags": F.CLONE_VM | 1 << 40, "exit_signal": 99}, {F.CLONE_VM, 1 << 40, "exit_signal"}),
        ({"flags": F.CLONE_VM | 0x11}, {F.CLONE_VM, "flags"}),
        ({"flags": 1 << 64, "exit_signal": 99, "set_tid": [0]}, {"flags", "exit_signal", "set_tid"}),
    ],
)
def test_one_error_names_every_refusal_of_a_request(
    portclone_backend: portclone.Backend,
    sigusr1_default: object,
    kwargs: dict,
    named: set,  # type: ignore[type-arg]
) -> None:
    """What the kernel refuses everywhere, what this backend cannot honour, an unknown bit
    and a dangerous exit signal are all named by the one error, whichever stage finds
    them; check() says the same as clone().  (A backend that cannot send an exit signal
    says so, and the error is UnsupportedFlagError when nothing is invalid.)"""
    if F.CLONE_VM in named and portclone_backend.why_refused(F.CLONE_VM) is None:
        named = named - {F.CLONE_VM}
    errors = []
    for call in (lambda: portclone.clone(never_runs, **kwargs), lambda: portclone.check(**kwargs)):
        with no_side_effects(), pytest.raises((InvalidFlagsError, UnsupportedFlagError)) as info:
            call()
        errors.append(info.value)
    for error in errors:
        for what in named:
            if isinstance(what, str):
                assert what in error.reasons, (what, error.reasons)
            else:
                assert error.flags & what == what, (F(what), error.flags)
    assert [r.reason for r in errors[0].refusals] == [r.reason for r in errors[1].refusals]


def test_options_unsupported_and_invalid_together_on_the_fork_backend() -> None:
    """The fork backend cannot honour hostname= or map_root=; with an invalid flag pair
    as well, the one InvalidFlagsError names all three."""
    fork = portclone._registry.get_backend("fork")
    from portclone._check import build
    from portclone._setup import parse_options

    options = parse_options(hostname="x", map_root=True)
    with no_side_effects(), pytest.raises(InvalidFlagsError) as info:
        build(fork, F.CLONE_NEWNS | F.CLONE_FS, options=options)
    assert {"hostname", "map_root"} <= set(info.value.reasons), info.value.reasons
    assert any("CLONE_FS" in label for label in info.value.reasons), info.value.reasons


def test_a_refusal_that_depends_on_process_state_is_asked_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulation of NetBSD (Linux has no close-on-fork descriptors): its CLONE_FILES
    refusal depends on the descriptors open now, so a request that passed once is not
    remembered and is refused when such a descriptor appears."""
    from portclone.backends import netbsd

    if "netbsd" not in portclone.available_backends():
        pytest.skip("the netbsd backend is not usable here (no libc clone)")
    backend = portclone._registry.get_backend("netbsd")
    held: tuple = ()  # type: ignore[type-arg]
    monkeypatch.setattr(netbsd, "close_on_fork_fds", lambda: held)
    monkeypatch.setattr(type(backend), "state_dependent", int(F.CLONE_FILES))
    backend._checked.clear()
    from portclone._check import build

    flags = F.CLONE_FILES | F.CLONE_VM | F.CLONE_VFORK
    build(backend, flags, exec_child=True)
    held = (7,)
    with pytest.raises(InvalidFlagsError, match="close-on-fork"):
        build(backend, flags, exec_child=True)
