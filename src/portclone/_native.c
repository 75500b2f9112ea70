/*
 * portclone._native: the part of portclone that must not run Python code.
 *
 * A fork-like child is created the way CPython's os.fork creates one
 * (python/cpython:Modules/posixmodule.c, os_fork_impl): PyOS_BeforeFork(),
 * the system call, then PyOS_AfterFork_Child() or PyOS_AfterFork_Parent(),
 * with no Python code in between.  Everything that can be decided in Python
 * (validation, error messages, the flag table) is decided in Python.
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
 * the descriptor keeps the tid at run time (scanning the descriptors of two
 * threads for their kernel tids) and let the kernel write the child's tid
 * there with CLONE_CHILD_SETTID, as glibc's own fork does with
 * arch_fork(&THREAD_SELF->tid) (bminor/glibc:sysdeps/nptl/_Fork.c).
 */
#include "_native.h"

#if defined(__linux__)
#include <sys/ioctl.h>
#endif

#if defined(__linux__)
#include <sys/eventfd.h>
#include <sys/uio.h>
#endif

#ifdef PC_HAVE_LIBC_CLONE
#include <setjmp.h>
#endif

/* ---- the child's life, and the parent's ownership ------------------- */

/*
 * The pidfd's owner: a Child keeps one beside its int ``pidfd``.  Closing it is one C
 * call, so a signal handler cannot raise between "forgotten" and "closed" (a Python
 * close() or __del__ can be interrupted at any call; the fd would leak), and when the
 * Child is freed, even with its __del__ interrupted, its dealloc closes the fd.  Only
 * in the process that made it: every child portclone makes (and every libc fork child)
 * starts a new generation, so a CLONE_FILES child that drops its copy of a Child does
 * not close the pidfd in the table it shares with its parent.
 */
static unsigned long pc_generation;

static void
pc_new_generation(void)
{
    pc_generation++;
}

typedef struct {
    PyObject_HEAD
    int fd;     /* -1 once closed (for new users) */
    int held;   /* the fd, until the last user is done with it */
    int busy;   /* waitid() calls in progress, without the GIL */
    unsigned long generation;
} PidfdOwner;

static PyTypeObject *pc_owner_type;

static void
owner_release(PidfdOwner *self)
{
    if (self->fd < 0 && self->busy == 0 && self->held >= 0) {
        int fd = self->held;
        self->held = -1;
        if (self->generation == pc_generation)
            close(fd);
    }
}

/* Closed for new users at once; the fd itself once no waitid() uses it any more, so its
 * number cannot be reused under a wait in progress. */
static void
owner_close_now(PidfdOwner *self)
{
    self->fd = -1;
    owner_release(self);
}

#if defined(__linux__)
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
/* waitid(options) -> None (WNOHANG: still running) or (si_code, si_status), through the
 * pidfd.  ValueError once closed; ChildProcessError when the child is gone (reaped by
 * someone else); OSError EINVAL on kernels without P_PIDFD (before 5.4).  The GIL is
 * released while it waits; EINTR runs the handlers and waits again (PEP 475). */
static PyObject *
owner_waitid(PyObject *op, PyObject *arg)
{
    PidfdOwner *self = (PidfdOwner *)op;
    long options = PyLong_AsLong(arg);
    siginfo_t info;
    int r, err;

    if (options == -1 && PyErr_Occurred())
        return NULL;
    for (;;) {
        if (self->fd < 0) {
            PyErr_SetString(PyExc_ValueError, "the pidfd is closed");
            return NULL;
        }
        memset(&info, 0, sizeof info);
        self->busy++;
        Py_BEGIN_ALLOW_THREADS
        r = waitid((idtype_t)P_PIDFD, (id_t)self->held, &info, (int)options);
        err = errno;
        Py_END_ALLOW_THREADS
        self->busy--;
        owner_release(self);
        if (r == 0)
            break;
        if (err != EINTR) {
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
    if (info.si_pid == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(ii)", info.si_code, info.si_status);
}
#endif

#if defined(__linux__)
/* PIDFD_GET_INFO (Linux 6.15): the first version of struct pidfd_info, 64 bytes, whose
 * last field is the exit status (torvalds/linux:include/uapi/linux/pidfd.h). */
struct pc_pidfd_info {
    uint64_t mask;
    uint64_t cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    int32_t exit_code;
};
#define PC_PIDFD_INFO_EXIT 0x8ULL
#define PC_PIDFD_GET_INFO _IOWR(0xFF, 11, struct pc_pidfd_info)

/* exit_status() -> the wait status the kernel keeps for the exited child (6.15), or None
 * (closed, not exited, or a kernel that keeps none).  Under the GIL, so a close() cannot
 * hand the fd number to another file meanwhile. */
static PyObject *
owner_exit_status(PyObject *op, PyObject *unused)
{
    PidfdOwner *self = (PidfdOwner *)op;
    struct pc_pidfd_info info;
    int fd = self->fd >= 0 ? self->fd : self->held;

    if (fd < 0)
        Py_RETURN_NONE;
    memset(&info, 0, sizeof info);
    info.mask = PC_PIDFD_INFO_EXIT;
    if (ioctl(fd, PC_PIDFD_GET_INFO, &info) != 0 || !(info.mask & PC_PIDFD_INFO_EXIT))
        Py_RETURN_NONE;
    return PyLong_FromLong((long)info.exit_code);
}
#endif

static PyObject *
owner_close(PyObject *self, PyObject *unused)
{
    owner_close_now((PidfdOwner *)self);
    Py_RETURN_NONE;
}

/* send_signal(sig) -> bool: the signal through the pidfd; False once the owner is closed or
 * the child is reaped.  Checking the fd and sending is one step under the GIL, so a
 * close() from a signal handler or another thread cannot slip between them and leave a
 * recycled fd number (another child's pidfd) to be signalled. */
static PyObject *
owner_send_signal(PyObject *self, PyObject *arg)
{
    long sig = PyLong_AsLong(arg);
    int fd = ((PidfdOwner *)self)->fd;

    if (sig == -1 && PyErr_Occurred())
        return NULL;
    if (sig < 0 || sig > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "signal number %ld out of range", sig);
        return NULL;
    }
    if (fd < 0)
        Py_RETURN_FALSE;
#if defined(__linux__) && defined(SYS_pidfd_send_signal)
    if (syscall(SYS_pidfd_send_signal, fd, (int)sig, NULL, 0) == 0)
        Py_RETURN_TRUE;
    if (errno == ESRCH)
        Py_RETURN_FALSE;
    return PyErr_SetFromErrno(PyExc_OSError);
#else
    errno = ENOSYS;
    return PyErr_SetFromErrno(PyExc_OSError);
#endif
}

static void
owner_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    owner_close_now((PidfdOwner *)self);
    PyObject_Free(self);
    Py_DECREF(type);
}

static PyMethodDef owner_methods[] = {
    {"close", owner_close, METH_NOARGS, "Close the pidfd (in the process that made it)."},
#if defined(__linux__)
    {"waitid", owner_waitid, METH_O,
     "waitid(P_PIDFD) with these options: None, or (si_code, si_status)."},
    {"exit_status", owner_exit_status, METH_NOARGS,
     "The wait status the kernel kept for the exited child (Linux 6.15), or None."},
#endif
    {"send_signal", owner_send_signal, METH_O,
     "Send a signal through the pidfd; False once closed or the child is gone."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot owner_slots[] = {
    {Py_tp_dealloc, (void *)owner_dealloc},
    {Py_tp_methods, owner_methods},
    {Py_tp_doc, (void *)"Owns a Child's pidfd: closes it once, in C."},
    {0, NULL},
};

static PyType_Spec owner_spec = {
    .name = "portclone._native.PidfdOwner",
    .basicsize = sizeof(PidfdOwner),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = owner_slots,
};

static PyObject *
owner_new(int fd)
{
    PidfdOwner *self = PyObject_New(PidfdOwner, pc_owner_type);
    if (self == NULL)
        return NULL;
    self->fd = fd;
    self->held = fd;
    self->busy = 0;
    self->generation = pc_generation;
    return (PyObject *)self;
}

/* Child.syscall, and the call errors name: by USED_* (exported as SYSCALL_NAMES) */
static const char *const pc_syscall_names[] = {"fork", "clone3", "clone"};

/* The names pc_adopt sets, made once: after a fork every page the parent writes is a
 * copy-on-write fault, and a string made per call writes several. */
static struct {
    PyObject *pid, *pidfd, *pidfd_owner, *syscall, *registry, *reapable, *syscalls[3];
} pc_names;

static int
make_names(void)
{
    pc_names.pid = PyUnicode_InternFromString("pid");
    pc_names.pidfd = PyUnicode_InternFromString("pidfd");
    pc_names.pidfd_owner = PyUnicode_InternFromString("_pidfd_owner");
    pc_names.syscall = PyUnicode_InternFromString("syscall");
    pc_names.registry = PyUnicode_InternFromString("_registry");
    pc_names.reapable = PyUnicode_InternFromString("reapable");
    for (int i = 0; i < 3; i++)
        pc_names.syscalls[i] = PyUnicode_InternFromString(pc_syscall_names[i]);
    return pc_names.pid && pc_names.pidfd && pc_names.pidfd_owner && pc_names.syscall &&
           pc_names.registry && pc_names.reapable && pc_names.syscalls[0] &&
           pc_names.syscalls[1] && pc_names.syscalls[2] ? 0 : -1;
}

/* In a new child: its parent's signal mask.  clone() blocks every signal across the
 * system call (keeping the caller's mask in a local: calls may nest, through at-fork
 * hooks, or run in several threads), so that no Python signal handler can run in the
 * child before its runner is inside a try; the runner restores this mask
 * (unblock_signals) once it is.  Written only in the child, which has one thread. */
static sigset_t pc_caller_mask;

static PyObject *
native_unblock_signals(PyObject *module, PyObject *unused)
{
    pthread_sigmask(SIG_SETMASK, &pc_caller_mask, NULL);
    Py_RETURN_NONE;
}

/* The parent's cheap signal hold (portclone._sigfd.hold_signals): every signal blocked
 * in this thread, the old mask returned as an opaque bytes object (a sigset_t) for
 * sigmask_restore.  As signal.pthread_sigmask does, the handlers of signals that arrived
 * before run once the call has changed the mask; if one raises, the old mask is put back
 * before the exception goes on, so the caller is left as it was.  signal.pthread_sigmask
 * costs far more: Lib/signal.py turns every mask it returns into a set of Signals. */
static PyObject *
native_sigmask_hold(PyObject *module, PyObject *unused)
{
    sigset_t all, old;
    PyObject *saved;

    sigfillset(&all);
    if ((errno = pthread_sigmask(SIG_BLOCK, &all, &old)) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    saved = PyBytes_FromStringAndSize((const char *)&old, sizeof old);
    if (saved == NULL || PyErr_CheckSignals() < 0) {
        Py_XDECREF(saved);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return NULL;
    }
    return saved;
}

/* The mask sigmask_hold returned, back in place; then the handlers of the signals that
 * arrived meanwhile run (and may raise), as with signal.pthread_sigmask. */
static PyObject *
native_sigmask_restore(PyObject *module, PyObject *saved)
{
    sigset_t mask;

    if (!PyBytes_Check(saved) || PyBytes_Size(saved) != (Py_ssize_t)sizeof mask) {
        PyErr_SetString(PyExc_TypeError, "sigmask_restore() takes what sigmask_hold() returned");
        return NULL;
    }
    memcpy(&mask, PyBytes_AsString(saved), sizeof mask);
    if ((errno = pthread_sigmask(SIG_SETMASK, &mask, NULL)) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (PyErr_CheckSignals() < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The signal numbers in a mask sigmask_hold returned (for os.posix_spawn's setsigmask). */
static PyObject *
native_sigmask_signals(PyObject *module, PyObject *saved)
{
    sigset_t mask;
    PyObject *found;

    if (!PyBytes_Check(saved) || PyBytes_Size(saved) != (Py_ssize_t)sizeof mask) {
        PyErr_SetString(PyExc_TypeError, "sigmask_signals() takes what sigmask_hold() returned");
        return NULL;
    }
    memcpy(&mask, PyBytes_AsString(saved), sizeof mask);
    found = PySet_New(NULL);
    for (int sig = 1; found != NULL && sig < NSIG; sig++) {
        if (sigismember(&mask, sig) == 1) {
            PyObject *number = PyLong_FromLong(sig);
            if (number == NULL || PySet_Add(found, number) < 0)
                Py_CLEAR(found);
            Py_XDECREF(number);
        }
    }
    return found;
}

/* Print the pending exception (a SystemExit only gives its code: printing it through
 * PyErr_Print would finalize the interpreter) and return the exit status it means. */
static int
report_exception(void)
{
    PyObject *type, *value, *tb;
    int code = 1;

    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return 1;
    PyErr_NormalizeException(&type, &value, &tb);
    if (PyErr_GivenExceptionMatches(type, PyExc_SystemExit)) {
        PyObject *arg = value != NULL ? PyObject_GetAttrString(value, "code") : NULL;
        if (arg == Py_None)
            code = 0;
        else if (arg != NULL && PyLong_Check(arg))
            code = (int)(PyLong_AsLong(arg) & 0xff);
        Py_XDECREF(arg);
    }
    else {
        PyErr_Display(type, value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
    return code;
}

/* Flush sys.stdout and sys.stderr as the interpreter does at exit: a stream that is
 * closed is skipped, a failure is reported (stdout's) and makes the status 120
 * (python/cpython:Python/pylifecycle.c, flush_std_files; Modules/main.c, Py_RunMain). */
static int
flush_at_exit(int code)
{
    static const char *const names[] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++) {
        PyObject *stream = PySys_GetObject(names[i]); /* borrowed */
        PyObject *closed, *r;
        int is_closed;
        if (stream == NULL || stream == Py_None)
            continue;
        Py_INCREF(stream);
        closed = PyObject_GetAttrString(stream, "closed");
        is_closed = closed != NULL && PyObject_IsTrue(closed) == 1;
        Py_XDECREF(closed);
        PyErr_Clear();
        if (!is_closed) {
            r = PyObject_CallMethod(stream, "flush", NULL);
            if (r == NULL) {
                if (i == 0)
                    PyErr_WriteUnraisable(stream);
                PyErr_Clear();
                code = 120;
            }
            Py_XDECREF(r);
        }
        Py_DECREF(stream);
    }
    return code;
}

/*
 * The new child's whole life after PyOS_AfterFork_Child: it runs ``runner()`` (which
 * returns the exit status) and leaves through _exit.  It never returns, so no Python
 * exception can reach the caller's frames, whatever a signal handler or a stream does.
 * Entered with every signal blocked; runner unblocks them inside its own try.
 */
static void
pc_child_main(PyObject *runner)
{
    sigset_t all;
    int code = 1;
    PyObject *result;

    pc_new_generation();
    result = PyObject_CallObject(runner, NULL);

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    if (result == NULL) {
        code = report_exception();
    }
    else {
        long value = PyLong_AsLong(result);
        code = value == -1 && PyErr_Occurred() ? report_exception() : (int)(value & 0xff);
        Py_DECREF(result);
    }
    /* Handlers of signals that arrived before the block: each runs once, and what it
     * raises is reported like an uncaught exception (its status: 1, or SystemExit's). */
    for (int i = 0; i < 2 * NSIG && PyErr_CheckSignals() < 0; i++)
        code = report_exception();
    _exit(flush_at_exit(code));
}

/*
 * Hand a new child to its Child object before anything can run Python code in the
 * parent: once clone() returns, a signal handler may raise at any moment, and the
 * Child must already own the pid and pidfd (its __del__ then reaps or adopts the
 * orphan).  If even that fails (no memory), the child is killed and reaped.
 */
int
pc_adopt(PyObject *child, pid_t pid, int pidfd, int used)
{
    PyObject *p = PyLong_FromLong((long)pid);
    PyObject *fd = pidfd >= 0 ? PyLong_FromLong(pidfd) : (Py_INCREF(Py_None), Py_None);
    PyObject *owner = pidfd >= 0 ? owner_new(pidfd) : (Py_INCREF(Py_None), Py_None);
    PyObject *name = pc_names.syscalls[used >= 0 && used <= 2 ? used : 2];
    int ok = p != NULL && fd != NULL && owner != NULL &&
             PyObject_SetAttr(child, pc_names.pidfd_owner, owner) == 0 &&
             PyObject_SetAttr(child, pc_names.pidfd, fd) == 0 &&
             PyObject_SetAttr(child, pc_names.syscall, name) == 0 &&
             PyObject_SetAttr(child, pc_names.pid, p) == 0;

    if (ok) { /* Child._registry[pid] = (weakref(child), owner): reap_orphans reaps it
               * through the owner's pidfd once the Child is gone */
        PyObject *registry = PyObject_GetAttr(child, pc_names.registry);
        PyObject *reapable = PyObject_GetAttr(child, pc_names.reapable);
        PyErr_Clear(); /* a holder without them (a test's, the bench floor's) */
        if (registry != NULL && PyDict_Check(registry) && reapable == Py_True) {
            PyObject *ref = PyWeakref_NewRef(child, NULL);
            PyObject *entry = ref != NULL ? PyTuple_Pack(2, ref, owner) : NULL;
            ok = entry != NULL && PyDict_SetItem(registry, p, entry) == 0;
            Py_XDECREF(entry);
            Py_XDECREF(ref);
        }
        Py_XDECREF(registry);
        Py_XDECREF(reapable);
    }
    Py_XDECREF(p);
    Py_XDECREF(fd);
    if (!ok) {
        PyObject *type, *value, *tb;
        if (owner != NULL && owner != Py_None)
            ((PidfdOwner *)owner)->fd = ((PidfdOwner *)owner)->held = -1; /* closed below */
        Py_XDECREF(owner);
        PyErr_Fetch(&type, &value, &tb);
        kill(pid, SIGKILL);
        pc_reap(pid);
        if (pidfd >= 0) {
            close(pidfd);
            PyObject_SetAttr(child, pc_names.pidfd, Py_None);
            PyObject_SetAttr(child, pc_names.pidfd_owner, Py_None);
            PyErr_Clear();
        }
        PyErr_Restore(type, value, tb);
        return -1;
    }
    Py_XDECREF(owner);
    return 0;
}

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

#if defined(__x86_64__)
#define PC_ARCH "x86_64"
#elif defined(__i386__)
#define PC_ARCH "i386"
#elif defined(__aarch64__)
#define PC_ARCH "aarch64"
#elif defined(__arm__)
#define PC_ARCH "arm"
#elif defined(__s390x__)
#define PC_ARCH "s390x"
#elif defined(__powerpc64__)
#define PC_ARCH "ppc64"
#elif defined(__mips__)
#define PC_ARCH "mips"
#else
#define PC_ARCH "unknown"
#endif

int pc_clone3_enosys = 0; /* clone3 answered ENOSYS once: never try again */

/* ---- where libc keeps the thread's tid ------------------------------- */

#define PC_SCAN_BYTES 1024
/* -2: not searched yet (or the search could not run: tried again), -1: not found */
long tid_offset = -2;

struct tid_scan {
    unsigned char bytes[PC_SCAN_BYTES];
    pid_t tid;
    int ok;
};

static void *
scan_own_descriptor(void *arg)
{
    struct tid_scan *s = arg;
    void *self = (void *)pthread_self();
    struct iovec local = {s->bytes, sizeof s->bytes};
    struct iovec remote = {self, sizeof s->bytes};
    s->tid = (pid_t)syscall(SYS_gettid);
    /* process_vm_readv fails instead of faulting past a mapping's end. */
    s->ok = process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)sizeof s->bytes;
    return NULL;
}

/* The offset, -1 when the descriptors hold no such field (an answer, remembered), or -2
 * when the search could not run now: no memory for its buffers or its thread (RLIMIT_AS,
 * RLIMIT_NPROC); a transient failure is not an answer, so the next call searches again. */
static long
find_tid_offset(void)
{
    struct tid_scan *mine = calloc(2, sizeof *mine);
    struct tid_scan *other;
    pthread_t thread;
    long found = -1;
    int matches = 0;

    if (mine == NULL)
        return -2;
    other = mine + 1;
    scan_own_descriptor(mine);
    if (pthread_create(&thread, NULL, scan_own_descriptor, other) == 0) {
        pthread_join(thread, NULL);
        if (mine->ok && other->ok && mine->tid != other->tid) {
            for (size_t off = 0; off + sizeof(pid_t) <= PC_SCAN_BYTES; off += sizeof(pid_t)) {
                pid_t a, b;
                memcpy(&a, mine->bytes + off, sizeof a);
                memcpy(&b, other->bytes + off, sizeof b);
                if (a == mine->tid && b == other->tid) {
                    found = (long)off;
                    matches++;
                }
            }
        }
    }
    else {
        matches = -1; /* no thread now (EAGAIN) */
    }
    free(mine);
    return matches < 0 ? -2 : matches == 1 ? found : -1;
}

long
get_tid_offset(void)
{
    if (tid_offset == -2)
        tid_offset = find_tid_offset();
    return tid_offset;
}

/* ---- the clone --------------------------------------------------------- */

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

static PyObject *
native_clone(PyObject *module, PyObject *args)
{
    static const char *const error_attrs[] = {"portclone_syscall", "portclone_clone3_errno", NULL};
    int mode;
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
    if (mode != MODE_FORK)
        get_tid_offset(); /* may start a thread: must happen before the fork hooks */

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &caller);
    PyOS_BeforeFork(); /* the at-fork hooks run in the caller's own namespaces */
    if (pc_setup_enter_pid(&setup) != 0) {
        static const char *const attrs[] = {"portclone_stage", NULL};
        int err = errno;
        PyOS_AfterFork_Parent();
        pthread_sigmask(SIG_SETMASK, &caller, NULL);
        pc_setup_close(&setup);
        return pc_raise_oserror(err, NULL, attrs, "(i)", PC_STAGE_JOIN);
    }
    make_child(mode, &rq, &out);
    if (out.pid != 0 && pc_setup_leave_pid(&setup) != 0)
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
static PyObject *
native_probe_clone3(PyObject *module, PyObject *unused)
{
    long r;
    if (pc_clone3_enosys)
        return PyLong_FromLong(ENOSYS);
    r = syscall(SYS_clone3, NULL, 0);
    return PyLong_FromLong(r < 0 ? errno : 0);
}

/* Field 20 of /proc/self/stat, read with plain system calls: no Python objects
 * are created, so the caller's memory footprint stays small (see Backend.__init__ in _backend.py). */
static PyObject *
native_thread_count(PyObject *module, PyObject *unused)
{
    char buf[1024];
    ssize_t n;
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    long count = -1;

    if (fd >= 0) {
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) {
            char *p;
            int field = 2; /* the last ')' closes field 2, the command name */
            buf[n] = '\0';
            p = strrchr(buf, ')');
            while (p != NULL && *p != '\0' && field < 20) {
                p = strchr(p + 1, ' ');
                if (p != NULL)
                    field++;
            }
            if (p != NULL && field == 20)
                count = strtol(p + 1, NULL, 10);
        }
    }
    return PyLong_FromLong(count);
}

static PyObject *
native_tid_offset(PyObject *module, PyObject *unused)
{
    return PyLong_FromLong(get_tid_offset());
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

static PyObject *
native_libc_clone(PyObject *module, PyObject *args)
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

static PyMethodDef native_methods[] = {
#ifdef __linux__
    {"clone", native_clone, METH_VARARGS,
     "clone(child, runner, mode, flags, exit_signal, cgroup_fd, set_tid, legacy_ok[, setup])\n"
     "Create a fork-like child between CPython's fork hooks.  The child runs runner()\n"
     "and _exits with the status it returns; the parent's Child gets pid, pidfd, syscall."},
    {"probe_clone3", native_probe_clone3, METH_NOARGS,
     "The errno clone3(NULL, 0) answers: EINVAL when clone3 is there."},
    {"thread_count", native_thread_count, METH_NOARGS,
     "This process's thread count from /proc/self/stat, or -1."},
    {"tid_offset", native_tid_offset, METH_NOARGS,
     "Offset of the cached tid in libc's thread descriptor; -1: not found, -2: the search\n"
     "could not run now (no memory or thread), the next call searches again."},
#endif
#ifdef PC_HAVE_LIBC_CLONE
    {"libc_clone", native_libc_clone, METH_VARARGS,
     "libc_clone(child, runner, flags): libc clone() for a fork-like child, as clone()."},
    {"spawn", (PyCFunction)(void (*)(void))pc_native_spawn, METH_VARARGS | METH_KEYWORDS,
     "spawn(child, /, *, mode, flags, exit_signal, cgroup_fd, set_tid, legacy_ok, paths, argv,\n"
     "      envp, cwd, fds, keep, close_fds, setup, restore_signals, process_group)\n"
     "Start a program in a CLONE_VM child (see _spawn.c); child gets pid, pidfd, syscall."},
#endif
    {"unblock_signals", native_unblock_signals, METH_NOARGS,
     "In a new child: restore the signal mask its parent had before clone()."},
    {"sigmask_hold", native_sigmask_hold, METH_NOARGS,
     "Block every signal in this thread; return the old mask (opaque) for sigmask_restore.\n"
     "Pending handlers run after the block; if one raises, the old mask is back first."},
    {"sigmask_restore", native_sigmask_restore, METH_O,
     "sigmask_restore(saved): put back a mask sigmask_hold returned; pending handlers run."},
    {"sigmask_signals", native_sigmask_signals, METH_O,
     "sigmask_signals(saved): the set of signal numbers in a mask sigmask_hold returned."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "portclone._native",
    .m_doc = "portclone's system-call layer (see portclone/_native.c).",
    .m_size = -1,
    .m_methods = native_methods,
};

/* The module's integer constants, by name */
static const struct {
    const char *name;
    long value;
} int_constants[] = {
    {"ABI", PORTCLONE_NATIVE_ABI},
    {"MODE_FORK", MODE_FORK},
    {"MODE_CLONE3", MODE_CLONE3},
    {"MODE_LEGACY", MODE_LEGACY},
    {"USED_FORK", USED_FORK},
    {"USED_CLONE3", USED_CLONE3},
    {"USED_CLONE", USED_CLONE},
    {"STAGE_CLONE", PC_STAGE_CLONE},
    {"STAGE_EXEC", PC_STAGE_EXEC},
    {"STAGE_CHDIR", PC_STAGE_CHDIR},
    {"STAGE_FDS", PC_STAGE_FDS},
    {"STAGE_HOSTNAME", PC_STAGE_HOSTNAME},
    {"STAGE_JOIN", PC_STAGE_JOIN},
    {"STAGE_TIME", PC_STAGE_TIME},
    {"STAGE_MOUNT_PROC", PC_STAGE_MOUNT_PROC},
    {"STAGE_PDEATHSIG", PC_STAGE_PDEATHSIG},
    {"STAGE_PROCESS_GROUP", PC_STAGE_PROCESS_GROUP},
    {"STAGE_PROPAGATION", PC_STAGE_PROPAGATION},
    {"STAGE_MAPS", PC_STAGE_MAPS},
};

#ifdef PC_HAVE_LIBC_CLONE
/* SETUP_FIELDS: the names of the setup tuple's fields, as pc_setup_parse reads them. */
static int
add_setup_fields(PyObject *m)
{
    Py_ssize_t n = 0;
    PyObject *fields;

    while (pc_setup_fields[n] != NULL)
        n++;
    fields = PyTuple_New(n);
    if (fields == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyUnicode_FromString(pc_setup_fields[i]);
        if (name == NULL || PyTuple_SetItem(fields, i, name) < 0) {
            Py_DECREF(fields);
            return -1;
        }
    }
    if (PyModule_AddObject(m, "SETUP_FIELDS", fields) < 0) {
        Py_DECREF(fields);
        return -1;
    }
    return 0;
}
#endif

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *m;

    if (pc_owner_type == NULL) {
        pc_owner_type = (PyTypeObject *)PyType_FromSpec(&owner_spec);
        if (pc_owner_type == NULL || make_names() < 0)
            return NULL;
        pthread_atfork(NULL, NULL, pc_new_generation); /* os.fork's children too */
    }
    m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof int_constants / sizeof int_constants[0]; i++) {
        if (PyModule_AddIntConstant(m, int_constants[i].name, int_constants[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddObject(m, "SYSCALL_NAMES",
                           Py_BuildValue("(sss)", pc_syscall_names[USED_FORK],
                                         pc_syscall_names[USED_CLONE3],
                                         pc_syscall_names[USED_CLONE])) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#if defined(__linux__)
    if (PyModule_AddStringConstant(m, "ARCH", PC_ARCH) < 0 ||
        PyModule_AddStringConstant(m, "LEGACY_CLONE_ORDER", PC_CLONE_ORDER) < 0 ||
        PyModule_AddIntConstant(m, "SYS_CLONE", SYS_clone) < 0 ||
        PyModule_AddIntConstant(m, "SYS_CLONE3", SYS_clone3) < 0 ||
        PyModule_AddIntConstant(m, "HAVE_CLONE3_SPAWN", pc_have_clone3_spawn) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
#ifdef PC_HAVE_LIBC_CLONE
    if (add_setup_fields(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    return m;
}
