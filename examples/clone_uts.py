#!/usr/bin/env python3
"""clone_uts: the example of clone(2), written from its description.

    clone_uts <child-hostname>

The child, in a new UTS namespace, sets its hostname, prints the nodename it sees,
and sleeps to keep the namespace open (another process could join it meanwhile).
The parent sleeps a second, prints its own nodename (unchanged), waits for the
child and says so.  hostname= implies the new UTS namespace.  -s SECONDS replaces
the child's 200 (for tests).
"""

import argparse
import os
import sys
import time

import portclone


def child(seconds: float) -> int:
    print(f"uts.nodename in child:  {os.uname().nodename}", flush=True)
    time.sleep(seconds)  # keep the namespace open for a while
    return 0


def seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < 10**9:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(prog="clone_uts")
    parser.add_argument("hostname")
    parser.add_argument("-s", type=seconds, default=200, help="the child's sleep (200)")
    args = parser.parse_args()
    try:
        c = portclone.clone(child, args.s, hostname=args.hostname)
    except ValueError as e:
        parser.error(str(e))
    except OSError as e:
        sys.exit(f"clone_uts: clone: {e.strerror or e}")
    print(f"clone() returned {c.pid}", flush=True)
    time.sleep(1)  # give the child time to print, as the C program does
    print(f"uts.nodename in parent: {os.uname().nodename}", flush=True)
    status = c.wait()
    print("child has terminated")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
