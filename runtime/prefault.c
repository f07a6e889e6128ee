/* Prefaulting chunks off the recording threads.
 *
 * The first store to each page of a shared file mapping costs a page fault
 * (about 2.5 us here, 10 ns a call). A background thread claims chunks ahead
 * of time and faults them in writable, so the recording threads' stores never
 * fault; it also pays for the munmap (a TLB shootdown) of full chunks. It
 * never records, takes no signals, is restarted after fork, and leaves when it
 * would be the process's last thread. */
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
static int prefault_running;
static volatile uint32_t pool_gen;      /* bumped when a stream closes: its thread leaves */

static CT_NOINST void prefault(void *m, size_t size) {
    if (madvise(m, size, MADV_POPULATE_WRITE) == 0)
        return;
    for (size_t i = 0; i < size; i += 4096)
        __atomic_store_n((volatile char *)m + i, 0, __ATOMIC_RELAXED);
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

/* After main calls pthread_exit the process lives until its last thread
 * ends, and this thread must not be that one: when every other task is gone
 * or a zombie, leave, and glibc ends the process as it would have. */
static CT_NOINST int live_other(long tid, void *self) {
    if (tid == *(long *)self)
        return 0;
    char st = task_state(tid);
    return st != 'Z' && st != 'X';
}

static CT_NOINST int alone(void) {
    if (task_state(getpid()) != 'Z')
        return 0;
    long self = syscall(SYS_gettid);
    return !ct_each_task(live_other, &self);
}

static CT_NOINST void *prefault_main(void *arg) {
    uint32_t gen = (uint32_t)(uintptr_t)arg;
    for (;;) {
        if (alone())
            pthread_exit(NULL);
        int seen = __atomic_load_n(&pool_seq, __ATOMIC_ACQUIRE);
        for (int i = 0; i < POOL; i++) {
            void *old = __atomic_exchange_n(&retired[i], NULL, __ATOMIC_ACQ_REL);
            if (old)
                munmap(old, ct_chunk_bytes);
        }
        for (int i = 0; i < POOL; i++) {
            if (__atomic_load_n(&pool[i], __ATOMIC_ACQUIRE))
                continue;
            if (__atomic_load_n(&pool_gen, __ATOMIC_ACQUIRE) != gen)
                return NULL;   /* the stream closed (calltrace attach detached) */
            uint32_t index;
            void *m = ct_claim(&index);
            if (!m)
                return NULL;
            prefault(m, ct_chunk_bytes);
            /* Chunks are page-aligned: the low bits say which part they are in. */
            __atomic_store_n(&pool[i], (void *)((uintptr_t)m | (index & 0xfff)), __ATOMIC_RELEASE);
        }
        struct timespec ts = {0, 200 * 1000 * 1000};
        syscall(SYS_futex, &pool_seq, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
    }
}

CT_NOINST void ct_prefault_start(void) {
    if (prefault_running || !ct_header())
        return;
    prefault_running = 1;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    if (pthread_create(&th, &attr, prefault_main, (void *)(uintptr_t)pool_gen) == 0)
        pthread_setname_np(th, "calltrace");
    else
        prefault_running = 0;
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* munmap is a TLB shootdown: let the prefault thread pay for it. */
CT_NOINST void ct_retire_chunk(void *m, size_t size) {
    if (prefault_running)
        for (int i = 0; i < POOL; i++) {
            void *expected = NULL;
            if (__atomic_compare_exchange_n(&retired[i], &expected, m, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                return;
        }
    munmap(m, size);
}

/* After fork: the pool maps the parent's file and its thread is gone. */
CT_NOINST void ct_pool_reset(size_t size) {
    for (int i = 0; i < POOL; i++) {
        void *m = __atomic_exchange_n(&pool[i], NULL, __ATOMIC_ACQ_REL);
        if (m)
            munmap((void *)((uintptr_t)m & ~(uintptr_t)0xfff), size);
        m = __atomic_exchange_n(&retired[i], NULL, __ATOMIC_ACQ_REL);
        if (m)
            munmap(m, size);
    }
    prefault_running = 0;
    __atomic_add_fetch(&pool_gen, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&pool_seq, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &pool_seq, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

CT_NOINST void *ct_take_chunk(void) {
    if (!prefault_running)
        ct_prefault_start();   /* first chunk after fork(): restart it here */
    for (int i = 0; i < POOL; i++) {
        void *m = __atomic_exchange_n(&pool[i], NULL, __ATOMIC_ACQ_REL);
        if (m) {
            __atomic_add_fetch(&pool_seq, 1, __ATOMIC_RELEASE);
            syscall(SYS_futex, &pool_seq, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
            void *chunk = (void *)((uintptr_t)m & ~(uintptr_t)0xfff);
            if (((uintptr_t)m & 0xfff) == (ct_part() & 0xfff))
                return chunk;
            munmap(chunk, ct_chunk_bytes);   /* claimed in a part already finished: unused */
        }
    }
    uint32_t index;
    return ct_claim(&index);   /* the prefault thread is behind: map one here */
}

