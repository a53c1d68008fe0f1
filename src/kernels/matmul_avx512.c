/* AVX-512 matrix products: the decode matrix-vector product and the two pieces of the prefill GEMM
 * (weight packing and the register-tile micro-kernel). The drivers that thread them are in dispatch.c
 * and gemm.c. Weights are widened to f32 in registers (f16 by vcvtph2ps, bf16 by a 16-bit shift), so
 * every product is an exact fp32 product of the stored weight and x. */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/isa.h"
#include "kernels/kernels.h"

enum { MR = KILN_AVX512_MR, NR = KILN_AVX512_NR }; /* 14 tokens x 32 outputs: 28 zmm accumulators */

#define INLINE static inline __attribute__((always_inline))

/* 16 weights starting at element J of ROW as f32; M masks the elements to load (the rest are 0). */
INLINE __m512 load_w(const void *row, int type, int64_t j, __mmask16 m) {
    if (type == KILN_TYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + j);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + j);
    if (type == KILN_TYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE __m512 load_w_full(const void *row, int type, int64_t j) {
    if (type == KILN_TYPE_F32) return _mm512_loadu_ps((const float *)row + j);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + j));
    if (type == KILN_TYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE const void *row_at(const void *W, int type, int64_t i, int K) {
    return (const char *)W + (size_t)i * K * (type == KILN_TYPE_F32 ? 4 : 2);
}

/* Four rows at a time share each load of x; two accumulators per row hide the FMA latency. The rows
 * are adjacent in memory, so the four streams move through one contiguous block; the next block is
 * prefetched while this one is summed (four row streams at once are more than the hardware prefetcher
 * runs far enough ahead on). */
INLINE void matvec_type(float *y, const float *x, const void *W, const int type, int r0, int r1, int K) {
    int i = r0, kfull = K & ~31;
    size_t es = type == KILN_TYPE_F32 ? 4 : 2, rb = (size_t)K * es;
    for (; i + 4 <= r1; i += 4) {
        const void *w0 = row_at(W, type, i, K), *w1 = row_at(W, type, i + 1, K);
        const void *w2 = row_at(W, type, i + 2, K), *w3 = row_at(W, type, i + 3, K);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int j = 0;
        for (; j < kfull; j += 32) {
            const char *next = (const char *)w0 + 4 * rb + (size_t)j * es; /* the next group of rows */
            for (int r = 0; r < 4; r++) {
                _mm_prefetch(next + r * rb, _MM_HINT_T0);
                if (es == 4) _mm_prefetch(next + r * rb + 64, _MM_HINT_T0);
            }
            __m512 xa = _mm512_loadu_ps(x + j), xb = _mm512_loadu_ps(x + j + 16);
            a0 = _mm512_fmadd_ps(load_w_full(w0, type, j), xa, a0);
            a1 = _mm512_fmadd_ps(load_w_full(w1, type, j), xa, a1);
            a2 = _mm512_fmadd_ps(load_w_full(w2, type, j), xa, a2);
            a3 = _mm512_fmadd_ps(load_w_full(w3, type, j), xa, a3);
            b0 = _mm512_fmadd_ps(load_w_full(w0, type, j + 16), xb, b0);
            b1 = _mm512_fmadd_ps(load_w_full(w1, type, j + 16), xb, b1);
            b2 = _mm512_fmadd_ps(load_w_full(w2, type, j + 16), xb, b2);
            b3 = _mm512_fmadd_ps(load_w_full(w3, type, j + 16), xb, b3);
        }
        for (; j < K; j += 16) {
            __mmask16 m = K - j >= 16 ? 0xffff : (__mmask16)((1u << (K - j)) - 1);
            __m512 xa = _mm512_maskz_loadu_ps(m, x + j);
            a0 = _mm512_fmadd_ps(load_w(w0, type, j, m), xa, a0);
            a1 = _mm512_fmadd_ps(load_w(w1, type, j, m), xa, a1);
            a2 = _mm512_fmadd_ps(load_w(w2, type, j, m), xa, a2);
            a3 = _mm512_fmadd_ps(load_w(w3, type, j, m), xa, a3);
        }
        y[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        y[i + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
        y[i + 2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
        y[i + 3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
    }
    for (; i < r1; i++) {
        const void *w0 = row_at(W, type, i, K);
        __m512 a0 = _mm512_setzero_ps(), b0 = a0;
        int j = 0;
        for (; j < kfull; j += 32) {
            a0 = _mm512_fmadd_ps(load_w_full(w0, type, j), _mm512_loadu_ps(x + j), a0);
            b0 = _mm512_fmadd_ps(load_w_full(w0, type, j + 16), _mm512_loadu_ps(x + j + 16), b0);
        }
        for (; j < K; j += 16) {
            __mmask16 m = K - j >= 16 ? 0xffff : (__mmask16)((1u << (K - j)) - 1);
            a0 = _mm512_fmadd_ps(load_w(w0, type, j, m), _mm512_maskz_loadu_ps(m, x + j), a0);
        }
        y[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    }
}

void kiln_matvec_avx512(float *y, const float *x, const void *W, int type, int r0, int r1, int K) {
    switch (type) {
    case KILN_TYPE_F32: matvec_type(y, x, W, KILN_TYPE_F32, r0, r1, K); break;
    case KILN_TYPE_F16: matvec_type(y, x, W, KILN_TYPE_F16, r0, r1, K); break;
    case KILN_TYPE_BF16: matvec_type(y, x, W, KILN_TYPE_BF16, r0, r1, K); break;
    }
}

/* The short-batch product (a target's forward over a few drafted tokens): each weight row is read once
 * from memory and dotted with NT <= MV_TOKENS token rows of X at once, R rows by NT tokens of
 * accumulators in registers. Groups of 4 rows stream from memory as fast as the matrix-vector product
 * (3 rows measured ~20% slower); 4 rows hold at most 6 tokens (24 accumulators + 4 weights + 1 x of the
 * 32 zmm). More tokens take more passes over the same rows, which are then in cache, or (f32, 7 and 8
 * tokens) one pass over groups of 3 rows. */
enum { MV_TOKENS = 8, MV_ROWS = 4 };

INLINE void matvecs_block(float *Y, size_t ldy, const float *X, const void *W, const int type, int i, const int R,
                          const int NT, int K, const char *prefetch, size_t rb) {
    __m512 acc[MV_ROWS][MV_TOKENS];
    const void *w[MV_ROWS];
    size_t es = type == KILN_TYPE_F32 ? 4 : 2;
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        w[r] = row_at(W, type, i + r, K);
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
    }
    int j = 0;
    for (; j + 16 <= K; j += 16) {
        __m512 wv[MV_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            if (prefetch) _mm_prefetch(prefetch + r * rb + (size_t)j * es, _MM_HINT_T0);
            wv[r] = load_w_full(w[r], type, j);
        }
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            __m512 xv = _mm512_loadu_ps(X + (size_t)t * K + j);
            /* One load of x for all R rows: folded into each FMA, the loads would outnumber the FMAs. */
            __asm__("" : "+v"(xv));
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    if (j < K) {
        __mmask16 m = (__mmask16)((1u << (K - j)) - 1);
        __m512 wv[MV_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = load_w(w[r], type, j, m);
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, X + (size_t)t * K + j);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) Y[(size_t)t * ldy + i + r] = _mm512_reduce_add_ps(acc[r][t]);
}

/* NT as a constant, so the accumulators are registers; R * NT <= 24. */
INLINE void matvecs_rows(float *Y, size_t ldy, const float *X, int nt, const void *W, const int type, int i,
                         const int R, int K, const char *prefetch, size_t rb) {
    switch (nt) {
    case 1: matvecs_block(Y, ldy, X, W, type, i, R, 1, K, prefetch, rb); break;
    case 2: matvecs_block(Y, ldy, X, W, type, i, R, 2, K, prefetch, rb); break;
    case 3: matvecs_block(Y, ldy, X, W, type, i, R, 3, K, prefetch, rb); break;
    case 4: matvecs_block(Y, ldy, X, W, type, i, R, 4, K, prefetch, rb); break;
    case 5: matvecs_block(Y, ldy, X, W, type, i, R, 5, K, prefetch, rb); break;
    case 6: matvecs_block(Y, ldy, X, W, type, i, R, 6, K, prefetch, rb); break;
    case 7:
        if (R <= 3) matvecs_block(Y, ldy, X, W, type, i, R, 7, K, prefetch, rb);
        break;
    case 8:
        if (R <= 3) matvecs_block(Y, ldy, X, W, type, i, R, 8, K, prefetch, rb);
        break;
    }
}

/* Rows r0..r1 in groups of R, each group against all T tokens in passes of NT; the first pass brings
 * the rows in and prefetches the next group's. */
INLINE void matvecs_groups(float *Y, size_t ldy, const float *X, int T, int nt, const void *W, const int type,
                           const int R, int r0, int r1, int K) {
    size_t rb = kiln_row_bytes(type, K);
    int i = r0;
    for (; i + R <= r1; i += R)
        for (int t0 = 0; t0 < T; t0 += nt) {
            const char *next = t0 == 0 && i + 2 * R <= r1 ? (const char *)W + (i + R) * rb : NULL;
            matvecs_rows(Y + (size_t)t0 * ldy, ldy, X + (size_t)t0 * K, T - t0 < nt ? T - t0 : nt, W, type, i, R, K,
                         next, rb);
        }
    for (; i < r1; i++)
        for (int t0 = 0; t0 < T; t0 += nt)
            matvecs_rows(Y + (size_t)t0 * ldy, ldy, X + (size_t)t0 * K, T - t0 < nt ? T - t0 : nt, W, type, i, 1, K,
                         NULL, rb);
}

INLINE void matvecs_type(float *Y, size_t ldy, const float *X, int T, const void *W, const int type, int r0, int r1,
                         int K) {
    /* 7 or 8 tokens: f32 rows in one pass of 3-row groups; 16-bit rows, half the bytes, cost less read
     * twice in 4-row groups (measured both ways on the 110M model). */
    if (type == KILN_TYPE_F32 && T > 6 && T <= MV_TOKENS) {
        matvecs_groups(Y, ldy, X, T, T, W, type, 3, r0, r1, K);
        return;
    }
    /* Passes of equal size: 10 tokens are two passes of 5, not 6 and 4. */
    int n_pass = (T + 5) / 6, nt = (T + n_pass - 1) / n_pass;
    matvecs_groups(Y, ldy, X, T, nt, W, type, 4, r0, r1, K);
}

void kiln_matvecs_avx512(float *Y, size_t ldy, const float *X, int T, const void *W, int type, int r0, int r1, int K) {
    switch (type) {
    case KILN_TYPE_F32: matvecs_type(Y, ldy, X, T, W, KILN_TYPE_F32, r0, r1, K); break;
    case KILN_TYPE_F16: matvecs_type(Y, ldy, X, T, W, KILN_TYPE_F16, r0, r1, K); break;
    case KILN_TYPE_BF16: matvecs_type(Y, ldy, X, T, W, KILN_TYPE_BF16, r0, r1, K); break;
    }
}

/* In-register transpose: afterwards r[c] holds element c of each of the 16 input rows. */
INLINE void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int j = 0; j < 4; j++) {
        t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
        t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
        r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd);
    }
}

/* Packs 16 rows x 16 columns at a time: load one 16-element piece of each row (widened to f32),
 * transpose, store one 16-output vector per k. Each row is prefetched PACK_PREFETCH bytes ahead: 16
 * streams of 64 bytes are more than the hardware prefetcher runs far enough ahead on from DRAM. */
enum { PACK_PREFETCH = 512 };

INLINE void pack_w_type(float *dst, const void *W, const int type, int N, int K, int n0, int k0, int kc) {
    for (int half = 0; half < NR / 16; half++) {
        int rbase = n0 + 16 * half;
        for (int kk = 0; kk < kc; kk += 16) {
            int nk = kc - kk < 16 ? kc - kk : 16;
            __mmask16 m = nk == 16 ? 0xffff : (__mmask16)((1u << nk) - 1);
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                if (rbase + i >= N) {
                    r[i] = _mm512_setzero_ps();
                    continue;
                }
                const void *row = row_at(W, type, rbase + i, K);
                _mm_prefetch((const char *)row + (k0 + kk) * (type == KILN_TYPE_F32 ? 4 : 2) + PACK_PREFETCH,
                             _MM_HINT_T0);
                r[i] = load_w(row, type, (int64_t)k0 + kk, m);
            }
            transpose16(r);
            for (int c = 0; c < nk; c++) _mm512_store_ps(dst + (size_t)(kk + c) * NR + 16 * half, r[c]);
        }
    }
}

void kiln_pack_w_avx512(float *dst, const void *W, int type, int N, int K, int n0, int k0, int kc) {
    switch (type) {
    case KILN_TYPE_F32: pack_w_type(dst, W, KILN_TYPE_F32, N, K, n0, k0, kc); break;
    case KILN_TYPE_F16: pack_w_type(dst, W, KILN_TYPE_F16, N, K, n0, k0, kc); break;
    case KILN_TYPE_BF16: pack_w_type(dst, W, KILN_TYPE_BF16, N, K, n0, k0, kc); break;
    }
}

/* The micro-kernel: per k, two loads of packed weights and 14 broadcasts of x feed 28 FMAs. */
void kiln_tile_avx512(float *Y, size_t ldy, int mt, int nt, const float *xp, const float *wp, int kc,
                      int accumulate) {
    __m512 c[MR][2];
#pragma GCC unroll 14
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(wp + (size_t)k * NR), b1 = _mm512_load_ps(wp + (size_t)k * NR + 16);
        const float *a = xp + (size_t)k * MR;
#pragma GCC unroll 14
        for (int r = 0; r < MR; r++) {
            __m512 ar = _mm512_set1_ps(a[r]);
            c[r][0] = _mm512_fmadd_ps(ar, b0, c[r][0]);
            c[r][1] = _mm512_fmadd_ps(ar, b1, c[r][1]);
        }
    }
    __mmask16 m0 = nt >= 16 ? 0xffff : (__mmask16)((1u << nt) - 1);
    __mmask16 m1 = nt >= 32 ? 0xffff : nt <= 16 ? 0 : (__mmask16)((1u << (nt - 16)) - 1);
#pragma GCC unroll 14
    for (int r = 0; r < MR; r++) {
        if (r >= mt) break;
        float *y = Y + (size_t)r * ldy;
        if (accumulate) {
            c[r][0] = _mm512_add_ps(c[r][0], _mm512_maskz_loadu_ps(m0, y));
            c[r][1] = _mm512_add_ps(c[r][1], _mm512_maskz_loadu_ps(m1, y + 16));
        }
        _mm512_mask_storeu_ps(y, m0, c[r][0]);
        _mm512_mask_storeu_ps(y + 16, m1, c[r][1]);
    }
}
