#!/usr/bin/env python3
"""ns_exec: run a command in the namespace a /proc/PID/ns file refers to.

A port of the program in setns(2), written from its description:

    ns_exec /proc/PID/ns/FILE cmd [arg...]

The C program opens the file, setns()es into it and execs the command itself.  Here
the command runs in a child that joins the namespace (join=), and ns_exec exits with
the command's status.  setns(fd, 0) takes any namespace type; join= names it, so the
type is asked from the file first (the NS_GET_NSTYPE ioctl).
"""

import errno
import fcntl
import os
import sys

import portclone
from portclone import NS_FLAGS

NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), linux/nsfs.h


def main() -> int:
    if len(sys.argv) < 3:
        print(f"{sys.argv[0]} /proc/PID/ns/FILE cmd [arg...]", file=sys.stderr)
        return 1
    try:
        fd = os.open(sys.argv[1], os.O_RDONLY)
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        finally:
            os.close(fd)
        name = next(name for name, flag in NS_FLAGS.items() if flag == kind)
        child = portclone.spawn(sys.argv[2:], join={name: sys.argv[1]})
    except (OSError, ValueError, StopIteration) as e:  # as errExit: what failed, status 1
        what = (
            f"{sys.argv[1]} is not a namespace file"
            if isinstance(e, OSError) and e.errno == errno.ENOTTY
            else getattr(e, "strerror", None) or str(e)
        )
        filename = getattr(e, "filename", None)
        sys.exit(f"ns_exec: {what}" + (f": {filename}" if filename else ""))
    status = child.wait()
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())
