/* The operations of training, forward and backward side by side (as in karpathy's llm.c).
 *
 * Activations are row-major matrices of N rows (N = batch x time). Weight matrices hold output i in
 * row i, as in kernels.h: a linear layer computes out = inp W^T + b. Backward functions ADD into
 * parameter gradients (dW, db, dw: accumulated over micro-batches) and write or add the input
 * gradient as each one says.
 *
 * Reductions over rows (bias and norm-weight gradients, embedding gradients) are split among threads
 * by column, never by row, so every sum runs in the same order whatever the thread count. */
#ifndef KILN_TRAIN_OPS_H
#define KILN_TRAIN_OPS_H

#include <stddef.h>
#include <stdint.h>

/* out = inp W^T (+ b) (+ res): N x OC from N x IC, W is OC x IC; b (OC) and res (N x OC, a residual
 * stream the product adds to) may be NULL. Sets BLAS to one thread per call (the first time): the
 * threads are OpenMP's. */
void op_matmul_forward(float *out, const float *inp, const float *W, const float *b, const float *res, int N, int OC,
                       int IC);
/* dinp = dout W (written, or added when ADD_DINP; skipped when dinp is NULL); dW += dout^T inp;
 * db += column sums of dout (when db is not NULL). */
void op_matmul_backward(float *dinp, float *dW, float *db, const float *dout, const float *inp, const float *W,
                        int N, int OC, int IC, int add_dinp);

/* LayerNorm of each row: out = (x - mean) * rstd * w + b, saving mean and rstd (N each). */
void op_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                          int N, int C, float eps);
/* dinp += ...; dw += ...; db += ... */
void op_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                           const float *mean, const float *rstd, int N, int C);

/* RMSNorm of each row: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps), saving rstd. */
void op_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps);
void op_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                         const float *rstd, int N, int C);

/* GELU (tanh approximation) of N values. When DGELU is not NULL the forward pass also writes gelu'(inp)
 * there (DGELU may be INP): all the backward pass needs, which then writes dinp = dout * dgelu (dinp may
 * be dout) without an exponential of its own. */
void op_gelu_forward(float *out, float *dgelu, const float *inp, size_t n);
void op_gelu_backward(float *dinp, const float *dgelu, const float *dout, size_t n);

/* SwiGLU: each of the N rows of GU holds [gate (F) | up (F)]; out (N x F) = silu(gate) * up.
 * Backward writes dgu (N x 2F). */
void op_swiglu_forward(float *out, const float *gu, int N, int F);
void op_swiglu_backward(float *dgu, const float *gu, const float *dout, int N, int F);

/* Rotary position embedding, in place, of N_HEADS heads at the start of each of N rows (ROW_STRIDE
 * floats apart); row n is at position n % T. COS and SIN hold T x (ROT_DIM / 2) values (see
 * op_rope_table). STYLE is KILN_ROPE_INTERLEAVED or KILN_ROPE_NEOX. Backward rotates the gradient back
 * (the transpose of a rotation is the rotation by the opposite angle). */
void op_rope_table(float *cos_t, float *sin_t, int T, int rot_dim, float theta);
void op_rope_forward(float *x, int N, int T, int row_stride, int n_heads, int head_dim, int rot_dim, int style,
                     const float *cos_t, const float *sin_t);
void op_rope_backward(float *dx, int N, int T, int row_stride, int n_heads, int head_dim, int rot_dim, int style,
                      const float *cos_t, const float *sin_t);

/* Token (and, when wpe is not NULL, learned position) embedding: x[b*T + t] = wte[tok] + wpe[t]. */
void op_embedding_forward(float *x, const int32_t *tokens, const float *wte, const float *wpe, int N, int T, int C);
/* dwte[tok] += dx; dwpe[t] += dx (when dwpe is not NULL). */
void op_embedding_backward(float *dwte, float *dwpe, const float *dx, const int32_t *tokens, int N, int T, int C,
                           int V);

/* Sets N floats to 0 on the threads, each a contiguous share (large enough for memset's streaming
 * stores, which do not read the lines first). */
void op_zero(float *p, size_t n);

/* Softmax and cross-entropy fused, per row of V logits: losses[n] = logsumexp(logits[n]) -
 * logits[n][targets[n]]. When DSCALE is not 0 the logits are overwritten with the gradient
 * dscale * (softmax - onehot(target)), the gradient of dscale * sum(losses). */
void op_crossentropy(float *losses, float *logits, const int32_t *targets, int N, int V, float dscale);

/* Causal multi-head attention with grouped keys/values, memory O(N x width): each of the N = B x T
 * rows of QKV holds [q (H heads) | k (KVH heads) | v (KVH heads)], each head HD floats; query head h
 * reads kv head h / (H / KVH). OUT: N x H*HD; LSE: N x H, the log of each softmax's denominator (for
 * the backward pass, which recomputes the probabilities instead of storing T x T of them). */
void op_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int H, int KVH, int HD);
/* Writes dqkv (N rows, same layout as qkv) from dout. */
void op_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out, const float *lse, int B,
                           int T, int H, int KVH, int HD);

/* e^x in float, vectorisable (no libm call): range reduction to r in [-ln2/2, ln2/2] and a degree-7
 * Taylor polynomial, relative error below 2e-7. 0 below -87.3; capped at e^88.3. */
static inline float op_expf(float x) {
    float xc = x > 88.3f ? 88.3f : (x < -87.3f ? -87.3f : x);
    float n = (xc * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest: adding 1.5 * 2^23 drops the
                                                                 fraction, and unlike floorf it vectorises */
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f; /* ln 2 in two parts (Cody-Waite): n * hi is exact */
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23; /* 2^n as a float's bits */
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    return x < -87.3f ? 0.0f : p * scale;
}

#endif
