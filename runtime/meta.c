/* META records: what describes the process rather than its calls (program,
 * command line, modules, thread names, options), in META chunks of the raw
 * file. They come from start-up, dlopen, thread ends and exit, never the hot
 * path. Those that describe the process, not the moment, are kept to be
 * repeated at the start of every rolling part. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "ct.h"

static struct ct_chunk *meta;          /* current META chunk */
static size_t meta_used;
static volatile int32_t meta_lock;     /* ct_trylock: its holder's thread id */
static int meta_stale;                 /* the part switched: the next record starts a chunk in it */
static char sticky[1 << 16];           /* META records every part repeats */
static size_t sticky_used;
static char default_name[32];          /* threads named like this get no THREAD record */

/* Signals are blocked while the lock is held (but for those the kernel
 * forces on a thread: faults, and SIGSYS from a seccomp filter), so a
 * signal handler's calls never find the lock held by their own thread: a
 * part switch in a handler that interrupted a META write would otherwise
 * have to leave out the records every part repeats. The handler runs a
 * moment later, when the lock is let go. Waiting for another thread's
 * section is done with the caller's own mask, so a signal still ends a
 * wait that never ends. */
enum { NOT_TAKEN, TAKEN, FORK_HELD };
static int fork_hold;                  /* held across fork() by ct_meta_prefork, not by a write */
static pid_t fork_pid;                 /* the process that forked */
static sigset_t fork_added;            /* the signals ct_meta_prefork blocked */

/* TAKEN: `added` holds the signals blocked here (unlock unblocks just
 * those, so what an atfork handler changed inside the section stays).
 * FORK_HELD: this thread holds it for fork() (an atfork handler of the
 * program's runs inside that hold when the runtime was loaded after it
 * registered, as by calltrace attach): it writes as the holder, nothing to
 * undo. NOT_TAKEN: this thread is inside a write (a fault there), or is a
 * child whose atfork handler has not run yet: the record is left out
 * rather than the thread waiting for itself or a thread it does not have. */
static CT_NOINST int lock(sigset_t *added) {
    sigset_t all, old;
    sigfillset(&all);
    static const int forced[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
    for (size_t i = 0; i < sizeof forced / sizeof *forced; i++)
        sigdelset(&all, forced[i]);
    for (;;) {
        pthread_sigmask(SIG_BLOCK, &all, &old);
        int r = ct_trylock(&meta_lock);
        if (r > 0) {
            sigemptyset(added);
            for (int sig = 1; sig < NSIG; sig++)
                if (sigismember(&all, sig) == 1 && sigismember(&old, sig) == 0)
                    sigaddset(added, sig);
            return TAKEN;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r == 0)
            return fork_hold ? FORK_HELD : NOT_TAKEN;
        if (fork_hold && getpid() != fork_pid)
            return NOT_TAKEN;   /* a child before our atfork handler: the stream is still the parent's */
        while (__atomic_load_n(&meta_lock, __ATOMIC_RELAXED))
            __builtin_ia32_pause();   /* another thread: its section is short and never waits on us */
    }
}

static CT_NOINST void unlock(const sigset_t *added) {
    ct_unlock(&meta_lock);
    pthread_sigmask(SIG_UNBLOCK, added, NULL);
}

/* Under the lock: one record into `pt`'s current META chunk (a new chunk
 * when there is none, it is full, or the part switched). */
static CT_NOINST void put_record(struct ct_part *pt, uint32_t key, const void *data, size_t len) {
    size_t need = 8 + ((len + 7) & ~(size_t)7);
    if (pt->hdr && (!meta || meta_stale || meta_used + need > ct_chunk_bytes - CT_CHUNK_HEADER)) {
        meta_stale = 0;
        if (meta)
            ct_unmap_chunk(meta);
        meta = ct_claim(pt, CT_CHUNK_META);
        meta_used = 0;
    }
    if (pt->hdr && meta) {
        char *p = (char *)meta + CT_CHUNK_HEADER + meta_used;
        memcpy(p + 8, data, len);
        memcpy(p + 4, &(uint32_t){(uint32_t)len}, 4);
        __atomic_store_n((uint32_t *)p, key, __ATOMIC_RELEASE);
        meta_used += need;
    }
}

/* `keep`: a record every part repeats, kept under the lock so that a part
 * switch in another thread repeats it exactly once. */
static CT_NOINST void meta_write(uint32_t key, const void *data, size_t len, int keep) {
    if (8 + ((len + 7) & ~(size_t)7) > ct_chunk_bytes - CT_CHUNK_HEADER)
        return;
    sigset_t added;
    int how = lock(&added);
    if (how == NOT_TAKEN)
        return;
    if (keep && sticky_used + 8 + len <= sizeof sticky) {
        memcpy(sticky + sticky_used, &key, 4);
        memcpy(sticky + sticky_used + 4, &(uint32_t){(uint32_t)len}, 4);
        memcpy(sticky + sticky_used + 8, data, len);
        sticky_used += 8 + len;
    }
    struct ct_part *pt = ct_part_hold();
    put_record(pt, key, data, len);
    ct_part_unhold();
    if (how == TAKEN)
        unlock(&added);
}

CT_NOINST void ct_meta(uint32_t key, const void *data, size_t len) {
    meta_write(key, data, len, key != CT_META_THREAD);
}

/* Rolling output: `pt` becomes current with a META chunk of its own, which
 * starts with the records every part repeats. */
CT_NOINST void ct_meta_switch(struct ct_part *pt) {
    sigset_t added;
    int how = lock(&added);
    if (how == NOT_TAKEN) {
        /* A fault inside this thread's META write: switch, and the next
         * write starts a chunk in the new part (without the records every
         * part repeats). */
        ct_part_set(pt);
        meta_stale = 1;
        return;
    }
    ct_part_set(pt);
    if (meta)
        ct_unmap_chunk(meta);
    meta = NULL;
    meta_used = 0;
    for (size_t pos = 0; pos + 8 <= sticky_used;) {
        uint32_t key, len;
        memcpy(&key, sticky + pos, 4);
        memcpy(&len, sticky + pos + 4, 4);
        put_record(pt, key, sticky + pos + 8, len);
        pos += 8 + len;
    }
    if (how == TAKEN)
        unlock(&added);
}

/* One MODULE record per loaded object with code: "bias lo hi path". */
static CT_NOINST int module_cb(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    (void)arg;
    char name[PATH_MAX];
    if (!ct_module_path(info, name, sizeof name))
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

CT_NOINST void ct_meta_modules(void) {
    char line[32];
    int n = snprintf(line, sizeof line, "%llu", (unsigned long long)ct_ticks());
    ct_meta(CT_META_SCAN, line, (size_t)n);
    dl_iterate_phdr(module_cb, NULL);
}

static CT_NOINST ssize_t read_file(const char *path, char *buf, size_t size) {
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -1;
    ssize_t n = read(f, buf, size);
    close(f);
    return n;
}

/* The command line, as much as fits in `size` bytes (and in a META chunk);
 * when it does not all fit, an "argv_bytes=TOTAL" option record says so and
 * the converter notes the cut (never a silently shorter argv). */
static CT_NOINST ssize_t cmdline(char *buf, size_t size) {
    size_t room = ct_chunk_bytes - CT_CHUNK_HEADER - 16;
    if (size > room)
        size = room;
    int f = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -1;
    size_t n = 0, total = 0;
    ssize_t r;
    while ((r = read(f, buf + n, size - n)) > 0 && (n += (size_t)r) < size)
        ;
    total = n;
    char rest[4096];
    while (n == size && (r = read(f, rest, sizeof rest)) > 0)
        total += (size_t)r;
    close(f);
    if (total > n) {
        char line[64];
        int len = snprintf(line, sizeof line, "argv_bytes=%zu", total);
        ct_meta(CT_META_OPTION, line, (size_t)len);
    }
    return (ssize_t)n;
}

/* The process's first records: program, command line, output, modules, and
 * the name new threads inherit (a thread still named so at its end needs no
 * THREAD record: 100,000 short threads cost no names). */
CT_NOINST void ct_meta_start(void) {
    sticky_used = 0;
    meta = NULL;
    meta_used = 0;
    meta_lock = 0;
    meta_stale = 0;
    char buf[65536];
    int e = ct_exe_path(buf, sizeof buf);
    if (e > 0)
        ct_meta(CT_META_EXE, buf, (size_t)e);
    ssize_t n = cmdline(buf, sizeof buf);
    if (n > 0)
        ct_meta(CT_META_CMDLINE, buf, (size_t)n);
    ct_meta(CT_META_OUTPUT, ct_cfg.output, strlen(ct_cfg.output));
    ct_meta_modules();
    n = read_file("/proc/self/comm", default_name, sizeof default_name - 1);
    default_name[n > 0 ? n : 0] = 0;
    if (n > 0 && default_name[n - 1] == '\n')
        default_name[n - 1] = 0;
    n = snprintf(buf, sizeof buf, "thread_name=%s", default_name);
    ct_meta(CT_META_OPTION, buf, (size_t)n);
}

CT_NOINST const char *ct_thread_default_name(void) { return default_name; }

/* fork(): the lock is held across it (pthread_atfork), so a child never
 * inherits it from a thread it does not have. */
CT_NOINST int ct_meta_prefork(void) {
    if (lock(&fork_added) != TAKEN)
        return 0;
    fork_pid = getpid();
    fork_hold = 1;
    return 1;
}

CT_NOINST void ct_meta_postfork(void) {
    fork_hold = 0;
    unlock(&fork_added);
}

/* After fork: the META chunk maps the parent's file. */
CT_NOINST void ct_meta_reset(void) {
    if (meta)
        ct_unmap_chunk(meta);
    meta = NULL;
    meta_used = 0;
    meta_lock = 0;
    meta_stale = 0;
}
