/*
 * kernel_verdict: what the running kernel answers to a clone3 request, for
 * tests/test_differential.py.  Built by the test with the system compiler.
 *
 * One request per line on stdin:
 *     <flags> <exit_signal> <cgroup> <n> <tid>...
 * flags and exit_signal as unsigned 64-bit decimals; cgroup "-" for none,
 * "fd:N" for the raw number N, or a path to open; n = -1 for no set_tid, else
 * the number of pids that follow (0 passes a set_tid pointer with size 0).
 * One answer per line on stdout: "child" (the kernel created the child),
 * "errno N", or "lost <what came back> <wait status>".
 *
 * Each request runs in a throwaway process ("inner"), forked per request, so
 * whatever the kernel accepts cannot hurt the test: the child runs a few
 * instructions on a stack of its own (clone3_fn from portclone's own
 * _clone3.h), writes one byte and exits, whatever the flags share.  All
 * signals are blocked in inner, so an exotic exit signal can only stop or
 * kill it, after the child has reported.  Children that CLONE_PARENT makes
 * ours are reaped here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "_clone3.h"

#ifndef __WALL
#define __WALL 0x40000000
#endif
#define STACK_SIZE (64 * 1024)
#define MAX_TIDS 64

/* The child may run with CLONE_SETTLS and a zero TLS pointer, so nothing here
 * may touch thread-local storage: the raw syscall() wrapper only reads errno
 * on failure, this file is built with -fno-stack-protector, and linked with
 * -z now (lazy binding of syscall() would mark the thread's TLS). */
static int
child_main(void *arg)
{
    syscall(SYS_write, *(int *)arg, "C", 1);
    return 0;
}

static void
inner(uint64_t flags, uint64_t exit_signal, const char *cgroup, long ntids, const int *tids,
      int report)
{
    sigset_t all;
    struct rlimit nocore = {0, 0};
    struct pc_clone_args args;
    int pidfd = -1, ptid = 0, ctid = 0, cgfd = -1;
    char line[32];
    void *stack;
    long r;

    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    setrlimit(RLIMIT_CORE, &nocore);
    if (strncmp(cgroup, "fd:", 3) == 0)
        cgfd = atoi(cgroup + 3);
    else if (strcmp(cgroup, "-") != 0 && (cgfd = open(cgroup, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(line, sizeof line, "O%d", errno);
        write(report, line, strlen(line));
        _exit(0);
    }
    stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stack == MAP_FAILED)
        _exit(3);
    memset(&args, 0, sizeof args);
    args.flags = flags;
    args.exit_signal = exit_signal;
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.parent_tid = (uint64_t)(uintptr_t)&ptid;
    args.child_tid = (uint64_t)(uintptr_t)&ctid;
    args.stack = (uint64_t)(uintptr_t)stack;
    args.stack_size = STACK_SIZE;
    /* "none" is -1, which the kernel reads as > INT_MAX: EINVAL when CLONE_INTO_CGROUP */
    args.cgroup = (uint64_t)(int64_t)cgfd;
    if (ntids >= 0) {
        args.set_tid = (uint64_t)(uintptr_t)tids;
        args.set_tid_size = (uint64_t)ntids;
    }
    r = clone3_fn(&args, sizeof args, child_main, &report);
    if (r < 0)
        snprintf(line, sizeof line, "E%ld", -r);
    else
        snprintf(line, sizeof line, "P%ld", r);
    write(report, line, strlen(line));
    _exit(0);
}

int
main(void)
{
    char cgroup[4096];
    unsigned long long flags, exit_signal;
    long ntids;
    int tids[MAX_TIDS];

    setvbuf(stdout, NULL, _IOLBF, 0);
    prctl(PR_SET_CHILD_SUBREAPER, 1); /* orphaned children come back here to be reaped */
    while (scanf("%llu %llu %4095s %ld", &flags, &exit_signal, cgroup, &ntids) == 4) {
        int p[2], status = 0, got_status = 0;
        char buf[256];
        size_t len = 0;
        pid_t pid;

        if (ntids > MAX_TIDS)
            return 2;
        for (long i = 0; i < ntids; i++)
            if (scanf("%d", &tids[i]) != 1)
                return 2;
        if (pipe2(p, O_CLOEXEC) < 0)
            return 2;
        pid = fork();
        if (pid < 0)
            return 2;
        if (pid == 0) {
            close(p[0]);
            inner(flags, exit_signal, cgroup, ntids, tids, p[1]);
        }
        close(p[1]);
        /* until every writer (inner, the child) is gone; an exit signal of
         * SIGSTOP stops inner, which then never closes its end: kill it */
        for (;;) {
            struct pollfd pfd = {p[0], POLLIN, 0};
            if (poll(&pfd, 1, 50) > 0) {
                ssize_t n = read(p[0], buf + len, sizeof buf - 1 - len);
                if (n <= 0)
                    break;
                len += (size_t)n;
                continue;
            }
            if (!got_status && waitpid(pid, &status, WNOHANG | WUNTRACED | __WALL) == pid) {
                if (WIFSTOPPED(status))
                    kill(pid, SIGKILL);
                else
                    got_status = 1;
            }
        }
        close(p[0]);
        while (waitpid(-1, got_status ? NULL : &status, __WALL) > 0 || errno == EINTR)
            got_status = 1;
        buf[len] = '\0';
        /* created is accepted, whether or not the child got to run (with
         * CLONE_SETTLS and a zero TLS pointer it may well crash) */
        if (strchr(buf, 'C') || strchr(buf, 'P'))
            printf("child\n");
        else if (buf[0] == 'E' || buf[0] == 'O')
            printf("errno %s\n", buf + 1);
        else
            printf("lost %s %d\n", buf, status);
    }
    return 0;
}
