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
    if (t->busy || !t->seg || p <= (uint64_t *)(t->seg + 1))
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
    ct_barrier();
    return 1;
}

static inline CT_NOINST void give_busy(struct ct_thread *t) {
    ct_barrier();
    t->busy = 0;
}

/* The event encoding (docs/FORMAT.md), in one place: the time of the next
 * word as a TIME word when the delta from the thread's previous event does
 * not fit in the word (or `stamp` asks for one), then the word. */
static inline __attribute__((always_inline)) CT_NOINST uint64_t *put_word(struct ct_thread *t, uint64_t *p,
                                                                          uint64_t now, int stamp, uint64_t word) {
    uint64_t delta = now - t->last;
    if (unlikely(delta > CT_DELTA_MASK) || stamp) {
        *p++ = ((uint64_t)CT_EV_TIME << 62) | (now & CT_TIME_MASK);
        delta = 0;
    }
    t->last = now;
    *p++ = word | delta;
    return p;
}

static inline __attribute__((always_inline)) CT_NOINST uint64_t event_word(uint64_t kind, void *fn) {
    return (kind << 62) | (((uint64_t)(uintptr_t)fn & CT_ADDR_MASK) << CT_DELTA_BITS);
}

/* One ENTER/EXIT at `p`, then the busy flag given back. */
static inline __attribute__((always_inline)) CT_NOINST void put_event(struct ct_thread *t, uint64_t *p,
                                                                       uint64_t now, uint64_t kind, void *fn) {
    t->cur = put_word(t, p, now, 0, event_word(kind, fn));
    give_busy(t);
}

/* Room for the next write, switching chunks when the current one is full;
 * NULL when recording has stopped (the call is counted lost). */
static CT_NOINST uint64_t *room(struct ct_thread *t, uint64_t kind) {
    uint64_t *p = t->cur;
    if (p < t->end)
        return p;
    p = ct_next_chunk(t);
    if (unlikely(!p) && kind == CT_EV_ENTER)
        ct_count_lost(t);
    return p;
}

/* Write one event; the busy flag is already ours. */
static CT_NOINST __attribute__((noinline)) void record_held(struct ct_thread *t, uint64_t kind, void *fn) {
    uint64_t *p = room(t, kind);
    if (unlikely(!p))
        return give_busy(t);
    put_event(t, p, ct_ticks(), kind, fn);
}

static CT_NOINST __attribute__((noinline)) void busy_drop(struct ct_thread *t) { take_busy(t); }

/* The hooks' recording step: every rarer case (a busy hook, a full chunk,
 * no TSC) is a tail call, so the hooks save no register at all. */
static inline __attribute__((always_inline)) CT_NOINST void record(struct ct_thread *t, uint64_t kind, void *fn) {
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

/* The gate, in one place. The common outcome is decided inline by
 * gate_fast (`slow` is the mode that makes every call of this kind take a
 * look: a filter on entry, a filter or threshold on return); the rest by
 * gate_slow, tail-called from the hooks. */
enum { GATE_SKIP, GATE_RECORD, GATE_SLOW };

static inline __attribute__((always_inline)) CT_NOINST int gate_fast(const struct ct_thread *t, uint32_t d,
                                                                      uint32_t slow) {
    if (unlikely(t->epoch != ct_epoch))
        return GATE_SLOW;
    if (unlikely(!t->on))
        return GATE_SKIP;
    if (unlikely(d >= ct_max_depth) || unlikely(slow))
        return GATE_SLOW;
    return GATE_RECORD;
}

/* `d` is the depth of the call entered or left; returns whether to record it. */
static CT_NOINST int gate_slow(struct ct_thread *t, void *fn, uint32_t d, int is_exit) {
    if (unlikely(t->epoch != ct_epoch)) {
        ct_thread_sync(t, ((uint64_t)d << 1) | (uint64_t)is_exit, fn);
        d = is_exit ? t->depth : t->depth - 1;   /* re-based at attach */
    }
    if (unlikely(!t->on))
        return 0;
    if (unlikely(d >= ct_max_depth)) {
        if (!is_exit) {
            if (t->chunk)
                t->chunk->depth_limited++;
            else
                t->pend_limited++;
        }
        return 0;
    }
    if (!is_exit)
        return !unlikely(ct_filter_mode) || ct_filter_enter(t, fn, d);
    if (ct_filter_mode && !ct_filter_exit(t, fn, d))
        return 0;
    return !(ct_threshold_ticks && drop_short(t, fn));
}

static CT_NOINST __attribute__((noinline)) void enter_slow(struct ct_thread *t, void *fn, uint32_t d) {
    if (gate_slow(t, fn, d, 0) && take_busy(t))
        record_held(t, CT_EV_ENTER, fn);
}

static CT_NOINST __attribute__((noinline)) void exit_slow(struct ct_thread *t, void *fn, uint32_t d) {
    if (gate_slow(t, fn, d, 1) && take_busy(t))
        record_held(t, CT_EV_EXIT, fn);
}

CT_HIDDEN CT_NOINST void ct_enter(void *fn, void *site) {
    (void)site;
    struct ct_thread *t = &ct_tls;
    uint32_t d = t->depth++;
    int g = gate_fast(t, d, ct_filter_mode);
    if (unlikely(g == GATE_SLOW))
        return enter_slow(t, fn, d);
    if (likely(g == GATE_RECORD))
        record(t, CT_EV_ENTER, fn);
}

CT_EXPORT CT_NOINST void __cyg_profile_func_exit(void *fn, void *site) {
    (void)site;
    struct ct_thread *t = &ct_tls;
    uint32_t d = --t->depth;
    int g = gate_fast(t, d, ct_exit_slow);
    if (unlikely(g == GATE_SLOW))
        return exit_slow(t, fn, d);
    if (likely(g == GATE_RECORD))
        record(t, CT_EV_EXIT, fn);
}

/* Entry with arguments: ENTER, then EXT ARGS with the planned bytes, both
 * in the same chunk so the converter finds them together. */
CT_HIDDEN CT_NOINST void ct_enter_capture(void *fn, void *site, uint64_t *regs) {
    struct ct_thread *t = &ct_tls;
    uint32_t d = t->depth++;
    if (!gate_slow(t, fn, d, 0) || !take_busy(t))
        return;
    uint64_t *p = room(t, CT_EV_ENTER);
    for (int attempt = 0; p && attempt < 2; attempt++) {
        size_t space = (size_t)((char *)t->chunk + ct_chunk_bytes - (char *)p);
        uint32_t index = 0;
        /* TIME + ENTER + EXT first, then the payload after them. */
        long n = space > 24 ? ct_capture_copy(regs, (uint64_t)(uintptr_t)site, (uint8_t *)(p + 3), space - 24, &index)
                            : -2;
        if (n == -2 && attempt == 0) {
            /* The payload does not fit: start the call in a fresh chunk. */
            if (!(p = ct_next_chunk(t)))
                ct_count_lost(t);
            continue;
        }
        uint64_t *q = put_word(t, p, ct_ticks(), 0, event_word(CT_EV_ENTER, fn));
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
    give_busy(t);
}

/* An EXT word, after a TIME word, with an optional one-word payload. */
static CT_NOINST void write_ext(struct ct_thread *t, uint32_t sub, uint64_t value, const uint64_t *payload) {
    if (t->busy)
        return;
    t->busy = 1;
    ct_barrier();
    uint64_t *p = room(t, CT_EV_EXT);
    if (p) {
        p = put_word(t, p, ct_ticks(), 1, CT_EXT_WORD(sub, payload ? 1 : 0, value));
        if (payload)
            *p++ = *payload;
        t->cur = p;
    }
    give_busy(t);
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
        if (t->tid != (int32_t)getpid())
            ct_prefault_start();   /* the program has a second thread now */
    }
    ct_attach_sync(t, where);
    uint32_t epoch = ct_epoch;
    ct_part_sync(t);
    /* A thread whose recording stopped stays on: its calls are counted lost. */
    int want = ct_recording && t->failed != CT_THREAD_ENDED;
    if (t->epoch != 0) {
        if (t->on && !want && t->seg)
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
