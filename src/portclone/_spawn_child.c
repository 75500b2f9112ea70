/*
 * spawn's child, from the clone to the exec (_spawn.c is the parent's side).  It is
 * created with CLONE_VM (and CLONE_VFORK), so it shares the parent's memory until it
 * execs: it runs C only, on a stack of its own: no Python, no malloc, no locks,
 * async-signal-safe calls only, everything it needs prepared by the parent beforehand
 * in a struct spawn_child (as glibc's posix_spawn does:
 * bminor/glibc:sysdeps/unix/sysv/linux/spawni.c).  It resets caught handlers to
 * SIG_DFL before it unblocks the signals (python/cpython:Modules/_posixsubprocess.c,
 * reset_signal_handlers), so no parent handler can run on its stack; it sets up its
 * namespaces (_setup.c), process group, fds 0-2, the fds it keeps and its cwd, and
 * execs.  A failure reaches the parent as (stage, errno): in the memory it shares with a
 * parent it holds until the exec, else through a close-on-exec pipe.
 */
#include "_spawn.h"

#ifdef PC_HAVE_LIBC_CLONE

#include <dirent.h>
#include <limits.h>
#include <sys/resource.h>

extern char **environ;

static void
child_fail(const struct spawn_child *c, int stage, int err)
{
    if (c->errpipe >= 0)
        pc_report(c->errpipe, stage, err);
    else {
        c->report->stage = stage;
        c->report->err = err;
        c->report->made = 1;
    }
    _exit(127);
}

static int
is_kept(const struct spawn_child *c, int fd)
{
    for (int i = 0; i < c->nkeep; i++)
        if (c->keep[i] == fd)
            return 1;
    return 0;
}

#if defined(__linux__)
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
/* close_range(first, last, flags) over every descriptor >= 3 but the kept ones and
 * ``spare`` (-1: none), in the ranges between them. */
static int
close_range_except(const struct spawn_child *c, int spare, unsigned int flags)
{
    unsigned int first = 3;
    int i = 0, spare_done = spare < 3;

    for (;;) {
        int next; /* the next descriptor to leave alone; -1: none is left */
        if (!spare_done && (i >= c->nkeep || spare <= c->keep[i])) {
            next = spare;
            spare_done = 1;
        }
        else if (i < c->nkeep)
            next = c->keep[i++];
        else
            next = -1;
        if (next >= 0 && (unsigned int)next < first)
            continue; /* below 3, or already passed */
        if (next < 0)
            return syscall(SYS_close_range, first, ~0U, flags) == 0 ? 0 : -1;
        if ((unsigned int)next > first &&
            syscall(SYS_close_range, first, (unsigned int)next - 1, flags) != 0)
            return -1;
        first = (unsigned int)next + 1;
    }
}
#endif

/* Mark every descriptor >= 3 but the kept ones close-on-exec, or close it now: nothing
 * leaks into the new program (the error pipe is close-on-exec already).  In order:
 * close_range's CLOSE_RANGE_CLOEXEC (Linux 5.11); close_range itself (5.9), sparing the
 * error pipe; the descriptors /proc/self/fd lists; without /proc, every number below
 * RLIMIT_NOFILE, as CPython's _posixsubprocess does. */
static int
mark_cloexec_from_3(const struct spawn_child *c)
{
#if defined(__linux__)
    if (close_range_except(c, -1, CLOSE_RANGE_CLOEXEC) == 0 ||
        close_range_except(c, c->errpipe, 0) == 0)
        return 0;
    {
        char buf[4096];
        int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        long n;
        if (dir < 0) {
            struct rlimit rl;
            if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
                return -1;
            for (rlim_t fd = 3; fd < rl.rlim_cur && fd < (rlim_t)INT_MAX; fd++)
                if (!is_kept(c, (int)fd))
                    pc_fcntl((int)fd, F_SETFD, FD_CLOEXEC); /* EBADF: not open */
            return 0;
        }
        while ((n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
            for (long off = 0; off < n;) {
                struct dirent64 *d = (struct dirent64 *)(buf + off);
                int fd = 0, digits = 0;
                for (const char *p = d->d_name; *p >= '0' && *p <= '9'; p++, digits++)
                    fd = fd * 10 + (*p - '0');
                if (digits && d->d_name[digits] == '\0' && fd >= 3 && fd != dir &&
                    !is_kept(c, fd))
                    pc_fcntl(fd, F_SETFD, FD_CLOEXEC);
                off += d->d_reclen;
            }
        }
        close(dir);
        return n < 0 ? -1 : 0;
    }
#elif defined(__NetBSD__)
    int top = pc_fcntl(0, F_MAXFD, 0); /* NetBSD: the highest open descriptor */
    for (int fd = 3; fd <= top; fd++)
        if (!is_kept(c, fd))
            pc_fcntl(fd, F_SETFD, FD_CLOEXEC);
    return 0;
#else
    return -1;
#endif
}

/* The child's whole life: ``arg`` is the struct spawn_child the parent filled; it
 * execs or _exits with 127. */
int
pc_spawn_child_main(void *arg)
{
    const struct spawn_child *c = arg;
    int src[3];
    int err, stage, saw_eacces = 0;

    /* First, before any call that can fail: this child shares the parent's memory and
     * thread pointer, so libc's errno is the parent thread's.  With maps the parent is
     * not suspended (no CLONE_VFORK): it writes them while the setup waits for them, and
     * reads errno when a write fails.  A failing call before that wait would overwrite
     * it, and the parent would report the wrong error. */
    if (c->setup->present && pc_setup_child(c->setup, &stage) != 0)
        child_fail(c, stage, errno);
    if (c->reset_handlers) {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++) {
            struct sigaction sa;
            if (sig == SIGKILL || sig == SIGSTOP)
                continue;
            if (sigaction(sig, NULL, &sa) != 0) /* libc-internal signals: EINVAL */
                continue;
            if ((sa.sa_flags & SA_SIGINFO) || (sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL))
                sigaction(sig, &dfl, NULL);
        }
        if (c->restore_signals) { /* as subprocess's restore_signals=True */
            sigaction(SIGPIPE, &dfl, NULL);
#ifdef SIGXFSZ
            sigaction(SIGXFSZ, &dfl, NULL);
#endif
        }
    }

    if (c->process_group >= 0 && setpgid(0, (pid_t)c->process_group) != 0)
        child_fail(c, PC_STAGE_PROCESS_GROUP, errno);

    if (c->setup_fds) {
        for (int i = 0; i < 3; i++)
            src[i] = c->fds[i];
        /* Sources among 0..2 that another dup2 would overwrite move up first. */
        for (int i = 0; i < 3; i++) {
            if (src[i] >= 0 && src[i] < 3 && src[i] != i) {
                int old = src[i];
                int moved = pc_fcntl(old, F_DUPFD_CLOEXEC, 3);
                if (moved < 0)
                    child_fail(c, PC_STAGE_FDS, errno);
                for (int j = 0; j < 3; j++)
                    if (src[j] == old)
                        src[j] = moved;
            }
        }
        for (int i = 0; i < 3; i++) {
            if (src[i] < 0)
                continue;
            if (src[i] == i) {
                if (pc_fcntl(i, F_SETFD, 0) != 0) /* keep it across exec */
                    child_fail(c, PC_STAGE_FDS, errno);
            }
            else if (dup2(src[i], i) < 0) { /* dup2 clears close-on-exec on i */
                child_fail(c, PC_STAGE_FDS, errno);
            }
        }
        if (c->close_fds && mark_cloexec_from_3(c) != 0)
            child_fail(c, PC_STAGE_FDS, errno);
        for (int i = 0; i < c->nkeep; i++)
            if (pc_fcntl(c->keep[i], F_SETFD, 0) != 0)
                child_fail(c, PC_STAGE_FDS, errno);
    }
    if (c->cwd != NULL && chdir(c->cwd) != 0)
        child_fail(c, PC_STAGE_CHDIR, errno);

    sigprocmask(SIG_SETMASK, &c->mask, NULL);
    err = ENOENT;
    for (char **path = c->paths; *path != NULL; path++) {
        execve(*path, c->argv, c->envp != NULL ? c->envp : environ);
        err = errno;
        if (err == EACCES)
            saw_eacces = 1;
        else if (err != ENOENT && err != ENOTDIR)
            break; /* a real failure: stop searching, as execvp does */
    }
    if (saw_eacces && (err == ENOENT || err == ENOTDIR))
        err = EACCES;
    child_fail(c, PC_STAGE_EXEC, err);
    return 127;
}

#endif /* PC_HAVE_LIBC_CLONE */
