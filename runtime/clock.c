/* Time source: the invariant TSC where the CPU has one (about 3x cheaper than
 * clock_gettime here), else CLOCK_MONOTONIC in nanoseconds. The TSC rate is
 * measured against CLOCK_MONOTONIC at start-up; every chunk header and the
 * end of the run add a (ticks, ns) pair, so the converter takes the rate over
 * the longest span there is. Each pair is read tightly (ct_clock_pair): a
 * preemption between the two reads would skew the rate of a short run by its
 * whole length, so a pair is bracketed by two TSC reads and the narrowest of
 * a few tries is kept. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include "ct.h"

int ct_use_tsc = 0;

CT_NOINST uint64_t ct_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

CT_NOINST uint64_t ct_ticks_slow(void) { return ct_mono_ns(); }

CT_NOINST void ct_clock_pair(uint64_t *ticks, uint64_t *ns) {
    if (!ct_use_tsc) {
        *ns = *ticks = ct_mono_ns();
        return;
    }
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 4; i++) {
        uint64_t a = ct_ticks(), m = ct_mono_ns(), b = ct_ticks();
        if (b - a < best) {
            best = b - a;
            *ticks = a + (b - a) / 2;
            *ns = m;
        }
    }
}

static CT_NOINST int tsc_invariant(void) {
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u)
        return 0;
    __get_cpuid(0x80000007u, &a, &b, &c, &d);
    return (d >> 8) & 1;
#else
    return 0;
#endif
}

CT_NOINST void ct_clock_init(struct ct_header *h) {
    const char *want = ct_env("CALLTRACE_CLOCK");
    int tsc = tsc_invariant();
    if (want && *want) {
        if (!strcmp(want, "monotonic"))
            tsc = 0;
        else if (strcmp(want, "tsc"))
            ct_warn("CALLTRACE_CLOCK=%s is not 'tsc' or 'monotonic'; using %s", want,
                    tsc ? "tsc" : "monotonic");
        else if (!tsc)
            ct_warn("CALLTRACE_CLOCK=tsc: this CPU has no invariant TSC; using monotonic");
    }
    ct_use_tsc = tsc;
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    h->start_real_ns = (uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec;
    if (!tsc) {
        h->clock = CT_CLOCK_MONOTONIC;
        h->start_mono_ns = ct_mono_ns();
        h->start_ticks = h->start_mono_ns;
        h->ns_per_tick = 1.0;
        return;
    }
    /* Half a millisecond between two tight pairs gives the rate to about
     * 0.01%, for a run killed before it could record its end; the converter
     * uses the run's end (or its last chunk) when that is later. */
    h->clock = CT_CLOCK_TSC;
    uint64_t m0, t0, m1, t1;
    ct_clock_pair(&t0, &m0);
    do
        ct_clock_pair(&t1, &m1);
    while (m1 - m0 < 500000);
    h->start_mono_ns = m0;
    h->start_ticks = t0;
    h->ns_per_tick = (double)(m1 - m0) / (double)(t1 - t0);
}
