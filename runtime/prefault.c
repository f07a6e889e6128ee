/* Prefaulting chunks off the recording threads.
 *
 * The first store to each page of a shared file mapping costs a page fault
 * (about 2.5 us here, 10 ns a call). Once the program has a second thread of
 * its own, a helper thread claims chunks ahead of time and faults them in
 * writable, so the recording threads' stores never fault; it also pays for
 * the munmap (a TLB shootdown) of full chunks. Before that, the one thread
 * faults a new chunk in with one madvise: a single-threaded program stays
 * single-threaded (it can unshare(CLONE_NEWUSER), say). The helper never
 * records, takes no signals, and leaves when the program is down to one
 * thread again (or none: main called pthread_exit). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "ct.h"

#define POOL 4
static void *volatile pool[POOL];
static void *volatile retired[POOL];    /* full chunks waiting for munmap */
static volatile int pool_seq;
static volatile int running;
static volatile uint32_t pool_gen;      /* bumped when a stream closes: its helper leaves */

static CT_NOINST void prefault(void *m) {
    if (madvise(m, ct_chunk_bytes, MADV_POPULATE_WRITE) == 0)
        return;
    /* A write that changes nothing: the first page holds the chunk's
     * header, written already (a store of 0 there erased its magic, and
     * the chunk's events were lost). */
    for (size_t i = 0; i < ct_chunk_bytes; i += 4096)
        __atomic_fetch_add((volatile char *)m + i, 0, __ATOMIC_RELAXED);
}

/* State letter of a task of ours, from /proc/self/task/TID/stat. */
static CT_NOINST char task_state(long tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return 'X';
    ssize_t n = read(f, buf, sizeof buf - 1);
    close(f);
    if (n <= 0)
        return 'X';
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

struct census {
    long self;
    int live;
};

static CT_NOINST int count_live(long tid, void *arg) {
    struct census *c = arg;
    if (tid != c->self) {
        char st = task_state(tid);
        c->live += st != 'Z' && st != 'X';
    }
    return c->live > 1;   /* enough: stop reading */
}

/* Is the program down to one thread (or none: after main's pthread_exit the
 * process lives until its last thread ends, and this must not be that one)? */
static CT_NOINST int program_single(void) {
    struct census c = {syscall(SYS_gettid), 0};
    ct_each_task(count_live, &c);
    return c.live <= 1;
}

static CT_NOINST int fill(uint32_t gen) {
    for (int i = 0; i < POOL; i++) {
        if (__atomic_load_n(&pool[i], __ATOMIC_ACQUIRE))
            continue;
        if (__atomic_load_n(&pool_gen, __ATOMIC_ACQUIRE) != gen)
            return -1;   /* the stream closed (calltrace attach detached) */
        struct ct_part *pt = ct_part_hold();
        uint32_t index = pt->index;
        void *m = ct_claim(pt, CT_CHUNK_EVENTS);
        ct_part_unhold();
        if (!m)
            return 0;
        prefault(m);
        /* Chunks are page-aligned: the low bits say which part they are in. */
        __atomic_store_n(&pool[i], (void *)((uintptr_t)m | (index & 0xfff)), __ATOMIC_RELEASE);
    }
    return 0;
}

static CT_NOINST void *prefault_main(void *arg) {
    uint32_t gen = (uint32_t)(uintptr_t)arg;
    uint64_t checked = 0;
    for (;;) {
        uint64_t now = ct_mono_ns();
        if (now - checked >= 200000000ull) {
            checked = now;
            if (program_single())
                break;
        }
        int seen = __atomic_load_n(&pool_seq, __ATOMIC_ACQUIRE);
        for (int i = 0; i < POOL; i++) {
            void *old = __atomic_exchange_n(&retired[i], NULL, __ATOMIC_ACQ_REL);
            if (old)
                ct_unmap_chunk(old);
        }
        if (fill(gen) < 0)
            return NULL;   /* a newer helper may be running: touch nothing shared */
        struct timespec ts = {0, 200 * 1000 * 1000};
        syscall(SYS_futex, &pool_seq, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
    }
    __atomic_store_n(&running, 0, __ATOMIC_RELEASE);
    for (int i = 0; i < POOL; i++) {
        void *old = __atomic_exchange_n(&retired[i], NULL, __ATOMIC_ACQ_REL);
        if (old)
            ct_unmap_chunk(old);
    }
    return NULL;
}

/* A thread other than the first has started recording. */
CT_NOINST void ct_prefault_start(void) {
    int idle = 0;
    if (!ct_header() || ct_stopped || !__atomic_compare_exchange_n(&running, &idle, 1, 0, __ATOMIC_ACQ_REL,
                                                                 __ATOMIC_ACQUIRE))
        return;
    if (ct_start_thread(prefault_main, (void *)(uintptr_t)pool_gen, "calltrace") != 0)
        __atomic_store_n(&running, 0, __ATOMIC_RELEASE);
}

/* munmap is a TLB shootdown: let the helper pay for it when there is one. */
CT_NOINST void ct_retire_chunk(void *m) {
    if (__atomic_load_n(&running, __ATOMIC_ACQUIRE))
        for (int i = 0; i < POOL; i++) {
            void *expected = NULL;
            if (__atomic_compare_exchange_n(&retired[i], &expected, m, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                return;
        }
    ct_unmap_chunk(m);
}

/* After fork: the pool maps the parent's file and the helper is gone. */
CT_NOINST void ct_pool_reset(void) {
    for (int i = 0; i < POOL; i++) {
        void *m = __atomic_exchange_n(&pool[i], NULL, __ATOMIC_ACQ_REL);
        if (m)
            ct_unmap_chunk((void *)((uintptr_t)m & ~(uintptr_t)0xfff));
        m = __atomic_exchange_n(&retired[i], NULL, __ATOMIC_ACQ_REL);
        if (m)
            ct_unmap_chunk(m);
    }
    running = 0;
    __atomic_add_fetch(&pool_gen, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&pool_seq, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &pool_seq, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* At exit: the prefaulted chunks no one took go back to the file system
 * (their header too: a chunk without its magic is skipped). */
CT_NOINST void ct_pool_trim(void) {
    for (int i = 0; i < POOL; i++) {
        void *m = __atomic_exchange_n(&pool[i], NULL, __ATOMIC_ACQ_REL);
        if (m) {
            struct ct_chunk *c = (void *)((uintptr_t)m & ~(uintptr_t)0xfff);
            ct_punch(c, (char *)c, (uint32_t)((uintptr_t)m & 0xfff));
            ct_unmap_chunk(c);
        }
    }
}

/* A fresh events chunk of part `pt`: prefaulted by the helper, or claimed
 * and faulted in here. */
CT_NOINST void *ct_take_chunk(struct ct_part *pt) {
    for (int i = 0; i < POOL; i++) {
        void *m = __atomic_exchange_n(&pool[i], NULL, __ATOMIC_ACQ_REL);
        if (m) {
            __atomic_add_fetch(&pool_seq, 1, __ATOMIC_RELEASE);
            syscall(SYS_futex, &pool_seq, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
            void *chunk = (void *)((uintptr_t)m & ~(uintptr_t)0xfff);
            if (((uintptr_t)m & 0xfff) == (pt->index & 0xfff))
                return chunk;
            ct_unmap_chunk(chunk);   /* claimed in a part already finished: unused */
        }
    }
    void *m = ct_claim(pt, CT_CHUNK_EVENTS);
    if (m)
        prefault(m);
    return m;
}
