/* Internal to the kernels layer: the quantized-weight kernels of one instruction set, and the threaded
 * driver that runs them (quant_gemm.c).
 *
 * Decode (T == 1) reads the weight blocks in place: the activations are quantized once per call and
 * each thread's matvec walks its rows block by block with integer dot products. Short batches (2 to
 * matvecs_max tokens: a speculative target pass, a server's batched step) do the same with every
 * token at once: each weight block is loaded and unpacked once and dotted with all the tokens' blocks,
 * so the pass reads the weights from memory once, as a single token does.
 *
 * Prefill (T > 1) is a GEMM on integers. Weights are unpacked per panel of NR rows and KC columns into
 * unsigned bytes u (the stored value plus an offset, so that vpdpbusd's u8 x s8 product applies) with a
 * float scale per "unit" of 32 columns (16 for Q6_K) and row; tokens are packed per panel of MR into
 * their int8 values with the scale of each unit. A unit's integer sum over u * x starts from
 * -offset * sum(x), so it ends as the exact sum of the stored weights times x; the tile then adds
 * sum * wscale * xscale (and, for Q4_K, subtracts wmin * xscale * sum(x)) to the float accumulators.
 * Tables whose tile multiplies 16-bit values ("wide": AVX2's vpmaddwd) get int16 operands instead, the
 * stored values themselves (offset 0), two per column group. */
#ifndef KILN_KERNELS_QUANT_ISA_H
#define KILN_KERNELS_QUANT_ISA_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/quant.h"

/* One register tile of the quantized GEMM: Y[t][c] (+)= sum over units of the unit's sum, t < mt,
 * c < nt. Packed operands (unit_k / 4 groups of 4 columns per unit; wide: unit_k / 2 groups of 2):
 *   xq[u][g][t][4]  int8 activations      wq[u][g][c][4]  unsigned weights (wide: int16 [2] each)
 *   xd[u][t]        activation scales     ws[u][c]        weight scales
 *   xb[u][t]        -offset * sum(x)      wm[u][c]        weight mins (Q4_K) or NULL
 *   xm[u][t]        xscale * sum(x) (read only when wm is set) */
typedef struct {
    float *Y;
    size_t ldy;
    int mt, nt;
    const int8_t *xq;
    const float *xd, *xm;
    const int32_t *xb;
    const uint8_t *wq;
    const float *ws, *wm;
    int units, unit_k;
    int accumulate;
} kiln_qtile;

typedef struct {
    const char *name; /* "scalar", "avx2", "avx2-vnni", "avx512" */
    /* The same values as kiln_quantize_x_ref. */
    void (*quantize_x)(kiln_qx *qx, const float *x, int type, int k);
    /* y[i] = W[i] . x for rows r0 <= i < r1 of quantized TYPE, x quantized for TYPE. */
    void (*matvec)(float *y, const kiln_qx *qx, const void *W, int type, int r0, int r1);
    /* Y[t][i] = W[i] . x[t] for t < T <= KILN_QMATVECS_MAX and rows r0 <= i < r1, Y rows LDY apart, QX[t]
     * token t quantized for TYPE, each weight block read once for all tokens; 0 for a type it has no
     * kernel for. Each token's sums are those of matvec, bit for bit. NULL or 0: the driver runs matvec
     * per token over chunks of rows that stay in cache. */
    int (*matvecs)(float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W, int type, int r0, int r1);
    /* The driver runs 2..matvecs_max tokens (at most KILN_QMATVECS_MAX) as short batches, more with the
     * GEMM where the table has a tile. */
    int matvecs_max;
    /* Tile of the GEMM; mr tokens by nr weight rows. NULL in the scalar table. */
    int mr, nr, wide;
    void (*tile)(const kiln_qtile *t);
} kiln_qkernels;

/* The most tokens of one short batch. */
enum { KILN_QMATVECS_MAX = 16 };

/* The row kernels of the SIMD tables (quant_avx2.c, quant_avx512.c) run short batches up to this many
 * tokens per pass over a row (one float accumulator each); more take passes of equal size (10 tokens:
 * two of 5, not 8 and 2), the row then in L1. */
enum { KILN_QPASS_TOKENS = 8 };

static inline int kiln_qtokens_per_pass(int T) {
    int n_pass = (T + KILN_QPASS_TOKENS - 1) / KILN_QPASS_TOKENS;
    return (T + n_pass - 1) / n_pass;
}

/* Rows r0..r1 of T tokens of the caller's Y (LDY apart), W and nb, against the tokens' lanes L (each
 * file's layout), rows RB bytes apart: one token in STREAMS runs side by side, more in passes of NT
 * tokens as a constant (so the accumulators are registers), one row at a time. ROWS_FN(y, ys, ldy, row,
 * row stride in bytes, lanes, lane stride, nb, NR, NT). */
#define KILN_QROWS_IN_PASSES(rows_fn, L, rb, streams)                                                          \
    do {                                                                                                       \
        const uint8_t *w = (const uint8_t *)W;                                                                 \
        int i = r0;                                                                                            \
        if (T == 1) {                                                                                          \
            int h = (r1 - r0) / (streams);                                                                     \
            for (; i < r0 + h; i++) rows_fn(Y + i, h, 0, w + (rb) * i, (rb) * h, L, 1, nb, streams, 1);        \
            i = r0 + (streams) * h;                                                                            \
        }                                                                                                      \
        const int nt = kiln_qtokens_per_pass(T);                                                               \
        for (; i < r1; i++)                                                                                    \
            for (int t0 = 0; t0 < T; t0 += nt) {                                                               \
                float *y = Y + t0 * ldy + i;                                                                   \
                const uint8_t *wr = w + (rb) * i;                                                              \
                switch (T - t0 < nt ? T - t0 : nt) {                                                           \
                case 1: rows_fn(y, 0, ldy, wr, 0, L + t0, T, nb, 1, 1); break;                                 \
                case 2: rows_fn(y, 0, ldy, wr, 0, L + t0, T, nb, 1, 2); break;                                 \
                case 3: rows_fn(y, 0, ldy, wr, 0, L + t0, T, nb, 1, 3); break;                                 \
                case 4: rows_fn(y, 0, ldy, wr, 0, L + t0, T, nb, 1, 4); break;                                 \
                case 5: rows_fn(y, 0, ldy, wr, 0, L + t0, T, nb, 1, 5); break;                                 \
                case 6: rows_fn(y, 0, ldy, wr, 0, L + t0, T, nb, 1, 6); break;                                 \
                case 7: rows_fn(y, 0, ldy, wr, 0, L + t0, T, nb, 1, 7); break;                                 \
                case 8: rows_fn(y, 0, ldy, wr, 0, L + t0, T, nb, 1, 8); break;                                 \
                }                                                                                              \
            }                                                                                                  \
    } while (0)

/* avx2-vnni: the AVX2 table with a byte GEMM tile on AVX-VNNI (CPUs with it but without AVX-512). */
extern const kiln_qkernels kiln_qkernels_scalar, kiln_qkernels_avx2, kiln_qkernels_avx2vnni, kiln_qkernels_avx512;

/* Tables this CPU can run, best first (NULL-terminated), and the one the drivers use: the best one at
 * or below the level the float kernels run at (so KILN_ISA caps both). */
const kiln_qkernels *const *kiln_qkernels_supported(void);
const kiln_qkernels *kiln_qkernels_active(void);
/* The best table at or below the level of the float kernels named ISA ("avx512", "avx2", "scalar"). */
const kiln_qkernels *kiln_qkernels_for(const char *isa);

/* The threaded quantized matmul with one table: Y = X . W^T, X T x K floats, W N rows of TYPE. */
void kiln_qmatmul_with(const kiln_qkernels *qk, float *Y, const float *X, const void *W, int type, int T, int N,
                       int K);
void kiln_qmatmul(float *Y, const float *X, const void *W, int type, int T, int N, int K);
/* kiln_qmatmul_parts (quant.h) with one table. */
void kiln_qmatmul_parts_with(const kiln_qkernels *qk, int n_parts, const kiln_qpart *parts, const float *X, int type,
                             int T, int K);

/* Column offset that makes a stored weight of TYPE an unsigned byte, and the columns per unit. */
int kiln_qpack_offset(int type);
int kiln_qpack_unit(int type);

#endif
