/* File space for events: chunks claimed with one atomic add on the part's
 * allocation cursor, their blocks reserved before any store (a store into a
 * hole of a full file system is a SIGBUS), and segments: each thread writes
 * a run of its own events into a chunk through a MAP_SHARED mapping, so
 * everything stored is in the page cache at once and survives any death of
 * the process. A thread that ends seals its segment and hands the rest of
 * the chunk to the next thread that needs room, so disk use follows the
 * events, not the threads. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "ct.h"

size_t ct_chunk_bytes;
volatile int ct_recorded;              /* a thread has had an event chunk */
volatile uint32_t ct_stopped;
static volatile uint64_t claimed;       /* bytes claimed in all parts: the budget */

/* The rest of a chunk whose thread ended: slots taken and given with a
 * compare-and-swap (0 free, 1 in use, 2 full), so no one ever waits. */
#define REST_SLOTS 128
static struct rest {
    volatile uint32_t state, part;
    struct ct_chunk *chunk;
    char *at;
} rest[REST_SLOTS];

CT_NOINST void ct_unmap_chunk(void *m) { munmap(m, ct_chunk_bytes); }

/* Recording stops for good: the first reason is kept and said once. */
static CT_NOINST __attribute__((format(printf, 3, 4))) void stop(struct ct_part *pt, uint32_t reason,
                                                                 const char *fmt, ...) {
    uint32_t none = CT_STOP_NONE;
    if (!__atomic_compare_exchange_n(&ct_stopped, &none, reason, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return;
    pt->hdr->stop_reason = reason;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ct_warn("%s; recording stops here (the calls not recorded are counted in the trace)", msg);
}

/* Would `size` more bytes at `off` break a limit? Then stop. */
static CT_NOINST int over_limit(struct ct_part *pt, uint64_t off, uint64_t size) {
    struct rlimit lim;
    /* Past RLIMIT_FSIZE growing the file raises SIGXFSZ, which would kill the program. */
    if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && off + size > lim.rlim_cur) {
        stop(pt, CT_STOP_FSIZE, "the raw trace %s reached the file size limit (ulimit -f)", pt->path);
        return 1;
    }
    uint64_t total = __atomic_add_fetch(&claimed, size, __ATOMIC_RELAXED);
    if (ct_cfg.max_size && !ct_cfg.rolling && total > ct_cfg.max_size) {
        stop(pt, CT_STOP_MAX_SIZE, "the raw trace reached its size budget of %llu bytes (CALLTRACE_MAX_SIZE)",
             (unsigned long long)ct_cfg.max_size);
        return 1;
    }
    struct statvfs fs;
    if ((ct_cfg.min_free || ct_cfg.min_free_pct) && fstatvfs(pt->fd, &fs) == 0) {
        uint64_t unit = fs.f_frsize ? fs.f_frsize : fs.f_bsize;
        uint64_t avail = (uint64_t)fs.f_bavail * unit, keep = ct_cfg.min_free;
        uint64_t pct = (uint64_t)fs.f_blocks * unit / 100 * ct_cfg.min_free_pct;
        if (ct_cfg.min_free_pct && (!keep || pct < keep))
            keep = pct;
        if (avail < keep + size) {
            stop(pt, CT_STOP_MIN_FREE, "the file system of %s has less than %llu MB free (CALLTRACE_MIN_FREE)",
                 pt->path, (unsigned long long)(keep >> 20));
            return 1;
        }
    }
    return 0;
}

/* A new chunk of `pt`, its blocks reserved and its header written. */
CT_NOINST void *ct_claim(struct ct_part *pt, uint32_t type) {
    if (!pt->hdr || ct_stopped)
        return NULL;
    size_t size = ct_chunk_bytes;
    uint64_t off = __atomic_fetch_add(&pt->hdr->next_offset, size, __ATOMIC_RELAXED);
    if (over_limit(pt, off, size))
        return NULL;
    int err = posix_fallocate(pt->fd, (off_t)off, (off_t)size);
    if (err) {
        stop(pt, err == ENOSPC ? CT_STOP_DISK_FULL : CT_STOP_ERROR, "cannot grow the raw trace %s: %s", pt->path,
             strerror(err));
        return NULL;
    }
    struct ct_chunk *c = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, pt->fd, (off_t)off);
    if (c == MAP_FAILED) {
        stop(pt, CT_STOP_ERROR, "cannot map the raw trace: %s", strerror(errno));
        return NULL;
    }
    c->type = type;
    c->offset = off;
    ct_clock_pair(&c->ticks, &c->mono_ns);
    __atomic_store_n(&c->magic, CT_CHUNK_MAGIC, __ATOMIC_RELEASE);
    return c;
}

static CT_NOINST int give_rest(struct ct_chunk *c, char *at, uint32_t part) {
    for (int i = 0; i < REST_SLOTS; i++) {
        uint32_t free_ = 0;
        if (__atomic_load_n(&rest[i].state, __ATOMIC_RELAXED) == 0 &&
            __atomic_compare_exchange_n(&rest[i].state, &free_, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            rest[i].chunk = c;
            rest[i].at = at;
            rest[i].part = part;
            __atomic_store_n(&rest[i].state, 2, __ATOMIC_RELEASE);
            return 1;
        }
    }
    return 0;
}

static CT_NOINST struct ct_chunk *take_rest(uint32_t part, char **at) {
    for (int i = 0; i < REST_SLOTS; i++) {
        uint32_t full = 2;
        if (__atomic_load_n(&rest[i].state, __ATOMIC_RELAXED) != 2 ||
            !__atomic_compare_exchange_n(&rest[i].state, &full, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            continue;
        struct ct_chunk *c = rest[i].chunk;
        char *p = rest[i].at;
        uint32_t in = rest[i].part;
        __atomic_store_n(&rest[i].state, 0, __ATOMIC_RELEASE);
        if (in == part) {
            *at = p;
            return c;
        }
        ct_retire_chunk(c);   /* a finished part's */
    }
    return NULL;
}

/* Close the thread's segment: its length, then the flags that say it is final. */
static CT_NOINST uint64_t seal(struct ct_thread *t, uint32_t flags) {
    struct ct_seg *s = t->seg;
    if (!s)
        return 0;
    uint64_t words = (uint64_t)(t->cur - (uint64_t *)(s + 1));
    s->words = (uint32_t)words;
    __atomic_store_n(&s->flags, s->flags | CT_SEG_SEALED | flags, __ATOMIC_RELEASE);
    return words;
}

static CT_NOINST void start_segment(struct ct_thread *t, struct ct_chunk *c, char *at, uint32_t part) {
    struct ct_seg *s = (struct ct_seg *)at;
    s->tid = t->tid;
    s->words = 0;
    s->flags = t->seq ? 0 : CT_SEG_FIRST;
    s->ticks = ct_ticks();
    __atomic_store_n(&s->magic, CT_SEG_MAGIC, __ATOMIC_RELEASE);
    t->seq++;
    t->part = part;
    t->last = s->ticks;
    t->cur = (uint64_t *)(s + 1);
    /* Room for the longest single write (TIME + EXT + payload) past `end`. */
    t->end = (uint64_t *)((char *)c + ct_chunk_bytes) - 8;
    ct_recorded = 1;
    ct_barrier();
    t->seg = s;
    t->chunk = c;
    ct_barrier();
    /* What a signal handler counted while no chunk was published: taken with
     * an exchange after publishing, so no count falls between the two. */
    __atomic_add_fetch(&c->dropped, __atomic_exchange_n(&t->pend_dropped, 0, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    __atomic_add_fetch(&c->depth_limited, __atomic_exchange_n(&t->pend_limited, 0, __ATOMIC_RELAXED),
                       __ATOMIC_RELAXED);
}

/* The thread's chunk is full (or it has none): seal, then continue in the
 * rest of an ended thread's chunk, or in a new one. */
CT_NOINST uint64_t *ct_next_chunk(struct ct_thread *t) {
    if (t->failed)
        return NULL;
    if (!t->tid)
        t->tid = (int32_t)syscall(SYS_gettid);
    /* Unpublish before unmapping: a signal handler's hook that lands here
     * counts into the thread instead of a chunk that is going away. */
    struct ct_chunk *old = t->chunk;
    uint32_t old_part = t->part;
    uint64_t words = seal(t, 0);
    t->chunk = NULL;
    t->seg = NULL;
    t->cur = t->end = NULL;
    ct_barrier();
    if (old)
        ct_part_sealed(old_part, words);   /* may start the next part first */
    struct ct_part *pt = ct_part_hold();
    char *at = NULL;
    struct ct_chunk *c = pt->hdr ? take_rest(pt->index, &at) : NULL;
    if (!c && pt->hdr && (c = ct_take_chunk(pt)))
        at = (char *)c + CT_CHUNK_HEADER;
    if (!c) {
        t->failed = CT_THREAD_STOPPED;
        t->chunk = old;   /* kept mapped: it counts the calls lost from now on */
        ct_part_unhold();
        return NULL;
    }
    if (old)
        ct_retire_chunk(old);
    start_segment(t, c, at, pt->index);
    ct_part_unhold();
    return t->cur;
}

/* A call that could not be recorded. */
CT_NOINST void ct_count_lost(struct ct_thread *t) {
    if (t->chunk) {
        t->chunk->lost++;
        return;
    }
    struct ct_part *pt = ct_part_hold();
    if (pt->hdr)
        __atomic_add_fetch(&pt->hdr->lost_calls, 1, __ATOMIC_RELAXED);
    ct_part_unhold();
}

/* The file system gets back the pages of chunk `c` (of part `part`) from `at` on. */
CT_NOINST void ct_punch(struct ct_chunk *c, char *at, uint32_t part) {
    struct ct_part *pt = ct_part_hold();
    uint64_t page = ((uint64_t)(at - (char *)c) + 4095) & ~(uint64_t)4095, off = c->offset;
    if (pt->index == part && pt->hdr && page < ct_chunk_bytes)
        fallocate(pt->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(off + page),
                  (off_t)(ct_chunk_bytes - page));
    ct_part_unhold();
}

/* Give back what a chunk's last segment left unused: to the next thread, or
 * to the file system when no one will take it. */
static CT_NOINST void give_back(struct ct_chunk *c, char *at, uint32_t part) {
    char *end = (char *)c + ct_chunk_bytes;
    at = (char *)(((uintptr_t)at + 7) & ~(uintptr_t)7);
    if (end - at >= CT_REST_MIN && part == ct_part() && give_rest(c, at, part))
        return;
    ct_punch(c, at, part);
    ct_retire_chunk(c);
}

/* At exit: space claimed ahead and never written goes back to the file system. */
CT_NOINST void ct_chunks_trim(void) {
    char *at;
    struct ct_chunk *c;
    uint32_t part = ct_part();
    while ((c = take_rest(part, &at))) {
        ct_punch(c, at, part);
        ct_unmap_chunk(c);
    }
    ct_pool_trim();
}

/* The thread ends (or, after fork, the chunk is the parent's: only unmap). */
CT_NOINST void ct_release_chunk(struct ct_thread *t, int how) {
    struct ct_chunk *c = t->chunk;
    uint64_t *cur = t->cur;
    uint32_t part = t->part;
    uint64_t words = how == CT_RELEASE_ENDED ? seal(t, CT_SEG_ENDED) : 0;
    int open = t->seg != NULL;
    t->chunk = NULL;
    t->seg = NULL;
    t->cur = t->end = NULL;
    ct_barrier();
    if (!c)
        return;
    if (how == CT_RELEASE_FORGET) {
        munmap(c, ct_chunk_bytes);
        return;
    }
    if (open)
        give_back(c, (char *)cur, part);
    else
        ct_retire_chunk(c);
    ct_part_sealed(part, words);
}

/* A thread still writing into a finished part moves to the current one. */
CT_NOINST void ct_part_sync(struct ct_thread *t) {
    if (t->chunk && t->seg && t->part != ct_part() && !t->busy) {
        seal(t, 0);
        struct ct_chunk *c = t->chunk;
        t->chunk = NULL;
        t->seg = NULL;
        t->cur = t->end = NULL;
        ct_barrier();
        ct_retire_chunk(c);
        t->seq = 0;
    }
}

/* After fork: the slots map the parent's file. */
CT_NOINST void ct_chunks_reset(void) {
    for (int i = 0; i < REST_SLOTS; i++) {
        if (rest[i].state == 2)
            munmap(rest[i].chunk, ct_chunk_bytes);
        rest[i].state = 0;
    }
    ct_stopped = CT_STOP_NONE;
    claimed = 0;
}
