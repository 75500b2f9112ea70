"""The report commands: ``info``, ``flags``, ``check`` and ``demo``."""

from __future__ import annotations

import json
import os
import platform
import sys

from .. import __version__, available_backends, check, clone, current_backend
from .._caller import causes
from .._check import refusals
from .._common import PLATFORM, TYPE_CHECKING
from .._errors import PortcloneError
from .._flags import NS_FLAGS, TABLE, CloneFlags, describe
from .._loader import native_status
from .._plan import conditions as plan_conditions
from ._common import PROG, cli_message, parse_flags

if TYPE_CHECKING:
    from typing import Any, Dict, Optional

F = CloneFlags


def _capability(available: bool, reason: Optional[str] = None) -> Dict[str, Any]:
    return {"available": available, "reason": None if available else reason}


def _info() -> Dict[str, Any]:
    backend = current_backend()
    native, why = native_status()
    facts: Dict[str, Any] = {
        "portclone": __version__,
        "backend": backend.name,
        "available_backends": available_backends(),
        "platform": PLATFORM,
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    other = f"the {backend.name} backend does not use it"
    capabilities: Dict[str, Any] = {
        "native_extension": _capability(native is not None, why),
        "clone3": _capability(False, other),
        "pidfd": _capability(False, other),
        "libc_tid_repair": _capability(False, other),
    }
    details = backend.details()
    capabilities.update(details.pop("capabilities", {}))
    facts.update(details)
    probe = getattr(backend, "probe", None)
    for info in TABLE:
        # each namespace's line is the flag that makes a new one (CLONE_NEWNS for mnt), not
        # another flag with the same ns (CLONE_EMPTY_MNTNS)
        if info.ns and info.name.startswith("CLONE_NEW"):
            problem = probe(info.flag) if probe is not None else backend.why_refused(info.flag)
            if problem is not None and probe is not None:
                found = causes(int(info.flag))
                problem += f"; here: {'; '.join(found)}" if found else ""
            capabilities[f"namespace {info.ns}"] = _capability(problem is None, problem)
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            facts["max_user_namespaces"] = int(f.read())
    except (OSError, ValueError):
        pass
    facts["capabilities"] = capabilities
    # what the backend and kernel honour, and of that what this caller may use now: the
    # namespace lines above are this caller's trials
    supported = backend.supported_flags
    refused = [
        NS_FLAGS[key.split()[1]]
        for key, cap in capabilities.items()
        if key.startswith("namespace ") and not cap["available"]
    ]
    usable = supported & ~F(sum(int(flag) for flag in refused))
    facts["supported_flags"] = describe(int(supported)).split("|")
    facts["usable_flags"] = describe(int(usable)).split("|") if usable else []
    return facts


_LIST_NOTES = {
    "supported_flags": "what the backend and kernel honour, for a caller they let",
    "usable_flags": "of those, what this caller may use now: see the namespace lines",
}


def _print_info(as_json: bool) -> int:
    facts = _info()
    if as_json:
        print(json.dumps(facts, indent=2, sort_keys=True))
        return 0
    width = max(len(k) for k in [*facts, *facts["capabilities"]]) + 2
    for key, value in facts.items():
        if key == "capabilities":
            print("capabilities (namespaces: tried by this caller now):")
            for name, cap in value.items():
                state = "yes" if cap["available"] else f"no: {cap['reason']}"
                print(f"  {name:<{width - 2}} {state}")
        elif isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<{width - 2}} {v}")
        elif isinstance(value, list):
            print(f"{key:<{width}} {', '.join(map(str, value))}")
            if key in _LIST_NOTES:
                print(f"{'':<{width}} ({_LIST_NOTES[key]})")
        else:
            print(f"{key:<{width}} {value}")
    return 0


def _demo_child() -> int:
    print(f"uts.nodename in child:  {os.uname().nodename}", flush=True)
    return 0


def _demo(hostname: str) -> int:
    """clone(2)'s example: a child in a new UTS (and user) namespace has its own hostname."""
    try:
        child = clone(_demo_child, hostname=hostname, map_root=os.geteuid() != 0)
    except (PortcloneError, ValueError, OSError) as e:
        print(f"{PROG} demo: {cli_message(e)}", file=sys.stderr)
        return 1
    with child:
        code = child.wait()  # the child's line first, always
    print(f"clone() returned {child.pid} ({child.syscall}, flags {child.flags}, backend {child.backend})")
    print(f"uts.nodename in parent: {os.uname().nodename}")
    print(f"child exited with status {code}")
    return code


def _flags(markdown: bool) -> int:
    if markdown:
        from .._docs import availability_table

        print(availability_table())
        return 0
    backend = current_backend()
    supported = backend.supported_flags
    for info in sorted(TABLE, key=lambda i: int(i.flag)):
        mark = "yes" if info.flag & supported else "no "
        print(f"{mark} {info.name:<22} {int(info.flag):#12x}  {info.meaning}")
        if not info.flag & supported:
            print(f"{'':27}{backend.why_refused(info.flag)}")
    return 0


#: the bits a --exec check tries in a clone() child: what a caller may lack is a namespace
_NAMESPACES = F(sum(int(flag) for flag in NS_FLAGS.values()))


def _check(flag_text: str, exec_child: bool, static: bool = False) -> int:
    """Exit 0 when this backend honours the request, for this caller now (tried in a
    throwaway child) unless ``static``; else every reason against it (the kernel's rules,
    this backend's refusals, what the trial met), exit 1."""
    if not any(c.isalnum() for c in flag_text):
        # a gate written as `check "$FLAGS"` must not pass when $FLAGS is empty
        raise ValueError(
            "no flags given: name at least one (NEWPID,NEWNS); `python -m portclone flags` lists them"
        )
    flags = parse_flags(flag_text)
    backend = current_backend()
    what = "a program (spawn)" if exec_child else "a Python child (clone)"
    asked = flags | F.CLONE_VM if exec_child else flags
    # what spawn()'s defaults make true (close_fds=True) is a condition of the rules
    given = plan_conditions(None, (), True, None, None, None) if exec_child else frozenset()
    _, found = refusals(backend, int(asked), exec_child=exec_child, conditions=given)
    reasons = [f"{r.label}: {r.reason}" for r in found]
    if not reasons and not static:
        try:  # the namespaces are what a caller may lack: tried in a child that exits
            check(flags & _NAMESPACES if exec_child else flags, probe=True)
        except (PortcloneError, OSError) as e:
            reasons.append(cli_message(e))
    if reasons:
        whom = "" if static else " here"
        print(f"{backend.name} cannot honour {describe(int(flags))} for {what}{whom}:", file=sys.stderr)
        for reason in dict.fromkeys(reasons):
            print(f"  {reason}", file=sys.stderr)
        return 1
    whom = " (for any caller it lets: --static)" if static else " here, for this caller"
    print(f"{backend.name} honours {describe(int(flags))} for {what}{whom}")
    return 0
