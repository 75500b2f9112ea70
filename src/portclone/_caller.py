"""Why this caller, here and now, may be refused what the kernel and backend allow.

The kernel's EPERM (or ENOSPC) for a new namespace has several causes that it does not
tell apart; each is read here from where the system states it, so that a refusal can
name the one that holds:

- no privilege: CAP_SYS_ADMIN is not in the effective set (``/proc/self/status``);
- ``user.max_user_namespaces`` is 0, or its count is reached;
- ``kernel.apparmor_restrict_unprivileged_userns`` (Ubuntu 23.10 and later) or Debian's
  older ``kernel.unprivileged_userns_clone``;
- a seccomp filter (``Seccomp:`` in ``/proc/self/status``);
- a chroot, where Linux refuses a new user namespace (torvalds/linux:kernel/user_namespace.c,
  create_user_ns, current_chrooted).
"""

from __future__ import annotations

import os

from ._common import TYPE_CHECKING
from ._flags import NS_FLAGS

if TYPE_CHECKING:
    from typing import List, Optional

__all__ = ["causes", "has_cap_sys_admin"]

_CAP_SYS_ADMIN = 21
_NEWUSER = int(NS_FLAGS["user"])
#: every other namespace: privileged unless a new user namespace comes too
_PRIVILEGED_NS = sum(int(flag) for name, flag in NS_FLAGS.items() if name != "user")


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _status_field(name: str) -> Optional[str]:
    text = _read("/proc/self/status") or ""
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


def _sysctl(name: str) -> Optional[int]:
    text = _read("/proc/sys/" + name.replace(".", "/"))
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _chrooted() -> bool:
    """Whether this process's root is not its mount namespace's.  /proc/self/mountinfo
    lists only the mounts below this process's root, by their paths from it: after a
    chroot into a directory, none is at "/".  (A chroot onto a mount point is told only
    where pid 1 of this /proc is in the same mount namespace and readable: root's.)"""
    text = _read("/proc/self/mountinfo")
    if text is None:
        return False
    if not any(len(f) > 4 and f[4] == "/" for f in (line.split() for line in text.splitlines())):
        return True
    try:
        if os.stat("/proc/1/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino:
            return False  # another mount namespace (a container that sees its host's /proc)
        ours, theirs = os.stat("/"), os.stat("/proc/1/root/")
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino)


def has_cap_sys_admin() -> bool:
    """Whether CAP_SYS_ADMIN is in this process's effective set (in its own user
    namespace); True when /proc cannot tell (the kernel then answers for itself)."""
    cap = _status_field("CapEff")
    return cap is None or bool(int(cap, 16) >> _CAP_SYS_ADMIN & 1)


def causes(flags: int, err: int = 0) -> List[str]:
    """What in this process's situation explains a refusal of ``flags`` (CLONE_* bits),
    ``err`` being the errno the kernel gave; [] when none of the known causes holds."""
    found = []
    new_user = bool(flags & _NEWUSER)
    privileged = has_cap_sys_admin()
    if flags & _PRIVILEGED_NS and not new_user and not privileged:
        found.append(
            "this process has no CAP_SYS_ADMIN (not root, or root of no namespace it owns): "
            "run as root, or add a user namespace (map_root=True, unshare -r)"
        )
    if new_user or (flags & _PRIVILEGED_NS and not privileged):
        limit = _sysctl("user.max_user_namespaces")
        if limit == 0:
            found.append("user.max_user_namespaces is 0: user namespaces are disabled here")
        elif limit is not None and err == 28:  # ENOSPC
            found.append(
                f"user.max_user_namespaces is reached: this user namespace's ({limit}), or that "
                f"of one enclosing it, or the nesting depth (32)"
            )
        if not privileged:
            if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == 1:
                found.append(
                    "AppArmor restricts unprivileged user namespaces "
                    "(kernel.apparmor_restrict_unprivileged_userns = 1)"
                )
            if _sysctl("kernel.unprivileged_userns_clone") == 0:
                found.append("kernel.unprivileged_userns_clone is 0: unprivileged user namespaces are off")
        if _chrooted():
            found.append("this process is in a chroot, where Linux refuses a new user namespace")
    seccomp = _status_field("Seccomp")
    if seccomp not in (None, "0"):
        found.append(f"a seccomp filter is in force (Seccomp: {seccomp}), which may refuse it")
    return found
