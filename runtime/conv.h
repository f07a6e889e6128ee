/* The converter's private declarations, shared by convert.c (opening,
 * indexing, the ctypes API) and walk.c (the event walk and JSON output). */
#ifndef CONV_H
#define CONV_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "ct.h"

#define FLAG_INCOMPLETE (1ull << 62)
#define FLAG_UNWOUND (1ull << 63)
#define FLAG_BEFORE_ATTACH (1ull << 61)
#define DUR_MASK ((1ull << 61) - 1)

/* One segment: a run of one thread's event words. */
struct cseg {
    uint64_t data;                   /* file offset of its first word */
    uint64_t ticks;                  /* the time base of its first event */
    uint32_t words, flags;
    int32_t tid;
    uint32_t round;                  /* live.c: the scan that saw it sealed */
};

struct cthread {
    int32_t tid;
    uint32_t nsegs, first_seg;       /* index into conv.segs */
    uint64_t first_ticks, calls, call_base;
    uint64_t rows_off, rows_n;       /* its functions table in conv.rows */
    int main;
};

struct func {
    uint64_t addr, calls, total, self, min, max;   /* over the whole trace */
    uint64_t tcalls, ttotal, tself, tmin, tmax;    /* in the thread being measured */
    uint32_t active;
    uint32_t era;    /* cuts at addr before these calls (ct_conv_set_cuts) */
};

/* A row of a thread's functions table (ct_conv_thread_table). */
struct ct_conv_row {
    int64_t func;
    uint64_t calls, total_ns, self_ns, min_ns, max_ns;
};

struct frame {
    uint32_t f, rt;
    uint64_t addr;   /* funcs[f].addr, kept here for the returns' search */
    uint64_t call, start_ticks, start_ns, child_ns;
    uint64_t word, dur_ns;   /* writing passes: the call's durations-file word, its duration in ns */
    int outermost;
    int before;      /* entered before calltrace attach began recording */
};

typedef void (*ct_progress_fn)(uint64_t done, uint64_t total);
/* Formats one call's captured argument bytes as `,"args":[...]` into `out`;
 * returns the length, or a negative number for nothing. */
typedef int (*ct_args_fn)(uint32_t fidx, const uint8_t *payload, uint64_t value, char *out, uint32_t cap);

struct ct_conv {
    const unsigned char *map;
    size_t size;
    const struct ct_header *h;
    struct cseg *segs;                /* grouped by thread, in order */
    size_t nsegs, capsegs;
    struct cthread *threads;
    size_t nthreads;
    struct func *funcs;
    size_t nfuncs, capfuncs;
    uint32_t *touched;                /* funcs the thread being measured called, capfuncs of room */
    size_t ntouched;
    struct ct_conv_row *rows;         /* the threads' functions tables, while they fit row_limit */
    size_t nrows, caprows, row_limit;
    int rows_dropped;
    uint32_t *hash;                   /* addr -> funcs index + 1 */
    size_t hashcap;
    struct frame *stack;
    size_t stackcap;
    uint64_t *dur;                    /* per call: duration in ticks | flags */
    size_t durcap;
    int durfd;                        /* the file under `dur` (-1: none) */
    uint64_t *cuts;                   /* lo, hi, ticks: the code in [lo, hi) changed then */
    size_t ncuts;
    double npt;
    int tally;                        /* the pass that fills the functions' tables: WALK_MEASURE or WALK_COLUMNS */
    struct live *live;                /* measuring while the program runs (live.c), or NULL */
    uint64_t total_calls, incomplete, unwound, unmatched, depth_limited, dropped, filtered, lost;
    uint64_t before_attach;
    uint64_t cal_ticks, cal_ns;       /* the latest calibration point of the chunks */
    uint64_t first_ticks, last_ticks, end_ticks, total_words, done_words;
    ct_progress_fn progress;
    ct_args_fn args;
    char err[256];
};

struct ct_conv_summary {
    uint64_t total_calls, threads, functions, incomplete, unwound, unmatched, depth_limited, dropped;
    uint64_t duration_ns, end_ns;
    double ns_per_tick;
    uint64_t filtered, lost, before_attach;
};

struct ct_conv_func {
    uint64_t addr, calls, total_ns, self_ns, min_ns, max_ns, era;
};

struct ct_conv_thread {
    int64_t tid;
    uint64_t calls, first_ns;
    int64_t main;
};


static inline CT_NOINST uint64_t to_ns(const struct ct_conv *c, uint64_t ticks) {
    if (ticks <= c->h->start_ticks)
        return 0;
    return (uint64_t)((double)(ticks - c->h->start_ticks) * c->npt);
}

/* Double the array `*p` of `*cap` elements of `size` bytes (256 at first). */
static inline CT_NOINST int grow_array(void *p, size_t *cap, size_t size) {
    size_t n = *cap ? *cap * 2 : 256;
    void *q = realloc(*(void **)p, n * size);
    if (!q)
        return -1;
    *(void **)p = q;
    *cap = n;
    return 0;
}

static inline CT_NOINST const uint64_t *seg_words(const struct ct_conv *c, const struct cseg *s) {
    return (const uint64_t *)(c->map + s->data);
}

/* Pages of the raw map or the durations file that a walk has passed: let
 * them go from our RSS (the page cache keeps them), so memory stays flat
 * whatever the trace's length. Both maps are MAP_SHARED, so nothing is lost. */
CT_HIDDEN void release(const void *from, const void *to);
/* A walk done with segment `s`: its chunk from the start (the headers, and
 * any other thread's segments there, which refault when walked) to the page
 * holding the segment's end. Without the headers' pages, one page a chunk
 * would stay, and memory would grow with the trace. */
CT_HIDDEN void release_seg(const struct ct_conv *c, const struct cseg *s);

struct out {
    int fd, failed;
    size_t used;
    char buf[1 << 20];
};

CT_HIDDEN void out_flush(struct out *o);
CT_HIDDEN void out_str(struct out *o, const char *s, size_t n);
#define OUT_LIT(o, s) out_str(o, s, sizeof(s) - 1)

enum { WALK_MEASURE = 0, WALK_WRITE = 1, WALK_COLUMNS = 2 };

/* Fixed-width columns of up to `cap` calls (trace/columns.py wraps them as
 * Arrow arrays); `extra` holds each call's args fragment, `extra_off[i]` to
 * `extra_off[i + 1]`. `emit(n)` takes a full batch; nonzero aborts. */
typedef int (*ct_batch_fn)(uint64_t n);

struct ct_conv_cols {
    int32_t *func;
    int32_t *depth;
    uint64_t *start, *dur;
    uint8_t *bits;                /* COL_BITMAPS bitmaps of (cap + 7) / 8 bytes, in Arrow's layout */
    int64_t *parent;              /* parent_base + the parent call's index in the thread; -1 at depth 0 */
    uint32_t *extra_off;          /* cap + 1 entries */
    char *extra;
    uint64_t cap, extra_cap, n;
    int64_t parent_base;
    uint64_t roots;               /* calls at depth 0 in the batch: the parents left out */
    ct_batch_fn emit;
};

/* The bitmaps of ct_conv_cols.bits: has a parent, incomplete, unwound,
 * entered before attach. */
enum { COL_HAS_PARENT = 0, COL_INCOMPLETE = 1, COL_UNWOUND = 2, COL_BEFORE = 3, COL_BITMAPS = 4 };

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
    struct ct_conv_cols *cols;
    int aborted;
    uint64_t released;           /* durations before this index are released */
    /* Where the walk is, so that it can stop after any segment and go on
     * (live.c measures segments as the program seals them). */
    const struct cseg *segs;     /* the thread's segments, in order */
    uint32_t nsegs, seg;         /* how many; the next one to walk */
    uint64_t last, paused;       /* the latest event's ticks; when recording paused */
    int64_t next_rt;
    uint64_t gone[64];           /* frames an UNWIND closed whose exits may still come */
    size_t ngone;
};

/* Start walking thread w->t (its segments unless w->segs is set). */
CT_HIDDEN void ct_walk_begin(struct walk *w);
/* Walk the segments up to w->nsegs, then, if `end`, close what is open. */
CT_HIDDEN int ct_walk(struct walk *w, int end);

/* The functions table (funcs.c): which library's a call at `ticks` to
 * `addr` is (0 unless one was dlclose'd and another loaded where it had
 * been); a new entry; forgetting them all. */
CT_HIDDEN uint32_t ct_era_of(const struct ct_conv *c, uint64_t addr, uint64_t ticks);
CT_HIDDEN int64_t ct_func_add(struct ct_conv *c, uint64_t addr, uint32_t era);
CT_HIDDEN void ct_funcs_forget(struct ct_conv *c);

/* convert.c and index.c, for live.c: a converter with nothing open; (re)map
 * the raw file; (re)index it; the measuring pass (from `w0`, the main thread's walk
 * so far, or from scratch); room for `n` durations. The first three return
 * NULL or what went wrong. */
CT_HIDDEN struct ct_conv *ct_conv_new(void);
void ct_conv_close(struct ct_conv *c);
CT_HIDDEN const char *ct_conv_map(struct ct_conv *c, int fd);
CT_HIDDEN const char *ct_conv_index(struct ct_conv *c);
/* Segments in order: by thread, then time (index.c). */
CT_HIDDEN int ct_cmp_segs(const void *a, const void *b);
/* The program's main thread, an index into conv.threads, or -1 (convert.c). */
CT_HIDDEN int64_t ct_main_thread(const struct ct_conv *c);
/* Where the run ended, given its latest event (index.c). */
CT_HIDDEN uint64_t ct_end_of(const struct ct_conv *c, uint64_t last);
CT_HIDDEN int ct_measure(struct ct_conv *c, struct walk *w0);
CT_HIDDEN int ct_dur_reserve(struct ct_conv *c, size_t n);
/* live.c, for ct_conv_analyze: index the whole file now that the program
 * has ended; `*w0` is the main thread's walk to go on with, or NULL when
 * the measure must start again. NULL, or what went wrong. */
CT_HIDDEN const char *ct_live_finish(struct ct_conv *c, struct walk **w0);
CT_HIDDEN void ct_live_free(struct live *l);

/* Make `*p` (`*cap` elements of `size` bytes) hold at least `need`,
 * doubling and zeroing the new part (kernels.c). */
CT_HIDDEN int ct_grow(void **p, size_t *cap, size_t need, size_t size);

/* The replay/chrome text kernel's settings and state (format.c). */
enum { FMT_REPLAY = 0, FMT_CHROME = 1 };

struct ct_fmt {
    int32_t mode, colour;
    int64_t max_depth, min_ns;            /* max_depth < 0: none */
    const uint8_t *want, *exclude;         /* per function id, or NULL */
    const char *const *names;              /* per function id: name, or chrome's line prefix */
    const uint32_t *namelen;
    int64_t skip, root;                    /* selection state, -1 when unset */
    uint64_t shown;
};

/* paths.select for one row: 1 and the depth to show it at, or 0. The
 * text kernels (format.c) and the perfetto kernel (perfetto.c) share it. */
static inline CT_NOINST int fmt_pass(struct ct_fmt *r, int32_t f, int64_t depth, int64_t dur, int64_t *shown) {
    if (r->skip >= 0) {
        if (depth > r->skip)
            return 0;
        r->skip = -1;
    }
    if (r->want) {
        if (r->root >= 0 && depth <= r->root)
            r->root = -1;
        if (r->root < 0) {
            if (!r->want[f])
                return 0;
            r->root = depth;
        }
        *shown = depth - r->root;
    } else {
        *shown = depth;
    }
    if (dur < r->min_ns || (r->exclude && r->exclude[f]) || (r->max_depth >= 0 && *shown >= r->max_depth)) {
        r->skip = depth;
        if (r->root == depth)
            r->root = -1;
        return 0;
    }
    return 1;
}

/* The perfetto kernel (perfetto.c): the wire tags and enum values of the
 * messages it writes, taken from the protos' descriptors by
 * export/perfetto.py, and the state of one packet sequence (a thread),
 * carried from batch to batch. Arrays belong to the caller. */
struct ct_pf {
    uint32_t packet, timestamp, seq_id, seq_flags, track_event, interned_data;   /* tags */
    uint32_t type, name_iid, event_names, iid, name;                             /* tags */
    uint32_t begin, end, needs;           /* TrackEvent.Type and sequence_flags values */
    uint32_t seq;                          /* trusted_packet_sequence_id */
    const char *blob;                      /* function names, UTF-8, back to back */
    const uint64_t *off;                   /* name f is blob[off[f]..off[f + 1]]; its iid is f + 1 */
    uint8_t *interned;                     /* per function id: its name was sent in this sequence */
    int64_t *ends;                         /* end times of the open calls, innermost last */
    uint64_t sp, cap;
    int64_t last;                          /* the latest timestamp written */
    int64_t pending;                       /* shown depth of a row selected but not yet begun, or -1 */
};

#endif
