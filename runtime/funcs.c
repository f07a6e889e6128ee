/* The converter's functions table: one entry per function met, keyed by
 * entry address and era, found by open addressing (walk.c inlines the
 * lookup; adding is here). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include "conv.h"

static CT_NOINST int grow_hash(struct ct_conv *c) {
    size_t cap = c->hashcap ? c->hashcap * 2 : 1024;
    uint32_t *h = calloc(cap, sizeof *h);
    if (!h)
        return -1;
    for (size_t i = 0; i < c->nfuncs; i++) {
        size_t j = (c->funcs[i].addr * 0x9E3779B97F4A7C15ull) >> 20 & (cap - 1);
        while (h[j])
            j = (j + 1) & (cap - 1);
        h[j] = (uint32_t)i + 1;
    }
    free(c->hash);
    c->hash = h;
    c->hashcap = cap;
    return 0;
}

/* Which of the libraries loaded at addr over the run a call at `ticks` is in
 * (0 unless one was dlclose'd and another loaded where it had been). */
CT_NOINST uint32_t ct_era_of(const struct ct_conv *c, uint64_t addr, uint64_t ticks) {
    uint32_t era = 0;
    for (size_t i = 0; i < c->ncuts; i++) {
        const uint64_t *k = c->cuts + 3 * i;
        era += addr >= k[0] && addr < k[1] && ticks >= k[2];
    }
    return era;
}

CT_NOINST int64_t ct_func_add(struct ct_conv *c, uint64_t addr, uint32_t era) {
    if (c->nfuncs * 2 >= c->hashcap && grow_hash(c) < 0)
        return -1;
    if (c->nfuncs == c->capfuncs) {
        size_t cap = c->capfuncs;
        if (grow_array(&c->funcs, &cap, sizeof *c->funcs) < 0)
            return -1;
        uint32_t *t = realloc(c->touched, cap * sizeof *t);
        if (!t)
            return -1;   /* funcs grew, capfuncs did not: the next call grows it again */
        c->touched = t;
        c->capfuncs = cap;
    }
    size_t j = (addr * 0x9E3779B97F4A7C15ull) >> 20 & (c->hashcap - 1);
    while (c->hash[j])
        j = (j + 1) & (c->hashcap - 1);
    struct func *f = &c->funcs[c->nfuncs];
    memset(f, 0, sizeof *f);
    f->addr = addr;
    f->era = era;
    f->min = f->tmin = UINT64_MAX;
    c->hash[j] = (uint32_t)c->nfuncs + 1;
    return (int64_t)c->nfuncs++;
}

/* Forget every function met (live.c, when a measure starts again). */
CT_NOINST void ct_funcs_forget(struct ct_conv *c) {
    c->nfuncs = 0;
    if (c->hash)
        memset(c->hash, 0, c->hashcap * sizeof *c->hash);
}
