/* The two -finstrument-functions hooks: the hot path.
 *
 * Each call costs a TLS access, a few compares, one rdtsc and one 8-byte store
 * into the thread's current chunk (a MAP_SHARED window of the raw file, so
 * what is stored survives even SIGKILL). No lock, no malloc, no syscall except
 * when a chunk fills. */
#define _GNU_SOURCE
#include <sys/syscall.h>
#include <string.h>
#include <unistd.h>
#include "ct.h"

__thread struct ct_thread ct_tls __attribute__((tls_model("initial-exec")));
volatile uint32_t ct_epoch = 1;
volatile uint32_t ct_recording = 0;
uint32_t ct_max_depth = 0x7fffffff;
uint64_t ct_threshold_ticks;
uint32_t ct_filter_mode;
uint32_t ct_exit_slow;     /* a filter or a threshold: returns need a look */

/* --threshold: a call that returns sooner than the threshold right after its
 * own ENTER (a leaf, or a call whose children were all removed) is taken back
 * out of the buffer, so short calls cost no space at all. */
static CT_NOINST int drop_short(struct ct_thread *t, void *fn) {
    uint64_t *p = t->cur;
    if (t->busy || !t->chunk || p <= (uint64_t *)((char *)t->chunk + CT_CHUNK_HEADER))
        return 0;
    uint64_t w = p[-1];
    if ((w >> 62) != CT_EV_ENTER || ((w >> CT_DELTA_BITS) & CT_ADDR_MASK) != ((uint64_t)(uintptr_t)fn & CT_ADDR_MASK))
        return 0;
    if (ct_ticks() - t->last >= ct_threshold_ticks)
        return 0;
    p[-1] = 0;          /* words past `cur` stay zero: the converter stops there */
    t->cur = p - 1;
    t->last -= w & CT_DELTA_MASK;
    t->chunk->filtered++;
    return 1;
}

/* Enter the recorder; a signal handler's calls interrupting this very hook
 * are dropped and counted instead (the hook is not reentrant by design). */
static inline CT_NOINST int take_busy(struct ct_thread *t) {
    if (unlikely(t->busy)) {
        if (t->chunk)
            t->chunk->dropped++;
        else
            t->pend_dropped++;
        return 0;
    }
    t->busy = 1;
    return 1;
}

/* The event word (after a TIME word when the delta does not fit) at `p`,
 * then the busy flag given back. */
static inline __attribute__((always_inline)) CT_NOINST void put_event(struct ct_thread *t, uint64_t *p,
                                                                       uint64_t now, uint64_t kind, void *fn) {
    uint64_t delta = now - t->last;
    if (unlikely(delta > CT_DELTA_MASK)) {
        *p++ = ((uint64_t)CT_EV_TIME << 62) | (now & CT_TIME_MASK);
        delta = 0;
    }
    t->last = now;
    *p++ = (kind << 62) | (((uint64_t)(uintptr_t)fn & CT_ADDR_MASK) << CT_DELTA_BITS) | delta;
    t->cur = p;
    ct_barrier();
    t->busy = 0;
}

/* Write one event; the busy flag is already ours. */
static CT_NOINST __attribute__((noinline)) void record_held(struct ct_thread *t, uint64_t kind, void *fn) {
    uint64_t *p = t->cur;
    if (unlikely(p >= t->end)) {
        p = ct_next_chunk(t);
        if (unlikely(!p)) {
            /* Recording failed (disk full, file size limit): count what is lost. */
            t->lost += kind == CT_EV_ENTER;
            ct_barrier();
            t->busy = 0;
            return;
        }
    }
    put_event(t, p, ct_ticks(), kind, fn);
}

static inline CT_NOINST void record(struct ct_thread *t, uint64_t kind, void *fn) {
    if (unlikely(!take_busy(t)))
        return;
    ct_barrier();
    record_held(t, kind, fn);
}

static CT_NOINST __attribute__((noinline)) void busy_drop(struct ct_thread *t) { take_busy(t); }

/* The common case of record(), inlined into the hooks: every rarer case
 * (a busy hook, a full chunk, no TSC) is a tail call, so the hooks save no
 * register at all. Same steps, same order as record(). */
static inline __attribute__((always_inline)) CT_NOINST void record_fast(struct ct_thread *t, uint64_t kind,
                                                                         void *fn) {
    if (unlikely(t->busy))
        return busy_drop(t);
    t->busy = 1;
    ct_barrier();
    uint64_t *p = t->cur;
    if (unlikely(p >= t->end) || unlikely(!ct_use_tsc))
        return record_held(t, kind, fn);
    put_event(t, p, ct_rdtsc(), kind, fn);
}

/* The exported entry hook is this stub: the plain path is one compare and a
 * jump to ct_enter; with a capture plan loaded it saves the callee-saved
 * registers (where optimized code keeps its arguments across the hook call)
 * and the return address for ct_enter_capture. */
__asm__(".text\n"
        ".globl __cyg_profile_func_enter\n"
        ".type __cyg_profile_func_enter,@function\n"
        "__cyg_profile_func_enter:\n"
        "    cmpl $0, ct_capture_on(%rip)\n"
        "    jne 1f\n"
        "    jmp ct_enter\n"
        "1:  push %r15\n"
        "    push %r14\n"
        "    push %r13\n"
        "    push %r12\n"
        "    push %rbp\n"
        "    push %rbx\n"
        "    mov %rsp, %rdx\n"
        "    sub $8, %rsp\n"
        "    call ct_enter_capture\n"
        "    add $8, %rsp\n"
        "    pop %rbx\n"
        "    pop %rbp\n"
        "    pop %r12\n"
        "    pop %r13\n"
        "    pop %r14\n"
        "    pop %r15\n"
        "    ret\n"
        ".size __cyg_profile_func_enter, .-__cyg_profile_func_enter\n");

/* What every entry does before recording, once the depth is counted (`d`
 * is the call's depth): notice toggles, and say whether this call is to be
 * recorded at all. */
static inline CT_NOINST int gate(struct ct_thread *t, void *fn, uint32_t d) {
    if (unlikely(t->epoch != ct_epoch)) {
        ct_thread_sync(t, (uint64_t)d << 1, fn);
        d = t->depth - 1;   /* re-based at attach */
    }
    if (unlikely(!t->on))
        return 0;
    if (unlikely(d >= ct_max_depth)) {
        if (t->chunk)
            t->chunk->depth_limited++;
        else
            t->pend_limited++;
        return 0;
    }
    return !unlikely(ct_filter_mode) || ct_filter_enter(t, fn, d);
}

static inline CT_NOINST int enter_gate(struct ct_thread *t, void *fn) {
    return gate(t, fn, t->depth++);
}

static CT_NOINST __attribute__((noinline)) void enter_slow(struct ct_thread *t, void *fn, uint32_t d) {
    if (gate(t, fn, d))
        record(t, CT_EV_ENTER, fn);
}

/* The hooks: the checks of gate() and of the exit in the same order, the
 * uncommon outcomes in the tail-called slow functions. */
CT_HIDDEN CT_NOINST void ct_enter(void *fn, void *site) {
    (void)site;
    struct ct_thread *t = &ct_tls;
    uint32_t d = t->depth++;
    if (unlikely(t->epoch != ct_epoch))
        return enter_slow(t, fn, d);
    if (unlikely(!t->on))
        return;
    if (unlikely(d >= ct_max_depth) || unlikely(ct_filter_mode))
        return enter_slow(t, fn, d);
    record_fast(t, CT_EV_ENTER, fn);
}

static CT_NOINST __attribute__((noinline)) void exit_slow(struct ct_thread *t, void *fn, uint32_t d) {
    if (unlikely(t->epoch != ct_epoch)) {
        ct_thread_sync(t, ((uint64_t)d << 1) | 1, fn);
        d = t->depth;   /* re-based at attach */
    }
    if (unlikely(!t->on) || unlikely(d >= ct_max_depth))
        return;
    if (unlikely(ct_exit_slow)) {
        if (ct_filter_mode && !ct_filter_exit(t, fn, d))
            return;
        if (ct_threshold_ticks && drop_short(t, fn))
            return;
    }
    record(t, CT_EV_EXIT, fn);
}

CT_EXPORT CT_NOINST void __cyg_profile_func_exit(void *fn, void *site) {
    (void)site;
    struct ct_thread *t = &ct_tls;
    uint32_t d = --t->depth;
    if (unlikely(t->epoch != ct_epoch))
        return exit_slow(t, fn, d);
    if (unlikely(!t->on))
        return;
    if (unlikely(d >= ct_max_depth) || unlikely(ct_exit_slow))
        return exit_slow(t, fn, d);
    record_fast(t, CT_EV_EXIT, fn);
}

/* Entry with arguments: ENTER, then EXT ARGS with the planned bytes, both
 * in the same chunk so the converter finds them together. */
CT_HIDDEN CT_NOINST void ct_enter_capture(void *fn, void *site, uint64_t *regs) {
    struct ct_thread *t = &ct_tls;
    if (!enter_gate(t, fn))
        return;
    if (!take_busy(t))
        return;
    ct_barrier();
    uint64_t *p = t->cur;
    if (p >= t->end)
        p = ct_next_chunk(t);
    for (int attempt = 0; p && attempt < 2; attempt++) {
        uint64_t *limit = (uint64_t *)((char *)t->chunk + ct_chunk_bytes);
        size_t room = (size_t)((char *)limit - (char *)p);
        uint32_t index = 0;
        /* TIME + ENTER + EXT first, then the payload after them. */
        long n = room > 24 ? ct_capture_copy(regs, (uint64_t)(uintptr_t)site, (uint8_t *)(p + 3), room - 24, &index)
                           : -2;
        if (n == -2 && attempt == 0) {
            p = ct_next_chunk(t);   /* payload does not fit: start the call in a fresh chunk */
            continue;
        }
        uint64_t now = ct_ticks();
        uint64_t delta = now - t->last;
        uint64_t *q = p;
        if (delta > CT_DELTA_MASK) {
            *q++ = ((uint64_t)CT_EV_TIME << 62) | (now & CT_TIME_MASK);
            delta = 0;
        }
        t->last = now;
        *q++ = (((uint64_t)(uintptr_t)fn & CT_ADDR_MASK) << CT_DELTA_BITS) | delta;
        if (n >= 0) {
            size_t words = ((size_t)n + 7) / 8;
            uint8_t *payload = (uint8_t *)(p + 3);
            memset(payload + n, 0, words * 8 - (size_t)n);
            if (q != p + 2) {
                /* No TIME word: close the gap. The payload's old last word
                 * stays behind just past the record; zero it, or a chunk
                 * switch right after leaves it there to be read as an event
                 * (the invented "0x0" calls of issue 10). */
                memmove(q + 1, payload, words * 8);
                q[1 + words] = 0;
            }
            *q++ = CT_EXT_WORD(CT_EXT_ARGS, words, ((uint64_t)index << 16) | (uint64_t)n);
            q += words;
        }
        t->cur = q;
        break;
    }
    ct_barrier();
    t->busy = 0;
}

/* An EXT word, after a TIME word, with an optional one-word payload. */
static CT_NOINST void write_ext(struct ct_thread *t, uint32_t sub, uint64_t value, const uint64_t *payload) {
    if (t->busy)
        return;
    t->busy = 1;
    ct_barrier();
    uint64_t *p = t->cur;
    if (p >= t->end)
        p = ct_next_chunk(t);
    if (p) {
        uint64_t now = ct_ticks();
        *p++ = ((uint64_t)CT_EV_TIME << 62) | (now & CT_TIME_MASK);
        *p++ = CT_EXT_WORD(sub, payload ? 1 : 0, value);
        if (payload)
            *p++ = *payload;
        t->last = now;
        t->cur = p;
    }
    ct_barrier();
    t->busy = 0;
}

CT_NOINST void ct_write_ext(struct ct_thread *t, uint32_t sub, uint64_t value) {
    write_ext(t, sub, value, NULL);
}

/* Slow path: a thread's first call, a toggle, or start-up not done yet.
 * `where` is the depth of the frame being entered or left, times two, plus one
 * for a return: PAUSE/RESUME carry it so the converter can tell which open
 * calls returned while recording was off. */
CT_NOINST void ct_thread_sync(struct ct_thread *t, uint64_t where, void *fn) {
    ct_init();
    if (!t->tid && !t->failed) {
        t->tid = (int32_t)syscall(SYS_gettid);
        ct_thread_register(t);
    }
    ct_attach_sync(t, where);
    uint32_t epoch = ct_epoch;
    ct_part_sync(t);
    int want = ct_recording && !t->failed;
    if (t->epoch != 0) {
        if (t->on && !want && t->chunk)
            ct_write_ext(t, CT_EXT_PAUSE, where);
        else if (!t->on && want) {
            /* RESUME names the function being entered or left, so the
             * converter can tell a frame still open from one that is not. */
            uint64_t addr = (uint64_t)(uintptr_t)fn;
            write_ext(t, CT_EXT_RESUME, where, &addr);
        }
    }
    t->on = want;
    t->epoch = epoch;
}
