/*
 * Signal masks, without Python's signal module: the cheap hold of every signal that
 * portclone._sigfd.hold_signals is (sigmask_hold, sigmask_restore, sigmask_signals),
 * and the caller's mask that a new fork-like child gets back (unblock_signals).
 */
#include "_native.h"

/* In a new child: its parent's signal mask.  clone() blocks every signal across the
 * system call (keeping the caller's mask in a local: calls may nest, through at-fork
 * hooks, or run in several threads), so that no Python signal handler can run in the
 * child before its runner is inside a try; the runner restores this mask
 * (unblock_signals) once it is.  Written only in the child, which has one thread. */
sigset_t pc_caller_mask;

PyObject *
pc_native_unblock_signals(PyObject *module, PyObject *unused)
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
PyObject *
pc_native_sigmask_hold(PyObject *module, PyObject *unused)
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
PyObject *
pc_native_sigmask_restore(PyObject *module, PyObject *saved)
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
PyObject *
pc_native_sigmask_signals(PyObject *module, PyObject *saved)
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
