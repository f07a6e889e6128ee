/* Benchmark workload: N calls to an empty function, timed inside the program
 * so process start-up and trace conversion are not counted.
 * Usage: calls N  -> prints "ns_per_call peak_rss_kb" on stderr. Optional 2nd arg "str":
 * calls a function taking a const char * instead of three ints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

__attribute__((noinline)) int leaf(int a, int b, int c) {
    __asm__ __volatile__("");
    return a + b + c;
}

__attribute__((noinline)) int leaf_str(const char *s) {
    __asm__ __volatile__("");
    return s[0];
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    int str = argc > 2 && !strcmp(argv[2], "str");
    long s = 0;
    double t0 = now();
    if (str)
        for (long i = 0; i < n; i++)
            s += leaf_str("hello, world");
    else
        for (long i = 0; i < n; i++)
            s += leaf((int)i, 2, 3);
    double t1 = now();
    /* Peak RSS of this image (VmHWM restarts at exec, unlike ru_maxrss). */
    long hwm = 0;
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            hwm = atol(line + 6);
    if (f)
        fclose(f);
    fprintf(stderr, "%.3f %ld\n", (t1 - t0) / (double)n, hwm);
    printf("%ld\n", s);
    return 0;
}
