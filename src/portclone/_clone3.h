/* clone3(2) for portclone's C: struct clone_args, and clone3 running a
 * function on a new stack.  Plain C, no Python: the extension uses it (clone3_fn:
 * _spawn.c), and so does the test suite's kernel probe (tests/kernel_verdict.c),
 * which thereby runs these instructions on every architecture of the guest matrix. */
#ifndef PORTCLONE_CLONE3_H
#define PORTCLONE_CLONE3_H
#if defined(__linux__)

#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>

#ifndef SYS_clone3
#define SYS_clone3 435 /* the same number on every architecture */
#endif

/* torvalds/linux:include/uapi/linux/sched.h, struct clone_args */
struct pc_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack,
        stack_size, tls, set_tid, set_tid_size, cgroup;
};
#define PC_CLONE_ARGS_SIZE_VER0 64 /* Linux 5.3 */
#define PC_CLONE_ARGS_SIZE_VER1 80 /* 5.5: set_tid, set_tid_size */
#define PC_CLONE_ARGS_SIZE_VER2 88 /* 5.7: cgroup */

/*
 * clone3 with a new stack, the child running fn(arg) there and exiting with
 * its result.  clone3 has no libc wrapper that runs a function, and a CLONE_VM
 * child may not return through the parent's stack frames (the parent resumes
 * through them), so the few instructions are written out per architecture.
 * Elsewhere spawn uses libc's clone() (legacy clone), which does the same.
 */
#if defined(__x86_64__) || defined(__aarch64__) || defined(__i386__) || defined(__s390x__)
#define PC_HAVE_CLONE3_FN 1
static inline long
clone3_fn(struct pc_clone_args *args, size_t size, int (*fn)(void *), void *arg)
{
#if defined(__x86_64__)
    register long rax __asm__("rax") = SYS_clone3;
    register void *r12 __asm__("r12") = (void *)fn;
    register void *r13 __asm__("r13") = arg;
    __asm__ __volatile__(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t" /* the child: outermost frame on its own stack */
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $60, %%eax\n\t" /* exit */
        "syscall\n\t"
        "hlt\n"
        "1:\n\t"
        : "+r"(rax)
        : "D"(args), "S"(size), "r"(r12), "r"(r13)
        : "rcx", "r11", "memory", "cc");
    return rax;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = SYS_clone3;
    register long x0 __asm__("x0") = (long)args;
    register long x1 __asm__("x1") = (long)size;
    register long x19 __asm__("x19") = (long)fn;
    register long x20 __asm__("x20") = (long)arg;
    __asm__ __volatile__(
        "svc #0\n\t"
        "cbnz x0, 1f\n\t"
        "mov x29, xzr\n\t"
        "mov x30, xzr\n\t"
        "mov x0, x20\n\t"
        "blr x19\n\t"
        "mov x8, #93\n\t" /* exit */
        "svc #0\n"
        "1:\n\t"
        : "+r"(x0)
        : "r"(x8), "r"(x1), "r"(x19), "r"(x20)
        : "x30", "memory", "cc");
    return x0;
#elif defined(__i386__)
    long eax = SYS_clone3;
    __asm__ __volatile__(
        "int $0x80\n\t"
        "test %%eax, %%eax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"
        "sub $12, %%esp\n\t" /* 16-byte aligned at the call */
        "push %%edi\n\t"
        "call *%%esi\n\t"
        "mov %%eax, %%ebx\n\t"
        "mov $1, %%eax\n\t" /* exit */
        "int $0x80\n\t"
        "hlt\n"
        "1:\n\t"
        : "+a"(eax)
        : "b"(args), "c"(size), "S"(fn), "D"(arg)
        : "memory", "cc");
    return eax;
#elif defined(__s390x__)
    register long r1 __asm__("r1") = SYS_clone3;
    register long r2 __asm__("r2") = (long)args;
    register long r3 __asm__("r3") = (long)size;
    register long r8 __asm__("r8") = (long)fn;
    register long r9 __asm__("r9") = (long)arg;
    __asm__ __volatile__(
        "svc 0\n\t"
        "ltgr %%r2, %%r2\n\t"
        "jnz 1f\n\t"
        "aghi %%r15, -160\n\t" /* the callee's register save area */
        "xc 0(8,%%r15), 0(%%r15)\n\t" /* a zero back chain: outermost frame */
        "lgr %%r2, %%r9\n\t"
        "basr %%r14, %%r8\n\t"
        "lghi %%r1, 1\n\t" /* exit */
        "svc 0\n"
        "1:\n\t"
        : "+d"(r2)
        : "d"(r1), "d"(r3), "d"(r8), "d"(r9)
        : "r14", "memory", "cc");
    return r2;
#endif
}
#endif

#endif /* __linux__ */
#endif /* PORTCLONE_CLONE3_H */
