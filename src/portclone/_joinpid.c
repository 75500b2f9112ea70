/*
 * Making the child in the PID namespace of join={"pid": ...}, for clone() and spawn().
 *
 * setns(CLONE_NEWPID) changes only the calling thread's namespace for its next children
 * (pid_namespaces(7)).  Two ways, in nsenter's order (util-linux:sys-utils/nsenter.c:
 * every namespace but the user one first, while the caller has its privilege; then the
 * user namespace and what failed before it):
 *
 *   PC_PID_THREAD  the calling thread enters the namespace just around the clone, every
 *                  signal blocked, and goes back.  The way back is tried first: Linux lets
 *                  a thread enter a PID namespace only with CAP_SYS_ADMIN over its owning
 *                  user namespace and in its own (torvalds/linux:kernel/pid_namespace.c,
 *                  pidns_install), which a thread in a user namespace lacks for the one it
 *                  came from.
 *   PC_PID_HELPER  when the thread may not, and join= names a user namespace too (a
 *                  rootless container: nsenter --preserve-credentials -U -p): a helper
 *                  process, fork-like, enters the user namespace (gaining its privilege),
 *                  then the PID namespace, and makes the child with CLONE_PARENT, so that
 *                  the child is the caller's, with the caller's exit signal: a CLONE_PARENT
 *                  child takes its creator's (kernel/fork.c, copy_process), and clone3
 *                  refuses one of its own with it (clone3_args_valid).  The helper
 *                  shares the caller's descriptor table (CLONE_FILES: setns into a user
 *                  namespace refuses only a shared filesystem context, kernel/user_namespace.c,
 *                  userns_install), so the child's pidfd (CLONE_PIDFD) is the caller's
 *                  from the clone on, as without a helper: no other reaper can take the
 *                  child's status first.  The helper writes the child's pid and pidfd (or
 *                  the failure) to a pipe and exits; the caller reaps it, then reads.
 *
 * The helper runs C only, async-signal-safe: it is a copy of a process that may have
 * other threads.  It is made with the raw system call, so no at-fork handler runs.
 */
#include "_native.h"

#if defined(PC_HAVE_LIBC_CLONE) && defined(__linux__)

#include "_clone3.h"

/* The helper's report: the child's pid (in the caller's PID namespace, which is the
 * helper's own) and pidfd, or -1 and the errno; which call made it; PC_STAGE_JOIN when the
 * helper could not enter the namespaces. */
struct helper_report {
    pid_t pid;
    int pidfd; /* in the table the helper shares with the caller */
    int err;
    int used;
    int stage;
};


static int
joins_user(const struct pc_setup *s)
{
    for (int i = 0; i < s->njoin; i++)
        if (s->join_type[i] == PC_CLONE_NEWUSER && !(s->join_entered & (1 << i)))
            return 1;
    return 0;
}

int
pc_pid_enter(const struct pc_setup *s, unsigned long long flags)
{
    int err;
    if (s->pid_ns < 0)
        return PC_PID_NONE;
    if (setns(s->pid_restore, PC_CLONE_NEWPID) == 0) {
        if (setns(s->pid_ns, PC_CLONE_NEWPID) == 0)
            return PC_PID_THREAD;
        err = errno;
    }
    else
        err = errno == EPERM ? EACCES : errno; /* the way back is closed: _errors says so */
    /* CLONE_PARENT: a helper's child would be the caller's, not the caller's parent's */
    if ((err == EPERM || err == EACCES) && joins_user(s) && !(flags & PC_CLONE_PARENT))
        return PC_PID_HELPER;
    errno = err;
    return -1;
}

int
pc_pid_leave(const struct pc_setup *s)
{
    return setns(s->pid_restore, PC_CLONE_NEWPID);
}

/* fork() without libc, sharing the descriptor table: no at-fork handler runs (they may
 * take locks another thread holds), and the exit signal is ``exit_signal``, which the
 * helper's CLONE_PARENT child takes. */
static pid_t
raw_fork(int exit_signal)
{
    struct pc_clone_args args;
    long pid;
    unsigned long flags = (unsigned long)PC_CLONE_FILES;

    memset(&args, 0, sizeof args);
    args.flags = PC_CLONE_FILES;
    args.exit_signal = (uint64_t)exit_signal;
    if (!pc_clone3_enosys) {
        pid = syscall(SYS_clone3, &args, (size_t)PC_CLONE_ARGS_SIZE_VER0);
        if (pid >= 0 || errno != ENOSYS)
            return (pid_t)pid;
    }
    /* legacy clone: only the flags' place differs among the architectures portclone knows
     * (s390 takes the stack first); a fork-like child needs no stack, tls or tid pointers */
#if defined(__s390__) || defined(__s390x__)
    pid = syscall(SYS_clone, 0UL, flags | (unsigned long)exit_signal, 0UL, 0UL, 0UL);
#else
    pid = syscall(SYS_clone, flags | (unsigned long)exit_signal, 0UL, 0UL, 0UL, 0UL);
#endif
    return (pid_t)pid;
}

pid_t
pc_helper_start(struct pc_setup *s, int exit_signal, int fds[2])
{
    pid_t helper;
    int err;

    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    helper = raw_fork(exit_signal);
    if (helper != 0) {
        if (helper < 0) {
            err = errno;
            close(fds[0]);
            close(fds[1]);
            errno = err;
        }
        return helper;
    }
    /* the helper: the user namespace first (its privilege), then the PID namespace.  It
     * closes nothing: the table is the caller's, whose fds these are. */
    for (int i = 0; i < s->njoin; i++) {
        if (s->join_type[i] != PC_CLONE_NEWUSER || (s->join_entered & (1 << i)))
            continue;
        if (setns(s->join_fd[i], PC_CLONE_NEWUSER) != 0)
            break;
        s->join_entered |= 1 << i; /* the child skips it; its copy of the fd is closed there */
    }
    if (joins_user(s) || setns(s->pid_ns, PC_CLONE_NEWPID) != 0)
        pc_helper_report(fds[1], -1, -1, errno, USED_CLONE3, PC_STAGE_JOIN);
    return 0;
}

void
pc_helper_request(struct pc_request *rq)
{
    rq->flags |= PC_CLONE_PARENT;
    rq->exit_signal = 0; /* clone3 refuses one with CLONE_PARENT: the helper's is the child's */
}

void
pc_helper_child(const int fds[2])
{
    close(fds[0]); /* its own copies: the table it got at the clone is its own */
    close(fds[1]);
}

void
pc_helper_report(int fd, pid_t pid, int pidfd, int err, int used, int stage)
{
    struct helper_report r = {pid, pidfd, err, used, stage};
    ssize_t n;
    do
        n = write(fd, &r, sizeof r);
    while (n < 0 && errno == EINTR);
    _exit(0);
}

void
pc_helper_result(pid_t helper, const int fds[2], struct pc_helper_result *out)
{
    struct helper_report r = {-1, -1, ECHILD, USED_CLONE3, PC_STAGE_CLONE};
    ssize_t n;

    /* The helper writes before it exits; once it has exited (reaped here, or by another
     * reaper: ECHILD), its report is in the pipe or never comes (killed from outside).
     * EOF cannot tell: the write end is in this table too. */
    pc_reap(helper);
    (void)pc_fcntl(fds[0], F_SETFL, O_NONBLOCK);
    do
        n = read(fds[0], &r, sizeof r);
    while (n < 0 && errno == EINTR);
    close(fds[0]);
    close(fds[1]);
    if (n != (ssize_t)sizeof r) {
        r.pid = -1;
        r.pidfd = -1;
        r.err = ECHILD; /* the helper died before it said */
    }
    out->pid = r.pid;
    out->pidfd = r.pid > 0 ? r.pidfd : -1;
    out->err = r.pid > 0 ? 0 : r.err;
    out->used = r.used;
    out->stage = r.stage;
}

#endif
