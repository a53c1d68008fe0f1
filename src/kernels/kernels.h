/* Kernels: the math of the forward pass. Every kernel has a plain scalar reference (kiln_*_ref, in
 * ref.c) that tests compare the SIMD versions with; kiln_* dispatches at run time to the best
 * implementation the CPU supports (AVX-512, AVX2, scalar) and uses kiln's worker threads (base/pool.h)
 * where it pays.
 *
 * Conventions: matrices are row-major. A weight matrix W of N rows by K columns holds output i in row
 * i (ggml's ne[0] = K, ne[1] = N), elements of type kiln_type (F32, F16 or BF16). Accumulation is fp32.
 * W may also be one of the quantized types of quant.h (Q8_0, Q4_0, Q4_K, Q6_K; K a multiple of the block):
 * kiln_matmul then quantizes X on the fly and multiplies in integers (quant_gemm.c). */
#ifndef KILN_KERNELS_H
#define KILN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

/* Bytes of one row of K elements of TYPE (0 for an unknown type, or K not whole blocks of a quantized one). */
size_t kiln_row_bytes(int type, int64_t k);
/* Converts a row of K elements of TYPE to f32. */
void kiln_row_to_f32(float *out, const void *row, int type, int k);

/* Y[t][i] = sum_j X[t][j] * W[i][j] for t < T, i < N. X is T x K f32, Y is T x N f32.
 * T == 1 is the decode matrix-vector product (memory-bound); T > 1 is prefill (compute-bound). */
void kiln_matmul(float *Y, const float *X, const void *W, int type, int T, int N, int K);
void kiln_matmul_ref(float *Y, const float *X, const void *W, int type, int T, int N, int K);

/* out = x / sqrt(mean(x^2) + eps) * w */
void kiln_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
void kiln_rmsnorm_ref(float *out, const float *x, const float *w, int n, float eps);
/* out = (x - mean) / sqrt(var + eps) * w + b  (biased variance) */
void kiln_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps);
void kiln_layernorm_ref(float *out, const float *x, const float *w, const float *b, int n, float eps);

/* In place softmax over n values, fp32, max-subtracted. */
void kiln_softmax(float *x, int n);
void kiln_softmax_ref(float *x, int n);

/* x = gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
void kiln_gelu(float *x, int n);
void kiln_gelu_ref(float *x, int n);
/* gate = silu(gate) * up, silu(x) = x / (1 + exp(-x)) */
void kiln_swiglu(float *gate, const float *up, int n);
void kiln_swiglu_ref(float *gate, const float *up, int n);

/* Rotary embedding of N_HEADS heads of HEAD_DIM floats at position POS; the first ROT_DIM dims of each
 * head rotate. Pair i (i < ROT_DIM/2) has angle pos * theta^(-2i/ROT_DIM) and is (x[2i], x[2i+1]) for
 * KILN_ROPE_INTERLEAVED (llama/GGUF) or (x[i], x[i + ROT_DIM/2]) for KILN_ROPE_NEOX (qwen2, HF). */
void kiln_rope(float *x, int n_heads, int head_dim, int rot_dim, int pos, float theta, int style);
void kiln_rope_ref(float *x, int n_heads, int head_dim, int rot_dim, int pos, float theta, int style);

/* Causal attention of T query tokens at positions POS0..POS0+T-1 against the KV cache.
 * Q: T rows of n_heads*head_dim. K, V: cache rows 0..POS0+T-1, each KV_STRIDE floats apart, holding
 * n_kv_heads*head_dim values; query head h reads kv head h / (n_heads / n_kv_heads).
 * OUT: T rows of n_heads*head_dim. Scores scaled by SCALE, softmax in fp32 over keys 0..POS0+t. */
void kiln_attention(float *out, const float *Q, const float *K, const float *V, int T, int pos0, int n_heads,
                    int n_kv_heads, int head_dim, int kv_stride, float scale);
void kiln_attention_ref(float *out, const float *Q, const float *K, const float *V, int T, int pos0, int n_heads,
                        int n_kv_heads, int head_dim, int kv_stride, float scale);

/* Which implementation kiln_* dispatches to: "avx512", "avx2" or "scalar". KILN_ISA in the environment
 * (scalar|avx2|avx512) caps it, for tests and benchmarks. */
const char *kiln_isa(void);

#endif
