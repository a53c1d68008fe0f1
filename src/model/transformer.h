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
} kiln_weights;

/* Per-sequence state: the KV cache (f32, layer-major: [layer][position][n_kv_heads*head_dim]) and
 * scratch activations for batches of up to max_batch tokens. */
typedef struct {
    int n_ctx, max_batch;
    float *k_cache, *v_cache;
    float *x, *xb, *q, *att, *hb, *hb2, *row;
} kiln_state;

/* Checks that the settings are consistent (heads divide, dims positive, ...). -1 with a message. */
int kiln_config_check(const kiln_config *c);
/* KV cache bytes per position. */
size_t kiln_config_kv_bytes(const kiln_config *c);

kiln_state *kiln_state_new(const kiln_config *c, int n_ctx);
void kiln_state_free(kiln_state *s);

/* Runs tokens[0..T) at positions pos0..pos0+T-1 (pos0 + T <= n_ctx), filling the KV cache.
 * LOGITS gets n_vocab floats per token when ALL is set, else only those after the last token. */
void kiln_forward(const kiln_config *c, const kiln_weights *w, kiln_state *s, const int32_t *tokens, int T,
                  int pos0, float *logits, int all);

#endif
