/* The header of the extension portclone._native: what its C files share.  The build's
 * settings and the libc bindings every file needs, the module's constants, the structs of
 * a request and of a child's setup, and what each file defines for the others, by file
 * (CONTRIBUTING.md says what each file holds). */
#ifndef PORTCLONE_NATIVE_H
#define PORTCLONE_NATIVE_H

/* libc_clone longjmps from the child's temporary stack back onto its copy of
 * the caller's stack; _FORTIFY_SOURCE's longjmp check would call that an
 * error, so portclone is built without it. */
#undef _FORTIFY_SOURCE
#if defined(__NetBSD__) && !defined(_NETBSD_SOURCE)
#define _NETBSD_SOURCE 1 /* __clone() and the CLONE_* flags in <sched.h> */
#endif
/* The wheel is tagged cp39-abi3 (setup.py): without Python 3.9's limited API the extension
 * would still be named _native.abi3.so and tagged abi3, and tox -e packaging could not tell. */
#if !defined(Py_LIMITED_API) || Py_LIMITED_API != 0x03090000
#error "portclone._native is built with Py_LIMITED_API=0x03090000 only (setup.py)"
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/syscall.h>
#endif
#include "_clone3.h"

/* glibc 2.32 and 2.34 moved pthread_sigmask, pthread_create and pthread_join from
 * libpthread into libc under new symbol versions (GLIBC_2.32, GLIBC_2.34), which would tag
 * a wheel built there manylinux_2_34.  The same functions stay in libc.so.6 under the
 * architecture's original versions (bminor/glibc:sysdeps/unix/sysv/linux/x86_64/64/
 * libc.abilist, .../aarch64/libc.abilist, .../s390/s390-64/libc.abilist), which every
 * glibc has, in libpthread before 2.34 (a versioned reference names the version, not the
 * library): bind to those.  Other architectures keep the default binding. */
#if defined(__linux__) && defined(__GLIBC__) && !defined(PORTCLONE_NO_SYMVER)
#if defined(__x86_64__) && defined(__LP64__)
#define PC_GLIBC_BASE "GLIBC_2.2.5"
#elif defined(__aarch64__) && defined(__LP64__)
#define PC_GLIBC_BASE "GLIBC_2.17"
#elif defined(__s390x__)
#define PC_GLIBC_BASE "GLIBC_2.2"
#endif
#ifdef PC_GLIBC_BASE
__asm__(".symver pthread_create,pthread_create@" PC_GLIBC_BASE);
__asm__(".symver pthread_join,pthread_join@" PC_GLIBC_BASE);
__asm__(".symver pthread_sigmask,pthread_sigmask@" PC_GLIBC_BASE);
#endif
#endif

/* fcntl() through the system call on Linux.  With _FILE_OFFSET_BITS=64 (pyconfig.h)
 * glibc 2.28+ headers bind fcntl to the symbol fcntl64@GLIBC_2.28
 * (bminor/glibc:io/fcntl.h), which would make the wheel manylinux_2_28; the
 * commands used here (F_GETFL/F_SETFL/F_GETFD/F_SETFD/F_DUPFD_CLOEXEC) take an
 * int and mean the same through SYS_fcntl on every architecture. */
static inline int
pc_fcntl(int fd, int cmd, long arg)
{
#if defined(__linux__)
    return (int)syscall(SYS_fcntl, fd, cmd, arg);
#else
    return fcntl(fd, cmd, (int)arg);
#endif
}

#if defined(__linux__) || defined(__NetBSD__)
#include <sched.h>
#define PC_HAVE_LIBC_CLONE 1
#if defined(__NetBSD__)
/* NetBSD/src:include/sched.h declares clone() only under _GNU_SOURCE and the
 * function it aliases, __clone(), under _NETBSD_SOURCE: call __clone. */
#define PC_LIBC_CLONE __clone
#else
#define PC_LIBC_CLONE clone /* glibc, with _GNU_SOURCE from pyconfig.h */
#endif
#endif

/* Bumped whenever the Python side and the C must change together;
 * portclone/_loader.py refuses a stale build. */
#define PORTCLONE_NATIVE_ABI 9

/* PC_CLONE_*, PC_CSIGNAL, PC_STAGE_*: generated from the Python side (_constants.h). */
#include "_constants.h"

/* A fork-like child must not get these (NetBSD's CLONE_VM and CLONE_SIGHAND have
 * Linux's values too). */
#define PC_CLONE_NOT_FORK_LIKE \
    (PC_CLONE_VM | PC_CLONE_SIGHAND | PC_CLONE_THREAD | PC_CLONE_SETTLS)
/* the exit-signal byte of legacy clone's flags, but CLONE_NEWTIME: flags passed to
 * clone() and spawn() must not carry a signal there (exit_signal is a parameter) */
#define PC_SIGNAL_BITS (PC_CSIGNAL & ~PC_CLONE_NEWTIME)
#define PC_MAX_SET_TID 32 /* MAX_PID_NS_LEVEL, torvalds/linux:include/linux/pid_namespace.h */

enum { MODE_FORK = 0, MODE_CLONE3 = 1, MODE_LEGACY = 2 };
enum { USED_FORK = 0, USED_CLONE3 = 1, USED_CLONE = 2 };

/* Waits for children whatever their exit signal: Linux's __WALL, NetBSD's WALLSIG. */
#if defined(__NetBSD__)
#define PC_WALL 0x00000008
#else
#define PC_WALL 0x40000000
#endif

/* ---- _common.c: what clone() and spawn() share -------------------------- */

/* What the caller asks of the kernel, besides the child's own setup. */
struct pc_request {
    unsigned long long flags;
    int exit_signal;
    int cgroup_fd; /* -1: none */
    pid_t set_tid[PC_MAX_SET_TID];
    int set_tid_size;
    int legacy_ok; /* clone3 refused (ENOSYS, EPERM): legacy clone may serve instead */
};

int pc_check_request(struct pc_request *rq, PyObject *set_tid);
PyObject *pc_raise_oserror(int err, const char *what, const char *const names[],
                           const char *format, ...);
void pc_reap(pid_t pid);

#if defined(__linux__)
size_t pc_fill_clone_args(struct pc_clone_args *args, const struct pc_request *rq, int *pidfd);

extern int pc_clone3_enosys; /* clone3 answered ENOSYS once: never try again */
#endif

/* ---- _setup.c: the child's setup, for clone() and spawn() ------------------ */

#define PC_MAX_JOIN 8 /* one per namespace type */

struct pc_setup {
    int present; /* 0: no setup (setup=None) */
    const char *uid_map, *gid_map, *setgroups; /* what the parent writes; NULL: nothing */
    size_t uid_len, gid_len, setgroups_len;
    /* newuidmap/newgidmap in place of writing uid_map/gid_map (a caller without
     * CAP_SETUID/CAP_SETGID): "path\0word\0word..." run as path <child's /proc pid> words;
     * NULL: the parent writes the map itself */
    const char *uid_helper, *gid_helper;
    size_t uid_helper_len, gid_helper_len;
    int have_maps; /* the child waits for them (syncpipe) */
    const char *hostname;
    size_t hostname_len;
    const char *time_offsets; /* /proc/self/timens_offsets text; NULL: no time namespace */
    size_t time_len;
    const char *mount_proc; /* where to mount /proc; NULL: nowhere */
    int propagation; /* PC_PROPAGATION_*: what to make every mount before mount_proc */
    int join_fd[PC_MAX_JOIN], join_type[PC_MAX_JOIN], njoin; /* setns(fd, type) in order */
    int join_entered; /* bit i: join i entered already, by the PID namespace's helper */
    int pdeathsig; /* 0: none */
    int parent_pidfd; /* for the pdeathsig race check; -1: compare getppid() to parent_pid */
    pid_t parent_pid; /* 0: no check possible */
    int pid_ns; /* the PID namespace to create the child in (setns in the parent); -1 */
    int pid_restore; /* the calling thread's own namespace for children, restored after */
    int own_mm; /* the child has its own memory (clone()): it enters a time namespace at once */
    int shared_fds; /* CLONE_FILES: the child must close none of the pipes */
    int syncpipe[2]; /* the parent's go-ahead once the maps are written */
    int errpipe[2]; /* the child's report */
    /* Which of the four fds the parent has closed (PC_SYNC_R...): kept apart from the fds
     * themselves, which spawn's child (sharing this memory) still reads meanwhile. */
    int parent_closed;
};

enum { PC_SYNC_R = 1, PC_SYNC_W = 2, PC_ERR_R = 4, PC_ERR_W = 8 };
/* propagation=, as portclone._setup.PROPAGATION numbers it: DEFAULT is "private" when a
 * /proc is mounted, else nothing */
enum { PC_PROPAGATION_DEFAULT = 0, PC_PROPAGATION_PRIVATE = 1, PC_PROPAGATION_SHARED = 2,
       PC_PROPAGATION_SLAVE = 3, PC_PROPAGATION_UNCHANGED = 4 };

/* What a child writes to its error pipe: where it failed (PC_STAGE_*) and errno;
 * err 0 says that the setup is done (clone() children, which do not exec). */
struct pc_report {
    int stage;
    int err;
};

/* The setup tuple's fields by name, in pc_setup_parse's order, NULL-terminated: the module's
 * SETUP_FIELDS, which portclone._setup.NativeSetup must match. */
extern const char *const pc_setup_fields[];
int pc_setup_parse(struct pc_setup *s, PyObject *setup);
int pc_setup_open(struct pc_setup *s, int report);
void pc_setup_close(struct pc_setup *s);
void pc_setup_close_one(struct pc_setup *s, int which);
int pc_setup_child(const struct pc_setup *s, int *stage);
/* _maps.c: the parent's part, the maps, while the child waits */
void pc_setup_parent(struct pc_setup *s, pid_t pid, int pidfd, const char **what, int *err);
#if defined(__linux__)
/* Write ``data`` to ``name`` (relative to ``dir``, or AT_FDCWD) in one write: 0, or -1. */
int pc_write_file(int dir, const char *name, const char *data, size_t len);
#endif
void pc_report(int fd, int stage, int err);
void pc_setup_close_child_fds(const struct pc_setup *s);

/* ---- _joinpid.c: the child made in the PID namespace of join= -------------- */

enum { PC_PID_NONE = 0, PC_PID_THREAD = 1, PC_PID_HELPER = 2 };
/* Enter the PID namespace of join= for the next child: PC_PID_NONE (none), PC_PID_THREAD
 * (this thread did: pc_pid_leave after the clone), PC_PID_HELPER (it may not, and a helper
 * must make the child: pc_helper_start); -1 with errno (EACCES: the way back is closed). */
int pc_pid_enter(const struct pc_setup *s, unsigned long long flags);
int pc_pid_leave(const struct pc_setup *s);
/* Fork the helper, sharing this descriptor table.  In the helper (0): it is in the user
 * and PID namespaces, and ``s`` marks the user namespace entered (join_entered); it makes
 * the child with pc_helper_request's request, then pc_helper_report.  In the caller: the
 * helper's pid, and ``fds``, the pipe its report comes through (pc_helper_result); -1 with
 * errno.  The child the helper made calls pc_helper_child first. */
pid_t pc_helper_start(struct pc_setup *s, int exit_signal, int fds[2]);
void pc_helper_request(struct pc_request *rq);
void pc_helper_child(const int fds[2]);
void pc_helper_report(int fd, pid_t pid, int pidfd, int err, int used, int stage)
    __attribute__((noreturn));
struct pc_helper_result {
    pid_t pid; /* the child, or -1 */
    int pidfd; /* its pidfd (CLONE_PIDFD), in this table, or -1 */
    int err; /* errno of the failure */
    int used; /* USED_*: the call that made the child */
    int stage; /* PC_STAGE_JOIN: the helper could not enter the namespaces */
};
/* In the caller: the helper reaped, its report read, the pipe closed. */
void pc_helper_result(pid_t helper, const int fds[2], struct pc_helper_result *out);

/* ---- _pidfd_owner.c: a new child handed to its Child; its pidfd's owner --- */

extern const char *const pc_syscall_names[]; /* by USED_*: the module's SYSCALL_NAMES */
int pc_owner_init(void);
void pc_new_generation(void);
int pc_adopt(PyObject *child, pid_t pid, int pidfd, int used);

/* ---- _clone_child.c: a fork-like child's life in Python ------------------- */

void pc_child_main(PyObject *runner) __attribute__((noreturn));

/* ---- _sigmask.c: signal masks --------------------------------------------- */

extern sigset_t pc_caller_mask;
PyObject *pc_native_unblock_signals(PyObject *module, PyObject *unused);
PyObject *pc_native_sigmask_hold(PyObject *module, PyObject *unused);
PyObject *pc_native_sigmask_restore(PyObject *module, PyObject *saved);
PyObject *pc_native_sigmask_signals(PyObject *module, PyObject *saved);

/* ---- _threads.c: where libc caches a thread's tid; the thread count ------- */

#if defined(__linux__)
extern long tid_offset;
long get_tid_offset(void);
PyObject *pc_native_thread_count(PyObject *module, PyObject *unused);
PyObject *pc_native_tid_offset(PyObject *module, PyObject *unused);
#endif

/* ---- _clone.c: fork-like children ----------------------------------------- */

#if defined(__linux__)
extern const char pc_legacy_clone_order[];
PyObject *pc_native_clone(PyObject *module, PyObject *args);
PyObject *pc_native_probe_clone3(PyObject *module, PyObject *unused);
#endif
#ifdef PC_HAVE_LIBC_CLONE
PyObject *pc_native_libc_clone(PyObject *module, PyObject *args);
#endif

/* ---- _spawn.c: exec children (what its two files share: _spawn.h) --------- */

#ifdef PC_HAVE_LIBC_CLONE
PyObject *pc_native_spawn(PyObject *module, PyObject *args, PyObject *kwargs);
extern const int pc_have_clone3_spawn;
#endif

#endif /* PORTCLONE_NATIVE_H */
