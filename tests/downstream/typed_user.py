"""A typed downstream module: what a library that depends on portclone writes.

The type env (tox.ini) checks it with ``mypy --strict`` and pyright against the installed
package, so portclone's annotations (py.typed) are what downstream users get: every name
below must be known and typed, none ``Any``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Mapping, Optional, Tuple

import portclone
from portclone import PIPE, Child, CloneFlags, PortcloneError, UnsupportedFlagError

NAMESPACES: CloneFlags = portclone.CLONE_NEWUTS | portclone.CLONE_NEWNS


def hostname_in_child(name: str) -> int:
    """Run a callable in a new UTS namespace; its exit status."""

    def child(new_name: str) -> int:
        import socket

        socket.sethostname(new_name)
        return 0

    handle: Child = portclone.clone(child, name, flags=portclone.CLONE_NEWUTS)
    return handle.wait(timeout=10.0)


def run(argv: list[str], env: Optional[Mapping[str, str]] = None) -> Tuple[bytes, int]:
    """spawn() with subprocess's env type and communicate() as subprocess's."""
    env_like_subprocess: Optional[Mapping[str, str]] = env if env is not None else dict(os.environ)
    child = portclone.spawn(argv, flags=NAMESPACES, env=env_like_subprocess, stdout=PIPE)
    out, _ = child.communicate(timeout=30)
    popen = subprocess.Popen(argv, env=env_like_subprocess, stdout=subprocess.PIPE)
    popen_out, _ = popen.communicate(timeout=30)
    assert out == popen_out
    return out, child.returncode if child.returncode is not None else -1


def supported(flags: int) -> bool:
    """check() as a capability probe."""
    try:
        portclone.check(flags)
    except UnsupportedFlagError as e:
        print(e.backend, [r.flags for r in e.refusals])
        return False
    except PortcloneError:
        return False
    return True


def backend_names() -> list[str]:
    return [name for name in portclone.available_backends() if name != "fork"]


def terminate(child: Child) -> Optional[int]:
    child.send_signal(signal.SIGTERM)
    return child.poll()
