/* Column kernels for the post-mortem commands (trace/kernels.py): they
 * walk a thread's calls a batch of fixed-width columns at a time, carrying
 * the stack of open calls from one batch to the next, so that report,
 * replay and export run at native speed in bounded memory. Function names
 * are ids into the trace's name list; Python keeps the names. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "conv.h"

CT_HIDDEN CT_NOINST int ct_grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * size);
    if (!q)
        return -1;
    memset((char *)q + *cap * size, 0, (n - *cap) * size);
    *p = q;
    *cap = n;
    return 0;
}

/* ---- per-function statistics (report --threads) -------------------------- */

struct sframe {
    int32_t f;
    uint64_t dur, child;
};

struct ct_stats {
    uint64_t *calls, *total, *self, *min, *max;   /* per function id */
    uint32_t *active;
    size_t nf;
    struct sframe *st;
    size_t sp, cap;
};

CT_EXPORT CT_NOINST struct ct_stats *ct_stats_new(void) { return calloc(1, sizeof(struct ct_stats)); }

CT_EXPORT CT_NOINST void ct_stats_free(struct ct_stats *s) {
    if (!s)
        return;
    free(s->calls); free(s->total); free(s->self); free(s->min); free(s->max);
    free(s->active);
    free(s->st);
    free(s);
}

static CT_NOINST int stats_fit(struct ct_stats *s, size_t nf) {
    if (nf <= s->nf)
        return 0;
    uint64_t **cols[] = {&s->calls, &s->total, &s->self, &s->min, &s->max};
    size_t cap = s->nf;
    for (int i = 0; i < 5; i++) {
        cap = s->nf;
        if (ct_grow((void **)cols[i], &cap, nf, 8) < 0)
            return -1;
    }
    size_t acap = s->nf;
    if (ct_grow((void **)&s->active, &acap, nf, 4) < 0)
        return -1;
    s->nf = cap;
    return 0;
}

static CT_NOINST void stats_close(struct ct_stats *s) {
    struct sframe *fr = &s->st[--s->sp];
    int32_t f = fr->f;
    uint64_t d = fr->dur;
    if (--s->active[f] == 0)
        s->total[f] += d;
    s->self[f] += d > fr->child ? d - fr->child : 0;
    if (s->calls[f]++ == 0 || d < s->min[f])
        s->min[f] = d;
    if (d > s->max[f])
        s->max[f] = d;
}

/* The same rules as the converter: a recursive function's inner calls are
 * not counted twice in its total; self = duration minus the children's. */
CT_EXPORT CT_NOINST int ct_stats_feed(struct ct_stats *s, size_t nf, const int32_t *func,
                                      const int32_t *depth, const int64_t *dur, size_t n) {
    if (stats_fit(s, nf) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        size_t d = (size_t)depth[i];
        while (s->sp > d)
            stats_close(s);
        if (ct_grow((void **)&s->st, &s->cap, s->sp + 1, sizeof *s->st) < 0)
            return -1;
        if (s->sp)
            s->st[s->sp - 1].child += (uint64_t)dur[i];
        s->st[s->sp++] = (struct sframe){func[i], (uint64_t)dur[i], 0};
        s->active[func[i]]++;
    }
    return 0;
}

/* Close what is open; `out` gets 5 columns of nf values each. */
CT_EXPORT CT_NOINST size_t ct_stats_finish(struct ct_stats *s, uint64_t *out, size_t cap) {
    while (s->sp)
        stats_close(s);
    size_t nf = s->nf < cap ? s->nf : cap;
    uint64_t *cols[] = {s->calls, s->total, s->self, s->min, s->max};
    for (int k = 0; k < 5; k++)
        if (nf)
            memcpy(out + (size_t)k * cap, cols[k], nf * 8);
    return nf;
}

/* ---- the N longest calls with their call paths (report --slowest) ----------- */

struct slow {
    int64_t dur, start;
    uint64_t seq, row;
    int32_t thread, len;
    int32_t *path;
};

struct ct_slowest {
    struct slow *heap;           /* min-heap on (dur, -seq) */
    size_t n, have;
    int32_t *stack;
    size_t stackcap;
    uint64_t seq;
};

CT_EXPORT CT_NOINST struct ct_slowest *ct_slowest_new(size_t n) {
    struct ct_slowest *s = calloc(1, sizeof *s);
    if (s && !(s->heap = calloc(n ? n : 1, sizeof *s->heap))) {
        free(s);
        return NULL;
    }
    if (s)
        s->n = n;
    return s;
}

CT_EXPORT CT_NOINST void ct_slowest_free(struct ct_slowest *s) {
    if (!s)
        return;
    for (size_t i = 0; i < s->have; i++)
        free(s->heap[i].path);
    free(s->heap);
    free(s->stack);
    free(s);
}

static inline CT_NOINST int below(const struct slow *a, const struct slow *b) {
    return a->dur < b->dur || (a->dur == b->dur && a->seq > b->seq);
}

static CT_NOINST void sift_down(struct ct_slowest *s, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->have && below(&s->heap[l], &s->heap[m]))
            m = l;
        if (r < s->have && below(&s->heap[r], &s->heap[m]))
            m = r;
        if (m == i)
            return;
        struct slow t = s->heap[i];
        s->heap[i] = s->heap[m];
        s->heap[m] = t;
        i = m;
    }
}

static CT_NOINST void sift_up(struct ct_slowest *s, size_t i) {
    while (i && below(&s->heap[i], &s->heap[(i - 1) / 2])) {
        struct slow t = s->heap[i];
        s->heap[i] = s->heap[(i - 1) / 2];
        s->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

/* `first_row`: the row number (in the thread) of func[0]; a new thread
 * starts with first_row 0, which empties the stack. */
CT_EXPORT CT_NOINST int ct_slowest_feed(struct ct_slowest *s, int32_t thread, uint64_t first_row,
                                        const int32_t *func, const int32_t *depth, const int64_t *start,
                                        const int64_t *dur, size_t n) {
    for (size_t i = 0; i < n; i++) {
        size_t d = (size_t)depth[i];
        if (ct_grow((void **)&s->stack, &s->stackcap, d + 1, 4) < 0)
            return -1;
        s->stack[d] = func[i];
        s->seq++;
        if (!s->n || (s->have == s->n && dur[i] <= s->heap[0].dur))
            continue;
        int32_t *path = malloc((d + 1) * 4);
        if (!path)
            return -1;
        memcpy(path, s->stack, (d + 1) * 4);
        struct slow e = {dur[i], start[i], s->seq, first_row + i, thread, (int32_t)(d + 1), path};
        if (s->have < s->n) {
            s->heap[s->have++] = e;
            sift_up(s, s->have - 1);
        } else {
            free(s->heap[0].path);
            s->heap[0] = e;
            sift_down(s, 0);
        }
    }
    return 0;
}

/* Entry i of the heap (any order): its fields, and its path into `path`. */
CT_EXPORT CT_NOINST int ct_slowest_get(struct ct_slowest *s, size_t i, int64_t *fields, int32_t *path,
                                       size_t cap) {
    if (i >= s->have)
        return -1;
    const struct slow *e = &s->heap[i];
    fields[0] = e->dur;
    fields[1] = e->start;
    fields[2] = (int64_t)e->seq;
    fields[3] = (int64_t)e->row;
    fields[4] = e->thread;
    memcpy(path, e->path, (size_t)(e->len < (int32_t)cap ? e->len : (int32_t)cap) * 4);
    return e->len;
}
