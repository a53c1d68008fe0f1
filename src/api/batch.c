/* One decode step of N sequences: the math of src/model/forward.c with one row per sequence. Every
 * row sits at its own position in its own cache, so positions, RoPE angles and attention are per row,
 * and everything else (norms, matmuls, MLP) runs on the N stacked rows at once. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/batch.h"
#include "base/error.h"
#include "kernels/kernels.h"

struct kiln_batch {
    const kiln_model *m;
    int max_seqs;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *row, *logits;
    float *cs, *sn; /* rope_dim/2 cosines and sines of one row */
};

kiln_batch *kiln_batch_new(const kiln_model *m, int max_seqs) {
    if (max_seqs < 1) return kiln_fail("a batch needs at least one sequence (got %d)", max_seqs), NULL;
    const kiln_config *c = &m->cfg;
    size_t B = (size_t)max_seqs, qdim = (size_t)c->n_heads * c->head_dim, kvdim = (size_t)c->n_kv_heads * c->head_dim;
    size_t wide = (size_t)c->dim > qdim ? (size_t)c->dim : qdim, half = c->rope_dim / 2 > 0 ? c->rope_dim / 2 : 1;
    kiln_batch *b = kiln_xcalloc(1, sizeof *b);
    b->m = m;
    b->max_seqs = max_seqs;
    b->x = kiln_xmalloc(sizeof(float) * B * c->dim);
    b->xb = kiln_xmalloc(sizeof(float) * B * wide);
    b->q = kiln_xmalloc(sizeof(float) * B * qdim);
    b->k = kiln_xmalloc(sizeof(float) * B * kvdim);
    b->v = kiln_xmalloc(sizeof(float) * B * kvdim);
    b->att = kiln_xmalloc(sizeof(float) * B * qdim);
    b->hb = kiln_xmalloc(sizeof(float) * B * c->ffn_dim);
    b->hb2 = kiln_xmalloc(sizeof(float) * B * c->ffn_dim);
    b->row = kiln_xmalloc(sizeof(float) * c->dim);
    b->logits = kiln_xmalloc(sizeof(float) * B * c->n_vocab);
    b->cs = kiln_xmalloc(sizeof(float) * half);
    b->sn = kiln_xmalloc(sizeof(float) * half);
    return b;
}

void kiln_batch_free(kiln_batch *b) {
    if (!b) return;
    free(b->x);
    free(b->xb);
    free(b->q);
    free(b->k);
    free(b->v);
    free(b->att);
    free(b->hb);
    free(b->hb2);
    free(b->row);
    free(b->logits);
    free(b->cs);
    free(b->sn);
    free(b);
}

/* Y[t] = W . X[t] for the N rows of a step: kiln_matmul reads each weight row once for a short step
 * (multi-row matvec up to 16 rows) and runs the GEMM for longer ones. */
static void matmul(float *y, const float *x, const kiln_mat *w, int n) {
    kiln_matmul(y, x, w->data, w->type, n, w->rows, w->cols);
}

static void add_bias(float *y, const float *bias, int n, int width) {
    for (int t = 0; bias && t < n; t++)
        for (int i = 0; i < width; i++) y[(size_t)t * width + i] += bias[i];
}

static void norm_rows(const kiln_config *c, float *out, const float *x, const float *w, const float *bias, int n) {
    for (int t = 0; t < n; t++) {
        size_t o = (size_t)t * c->dim;
        if (c->norm == KILN_NORM_RMS) kiln_rmsnorm(out + o, x + o, w, c->dim, c->norm_eps);
        else kiln_layernorm(out + o, x + o, w, bias, c->dim, c->norm_eps);
    }
}

static void embed(kiln_batch *b, kiln_ctx **cs, const int32_t *tokens, int n) {
    const kiln_config *c = &b->m->cfg;
    const kiln_weights *w = &b->m->weights.w;
    size_t rb = kiln_row_bytes(w->tok_embd.type, c->dim);
    for (int t = 0; t < n; t++) {
        float *xt = b->x + (size_t)t * c->dim;
        kiln_row_to_f32(xt, (const char *)w->tok_embd.data + rb * tokens[t], w->tok_embd.type, c->dim);
        if (c->embd_scale)
            for (int i = 0; i < c->dim; i++) xt[i] *= c->embd_scale;
        if (c->pos == KILN_POS_LEARNED) {
            size_t pb = kiln_row_bytes(w->pos_embd.type, c->dim);
            kiln_row_to_f32(b->row, (const char *)w->pos_embd.data + pb * cs[t]->pos, w->pos_embd.type, c->dim);
            for (int i = 0; i < c->dim; i++) xt[i] += b->row[i];
        }
    }
}

/* Row T's query and key get the rotation of its own position, with its context's frequencies. */
static void rope_row(kiln_batch *b, kiln_state *s, float *q, float *k, int pos) {
    const kiln_config *c = &b->m->cfg;
    for (int i = 0; i < c->rope_dim / 2; i++) {
        double a = (double)pos * s->rope_inv_freq[i];
        b->cs[i] = (float)cos(a) * s->rope_mscale;
        b->sn[i] = (float)sin(a) * s->rope_mscale;
    }
    kiln_rope_apply(q, c->n_heads, c->head_dim, c->rope_dim, c->rope_style, b->cs, b->sn);
    kiln_rope_apply(k, c->n_kv_heads, c->head_dim, c->rope_dim, c->rope_style, b->cs, b->sn);
}

static void attention_block(kiln_batch *b, kiln_ctx **cs, int layer, int n) {
    const kiln_config *c = &b->m->cfg;
    const kiln_layer_weights *L = &b->m->weights.w.layers[layer];
    int qdim = c->n_heads * c->head_dim, kvdim = c->n_kv_heads * c->head_dim, W = c->sliding_window;
    float scale = 1.0f / sqrtf((float)c->head_dim);
    norm_rows(c, b->xb, b->x, L->attn_norm, L->attn_norm_b, n);
    matmul(b->q, b->xb, &L->wq, n);
    matmul(b->k, b->xb, &L->wk, n);
    matmul(b->v, b->xb, &L->wv, n);
    add_bias(b->q, L->bq, n, qdim);
    add_bias(b->k, L->bk, n, kvdim);
    add_bias(b->v, L->bv, n, kvdim);
    for (int t = 0; t < n; t++) {
        kiln_state *s = cs[t]->state;
        int pos = cs[t]->pos;
        float *q = b->q + (size_t)t * qdim, *k = b->k + (size_t)t * kvdim;
        if (c->pos == KILN_POS_ROPE) rope_row(b, s, q, k, pos);
        if (c->attn_logn) {
            float f = kiln_logn_scale(c, pos);
            for (int i = 0; i < qdim; i++) q[i] *= f;
        }
        float *kc = s->k_cache + (size_t)layer * s->n_ctx * kvdim, *vc = s->v_cache + (size_t)layer * s->n_ctx * kvdim;
        memcpy(kc + (size_t)pos * kvdim, k, sizeof(float) * kvdim);
        memcpy(vc + (size_t)pos * kvdim, b->v + (size_t)t * kvdim, sizeof(float) * kvdim);
        int first = W && pos - W + 1 > 0 ? pos - W + 1 : 0;
        size_t o = (size_t)first * kvdim;
        kiln_attention(b->att + (size_t)t * qdim, q, kc + o, vc + o, 1, pos - first, c->n_heads, c->n_kv_heads,
                       c->head_dim, kvdim, scale);
    }
    matmul(b->xb, b->att, &L->wo, n);
    add_bias(b->xb, L->bo, n, c->dim);
    for (size_t i = 0; i < (size_t)n * c->dim; i++) b->x[i] += b->xb[i];
}

static void mlp_block(kiln_batch *b, int layer, int n) {
    const kiln_config *c = &b->m->cfg;
    const kiln_layer_weights *L = &b->m->weights.w.layers[layer];
    size_t len = (size_t)n * c->ffn_dim;
    norm_rows(c, b->xb, b->x, L->ffn_norm, L->ffn_norm_b, n);
    if (c->act == KILN_ACT_GELU) {
        matmul(b->hb, b->xb, &L->w_up, n);
        add_bias(b->hb, L->b_up, n, c->ffn_dim);
        kiln_gelu(b->hb, (int)len);
    } else {
        matmul(b->hb, b->xb, &L->w_gate, n);
        matmul(b->hb2, b->xb, &L->w_up, n);
        if (c->act == KILN_ACT_SWIGLU) {
            kiln_swiglu(b->hb, b->hb2, (int)len);
        } else {
            kiln_gelu(b->hb, (int)len);
            for (size_t i = 0; i < len; i++) b->hb[i] *= b->hb2[i];
        }
    }
    matmul(b->xb, b->hb, &L->w_down, n);
    add_bias(b->xb, L->b_down, n, c->dim);
    for (size_t i = 0; i < (size_t)n * c->dim; i++) b->x[i] += b->xb[i];
}

int kiln_batch_eval(kiln_batch *b, kiln_ctx **cs, const int32_t *tokens, int n) {
    const kiln_config *c = &b->m->cfg;
    const kiln_weights *w = &b->m->weights.w;
    if (n < 1 || n > b->max_seqs) return kiln_fail("batch of %d sequences (must be 1 to %d)", n, b->max_seqs);
    for (int t = 0; t < n; t++) {
        if (cs[t]->m != b->m) return kiln_fail("sequence %d of the batch runs another model", t);
        if (cs[t]->pos >= cs[t]->state->n_ctx)
            return kiln_fail("sequence %d of the batch is full (%d positions)", t, cs[t]->state->n_ctx);
        if (tokens[t] < 0 || tokens[t] >= c->n_vocab)
            return kiln_fail("token id %d of sequence %d is outside the vocabulary (0 to %d)", tokens[t], t,
                             c->n_vocab - 1);
        kiln_state *s = cs[t]->state;
        if (!s->rope_ready && c->pos == KILN_POS_ROPE) {
            kiln_rope_freqs(c, s->n_ctx, w->rope_freqs, s->rope_inv_freq, &s->rope_mscale);
            s->rope_ready = 1;
        }
    }
    embed(b, cs, tokens, n);
    for (int l = 0; l < c->n_layers; l++) {
        attention_block(b, cs, l, n);
        mlp_block(b, l, n);
    }
    norm_rows(c, b->xb, b->x, w->out_norm, w->out_norm_b, n);
    matmul(b->logits, b->xb, &w->output, n);
    for (int t = 0; t < n; t++) {
        memcpy(cs[t]->logits, b->logits + (size_t)t * c->n_vocab, sizeof(float) * c->n_vocab);
        memcpy(cs[t]->state->hidden, b->xb + (size_t)t * c->dim, sizeof(float) * c->dim);
        cs[t]->pos++;
    }
    return 0;
}
