"""``python -m portclone``: info, demo, flags."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
from typing import Any, Dict, List, Optional

from . import __version__
from ._api import clone
from ._backend import available_backends, current_backend, native_status
from ._errors import PortcloneError
from ._flags import TABLE, CloneFlags, describe


def _info() -> Dict[str, Any]:
    backend = current_backend()
    native, why = native_status()
    facts: Dict[str, Any] = {
        "portclone": __version__,
        "backend": backend.name,
        "available_backends": available_backends(),
        "platform": sys.platform,
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "native_extension": native.__file__ if native is not None else f"not loaded: {why}",
    }
    facts.update(backend.details())
    probe = getattr(backend, "probe", None)
    if probe is not None:
        facts["namespaces"] = {
            info.ns: probe(info.flag) or "available"
            for info in TABLE if info.ns
        }
        try:
            with open("/proc/sys/user/max_user_namespaces") as f:
                facts["max_user_namespaces"] = int(f.read())
        except (OSError, ValueError):
            pass
    facts["supported_flags"] = describe(int(backend.supported_flags)).split("|")
    return facts


def _print_info(as_json: bool) -> int:
    facts = _info()
    if as_json:
        print(json.dumps(facts, indent=2, sort_keys=True))
        return 0
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<{width - 2}} {v}")
        elif isinstance(value, list):
            print(f"{key:<{width}} {', '.join(value)}")
        else:
            print(f"{key:<{width}} {value}")
    return 0


def _demo_child(hostname: str) -> int:
    socket.sethostname(hostname)
    print(f"uts.nodename in child:  {os.uname().nodename}", flush=True)
    return 0


def _demo(hostname: str) -> int:
    """clone(2)'s example: a child in new UTS (and user) namespaces sets its hostname."""
    flags = CloneFlags.CLONE_NEWUTS
    if os.geteuid() != 0:
        flags |= CloneFlags.CLONE_NEWUSER
    try:
        child = clone(_demo_child, hostname, flags=flags)
    except (PortcloneError, OSError) as e:
        print(f"portclone demo: {e}", file=sys.stderr)
        return 2
    print(f"clone() returned {child.pid} ({child.syscall}, flags {describe(int(flags))}, "
          f"backend {child.backend})", flush=True)
    with child:
        code = child.wait()
    print(f"uts.nodename in parent: {os.uname().nodename}")
    print(f"child exited with status {code}")
    return code


def _flags(markdown: bool) -> int:
    if markdown:
        from ._docs import availability_table

        print(availability_table())
        return 0
    backend = current_backend()
    supported = backend.supported_flags
    for info in sorted(TABLE, key=lambda i: int(i.flag)):
        mark = "yes" if info.flag & supported else "no "
        print(f"{mark} {info.name:<22} {int(info.flag):#12x}  {info.meaning}")
        if not info.flag & supported:
            print(f"{'':27}{backend.flag_refusal(info.flag)}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="portclone", description=__doc__)
    parser.add_argument("--version", action="version", version=f"portclone {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="backend, kernel features and supported flags, as probed")
    p_info.add_argument("--json", action="store_true", help="machine-readable output")
    p_demo = sub.add_parser("demo", help="clone(2)'s example: a child sets its hostname in a new "
                                         "UTS namespace; the parent's is unchanged")
    p_demo.add_argument("--hostname", default="portclone-demo", help="the child's hostname")
    p_flags = sub.add_parser("flags", help="every clone flag and whether this backend honours it")
    p_flags.add_argument("--markdown", action="store_true",
                         help="the README's availability table for every backend")
    args = parser.parse_args(argv)
    if args.command == "info":
        return _print_info(args.json)
    if args.command == "demo":
        return _demo(args.hostname)
    return _flags(args.markdown)
