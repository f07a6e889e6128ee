/* Raw stream -> JSON trace, called from Python through ctypes (trace/raw.py).
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

/* ---- open: validate, index chunks, count ------------------------------------- */
static int cmp_chunks(const void *a, const void *b, void *arg) {
    const struct ct_conv *c = arg;
    const struct ct_chunk *x = chunk_at(c, *(const uint64_t *)a), *y = chunk_at(c, *(const uint64_t *)b);
    if (x->tid != y->tid)
        return x->tid < y->tid ? -1 : 1;
    if (x->ticks != y->ticks)
        return x->ticks < y->ticks ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
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
    uint64_t bt = 0, bm = 0;
    for (size_t i = 0; i < c->norder; i++) {
        const struct ct_chunk *k = chunk_at(c, c->order[i]);
        if (k->ticks > bt && k->mono_ns > h->start_mono_ns) {
            bt = k->ticks;
            bm = k->mono_ns;
        }
    }
    if (h->end_state && h->end_ticks > bt && h->end_mono_ns > h->start_mono_ns) {
        bt = h->end_ticks;
        bm = h->end_mono_ns;
    }
    /* Only trust a long baseline: clock_gettime jitter is ~100 ns. */
    if (bt > h->start_ticks && bm - h->start_mono_ns >= 50000000ull)
        c->npt = (double)(bm - h->start_mono_ns) / (double)(bt - h->start_ticks);
}

CT_EXPORT CT_NOINST void ct_conv_close(struct ct_conv *c) {
    if (!c)
        return;
    if (c->map)
        munmap((void *)c->map, c->size);
    if (c->dur)
        munmap(c->dur, c->durcap * 8);
    free(c->order);
    free(c->threads);
    free(c->funcs);
    free(c->hash);
    free(c->stack);
    free(c);
}

static CT_NOINST struct ct_conv *fail(struct ct_conv *c, char *err, size_t errlen, const char *msg) {
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    ct_conv_close(c);
    return NULL;
}

CT_EXPORT CT_NOINST struct ct_conv *ct_conv_open(const char *path, char *err, size_t errlen) {
    struct ct_conv *c = calloc(1, sizeof *c);
    if (!c)
        return fail(c, err, errlen, "out of memory");
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
    size_t nchunks = limit > CT_HEADER_SIZE ? (size_t)((limit - CT_HEADER_SIZE + h->chunk_size - 1) / h->chunk_size) : 0;
    c->order = calloc(nchunks + 1, sizeof *c->order);
    if (!c->order)
        return fail(c, err, errlen, "out of memory");
    for (size_t i = 0; i < nchunks; i++) {
        uint64_t off = CT_HEADER_SIZE + (uint64_t)i * h->chunk_size;
        if (off + CT_CHUNK_HEADER > c->size)
            break;
        const struct ct_chunk *k = chunk_at(c, off);
        if (k->magic != CT_CHUNK_MAGIC)
            continue;  /* claimed but never written: the process died in between */
        c->depth_limited += k->depth_limited;
        c->dropped += k->dropped;
        c->filtered += k->filtered;
        if (k->type == CT_CHUNK_EVENTS)
            c->order[c->norder++] = off;
    }
    qsort_r(c->order, c->norder, sizeof *c->order, cmp_chunks, c);
    c->threads = calloc(c->norder + 1, sizeof *c->threads);
    if (!c->threads)
        return fail(c, err, errlen, "out of memory");
    for (size_t i = 0; i < c->norder; i++) {
        const struct ct_chunk *k = chunk_at(c, c->order[i]);
        struct cthread *t = c->nthreads ? &c->threads[c->nthreads - 1] : NULL;
        /* Same tid with seq back at 0: the kernel reused the tid of a thread that ended. */
        if (!t || t->tid != k->tid || k->seq == 0) {
            t = &c->threads[c->nthreads++];
            t->tid = k->tid;
            t->first_chunk = (uint32_t)i;
            t->first_ticks = UINT64_MAX;
            t->main = k->tid == h->main_tid;
        }
        t->nchunks++;
    }
    calibrate(c);
    /* Count calls and find the time range, so durations can be sized. */
    uint64_t lastall = h->start_ticks;
    for (size_t ti = 0; ti < c->nthreads; ti++) {
        struct cthread *t = &c->threads[ti];
        for (uint32_t k = 0; k < t->nchunks; k++) {
            uint64_t off = c->order[t->first_chunk + k];
            const uint64_t *p = (const uint64_t *)(c->map + off + CT_CHUNK_HEADER);
            size_t n = chunk_words(c, off), i;
            uint64_t last = 0;
            for (i = 0; i < n && p[i]; i++) {
                uint64_t v = p[i];
                unsigned kind = (unsigned)(v >> 62);
                if (kind == CT_EV_TIME) {
                    last = v & CT_TIME_MASK;
                } else if (kind == CT_EV_EXT) {
                    if (((v >> 54) & 0xff) == CT_EXT_ATTACH)
                        t->calls += (v >> 38) & 0xffff;   /* frames open at attach */
                    i += (v >> 38) & 0xffff;
                } else {
                    last += v & CT_DELTA_MASK;
                    if (last < t->first_ticks)
                        t->first_ticks = last;
                    if (kind == CT_EV_ENTER)
                        t->calls++;
                }
            }
            if (last > lastall)
                lastall = last;
            c->total_words += i;
        }
    }
    for (size_t ti = 0, base = 0; ti < c->nthreads; ti++) {
        c->threads[ti].call_base = base;
        base += c->threads[ti].calls;
        c->total_calls = base;
    }
    c->last_ticks = lastall;
    c->end_ticks = h->end_state && h->end_ticks > lastall ? h->end_ticks : lastall;
    return c;
}

CT_EXPORT CT_NOINST void ct_conv_set_progress(struct ct_conv *c, ct_progress_fn fn) { c->progress = fn; }

CT_EXPORT CT_NOINST void ct_conv_set_args(struct ct_conv *c, ct_args_fn fn) { c->args = fn; }

CT_EXPORT CT_NOINST int ct_conv_analyze(struct ct_conv *c, char *err, size_t errlen) {
    c->durcap = c->total_calls ? c->total_calls : 1;
    FILE *tmp = tmpfile();
    if (!tmp || ftruncate(fileno(tmp), (off_t)(c->durcap * 8)) < 0) {
        snprintf(err, errlen, "cannot create a temporary file: %s", strerror(errno));
        if (tmp)
            fclose(tmp);
        return -1;
    }
    void *m = mmap(NULL, c->durcap * 8, PROT_READ | PROT_WRITE, MAP_SHARED, fileno(tmp), 0);
    fclose(tmp);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot map a temporary file: %s", strerror(errno));
        return -1;
    }
    c->dur = m;
    c->done_words = 0;
    for (size_t ti = 0; ti < c->nthreads; ti++) {
        struct walk w = {.c = c, .t = &c->threads[ti], .mode = WALK_MEASURE, .pending = -1};
        if (ct_walk(&w) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
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
    s->dropped = c->dropped + c->h->lost_calls;   /* calls after the file could not grow */
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
    *f = (struct ct_conv_func){x->addr, x->calls, x->total, x->self, x->min, x->max};
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
