/* The transformer: one forward pass for the GPT-2 and llama families, chosen by kiln_config settings
 * (norm, positions, activation, GQA, biases, tied head), never by copied code paths.
 * Weights are pointers (usually into a memory-mapped GGUF file); the state holds the KV cache and
 * the activations of one sequence. */
#ifndef KILN_MODEL_TRANSFORMER_H
#define KILN_MODEL_TRANSFORMER_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

/* A weight matrix of ROWS outputs by COLS inputs, row-major, elements of TYPE. */
typedef struct {
    const void *data;
    int type;
    int rows, cols;
} kiln_mat;

typedef struct {
    const float *attn_norm, *attn_norm_b;   /* b: LayerNorm only */
    kiln_mat wq, wk, wv, wo;
    const float *bq, *bk, *bv, *bo;         /* NULL when absent */
    const float *ffn_norm, *ffn_norm_b;
    kiln_mat w_gate, w_up, w_down;          /* w_gate: SwiGLU only */
    const float *b_up, *b_down;
} kiln_layer_weights;

typedef struct {
    kiln_mat tok_embd;                      /* n_vocab rows of dim */
    kiln_mat pos_embd;                      /* ctx_len rows of dim (learned positions only) */
    kiln_layer_weights *layers;
    const float *out_norm, *out_norm_b;
    kiln_mat output;                        /* == tok_embd when tied */
    const float *rope_freqs;                /* rope_dim/2 divisors of the RoPE frequencies (llama.cpp's
                                               rope_freqs, llama 3.1); NULL when absent */
    kiln_mat cls;                           /* n_cls rows of dim: the score head (n_cls > 0 only) */
} kiln_weights;

/* Per-sequence state: the KV cache (f32, layer-major: [layer][position][n_kv_heads*head_dim]) and
 * scratch activations for batches of up to max_batch tokens. */
typedef struct {
    int n_ctx, max_batch;
    float *k_cache, *v_cache;
    float *x, *xb, *q, *att, *hb, *hb2, *row;
    float *hidden;                          /* the last token's final-norm hidden state (score head) */
    float *rope_inv_freq;                   /* rope_dim/2 frequencies for this context, and the YaRN */
    float rope_mscale;                      /* factor on cos and sin: set on the first forward pass */
    float *rope_cos, *rope_sin;             /* rope_dim/2 per position of the chunk being run */
    int rope_ready;
    int kv_populated, kv_decoded;           /* positions of the KV cache faulted in ahead (forward.c), and
                                               positions run in short batches */
} kiln_state;

/* Checks that the settings are consistent (heads divide, dims positive, ...). -1 with a message. */
int kiln_config_check(const kiln_config *c);
/* KV cache bytes per position. */
size_t kiln_config_kv_bytes(const kiln_config *c);

/* RoPE: the inverse wavelength of each of the rope_dim/2 rotated pairs for a context of N_CTX positions
 * (N_CTX matters for dynamic NTK scaling only), divided by FACTORS[i] when not NULL, and *MSCALE, the
 * factor YaRN puts on cos and sin (1 otherwise). */
void kiln_rope_freqs(const kiln_config *c, int n_ctx, const float *factors, float *inv_freq, float *mscale);
/* Rotates the first ROPE_DIM dims of N_HEADS heads by angles whose cosines and sines are CS and SN. */
void kiln_rope_apply(float *x, int n_heads, int head_dim, int rope_dim, int style, const float *cs, const float *sn);
/* The factor on a query at position POS under log-n attention scaling: log(pos+1) / log(trained), trained
 * being rope_orig_ctx when set (the context was extended) else ctx_len; 1 when off or within it. */
float kiln_logn_scale(const kiln_config *c, int pos);

kiln_state *kiln_state_new(const kiln_config *c, int n_ctx);
void kiln_state_free(kiln_state *s);

/* Runs tokens[0..T) at positions pos0..pos0+T-1 (pos0 + T <= n_ctx), filling the KV cache.
 * LOGITS gets n_vocab floats per token when ALL is set, else only those after the last token. */
void kiln_forward(const kiln_config *c, const kiln_weights *w, kiln_state *s, const int32_t *tokens, int T,
                  int pos0, float *logits, int all);
/* The score head (n_cls > 0) on the final hidden state of the last token of the previous kiln_forward:
 * n_cls values into OUT. */
void kiln_forward_score(const kiln_config *c, const kiln_weights *w, kiln_state *s, float *out);

#endif
