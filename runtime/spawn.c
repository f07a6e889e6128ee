/* Running calltrace's Python side from inside the traced process: the
 * converter at exit (bare LD_PRELOAD), for finished rolling parts, and the
 * plan/filter makers at start-up. Untraced (LD_PRELOAD and CALLTRACE_* are
 * removed from its environment), stdout kept clear of the program's. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Run `python -m calltrace ARGS...` untraced and wait for it; nothing here
 * allocates, so it is usable from a signal handler. Returns its exit status. */
CT_NOINST int ct_run_python(const char *a1, const char *a2, const char *a3, const char *a4,
                                const char *a5) {
    char *env[512];
    const char *python = untraced(env, sizeof env / sizeof *env);
    char *argv[] = {(char *)python, "-m", "calltrace", (char *)a1, (char *)a2, (char *)a3,
                    (char *)a4, (char *)a5, NULL};
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

/* A finished part of rolling output: convert it while the program runs. Under
 * `calltrace run` the parent does it; here a detached grandchild (so the
 * program never sees a child of ours to wait for) runs the converter. */
CT_NOINST void ct_part_finished(const char *raw) {
    if (!ct_cfg.bare)
        return;
    char *env[512];
    const char *python = untraced(env, sizeof env / sizeof *env);
    char *argv[] = {(char *)python, "-m", "calltrace", "convert", (char *)raw, "--from-runtime", "--quiet", NULL};
    pid_t child = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (child == 0) {
        if ((pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) == 0) {
            exec_python(python, argv, env);
        }
        syscall(SYS_exit_group, 0);
    }
    if (child > 0)
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
}

CT_NOINST void ct_run_converter(void) {
    const char *raw = ct_raw_path();
    if (ct_run_python("convert", raw, "--from-runtime", ct_cfg.debug ? "--verbose" : "--quiet", NULL) != 0)
        ct_warn("converting the trace failed; raw trace kept at %s (calltrace convert %s)", raw, raw);
}

