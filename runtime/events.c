/* Kernels for the speedscope and html exports (export/speedscope.py,
 * export/html.py), byte for byte what those modules wrote call by call:
 * speedscope's open/close events, never stepping back in time, and the
 * html timeline's "index,depth,start,duration" rows under its budget, with
 * the histogram of durations that sets the budget. Function ids map to
 * the output's frame/function index in the order first written (`lut`).
 * Rows pass the -F/-N/-D/-t selection (fmt_pass). State is carried from
 * batch to batch; the caller owns the output buffer. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "conv.h"

/* Room one event or row takes at most. */
#define EV_MAX 96

struct ct_ev {
    int32_t *lut;              /* function id -> index, -1: not yet written */
    size_t nf;
    int32_t next;              /* the index the next new function gets */
    int64_t *ends;             /* speedscope: end times of the open calls */
    int32_t *frames;           /* ... and their frames */
    size_t sp, cap, fcap;
    int64_t first, last;       /* the first and latest event times of the thread */
    int any;                   /* an event was written for the thread */
    int64_t pending;           /* shown depth of a row selected but not yet opened, or -1 */
    int64_t floor, full, quota;  /* html: see export/html.Budget */
    uint64_t k;                /* html: rows written for the thread */
};

#define PUT(s, n) (memcpy(o, (s), (n)), o += (n))
#define LIT(s) PUT(s, sizeof(s) - 1)

static CT_NOINST char *put_int(char *o, int64_t v) {
    char t[24];
    int n = 0;
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    do {
        t[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *o++ = '-';
    while (n)
        *o++ = t[--n];
    return o;
}

/* `lut` (n entries) seeds the function indexes; new ones start at `next`. */
CT_EXPORT CT_NOINST struct ct_ev *ct_ev_new(const int32_t *lut, size_t n, int32_t next) {
    struct ct_ev *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    if (n && ct_grow((void **)&e->lut, &e->nf, n, sizeof *e->lut) < 0) {
        free(e);
        return NULL;
    }
    for (size_t i = n; i < e->nf; i++)
        e->lut[i] = -1;
    if (n)
        memcpy(e->lut, lut, n * sizeof *lut);
    e->next = next;
    e->pending = -1;
    return e;
}

CT_EXPORT CT_NOINST void ct_ev_free(struct ct_ev *e) {
    if (!e)
        return;
    free(e->lut);
    free(e->ends);
    free(e->frames);
    free(e);
}

/* A new thread; `out` gets its first and latest event times and whether it had any. */
CT_EXPORT CT_NOINST void ct_ev_thread(struct ct_ev *e, int64_t *out) {
    out[0] = e->first;
    out[1] = e->last;
    out[2] = e->any;
    e->sp = 0;
    e->first = e->last = 0;
    e->any = 0;
    e->pending = -1;
    e->k = 0;
}

/* The function indexes: up to `cap` into `out`; returns how many ids it knows. */
CT_EXPORT CT_NOINST size_t ct_ev_lut(const struct ct_ev *e, int32_t *out, size_t cap) {
    memcpy(out, e->lut, (e->nf < cap ? e->nf : cap) * sizeof *out);
    return e->nf;
}

/* Function f's index, given when first met; -1 when out of memory. */
static CT_NOINST int32_t index_of(struct ct_ev *e, int32_t f) {
    if ((size_t)f >= e->nf) {
        size_t old = e->nf;
        if (ct_grow((void **)&e->lut, &e->nf, (size_t)f + 1, sizeof *e->lut) < 0)
            return -1;
        for (size_t i = old; i < e->nf; i++)
            e->lut[i] = -1;
    }
    if (e->lut[f] < 0)
        e->lut[f] = e->next++;
    return e->lut[f];
}

/* `,` (when `comma`), then an open ('O') or close ('C') event. */
static CT_NOINST char *event(char *o, int comma, char type, int32_t frame, int64_t at) {
    if (comma)
        *o++ = ',';
    LIT("\n{\"type\":\"");
    *o++ = type;
    LIT("\",\"frame\":");
    o = put_int(o, frame);
    LIT(",\"at\":");
    o = put_int(o, at);
    *o++ = '}';
    return o;
}

/* Close events until `depth` calls are open: 0, or -1 when out is too full. */
static CT_NOINST int close_to(struct ct_ev *e, uint64_t depth, char *out, size_t cap, size_t *used) {
    for (; e->sp > depth; e->sp--) {
        if (*used + EV_MAX > cap)
            return -1;
        int64_t end = e->ends[e->sp - 1];
        e->last = end > e->last ? end : e->last;
        *used = (size_t)(event(out + *used, 1, 'C', e->frames[e->sp - 1], e->last) - out);
    }
    return 0;
}

/* speedscope events of rows from..n into out (cap bytes; *used grows).
 * Returns the next row: n when all were done, less when out is nearly full
 * (flush and call again from there), (size_t)-1 when out of memory. */
CT_EXPORT CT_NOINST size_t ct_ss_rows(struct ct_ev *e, struct ct_fmt *r, const int32_t *func,
                                      const int32_t *depth, const int64_t *start, const int64_t *dur,
                                      size_t from, size_t n, char *out, size_t cap, size_t *used) {
    size_t i = from;
    for (; i < n; i++) {
        int64_t shown = e->pending;
        if (shown < 0) {
            if (!fmt_pass(r, func[i], depth[i], dur[i], &shown))
                continue;
            r->shown++;
            e->pending = shown;
        }
        if (close_to(e, (uint64_t)shown, out, cap, used) < 0 || *used + EV_MAX > cap)
            break;
        int32_t fr = index_of(e, func[i]);
        size_t c1 = e->cap, c2 = e->fcap;
        if (fr < 0 || ct_grow((void **)&e->ends, &c1, e->sp + 1, sizeof *e->ends) < 0 ||
            ct_grow((void **)&e->frames, &c2, e->sp + 1, sizeof *e->frames) < 0)
            return (size_t)-1;
        e->cap = c1;
        e->fcap = c2;
        int64_t at = !e->any || start[i] > e->last ? start[i] : e->last;
        if (!e->any)
            e->first = at;
        char *o = event(out + *used, e->any, 'O', fr, at);
        *used = (size_t)(o - out);
        e->any = 1;
        e->last = at;
        int64_t end = start[i] + dur[i];
        e->ends[e->sp] = end > at ? end : at;
        e->frames[e->sp++] = fr;
        e->pending = -1;
    }
    return i;
}

/* The close events of the calls still open at the thread's end: 0 when
 * all are written, nonzero when out filled first (flush and call again). */
CT_EXPORT CT_NOINST int ct_ss_finish(struct ct_ev *e, char *out, size_t cap, size_t *used) {
    return close_to(e, 0, out, cap, used) < 0;
}

/* html: calls per bit length of their duration (counts[65]), over the rows
 * the selection passes. */
CT_EXPORT CT_NOINST void ct_html_hist(struct ct_fmt *r, const int32_t *func, const int32_t *depth,
                                      const int64_t *dur, size_t n, uint64_t *counts) {
    for (size_t i = 0; i < n; i++) {
        int64_t shown;
        if (!fmt_pass(r, func[i], depth[i], dur[i], &shown))
            continue;
        uint64_t u = dur[i] < 0 ? -(uint64_t)dur[i] : (uint64_t)dur[i];
        counts[u ? 64 - __builtin_clzll(u) : 0]++;
    }
}

CT_EXPORT CT_NOINST void ct_html_budget(struct ct_ev *e, int64_t floor, int64_t full, int64_t quota) {
    e->floor = floor;
    e->full = full;
    e->quota = quota;
}

/* html timeline rows from..n into out, as ct_ss_rows. A written row whose
 * `held` is set ends the call: *k gets its number in the thread, for
 * Python to add its formatted call; else *k is -1. */
CT_EXPORT CT_NOINST size_t ct_html_rows(struct ct_ev *e, struct ct_fmt *r, const int32_t *func,
                                        const int32_t *depth, const int64_t *start, const int64_t *dur,
                                        const uint8_t *held, size_t from, size_t n, char *out, size_t cap,
                                        size_t *used, int64_t *k) {
    *k = -1;
    for (size_t i = from; i < n; i++) {
        if (*used + EV_MAX > cap)
            return i;
        int64_t shown;
        if (!fmt_pass(r, func[i], depth[i], dur[i], &shown))
            continue;
        if (dur[i] < e->full) {
            if (dur[i] < e->floor || e->quota <= 0)
                continue;
            e->quota--;
        }
        int32_t fi = index_of(e, func[i]);
        if (fi < 0)
            return (size_t)-1;
        char *o = out + *used;
        if (e->k)
            *o++ = ',';
        o = put_int(o, fi);
        *o++ = ',';
        o = put_int(o, shown);
        *o++ = ',';
        o = put_int(o, start[i]);
        *o++ = ',';
        o = put_int(o, dur[i]);
        *used = (size_t)(o - out);
        r->shown++;
        if (held && held[i]) {
            *k = (int64_t)e->k++;
            return i + 1;
        }
        e->k++;
    }
    return n;
}
