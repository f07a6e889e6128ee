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

static CT_NOINST const void *dyn_ptr(const struct dl_phdr_info *info, ElfW(Addr) v) {
    /* glibc relocates the dynamic section's pointers in place; not every loader does */
    return (const void *)(v < info->dlpi_addr ? info->dlpi_addr + v : v);
}

/* Whether a loaded module imports the entry hook (every instrumented one
 * does): a relocation against an undefined __cyg_profile_func_enter. A
 * module that defines it (glibc's empty hooks, this runtime) does not. */
static CT_NOINST int instrumented(const struct dl_phdr_info *info) {
    const char *strtab = NULL;
    const ElfW(Sym) *symtab = NULL;
    const ElfW(Rela) *rel[2] = {NULL, NULL};
    size_t relsz[2] = {0, 0};
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type != PT_DYNAMIC)
            continue;
        for (const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
             d->d_tag != DT_NULL; d++) {
            switch (d->d_tag) {
            case DT_STRTAB: strtab = dyn_ptr(info, d->d_un.d_ptr); break;
            case DT_SYMTAB: symtab = dyn_ptr(info, d->d_un.d_ptr); break;
            case DT_RELA: rel[0] = dyn_ptr(info, d->d_un.d_ptr); break;
            case DT_RELASZ: relsz[0] = d->d_un.d_val; break;
            case DT_JMPREL: rel[1] = dyn_ptr(info, d->d_un.d_ptr); break;
            case DT_PLTRELSZ: relsz[1] = d->d_un.d_val; break;
            }
        }
    }
    if (!strtab || !symtab)
        return 0;
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; rel[k] && i < relsz[k] / sizeof(ElfW(Rela)); i++) {
            const ElfW(Sym) *sym = &symtab[ELF64_R_SYM(rel[k][i].r_info)];
            if (ELF64_R_SYM(rel[k][i].r_info) && sym->st_shndx == SHN_UNDEF &&
                !strcmp(strtab + sym->st_name, "__cyg_profile_func_enter"))
                return 1;
        }
    }
    return 0;
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
