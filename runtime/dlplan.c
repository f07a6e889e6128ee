/* Argument capture for libraries the program dlopen()s: when the program
 * next uses the dynamic linker (a dlopen is nearly always followed by dlsym
 * before its code runs), each newly loaded instrumented library gets a
 * capture plan made by `python -m calltrace plan --library`, added to the
 * plans loaded at start-up (capture.c). Off the hot path, like the start-up
 * plan: the program waits for Python once per such library. */
#define _GNU_SOURCE
#include <elf.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ct.h"

#define MAX_KNOWN 256
#define MAX_NEW 16

static struct { dev_t dev; ino_t ino; } known[MAX_KNOWN];
static uint32_t nknown;
static unsigned long long seen_adds;
static volatile int scanning;

static CT_NOINST int is_known(const struct stat *st) {
    for (uint32_t i = 0; i < nknown; i++)
        if (known[i].dev == st->st_dev && known[i].ino == st->st_ino)
            return 1;
    return 0;
}

static CT_NOINST void remember(const struct stat *st) {
    if (nknown < MAX_KNOWN && !is_known(st)) {
        known[nknown].dev = st->st_dev;
        known[nknown].ino = st->st_ino;
        nknown++;
    }
}

/* A module a plan covers (or that was tried): never planned again. */
CT_NOINST void ct_capture_known(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0)
        remember(&st);
}

/* Whether a loaded module calls the entry hook: its dynamic string table
 * names __cyg_profile_func_enter (an import of every instrumented one). */
static CT_NOINST int instrumented(const struct dl_phdr_info *info) {
    const char *strtab = NULL;
    size_t strsz = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type != PT_DYNAMIC)
            continue;
        for (const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
             d->d_tag != DT_NULL; d++) {
            if (d->d_tag == DT_STRTAB)   /* glibc relocates it in place; not every loader does */
                strtab = (const char *)(d->d_un.d_ptr < info->dlpi_addr ? info->dlpi_addr + d->d_un.d_ptr
                                                                          : d->d_un.d_ptr);
            else if (d->d_tag == DT_STRSZ)
                strsz = d->d_un.d_val;
        }
    }
    static const char hook[] = "__cyg_profile_func_enter";
    return strtab && strsz && memmem(strtab, strsz, hook, sizeof hook) != NULL;
}

struct found {
    uint32_t n;
    char paths[MAX_NEW][PATH_MAX];
};

static CT_NOINST int collect(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    struct found *f = arg;
    struct stat st;
    if (!info->dlpi_name || !info->dlpi_name[0] || f->n >= MAX_NEW || stat(info->dlpi_name, &st) != 0 ||
        is_known(&st))
        return 0;
    remember(&st);   /* tried once, planned or not */
    if (instrumented(info) && strlen(info->dlpi_name) < PATH_MAX)
        strcpy(f->paths[f->n++], info->dlpi_name);
    return 0;
}

static CT_NOINST int adds(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    *(unsigned long long *)arg = info->dlpi_adds;
    return 1;
}

/* Plan the instrumented libraries loaded since the last look. Called from
 * the dlopen/dlsym stubs (interpose.c), never from a hook. */
CT_NOINST void ct_capture_scan(void) {
    static struct found f;
    struct ct_header *h = ct_header();
    if (!__atomic_load_n(&ct_capture_on, __ATOMIC_ACQUIRE) || !h || h->pid != (int32_t)getpid() ||
        ct_vfork_child() || __atomic_exchange_n(&scanning, 1, __ATOMIC_ACQUIRE))
        return;
    unsigned long long now = 0;
    dl_iterate_phdr(adds, &now);   /* the loader's count of loads: cheap */
    if (now != seen_adds) {
        seen_adds = now;
        f.n = 0;
        dl_iterate_phdr(collect, &f);
        for (uint32_t i = 0; i < f.n; i++) {
            char plan[PATH_MAX + 32];
            snprintf(plan, sizeof plan, "%s.dl%u.plan", ct_raw_path(), i);
            if (ct_run_python("plan", f.paths[i], "-o", plan, "--library") == 0)
                ct_capture_load(plan);
            else
                ct_warn("could not make a capture plan for %s; its arguments are not captured", f.paths[i]);
            unlink(plan);
        }
    }
    __atomic_store_n(&scanning, 0, __ATOMIC_RELEASE);
}
