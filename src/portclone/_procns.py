"""A process's namespaces, reached through its pidfd, never through its pid alone.

A pid names a process in the caller's PID namespace, and ``/proc/<pid>`` names one in the
PID namespace of the mounted ``/proc``.  The two differ inside ``unshare -pf`` without
``--mount-proc`` (a container that still sees its parent's ``/proc``): there ``/proc/2``
is another process than the caller's pid 2.  So every namespace of another process is
opened here from its pidfd:

- the PIDFD_GET_*_NAMESPACE ioctls (Linux 6.11) open it directly;
- before them, ``/proc/<n>/ns/<name>``, where ``n`` is the pid the pidfd's fdinfo gives
  as the mounted ``/proc`` numbers it, checked again once the file is open (a live
  process keeps its pid, so the file opened between two equal answers is its own).

Where neither can be proved, OSError says so: nothing is read through a guess.
"""

from __future__ import annotations

import errno
import os
import stat
import threading

from ._common import TYPE_CHECKING, WINDOWS
from ._flags import NS_FLAGS

if TYPE_CHECKING:
    from typing import Optional

if not WINDOWS:  # loaded now, not after a chroot (docs/backends.md)
    import fcntl

__all__ = [
    "PIDFD_GET_NAMESPACE",
    "children_pid_ns",
    "ns_of",
    "open_ns_file",
    "own_ns",
    "proc_pid",
]

_NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), torvalds/linux:include/uapi/linux/nsfs.h


def open_ns_file(path: str, name: str, what: str) -> int:
    """``path`` opened for setns as a namespace of type ``name``; ValueError (a FIFO, a
    device or a socket is refused before it is opened, so nothing blocks; a file that is
    no namespace, or one of another type, once it is) or OSError, each saying ``what``."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{what}: {path!r} is not a namespace file (like /proc/PID/ns/NAME)")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise OSError(e.errno, f"{what}: {e.strerror}", path) from None
    try:
        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.ENOTTY, errno.EINVAL):
            raise ValueError(f"{what}: {path!r} is not a namespace file (like /proc/PID/ns/{name})") from None
        raise
    if kind != NS_FLAGS[name]:
        os.close(fd)
        other = [n for n, f in NS_FLAGS.items() if f == kind]
        raise ValueError(f"{what}: {path!r} is a {other[0] if other else kind} namespace, not a {name} one")
    return fd


#: The pidfd ioctls that open a process's namespaces (Linux 6.11,
#: torvalds/linux:include/uapi/linux/pidfd.h), by their names under /proc/self/ns.
PIDFD_GET_NAMESPACE = {
    "cgroup": 0xFF01,
    "ipc": 0xFF02,
    "mnt": 0xFF03,
    "net": 0xFF04,
    "pid": 0xFF05,
    "pid_for_children": 0xFF06,
    "time": 0xFF07,
    "time_for_children": 0xFF08,
    "user": 0xFF09,
    "uts": 0xFF0A,
}
#: pidfd_open's PIDFD_THREAD (O_EXCL, Linux 6.9): a pidfd for one thread, whose
#: namespaces for children the ioctls then give.
_PIDFD_THREAD = os.O_EXCL
#: errnos of an ioctl this kernel does not have (before 6.11)
_UNKNOWN_IOCTL = (errno.ENOTTY, errno.EINVAL)


def proc_pid(pidfd: int) -> int:
    """The pid of ``pidfd``'s process as the mounted /proc numbers it (the "Pid:" line of
    its fdinfo, torvalds/linux:fs/pidfs.c, pidfd_show_fdinfo): 0 when that /proc's PID
    namespace does not show the process, -1 once it has exited.  OSError when /proc
    cannot be read (not mounted, or it does not show this process either)."""
    with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
        text = f.read()
    for line in text.splitlines():
        if line.startswith(b"Pid:"):
            return int(line[4:])
    raise OSError(errno.ENOSYS, "the kernel shows no Pid: line in a pidfd's fdinfo (before Linux 5.3)")


def _ioctl(pidfd: int, name: str) -> Optional[int]:
    """The namespace through the pidfd ioctl; None where the kernel has no such ioctl."""
    try:
        return int(fcntl.ioctl(pidfd, PIDFD_GET_NAMESPACE[name]))
    except OSError as e:
        if e.errno in _UNKNOWN_IOCTL:
            return None
        raise


def ns_of(pidfd: int, name: str, what: str) -> int:
    """An fd of the ``name`` namespace (as under /proc/PID/ns) of ``pidfd``'s process.
    ``what`` names the target in errors: OSError (ESRCH once it has exited; EXDEV when
    no file of the mounted /proc can be proved to be its own)."""
    try:
        fd = _ioctl(pidfd, name)
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise ProcessLookupError(errno.ESRCH, f"{what}: the process has exited") from None
        raise OSError(e.errno, f"{what}: opening its {name} namespace: {e.strerror}") from None
    if fd is not None:
        return fd
    try:
        seen = proc_pid(pidfd)
    except OSError as e:
        raise OSError(
            e.errno,
            f"{what}: cannot open its {name} namespace: /proc does not show this process "
            f"({e.strerror}), and this kernel has no PIDFD_GET_NAMESPACE ioctls (Linux 6.11)",
        ) from None
    if seen == -1:
        raise ProcessLookupError(errno.ESRCH, f"{what}: the process has exited")
    if seen == 0:
        raise OSError(
            errno.EXDEV,
            f"{what}: the mounted /proc belongs to a PID namespace that does not show this "
            f"process, and this kernel has no PIDFD_GET_NAMESPACE ioctls (Linux 6.11) to open "
            f"its {name} namespace otherwise: mount a /proc of this PID namespace",
        )
    path = f"/proc/{seen}/ns/{name}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"{what}: opening its {name} namespace: {e.strerror}", path) from None
    try:
        again = proc_pid(pidfd)
    except BaseException:
        os.close(fd)
        raise
    if again != seen:
        os.close(fd)
        raise ProcessLookupError(errno.ESRCH, f"{what}: the process has exited")
    return fd


def own_ns(name: str) -> Optional[os.stat_result]:
    """The stat of the calling thread's ``name`` namespace (for "pid" and "time", the one
    its children get); None when neither /proc nor the ioctls can tell."""
    own = f"{name}_for_children" if name in ("pid", "time") else name
    for where in ("/proc/thread-self/ns", "/proc/self/ns"):
        try:
            return os.stat(f"{where}/{own}")
        except FileNotFoundError:
            if where == "/proc/thread-self/ns" and os.path.isdir(where):
                break  # /proc shows this thread, and the namespace has no file: ask the kernel
        except OSError:
            break
    fd = _thread_ns(own)
    if fd is None:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _thread_ns(name: str) -> Optional[int]:
    """The calling thread's ``name`` namespace through a thread pidfd and the ioctls;
    None before Linux 6.11 (or 6.9 for a thread pidfd)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        pidfd = opener(threading.get_native_id(), _PIDFD_THREAD)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOSYS):
            return None
        raise
    try:
        return _ioctl(pidfd, name)
    finally:
        os.close(pidfd)


def children_pid_ns() -> int:
    """An fd of the PID namespace the calling thread's next children are created in, to
    return to after a clone in another one.  Exactly that namespace, also when it is one
    the thread's own ``unshare(CLONE_NEWPID)`` made and no child has entered yet (its
    /proc file then does not exist: the ioctl opens it), or OSError saying why not."""
    fd = _thread_ns("pid_for_children")
    if fd is not None:
        return fd
    try:
        return os.open("/proc/thread-self/ns/pid_for_children", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    if os.path.isdir("/proc/thread-self/ns"):
        why = (
            "it is a new PID namespace that no process has entered yet "
            "(this thread's own unshare(CLONE_NEWPID)), which only Linux 6.11's "
            "PIDFD_GET_PID_FOR_CHILDREN_NAMESPACE can open"
        )
    else:
        why = "/proc is not mounted, and this kernel has no PIDFD_GET_NAMESPACE ioctls (Linux 6.11)"
    raise OSError(
        errno.ENOENT,
        f"join['pid']: this thread's PID namespace for children cannot be saved to return "
        f"to after the clone: {why}",
    )
