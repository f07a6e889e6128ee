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

static volatile int init_state;        /* 0 none, 1 running, 2 done */
static volatile long init_tid;         /* the thread running ct_init */
static volatile int finished;
static pthread_key_t thread_key;
static int exit_code_known, exit_code;
/* Signals whose default action ends the process (SIGTRAP left to debuggers). */
static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTERM, SIGINT, SIGHUP,
                                    SIGQUIT, SIGPIPE, SIGXCPU, SIGXFSZ, SIGUSR1, SIGUSR2, SIGALRM,
                                    SIGVTALRM, SIGPROF, SIGSYS, SIGSTKFLT, SIGPWR, SIGIO};

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
    line[off + n] = 0;
    if (strcmp(line + off, ct_thread_default_name()))   /* the default is recorded once */
        ct_meta(CT_META_THREAD, line, (size_t)(off + n));
}

static CT_NOINST int comm_of(long tid, void *arg) {
    (void)arg;
    read_comm((int32_t)tid);
    return 0;
}

/* The names of every thread still there (one that called exit() never runs
 * its TLS destructor). */
CT_NOINST void ct_thread_names(void) { ct_each_task(comm_of, NULL); }

static CT_NOINST void thread_done(void *arg) {
    struct ct_thread *t = arg;
    read_comm(t->tid);
    if (t->on && t->seg && t->depth)
        ct_write_ext(t, CT_EXT_THREAD_END, 0);   /* frames left open (pthread_exit) */
    ct_release_chunk(t, CT_RELEASE_ENDED);
    t->on = 0;
    t->failed = CT_THREAD_ENDED;   /* calls from later TLS destructors are not recorded */
}

/* trace.json -> trace.<pid>.json: the name of a forked or started child's trace. */
static CT_NOINST void name_by_pid(void) {
    char out[sizeof ct_cfg.output];
    const char *dot = strrchr(ct_cfg.output, '.');
    const char *slash = strrchr(ct_cfg.output, '/');
    if (dot && (!slash || dot > slash))
        snprintf(out, sizeof out, "%.*s.%d%s", (int)(dot - ct_cfg.output), ct_cfg.output, (int)getpid(), dot);
    else
        snprintf(out, sizeof out, "%s.%d", ct_cfg.output, (int)getpid());
    strcpy(ct_cfg.output, out);
}

CT_NOINST int ct_trylock(volatile int32_t *lock) {
    int32_t self = (int32_t)syscall(SYS_gettid), holder = 0;
    if (__atomic_compare_exchange_n(lock, &holder, self, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return 1;
    return holder == self ? 0 : -1;
}

CT_NOINST void ct_unlock(volatile int32_t *lock) { __atomic_store_n(lock, 0, __ATOMIC_RELEASE); }

/* fork() with another thread inside the runtime's META lock would leave the
 * child a lock no thread of it can release: hold it across the fork. */
static int fork_locked;

static CT_NOINST void on_fork_prepare(void) { fork_locked = ct_meta_prefork(); }

static CT_NOINST void on_fork_parent(void) {
    if (fork_locked)
        ct_meta_postfork();
}

static CT_NOINST void on_fork_child(void) {
    pid_t parent = getppid();
    struct ct_thread *t = &ct_tls;
    if (!fork_locked) {
        /* fork() from a signal handler that interrupted this thread's META
         * write, which will finish in the parent's mapping: the child is not
         * traced and touches nothing of the parent's (the header names the
         * parent, so exec and exit leave it alone too). */
        t->failed = 1;
        finished = 1;
        ct_recording = 0;
        __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
        return;
    }
    ct_meta_postfork();
    ct_release_chunk(t, CT_RELEASE_FORGET);
    ct_stream_close();
    t->seq = 0;
    t->tid = (int32_t)syscall(SYS_gettid);
    t->failed = 0;
    t->busy = 0;
    t->epoch = 0;
    finished = 0;
    exit_code_known = 0;
    ct_recorded = 0;   /* a child that makes no call after fork() leaves no trace */
    if (ct_cfg.bare && !ct_cfg.to_null)
        name_by_pid();
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
        if (fatal_signals[i] == ct_cfg.toggle_signal)
            continue;
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

/* The program's view of its signal dispositions is its own: where the
 * runtime's handler stands in for the default action (fatal signals with a
 * bare LD_PRELOAD, the toggle signal when asked for), signal() and
 * sigaction() report SIG_DFL. */
static CT_NOINST int own_handler(void (*h)(int)) { return h == on_fatal || h == ct_on_toggle; }

CT_EXPORT CT_NOINST int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    typedef int (*fn)(int, const struct sigaction *, struct sigaction *);
    static void *real;
    if (!__atomic_load_n(&real, __ATOMIC_RELAXED))
        __atomic_store_n(&real, ct_resolve("sigaction"), __ATOMIC_RELAXED);
    int r = ((fn)real)(sig, act, old);
    if (r == 0 && old && !(old->sa_flags & SA_SIGINFO) && own_handler(old->sa_handler)) {
        memset(old, 0, sizeof *old);
        old->sa_handler = SIG_DFL;
    }
    return r;
}

CT_EXPORT CT_NOINST sighandler_t signal(int sig, sighandler_t handler) {
    static void *real;
    if (!__atomic_load_n(&real, __ATOMIC_RELAXED))
        __atomic_store_n(&real, ct_resolve("signal"), __ATOMIC_RELAXED);
    sighandler_t r = ((sighandler_t(*)(int, sighandler_t))real)(sig, handler);
    return own_handler(r) ? SIG_DFL : r;
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
    ct_find_site();
    if (ct_cfg.output[0] != '/' && !ct_cfg.to_null) {
        char cwd[PATH_MAX], abs[sizeof ct_cfg.output];
        if (getcwd(cwd, sizeof cwd) && strlen(cwd) + strlen(ct_cfg.output) + 2 < sizeof abs) {
            snprintf(abs, sizeof abs, "%s/%s", cwd, ct_cfg.output);
            strcpy(ct_cfg.output, abs);
        }
    }
    if (ct_cfg.bare && ct_cfg.descendant)
        name_by_pid();
    pthread_key_create(&thread_key, thread_done);
    pthread_atfork(on_fork_prepare, on_fork_parent, on_fork_child);
    int ok = 0;
    if (!ct_cfg.to_null)
        ok = ct_stream_open(0) == 0;
    else
        ct_log("CALLTRACE_OUTPUT=/dev/null: not recording");
    if (ok && ct_cfg.bare)
        install_fatal_handlers();
    if (ok && ct_cfg.capture_args)
        ct_load_plan();
    if (ok)
        ct_controls();
    ct_recording = ok && !ct_cfg.start_off;
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
}

/* Not when dlopen'ed by calltrace attach: that session is configured by
 * calltrace_attach() (attach.c), never from the target's environment. */
__attribute__((constructor)) static CT_NOINST void ct_constructor(void) {
    if (ct_attach_late())
        return;
    ct_init();
    ct_config_late();
}

CT_NOINST void ct_finish(int state, int code, int sig) {
    if (ct_vfork_child())
        return;   /* the stream and this memory are the parent's */
    if (__atomic_exchange_n(&finished, 1, __ATOMIC_ACQ_REL))
        return;
    struct ct_header *h = ct_header();
    if (!h)
        return;
    ct_recording = 0;
    __atomic_add_fetch(&ct_epoch, 1, __ATOMIC_RELEASE);
    ct_clock_pair(&h->end_ticks, &h->end_mono_ns);
    h->exit_code = code;
    h->end_signal = sig;
    __atomic_store_n(&h->end_state, (uint32_t)state, __ATOMIC_RELEASE);
    ct_thread_names();
    ct_chunks_trim();
    ct_log("finished (%s %d); raw trace %s, %llu bytes", state == CT_END_SIGNAL ? "signal" : "exit",
           state == CT_END_SIGNAL ? sig : code, ct_raw_path(), (unsigned long long)h->next_offset);
    if (ct_cfg.bare) {
        /* A process that never ran instrumented code (the shell of system(),
         * say) leaves no trace, rather than an empty one over someone's. */
        if (ct_recorded)
            ct_run_converter();
        else
            unlink(ct_raw_path());
    }
}

__attribute__((destructor)) static CT_NOINST void ct_destructor(void) {
    ct_finish(CT_END_EXIT, exit_code_known ? exit_code : -1, 0);
}

/* Exit-status capture: return from main, exit(), _exit(). */
static CT_NOINST void note_exit(int status) {
    if (ct_vfork_child())
        return;
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

CT_NOINST int ct_start_thread(void *(*fn)(void *), void *arg, const char *name) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    int rc = pthread_create(&th, &attr, fn, arg);
    if (rc == 0)
        pthread_setname_np(th, name);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
