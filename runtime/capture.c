/* Argument capture (CALLTRACE_CAPTURE_ARGS=1): copy the bytes a capture plan
 * names at each function's entry hook, off the plain path.
 *
 * The plan (calltrace/symbols/plan.py, `serialize`) is computed from DWARF
 * in Python once per binary and handed over as a file: CALLTRACE_PLAN under
 * `calltrace run`, or made at start-up by running `python -m calltrace plan`
 * under a bare LD_PRELOAD. Decoding into typed values happens after the run. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "ct.h"

struct plan_func {
    uint64_t origin, ret_vaddr;
    int32_t cfa_off;
    uint8_t cfa_base, module;   /* module: index into the plan's module list */
    uint16_t nops;
    uint32_t first_op, max_payload;
};

struct plan_op {
    uint8_t kind, base;
    uint16_t size;
    int32_t off;
};

enum { OP_REG = 1, OP_MEM = 2, OP_FOLLOW = 3, OP_SITE = 4, OP_DEREF = 5, OP_STRING = 0x80, BASE_RSP = 0xfd,
       BASE_CFA = 0xfe };
#define MAX_OPS 64
enum { STR_OK = 0, STR_NULL = 1, STR_INVALID = 2, STR_TRUNCATED = 3 };
#define STRING_CAP 256   /* calltrace/symbols/values.py STRING_CAP */
#define MAX_MODULES 255

struct slot {
    uint64_t key;       /* run-time address the entry hook call returns to */
    const struct plan_func *f;
    const struct plan_op *ops;   /* its plan file's ops */
    uint32_t idx;       /* its index through all plans, recorded in ARGS */
};

/* The index by run-time address. A plan added for a dlopen'ed library
 * makes a new, bigger table that replaces this one in one store (threads
 * may be reading it); the old one is left mapped. */
struct table {
    struct slot *slots;
    size_t mask, used;
};

volatile uint32_t ct_capture_on;
static struct table *volatile table;

static CT_NOINST void put(struct table *t, const struct slot *s) {
    size_t j = (s->key * 0x9E3779B97F4A7C15ull >> 32) & t->mask;
    while (t->slots[j].key && t->slots[j].key != s->key)
        j = (j + 1) & t->mask;
    if (!t->slots[j].key)
        t->used++;
    t->slots[j] = *s;
}
static uint32_t total_funcs, total_modules;   /* over the plans loaded so far */

/* Load biases of the plan's modules; 0 for one not loaded (its functions
 * are left out). Returns 0, or 1 when module 0 is not this executable. */
static CT_NOINST int module_biases(const char *m, uint64_t at, uint64_t end, uint32_t nmods,
                                   uint64_t *bias, uint8_t *loaded) {
    char path[PATH_MAX];
    for (uint32_t i = 0; i < nmods; i++) {
        at = ct_module_entry(m, at, end, path);
        if (!at)
            return -1;
        ct_capture_known(path);
        int r = ct_module_bias(i + total_modules, path, &bias[i]);
        if (r < 0)
            return 1;   /* a plan for another program */
        loaded[i] = (uint8_t)r;
        if (!r)
            ct_log("capture plan: %s is not loaded; its arguments are not captured", path);
        /* Which files the function indexes refer to, for the converter. */
        char line[PATH_MAX + 48];
        int n = snprintf(line, sizeof line, "capture_module.%u=%s", i + total_modules, path);
        if (n > 0 && n < (int)sizeof line)
            ct_meta(CT_META_OPTION, line, (size_t)n);
    }
    return 0;
}

/* Index a plan's functions by run-time address: a new table holding the
 * old one's entries and these, published in one store. */
static CT_NOINST int index_plan(const struct plan_func *funcs, const struct plan_op *ops, uint32_t nfuncs,
                                uint32_t nops, uint32_t nmods, const uint64_t *bias, const uint8_t *loaded) {
    const struct table *old = table;
    size_t want = 2 * ((old ? old->used : 0) + nfuncs), cap = 16;
    while (cap < want)
        cap <<= 1;
    void *m = mmap(NULL, sizeof(struct table) + cap * sizeof(struct slot), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    struct table *t = m;
    t->slots = (struct slot *)(t + 1);
    t->mask = cap - 1;
    for (size_t j = 0; old && j <= old->mask; j++)
        if (old->slots[j].key)
            put(t, &old->slots[j]);
    for (uint32_t i = 0; i < nfuncs; i++) {
        uint32_t mod = funcs[i].module;
        if (mod >= nmods || !loaded[mod] || funcs[i].first_op + (uint64_t)funcs[i].nops > nops)
            continue;
        struct slot s = {funcs[i].ret_vaddr + bias[mod], &funcs[i], ops, total_funcs + i};
        put(t, &s);
    }
    __atomic_store_n(&table, t, __ATOMIC_RELEASE);
    total_funcs += nfuncs;
    total_modules += nmods;
    return 0;
}

/* Map a plan file and index it by run-time address. The first is the
 * program's (its module 0 must be this executable); the later ones are
 * for libraries it dlopen'ed. Returns 0 when loaded, 1 when the plan is
 * for another program, -1 on an error. */
CT_NOINST int ct_capture_load(const char *path) {
    size_t size;
    const char *m = ct_map_input(path, "CTPLAN02", 24, &size, "capture plan", "arguments not captured");
    if (!m)
        return -1;
    uint32_t nfuncs, nops, nmods;
    memcpy(&nfuncs, m + 12, 4);
    memcpy(&nops, m + 16, 4);
    memcpy(&nmods, m + 20, 4);
    uint64_t mods_at = 24 + (uint64_t)nfuncs * sizeof(struct plan_func) + (uint64_t)nops * sizeof(struct plan_op);
    uint64_t bias[MAX_MODULES];
    uint8_t loaded[MAX_MODULES];
    int r = nmods < 1 || nmods > MAX_MODULES || total_modules + nmods > MAX_MODULES || mods_at > size ? -1
            : module_biases(m, mods_at, size, nmods, bias, loaded);
    const struct plan_func *funcs = (const struct plan_func *)(m + 24);
    if (!r)
        r = index_plan(funcs, (const struct plan_op *)(funcs + nfuncs), nfuncs, nops, nmods, bias, loaded);
    if (r) {
        if (r < 0)
            ct_warn("capture plan %s is damaged; arguments not captured", path);
        munmap((void *)m, size);
        return r;
    }
    ct_log("capture plan %s: %u functions in %u modules", path, nfuncs, nmods);
    __atomic_store_n(&ct_capture_on, 1, __ATOMIC_RELEASE);
    return 0;
}

static inline CT_NOINST const struct slot *lookup(uint64_t fn) {
    const struct table *t = __atomic_load_n(&table, __ATOMIC_ACQUIRE);
    size_t j = (fn * 0x9E3779B97F4A7C15ull >> 32) & t->mask;
    while (t->slots[j].key) {
        if (t->slots[j].key == fn)
            return &t->slots[j];
        j = (j + 1) & t->mask;
    }
    return NULL;
}

/* ---- readable memory, for pointers we follow --------------------------------
 * A cached copy of /proc/self/maps, re-read when a pointer falls outside it,
 * so that a bad `char *` gives "invalid pointer" rather than a crash. */
#define MAX_RANGES 4096
static uint64_t rlo[MAX_RANGES], rhi[MAX_RANGES];
static size_t nranges;
static volatile int maps_lock;

static CT_NOINST void read_maps(void) {
    static char buf[1 << 16];
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    nranges = 0;
    if (fd < 0)
        return;
    size_t used = 0;
    for (;;) {
        ssize_t n = read(fd, buf + used, sizeof buf - 1 - used);
        if (n <= 0)
            break;
        used += (size_t)n;
        buf[used] = 0;
        char *line = buf, *nl;
        while ((nl = memchr(line, '\n', (size_t)(buf + used - line)))) {
            unsigned long long lo, hi;
            char perms[8];
            if (sscanf(line, "%llx-%llx %7s", &lo, &hi, perms) == 3 && perms[0] == 'r' &&
                nranges < MAX_RANGES) {
                if (nranges && rhi[nranges - 1] == lo)
                    rhi[nranges - 1] = hi;   /* merge neighbours: strings may span them */
                else {
                    rlo[nranges] = lo;
                    rhi[nranges++] = hi;
                }
            }
            line = nl + 1;
        }
        used = (size_t)(buf + used - line);
        memmove(buf, line, used);
    }
    close(fd);
}

/* How many bytes from `addr` are readable (0: none), looking again once. */
static CT_NOINST uint64_t readable(uint64_t addr) {
    if (addr < 4096 || addr >> 47)
        return 0;
    uint64_t out = 0;
    while (__atomic_exchange_n(&maps_lock, 1, __ATOMIC_ACQUIRE))
        ;
    for (int pass = 0; pass < 2 && !out; pass++) {
        if (pass)
            read_maps();
        size_t lo = 0, hi = nranges;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (rhi[mid] <= addr)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < nranges && rlo[lo] <= addr)
            out = rhi[lo] - addr;
    }
    __atomic_store_n(&maps_lock, 0, __ATOMIC_RELEASE);
    return out;
}

/* Copy one call's planned bytes to `out`; returns the byte count, or -1 when
 * no plan covers this hook call site (then no ARGS record is written), -2
 * when `room` is too small. Plans are keyed by the hook's return address, so
 * copies of a function inlined elsewhere get the plan of their own site. */
CT_NOINST long ct_capture_copy(const uint64_t *regs, uint64_t site, uint8_t *out, size_t room,
                               uint32_t *index) {
    const struct slot *sl = lookup(regs[6]);
    if (!sl)
        return -1;
    const struct plan_func *pf = sl->f;
    const struct plan_op *ops = sl->ops;
    *index = sl->idx;
    if (pf->max_payload > room)
        return -2;
    uint64_t rsp = (uint64_t)(regs + 7);   /* the function's rsp after the hook returns */
    uint64_t cfa = (pf->cfa_base == BASE_RSP ? rsp : regs[pf->cfa_base]) + (int64_t)pf->cfa_off;
    uint8_t *p = out;
    uint8_t *starts[MAX_OPS];
    if (pf->nops > MAX_OPS)
        return -1;
    for (uint32_t i = 0; i < pf->nops; i++) {
        const struct plan_op *op = &ops[pf->first_op + i];
        uint8_t kind = op->kind & 0x7f;
        uint64_t val = 0;
        starts[i] = p;
        if (kind == OP_SITE) {
            /* An entry value: the caller's call site tells it (decoded later). */
            memcpy(p, &site, 8);
        } else if (kind == OP_FOLLOW) {
            /* A pointer inside bytes copied by an earlier op (a struct's char *). */
            if (op->base >= i)
                return -1;
            memcpy(&val, starts[op->base] + op->off, 8);
            memcpy(p, &val, 8);
        } else if (kind == OP_DEREF) {
            /* What a pointer inside an earlier op's bytes points to (a C++
             * reference): a status word (0 read, 1 unreadable), then the
             * bytes, or zeros. */
            if (op->base >= i || op->size < 8)
                return -1;
            uint64_t at;
            memcpy(&at, starts[op->base] + op->off, 8);
            size_t n = op->size - 8u;
            int ok = readable(at) >= n;
            memset(p, 0, 8);
            p[0] = !ok;
            if (ok)
                memcpy(p + 8, (const void *)at, n);
            else
                memset(p + 8, 0, n);
        } else if (kind == OP_REG) {
            /* The register plus `off`: gcc may keep a value adjusted. */
            val = regs[op->base] + (uint64_t)(int64_t)op->off;
            memcpy(p, &val, op->size);
        } else {
            uint64_t base = op->base == BASE_CFA ? cfa : op->base == BASE_RSP ? rsp : regs[op->base];
            uint64_t src = base + (int64_t)op->off;
            /* Frame slots are always there; a register used as a pointer may not be. */
            if (op->base < 6 && readable(src) < op->size)
                memset(p, 0, op->size);
            else
                memcpy(p, (const void *)src, op->size);
            memcpy(&val, p, op->size < 8 ? op->size : 8);
        }
        p += op->size;
        if (op->kind & OP_STRING) {
            uint8_t status = STR_OK;
            uint16_t len = 0;
            if (!val) {
                status = STR_NULL;
            } else {
                uint64_t avail = readable(val);
                if (!avail) {
                    status = STR_INVALID;
                } else {
                    const char *s = (const char *)val;
                    size_t max = avail < STRING_CAP ? (size_t)avail : STRING_CAP;
                    while (len < max && s[len])
                        len++;
                    memcpy(p + 4, s, len);
                    if (len == max && !(max < avail && s[max] == 0))
                        status = STR_TRUNCATED;
                }
            }
            p[0] = status;
            p[1] = 0;
            memcpy(p + 2, &len, 2);
            p += 4 + len;
        }
    }
    return (long)(p - out);
}
