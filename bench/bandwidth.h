/* The machine's memory read bandwidth, measured the way decode reads weights: all threads summing a
 * 1 GiB float array, median of 5 runs. Header-only so each benchmark can measure it in its own run. */
#ifndef KILN_BENCH_BANDWIDTH_H
#define KILN_BENCH_BANDWIDTH_H

#include <omp.h>
#include <stdlib.h>

#include "base/file.h"

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Bytes per second. */
static double bench_read_bandwidth(void) {
    size_t n = (size_t)1 << 28; /* 1 GiB of floats */
    float *a = malloc(n * sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7);
    double runs[5];
    volatile float sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = kiln_now();
        float total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t i = 0; i < n; i += 16) {
            float s = 0;
            for (int j = 0; j < 16; j++) s += a[i + j];
            total += s;
        }
        sink += total;
        runs[r] = n * sizeof(float) / (kiln_now() - t0);
    }
    free(a);
    qsort(runs, 5, sizeof runs[0], bench_cmp_double);
    return runs[2];
}

#endif
