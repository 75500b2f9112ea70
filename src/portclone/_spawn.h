/* What spawn's two sides share: the parent (_spawn.c) fills a struct spawn_child, and
 * the child (_spawn_child.c) reads it from the clone to the exec. */
#ifndef PORTCLONE_SPAWN_H
#define PORTCLONE_SPAWN_H

#include "_native.h"

#ifdef PC_HAVE_LIBC_CLONE

/* A child's report where the parent reads it in memory (see struct spawn_child's
 * report): ``made`` is set once the rest is. */
struct spawn_report {
    int made;
    int stage; /* PC_STAGE_* */
    int err;
};

struct spawn_child {
    char **paths; /* candidate executables, NULL-terminated */
    char **argv;
    char **envp; /* NULL: the parent's environ */
    const char *cwd;
    const struct pc_setup *setup; /* namespaces, hostname...: _setup.c */
    int fds[3]; /* what becomes 0, 1, 2; -1: inherited */
    int *keep; /* pass_fds, sorted */
    int nkeep;
    int close_fds;
    int reset_handlers; /* 0 with CLONE_SIGHAND: the table is the parent's */
    int restore_signals; /* SIGPIPE, SIGXFSZ back to SIG_DFL (Python ignores them) */
    int process_group; /* setpgid(0, it) before the exec; -1: stay in ours */
    int setup_fds; /* 0 with CLONE_FILES: the table is the parent's */
    int errpipe; /* write end, close-on-exec; -1: the report goes to ``report`` */
    /* With CLONE_VM|CLONE_VFORK the parent runs again only once the child has exec'd or
     * exited, in the memory the child wrote: its report goes there, no pipe is needed. */
    struct spawn_report *report;
    sigset_t mask; /* the parent's signal mask, restored just before execve */
};

/* The child's whole life, on its own stack: fn for clone3_fn or libc's clone, ``arg`` the
 * struct spawn_child. */
int pc_spawn_child_main(void *arg);

#endif /* PC_HAVE_LIBC_CLONE */
#endif /* PORTCLONE_SPAWN_H */
