/* AVX2 (with FMA and F16C) matrix products: the same algorithms as matmul_avx512.c at 8 floats per
 * vector and with 16 vector registers: a 6-token x 16-output GEMM tile (12 accumulators). */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/isa.h"
#include "kernels/kernels.h"

enum { MR = KILN_AVX2_MR, NR = KILN_AVX2_NR };

#define INLINE static inline __attribute__((always_inline))

INLINE __m256i lane_mask(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }

INLINE __m256 load_w_full(const void *row, int type, int64_t j) {
    if (type == KILN_TYPE_F32) return _mm256_loadu_ps((const float *)row + j);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + j));
    if (type == KILN_TYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The first N (< 8) weights at element J, the rest 0: 16-bit types have no masked load in AVX2, so
 * the few elements go through a zeroed buffer. */
INLINE __m256 load_w_part(const void *row, int type, int64_t j, int n) {
    if (type == KILN_TYPE_F32) return _mm256_maskload_ps((const float *)row + j, lane_mask(n));
    uint16_t buf[8] = {0};
    memcpy(buf, (const uint16_t *)row + j, (size_t)n * 2);
    return load_w_full(buf, type, 0);
}

INLINE __m256 load_w(const void *row, int type, int64_t j, int n) {
    return n >= 8 ? load_w_full(row, type, j) : load_w_part(row, type, j, n);
}

INLINE const void *row_at(const void *W, int type, int64_t i, int K) {
    return (const char *)W + (size_t)i * K * (type == KILN_TYPE_F32 ? 4 : 2);
}

INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* As in matmul_avx512.c: four adjacent rows share the loads of x, the next four are prefetched. */
INLINE void matvec_type(float *y, const float *x, const void *W, const int type, int r0, int r1, int K) {
    int i = r0, kfull = K & ~15;
    size_t es = type == KILN_TYPE_F32 ? 4 : 2, rb = (size_t)K * es;
    for (; i + 4 <= r1; i += 4) {
        const void *w0 = row_at(W, type, i, K), *w1 = row_at(W, type, i + 1, K);
        const void *w2 = row_at(W, type, i + 2, K), *w3 = row_at(W, type, i + 3, K);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int j = 0;
        for (; j < kfull; j += 16) {
            const char *next = (const char *)w0 + 4 * rb + (size_t)j * es;
            for (int r = 0; r < 4; r++) _mm_prefetch(next + r * rb, _MM_HINT_T0);
            __m256 xa = _mm256_loadu_ps(x + j), xb = _mm256_loadu_ps(x + j + 8);
            a0 = _mm256_fmadd_ps(load_w_full(w0, type, j), xa, a0);
            a1 = _mm256_fmadd_ps(load_w_full(w1, type, j), xa, a1);
            a2 = _mm256_fmadd_ps(load_w_full(w2, type, j), xa, a2);
            a3 = _mm256_fmadd_ps(load_w_full(w3, type, j), xa, a3);
            b0 = _mm256_fmadd_ps(load_w_full(w0, type, j + 8), xb, b0);
            b1 = _mm256_fmadd_ps(load_w_full(w1, type, j + 8), xb, b1);
            b2 = _mm256_fmadd_ps(load_w_full(w2, type, j + 8), xb, b2);
            b3 = _mm256_fmadd_ps(load_w_full(w3, type, j + 8), xb, b3);
        }
        for (; j < K; j += 8) {
            int n = K - j;
            __m256 xa = n >= 8 ? _mm256_loadu_ps(x + j) : _mm256_maskload_ps(x + j, lane_mask(n));
            a0 = _mm256_fmadd_ps(load_w(w0, type, j, n), xa, a0);
            a1 = _mm256_fmadd_ps(load_w(w1, type, j, n), xa, a1);
            a2 = _mm256_fmadd_ps(load_w(w2, type, j, n), xa, a2);
            a3 = _mm256_fmadd_ps(load_w(w3, type, j, n), xa, a3);
        }
        y[i] = hsum(_mm256_add_ps(a0, b0));
        y[i + 1] = hsum(_mm256_add_ps(a1, b1));
        y[i + 2] = hsum(_mm256_add_ps(a2, b2));
        y[i + 3] = hsum(_mm256_add_ps(a3, b3));
    }
    for (; i < r1; i++) {
        const void *w0 = row_at(W, type, i, K);
        __m256 a0 = _mm256_setzero_ps(), b0 = a0;
        int j = 0;
        for (; j < kfull; j += 16) {
            a0 = _mm256_fmadd_ps(load_w_full(w0, type, j), _mm256_loadu_ps(x + j), a0);
            b0 = _mm256_fmadd_ps(load_w_full(w0, type, j + 8), _mm256_loadu_ps(x + j + 8), b0);
        }
        for (; j < K; j += 8) {
            int n = K - j;
            __m256 xa = n >= 8 ? _mm256_loadu_ps(x + j) : _mm256_maskload_ps(x + j, lane_mask(n));
            a0 = _mm256_fmadd_ps(load_w(w0, type, j, n), xa, a0);
        }
        y[i] = hsum(_mm256_add_ps(a0, b0));
    }
}

void kiln_matvec_avx2(float *y, const float *x, const void *W, int type, int r0, int r1, int K) {
    switch (type) {
    case KILN_TYPE_F32: matvec_type(y, x, W, KILN_TYPE_F32, r0, r1, K); break;
    case KILN_TYPE_F16: matvec_type(y, x, W, KILN_TYPE_F16, r0, r1, K); break;
    case KILN_TYPE_BF16: matvec_type(y, x, W, KILN_TYPE_BF16, r0, r1, K); break;
    }
}

/* The short-batch product, as in matmul_avx512.c: R rows by NT <= MV_TOKENS tokens of accumulators
 * (9 + 3 weights + 1 x of the 16 ymm; 3 x 3 measured faster than 2 x 4 and 4 x 2 for 5 to 8 tokens);
 * more tokens take another pass over the rows, then in L1. */
enum { MV_ROWS = 3, MV_TOKENS = 3 };

INLINE void matvecs_block(float *Y, size_t ldy, const float *X, const void *W, const int type, int i, const int R,
                          const int NT, int K, const char *prefetch, size_t rb) {
    __m256 acc[MV_ROWS][MV_TOKENS];
    const void *w[MV_ROWS];
    size_t es = type == KILN_TYPE_F32 ? 4 : 2;
#pragma GCC unroll 3
    for (int r = 0; r < R; r++) {
        w[r] = row_at(W, type, i + r, K);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    }
    int j = 0;
    for (; j + 8 <= K; j += 8) {
        __m256 wv[MV_ROWS];
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) {
            if (prefetch) _mm_prefetch(prefetch + r * rb + (size_t)j * es, _MM_HINT_T0);
            wv[r] = load_w_full(w[r], type, j);
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            __m256 xv = _mm256_loadu_ps(X + (size_t)t * K + j);
            __asm__("" : "+v"(xv)); /* one load for all R rows, not one folded into each FMA */
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    if (j < K) {
        int n = K - j;
        __m256 wv[MV_ROWS];
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) wv[r] = load_w_part(w[r], type, j, n);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            __m256 xv = _mm256_maskload_ps(X + (size_t)t * K + j, lane_mask(n));
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 3
        for (int r = 0; r < R; r++) Y[(size_t)t * ldy + i + r] = hsum(acc[r][t]);
}

/* NT as a constant, so the accumulators are registers. */
INLINE void matvecs_rows(float *Y, size_t ldy, const float *X, int nt, const void *W, const int type, int i,
                         const int R, int K, const char *prefetch, size_t rb) {
    switch (nt) {
    case 1: matvecs_block(Y, ldy, X, W, type, i, R, 1, K, prefetch, rb); break;
    case 2: matvecs_block(Y, ldy, X, W, type, i, R, 2, K, prefetch, rb); break;
    case 3: matvecs_block(Y, ldy, X, W, type, i, R, 3, K, prefetch, rb); break;
    }
}

INLINE void matvecs_type(float *Y, size_t ldy, const float *X, int T, const void *W, const int type, int r0, int r1,
                         int K) {
    size_t rb = kiln_row_bytes(type, K);
    int n_blocks = (T + MV_TOKENS - 1) / MV_TOKENS, nt = (T + n_blocks - 1) / n_blocks;
    int i = r0;
    for (; i + MV_ROWS <= r1; i += MV_ROWS)
        for (int t0 = 0; t0 < T; t0 += nt) {
            const char *next = t0 == 0 && i + 2 * MV_ROWS <= r1 ? (const char *)W + (i + MV_ROWS) * rb : NULL;
            matvecs_rows(Y + (size_t)t0 * ldy, ldy, X + (size_t)t0 * K, T - t0 < nt ? T - t0 : nt, W, type, i,
                         MV_ROWS, K, next, rb);
        }
    for (; i < r1; i++)
        for (int t0 = 0; t0 < T; t0 += nt)
            matvecs_rows(Y + (size_t)t0 * ldy, ldy, X + (size_t)t0 * K, T - t0 < nt ? T - t0 : nt, W, type, i, 1, K,
                         NULL, rb);
}

void kiln_matvecs_avx2(float *Y, size_t ldy, const float *X, int T, const void *W, int type, int r0, int r1, int K) {
    switch (type) {
    case KILN_TYPE_F32: matvecs_type(Y, ldy, X, T, W, KILN_TYPE_F32, r0, r1, K); break;
    case KILN_TYPE_F16: matvecs_type(Y, ldy, X, T, W, KILN_TYPE_F16, r0, r1, K); break;
    case KILN_TYPE_BF16: matvecs_type(Y, ldy, X, T, W, KILN_TYPE_BF16, r0, r1, K); break;
    }
}

/* In-register transpose: afterwards r[c] holds element c of each of the 8 input rows. */
INLINE void transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(s[j], s[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(s[j], s[4 + j], 0x31);
    }
}

INLINE void pack_w_type(float *dst, const void *W, const int type, int N, int K, int n0, int k0, int kc) {
    for (int half = 0; half < NR / 8; half++) {
        int rbase = n0 + 8 * half;
        for (int kk = 0; kk < kc; kk += 8) {
            int nk = kc - kk < 8 ? kc - kk : 8;
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = rbase + i < N ? load_w(row_at(W, type, rbase + i, K), type, (int64_t)k0 + kk, nk)
                                     : _mm256_setzero_ps();
            transpose8(r);
            for (int c = 0; c < nk; c++) _mm256_store_ps(dst + (size_t)(kk + c) * NR + 8 * half, r[c]);
        }
    }
}

void kiln_pack_w_avx2(float *dst, const void *W, int type, int N, int K, int n0, int k0, int kc) {
    switch (type) {
    case KILN_TYPE_F32: pack_w_type(dst, W, KILN_TYPE_F32, N, K, n0, k0, kc); break;
    case KILN_TYPE_F16: pack_w_type(dst, W, KILN_TYPE_F16, N, K, n0, k0, kc); break;
    case KILN_TYPE_BF16: pack_w_type(dst, W, KILN_TYPE_BF16, N, K, n0, k0, kc); break;
    }
}

void kiln_tile_avx2(float *Y, size_t ldy, int mt, int nt, const float *xp, const float *wp, int kc, int accumulate) {
    __m256 c[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(wp + (size_t)k * NR), b1 = _mm256_load_ps(wp + (size_t)k * NR + 8);
        const float *a = xp + (size_t)k * MR;
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m256 ar = _mm256_broadcast_ss(a + r);
            c[r][0] = _mm256_fmadd_ps(ar, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(ar, b1, c[r][1]);
        }
    }
    __m256i m0 = lane_mask(nt), m1 = lane_mask(nt - 8);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        if (r >= mt) break;
        float *y = Y + (size_t)r * ldy;
        if (accumulate) {
            c[r][0] = _mm256_add_ps(c[r][0], _mm256_maskload_ps(y, m0));
            c[r][1] = _mm256_add_ps(c[r][1], _mm256_maskload_ps(y + 8, m1));
        }
        _mm256_maskstore_ps(y, m0, c[r][0]);
        _mm256_maskstore_ps(y + 8, m1, c[r][1]);
    }
}
