/*
 * The parent's part of a child's setup, while the child waits: its uid and gid maps,
 * written in the child's own /proc directory, or by newuidmap and newgidmap.
 *
 * The mounted /proc may belong to another PID namespace than this process's (unshare -pf
 * without --mount-proc): there /proc/<pid> of the pid clone returned names another
 * process.  The directory is found through the child's pidfd and proved to be its own
 * before anything is written (open_child_dir).
 */
#include "_native.h"

#ifdef PC_HAVE_LIBC_CLONE
#if defined(__linux__)
#include <spawn.h>
#include <sys/vfs.h>
extern char **environ;

/* The start of a small /proc file, NUL-terminated in ``buf``; -1 with errno when it cannot
 * be opened.  Plain system calls: the parent runs this while the child waits. */
static int
read_text(const char *path, char *buf, size_t size)
{
    ssize_t n, got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    while (got < (ssize_t)size - 1) {
        n = read(fd, buf + got, size - 1 - (size_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += n;
    }
    close(fd);
    buf[got] = '\0';
    return 0;
}

/* The "Pid:" line of /proc/self/fdinfo/<pidfd>: the process's pid as the mounted /proc
 * numbers it, whatever PID namespace this process is in (torvalds/linux:fs/pidfs.c,
 * pidfd_show_fdinfo: 0 when that /proc's namespace cannot see the process, -1 once it
 * has exited).  -2 with errno set when it cannot be read. */
static long
pidfd_proc_pid(int pidfd)
{
    char path[48], buf[2048];
    const char *line;

    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
    if (read_text(path, buf, sizeof buf) != 0)
        return -2;
    line = strstr(buf, "\nPid:");
    if (line == NULL) {
        errno = ENOSYS; /* a kernel before 5.3 shows no Pid: line */
        return -2;
    }
    return strtol(line + 6, NULL, 10);
}

/* Whether a proc file system is mounted at /proc (one that may not show this process). */
static int
proc_mounted(void)
{
    struct statfs st;
    return statfs("/proc", &st) == 0 && st.f_type == 0x9fa0; /* PROC_SUPER_MAGIC */
}

/* Whether the mounted /proc belongs to this process's own PID namespace: its NSpid
 * line there then has one field (a /proc of an ancestor namespace shows one per level). */
static int
proc_is_ours(void)
{
    char buf[4096];
    const char *line;
    if (read_text("/proc/self/status", buf, sizeof buf) != 0)
        return 0;
    line = strstr(buf, "\nNSpid:");
    if (line == NULL)
        return 0;
    line += 7;
    while (*line == '\t' || *line == ' ')
        line++;
    while (*line >= '0' && *line <= '9')
        line++;
    return *line == '\n';
}

/* open_child_dir when this process may not read its own fdinfo: before Linux 5.14 those
 * files are mode 0400 and, for a process that is not dumpable (one that changed its uid),
 * root's (torvalds/linux 7bc3fa0172a4 made them readable by whoever may ptrace the
 * process).  /proc/<pid> is then the child's when /proc is this namespace's and the child
 * the pidfd names is still unreaped once the directory is open: until its reap, its pid
 * is its own.  -1 with errno set otherwise, as open_child_dir; EACCES when /proc is
 * another namespace's (only the fdinfo could have told which directory is the child's). */
static int
open_child_dir_unreaped(pid_t pid, int pidfd)
{
    char path[32];
    int dir;

    if (!proc_is_ours()) {
        errno = EACCES;
        return -1;
    }
    snprintf(path, sizeof path, "/proc/%ld", (long)pid);
    dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) {
        if (errno == ENOENT)
            errno = ESRCH; /* reaped by another */
        return -1;
    }
#if defined(SYS_pidfd_send_signal)
    /* signal 0 checks only: 0 until the reap (a zombie too), ESRCH after it */
    if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0 || errno == EPERM)
        return dir;
#else
    errno = EACCES;
#endif
    close(dir);
    return -1;
}

/* The child's /proc directory, proved to be the child's: the mounted /proc may belong to
 * another PID namespace (unshare -pf without --mount-proc), where /proc/<pid> of the pid
 * clone returned names another process.  With a pidfd, the directory of the pid its
 * fdinfo gives, checked again once open (a live process keeps its pid, so the directory
 * opened between two equal answers is its own); without one, /proc/<pid> only when /proc
 * is this namespace's.  -1 with errno set otherwise: ESRCH, the child has exited; EXDEV,
 * no directory of the mounted /proc can be proved to be the child's. */
static int
open_child_dir(pid_t pid, int pidfd, long *number)
{
    char path[32];
    long seen = pid, again;
    int dir;

    if (pidfd >= 0) {
        seen = pidfd_proc_pid(pidfd);
        if (seen == -2 && errno == EACCES)
            return open_child_dir_unreaped(pid, pidfd);
        if (seen == -2 && errno == ENOENT && !proc_mounted()) {
            errno = ENOENT; /* no /proc at all */
            return -1;
        }
        if (seen < -1 || seen == 0) {
            errno = EXDEV;
            return -1;
        }
        if (seen == -1) {
            errno = ESRCH;
            return -1;
        }
    }
    else if (!proc_is_ours()) {
        errno = proc_mounted() ? EXDEV : ENOENT;
        return -1;
    }
    snprintf(path, sizeof path, "/proc/%ld", seen);
    dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    if (pidfd >= 0 && (again = pidfd_proc_pid(pidfd)) != seen) {
        close(dir);
        errno = again == -1 ? ESRCH : EXDEV;
        return -1;
    }
    *number = seen;
    return dir;
}


/* newuidmap or newgidmap (``helper``: "path\0word\0..."), run as ``path <number> words``
 * with every signal unblocked and at its default, waited for.  0 when it exits 0; else
 * -1 with errno EPERM (it refused: its own message is on stderr) or the spawn's error.
 * The child cannot exit meanwhile (it waits for the go-ahead, and is ours to reap), so
 * its /proc number stays its own. */
#define PC_MAX_HELPER_WORDS 1100 /* 340 lines of 3 words, the path and the pid */
static int
run_map_helper(const char *helper, size_t len, long number)
{
    char *argv[PC_MAX_HELPER_WORDS + 1], pid_text[24];
    size_t at = 0;
    int n = 0, status;
    pid_t helper_pid;
    posix_spawnattr_t attr;
    sigset_t none, all;

    snprintf(pid_text, sizeof pid_text, "%ld", number);
    while (at < len && n < PC_MAX_HELPER_WORDS) {
        argv[n++] = (char *)helper + at;
        at += strlen(helper + at) + 1;
        if (n == 1)
            argv[n++] = pid_text;
    }
    argv[n] = NULL;
    sigemptyset(&none);
    sigfillset(&all);
    if ((errno = posix_spawnattr_init(&attr)) != 0)
        return -1;
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    errno = posix_spawn(&helper_pid, argv[0], NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    if (errno != 0)
        return -1;
    while (waitpid(helper_pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = EPERM;
        return -1;
    }
    return 0;
}

/* The parent's part, while the child waits: uid_map, setgroups, gid_map, written in the
 * child's /proc directory (open_child_dir), then the byte that lets it go on.  The first
 * failure stops (its file, or "proc" for the directory, in *what, errno in *err); closing
 * the go-ahead's pipe without a byte then ends the child. */
#endif /* __linux__ */

void
pc_setup_parent(struct pc_setup *s, pid_t pid, int pidfd, const char **what, int *err)
{
#if defined(__linux__)
    const char *files[3] = {"uid_map", "setgroups", "gid_map"};
    const char *data[3] = {s->uid_map, s->setgroups, s->gid_map};
    size_t len[3] = {s->uid_len, s->setgroups_len, s->gid_len};
    const char *helper[3] = {s->uid_helper, NULL, s->gid_helper};
    size_t helper_len[3] = {s->uid_helper_len, 0, s->gid_helper_len};
    int dir;
    long number = 0;

    *what = NULL;
    pc_setup_close_one(s, PC_SYNC_R);
    dir = open_child_dir(pid, pidfd, &number);
    if (dir < 0)
        *what = "proc";
    for (int i = 0; i < 3 && *what == NULL; i++) {
        if (helper[i] != NULL) {
            if (run_map_helper(helper[i], helper_len[i], number) != 0)
                *what = files[i];
        }
        else if (data[i] != NULL && pc_write_file(dir, files[i], data[i], len[i]) != 0)
            *what = files[i];
    }
    if (*what == NULL && s->syncpipe[1] >= 0 && write(s->syncpipe[1], "g", 1) != 1)
        *what = "go-ahead"; /* EPIPE: the child is gone */
    if (*what != NULL)
        *err = errno;
    if (dir >= 0)
        close(dir);
    pc_setup_close_one(s, PC_SYNC_W); /* without a byte, the child just exits */
#else
    *what = NULL;
    (void)s;
    (void)pid;
    (void)pidfd;
    (void)err;
#endif
}

#endif /* PC_HAVE_LIBC_CLONE */
