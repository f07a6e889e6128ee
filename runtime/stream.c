/* The raw file: a 4 KiB header, then fixed-size chunks claimed with one
 * atomic add. Each thread writes events into its own chunk through a
 * MAP_SHARED mapping, so everything stored is in the page cache the moment
 * it is written and survives any death of the process. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "ct.h"

/* One raw file. With rolling output a process writes a series of them
 * (parts); `current` is swapped in one store so that a claim never pairs
 * one part's header with another part's file. */
struct part {
    int pfd;
    struct ct_header *phdr;
    uint32_t index;
    char ppath[PATH_MAX];
};
static struct part none = {.pfd = -1};
static struct part *volatile current = &none;
static struct part *older[2];           /* kept open a while for late claims */
#define fd (current->pfd)
#define hdr (current->phdr)
#define raw_path (current->ppath)
size_t ct_chunk_bytes;
volatile int ct_recorded;              /* a thread has had an event chunk */
static struct ct_chunk *meta;          /* current META chunk */
static size_t meta_used;
static volatile int32_t meta_lock;      /* ct_lock: its holder's thread id */
static char sticky[1 << 16];           /* META records every part repeats */
static size_t sticky_used;
static uint64_t part_limit;            /* event chunks per part; 0: no parts */
static volatile uint64_t part_chunks;
static volatile int roll_lock;

/* Code that reads `current` and then uses that part (a claim makes system
 * calls on its file) holds it: roll() frees a finished part only while no
 * one holds one, else at a later roll. (A claim preempted across two rolls
 * used to find its part unmapped and its descriptor reused.) */
static volatile uint32_t holders;
#define GRAVE 16
static struct part *grave[GRAVE];      /* finished parts waiting to be freed */
static int ngrave;

static inline CT_NOINST struct part *hold(void) {
    __atomic_add_fetch(&holders, 1, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&current, __ATOMIC_SEQ_CST);
}

static inline CT_NOINST void unhold(void) { __atomic_sub_fetch(&holders, 1, __ATOMIC_SEQ_CST); }

static CT_NOINST void free_part(struct part *pt) {
    if (!pt || pt == &none)
        return;
    if (pt->phdr)
        munmap(pt->phdr, CT_HEADER_SIZE);
    if (pt->pfd >= 0)
        close(pt->pfd);
    munmap(pt, sizeof *pt);
}

CT_NOINST struct ct_header *ct_header(void) { return hdr; }
CT_NOINST const char *ct_raw_path(void) { return raw_path; }

CT_NOINST uint32_t ct_part(void) {
    uint32_t index = hold()->index;
    unhold();
    return index;
}

/* Claim the next chunk of a part's file and map it (no header written yet). */
static CT_NOINST void *claim_in(struct part *pt) {
    if (!pt->phdr)
        return NULL;
    size_t size = pt->phdr->chunk_size;
    uint64_t off = __atomic_fetch_add(&pt->phdr->next_offset, size, __ATOMIC_RELAXED);
    /* Extend with a write of the last byte, never ftruncate: two threads
     * extending at once can only grow the file this way. */
    char zero = 0;
    struct rlimit lim;
    /* Past RLIMIT_FSIZE a write raises SIGXFSZ, which would kill the program. */
    if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && off + size > lim.rlim_cur) {
        ct_warn("the raw trace %s reached the file size limit (ulimit -f); recording stops here", pt->ppath);
        return NULL;
    }
    if (pwrite(pt->pfd, &zero, 1, (off_t)(off + size - 1)) != 1) {
        ct_warn("cannot grow the raw trace %s: %s; recording stops here", pt->ppath, strerror(errno));
        return NULL;
    }
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, pt->pfd, (off_t)off);
    if (m == MAP_FAILED) {
        ct_warn("cannot map the raw trace: %s; recording stops here", strerror(errno));
        return NULL;
    }
    return m;
}

static void roll(void);

/* A chunk of the current part, and which part. */
CT_NOINST void *ct_claim(uint32_t *index) {
    struct part *pt = hold();
    *index = pt->index;
    void *m = claim_in(pt);
    unhold();
    return m;
}

static CT_NOINST void *claim_chunk(void) {
    uint32_t index;
    return ct_claim(&index);
}

static CT_NOINST void *map_chunk(uint32_t type, int32_t tid, uint64_t seq, uint32_t depth) {
    void *m = type == CT_CHUNK_EVENTS ? ct_take_chunk() : claim_chunk();
    if (!m)
        return NULL;
    struct ct_chunk *c = m;
    c->type = type;
    c->tid = tid;
    c->seq = seq;
    c->start_depth = depth;
    c->ticks = ct_ticks();
    c->mono_ns = ct_mono_ns();
    __atomic_store_n(&c->magic, CT_CHUNK_MAGIC, __ATOMIC_RELEASE);
    return m;
}

CT_NOINST uint64_t *ct_next_chunk(struct ct_thread *t) {
    struct part *pt = hold();
    if (!pt->phdr || t->failed) {
        unhold();
        return NULL;   /* `on` stays set: every call comes here and is counted lost */
    }
    if (!t->tid)
        t->tid = (int32_t)syscall(SYS_gettid);
    /* Unpublish before unmapping: a signal handler's hook that lands here
     * counts into the thread instead of a chunk that is going away. */
    struct ct_chunk *old = t->chunk;
    t->chunk = NULL;
    ct_barrier();
    if (old)
        ct_retire_chunk(old, ct_chunk_bytes);
    struct ct_chunk *c = map_chunk(CT_CHUNK_EVENTS, t->tid, t->seq, t->depth);
    if (!c) {
        t->failed = 1;
        t->cur = t->end = NULL;
        unhold();
        return NULL;
    }
    t->seq++;
    ct_recorded = 1;
    ct_barrier();
    t->chunk = c;
    ct_barrier();
    /* What a signal handler counted while no chunk was mapped: taken with an
     * exchange after publishing, so no count falls between the two. */
    __atomic_add_fetch(&c->dropped, __atomic_exchange_n(&t->pend_dropped, 0, __ATOMIC_RELAXED),
                       __ATOMIC_RELAXED);
    __atomic_add_fetch(&c->depth_limited, __atomic_exchange_n(&t->pend_limited, 0, __ATOMIC_RELAXED),
                       __ATOMIC_RELAXED);
    t->part = pt->index;
    t->cur = (uint64_t *)((char *)c + CT_CHUNK_HEADER);
    /* Room for the longest single write (TIME + EXT + payload) past `end`. */
    t->end = (uint64_t *)((char *)c + ct_chunk_bytes) - 8;
    t->last = 0;
    unhold();
    if (part_limit && __atomic_add_fetch(&part_chunks, 1, __ATOMIC_RELAXED) >= part_limit)
        roll();
    return t->cur;
}

/* A thread still writing into a finished part moves to the current one. */
CT_NOINST void ct_part_sync(struct ct_thread *t) {
    if (t->chunk && t->part != ct_part() && !t->busy) {
        ct_retire_chunk(t->chunk, ct_chunk_bytes);
        t->chunk = NULL;
        t->cur = t->end = NULL;
        t->seq = 0;
    }
}

CT_NOINST void ct_release_chunk(struct ct_thread *t) {
    struct ct_chunk *old = t->chunk;
    t->chunk = NULL;
    t->cur = t->end = NULL;
    ct_barrier();
    struct part *pt = hold();
    if (old && pt->phdr)
        munmap(old, ct_chunk_bytes);
    if (t->lost && pt->phdr) {
        __atomic_add_fetch(&pt->phdr->lost_calls, t->lost, __ATOMIC_RELAXED);
        t->lost = 0;
    }
    unhold();
}

static CT_NOINST void meta_write(uint32_t key, const void *data, size_t len);

/* META records come from start-up, dlopen and exit, never the hot path.
 * Those that describe the process, not the moment, are kept to be repeated
 * at the start of every part. */
CT_NOINST void ct_meta(uint32_t key, const void *data, size_t len) {
    if (key != CT_META_THREAD && sticky_used + 8 + len <= sizeof sticky) {
        memcpy(sticky + sticky_used, &key, 4);
        memcpy(sticky + sticky_used + 4, &(uint32_t){(uint32_t)len}, 4);
        memcpy(sticky + sticky_used + 8, data, len);
        sticky_used += 8 + len;
    }
    meta_write(key, data, len);
}

static CT_NOINST void sticky_replay(void) {
    for (size_t pos = 0; pos + 8 <= sticky_used;) {
        uint32_t key, len;
        memcpy(&key, sticky + pos, 4);
        memcpy(&len, sticky + pos + 4, 4);
        meta_write(key, sticky + pos + 8, len);
        pos += 8 + len;
    }
}

static CT_NOINST void meta_write(uint32_t key, const void *data, size_t len) {
    struct part *pt = hold();
    int recording = pt->phdr != NULL;
    unhold();
    size_t need = 8 + ((len + 7) & ~(size_t)7);
    size_t room = ct_chunk_bytes - CT_CHUNK_HEADER;
    if (!recording || need > room)
        return;
    if (!ct_lock(&meta_lock))
        return;   /* a signal handler interrupted this thread's own META write */
    if (!meta || meta_used + need > room) {
        if (meta)
            munmap(meta, ct_chunk_bytes);
        meta = map_chunk(CT_CHUNK_META, 0, 0, 0);
        meta_used = 0;
    }
    if (meta) {
        char *p = (char *)meta + CT_CHUNK_HEADER + meta_used;
        memcpy(p + 8, data, len);
        memcpy(p + 4, &(uint32_t){(uint32_t)len}, 4);
        __atomic_store_n((uint32_t *)p, key, __ATOMIC_RELEASE);
        meta_used += need;
    }
    ct_unlock(&meta_lock);
}

/* One MODULE record per loaded object with code: "bias lo hi path". */
static CT_NOINST int module_cb(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    (void)arg;
    char path[PATH_MAX];
    const char *name = info->dlpi_name;
    if (!name || !*name) {
        if (ct_exe_path(path, sizeof path) < 0)
            return 0;
        name = path;
    }
    if (name[0] != '/')
        return 0;   /* the vDSO and friends: no file to read symbols from */
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            uint64_t a = info->dlpi_addr + ph->p_vaddr;
            if (a < lo)
                lo = a;
            if (a + ph->p_memsz > hi)
                hi = a + ph->p_memsz;
        }
    }
    if (hi == 0)
        return 0;
    char line[PATH_MAX + 64];
    int n = snprintf(line, sizeof line, "%llx %llx %llx %s", (unsigned long long)info->dlpi_addr,
                     (unsigned long long)lo, (unsigned long long)hi, name);
    if (n > 0)
        ct_meta(CT_META_MODULE, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    return 0;
}

CT_NOINST void ct_meta_modules(void) { dl_iterate_phdr(module_cb, NULL); }

static CT_NOINST void meta_file(uint32_t key, const char *path) {
    char buf[65536];
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return;
    ssize_t n = read(f, buf, sizeof buf);
    close(f);
    if (n > 0)
        ct_meta(key, buf, (size_t)n);
}

/* Create a raw file: O_EXCL|O_NOFOLLOW so a file or symlink already there is
 * never written through; mode 0666 minus the user's umask. Part 0 is the
 * only file without rolling output; parts are numbered from 1. */
static CT_NOINST struct part *open_part(uint32_t index) {
    struct part *pt = mmap(NULL, sizeof *pt, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pt == MAP_FAILED)
        return NULL;
    pt->index = index;
    pt->pfd = -1;
    pid_t pid = getpid();
    char part[24] = "";
    if (index)
        snprintf(part, sizeof part, ".p%05u", index);
    /* A process that exec()s keeps its pid: number the later images. */
    for (int i = 0; i < 1000; i++) {
        char seq[16] = "";
        if (i)
            snprintf(seq, sizeof seq, "-%d", i);
        int n;
        if (ct_cfg.bare)
            n = snprintf(pt->ppath, sizeof pt->ppath, "%s.%d%s%s.raw", ct_cfg.output, (int)pid, seq, part);
        else
            n = snprintf(pt->ppath, sizeof pt->ppath, "%s/%d%s%s.raw", ct_cfg.raw_dir, (int)pid, seq, part);
        if (n <= 0 || n >= (int)sizeof pt->ppath)
            break;
        pt->pfd = open(pt->ppath, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (pt->pfd >= 0 || errno != EEXIST)
            break;
    }
    if (pt->pfd < 0) {
        ct_warn("cannot create %s: %s; this run is not traced", pt->ppath, strerror(errno));
        munmap(pt, sizeof *pt);
        return NULL;
    }
    if (ftruncate(pt->pfd, CT_HEADER_SIZE) < 0 ||
        (pt->phdr = mmap(NULL, CT_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, pt->pfd, 0)) == MAP_FAILED) {
        ct_warn("cannot write %s: %s; this run is not traced", pt->ppath, strerror(errno));
        close(pt->pfd);
        munmap(pt, sizeof *pt);
        return NULL;
    }
    return pt;
}

static CT_NOINST void sticky_replay(void);

/* Rolling output: every `part_limit` event chunks all threads move to a new
 * file, and the finished one is converted while the program runs. Threads
 * notice through the epoch at their next call (ct_thread_sync). */
static CT_NOINST void roll(void) {
    if (__atomic_exchange_n(&roll_lock, 1, __ATOMIC_ACQUIRE))
        return;
    struct part *old = current;
    struct part *pt = open_part(old->index + 1);
    if (!pt) {
        __atomic_store_n(&roll_lock, 0, __ATOMIC_RELEASE);
        return;
    }
    memcpy(pt->phdr, old->phdr, sizeof *pt->phdr);   /* same clock and time base */
    pt->phdr->part = pt->index;
    pt->phdr->next_offset = CT_HEADER_SIZE;
    pt->phdr->end_state = CT_END_RUNNING;
    if (!ct_lock(&meta_lock)) {
        /* A signal handler's calls filled a chunk while this thread was
         * writing META: roll at a later chunk. */
        unlink(pt->ppath);
        free_part(pt);
        __atomic_store_n(&roll_lock, 0, __ATOMIC_RELEASE);
        return;
    }
    if (meta)
        munmap(meta, ct_chunk_bytes);
    meta = NULL;
    meta_used = 0;
    __atomic_store_n(&current, pt, __ATOMIC_RELEASE);
    ct_unlock(&meta_lock);
    sticky_replay();
    part_chunks = 0;
    old->phdr->end_ticks = ct_ticks();
    old->phdr->end_mono_ns = ct_mono_ns();
    /* The last two parts stay open for threads still finishing a chunk in
     * them; older ones are freed once no claim holds a part. */
    struct part *gone = older[1];
    older[1] = older[0];
    older[0] = old;
    if (gone && ngrave < GRAVE)
        grave[ngrave++] = gone;
    else if (gone)
        ct_log("part %u left open: claims kept running through every roll", gone->index);
    if (!__atomic_load_n(&holders, __ATOMIC_SEQ_CST)) {
        for (int i = 0; i < ngrave; i++)
            free_part(grave[i]);
        ngrave = 0;
    }
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
    ct_log("part %u finished (%s); now writing %s", old->index, old->ppath, pt->ppath);
    ct_part_finished(old->ppath);
    __atomic_store_n(&roll_lock, 0, __ATOMIC_RELEASE);
}

CT_NOINST int ct_stream_open(pid_t ppid) {
    pid_t pid = getpid();
    uint64_t per_chunk = (ct_cfg.chunk_size - CT_CHUNK_HEADER) / 16;
    part_limit = ct_cfg.flush_interval ? (ct_cfg.flush_interval + per_chunk - 1) / per_chunk : 0;
    part_chunks = 0;
    sticky_used = 0;
    older[0] = older[1] = NULL;
    holders = 0;       /* after fork(): the threads that held a part are gone */
    ngrave = 0;
    struct part *pt = open_part(part_limit ? 1 : 0);
    if (!pt)
        return -1;
    struct ct_header *h = pt->phdr;
    h->version = CT_VERSION;
    h->header_size = CT_HEADER_SIZE;
    h->chunk_size = (uint32_t)ct_cfg.chunk_size;
    ct_chunk_bytes = ct_cfg.chunk_size;
    h->pid = (int32_t)pid;
    h->ppid = (int32_t)ppid;
    h->main_tid = (int32_t)syscall(SYS_gettid);
    h->max_depth = ct_cfg.max_depth;
    h->flags = (ct_cfg.capture_args ? CT_FLAG_CAPTURE_ARGS : 0) | (ct_cfg.pretty ? CT_FLAG_PRETTY : 0) |
               (ct_cfg.start_off ? CT_FLAG_START_OFF : 0) | (ct_cfg.bare ? CT_FLAG_BARE : 0);
    h->next_offset = CT_HEADER_SIZE;
    h->part = pt->index;
    h->keep = ct_cfg.rolling ? (uint32_t)ct_cfg.keep : 0;
    h->interval_calls = ct_cfg.flush_interval;
    ct_clock_init(h);
    memcpy(h->magic, CT_MAGIC, 8);
    meta = NULL;
    meta_used = 0;
    __atomic_store_n(&current, pt, __ATOMIC_RELEASE);
    char exe[PATH_MAX];
    int e = ct_exe_path(exe, sizeof exe);
    if (e > 0)
        ct_meta(CT_META_EXE, exe, (size_t)e);
    meta_file(CT_META_CMDLINE, "/proc/self/cmdline");
    ct_meta(CT_META_OUTPUT, ct_cfg.output, strlen(ct_cfg.output));
    ct_meta_modules();
    ct_log("recording to %s (clock %s, %.4f ns/tick)", raw_path, h->clock == CT_CLOCK_TSC ? "tsc" : "monotonic",
           h->ns_per_tick);
    return 0;
}

/* fork(): the META lock is held across it (pthread_atfork), so a child never
 * inherits it from a thread it does not have. 0: this thread holds it already
 * (fork from a signal handler that interrupted a META write). */
CT_NOINST int ct_stream_prefork(void) { return ct_lock(&meta_lock); }
CT_NOINST void ct_stream_postfork(int child) {
    ct_unlock(&meta_lock);
    if (child)
        __atomic_store_n(&roll_lock, 0, __ATOMIC_RELEASE);   /* no roll runs in the child */
}

/* After fork() the child must not touch the parent's files or mappings. */
CT_NOINST void ct_stream_close(void) {
    if (hdr)
        ct_pool_reset(hdr->chunk_size);
    if (meta && hdr)
        munmap(meta, hdr->chunk_size);
    meta = NULL;
    free_part(current);
    free_part(older[0]);
    free_part(older[1]);
    for (int i = 0; i < ngrave; i++)
        free_part(grave[i]);
    older[0] = older[1] = NULL;
    ngrave = 0;
    __atomic_store_n(&current, &none, __ATOMIC_RELEASE);
}
