/*
 * A new child's handover to its Child, and the owner of its pidfd.
 *
 * pc_adopt gives the child's pid, pidfd and syscall to its Child (and the Child's
 * registry), before anything can run Python code in the parent.  PidfdOwner, the
 * type of a Child's _pidfd_owner, then owns the pidfd: it waits, reads the exit
 * status and signals through it, and closes it once.
 */
#include "_native.h"

#if defined(__linux__)
#include <sys/ioctl.h>
#endif

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

/* Run in every new child: by pc_child_main, and as the at-fork hook pc_owner_init sets. */
void
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
const char *const pc_syscall_names[] = {"fork", "clone3", "clone"};

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

/* Once per process, from PyInit__native: the PidfdOwner type, the names pc_adopt sets,
 * and a new generation in every child os.fork makes too. */
int
pc_owner_init(void)
{
    if (pc_owner_type != NULL)
        return 0;
    pc_owner_type = (PyTypeObject *)PyType_FromSpec(&owner_spec);
    if (pc_owner_type == NULL || make_names() < 0)
        return -1;
    pthread_atfork(NULL, NULL, pc_new_generation); /* os.fork's children too */
    return 0;
}
