"""The base class of the backends: what a backend decides, and what it launches.

A backend decides what it can honour (``refusals``, one stage of portclone._check) and
launches (``launch`` for a Python child, ``spawn`` for a program); the checking, the
child's life and the Child handle are shared.  The backends live in portclone.backends, one module each, and
portclone._registry imports them lazily (as multiprocessing does its start methods).
"""

from __future__ import annotations

import os

from ._child import Child
from ._common import PLATFORM, TYPE_CHECKING
from ._errors import Refusal, Stage, translate
from ._flags import EXEC_SIGNAL_REASON, INFO, OPTION, SIGCHLD, TABLE, CloneFlags, bits, describe

if TYPE_CHECKING:
    from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

    from ._plan import SpawnPlan
    from ._setup import ChildSetup
    from ._validate import Request

__all__ = ["Backend"]

_PARENT = int(CloneFlags.CLONE_PARENT)


class Backend:
    """One way of creating children.  Subclasses set ``name``, ``launch`` and ``spawn``."""

    name: ClassVar[str] = ""
    #: whether clone() must emit the multi-threaded DeprecationWarning itself
    warns_on_threads: ClassVar[bool] = True
    #: flags whose refusal depends on the process's state, not on the request alone:
    #: a request with one of them is checked on every call, never remembered
    state_dependent: ClassVar[int] = 0
    #: why spawn() cannot start a program whose argv[0] is empty here, or None when it can
    empty_argv0: ClassVar[Optional[str]] = None

    @classmethod
    def why_unusable(cls) -> Optional[str]:
        """Why this backend cannot work in this process, or None."""
        if not hasattr(os, "fork"):
            return (
                f"{PLATFORM} has neither fork nor clone; use subprocess or "
                "multiprocessing's spawn start method"
            )
        return None

    def __init__(self) -> None:
        # checked requests without options, cgroup or set_tid, by (flags, exit_signal,
        # exec_child, conditions): portclone._check.build remembers them.  Page faults are
        # what clone() costs beyond fork: while a fork-like child shares the parent's pages,
        # each page the parent writes is copied first (a fault), and reference counting
        # makes reads writes.  So the parent's path around a fork touches little: requests
        # are remembered, and the Child handle is small and built beforehand
        # (python bench/bench_clone.py --breakdown).
        self._checked: Dict[Tuple[object, ...], Request] = {}

    def why_refused(self, flag: CloneFlags, exec_child: bool = False) -> Optional[str]:
        """Why this backend refuses ``flag`` for a Python child (or an exec child), or None."""
        info = INFO.get(int(flag))
        if info is None:
            return "not a clone flag portclone knows"
        return info.reason(self.name, exec_child)

    def refusals(self, request: Request, exec_child: bool = False) -> List[Refusal]:
        """Everything in ``request`` this backend (or its kernel) cannot honour."""
        found = []
        if (
            exec_child
            and request.exit_signal != SIGCHLD
            and not (request.exit_signal == 0 and request.flags & _PARENT)
        ):  # PARENT needs 0
            found.append(Refusal(EXEC_SIGNAL_REASON, field="exit_signal"))
        refused_options = set()
        for name in sorted(request.options):
            reason = self.why_refused_option(name)
            if reason is not None:
                refused_options.add(name)
                found.append(Refusal(reason, OPTION[name].implies, name))
        for bit in bits(int(request.flags)):
            by = [n for n in sorted(request.options) if OPTION[n].implies & bit]
            if bit & request.implied and set(by) <= refused_options:
                continue  # said above, under the option's name
            reason = self.why_refused(CloneFlags(bit), exec_child)
            if reason is not None:
                label = f"{by[0]}= (implies {describe(bit)})" if bit & request.implied else ""
                found.append(Refusal(reason, CloneFlags(bit), label))
        return found

    def why_refused_option(self, name: str) -> Optional[str]:
        """Why this backend refuses the setup option ``name``, or None."""
        return OPTION[name].reason(self.name)

    def _supported(self, exec_child: bool) -> CloneFlags:
        value = CloneFlags(0)
        for info in TABLE:
            if self.why_refused(info.flag, exec_child) is None:
                value |= info.flag
        return value

    @property
    def supported_flags(self) -> CloneFlags:
        """The flags this backend honours for a Python child (clone()), as probed."""
        return self._supported(False)

    @property
    def supported_exec_flags(self) -> CloneFlags:
        """The flags this backend honours for an exec child (spawn()), as probed."""
        return self._supported(True)

    def has_feature(self, name: str) -> bool:
        """Whether the kernel has the feature that lifts a Rule (its ``lifted_by``).  Only
        the linux backend probes; the others refuse the flags such rules concern anyway."""
        return True

    def launch(
        self,
        request: Request,
        fn: Callable[..., object],
        args: Tuple[Any, ...],
        kwargs: Dict[str, Any],
        setup: Optional[ChildSetup] = None,
    ) -> Child:
        """Start ``fn(*args, **kwargs)`` in a fork-like child (see portclone._child), set up
        by ``setup`` first (only backends that honour the options get one)."""
        raise NotImplementedError

    def start_failure(
        self,
        error: OSError,
        request: Request,
        plan: Optional[SpawnPlan] = None,
        *,
        syscall: str,
        flags: Optional[int] = None,
        stage: Optional[Stage] = None,
    ) -> Exception:
        """A failed start (``launch`` or ``spawn``) as the caller's exception: the one way
        every backend's start failures go.  This backend's own reading comes first
        (``refine``); then _errors.translate, which says where the start failed (the
        error's ``portclone_stage``, else ``stage``) with the request in the message.
        ``flags``: the flags of the call that failed, when not the request's."""
        refined = self.refine(error, request, plan)
        if refined is not None:
            return refined
        return translate(
            error,
            syscall=syscall,
            flags=int(request.flags) if flags is None else flags,
            exit_signal=request.exit_signal,
            program=plan.name if plan is not None else "",
            cwd=plan.cwd if plan is not None else None,
            stage=stage,
        )

    def refine(self, error: OSError, request: Request, plan: Optional[SpawnPlan]) -> Optional[Exception]:
        """This backend's reading of a failed start, where it knows better than the
        common one (a refusal that only shows when tried); None otherwise."""
        return None

    def spawn(self, request: Request, plan: SpawnPlan) -> Child:
        """Start ``plan``'s program in an exec child (see portclone._plan)."""
        raise NotImplementedError

    def details(self) -> Dict[str, Any]:
        """Facts for ``python -m portclone info``."""
        return {}

    def __repr__(self) -> str:
        return f"<portclone backend {self.name!r}: {describe(int(self.supported_flags))}>"
