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
#include "ct.h"

#define FLAG_INCOMPLETE (1ull << 62)
#define FLAG_UNWOUND (1ull << 63)
#define DUR_MASK ((1ull << 62) - 1)

struct cthread {
    int32_t tid;
    uint32_t nchunks, first_chunk;   /* index into conv.order */
    uint64_t first_ticks, calls, call_base;
    int main;
};

struct func {
    uint64_t addr, calls, total, self, min, max;
    uint32_t active;
};

struct frame {
    uint32_t f, rt;
    uint64_t call, start_ns, child_ns;
    int outermost;
};

typedef void (*ct_progress_fn)(uint64_t done, uint64_t total);
/* Formats one call's captured argument bytes as `,"args":[...]` into `out`;
 * returns the length, or a negative number for nothing. */
typedef int (*ct_args_fn)(uint32_t fidx, const uint8_t *payload, uint64_t value, char *out, uint32_t cap);

struct ct_conv {
    const unsigned char *map;
    size_t size;
    const struct ct_header *h;
    uint64_t *order;                  /* chunk offsets, grouped by thread, in order */
    size_t norder;
    struct cthread *threads;
    size_t nthreads;
    struct func *funcs;
    size_t nfuncs, capfuncs;
    uint32_t *hash;                   /* addr -> funcs index + 1 */
    size_t hashcap;
    struct frame *stack;
    size_t stackcap;
    uint64_t *dur;                    /* per call: duration_ns | flags */
    size_t durcap;
    double npt;
    uint64_t total_calls, incomplete, unwound, unmatched, depth_limited, dropped, filtered;
    uint64_t first_ticks, last_ticks, end_ticks, total_words, done_words;
    ct_progress_fn progress;
    ct_args_fn args;
    char err[256];
};

struct ct_conv_summary {
    uint64_t total_calls, threads, functions, incomplete, unwound, unmatched, depth_limited, dropped;
    uint64_t duration_ns, end_ns;
    double ns_per_tick;
    uint64_t filtered;
};

struct ct_conv_func {
    uint64_t addr, calls, total_ns, self_ns, min_ns, max_ns;
};

struct ct_conv_thread {
    int64_t tid;
    uint64_t calls, first_ns;
    int64_t main;
};

static CT_NOINST uint64_t to_ns(const struct ct_conv *c, uint64_t ticks) {
    if (ticks <= c->h->start_ticks)
        return 0;
    return (uint64_t)((double)(ticks - c->h->start_ticks) * c->npt);
}

static CT_NOINST const struct ct_chunk *chunk_at(const struct ct_conv *c, uint64_t off) {
    return (const struct ct_chunk *)(c->map + off);
}

static CT_NOINST size_t chunk_words(const struct ct_conv *c, uint64_t off) {
    uint64_t end = off + c->h->chunk_size;
    if (end > c->size)
        end = c->size;
    return (size_t)((end - off - CT_CHUNK_HEADER) / 8);
}

/* ---- functions table: open addressing on the entry address ------------- */
static CT_NOINST int grow_hash(struct ct_conv *c) {
    size_t cap = c->hashcap ? c->hashcap * 2 : 1024;
    uint32_t *h = calloc(cap, sizeof *h);
    if (!h)
        return -1;
    for (size_t i = 0; i < c->nfuncs; i++) {
        size_t j = (c->funcs[i].addr * 0x9E3779B97F4A7C15ull) >> 20 & (cap - 1);
        while (h[j])
            j = (j + 1) & (cap - 1);
        h[j] = (uint32_t)i + 1;
    }
    free(c->hash);
    c->hash = h;
    c->hashcap = cap;
    return 0;
}

static CT_NOINST int64_t func_index(struct ct_conv *c, uint64_t addr) {
    if (c->nfuncs * 2 >= c->hashcap && grow_hash(c) < 0)
        return -1;
    size_t j = (addr * 0x9E3779B97F4A7C15ull) >> 20 & (c->hashcap - 1);
    while (c->hash[j]) {
        if (c->funcs[c->hash[j] - 1].addr == addr)
            return c->hash[j] - 1;
        j = (j + 1) & (c->hashcap - 1);
    }
    if (c->nfuncs == c->capfuncs) {
        size_t cap = c->capfuncs ? c->capfuncs * 2 : 256;
        struct func *f = realloc(c->funcs, cap * sizeof *f);
        if (!f)
            return -1;
        c->funcs = f;
        c->capfuncs = cap;
    }
    struct func *f = &c->funcs[c->nfuncs];
    memset(f, 0, sizeof *f);
    f->addr = addr;
    f->min = UINT64_MAX;
    c->hash[j] = (uint32_t)c->nfuncs + 1;
    return (int64_t)c->nfuncs++;
}

/* ---- buffered output ------------------------------------------------------ */
struct out {
    int fd, failed;
    size_t used;
    char buf[1 << 20];
};

static CT_NOINST void out_flush(struct out *o) {
    size_t done = 0;
    while (done < o->used && !o->failed) {
        ssize_t w = write(o->fd, o->buf + done, o->used - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            o->failed = errno ? errno : EIO;
        else
            done += (size_t)w;
    }
    o->used = 0;
}

static CT_NOINST void out_str(struct out *o, const char *s, size_t n) {
    if (o->used + n > sizeof o->buf)
        out_flush(o);
    if (n > sizeof o->buf) {
        o->used = 0;
        while (n && !o->failed) {
            ssize_t w = write(o->fd, s, n);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                o->failed = errno ? errno : EIO;
                break;
            }
            s += w;
            n -= (size_t)w;
        }
        return;
    }
    memcpy(o->buf + o->used, s, n);
    o->used += n;
}

#define OUT_LIT(o, s) out_str(o, s, sizeof(s) - 1)

static CT_NOINST void out_u64(struct out *o, uint64_t v) {
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_str(o, tmp + i, (size_t)(24 - i));
}

/* ---- the walk ---------------------------------------------------------------- */
enum { WALK_MEASURE = 0, WALK_WRITE = 1 };

struct walk {
    struct ct_conv *c;
    struct cthread *t;
    int mode, pretty;
    struct out *o;
    const char *const *names;
    size_t *namelen;
    const char *const *notes;    /* per function: what to say when a call has no args */
    char *argbuf;
    int64_t pending;             /* function of a written call whose '}' is still due */
    uint64_t ncall, nwritten;
    size_t sp;
};

static CT_NOINST int push(struct walk *w, uint32_t f, uint64_t ticks, uint32_t rt) {
    struct ct_conv *c = w->c;
    if (w->sp == c->stackcap) {
        size_t cap = c->stackcap ? c->stackcap * 2 : 1024;
        struct frame *s = realloc(c->stack, cap * sizeof *s);
        if (!s)
            return -1;
        c->stack = s;
        c->stackcap = cap;
    }
    struct frame *fr = &c->stack[w->sp];
    fr->f = f;
    fr->rt = rt;
    fr->call = w->t->call_base + w->ncall;
    fr->start_ns = to_ns(c, ticks);
    fr->child_ns = 0;
    struct func *fn = &c->funcs[f];
    fr->outermost = fn->active++ == 0;
    if (w->mode == WALK_WRITE) {
        struct out *o = w->o;
        uint64_t d = c->dur[fr->call];
        if (w->nwritten++)
            OUT_LIT(o, ",");
        if (w->pretty)
            OUT_LIT(o, "\n      {\"function\":");
        else
            OUT_LIT(o, "\n{\"function\":");
        out_str(o, w->names[f], w->namelen[f]);
        OUT_LIT(o, ",\"depth\":");
        out_u64(o, w->sp);
        OUT_LIT(o, ",\"start_ns\":");
        out_u64(o, fr->start_ns);
        OUT_LIT(o, ",\"duration_ns\":");
        out_u64(o, d & DUR_MASK);
        if (d & FLAG_INCOMPLETE)
            OUT_LIT(o, ",\"incomplete\":true");
        if (d & FLAG_UNWOUND)
            OUT_LIT(o, ",\"unwound\":true");
        w->pending = f;   /* ARGS may follow */
    }
    w->ncall++;
    w->sp++;
    return 0;
}

static CT_NOINST void pop(struct walk *w, uint64_t end_ns, uint64_t flags) {
    struct ct_conv *c = w->c;
    struct frame *fr = &c->stack[--w->sp];
    struct func *fn = &c->funcs[fr->f];
    fn->active--;
    if (w->mode != WALK_MEASURE)
        return;
    uint64_t d = end_ns > fr->start_ns ? end_ns - fr->start_ns : 0;
    c->dur[fr->call] = d | flags;
    if (w->sp)
        c->stack[w->sp - 1].child_ns += d;
    fn->calls++;
    if (fr->outermost)
        fn->total += d;
    fn->self += d > fr->child_ns ? d - fr->child_ns : 0;
    if (d < fn->min)
        fn->min = d;
    if (d > fn->max)
        fn->max = d;
    if (flags & FLAG_INCOMPLETE)
        c->incomplete++;
    if (flags & FLAG_UNWOUND)
        c->unwound++;
}

/* Close the call written last: its args (from an ARGS record at `v`, if
 * that is what follows it) or its note, then the brace. */
static CT_NOINST void close_call(struct walk *w, const uint64_t *v, size_t avail) {
    if (w->pending < 0)
        return;
    struct ct_conv *c = w->c;
    struct out *o = w->o;
    int done = 0;
    if (v && avail && (v[0] >> 62) == CT_EV_EXT && ((v[0] >> 54) & 0xff) == CT_EXT_ARGS && c->args) {
        uint64_t words = (v[0] >> 38) & 0xffff, value = v[0] & ((1ull << 38) - 1);
        if (words < avail && (value & 0xffff) <= words * 8) {
            int n = c->args((uint32_t)w->pending, (const uint8_t *)(v + 1), value, w->argbuf, 1 << 16);
            if (n > 0)
                out_str(o, w->argbuf, (size_t)n);
            done = 1;
        }
    }
    if (!done && w->notes && w->notes[w->pending])
        out_str(o, w->notes[w->pending], strlen(w->notes[w->pending]));
    OUT_LIT(o, "}");
    w->pending = -1;
}

static CT_NOINST int walk(struct walk *w) {
    struct ct_conv *c = w->c;
    struct cthread *t = w->t;
    uint64_t last = 0, paused = 0;
    int64_t next_rt = -1;
    w->ncall = 0;
    w->sp = 0;
    for (uint32_t k = 0; k < t->nchunks; k++) {
        uint64_t off = c->order[t->first_chunk + k];
        const uint64_t *p = (const uint64_t *)(c->map + off + CT_CHUNK_HEADER);
        size_t n = chunk_words(c, off);
        last = 0;
        size_t i = 0;
        for (; i < n; i++) {
            uint64_t v = p[i];
            if (!v)
                break;
            if (w->pending >= 0)
                close_call(w, p + i, n - i);
            unsigned kind = (unsigned)(v >> 62);
            if (kind == CT_EV_TIME) {
                last = v & CT_TIME_MASK;
                continue;
            }
            if (kind == CT_EV_EXT) {
                unsigned sub = (unsigned)(v >> 54) & 0xff;
                uint64_t words = (v >> 38) & 0xffff, val = v & ((1ull << 38) - 1);
                if (sub == CT_EXT_PAUSE) {
                    paused = last;
                } else if (sub == CT_EXT_RESUME) {
                    /* Frames that returned while recording was off: everything
                     * at or below the depth now being entered, or below the
                     * frame now returning (and that one too unless it is the
                     * same function, i.e. the recorded call returning now). */
                    uint32_t d = (uint32_t)(val >> 1);
                    int on_exit = (int)(val & 1);
                    uint64_t fn = words && i + 1 < n ? p[i + 1] & CT_ADDR_MASK : 0;
                    while (w->sp) {
                        const struct frame *top = &c->stack[w->sp - 1];
                        int same = on_exit && top->rt == d && c->funcs[top->f].addr == fn;
                        if (top->rt < d || same)
                            break;
                        pop(w, to_ns(c, paused), FLAG_INCOMPLETE);
                    }
                    next_rt = on_exit ? -1 : (int64_t)d;
                } else if (sub == CT_EXT_UNWIND) {
                    while (w->sp && c->stack[w->sp - 1].rt >= (uint32_t)val)
                        pop(w, to_ns(c, last), FLAG_UNWOUND);
                } else if (sub == CT_EXT_THREAD_END) {
                    while (w->sp)
                        pop(w, to_ns(c, last), FLAG_UNWOUND);
                }
                i += words;
                continue;
            }
            uint64_t addr = (v >> CT_DELTA_BITS) & CT_ADDR_MASK;
            last += v & CT_DELTA_MASK;
            if (kind == CT_EV_ENTER) {
                int64_t f = func_index(c, addr);
                if (f < 0)
                    return -1;
                uint32_t rt = next_rt >= 0 ? (uint32_t)next_rt : (w->sp ? c->stack[w->sp - 1].rt + 1 : 0);
                next_rt = -1;
                if (push(w, (uint32_t)f, last, rt) < 0)
                    return -1;
            } else {
                if (!w->sp) {
                    if (w->mode == WALK_MEASURE)
                        c->unmatched++;
                    continue;
                }
                size_t k2 = w->sp;
                while (k2 && c->funcs[c->stack[k2 - 1].f].addr != addr)
                    k2--;
                if (!k2) {
                    if (w->mode == WALK_MEASURE)
                        c->unmatched++;
                    continue;
                }
                uint64_t now = to_ns(c, last);
                while (w->sp > k2)
                    pop(w, now, FLAG_UNWOUND);   /* frames left by longjmp/exception */
                pop(w, now, 0);
            }
        }
        c->done_words += i;
        if (c->progress && (k & 15) == 15)
            c->progress(c->done_words, c->total_words);
    }
    if (w->pending >= 0)
        close_call(w, NULL, 0);
    uint64_t end = to_ns(c, c->end_ticks);
    while (w->sp)
        pop(w, end, FLAG_INCOMPLETE);
    return 0;
}

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
        if (walk(&w) < 0) {
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
        if (walk(&w) < 0) {
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
