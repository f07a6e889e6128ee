/* Start-up, exit, fatal signals and fork: everything off the hot path.
 *
 * Under `calltrace run` (CALLTRACE_RAW_DIR set) the runtime only records: the
 * parent process converts the raw file whatever way the program ends. With a
 * bare LD_PRELOAD the runtime itself runs the converter (`python -m calltrace
 * convert`) at exit or on a fatal signal, so CALLTRACE_OUTPUT is there when
 * the program has exited. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ct.h"

#ifndef CT_PYTHON
#define CT_PYTHON "python3"
#endif

extern char **environ;
static volatile int init_state;        /* 0 none, 1 running, 2 done */
static volatile long init_tid;         /* the thread running ct_init */
static volatile int finished;
static pthread_key_t thread_key;
static void load_plan(void);
static void controls(void);
static int exit_code_known, exit_code;
static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTERM,
                                    SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGXCPU, SIGXFSZ};

static CT_NOINST void read_comm(int32_t tid) {
    char path[64], line[96];
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)tid);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return;
    int off = snprintf(line, sizeof line, "%d ", (int)tid);
    ssize_t n = read(f, line + off, sizeof line - (size_t)off - 1);
    close(f);
    if (n <= 0)
        return;
    if (line[off + n - 1] == '\n')
        n--;
    ct_meta(CT_META_THREAD, line, (size_t)(off + n));
}

/* The names of every thread still there (one that called exit() never runs
 * its TLS destructor). getdents64, not opendir: no malloc in a handler. */
static CT_NOINST void all_comms(void) {
    char buf[4096];
    int dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return;
    long n;
    while ((n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
        for (long pos = 0; pos < n;) {
            struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; } *d =
                (void *)(buf + pos);
            long tid = atol(d->name);
            if (tid > 0)
                read_comm((int32_t)tid);
            pos += d->reclen;
        }
    }
    close(dir);
}

static CT_NOINST void thread_done(void *arg) {
    struct ct_thread *t = arg;
    read_comm(t->tid);
    if (t->on && t->chunk)
        ct_write_ext(t, CT_EXT_THREAD_END, 0);
    ct_release_chunk(t);
    t->on = 0;
    t->failed = 1;   /* calls from later TLS destructors are not recorded */
}

static CT_NOINST void on_fork_child(void) {
    pid_t parent = getppid();
    struct ct_thread *t = &ct_tls;
    ct_release_chunk(t);
    ct_stream_close();
    t->seq = 0;
    t->tid = (int32_t)syscall(SYS_gettid);
    t->failed = 0;
    t->busy = 0;
    t->epoch = 0;
    finished = 0;
    exit_code_known = 0;
    if (ct_cfg.bare && !ct_cfg.to_null) {
        /* The child's trace is named by its pid: trace.json -> trace.<pid>.json */
        char out[sizeof ct_cfg.output];
        const char *dot = strrchr(ct_cfg.output, '.');
        const char *slash = strrchr(ct_cfg.output, '/');
        if (dot && (!slash || dot > slash))
            snprintf(out, sizeof out, "%.*s.%d%s", (int)(dot - ct_cfg.output), ct_cfg.output,
                     (int)getpid(), dot);
        else
            snprintf(out, sizeof out, "%s.%d", ct_cfg.output, (int)getpid());
        strcpy(ct_cfg.output, out);
    }
    if (ct_recording || ct_cfg.start_off) {
        if (ct_stream_open(parent) < 0)
            ct_recording = 0;
    }
    pthread_setspecific(thread_key, t);
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
}

static CT_NOINST void on_fatal(int sig) {
    int saved = errno;
    ct_finish(CT_END_SIGNAL, 128 + sig, sig);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(sig, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    errno = saved;
}

static CT_NOINST void install_fatal_handlers(void) {
    /* Own stack, so a stack overflow in deep recursion can still be handled. */
    size_t size = 64 * 1024;
    void *alt = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (alt != MAP_FAILED) {
        stack_t ss = {.ss_sp = alt, .ss_size = size, .ss_flags = 0};
        sigaltstack(&ss, NULL);
    }
    for (size_t i = 0; i < sizeof fatal_signals / sizeof *fatal_signals; i++) {
        struct sigaction old;
        if (sigaction(fatal_signals[i], NULL, &old) < 0 || old.sa_handler != SIG_DFL ||
            (old.sa_flags & SA_SIGINFO))
            continue;   /* someone else's handler, or ignored: leave it alone */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal;
        sa.sa_flags = SA_ONSTACK | SA_NODEFER | SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        sigaction(fatal_signals[i], &sa, NULL);
    }
}

CT_NOINST void ct_init(void) {
    if (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2)
        return;
    int expected = 0;
    long self = syscall(SYS_gettid);
    if (!__atomic_compare_exchange_n(&init_state, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        /* Start-up itself can call the program's instrumented code (its own
         * malloc, from pthread_create): that thread must not wait for itself. */
        if (__atomic_load_n(&init_tid, __ATOMIC_ACQUIRE) == self)
            return;
        while (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2)
            ;
        return;
    }
    __atomic_store_n(&init_tid, self, __ATOMIC_RELEASE);
    ct_config_read();
    if (ct_cfg.output[0] != '/' && !ct_cfg.to_null) {
        char cwd[PATH_MAX], abs[sizeof ct_cfg.output];
        if (getcwd(cwd, sizeof cwd) && strlen(cwd) + strlen(ct_cfg.output) + 2 < sizeof abs) {
            snprintf(abs, sizeof abs, "%s/%s", cwd, ct_cfg.output);
            strcpy(ct_cfg.output, abs);
        }
    }
    pthread_key_create(&thread_key, thread_done);
    pthread_atfork(NULL, NULL, on_fork_child);
    int ok = 0;
    if (!ct_cfg.to_null)
        ok = ct_stream_open(0) == 0;
    else
        ct_log("CALLTRACE_OUTPUT=/dev/null: not recording");
    if (ok && ct_cfg.bare)
        install_fatal_handlers();
    if (ok)
        ct_prefault_start();
    if (ok && ct_cfg.capture_args)
        load_plan();
    if (ok)
        controls();
    ct_recording = ok && !ct_cfg.start_off;
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
}

__attribute__((constructor)) static CT_NOINST void ct_constructor(void) { ct_init(); }

/* Run `python -m calltrace ARGS...` untraced and wait for it; nothing here
 * allocates, so it is usable from a signal handler. Returns its exit status. */
static CT_NOINST int run_python(const char *a1, const char *a2, const char *a3, const char *a4,
                                const char *a5) {
    const char *python = getenv("CALLTRACE_PYTHON");
    if (!python || !*python)
        python = CT_PYTHON;
    char *env[512];
    size_t n = 0;
    for (char **e = environ; e && *e && n < sizeof env / sizeof *env - 1; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) && strncmp(*e, "CALLTRACE_", 10))
            env[n++] = *e;
    env[n] = NULL;
    char *argv[] = {(char *)python, "-m", "calltrace", (char *)a1, (char *)a2, (char *)a3,
                    (char *)a4, (char *)a5, NULL};
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        execve(python, argv, env);
        execvpe(python, argv, env);
        char msg[] = "calltrace: cannot start python for calltrace (set CALLTRACE_PYTHON)\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(127);
    }
    if (pid < 0)
        return -1;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A finished part of rolling output: convert it while the program runs. Under
 * `calltrace run` the parent does it; here a detached grandchild (so the
 * program never sees a child of ours to wait for) runs the converter. */
CT_NOINST void ct_part_finished(const char *raw) {
    if (!ct_cfg.bare)
        return;
    const char *python = getenv("CALLTRACE_PYTHON");
    if (!python || !*python)
        python = CT_PYTHON;
    char *env[512];
    size_t n = 0;
    for (char **e = environ; e && *e && n < sizeof env / sizeof *env - 1; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) && strncmp(*e, "CALLTRACE_", 10))
            env[n++] = *e;
    env[n] = NULL;
    char *argv[] = {(char *)python, "-m", "calltrace", "convert", (char *)raw, "--from-runtime", "--quiet", NULL};
    pid_t child = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (child == 0) {
        if ((pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) == 0) {
            int null = open("/dev/null", O_RDWR);
            if (null >= 0) {
                dup2(null, 0);
                dup2(null, 1);
            }
            execve(python, argv, env);
            execvpe(python, argv, env);
        }
        syscall(SYS_exit_group, 0);
    }
    if (child > 0)
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
}

static CT_NOINST void run_converter(void) {
    const char *raw = ct_raw_path();
    if (run_python("convert", raw, "--from-runtime", ct_cfg.debug ? "--verbose" : "--quiet", NULL) != 0)
        ct_warn("converting the trace failed; raw trace kept at %s (calltrace convert %s)", raw, raw);
}

/* The toggle signal flips recording; threads notice at their next call. */
static CT_NOINST void on_toggle(int sig) {
    (void)sig;
    __atomic_store_n(&ct_recording, !__atomic_load_n(&ct_recording, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
}

/* Threshold, toggle signal, --function/--exclude filters. */
static CT_NOINST void option(const char *name, const char *value) {
    char line[512];
    int n = snprintf(line, sizeof line, "%s=%s", name, value);
    if (n > 0 && n < (int)sizeof line)
        ct_meta(CT_META_OPTION, line, (size_t)n);
}

static CT_NOINST void controls(void) {
    struct ct_header *h = ct_header();
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)ct_cfg.threshold_ns);
    option("threshold_ns", num);
    snprintf(num, sizeof num, "%d", ct_cfg.toggle_signal);
    option("toggle_signal", num);
    const char *fv = getenv("CALLTRACE_FUNCTION"), *ev = getenv("CALLTRACE_EXCLUDE");
    if (fv && *fv)
        option("function", fv);
    if (ev && *ev)
        option("exclude", ev);
    if (ct_cfg.threshold_ns && h)
        ct_threshold_ticks = (uint64_t)((double)ct_cfg.threshold_ns / h->ns_per_tick) + 1;
    int sig = ct_cfg.toggle_signal;
    if (sig) {
        struct sigaction old;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO)) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_toggle;
            sa.sa_flags = SA_RESTART;
            sigemptyset(&sa.sa_mask);
            sigaction(sig, &sa, NULL);
            ct_log("signal %d toggles recording", sig);
        } else {
            ct_log("signal %d already has a handler: it does not toggle recording", sig);
        }
    }
    const char *filter = getenv("CALLTRACE_FILTER");
    if (filter && *filter) {
        ct_filter_load(filter);
        return;
    }
    const char *only = getenv("CALLTRACE_FUNCTION"), *skip = getenv("CALLTRACE_EXCLUDE");
    if ((only && *only) || (skip && *skip)) {
        char exe[PATH_MAX], path[PATH_MAX + 32];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0)
            return;
        exe[n] = 0;
        snprintf(path, sizeof path, "%s.filter", ct_raw_path());
        int include = only && *only;
        if (run_python("filter", exe, include ? "--function" : "--exclude", include ? only : skip, path) == 0)
            ct_filter_load(path);
        else
            ct_warn("could not match %s against %s; recording everything",
                    include ? "CALLTRACE_FUNCTION" : "CALLTRACE_EXCLUDE", exe);
        unlink(path);
    }
}

/* CALLTRACE_CAPTURE_ARGS=1: load the plan `calltrace run` made, or make one. */
static CT_NOINST void load_plan(void) {
    const char *plan = getenv("CALLTRACE_PLAN");
    if (plan && *plan) {
        ct_capture_load(plan);
        return;
    }
    char exe[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = 0;
    snprintf(path, sizeof path, "%s.plan", ct_raw_path());
    if (run_python("plan", exe, "-o", path, NULL) == 0)
        ct_capture_load(path);
    else
        ct_warn("could not make a capture plan for %s; arguments not captured", exe);
    unlink(path);
}

CT_NOINST void ct_finish(int state, int code, int sig) {
    if (__atomic_exchange_n(&finished, 1, __ATOMIC_ACQ_REL))
        return;
    struct ct_header *h = ct_header();
    if (!h)
        return;
    ct_recording = 0;
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
    h->end_ticks = ct_ticks();
    h->end_mono_ns = ct_mono_ns();
    h->exit_code = code;
    h->end_signal = sig;
    __atomic_store_n(&h->end_state, (uint32_t)state, __ATOMIC_RELEASE);
    all_comms();
    struct ct_thread *self = &ct_tls;
    if (self->lost) {
        __atomic_add_fetch(&h->lost_calls, self->lost, __ATOMIC_RELAXED);
        self->lost = 0;
    }
    ct_log("finished (%s %d); raw trace %s, %llu bytes", state == CT_END_SIGNAL ? "signal" : "exit",
           state == CT_END_SIGNAL ? sig : code, ct_raw_path(), (unsigned long long)h->next_offset);
    if (ct_cfg.bare)
        run_converter();
}

__attribute__((destructor)) static CT_NOINST void ct_destructor(void) {
    ct_finish(CT_END_EXIT, exit_code_known ? exit_code : -1, 0);
}

/* Exit-status capture: return from main, exit(), _exit(). */
static CT_NOINST void note_exit(int status) {
    exit_code_known = 1;
    exit_code = status & 0xff;
}

typedef int (*main_fn)(int, char **, char **);
static main_fn real_main;

static CT_NOINST int wrapped_main(int argc, char **argv, char **envp) {
    int r = real_main(argc, argv, envp);
    note_exit(r);
    return r;
}

CT_EXPORT CT_NOINST int __libc_start_main(main_fn main, int argc, char **argv, void (*init)(void),
                                          void (*fini)(void), void (*rtld_fini)(void), void *stack_end) {
    typedef int (*start_fn)(main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *);
    start_fn real = (start_fn)dlsym(RTLD_NEXT, "__libc_start_main");
    real_main = main;
    return real(wrapped_main, argc, argv, init, fini, rtld_fini, stack_end);
}

CT_EXPORT CT_NOINST __attribute__((noreturn)) void exit(int status) {
    typedef void (*exit_fn)(int) __attribute__((noreturn));
    note_exit(status);
    exit_fn real = (exit_fn)dlsym(RTLD_NEXT, "exit");
    real(status);
}

CT_EXPORT CT_NOINST __attribute__((noreturn)) void _exit(int status) {
    typedef void (*exit_fn)(int) __attribute__((noreturn));
    note_exit(status);
    ct_finish(CT_END_EXIT, status & 0xff, 0);
    exit_fn real = (exit_fn)dlsym(RTLD_NEXT, "_exit");
    real(status);
}

CT_EXPORT CT_NOINST __attribute__((noreturn)) void _Exit(int status) { _exit(status); }

CT_NOINST void ct_thread_register(struct ct_thread *t) { pthread_setspecific(thread_key, t); }
