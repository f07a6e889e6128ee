/* --function/--exclude at record time: the set of entry addresses (of the
 * executable) that Python matched against the regular expression; the hot
 * path asks only when a filter is on. File: "CTFILT01", u32 mode, u32 count,
 * then count u64 link-time addresses. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ct.h"

static uint64_t *set;
static size_t mask;

CT_NOINST int ct_filter_load(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ct_warn("cannot read the filter %s: %s; recording everything", path, strerror(errno));
        return -1;
    }
    char head[16];
    struct stat st;
    if (read(fd, head, 16) != 16 || memcmp(head, "CTFILT01", 8) || fstat(fd, &st) < 0) {
        close(fd);
        ct_warn("%s is not a calltrace filter; recording everything", path);
        return -1;
    }
    uint32_t mode, n;
    memcpy(&mode, head + 8, 4);
    memcpy(&n, head + 12, 4);
    if ((uint64_t)st.st_size < 16 + (uint64_t)n * 8 || (mode != CT_FILTER_INCLUDE && mode != CT_FILTER_EXCLUDE)) {
        close(fd);
        ct_warn("filter %s is damaged; recording everything", path);
        return -1;
    }
    uint64_t bias = ct_exe_bias();
    size_t cap = 16;
    while (cap < 2 * (size_t)n + 2)
        cap <<= 1;
    set = mmap(NULL, cap * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (set == MAP_FAILED) {
        close(fd);
        return -1;
    }
    mask = cap - 1;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t a;
        if (pread(fd, &a, 8, 16 + (off_t)i * 8) != 8)
            break;
        a += bias;
        size_t j = (a * 0x9E3779B97F4A7C15ull >> 32) & mask;
        while (set[j])
            j = (j + 1) & mask;
        set[j] = a;
    }
    close(fd);
    ct_log("filter %s: %u functions, %s", path, n, mode == CT_FILTER_INCLUDE ? "only their calls" : "excluded");
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
