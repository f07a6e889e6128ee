/* Running calltrace's Python side from inside the traced process: the
 * converter at exit (bare LD_PRELOAD), for finished rolling parts (one at a
 * time), and the plan/filter makers at start-up. Untraced (LD_PRELOAD and CALLTRACE_* are
 * removed from its environment), stdout kept clear of the program's. */
#define _GNU_SOURCE
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

/* In the child: stdin and stdout away from the program's, then exec; returns
 * only if python could not be started. */
static CT_NOINST void exec_python(const char *python, char *const argv[], char *const env[]) {
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
    }
    execve(python, argv, env);
    execvpe(python, argv, env);
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

/* Run `python -m calltrace ARGS...` (NULL-terminated, 64 at most) untraced
 * and wait for it; nothing here allocates, so it is usable from a signal
 * handler. Returns its exit status. */
static CT_NOINST int run_python_argv(const char *const *args) {
    char *env[512];
    const char *python = untraced(env, sizeof env / sizeof *env);
    char *argv[68] = {(char *)python, "-m", "calltrace"};
    for (int i = 0; args[i] && i < 64; i++)
        argv[3 + i] = (char *)args[i];
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) {
        exec_python(python, argv, env);
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
    char *argv[72] = {(char *)python, "-m", "calltrace", "convert", "--from-runtime", "--quiet"};
    for (int i = 0; i < n && i < 64; i++)
        argv[6 + i] = (char *)raws[i];
    pid_t child = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (child == 0) {
        if ((pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) == 0) {
            fcntl(fds[1], F_SETFD, 0);   /* held until the converter exits */
            exec_python(python, argv, env);
        }
        syscall(SYS_exit_group, 0);
    }
    close(fds[1]);
    if (child > 0)
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
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
    if (run_python_argv(args) != 0)
        ct_warn("converting the trace failed; raw trace kept at %s (calltrace convert %s)", raw, raw);
}
