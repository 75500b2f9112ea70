#!/usr/bin/env python3
"""userns_child_exec: run a command in new namespaces, with uid/gid maps.

A port of the program in user_namespaces(7), written from its description:

    userns_child_exec [options] cmd [arg...]

    -i  new IPC namespace         -M uid_map  uid map for the user namespace
    -m  new mount namespace       -G gid_map  gid map for the user namespace
    -n  new network namespace     -z          map our uid and gid to 0
    -p  new PID namespace                     (-M '0 <uid> 1' -G '0 <gid> 1')
    -u  new UTS namespace         -v          verbose
    -U  new user namespace

Map strings are "inside outside count" records separated by commas.  The C program
writes the maps from the parent while the child waits on a pipe, then writes "deny" to
setgroups; portclone does both (uid_map=, gid_map=, map_root=).
"""

import argparse
import sys

import portclone
from portclone import CloneFlags as F

NAMESPACES = {
    "i": F.CLONE_NEWIPC,
    "m": F.CLONE_NEWNS,
    "n": F.CLONE_NEWNET,
    "p": F.CLONE_NEWPID,
    "u": F.CLONE_NEWUTS,
    "U": F.CLONE_NEWUSER,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="userns_child_exec")
    for letter in NAMESPACES:
        parser.add_argument(f"-{letter}", action="store_true", dest=letter)
    parser.add_argument("-M", dest="uid_map", help="uid map, records separated by commas")
    parser.add_argument("-G", dest="gid_map", help="gid map, records separated by commas")
    parser.add_argument("-z", action="store_true", help="map our uid and gid to 0")
    parser.add_argument("-v", action="store_true", help="verbose")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.cmd[:1] == ["--"]:
        del args.cmd[0]
    if not args.cmd:
        parser.error("no command given")
    if (args.z or args.uid_map or args.gid_map) and not args.U:
        parser.error("-z, -M and -G need -U")
    if args.z and (args.uid_map or args.gid_map):
        parser.error("-z cannot be combined with -M or -G")

    flags = F(0)
    for letter, flag in NAMESPACES.items():
        if getattr(args, letter):
            flags |= flag
    maps = {
        key: value.replace(",", "\n")
        for key, value in (("uid_map", args.uid_map), ("gid_map", args.gid_map))
        if value
    }
    try:
        child = portclone.spawn(args.cmd, flags=flags, map_root=args.z, **maps)
    except ValueError as e:
        parser.error(str(e))
    except OSError as e:  # as the C program's errExit: the call and the error, status 1
        sys.exit(f"{sys.argv[0]}: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
    if args.v:
        print(f"{sys.argv[0]}: PID of child created by clone() is {child.pid}", flush=True)
    status = child.wait()
    if args.v:
        print(f"{sys.argv[0]}: terminating")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
