/*
 * What clone() (_clone.c) and spawn() (_spawn.c) share: the checks of a request
 * that keep the C itself safe, struct clone_args filled from it, whether clone3 is
 * missing (pc_clone3_enosys), the OSError a failure raises, and reaping a child.
 */
#include "_native.h"

#include <stdarg.h>

/* set_tid: a sequence of 1 to PC_MAX_SET_TID pids, each in 1..INT32_MAX, or None. */
static int
parse_set_tid(struct pc_request *rq, PyObject *set_tid)
{
    PyObject *seq;
    Py_ssize_t n;

    rq->set_tid_size = 0;
    if (set_tid == Py_None)
        return 0;
    seq = PySequence_Fast(set_tid, "set_tid must be a sequence of ints");
    if (seq == NULL)
        return -1;
    n = PySequence_Size(seq); /* a list or tuple: no error */
    if (n < 1 || n > PC_MAX_SET_TID) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "set_tid must hold 1 to %d pids", PC_MAX_SET_TID);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_GetItem(seq, i);
        long long v = item == NULL ? -1 : PyLong_AsLongLong(item); /* 32-bit long too */
        Py_XDECREF(item);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (v <= 0 || v > INT32_MAX) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "set_tid[%zd] = %lld is not a valid pid", i, v);
            return -1;
        }
        rq->set_tid[i] = (pid_t)v;
    }
    rq->set_tid_size = (int)n;
    Py_DECREF(seq);
    return 0;
}

/*
 * The guards of a request that the C's own encoding needs, whatever the caller
 * checked: legacy clone takes the exit signal in the flags' low byte, so a
 * signal must fit it and the flags must leave it free; clone_args.cgroup takes
 * an fd or nothing; set_tid fills a fixed array.  ValueError (or the
 * conversion's TypeError, OverflowError) and -1 otherwise.
 */
int
pc_check_request(struct pc_request *rq, PyObject *set_tid)
{
    if (rq->exit_signal < 0 || rq->exit_signal > 255) {
        PyErr_Format(PyExc_ValueError, "exit_signal %d out of range", rq->exit_signal);
        return -1;
    }
    if (rq->flags & PC_SIGNAL_BITS) {
        PyErr_SetString(PyExc_ValueError, "the flags carry an exit signal in their low byte");
        return -1;
    }
    if (rq->cgroup_fd < -1) {
        PyErr_Format(PyExc_ValueError, "cgroup fd %d out of range", rq->cgroup_fd);
        return -1;
    }
    return parse_set_tid(rq, set_tid);
}

#if defined(__linux__)
int pc_clone3_enosys = 0; /* clone3 answered ENOSYS once: never try again */

/*
 * clone3's arguments for ``rq`` (torvalds/linux:include/uapi/linux/sched.h, struct
 * clone_args), the pidfd written to ``*pidfd`` with CLONE_PIDFD; returns the size to
 * pass, the smallest that holds what is set.  The caller adds its own fields (the
 * stack, CLONE_CHILD_SETTID).  Plain C: it runs between the fork hooks too.
 */
size_t
pc_fill_clone_args(struct pc_clone_args *args, const struct pc_request *rq, int *pidfd)
{
    size_t size = PC_CLONE_ARGS_SIZE_VER0;

    memset(args, 0, sizeof *args);
    args->flags = rq->flags;
    args->exit_signal = (uint64_t)rq->exit_signal;
    if (rq->flags & PC_CLONE_PIDFD)
        args->pidfd = (uint64_t)(uintptr_t)pidfd;
    if (rq->set_tid_size > 0) {
        args->set_tid = (uint64_t)(uintptr_t)rq->set_tid;
        args->set_tid_size = (uint64_t)rq->set_tid_size;
        size = PC_CLONE_ARGS_SIZE_VER1;
    }
    if (rq->cgroup_fd >= 0) {
        args->cgroup = (uint64_t)rq->cgroup_fd;
        size = PC_CLONE_ARGS_SIZE_VER2;
    }
    return size;
}
#endif

/*
 * Raise OSError(err, message), which picks the subclass for err as PyErr_SetFromErrno
 * does; the message is strerror(err), or "<strerror(err)>: <what>".  With ``names``
 * (NULL-terminated), the values Py_BuildValue(format, ...) makes (a tuple) become those
 * attributes of the exception; if they cannot be made, the exception goes without them.
 * Returns NULL, for ``return pc_raise_oserror(...)``.
 */
PyObject *
pc_raise_oserror(int err, const char *what, const char *const names[], const char *format, ...)
{
    PyObject *message, *args, *exc;

    message = what != NULL ? PyUnicode_FromFormat("%s: %s", strerror(err), what)
                           : PyUnicode_FromString(strerror(err));
    if (message == NULL)
        return NULL;
    args = Py_BuildValue("(iN)", err, message);
    if (args == NULL)
        return NULL;
    exc = PyObject_Call(PyExc_OSError, args, NULL);
    Py_DECREF(args);
    if (exc == NULL)
        return NULL;
    if (names != NULL) {
        va_list va;
        PyObject *values;
        va_start(va, format);
        values = Py_VaBuildValue(format, va);
        va_end(va);
        if (values != NULL && PyTuple_Check(values)) {
            for (Py_ssize_t i = 0; i < PyTuple_Size(values) && names[i] != NULL; i++)
                if (PyObject_SetAttrString(exc, names[i], PyTuple_GetItem(values, i)) < 0)
                    break;
        }
        Py_XDECREF(values);
        PyErr_Clear();
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

/* Wait for ``pid`` to end, whatever its exit signal, and discard its status. */
void
pc_reap(pid_t pid)
{
    while (waitpid(pid, NULL, PC_WALL) < 0 && errno == EINTR)
        ;
}
