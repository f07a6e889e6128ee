/* The raw files of a process and which one is current: one file, or with
 * rolling output (CALLTRACE_FLUSH_INTERVAL) a series of parts, the finished
 * ones converted while the program runs.
 *
 * `current` is swapped in one store, so that a claim never pairs one part's
 * header with another part's file. Code that reads it and then makes system
 * calls on that part holds it (ct_part_hold): a finished part is freed only
 * while no one holds one. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "ct.h"

static struct ct_part none = {.fd = -1};
static struct ct_part *volatile current = &none;
static volatile uint32_t holders;
#define GRAVE 16
static struct ct_part *grave[GRAVE];    /* finished parts waiting to be freed */
static int ngrave;
static volatile int roll_lock;
static char prefix[4096];               /* the parts' names: PREFIX.pNNNNN.raw */
/* Bare LD_PRELOAD: finished parts from `conv_next` to `finished` wait for
 * the one converter this process runs at a time. */
static uint32_t conv_next, finished;

CT_NOINST struct ct_part *ct_part_hold(void) {
    __atomic_add_fetch(&holders, 1, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&current, __ATOMIC_SEQ_CST);
}

CT_NOINST void ct_part_unhold(void) { __atomic_sub_fetch(&holders, 1, __ATOMIC_SEQ_CST); }

CT_NOINST void ct_part_set(struct ct_part *pt) { __atomic_store_n(&current, pt, __ATOMIC_RELEASE); }

CT_NOINST uint32_t ct_part(void) { return __atomic_load_n(&current, __ATOMIC_ACQUIRE)->index; }

CT_NOINST struct ct_header *ct_header(void) { return current->hdr; }
CT_NOINST const char *ct_raw_path(void) { return current->path; }

static CT_NOINST void free_part(struct ct_part *pt) {
    if (!pt || pt == &none)
        return;
    if (pt->hdr)
        munmap(pt->hdr, CT_HEADER_SIZE);
    if (pt->fd >= 0)
        close(pt->fd);
    munmap(pt, sizeof *pt);
}

static CT_NOINST int part_path(char *out, size_t size, uint32_t index) {
    int n = snprintf(out, size, "%s.p%05u.raw", prefix, index);
    return n > 0 && (size_t)n < size ? 0 : -1;
}

/* Create a raw file: O_EXCL|O_NOFOLLOW so a file or symlink already there is
 * never written through; mode 0666 minus the user's umask. Its header's
 * blocks are reserved at once: a store into a hole of a full file system
 * would be a SIGBUS. Part 0 is the only file without rolling output. */
CT_NOINST struct ct_part *ct_part_open(uint32_t index) {
    struct ct_part *pt = mmap(NULL, sizeof *pt, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pt == MAP_FAILED)
        return NULL;
    pt->index = index;
    pt->fd = -1;
    if (index > 1) {
        if (part_path(pt->path, sizeof pt->path, index) == 0)
            pt->fd = open(pt->path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    } else {
        /* A process that exec()s keeps its pid: number the later images. */
        pid_t pid = getpid();
        for (int i = 0; i < 1000; i++) {
            char seq[16] = "";
            if (i)
                snprintf(seq, sizeof seq, "-%d", i);
            int n = ct_cfg.bare ? snprintf(prefix, sizeof prefix, "%s.%d%s", ct_cfg.output, (int)pid, seq)
                                : snprintf(prefix, sizeof prefix, "%s/%d%s", ct_cfg.raw_dir, (int)pid, seq);
            if (n <= 0 || n >= (int)sizeof prefix - 16)
                break;
            if (index)
                part_path(pt->path, sizeof pt->path, index);
            else
                snprintf(pt->path, sizeof pt->path, "%s.raw", prefix);
            pt->fd = open(pt->path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
            if (pt->fd >= 0 || errno != EEXIST)
                break;
        }
    }
    if (pt->fd >= 0 && pt->fd <= 2) {
        /* Never 0-2: in a program started with stdout closed, its output
         * would go into the trace (and the trace's bytes to its reader). */
        int high = fcntl(pt->fd, F_DUPFD_CLOEXEC, 3);
        close(pt->fd);
        pt->fd = high;
    }
    if (pt->fd < 0) {
        ct_warn("cannot create %s: %s; %s", pt->path, strerror(errno),
                index > 1 ? "recording stays in the current part" : "this run is not traced");
        munmap(pt, sizeof *pt);
        return NULL;
    }
    int err = posix_fallocate(pt->fd, 0, CT_HEADER_SIZE);
    if (err || (pt->hdr = mmap(NULL, CT_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, pt->fd, 0)) == MAP_FAILED) {
        ct_warn("cannot write %s: %s; this run is not traced", pt->path, strerror(err ? err : errno));
        close(pt->fd);
        unlink(pt->path);
        munmap(pt, sizeof *pt);
        return NULL;
    }
    return pt;
}

/* Bare LD_PRELOAD: hand the finished parts to a converter unless one is
 * still busy; with --rolling, parts older than the newest `keep` are
 * deleted unconverted (and counted) rather than pile up. */
static CT_NOINST void convert_finished(struct ct_part *now) {
    if (!ct_cfg.bare)
        return;
    if (ct_cfg.rolling && finished >= conv_next + (uint32_t)ct_cfg.keep) {
        char path[4096];
        for (; conv_next + (uint32_t)ct_cfg.keep <= finished; conv_next++)
            if (part_path(path, sizeof path, conv_next) == 0 && unlink(path) == 0)
                now->hdr->dropped_parts++;
    }
    const char *raws[64];
    int n = ct_parts_pending(raws, 64);
    if (n && ct_convert_parts(raws, n) == 0)
        conv_next += (uint32_t)n;
}

CT_NOINST int ct_parts_pending(const char **raws, int cap) {
    static char names[64][4096];
    int n = 0;
    if (!conv_next)
        conv_next = 1;
    for (uint32_t i = conv_next; i <= finished && n < cap && n < 64; i++)
        if (part_path(names[n], sizeof names[n], i) == 0)
            raws[n] = names[n], n++;
    return n;
}

/* Every `interval` calls (as sealed event words) all threads move to a new
 * part; threads notice through the epoch at their next call. */
static CT_NOINST void roll(void) {
    if (__atomic_exchange_n(&roll_lock, 1, __ATOMIC_ACQUIRE))
        return;
    struct ct_part *old = current;
    struct ct_part *pt = ct_stopped ? NULL : ct_part_open(old->index + 1);
    if (!pt) {
        __atomic_store_n(&roll_lock, 0, __ATOMIC_RELEASE);
        return;
    }
    memcpy(pt->hdr, old->hdr, sizeof *pt->hdr);   /* same clock and time base */
    pt->hdr->part = pt->index;
    pt->hdr->lost_calls = 0;
    pt->hdr->next_offset = CT_HEADER_SIZE;
    pt->hdr->end_state = CT_END_RUNNING;
    ct_meta_switch(pt);
    ct_clock_pair(&old->hdr->end_ticks, &old->hdr->end_mono_ns);
    ct_log("part %u finished (%s); now writing %s", old->index, old->path, pt->path);
    finished = old->index;
    if (ngrave < GRAVE)
        grave[ngrave++] = old;
    else
        ct_log("part %u left open: claims kept running through every roll", old->index);
    if (!__atomic_load_n(&holders, __ATOMIC_SEQ_CST)) {
        for (int i = 0; i < ngrave; i++)
            free_part(grave[i]);
        ngrave = 0;
    }
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
    convert_finished(pt);
    __atomic_store_n(&roll_lock, 0, __ATOMIC_RELEASE);
}

/* A segment of part `index` was sealed with `words` event words. */
CT_NOINST void ct_part_sealed(uint32_t index, uint64_t words) {
    struct ct_part *pt = current;
    if (!index || index != pt->index || !pt->hdr)
        return;
    uint64_t total = __atomic_add_fetch(&pt->words, words, __ATOMIC_RELAXED);
    uint64_t cap = ct_cfg.rolling && ct_cfg.max_size ? ct_cfg.max_size / (uint64_t)ct_cfg.keep : 0;
    if (total >= 2 * ct_cfg.flush_interval || (cap && pt->hdr->next_offset >= cap))
        roll();
}

CT_NOINST void ct_parts_reset(void) {
    holders = 0;       /* after fork(): the threads that held a part are gone */
    ngrave = 0;
    roll_lock = 0;
    conv_next = finished = 0;
}

/* After fork() the child must not touch the parent's files or mappings. */
CT_NOINST void ct_parts_close(void) {
    free_part(current);
    for (int i = 0; i < ngrave; i++)
        free_part(grave[i]);
    ngrave = 0;
    __atomic_store_n(&current, &none, __ATOMIC_RELEASE);
}
