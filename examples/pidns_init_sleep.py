#!/usr/bin/env python3
"""pidns_init_sleep: the init of a new PID namespace, which sleeps.

A port of the program of Michael Kerrisk's "Namespaces in operation, part 3" (LWN, 2013),
the one pid_namespaces(7)'s readers meet, written from its description:

    pidns_init_sleep [mount-point]

The child, created with CLONE_NEWPID, prints its PID (1) and PPID (0: its parent is in
another namespace), mounts a procfs for the new namespace at mount-point if one is
given, and execs "sleep 600".  The parent prints the child's PID as seen from outside
and waits for it.  Here mount_proc= makes the mount, in a new mount namespace with
every mount private first, so it does not show up in the caller's namespace as the C
program's does.  -s SECONDS replaces the 600 (for tests).
"""

import argparse
import os
import sys

import portclone


def child(seconds: str) -> int:
    print(f"childFunc(): PID  = {os.getpid()}")
    print(f"childFunc(): PPID = {os.getppid()}", flush=True)
    os.execvp("sleep", ["sleep", seconds])


def main() -> int:
    parser = argparse.ArgumentParser(prog="pidns_init_sleep")
    parser.add_argument("mount_point", nargs="?", help="where to mount the new /proc")
    parser.add_argument("-s", default="600", help="how long the child sleeps (600)")
    args = parser.parse_args()
    proc = args.mount_point if args.mount_point else False
    try:
        pid = portclone.clone(child, args.s, flags=portclone.CLONE_NEWPID, mount_proc=proc)
    except ValueError as e:
        parser.error(str(e))
    except OSError as e:  # as the C program's errExit: what failed, status 1
        sys.exit(f"pidns_init_sleep: {e.strerror or e}")
    print(f"PID returned by clone(): {pid.pid}", flush=True)
    pid.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
