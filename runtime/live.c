/* The measuring pass of the program's main thread while the program runs
 * (calltrace run -o t.parquet): each step indexes the segments sealed since
 * the last one and walks them, so that when the program ends only the rest
 * is left to measure. Called from Python through ctypes (record/live.py).
 *
 * Nothing here can change the trace: the walk is the measuring pass itself
 * (walk.c), in ticks, as the clock's rate is known only at the end; the
 * functions' tables are made by the columns pass (ct_conv_set_tally_in_columns).
 * When the program has ended, ct_live_finish indexes the file as
 * ct_conv_open would and checks that the segments walked are the start of
 * the main thread's; if not (or when another library was loaded where one
 * had been unloaded: the functions' identities then depend on when), the
 * measure starts again from scratch. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "conv.h"

#define CHUNK_DONE UINT32_MAX
#define FAULT_AROUND 65536      /* what the kernel maps around a page read (fault_around_bytes) */
#define IDLE_SCANS 50           /* an empty rest no thread took in this many scans (a second) is left */

struct live {
    int fd;
    uint32_t *scan;          /* per chunk: where its first segment not yet seen sealed is; 0: chunk not begun */
    uint32_t *since;         /* per chunk: the scan that last found something new there */
    size_t nscan;
    struct cseg *segs;       /* the main thread's sealed segments: walked ones first, in order */
    size_t nsegs, capsegs;
    uint32_t round;          /* scans done */
    struct cthread t;        /* the main thread, as far as walked */
    struct walk w;
    int failed;
};

CT_NOINST void ct_live_free(struct live *l) {
    if (!l)
        return;
    if (l->fd >= 0)
        close(l->fd);
    free(l->scan);
    free(l->since);
    free(l->segs);
    free(l);
}

CT_EXPORT CT_NOINST struct ct_conv *ct_live_open(const char *path, char *err, size_t errlen) {
    struct ct_conv *c = ct_conv_new();
    struct live *l = calloc(1, sizeof *l);
    const char *why = !c || !l ? "out of memory" : NULL;
    if (!why) {
        c->live = l;
        l->fd = open(path, O_RDONLY | O_CLOEXEC);
        why = l->fd < 0 ? "cannot open it" : ct_conv_map(c, l->fd);
    }
    if (why) {
        snprintf(err, errlen, "%s", why);
        if (c)
            ct_conv_close(c);
        else
            free(l);
        return NULL;
    }
    c->tally = WALK_COLUMNS;
    c->last_ticks = c->h->start_ticks;
    l->t = (struct cthread){.tid = c->h->main_tid, .first_ticks = UINT64_MAX, .main = 1};
    l->w = (struct walk){.c = c, .t = &l->t, .mode = WALK_MEASURE, .pending = -1};
    ct_walk_begin(&l->w);
    return c;
}

static CT_NOINST int add(struct live *l, const struct cseg *s) {
    if (l->nsegs == l->capsegs && grow_array(&l->segs, &l->capsegs, sizeof *l->segs) < 0)
        return -1;
    l->segs[l->nsegs++] = *s;
    return 0;
}

/* Go on from where chunk `i` was left: the main thread's segments sealed
 * since. A segment is published by its magic, and final once SEALED is set
 * after its length (chunks.c: both stores release). */
static CT_NOINST int scan_chunk(struct ct_conv *c, struct live *l, size_t i) {
    uint64_t cs = c->h->chunk_size, off = CT_HEADER_SIZE + i * cs;
    uint64_t end = (off + cs < c->size ? off + cs : c->size) - off;
    uint32_t pos = l->scan[i];
    if (!pos) {
        const struct ct_chunk *k = (const struct ct_chunk *)(c->map + off);
        if (__atomic_load_n(&k->magic, __ATOMIC_ACQUIRE) != CT_CHUNK_MAGIC)
            return 0;
        pos = k->type == CT_CHUNK_EVENTS ? CT_CHUNK_HEADER : CHUNK_DONE;
    }
    int open = 0;
    if (pos != l->scan[i])
        l->since[i] = l->round;
    while (pos != CHUNK_DONE && pos + CT_SEG_HEADER <= end) {
        const struct ct_seg *s = (const struct ct_seg *)(c->map + off + pos);
        open = __atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) == CT_SEG_MAGIC;
        if (!open || !(__atomic_load_n(&s->flags, __ATOMIC_ACQUIRE) & CT_SEG_SEALED))
            break;
        l->since[i] = l->round;
        uint64_t words = s->words;
        if (pos + CT_SEG_HEADER + words * 8 > end)
            return -1;   /* not what the runtime writes: leave it to the full index */
        struct cseg g = {.data = off + pos + CT_SEG_HEADER, .ticks = s->ticks, .words = (uint32_t)words,
                         .flags = s->flags, .tid = s->tid, .round = l->round};
        if (g.tid == c->h->main_tid && add(l, &g) < 0)
            return -1;
        pos += (uint32_t)(CT_SEG_HEADER + words * 8);
    }
    /* A rest no thread took (all rest slots in use, or left when a payload
     * did not fit) stops being looked at after a while; should the main
     * thread write there after all, ct_live_finish sees a segment missing
     * and measures from scratch. A segment being written is waited for. */
    if (pos == CHUNK_DONE || pos + CT_REST_MIN > end || (!open && l->round - l->since[i] > IDLE_SCANS)) {
        l->scan[i] = CHUNK_DONE;
        return 0;
    }
    /* Looked at again every step: let the pages read (and the kernel's
     * fault-around, 64 KB) go, or each such chunk would keep them. */
    l->scan[i] = pos;
    uint64_t from = pos > FAULT_AROUND ? pos - FAULT_AROUND : 0, to = pos + FAULT_AROUND < end ? pos + FAULT_AROUND : end;
    release(c->map + off + from, c->map + off + to);
    return 0;
}

/* One step: index what was sealed since the last, then walk at most about
 * `budget` words. The main thread's segments walked so far, or -1 once
 * this measure is given up (the full one runs after the program then). */
CT_EXPORT CT_NOINST int64_t ct_live_step(struct ct_conv *c, uint64_t budget) {
    struct live *l = c->live;
    if (!l || l->failed)
        return -1;
    if (ct_conv_map(c, l->fd)) {
        l->failed = 1;
        return -1;
    }
    uint64_t cs = c->h->chunk_size, next = __atomic_load_n(&c->h->next_offset, __ATOMIC_ACQUIRE);
    uint64_t limit = next < c->size ? next : c->size;
    size_t n = limit > CT_HEADER_SIZE ? (limit - CT_HEADER_SIZE) / cs : 0;
    if (n > l->nscan) {
        size_t cap = l->nscan;
        size_t cap2 = l->nscan;
        if (ct_grow((void **)&l->scan, &cap, n, sizeof *l->scan) < 0 ||
            ct_grow((void **)&l->since, &cap2, n, sizeof *l->since) < 0) {
            l->failed = 1;
            return -1;
        }
        for (size_t i = l->nscan; i < n; i++)
            l->since[i] = l->round;
        l->nscan = n;
    }
    for (size_t i = 0; i < l->nscan; i++)
        if (l->scan[i] != CHUNK_DONE && scan_chunk(c, l, i) < 0) {
            l->failed = 1;
            return -1;
        }
    /* A segment seen sealed in an earlier scan is safe to walk, with all that
     * came before it: those were sealed before it began, so before this scan
     * began, and this scan has seen them. */
    struct walk *w = &l->w;
    qsort(l->segs + w->seg, l->nsegs - w->seg, sizeof *l->segs, ct_cmp_segs);
    size_t upto = w->seg;
    for (size_t i = w->seg; i < l->nsegs; i++)
        if (l->segs[i].round < l->round)
            upto = i + 1;
    l->round++;
    uint64_t words = 0;
    size_t stop = w->seg;
    while (stop < upto && words < budget)
        words += l->segs[stop++].words;
    w->segs = l->segs;
    w->nsegs = (uint32_t)stop;
    if (ct_walk(w, 0) < 0) {
        l->failed = 1;
        return -1;
    }
    return w->seg;
}

CT_NOINST const char *ct_live_finish(struct ct_conv *c, struct walk **w0) {
    struct live *l = c->live;
    *w0 = NULL;
    const char *why = ct_conv_map(c, l->fd);
    if (!why)
        why = ct_conv_index(c);
    if (why)
        return why;
    struct walk *w = &l->w;
    int64_t main = ct_main_thread(c);
    struct cthread *t = main >= 0 ? &c->threads[main] : NULL;
    int same = !l->failed && !c->ncuts && w->seg && t && t->nsegs >= w->seg;
    for (uint32_t i = 0; same && i < w->seg; i++) {
        const struct cseg *a = &l->segs[i], *b = &c->segs[t->first_seg + i];
        same = a->data == b->data && a->words == b->words;
    }
    if (!same) {
        /* From scratch: forget the functions met, as their identities may
         * depend on the cuts. */
        ct_funcs_forget(c);
        return NULL;
    }
    t->call_base = 0;
    t->first_ticks = l->t.first_ticks;
    *w0 = w;
    return NULL;
}
