/* Raw stream -> JSON trace or columns, called from Python through ctypes
 * (calltrace/record/raw.py; layouts in calltrace/bridge.py).
 *
 * Never runs in the traced program's hot path. Two walks over each thread's
 * events share one function (walk.c), so the pass that measures (durations,
 * the functions met, the counts) and the pass that writes cannot disagree.
 * Durations are kept in ticks in a temporary file mapping, 8 bytes a call,
 * so memory stays bounded by the page cache rather than the run's length;
 * the writing pass turns them into nanoseconds. Opening and indexing the
 * file: index.c; measuring while the program runs: live.c. */
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

static int cmp_threads(const void *a, const void *b) {
    const struct cthread *x = a, *y = b;
    if (x->main != y->main)
        return y->main - x->main;
    return x->first_ticks < y->first_ticks ? -1 : x->first_ticks > y->first_ticks;
}

CT_EXPORT CT_NOINST void ct_conv_close(struct ct_conv *c) {
    if (!c)
        return;
    if (c->map)
        munmap((void *)c->map, c->size);
    if (c->dur)
        munmap(c->dur, c->durcap * 8);
    ct_live_free(c->live);
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

CT_HIDDEN CT_NOINST struct ct_conv *ct_conv_new(void) {
    struct ct_conv *c = calloc(1, sizeof *c);
    if (c)
        c->durfd = -1;
    return c;
}

CT_EXPORT CT_NOINST struct ct_conv *ct_conv_open(const char *path, char *err, size_t errlen) {
    struct ct_conv *c = ct_conv_new();
    if (!c)
        return fail(c, err, errlen, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(c, err, errlen, strerror(errno));
    const char *why = ct_conv_map(c, fd);
    close(fd);
    if (!why)
        why = ct_conv_index(c);
    return why ? fail(c, err, errlen, why) : c;
}

/* Keep each thread's functions table while they fit `n` rows in all
 * (before ct_conv_analyze; 0, the default: none). */
CT_EXPORT CT_NOINST void ct_conv_set_row_limit(struct ct_conv *c, size_t n) { c->row_limit = n; }

/* Fill the functions' tables in the columns pass (ct_conv_columns) rather
 * than the measuring pass (before ct_conv_analyze): the Parquet writer
 * needs them only at the end, and the measuring pass can then run before
 * the clock's rate is known (live.c). */
CT_EXPORT CT_NOINST void ct_conv_set_tally_in_columns(struct ct_conv *c) { c->tally = WALK_COLUMNS; }

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

/* The program's main thread (conv.threads index), or -1. Measuring starts
 * with it, so that a measure begun while the program ran (live.c) is the
 * same. */
CT_NOINST int64_t ct_main_thread(const struct ct_conv *c) {
    for (size_t i = 0; i < c->nthreads; i++)
        if (c->threads[i].main)
            return (int64_t)i;
    return -1;
}

/* The measuring pass: every call's duration, the threads' calls and first
 * events, the latest event, and the functions' tables if they are made
 * here (c->tally). `w0`: the main thread's walk as far as live.c took it,
 * or NULL to start from scratch. */
CT_HIDDEN CT_NOINST int ct_measure(struct ct_conv *c, struct walk *w0) {
    if (!w0) {
        for (size_t i = 0; i < c->nfuncs; i++) {
            struct func *f = &c->funcs[i];
            f->calls = f->total = f->self = f->max = 0;
            f->tcalls = f->ttotal = f->tself = f->tmax = 0;
            f->active = 0;
            f->min = f->tmin = UINT64_MAX;
        }
        c->ntouched = 0;
        c->incomplete = c->unwound = c->unmatched = c->before_attach = 0;
        c->done_words = 0;
        c->last_ticks = c->h->start_ticks;
    }
    c->nrows = 0;
    c->rows_dropped = 0;
    uint64_t base = 0;
    int64_t main = ct_main_thread(c);
    size_t first = main >= 0 ? (size_t)main : 0;
    for (size_t k = 0; k < c->nthreads; k++) {
        size_t ti = k == 0 ? first : k <= first ? k - 1 : k;
        struct cthread *t = &c->threads[ti];
        struct walk w = {.c = c, .t = t, .mode = WALK_MEASURE, .pending = -1};
        if (k == 0 && w0) {
            w = *w0;       /* the same thread: live.c checked its segments */
            w.t = t;
            w.segs = &c->segs[t->first_seg];
            w.nsegs = t->nsegs;
        } else {
            t->call_base = base;
            t->first_ticks = UINT64_MAX;
            ct_walk_begin(&w);
        }
        if (ct_walk(&w, 1) < 0 || (c->tally == WALK_MEASURE && fold_thread(c, t) < 0))
            return -1;
        t->calls = w.ncall;
        base += w.ncall;
    }
    c->total_calls = base;
    return 0;
}

/* Durations room for `n` calls, in a temporary file (a sparse one: only
 * the slots written take space), mapped whole. */
CT_NOINST int ct_dur_reserve(struct ct_conv *c, size_t n) {
    if (n <= c->durcap && c->dur)
        return 0;
    size_t cap = c->durcap * 2 > n ? c->durcap * 2 : n ? n : 1;
    if (c->durfd < 0) {
        FILE *tmp = tmpfile();
        c->durfd = tmp ? fcntl(fileno(tmp), F_DUPFD_CLOEXEC, 0) : -1;
        if (tmp)
            fclose(tmp);
        if (c->durfd < 0)
            return -1;
    }
    if (ftruncate(c->durfd, (off_t)(cap * 8)) < 0)
        return -1;
    void *m = c->dur ? mremap(c->dur, c->durcap * 8, cap * 8, MREMAP_MAYMOVE)
                     : mmap(NULL, cap * 8, PROT_READ | PROT_WRITE, MAP_SHARED, c->durfd, 0);
    if (m == MAP_FAILED)
        return -1;
    c->dur = m;
    c->durcap = cap;
    return 0;
}

CT_EXPORT CT_NOINST int ct_conv_analyze(struct ct_conv *c, char *err, size_t errlen) {
    struct walk *w0 = NULL;
    if (c->live) {
        const char *why = ct_live_finish(c, &w0);
        if (why) {
            snprintf(err, errlen, "%s", why);
            return -1;
        }
    }
    /* A call takes at least a word: a slot a word. */
    if (ct_dur_reserve(c, c->total_words) < 0) {
        snprintf(err, errlen, "cannot make a temporary file: %s", strerror(errno));
        return -1;
    }
    /* The open calls at a thread's end close at the run's end, known for
     * sure only once every thread is walked. The guess from the threads'
     * last segments is right unless a clock went back (a TIME word): then
     * walk again with the true end. */
    for (int again = 0;; again = 1) {
        if (ct_measure(c, again ? NULL : w0) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        uint64_t end = ct_end_of(c, c->last_ticks);
        if (end == c->end_ticks || again)
            break;
        c->end_ticks = end;
    }
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
    *f = (struct ct_conv_func){x->addr, x->calls, x->total, x->self, x->min == UINT64_MAX ? 0 : x->min, x->max,
                               x->era};
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
        ct_walk_begin(&w);
        if (ct_walk(&w, 1) < 0) {
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
    ct_walk_begin(&w);
    int rc = ct_walk(&w, 1);
    if (rc == 0 && c->tally == WALK_COLUMNS)
        rc = fold_thread(c, w.t);
    free(argbuf);
    if (w.aborted)
        return 1;
    if (rc < 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}
