/* Internal to the kernels layer: the implementations for one instruction set gathered in a table.
 * dispatch.c picks a table once at run time (capped by KILN_ISA) and the threaded drivers (dispatch.c,
 * gemm.c, attention.c) call through it; tests call each table the CPU supports directly.
 *
 * The ISA files (*_avx2.c, *_avx512.c) are the only ones compiled with vector instruction flags, so
 * every intrinsic lives there; nothing else may be inlined from them. */
#ifndef KILN_KERNELS_ISA_H
#define KILN_KERNELS_ISA_H

#include <stddef.h>

typedef struct {
    const char *name; /* "scalar", "avx2", "avx512" */

    void (*rmsnorm)(float *out, const float *x, const float *w, int n, float eps);
    void (*layernorm)(float *out, const float *x, const float *w, const float *b, int n, float eps);
    void (*softmax)(float *x, int n);
    void (*gelu)(float *x, int n);
    void (*swiglu)(float *gate, const float *up, int n);

    /* The rest is NULL in the scalar table, whose drivers call the references instead. */

    /* y[i] = W[i] . x for rows r0 <= i < r1 (y indexed by row). */
    void (*matvec)(float *y, const float *x, const void *W, int type, int r0, int r1, int K);

    /* Short batches: Y[t][i] = W[i] . X[t] for t < T, rows r0 <= i < r1, X rows K floats apart, Y rows LDY
     * apart. Each weight row is read from memory once for all T tokens, so T tokens cost about what one
     * does while the product is bound by memory; the drivers use it for 1 < T <= matvecs_max. */
    void (*matvecs)(float *Y, size_t ldy, const float *X, int T, const void *W, int type, int r0, int r1, int K);
    int matvecs_max;

    /* Prefill GEMM pieces. A tile is gemm_mr tokens by gemm_nr outputs.
     * pack_w writes dst[k][c] = W[n0 + c][k0 + k] as f32 for k < kc, c < gemm_nr (0 for rows >= N).
     * tile computes Y[t][c] (+)= sum_k xp[k][t] * wp[k][c] for t < mt, c < nt, xp holding gemm_mr
     * tokens per k and wp gemm_nr outputs per k; ACCUMULATE adds to Y instead of overwriting it. */
    int gemm_mr, gemm_nr;
    void (*pack_w)(float *dst, const void *W, int type, int N, int K, int n0, int k0, int kc);
    void (*tile)(float *Y, size_t ldy, int mt, int nt, const float *xp, const float *wp, int kc, int accumulate);

    /* Rotates the first ROT_DIM values of N_HEADS heads. For KILN_ROPE_NEOX, COS and SIN hold cos and
     * sin of pair i's angle at i < ROT_DIM/2; for KILN_ROPE_INTERLEAVED they are laid out per element,
     * ROT_DIM values: COS = (c0, c0, c1, c1, ...), SIN = (-s0, s0, -s1, s1, ...). */
    void (*rope_apply)(float *x, int n_heads, int head_dim, int rot_dim, const float *cos, const float *sin,
                       int style);
    /* One query row against keys 0..N_KEYS-1 of one kv head (K, V point at that head's first key),
     * online softmax; SCRATCH holds KILN_ATTEND_SCRATCH(head_dim) floats. */
    void (*attend)(float *out, const float *q, const float *K, const float *V, int n_keys, int head_dim,
                   int kv_stride, float scale, float *scratch);
    /* NQ <= attn_lanes consecutive query rows of one head at once, one per vector lane: query i (row
     * Q + i * Q_STRIDE, output OUT + i * OUT_STRIDE) against keys 0..N_KEYS0 - 1 + i. */
    int attn_lanes;
    void (*attend_block)(float *out, size_t out_stride, const float *q, size_t q_stride, int nq, const float *K,
                         const float *V, int n_keys0, int head_dim, int kv_stride, float scale, float *scratch);
} kiln_kernels;

/* Keys scored per block of the online softmax in attend; scratch floats of attend and attend_block
 * (the latter: queries and outputs transposed, up to 16 lanes each). */
enum { KILN_ATTEND_BLOCK = 128 };
#define KILN_ATTEND_SCRATCH(head_dim) (32 * (size_t)(head_dim) + KILN_ATTEND_BLOCK)

extern const kiln_kernels kiln_kernels_scalar, kiln_kernels_avx2, kiln_kernels_avx512;

/* Tables this CPU can run, best first (NULL-terminated); the one dispatch uses. */
const kiln_kernels *const *kiln_kernels_supported(void);
const kiln_kernels *kiln_kernels_active(void);

/* The threaded drivers, for one table: what kiln_matmul and kiln_attention do with the active one. */
void kiln_matmul_with(const kiln_kernels *kk, float *Y, const float *X, const void *W, int type, int T, int N,
                      int K);
void kiln_gemm_with(const kiln_kernels *kk, float *Y, const float *X, const void *W, int type, int T, int N,
                    int K);
void kiln_attention_with(const kiln_kernels *kk, float *out, const float *Q, const float *K, const float *V, int T,
                         int pos0, int n_heads, int n_kv_heads, int head_dim, int kv_stride, float scale);
void kiln_rope_with(const kiln_kernels *kk, float *x, int n_heads, int head_dim, int rot_dim, int pos, float theta,
                    int style);

/* Matmul pieces defined in matmul_<isa>.c, gathered into the tables by ops_<isa>.c, and their tiles. */
enum { KILN_AVX2_MR = 6, KILN_AVX2_NR = 16, KILN_AVX512_MR = 14, KILN_AVX512_NR = 32 };
void kiln_matvec_avx2(float *y, const float *x, const void *W, int type, int r0, int r1, int K);
void kiln_matvecs_avx2(float *Y, size_t ldy, const float *X, int T, const void *W, int type, int r0, int r1, int K);
void kiln_pack_w_avx2(float *dst, const void *W, int type, int N, int K, int n0, int k0, int kc);
void kiln_tile_avx2(float *Y, size_t ldy, int mt, int nt, const float *xp, const float *wp, int kc, int accumulate);
void kiln_matvec_avx512(float *y, const float *x, const void *W, int type, int r0, int r1, int K);
void kiln_matvecs_avx512(float *Y, size_t ldy, const float *X, int T, const void *W, int type, int r0, int r1, int K);
void kiln_pack_w_avx512(float *dst, const void *W, int type, int N, int K, int n0, int k0, int kc);
void kiln_tile_avx512(float *Y, size_t ldy, int mt, int nt, const float *xp, const float *wp, int kc,
                      int accumulate);

#endif
