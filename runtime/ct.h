/* calltrace runtime: internal declarations shared by the runtime's files.
 *
 * The raw stream written here is described in docs/FORMAT.md ("The raw
 * stream"); calltrace/record/raw.py and convert.c read it. calltrace/bridge.py
 * mirrors the structs; tests/test_bridge.py fails when the two disagree.
 * Everything is hidden except the two -finstrument-functions hooks, the
 * libc entry points interposed in lifecycle.c and the ct_conv_* API. */
#ifndef CT_H
#define CT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CT_HIDDEN __attribute__((visibility("hidden")))
#define CT_EXPORT __attribute__((visibility("default")))
#define CT_NOINST __attribute__((no_instrument_function))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define ct_barrier() __asm__ __volatile__("" ::: "memory")
#define CT_XSTR(x) #x
#define CT_STR(x) CT_XSTR(x)

/* ---- raw file layout ---------------------------------------------------- */
#define CT_MAGIC "CTRAW02"          /* 8 bytes with the NUL */
#define CT_VERSION 2
#define CT_HEADER_SIZE 4096
#define CT_CHUNK_MAGIC 0x48435443u   /* "CTCH" */
#define CT_CHUNK_HEADER 64
#define CT_SEG_MAGIC 0x47535443u     /* "CTSG" */
#define CT_SEG_HEADER 24

enum { CT_CHUNK_EVENTS = 1, CT_CHUNK_META = 2 };

/* An event is one little-endian u64; the top two bits say which kind.
 *   ENTER/EXIT: kind:2 | address:47 | ticks since the thread's previous event:15
 *   TIME:       kind:2 | absolute ticks:62   (precedes an event whose delta overflows)
 *   EXT:        kind:2 | subtype:8 | payload words:16 | value:38, then the payload
 * A zero word ends a chunk's events (an ENTER always has a non-zero address). */
enum { CT_EV_ENTER = 0, CT_EV_EXIT = 1, CT_EV_TIME = 2, CT_EV_EXT = 3 };
enum { CT_EXT_PAUSE = 1, CT_EXT_RESUME = 2, CT_EXT_ARGS = 3, CT_EXT_THREAD_END = 4, CT_EXT_UNWIND = 5,
       CT_EXT_ATTACH = 6 };
/* ATTACH (calltrace attach): frames a thread was already in when recording
 * began, outermost first; value: the first one's depth; payload: addresses. */
/* UNWIND: frames at run-time depth >= value were left without returning
 * (longjmp, pthread_exit); the converter closes them as "unwound" there. */
#define CT_ADDR_BITS 47
#define CT_DELTA_BITS 15
#define CT_DELTA_MASK ((1ull << CT_DELTA_BITS) - 1)
#define CT_ADDR_MASK ((1ull << CT_ADDR_BITS) - 1)
#define CT_TIME_MASK ((1ull << 62) - 1)
#define CT_EXT_WORD(sub, words, value) \
    ((3ull << 62) | ((uint64_t)(sub) << 54) | ((uint64_t)(words) << 38) | ((uint64_t)(value) & ((1ull << 38) - 1)))

/* META chunks hold records: u32 key, u32 length, bytes, padded to 8. */
enum { CT_META_EXE = 1, CT_META_CMDLINE = 2, CT_META_MODULE = 3, CT_META_THREAD = 4, CT_META_OUTPUT = 5,
       CT_META_OPTION = 6 /* "name=value" */,
       CT_META_SCAN = 7 /* "ticks": the MODULE records up to the next SCAN are every module then */ };

enum { CT_CLOCK_TSC = 0, CT_CLOCK_MONOTONIC = 1 };
/* Why recording stopped before the program ended (ct_header.stop_reason). */
enum { CT_STOP_NONE = 0, CT_STOP_FSIZE = 1, CT_STOP_DISK_FULL = 2, CT_STOP_MAX_SIZE = 3, CT_STOP_MIN_FREE = 4,
       CT_STOP_ERROR = 5 };
enum { CT_END_RUNNING = 0, CT_END_EXIT = 1, CT_END_SIGNAL = 2, CT_END_EXEC = 3, CT_END_DETACH = 4 };
enum { CT_FLAG_CAPTURE_ARGS = 1, CT_FLAG_PRETTY = 2, CT_FLAG_START_OFF = 4, CT_FLAG_BARE = 8 };

struct ct_header {
    char magic[8];
    uint32_t version, header_size;
    uint32_t chunk_size, clock;
    int32_t pid, ppid;              /* ppid: the traced parent for a forked child, else 0 */
    uint64_t start_ticks, start_mono_ns, start_real_ns;
    double ns_per_tick;             /* measured at start-up */
    uint32_t max_depth, flags;
    uint64_t next_offset;           /* allocation cursor: where the next chunk goes */
    uint32_t end_state;
    int32_t exit_code, end_signal, main_tid;
    uint64_t end_ticks, end_mono_ns;
    uint32_t part, keep;            /* rolling output: this part's number (0: no parts), how many to keep */
    uint64_t interval_calls;        /* calls per part */
    uint64_t lost_calls;            /* calls not recorded by threads that had no chunk when recording stopped */
    uint32_t stop_reason;           /* CT_STOP_*: recording stopped early */
    uint32_t dropped_parts;         /* rolling, bare LD_PRELOAD: older parts deleted unconverted */
    uint64_t max_size;              /* the raw data budget in bytes (0: none) */
};

/* A chunk is a window of the file that threads write in turn: it starts with
 * this header and holds segments, each the events of one thread. A thread
 * that ends hands the rest of its chunk to the next thread that needs one. */
struct ct_chunk {
    uint32_t magic, type;
    uint64_t lost;                  /* calls not recorded after recording stopped */
    uint64_t offset;                /* this chunk's offset in the file */
    uint64_t ticks, mono_ns;        /* a calibration point taken when it was claimed */
    uint64_t depth_limited, dropped;
    uint64_t filtered;              /* calls shorter than the threshold, removed */
};

/* A run of one thread's events in a chunk. `words` is set when the thread
 * leaves the segment (SEALED); a segment never sealed (the process died)
 * runs to its first zero word and is the chunk's last. */
/* The least room left in a chunk that another thread is given (chunks.c):
 * with less, no segment follows the last one (live.c stops looking). */
#define CT_REST_MIN 1024
enum { CT_SEG_FIRST = 1, CT_SEG_SEALED = 2, CT_SEG_ENDED = 4 };
struct ct_seg {
    uint32_t magic, flags;          /* FIRST: the thread's first segment in this file */
    int32_t tid;
    uint32_t words;
    uint64_t ticks;                 /* when it began: the time base of its first event */
};

/* ---- runtime state ------------------------------------------------------ */
struct ct_thread {
    uint64_t *cur, *end;            /* end: where the chunk switch is due (room for the longest write past it) */
    uint64_t last;
    uint32_t depth, epoch;
    uint32_t on, busy;
    struct ct_chunk *chunk;         /* the chunk it writes in (its counters), NULL when none */
    struct ct_seg *seg;             /* its open segment there */
    uint64_t seq;                   /* segments started in this file */
    int32_t tid;
    uint32_t failed;                /* CT_THREAD_STOPPED, CT_THREAD_ENDED */
    uint32_t fstate, fdepth, xdepth; /* filter.c: inside an included/excluded subtree, from depth */
    uint32_t part;                  /* the rolling part its chunk belongs to */
    uint64_t pend_dropped, pend_limited;  /* counted while no chunk was mapped */
};

enum { CT_THREAD_STOPPED = 1 /* no space: its calls are counted lost */, CT_THREAD_ENDED = 2 };
extern __thread struct ct_thread ct_tls __attribute__((tls_model("initial-exec"))) CT_HIDDEN;
extern volatile uint32_t ct_epoch CT_HIDDEN;      /* bumped to make threads re-sync */
extern volatile uint32_t ct_recording CT_HIDDEN;  /* toggled at run time */
extern uint32_t ct_max_depth CT_HIDDEN;
extern uint64_t ct_threshold_ticks CT_HIDDEN;   /* 0: keep every call */
extern uint32_t ct_filter_mode CT_HIDDEN;       /* CT_FILTER_* bits, 0: no filter */
extern uint32_t ct_exit_slow CT_HIDDEN;         /* ct_filter_mode || ct_threshold_ticks */
enum { CT_FILTER_SUBTREE = 1, CT_FILTER_ONLY = 2, CT_FILTER_EXCLUDE = 4, CT_FILTER_ALL = 7 };
extern int ct_use_tsc CT_HIDDEN;

struct ct_config {
    char output[4096];
    char raw_dir[4096];
    uint32_t max_depth;
    int pretty, debug, capture_args, start_off, bare, to_null, descendant;
    int toggle_signal;
    uint64_t threshold_ns;
    uint64_t flush_interval;        /* calls per part; 0: one trace */
    int rolling, keep;
    size_t chunk_size;
    uint64_t max_size;              /* CALLTRACE_MAX_SIZE: raw data budget in bytes; 0: none */
    uint64_t min_free;              /* CALLTRACE_MIN_FREE: bytes to leave free on the file system */
    uint32_t min_free_pct;          /* ... or a percentage of it (the smaller wins); both 0: no check */
};
extern struct ct_config ct_cfg CT_HIDDEN;

/* clock.c */
CT_HIDDEN uint64_t ct_ticks_slow(void);
CT_HIDDEN uint64_t ct_mono_ns(void);
CT_HIDDEN void ct_clock_init(struct ct_header *h);
CT_HIDDEN void ct_clock_pair(uint64_t *ticks, uint64_t *ns);   /* read close together */

#if defined(__x86_64__)
static inline CT_NOINST uint64_t ct_rdtsc(void) {
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static inline CT_NOINST uint64_t ct_ticks(void) {
#if defined(__x86_64__)
    if (likely(ct_use_tsc))
        return ct_rdtsc();
#endif
    return ct_ticks_slow();
}

/* config.c */
CT_HIDDEN void ct_config_read(void);
CT_HIDDEN void ct_config_late(void);
CT_HIDDEN const char *const *ct_config_env(void);   /* the CALLTRACE_* settings at start-up */   /* once libc is set up (environ borrowed at .preinit_array) */
CT_HIDDEN void ct_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
CT_HIDDEN void ct_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* stream.c: opening and closing the raw stream */
CT_HIDDEN int ct_stream_open(pid_t ppid);
CT_HIDDEN void ct_stream_close(void);
CT_HIDDEN struct ct_header *ct_header(void);
CT_HIDDEN const char *ct_raw_path(void);

/* parts.c: the raw files (one, or rolling parts) and which one is current */
struct ct_part {
    int fd;
    struct ct_header *hdr;
    uint32_t index;                 /* 0: the only file; rolling parts count from 1 */
    volatile uint64_t words;        /* event words sealed in it (rolling: when to roll) */
    char path[4096];
};
CT_HIDDEN struct ct_part *ct_part_open(uint32_t index);
CT_HIDDEN struct ct_part *ct_part_hold(void);   /* the current part, kept open until ct_part_unhold */
CT_HIDDEN void ct_part_unhold(void);
CT_HIDDEN void ct_part_set(struct ct_part *pt);
CT_HIDDEN uint32_t ct_part(void);
CT_HIDDEN void ct_part_sealed(uint32_t index, uint64_t words);   /* may start the next part */
CT_HIDDEN void ct_parts_reset(void);
CT_HIDDEN void ct_parts_close(void);
CT_HIDDEN int ct_parts_pending(const char **raws, int cap);       /* finished parts not yet converted */

/* chunks.c: claiming file space, segments, the pool of partly used chunks */
extern size_t ct_chunk_bytes CT_HIDDEN;
extern volatile int ct_recorded CT_HIDDEN;
extern volatile uint32_t ct_stopped CT_HIDDEN;    /* CT_STOP_*: no more space is claimed */
CT_HIDDEN void *ct_claim(struct ct_part *pt, uint32_t type);
CT_HIDDEN uint64_t *ct_next_chunk(struct ct_thread *t);
enum { CT_RELEASE_ENDED = 0, CT_RELEASE_FORGET = 1 };   /* thread end; after fork (the parent's) */
CT_HIDDEN void ct_release_chunk(struct ct_thread *t, int how);
CT_HIDDEN void ct_count_lost(struct ct_thread *t);
CT_HIDDEN void ct_part_sync(struct ct_thread *t);
CT_HIDDEN void ct_chunks_reset(void);
CT_HIDDEN void ct_unmap_chunk(void *m);
CT_HIDDEN void ct_punch(struct ct_chunk *c, char *at, uint32_t part);
CT_HIDDEN void ct_chunks_trim(void);   /* at exit: unused space back to the file system */

/* meta.c: META records and the module list */
CT_HIDDEN void ct_meta(uint32_t key, const void *data, size_t len);
CT_HIDDEN void ct_meta_modules(void);
CT_HIDDEN void ct_meta_switch(struct ct_part *pt);   /* make `pt` current; repeat the process's records there */
CT_HIDDEN void ct_meta_reset(void);
CT_HIDDEN int ct_meta_prefork(void);   /* fork(): hold the META lock across it; 0: this thread holds it */
CT_HIDDEN void ct_meta_postfork(void);
CT_HIDDEN void ct_meta_start(void);      /* program, command line, output, modules */
CT_HIDDEN const char *ct_thread_default_name(void);

/* prefault.c: a helper thread faulting chunks in ahead, once the program has threads */
CT_HIDDEN void ct_prefault_start(void);
CT_HIDDEN void ct_retire_chunk(void *m);
CT_HIDDEN void ct_pool_reset(void);
CT_HIDDEN void ct_pool_trim(void);
CT_HIDDEN void *ct_take_chunk(struct ct_part *pt);

/* capture.c */
extern volatile uint32_t ct_capture_on CT_HIDDEN;
CT_HIDDEN int ct_capture_load(const char *path);   /* 0 loaded, 1 for another program, -1 error */
CT_HIDDEN void ct_capture_known(const char *path);   /* dlplan.c: a module a plan covers */
CT_HIDDEN void ct_capture_scan(void);                 /* dlplan.c: plan newly dlopen'ed libraries */
CT_HIDDEN long ct_capture_copy(const uint64_t *regs, uint64_t site, uint8_t *out, size_t room, uint32_t *index);

/* filter.c */
CT_HIDDEN int ct_filter_load(const char *path);   /* 0 loaded, 1 for another program, -1 error */
CT_HIDDEN void ct_filter_setup(void);
CT_HIDDEN int ct_filter_enter(struct ct_thread *t, void *fn, uint32_t d);
CT_HIDDEN int ct_filter_exit(struct ct_thread *t, void *fn, uint32_t d);

/* hooks.c */
CT_HIDDEN void ct_thread_sync(struct ct_thread *t, uint64_t where, void *fn);
CT_HIDDEN void ct_write_ext(struct ct_thread *t, uint32_t sub, uint64_t value);

/* proc.c */
CT_HIDDEN int ct_exe_path(char *buf, size_t size);
struct dl_phdr_info;
CT_HIDDEN int ct_module_path(const struct dl_phdr_info *info, char *buf, size_t size);   /* absolute; 0: no file */
CT_HIDDEN uint64_t ct_exe_bias(void);
CT_HIDDEN int ct_module_bias(uint32_t index, const char *path, uint64_t *bias);
CT_HIDDEN uint64_t ct_module_entry(const char *m, uint64_t at, uint64_t end, char *path);
CT_HIDDEN const char *ct_map_input(const char *path, const char *magic, size_t min_size, size_t *size,
                                   const char *what, const char *otherwise);
CT_HIDDEN int ct_each_task(int (*fn)(long tid, void *arg), void *arg);

/* interpose.c */
CT_HIDDEN void *ct_resolve(const char *name);   /* the next definition (libc's) */
CT_HIDDEN void ct_scan_modules(int force);      /* record modules dlopen'd since the last scan */
CT_HIDDEN int ct_vfork_child(void);             /* running in a vfork() child, on the parent's memory */

/* spawn.c, control.c */
CT_HIDDEN int ct_run_python(const char *a1, const char *a2, const char *a3, const char *a4, const char *a5);
CT_HIDDEN void ct_run_converter(void);
CT_HIDDEN void ct_find_site(void);
CT_HIDDEN const char *ct_lib_path(void);   /* this library's absolute path; "" if unknown */   /* where the calltrace package is, for the converter */
CT_HIDDEN int ct_convert_parts(const char *const *raws, int n);   /* detached; -1: one is still running */
CT_HIDDEN void ct_controls(void);
CT_HIDDEN void ct_on_toggle(int sig);
CT_HIDDEN void ct_load_plan(void);

/* attach.c */
CT_HIDDEN int ct_attach_late(void);   /* dlopen'ed by calltrace attach: no start-up init */
CT_HIDDEN const char *ct_env(const char *name);   /* a CALLTRACE_* setting */
CT_HIDDEN void ct_attach_sync(struct ct_thread *t, uint64_t where);

/* lifecycle.c */
/* The cold paths' lock (meta.c) holds its owner's thread id, so that a
 * thread that finds it its own (a fault inside the holder's section) can
 * leave the work undone rather than wait for itself. ct_trylock: 1 taken,
 * 0 this thread holds it, -1 another thread does. */
CT_HIDDEN int ct_trylock(volatile int32_t *lock);
CT_HIDDEN void ct_unlock(volatile int32_t *lock);
CT_HIDDEN void ct_thread_register(struct ct_thread *t);
CT_HIDDEN void ct_init(void);
CT_HIDDEN void ct_thread_names(void);   /* META_THREAD for every live thread */
/* A thread of the runtime's own: detached, 64 KiB of stack, every signal
 * blocked (the program's handlers never run on it). 0 when started. */
CT_HIDDEN int ct_start_thread(void *(*fn)(void *), void *arg, const char *name);
CT_HIDDEN void ct_finish(int state, int code, int sig);

#endif
