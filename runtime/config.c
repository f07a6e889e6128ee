/* CALLTRACE_* environment variables. A bad value gets one line on stderr and
 * the default: the traced program always runs. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "ct.h"

struct ct_config ct_cfg;

static CT_NOINST void vsay(const char *fmt, va_list ap) {
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "calltrace: ");
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    if (m < 0)
        return;
    n += m;
    if (n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w = write(2, buf, (size_t)n);
    (void)w;
}

CT_NOINST void ct_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
}

CT_NOINST void ct_log(const char *fmt, ...) {
    if (!ct_cfg.debug)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
}

/* 1/0, true/false, yes/no, on/off; anything else warns and keeps `dflt`. */
static CT_NOINST int env_bool(const char *name, int dflt) {
    const char *v = ct_env(name);
    if (!v || !*v)
        return dflt;
    static const char *yes[] = {"1", "true", "yes", "on", "TRUE", "YES", "ON", "True"};
    static const char *no[] = {"0", "false", "no", "off", "FALSE", "NO", "OFF", "False"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (!strcmp(v, yes[i]))
            return 1;
        if (!strcmp(v, no[i]))
            return 0;
    }
    ct_warn("%s=%s is not a boolean (use 1 or 0); using %d", name, v, dflt);
    return dflt;
}

static CT_NOINST long env_long(const char *name, long dflt, long lo, long hi) {
    const char *v = ct_env(name);
    if (!v || !*v)
        return dflt;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        ct_warn("%s=%s is not a whole number from %ld to %ld; ignoring it", name, v, lo, hi);
        return dflt;
    }
    return x;
}

/* A duration as calltrace/units.py reads it (tests/data/durations.txt holds
 * the cases both must agree on): optional spaces, a decimal number ("10",
 * "2.5", ".5", "3."), optional spaces, an optional unit ns (the default),
 * us, µs, μs, ms or s, optional spaces; rounded to the nearest nanosecond,
 * halves up; at most 10^15 ns. Returns -1 for anything else. No strtod:
 * no sign, exponent, hex, inf or locale. */
static CT_NOINST int64_t parse_duration(const char *v) {
    static const struct { const char *name; uint64_t ns; int digits; } units[] = {
        {"ns", 1, 0}, {"us", 1000, 3}, {"\xc2\xb5s", 1000, 3}, {"\xce\xbcs", 1000, 3},
        {"ms", 1000000, 6}, {"s", 1000000000, 9}};
    const uint64_t max = 1000000000000000ull;
    const char *p = v, *whole, *frac = NULL;
    while (*p == ' ')
        p++;
    whole = p;
    while (*p >= '0' && *p <= '9')
        p++;
    size_t nwhole = (size_t)(p - whole), nfrac = 0;
    if (*p == '.') {
        frac = ++p;
        while (*p >= '0' && *p <= '9')
            p++;
        nfrac = (size_t)(p - frac);
    }
    if (nwhole + nfrac == 0)
        return -1;
    while (*p == ' ')
        p++;
    size_t u = 0;
    if (*p) {
        for (u = 0; u < sizeof units / sizeof *units; u++) {
            size_t n = strlen(units[u].name);
            if (!strncmp(p, units[u].name, n)) {
                p += n;
                break;
            }
        }
        if (u == sizeof units / sizeof *units)
            return -1;
    }
    while (*p == ' ')
        p++;
    if (*p)
        return -1;
    uint64_t ns = 0;
    for (size_t i = 0; i < nwhole; i++) {
        ns = ns * 10 + (uint64_t)(whole[i] - '0');
        if (ns > max)
            return -1;
    }
    if (ns > max / units[u].ns)
        return -1;
    ns *= units[u].ns;
    /* The fraction's first `digits` digits are whole nanoseconds; the next
     * one rounds. */
    uint64_t scale = units[u].ns;
    for (size_t i = 0; i < nfrac && i <= (size_t)units[u].digits; i++) {
        uint64_t d = (uint64_t)(frac[i] - '0');
        if (i == (size_t)units[u].digits) {
            ns += d >= 5;
        } else {
            scale /= 10;
            ns += d * scale;
        }
    }
    return ns > max ? -1 : (int64_t)ns;
}

static CT_NOINST uint64_t env_duration(const char *name) {
    const char *v = ct_env(name);
    if (!v || !*v)
        return 0;
    int64_t ns = parse_duration(v);
    if (ns < 0) {
        ct_warn("%s=%s is not a duration (a number with ns, us, ms or s, e.g. 10us, 2.5ms); ignoring it",
                name, v);
        return 0;
    }
    return (uint64_t)ns;
}

/* A size in bytes: "500M", "2G", "64k", a plain number of bytes (K, M, G,
 * T are powers of 1024; a trailing "B" or "iB" is allowed). With `pct`,
 * "N%" is a percentage instead. 0: not set. */
static CT_NOINST uint64_t env_size(const char *name, uint64_t dflt, uint32_t *pct) {
    const char *v = ct_env(name);
    if (!v || !*v)
        return dflt;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    double scale = 1;
    const char *units = "KMGT";
    const char *u = *end ? strchr(units, *end & ~0x20) : NULL;
    if (*end && u) {
        for (const char *k = units; k <= u; k++)
            scale *= 1024;
        end++;
    }
    if (pct && !strcmp(end, "%") && x >= 0 && x <= 100 && !u) {
        *pct = (uint32_t)x;
        return 0;
    }
    if (!strcmp(end, "iB") && u)
        end += 2;
    else if ((*end & ~0x20) == 'B' && !end[1])
        end++;
    if (errno || end == v || *end || x < 0 || x * scale > 1.8e19) {
        ct_warn("%s=%s is not a size (like 500M, 2G%s); ignoring it", name, v, pct ? ", 5%" : "");
        return dflt;
    }
    return (uint64_t)(x * scale);
}

static CT_NOINST int env_signal(const char *name, int dflt) {
    const char *v = ct_env(name);
    if (!v || !*v)
        return dflt;
    static const struct { const char *name; int sig; } names[] = {
        {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2},
        {"PROF", SIGPROF}, {"SIGPROF", SIGPROF}, {"WINCH", SIGWINCH}, {"SIGWINCH", SIGWINCH},
        {"none", 0}, {"0", 0}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(v, names[i].name))
            return names[i].sig;
    char *end;
    long x = strtol(v, &end, 10);
    if (!*end && x >= SIGRTMIN && x <= SIGRTMAX)
        return (int)x;
    ct_warn("%s=%s is not USR1, USR2, PROF, WINCH, a real-time signal number or none; using %s",
            name, v, dflt == SIGUSR1 ? "USR1" : "none");
    return dflt;
}

/* Code in the program's .preinit_array can run the runtime before libc has
 * set `environ` (getenv finds nothing): lend libc the environment the
 * process was started with, read from the kernel (/proc/self/environ), until
 * its own start-up sets the real one, which has the same contents. No
 * malloc: libc is not set up either. */
extern char **environ;
static int borrowed;
static char pending_root[4096 + 32];   /* CALLTRACE_ROOT, set once libc is */

static CT_NOINST void borrow_environ(void) {
    size_t cap = 1 << 16, n = 0;
    char *buf = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int f = buf == MAP_FAILED ? -1 : open("/proc/self/environ", O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return;
    for (;;) {
        if (n + 1 >= cap) {
            void *m = mremap(buf, cap, cap * 2, MREMAP_MAYMOVE);
            if (m == MAP_FAILED)
                break;
            buf = m;
            cap *= 2;
        }
        ssize_t r = read(f, buf + n, cap - n - 1);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(f);
    buf[n] = 0;
    size_t count = 1;
    for (size_t i = 0; i < n; i++)
        count += !buf[i];
    char **env = mmap(NULL, (count + 1) * sizeof *env, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (env == MAP_FAILED)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n && k < count; i += strlen(buf + i) + 1)
        env[k++] = buf + i;
    env[k] = NULL;
    environ = env;
    borrowed = 1;
    ct_log("environ not set yet (.preinit_array): configuration read from /proc/self/environ");
}

/* The CALLTRACE_* settings this process started with, for the environments
 * of processes it starts with one of their own (exec.c, under calltrace run). */
static char saved_env[16384];
static const char *saved_vars[64];

static CT_NOINST void save_settings(void) {
    size_t used = 0, n = 0;
    for (char **e = environ; e && *e && n < sizeof saved_vars / sizeof *saved_vars - 1; e++) {
        size_t len = strlen(*e) + 1;
        if (strncmp(*e, "CALLTRACE_", 10) || !strncmp(*e, "CALLTRACE_ROOT=", 15) || used + len > sizeof saved_env)
            continue;
        memcpy(saved_env + used, *e, len);
        saved_vars[n++] = saved_env + used;
        used += len;
    }
    saved_vars[n] = NULL;
}

CT_NOINST const char *const *ct_config_env(void) { return saved_vars; }

/* From the runtime's constructor, once libc is set up. */
CT_NOINST void ct_config_late(void) {
    if (pending_root[0] && !getenv("CALLTRACE_ROOT"))
        setenv("CALLTRACE_ROOT", pending_root, 1);
    pending_root[0] = 0;
}

CT_NOINST void ct_config_read(void) {
    struct ct_config *c = &ct_cfg;
    if (!environ)
        borrow_environ();
    save_settings();
    c->debug = env_bool("CALLTRACE_DEBUG", 0);
    const char *out = ct_env("CALLTRACE_OUTPUT");
    if (!out || !*out)
        out = "calltrace.json";
    if (strlen(out) >= sizeof c->output - 32) {
        ct_warn("CALLTRACE_OUTPUT is too long; using calltrace.json");
        out = "calltrace.json";
    }
    strcpy(c->output, out);
    c->to_null = !strcmp(out, "/dev/null");
    /* Under a bare LD_PRELOAD every process the program starts (system(),
     * posix_spawn) inherits CALLTRACE_OUTPUT: the first one owns that name,
     * the others are named by pid, like forked children. */
    char mark[4096 + 32];
    snprintf(mark, sizeof mark, "%d:%s", (int)getpid(), out);
    const char *root = ct_env("CALLTRACE_ROOT");
    const char *colon = root ? strchr(root, ':') : NULL;
    /* A name given to this process on purpose (exec, fork) is left alone. */
    c->descendant = colon && !c->to_null && atoi(root) != (int)getpid() && !strcmp(colon + 1, out);
    if ((!root || !*root) && borrowed)
        snprintf(pending_root, sizeof pending_root, "%s", mark);   /* libc replaces environ soon */
    else if ((!root || !*root) && !ct_attach_late())   /* attach: the environment is the program's */
        setenv("CALLTRACE_ROOT", mark, 1);
    const char *raw = ct_env("CALLTRACE_RAW_DIR");
    c->bare = !(raw && *raw);
    if (!c->bare) {
        if (strlen(raw) >= sizeof c->raw_dir - 32)
            raw = "/tmp";
        strcpy(c->raw_dir, raw);
    }
    long depth = env_long("CALLTRACE_MAX_DEPTH", 0, 0, 0x7fffffff);
    c->max_depth = depth > 0 ? (uint32_t)depth : 0x7fffffffu;
    c->pretty = env_bool("CALLTRACE_PRETTY_JSON", 0);
    c->capture_args = env_bool("CALLTRACE_CAPTURE_ARGS", 0);
    c->start_off = 0;
    const char *start = ct_env("CALLTRACE_START");
    if (start && *start) {
        if (!strcmp(start, "off"))
            c->start_off = 1;
        else if (strcmp(start, "on"))
            ct_warn("CALLTRACE_START=%s is not 'on' or 'off'; starting on", start);
    }
    c->threshold_ns = env_duration("CALLTRACE_THRESHOLD");
    c->rolling = env_bool("CALLTRACE_OUTPUT_ROLLING", 0);
    c->keep = (int)env_long("CALLTRACE_ROLLING_KEEP", 10, 1, 1000000);
    c->flush_interval = (uint64_t)env_long("CALLTRACE_FLUSH_INTERVAL", c->rolling ? 1000000 : 0, 0, 0x7fffffffffffffffL);
    /* The program's signals are its own: no toggle unless asked for, by
     * name or by starting off (which needs a way to turn recording on). */
    c->toggle_signal = env_signal("CALLTRACE_TOGGLE_SIGNAL", c->start_off ? SIGUSR1 : 0);
    long kb = env_long("CALLTRACE_BUFFER_KB", 256, 16, 65536);
    c->chunk_size = (size_t)kb * 1024;
    if (c->chunk_size % 4096)
        c->chunk_size = (c->chunk_size + 4095) & ~(size_t)4095;
    c->max_size = env_size("CALLTRACE_MAX_SIZE", 0, NULL);
    /* Leave the smaller of 1 GiB and 5% of the file system free by default. */
    c->min_free_pct = 5;
    c->min_free = 1ull << 30;
    const char *mf = getenv("CALLTRACE_MIN_FREE");
    if (mf && *mf) {
        uint32_t pct = 0;
        uint64_t bytes = env_size("CALLTRACE_MIN_FREE", UINT64_MAX, &pct);
        if (bytes != UINT64_MAX) {   /* else not a size: the default stays */
            c->min_free = bytes;
            c->min_free_pct = pct;
        }
    }
    ct_max_depth = c->max_depth;
    ct_log("config: output=%s max_depth=%ld (0: unlimited) pretty=%d capture_args=%d start=%s "
           "buffer=%zuKB mode=%s threshold_ns=%llu", c->output, depth, c->pretty, c->capture_args,
           c->start_off ? "off" : "on", c->chunk_size / 1024, c->bare ? "preload" : "calltrace-run",
           (unsigned long long)c->threshold_ns);
}
