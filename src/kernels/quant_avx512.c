/* AVX-512 (VNNI) kernels of the quantized weights: activation quantization, the decode
 * matrix-vector products that read the weight blocks in place, and the prefill GEMM tile.
 *
 * Every integer product goes through vpdpbusd (u8 x s8, four products into each 32-bit lane), so the
 * weights are made unsigned: Q8_0 by flipping the sign bit (w + 128), Q4_0 and the K-quants are unsigned
 * already (nibbles, 6-bit values). The offset times sum(x) is subtracted through each lane's starting
 * value. In the Q8_0 and Q4_0 decode kernels each lane starts from -offset times the sum of its own x,
 * so it ends as the exact sum of its products, as in ggml; the K-quant kernels start a sub-block's
 * lanes from equal shares, exact only summed (their integer sums are scaled before the float sum).
 *
 * The activations are rearranged once per call (each thread, into its own scratch) so that the bytes
 * of x match the order in which the weight bytes come out of their blocks, and a block's scale lands
 * in the lanes that hold its sums: the per-row work is loads, the products and one fused multiply-add
 * per 64 weights or so. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kernels/quant_isa.h"

#define INLINE static inline __attribute__((always_inline))

/* ---- activations ---- */

static void quantize_x(kiln_qx *qx, const float *x, int type, int k) {
    kiln_qx_reserve(qx, k);
    if (kiln_qx_block(type) == 32) {
        for (int b = 0; b < k / 32; b++) {
            __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            __m512 id = _mm512_set1_ps(amax >= KILN_QX_TINY ? 127 / amax : 0);
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
            _mm_storeu_si128((__m128i *)(qx->q + 32 * b), _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(qx->q + 32 * b + 16), _mm512_cvtsepi32_epi8(q1));
            qx->sum[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            qx->d[b] = _cvtsh_ss(_cvtss_sh(amax / 127, _MM_FROUND_TO_NEAREST_INT));
        }
    } else {
        for (int b = 0; b < k / 256; b++) {
            const float *xb = x + 256 * b;
            __m512 m = _mm512_setzero_ps();
            for (int j = 0; j < 256; j += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xb + j)));
            float amax = _mm512_reduce_max_ps(m), max = 0;
            for (int j = 0; j < 256 && amax; j += 16) { /* the first value of largest magnitude, sign kept */
                __m512 a = _mm512_abs_ps(_mm512_loadu_ps(xb + j));
                __mmask16 hit = _mm512_cmp_ps_mask(a, _mm512_set1_ps(amax), _CMP_EQ_OQ);
                if (hit) {
                    max = xb[j + __builtin_ctz(hit)];
                    break;
                }
            }
            float iscale = amax >= KILN_QX_TINY ? -127 / max : 0;
            for (int j = 0; j < 256; j += 16) {
                __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + j), _mm512_set1_ps(iscale)));
                q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
                _mm_storeu_si128((__m128i *)(qx->q + 256 * b + j), _mm512_cvtsepi32_epi8(q));
                qx->sum[16 * b + j / 16] = _mm512_reduce_add_epi32(q);
            }
            qx->d[b] = iscale ? 1 / iscale : 0;
        }
    }
    memset(qx->q + k, 0, (size_t)(((k + 63) & ~63) - k));
}

/* 64 bytes at P as two 32-byte loads: from memory that streams better than one load across lines. */
INLINE __m512i load2x32(const uint8_t *p) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p)),
                              _mm256_loadu_si256((const __m256i *)(p + 32)), 1);
}

/* Per-thread scratch for the rearranged activations ("lanes"), kept between calls, with the stamps of
 * the activations it holds: the rows of one product reach a thread in several chunks (base/pool.h), all
 * with the same activations, which are then arranged once. */
static _Thread_local struct {
    void *raw;
    size_t size;
    int type, T;
    uint64_t stamp[KILN_QMATVECS_MAX];
} scratch;

/* BYTES of scratch for the lanes of TYPE of the T tokens QX; *READY says they are there already. */
static void *lanes_get(int type, const kiln_qx *qx, int T, size_t bytes, int *ready) {
    int same = bytes + 64 <= scratch.size && scratch.type == type && scratch.T == T;
    for (int t = 0; t < T && same; t++) same = scratch.stamp[t] == qx[t].stamp;
    *ready = same;
    if (bytes + 64 > scratch.size) {
        free(scratch.raw);
        scratch.raw = kiln_xmalloc(bytes + 64);
        scratch.size = bytes + 64;
    }
    scratch.type = type;
    scratch.T = T;
    for (int t = 0; t < T; t++) scratch.stamp[t] = qx[t].stamp;
    return (void *)(((uintptr_t)scratch.raw + 63) & ~(uintptr_t)63);
}

enum { MV_TOKENS = KILN_QPASS_TOKENS };

/* One token's rows (Q8_0, Q4_0, Q6_K) run as this many streams side by side: a thread's rows r0..r1
 * split into MV_STREAMS runs of h = (r1 - r0) / MV_STREAMS, and row i of every run is done in the same
 * pass. A row's sum is one chain of multiply-adds, a Q8_0 or Q4_0 step per ~4 cycles (their latency);
 * three chains let the core overlap them. Each run is read front to back, so the memory sees a few long
 * streams; neighbouring rows side by side jump about within each page instead, and read a 2-thread 78 MB
 * Q8_0 matrix ~30% slower than one row at a time. 512x768 in cache, one thread, one row at a time ->
 * three runs: Q8_0 45 -> 60 GB/s, Q4_0 26 -> 38. 78 MB from memory, 2 threads, best of 20: Q8_0 75 ->
 * 92 GB/s, Q4_0 ~45 -> ~70, Q6_K 66 -> 80 (with its shifts below). */
enum { MV_STREAMS = 3 };

/* Bytes ahead of the weights being read that the Q8_0 and Q4_0 kernels prefetch: the threads take rows
 * in chunks (base/pool.h), and at the start of each the hardware prefetcher has to find the stream again.
 * On a 75 MB matrix with 2 threads, 4 KiB ahead raised Q8_0 from 42-50% to 62-63% of the read bandwidth
 * and Q4_0 from 40% to 53-57% (one thread: Q4_0 89% to 96%); 2 KiB ahead gained about half as much. */
enum { PREFETCH = 4096 };

/* The float accumulators of NR rows by NT tokens (one chain of multiply-adds each) of the row kernels,
 * set to zero, and summed into Y[r * YS + t * LDY]. */
INLINE void zero_sums(__m512 acc[MV_STREAMS][MV_TOKENS], const int NR, const int NT) {
    #pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
        #pragma GCC unroll 8
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
}

INLINE void store_sums(float *y, size_t ys, size_t ldy, __m512 acc[MV_STREAMS][MV_TOKENS], const int NR, const int NT) {
    #pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
        #pragma GCC unroll 8
        for (int t = 0; t < NT; t++) y[r * ys + t * ldy] = _mm512_reduce_add_ps(acc[r][t]);
}

/* ---- Q8_0: two blocks (68 bytes) per step ----
 * The 64 weights of blocks 2c and 2c+1 are two 32-byte loads in one register; lanes 0-7 hold block 2c,
 * lanes 8-15 block 2c+1. A token's x, scales and lane offsets for each step are one q8_lanes; the
 * tokens of a short batch are interleaved (entry c * T + t), so each step reads its tokens' side by side
 * and the weights are loaded and offset once for all of them. */

typedef struct {
    int8_t x[64];
    __m512 dx;  /* the block's x scale in each of its lanes */
    __m512i b0; /* starting value of each lane: -128 times the sum of the lane's 4 x */
} q8_lanes;

/* Token QX's lanes for each step, every STRIDE-th entry of L. */
static void q8_0_lanes(q8_lanes *L, int stride, const kiln_qx *qx) {
    int nb = qx->k / 32;
    for (int c = 0; c < (nb + 1) / 2; c++) {
        q8_lanes *l = L + (size_t)c * stride;
        memcpy(l->x, qx->q + 64 * c, 64); /* q is zero past k, up to a multiple of 64 */
        float d1 = 2 * c + 1 < nb ? qx->d[2 * c + 1] : 0;
        l->dx = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(qx->d[2 * c]), _mm512_set1_ps(d1));
        /* each lane's own offset (not a share of its block's): the lane then ends as the exact sum of its
         * 4 products, as in ggml's kernels, and no lane carries a large term that cancels only after
         * the float sum (which made the result ~10x less accurate) */
        __m512i off = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(-128), _mm512_load_si512(l->x));
        l->b0 = _mm512_sub_epi32(_mm512_setzero_si512(), off);
    }
}

/* The f16 scales D0 and D1 of two blocks, each in the 8 lanes that hold its block's sums. */
INLINE __m512 two_scales(uint16_t d0, uint16_t d1) {
    return _mm512_cvtph_ps(_mm256_set_m128i(_mm_set1_epi16((short)d1), _mm_set1_epi16((short)d0)));
}

/* W: the weights with the sign bit flipped (w + 128). */
INLINE __m512 q8_0_step(__m512 acc, __m512i w, __m512 dw, const q8_lanes *L) {
    __m512i s = _mm512_dpbusd_epi32(L->b0, w, _mm512_load_si512(L->x));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, L->dx), acc);
}

/* The weights of one step at P with the sign bit flipped, and the two blocks' scales. Two 32-byte loads
 * and scalar scales: two 64-byte loads and word permutes (as Q4_0's) were slower here. */
INLINE void q8_0_load(const uint8_t *p, __m512i *w, __m512 *dw) {
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2))),
                                   _mm256_loadu_si256((const __m256i *)(p + 36)), 1);
    *w = _mm512_xor_si512(v, _mm512_set1_epi8(-128));
    uint16_t d0, d1;
    memcpy(&d0, p, 2);
    memcpy(&d1, p + 34, 2);
    *dw = two_scales(d0, d1);
}

/* NR rows (RS bytes apart) against NT tokens (their lanes NT consecutive entries of L per step, steps
 * STRIDE apart); row r's result for token t to Y[r * YS + t * LDY]. Each (row, token) sum is one chain
 * of fused multiply-adds in step order whatever NR and NT, so a token's result in a batch, and a row's
 * among NR rows, are bit for bit those of one row and one token; several rows (one token) or several
 * tokens are independent chains the core overlaps (MV_STREAMS). Each row is read front to back. */
INLINE void q8_0_rows(float *y, size_t ys, size_t ldy, const uint8_t *p, size_t rs, const q8_lanes *L, int stride,
                      int nb, const int NR, const int NT) {
    __m512 acc[MV_STREAMS][MV_TOKENS];
    zero_sums(acc, NR, NT);
    for (int c = 0; c < nb / 2; c++, p += 68, L += stride) {
        #pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            _mm_prefetch((const char *)p + r * rs + PREFETCH, _MM_HINT_T0);
            __m512i w;
            __m512 dw;
            q8_0_load(p + r * rs, &w, &dw);
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) acc[r][t] = q8_0_step(acc[r][t], w, dw, L + t);
        }
    }
    if (nb & 1) { /* a last single block: the missing second one is zeros against zeros of x */
        #pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            uint8_t q[68] = {0};
            memcpy(q, p + r * rs, 34);
            __m512i w;
            __m512 dw;
            q8_0_load(q, &w, &dw);
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) acc[r][t] = q8_0_step(acc[r][t], w, dw, L + t);
        }
    }
    store_sums(y, ys, ldy, acc, NR, NT);
}

static void matvecs_q8_0(float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W, int r0, int r1) {
    int nb = qx->k / 32, ready;
    q8_lanes *L = lanes_get(KILN_TYPE_Q8_0, qx, T, sizeof(q8_lanes) * (size_t)((nb + 1) / 2) * T, &ready);
    for (int t = 0; t < T && !ready; t++) q8_0_lanes(L + t, T, qx + t);
    KILN_QROWS_IN_PASSES(q8_0_rows, L, (size_t)nb * 34, MV_STREAMS);
}

/* One token: the short batch's one-token case, so a token in a batch gets bit for bit its own result. */
static void matvec_q8_0(float *y, const kiln_qx *qx, const void *W, int r0, int r1) {
    matvecs_q8_0(y, 0, qx, 1, W, r0, r1);
}

/* ---- Q4_0: four blocks (72 bytes) per step ----
 * The 16 bytes of nibbles of each of blocks 4c..4c+3 fill one register; low nibbles (elements 0-15 of each
 * block) and high nibbles (16-31) meet x rearranged the same way, and both products land in lanes
 * 4b..4b+3 of block b. Short batches interleave their tokens' lanes as Q8_0's do. */

typedef struct {
    int8_t lo[64], hi[64];
    __m512 dx;
    __m512i b0; /* -8 times the sum of the lane's 8 x (4 low, 4 high) */
} q4_lanes;

static void q4_0_lanes(q4_lanes *L, int stride, const kiln_qx *qx) {
    int nb = qx->k / 32;
    for (int c = 0; c < (nb + 3) / 4; c++) {
        q4_lanes *l = L + (size_t)c * stride;
        float dx[16];
        for (int b = 0; b < 4; b++) {
            int blk = 4 * c + b;
            if (blk < nb) {
                memcpy(l->lo + 16 * b, qx->q + 32 * blk, 16);
                memcpy(l->hi + 16 * b, qx->q + 32 * blk + 16, 16);
            } else {
                memset(l->lo + 16 * b, 0, 16);
                memset(l->hi + 16 * b, 0, 16);
            }
            for (int j = 0; j < 4; j++) dx[4 * b + j] = blk < nb ? qx->d[blk] : 0;
        }
        l->dx = _mm512_loadu_ps(dx);
        /* each lane's own offset, so that it ends as the exact sum of its 8 products (see Q8_0) */
        const __m512i eight = _mm512_set1_epi8(8), zero = _mm512_setzero_si512();
        __m512i off = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, eight, _mm512_load_si512(l->lo)), eight,
                                          _mm512_load_si512(l->hi));
        l->b0 = _mm512_sub_epi32(zero, off);
    }
}

/* LO, HI: the low and high nibbles of the step's weights. */
INLINE __m512 q4_0_step(__m512 acc, __m512i lo, __m512i hi, __m512 dw, const q4_lanes *L) {
    __m512i s = _mm512_dpbusd_epi32(L->b0, lo, _mm512_load_si512(L->lo));
    s = _mm512_dpbusd_epi32(s, hi, _mm512_load_si512(L->hi));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, L->dx), acc);
}

/* Four f16 scales packed in a 64-bit word, each in the 4 lanes of its block. */
INLINE __m512 four_scales(uint64_t d) {
    const __m256i idx = _mm256_setr_epi16(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    return _mm512_cvtph_ps(_mm256_permutexvar_epi16(idx, _mm256_castsi128_si256(_mm_cvtsi64_si128((long long)d))));
}

/* The weights of one step at P: low and high nibbles, and the four blocks' scales. 16-byte loads: two
 * 64-byte loads and word permutes were faster in cache but ~25% slower from memory (loads that straddle
 * cache lines). */
INLINE void q4_0_load(const uint8_t *p, __m512i *lo, __m512i *hi, __m512 *dw) {
    const __m512i low = _mm512_set1_epi8(15);
    __m512i w = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(p + 2)));
    w = _mm512_inserti32x4(w, _mm_loadu_si128((const __m128i *)(p + 20)), 1);
    w = _mm512_inserti32x4(w, _mm_loadu_si128((const __m128i *)(p + 38)), 2);
    w = _mm512_inserti32x4(w, _mm_loadu_si128((const __m128i *)(p + 56)), 3);
    uint16_t d[4];
    for (int b = 0; b < 4; b++) memcpy(&d[b], p + 18 * b, 2);
    *dw = four_scales(d[0] | (uint64_t)d[1] << 16 | (uint64_t)d[2] << 32 | (uint64_t)d[3] << 48);
    *lo = _mm512_and_si512(w, low);
    *hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), low);
}

/* NR rows against NT tokens, as q8_0_rows. */
INLINE void q4_0_rows(float *y, size_t ys, size_t ldy, const uint8_t *p, size_t rs, const q4_lanes *L, int stride,
                      int nb, const int NR, const int NT) {
    __m512 acc[MV_STREAMS][MV_TOKENS];
    zero_sums(acc, NR, NT);
    for (int c = 0; c < nb / 4; c++, p += 72, L += stride) {
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            _mm_prefetch((const char *)p + r * rs + PREFETCH, _MM_HINT_T0);
            __m512i lo, hi;
            __m512 dw;
            q4_0_load(p + r * rs, &lo, &hi, &dw);
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) acc[r][t] = q4_0_step(acc[r][t], lo, hi, dw, L + t);
        }
    }
    if (nb % 4) { /* the last 1-3 blocks: the missing ones are zero weights with zero scales */
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            uint8_t q[72] = {0};
            memcpy(q, p + r * rs, 18 * (size_t)(nb % 4));
            __m512i lo, hi;
            __m512 dw;
            q4_0_load(q, &lo, &hi, &dw);
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) acc[r][t] = q4_0_step(acc[r][t], lo, hi, dw, L + t);
        }
    }
    store_sums(y, ys, ldy, acc, NR, NT);
}

static void matvecs_q4_0(float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W, int r0, int r1) {
    int nb = qx->k / 32, ready;
    q4_lanes *L = lanes_get(KILN_TYPE_Q4_0, qx, T, sizeof(q4_lanes) * (size_t)((nb + 3) / 4) * T, &ready);
    for (int t = 0; t < T && !ready; t++) q4_0_lanes(L + t, T, qx + t);
    KILN_QROWS_IN_PASSES(q4_0_rows, L, (size_t)nb * 18, MV_STREAMS);
}

/* One token: the short batch's one-token case, so a token in a batch gets bit for bit its own result. */
static void matvec_q4_0(float *y, const kiln_qx *qx, const void *W, int r0, int r1) {
    matvecs_q4_0(y, 0, qx, 1, W, r0, r1);
}

/* ---- Q4_K: one super-block (144 bytes) per step ----
 * The 128 bytes of nibbles are two registers; low nibbles of the first hold sub-blocks 0 and 2, high
 * nibbles 1 and 3, and so on, so x is rearranged into that order. Each register's sums are multiplied
 * by their sub-block's 6-bit scale in integers; the mins meet the sums of x per sub-block. */

typedef struct {
    int8_t x[256];
    __m256i sum32; /* sum of x over each sub-block of 32 */
    float dx;
} q4k_lanes;

static const uint32_t Q4_K_SCALE_IDX[4][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2}, {1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6}, {5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 7, 7, 7}};

/* Token QX's lanes for each block, every STRIDE-th entry of L. */
static void q4_k_lanes(q4k_lanes *L, int stride, const kiln_qx *qx) {
    static const int order[8] = {0, 2, 1, 3, 4, 6, 5, 7}; /* sub-block in each 32-byte slot of x */
    for (int b = 0; b < qx->k / 256; b++) {
        q4k_lanes *l = L + (size_t)b * stride;
        int32_t s32[8];
        for (int slot = 0; slot < 8; slot++) memcpy(l->x + 32 * slot, qx->q + 256 * b + 32 * order[slot], 32);
        for (int sb = 0; sb < 8; sb++) s32[sb] = qx->sum[16 * b + 2 * sb] + qx->sum[16 * b + 2 * sb + 1];
        l->sum32 = _mm256_loadu_si256((const __m256i *)s32);
        l->dx = qx->d[b];
    }
}

/* NR rows (RS bytes apart) against NT tokens, as q8_0_rows: each block's scales and nibbles are unpacked
 * once per row and used for every token; each (row, token) sum is the one-token chain of one row. */
INLINE void q4_k_rows(float *y, size_t ys, size_t ldy, const uint8_t *p, size_t rs, const q4k_lanes *L, int stride,
                      int nb, const int NR, const int NT) {
    const __m512i low = _mm512_set1_epi8(15);
    __m512i sidx[4];
    #pragma GCC unroll 4
    for (int j = 0; j < 4; j++) sidx[j] = _mm512_loadu_si512(Q4_K_SCALE_IDX[j]);
    __m512 acc[MV_STREAMS][MV_TOKENS];
    __m256 macc[MV_STREAMS][MV_TOKENS];
    #pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
        #pragma GCC unroll 8
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps(), macc[r][t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, L += stride) {
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            const kiln_block_q4_k *blk = (const kiln_block_q4_k *)(p + r * rs) + b;
            /* a block spans 2-3 lines; 8 KiB ahead was as good as 4 and better than none (3-8%) */
            _mm_prefetch((const char *)blk + 2 * PREFETCH, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + 2 * PREFETCH + 64, _MM_HINT_T0);
            uint64_t scales, mins;
            kiln_q4k_unpack_scales(blk->scales, &scales, &mins);
            __m512i sc32 = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128((long long)scales));
            __m512i sc[4], q[4];
            #pragma GCC unroll 4
            for (int j = 0; j < 4; j++) sc[j] = _mm512_permutexvar_epi32(sidx[j], sc32);
            __m512i q0 = load2x32(blk->qs), q1 = load2x32(blk->qs + 64);
            q[0] = _mm512_and_si512(q0, low), q[1] = _mm512_and_si512(_mm512_srli_epi16(q0, 4), low);
            q[2] = _mm512_and_si512(q1, low), q[3] = _mm512_and_si512(_mm512_srli_epi16(q1, 4), low);
            __m256i m32 = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mins));
            float dw = _cvtsh_ss(blk->d), dmin = _cvtsh_ss(blk->dmin);
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                const int8_t *x = L[t].x;
                __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[0], _mm512_load_si512(x));
                __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[1], _mm512_load_si512(x + 64));
                __m512i s2 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[2], _mm512_load_si512(x + 128));
                __m512i s3 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[3], _mm512_load_si512(x + 192));
                __m512i u = _mm512_add_epi32(_mm512_mullo_epi32(s0, sc[0]), _mm512_mullo_epi32(s1, sc[1]));
                u = _mm512_add_epi32(u, _mm512_mullo_epi32(s2, sc[2]));
                u = _mm512_add_epi32(u, _mm512_mullo_epi32(s3, sc[3]));
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(u), _mm512_set1_ps(dw * L[t].dx), acc[r][t]);
                __m256i mm = _mm256_mullo_epi32(m32, L[t].sum32);
                macc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mm), _mm256_set1_ps(dmin * L[t].dx), macc[r][t]);
            }
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
        #pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            __m128 m4 = _mm_add_ps(_mm256_castps256_ps128(macc[r][t]), _mm256_extractf128_ps(macc[r][t], 1));
            m4 = _mm_add_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_add_ss(m4, _mm_movehdup_ps(m4));
            y[r * ys + t * ldy] = _mm512_reduce_add_ps(acc[r][t]) - _mm_cvtss_f32(m4);
        }
}

static void matvecs_q4_k(float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W, int r0, int r1) {
    int nb = qx->k / 256, ready;
    q4k_lanes *L = lanes_get(KILN_TYPE_Q4_K, qx, T, sizeof(q4k_lanes) * (size_t)nb * T, &ready);
    for (int t = 0; t < T && !ready; t++) q4_k_lanes(L + t, T, qx + t);
    /* one token a row at a time: on the 110M model's Q4_K matrices 3 streams were 3-10% slower (the Q6_K
     * head 5-15% faster with them) */
    KILN_QROWS_IN_PASSES(q4_k_rows, L, (size_t)nb * sizeof(kiln_block_q4_k), 1);
}

static void matvec_q4_k(float *y, const kiln_qx *qx, const void *W, int r0, int r1) {
    matvecs_q4_k(y, 0, qx, 1, W, r0, r1);
}

/* ---- Q6_K: one super-block (210 bytes) per step ----
 * Each half of 128 weights is 64 bytes of low nibbles and 32 bytes of high bit pairs; merged they give
 * the weights in their natural order, 64 per register. Lanes start from -32 * sum(x) / 4 of their
 * sub-block of 16, and are multiplied by its 8-bit scale in integers. */

typedef struct {
    int8_t x[256];
    __m512i b0[4]; /* per quarter of 64 weights: -8 * sum(x) of each lane's sub-block */
    float dx;
} q6k_lanes;

/* Token QX's lanes for each block, every STRIDE-th entry of L. */
static void q6_k_lanes(q6k_lanes *L, int stride, const kiln_qx *qx) {
    for (int b = 0; b < qx->k / 256; b++) {
        q6k_lanes *l = L + (size_t)b * stride;
        memcpy(l->x, qx->q + 256 * b, 256);
        for (int q = 0; q < 4; q++) {
            int32_t v[16];
            for (int j = 0; j < 16; j++) v[j] = -8 * qx->sum[16 * b + 4 * q + j / 4];
            l->b0[q] = _mm512_loadu_si512(v);
        }
        l->dx = qx->d[b];
    }
}

/* The high bit pairs of the weights 32 c + l (c = 0..3) are bits 2c, 2c+1 of qh[l]; shifted by word (a
 * byte's neighbour only reaches bits the mask clears) to bits 4-5: c = 0, 1 left by 4 and 2, c = 2, 3
 * right by 0 and 2, with qh[0..31] in both halves of the register. Q6_K_SCALE_IDX[q] puts the scale of
 * each lane's sub-block of quarter q in the lane. */
static const uint32_t Q6_K_SCALE_IDX[4][16] = {{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
                                               {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
                                               {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
                                               {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15}};

/* NR rows (RS bytes apart) against NT tokens, as q4_k_rows: a block's 6-bit weights (A, B: 64 each per
 * half) and scales are unpacked once per row for every token. */
INLINE void q6_k_rows(float *y, size_t ys, size_t ldy, const uint8_t *p, size_t rs, const q6k_lanes *L, int stride,
                      int nb, const int NR, const int NT) {
    const __m512i low = _mm512_set1_epi8(15), bits45 = _mm512_set1_epi8(0x30);
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    __m512 acc[MV_STREAMS][MV_TOKENS];
    zero_sums(acc, NR, NT);
    for (int b = 0; b < nb; b++, L += stride) {
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            const kiln_block_q6_k *blk = (const kiln_block_q6_k *)(p + r * rs) + b;
            __m512i sc32 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)blk->scales));
            __m512i w[4], sc[4];
            #pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m512i ql = load2x32(blk->ql + 64 * h);
                __m512i H = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h)));
                __m512i ha = _mm512_and_si512(_mm512_sllv_epi16(H, shl), bits45);
                __m512i hb = _mm512_and_si512(_mm512_srlv_epi16(H, shr), bits45);
                /* (a & 0x0f) | b: ternary-logic table 0xEC */
                w[2 * h] = _mm512_ternarylogic_epi32(ql, ha, low, 0xEC);
                w[2 * h + 1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(ql, 4), hb, low, 0xEC);
            }
            #pragma GCC unroll 4
            for (int q = 0; q < 4; q++) sc[q] = _mm512_permutexvar_epi32(_mm512_loadu_si512(Q6_K_SCALE_IDX[q]), sc32);
            float dw = _cvtsh_ss(blk->d);
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                __m512i u = _mm512_setzero_si512();
                #pragma GCC unroll 4
                for (int q = 0; q < 4; q++) {
                    __m512i s = _mm512_dpbusd_epi32(L[t].b0[q], w[q], _mm512_load_si512(L[t].x + 64 * q));
                    u = _mm512_add_epi32(u, _mm512_mullo_epi32(s, sc[q]));
                }
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(u), _mm512_set1_ps(dw * L[t].dx), acc[r][t]);
            }
        }
    }
    store_sums(y, ys, ldy, acc, NR, NT);
}

static void matvecs_q6_k(float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W, int r0, int r1) {
    int nb = qx->k / 256, ready;
    q6k_lanes *L = lanes_get(KILN_TYPE_Q6_K, qx, T, sizeof(q6k_lanes) * (size_t)nb * T, &ready);
    for (int t = 0; t < T && !ready; t++) q6_k_lanes(L + t, T, qx + t);
    KILN_QROWS_IN_PASSES(q6_k_rows, L, (size_t)nb * sizeof(kiln_block_q6_k), MV_STREAMS);
}

static void matvec_q6_k(float *y, const kiln_qx *qx, const void *W, int r0, int r1) {
    matvecs_q6_k(y, 0, qx, 1, W, r0, r1);
}

static void matvec(float *y, const kiln_qx *qx, const void *W, int type, int r0, int r1) {
    switch (type) {
    case KILN_TYPE_Q8_0: matvec_q8_0(y, qx, W, r0, r1); break;
    case KILN_TYPE_Q4_0: matvec_q4_0(y, qx, W, r0, r1); break;
    case KILN_TYPE_Q4_K: matvec_q4_k(y, qx, W, r0, r1); break;
    case KILN_TYPE_Q6_K: matvec_q6_k(y, qx, W, r0, r1); break;
    }
}

static int matvecs(float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W, int type, int r0, int r1) {
    switch (type) {
    case KILN_TYPE_Q8_0: matvecs_q8_0(Y, ldy, qx, T, W, r0, r1); return 1;
    case KILN_TYPE_Q4_0: matvecs_q4_0(Y, ldy, qx, T, W, r0, r1); return 1;
    case KILN_TYPE_Q4_K: matvecs_q4_k(Y, ldy, qx, T, W, r0, r1); return 1;
    case KILN_TYPE_Q6_K: matvecs_q6_k(Y, ldy, qx, T, W, r0, r1); return 1;
    default: return 0;
    }
}

/* ---- prefill tile: 6 tokens x 32 weight rows, 12 integer and 12 float accumulators ----
 * For each group of 4 columns, each token's 4 bytes are broadcast against the 32 rows' 4 bytes. */

enum { MR = 6, NR = 32 };

/* The tile's units of G4 groups of 4 columns (G4 a constant: with the group loop unrolled the integer
 * sums stay in their registers; a loop carrying them made GCC copy each one twice per product). */
INLINE void tile_units(const kiln_qtile *a, __m512 acc[MR][2], int G4) {
    const int8_t *xq = a->xq;
    const uint8_t *wq = a->wq;
    for (int u = 0; u < a->units; u++, xq += 4 * MR * G4, wq += 4 * NR * G4) {
        __m512i s[MR][2];
        #pragma GCC unroll 8
        for (int t = 0; t < MR; t++) s[t][0] = s[t][1] = _mm512_set1_epi32(a->xb[u * MR + t]);
        #pragma GCC unroll 8
        for (int g = 0; g < G4; g++) {
            __m512i w0 = _mm512_load_si512(wq + 4 * NR * g), w1 = _mm512_load_si512(wq + 4 * NR * g + 64);
            #pragma GCC unroll 8
            for (int t = 0; t < MR; t++) {
                int32_t xv;
                memcpy(&xv, xq + 4 * MR * g + 4 * t, 4);
                __m512i xb = _mm512_set1_epi32(xv);
                s[t][0] = _mm512_dpbusd_epi32(s[t][0], w0, xb);
                s[t][1] = _mm512_dpbusd_epi32(s[t][1], w1, xb);
            }
        }
        __m512 ws0 = _mm512_load_ps(a->ws + u * NR), ws1 = _mm512_load_ps(a->ws + u * NR + 16);
        #pragma GCC unroll 8
        for (int t = 0; t < MR; t++) {
            __m512 dx = _mm512_set1_ps(a->xd[u * MR + t]);
            acc[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t][0]), _mm512_mul_ps(ws0, dx), acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t][1]), _mm512_mul_ps(ws1, dx), acc[t][1]);
        }
        if (a->wm) {
            __m512 wm0 = _mm512_load_ps(a->wm + u * NR), wm1 = _mm512_load_ps(a->wm + u * NR + 16);
            #pragma GCC unroll 8
            for (int t = 0; t < MR; t++) {
                __m512 xm = _mm512_set1_ps(a->xm[u * MR + t]);
                acc[t][0] = _mm512_fnmadd_ps(wm0, xm, acc[t][0]);
                acc[t][1] = _mm512_fnmadd_ps(wm1, xm, acc[t][1]);
            }
        }
    }
}

static void tile(const kiln_qtile *a) {
    __m512 acc[MR][2];
    #pragma GCC unroll 8
    for (int t = 0; t < MR; t++) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    if (a->unit_k == 32) tile_units(a, acc, 8);
    else tile_units(a, acc, 4); /* Q6_K: units of 16 */
    __mmask16 m0 = a->nt >= 16 ? 0xffff : (__mmask16)((1u << a->nt) - 1);
    __mmask16 m1 = a->nt >= 32 ? 0xffff : a->nt <= 16 ? 0 : (__mmask16)((1u << (a->nt - 16)) - 1);
    #pragma GCC unroll 8
    for (int t = 0; t < a->mt; t++) {
        float *y = a->Y + (size_t)t * a->ldy;
        if (a->accumulate) {
            acc[t][0] = _mm512_add_ps(acc[t][0], _mm512_maskz_loadu_ps(m0, y));
            acc[t][1] = _mm512_add_ps(acc[t][1], _mm512_maskz_loadu_ps(m1, y + 16));
        }
        _mm512_mask_storeu_ps(y, m0, acc[t][0]);
        _mm512_mask_storeu_ps(y + 16, m1, acc[t][1]);
    }
}

const kiln_qkernels kiln_qkernels_avx512 = {
    .name = "avx512",
    .quantize_x = quantize_x,
    .matvec = matvec,
    .matvecs = matvecs,
    .matvecs_max = KILN_QMATVECS_MAX, /* bench_kernels (d): short batches beat the GEMM up to 16 tokens */
    .mr = MR,
    .nr = NR,
    .tile = tile,
};
