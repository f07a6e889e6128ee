/* What the runtime asks of its own process: its executable, the load biases of
 * it and its libraries, its threads; and the files Python hands it (capture
 * plan, filter), which name those modules. No malloc (some callers run in
 * signal handlers). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

/* The file a loaded object was mapped from, as an absolute path: the
 * loader's name when it is one; the executable's for the empty name; else
 * (a library loaded by a relative path, "./libx.so" or through
 * LD_LIBRARY_PATH=.) the path the kernel gives its mapping in
 * /proc/self/maps, which does not depend on the working folder. 0 when it
 * has no file (the vDSO). No malloc: read in pieces. */
CT_NOINST int ct_module_path(const struct dl_phdr_info *info, char *buf, size_t size) {
    const char *name = info->dlpi_name;
    if (!name || !*name)
        return ct_exe_path(buf, size) > 0;
    if (name[0] == '/') {
        snprintf(buf, size, "%s", name);
        return 1;
    }
    uintptr_t at = 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_LOAD) {
            at = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
            break;
        }
    int f = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (!at || f < 0)
        return 0;
    char chunk[8192], line[PATH_MAX + 128];
    size_t len = 0;
    int found = 0;
    ssize_t n;
    while (!found && (n = read(f, chunk, sizeof chunk)) > 0) {
        for (ssize_t i = 0; i < n && !found; i++) {
            if (chunk[i] != '\n') {
                if (len < sizeof line - 1)
                    line[len++] = chunk[i];
                continue;
            }
            line[len] = 0;
            len = 0;
            char *end;
            uintptr_t lo = strtoull(line, &end, 16), hi = *end == '-' ? strtoull(end + 1, NULL, 16) : 0;
            char *path = strchr(line, '/');
            if (at >= lo && at < hi && path && strlen(path) < size && !strstr(path, " (deleted)")) {
                strcpy(buf, path);
                found = 1;
            }
        }
    }
    close(f);
    return found;
}

/* Is `path` this process's executable (as a real path)? */
static CT_NOINST int is_exe(const char *path) {
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
    char path[PATH_MAX];
    if (info->dlpi_name && info->dlpi_name[0] && ct_module_path(info, path, sizeof path) && stat(path, &st) == 0 &&
        st.st_dev == f->dev && st.st_ino == f->ino) {
        f->bias = info->dlpi_addr;
        f->found = 1;
        return 1;
    }
    return 0;
}

static CT_NOINST int lib_bias_of(const char *path, uint64_t *bias) {
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

/* Where module `index` of a plan's or filter's module list is loaded: 1
 * with its bias, 0 when it is not loaded, -1 when module 0 is not this
 * executable (an exec'd image inherits its parent's files). */
CT_NOINST int ct_module_bias(uint32_t index, const char *path, uint64_t *bias) {
    if (index > 0)
        return lib_bias_of(path, bias);
    if (!is_exe(path))
        return -1;
    *bias = ct_exe_bias();
    return 1;
}

/* One entry of such a module list: u32 length, then the path. Copies the
 * path (PATH_MAX bytes) and returns the offset after it; 0 when the entry
 * does not fit before `end`. */
CT_NOINST uint64_t ct_module_entry(const char *m, uint64_t at, uint64_t end, char *path) {
    uint32_t len;
    if (at + 4 > end)
        return 0;
    memcpy(&len, m + at, 4);
    if (len >= PATH_MAX || at + 4 + len > end)
        return 0;
    memcpy(path, m + at + 4, len);
    path[len] = 0;
    return at + 4 + len;
}

/* A file Python hands the runtime (`what`: "capture plan", "filter"), mapped
 * whole and read-only, its 8-byte magic checked; NULL, with a warning ending
 * in `otherwise`, when it cannot be read or is not one. */
CT_NOINST const char *ct_map_input(const char *path, const char *magic, size_t min_size, size_t *size,
                                   const char *what, const char *otherwise) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ct_warn("cannot read the %s %s: %s; %s", what, path, strerror(errno), otherwise);
        return NULL;
    }
    struct stat st;
    const char *m = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= min_size)
        m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m != MAP_FAILED && !memcmp(m, magic, 8)) {
        *size = (size_t)st.st_size;
        return m;
    }
    if (m != MAP_FAILED)
        munmap((void *)m, (size_t)st.st_size);
    ct_warn("%s is not a calltrace %s; %s", path, what, otherwise);
    return NULL;
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
