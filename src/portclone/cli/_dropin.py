"""What ``portclone unshare`` and ``portclone nsenter`` share: util-linux's process model.

Both end by *becoming* the program (execvp in the same process, so a signal, SIGKILL or
a terminal's job control reaches the program itself), after an optional fork whose parent
waits and then ends as the program ended.  Errors are one line, ``PROG: what: why``, with
util-linux's exit statuses: 1 for the tool's own failures and usage errors, 126 for a
program that cannot be run, 127 for one that is not found.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

from .._common import LINUX, TYPE_CHECKING, NamedTuple
from .._flags import INFO, OPTION, CloneFlags
from ._getopt import GetoptError, Opt, getopt_long

if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Union

    from ._getopt import Found

#: Namespaces by util-linux's long option, with their letter, their name under
#: /proc/PID/ns (the one a persistent file binds: the children's for pid and time) and flag.
F = CloneFlags


class Namespace(NamedTuple):
    option: str
    letter: str
    ns: str
    persist: str
    flag: CloneFlags


NAMESPACES = (
    Namespace("mount", "m", "mnt", "mnt", F.CLONE_NEWNS),
    Namespace("uts", "u", "uts", "uts", F.CLONE_NEWUTS),
    Namespace("ipc", "i", "ipc", "ipc", F.CLONE_NEWIPC),
    Namespace("net", "n", "net", "net", F.CLONE_NEWNET),
    Namespace("pid", "p", "pid", "pid_for_children", F.CLONE_NEWPID),
    Namespace("user", "U", "user", "user", F.CLONE_NEWUSER),
    Namespace("cgroup", "C", "cgroup", "cgroup", F.CLONE_NEWCGROUP),
    Namespace("time", "T", "time", "time_for_children", F.CLONE_NEWTIME),
)
BY_OPTION: Dict[str, Namespace] = {n.option: n for n in NAMESPACES}


class Failure(Exception):
    """The tool's own failure: its message, and the exit status (1 unless said); for a
    failed system call, ``step`` (what failed, as the message begins) and its ``errno``."""

    def __init__(self, message: str, status: int = 1, step: str = "", errno: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.step = step
        self.errno = errno


def os_failure(what: str, error: OSError) -> Failure:
    """``what: strerror``, as err(3) words it."""
    return Failure(f"{what}: {error.strerror or error}", step=what, errno=error.errno or 0)


class Tool:
    """One drop-in command: its options and --help, and its three steps: ``parse`` the
    options found into a request, ``refuse`` what the backend cannot do, ``execute``."""

    def __init__(
        self,
        name: str,
        opts: Sequence[Opt],
        help_text: Union[str, Callable[[], str]],
        parse: Callable[[Found], Any],
        refuse: Callable[[Any], None],
        execute: Callable[[Any, List[str]], int],
    ) -> None:
        self.name = self.prog = name
        self.opts = opts
        self.help_text = help_text
        self.steps = (parse, refuse, execute)

    def main(self, argv: Sequence[str], prog: str) -> int:
        """The command under the name ``prog``; its Failure printed as one line and
        turned into the exit status."""
        self.prog = PROG_NAME[0] = prog
        try:
            return self._main(argv)
        except Failure as e:
            flush()
            if str(e):  # else: said already, by the helper that failed
                say(f"{self.prog}: {e}")
            return e.status

    def _main(self, argv: Sequence[str]) -> int:
        try:
            found, command = getopt_long(argv, self.opts)
        except GetoptError as e:
            raise Failure(f"{e} (try '{self.prog} --help')") from None
        for opt, _ in found:
            if opt.long == "help":
                text = self.help_text if isinstance(self.help_text, str) else self.help_text()
                print(text.format(prog=self.prog), end="")
                return 0
            if opt.long == "version":
                from .. import __version__

                # util-linux's form, whose last word scripts read: the release whose
                # options these are
                print(f"{self.prog} (portclone {__version__}) from util-linux {GRAMMAR}")
                return 0
        parse, refuse, execute = self.steps
        request = parse(found)
        refuse(request)
        return execute(request, command)


def set_ids(uid: Optional[int], gid: Optional[int], setgroups_may_fail: bool = False) -> None:
    """-S and -G: the supplementary groups dropped, then the gid, then the uid (setgroups
    and setgid first: after setuid they would be refused)."""
    if gid is not None:
        try:
            os.setgroups([])
        except OSError as e:
            if not setgroups_may_fail:
                raise os_failure("setgroups failed", e) from None
        try:
            os.setgid(gid)
        except OSError as e:
            raise os_failure("setgid() failed", e) from None
    if uid is not None:
        try:
            os.setuid(uid)
        except OSError as e:
            raise os_failure("setuid() failed", e) from None


def keep_caps() -> None:
    """--keep-caps: the permitted capabilities made ambient, to survive the exec."""
    from . import _syscalls

    try:
        _syscalls.permitted_to_ambient()
    except OSError as e:
        raise os_failure("capset failed", e) from None


#: The util-linux release whose options the drop-ins take (2.38's, and the newer ones).
GRAMMAR = "2.41"


def say(line: str) -> None:
    """One line on stderr, with the bytes of a non-UTF-8 argument as given."""
    data = (line + "\n").encode(errors="surrogateescape")
    stream = getattr(sys.stderr, "buffer", None)
    if stream is None:
        print(line, file=sys.stderr)
        return
    sys.stderr.flush()
    stream.write(data)
    stream.flush()


def flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass


NO_FLAG = F(0)


def backend_refusal(flag: CloneFlags = NO_FLAG, option: str = "") -> Optional[str]:
    """None when the backend in force honours the namespace ``flag`` or the setup
    ``option`` for a program, else its reason.  The linux backend leaves the answer to the
    kernel, as util-linux does."""
    name = backend_name()
    if name == "linux":
        return None
    if option:
        return OPTION[option].reason(name)
    return INFO[int(flag)].reason(name, exec_child=True)


def pidfd_open(pid: int, flags: int = 0) -> int:
    """os.pidfd_open, which only Linux's os has (the paths that call it run only under the
    linux backend's rules)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        raise OSError(errno.ENOSYS, "pidfd_open is Linux's")
    return int(opener(pid, flags))


def task_pidfd(pid: int) -> int:
    """A pidfd of process or thread ``pid``, as nsenter's -t takes either: a thread other
    than its process's first has a pidfd of its own (PIDFD_THREAD, O_EXCL: Linux 6.9)."""
    try:
        return pidfd_open(pid)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EINVAL):
            raise
        try:
            return pidfd_open(pid, os.O_EXCL)
        except OSError:
            raise e from None


def backend_name() -> str:
    """The rules the drop-ins follow: ``PORTCLONE_BACKEND``'s backend where it names one,
    as the library's calls would; else, on Linux, the linux backend's, whether or not the
    C extension loads, since the drop-ins make the Linux calls themselves (os, ctypes) and
    never need it; elsewhere the backend in force."""
    chosen = os.environ.get("PORTCLONE_BACKEND", "").strip()
    if not chosen and LINUX:
        return "linux"
    from .. import current_backend

    return current_backend().name


def unsigned(text: str) -> Optional[int]:
    """``text`` as strtoul reads a whole unsigned number (leading blanks, an optional "+",
    ASCII digits and nothing after), or None."""
    word = text.lstrip(" \t\n\v\f\r")
    if word.startswith("+"):
        word = word[1:]
    if not word or not word.isascii() or not word.isdigit():
        return None
    return int(word)


def signal_number(text: str) -> int:
    """A signal by name (TERM, SIGTERM, RTMIN+3), as util-linux's signame_to_signum takes
    it: not by number."""
    upper = text.upper()
    name = upper[3:] if upper.startswith("SIG") else upper
    low, high = getattr(signal, "SIGRTMIN", 0), getattr(signal, "SIGRTMAX", 0)  # not macOS'
    for base in ("RTMIN", "RTMAX"):
        if name.startswith(base) and low:
            rest = name[len(base) :]
            offset = unsigned(rest[1:]) if rest[:1] in ("+", "-") else None if rest else 0
            if offset is None:
                break
            sig = int(getattr(signal, "SIG" + base)) + (-offset if rest[:1] == "-" else offset)
            if low <= sig <= high:
                return sig
    if name.isascii() and "SIG" + name in signal.Signals.__members__ and not name.startswith("RT"):
        return int(signal.Signals["SIG" + name])
    raise Failure(f"unknown signal: {text}")


def number(text: str, what: str) -> int:
    """strtoul_or_err's manners: a whole non-negative number, else "failed to parse WHAT"."""
    value = unsigned(text)
    if value is not None and value < 2**32:
        return value
    raise Failure(f"failed to parse {what}: '{text}'")


def user_id(text: str, database: str) -> int:
    """A uid or gid by number or name (unshare's --map-user/--map-group)."""
    value = unsigned(text)
    if value is not None and value < 2**32:
        return value
    import grp
    import pwd

    try:
        return pwd.getpwnam(text).pw_uid if database == "user" else grp.getgrnam(text).gr_gid
    except KeyError:
        raise Failure(f"failed to parse {'uid' if database == 'user' else 'gid'}: '{text}'") from None


def reset_signals_for_exec() -> None:
    """Python ignores SIGPIPE and SIGXFSZ for itself; a program gets them back at their
    default, as it would from a shell (subprocess's restore_signals)."""
    for name in ("SIGPIPE", "SIGXFSZ"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)


def execvp(command: List[str]) -> NoReturn:
    """Become ``command`` (execvp(3): PATH searched, a file without "#!" run by /bin/sh);
    else exit 127 when it is not found and 126 when it cannot be run."""
    reset_signals_for_exec()
    flush()
    try:
        if not command[0]:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        try:
            os.execvp(command[0], command)
        except OSError as e:
            if e.errno != errno.ENOEXEC:
                raise
            os.execv("/bin/sh", ["/bin/sh", *command])
    except OSError as e:
        code = 127 if e.errno in (errno.ENOENT, errno.ENOTDIR) else 126
        say(f"{PROG_NAME[0]}: failed to execute {command[0]}: {e.strerror}")
        flush()
        os._exit(code)
    raise AssertionError("unreachable")


def exec_shell() -> NoReturn:
    """$SHELL (else the user's login shell, else /bin/sh) as a login shell, as the tools
    start one when no program is given."""
    shell = os.environ.get("SHELL")  # set but empty: used, and fails, as util-linux's
    if shell is None:
        try:
            import pwd

            shell = pwd.getpwuid(os.getuid()).pw_shell
        except (KeyError, ImportError):
            shell = None
    shell = "/bin/sh" if shell is None else shell
    reset_signals_for_exec()
    flush()
    try:
        if not shell:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        os.execv(shell, ["-" + os.path.basename(shell)])
    except OSError as e:
        say(f"{PROG_NAME[0]}: failed to execute {shell}: {e.strerror}")
        flush()
        os._exit(127 if e.errno == errno.ENOENT else 126)


def become(command: List[str]) -> NoReturn:
    if command:
        execvp(command)
    exec_shell()


def end_as(status: int) -> int:
    """The waiting parent's end: the child's exit status, or death by its signal."""
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        flush()
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
    raise Failure("child exit failed")


#: The name errors are printed under; set by each command's entry point.
PROG_NAME = ["portclone"]
