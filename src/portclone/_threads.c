/*
 * This process's threads, as libc and the kernel see them: where libc's thread
 * descriptor caches the thread's tid (tid_offset, found at run time by scanning the
 * descriptors of two threads for their kernel tids), and the thread count of
 * /proc/self/stat (thread_count).  A raw clone skips libc's fork bookkeeping: the
 * clone has the kernel write the child's tid at that offset (_clone.c).
 */
#include "_native.h"

#if defined(__linux__)

#include <sys/uio.h>

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

/* Field 20 of /proc/self/stat, read with plain system calls: no Python objects
 * are created, so the caller's memory footprint stays small (see Backend.__init__ in _backend.py). */
PyObject *
pc_native_thread_count(PyObject *module, PyObject *unused)
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

PyObject *
pc_native_tid_offset(PyObject *module, PyObject *unused)
{
    return PyLong_FromLong(get_tid_offset());
}

#endif /* __linux__ */
