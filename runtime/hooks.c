/* The two -finstrument-functions hooks: the hot path.
 *
 * Each call costs a TLS access, a few compares, one rdtsc and one 8-byte store
 * into the thread's current chunk (a MAP_SHARED window of the raw file, so
 * what is stored survives even SIGKILL). No lock, no malloc, no syscall except
 * when a chunk fills. */
#define _GNU_SOURCE
#include <sys/syscall.h>
#include <unistd.h>
#include "ct.h"

__thread struct ct_thread ct_tls __attribute__((tls_model("initial-exec")));
volatile uint32_t ct_epoch = 1;
volatile uint32_t ct_recording = 0;
uint32_t ct_max_depth = 0x7fffffff;

static inline CT_NOINST void record(struct ct_thread *t, uint64_t kind, void *fn) {
    if (unlikely(t->busy)) {
        /* A signal handler's calls interrupting this very hook: drop, count. */
        if (t->chunk)
            t->chunk->dropped++;
        return;
    }
    t->busy = 1;
    ct_barrier();
    uint64_t *p = t->cur;
    if (unlikely(p >= t->end)) {
        p = ct_next_chunk(t);
        if (unlikely(!p)) {
            ct_barrier();
            t->busy = 0;
            return;
        }
    }
    uint64_t now = ct_ticks();
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

CT_EXPORT CT_NOINST void __cyg_profile_func_enter(void *fn, void *site) {
    (void)site;
    struct ct_thread *t = &ct_tls;
    uint32_t d = t->depth++;
    if (unlikely(t->epoch != ct_epoch))
        ct_thread_sync(t, (uint64_t)d << 1);
    if (unlikely(!t->on))
        return;
    if (unlikely(d >= ct_max_depth)) {
        if (t->chunk)
            t->chunk->depth_limited++;
        return;
    }
    record(t, CT_EV_ENTER, fn);
}

CT_EXPORT CT_NOINST void __cyg_profile_func_exit(void *fn, void *site) {
    (void)site;
    struct ct_thread *t = &ct_tls;
    uint32_t d = --t->depth;
    if (unlikely(t->epoch != ct_epoch))
        ct_thread_sync(t, ((uint64_t)d << 1) | 1);
    if (unlikely(!t->on) || unlikely(d >= ct_max_depth))
        return;
    record(t, CT_EV_EXIT, fn);
}

/* An EXT word with no payload (PAUSE/RESUME carry the thread's depth). */
CT_NOINST void ct_write_ext(struct ct_thread *t, uint32_t sub, uint64_t value) {
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
        *p++ = CT_EXT_WORD(sub, 0, value);
        t->last = now;
        t->cur = p;
    }
    ct_barrier();
    t->busy = 0;
}

/* Slow path: a thread's first call, a toggle, or start-up not done yet.
 * `where` is the depth of the frame being entered or left, times two, plus one
 * for a return: PAUSE/RESUME carry it so the converter can tell which open
 * calls returned while recording was off. */
CT_NOINST void ct_thread_sync(struct ct_thread *t, uint64_t where) {
    ct_init();
    if (!t->tid && !t->failed) {
        t->tid = (int32_t)syscall(SYS_gettid);
        ct_thread_register(t);
    }
    uint32_t epoch = ct_epoch;
    int want = ct_recording && !t->failed;
    if (t->epoch != 0 && t->chunk) {
        if (t->on && !want)
            ct_write_ext(t, CT_EXT_PAUSE, where);
        else if (!t->on && want)
            ct_write_ext(t, CT_EXT_RESUME, where);
    }
    t->on = want;
    t->epoch = epoch;
}
