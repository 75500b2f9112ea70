/*
 * A fork-like child's life in Python, after clone() or libc_clone() and
 * PyOS_AfterFork_Child: it runs the caller's runner, reports what escapes it, flushes
 * the standard streams and leaves through _exit with the status that all means.
 */
#include "_native.h"

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
void
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
