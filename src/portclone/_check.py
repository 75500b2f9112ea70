"""The one checking pipeline: a request from every argument of a call, or every Refusal.

``refusals()`` runs the stages and returns what each found; ``build()`` raises it all in
one error, which is the API's way; ``portclone check`` prints it.  The stages:

1. the arguments' types and values, and the kernel's rules (_flags.RULES) given the
   conditions that the options (Options.conditions) and a program's plan
   (_plan.conditions) make true: _validate.validate;
2. what this backend and its kernel cannot honour: Backend.refusals, from _flags' tables;
3. an exit signal whose default action would end the caller, unless an earlier stage
   refused the exit signal already (a backend that cannot send it).  Its disposition is
   the process's current one, so a request with another exit signal than SIGCHLD or 0 is
   never remembered.

A refused flag that an option implied is named with the option.  A request without
options, cgroup or set_tid is remembered by its backend once it passed: most clone() and
spawn() calls are one dict lookup here.
"""

from __future__ import annotations

import signal

from ._common import TYPE_CHECKING
from ._errors import InvalidFlagsError, Refusal, UnsupportedFlagError
from ._flags import OPTION, SIGCHLD, CloneFlags, describe
from ._setup import NO_OPTIONS
from ._validate import exit_signal_hazard, validate

if TYPE_CHECKING:
    from typing import FrozenSet, List, Optional, Tuple

    from ._backend import Backend
    from ._setup import Options
    from ._validate import Request

__all__ = ["build", "refusals"]

_INT_TYPES = (int, CloneFlags, signal.Signals)
_PARENT = int(CloneFlags.CLONE_PARENT)
_NO_CONDITIONS: FrozenSet[str] = frozenset()
_EXEC = frozenset({"exec"})
_CLONE_SETUP = frozenset({"clone_setup"})
#: the most requests a backend remembers
_REMEMBERED = 256


def refusals(
    backend: Backend,
    flags: object,
    exit_signal: object = SIGCHLD,
    cgroup: object = None,
    set_tid: object = None,
    options: Options = NO_OPTIONS,
    *,
    exec_child: bool = False,
    conditions: FrozenSet[str] = _NO_CONDITIONS,
) -> Tuple[Optional[Request], List[Refusal]]:
    """The request (None when the flag word is beyond reading) and every Refusal of every
    stage.  TypeError for an argument of the wrong type; the OSError of a cgroup that
    cannot be looked at.  ``exec_child``: a program (spawn()); ``conditions``: those its
    plan makes true."""
    present = conditions | options.conditions() | (_EXEC if exec_child else _NO_CONDITIONS)
    if options.names and not exec_child:
        present |= _CLONE_SETUP
    request, found = validate(
        flags,
        exit_signal=exit_signal,
        cgroup=cgroup,
        set_tid=set_tid,
        has_feature=backend.has_feature,
        options=options.names,
        implied=int(options.implied),
        joins_pid=options.joins_pid,
        conditions=present,
    )
    if request is None:
        return None, found
    found += backend.refusals(request, exec_child)
    hazard = exit_signal_hazard(request.exit_signal)
    if hazard is not None and not any(refusal.label == "exit_signal" for refusal in found):
        found.append(Refusal(hazard, field="exit_signal", invalid=True))
    if request.implied:
        found = [_named(refusal, request) for refusal in found]
    return request, found


def build(
    backend: Backend,
    flags: object,
    exit_signal: object = SIGCHLD,
    cgroup: object = None,
    set_tid: object = None,
    options: Options = NO_OPTIONS,
    *,
    exec_child: bool = False,
    conditions: FrozenSet[str] = _NO_CONDITIONS,
) -> Request:
    """The checked request; else, with every Refusal of every stage, InvalidFlagsError
    when one of them is invalid (the kernel refuses it everywhere), or UnsupportedFlagError
    (this backend or kernel cannot honour them).  Nothing is created, opened or changed."""
    simple = (
        cgroup is None
        and set_tid is None
        and options is NO_OPTIONS
        and type(flags) in _INT_TYPES
        and type(exit_signal) in _INT_TYPES
        and (exit_signal == SIGCHLD or exit_signal == 0)
    )
    if simple:
        key = (flags, exit_signal, exec_child, conditions)
        hit = backend._checked.get(key)
        if hit is not None:
            return hit
    request, found = refusals(
        backend, flags, exit_signal, cgroup, set_tid, options, exec_child=exec_child, conditions=conditions
    )
    if found or request is None:
        if any(refusal.invalid for refusal in found):  # the invalid first, then the rest
            raise InvalidFlagsError(backend.name, sorted(found, key=lambda refusal: not refusal.invalid))
        raise UnsupportedFlagError(backend.name, found, supported=int(backend._supported(exec_child)))
    # CLONE_PARENT's validity depends on being a namespace's init, a backend's
    # state_dependent flags on the process's state: never remembered
    remember = not request.flags & (_PARENT | backend.state_dependent)
    if simple and remember and len(backend._checked) < _REMEMBERED:
        backend._checked[key] = request
    return request


def _named(refusal: Refusal, request: Request) -> Refusal:
    """``refusal`` naming the option that implied its flags, when one did and the caller
    did not ask for them too (Backend.refusals names its own)."""
    implied = int(refusal.flags) & int(request.implied)
    if not refusal.invalid or not implied:
        return refusal
    by = [name for name in sorted(request.options) if OPTION[name].implies & implied]
    if not by:
        return refusal
    return refusal._replace(reason=f"{refusal.reason} ({describe(implied)}, implied by {by[0]}=)")
