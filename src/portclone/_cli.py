"""``python -m portclone``: info, demo, flags."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sys
from typing import Any, Dict, List, Optional

from . import __version__, available_backends, clone, current_backend, spawn
from ._errors import PortcloneError
from ._flags import TABLE, CloneFlags, describe
from ._loader import native_status


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
        # each namespace's line is the flag that makes a new one (CLONE_NEWNS for mnt), not
        # another flag with the same ns (CLONE_EMPTY_MNTNS)
        facts["namespaces"] = {
            info.ns: probe(info.flag) or "available"
            for info in TABLE if info.ns and info.name.startswith("CLONE_NEW")
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
    with child:
        code = child.wait()  # the child's line first, always
    print(f"clone() returned {child.pid} ({child.syscall}, flags {describe(int(flags))}, "
          f"backend {child.backend})")
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
            print(f"{'':27}{backend.why_refused(info.flag)}")
    return 0


def _run(flag_text: str, map_root: bool, hostname: Optional[str], command: List[str]) -> int:
    """A portable, flag-checked unshare(1): the exit status is the program's."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("portclone run: no command given (portclone run [options] -- CMD ARGS)",
              file=sys.stderr)
        return 2
    try:
        flags = CloneFlags.parse(flag_text)
        if hostname is not None:
            flags |= CloneFlags.CLONE_NEWUTS
        child = spawn(command, flags=flags, map_root=map_root, hostname=hostname)
    except (ValueError, PortcloneError) as e:  # unknown names, refused or invalid flags
        print(f"portclone run: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"portclone run: {command[0]}: {e.strerror}", file=sys.stderr)
        return 127
    except PermissionError as e:
        print(f"portclone run: {command[0]}: {e.strerror}", file=sys.stderr)
        return 126
    except OSError as e:
        print(f"portclone run: {e}", file=sys.stderr)
        return 1
    with child:
        try:
            code = child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            code = child.wait()
    return code if code >= 0 else 128 - code  # killed by signal N: 128+N, as shells say


def _run_epilog() -> str:
    try:
        backend = current_backend()
    except PortcloneError as e:
        return f"no backend: {e}"
    names = describe(int(backend.supported_exec_flags)).replace("CLONE_", "").split("|")
    return (f"flags the {backend.name} backend honours for a program here: {', '.join(names)}. "
            "Example: portclone run --flags NEWUSER,NEWPID,NEWNS --map-root -- sh")


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
    p_run = sub.add_parser(
        "run", help="run a program with clone flags: a portable, flag-checked unshare(1)",
        epilog=_run_epilog())
    p_run.add_argument("--flags", default="", metavar="NEWUSER,NEWPID,...",
                       help="clone flags, with or without the CLONE_ prefix")
    p_run.add_argument("--map-root", action="store_true",
                       help="map our uid/gid to root in the new user namespace (NEWUSER)")
    p_run.add_argument("--hostname", help="the hostname in a new UTS namespace (implies NEWUTS)")
    p_run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS")
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args.flags, args.map_root, args.hostname, args.cmd)
    if args.command == "info":
        return _print_info(args.json)
    if args.command == "demo":
        return _demo(args.hostname)
    return _flags(args.markdown)
