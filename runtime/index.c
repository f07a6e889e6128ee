/* Opening a raw stream for the converter: map it, check its header, and
 * index it: the chunks' counts, the segments by thread and time, the
 * threads, the clock's rate, a first guess at the end of the run. Used by
 * ct_conv_open (convert.c) and again by ct_live_finish (live.c) once the
 * program that wrote the file has ended. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "conv.h"

CT_NOINST int ct_cmp_segs(const void *a, const void *b) {
    const struct cseg *x = a, *y = b;
    if (x->tid != y->tid)
        return x->tid < y->tid ? -1 : 1;
    if (x->ticks != y->ticks)
        return x->ticks < y->ticks ? -1 : 1;
    return x->data < y->data ? -1 : x->data > y->data;
}

static CT_NOINST void calibrate(struct ct_conv *c) {
    const struct ct_header *h = c->h;
    c->npt = h->ns_per_tick > 0 ? h->ns_per_tick : 1.0;
    if (h->clock != CT_CLOCK_TSC)
        return;
    uint64_t bt = c->cal_ticks, bm = c->cal_ns;
    if (h->end_state && h->end_ticks > bt && h->end_mono_ns > h->start_mono_ns) {
        bt = h->end_ticks;
        bm = h->end_mono_ns;
    }
    /* The pairs are read tightly (clock.c): a span longer than the start-up
     * measurement's half millisecond is the better one. */
    if (bt > h->start_ticks && bm - h->start_mono_ns >= 1000000ull)
        c->npt = (double)(bm - h->start_mono_ns) / (double)(bt - h->start_ticks);
}

static CT_NOINST int add_seg(struct ct_conv *c, const struct cseg *s) {
    if (c->nsegs == c->capsegs && grow_array(&c->segs, &c->capsegs, sizeof *c->segs) < 0)
        return -1;
    c->segs[c->nsegs++] = *s;
    return 0;
}

/* One chunk: its counts, its calibration point, and its segments: sealed
 * ones one after another; one never sealed runs to its first zero word and
 * is the last (its thread was still writing when the process ended). */
static CT_NOINST int index_chunk(struct ct_conv *c, uint64_t off) {
    const struct ct_chunk *k = (const struct ct_chunk *)(c->map + off);
    if (k->magic != CT_CHUNK_MAGIC)
        return 0;  /* claimed but never written: the process died in between */
    c->depth_limited += k->depth_limited;
    c->dropped += k->dropped;
    c->filtered += k->filtered;
    c->lost += k->lost;
    if (k->ticks > c->cal_ticks && k->mono_ns > c->h->start_mono_ns) {
        c->cal_ticks = k->ticks;
        c->cal_ns = k->mono_ns;
    }
    if (k->type != CT_CHUNK_EVENTS)
        return 0;
    uint64_t end = off + c->h->chunk_size < c->size ? off + c->h->chunk_size : c->size;
    for (uint64_t pos = off + CT_CHUNK_HEADER; pos + CT_SEG_HEADER <= end;) {
        const struct ct_seg *s = (const struct ct_seg *)(c->map + pos);
        if (s->magic != CT_SEG_MAGIC)
            break;
        struct cseg g = {.data = pos + CT_SEG_HEADER, .ticks = s->ticks, .flags = s->flags, .tid = s->tid};
        uint64_t avail = (end - g.data) / 8;
        const uint64_t *p = seg_words(c, &g);
        int sealed = (s->flags & CT_SEG_SEALED) && s->words <= avail;
        if (sealed)
            g.words = s->words;
        else   /* to the first zero word that is not an EXT payload */
            for (uint64_t i = 0; i < avail && p[i]; i = g.words)
                g.words = (uint32_t)(i + 1 + ((p[i] >> 62) == CT_EV_EXT ? (p[i] >> 38) & 0xffff : 0));
        if (g.words > avail)
            g.words = (uint32_t)avail;
        if (add_seg(c, &g) < 0)
            return -1;
        if (!sealed)
            break;
        pos = g.data + (uint64_t)g.words * 8;
    }
    return 0;
}

/* The time of a segment's last event. */
static CT_NOINST uint64_t seg_end(const struct ct_conv *c, const struct cseg *sg) {
    const uint64_t *p = seg_words(c, sg);
    uint64_t last = sg->ticks;
    for (size_t i = 0; i < sg->words && p[i]; i++) {
        unsigned kind = (unsigned)(p[i] >> 62);
        if (kind == CT_EV_TIME)
            last = p[i] & CT_TIME_MASK;
        else if (kind == CT_EV_EXT)
            i += (p[i] >> 38) & 0xffff;
        else
            last += p[i] & CT_DELTA_MASK;
    }
    return last;
}

/* Where the run ended, given the latest event: the open calls end there. */
CT_NOINST uint64_t ct_end_of(const struct ct_conv *c, uint64_t last) {
    return c->h->end_state && c->h->end_ticks > last ? c->h->end_ticks : last;
}

/* Map the raw file at `fd` whole (again, if it grew) and check its header:
 * NULL, or what is wrong with it. */
CT_HIDDEN CT_NOINST const char *ct_conv_map(struct ct_conv *c, int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0)
        return strerror(errno);
    if (st.st_size < (off_t)sizeof(struct ct_header))
        return "too short to be a raw calltrace stream";
    if (c->map && (size_t)st.st_size == c->size)
        return NULL;
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        return strerror(errno);
    if (c->map)
        munmap((void *)c->map, c->size);
    c->size = (size_t)st.st_size;
    c->map = m;
    c->h = m;
    const struct ct_header *h = c->h;
    if (memcmp(h->magic, CT_MAGIC, 8))
        return "not a raw calltrace stream (bad magic)";
    if (h->version != CT_VERSION || h->header_size != CT_HEADER_SIZE)
        return "unsupported raw stream version";
    if (h->chunk_size < 4096 || h->chunk_size % 4096)
        return "corrupt raw stream header (chunk size)";
    return NULL;
}

/* Index the mapped file: its chunks' counts and segments, the threads, the
 * clock's rate and a first guess at the end of the run. NULL, or why not. */
CT_HIDDEN CT_NOINST const char *ct_conv_index(struct ct_conv *c) {
    const struct ct_header *h = c->h;
    c->nsegs = c->nthreads = 0;
    c->depth_limited = c->dropped = c->filtered = c->lost = 0;
    c->cal_ticks = c->cal_ns = 0;
    uint64_t limit = h->next_offset < c->size ? h->next_offset : c->size;
    for (uint64_t off = CT_HEADER_SIZE; off + CT_CHUNK_HEADER <= limit; off += h->chunk_size) {
        if (index_chunk(c, off) < 0)
            return "out of memory";
        /* the kernel maps pages around the header read (fault-around): let them all go */
        release(c->map + off, c->map + (off + h->chunk_size < c->size ? off + h->chunk_size : c->size));
    }
    qsort(c->segs, c->nsegs, sizeof *c->segs, ct_cmp_segs);
    free(c->threads);
    c->threads = calloc(c->nsegs + 1, sizeof *c->threads);
    if (!c->threads)
        return "out of memory";
    for (size_t i = 0; i < c->nsegs; i++) {
        const struct cseg *k = &c->segs[i];
        struct cthread *t = c->nthreads ? &c->threads[c->nthreads - 1] : NULL;
        /* Same tid in a segment that starts a thread: the kernel reused the
         * tid of a thread that ended. */
        if (!t || t->tid != k->tid || (k->flags & CT_SEG_FIRST)) {
            t = &c->threads[c->nthreads++];
            t->tid = k->tid;
            t->first_seg = (uint32_t)i;
            t->first_ticks = UINT64_MAX;
            t->main = k->tid == h->main_tid;
        }
        t->nsegs++;
    }
    calibrate(c);
    /* The calls are counted by the measuring pass (ct_conv_analyze); here,
     * only what the index says and a first guess at the end of the run. */
    c->total_words = 0;
    for (size_t i = 0; i < c->nsegs; i++)
        c->total_words += c->segs[i].words;
    uint64_t last = h->start_ticks;
    for (size_t ti = 0; ti < c->nthreads; ti++) {
        const struct cthread *t = &c->threads[ti];
        const struct cseg *sg = &c->segs[t->first_seg + t->nsegs - 1];
        uint64_t end = seg_end(c, sg);
        release_seg(c, sg);
        if (end > last)
            last = end;
    }
    c->end_ticks = ct_end_of(c, last);
    return NULL;
}
