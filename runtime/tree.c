/* The aggregated call tree behind flame graphs (analysis/tree.py): one
 * node per distinct call path, found by (parent node, function id) in a
 * hash table, so memory grows with the paths, not the calls. The stack of
 * open paths is carried from batch to batch; rows pass the -F/-N/-D/-t
 * selection of the text kernels (fmt_pass) and sit at their shown depth. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "conv.h"

struct tnode {
    int32_t parent, f;
    uint64_t calls, total;
};

struct ct_tree {
    struct tnode *nodes;          /* nodes[0] is the root */
    size_t n, cap;
    uint32_t *hash;               /* node index + 1, 0: empty slot */
    size_t hcap;
    uint32_t *stack;              /* the open path, stack[0] = root */
    size_t sp, scap;
};

static inline CT_NOINST size_t slot(const struct ct_tree *t, uint32_t parent, int32_t f) {
    uint64_t k = ((uint64_t)parent << 32 | (uint32_t)f) * 0x9E3779B97F4A7C15ull;
    return (size_t)(k >> 17) & (t->hcap - 1);
}

static CT_NOINST int rehash(struct ct_tree *t) {
    size_t cap = t->hcap ? t->hcap * 2 : 1024;
    uint32_t *h = calloc(cap, sizeof *h);
    if (!h)
        return -1;
    free(t->hash);
    t->hash = h;
    t->hcap = cap;
    for (size_t i = 1; i < t->n; i++) {
        size_t s = slot(t, (uint32_t)t->nodes[i].parent, t->nodes[i].f);
        while (h[s])
            s = (s + 1) & (cap - 1);
        h[s] = (uint32_t)i + 1;
    }
    return 0;
}

/* The child of `parent` for function f, made when first met; -1 when out of memory. */
static CT_NOINST int64_t child(struct ct_tree *t, uint32_t parent, int32_t f) {
    size_t s = slot(t, parent, f);
    for (uint32_t e; (e = t->hash[s]); s = (s + 1) & (t->hcap - 1))
        if (t->nodes[e - 1].f == f && t->nodes[e - 1].parent == (int32_t)parent)
            return e - 1;
    if (2 * (t->n + 1) > t->hcap || t->n >= UINT32_MAX - 1) {
        if (t->n >= UINT32_MAX - 1 || rehash(t) < 0)
            return -1;
        return child(t, parent, f);
    }
    if (ct_grow((void **)&t->nodes, &t->cap, t->n + 1, sizeof *t->nodes) < 0)
        return -1;
    t->nodes[t->n] = (struct tnode){(int32_t)parent, f, 0, 0};
    t->hash[s] = (uint32_t)++t->n;
    return (int64_t)t->n - 1;
}

CT_EXPORT CT_NOINST void ct_tree_free(struct ct_tree *t) {
    if (t) {
        free(t->nodes);
        free(t->hash);
        free(t->stack);
    }
    free(t);
}

CT_EXPORT CT_NOINST struct ct_tree *ct_tree_new(void) {
    struct ct_tree *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (ct_grow((void **)&t->nodes, &t->cap, 1, sizeof *t->nodes) < 0 || rehash(t) < 0 ||
        ct_grow((void **)&t->stack, &t->scap, 1, sizeof *t->stack) < 0) {
        ct_tree_free(t);
        return NULL;
    }
    t->nodes[0] = (struct tnode){-1, -1, 1, 0};
    t->n = t->sp = 1;
    return t;
}

/* A new thread: its calls start again from the root. */
CT_EXPORT CT_NOINST void ct_tree_thread(struct ct_tree *t) { t->sp = 1; }

/* Merge rows 0..n-1 into the tree: 0, or -1 when out of memory. The root's
 * total is the sum of the outermost (shown depth 0) calls. */
CT_EXPORT CT_NOINST int ct_tree_feed(struct ct_tree *t, struct ct_fmt *r, const int32_t *func,
                                     const int32_t *depth, const int64_t *dur, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int64_t d;
        if (!fmt_pass(r, func[i], depth[i], dur[i], &d))
            continue;
        r->shown++;
        if (t->sp > (uint64_t)d + 1)
            t->sp = (size_t)d + 1;
        int64_t c = child(t, t->stack[t->sp - 1], func[i]);
        if (c < 0 || ct_grow((void **)&t->stack, &t->scap, t->sp + 1, sizeof *t->stack) < 0)
            return -1;
        t->nodes[c].calls++;
        t->nodes[c].total += (uint64_t)dur[i];
        if (d == 0)
            t->nodes[0].total += (uint64_t)dur[i];
        t->stack[t->sp++] = (uint32_t)c;
    }
    return 0;
}

/* The nodes, parents before children: up to `cap` of each column; returns
 * how many there are. The root (index 0) has parent and function -1. */
CT_EXPORT CT_NOINST size_t ct_tree_nodes(const struct ct_tree *t, int32_t *parent, int32_t *func,
                                         uint64_t *calls, uint64_t *total, size_t cap) {
    for (size_t i = 0; i < t->n && i < cap; i++) {
        parent[i] = t->nodes[i].parent;
        func[i] = t->nodes[i].f;
        calls[i] = t->nodes[i].calls;
        total[i] = t->nodes[i].total;
    }
    return t->n;
}
