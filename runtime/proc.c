/* What the runtime asks of its own process: its executable, the load biases of
 * it and its libraries, its threads. No malloc (some callers run in signal handlers). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <link.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "ct.h"

CT_NOINST int ct_exe_path(char *buf, size_t size) {
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return (int)n;
}

static CT_NOINST int first_bias(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    *(uint64_t *)arg = info->dlpi_addr;
    return 1;   /* the first object is the executable */
}

CT_NOINST uint64_t ct_exe_bias(void) {
    uint64_t bias = 0;
    dl_iterate_phdr(first_bias, &bias);
    return bias;
}

/* Is `path` this process's executable (as a real path)? */
CT_NOINST int ct_is_exe(const char *path) {
    char exe[PATH_MAX];
    return ct_exe_path(exe, sizeof exe) >= 0 && !strcmp(exe, path);
}

/* A library's load bias, found by file identity (the loader's name for it
 * may be another path to the same file). */
struct find_lib {
    dev_t dev;
    ino_t ino;
    uint64_t bias;
    int found;
};

static CT_NOINST int lib_bias(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    struct find_lib *f = arg;
    struct stat st;
    if (info->dlpi_name && info->dlpi_name[0] == '/' && stat(info->dlpi_name, &st) == 0 &&
        st.st_dev == f->dev && st.st_ino == f->ino) {
        f->bias = info->dlpi_addr;
        f->found = 1;
        return 1;
    }
    return 0;
}

CT_NOINST int ct_lib_bias(const char *path, uint64_t *bias) {
    struct stat st;
    struct find_lib f = {0, 0, 0, 0};
    if (stat(path, &st) == 0) {
        f.dev = st.st_dev;
        f.ino = st.st_ino;
        dl_iterate_phdr(lib_bias, &f);
    }
    *bias = f.bias;
    return f.found;
}

/* Calls `fn(tid, arg)` for each thread of the process until it returns
 * non-zero, and returns that (0 when none did); getdents64 rather than
 * opendir, which allocates. */
CT_NOINST int ct_each_task(int (*fn)(long tid, void *arg), void *arg) {
    char buf[4096];
    int dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return 0;
    long n;
    int stop = 0;
    while (!stop && (n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
        for (long pos = 0; pos < n && !stop;) {
            struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; } *d =
                (void *)(buf + pos);
            long tid = atol(d->name);
            if (tid > 0)
                stop = fn(tid, arg);
            pos += d->reclen;
        }
    }
    close(dir);
    return stop;
}
