from typing import Any, Callable, Optional, Sequence, Set, Tuple

ABI: int
MODE_FORK: int
MODE_CLONE3: int
MODE_LEGACY: int
USED_FORK: int
USED_CLONE3: int
USED_CLONE: int
# where an exec child failed: an OSError's portclone_stage (portclone._errors.Stage)
STAGE_CLONE: int
STAGE_EXEC: int
STAGE_CHDIR: int
STAGE_FDS: int
STAGE_HOSTNAME: int
STAGE_MAPS: int
STAGE_TIME: int
STAGE_JOIN: int
STAGE_MOUNT_PROC: int
STAGE_PDEATHSIG: int
STAGE_PROCESS_GROUP: int
STAGE_PROPAGATION: int
SYSCALL_NAMES: Tuple[str, str, str]
ARCH: str
LEGACY_CLONE_ORDER: str
SYS_CLONE: int
SYS_CLONE3: int

# not a module attribute: a Child's _pidfd_owner is one (portclone._native.PidfdOwner)
class _PidfdOwner:
    """Owns a Child's pidfd (``Child._pidfd_owner``): closes it once, in C."""

    def close(self) -> None: ...
    def exit_status(self) -> Optional[int]: ...
    def send_signal(self, sig: int, /) -> bool: ...
    def waitid(self, options: int, /) -> Optional[Tuple[int, int]]: ...

# ``child`` receives pid, pidfd and syscall (a portclone.Child, or any object with those
# attributes); in the new child, ``runner()`` runs and its int is the _exit status.
def clone(
    child: Any,
    runner: Callable[[], int],
    mode: int,
    flags: int,
    exit_signal: int,
    cgroup_fd: int,
    set_tid: Optional[Sequence[int]],
    legacy_ok: bool,
    setup: Optional[Tuple[Any, ...]] = None,
    /,
) -> None: ...
def unblock_signals() -> None: ...
def sigmask_hold() -> bytes: ...
def sigmask_restore(saved: bytes, /) -> None: ...
def sigmask_signals(saved: bytes, /) -> Set[int]: ...
def probe_clone3() -> int: ...
def tid_offset() -> int: ...
def thread_count() -> int: ...

HAVE_CLONE3_SPAWN: int
#: the setup tuple's field names, in the order clone() and spawn() read them
SETUP_FIELDS: Tuple[str, ...]

def libc_clone(child: Any, runner: Callable[[], int], flags: int, /) -> None: ...
def spawn(
    child: Any,
    /,
    *,
    mode: int,
    flags: int,
    exit_signal: int,
    cgroup_fd: int,
    set_tid: Optional[Sequence[int]],
    legacy_ok: bool,
    paths: Tuple[bytes, ...],
    argv: Tuple[bytes, ...],
    envp: Optional[Tuple[bytes, ...]],
    cwd: Optional[bytes],
    fds: Tuple[int, int, int],
    keep: Tuple[int, ...],
    close_fds: bool,
    setup: Optional[Tuple[Any, ...]],
    restore_signals: bool,
    process_group: int = -1,
) -> None: ...
