/* libc entry points that leave frames without running their exit hooks, or
 * that end or replace the process image, interposed so that the trace stays
 * well nested (docs/RUNTIME.md, "Hard cases").
 *
 * - setjmp family: asm stubs note (jmp_buf address -> thread depth) and
 *   tail-jump to libc, so libc's setjmp sees the program's own frame.
 * - longjmp family, pthread_exit: write an UNWIND record (frames at depth >=
 *   the target were left without returning) and set the depth counter back
 *   before jumping, so what follows nests where it really runs.
 * - exec family: exec.c.
 * - vfork: the child runs muted on its parent's memory.
 * - dlopen/dlsym/dlclose: asm stubs too (libc uses the caller's address for
 *   RUNPATH and RTLD_NEXT), recording newly loaded modules so the names of
 *   dlopen'd instrumented code resolve.
 *
 * None of this is on the per-call hot path: no malloc, no locks. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "ct.h"

/* ---- setjmp: per-thread table of jump buffers ------------------------------
 * Fixed size, no malloc: a longjmp targets a live frame, and frames die in
 * stack order, so a slot whose frame is gone (its stack pointer is below the
 * one of a newer setjmp on the same stack) is reused first. */
#define SJ_SLOTS 32

struct sj_slot {
    const void *buf;
    uintptr_t sp;       /* caller's stack pointer at setjmp */
    uint32_t depth;
};

static __thread struct sj_slot sj_tab[SJ_SLOTS] __attribute__((tls_model("initial-exec")));
static __thread uint32_t sj_rr __attribute__((tls_model("initial-exec")));

enum { SJ_UNDERSCORE, SJ_PLAIN, SJ_SIG, SJ_N };
static void *sj_real[SJ_N];
static const char *const sj_names[SJ_N] = {"_setjmp", "setjmp", "__sigsetjmp"};

/* dlsym itself is interposed below, and calls from this library reach that
 * stub too: find libc's through dlvsym, which is not interposed. */
typedef void *(*dlsym_fn)(void *, const char *);
static dlsym_fn real_dlsym;

CT_HIDDEN CT_NOINST void *ct_resolve(const char *name) {
    dlsym_fn d = __atomic_load_n(&real_dlsym, __ATOMIC_RELAXED);
    if (!d) {
        d = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
        if (!d)
            d = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
        __atomic_store_n(&real_dlsym, d, __ATOMIC_RELAXED);
    }
    void *p = d ? d(RTLD_NEXT, name) : NULL;
    if (!p) {
        /* Nothing sensible to jump to: dying loudly beats jumping to 0. */
        static const char msg[] = "calltrace: cannot find the libc function it interposes\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        abort();
    }
    return p;
}

/* ct_resolve, once per slot. */
static inline CT_NOINST void *resolve_once(void **slot, const char *name) {
    void *p = __atomic_load_n(slot, __ATOMIC_RELAXED);
    if (unlikely(!p)) {
        p = ct_resolve(name);
        __atomic_store_n(slot, p, __ATOMIC_RELAXED);
    }
    return p;
}

/* Called by the stubs below with the program's arguments untouched in the
 * saved registers; returns the libc function to tail-jump to. */
CT_HIDDEN CT_NOINST __attribute__((used)) void *ct_sj_note(const void *buf, uintptr_t sp, unsigned which) {
    uint32_t depth = ct_tls.depth;
    struct sj_slot *slot = NULL;
    for (int i = 0; i < SJ_SLOTS; i++) {
        struct sj_slot *s = &sj_tab[i];
        if (s->buf == buf) {
            slot = s;
            break;
        }
        if (!slot && (!s->buf || s->sp < sp))
            slot = s;
    }
    if (!slot)
        slot = &sj_tab[sj_rr++ % SJ_SLOTS];
    slot->buf = buf;
    slot->sp = sp;
    slot->depth = depth;
    return resolve_once(&sj_real[which], sj_names[which]);
}

#if defined(__x86_64__)
/* At entry the return address is at (%rsp); the caller's stack pointer after
 * setjmp returns is %rsp + 8, i.e. %rsp + 32 after the three pushes below.
 * %rdi (jmp_buf) and %rsi (__sigsetjmp's savemask) are restored before the
 * jump; %rdx is not an argument of any of these. */
#define SJ_STUB(name, which)                                                   \
    __asm__(".text\n"                                                          \
            ".globl " #name "\n"                                               \
            ".type " #name ",@function\n"                                      \
            ".p2align 4\n" #name ":\n"                                         \
            ".cfi_startproc\n"                                                 \
            "endbr64\n"                                                        \
            "pushq %rdi\n.cfi_adjust_cfa_offset 8\n"                           \
            "pushq %rsi\n.cfi_adjust_cfa_offset 8\n"                           \
            "subq $8, %rsp\n.cfi_adjust_cfa_offset 8\n"                        \
            "leaq 32(%rsp), %rsi\n"                                            \
            "movl $" #which ", %edx\n"                                         \
            "call ct_sj_note\n"                                                \
            "addq $8, %rsp\n.cfi_adjust_cfa_offset -8\n"                       \
            "popq %rsi\n.cfi_adjust_cfa_offset -8\n"                           \
            "popq %rdi\n.cfi_adjust_cfa_offset -8\n"                           \
            "jmp *%rax\n"                                                      \
            ".cfi_endproc\n"                                                   \
            ".size " #name ", .-" #name "\n")
SJ_STUB(_setjmp, 0);
SJ_STUB(setjmp, 1);
SJ_STUB(__sigsetjmp, 2);
#endif

/* A signal handler that interrupted a hook and now jumps out abandons it with
 * the thread marked busy: clear that, and if the hook was switching chunks,
 * make the next event start a fresh one rather than write into a retired
 * window. */
static CT_NOINST void abandon_hook(struct ct_thread *t) {
    if (!t->busy)
        return;
    char *c = (char *)t->chunk, *s = (char *)t->seg;
    if (!c || !s || (char *)t->cur < s + CT_SEG_HEADER || (char *)t->end > c + ct_chunk_bytes ||
        t->cur > t->end) {
        t->cur = t->end = NULL;
        t->chunk = NULL;   /* already retired, or never installed */
        t->seg = NULL;
    }
    ct_barrier();
    t->busy = 0;
}

/* Frames at run-time depth >= `depth` are being left without returning. */
static CT_NOINST void unwind_to(uint32_t depth) {
    struct ct_thread *t = &ct_tls;
    abandon_hook(t);
    if (t->depth <= depth)
        return;
    if (t->on && t->seg && depth < ct_max_depth)
        ct_write_ext(t, CT_EXT_UNWIND, depth);
    t->depth = depth;
}

/* Jumping from a signal handler on the alternate stack: that stack may lie
 * anywhere relative to the target frame's, so stack order says nothing. */
static CT_NOINST int on_altstack(void) {
    stack_t ss;
    return sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_ONSTACK);
}

static CT_NOINST void unwind_to_buf(const void *buf) {
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    for (int i = 0; i < SJ_SLOTS; i++) {
        struct sj_slot *s = &sj_tab[i];
        /* The target frame must be above us; a slot whose frame is below is
         * stale (the frame returned and the address was reused). */
        if (s->buf == buf && (s->sp > here || on_altstack())) {
            unwind_to(s->depth);
            return;
        }
    }
    abandon_hook(&ct_tls);
}


typedef void (*jump_fn)(struct __jmp_buf_tag *, int) __attribute__((noreturn));
static void *real_longjmp, *real__longjmp, *real_siglongjmp, *real_longjmp_chk;

#define JUMP_WRAPPER(name, real)                                                       \
    CT_EXPORT CT_NOINST __attribute__((noreturn)) void name(struct __jmp_buf_tag env[1], int val) { \
        int saved = errno;                                                             \
        unwind_to_buf(env);                                                            \
        jump_fn jump = (jump_fn)resolve_once(&real, #name);                            \
        errno = saved;                                                                 \
        jump(env, val);                                                                \
    }
JUMP_WRAPPER(longjmp, real_longjmp)
JUMP_WRAPPER(_longjmp, real__longjmp)
JUMP_WRAPPER(siglongjmp, real_siglongjmp)
JUMP_WRAPPER(__longjmp_chk, real_longjmp_chk)

/* Every frame of the thread is left here: the trace closes them now, and
 * cleanup handlers and TLS destructors that pthread_exit runs appear at depth
 * 0. The depth counter is left alone: glibc unwinds C++ frames, whose exit
 * hooks then run and count down from it (set to 0 it would wrap and record
 * the destructors those frames run as too deep). */
CT_EXPORT CT_NOINST __attribute__((noreturn)) void pthread_exit(void *ret) {
    typedef void (*exit_fn)(void *) __attribute__((noreturn));
    static void *real;
    struct ct_thread *t = &ct_tls;
    abandon_hook(t);
    if (t->depth && t->on && t->seg)
        ct_write_ext(t, CT_EXT_UNWIND, 0);
    ((exit_fn)resolve_once(&real, "pthread_exit"))(ret);
}

/* ---- vfork -------------------------------------------------------------------
 * A vfork() child borrows its parent's memory, TLS included, until it execs
 * or exits: instrumented code it runs would write into the parent thread's
 * chunk and depth, and its _exit would end the parent's recording. The stub
 * saves the thread's state, the child runs muted (its own calls are not
 * recorded; the image it execs is traced as a process of its own), and the
 * parent, resumed once the child is gone, gets its state back. Like libc's
 * vfork the stub keeps its return address in a register across the system
 * call: the child reuses the stack below the caller's frame. */
static __thread struct ct_thread vf_saved __attribute__((tls_model("initial-exec")));
static __thread pid_t vf_parent __attribute__((tls_model("initial-exec")));
static __thread uint32_t vf_child __attribute__((tls_model("initial-exec")));

/* True in a vfork() child (until it execs or exits). */
CT_HIDDEN CT_NOINST int ct_vfork_child(void) { return vf_child; }

CT_HIDDEN CT_NOINST __attribute__((used)) void ct_vfork_enter(void) {
    if (vf_child)
        return;   /* a muted child's own vfork: its child is muted too */
    vf_saved = ct_tls;
    vf_parent = (pid_t)syscall(SYS_getpid);
}

CT_HIDDEN CT_NOINST __attribute__((used)) long ct_vfork_leave(long r) {
    int saved = errno;
    if (r == 0) {
        struct ct_thread *t = &ct_tls;
        t->on = 0;
        t->failed = 1;        /* never claims a chunk, even after a toggle */
        t->chunk = NULL;
        t->cur = t->end = NULL;
        vf_child = 1;
        errno = saved;
        return 0;
    }
    /* The child exec'd or exited (or there was none): what it wrote into
     * this thread's TLS goes. A muted child that vforks stays muted. */
    if (vf_parent == (pid_t)syscall(SYS_getpid)) {
        ct_tls = vf_saved;
        vf_child = 0;
        vf_parent = 0;
    }
    if (r < 0) {
        errno = (int)-r;
        return -1;
    }
    errno = saved;
    return r;
}

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork,@function\n"
        ".p2align 4\n"
        "vfork:\n"
        ".cfi_startproc\n"
        "endbr64\n"
        "subq $8, %rsp\n.cfi_adjust_cfa_offset 8\n"
        "call ct_vfork_enter\n"
        "addq $8, %rsp\n.cfi_adjust_cfa_offset -8\n"
        "popq %rdi\n.cfi_adjust_cfa_offset -8\n.cfi_register %rip, %rdi\n"
        "movl $" CT_STR(SYS_vfork) ", %eax\n"
        "syscall\n"
        "pushq %rdi\n.cfi_adjust_cfa_offset 8\n.cfi_rel_offset %rip, 0\n"
        "movq %rax, %rdi\n"
        "subq $8, %rsp\n.cfi_adjust_cfa_offset 8\n"
        "call ct_vfork_leave\n"
        "addq $8, %rsp\n.cfi_adjust_cfa_offset -8\n"
        "ret\n"
        ".cfi_endproc\n"
        ".size vfork, .-vfork\n");
#endif

/* ---- dlopen'd modules ---------------------------------------------------------
 * Module addresses are recorded at start-up; a library loaded later is
 * recorded the next time the program uses the dynamic linker (a dlopen is
 * nearly always followed by dlsym before its code runs), before it is
 * closed, and at exit. dl_iterate_phdr's load counter makes the check cheap. */
static unsigned long long seen_adds;
static int exit_scan_registered;
static int closed;   /* a dlclose since the last dlopen */

static CT_NOINST int adds_cb(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    *(unsigned long long *)arg = info->dlpi_adds;
    return 1;
}

CT_HIDDEN CT_NOINST void ct_scan_modules(int force) {
    struct ct_header *h = ct_header();
    if (!h || h->pid != (int32_t)getpid())
        return;
    unsigned long long adds = 0;
    dl_iterate_phdr(adds_cb, &adds);
    if (force || adds != __atomic_load_n(&seen_adds, __ATOMIC_RELAXED)) {
        __atomic_store_n(&seen_adds, adds, __ATOMIC_RELAXED);
        ct_meta_modules();
    }
}

static CT_NOINST void modules_at_exit(void) { ct_scan_modules(0); }

enum { DL_OPEN, DL_SYM, DL_CLOSE, DL_MOPEN, DL_N };

CT_HIDDEN CT_NOINST __attribute__((used)) void *ct_dl_note(unsigned which) {
    static const char *const names[DL_N] = {"dlopen", "dlsym", "dlclose", "dlmopen"};
    static void *real[DL_N];
    /* dlclose: record now, while the closing library is still mapped; and
     * at the next dlopen, before the loader may reuse its addresses: the
     * scan between them tells the converter when the old library's time
     * there ended (its destructors ran in dlclose, after our first scan). */
    int reopen = (which == DL_OPEN || which == DL_MOPEN) && __atomic_exchange_n(&closed, 0, __ATOMIC_ACQ_REL);
    ct_scan_modules(which == DL_CLOSE || reopen);
    if (which == DL_CLOSE)
        __atomic_store_n(&closed, 1, __ATOMIC_RELEASE);
    if (which != DL_CLOSE)
        ct_capture_scan();   /* --capture-args: plan the libraries loaded since */
    if ((which == DL_OPEN || which == DL_MOPEN) && !__atomic_exchange_n(&exit_scan_registered, 1, __ATOMIC_ACQ_REL))
        atexit(modules_at_exit);   /* registered after libc's, so it runs before the runtime's destructor */
    return resolve_once(&real[which], names[which]);
}

#if defined(__x86_64__)
/* Same shape as SJ_STUB, saving every argument register these take. */
#define DL_STUB(name, which)                                                   \
    __asm__(".text\n"                                                          \
            ".globl " #name "\n"                                               \
            ".type " #name ",@function\n"                                      \
            ".p2align 4\n" #name ":\n"                                         \
            ".cfi_startproc\n"                                                 \
            "endbr64\n"                                                        \
            "pushq %rdi\n.cfi_adjust_cfa_offset 8\n"                           \
            "pushq %rsi\n.cfi_adjust_cfa_offset 8\n"                           \
            "pushq %rdx\n.cfi_adjust_cfa_offset 8\n"                           \
            "pushq %rcx\n.cfi_adjust_cfa_offset 8\n"                           \
            "pushq %r8\n.cfi_adjust_cfa_offset 8\n"                            \
            "movl $" #which ", %edi\n"                                         \
            "call ct_dl_note\n"                                                \
            "popq %r8\n.cfi_adjust_cfa_offset -8\n"                            \
            "popq %rcx\n.cfi_adjust_cfa_offset -8\n"                           \
            "popq %rdx\n.cfi_adjust_cfa_offset -8\n"                           \
            "popq %rsi\n.cfi_adjust_cfa_offset -8\n"                           \
            "popq %rdi\n.cfi_adjust_cfa_offset -8\n"                           \
            "jmp *%rax\n"                                                      \
            ".cfi_endproc\n"                                                   \
            ".size " #name ", .-" #name "\n")
DL_STUB(dlopen, 0);
DL_STUB(dlsym, 1);
DL_STUB(dlclose, 2);
DL_STUB(dlmopen, 3);
#endif

__attribute__((constructor)) static CT_NOINST void interpose_init(void) {
    for (int i = 0; i < SJ_N; i++)
        sj_real[i] = ct_resolve(sj_names[i]);
    if (!ct_attach_late())   /* calltrace attach configures its own session */
        ct_init();
    dl_iterate_phdr(adds_cb, &seen_adds);   /* the stream has just listed these */
}
