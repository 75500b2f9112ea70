/*
 * spawn(): one call, on the parent's side.  The arguments are checked and copied into
 * a struct spawn_child for the child (_spawn_child.c: from the clone to the exec, C
 * only, on a stack of its own); then the clone (clone3, or libc's clone), the
 * uid/gid maps while the child waits, the child's report, and the child handed to its
 * Child (pc_adopt), or the failure raised as OSError.  All signals are blocked across
 * the clone.  Errors reach the parent as (stage, errno): a child that shares the
 * parent's memory and holds it until the exec (CLONE_VM|CLONE_VFORK) writes them
 * there; any other child writes them to a close-on-exec pipe, whose EOF means the exec
 * happened.
 *
 * The child shares the parent thread's TLS, errno included.  With CLONE_VFORK the
 * parent is suspended until the exec, so that does not matter.  Without it
 * (CLONE_NEWUSER with uid/gid maps: the parent must write them while the
 * child waits) the protocol keeps the two from using errno at the same time:
 * the child blocks in read() until the parent has done everything that can
 * fail; after that the parent only reads the error pipe with all signals
 * blocked, which cannot fail.
 */
#include "_spawn.h"

#ifdef PC_HAVE_LIBC_CLONE

#include <limits.h>
#include <sys/mman.h>

#define PC_SPAWN_STACK (256 * 1024)

#ifdef PC_HAVE_CLONE3_FN
const int pc_have_clone3_spawn = 1;
#else
const int pc_have_clone3_spawn = 0;
#endif

/* Free what the parent built for the child. */
static void
free_strings(char **list)
{
    if (list != NULL) {
        for (char **p = list; *p != NULL; p++)
            free(*p);
        free(list);
    }
}

/* A tuple of bytes -> a NULL-terminated array of copies (None -> NULL). */
static int
to_strings(PyObject *seq, char ***out)
{
    Py_ssize_t n;
    char **list;

    *out = NULL;
    if (seq == Py_None)
        return 0;
    if (!PyTuple_Check(seq)) {
        PyErr_SetString(PyExc_TypeError, "expected a tuple of bytes");
        return -1;
    }
    n = PyTuple_Size(seq);
    list = calloc((size_t)n + 1, sizeof(char *));
    if (list == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GetItem(seq, i);
        char *data;
        Py_ssize_t len;
        /* bytes with a NUL inside are taken: the copy's string ends there */
        if (PyBytes_AsStringAndSize(item, &data, &len) < 0) {
            free_strings(list);
            return -1;
        }
        list[i] = malloc((size_t)len + 1);
        if (list[i] == NULL) {
            free_strings(list);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(list[i], data, (size_t)len + 1);
    }
    *out = list;
    return 0;
}

/* What a spawn() call was given, checked and converted, and what it holds until it
 * returns (freed by spawn_free). */
struct spawn_call {
    PyObject *holder; /* gets pid, pidfd and syscall: a Child */
    int mode;         /* MODE_CLONE3 or MODE_LEGACY */
    struct pc_request rq;
    struct spawn_child c; /* what the child reads */
    struct pc_setup setup; /* its setup, with the maps' handshake */
    void *stack; /* the child's, MAP_FAILED until mapped */
    int errpipe[2]; /* -1, -1: the child reports in ``report`` */
    struct spawn_report report;
};

/* What became of it. */
struct spawn_outcome {
    pid_t pid; /* -1: the clone failed (clone_err) */
    int pidfd;
    int used; /* USED_CLONE3 or USED_CLONE */
    int clone_err;
    int reported; /* the child wrote a spawn_report: stage, child_err */
    int stage;
    int child_err;
    const char *map_what; /* the /proc file (or step) whose writing failed, with map_err */
    int map_err;
};

static char *spawn_keywords[] = {
    "", "mode", "flags", "exit_signal", "cgroup_fd", "set_tid", "legacy_ok", "paths", "argv",
    "envp", "cwd", "fds", "keep", "close_fds", "setup", "restore_signals", "process_group",
    NULL,
};

static void
spawn_init(struct spawn_call *s, struct spawn_outcome *o)
{
    memset(s, 0, sizeof *s);
    s->stack = MAP_FAILED;
    s->errpipe[0] = s->errpipe[1] = -1;
    s->c.setup = &s->setup;
    s->c.process_group = -1;
    (void)pc_setup_parse(&s->setup, Py_None); /* nothing to set up, no pipes */
    memset(o, 0, sizeof *o);
    o->pid = -1;
    o->pidfd = -1;
    o->used = USED_CLONE;
}

/* keep (pass_fds): a tuple of file descriptors, sorted. */
static int
parse_keep(struct spawn_child *c, PyObject *keep)
{
    if (!PyTuple_Check(keep)) {
        PyErr_SetString(PyExc_TypeError, "keep must be a tuple");
        return -1;
    }
    c->nkeep = (int)PyTuple_Size(keep);
    c->keep = calloc((size_t)c->nkeep + 1, sizeof(int));
    if (c->keep == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < c->nkeep; i++) {
        /* long long: 1 << 32 is a ValueError on 32-bit systems too, not an OverflowError */
        long long v = PyLong_AsLongLong(PyTuple_GetItem(keep, i));
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (v < 0 || v > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "keep[%d] = %lld is not a file descriptor", i, v);
            return -1;
        }
        c->keep[i] = (int)v;
    }
    return 0;
}

/* cwd: None or bytes, read by the child where it is. */
static int
parse_cwd(struct spawn_child *c, PyObject *cwd)
{
    if (cwd != Py_None) {
        c->cwd = PyBytes_AsString(cwd);
        if (c->cwd == NULL)
            return -1;
    }
    return 0;
}

/*
 * Python's own checks, restated as a last line of defence: portclone refuses these
 * requests before it calls spawn() (src/portclone/_plan.py, prepare, and the flag
 * table's refusal of CLONE_THREAD, src/portclone/_flags.py), so for portclone each
 * is an assertion; it raises ValueError instead of aborting because the fuzzer
 * (tests/fuzz_native.py) calls spawn() with anything, and each of these would reach
 * beyond the child: into the calling process, the host, or a deadlock.
 */
static int
spawn_restate_policy(const struct spawn_call *s)
{
    unsigned long long flags = s->rq.flags;
    const char *broken = NULL;

    if (flags & PC_CLONE_THREAD) /* the exec, or the failed child's _exit (exit_group) */
        broken = "spawn starts a process, not a thread: no CLONE_THREAD";
    else if (s->setup.hostname != NULL && !(flags & PC_CLONE_NEWUTS))
        broken = "a hostname needs CLONE_NEWUTS: it would be the host's";
    else if (s->c.cwd != NULL && (flags & PC_CLONE_FS))
        broken = "cwd with CLONE_FS would move the parent too";
    else if (s->setup.have_maps && (flags & (PC_CLONE_VFORK | PC_CLONE_FILES))) /* the handshake */
        broken = "uid/gid maps cannot be written with CLONE_VFORK or CLONE_FILES";
    if (broken == NULL)
        return 0;
    PyErr_SetString(PyExc_ValueError, broken);
    return -1;
}

/* The arguments, into ``s``; -1 with an exception when they cannot be used. */
static int
spawn_parse(struct spawn_call *s, PyObject *args, PyObject *kwargs)
{
    PyObject *set_tid = NULL, *paths = NULL, *argv = NULL, *envp = NULL, *cwd = NULL;
    PyObject *keep = NULL, *setup = NULL, *fds = NULL;

    /* every keyword is required but process_group ("|$" makes them all optional: checked
     * below) */
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "O|$iKiiOpOOOOOOpOpi:spawn", spawn_keywords, &s->holder, &s->mode,
            &s->rq.flags, &s->rq.exit_signal, &s->rq.cgroup_fd, &set_tid, &s->rq.legacy_ok,
            &paths, &argv, &envp, &cwd, &fds, &keep, &s->c.close_fds, &setup,
            &s->c.restore_signals, &s->c.process_group))
        return -1;
    for (int i = 1; spawn_keywords[i] != NULL; i++) {
        if (strcmp(spawn_keywords[i], "process_group") != 0 &&
            (kwargs == NULL || PyDict_GetItemString(kwargs, spawn_keywords[i]) == NULL)) {
            PyErr_Format(PyExc_TypeError, "spawn() needs the keyword %s", spawn_keywords[i]);
            return -1;
        }
    }
    if (!PyTuple_Check(fds) ||
        !PyArg_ParseTuple(fds, "iii", &s->c.fds[0], &s->c.fds[1], &s->c.fds[2])) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "fds must be a tuple of 3 ints");
        return -1;
    }
    if (s->mode != MODE_CLONE3 && s->mode != MODE_LEGACY) {
        PyErr_Format(PyExc_ValueError, "spawn's mode is MODE_CLONE3 or MODE_LEGACY, not %d",
                     s->mode);
        return -1;
    }
    if (pc_check_request(&s->rq, set_tid) < 0 || parse_keep(&s->c, keep) < 0 ||
        pc_setup_parse(&s->setup, setup) < 0 || parse_cwd(&s->c, cwd) < 0 ||
        to_strings(paths, &s->c.paths) < 0 || to_strings(argv, &s->c.argv) < 0 ||
        to_strings(envp, &s->c.envp) < 0)
        return -1;
    if (s->c.paths == NULL || s->c.argv == NULL) {
        PyErr_SetString(PyExc_ValueError, "paths and argv are required");
        return -1;
    }
    if (spawn_restate_policy(s) < 0)
        return -1;
    s->c.reset_handlers = !(s->rq.flags & PC_CLONE_SIGHAND);
    s->setup.own_mm = !(s->rq.flags & PC_CLONE_VM); /* it can enter a time namespace */
    s->c.setup_fds = !(s->rq.flags & PC_CLONE_FILES);
    return 0;
}

/* The child's stack and the pipes: OSError without .portclone_stage, its message
 * saying which (nothing was cloned yet).  A child made by this thread with
 * CLONE_VM|CLONE_VFORK reports in memory; one that another process makes (the helper
 * of join={"pid": ...}) or that has its own memory needs the pipe. */
static int
spawn_prepare(struct spawn_call *s)
{
    s->stack = mmap(NULL, PC_SPAWN_STACK, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (s->stack == MAP_FAILED) {
        pc_raise_oserror(errno, "allocating the stack of spawn's child (before the clone)",
                         NULL, NULL);
        return -1;
    }
    if ((s->rq.flags & (PC_CLONE_VM | PC_CLONE_VFORK)) == (PC_CLONE_VM | PC_CLONE_VFORK) &&
        s->setup.pid_ns < 0) {
        s->c.errpipe = -1;
        s->c.report = &s->report;
    }
    else if (pipe2(s->errpipe, O_CLOEXEC) != 0) {
        pc_raise_oserror(errno, "creating portclone's internal pipe for spawn (before the clone)",
                         NULL, NULL);
        return -1;
    }
    else
        s->c.errpipe = s->errpipe[1];
    return s->setup.have_maps ? pc_setup_open(&s->setup, 0) : 0;
}

/* clone3 with the child on its stack; ENOSYS where it cannot be used: the kernel
 * lacks it (remembered for the process), or this architecture has no clone3_fn. */
static void
spawn_clone3(struct spawn_call *s, struct spawn_outcome *o)
{
    o->used = USED_CLONE3;
    o->pid = -1;
    o->clone_err = ENOSYS;
#ifdef PC_HAVE_CLONE3_FN
    if (!pc_clone3_enosys) {
        struct pc_clone_args args;
        size_t size = pc_fill_clone_args(&args, &s->rq, &o->pidfd);
        long r;
        args.stack = (uint64_t)(uintptr_t)s->stack;
        args.stack_size = PC_SPAWN_STACK;
        r = clone3_fn(&args, size, pc_spawn_child_main, &s->c);
        o->pid = r < 0 ? -1 : (pid_t)r;
        o->clone_err = r < 0 ? (int)-r : 0;
        if (o->clone_err == ENOSYS)
            pc_clone3_enosys = 1;
    }
#endif
}

/* libc's clone(fn, stack, flags, arg, ptid...): it knows its architecture's argument
 * order; with CLONE_PIDFD the pidfd comes back through ptid. */
static void
spawn_libc_clone(struct spawn_call *s, struct spawn_outcome *o)
{
    o->used = USED_CLONE;
    o->pid = PC_LIBC_CLONE(pc_spawn_child_main, (char *)s->stack + PC_SPAWN_STACK,
                           (int)(s->rq.flags | (unsigned long long)s->rq.exit_signal), &s->c
#if defined(__linux__)
                           , &o->pidfd, (void *)NULL, (pid_t *)NULL
#endif
    );
    o->clone_err = o->pid < 0 ? errno : 0;
}

/* The clone: clone3 for MODE_CLONE3, falling back to libc's clone when clone3 is
 * missing (ENOSYS) or refused (EPERM: seccomp) and the caller allows it. */
static void
spawn_launch(struct spawn_call *s, struct spawn_outcome *o)
{
    int legacy = s->mode == MODE_LEGACY, clone3_err = 0;

    if (s->mode == MODE_CLONE3) {
        spawn_clone3(s, o);
        legacy = o->pid < 0 && s->rq.legacy_ok && (o->clone_err == ENOSYS || o->clone_err == EPERM);
        clone3_err = o->clone_err;
    }
    if (legacy) {
        spawn_libc_clone(s, o);
        if (o->pid < 0 && o->clone_err == EPERM && clone3_err == EPERM)
            o->used = USED_CLONE3; /* both refused it: the privilege is missing */
    }
}

/*
 * The child's reports.  With CLONE_VFORK the parent runs again only once the child has
 * exec'd or exited, so every report is in the pipe already: read without waiting for
 * EOF, which a fork-like child that another thread created meanwhile would hold off for
 * as long as it lives (it inherits the write end until it execs or exits).  Without
 * CLONE_VFORK (the maps' handshake) EOF is the only sign of the exec; it also says that
 * the child is done with the parent's memory: the exec closed the pipe, or the child is
 * gone (exit releases the mm before the files).
 */
static void
spawn_read_report(const struct spawn_call *s, struct spawn_outcome *o)
{
    if (s->c.errpipe < 0) { /* in memory: the child has exec'd or exited */
        o->reported = s->report.made;
        o->stage = s->report.stage;
        o->child_err = s->report.err;
        return;
    }
    if (s->rq.flags & PC_CLONE_VFORK) {
        int fl = pc_fcntl(s->errpipe[0], F_GETFL, 0);
        if (fl >= 0)
            (void)pc_fcntl(s->errpipe[0], F_SETFL, fl | O_NONBLOCK);
    }
    for (;;) {
        struct pc_report r;
        ssize_t n = read(s->errpipe[0], &r, sizeof r);
        if (n == (ssize_t)sizeof r) {
            o->reported = 1;
            o->stage = r.stage;
            o->child_err = r.err;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
}

/* join={"pid": ...} where this thread may not enter it (_joinpid.c): a helper enters the
 * user namespace and the PID namespace, and makes the child as ours (CLONE_PARENT). */
static void
spawn_launch_via_helper(struct spawn_call *s, struct spawn_outcome *o)
{
    struct pc_helper_result r;
    int fds[2];
    pid_t helper = pc_helper_start(&s->setup, s->rq.exit_signal, fds);

    if (helper == 0) {
        pc_helper_request(&s->rq);
        spawn_launch(s, o); /* the child closes the pipe at its exec (close-on-exec) */
        pc_helper_report(fds[1], o->pid, o->pidfd, o->clone_err, o->used, PC_STAGE_CLONE);
    }
    if (helper < 0) {
        o->pid = -1;
        o->clone_err = errno;
        o->used = USED_CLONE3;
        return;
    }
    pc_helper_result(helper, fds, &r);
    o->pid = r.pid;
    o->pidfd = r.pidfd;
    o->clone_err = r.err;
    o->used = r.used;
    if (r.stage == PC_STAGE_JOIN) {
        o->stage = PC_STAGE_JOIN;
        o->reported = 1;
    }
}

/* The clone, in the PID namespace of join={"pid": ...} if one is given; then the
 * parent's copy of the report's write end is closed, so that EOF means the exec. */
static void
spawn_start(struct spawn_call *s, struct spawn_outcome *o)
{
    int way = pc_pid_enter(&s->setup, s->rq.flags);
    if (way < 0) {
        o->clone_err = errno;
        o->stage = PC_STAGE_JOIN;
        o->reported = 1;
        return;
    }
    if (way == PC_PID_HELPER)
        spawn_launch_via_helper(s, o);
    else {
        spawn_launch(s, o);
        if (way == PC_PID_THREAD && pc_pid_leave(&s->setup) != 0)
            abort(); /* cannot happen: the namespace was ours a moment ago */
    }
    if (s->errpipe[1] >= 0) {
        close(s->errpipe[1]); /* the child writes to its own copy, c.errpipe */
        s->errpipe[1] = -1;
    }
}

/*
 * After a clone that made a child (with CLONE_VFORK, once it has exec'd or died):
 * the maps, the report, and reaping a child that failed.  No GIL, every signal
 * blocked; see the top of this file for why nothing here may fail after the maps.
 */
static void
spawn_await(struct spawn_call *s, struct spawn_outcome *o)
{
    if (s->setup.have_maps)
        pc_setup_parent(&s->setup, o->pid, o->pidfd, &o->map_what, &o->map_err);
    /* A failed map is the error: the child is killed, and its report is not waited for
     * (EOF may never come: a process another thread forked meanwhile may hold the pipe) */
    if (o->map_what != NULL)
        kill(o->pid, SIGKILL);
    else
        spawn_read_report(s, o);
    /* with CLONE_PARENT the child is the caller's parent's to reap */
    if ((o->reported || o->map_what != NULL) && !(s->rq.flags & PC_CLONE_PARENT))
        pc_reap(o->pid);
}

/* The failure as OSError: .portclone_stage (PC_STAGE_*) says where, .portclone_syscall
 * which clone was used (USED_*), .portclone_map which map (or None). */
static PyObject *
spawn_raise(const struct spawn_outcome *o)
{
    static const char *const attrs[] = {"portclone_stage", "portclone_syscall", "portclone_map",
                                        NULL};
    int stage = o->pid < 0 ? (o->reported ? o->stage : PC_STAGE_CLONE)
                : o->map_what != NULL ? PC_STAGE_MAPS : o->stage;
    int err = o->pid < 0 ? o->clone_err : o->map_what != NULL ? o->map_err : o->child_err;

    if (o->pidfd >= 0)
        close(o->pidfd);
    return pc_raise_oserror(err, NULL, attrs, "(iiz)", stage, o->used, o->map_what);
}

static void
spawn_free(struct spawn_call *s)
{
    for (int i = 0; i < 2; i++) {
        if (s->errpipe[i] >= 0)
            close(s->errpipe[i]);
    }
    pc_setup_close(&s->setup);
    if (s->stack != MAP_FAILED)
        munmap(s->stack, PC_SPAWN_STACK);
    free_strings(s->c.paths);
    free_strings(s->c.argv);
    free_strings(s->c.envp);
    free(s->c.keep);
}

/*
 * spawn(child, /, *, mode, flags, exit_signal, cgroup_fd, set_tid, legacy_ok, paths, argv,
 *       envp, cwd, fds, keep, close_fds, setup, restore_signals[, process_group]) -> None
 * child gets pid, pidfd and syscall (pc_adopt).  paths: candidate executables, argv,
 * envp (None: ours): tuples of bytes; fds: what becomes 0, 1, 2 (-1: inherited);
 * setup: None or the child's setup (pc_setup_parse, _setup.c).
 * Raises OSError; .portclone_stage says where it failed (PC_STAGE_CLONE: the clone);
 * an OSError without it comes from the preparation before the clone, and its message
 * says which.
 */
PyObject *
pc_native_spawn(PyObject *module, PyObject *args, PyObject *kwargs)
{
    struct spawn_call s;
    struct spawn_outcome o;
    sigset_t all;
    PyObject *result = NULL;

    spawn_init(&s, &o);
    if (spawn_parse(&s, args, kwargs) == 0 && spawn_prepare(&s) == 0) {
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &s.c.mask);
        if (s.setup.have_maps) {
            /* The parent learns of the exec by EOF on the report pipe only, so no other
             * process may hold its write end: it is made, cloned and closed again while
             * this thread holds the GIL, when no Python code of another thread can fork
             * (os.fork and portclone's clone() fork holding it).  The clone returns at
             * once: without CLONE_VFORK nothing waits here. */
            spawn_start(&s, &o);
            Py_BEGIN_ALLOW_THREADS
            if (o.pid > 0)
                spawn_await(&s, &o);
            Py_END_ALLOW_THREADS
        }
        else { /* CLONE_VFORK: the clone returns after the exec; the report is read as is */
            Py_BEGIN_ALLOW_THREADS
            spawn_start(&s, &o);
            if (o.pid > 0)
                spawn_await(&s, &o);
            Py_END_ALLOW_THREADS
        }
        pthread_sigmask(SIG_SETMASK, &s.c.mask, NULL);
        if (o.pid < 0 || o.reported || o.map_what != NULL)
            spawn_raise(&o);
        else if (pc_adopt(s.holder, o.pid, o.pidfd, o.used) == 0)
            result = (Py_INCREF(Py_None), Py_None);
    }
    spawn_free(&s);
    return result;
}

#endif /* PC_HAVE_LIBC_CLONE */
