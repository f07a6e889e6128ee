/* Raw stream -> JSON trace, called from Python through ctypes (calltrace/record/raw.py; layouts in calltrace/bridge.py).
 *
 * Never runs in the traced program's hot path. Two walks over each thread's
 * events share one function (`walk`), so the pass that measures (durations,
 * per-function table) and the pass that writes cannot disagree. Durations
 * are kept in a temporary file mapping, 8 bytes a call, so memory stays
 * bounded by the page cache rather than the run's length. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "conv.h"

/* ---- open: validate, index segments, count ------------------------------------ */
static int cmp_segs(const void *a, const void *b) {
    const struct cseg *x = a, *y = b;
    if (x->tid != y->tid)
        return x->tid < y->tid ? -1 : 1;
    if (x->ticks != y->ticks)
        return x->ticks < y->ticks ? -1 : 1;
    return x->data < y->data ? -1 : x->data > y->data;
}

static int cmp_threads(const void *a, const void *b) {
    const struct cthread *x = a, *y = b;
    if (x->main != y->main)
        return y->main - x->main;
    return x->first_ticks < y->first_ticks ? -1 : x->first_ticks > y->first_ticks;
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

CT_EXPORT CT_NOINST void ct_conv_close(struct ct_conv *c) {
    if (!c)
        return;
    if (c->map)
        munmap((void *)c->map, c->size);
    if (c->dur)
        munmap(c->dur, c->durcap * 8);
    if (c->durfd >= 0)
        close(c->durfd);
    free(c->segs);
    free(c->threads);
    free(c->funcs);
    free(c->touched);
    free(c->rows);
    free(c->hash);
    free(c->cuts);
    free(c->stack);
    free(c);
}

static CT_NOINST struct ct_conv *fail(struct ct_conv *c, char *err, size_t errlen, const char *msg) {
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    ct_conv_close(c);
    return NULL;
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
static CT_NOINST uint64_t end_of(const struct ct_conv *c, uint64_t last) {
    return c->h->end_state && c->h->end_ticks > last ? c->h->end_ticks : last;
}

CT_EXPORT CT_NOINST struct ct_conv *ct_conv_open(const char *path, char *err, size_t errlen) {
    struct ct_conv *c = calloc(1, sizeof *c);
    if (!c)
        return fail(c, err, errlen, "out of memory");
    c->durfd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(c, err, errlen, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(struct ct_header)) {
        close(fd);
        return fail(c, err, errlen, "too short to be a raw calltrace stream");
    }
    c->size = (size_t)st.st_size;
    void *m = mmap(NULL, c->size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return fail(c, err, errlen, strerror(errno));
    c->map = m;
    c->h = m;
    const struct ct_header *h = c->h;
    if (memcmp(h->magic, CT_MAGIC, 8))
        return fail(c, err, errlen, "not a raw calltrace stream (bad magic)");
    if (h->version != CT_VERSION || h->header_size != CT_HEADER_SIZE)
        return fail(c, err, errlen, "unsupported raw stream version");
    if (h->chunk_size < 4096 || h->chunk_size % 4096)
        return fail(c, err, errlen, "corrupt raw stream header (chunk size)");
    uint64_t limit = h->next_offset < c->size ? h->next_offset : c->size;
    for (uint64_t off = CT_HEADER_SIZE; off + CT_CHUNK_HEADER <= limit; off += h->chunk_size) {
        if (index_chunk(c, off) < 0)
            return fail(c, err, errlen, "out of memory");
        /* the kernel maps pages around the header read (fault-around): let them all go */
        release(c->map + off, c->map + (off + h->chunk_size < c->size ? off + h->chunk_size : c->size));
    }
    qsort(c->segs, c->nsegs, sizeof *c->segs, cmp_segs);
    c->threads = calloc(c->nsegs + 1, sizeof *c->threads);
    if (!c->threads)
        return fail(c, err, errlen, "out of memory");
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
    c->last_ticks = h->start_ticks;
    for (size_t i = 0; i < c->nsegs; i++)
        c->total_words += c->segs[i].words;
    for (size_t ti = 0; ti < c->nthreads; ti++) {
        const struct cthread *t = &c->threads[ti];
        const struct cseg *sg = &c->segs[t->first_seg + t->nsegs - 1];
        uint64_t last = seg_end(c, sg);
        release_seg(c, sg);
        if (last > c->last_ticks)
            c->last_ticks = last;
    }
    c->end_ticks = end_of(c, c->last_ticks);
    return c;
}

/* Keep each thread's functions table while they fit `n` rows in all
 * (before ct_conv_analyze; 0, the default: none). */
CT_EXPORT CT_NOINST void ct_conv_set_row_limit(struct ct_conv *c, size_t n) { c->row_limit = n; }

/* Thread i's functions table (ct_conv_thread order) into `out`: its number
 * of rows (more than `cap`: only `cap` copied), or -1 when the tables did not
 * fit the row limit. */
CT_EXPORT CT_NOINST int64_t ct_conv_thread_table(struct ct_conv *c, size_t i, struct ct_conv_row *out,
                                                 size_t cap) {
    if (i >= c->nthreads || c->rows_dropped)
        return -1;
    const struct cthread *t = &c->threads[i];
    if (out && cap)
        memcpy(out, c->rows + t->rows_off, (t->rows_n < cap ? t->rows_n : cap) * sizeof *out);
    return (int64_t)t->rows_n;
}

CT_EXPORT CT_NOINST void ct_conv_set_progress(struct ct_conv *c, ct_progress_fn fn) { c->progress = fn; }

CT_EXPORT CT_NOINST void ct_conv_set_args(struct ct_conv *c, ct_args_fn fn) { c->args = fn; }

/* `n` cuts of three words (lo, hi, ticks), before ct_conv_analyze: calls in
 * [lo, hi) from `ticks` on are another library's than before. */
CT_EXPORT CT_NOINST int ct_conv_set_cuts(struct ct_conv *c, const uint64_t *cuts, size_t n) {
    uint64_t *copy = n ? malloc(n * 3 * sizeof *copy) : NULL;
    if (n && !copy)
        return -1;
    if (n)
        memcpy(copy, cuts, n * 3 * sizeof *copy);
    free(c->cuts);
    c->cuts = copy;
    c->ncuts = n;
    return 0;
}

/* A thread measured: its functions table into the trace's, and kept as a
 * table of its own while the tables fit row_limit rows in all. */
static CT_NOINST int fold_thread(struct ct_conv *c, struct cthread *t) {
    int keep = !c->rows_dropped && c->nrows + c->ntouched <= c->row_limit;
    if (!keep)
        c->rows_dropped = 1;
    if (keep && c->nrows + c->ntouched > c->caprows) {
        size_t cap = c->caprows;
        if (ct_grow((void **)&c->rows, &cap, c->nrows + c->ntouched, sizeof *c->rows) < 0)
            return -1;
        c->caprows = cap;
    }
    t->rows_off = c->nrows;
    t->rows_n = keep ? c->ntouched : 0;
    for (size_t i = 0; i < c->ntouched; i++) {
        struct func *f = &c->funcs[c->touched[i]];
        if (keep)
            c->rows[c->nrows++] = (struct ct_conv_row){c->touched[i], f->tcalls, f->ttotal, f->tself,
                                                       f->tmin, f->tmax};
        f->calls += f->tcalls;
        f->total += f->ttotal;
        f->self += f->tself;
        if (f->tmin < f->min)
            f->min = f->tmin;
        if (f->tmax > f->max)
            f->max = f->tmax;
        f->tcalls = f->ttotal = f->tself = f->tmax = 0;
        f->tmin = UINT64_MAX;
    }
    c->ntouched = 0;
    return 0;
}

/* The measuring pass from scratch: every call's duration, the functions'
 * totals, the threads' calls and first events, the latest event. */
static CT_NOINST int measure(struct ct_conv *c) {
    for (size_t i = 0; i < c->nfuncs; i++) {
        struct func *f = &c->funcs[i];
        f->calls = f->total = f->self = f->max = 0;
        f->tcalls = f->ttotal = f->tself = f->tmax = 0;
        f->active = 0;
        f->min = f->tmin = UINT64_MAX;
    }
    c->ntouched = c->nrows = 0;
    c->rows_dropped = 0;
    c->incomplete = c->unwound = c->unmatched = c->before_attach = 0;
    c->done_words = 0;
    c->last_ticks = c->h->start_ticks;
    uint64_t base = 0;
    for (size_t ti = 0; ti < c->nthreads; ti++) {
        struct cthread *t = &c->threads[ti];
        t->call_base = base;
        t->first_ticks = UINT64_MAX;
        struct walk w = {.c = c, .t = t, .mode = WALK_MEASURE, .pending = -1};
        if (ct_walk(&w) < 0 || fold_thread(c, t) < 0)
            return -1;
        t->calls = w.ncall;
        base += w.ncall;
    }
    c->total_calls = base;
    return 0;
}

CT_EXPORT CT_NOINST int ct_conv_analyze(struct ct_conv *c, char *err, size_t errlen) {
    /* A call takes at least a word: a sparse file of a word's slot each. */
    c->durcap = c->total_words ? c->total_words : 1;
    FILE *tmp = tmpfile();
    if (!tmp || ftruncate(fileno(tmp), (off_t)(c->durcap * 8)) < 0) {
        snprintf(err, errlen, "cannot create a temporary file: %s", strerror(errno));
        if (tmp)
            fclose(tmp);
        return -1;
    }
    void *m = mmap(NULL, c->durcap * 8, PROT_READ | PROT_WRITE, MAP_SHARED, fileno(tmp), 0);
    c->durfd = fcntl(fileno(tmp), F_DUPFD_CLOEXEC, 0);
    fclose(tmp);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot map a temporary file: %s", strerror(errno));
        return -1;
    }
    c->dur = m;
    /* The open calls at a thread's end close at the run's end, known for
     * sure only once every thread is walked. The guess from the threads'
     * last segments is right unless a clock went back (a TIME word): then
     * walk again with the true end. */
    for (int again = 0;; again = 1) {
        if (measure(c) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        uint64_t end = end_of(c, c->last_ticks);
        if (end == c->end_ticks || again)
            break;
        c->end_ticks = end;
    }
    for (size_t i = 0; i < c->nfuncs; i++)
        if (c->funcs[i].min == UINT64_MAX)
            c->funcs[i].min = 0;
    qsort(c->threads, c->nthreads, sizeof *c->threads, cmp_threads);
    return 0;
}

CT_EXPORT CT_NOINST void ct_conv_summary(struct ct_conv *c, struct ct_conv_summary *s) {
    memset(s, 0, sizeof *s);
    s->total_calls = c->total_calls;
    s->threads = c->nthreads;
    s->functions = c->nfuncs;
    s->incomplete = c->incomplete;
    s->unwound = c->unwound;
    s->unmatched = c->unmatched;
    s->depth_limited = c->depth_limited;
    s->lost = c->lost + c->h->lost_calls;   /* calls after recording stopped */
    s->dropped = c->dropped + s->lost;
    s->end_ns = to_ns(c, c->end_ticks);
    s->duration_ns = s->end_ns;
    s->ns_per_tick = c->npt;
    s->filtered = c->filtered;
    s->before_attach = c->before_attach;
}

CT_EXPORT CT_NOINST int ct_conv_function(struct ct_conv *c, size_t i, struct ct_conv_func *f) {
    if (i >= c->nfuncs)
        return -1;
    const struct func *x = &c->funcs[i];
    *f = (struct ct_conv_func){x->addr, x->calls, x->total, x->self, x->min, x->max, x->era};
    return 0;
}

CT_EXPORT CT_NOINST int ct_conv_thread(struct ct_conv *c, size_t i, struct ct_conv_thread *t) {
    if (i >= c->nthreads)
        return -1;
    const struct cthread *x = &c->threads[i];
    t->tid = x->tid;
    t->calls = x->calls;
    t->first_ns = x->first_ticks == UINT64_MAX ? 0 : to_ns(c, x->first_ticks);
    t->main = x->main;
    return 0;
}

/* Append the threads to `fd` (the caller wrote everything up to and including
 * `"threads":[`); `names` are JSON string literals, one per function index,
 * `heads` the opening `{"tid":...,` of each thread in ct_conv_thread order. */
CT_EXPORT CT_NOINST int ct_conv_write(struct ct_conv *c, int fd, const char *const *names,
                                      const char *const *notes, const char *const *heads, int pretty,
                                      char *err, size_t errlen) {
    struct out *o = malloc(sizeof *o);
    size_t *lens = calloc(c->nfuncs + 1, sizeof *lens);
    char *argbuf = malloc(1 << 16);
    if (!o || !lens || !argbuf) {
        free(o);
        free(lens);
        free(argbuf);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    o->fd = fd;
    o->failed = 0;
    o->used = 0;
    for (size_t i = 0; i < c->nfuncs; i++)
        lens[i] = strlen(names[i]);
    c->done_words = 0;
    for (size_t ti = 0; ti < c->nthreads && !o->failed; ti++) {
        if (ti)
            OUT_LIT(o, ",");
        OUT_LIT(o, "\n");
        if (pretty)
            OUT_LIT(o, "    ");
        out_str(o, heads[ti], strlen(heads[ti]));
        OUT_LIT(o, "\"calls\":[");
        struct walk w = {.c = c, .t = &c->threads[ti], .mode = WALK_WRITE, .pretty = pretty, .o = o,
                         .names = names, .namelen = lens, .notes = notes, .argbuf = argbuf, .pending = -1};
        if (ct_walk(&w) < 0) {
            snprintf(err, errlen, "out of memory");
            free(o);
            free(lens);
            free(argbuf);
            return -1;
        }
        OUT_LIT(o, "]}");
    }
    if (pretty)
        OUT_LIT(o, "\n  ]\n}\n");
    else
        OUT_LIT(o, "\n]\n}\n");
    out_flush(o);
    int failed = o->failed;
    free(o);
    free(lens);
    free(argbuf);
    if (failed) {
        snprintf(err, errlen, "%s", strerror(failed));
        return -1;
    }
    return 0;
}

/* Walk thread `ti` (ct_conv_thread order) into `cols`, handing each full
 * batch to cols->emit: the columnar output (trace/columns.py). `notes` as
 * for ct_conv_write, or NULL. Returns -1 with `err` set, 1 when emit aborted. */
CT_EXPORT CT_NOINST int ct_conv_columns(struct ct_conv *c, size_t ti, struct ct_conv_cols *cols,
                                        const char *const *notes, char *err, size_t errlen) {
    if (ti >= c->nthreads || !cols->cap || cols->extra_cap < 2 * (1 << 16)) {
        snprintf(err, errlen, "bad column request");
        return -1;
    }
    char *argbuf = malloc(1 << 16);
    if (!argbuf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ti == 0)
        c->done_words = 0;
    cols->n = 0;
    cols->roots = 0;
    cols->extra_off[0] = 0;
    memset(cols->bits, 0, COL_BITMAPS * ((cols->cap + 7) / 8));
    struct walk w = {.c = c, .t = &c->threads[ti], .mode = WALK_COLUMNS, .notes = notes,
                     .argbuf = argbuf, .pending = -1, .cols = cols};
    int rc = ct_walk(&w);
    free(argbuf);
    if (w.aborted)
        return 1;
    if (rc < 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}
