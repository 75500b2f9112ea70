/*
 * portclone._native, the module: its method table, its constants and PyInit__native.
 * The methods are defined in the files the table names.
 *
 * The extension is the part of portclone that must not run Python code: what runs
 * between CPython's fork hooks, or in a child that shares its parent's memory, and what
 * a signal handler must not interrupt.  Everything that can be decided in Python
 * (validation, error messages, the flag table) is decided in Python.  What its C files
 * share is declared in _native.h.
 */
#include "_native.h"

#if defined(__linux__)
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
#endif

/* Each method's C function is pc_native_<name>, defined in the file named here. */
static PyMethodDef native_methods[] = {
#ifdef __linux__
    /* _clone.c */
    {"clone", pc_native_clone, METH_VARARGS,
     "clone(child, runner, mode, flags, exit_signal, cgroup_fd, set_tid, legacy_ok[, setup])\n"
     "Create a fork-like child between CPython's fork hooks.  The child runs runner()\n"
     "and _exits with the status it returns; the parent's Child gets pid, pidfd, syscall."},
    {"probe_clone3", pc_native_probe_clone3, METH_NOARGS,
     "The errno clone3(NULL, 0) answers: EINVAL when clone3 is there."},
    /* _threads.c */
    {"thread_count", pc_native_thread_count, METH_NOARGS,
     "This process's thread count from /proc/self/stat, or -1."},
    {"tid_offset", pc_native_tid_offset, METH_NOARGS,
     "Offset of the cached tid in libc's thread descriptor; -1: not found, -2: the search\n"
     "could not run now (no memory or thread), the next call searches again."},
#endif
#ifdef PC_HAVE_LIBC_CLONE
    /* _clone.c */
    {"libc_clone", pc_native_libc_clone, METH_VARARGS,
     "libc_clone(child, runner, flags): libc clone() for a fork-like child, as clone()."},
    /* _spawn.c */
    {"spawn", (PyCFunction)(void (*)(void))pc_native_spawn, METH_VARARGS | METH_KEYWORDS,
     "spawn(child, /, *, mode, flags, exit_signal, cgroup_fd, set_tid, legacy_ok, paths, argv,\n"
     "      envp, cwd, fds, keep, close_fds, setup, restore_signals, process_group=-1)\n"
     "Start a program in a CLONE_VM child (see _spawn.c); child gets pid, pidfd, syscall."},
#endif
    /* _sigmask.c */
    {"unblock_signals", pc_native_unblock_signals, METH_NOARGS,
     "In a new child: restore the signal mask its parent had before clone()."},
    {"sigmask_hold", pc_native_sigmask_hold, METH_NOARGS,
     "Block every signal in this thread; return the old mask (opaque) for sigmask_restore.\n"
     "Pending handlers run after the block; if one raises, the old mask is back first."},
    {"sigmask_restore", pc_native_sigmask_restore, METH_O,
     "sigmask_restore(saved): put back a mask sigmask_hold returned; pending handlers run."},
    {"sigmask_signals", pc_native_sigmask_signals, METH_O,
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

    if (pc_owner_init() < 0) /* once: PidfdOwner and pc_adopt's names (_pidfd_owner.c) */
        return NULL;
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
        PyModule_AddStringConstant(m, "LEGACY_CLONE_ORDER", pc_legacy_clone_order) < 0 ||
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
