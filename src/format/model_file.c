/* Reading and writing the transformer's configuration and weights in GGUF (llama.cpp's names). */
#include "format/model_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "kernels/kernels.h"

/* The settings that make a family; everything else is read from the file. */
typedef struct {
    const char *arch;
    kiln_norm_type norm;
    kiln_pos_type pos;
    kiln_act_type act;
    kiln_rope_style rope_style;
} arch_info;

static const arch_info ARCHS[] = {
    {"llama", KILN_NORM_RMS, KILN_POS_ROPE, KILN_ACT_SWIGLU, KILN_ROPE_INTERLEAVED},
    {"qwen2", KILN_NORM_RMS, KILN_POS_ROPE, KILN_ACT_SWIGLU, KILN_ROPE_NEOX},
    {"gpt2", KILN_NORM_LAYER, KILN_POS_LEARNED, KILN_ACT_GELU, KILN_ROPE_INTERLEAVED},
};

int model_file_arch_defaults(const char *arch, kiln_config *c) {
    for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0]; i++) {
        if (strcmp(arch, ARCHS[i].arch)) continue;
        snprintf(c->arch, sizeof c->arch, "%s", arch);
        c->norm = ARCHS[i].norm;
        c->pos = ARCHS[i].pos;
        c->act = ARCHS[i].act;
        c->rope_style = ARCHS[i].rope_style;
        return 0;
    }
    return kiln_fail("unknown architecture '%s' (supported: llama, qwen2, gpt2)", arch);
}

/* Reads ARCH.SUFFIX as u32 into *out; REQUIRED decides whether absence is an error. */
static int read_u32(const gguf_file *g, const kiln_config *c, const char *suffix, int required, int *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c->arch, suffix);
    uint32_t v;
    int r = gguf_get_u32(g, key, &v);
    if (r < 0) return -1;
    if (r == 0) return required ? kiln_fail("%s: missing key %s", g->path, key) : 0;
    if (v == 0 || v > (1u << 30)) return kiln_fail("%s: %s = %u is out of range", g->path, key, v);
    *out = (int)v;
    return 0;
}

static int read_f32(const gguf_file *g, const kiln_config *c, const char *suffix, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c->arch, suffix);
    return gguf_get_f32(g, key, out) < 0 ? -1 : 0;
}

int model_file_read_config(const gguf_file *g, kiln_config *c) {
    memset(c, 0, sizeof *c);
    gguf_str arch;
    int r = gguf_get_str(g, "general.architecture", &arch);
    if (r < 0) return -1;
    if (r == 0) return kiln_fail("%s: missing key general.architecture", g->path);
    char name[32];
    snprintf(name, sizeof name, "%.*s", (int)(arch.len < 31 ? arch.len : 31), arch.ptr);
    if (model_file_arch_defaults(name, c) < 0) return kiln_fail("%s: %s", g->path, kiln_errmsg());
    if (read_u32(g, c, "embedding_length", 1, &c->dim) || read_u32(g, c, "block_count", 1, &c->n_layers) ||
        read_u32(g, c, "feed_forward_length", 1, &c->ffn_dim) ||
        read_u32(g, c, "attention.head_count", 1, &c->n_heads) || read_u32(g, c, "context_length", 1, &c->ctx_len))
        return -1;
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->dim / c->n_heads;
    if (read_u32(g, c, "attention.head_count_kv", 0, &c->n_kv_heads) ||
        read_u32(g, c, "attention.key_length", 0, &c->head_dim))
        return -1;
    int v_len = c->head_dim;
    if (read_u32(g, c, "attention.value_length", 0, &v_len)) return -1;
    if (v_len != c->head_dim)
        return kiln_fail("%s: key_length %d != value_length %d is not supported", g->path, c->head_dim, v_len);
    c->rope_dim = c->head_dim;
    c->rope_theta = 10000.0f;
    if (read_u32(g, c, "rope.dimension_count", 0, &c->rope_dim) || read_f32(g, c, "rope.freq_base", &c->rope_theta))
        return -1;
    c->norm_eps = 1e-5f;
    if (read_f32(g, c, c->norm == KILN_NORM_RMS ? "attention.layer_norm_rms_epsilon" : "attention.layer_norm_epsilon",
                 &c->norm_eps))
        return -1;
    const gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return kiln_fail("%s: missing tensor token_embd.weight", g->path);
    c->n_vocab = (int)emb->ne[1];
    c->tied_output = gguf_find_tensor(g, "output.weight") == NULL;
    c->qkv_bias = gguf_find_tensor(g, "blk.0.attn_q.bias") || gguf_find_tensor(g, "blk.0.attn_qkv.bias");
    c->out_bias = gguf_find_tensor(g, "blk.0.attn_output.bias") != NULL;
    if (kiln_config_check(c) < 0) return kiln_fail("%s: %s", g->path, kiln_errmsg());
    return 0;
}

static const gguf_tensor *find(const gguf_file *g, int layer, const char *name) {
    char full[96];
    if (layer >= 0) snprintf(full, sizeof full, "blk.%d.%s", layer, name);
    else snprintf(full, sizeof full, "%s", name);
    return gguf_find_tensor(g, full);
}

static int shape_error(const gguf_file *g, const gguf_tensor *t, const char *want) {
    char got[96] = "[";
    for (uint32_t d = 0; d < t->n_dims; d++)
        snprintf(got + strlen(got), sizeof got - strlen(got), d ? ", %llu" : "%llu", (unsigned long long)t->ne[d]);
    return kiln_fail("%s: tensor %.*s has shape %s], expected %s for this configuration", g->path, (int)t->name.len,
                     t->name.ptr, got, want);
}

static int check_type(const gguf_file *g, const gguf_tensor *t) {
    if (gguf_type_supported(t->type)) return 0;
    const char *tn = gguf_type_name(t->type);
    return kiln_fail("%s: tensor %.*s has type %s, which kiln cannot compute with yet (supported: F32, F16, BF16)",
                     g->path, (int)t->name.len, t->name.ptr, tn ? tn : "unknown");
}

/* A ROWS x COLS matrix named NAME of layer LAYER (-1: global). */
static int get_mat(const gguf_file *g, int layer, const char *name, int rows, int cols, kiln_mat *m) {
    const gguf_tensor *t = find(g, layer, name);
    if (!t) return layer >= 0 ? kiln_fail("%s: missing tensor blk.%d.%s", g->path, layer, name)
                              : kiln_fail("%s: missing tensor %s", g->path, name);
    if (check_type(g, t) < 0) return -1;
    if (t->ne[0] != (uint64_t)cols || t->ne[1] != (uint64_t)rows || t->ne[2] != 1 || t->ne[3] != 1) {
        char want[64];
        snprintf(want, sizeof want, "[%d, %d]", cols, rows);
        return shape_error(g, t, want);
    }
    *m = (kiln_mat){t->data, (int)t->type, rows, cols};
    return 0;
}

/* Rows [first, first+rows) of a matrix: a view, no copy. */
static kiln_mat mat_rows(kiln_mat m, int first, int rows) {
    m.data = (const char *)m.data + kiln_row_bytes(m.type, m.cols) * first;
    m.rows = rows;
    return m;
}

/* A vector of N floats; NULL in *out when absent and not REQUIRED. Non-f32 vectors are converted. */
static int get_vec(const gguf_file *g, int layer, const char *name, int n, int required, const float **out,
                   model_file_weights *mw) {
    *out = NULL;
    const gguf_tensor *t = find(g, layer, name);
    if (!t) {
        if (!required) return 0;
        return layer >= 0 ? kiln_fail("%s: missing tensor blk.%d.%s", g->path, layer, name)
                          : kiln_fail("%s: missing tensor %s", g->path, name);
    }
    if (check_type(g, t) < 0) return -1;
    if (t->ne[0] != (uint64_t)n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1) {
        char want[32];
        snprintf(want, sizeof want, "[%d]", n);
        return shape_error(g, t, want);
    }
    if (t->type == KILN_TYPE_F32 && ((uintptr_t)t->data & 3) == 0) {
        *out = t->data;
        return 0;
    }
    float *v = kiln_xmalloc(sizeof(float) * n);
    kiln_row_to_f32(v, t->data, t->type, n);
    mw->owned = kiln_xrealloc(mw->owned, sizeof(float *) * (mw->n_owned + 1));
    mw->owned[mw->n_owned++] = v;
    *out = v;
    return 0;
}

static int read_layer(const gguf_file *g, const kiln_config *c, int l, kiln_layer_weights *L, model_file_weights *mw) {
    int dim = c->dim, qdim = c->n_heads * c->head_dim, kvdim = c->n_kv_heads * c->head_dim, ln = c->norm == KILN_NORM_LAYER;
    if (get_vec(g, l, "attn_norm.weight", dim, 1, &L->attn_norm, mw) ||
        get_vec(g, l, "attn_norm.bias", dim, ln, &L->attn_norm_b, mw) ||
        get_vec(g, l, "ffn_norm.weight", dim, 1, &L->ffn_norm, mw) ||
        get_vec(g, l, "ffn_norm.bias", dim, ln, &L->ffn_norm_b, mw))
        return -1;
    if (find(g, l, "attn_qkv.weight")) { /* fused q, k, v rows: views into one tensor */
        kiln_mat qkv;
        const float *b = NULL;
        if (get_mat(g, l, "attn_qkv.weight", qdim + 2 * kvdim, dim, &qkv) ||
            get_vec(g, l, "attn_qkv.bias", qdim + 2 * kvdim, 0, &b, mw))
            return -1;
        L->wq = mat_rows(qkv, 0, qdim);
        L->wk = mat_rows(qkv, qdim, kvdim);
        L->wv = mat_rows(qkv, qdim + kvdim, kvdim);
        if (b) {
            L->bq = b;
            L->bk = b + qdim;
            L->bv = b + qdim + kvdim;
        }
    } else if (get_mat(g, l, "attn_q.weight", qdim, dim, &L->wq) || get_mat(g, l, "attn_k.weight", kvdim, dim, &L->wk) ||
               get_mat(g, l, "attn_v.weight", kvdim, dim, &L->wv) ||
               get_vec(g, l, "attn_q.bias", qdim, 0, &L->bq, mw) || get_vec(g, l, "attn_k.bias", kvdim, 0, &L->bk, mw) ||
               get_vec(g, l, "attn_v.bias", kvdim, 0, &L->bv, mw))
        return -1;
    if (get_mat(g, l, "attn_output.weight", dim, qdim, &L->wo) || get_vec(g, l, "attn_output.bias", dim, 0, &L->bo, mw) ||
        get_mat(g, l, "ffn_up.weight", c->ffn_dim, dim, &L->w_up) ||
        get_vec(g, l, "ffn_up.bias", c->ffn_dim, 0, &L->b_up, mw) ||
        get_mat(g, l, "ffn_down.weight", dim, c->ffn_dim, &L->w_down) ||
        get_vec(g, l, "ffn_down.bias", dim, 0, &L->b_down, mw))
        return -1;
    if (c->act == KILN_ACT_SWIGLU && get_mat(g, l, "ffn_gate.weight", c->ffn_dim, dim, &L->w_gate)) return -1;
    return 0;
}

int model_file_read_weights(const gguf_file *g, const kiln_config *c, model_file_weights *mw) {
    memset(mw, 0, sizeof *mw);
    kiln_weights *w = &mw->w;
    w->layers = kiln_xcalloc(c->n_layers, sizeof *w->layers);
    int ln = c->norm == KILN_NORM_LAYER;
    if (get_mat(g, -1, "token_embd.weight", c->n_vocab, c->dim, &w->tok_embd) ||
        (c->pos == KILN_POS_LEARNED && get_mat(g, -1, "position_embd.weight", c->ctx_len, c->dim, &w->pos_embd)) ||
        get_vec(g, -1, "output_norm.weight", c->dim, 1, &w->out_norm, mw) ||
        get_vec(g, -1, "output_norm.bias", c->dim, ln, &w->out_norm_b, mw))
        goto fail;
    if (c->tied_output) w->output = w->tok_embd;
    else if (get_mat(g, -1, "output.weight", c->n_vocab, c->dim, &w->output)) goto fail;
    for (int l = 0; l < c->n_layers; l++)
        if (read_layer(g, c, l, &w->layers[l], mw)) goto fail;
    return 0;
fail:
    model_file_weights_free(mw, c);
    return -1;
}

void model_file_weights_free(model_file_weights *mw, const kiln_config *c) {
    for (int i = 0; i < mw->n_owned; i++) free(mw->owned[i]);
    free(mw->owned);
    free(mw->w.layers);
    memset(mw, 0, sizeof *mw);
}

static void set_u32(gguf_writer *w, const kiln_config *c, const char *suffix, uint32_t v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c->arch, suffix);
    gguf_set_u32(w, key, v);
}

static void set_f32(gguf_writer *w, const kiln_config *c, const char *suffix, float v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", c->arch, suffix);
    gguf_set_f32(w, key, v);
}

void model_file_write_config(gguf_writer *w, const kiln_config *c) {
    gguf_set_str(w, "general.architecture", c->arch);
    set_u32(w, c, "context_length", c->ctx_len);
    set_u32(w, c, "embedding_length", c->dim);
    set_u32(w, c, "block_count", c->n_layers);
    set_u32(w, c, "feed_forward_length", c->ffn_dim);
    set_u32(w, c, "attention.head_count", c->n_heads);
    set_u32(w, c, "vocab_size", c->n_vocab);
    if (c->norm == KILN_NORM_RMS) set_f32(w, c, "attention.layer_norm_rms_epsilon", c->norm_eps);
    else set_f32(w, c, "attention.layer_norm_epsilon", c->norm_eps);
    if (c->pos == KILN_POS_ROPE) {
        set_u32(w, c, "attention.head_count_kv", c->n_kv_heads);
        set_u32(w, c, "rope.dimension_count", c->rope_dim);
        set_f32(w, c, "rope.freq_base", c->rope_theta);
    }
    if (c->head_dim * c->n_heads != c->dim) {
        set_u32(w, c, "attention.key_length", c->head_dim);
        set_u32(w, c, "attention.value_length", c->head_dim);
    }
}
