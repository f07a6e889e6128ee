/* `calltrace attach PID`: the runtime dlopen'ed into a running process.
 *
 * GDB loads this library into the target and calls calltrace_attach(config),
 * which opens a recording session configured from a file (never from the
 * target's environment, which stays untouched); then, with every thread
 * stopped, GDB writes each thread's open instrumented frames into
 * calltrace_attach_stacks, bumps calltrace_attach_gen and points the
 * modules' GOT entries for the two hooks here. Each thread re-bases its depth
 * at its next call (ct_attach_sync) and records the frames it was already in
 * as one EXT ATTACH record, so their returns close real calls. Detaching puts
 * the GOT entries back, waits until no thread is inside this library, and
 * calls calltrace_detach(), which closes the session; the library stays
 * loaded, idle, for the next attach (docs/ATTACH.md). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "ct.h"

#define STACK_WORDS (1u << 17)
#define MAX_VARS 32

/* Written by the CLI (through GDB) while every thread is stopped:
 * [threads], then per thread [tid, n, n entry addresses, outermost first]. */
CT_EXPORT uint64_t calltrace_attach_stacks[STACK_WORDS];
CT_EXPORT volatile uint32_t calltrace_attach_gen;
CT_EXPORT char calltrace_attach_error[512];
/* The session state GDB reads: 0 never attached, 1 recording, 2 detached,
 * 3 orphaned (calltrace died while attached: recording stopped, file open). */
CT_EXPORT volatile int calltrace_attach_state;

static int attached_mode;   /* loaded by dlopen for attach: never initialized from the environment */
static __thread uint32_t seen_gen __attribute__((tls_model("initial-exec")));
static char vars[MAX_VARS][2][4096];
static int nvars;
static int watch_fd = -1;          /* a pipe the watchdog polls: written at detach */

/* Whether this library was loaded after the program started (dlopen) rather
 * than preloaded or linked: then it comes after libc in the link map. */
static CT_NOINST int find_order(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    int *state = arg;   /* [0]: position of libc, [1]: ours, [2]: counter */
    uintptr_t self = (uintptr_t)&find_order, libc = (uintptr_t)&getpid;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (self >= lo && self < hi)
            state[1] = state[2];
        if (libc >= lo && libc < hi)
            state[0] = state[2];
    }
    state[2]++;
    return 0;
}

CT_NOINST int ct_attach_late(void) {
    static int known;
    if (!known) {
        int state[3] = {-1, -1, 0};
        dl_iterate_phdr(find_order, state);
        attached_mode = state[0] >= 0 && state[1] > state[0];
        known = 1;
    }
    return attached_mode;
}

/* CALLTRACE_* settings: the attach session's file, else the environment. */
CT_NOINST const char *ct_env(const char *name) {
    if (!attached_mode)
        return getenv(name);
    for (int i = 0; i < nvars; i++)
        if (!strcmp(vars[i][0], name))
            return vars[i][1];
    return NULL;
}

static CT_NOINST int fail(const char *fmt, const char *detail) {
    snprintf(calltrace_attach_error, sizeof calltrace_attach_error, fmt, detail);
    return -1;
}

/* NAME=VALUE lines. */
static CT_NOINST int read_config(const char *path) {
    char buf[65536];
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return fail("cannot read the attach configuration %s", path);
    ssize_t n = read(f, buf, sizeof buf - 1);
    close(f);
    if (n < 0)
        return fail("cannot read the attach configuration %s", path);
    buf[n] = 0;
    nvars = 0;
    for (char *line = buf, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        char *eq = strchr(line, '=');
        if (!eq || nvars == MAX_VARS || (size_t)(eq - line) >= sizeof vars[0][0] || strlen(eq + 1) >= sizeof vars[0][1])
            continue;
        memcpy(vars[nvars][0], line, (size_t)(eq - line));
        vars[nvars][0][eq - line] = 0;
        strcpy(vars[nvars][1], eq + 1);
        nvars++;
    }
    return 0;
}

/* Recording stops and the header says the session ended by detaching;
 * 1 when there is a raw file. */
static CT_NOINST int end_session(void) {
    ct_recording = 0;
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
    struct ct_header *h = ct_header();
    if (!h)
        return 0;
    h->end_ticks = ct_ticks();
    h->end_mono_ns = ct_mono_ns();
    __atomic_store_n(&h->end_state, (uint32_t)CT_END_DETACH, __ATOMIC_RELEASE);
    return 1;
}

/* Ends recording when the calltrace process that attached is gone (killed
 * while attached): the hooks stay pointed here, harmlessly, and the raw file
 * stops growing; `calltrace convert` reads what was recorded. */
static CT_NOINST void *watchdog(void *arg) {
    uint64_t fds = (uint64_t)(uintptr_t)arg;
    int pidfd = (int)(fds >> 32), quit = (int)(fds & 0xffffffff);
    struct pollfd p[2] = {{.fd = pidfd, .events = POLLIN}, {.fd = quit, .events = POLLIN}};
    while (poll(p, 2, -1) < 0 && errno == EINTR)
        ;
    if (p[0].revents && !p[1].revents && calltrace_attach_state == 1) {
        end_session();
        calltrace_attach_state = 3;
    }
    close(pidfd);
    close(quit);
    return NULL;
}

static CT_NOINST void start_watchdog(void) {
    const char *owner = ct_env("CALLTRACE_ATTACH_OWNER");
    int pipefd[2];
    if (!owner)
        return;
    int pidfd = (int)syscall(SYS_pidfd_open, atoi(owner), 0);
    if (pidfd < 0)
        return;
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        close(pidfd);
        return;
    }
    void *arg = (void *)(uintptr_t)(((uint64_t)pidfd << 32) | (uint32_t)pipefd[0]);
    if (ct_start_thread(watchdog, arg, "calltrace-watch") == 0) {
        watch_fd = pipefd[1];
    } else {
        close(pidfd);
        close(pipefd[0]);
        close(pipefd[1]);
    }
}

/* The watchdog closes its own ends when it wakes. */
static CT_NOINST void stop_watchdog(void) {
    if (watch_fd < 0)
        return;
    ssize_t w = write(watch_fd, "x", 1);
    (void)w;
    close(watch_fd);
    watch_fd = -1;
}

/* A session after the first: what ct_init does, again, for a new file. */
static CT_NOINST int reopen(void) {
    ct_config_read();
    ct_filter_mode = 0;
    ct_threshold_ticks = 0;
    ct_exit_slow = 0;
    ct_capture_on = 0;
    if (ct_stream_open(0) < 0)
        return -1;
    ct_prefault_start();
    if (ct_cfg.capture_args)
        ct_load_plan();
    ct_controls();
    return 0;
}

/* A child forked while attached has nobody to convert its trace or to put
 * its GOT back: it does not record (runs before lifecycle.c's handler, which
 * then opens no stream). */
static CT_NOINST void on_fork_child(void) {
    ct_recording = 0;
    calltrace_attach_state = 2;
    watch_fd = -1;
}

CT_EXPORT CT_NOINST int calltrace_attach(const char *config) {
    calltrace_attach_error[0] = 0;
    if (!attached_mode)
        return fail("%s", "calltrace is already loaded in this process at start-up (calltrace run or LD_PRELOAD)");
    if (calltrace_attach_state == 1)
        return fail("%s", "another calltrace attach session is recording this process");
    if (read_config(config) < 0)
        return -1;
    /* An orphaned session's file: the CLI has put the GOT back and seen no
     * thread inside this library before calling. */
    if (calltrace_attach_state == 3)
        ct_stream_close();
    static int initialized;
    if (!initialized) {
        pthread_atfork(NULL, NULL, on_fork_child);
        ct_init();
        initialized = 1;
        if (!ct_header())
            return fail("%s", "could not create the raw trace (see the program's stderr)");
    } else if (reopen() < 0) {
        return fail("%s", "could not create the raw trace (see the program's stderr)");
    }
    /* Hooks reach here only once the GOT entries are written; until then
     * recording is on but nothing calls in. */
    ct_recording = 1;
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
    calltrace_attach_state = 1;
    start_watchdog();
    return 0;
}

/* Every thread's GOT entries are back and none is inside this library
 * (checked by the CLI through GDB): close the session's file. */
CT_EXPORT CT_NOINST int calltrace_detach(void) {
    if (calltrace_attach_state != 1)
        return -1;
    if (end_session())
        ct_thread_names();
    stop_watchdog();
    calltrace_attach_state = 2;
    ct_stream_close();
    return 0;
}

/* The frames `tid` was in at attach: a pointer to n addresses, or NULL. */
static CT_NOINST const uint64_t *frames_of(int32_t tid, uint64_t *n) {
    uint64_t threads = calltrace_attach_stacks[0], at = 1;
    for (uint64_t i = 0; i < threads && at + 2 <= STACK_WORDS; i++) {
        uint64_t t = calltrace_attach_stacks[at], k = calltrace_attach_stacks[at + 1];
        if (at + 2 + k > STACK_WORDS)
            break;
        if ((int32_t)t == tid) {
            *n = k;
            return &calltrace_attach_stacks[at + 2];
        }
        at += 2 + k;
    }
    *n = 0;
    return NULL;
}

/* One EXT ATTACH record: up to six addresses (the room a chunk keeps past
 * its end for one write); `first`: the first one's depth. */
static CT_NOINST void write_frames(struct ct_thread *t, const uint64_t *a, uint64_t k, uint32_t first) {
    t->busy = 1;
    ct_barrier();
    uint64_t *p = t->cur;
    if (!p || p >= t->end)
        p = ct_next_chunk(t);
    if (p) {
        uint64_t now = ct_ticks();
        *p++ = ((uint64_t)CT_EV_TIME << 62) | (now & CT_TIME_MASK);
        *p++ = CT_EXT_WORD(CT_EXT_ATTACH, k, first);
        for (uint64_t j = 0; j < k; j++)
            *p++ = a[j] & CT_ADDR_MASK;
        t->last = now;
        t->cur = p;
    }
    ct_barrier();
    t->busy = 0;
}

/* A thread's first hook call in a session (from ct_thread_sync): its depth
 * and frames as they were at attach. `where` is the hook's depth times two,
 * plus one for a return (already counted into t->depth). */
CT_NOINST void ct_attach_sync(struct ct_thread *t, uint64_t where) {
    if (likely(!attached_mode) || seen_gen == calltrace_attach_gen)
        return;
    seen_gen = calltrace_attach_gen;
    ct_release_chunk(t, CT_RELEASE_FORGET);   /* a previous session's file, closed */
    t->seq = 0;
    t->last = 0;
    t->failed = 0;
    t->fstate = 0;
    t->epoch = 0;   /* no PAUSE/RESUME: this is the thread's start */
    uint64_t n;
    const uint64_t *a = frames_of(t->tid, &n);
    int is_exit = (int)(where & 1);
    t->depth = (uint32_t)(is_exit ? (n ? n - 1 : 0) : n + 1);
    if (!n || !ct_recording)
        return;
    /* The recorded part of the stack: below --max-depth, and what the
     * filter keeps, deciding as if each frame were being entered now. */
    uint64_t group[6], k = 0, first = 0;
    for (uint64_t i = 0; i < n && i < ct_max_depth; i++) {
        if (ct_filter_mode && !ct_filter_enter(t, (void *)(uintptr_t)a[i], (uint32_t)i))
            continue;
        if (!k)
            first = i;
        group[k++] = a[i];
        if (k == 6) {
            write_frames(t, group, k, (uint32_t)first);
            k = 0;
        }
    }
    if (k)
        write_frames(t, group, k, (uint32_t)first);
}
