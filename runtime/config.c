/* CALLTRACE_* environment variables. A bad value gets one line on stderr and
 * the default: the traced program always runs. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

CT_NOINST void ct_config_read(void) {
    struct ct_config *c = &ct_cfg;
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
    if ((!root || !*root) && !ct_attach_late())   /* attach: the environment is the program's */
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
    c->toggle_signal = env_signal("CALLTRACE_TOGGLE_SIGNAL", SIGUSR1);
    long kb = env_long("CALLTRACE_BUFFER_KB", 256, 16, 65536);
    c->chunk_size = (size_t)kb * 1024;
    if (c->chunk_size % 4096)
        c->chunk_size = (c->chunk_size + 4095) & ~(size_t)4095;
    ct_max_depth = c->max_depth;
    ct_log("config: output=%s max_depth=%ld (0: unlimited) pretty=%d capture_args=%d start=%s "
           "buffer=%zuKB mode=%s threshold_ns=%llu", c->output, depth, c->pretty, c->capture_args,
           c->start_off ? "off" : "on", c->chunk_size / 1024, c->bare ? "preload" : "calltrace-run",
           (unsigned long long)c->threshold_ns);
}
