/* The traced forward pass: every layer on all N tokens at once (positions 0..N-1), with attention
 * written out as explicit softmax weights so that they can be kept. Same math as src/model/forward.c;
 * speed does not matter here, clarity does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/inspect.h"
#include "base/error.h"
#include "kernels/kernels.h"

enum { MAX_TRACE_TOKENS = 1024 }; /* the attention weights grow as layers x heads x N^2 */

typedef struct {
    const kiln_config *c;
    const kiln_weights *w;
    int n;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2;
    float *inv_freq, *cs, *sn, mscale;
} tracer;

static void matmul(float *y, const float *x, const kiln_mat *w, int n) {
    kiln_matmul(y, x, w->data, w->type, n, w->rows, w->cols);
}

static void add_bias(float *y, const float *b, int n, int width) {
    for (int t = 0; b && t < n; t++)
        for (int i = 0; i < width; i++) y[(size_t)t * width + i] += b[i];
}

static void norm_rows(const kiln_config *c, float *out, const float *x, const float *w, const float *b, int n) {
    for (int t = 0; t < n; t++) {
        size_t o = (size_t)t * c->dim;
        if (c->norm == KILN_NORM_RMS) kiln_rmsnorm(out + o, x + o, w, c->dim, c->norm_eps);
        else kiln_layernorm(out + o, x + o, w, b, c->dim, c->norm_eps);
    }
}

static void embed(tracer *tr, const int32_t *tokens) {
    const kiln_config *c = tr->c;
    const kiln_weights *w = tr->w;
    for (int t = 0; t < tr->n; t++) {
        float *xt = tr->x + (size_t)t * c->dim;
        kiln_row_to_f32(xt, (const char *)w->tok_embd.data + kiln_row_bytes(w->tok_embd.type, c->dim) * tokens[t],
                        w->tok_embd.type, c->dim);
        if (c->embd_scale)
            for (int i = 0; i < c->dim; i++) xt[i] *= c->embd_scale;
        if (c->pos == KILN_POS_LEARNED) {
            kiln_row_to_f32(tr->hb, (const char *)w->pos_embd.data + kiln_row_bytes(w->pos_embd.type, c->dim) * t,
                            w->pos_embd.type, c->dim);
            for (int i = 0; i < c->dim; i++) xt[i] += tr->hb[i];
        }
    }
}

/* Softmax attention of every query over the keys it may see; the weights go to PROBS (n_heads x N x N). */
static void attend(tracer *tr, float *probs) {
    const kiln_config *c = tr->c;
    int n = tr->n, hd = c->head_dim, qdim = c->n_heads * hd, kvdim = c->n_kv_heads * hd;
    int group = c->n_heads / c->n_kv_heads, W = c->sliding_window;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < c->n_heads; h++) {
        int kvh = h / group;
        for (int i = 0; i < n; i++) {
            float *p = probs + ((size_t)h * n + i) * n;
            const float *q = tr->q + (size_t)i * qdim + (size_t)h * hd;
            int first = W && i - W + 1 > 0 ? i - W + 1 : 0;
            for (int j = 0; j < n; j++) {
                p[j] = 0;
                if (j < first || j > i) continue;
                const float *k = tr->k + (size_t)j * kvdim + (size_t)kvh * hd;
                float s = 0;
                for (int d = 0; d < hd; d++) s += q[d] * k[d];
                p[j] = s * scale;
            }
            kiln_softmax(p + first, i - first + 1);
            float *out = tr->att + (size_t)i * qdim + (size_t)h * hd;
            memset(out, 0, sizeof(float) * hd);
            for (int j = first; j <= i; j++) {
                const float *v = tr->v + (size_t)j * kvdim + (size_t)kvh * hd;
                for (int d = 0; d < hd; d++) out[d] += p[j] * v[d];
            }
        }
    }
}

static void attention_block(tracer *tr, const kiln_layer_weights *L, float *probs) {
    const kiln_config *c = tr->c;
    int n = tr->n, qdim = c->n_heads * c->head_dim, kvdim = c->n_kv_heads * c->head_dim;
    norm_rows(c, tr->xb, tr->x, L->attn_norm, L->attn_norm_b, n);
    matmul(tr->q, tr->xb, &L->wq, n);
    matmul(tr->k, tr->xb, &L->wk, n);
    matmul(tr->v, tr->xb, &L->wv, n);
    add_bias(tr->q, L->bq, n, qdim);
    add_bias(tr->k, L->bk, n, kvdim);
    add_bias(tr->v, L->bv, n, kvdim);
    for (int t = 0; t < n; t++) {
        if (c->pos == KILN_POS_ROPE) {
            for (int i = 0; i < c->rope_dim / 2; i++) {
                double a = (double)t * tr->inv_freq[i];
                tr->cs[i] = (float)cos(a) * tr->mscale;
                tr->sn[i] = (float)sin(a) * tr->mscale;
            }
            kiln_rope_apply(tr->q + (size_t)t * qdim, c->n_heads, c->head_dim, c->rope_dim, c->rope_style, tr->cs, tr->sn);
            kiln_rope_apply(tr->k + (size_t)t * kvdim, c->n_kv_heads, c->head_dim, c->rope_dim, c->rope_style, tr->cs,
                            tr->sn);
        }
        float f = kiln_logn_scale(c, t);
        for (int i = 0; f != 1 && i < qdim; i++) tr->q[(size_t)t * qdim + i] *= f;
    }
    attend(tr, probs);
    matmul(tr->xb, tr->att, &L->wo, n);
    add_bias(tr->xb, L->bo, n, c->dim);
    for (size_t i = 0; i < (size_t)n * c->dim; i++) tr->x[i] += tr->xb[i];
}

static void mlp_block(tracer *tr, const kiln_layer_weights *L) {
    const kiln_config *c = tr->c;
    int n = tr->n;
    size_t len = (size_t)n * c->ffn_dim;
    norm_rows(c, tr->xb, tr->x, L->ffn_norm, L->ffn_norm_b, n);
    if (c->act == KILN_ACT_GELU) {
        matmul(tr->hb, tr->xb, &L->w_up, n);
        add_bias(tr->hb, L->b_up, n, c->ffn_dim);
        kiln_gelu(tr->hb, (int)len);
    } else {
        matmul(tr->hb, tr->xb, &L->w_gate, n);
        matmul(tr->hb2, tr->xb, &L->w_up, n);
        if (c->act == KILN_ACT_SWIGLU) {
            kiln_swiglu(tr->hb, tr->hb2, (int)len);
        } else {
            kiln_gelu(tr->hb, (int)len);
            for (size_t i = 0; i < len; i++) tr->hb[i] *= tr->hb2[i];
        }
    }
    matmul(tr->xb, tr->hb, &L->w_down, n);
    add_bias(tr->xb, L->b_down, n, c->dim);
    for (size_t i = 0; i < (size_t)n * c->dim; i++) tr->x[i] += tr->xb[i];
}

int kiln_trace_run(const kiln_model *m, const int32_t *tokens, int n, kiln_trace *out) {
    const kiln_config *c = &m->cfg;
    memset(out, 0, sizeof *out);
    int limit = c->ctx_len < MAX_TRACE_TOKENS ? c->ctx_len : MAX_TRACE_TOKENS;
    if (n < 1 || n > limit) return kiln_fail("%d tokens to trace (must be 1 to %d)", n, limit);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->n_vocab)
            return kiln_fail("token id %d at index %d is outside the vocabulary (0 to %d)", tokens[i], i, c->n_vocab - 1);
    size_t N = (size_t)n, qdim = (size_t)c->n_heads * c->head_dim, kvdim = (size_t)c->n_kv_heads * c->head_dim;
    size_t wide = (size_t)c->dim > qdim ? (size_t)c->dim : qdim, half = c->rope_dim / 2 > 0 ? c->rope_dim / 2 : 1;
    size_t hb = (size_t)c->ffn_dim > (size_t)c->dim ? (size_t)c->ffn_dim : (size_t)c->dim;
    tracer tr = {.c = c, .w = &m->weights.w, .n = n};
    tr.x = kiln_xmalloc(sizeof(float) * N * c->dim);
    tr.xb = kiln_xmalloc(sizeof(float) * N * wide);
    tr.q = kiln_xmalloc(sizeof(float) * N * qdim);
    tr.k = kiln_xmalloc(sizeof(float) * N * kvdim);
    tr.v = kiln_xmalloc(sizeof(float) * N * kvdim);
    tr.att = kiln_xmalloc(sizeof(float) * N * qdim);
    tr.hb = kiln_xmalloc(sizeof(float) * N * hb);
    tr.hb2 = kiln_xmalloc(sizeof(float) * N * c->ffn_dim);
    tr.inv_freq = kiln_xmalloc(sizeof(float) * half);
    tr.cs = kiln_xmalloc(sizeof(float) * half);
    tr.sn = kiln_xmalloc(sizeof(float) * half);
    if (c->pos == KILN_POS_ROPE) kiln_rope_freqs(c, c->ctx_len, tr.w->rope_freqs, tr.inv_freq, &tr.mscale);
    out->n_tokens = n, out->n_layers = c->n_layers, out->dim = c->dim, out->n_heads = c->n_heads;
    out->resid = kiln_xmalloc(sizeof(float) * (c->n_layers + 1) * N * c->dim);
    out->attn = kiln_xmalloc(sizeof(float) * c->n_layers * c->n_heads * N * N);
    embed(&tr, tokens);
    for (int l = 0; l < c->n_layers; l++) {
        memcpy(out->resid + (size_t)l * N * c->dim, tr.x, sizeof(float) * N * c->dim);
        attention_block(&tr, &tr.w->layers[l], out->attn + (size_t)l * c->n_heads * N * N);
        mlp_block(&tr, &tr.w->layers[l]);
    }
    memcpy(out->resid + (size_t)c->n_layers * N * c->dim, tr.x, sizeof(float) * N * c->dim);
    free(tr.x), free(tr.xb), free(tr.q), free(tr.k), free(tr.v), free(tr.att), free(tr.hb), free(tr.hb2);
    free(tr.inv_freq), free(tr.cs), free(tr.sn);
    return 0;
}

void kiln_trace_free(kiln_trace *t) {
    free(t->resid);
    free(t->attn);
    memset(t, 0, sizeof *t);
}

void kiln_trace_lens(const kiln_model *m, const float *h, float *logits) {
    const kiln_config *c = &m->cfg;
    float *x = kiln_xmalloc(sizeof(float) * c->dim);
    norm_rows(c, x, h, m->weights.w.out_norm, m->weights.w.out_norm_b, 1);
    matmul(logits, x, &m->weights.w.output, 1);
    free(x);
}

double kiln_cos_distance(const float *a, const float *b, int n) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    if (aa == 0 || bb == 0) return 1;
    return 1 - ab / sqrt(aa * bb);
}
