/* The machine's memory read bandwidth, measured the way a decode reads its weights: every thread streams
 * its contiguous share of a 256 MiB buffer (many times any L3 here, twice a 110M Q8_0 model) front to
 * back, as a decode walks its rows, with aligned 64-byte loads combined by integer XOR. The best of 9
 * runs is the limit: the most the memory system delivered to this pattern in this run.
 *
 * What this replaced understated the limit by 1.5-2x on this machine: it summed floats from a malloc'd
 * buffer 16 bytes off a cache line, so every 64-byte load touched two lines, in 4 streams per thread,
 * and took the median of runs on a shared host. Header-only so each benchmark measures it in its own
 * run. */
#ifndef KILN_BENCH_BANDWIDTH_H
#define KILN_BENCH_BANDWIDTH_H

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* XOR of the N bytes at P (64-byte aligned, N a multiple of 256), read front to back. */
static uint64_t bench_xor_stream(const char *p, size_t n) {
#if defined(__AVX512F__)
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 256) {
        a = _mm512_xor_si512(a, _mm512_load_si512(p + i));
        b = _mm512_xor_si512(b, _mm512_load_si512(p + i + 64));
        c = _mm512_xor_si512(c, _mm512_load_si512(p + i + 128));
        d = _mm512_xor_si512(d, _mm512_load_si512(p + i + 192));
    }
    return (uint64_t)_mm512_reduce_or_epi64(_mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d)));
#elif defined(__AVX2__)
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 128) {
        a = _mm256_xor_si256(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_xor_si256(b, _mm256_load_si256((const __m256i *)(p + i + 32)));
        c = _mm256_xor_si256(c, _mm256_load_si256((const __m256i *)(p + i + 64)));
        d = _mm256_xor_si256(d, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    __m256i x = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    return (uint64_t)(_mm256_extract_epi64(x, 0) ^ _mm256_extract_epi64(x, 1) ^ _mm256_extract_epi64(x, 2) ^
                      _mm256_extract_epi64(x, 3));
#else
    uint64_t s[4] = {0};
    for (size_t i = 0; i < n; i += 32)
        for (int k = 0; k < 4; k++) {
            uint64_t v;
            memcpy(&v, p + i + 8 * k, 8);
            s[k] ^= v;
        }
    return s[0] ^ s[1] ^ s[2] ^ s[3];
#endif
}

/* Bytes per second. */
static double bench_read_bandwidth(void) {
    size_t n = (size_t)256 << 20;
    char *a = aligned_alloc(4096, n);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i += 4096) memset(a + i, (int)(i >> 12), 4096); /* pages in, off the clock */
    enum { RUNS = 9 };
    double runs[RUNS];
    volatile uint64_t sink = 0;
    for (int r = 0; r < RUNS; r++) {
        double t0 = kiln_now();
        uint64_t x = 0;
        size_t read = 0;
#pragma omp parallel reduction(^ : x) reduction(+ : read)
        {
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
            size_t chunk = n / nt / 4096 * 4096;
            x ^= bench_xor_stream(a + chunk * t, chunk);
            read += chunk;
        }
        sink ^= x;
        runs[r] = read / (kiln_now() - t0);
    }
    free(a);
    qsort(runs, RUNS, sizeof runs[0], bench_cmp_double);
    return runs[RUNS - 1];
}

#endif
