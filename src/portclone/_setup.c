/*
 * The child's setup, shared by clone() (_clone.c) and spawn() (_spawn.c): what a
 * new child does to itself before the caller's function runs or the program execs.
 * What the parent does for it meanwhile (its uid/gid maps) is in _maps.c.
 *
 * The child's part runs in C only, async-signal-safe, with every signal blocked and
 * nothing allocated: spawn's child shares the parent's memory.  Its order is
 * unshare(1)'s and nsenter(1)'s (util-linux:sys-utils/unshare.c, nsenter.c): wait
 * for the maps, the parent-death signal, the joined namespaces (user first), a time
 * namespace with its offsets, the hostname, a fresh /proc.  A failure is reported
 * to the parent as (stage, errno) through a close-on-exec pipe.
 */
#include "_native.h"

#ifdef PC_HAVE_LIBC_CLONE

#include <poll.h>
#if defined(__linux__)
#include <sys/mount.h>
#include <sys/prctl.h>
#endif

/* setup: None or (uid_map, gid_map, setgroups, hostname, time_offsets, mount_proc, join,
 * pdeathsig, parent_pidfd, parent_pid, pid_ns, pid_restore[, propagation[, uid_helper,
 * gid_helper]]): bytes or None for the first six and the helpers, join a tuple of (fd,
 * CLONE_NEW* type) pairs.  The pointers borrow the tuple's bytes. */
const char *const pc_setup_fields[] = {
    "uid_map", "gid_map", "setgroups", "hostname", "time_offsets", "mount_proc", "join",
    "pdeathsig", "parent_pidfd", "parent_pid", "pid_ns", "pid_restore", "propagation",
    "uid_helper", "gid_helper", NULL,
};

static int
setup_bytes(PyObject *value, const char **data, size_t *len)
{
    char *p;
    Py_ssize_t n;
    if (value == Py_None)
        return 0;
    if (PyBytes_AsStringAndSize(value, &p, &n) < 0)
        return -1;
    *data = p;
    *len = (size_t)n;
    return 0;
}

static int
setup_join(struct pc_setup *s, PyObject *join)
{
    Py_ssize_t n = PyTuple_Size(join);
    if (n > PC_MAX_JOIN) {
        PyErr_Format(PyExc_ValueError, "at most %d namespaces can be joined", PC_MAX_JOIN);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GetItem(join, i);
        if (!PyTuple_Check(pair) || !PyArg_ParseTuple(pair, "ii", &s->join_fd[i],
                                                      &s->join_type[i])) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "join entries are (fd, nstype) tuples");
            return -1;
        }
        if (s->join_fd[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "join fds must be open descriptors");
            return -1;
        }
    }
    s->njoin = (int)n;
    return 0;
}

int
pc_setup_parse(struct pc_setup *s, PyObject *setup)
{
    PyObject *uid, *gid, *groups, *host, *offsets, *proc, *join;
    PyObject *uid_helper = Py_None, *gid_helper = Py_None;
    size_t unused;
    int parent_pid;

    memset(s, 0, sizeof *s);
    s->parent_pidfd = s->pid_ns = s->pid_restore = -1;
    s->syncpipe[0] = s->syncpipe[1] = s->errpipe[0] = s->errpipe[1] = -1;
    if (setup == Py_None)
        return 0;
    if (!PyTuple_Check(setup)) { /* PyArg_ParseTuple would raise SystemError */
        PyErr_SetString(PyExc_TypeError, "setup must be a tuple or None");
        return -1;
    }
    if (!PyArg_ParseTuple(setup, "OOOOOOO!iiiii|iOO:setup", &uid, &gid, &groups, &host,
                          &offsets, &proc, &PyTuple_Type, &join, &s->pdeathsig,
                          &s->parent_pidfd, &parent_pid, &s->pid_ns, &s->pid_restore,
                          &s->propagation, &uid_helper, &gid_helper))
        return -1;
    if (setup_bytes(uid_helper, &s->uid_helper, &s->uid_helper_len) < 0 ||
        setup_bytes(gid_helper, &s->gid_helper, &s->gid_helper_len) < 0)
        return -1;
    if (setup_bytes(uid, &s->uid_map, &s->uid_len) < 0 ||
        setup_bytes(gid, &s->gid_map, &s->gid_len) < 0 ||
        setup_bytes(groups, &s->setgroups, &s->setgroups_len) < 0 ||
        setup_bytes(host, &s->hostname, &s->hostname_len) < 0 ||
        setup_bytes(offsets, &s->time_offsets, &s->time_len) < 0 ||
        setup_bytes(proc, &s->mount_proc, &unused) < 0 || setup_join(s, join) < 0)
        return -1;
    if (s->pdeathsig < 0 || s->pdeathsig >= NSIG) {
        PyErr_Format(PyExc_ValueError, "pdeathsig %d is not a signal", s->pdeathsig);
        return -1;
    }
    if (s->propagation < PC_PROPAGATION_DEFAULT || s->propagation > PC_PROPAGATION_UNCHANGED) {
        PyErr_Format(PyExc_ValueError, "unknown propagation %d", s->propagation);
        return -1;
    }
    if ((s->pid_ns < 0) != (s->pid_restore < 0)) {
        PyErr_SetString(PyExc_ValueError, "joining a PID namespace needs the fd to restore");
        return -1;
    }
    s->parent_pid = (pid_t)parent_pid;
    s->present = 1;
    s->have_maps = s->uid_map != NULL || s->gid_map != NULL || s->setgroups != NULL;
    return 0;
}

/* The pipes: the report (when ``report``: spawn has its own), the go-ahead when the
 * parent writes maps. */
int
pc_setup_open(struct pc_setup *s, int report)
{
    if ((report && pipe2(s->errpipe, O_CLOEXEC) != 0) ||
        (s->have_maps && pipe2(s->syncpipe, O_CLOEXEC) != 0)) {
        int err = errno;
        pc_setup_close(s); /* the first pipe, when the second failed */
        pc_raise_oserror(err, "creating portclone's internal pipe (before the clone)",
                         NULL, NULL);
        return -1;
    }
    return 0;
}

/* Close one of the parent's fds (PC_SYNC_R...), once; the fd fields stay as they are. */
void
pc_setup_close_one(struct pc_setup *s, int which)
{
    int fd = which == PC_SYNC_R ? s->syncpipe[0] : which == PC_SYNC_W ? s->syncpipe[1]
             : which == PC_ERR_R ? s->errpipe[0] : s->errpipe[1];
    if (fd >= 0 && !(s->parent_closed & which))
        close(fd);
    s->parent_closed |= which;
}

void
pc_setup_close(struct pc_setup *s)
{
    pc_setup_close_one(s, PC_SYNC_R);
    pc_setup_close_one(s, PC_SYNC_W);
    pc_setup_close_one(s, PC_ERR_R);
    pc_setup_close_one(s, PC_ERR_W);
}

void
pc_report(int fd, int stage, int err)
{
    struct pc_report r;
    r.stage = stage;
    r.err = err;
    if (write(fd, &r, sizeof r) < 0) {
        /* nothing more to do: the parent sees EOF without a report */
    }
}

#if defined(__linux__)
/* Write ``data`` to ``name`` (relative to the directory ``dir``, or AT_FDCWD) in one write. */
int
pc_write_file(int dir, const char *name, const char *data, size_t len)
{
    int fd = openat(dir, name, O_WRONLY | O_CLOEXEC);
    ssize_t n;
    if (fd < 0)
        return -1;
    n = write(fd, data, len);
    if (n != (ssize_t)len) {
        int e = n < 0 ? errno : EIO; /* a short write sets no errno */
        close(fd);
        errno = e;
        return -1;
    }
    return close(fd);
}

/* The parent-death signal, and the race it has: a parent that died before the prctl
 * sends nothing, so the child checks and signals itself (the parent's pidfd where
 * there is one: its pid is not visible from a new PID namespace). */
static int
setup_pdeathsig(const struct pc_setup *s)
{
    int gone = 0;
    if (prctl(PR_SET_PDEATHSIG, (unsigned long)s->pdeathsig, 0UL, 0UL, 0UL) != 0)
        return -1;
    if (s->parent_pidfd >= 0) {
        struct pollfd p;
        p.fd = s->parent_pidfd;
        p.events = POLLIN;
        p.revents = 0;
        gone = poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP));
    }
    else if (s->parent_pid > 0) {
        gone = getppid() != s->parent_pid;
    }
    if (gone && getpid() == 1) /* a new PID namespace's init: its own signal is dropped */
        _exit(128 + s->pdeathsig);
    if (gone)
        kill(getpid(), s->pdeathsig); /* pending until the child unblocks signals */
    return 0;
}

/* The namespaces of join=, in nsenter's two passes (util-linux:sys-utils/nsenter.c):
 * every one but the user namespace, failures left for later; then the user namespace
 * and those that failed, in order (user first), failures reported.  A privileged caller
 * so enters a target's older namespaces while it still has its privilege, and an
 * unprivileged one enters them once the user namespace has given it some. */
static int
enter_joined(const struct pc_setup *s)
{
    int done[PC_MAX_JOIN] = {0};
    for (int i = 0; i < s->njoin; i++)
        done[i] = (s->join_entered & (1 << i)) || /* by the PID namespace's helper: _joinpid.c */
                  (s->join_type[i] != PC_CLONE_NEWUSER && setns(s->join_fd[i], s->join_type[i]) == 0);
    for (int i = 0; i < s->njoin; i++)
        if (!done[i] && setns(s->join_fd[i], s->join_type[i]) != 0)
            return -1;
    return 0;
}

/* A new time namespace with its offsets: unshare makes it this process's namespace for
 * children, whose offsets can be written until a process enters it; then enter it.  Only
 * a child with memory of its own can (setns answers EUSERS to one sharing it), so spawn()
 * gives such a child a copy.  One sharing it would enter only at its exec, and only
 * on kernels whose exec switches to the children's time namespace (6.18 here does;
 * bookworm's 6.1 does not: its programs kept unshifted clocks). */
static int
setup_time(const struct pc_setup *s)
{
    int fd, r;
    if (unshare(PC_CLONE_NEWTIME) != 0 ||
        pc_write_file(AT_FDCWD, "/proc/self/timens_offsets", s->time_offsets, s->time_len) != 0)
        return -1;
    if (!s->own_mm)
        return 0;
    fd = open("/proc/self/ns/time_for_children", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    r = setns(fd, PC_CLONE_NEWTIME);
    close(fd);
    return r;
}

/* Every mount's propagation (unshare --propagation): private by default when a /proc
 * is mounted (unshare --mount-proc), so that nothing propagates back to the parent. */
static int
setup_propagation(const struct pc_setup *s)
{
    unsigned long how;
    switch (s->propagation) {
    case PC_PROPAGATION_SHARED:
        how = MS_SHARED;
        break;
    case PC_PROPAGATION_SLAVE:
        how = MS_SLAVE;
        break;
    case PC_PROPAGATION_PRIVATE:
        how = MS_PRIVATE;
        break;
    case PC_PROPAGATION_DEFAULT:
        if (s->mount_proc == NULL)
            return 0;
        how = MS_PRIVATE;
        break;
    default:
        return 0; /* unchanged */
    }
    return mount("none", "/", NULL, how | MS_REC, NULL);
}
#endif


/*
 * In the child, right after the clone: wait for the maps, then set itself up.
 * 0, or the stage (PC_STAGE_*) that failed with errno set.  A child that finds its
 * parent gone before the go-ahead _exits.
 */
int
pc_setup_child(const struct pc_setup *s, int *stage)
{
    if (s->syncpipe[0] >= 0) {
        char go;
        if (!s->shared_fds)
            close(s->syncpipe[1]); /* or it would never see EOF */
        if (read(s->syncpipe[0], &go, 1) != 1)
            _exit(127); /* the parent gave up (its error is reported there) */
    }
#if defined(__linux__)
    *stage = PC_STAGE_PDEATHSIG;
    if (s->pdeathsig && setup_pdeathsig(s) != 0)
        return -1;
    *stage = PC_STAGE_JOIN;
    if (enter_joined(s) != 0)
        return -1;
    *stage = PC_STAGE_TIME;
    if (s->time_offsets != NULL && setup_time(s) != 0)
        return -1;
    *stage = PC_STAGE_HOSTNAME;
    if (s->hostname != NULL && sethostname(s->hostname, s->hostname_len) != 0)
        return -1;
    *stage = PC_STAGE_PROPAGATION;
    if (setup_propagation(s) != 0)
        return -1;
    *stage = PC_STAGE_MOUNT_PROC;
    if (s->mount_proc != NULL &&
        mount("proc", s->mount_proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
        return -1;
#else
    *stage = PC_STAGE_HOSTNAME;
    if (s->pdeathsig || s->njoin || s->time_offsets || s->hostname || s->mount_proc ||
        s->propagation) {
        errno = ENOSYS; /* the backends refuse these options first */
        return -1;
    }
#endif
    return 0;
}


/* In a clone() child whose setup is done: close the fds the setup used (the parent's
 * pidfd, the namespaces joined), which the caller's function must not inherit. */
void
pc_setup_close_child_fds(const struct pc_setup *s)
{
    if (s->parent_pidfd >= 0)
        close(s->parent_pidfd);
    for (int i = 0; i < s->njoin; i++)
        close(s->join_fd[i]);
    if (s->pid_ns >= 0)
        close(s->pid_ns);
    if (s->pid_restore >= 0)
        close(s->pid_restore);
}


#endif /* PC_HAVE_LIBC_CLONE */
