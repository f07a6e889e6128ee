/* The walk over one thread's events, shared by the measuring pass and the
 * writing pass so that they cannot disagree, and the JSON output buffer. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "conv.h"

CT_NOINST void release(const void *from, const void *to) {
    uintptr_t a = ((uintptr_t)from + 4095) & ~(uintptr_t)4095, b = (uintptr_t)to & ~(uintptr_t)4095;
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

CT_NOINST void release_seg(const struct ct_conv *c, const struct cseg *s) {
    uint64_t cs = c->h->chunk_size, from = CT_HEADER_SIZE + (s->data - CT_HEADER_SIZE) / cs * cs;
    uint64_t to = (s->data + (uint64_t)s->words * 8 + 4095) & ~(uint64_t)4095;
    if (to > from + cs)
        to = from + cs;
    if (to > c->size)
        to = c->size;
    release(c->map + from, c->map + to);
}

/* ---- functions table (funcs.c) ------------------------------------------- */

/* Once per recorded call: the lookup is inlined into the walk, the insert is not. */
static inline CT_NOINST int64_t func_index(struct ct_conv *c, uint64_t addr, uint64_t ticks) {
    uint32_t era = c->ncuts ? ct_era_of(c, addr, ticks) : 0;
    if (c->hashcap) {
        size_t j = (addr * 0x9E3779B97F4A7C15ull) >> 20 & (c->hashcap - 1);
        while (c->hash[j]) {
            const struct func *f = &c->funcs[c->hash[j] - 1];
            if (f->addr == addr && f->era == era)
                return c->hash[j] - 1;
            j = (j + 1) & (c->hashcap - 1);
        }
    }
    return ct_func_add(c, addr, era);
}

/* ---- buffered output ------------------------------------------------------ */

CT_NOINST void out_flush(struct out *o) {
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

CT_NOINST void out_str(struct out *o, const char *s, size_t n) {
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

/* ---- columns ---------------------------------------------------------------- */

#define ARGS_MAX (1 << 16)

static CT_NOINST int emit_cols(struct walk *w) {
    struct ct_conv_cols *k = w->cols;
    if (k->n && !w->aborted && k->emit(k->n))
        w->aborted = 1;
    k->n = 0;
    k->roots = 0;
    k->extra_off[0] = 0;
    memset(k->bits, 0, COL_BITMAPS * ((k->cap + 7) / 8));
    return w->aborted ? -1 : 0;
}

/* One row per call; a batch goes out when it is full or its args buffer
 * might not hold one more call's arguments. */
static CT_NOINST int put_row(struct walk *w, uint32_t f, const struct frame *fr) {
    struct ct_conv *c = w->c;
    struct ct_conv_cols *k = w->cols;
    if ((k->n == k->cap || k->extra_off[k->n] + ARGS_MAX > k->extra_cap) && emit_cols(w) < 0)
        return -1;
    uint64_t i = k->n++, d = fr->word;
    k->func[i] = (int32_t)f;
    k->depth[i] = (int32_t)w->sp;
    k->start[i] = fr->start_ns;
    k->dur[i] = fr->dur_ns;
    size_t stride = (k->cap + 7) / 8, byte = i >> 3;
    uint8_t bit = (uint8_t)(1u << (i & 7));
    if (w->sp) {
        k->parent[i] = k->parent_base + (int64_t)(c->stack[w->sp - 1].call - w->t->call_base);
        k->bits[COL_HAS_PARENT * stride + byte] |= bit;
    } else {
        k->parent[i] = -1;
        k->roots++;
    }
    if (d & FLAG_INCOMPLETE)
        k->bits[COL_INCOMPLETE * stride + byte] |= bit;
    if (d & FLAG_UNWOUND)
        k->bits[COL_UNWOUND * stride + byte] |= bit;
    if (d & FLAG_BEFORE_ATTACH)
        k->bits[COL_BEFORE * stride + byte] |= bit;
    k->extra_off[i + 1] = k->extra_off[i];
    if (c->args || w->notes)
        w->pending = f;   /* ARGS or a note may follow; without either, nothing to close */
    return 0;
}

static CT_NOINST void put_extra(struct walk *w, const char *s, size_t n) {
    struct ct_conv_cols *k = w->cols;
    memcpy(k->extra + k->extra_off[k->n], s, n);
    k->extra_off[k->n] += (uint32_t)n;
}

/* The walk's steps take its mode as a constant: ct_walk compiles one
 * walk per mode, each without the others' branches. */
#define WALK_STEP static inline __attribute__((always_inline)) CT_NOINST

WALK_STEP int push(struct walk *w, const int mode, uint32_t f, uint64_t addr, uint64_t ticks, uint32_t rt) {
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
    fr->call = w->t->call_base + w->ncall;
    /* Only a measure begun while the program ran (live.c) can outgrow the room. */
    if (mode == WALK_MEASURE && fr->call >= c->durcap && ct_dur_reserve(c, fr->call + 1) < 0)
        return -1;
    fr->f = f;
    fr->rt = rt;
    fr->addr = addr;
    fr->start_ticks = ticks;
    fr->child_ns = 0;
    fr->before = 0;
    struct func *fn = &c->funcs[f];
    fr->outermost = fn->active++ == 0;
    /* The measuring pass keeps ticks (it may run before the clock's rate is
     * known: live.c); the writing passes turn them into nanoseconds. */
    if (mode != WALK_MEASURE || c->tally == WALK_MEASURE)
        fr->start_ns = to_ns(c, ticks);
    if (mode != WALK_MEASURE) {
        fr->word = c->dur[fr->call];
        fr->dur_ns = to_ns(c, ticks + (fr->word & DUR_MASK)) - fr->start_ns;
    }
    if (mode == WALK_WRITE) {
        struct out *o = w->o;
        uint64_t d = fr->word;
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
        out_u64(o, fr->dur_ns);
        if (d & FLAG_INCOMPLETE)
            OUT_LIT(o, ",\"incomplete\":true");
        if (d & FLAG_UNWOUND)
            OUT_LIT(o, ",\"unwound\":true");
        if (d & FLAG_BEFORE_ATTACH)
            OUT_LIT(o, ",\"before_attach\":true");
        w->pending = f;   /* ARGS may follow */
    }
    if (mode == WALK_COLUMNS && put_row(w, f, fr) < 0)
        return -1;
    w->ncall++;
    w->sp++;
    return 0;
}

/* A call of duration `d` ns into its function's table for the thread
 * (fold_thread adds it to the trace's at the thread's end). */
WALK_STEP void tally(struct walk *w, const struct frame *fr, struct func *fn, uint64_t d) {
    struct ct_conv *c = w->c;
    if (w->sp)
        c->stack[w->sp - 1].child_ns += d;
    if (fn->tcalls++ == 0)
        c->touched[c->ntouched++] = fr->f;
    if (fr->outermost)
        fn->ttotal += d;
    fn->tself += d > fr->child_ns ? d - fr->child_ns : 0;
    if (d < fn->tmin)
        fn->tmin = d;
    if (d > fn->tmax)
        fn->tmax = d;
}

/* Close the innermost open call at `end` ticks. */
WALK_STEP void pop(struct walk *w, const int mode, uint64_t end, uint64_t flags) {
    struct ct_conv *c = w->c;
    struct frame *fr = &c->stack[--w->sp];
    struct func *fn = &c->funcs[fr->f];
    fn->active--;
    if (mode == WALK_COLUMNS && c->tally == WALK_COLUMNS)
        tally(w, fr, fn, fr->dur_ns);
    if (mode != WALK_MEASURE)
        return;
    uint64_t dt = end > fr->start_ticks ? end - fr->start_ticks : 0;
    if (fr->before) {
        flags |= FLAG_BEFORE_ATTACH;
        c->before_attach++;
    }
    uint64_t v = (dt & DUR_MASK) | flags;
    /* A call that outlived the release point: its page was let go, and a
     * store through the map would fault the page's whole folio (up to 2 MB)
     * back in for the rest of the walk. The file takes it instead. */
    if (fr->call >= w->released || c->durfd < 0 || pwrite(c->durfd, &v, 8, (off_t)(fr->call * 8)) != 8)
        c->dur[fr->call] = v;
    if (c->tally == WALK_MEASURE)
        tally(w, fr, fn, to_ns(c, fr->start_ticks + (v & DUR_MASK)) - fr->start_ns);
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
    int done = 0, cols = w->mode == WALK_COLUMNS;
    if (v && avail && (v[0] >> 62) == CT_EV_EXT && ((v[0] >> 54) & 0xff) == CT_EXT_ARGS && c->args) {
        uint64_t words = (v[0] >> 38) & 0xffff, value = v[0] & ((1ull << 38) - 1);
        if (words < avail && (value & 0xffff) <= words * 8) {
            int n = c->args((uint32_t)w->pending, (const uint8_t *)(v + 1), value, w->argbuf, ARGS_MAX);
            if (n > 0 && cols)
                put_extra(w, w->argbuf, (size_t)n);
            else if (n > 0)
                out_str(o, w->argbuf, (size_t)n);
            done = 1;
        }
    }
    const char *note = !done && w->notes ? w->notes[w->pending] : NULL;
    if (note && cols)
        put_extra(w, note, strnlen(note, ARGS_MAX));
    else if (note)
        out_str(o, note, strlen(note));
    if (!cols)
        OUT_LIT(o, "}");
    w->pending = -1;
}

CT_NOINST void ct_walk_begin(struct walk *w) {
    const struct cthread *t = w->t;
    if (!w->segs) {
        w->segs = &w->c->segs[t->first_seg];
        w->nsegs = t->nsegs;
    }
    w->seg = 0;
    w->ncall = 0;
    w->sp = 0;
    w->released = t->call_base;
    w->last = w->paused = 0;
    w->next_rt = -1;
    w->ngone = 0;
}

WALK_STEP int walk_segs(struct walk *w, const int mode) {
    struct ct_conv *c = w->c;
    struct cthread *t = w->t;
    uint64_t last = w->last;
    for (; w->seg < w->nsegs; w->seg++) {
        const struct cseg *sg = &w->segs[w->seg];
        const uint64_t *p = seg_words(c, sg);
        size_t n = sg->words;
        last = sg->ticks;
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
                    w->paused = last;
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
                        int same = on_exit && top->rt == d && top->addr == fn;
                        if (top->rt < d || same)
                            break;
                        pop(w, mode, w->paused, FLAG_INCOMPLETE);
                    }
                    w->next_rt = on_exit ? -1 : (int64_t)d;
                } else if (sub == CT_EXT_UNWIND) {
                    /* Remember what was closed: C++ forced unwinding (after
                     * pthread_exit) still runs those frames' exit hooks. */
                    w->ngone = 0;
                    while (w->sp && c->stack[w->sp - 1].rt >= (uint32_t)val) {
                        if (w->ngone < sizeof w->gone / sizeof *w->gone)
                            w->gone[w->ngone++] = c->stack[w->sp - 1].addr;
                        pop(w, mode, last, FLAG_UNWOUND);
                    }
                } else if (sub == CT_EXT_ATTACH) {
                    /* Frames open when calltrace attach began: calls from
                     * then on, marked, so their returns close them. */
                    for (uint64_t k = 0; k < words && i + 1 + k < n; k++) {
                        uint64_t a = p[i + 1 + k] & CT_ADDR_MASK;
                        int64_t f = func_index(c, a, last);
                        if (f < 0 || push(w, mode, (uint32_t)f, a, last, (uint32_t)(val + k)) < 0)
                            return -1;
                        c->stack[w->sp - 1].before = 1;
                        if (w->pending >= 0)
                            close_call(w, NULL, 0);
                    }
                } else if (sub == CT_EXT_THREAD_END) {
                    while (w->sp)
                        pop(w, mode, last, FLAG_UNWOUND);
                }
                i += words;
                continue;
            }
            uint64_t addr = (v >> CT_DELTA_BITS) & CT_ADDR_MASK;
            last += v & CT_DELTA_MASK;
            if (mode == WALK_MEASURE && last < t->first_ticks)
                t->first_ticks = last;
            if (kind == CT_EV_ENTER) {
                int64_t f = func_index(c, addr, last);
                if (f < 0)
                    return -1;
                uint32_t rt = w->next_rt >= 0 ? (uint32_t)w->next_rt : (w->sp ? c->stack[w->sp - 1].rt + 1 : 0);
                w->next_rt = -1;
                if (push(w, mode, (uint32_t)f, addr, last, rt) < 0)
                    return -1;
            } else {
                size_t k2 = w->sp;
                while (k2 && c->stack[k2 - 1].addr != addr)
                    k2--;
                if (!k2) {
                    /* The exit of a frame an UNWIND already closed, or of a call
                     * made before recording started. */
                    size_t g = 0;
                    while (g < w->ngone && w->gone[g] != addr)
                        g++;
                    if (g < w->ngone)
                        w->gone[g] = w->gone[--w->ngone];
                    else if (mode == WALK_MEASURE)
                        c->unmatched++;
                    continue;
                }
                while (w->sp > k2)
                    pop(w, mode, last, FLAG_UNWOUND);   /* frames left by longjmp/exception */
                pop(w, mode, last, 0);
            }
        }
        c->done_words += i;
        if (mode == WALK_MEASURE && last > c->last_ticks)
            c->last_ticks = last;
        release_seg(c, sg);
        /* the open calls' slots among these are written through the file (pop) */
        uint64_t done = t->call_base + w->ncall;
        release(c->dur + w->released, c->dur + done);
        w->released = done & ~(uint64_t)511;
        if (w->aborted)
            return -1;
        if (c->progress && (w->seg & 15) == 15)
            c->progress(c->done_words, c->total_words);
    }
    w->last = last;
    return 0;
}

WALK_STEP int walk_thread(struct walk *w, const int mode, int end) {
    if (walk_segs(w, mode) < 0)
        return -1;
    if (!end)
        return 0;
    if (w->pending >= 0)
        close_call(w, NULL, 0);
    while (w->sp)
        pop(w, mode, w->c->end_ticks, FLAG_INCOMPLETE);
    if (mode == WALK_COLUMNS)
        return emit_cols(w);
    return 0;
}

CT_NOINST int ct_walk(struct walk *w, int end) {
    switch (w->mode) {
    case WALK_MEASURE:
        return walk_thread(w, WALK_MEASURE, end);
    case WALK_WRITE:
        return walk_thread(w, WALK_WRITE, end);
    default:
        return walk_thread(w, WALK_COLUMNS, end);
    }
}
