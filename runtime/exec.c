/* The exec family, interposed (docs/RUNTIME.md, "Hard cases"). The image is
 * replaced and no destructor runs: the header records EXEC (so the trace says
 * why it ends there) and, with a bare LD_PRELOAD, the trace so far is
 * converted now, under CALLTRACE_OUTPUT; the new image, if traced, writes
 * OUT.<pid>-N.json (CALLTRACE_OUTPUT rewritten in the environment it gets),
 * as `calltrace run` names it. Under `calltrace run` the parent converts every
 * image's raw stream after the program ends. No malloc, no locks. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ct.h"

/* Is there something exec could run at `path` (PATH searched when `search`)?
 * A failed exec must not end the trace of a process that goes on. */
static CT_NOINST int runnable(const char *path, int search) {
    struct stat st;
    if (!path || !*path)
        return 0;
    if (!search || strchr(path, '/'))
        return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
    const char *dirs = getenv("PATH");
    if (!dirs)
        dirs = "/bin:/usr/bin";
    char full[PATH_MAX];
    for (const char *p = dirs;; ) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        int len = n ? snprintf(full, sizeof full, "%.*s/%s", (int)n, p, path)
                    : snprintf(full, sizeof full, "%s", path);
        if (len > 0 && len < (int)sizeof full && stat(full, &st) == 0 && S_ISREG(st.st_mode) &&
            access(full, X_OK) == 0)
            return 1;
        if (!colon)
            return 0;
        p = colon + 1;
    }
}

/* Is this process the one that owns the raw stream, with it still open? A
 * vfork() child or the converter's own clone() child shares our memory and
 * must leave it alone. */
static CT_NOINST int owns_stream(void) {
    struct ct_header *h = ct_header();
    return h && h->pid == (int32_t)getpid() && __atomic_load_n(&h->end_state, __ATOMIC_ACQUIRE) == CT_END_RUNNING;
}

/* OUT.<pid>.ext (a new process) or OUT.<pid>-N.ext (the next image of this
 * one) from `cur`, which may itself be such a name for this pid. */
static CT_NOINST void output_for(char *dst, size_t size, const char *cur, int pid, int next_image) {
    const char *slash = strrchr(cur, '/');
    const char *dot = strrchr(cur, '.');
    if (!dot || (slash && dot < slash))
        dot = cur + strlen(cur);
    char tag[32];
    int taglen = snprintf(tag, sizeof tag, ".%d", pid);
    const char *stem_end = dot, *p = dot;
    int n = 0;
    while (p > cur && p[-1] >= '0' && p[-1] <= '9')
        p--;
    if (p < dot && p > cur && p[-1] == '-') {       /* ".<pid>-<n>" */
        const char *q = p - 1;
        if (q - cur >= taglen && !memcmp(q - taglen, tag, (size_t)taglen)) {
            n = atoi(p);
            stem_end = q - taglen;
        }
    } else if (p < dot && dot - cur >= taglen && !memcmp(dot - taglen, tag, (size_t)taglen)) {
        stem_end = dot - taglen;                    /* ".<pid>" */
    }
    if (next_image)
        snprintf(dst, size, "%.*s.%d-%d%s", (int)(stem_end - cur), cur, pid, n + 1, dot);
    else
        snprintf(dst, size, "%.*s.%d%s", (int)(stem_end - cur), cur, pid, dot);
}

#define ENV_MAX 4096

/* With a bare LD_PRELOAD every traced process converts to CALLTRACE_OUTPUT
 * itself: an image that will be traced too must get a name of its own, or
 * the last one to end overwrites the others. Returns `envp`, or `buf` with
 * CALLTRACE_OUTPUT set. */
static CT_NOINST char *const *rename_output(char *const *envp, char **buf, char *outvar, size_t outsize,
                                            int next_image) {
    if (!envp || !ct_cfg.bare || ct_cfg.to_null || !ct_cfg.output[0])
        return envp;
    size_t n = 0, at = (size_t)-1;
    int traced = 0;
    for (; envp[n]; n++) {
        if (n == ENV_MAX - 2)
            return envp;
        if (!strncmp(envp[n], "CALLTRACE_OUTPUT=", 17))
            at = n;
        else if (!strncmp(envp[n], "LD_PRELOAD=", 11) && strstr(envp[n], "libcalltrace"))
            traced = 1;
    }
    if (!traced || (at != (size_t)-1 && !strcmp(envp[at] + 17, "/dev/null")))
        return envp;
    char next[4096];
    output_for(next, sizeof next, ct_cfg.output, (int)getpid(), next_image);
    snprintf(outvar, outsize, "CALLTRACE_OUTPUT=%s", next);
    for (size_t i = 0; i < n; i++)
        buf[i] = envp[i];
    if (at == (size_t)-1)
        at = n++;
    buf[at] = outvar;
    buf[n] = NULL;
    return buf;
}

/* Under `calltrace run` every process the program starts is traced: one
 * started with an environment of its own that lacks the runtime (execve or
 * posix_spawn with an envp, a program that cleared LD_PRELOAD) gets it back,
 * with the CALLTRACE_* settings it lacks (uftrace does the same). Returns
 * `envp`, or `buf` (ENV_MAX entries) with `var` holding LD_PRELOAD. */
#define VAR_MAX (2 * 4096 + 32)

static CT_NOINST int has_var(char *const *envp, size_t n, const char *entry) {
    size_t len = (size_t)(strchr(entry, '=') - entry) + 1;
    for (size_t i = 0; i < n; i++)
        if (!strncmp(envp[i], entry, len))
            return 1;
    return 0;
}

static CT_NOINST char *const *keep_traced(char *const *envp, char **buf, char *var) {
    const char *lib = ct_lib_path();
    if (ct_cfg.bare || !lib[0])
        return envp;
    const char *const *settings = ct_config_env();
    size_t n = 0, pre = (size_t)-1;
    int traced = 0, missing = 0;
    for (; envp && envp[n]; n++) {
        if (n == ENV_MAX - 80)
            return envp;
        if (!strncmp(envp[n], "LD_PRELOAD=", 11)) {
            pre = n;
            traced = strstr(envp[n], "libcalltrace") != NULL;
        }
    }
    size_t count = n;
    for (size_t i = 0; settings[i]; i++)
        missing += !has_var(envp, count, settings[i]);
    if (traced && !missing)
        return envp;
    for (size_t i = 0; i < n; i++)
        buf[i] = envp[i];
    if (!traced) {
        const char *old = pre == (size_t)-1 ? "" : envp[pre] + 11;
        int len = snprintf(var, VAR_MAX, "LD_PRELOAD=%s%s%s", lib, *old ? ":" : "", old);
        if (len >= VAR_MAX)
            snprintf(var, VAR_MAX, "LD_PRELOAD=%s", lib);
        if (pre == (size_t)-1)
            pre = n++;
        buf[pre] = var;
    }
    for (size_t i = 0; settings[i]; i++)
        if (!has_var(envp, count, settings[i]))
            buf[n++] = (char *)settings[i];
    buf[n] = NULL;
    return buf;
}

/* Runs before a real exec of something runnable (`ok`). Returns the
 * environment the new image gets. */
static CT_NOINST char *const *before_exec(int ok, char *const *envp, char **buf, char *outvar, size_t outsize) {
    struct ct_header *h = ct_header();
    if (h && h->pid != (int32_t)getpid())
        /* A vfork() child: the stream is its parent's; it is a new process. */
        return ct_cfg.bare ? rename_output(envp, buf, outvar, outsize, 0) : keep_traced(envp, buf, outvar);
    if (!owns_stream() || !ok)
        return ct_cfg.bare ? envp : keep_traced(envp, buf, outvar);
    ct_scan_modules(0);
    if (!ct_cfg.bare) {
        ct_thread_names();
        ct_clock_pair(&h->end_ticks, &h->end_mono_ns);
        h->exit_code = -1;
        __atomic_store_n(&h->end_state, (uint32_t)CT_END_EXEC, __ATOMIC_RELEASE);
        return keep_traced(envp, buf, outvar);
    }
    ct_finish(CT_END_EXEC, -1, 0);
    return rename_output(envp, buf, outvar, outsize, 1);
}

static CT_NOINST void exec_failed(void) {
    /* Under calltrace run the stream goes on; after a bare-mode conversion
     * the trace has been written and recording stays off. */
    struct ct_header *h = ct_header();
    if (h && !ct_cfg.bare && h->pid == (int32_t)getpid() &&
        __atomic_load_n(&h->end_state, __ATOMIC_ACQUIRE) == CT_END_EXEC)
        __atomic_store_n(&h->end_state, (uint32_t)CT_END_RUNNING, __ATOMIC_RELEASE);
}

/* Only returns when the exec failed. */
static CT_NOINST int after_exec(int r) {
    int saved = errno;
    exec_failed();
    errno = saved;
    return r;
}

typedef int (*execve_fn)(const char *, char *const[], char *const[]);

static CT_NOINST int do_exec(const char *name, const char *path, char *const argv[], char *const envp[],
                             int search) {
    char *buf[ENV_MAX];
    char outvar[VAR_MAX];
    char *const *env = before_exec(runnable(path, search), envp, buf, outvar, sizeof outvar);
    execve_fn real = (execve_fn)ct_resolve(name);
    return after_exec(real(path, argv, (char *const *)env));
}

CT_EXPORT CT_NOINST int execve(const char *path, char *const argv[], char *const envp[]) {
    return do_exec("execve", path, argv, envp, 0);
}

CT_EXPORT CT_NOINST int execvpe(const char *file, char *const argv[], char *const envp[]) {
    return do_exec("execvpe", file, argv, envp, 1);
}

extern char **environ;

CT_EXPORT CT_NOINST int execv(const char *path, char *const argv[]) {
    return do_exec("execve", path, argv, environ, 0);
}

CT_EXPORT CT_NOINST int execvp(const char *file, char *const argv[]) {
    return do_exec("execvpe", file, argv, environ, 1);
}

/* execl*: gather the variadic arguments on the stack (no malloc). */
#define GATHER(first, ap, argv, n)                       \
    size_t n = 1;                                        \
    va_start(ap, first);                                 \
    while (va_arg(ap, char *))                           \
        n++;                                             \
    va_end(ap);                                          \
    char *argv[n + 1];                                   \
    argv[0] = (char *)first;                             \
    va_start(ap, first);                                 \
    for (size_t i = 1; i <= n; i++)                      \
        argv[i] = va_arg(ap, char *);

CT_EXPORT CT_NOINST int execl(const char *path, const char *arg, ...) {
    va_list ap;
    GATHER(arg, ap, argv, n)
    va_end(ap);
    return do_exec("execve", path, argv, environ, 0);
}

CT_EXPORT CT_NOINST int execlp(const char *file, const char *arg, ...) {
    va_list ap;
    GATHER(arg, ap, argv, n)
    va_end(ap);
    return do_exec("execvpe", file, argv, environ, 1);
}

CT_EXPORT CT_NOINST int execle(const char *path, const char *arg, ...) {
    va_list ap;
    GATHER(arg, ap, argv, n)
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return do_exec("execve", path, argv, envp, 0);
}

/* The descriptor forms: fexecve (glibc runs it through its own internal
 * execveat/execve, which are not interposed) and execveat. */
static CT_NOINST int fd_runnable(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

typedef int (*fexecve_fn)(int, char *const[], char *const[]);

CT_EXPORT CT_NOINST int fexecve(int fd, char *const argv[], char *const envp[]) {
    char *buf[ENV_MAX];
    char outvar[VAR_MAX];
    char *const *env = before_exec(fd_runnable(fd), envp, buf, outvar, sizeof outvar);
    fexecve_fn real = (fexecve_fn)ct_resolve("fexecve");
    return after_exec(real(fd, argv, (char *const *)env));
}

typedef int (*execveat_fn)(int, const char *, char *const[], char *const[], int);

CT_EXPORT CT_NOINST int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                                 int flags) {
    int ok;
    const char *p = path;
    __asm__("" : "+r"(p));   /* declared nonnull, but a NULL must reach the kernel (EFAULT), not crash here */
    if (p && !*p && (flags & AT_EMPTY_PATH)) {
        ok = fd_runnable(dirfd);
    } else {
        struct stat st;
        ok = p && *p && fstatat(dirfd, path, &st, flags & AT_SYMLINK_NOFOLLOW) == 0 &&
             S_ISREG(st.st_mode) && faccessat(dirfd, path, X_OK, 0) == 0;
    }
    char *buf[ENV_MAX];
    char outvar[VAR_MAX];
    char *const *env = before_exec(ok, envp, buf, outvar, sizeof outvar);
    execveat_fn real = (execveat_fn)ct_resolve("execveat");
    return after_exec(real(dirfd, path, argv, (char *const *)env, flags));
}

/* posix_spawn: glibc runs the child through its own internal execve, so the
 * environment is fixed up here (system() and popen() pass environ, which
 * still has the runtime unless the program removed it). */
typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                        char *const[], char *const[]);

static CT_NOINST int spawn(const char *name, pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    char *buf[ENV_MAX];
    char var[VAR_MAX];
    char *const *env = keep_traced(envp, buf, var);
    return ((spawn_fn)ct_resolve(name))(pid, path, fa, attr, argv, (char *const *)env);
}

CT_EXPORT CT_NOINST int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                                    const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    return spawn("posix_spawn", pid, path, fa, attr, argv, envp);
}

CT_EXPORT CT_NOINST int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                                     const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    return spawn("posix_spawnp", pid, file, fa, attr, argv, envp);
}
