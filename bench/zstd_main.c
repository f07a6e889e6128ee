/* Benchmark workload on real code no one here wrote: the single-file zstd
 * library (zstd/zstd.c from the zstandard sdist, downloaded by
 * bench/bench_columnar.py into build/) compressing generated text.
 * Usage: zstd_main KB [LEVEL]: compresses KB kilobytes, 64 KB at a time,
 * and prints the compressed size (so the work cannot be optimized away). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zstd.h"

static unsigned long long rng = 88172645463325252ull;

static unsigned next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)rng;
}

/* Words from a small vocabulary: compressible, like logs or text. */
static void fill(char *buf, size_t n) {
    static const char *words[] = {"call", "trace", "function", "depth", "thread", "start", "return",
                                  "parquet", "column", "zstd", "frame", "buffer", "event", "time"};
    size_t i = 0;
    while (i < n) {
        const char *w = words[next() % (sizeof words / sizeof *words)];
        size_t l = strlen(w);
        for (size_t k = 0; k < l && i < n; k++)
            buf[i++] = w[k];
        if (i < n)
            buf[i++] = next() % 8 ? ' ' : '\n';
    }
}

int main(int argc, char **argv) {
    long kb = argc > 1 ? atol(argv[1]) : 1024;
    int level = argc > 2 ? atoi(argv[2]) : 3;
    size_t block = 64 * 1024, cap = ZSTD_compressBound(block);
    char *src = malloc(block), *dst = malloc(cap);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (!src || !dst || !cctx)
        return 1;
    unsigned long long out = 0;
    for (long done = 0; done < kb; done += 64) {
        fill(src, block);
        size_t r = ZSTD_compressCCtx(cctx, dst, cap, src, block, level);
        if (ZSTD_isError(r)) {
            fprintf(stderr, "zstd: %s\n", ZSTD_getErrorName(r));
            return 1;
        }
        out += r;
    }
    printf("%ld KB -> %llu bytes\n", kb, out);
    ZSTD_freeCCtx(cctx);
    free(src);
    free(dst);
    return 0;
}
