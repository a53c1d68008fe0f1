/* The machine's memory read bandwidth, measured the way decode reads weights: every thread reads its
 * share of a 1 GiB array as 4 interleaved streams with wide loads (one stream per thread understates
 * what the memory system delivers), median of 5 runs. Header-only so each benchmark measures it in its
 * own run. */
#ifndef KILN_BENCH_BANDWIDTH_H
#define KILN_BENCH_BANDWIDTH_H

#include <omp.h>
#include <stdlib.h>

#include "base/file.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sum of N floats (N a multiple of 64) read as 4 streams. */
static float bench_sum_4_streams(const float *a, size_t n) {
    size_t q = n / 4;
#ifdef __AVX512F__
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < q; i += 16) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(a + i));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(a + q + i));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(a + 2 * q + i));
        s3 = _mm512_add_ps(s3, _mm512_loadu_ps(a + 3 * q + i));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
#else
    float s[4] = {0};
    for (size_t i = 0; i < q; i++)
        for (int k = 0; k < 4; k++) s[k] += a[k * q + i];
    return s[0] + s[1] + s[2] + s[3];
#endif
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
#pragma omp parallel reduction(+ : total)
        {
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
            size_t chunk = n / nt / 64 * 64;
            total += bench_sum_4_streams(a + chunk * t, chunk);
        }
        sink += total;
        runs[r] = n * sizeof(float) / (kiln_now() - t0);
    }
    free(a);
    qsort(runs, 5, sizeof runs[0], bench_cmp_double);
    return runs[2];
}

#endif
