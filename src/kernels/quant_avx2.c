/* AVX2 kernels of the quantized weights: the decode matrix-vector products, block by block, and the
 * prefill GEMM tile. Without VNNI the byte products go through vpmaddubsw (u8 x s8 into saturating
 * 16-bit pairs) and vpmaddwd; the operands are kept small enough never to saturate: Q8_0 multiplies
 * |w| by x with w's sign (both at most 127 in magnitude, so a pair stays under 2^15), the other types
 * are unsigned nibbles or 6-bit values. vpmaddwd against a sub-block's scale sums the pairs and applies
 * the scale in one instruction. The GEMM tile multiplies 16-bit values with vpmaddwd.
 *
 * quant_avx2vnni.c compiles this file again with KILN_AVX2_VNNI for CPUs that also have AVX-VNNI (Intel
 * from Alder Lake, without AVX-512): there the four byte products of a lane are one vpdpbusd, and the
 * GEMM tile works on bytes. The integer sums are the same, so are the results, bit for bit. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

#include "kernels/quant_isa.h"

#define INLINE static inline __attribute__((always_inline))

/* Sums of 4 products of unsigned U and signed S bytes in each 32-bit lane (U * S pairs below 2^15). */
INLINE __m256i dot4(__m256i u, __m256i s) {
#if KILN_AVX2_VNNI
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* Tokens per pass over a row: one float accumulator each, with the weights and constants in the other
 * registers of 16. */
enum { MV_TOKENS = KILN_QPASS_TOKENS };

/* One token's rows run as this many streams side by side, as in quant_avx512.c: a thread's rows r0..r1
 * split into MV_STREAMS runs, row i of every run in the same pass, so the core overlaps their chains of
 * multiply-adds (one per 32-weight block here) and each run is read front to back. */
enum { MV_STREAMS = 3 };

/* The float accumulators of NR rows by NT tokens of the row kernels, set to zero, and summed into
 * Y[r * YS + t * LDY]. */
INLINE void zero_sums(__m256 acc[MV_STREAMS][MV_TOKENS], const int NR, const int NT) {
    #pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
        #pragma GCC unroll 8
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
}

INLINE void store_sums(float *y, size_t ys, size_t ldy, __m256 acc[MV_STREAMS][MV_TOKENS], const int NR, const int NT) {
    #pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
        #pragma GCC unroll 8
        for (int t = 0; t < NT; t++) y[r * ys + t * ldy] = hsum(acc[r][t]);
}

/* One token's x of one block of 32 with its scale and sum; a short batch's tokens are interleaved (entry
 * b * T + t), so each block reads its tokens' side by side and the weights are loaded once for all. */
typedef struct {
    int8_t x[32];
    float d;
    int32_t sum;
    char pad[24];
} tok_block;

/* The same for the K-quants: one token's x of a block of 256, its scale and its sums per 16. */
typedef struct {
    int8_t x[256];
    int32_t sum[16];
    float d;
    char pad[60];
} tok_kblock;

static _Thread_local struct {
    void *raw;
    size_t bytes;
    int T, block; /* tokens, and 32 (tok_block) or 256 (tok_kblock) */
    uint64_t stamp[KILN_QMATVECS_MAX];
} scratch;

/* Room for the T tokens' blocks of BLOCK activations in the calling thread's scratch, kept between calls
 * with the stamps of the activations it holds: the rows of one product reach a thread in several chunks
 * (base/pool.h), all with the same activations, which are then arranged once. *READY: they are there. */
static void *lanes_get(const kiln_qx *qx, int T, int block, size_t bytes, int *ready) {
    *ready = bytes <= scratch.bytes && scratch.T == T && scratch.block == block;
    for (int t = 0; t < T && *ready; t++) *ready = scratch.stamp[t] == qx[t].stamp;
    if (bytes > scratch.bytes) {
        free(scratch.raw);
        scratch.raw = kiln_xmalloc(bytes + 64);
        scratch.bytes = bytes;
    }
    scratch.T = T;
    scratch.block = block;
    for (int t = 0; t < T; t++) scratch.stamp[t] = qx[t].stamp;
    return (void *)(((uintptr_t)scratch.raw + 63) & ~(uintptr_t)63);
}

/* The blocks of the T tokens QX, interleaved. */
static const tok_block *tok_blocks(const kiln_qx *qx, int T) {
    int nb = qx->k / 32, ready;
    tok_block *blocks = lanes_get(qx, T, 32, sizeof(tok_block) * (size_t)nb * T, &ready);
    for (int t = 0; t < T && !ready; t++)
        for (int b = 0; b < nb; b++) {
            tok_block *l = blocks + (size_t)b * T + t;
            memcpy(l->x, qx[t].q + 32 * b, 32);
            l->d = qx[t].d[b];
            l->sum = qx[t].sum[b];
        }
    return blocks;
}

static const tok_kblock *tok_kblocks(const kiln_qx *qx, int T) {
    int nb = qx->k / 256, ready;
    tok_kblock *blocks = lanes_get(qx, T, 256, sizeof(tok_kblock) * (size_t)nb * T, &ready);
    for (int t = 0; t < T && !ready; t++)
        for (int b = 0; b < nb; b++) {
            tok_kblock *l = blocks + (size_t)b * T + t;
            memcpy(l->x, qx[t].q + 256 * b, 256);
            memcpy(l->sum, qx[t].sum + 16 * b, sizeof l->sum);
            l->d = qx[t].d[b];
        }
    return blocks;
}

/* NR rows (RS blocks apart) against NT tokens (their blocks NT consecutive entries of L per block, blocks
 * STRIDE apart); row r's result for token t to Y[r * YS + t * LDY]. Each (row, token) sum is one chain of
 * multiply-adds in block order whatever NR and NT, so a token's result in a batch, and a row's among NR
 * rows, are bit for bit those of one row and one token. Q8_0 multiplies |w| by x with w's sign. */
INLINE void q8_0_rows(float *y, size_t ys, size_t ldy, const uint8_t *p, size_t rs, const tok_block *L,
                      int stride, int nb, const int NR, const int NT) {
    __m256 acc[MV_STREAMS][MV_TOKENS];
    zero_sums(acc, NR, NT);
    for (int b = 0; b < nb; b++, L += stride)
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            const kiln_block_q8_0 *wb = (const kiln_block_q8_0 *)(p + r * rs) + b;
            __m256i wv = _mm256_loadu_si256((const __m256i *)wb->qs), aw = _mm256_sign_epi8(wv, wv);
            __m256 dw = _mm256_set1_ps(_cvtsh_ss(wb->d));
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                __m256i s = dot4(aw, _mm256_sign_epi8(_mm256_load_si256((const __m256i *)L[t].x), wv));
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(L[t].d)), acc[r][t]);
            }
        }
    store_sums(y, ys, ldy, acc, NR, NT);
}

/* Q4_0: the nibbles as unsigned bytes; each lane's 4 products are then 8 * sum(x) too large, and 8
 * lanes of -sum(x) of the block subtract it. */
INLINE void q4_0_rows(float *y, size_t ys, size_t ldy, const uint8_t *p, size_t rs, const tok_block *L,
                      int stride, int nb, const int NR, const int NT) {
    const __m256i low = _mm256_set1_epi8(15);
    __m256 acc[MV_STREAMS][MV_TOKENS];
    zero_sums(acc, NR, NT);
    for (int b = 0; b < nb; b++, L += stride)
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            const kiln_block_q4_0 *wb = (const kiln_block_q4_0 *)(p + r * rs) + b;
            __m128i q = _mm_loadu_si128((const __m128i *)wb->qs);
            __m256i wv = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);
            __m256 dw = _mm256_set1_ps(_cvtsh_ss(wb->d));
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                __m256i s = dot4(wv, _mm256_load_si256((const __m256i *)L[t].x));
                s = _mm256_sub_epi32(s, _mm256_set1_epi32(L[t].sum));
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(L[t].d)), acc[r][t]);
            }
        }
    store_sums(y, ys, ldy, acc, NR, NT);
}

static void matvecs_q8_0(float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W, int r0, int r1) {
    int nb = qx->k / 32;
    const tok_block *L = tok_blocks(qx, T);
    KILN_QROWS_IN_PASSES(q8_0_rows, L, (size_t)nb * sizeof(kiln_block_q8_0), MV_STREAMS);
}

static void matvecs_q4_0(float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W, int r0, int r1) {
    int nb = qx->k / 32;
    const tok_block *L = tok_blocks(qx, T);
    KILN_QROWS_IN_PASSES(q4_0_rows, L, (size_t)nb * sizeof(kiln_block_q4_0), MV_STREAMS);
}

static void matvec_q8_0(float *y, const kiln_qx *qx, const void *W, int r0, int r1) {
    matvecs_q8_0(y, 0, qx, 1, W, r0, r1);
}

static void matvec_q4_0(float *y, const kiln_qx *qx, const void *W, int r0, int r1) {
    matvecs_q4_0(y, 0, qx, 1, W, r0, r1);
}

/* Q4_K: NR rows (RS blocks apart) against NT tokens, as q8_0_rows; each 32-byte group of nibbles is
 * unpacked once for every token, and each sub-block's products are scaled by vpmaddwd. */
INLINE void q4_k_rows(float *y, size_t ys, size_t ldy, const uint8_t *p, size_t rs, const tok_kblock *L,
                      int stride, int nb, const int NR, const int NT) {
    const __m256i low = _mm256_set1_epi8(15);
    __m256 acc[MV_STREAMS][MV_TOKENS];
    float mins[MV_STREAMS][MV_TOKENS];
    #pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
        #pragma GCC unroll 8
        for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps(), mins[r][t] = 0;
    for (int b = 0; b < nb; b++, L += stride)
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            const kiln_block_q4_k *wb = (const kiln_block_q4_k *)(p + r * rs) + b;
            __m256i isum[MV_TOKENS];
            int imin[MV_TOKENS];
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) isum[t] = _mm256_setzero_si256(), imin[t] = 0;
            uint64_t scs, ms;
            kiln_q4k_unpack_scales(wb->scales, &scs, &ms);
            for (int g = 0; g < 4; g++) {
                int sc0 = scs >> 16 * g & 0xff, sc1 = scs >> (16 * g + 8) & 0xff;
                int m0 = ms >> 16 * g & 0xff, m1 = ms >> (16 * g + 8) & 0xff;
                __m256i q = _mm256_loadu_si256((const __m256i *)(wb->qs + 32 * g));
                __m256i lo = _mm256_and_si256(q, low), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                __m256i s0 = _mm256_set1_epi16((short)sc0), s1 = _mm256_set1_epi16((short)sc1);
                #pragma GCC unroll 8
                for (int t = 0; t < NT; t++) {
                    const int8_t *x = L[t].x + 64 * g;
                    const int32_t *bsum = L[t].sum + 4 * g;
                    __m256i plo = _mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)x));
                    __m256i phi = _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(x + 32)));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(plo, s0));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(phi, s1));
                    imin[t] += m0 * (bsum[0] + bsum[1]) + m1 * (bsum[2] + bsum[3]);
                }
            }
            float dw = _cvtsh_ss(wb->d), dmin = _cvtsh_ss(wb->dmin);
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(dw * L[t].d), acc[r][t]);
                mins[r][t] += dmin * L[t].d * (float)imin[t];
            }
        }
    #pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
        #pragma GCC unroll 8
        for (int t = 0; t < NT; t++) y[r * ys + t * ldy] = hsum(acc[r][t]) - mins[r][t];
}

/* Q6_K: NR rows against NT tokens; the 6-bit values of each half are assembled once for every token. */
INLINE void q6_k_rows(float *y, size_t ys, size_t ldy, const uint8_t *p, size_t rs, const tok_kblock *L,
                      int stride, int nb, const int NR, const int NT) {
    const __m256i low = _mm256_set1_epi8(15), two = _mm256_set1_epi8(3);
    __m256 acc[MV_STREAMS][MV_TOKENS];
    zero_sums(acc, NR, NT);
    for (int b = 0; b < nb; b++, L += stride)
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            const kiln_block_q6_k *wb = (const kiln_block_q6_k *)(p + r * rs) + b;
            const int8_t *sc = wb->scales;
            __m256i isum[MV_TOKENS];
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) isum[t] = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                __m256i ql0 = _mm256_loadu_si256((const __m256i *)(wb->ql + 64 * h));
                __m256i ql1 = _mm256_loadu_si256((const __m256i *)(wb->ql + 64 * h + 32));
                __m256i qh = _mm256_loadu_si256((const __m256i *)(wb->qh + 32 * h));
                __m256i v[4] = {
                    _mm256_or_si256(_mm256_and_si256(ql0, low), _mm256_slli_epi16(_mm256_and_si256(qh, two), 4)),
                    _mm256_or_si256(_mm256_and_si256(ql1, low),
                                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two), 4)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low),
                                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two), 4)),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
                                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two), 4)),
                };
                for (int c = 0; c < 4; c++) {
                    int s = 8 * h + 2 * c;
                    __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[s + 1]), _mm_set1_epi16(sc[s]));
                    #pragma GCC unroll 8
                    for (int t = 0; t < NT; t++) {
                        __m256i p = _mm256_maddubs_epi16(
                            v[c], _mm256_load_si256((const __m256i *)(L[t].x + 128 * h + 32 * c)));
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p, scv));
                    }
                }
            }
            float dw = _cvtsh_ss(wb->d);
            #pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                int corr = 0; /* the stored values are q + 32 */
                for (int s = 0; s < 16; s++) corr += sc[s] * L[t].sum[s];
                __m256i u = _mm256_sub_epi32(isum[t], _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, 32 * corr));
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(u), _mm256_set1_ps(dw * L[t].d), acc[r][t]);
            }
        }
    store_sums(y, ys, ldy, acc, NR, NT);
}

/* One token a row at a time, as before they took short batches (their decode was not measured with runs
 * side by side on an AVX2 machine). */
static void matvecs_q4_k(float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W, int r0, int r1) {
    int nb = qx->k / 256;
    const tok_kblock *L = tok_kblocks(qx, T);
    KILN_QROWS_IN_PASSES(q4_k_rows, L, (size_t)nb * sizeof(kiln_block_q4_k), 1);
}

static void matvecs_q6_k(float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W, int r0, int r1) {
    int nb = qx->k / 256;
    const tok_kblock *L = tok_kblocks(qx, T);
    KILN_QROWS_IN_PASSES(q6_k_rows, L, (size_t)nb * sizeof(kiln_block_q6_k), 1);
}

static void matvec_q4_k(float *y, const kiln_qx *qx, const void *W, int r0, int r1) {
    matvecs_q4_k(y, 0, qx, 1, W, r0, r1);
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

/* ---- prefill tile: MR tokens x 8 weight rows, on 16-bit values, or on bytes with KILN_AVX2_VNNI ---- */

/* ACC[t] += the integer sums S[t] of unit U of M tokens times their scales (and, with mins, minus the
 * mins times the tokens' sums), for N = 8 weight rows. */
INLINE void add_unit(const kiln_qtile *a, __m256 *acc, const __m256i *s, int u, const int M, const int N) {
    __m256 ws = _mm256_load_ps(a->ws + u * N);
    #pragma GCC unroll 8
    for (int t = 0; t < M; t++)
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(ws, _mm256_set1_ps(a->xd[u * M + t])), acc[t]);
    if (a->wm) {
        __m256 wm = _mm256_load_ps(a->wm + u * N);
        #pragma GCC unroll 8
        for (int t = 0; t < M; t++) acc[t] = _mm256_fnmadd_ps(wm, _mm256_set1_ps(a->xm[u * M + t]), acc[t]);
    }
}

/* The tile's mt x nt results (8 rows a token) into Y, added to it when accumulating. */
INLINE void store_tile(const kiln_qtile *a, const __m256 *acc) {
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(a->nt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    #pragma GCC unroll 8
    for (int t = 0; t < a->mt; t++) {
        float *y = a->Y + (size_t)t * a->ldy;
        __m256 v = a->accumulate ? _mm256_add_ps(acc[t], _mm256_maskload_ps(y, mask)) : acc[t];
        _mm256_maskstore_ps(y, mask, v);
    }
}

/* The tile's shape and the products of one group of columns: each token's 4 bytes broadcast against
 * the 8 rows' 4 bytes of the group. With AVX-VNNI: byte operands (the AVX-512 tile's packing: unsigned
 * weights plus the type's offset, int8 tokens), a group of 4 columns, vpdpbusd adding 32 products into
 * the 8 lanes. Without: 16-bit operands, a group of 2 columns, vpmaddwd's 16 products and an add. */
#if KILN_AVX2_VNNI
enum { MR = 6, NR = 8, GROUP_COLS = 4 };

INLINE __m256i group_products(__m256i s, __m256i w, __m256i x) { return _mm256_dpbusd_avx_epi32(s, w, x); }
#else
enum { MR = 4, NR = 8, GROUP_COLS = 2 };

INLINE __m256i group_products(__m256i s, __m256i w, __m256i x) {
    s = _mm256_add_epi32(s, _mm256_madd_epi16(w, x));
    /* kept a chain: GCC would otherwise regroup the unrolled sums into trees and spill them */
    __asm__("" : "+v"(s));
    return s;
}
#endif

/* The tile's units of G groups of columns, 4 bytes of each token and row per group (G a constant: with
 * the group loop unrolled the integer sums stay in their registers; a loop carrying them made GCC copy
 * each one around every product). */
INLINE void tile_units(const kiln_qtile *a, __m256 acc[MR], const int G) {
    const uint8_t *xq = (const uint8_t *)a->xq, *wq = (const uint8_t *)a->wq;
    for (int u = 0; u < a->units; u++, xq += 4 * MR * G, wq += 4 * NR * G) {
        __m256i s[MR];
        #pragma GCC unroll 8
        for (int t = 0; t < MR; t++) s[t] = _mm256_set1_epi32(a->xb[u * MR + t]);
        #pragma GCC unroll 16
        for (int g = 0; g < G; g++) {
            __m256i w = _mm256_load_si256((const __m256i *)(wq + 4 * NR * g));
            #pragma GCC unroll 8
            for (int t = 0; t < MR; t++) {
                int32_t xv;
                memcpy(&xv, xq + 4 * MR * g + 4 * t, 4);
                s[t] = group_products(s[t], w, _mm256_set1_epi32(xv));
            }
        }
        add_unit(a, acc, s, u, MR, NR);
    }
}

static void tile(const kiln_qtile *a) {
    __m256 acc[MR];
    #pragma GCC unroll 8
    for (int t = 0; t < MR; t++) acc[t] = _mm256_setzero_ps();
    if (a->unit_k == 32) tile_units(a, acc, 32 / GROUP_COLS);
    else tile_units(a, acc, 16 / GROUP_COLS); /* Q6_K: units of 16 */
    store_tile(a, acc);
}

#if KILN_AVX2_VNNI
const kiln_qkernels kiln_qkernels_avx2vnni = {
    .name = "avx2-vnni",
#else
const kiln_qkernels kiln_qkernels_avx2 = {
    .name = "avx2",
    .wide = 1,
#endif
    .quantize_x = kiln_quantize_x_ref,
    .matvec = matvec,
    .matvecs = matvecs,
    .matvecs_max = KILN_QMATVECS_MAX, /* bench_kernels (d): short batches beat the GEMM up to 16 tokens */
    .mr = MR,
    .nr = NR,
    .tile = tile,
};
