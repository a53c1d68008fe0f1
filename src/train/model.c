/* The trained transformer: parameter layout and initialisation, the model file, activations, and the
 * forward and backward passes built from the operations of ops.h. */
#include "train/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"
#include "format/model_file.h"
#include "tokenizer/tokenizer.h"
#include "train/ops.h"

enum { MAX_TENSORS_PER_LAYER = 16 };

static int qkv_rows(const kiln_config *c) { return (c->n_heads + 2 * c->n_kv_heads) * c->head_dim; }
static int up_rows(const kiln_config *c) { return c->act == KILN_ACT_SWIGLU ? 2 * c->ffn_dim : c->ffn_dim; }

static void add_tensor(train_model *m, const char *name, int rows, int cols, int decay, float std, float value) {
    train_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->off = m->n_params;
    t->rows = rows;
    t->cols = cols;
    t->n = (size_t)rows * cols;
    t->decay = decay;
    t->init_std = std;
    t->init_value = value;
    m->n_params += t->n;
}

static void add_layer_tensors(train_model *m, int l) {
    const kiln_config *c = &m->cfg;
    int C = c->dim, qdim = c->n_heads * c->head_dim, kvdim = c->n_kv_heads * c->head_dim, F = c->ffn_dim;
    int ln = c->norm == KILN_NORM_LAYER;
    float std = 0.02f, res_std = 0.02f / sqrtf(2.0f * c->n_layers); /* GPT-2: residual projections scaled */
    char n[48];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", l, s), n)
    add_tensor(m, NAME("attn_norm.weight"), 1, C, 0, 0, 1);
    if (ln) add_tensor(m, NAME("attn_norm.bias"), 1, C, 0, 0, 0);
    if (!strcmp(c->arch, "gpt2")) {
        add_tensor(m, NAME("attn_qkv.weight"), qdim + 2 * kvdim, C, 1, std, 0);
        if (c->qkv_bias) add_tensor(m, NAME("attn_qkv.bias"), 1, qdim + 2 * kvdim, 0, 0, 0);
    } else {
        add_tensor(m, NAME("attn_q.weight"), qdim, C, 1, std, 0);
        add_tensor(m, NAME("attn_k.weight"), kvdim, C, 1, std, 0);
        add_tensor(m, NAME("attn_v.weight"), kvdim, C, 1, std, 0);
        if (c->qkv_bias) {
            add_tensor(m, NAME("attn_q.bias"), 1, qdim, 0, 0, 0);
            add_tensor(m, NAME("attn_k.bias"), 1, kvdim, 0, 0, 0);
            add_tensor(m, NAME("attn_v.bias"), 1, kvdim, 0, 0, 0);
        }
    }
    add_tensor(m, NAME("attn_output.weight"), C, qdim, 1, res_std, 0);
    if (c->out_bias) add_tensor(m, NAME("attn_output.bias"), 1, C, 0, 0, 0);
    add_tensor(m, NAME("ffn_norm.weight"), 1, C, 0, 0, 1);
    if (ln) add_tensor(m, NAME("ffn_norm.bias"), 1, C, 0, 0, 0);
    if (c->act == KILN_ACT_SWIGLU) add_tensor(m, NAME("ffn_gate.weight"), F, C, 1, std, 0);
    add_tensor(m, NAME("ffn_up.weight"), F, C, 1, std, 0);
    if (c->out_bias) add_tensor(m, NAME("ffn_up.bias"), 1, F, 0, 0, 0);
    add_tensor(m, NAME("ffn_down.weight"), C, F, 1, res_std, 0);
    if (c->out_bias) add_tensor(m, NAME("ffn_down.bias"), 1, C, 0, 0, 0);
#undef NAME
}

int train_config_make(kiln_config *c, const char *arch, int n_layers, int dim, int n_heads, int n_kv_heads,
                      int ffn_dim, int ctx_len) {
    memset(c, 0, sizeof *c);
    if (strcmp(arch, "gpt2") && strcmp(arch, "llama"))
        return kiln_fail("architecture '%s' cannot be trained (choose gpt2 or llama)", arch);
    model_file_arch_defaults(arch, c);
    if (n_heads <= 0 || dim % n_heads)
        return kiln_fail("dimension %d is not a multiple of %d heads", dim, n_heads);
    int gpt2 = c->pos == KILN_POS_LEARNED;
    if (gpt2 && n_kv_heads != n_heads)
        return kiln_fail("gpt2 has as many kv heads as heads (%d), not %d: use llama for grouped attention", n_heads,
                         n_kv_heads);
    c->n_vocab = 256;
    c->dim = dim;
    c->n_layers = n_layers;
    c->n_heads = n_heads;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = dim / n_heads;
    /* GPT-2's 4x MLP; for SwiGLU llama's 8/3 x (same parameter count), rounded up to a multiple of 32 */
    c->ffn_dim = ffn_dim ? ffn_dim : gpt2 ? 4 * dim : (8 * dim / 3 + 31) / 32 * 32;
    c->ctx_len = ctx_len;
    c->rope_dim = c->head_dim;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->qkv_bias = c->out_bias = c->tied_output = gpt2;
    return kiln_config_check(c);
}

const train_tensor *train_model_find(const train_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

/* Points P's fields into BUF (params or grads) by tensor name. */
static void bind(const train_model *m, float *buf, train_params *p) {
    const kiln_config *c = &m->cfg;
#define AT(name) (train_model_find(m, name) ? buf + train_model_find(m, name)->off : NULL)
    p->tok_embd = AT("token_embd.weight");
    p->pos_embd = AT("position_embd.weight");
    p->out_norm = AT("output_norm.weight");
    p->out_norm_b = AT("output_norm.bias");
    p->output = c->tied_output ? p->tok_embd : AT("output.weight");
    char n[48];
    for (int l = 0; l < c->n_layers; l++) {
        train_layer *L = &p->layers[l];
#define LAYER(s) (snprintf(n, sizeof n, "blk.%d.%s", l, s), AT(n))
        L->attn_norm = LAYER("attn_norm.weight");
        L->attn_norm_b = LAYER("attn_norm.bias");
        L->wqkv = LAYER("attn_qkv.weight") ? LAYER("attn_qkv.weight") : LAYER("attn_q.weight");
        L->bqkv = LAYER("attn_qkv.bias") ? LAYER("attn_qkv.bias") : LAYER("attn_q.bias");
        L->wo = LAYER("attn_output.weight");
        L->bo = LAYER("attn_output.bias");
        L->ffn_norm = LAYER("ffn_norm.weight");
        L->ffn_norm_b = LAYER("ffn_norm.bias");
        L->w_up = c->act == KILN_ACT_SWIGLU ? LAYER("ffn_gate.weight") : LAYER("ffn_up.weight");
        L->b_up = LAYER("ffn_up.bias");
        L->w_down = LAYER("ffn_down.weight");
        L->b_down = LAYER("ffn_down.bias");
#undef LAYER
    }
#undef AT
}

/* A standard normal from the counter (seed, tensor, index): Box-Muller on two hashed uniforms. */
static float normal(uint64_t seed, uint64_t tensor, uint64_t i) {
    uint64_t h = kiln_hash3(seed, tensor, i);
    double u1 = ((h >> 11) + 1.0) * (1.0 / 9007199254740993.0), u2 = (kiln_mix64(h) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int train_model_init(train_model *m, const kiln_config *c, uint64_t seed) {
    memset(m, 0, sizeof *m);
    if (kiln_config_check(c) < 0) return -1;
    if (c->act == KILN_ACT_SWIGLU && c->out_bias)
        return kiln_fail("SwiGLU with output biases is not supported for training");
    m->cfg = *c;
    m->tensors = kiln_xcalloc(8 + (size_t)MAX_TENSORS_PER_LAYER * c->n_layers, sizeof *m->tensors);
    add_tensor(m, "token_embd.weight", c->n_vocab, c->dim, 0, 0.02f, 0);
    if (c->pos == KILN_POS_LEARNED) add_tensor(m, "position_embd.weight", c->ctx_len, c->dim, 0, 0.01f, 0);
    for (int l = 0; l < c->n_layers; l++) add_layer_tensors(m, l);
    add_tensor(m, "output_norm.weight", 1, c->dim, 0, 0, 1);
    if (c->norm == KILN_NORM_LAYER) add_tensor(m, "output_norm.bias", 1, c->dim, 0, 0, 0);
    if (!c->tied_output) add_tensor(m, "output.weight", c->n_vocab, c->dim, 1, 0.02f, 0);
    m->params = kiln_xmalloc(sizeof(float) * m->n_params);
    m->grads = kiln_xcalloc(m->n_params, sizeof(float));
    for (int i = 0; i < m->n_tensors; i++) {
        const train_tensor *t = &m->tensors[i];
        for (size_t j = 0; j < t->n; j++)
            m->params[t->off + j] = t->init_std ? t->init_std * normal(seed, (uint64_t)i, j) : t->init_value;
    }
    m->p.layers = kiln_xcalloc(c->n_layers, sizeof(train_layer));
    m->g.layers = kiln_xcalloc(c->n_layers, sizeof(train_layer));
    bind(m, m->params, &m->p);
    bind(m, m->grads, &m->g);
    if (c->pos == KILN_POS_ROPE) {
        size_t n = (size_t)c->ctx_len * (c->rope_dim / 2);
        m->rope_cos = kiln_xmalloc(sizeof(float) * n);
        m->rope_sin = kiln_xmalloc(sizeof(float) * n);
        op_rope_table(m->rope_cos, m->rope_sin, c->ctx_len, c->rope_dim, c->rope_theta);
    }
    return 0;
}

void train_model_free(train_model *m) {
    free(m->params);
    free(m->grads);
    free(m->p.layers);
    free(m->g.layers);
    free(m->tensors);
    free(m->rope_cos);
    free(m->rope_sin);
    memset(m, 0, sizeof *m);
}

void train_model_zero_grad(train_model *m) { op_zero(m->grads, m->n_params); }

static kiln_mat mat(const float *data, int rows, int cols) { return (kiln_mat){data, KILN_TYPE_F32, rows, cols}; }

void train_model_weights(const train_model *m, kiln_weights *w) {
    const kiln_config *c = &m->cfg;
    const train_params *p = &m->p;
    int C = c->dim, qdim = c->n_heads * c->head_dim, kvdim = c->n_kv_heads * c->head_dim, F = c->ffn_dim;
    memset(w, 0, sizeof *w);
    w->tok_embd = mat(p->tok_embd, c->n_vocab, C);
    if (p->pos_embd) w->pos_embd = mat(p->pos_embd, c->ctx_len, C);
    w->out_norm = p->out_norm;
    w->out_norm_b = p->out_norm_b;
    w->output = mat(p->output, c->n_vocab, C);
    w->layers = kiln_xcalloc(c->n_layers, sizeof *w->layers);
    for (int l = 0; l < c->n_layers; l++) {
        const train_layer *L = &p->layers[l];
        kiln_layer_weights *o = &w->layers[l];
        o->attn_norm = L->attn_norm;
        o->attn_norm_b = L->attn_norm_b;
        o->wq = mat(L->wqkv, qdim, C);
        o->wk = mat(L->wqkv + (size_t)qdim * C, kvdim, C);
        o->wv = mat(L->wqkv + (size_t)(qdim + kvdim) * C, kvdim, C);
        if (L->bqkv) o->bq = L->bqkv, o->bk = L->bqkv + qdim, o->bv = L->bqkv + qdim + kvdim;
        o->wo = mat(L->wo, C, qdim);
        o->bo = L->bo;
        o->ffn_norm = L->ffn_norm;
        o->ffn_norm_b = L->ffn_norm_b;
        if (c->act == KILN_ACT_SWIGLU) {
            o->w_gate = mat(L->w_up, F, C);
            o->w_up = mat(L->w_up + (size_t)F * C, F, C);
        } else o->w_up = mat(L->w_up, F, C);
        o->b_up = L->b_up;
        o->w_down = mat(L->w_down, C, F);
        o->b_down = L->b_down;
    }
}

void train_model_to_gguf(const train_model *m, gguf_writer *w) {
    model_file_write_config(w, &m->cfg);
    gguf_set_str(w, "general.name", "kiln byte-level model");
    kiln_tokenizer *tok = tokenizer_new_bytes();
    tokenizer_to_gguf(tok, w);
    tokenizer_free(tok);
    for (int i = 0; i < m->n_tensors; i++) {
        const train_tensor *t = &m->tensors[i];
        uint64_t ne[2] = {(uint64_t)t->cols, (uint64_t)t->rows};
        gguf_add_tensor_ref(w, t->name, KILN_TYPE_F32, t->rows == 1 ? 1 : 2, ne, m->params + t->off);
    }
}

int train_model_from_gguf(train_model *m, const gguf_file *g) {
    for (int i = 0; i < m->n_tensors; i++) {
        const train_tensor *t = &m->tensors[i];
        const gguf_tensor *gt = gguf_find_tensor(g, t->name);
        if (!gt) return kiln_fail("%s: missing tensor %s", g->path, t->name);
        int dims = t->rows == 1 ? 1 : 2;
        if (gt->type != KILN_TYPE_F32 || (int)gt->n_dims != dims || gt->ne[0] != (uint64_t)t->cols ||
            (dims == 2 && gt->ne[1] != (uint64_t)t->rows))
            return kiln_fail("%s: tensor %s is not an F32 [%d, %d] tensor as the run's configuration needs", g->path,
                             t->name, t->cols, t->rows);
        memcpy(m->params + t->off, gt->data, sizeof(float) * t->n);
    }
    return 0;
}

/* Lays out every activation of A in one block: with BASE NULL it only counts the floats needed. */
static size_t layout(train_acts *a, const kiln_config *c, float *base) {
    size_t N = (size_t)a->B * a->T, used = 0, C = c->dim, L = c->n_layers;
    size_t qdim = (size_t)c->n_heads * c->head_dim, qkv = qkv_rows(c), F = c->ffn_dim, up = up_rows(c);
#define TAKE(n) (used += (n), base ? base + used - (n) : NULL)
    float ***per_layer[] = {&a->ln1, &a->ln1_mean, &a->ln1_rstd, &a->qkv, &a->att, &a->lse,
                            &a->mid, &a->ln2, &a->ln2_mean, &a->ln2_rstd, &a->pre, &a->act};
    size_t sizes[] = {N * C, N, N, N * qkv, N * qdim, N * c->n_heads, N * C, N * C, N, N, N * up, N * F};
    for (size_t i = 0; i < L + 1; i++) {
        float *p = TAKE(N * C);
        if (base) a->in[i] = p;
    }
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
        for (size_t l = 0; l < L; l++) {
            float *p = TAKE(sizes[k]);
            if (base) (*per_layer[k])[l] = p;
        }
    a->lnf = TAKE(N * C);
    a->lnf_mean = TAKE(N);
    a->lnf_rstd = TAKE(N);
    a->logits = TAKE(N * c->n_vocab);
    a->losses = TAKE(N);
    a->dres = TAKE(N * C);
    a->dln = TAKE(N * C);
    a->dqkv = TAKE(N * qkv);
    a->datt = TAKE(N * qdim);
    a->dpre = TAKE(N * up);
    a->dact = TAKE(N * F);
#undef TAKE
    return used;
}

train_acts *train_acts_new(const kiln_config *c, int B, int T) {
    train_acts *a = kiln_xcalloc(1, sizeof *a);
    a->B = B;
    a->T = T;
    int L = c->n_layers;
    a->ptrs = kiln_xcalloc((size_t)13 * L + 1, sizeof(float *));
    float ***lists[] = {&a->ln1, &a->ln1_mean, &a->ln1_rstd, &a->qkv, &a->att, &a->lse,
                        &a->mid, &a->ln2, &a->ln2_mean, &a->ln2_rstd, &a->pre, &a->act};
    a->in = a->ptrs;
    for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) *lists[k] = a->ptrs + L + 1 + k * L;
    a->block = kiln_xmalloc(sizeof(float) * layout(a, c, NULL));
    layout(a, c, a->block);
    return a;
}

void train_acts_free(train_acts *a) {
    if (!a) return;
    free(a->block);
    free(a->ptrs);
    free(a);
}

static void norm_forward(const kiln_config *c, float *out, float *mean, float *rstd, const float *x, const float *w,
                         const float *b, int N) {
    if (c->norm == KILN_NORM_LAYER) op_layernorm_forward(out, mean, rstd, x, w, b, N, c->dim, c->norm_eps);
    else op_rmsnorm_forward(out, rstd, x, w, N, c->dim, c->norm_eps);
}

static void norm_backward(const kiln_config *c, float *dx, float *dw, float *db, const float *dout, const float *x,
                          const float *w, const float *mean, const float *rstd, int N) {
    if (c->norm == KILN_NORM_LAYER) op_layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, c->dim);
    else op_rmsnorm_backward(dx, dw, dout, x, w, rstd, N, c->dim);
}

void train_forward(const train_model *m, train_acts *a, const int32_t *inputs, const int32_t *targets,
                   float grad_scale) {
    const kiln_config *c = &m->cfg;
    int B = a->B, T = a->T, N = B * T, C = c->dim, H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim;
    int qdim = H * HD, qkv = qkv_rows(c), F = c->ffn_dim;
    op_embedding_forward(a->in[0], inputs, m->p.tok_embd, m->p.pos_embd, N, T, C);
    for (int l = 0; l < c->n_layers; l++) {
        const train_layer *L = &m->p.layers[l];
        norm_forward(c, a->ln1[l], a->ln1_mean[l], a->ln1_rstd[l], a->in[l], L->attn_norm, L->attn_norm_b, N);
        op_matmul_forward(a->qkv[l], a->ln1[l], L->wqkv, L->bqkv, NULL, N, qkv, C);
        if (c->pos == KILN_POS_ROPE)
            op_rope_forward(a->qkv[l], N, T, qkv, H + KVH, HD, c->rope_dim, c->rope_style, m->rope_cos, m->rope_sin);
        op_attention_forward(a->att[l], a->lse[l], a->qkv[l], B, T, H, KVH, HD);
        op_matmul_forward(a->mid[l], a->att[l], L->wo, L->bo, a->in[l], N, C, qdim);
        norm_forward(c, a->ln2[l], a->ln2_mean[l], a->ln2_rstd[l], a->mid[l], L->ffn_norm, L->ffn_norm_b, N);
        op_matmul_forward(a->pre[l], a->ln2[l], L->w_up, L->b_up, NULL, N, up_rows(c), C);
        if (c->act == KILN_ACT_SWIGLU) op_swiglu_forward(a->act[l], a->pre[l], N, F);
        else op_gelu_forward(a->act[l], grad_scale != 0 ? a->pre[l] : NULL, a->pre[l], (size_t)N * F);
        op_matmul_forward(a->in[l + 1], a->act[l], L->w_down, L->b_down, a->mid[l], N, C, F);
    }
    norm_forward(c, a->lnf, a->lnf_mean, a->lnf_rstd, a->in[c->n_layers], m->p.out_norm, m->p.out_norm_b, N);
    op_matmul_forward(a->logits, a->lnf, m->p.output, NULL, NULL, N, c->n_vocab, C);
    op_crossentropy(a->losses, a->logits, targets, N, c->n_vocab, grad_scale);
}

void train_params_bind(const train_model *m, float *buf, train_params *p) {
    p->layers = kiln_xcalloc(m->cfg.n_layers, sizeof(train_layer));
    bind(m, buf, p);
}

void train_params_free(train_params *p) {
    free(p->layers);
    p->layers = NULL;
}

void train_backward(train_model *m, train_acts *a, const int32_t *inputs) { train_backward_into(m, a, inputs, &m->g); }

void train_backward_into(const train_model *m, train_acts *a, const int32_t *inputs, train_params *g) {
    const kiln_config *c = &m->cfg;
    int B = a->B, T = a->T, N = B * T, C = c->dim, H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim;
    int qdim = H * HD, qkv = qkv_rows(c), F = c->ffn_dim, L_ = c->n_layers;
    const train_params *p = &m->p;
    /* the head: a->logits holds dlogits (op_crossentropy) */
    op_matmul_backward(a->dln, g->output, NULL, a->logits, a->lnf, p->output, N, c->n_vocab, C, 0);
    memset(a->dres, 0, sizeof(float) * N * C);
    norm_backward(c, a->dres, g->out_norm, g->out_norm_b, a->dln, a->in[L_], p->out_norm, a->lnf_mean, a->lnf_rstd,
                  N);
    for (int l = L_ - 1; l >= 0; l--) {
        const train_layer *L = &p->layers[l];
        train_layer *G = &g->layers[l];
        /* MLP: a->dres is the gradient of in[l+1], and flows unchanged into mid[l] through the residual */
        op_matmul_backward(a->dact, G->w_down, G->b_down, a->dres, a->act[l], L->w_down, N, C, F, 0);
        if (c->act == KILN_ACT_SWIGLU) op_swiglu_backward(a->dpre, a->pre[l], a->dact, N, F);
        else op_gelu_backward(a->dpre, a->pre[l], a->dact, (size_t)N * F); /* pre holds GELU's derivative */
        op_matmul_backward(a->dln, G->w_up, G->b_up, a->dpre, a->ln2[l], L->w_up, N, up_rows(c), C, 0);
        norm_backward(c, a->dres, G->ffn_norm, G->ffn_norm_b, a->dln, a->mid[l], L->ffn_norm, a->ln2_mean[l],
                      a->ln2_rstd[l], N);
        /* attention: a->dres is now the gradient of mid[l], and flows into in[l] */
        op_matmul_backward(a->datt, G->wo, G->bo, a->dres, a->att[l], L->wo, N, C, qdim, 0);
        op_attention_backward(a->dqkv, a->datt, a->qkv[l], a->att[l], a->lse[l], B, T, H, KVH, HD);
        if (c->pos == KILN_POS_ROPE)
            op_rope_backward(a->dqkv, N, T, qkv, H + KVH, HD, c->rope_dim, c->rope_style, m->rope_cos, m->rope_sin);
        op_matmul_backward(a->dln, G->wqkv, G->bqkv, a->dqkv, a->ln1[l], L->wqkv, N, qkv, C, 0);
        norm_backward(c, a->dres, G->attn_norm, G->attn_norm_b, a->dln, a->in[l], L->attn_norm, a->ln1_mean[l],
                      a->ln1_rstd[l], N);
    }
    op_embedding_backward(g->tok_embd, g->pos_embd, a->dres, inputs, N, T, C, c->n_vocab);
}
