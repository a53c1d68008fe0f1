/* The transformer being trained: parameters and gradients in one buffer each, activations kept for
 * the backward pass, and the forward and backward passes of the whole model (both families of
 * kiln_config: GPT-2 and llama settings).
 *
 * The parameter buffer is a list of tensors named as in the model file (token_embd.weight,
 * blk.N.attn_q.weight, ...), each a contiguous slice, laid out so that tensors the passes use as one
 * matrix are adjacent: q, k and v (llama) form one fused projection, as do ffn_gate and ffn_up. */
#ifndef KILN_TRAIN_MODEL_H
#define KILN_TRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "format/gguf.h"
#include "model/transformer.h"

/* One tensor of the model file: a slice of the parameter (and gradient) buffer. */
typedef struct {
    char name[48];
    size_t off, n;      /* in floats */
    int rows, cols;     /* rows 1 for vectors */
    int decay;          /* takes weight decay: matrices other than embeddings */
    float init_std;     /* 0: constant INIT_VALUE */
    float init_value;
} train_tensor;

/* Pointers to one layer's parameters (or their gradients); NULL when the configuration has none. */
typedef struct {
    float *attn_norm, *attn_norm_b;
    float *wqkv, *bqkv;     /* (qdim + 2 kvdim) x dim: q rows, then k, then v */
    float *wo, *bo;
    float *ffn_norm, *ffn_norm_b;
    float *w_up, *b_up;     /* SwiGLU: 2 ffn_dim x dim, gate rows then up rows */
    float *w_down, *b_down;
} train_layer;

typedef struct {
    float *tok_embd, *pos_embd, *out_norm, *out_norm_b, *output; /* output == tok_embd when tied */
    train_layer *layers;
} train_params;

typedef struct {
    kiln_config cfg;
    size_t n_params;
    float *params, *grads;
    train_params p, g;      /* views of params and grads */
    train_tensor *tensors;
    int n_tensors;
    float *rope_cos, *rope_sin; /* ctx_len x rope_dim/2 */
} train_model;

/* Activations of B sequences of T tokens, kept from the forward pass for the backward pass. */
typedef struct {
    int B, T;
    float **in;               /* n_layers + 1 residual streams: in[l] enters layer l */
    /* pre: the MLP's pre-activations; with GELU, after a forward pass with gradients, GELU's derivative
     * at them instead (all the backward pass needs) */
    float **ln1, **ln1_mean, **ln1_rstd, **qkv, **att, **lse, **mid, **ln2, **ln2_mean, **ln2_rstd, **pre, **act;
    float *lnf, *lnf_mean, *lnf_rstd, *logits, *losses;
    float *dres, *dln, *dqkv, *datt, *dpre, *dact; /* backward scratch */
    float *block;             /* the one allocation behind all of the above */
    float **ptrs;
} train_acts;

/* A configuration of the family ARCH ("gpt2": LayerNorm, learned positions, GELU, biases, tied head;
 * "llama": RMSNorm, rotary positions, SwiGLU, grouped kv heads, no biases, separate head) over the
 * 256 byte values. FFN_DIM 0: 4 dim (gpt2) or 8/3 dim rounded up to 32 (llama). -1 with a message. */
int train_config_make(kiln_config *c, const char *arch, int n_layers, int dim, int n_heads, int n_kv_heads,
                      int ffn_dim, int ctx_len);

/* Checks C for training (byte-level vocab of any size, heads divide, ...) and builds the tensor list;
 * allocates parameters initialised from SEED (N(0, 0.02), residual projections scaled by
 * 1/sqrt(2 layers), norms 1, biases 0) and zero gradients. -1 with a message on a bad configuration. */
int train_model_init(train_model *m, const kiln_config *c, uint64_t seed);
void train_model_free(train_model *m);
/* Sets every gradient to 0. */
void train_model_zero_grad(train_model *m);
/* The tensor named NAME, or NULL. */
const train_tensor *train_model_find(const train_model *m, const char *name);

/* Inference weights pointing into the parameters (layers array malloc'd: free it), for kiln_forward. */
void train_model_weights(const train_model *m, kiln_weights *w);
/* Adds the configuration, the byte-level tokenizer and every parameter tensor (as references into
 * m->params, which must outlive the write) to W: a model file `kiln generate` loads. */
void train_model_to_gguf(const train_model *m, gguf_writer *w);
/* Loads parameters from a model file written by train_model_to_gguf into M (already initialised for
 * the same configuration). -1 with a message naming the file and tensor on any mismatch. */
int train_model_from_gguf(train_model *m, const gguf_file *g);

train_acts *train_acts_new(const kiln_config *c, int B, int T);
void train_acts_free(train_acts *a);

/* Forward pass of B x T tokens (B and T as in A; T <= ctx_len), with TARGETS: a->losses gets each
 * token's loss in nats. When GRAD_SCALE is not 0, a->logits is left holding the gradient of
 * grad_scale * sum(losses) with respect to the logits, ready for train_backward. */
void train_forward(const train_model *m, train_acts *a, const int32_t *inputs, const int32_t *targets,
                   float grad_scale);
/* Backward pass after train_forward with a non-zero GRAD_SCALE: adds the gradients to m->grads. */
void train_backward(train_model *m, train_acts *a, const int32_t *inputs);
/* The same, adding the gradients to G (views of another buffer laid out as the parameters). */
void train_backward_into(const train_model *m, train_acts *a, const int32_t *inputs, train_params *g);

/* Views P of BUF (n_params floats) laid out as M's parameters; train_params_free releases the views. */
void train_params_bind(const train_model *m, float *buf, train_params *p);
void train_params_free(train_params *p);

#endif
