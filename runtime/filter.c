/* --function/--exclude at record time: the set of entry addresses that
 * Python matched against the regular expression, in the executable and the
 * instrumented libraries it loads at start-up; the hot path asks only when a
 * filter is on. File (calltrace/cli/filter.py): "CTFILT02", u32 mode, u32
 * module count, then per module: u32 path length, the path, u32 count, count
 * u64 link-time addresses. Module 0 is the executable. */
#define _GNU_SOURCE
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include "ct.h"

static uint64_t *set;
static size_t mask;

static CT_NOINST void add(uint64_t a) {
    size_t j = (a * 0x9E3779B97F4A7C15ull >> 32) & mask;
    while (set[j] && set[j] != a)
        j = (j + 1) & mask;
    set[j] = a;
}

/* Returns 0 when loaded, 1 when the filter is for another program (an
 * exec'd image inherits CALLTRACE_FILTER), -1 on an error. */
CT_NOINST int ct_filter_load(const char *path) {
    size_t size;
    const char *m = ct_map_input(path, "CTFILT02", 16, &size, "filter", "recording everything");
    if (!m)
        return -1;
    uint64_t end = size, at = 16;
    uint32_t mode, nmods;
    memcpy(&mode, m + 8, 4);
    memcpy(&nmods, m + 12, 4);
    int r = mode == CT_FILTER_INCLUDE || mode == CT_FILTER_EXCLUDE ? 0 : -1;
    /* First pass: check the layout and size the table. */
    uint64_t total = 0;
    char lib[PATH_MAX];
    for (uint32_t i = 0; r == 0 && i < nmods; i++) {
        uint32_t n;
        at = ct_module_entry(m, at, end, lib);
        if (!at || at + 4 > end) {
            r = -1;
            break;
        }
        memcpy(&n, m + at, 4);
        at += 4;
        if (at + (uint64_t)n * 8 > end) {
            r = -1;
            break;
        }
        uint64_t bias;
        if (i == 0 && ct_module_bias(0, lib, &bias) < 0)
            r = 1;
        at += (uint64_t)n * 8;
        total += n;
    }
    if (r == 0 && nmods == 0)
        r = -1;
    size_t cap = 16;
    while (r == 0 && cap < 2 * total + 2)
        cap <<= 1;
    if (r == 0) {
        set = mmap(NULL, cap * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (set == MAP_FAILED)
            r = -1;
    }
    if (r) {
        if (r < 0)
            ct_warn("filter %s is damaged; recording everything", path);
        munmap((void *)m, size);
        return r;
    }
    mask = cap - 1;
    at = 16;
    for (uint32_t i = 0; i < nmods; i++) {
        uint32_t n;
        at = ct_module_entry(m, at, end, lib);   /* checked in the first pass */
        memcpy(&n, m + at, 4);
        at += 4;
        uint64_t bias = 0;
        int loaded = ct_module_bias(i, lib, &bias) > 0;
        for (uint32_t k = 0; loaded && k < n; k++) {
            uint64_t a;
            memcpy(&a, m + at + (uint64_t)k * 8, 8);
            add(a + bias);
        }
        if (!loaded)
            ct_log("filter: %s is not loaded", lib);
        at += (uint64_t)n * 8;
    }
    munmap((void *)m, size);
    ct_log("filter %s: %llu functions in %u modules, %s", path, (unsigned long long)total, nmods,
           mode == CT_FILTER_INCLUDE ? "only their calls" : "excluded");
    ct_filter_mode = mode;
    ct_exit_slow = 1;
    return 0;
}

CT_NOINST int ct_filter_match(uint64_t fn) {
    size_t j = (fn * 0x9E3779B97F4A7C15ull >> 32) & mask;
    while (set[j]) {
        if (set[j] == fn)
            return 1;
        j = (j + 1) & mask;
    }
    return 0;
}
