/* Quantized weights: ggml's block formats, bit for bit as llama.cpp reads and writes them in GGUF, and
 * the integer dot products that use them.
 *
 * A row of K weights is K / block_size blocks stored one after the other. f16 scales are IEEE half.
 *
 *   Q8_0  (34 bytes per 32 weights)   d:f16, qs:int8[32]           w[j] = d * qs[j]
 *   Q4_0  (18 bytes per 32 weights)   d:f16, qs:u8[16]             w[j] = d * (nib[j] - 8)
 *         nib[j] is the low nibble of qs[j] for j < 16 and the high nibble of qs[j - 16] for j >= 16.
 *   Q4_K  (144 bytes per 256 weights) d:f16, dmin:f16, scales:u8[12], qs:u8[128]
 *         8 sub-blocks of 32, each with a 6-bit scale sc[s] and a 6-bit min m[s]:
 *             w[32 s + i] = d * sc[s] * nib - dmin * m[s]
 *         qs holds 4 groups of 32 bytes; group g gives sub-block 2g its low nibbles and sub-block 2g+1
 *         its high nibbles. Scales: for s < 4, sc[s] = scales[s] & 63 and m[s] = scales[s + 4] & 63; for
 *         s >= 4, sc[s] = (scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4 and
 *         m[s] = (scales[s + 4] >> 4) | (scales[s] >> 6) << 4.
 *   Q6_K  (210 bytes per 256 weights) ql:u8[128], qh:u8[64], scales:int8[16], d:f16
 *         w[16 s + i] = d * scales[s] * (q - 32), q a 6-bit value: for each half h of 128 weights and
 *         l < 32, with L = ql + 64 h and H = qh + 32 h, the weights 128 h + l + 32 c (c = 0..3) take the
 *         low 4 bits from L[l] (c = 0), L[l + 32] (c = 1), L[l] >> 4 (c = 2), L[l + 32] >> 4 (c = 3),
 *         and the high 2 bits from bits 2c and 2c+1 of H[l].
 *
 * Dot products run on integers: the activations x are quantized on the fly to int8 ("kiln_qx") in the
 * grouping ggml uses with each weight type, so that kiln and llama.cpp compute the same sums:
 *   - for Q8_0 and Q4_0: blocks of 32, d = max|x| / 127 rounded to f16, q = round(x * 127 / max|x|);
 *   - for Q4_K and Q6_K: blocks of 256, d = -max / 127 for the x of largest magnitude max,
 *     q = min(127, round(x / d)), and the sums of q over each 16 (ggml's Q8_K).
 * Rounding is to nearest, ties to even. A block whose largest magnitude is below KILN_QX_TINY quantizes
 * to zeros (its scale would overflow 127 / max). */
#ifndef KILN_KERNELS_QUANT_H
#define KILN_KERNELS_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kiln.h" /* the type ids: KILN_TYPE_Q8_0 and the others are kiln_type values */

typedef struct {
    uint16_t d;
    int8_t qs[32];
} kiln_block_q8_0;

typedef struct {
    uint16_t d;
    uint8_t qs[16];
} kiln_block_q4_0;

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} kiln_block_q4_k;

typedef struct {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
} kiln_block_q6_k;

/* Weights per block of a quantized TYPE (32 or 256); 0 when TYPE is not one of the four. */
int kiln_quant_block(int type);
/* Bytes of a row of K weights of quantized TYPE; 0 when TYPE is not one of the four or K is not a whole
 * number of blocks. */
size_t kiln_quant_row_bytes(int type, int64_t k);
/* "Q8_0, Q4_0, Q4_K, Q6_K": for error messages. */
const char *kiln_quant_names(void);

/* Dequantizes a row of K weights (K a multiple of the block size). */
void kiln_dequantize_row(int type, const void *src, float *dst, int64_t k);
/* Quantizes a row of K floats to TYPE, choosing scales as llama.cpp does: nearest rounding with the
 * largest-magnitude value mapped to the end of the range for Q8_0/Q4_0; for Q4_K and Q6_K a search over
 * sub-block scales (and mins) that minimises the weighted squared error, then 6/8-bit scales. */
void kiln_quantize_row(int type, const float *src, void *dst, int64_t k);

/* 6-bit scale and min of sub-block S (0..7) of a Q4_K block's packed SCALES. */
void kiln_q4k_scale_min(const uint8_t *scales, int s, int *sc, int *m);
/* All eight of them at once, byte S of *SC and *M for sub-block S: the kernels' form, without branches. */
static inline void kiln_q4k_unpack_scales(const uint8_t *scales, uint64_t *sc, uint64_t *m) {
    uint32_t a, b, c;
    memcpy(&a, scales, 4);
    memcpy(&b, scales + 4, 4);
    memcpy(&c, scales + 8, 4);
    uint32_t sc_lo = a & 0x3f3f3f3f, m_lo = b & 0x3f3f3f3f;
    uint32_t sc_hi = (c & 0x0f0f0f0f) | ((a >> 6) & 0x03030303) << 4;
    uint32_t m_hi = ((c >> 4) & 0x0f0f0f0f) | ((b >> 6) & 0x03030303) << 4;
    *sc = sc_lo | (uint64_t)sc_hi << 32;
    *m = m_lo | (uint64_t)m_hi << 32;
}

#define KILN_QX_TINY 1e-30f

/* Activations quantized for one weight type: K int8 values and their scales and sums. */
typedef struct {
    int8_t *q;    /* K values, 64-byte aligned, then zeros up to a multiple of 64 */
    float *d;     /* one scale per block of 32 (Q8_0, Q4_0 weights) or 256 (K-quants) */
    int32_t *sum; /* sum of q over each block of 32 (Q8_0, Q4_0) or each 16 (K-quants) */
    int k, cap;
    uint64_t stamp; /* distinct for every quantization: kernels may reuse what they derived from the last */
    void *mem;
} kiln_qx;

/* Block of x that shares one scale for weights of TYPE: 32 or 256. */
int kiln_qx_block(int type);
/* Makes room in QX for K activations (reuses its memory when large enough) and gives it a new stamp:
 * every quantizer calls it first. Free with kiln_qx_free. */
void kiln_qx_reserve(kiln_qx *qx, int k);
void kiln_qx_free(kiln_qx *qx);
/* Quantizes K activations X for a dot product with weights of TYPE (K a multiple of its block). */
void kiln_quantize_x_ref(kiln_qx *qx, const float *x, int type, int k);

/* Integer dot product of one row of weights of TYPE with quantized activations: sum_j w[j] * x[j] as
 * the blocks' integer sums times their scales. The reference for the SIMD kernels. */
float kiln_qdot_ref(const void *wrow, int type, const kiln_qx *qx);

/* Y[t][i] = W[i] . X[t] with X quantized per token as above: the reference of the quantized matmul. */
void kiln_qmatmul_ref(float *Y, const float *X, const void *W, int type, int T, int N, int K);

/* One of several matrices of ROWS rows of one quantized type that multiply the same activations: its
 * weights W and its outputs Y (T rows of ROWS). */
typedef struct {
    float *y;
    const void *w;
    int rows;
} kiln_qpart;

/* Y_i = X . W_i^T for the N_PARTS matrices PARTS (X: T rows of K floats), each bit for bit what kiln_matmul
 * gives it alone. Decode and short batches quantize X once for all of them and run their rows as one
 * loop of the worker pool (one dispatch and one join, not one per matrix). */
void kiln_qmatmul_parts(int n_parts, const kiln_qpart *parts, const float *X, int type, int T, int K);

#endif
