/* Benchmark workload for calltrace attach: rounds of CALLS calls to an
 * empty function (2M by default), each round timed and printed as
 * "ns_per_call", with a 10 ms sleep between rounds (a thread blocked in a
 * system call: attachable).
 * Usage: attach_loop SECONDS [CALLS] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) int leaf(int a) {
    __asm__ __volatile__("");
    return a;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    double end = now() + (argc > 1 ? atof(argv[1]) : 30) * 1e9;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int calls = argc > 2 ? atoi(argv[2]) : 2000000;
    long s = 0;
    while (now() < end) {
        double t0 = now();
        for (int i = 0; i < calls; i++)
            s += leaf(i);
        printf("%.2f\n", (now() - t0) / calls);
        usleep(10000);
    }
    return (int)(s & 0);
}
