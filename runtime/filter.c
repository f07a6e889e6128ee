/* -F/--function, --only and -N/--exclude at record time.
 *
 * Python matches the regular expressions against the functions of the
 * executable and of the instrumented libraries it loads at start-up, and
 * hands the runtime their entry addresses in a filter file (layout:
 * calltrace/bridge.py, FILTER_*): "CTFILT03", u32 mode (CT_FILTER_* bits),
 * u32 module count, then per module: u32 path length, the path, u32 included
 * count, u32 excluded count, the included then the excluded u64 link-time
 * addresses. Module 0 is the executable. The hot path asks only when a
 * filter is on. */
#define _GNU_SOURCE
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "ct.h"

enum { TAG_INCLUDE = 1, TAG_EXCLUDE = 2 };
enum { IN_SUBTREE = 1, IN_EXCLUDED = 2 };   /* ct_thread.fstate bits */

static uint64_t *set;       /* open addressing: run-time entry addresses */
static uint8_t *tags;       /* TAG_* of each */
static size_t mask;

static CT_NOINST size_t slot_of(uint64_t a) {
    size_t j = (a * 0x9E3779B97F4A7C15ull >> 32) & mask;
    while (set[j] && set[j] != a)
        j = (j + 1) & mask;
    return j;
}

static CT_NOINST uint32_t match(void *fn) {
    size_t j = slot_of((uint64_t)(uintptr_t)fn);
    return set[j] ? tags[j] : 0;
}

/* Walks the modules; with `add`, puts their addresses in the table. Returns
 * the number of addresses, or -1 when the layout is damaged. */
static CT_NOINST int64_t modules(const char *m, uint64_t end, uint32_t nmods, int add, int *foreign) {
    uint64_t at = 16, total = 0;
    char lib[PATH_MAX];
    for (uint32_t i = 0; i < nmods; i++) {
        uint32_t n[2];
        at = ct_module_entry(m, at, end, lib);
        if (!at || at + 8 > end)
            return -1;
        memcpy(n, m + at, 8);
        at += 8;
        uint64_t count = (uint64_t)n[0] + n[1];
        if (at + count * 8 > end)
            return -1;
        uint64_t bias = 0;
        int loaded = ct_module_bias(i, lib, &bias) > 0;
        if (i == 0 && !loaded)
            *foreign = 1;
        for (uint64_t k = 0; add && loaded && k < count; k++) {
            uint64_t a;
            memcpy(&a, m + at + k * 8, 8);
            size_t j = slot_of(a + bias);
            set[j] = a + bias;
            tags[j] |= k < n[0] ? TAG_INCLUDE : TAG_EXCLUDE;
        }
        if (add && !loaded)
            ct_log("filter: %s is not loaded", lib);
        at += count * 8;
        total += count;
    }
    return (int64_t)total;
}

/* Returns 0 when loaded, 1 when the filter is for another program (an
 * exec'd image inherits CALLTRACE_FILTER), -1 on an error. */
CT_NOINST int ct_filter_load(const char *path) {
    size_t size;
    const char *m = ct_map_input(path, "CTFILT03", 16, &size, "filter", "recording everything");
    if (!m)
        return -1;
    uint32_t mode, nmods;
    memcpy(&mode, m + 8, 4);
    memcpy(&nmods, m + 12, 4);
    int foreign = 0, r = 0;
    int64_t total = -1;
    int subtree = mode & CT_FILTER_SUBTREE, only = mode & CT_FILTER_ONLY;
    if (mode && !(mode & ~(uint32_t)CT_FILTER_ALL) && !(subtree && only) && nmods)
        total = modules(m, size, nmods, 0, &foreign);
    size_t cap = 16;
    while (total >= 0 && cap < 2 * (uint64_t)total + 2)
        cap <<= 1;
    if (total < 0)
        r = -1;
    else if (foreign)
        r = 1;
    else {
        void *mem = mmap(NULL, cap * 9, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            r = -1;
        set = mem;
        tags = (uint8_t *)(set + cap);
    }
    if (r) {
        if (r < 0)
            ct_warn("filter %s is damaged; recording everything", path);
        munmap((void *)m, size);
        return r;
    }
    mask = cap - 1;
    modules(m, size, nmods, 1, &foreign);
    munmap((void *)m, size);
    ct_log("filter %s: %lld functions in %u modules:%s%s%s", path, (long long)total, nmods,
           subtree ? " their subtrees" : "", only ? " only them" : "",
           mode & CT_FILTER_EXCLUDE ? " leaving out excluded subtrees" : "");
    ct_filter_mode = mode;
    ct_exit_slow = 1;
    return 0;
}

/* Whether the call of `fn` at depth `d` is recorded. An excluded function
 * hides its whole subtree; inside that, nothing else counts. With
 * CT_FILTER_SUBTREE only calls inside the subtree of an included function
 * are kept; with CT_FILTER_ONLY only the calls of included functions. A
 * root left without its exit (longjmp) is noticed by depth. */
CT_NOINST int ct_filter_enter(struct ct_thread *t, void *fn, uint32_t d) {
    if ((t->fstate & IN_EXCLUDED) && d <= t->xdepth)
        t->fstate &= ~(uint32_t)IN_EXCLUDED;
    if ((t->fstate & IN_SUBTREE) && d <= t->fdepth)
        t->fstate &= ~(uint32_t)IN_SUBTREE;
    if (t->fstate & IN_EXCLUDED)
        return 0;
    uint32_t tag = match(fn);
    if (tag & TAG_EXCLUDE) {
        t->fstate |= IN_EXCLUDED;
        t->xdepth = d;
        return 0;
    }
    if (ct_filter_mode & CT_FILTER_ONLY)
        return (tag & TAG_INCLUDE) != 0;
    if (!(ct_filter_mode & CT_FILTER_SUBTREE) || (t->fstate & IN_SUBTREE))
        return 1;
    if (tag & TAG_INCLUDE) {
        t->fstate |= IN_SUBTREE;
        t->fdepth = d;
        return 1;
    }
    return 0;
}

/* The same decision at the call's exit (`d`: its depth). */
CT_NOINST int ct_filter_exit(struct ct_thread *t, void *fn, uint32_t d) {
    if (t->fstate & IN_EXCLUDED) {
        if (d > t->xdepth)
            return 0;
        t->fstate &= ~(uint32_t)IN_EXCLUDED;
        if (d == t->xdepth)
            return 0;
    }
    if (ct_filter_mode & CT_FILTER_ONLY)
        return (match(fn) & TAG_INCLUDE) != 0;
    if (!(ct_filter_mode & CT_FILTER_SUBTREE))
        return 1;
    if (!(t->fstate & IN_SUBTREE) || d < t->fdepth) {
        t->fstate &= ~(uint32_t)IN_SUBTREE;
        return 0;
    }
    if (d == t->fdepth)
        t->fstate &= ~(uint32_t)IN_SUBTREE;
    return 1;
}

/* CALLTRACE_FILTER (written by `calltrace run`), or, for an exec'd image or
 * a bare LD_PRELOAD, a filter made now from CALLTRACE_FUNCTION /
 * CALLTRACE_ONLY / CALLTRACE_EXCLUDE by `python -m calltrace filter`. */
CT_NOINST void ct_filter_setup(void) {
    const char *filter = ct_env("CALLTRACE_FILTER");
    if (filter && *filter && ct_filter_load(filter) <= 0)
        return;
    /* --function and --only exclude each other: the first set wins. */
    static const struct { const char *env, *opt; } sel[] = {
        {"CALLTRACE_FUNCTION", "--function="}, {"CALLTRACE_ONLY", "--only="}, {"CALLTRACE_EXCLUDE", "--exclude="}};
    char arg[2][1024];
    const char *args[2] = {NULL, NULL};
    int n = 0;
    for (int i = 0; i < 3; i++) {
        const char *v = ct_env(sel[i].env);
        if (v && *v && (n == 0 || i == 2)) {
            snprintf(arg[n], sizeof arg[n], "%s%s", sel[i].opt, v);
            args[n] = arg[n];
            n++;
        }
    }
    if (!n)
        return;
    char exe[PATH_MAX], path[PATH_MAX + 32];
    if (ct_exe_path(exe, sizeof exe) < 0)
        return;
    snprintf(path, sizeof path, "%s.filter", ct_raw_path());
    if (ct_run_python("filter", exe, path, args[0], args[1]) == 0)
        ct_filter_load(path);
    else
        ct_warn("could not match the CALLTRACE_FUNCTION/ONLY/EXCLUDE filter against %s; recording everything",
                exe);
    unlink(path);
}
