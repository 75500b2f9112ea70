from typing import Optional, Sequence, Tuple

ABI: int
MODE_FORK: int
MODE_CLONE3: int
MODE_LEGACY: int
USED_FORK: int
USED_CLONE3: int
USED_CLONE: int
ARCH: str
LEGACY_CLONE_ORDER: str
SYS_CLONE: int
SYS_CLONE3: int

def clone(
    mode: int, flags: int, exit_signal: int, cgroup_fd: int,
    set_tid: Optional[Sequence[int]], legacy_ok: bool, /,
) -> Tuple[int, int, int]: ...
def probe_clone3() -> int: ...
def tid_offset() -> int: ...
def thread_count() -> int: ...
HAVE_CLONE3_SPAWN: int
def libc_clone(flags: int, /) -> int: ...
def spawn(
    mode: int, flags: int, exit_signal: int, cgroup_fd: int, set_tid: Optional[Tuple[int, ...]],
    legacy_ok: bool, paths: Tuple[bytes, ...], argv: Tuple[bytes, ...],
    envp: Optional[Tuple[bytes, ...]], cwd: Optional[bytes], fds: Tuple[int, int, int],
    keep: Tuple[int, ...], close_fds: bool,
    maps: Optional[Tuple[Optional[bytes], Optional[bytes], bool]], hostname: Optional[bytes],
    restore_signals: bool, /,
) -> Tuple[int, int, int]: ...
