/*
 * Fork-like children: clone() and libc_clone().  Each child is created the way
 * CPython's os.fork creates one (python/cpython:Modules/posixmodule.c, os_fork_impl):
 * PyOS_BeforeFork(), the system call, then PyOS_AfterFork_Child() or
 * PyOS_AfterFork_Parent(), with no Python code in between.  The child then lives in
 * _clone_child.c; the parent hands it to its Child (pc_adopt, _pidfd_owner.c).
 *
 * Three ways to make the child, chosen by the caller:
 *   MODE_FORK    libc fork(): used when the request is plain fork semantics,
 *                so the child gets libc's own fork protections (malloc arena
 *                and stdio locks are reset; bminor/glibc:posix/fork.c).
 *   MODE_CLONE3  clone3(2), falling back to legacy clone(2) when clone3
 *                answers ENOSYS (remembered for the process), or EPERM and the
 *                caller said the request fits legacy clone (seccomp filters
 *                answer EPERM: moby/moby#42680; rust-lang/rust#81825).
 *   MODE_LEGACY  legacy clone(2) only.
 *
 * Raw clone skips libc's fork bookkeeping.  The one piece we repair is the
 * thread id libc caches in its thread descriptor: without it, calls based on
 * pthread_self() in the child act on the parent's thread.  We find where
 * the descriptor keeps the tid at run time (tid_offset, _threads.c) and let the
 * kernel write the child's tid there with CLONE_CHILD_SETTID, as glibc's own fork
 * does with arch_fork(&THREAD_SELF->tid) (bminor/glibc:sysdeps/nptl/_Fork.c).
 */
#include "_native.h"

#if defined(__linux__)
#include <sys/eventfd.h>
#endif

#ifdef PC_HAVE_LIBC_CLONE
#include <setjmp.h>
#endif

#if defined(__linux__)

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/*
 * Legacy clone's raw argument order depends on the architecture
 * (man clone(2), "C library/kernel differences"; kernel/fork.c and the
 * CONFIG_CLONE_BACKWARDS* options of arch/[*]/Kconfig).  A fork-like child
 * needs no stack and no TLS, so only the pointers' places matter.
 */
#if defined(__s390__) || defined(__s390x__)
#define PC_CLONE_ORDER "stack, flags, ptid, ctid, tls" /* CLONE_BACKWARDS2 */
#define PC_LEGACY_CLONE(f, ptid, ctid) syscall(SYS_clone, 0UL, (f), (ptid), (ctid), 0UL)
#elif defined(__i386__) || defined(__arm__) || defined(__aarch64__) || \
    defined(__powerpc__) || defined(__mips__)
#define PC_CLONE_ORDER "flags, stack, ptid, tls, ctid" /* CLONE_BACKWARDS */
#define PC_LEGACY_CLONE(f, ptid, ctid) syscall(SYS_clone, (f), 0UL, (ptid), 0UL, (ctid))
#elif defined(__x86_64__)
#define PC_CLONE_ORDER "flags, stack, ptid, ctid, tls"
#define PC_LEGACY_CLONE(f, ptid, ctid) syscall(SYS_clone, (f), 0UL, (ptid), (ctid), 0UL)
#else
/* An architecture whose order we have not verified: clone3 only. */
#define PC_CLONE_ORDER ""
#endif

#ifdef PORTCLONE_MUTATE_CLONE_ORDER
/*
 * MUTATION TEST ONLY, never for a real build: x86_64's order on every architecture,
 * so that the guest matrix can show that a wrong order fails its guest
 * (vm/vmctl.py mutation GUEST, vm/README.md "Mutation check").
 */
#undef PC_CLONE_ORDER
#undef PC_LEGACY_CLONE
#define PC_CLONE_ORDER "flags, stack, ptid, ctid, tls (MUTATED: PORTCLONE_MUTATE_CLONE_ORDER)"
#define PC_LEGACY_CLONE(f, ptid, ctid) syscall(SYS_clone, (f), 0UL, (ptid), (ctid), 0UL)
#endif

/* The module's LEGACY_CLONE_ORDER: the raw argument order PC_LEGACY_CLONE uses ("": none) */
const char pc_legacy_clone_order[] = PC_CLONE_ORDER;

struct outcome {
    pid_t pid;
    int pidfd;
    int used;
    int err;     /* errno of the failure, 0 on success */
    int clone3_err; /* what clone3 answered when we then tried legacy clone */
};

static void
do_clone3(const struct pc_request *rq, int *pidfd, pid_t *tid_field, struct outcome *out)
{
    struct pc_clone_args args;
    size_t size = pc_fill_clone_args(&args, rq, pidfd);

    if (tid_field != NULL) {
        args.flags |= PC_CLONE_CHILD_SETTID;
        args.child_tid = (uint64_t)(uintptr_t)tid_field;
    }
    out->pid = (pid_t)syscall(SYS_clone3, &args, size);
    out->used = USED_CLONE3;
}

static void
do_legacy_clone(const struct pc_request *rq, int *pidfd, pid_t *tid_field, struct outcome *out)
{
#ifdef PC_LEGACY_CLONE
    unsigned long flags = (unsigned long)rq->flags | (unsigned long)(rq->exit_signal & PC_CSIGNAL);
    if (tid_field != NULL)
        flags |= (unsigned long)PC_CLONE_CHILD_SETTID;
    /* With CLONE_PIDFD, legacy clone returns the pidfd through ptid. */
    out->pid = (pid_t)PC_LEGACY_CLONE(flags, (rq->flags & PC_CLONE_PIDFD) ? pidfd : NULL, tid_field);
#else
    errno = ENOSYS;
    out->pid = -1;
#endif
    out->used = USED_CLONE;
}

/* Runs between PyOS_BeforeFork and PyOS_AfterFork_*: no Python, no GIL games. */
static void
make_child(int mode, const struct pc_request *rq, struct outcome *out)
{
    int pidfd = -1, reserve = -1;
    pid_t *tid_field = NULL;
    long off = mode == MODE_FORK ? -1 : tid_offset;

    if (off >= 0)
        tid_field = (pid_t *)((char *)pthread_self() + off);
    out->clone3_err = 0;

    if (mode == MODE_FORK && (rq->flags & PC_CLONE_PIDFD)) {
        /* A slot in the fd table for the pidfd, held across the fork: opening it
         * afterwards then cannot meet EMFILE, which would leave a child without the
         * pidfd it was promised.  Without a slot now, no child is made. */
        reserve = eventfd(0, EFD_CLOEXEC);
        if (reserve < 0) {
            out->err = errno;
            out->pid = -1;
            out->pidfd = -1;
            out->used = USED_FORK;
            return;
        }
    }
    if (mode == MODE_FORK) {
        out->pid = fork();
        out->used = USED_FORK;
        if (reserve >= 0)
            close(reserve); /* in the child too */
    }
    else if (mode == MODE_CLONE3 && !pc_clone3_enosys) {
        do_clone3(rq, &pidfd, tid_field, out);
        if (out->pid < 0 && (errno == ENOSYS || (errno == EPERM && rq->legacy_ok))) {
            out->clone3_err = errno;
            if (errno == ENOSYS)
                pc_clone3_enosys = 1;
            if (rq->legacy_ok)
                do_legacy_clone(rq, &pidfd, tid_field, out);
            if (out->pid < 0 && errno == EPERM && out->clone3_err == EPERM)
                out->used = USED_CLONE3; /* both refused it: the privilege is missing, and
                                          * clone3 is the call the caller asked for */
        }
    }
    else if (mode == MODE_CLONE3 && !rq->legacy_ok) {
        errno = ENOSYS; /* remembered from an earlier call */
        out->clone3_err = ENOSYS;
        out->pid = -1;
        out->used = USED_CLONE3;
    }
    else {
        do_legacy_clone(rq, &pidfd, tid_field, out);
    }
    out->err = out->pid < 0 ? errno : 0;

    if (out->pid > 0 && mode == MODE_FORK && (rq->flags & PC_CLONE_PIDFD)) {
        /* The child is ours and unreaped: its pid cannot be reused yet. */
        pidfd = (int)syscall(SYS_pidfd_open, out->pid, 0);
        /* ESRCH: the child has already exited and the kernel reaped it (SIGCHLD ignored):
         * it exists no more, so it has no pidfd to give; its status is lost, as with
         * fork().  Any other failure (ENOMEM even with the slot): no child without its
         * pidfd. */
        if (pidfd < 0 && errno != ESRCH) {
            out->err = errno;
            kill(out->pid, SIGKILL);
            pc_reap(out->pid);
            out->pid = -1;
        }
    }
    out->pidfd = out->pid > 0 ? pidfd : -1;
}

/* join={"pid": ...} where this thread may not enter it (_joinpid.c): a helper enters the
 * user namespace and the PID namespace, and makes the child as ours (CLONE_PARENT).
 * Returns in the child (out->pid 0) and in the caller; *stage is PC_STAGE_JOIN when the
 * helper could not enter them. */
static void
make_child_via_helper(int mode, const struct pc_request *rq, struct pc_setup *s,
                      struct outcome *out, int *stage)
{
    struct pc_helper_result r;
    int fds[2];
    pid_t helper = pc_helper_start(s, rq->exit_signal, fds);

    out->clone3_err = 0;
    out->pidfd = -1;
    if (helper == 0) {
        struct pc_request in_ns = *rq;
        pc_helper_request(&in_ns);
        make_child(mode == MODE_LEGACY ? MODE_LEGACY : MODE_CLONE3, &in_ns, out);
        if (out->pid == 0) {
            pc_helper_child(fds);
            return;
        }
        pc_helper_report(fds[1], out->pid, out->pidfd, out->err, out->used, PC_STAGE_CLONE);
    }
    if (helper < 0) {
        out->pid = -1;
        out->err = errno;
        out->used = USED_CLONE3;
        return;
    }
    pc_helper_result(helper, fds, &r);
    out->pid = r.pid;
    out->pidfd = r.pidfd;
    out->err = r.err;
    out->used = r.used;
    *stage = r.stage;
}

/* In a new clone() child with a setup: set itself up (_setup.c), report, and go on to
 * Python only if all went well.  C only, every signal blocked. */
static void
child_setup(struct pc_setup *s)
{
    int stage = 0;
    close(s->errpipe[0]);
    if (pc_setup_child(s, &stage) != 0) {
        pc_report(s->errpipe[1], stage, errno);
        _exit(127);
    }
    pc_report(s->errpipe[1], 0, 0);
    close(s->errpipe[1]);
    if (s->syncpipe[0] >= 0)
        close(s->syncpipe[0]);
    pc_setup_close_child_fds(s); /* fn gets none of portclone's: a namespace fd pins it */
}

/* What the parent learns of a clone() child's setup. */
struct setup_outcome {
    const char *map_what; /* the maps' file whose writing failed, with err */
    int reported;         /* the child reported: stage, err (0: the setup is done) */
    int stage;
    int err;
};

/* In the parent, after the clone, no GIL, every signal blocked: write the maps while the
 * child waits, then read its report.  With CLONE_VFORK the child has exited by now and
 * its report is in the pipe; otherwise it comes before the caller's function runs. */
static void
await_setup(struct pc_setup *s, pid_t pid, int pidfd, int vfork, struct setup_outcome *o)
{
    struct pc_report r;
    ssize_t n;

    memset(o, 0, sizeof *o);
    if (s->have_maps)
        pc_setup_parent(s, pid, pidfd, &o->map_what, &o->err);
    if (o->map_what != NULL) {
        /* the failed map is the error: the child is killed and its report not waited for
         * (EOF may never come: a process another thread forked meanwhile may hold the pipe) */
        kill(pid, SIGKILL);
        return;
    }
    if (vfork) {
        int fl = pc_fcntl(s->errpipe[0], F_GETFL, 0);
        if (fl >= 0)
            (void)pc_fcntl(s->errpipe[0], F_SETFL, fl | O_NONBLOCK);
    }
    do
        n = read(s->errpipe[0], &r, sizeof r);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof r && o->map_what == NULL) {
        o->reported = 1;
        o->stage = r.stage;
        o->err = r.err;
    }
}

/* The child's setup failed: it has exited (or exits now); reap it unless it is the
 * caller's parent's (CLONE_PARENT), and raise where and why. */
static PyObject *
setup_failed(const struct setup_outcome *o, const struct outcome *out, unsigned long long flags)
{
    static const char *const attrs[] = {"portclone_stage", "portclone_syscall", "portclone_map",
                                        NULL};
    if (!(flags & PC_CLONE_PARENT))
        pc_reap(out->pid);
    if (out->pidfd >= 0)
        close(out->pidfd);
    return pc_raise_oserror(o->err, NULL, attrs, "(iiz)",
                            o->map_what != NULL ? PC_STAGE_MAPS : o->stage, out->used,
                            o->map_what);
}

PyObject *
pc_native_clone(PyObject *module, PyObject *args)
{
    static const char *const error_attrs[] = {"portclone_syscall", "portclone_clone3_errno", NULL};
    int mode, way, stage = PC_STAGE_CLONE;
    PyObject *child, *runner, *set_tid, *setup_arg = Py_None, *result = NULL;
    struct pc_request rq;
    struct pc_setup setup;
    struct outcome out;
    struct setup_outcome so;
    sigset_t all, caller;

    memset(&rq, 0, sizeof rq);
    if (!PyArg_ParseTuple(args, "OOiKiiOp|O:clone", &child, &runner, &mode, &rq.flags,
                          &rq.exit_signal, &rq.cgroup_fd, &set_tid, &rq.legacy_ok, &setup_arg))
        return NULL;
    if (!PyCallable_Check(runner)) {
        PyErr_SetString(PyExc_TypeError, "runner must be callable");
        return NULL;
    }
    if (mode != MODE_FORK && mode != MODE_CLONE3 && mode != MODE_LEGACY) {
        PyErr_Format(PyExc_ValueError, "unknown mode %d", mode);
        return NULL;
    }
    /* The child returns into Python on a copy of this stack: flags that would
     * have it share the interpreter (or get a foreign TLS) can only crash.
     * portclone's validation refuses them first; this is the C's own guard. */
    if (rq.flags & PC_CLONE_NOT_FORK_LIKE) {
        PyErr_SetString(PyExc_ValueError, "clone makes fork-like children: no CLONE_VM, "
                        "CLONE_SIGHAND, CLONE_THREAD or CLONE_SETTLS");
        return NULL;
    }
    if (pc_check_request(&rq, set_tid) < 0 || pc_setup_parse(&setup, setup_arg) < 0)
        return NULL;
    if (setup.present && (rq.flags & PC_CLONE_FILES)) { /* the pipes would be shared */
        PyErr_SetString(PyExc_ValueError, "a child's setup cannot be done with CLONE_FILES");
        return NULL;
    }
    if (setup.have_maps && (rq.flags & PC_CLONE_VFORK)) {
        PyErr_SetString(PyExc_ValueError, "uid/gid maps cannot be written with CLONE_VFORK");
        return NULL;
    }
    setup.own_mm = 1;
    if (setup.present && pc_setup_open(&setup, 1) < 0)
        return NULL;
    if (mode != MODE_FORK || setup.pid_ns >= 0) /* a helper may make it: MODE_CLONE3 */
        get_tid_offset(); /* may start a thread: must happen before the fork hooks */

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &caller);
    PyOS_BeforeFork(); /* the at-fork hooks run in the caller's own namespaces */
    way = pc_pid_enter(&setup, rq.flags);
    if (way == PC_PID_HELPER)
        make_child_via_helper(mode, &rq, &setup, &out, &stage);
    else if (way >= 0)
        make_child(mode, &rq, &out);
    if (way < 0 || stage == PC_STAGE_JOIN) {
        static const char *const attrs[] = {"portclone_stage", NULL};
        int err = way < 0 ? errno : out.err;
        PyOS_AfterFork_Parent();
        pthread_sigmask(SIG_SETMASK, &caller, NULL);
        pc_setup_close(&setup);
        return pc_raise_oserror(err, NULL, attrs, "(i)", PC_STAGE_JOIN);
    }
    if (out.pid != 0 && way == PC_PID_THREAD && pc_pid_leave(&setup) != 0)
        Py_FatalError("portclone: setns back to the caller's own PID namespace failed");
    if (out.pid == 0) {
        if (setup.present)
            child_setup(&setup);
        pc_caller_mask = caller;
        PyOS_AfterFork_Child();
        pc_child_main(runner);
    }
    PyOS_AfterFork_Parent();
    if (out.pid > 0 && setup.present) {
        /* closed before the GIL is let go: no Python code of another thread can fork
         * meanwhile and hold a copy of the report's write end */
        pc_setup_close_one(&setup, PC_ERR_W);
        Py_BEGIN_ALLOW_THREADS
        await_setup(&setup, out.pid, out.pidfd, (rq.flags & PC_CLONE_VFORK) != 0, &so);
        Py_END_ALLOW_THREADS
        if (so.map_what != NULL || (so.reported && so.err != 0)) {
            setup_failed(&so, &out, rq.flags);
            out.pid = 0; /* the exception is set */
        }
    }
    if (out.pid > 0 && pc_adopt(child, out.pid, out.pidfd, out.used) < 0)
        out.pid = 0; /* the exception is set */
    pthread_sigmask(SIG_SETMASK, &caller, NULL);
    pc_setup_close(&setup);
    if (out.pid < 0) /* which call failed, and what clone3 said before we fell back */
        result = pc_raise_oserror(out.err, NULL, error_attrs, "(ii)", out.used, out.clone3_err);
    else if (out.pid > 0)
        result = (Py_INCREF(Py_None), Py_None);
    return result;
}

/* clone3(NULL, 0): EINVAL when clone3 exists (the size is too small), ENOSYS
 * when the kernel lacks it, whatever a seccomp filter answers otherwise.
 * Nothing is created. */
PyObject *
pc_native_probe_clone3(PyObject *module, PyObject *unused)
{
    long r;
    if (pc_clone3_enosys)
        return PyLong_FromLong(ENOSYS);
    r = syscall(SYS_clone3, NULL, 0);
    return PyLong_FromLong(r < 0 ? errno : 0);
}

#endif /* __linux__ */

#ifdef PC_HAVE_LIBC_CLONE
/*
 * libc's clone(fn, stack, flags, arg): NetBSD's (NetBSD/src:lib/libc/arch/
 * x86_64/sys/__clone.S and siblings) and glibc's have this same signature,
 * and NetBSD's flag values are Linux's.  Both insist on a function and a
 * stack (EINVAL otherwise) and run fn(arg) on that stack in the child.  For a
 * fork-like child (no CLONE_VM) the child's memory is a copy of ours, so fn
 * jumps straight back into this frame on the child's copy of our stack and
 * the child goes on like a fork child.  No Python code runs between
 * PyOS_BeforeFork and PyOS_AfterFork_*.
 */
/* Per thread: PyOS_BeforeFork may let another thread run (it waits for the import
 * lock without the GIL), and a child must jump back into its own caller's frame.  The
 * child's thread pointer is its caller's, so it reads its caller's copy. */
static __thread jmp_buf libc_clone_return;
static char libc_clone_stack[16384] __attribute__((aligned(64)));

static int
libc_clone_trampoline(void *unused)
{
    longjmp(libc_clone_return, 1);
    return 0; /* not reached */
}

PyObject *
pc_native_libc_clone(PyObject *module, PyObject *args)
{
    int flags;
    PyObject *child, *runner;
    volatile pid_t pid = -1;
    volatile int err = 0;
    sigset_t all, caller;

    if (!PyArg_ParseTuple(args, "OOi:libc_clone", &child, &runner, &flags))
        return NULL;
    if (!PyCallable_Check(runner)) {
        PyErr_SetString(PyExc_TypeError, "runner must be callable");
        return NULL;
    }
    if ((unsigned long long)(unsigned int)flags & PC_CLONE_NOT_FORK_LIKE) {
        PyErr_SetString(PyExc_ValueError, "libc_clone makes fork-like children: no CLONE_VM, "
                        "CLONE_SIGHAND, CLONE_THREAD or CLONE_SETTLS");
        return NULL;
    }
#if defined(__linux__)
    get_tid_offset();
#endif
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &caller);
    PyOS_BeforeFork();
    if (setjmp(libc_clone_return) == 0) {
        pid = PC_LIBC_CLONE(libc_clone_trampoline, libc_clone_stack + sizeof libc_clone_stack,
                            flags, NULL);
        err = errno;
    }
    else {
        /* The child, back on its copy of this frame. */
#if defined(__linux__)
        if (tid_offset >= 0) /* libc's cached tid: the child's own (see the top of this file) */
            *(pid_t *)((char *)pthread_self() + tid_offset) = (pid_t)syscall(SYS_gettid);
#endif
        pc_caller_mask = caller;
        PyOS_AfterFork_Child();
        pc_child_main(runner);
    }
    PyOS_AfterFork_Parent();
    if (pid > 0 && pc_adopt(child, pid, -1, USED_CLONE) < 0)
        pid = 0; /* the exception is set */
    pthread_sigmask(SIG_SETMASK, &caller, NULL);
    if (pid == 0)
        return NULL;
    if (pid < 0)
        return pc_raise_oserror(err, NULL, NULL, NULL);
    Py_RETURN_NONE;
}
#endif /* PC_HAVE_LIBC_CLONE */
