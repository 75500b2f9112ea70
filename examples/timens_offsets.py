#!/usr/bin/env python3
"""timens_offsets: run a command in a new time namespace with clock offsets.

The demo of time_namespaces(7), which runs "unshare -T" and writes
/proc/PID/timens_offsets by hand before anything enters the namespace:

    timens_offsets [--monotonic SECS] [--boottime SECS] [cmd [arg...]]

The command (default: cat /proc/uptime) sees CLOCK_BOOTTIME and CLOCK_MONOTONIC
shifted; the caller's clocks are untouched.  A clone with CLONE_NEWTIME would freeze
the offsets at zero; time_offsets= makes the namespace the way unshare(1) does.
"""

import argparse
import sys

import portclone


def main() -> int:
    parser = argparse.ArgumentParser(prog="timens_offsets")
    parser.add_argument("--monotonic", type=float, help="CLOCK_MONOTONIC offset, seconds")
    parser.add_argument("--boottime", type=float, help="CLOCK_BOOTTIME offset, seconds")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.cmd[:1] == ["--"]:
        del args.cmd[0]
    offsets = {
        clock: getattr(args, clock) for clock in ("monotonic", "boottime") if getattr(args, clock) is not None
    }
    if not offsets:
        parser.error("give --monotonic and/or --boottime")
    print("outside:", open("/proc/uptime").read().strip(), flush=True)
    try:
        child = portclone.spawn(args.cmd or ["cat", "/proc/uptime"], time_offsets=offsets)
    except ValueError as e:
        parser.error(str(e))
    except OSError as e:
        sys.exit(f"timens_offsets: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
    status = child.wait()
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())
