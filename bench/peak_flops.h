/* The machine's fp32 peak, measured: every thread runs independent chains of fused multiply-adds on
 * 16-float vectors (AVX-512 where the build targets it, else the compiler splits them), enough chains
 * to cover the FMA latency of two pipes. Benchmarks report their speed as a fraction of this. */
#ifndef KILN_BENCH_PEAK_FLOPS_H
#define KILN_BENCH_PEAK_FLOPS_H

#pragma GCC optimize("fp-contract=fast") /* -std=c11 would not fuse a * b + c */

#include <omp.h>
#include <string.h>
#include <time.h>

#include "base/file.h"

typedef float peak_v16 __attribute__((vector_size(64)));

static double peak_cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* FLOP/s of THREADS threads over about SECONDS, by the wall clock; *PER_CORE gets FLOPs per CPU-second
 * (what one core does while it runs: with THREADS 1, a figure that other processes taking the cores do
 * not lower; with more, threads waiting for a descheduled one at the end count as well). */
static double peak_flops(int threads, double seconds, double *per_core) {
    *per_core = 0;
    enum { CHAINS = 16, INNER = 1 << 16 };
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        long iters = 0;
        double t0 = kiln_now(), c0 = peak_cpu_seconds(), t;
        do {
#pragma omp parallel num_threads(threads)
            {
                peak_v16 acc[CHAINS], x = (peak_v16){0} + 0.999999f, y = (peak_v16){0} + 1e-7f;
                for (int c = 0; c < CHAINS; c++) acc[c] = (peak_v16){0} + (float)c;
                for (int i = 0; i < INNER; i++)
#pragma GCC unroll 16
                    for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * x + y;
                peak_v16 s = acc[0];
                for (int c = 1; c < CHAINS; c++) s += acc[c];
                float out[16];
                memcpy(out, &s, sizeof out);
                if (out[0] == 12345.0f) iters = -1; /* keep the result alive */
            }
            iters++;
            t = kiln_now() - t0;
        } while (t < seconds / 3);
        double work = (double)iters * threads * INNER * CHAINS * 16 * 2, core = work / (peak_cpu_seconds() - c0);
        if (work / t > best) best = work / t;
        if (core > *per_core) *per_core = core;
    }
    return best;
}

#endif
