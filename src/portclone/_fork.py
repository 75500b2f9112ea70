"""The fork fallback: ``os.fork`` everywhere portclone has nothing better.

This is the exact code that runs on macOS, FreeBSD, OpenBSD and on Linux when
the native extension is missing.  It honours no sharing or namespace flag:
each refusal says what would be needed instead.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, Optional, Tuple

from ._backend import Backend, native_status
from ._child import Child, flush_std_streams, run_child
from ._flags import SIGCHLD, CloneFlags
from ._validate import Request

__all__ = ["ForkBackend"]

_VFORK = 0x4000


class ForkBackend(Backend):
    name = "fork"
    # os.fork warns by itself from Python 3.12 on
    warns_on_threads = sys.version_info < (3, 12)

    def _why_not_native(self) -> str:
        if not sys.platform.startswith("linux"):
            return ""
        _, why = native_status()
        return f" ({why})" if why else ""

    def flag_refusal(self, flag: CloneFlags) -> Optional[str]:
        reason = super().flag_refusal(flag)
        if reason is None:
            return None
        return f"fork fallback on {sys.platform}: {reason}{self._why_not_native()}"

    def refusals(self, request: Request) -> Dict[str, str]:
        found = super().refusals(request)
        where = f"fork fallback on {sys.platform}"
        if request.exit_signal != SIGCHLD:
            found["exit_signal"] = (f"{where}: os.fork children always signal SIGCHLD; another "
                                    f"exit signal needs the linux backend{self._why_not_native()}")
        if request.set_tid is not None:
            found["set_tid"] = (f"{where}: os.fork cannot choose the child's pid; set_tid needs "
                                f"the linux backend{self._why_not_native()}")
        return found

    def launch(self, request: Request, fn: Callable[..., object],
               args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Child:
        child = Child(0, None, request.flags, request.exit_signal, self.name, "fork", True)
        vfork = bool(request.value & _VFORK)
        if vfork:
            # CLONE_VFORK, emulated: the child holds the write end of a close-on-exec pipe
            # (os.pipe's fds are not inheritable); the parent reads until it closes,
            # which happens when the child exits or execs.
            done_r, done_w = os.pipe()
        flush_std_streams()
        try:
            pid = os.fork()
        except BaseException:
            if vfork:
                os.close(done_r)
                os.close(done_w)
            raise
        if pid == 0:
            if vfork:
                os.close(done_r)
            run_child(fn, args, kwargs)
        child.pid = pid
        if vfork:
            os.close(done_w)
            try:
                while os.read(done_r, 1):  # EINTR is retried (PEP 475)
                    pass
            finally:
                os.close(done_r)
        return child

    def details(self) -> Dict[str, Any]:
        _, why = native_status()
        return {"why_fork": why or f"no clone backend for {sys.platform}"}
