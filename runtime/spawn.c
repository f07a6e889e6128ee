/* Running calltrace's Python side from inside the traced process: the
 * converter at exit (bare LD_PRELOAD), for finished rolling parts (one at a
 * time), and the plan/filter makers at start-up. Untraced (LD_PRELOAD and CALLTRACE_* are
 * removed from its environment), stdout kept clear of the program's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ct.h"

#ifndef CT_PYTHON
#define CT_PYTHON "python3"
#endif

extern char **environ;

/* libc's execvpe, found at start-up (not in a cloned child, where the
 * loader's lock may be held by a thread that is not there). */
typedef int (*execvpe_fn)(const char *, char *const[], char *const[]);
static execvpe_fn real_execvpe;

/* In the child: stdin and stdout away from the program's, then exec; returns
 * only if python could not be started. */
static CT_NOINST void exec_python(const char *python, char *const argv[], char *const env[]) {
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
    }
    /* libc's, not the interposed ones, which would put the runtime back
     * into the environment under calltrace run. */
    syscall(SYS_execve, python, argv, env);
    if (real_execvpe)
        real_execvpe(python, argv, env);
}

/* The interpreter to run, and our environment without LD_PRELOAD and
 * CALLTRACE_* in `env` (pointers into environ: no allocation). */
static CT_NOINST const char *untraced(char **env, size_t cap) {
    const char *python = getenv("CALLTRACE_PYTHON");
    if (!python || !*python)
        python = CT_PYTHON;
    size_t n = 0;
    for (char **e = environ; e && *e && n < cap - 1; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) && strncmp(*e, "CALLTRACE_", 10))
            env[n++] = *e;
    env[n] = NULL;
    return python;
}

/* `python -m calltrace` without the working folder on sys.path: a folder
 * named calltrace/ there (a source checkout) must not be imported instead of
 * the installed package. The package folder this library belongs to goes
 * first instead (found at start-up: not from a signal handler). */
static char site_dir[PATH_MAX];
static char lib_path[PATH_MAX];          /* this library, absolute */

CT_NOINST const char *ct_lib_path(void) { return lib_path; }
static const char run_code[] =
    "import sys,runpy;d=sys.argv.pop(1);"
    "sys.path[:]=([d] if d else [])+[p for p in sys.path if p not in ('','.',d)];"
    "runpy.run_module('calltrace',run_name='__main__',alter_sys=True)";

CT_NOINST void ct_find_site(void) {
    real_execvpe = (execvpe_fn)ct_resolve("execvpe");
    Dl_info info;
    char lib[PATH_MAX], init[PATH_MAX + 32];
    if (!dladdr((void *)ct_find_site, &info) || !info.dli_fname || !realpath(info.dli_fname, lib))
        return;
    snprintf(lib_path, sizeof lib_path, "%s", lib);
    /* SITE/calltrace/_runtime/libcalltrace.so */
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(lib, '/');
        if (!slash)
            return;
        *slash = 0;
    }
    snprintf(init, sizeof init, "%s/calltrace/__init__.py", lib);
    if (access(init, R_OK) == 0)
        snprintf(site_dir, sizeof site_dir, "%s", lib);
}

/* argv[0..3]: python -c CODE SITE; returns where the caller's arguments go. */
static CT_NOINST char **python_argv(char **argv, const char *python) {
    argv[0] = (char *)python;
    argv[1] = "-c";
    argv[2] = (char *)run_code;
    argv[3] = site_dir;
    return argv + 4;
}

/* In the middle process: the program's handlers are not run here, and the
 * converter's end is this process's to collect. */
static CT_NOINST void middle_signals(const sigset_t *mask) {
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || syscall(SYS_rt_sigaction, sig, NULL, &sa, 8) != 0)
            continue;
        if (sig == SIGCHLD || (sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL)) {
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = SIG_DFL;
            syscall(SYS_rt_sigaction, sig, &sa, NULL, 8);
        }
    }
    sigprocmask(SIG_SETMASK, mask, NULL);
}

/* Run calltrace's CLI (ARGS NULL-terminated, 64 at most) untraced and wait
 * for it; nothing here allocates, so it is usable from a signal handler.
 * The program must not see this child: a middle process cloned with no exit
 * signal (the program gets no SIGCHLD for it, and wait() without __WALL does
 * not see it, nor does ignoring SIGCHLD reap it away) starts python and
 * passes on its exit status. (Python itself cannot be that child: an exec
 * gives a process the SIGCHLD exit signal back.) Returns python's exit
 * status; 0 when it ended but the status could not be had (callers check
 * what it made). */
static CT_NOINST int run_python_argv(const char *const *args) {
    char *env[512];
    const char *python = untraced(env, sizeof env / sizeof *env);
    char *argv[72];
    char **rest = python_argv(argv, python);
    int i = 0;
    for (; args[i] && i < 64; i++)
        rest[i] = (char *)args[i];
    rest[i] = NULL;
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);   /* no program handler runs in the children */
    pid_t pid = (pid_t)syscall(SYS_clone, 0, 0, 0, 0, 0);
    if (pid == 0) {
        middle_signals(&all);
        pid_t py = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        if (py == 0) {
            sigprocmask(SIG_SETMASK, &old, NULL);
            exec_python(python, argv, env);
            char msg[] = "calltrace: cannot start python for calltrace (set CALLTRACE_PYTHON)\n";
            ssize_t w = write(2, msg, sizeof msg - 1);
            (void)w;
            syscall(SYS_exit_group, 127);
        }
        int st = 0;
        while (py > 0 && waitpid(py, &st, 0) < 0 && errno == EINTR)
            ;
        syscall(SYS_exit_group, py > 0 && WIFEXITED(st) ? WEXITSTATUS(st) : 255);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0)
        return -1;
    int status = 0;
    pid_t r;
    while ((r = waitpid(pid, &status, __WCLONE)) < 0 && errno == EINTR)
        ;
    if (r != pid)
        return 0;
    return WIFEXITED(status) && WEXITSTATUS(status) != 255 ? WEXITSTATUS(status) : -1;
}

CT_NOINST int ct_run_python(const char *a1, const char *a2, const char *a3, const char *a4,
                                const char *a5) {
    const char *args[] = {a1, a2, a3, a4, a5, NULL};
    return run_python_argv(args);
}

/* Bare LD_PRELOAD, rolling output: finished parts are converted while the
 * program runs by one detached grandchild at a time (never a child the
 * program could wait for). It holds the write end of a pipe: EOF on ours
 * says it is done. */
static int busy_fd = -1;
static ino_t busy_ino;

static CT_NOINST int converter_busy(void) {
    struct stat st;
    if (busy_fd < 0)
        return 0;
    if (fstat(busy_fd, &st) < 0 || !S_ISFIFO(st.st_mode) || st.st_ino != busy_ino) {
        busy_fd = -1;   /* the program closed it, and may use the number again: leave it */
        return 0;
    }
    char b;
    if (read(busy_fd, &b, 1) < 0 && errno == EAGAIN)
        return 1;
    close(busy_fd);
    busy_fd = -1;
    return 0;
}

CT_NOINST int ct_convert_parts(const char *const *raws, int n) {
    if (converter_busy())
        return -1;
    int fds[2];
    struct stat st;
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
    char *env[512];
    const char *python = untraced(env, sizeof env / sizeof *env);
    char *argv[76];
    char **rest = python_argv(argv, python);
    rest[0] = "convert";
    rest[1] = "--from-runtime";
    rest[2] = "--quiet";
    int i = 0;
    for (; i < n && i < 64; i++)
        rest[3 + i] = (char *)raws[i];
    rest[3 + i] = NULL;
    /* A middle process with no exit signal, as in run_python_argv, that
     * leaves the converter to init: the program never sees either. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t child = (pid_t)syscall(SYS_clone, 0, 0, 0, 0, 0);
    if (child == 0) {
        middle_signals(&all);
        if ((pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) == 0) {
            sigprocmask(SIG_SETMASK, &old, NULL);
            fcntl(fds[1], F_SETFD, 0);   /* held until the converter exits */
            exec_python(python, argv, env);
        }
        syscall(SYS_exit_group, 0);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(fds[1]);
    if (child > 0)
        while (waitpid(child, NULL, __WCLONE) < 0 && errno == EINTR)
            ;
    if (child < 0 || fstat(fds[0], &st) < 0) {
        close(fds[0]);
        return -1;
    }
    busy_fd = fds[0];
    busy_ino = st.st_ino;
    return 0;
}

/* At exit: the finished parts still waiting, then the last one. */
CT_NOINST void ct_run_converter(void) {
    const char *raw = ct_raw_path();
    const char *args[72] = {"convert", "--from-runtime", ct_cfg.debug ? "--verbose" : "--quiet"};
    int n = ct_parts_pending(args + 3, 60);
    args[3 + n] = raw;
    if (run_python_argv(args) != 0 || access(raw, F_OK) == 0)   /* it deletes the raw file when done */
        ct_warn("converting the trace failed; raw trace kept at %s (calltrace convert %s)", raw, raw);
}
