/* Call lines of a JSON trace as columns (trace/colsource.json_block): the
 * layout both writers give every call, one per line,
 *     [ \t]*{"function":"NAME","depth":D,"start_ns":S,"duration_ns":U REST
 * REST being `}` `},` `}]}` `}]},` or, when optional keys follow, `,...`
 * (given back by offset for Python's json). A line that is not in this
 * layout makes the block fail, and Python reads it the slow way; a name
 * literal not yet known is handed back for Python to decode and number. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "conv.h"

struct lit {
    char *s;
    size_t n;
    int32_t id;
};

struct ct_jl {
    struct lit *tab;     /* open addressing on the literal's bytes */
    size_t cap, n;
};

static CT_NOINST uint64_t hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static CT_NOINST struct lit *find(struct ct_jl *j, const char *s, size_t n) {
    for (size_t k = hash(s, n) & (j->cap - 1);; k = (k + 1) & (j->cap - 1))
        if (!j->tab[k].s || (j->tab[k].n == n && !memcmp(j->tab[k].s, s, n)))
            return &j->tab[k];
}

CT_EXPORT CT_NOINST struct ct_jl *ct_jl_new(void) {
    struct ct_jl *j = calloc(1, sizeof *j);
    if (j && !(j->tab = calloc(j->cap = 256, sizeof *j->tab))) {
        free(j);
        return NULL;
    }
    return j;
}

CT_EXPORT CT_NOINST void ct_jl_free(struct ct_jl *j) {
    for (size_t k = 0; j && k < j->cap; k++)
        free(j->tab[k].s);
    if (j)
        free(j->tab);
    free(j);
}

/* Name literal s (quotes included) is function `id`: 0, or -1 when out of memory. */
CT_EXPORT CT_NOINST int ct_jl_name(struct ct_jl *j, const char *s, size_t n, int32_t id) {
    if (2 * (j->n + 1) > j->cap) {
        struct ct_jl big = {calloc(2 * j->cap, sizeof *j->tab), 2 * j->cap, j->n};
        if (!big.tab)
            return -1;
        for (size_t k = 0; k < j->cap; k++)
            if (j->tab[k].s)
                *find(&big, j->tab[k].s, j->tab[k].n) = j->tab[k];
        free(j->tab);
        *j = big;
    }
    struct lit *l = find(j, s, n);
    if (!l->s) {
        if (!(l->s = malloc(n ? n : 1)))
            return -1;
        memcpy(l->s, s, n);
        l->n = n;
        j->n++;
    }
    l->id = id;
    return 0;
}

/* Digits at *p up to 18 of them (no overflow), then the literal `after`. */
static CT_NOINST int number(const char **p, const char *end, const char *after, size_t alen, int64_t *v) {
    const char *s = *p;
    int64_t x = 0;
    int nd = 0;
    while (s < end && *s >= '0' && *s <= '9' && nd < 19) {
        x = x * 10 + (*s++ - '0');
        nd++;
    }
    if (!nd || nd > 18 || (size_t)(end - s) < alen || memcmp(s, after, alen))
        return -1;
    *v = x;
    *p = s + alen;
    return 0;
}

/* The literal k (n bytes) at *p: step over it and return 1, else 0. */
static inline CT_NOINST int key(const char **p, const char *end, const char *k, size_t n) {
    if ((size_t)(end - *p) < n || memcmp(*p, k, n))
        return 0;
    *p += n;
    return 1;
}

/* Lines from *pos on, into the columns (cap rows, *row of them filled).
 * Returns 0 when the data is done, 1 when a line names a literal not yet
 * known (data[*lit .. *lit + *litlen]; *pos stays at its line: register
 * it and call again), -1 when a line is not in the layout, -2 when the
 * columns are full. rest[2 * row] and [2 * row + 1] are the offset and
 * length of REST for a line with optional keys, else 0 and 0. */
CT_EXPORT CT_NOINST int ct_jl_parse(struct ct_jl *j, const char *data, size_t len, size_t *pos, size_t *row,
                                    int32_t *func, int32_t *depth, int64_t *start, int64_t *dur,
                                    uint64_t *rest, size_t cap, size_t *lit, size_t *litlen) {
    const char *end = data + len;
    while (*pos < len) {
        const char *p = data + *pos;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        if (!eol)
            eol = end;
        if (eol > p && eol[-1] == '\r')
            eol--;
        if (*row >= cap)
            return -2;
        while (p < eol && (*p == ' ' || *p == '\t'))
            p++;
        if (!key(&p, eol, "{\"function\":\"", 13))
            return -1;
        const char *q = p - 1;        /* the literal, from its opening quote */
        while (p < eol && *p != '"') {
            if (*p == '\\' && ++p == eol)
                return -1;
            p++;
        }
        if (p == eol)
            return -1;
        size_t n = (size_t)(++p - q);
        struct lit *l = find(j, q, n);
        if (!l->s) {
            *lit = (size_t)(q - data);
            *litlen = n;
            return 1;
        }
        int64_t d, s, u;
        if (!key(&p, eol, ",\"depth\":", 9) || number(&p, eol, ",\"start_ns\":", 12, &d) < 0 ||
            number(&p, eol, ",\"duration_ns\":", 15, &s) < 0 ||
            number(&p, eol, "", 0, &u) < 0 || p == eol || (*p != ',' && *p != '}') || d > INT32_MAX)
            return -1;
        size_t rl = (size_t)(eol - p);
        int plain = (rl == 1 && !memcmp(p, "}", 1)) || (rl == 2 && !memcmp(p, "},", 2)) ||
                    (rl == 3 && !memcmp(p, "}]}", 3)) || (rl == 4 && !memcmp(p, "}]},", 4));
        func[*row] = l->id;
        depth[*row] = (int32_t)d;
        start[*row] = s;
        dur[*row] = u;
        rest[2 * *row] = plain ? 0 : (uint64_t)(p - data);
        rest[2 * *row + 1] = plain ? 0 : rl;
        ++*row;
        *pos = (size_t)(next - data);
    }
    return 0;
}
