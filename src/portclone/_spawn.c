/*
 * portclone spawn(): exec children created with CLONE_VM (and CLONE_VFORK),
 * so their cost does not grow with the parent's memory.
 *
 * The child shares the parent's memory until it execs, so it runs C only, on
 * a stack of its own: no Python, no malloc, no locks, async-signal-safe calls
 * only, everything it needs prepared by the parent beforehand (as glibc's
 * posix_spawn does: bminor/glibc:sysdeps/unix/sysv/linux/spawni.c).  All
 * signals are blocked across the clone; the child resets caught handlers to
 * SIG_DFL before it unblocks them (python/cpython:Modules/_posixsubprocess.c,
 * reset_signal_handlers), so no parent handler can run on its stack.  Errors
 * reach the parent as (stage, errno) through a close-on-exec pipe: EOF means
 * the exec happened.
 *
 * It shares the parent thread's TLS, errno included.  With CLONE_VFORK the
 * parent is suspended until the exec, so that does not matter.  Without it
 * (CLONE_NEWUSER with uid/gid maps: the parent must write them while the
 * child waits) the protocol keeps the two from using errno at the same time:
 * the child blocks in read() until the parent has done everything that can
 * fail; after that the parent only reads the error pipe with all signals
 * blocked, which cannot fail.
 */
#include "_native.h"

#ifdef PC_HAVE_LIBC_CLONE

#include <dirent.h>
#include <sys/mman.h>
#include <sys/wait.h>

#if defined(__linux__)
#include <sys/prctl.h>
#endif

extern char **environ;

#define PC_SPAWN_STACK (256 * 1024)

struct spawn_child {
    char **paths; /* candidate executables, NULL-terminated */
    char **argv;
    char **envp; /* NULL: the parent's environ */
    const char *cwd;
    const char *hostname;
    size_t hostname_len;
    int fds[3]; /* what becomes 0, 1, 2; -1: inherited */
    int *keep; /* pass_fds, sorted */
    int nkeep;
    int close_fds;
    int reset_handlers; /* 0 with CLONE_SIGHAND: the table is the parent's */
    int restore_signals; /* SIGPIPE, SIGXFSZ back to SIG_DFL (Python ignores them) */
    int setup_fds; /* 0 with CLONE_FILES: the table is the parent's */
    int errpipe; /* write end, close-on-exec */
    int syncpipe; /* read end, -1 when nothing must be waited for */
    int syncpipe_w; /* its write end: the child closes its copy, or it never sees EOF */
    sigset_t mask; /* the parent's signal mask, restored just before execve */
};

/* What the child writes to the error pipe when it fails. */
struct spawn_report {
    int stage; /* PC_STAGE_* */
    int err;
};

static void
child_fail(const struct spawn_child *c, int stage, int err)
{
    struct spawn_report r;
    r.stage = stage;
    r.err = err;
    if (write(c->errpipe, &r, sizeof r) < 0) {
        /* nothing more to do: the parent sees EOF without a report */
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

/* Mark every descriptor >= 3 but the kept ones close-on-exec: nothing leaks
 * into the new program (the error pipe is close-on-exec already). */
static int
mark_cloexec_from_3(const struct spawn_child *c)
{
#if defined(__linux__)
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
    /* Linux 5.11: close_range(first, last, CLOSE_RANGE_CLOEXEC) around the kept fds */
    unsigned int first = 3;
    int ok = 1;
    for (int i = 0; i <= c->nkeep && ok; i++) {
        unsigned int last = i < c->nkeep ? (unsigned int)c->keep[i] - 1 : ~0U;
        if (i < c->nkeep && c->keep[i] < 3)
            continue;
        if (last >= first || i == c->nkeep)
            ok = syscall(SYS_close_range, first, last, CLOSE_RANGE_CLOEXEC) == 0;
        if (i < c->nkeep)
            first = (unsigned int)c->keep[i] + 1;
    }
    if (ok)
        return 0;
    {
        /* older kernels: walk /proc/self/fd with getdents64 (no malloc) */
        char buf[4096];
        int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        long n;
        if (dir < 0)
            return -1;
        while ((n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
            for (long off = 0; off < n;) {
                struct dirent64 *d = (struct dirent64 *)(buf + off);
                int fd = 0, digits = 0;
                for (const char *p = d->d_name; *p >= '0' && *p <= '9'; p++, digits++)
                    fd = fd * 10 + (*p - '0');
                if (digits && d->d_name[digits] == '\0' && fd >= 3 && fd != dir &&
                    !is_kept(c, fd))
                    fcntl(fd, F_SETFD, FD_CLOEXEC);
                off += d->d_reclen;
            }
        }
        close(dir);
        return n < 0 ? -1 : 0;
    }
#elif defined(__NetBSD__)
    int top = fcntl(0, F_MAXFD); /* NetBSD: the highest open descriptor */
    for (int fd = 3; fd <= top; fd++)
        if (!is_kept(c, fd))
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    return 0;
#else
    return -1;
#endif
}

static int
spawn_child_main(void *arg)
{
    const struct spawn_child *c = arg;
    int src[3];
    int err, saw_eacces = 0;

    /* First, before any call that can fail: this child shares the parent's memory and
     * thread pointer, so libc's errno is the parent thread's.  With maps the parent is
     * not suspended (no CLONE_VFORK): it writes them while we wait here, and reads errno
     * when a write fails.  A failing call here (the handler loop below meets EINVAL)
     * would overwrite it: in QEMU guests, 1 spawn in 100 reported EINVAL for an EPERM.
     * close() of our own fd and a blocking read with every signal blocked do not fail. */
    if (c->syncpipe >= 0) {
        char go;
        close(c->syncpipe_w);
        if (read(c->syncpipe, &go, 1) != 1)
            _exit(127); /* the parent gave up (its error is reported there) */
    }
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
    if (c->hostname != NULL && sethostname(c->hostname, c->hostname_len) != 0)
        child_fail(c, PC_STAGE_HOSTNAME, errno);

    if (c->setup_fds) {
        for (int i = 0; i < 3; i++)
            src[i] = c->fds[i];
        /* Sources among 0..2 that another dup2 would overwrite move up first. */
        for (int i = 0; i < 3; i++) {
            if (src[i] >= 0 && src[i] < 3 && src[i] != i) {
                int old = src[i];
                int moved = fcntl(old, F_DUPFD_CLOEXEC, 3);
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
                if (fcntl(i, F_SETFD, 0) != 0) /* keep it across exec */
                    child_fail(c, PC_STAGE_FDS, errno);
            }
            else if (dup2(src[i], i) < 0) { /* dup2 clears close-on-exec on i */
                child_fail(c, PC_STAGE_FDS, errno);
            }
        }
        if (c->close_fds && mark_cloexec_from_3(c) != 0)
            child_fail(c, PC_STAGE_FDS, errno);
        for (int i = 0; i < c->nkeep; i++)
            if (fcntl(c->keep[i], F_SETFD, 0) != 0)
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
            PyMem_RawFree(*p);
        PyMem_RawFree(list);
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
    n = PyTuple_GET_SIZE(seq);
    list = PyMem_RawCalloc((size_t)n + 1, sizeof(char *));
    if (list == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(seq, i);
        char *data;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(item, &data, &len) < 0) { /* refuses embedded NULs */
            free_strings(list);
            return -1;
        }
        list[i] = PyMem_RawMalloc((size_t)len + 1);
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

#if defined(__linux__)
/* Write one of the child's /proc files (uid_map, gid_map, setgroups). */
static int
write_proc(pid_t pid, const char *name, const char *data, size_t len)
{
    char path[64];
    int fd, ok;
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ok = write(fd, data, len) == (ssize_t)len;
    if (!ok) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return close(fd);
}
#endif

/* A failure of the parent's own preparation, before any clone: OSError(err, "<strerror>:
 * <what>"), without .portclone_stage (which says where the clone or the child failed). */
static void
setup_error(int err, const char *what)
{
    PyObject *args = Py_BuildValue("(iN)", err, PyUnicode_FromFormat("%s: %s", strerror(err), what));
    if (args != NULL) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
    }
}

/*
 * spawn(mode, flags, exit_signal, cgroup_fd, set_tid, legacy_ok,
 *       paths, argv, envp, cwd, fds, keep, close_fds, maps, hostname, restore_signals)
 *   -> (pid, pidfd, syscall)
 * maps: None or (uid_map bytes|None, gid_map bytes|None, deny_setgroups).
 * Raises OSError; .portclone_stage says where it failed (PC_STAGE_*); an OSError
 * without it comes from the preparation before the clone, and its message says which.
 */
PyObject *
pc_native_spawn(PyObject *module, PyObject *args)
{
    int mode, exit_signal, cgroup_fd, legacy_ok, close_fds;
    unsigned long long flags;
    PyObject *child, *set_tid_obj, *paths_obj, *argv_obj, *envp_obj, *cwd_obj, *keep_obj, *maps_obj,
        *host_obj;
    struct spawn_child c;
    const char *uid_map = NULL, *gid_map = NULL;
    Py_ssize_t uid_len = 0, gid_len = 0;
    int deny_setgroups = 0, have_maps = 0;
    int errpipe[2] = {-1, -1}, syncpipe[2] = {-1, -1};
    int pidfd = -1, used = USED_CLONE, clone_err = 0, stage = 0, child_err = 0, map_err = 0;
    const char *map_what = NULL;
    pid_t pid = -1;
    void *stack = MAP_FAILED;
    sigset_t all;
#if defined(__linux__)
    pid_t set_tid[PC_MAX_SET_TID];
    int set_tid_size = 0;
#endif
    PyObject *result = NULL;

    memset(&c, 0, sizeof c);
    c.syncpipe = -1;
    if (!PyArg_ParseTuple(args, "OiKiiOpOOOO(iii)OpOOp:spawn", &child, &mode, &flags, &exit_signal,
                          &cgroup_fd, &set_tid_obj, &legacy_ok, &paths_obj, &argv_obj,
                          &envp_obj, &cwd_obj, &c.fds[0], &c.fds[1], &c.fds[2], &keep_obj,
                          &close_fds, &maps_obj, &host_obj, &c.restore_signals))
        return NULL;
    c.close_fds = close_fds;
    if (flags & PC_SIGNAL_BITS) {
        PyErr_SetString(PyExc_ValueError, "the flags carry an exit signal in their low byte");
        return NULL;
    }
    if (exit_signal < 0 || exit_signal > 255) {
        PyErr_Format(PyExc_ValueError, "exit_signal %d out of range", exit_signal);
        return NULL;
    }
    if (flags & PC_CLONE_THREAD) { /* its exec would replace this process */
        PyErr_SetString(PyExc_ValueError, "spawn starts a process, not a thread: no CLONE_THREAD");
        return NULL;
    }
    /* What the child does must stay the child's (the Python side checks these first) */
    if (host_obj != Py_None && !(flags & PC_CLONE_NEWUTS)) {
        PyErr_SetString(PyExc_ValueError, "a hostname needs CLONE_NEWUTS: it would be the host's");
        return NULL;
    }
    if (cwd_obj != Py_None && (flags & PC_CLONE_FS)) {
        PyErr_SetString(PyExc_ValueError, "cwd with CLONE_FS would move the parent too");
        return NULL;
    }
#if defined(__linux__)
    if (set_tid_obj != Py_None) {
        Py_ssize_t n = PyTuple_Check(set_tid_obj) ? PyTuple_GET_SIZE(set_tid_obj) : -1;
        if (n < 1 || n > PC_MAX_SET_TID) {
            PyErr_SetString(PyExc_ValueError, "set_tid must be a tuple of 1 to 32 pids");
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            long v = PyLong_AsLong(PyTuple_GET_ITEM(set_tid_obj, i));
            if (v == -1 && PyErr_Occurred())
                return NULL;
            set_tid[i] = (pid_t)v;
        }
        set_tid_size = (int)n;
    }
#endif
    if (!PyTuple_Check(keep_obj)) {
        PyErr_SetString(PyExc_TypeError, "keep must be a tuple");
        return NULL;
    }
    c.nkeep = (int)PyTuple_GET_SIZE(keep_obj);
    c.keep = PyMem_RawCalloc((size_t)c.nkeep + 1, sizeof(int));
    if (c.keep == NULL)
        return PyErr_NoMemory();
    for (int i = 0; i < c.nkeep; i++) {
        c.keep[i] = (int)PyLong_AsLong(PyTuple_GET_ITEM(keep_obj, i));
        if (c.keep[i] == -1 && PyErr_Occurred())
            goto done;
    }
    if (maps_obj != Py_None) {
        PyObject *u, *g, *d;
        if (!PyTuple_Check(maps_obj)) { /* PyArg_ParseTuple would raise SystemError */
            PyErr_SetString(PyExc_TypeError, "maps must be a tuple or None");
            goto done;
        }
        if (!PyArg_ParseTuple(maps_obj, "OOp", &u, &g, &deny_setgroups))
            goto done;
        (void)d;
        if (u != Py_None && PyBytes_AsStringAndSize(u, (char **)&uid_map, &uid_len) < 0)
            goto done;
        if (g != Py_None && PyBytes_AsStringAndSize(g, (char **)&gid_map, &gid_len) < 0)
            goto done;
        have_maps = uid_map != NULL || gid_map != NULL;
        if (have_maps && (flags & PC_CLONE_VFORK)) {
            /* the child waits for the parent to write its maps: a parent suspended until
             * the exec would never write them */
            PyErr_SetString(PyExc_ValueError, "uid/gid maps cannot be written with CLONE_VFORK");
            goto done;
        }
    }
    if (host_obj != Py_None) {
        char *h;
        Py_ssize_t hl;
        if (PyBytes_AsStringAndSize(host_obj, &h, &hl) < 0)
            goto done;
        c.hostname = h;
        c.hostname_len = (size_t)hl;
    }
    if (cwd_obj != Py_None) {
        c.cwd = PyBytes_AsString(cwd_obj);
        if (c.cwd == NULL)
            goto done;
    }
    if (to_strings(paths_obj, &c.paths) < 0 || to_strings(argv_obj, &c.argv) < 0 ||
        to_strings(envp_obj, &c.envp) < 0)
        goto done;
    if (c.paths == NULL || c.argv == NULL) {
        PyErr_SetString(PyExc_ValueError, "paths and argv are required");
        goto done;
    }
    c.reset_handlers = !(flags & PC_CLONE_SIGHAND);
    c.setup_fds = !(flags & PC_CLONE_FILES);

    stack = mmap(NULL, PC_SPAWN_STACK, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        setup_error(errno, "allocating the stack of spawn's child (before the clone)");
        goto done;
    }
    if (pipe2(errpipe, O_CLOEXEC) != 0 || (have_maps && pipe2(syncpipe, O_CLOEXEC) != 0)) {
        setup_error(errno, "creating portclone's internal pipe for spawn (before the clone)");
        goto done;
    }
    c.errpipe = errpipe[1];
    c.syncpipe = have_maps ? syncpipe[0] : -1;
    c.syncpipe_w = have_maps ? syncpipe[1] : -1;

    sigfillset(&all);
    Py_BEGIN_ALLOW_THREADS
    pthread_sigmask(SIG_SETMASK, &all, &c.mask);
#if defined(__linux__)
    if (mode == MODE_CLONE3 && !pc_clone3_enosys) {
#ifdef PC_HAVE_CLONE3_FN
        struct pc_clone_args ca;
        size_t size = PC_CLONE_ARGS_SIZE_VER0;
        memset(&ca, 0, sizeof ca);
        ca.flags = flags;
        ca.exit_signal = (uint64_t)exit_signal;
        if (flags & PC_CLONE_PIDFD)
            ca.pidfd = (uint64_t)(uintptr_t)&pidfd;
        ca.stack = (uint64_t)(uintptr_t)stack;
        ca.stack_size = PC_SPAWN_STACK;
        if (set_tid_size > 0) {
            ca.set_tid = (uint64_t)(uintptr_t)set_tid;
            ca.set_tid_size = (uint64_t)set_tid_size;
            size = PC_CLONE_ARGS_SIZE_VER1;
        }
        if (cgroup_fd >= 0) {
            ca.cgroup = (uint64_t)cgroup_fd;
            size = PC_CLONE_ARGS_SIZE_VER2;
        }
        {
            long r = clone3_fn(&ca, size, spawn_child_main, &c);
            pid = r < 0 ? -1 : (pid_t)r;
            clone_err = r < 0 ? (int)-r : 0;
        }
#else
        pid = -1;
        clone_err = ENOSYS; /* no clone3 trampoline for this architecture */
#endif
        used = USED_CLONE3;
        if (pid < 0 && clone_err == ENOSYS)
            pc_clone3_enosys = 1;
        if (pid < 0 && legacy_ok && (clone_err == ENOSYS || clone_err == EPERM))
            mode = MODE_LEGACY;
        else if (pid < 0)
            mode = -1; /* failed: report it */
    }
    else if (mode == MODE_CLONE3) {
        if (legacy_ok)
            mode = MODE_LEGACY;
        else {
            clone_err = ENOSYS;
            used = USED_CLONE3;
            mode = -1;
        }
    }
#endif
    if (mode == MODE_LEGACY) {
        /* libc's clone(fn, stack, flags, arg, ptid...): it knows its architecture's
         * argument order; with CLONE_PIDFD the pidfd comes back through ptid. */
        pid = PC_LIBC_CLONE(spawn_child_main, (char *)stack + PC_SPAWN_STACK,
                            (int)(flags | (unsigned long long)exit_signal), &c
#if defined(__linux__)
                            , &pidfd, (void *)NULL, (pid_t *)NULL
#endif
        );
        clone_err = pid < 0 ? errno : 0;
        used = USED_CLONE;
    }
    if (pid > 0) {
        /* With CLONE_VFORK we are back once the child has exec'd or died. */
        close(errpipe[1]);
        errpipe[1] = -1;
        if (have_maps) {
            close(syncpipe[0]);
            syncpipe[0] = -1;
#if defined(__linux__)
            if (uid_map != NULL && write_proc(pid, "uid_map", uid_map, (size_t)uid_len) != 0) {
                map_err = errno;
                map_what = "uid_map";
            }
            else if (gid_map != NULL && deny_setgroups &&
                     write_proc(pid, "setgroups", "deny", 4) != 0) {
                map_err = errno;
                map_what = "setgroups";
            }
            else if (gid_map != NULL &&
                     write_proc(pid, "gid_map", gid_map, (size_t)gid_len) != 0) {
                map_err = errno;
                map_what = "gid_map";
            }
            else if (write(syncpipe[1], "g", 1) != 1) {
                map_err = errno;
                map_what = "the child's start signal";
            }
#endif
            close(syncpipe[1]); /* without a byte, the child just exits */
            syncpipe[1] = -1;
        }
        /* EOF: the exec closed the pipe, or the child is gone (its memory too:
         * exit releases the mm before the files). */
        for (;;) {
            struct spawn_report r;
            ssize_t n = read(errpipe[0], &r, sizeof r);
            if (n == (ssize_t)sizeof r) {
                stage = r.stage;
                child_err = r.err;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            break;
        }
        if ((stage || map_err) && !(flags & PC_CLONE_PARENT)) { /* else not ours to reap */
            int status;
            while (waitpid(pid, &status, PC_WALL) < 0 && errno == EINTR)
                ;
        }
    }
    pthread_sigmask(SIG_SETMASK, &c.mask, NULL);
    Py_END_ALLOW_THREADS

    if (pid < 0 || stage || map_err) {
        int err = pid < 0 ? clone_err : map_err ? map_err : child_err;
        PyObject *exc_args, *exc;
        if (pidfd >= 0)
            close(pidfd);
        exc_args = Py_BuildValue("(is)", err, strerror(err));
        if (exc_args == NULL)
            goto done;
        exc = PyObject_Call(PyExc_OSError, exc_args, NULL);
        Py_DECREF(exc_args);
        if (exc == NULL)
            goto done;
        {
            PyObject *v1 = PyLong_FromLong(pid < 0 ? PC_STAGE_CLONE : map_err ? PC_STAGE_MAPS : stage);
            PyObject *v2 = PyLong_FromLong(used);
            PyObject *v3 = map_what ? PyUnicode_FromString(map_what) : (Py_INCREF(Py_None), Py_None);
            if (v1 && v2 && v3) {
                PyObject_SetAttrString(exc, "portclone_stage", v1);
                PyObject_SetAttrString(exc, "portclone_syscall", v2);
                PyObject_SetAttrString(exc, "portclone_map", v3);
            }
            Py_XDECREF(v1);
            Py_XDECREF(v2);
            Py_XDECREF(v3);
        }
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
        goto done;
    }
    if (pc_adopt(child, pid, pidfd, used) == 0)
        result = (Py_INCREF(Py_None), Py_None);

done:
    for (int i = 0; i < 2; i++) {
        if (errpipe[i] >= 0)
            close(errpipe[i]);
        if (syncpipe[i] >= 0)
            close(syncpipe[i]);
    }
    if (stack != MAP_FAILED)
        munmap(stack, PC_SPAWN_STACK);
    free_strings(c.paths);
    free_strings(c.argv);
    free_strings(c.envp);
    PyMem_RawFree(c.keep);
    return result;
}

#endif /* PC_HAVE_LIBC_CLONE */
