/* Reading and writing the transformer's configuration and weights in GGUF (llama.cpp's names). */
#include "format/model_file.h"

#include <math.h>
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
    int embd_scale_sqrt_dim; /* token embeddings are scaled by sqrt(dim) in the forward pass */
} arch_info;

/* llama.cpp's conversions leave baichuan and llama with interleaved RoPE (they permute Hugging Face's
 * q/k rows), and qwen2, gemma and phi3 with Hugging Face's NEOX halves. */
static const arch_info ARCHS[] = {
    {"llama", KILN_NORM_RMS, KILN_POS_ROPE, KILN_ACT_SWIGLU, KILN_ROPE_INTERLEAVED, 0},
    {"qwen2", KILN_NORM_RMS, KILN_POS_ROPE, KILN_ACT_SWIGLU, KILN_ROPE_NEOX, 0},
    {"gpt2", KILN_NORM_LAYER, KILN_POS_LEARNED, KILN_ACT_GELU, KILN_ROPE_INTERLEAVED, 0},
    {"baichuan", KILN_NORM_RMS, KILN_POS_ROPE, KILN_ACT_SWIGLU, KILN_ROPE_INTERLEAVED, 0},
    {"gemma", KILN_NORM_RMS, KILN_POS_ROPE, KILN_ACT_GEGLU, KILN_ROPE_NEOX, 1},
    {"phi3", KILN_NORM_RMS, KILN_POS_ROPE, KILN_ACT_SWIGLU, KILN_ROPE_NEOX, 0},
};
enum { N_ARCHS = sizeof ARCHS / sizeof ARCHS[0] };

int model_file_arch_defaults(const char *arch, kiln_config *c) {
    for (int i = 0; i < N_ARCHS; i++) {
        if (strcmp(arch, ARCHS[i].arch)) continue;
        snprintf(c->arch, sizeof c->arch, "%s", arch);
        c->norm = ARCHS[i].norm;
        c->pos = ARCHS[i].pos;
        c->act = ARCHS[i].act;
        c->rope_style = ARCHS[i].rope_style;
        return 0;
    }
    char list[256] = "";
    for (int i = 0; i < N_ARCHS; i++) snprintf(list + strlen(list), sizeof list - strlen(list), i ? ", %s" : "%s", ARCHS[i].arch);
    return kiln_fail("unknown architecture '%s' (supported: %s)", arch, list);
}

float model_file_embd_scale(const char *arch, int dim) {
    for (int i = 0; i < N_ARCHS; i++)
        if (!strcmp(arch, ARCHS[i].arch) && ARCHS[i].embd_scale_sqrt_dim) return sqrtf((float)dim);
    return 0;
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

/* RoPE scaling. llama.cpp's keys (ARCH.rope.scaling.*) carry linear and YaRN; llama.cpp knows no dynamic
 * NTK and stores llama 3's scaling as a rope_freqs tensor, so kiln keeps those two under kiln.rope.scaling.*
 * where llama.cpp does not look (it then runs them as the unscaled model they are within their original
 * context; the rope_freqs tensor is written too). Fixed NTK is written as the base it amounts to. */
static const char *const SCALINGS[] = {"none", "linear", "dynamic", "ntk", "yarn", "llama3"};
enum { N_SCALINGS = sizeof SCALINGS / sizeof SCALINGS[0] };

static int read_scaling_f32(const gguf_file *g, const char *prefix, const char *suffix, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.%s", prefix, suffix);
    return gguf_get_f32(g, key, out) < 0 ? -1 : 0;
}

static int read_rope_scaling(const gguf_file *g, kiln_config *c) {
    const char *prefix = "kiln";
    char key[128];
    gguf_str type;
    int r = gguf_get_str(g, "kiln.rope.scaling.type", &type);
    if (r == 0) {
        prefix = c->arch;
        snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
        r = gguf_get_str(g, key, &type);
    }
    if (r <= 0) return r;
    for (int i = 0; i < N_SCALINGS && !c->rope_scaling; i++)
        if (type.len == strlen(SCALINGS[i]) && !memcmp(type.ptr, SCALINGS[i], type.len)) c->rope_scaling = i;
    if (!c->rope_scaling && !(type.len == 4 && !memcmp(type.ptr, "none", 4)))
        return kiln_fail("%s: rope scaling type '%.*s' is not supported (supported: none, linear, yarn, dynamic, llama3)",
                         g->path, (int)(type.len > 32 ? 32 : type.len), type.ptr);
    c->rope_factor = 1;
    uint32_t orig = 0;
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", prefix);
    if (read_scaling_f32(g, prefix, "factor", &c->rope_factor) || gguf_get_u32(g, key, &orig) < 0 ||
        read_scaling_f32(g, prefix, "yarn_attn_factor", &c->rope_attn_factor) ||
        read_scaling_f32(g, prefix, "yarn_beta_fast", &c->yarn_beta_fast) ||
        read_scaling_f32(g, prefix, "yarn_beta_slow", &c->yarn_beta_slow) ||
        read_scaling_f32(g, prefix, "low_freq_factor", &c->rope_low_freq) ||
        read_scaling_f32(g, prefix, "high_freq_factor", &c->rope_high_freq))
        return -1;
    if (orig > (1u << 30)) return kiln_fail("%s: %s = %u is out of range", g->path, key, orig);
    c->rope_orig_ctx = (int)orig;
    return 0;
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
    bool logn = false;
    if (read_u32(g, c, "attention.sliding_window", 0, &c->sliding_window) || read_rope_scaling(g, c) < 0 ||
        gguf_get_bool(g, "kiln.attention.logn", &logn) < 0)
        return -1;
    c->attn_logn = logn;
    c->embd_scale = model_file_embd_scale(c->arch, c->dim);
    const gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return kiln_fail("%s: missing tensor token_embd.weight", g->path);
    c->n_vocab = (int)emb->ne[1];
    c->tied_output = gguf_find_tensor(g, "output.weight") == NULL;
    c->qkv_bias = gguf_find_tensor(g, "blk.0.attn_q.bias") || gguf_find_tensor(g, "blk.0.attn_qkv.bias");
    c->out_bias = gguf_find_tensor(g, "blk.0.attn_output.bias") != NULL;
    const gguf_tensor *cls = gguf_find_tensor(g, "cls.weight");
    if (cls && (cls->ne[1] == 0 || cls->ne[1] > 1u << 20))
        return kiln_fail("%s: cls.weight has %llu rows", g->path, (unsigned long long)cls->ne[1]);
    c->n_cls = cls ? (int)cls->ne[1] : 0;
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
    return kiln_fail("%s: tensor %.*s has type %s, which kiln cannot compute with yet (supported: %s)", g->path,
                     (int)t->name.len, t->name.ptr, tn ? tn : "unknown", gguf_supported_type_names());
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
    int fused_up = c->act != KILN_ACT_GELU && !find(g, l, "ffn_gate.weight");
    if (get_mat(g, l, "attn_output.weight", dim, qdim, &L->wo) || get_vec(g, l, "attn_output.bias", dim, 0, &L->bo, mw) ||
        (!fused_up && get_mat(g, l, "ffn_up.weight", c->ffn_dim, dim, &L->w_up)) ||
        get_vec(g, l, "ffn_up.bias", c->ffn_dim, 0, &L->b_up, mw) ||
        get_mat(g, l, "ffn_down.weight", dim, c->ffn_dim, &L->w_down) ||
        get_vec(g, l, "ffn_down.bias", dim, 0, &L->b_down, mw))
        return -1;
    if (c->act == KILN_ACT_GELU) return 0;
    if (find(g, l, "ffn_gate.weight")) return get_mat(g, l, "ffn_gate.weight", c->ffn_dim, dim, &L->w_gate);
    /* no gate: phi3's fused ffn_up holds the gate rows, then the up rows */
    kiln_mat gate_up;
    if (get_mat(g, l, "ffn_up.weight", 2 * c->ffn_dim, dim, &gate_up)) return -1;
    L->w_gate = mat_rows(gate_up, 0, c->ffn_dim);
    L->w_up = mat_rows(gate_up, c->ffn_dim, c->ffn_dim);
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
    if (c->n_cls && get_mat(g, -1, "cls.weight", c->n_cls, c->dim, &w->cls)) goto fail;
    /* kiln's own llama3 scaling computes these factors from the configuration */
    if (c->pos == KILN_POS_ROPE && c->rope_scaling != KILN_ROPE_SCALING_LLAMA3 &&
        get_vec(g, -1, "rope_freqs.weight", c->rope_dim / 2, 0, &w->rope_freqs, mw))
        goto fail;
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

static void set_scaling(gguf_writer *w, const char *prefix, const char *suffix, float v) {
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.%s", prefix, suffix);
    if (v) gguf_set_f32(w, key, v);
}

static void write_rope_scaling(gguf_writer *w, const kiln_config *c) {
    if (c->rope_scaling == KILN_ROPE_SCALING_NONE || c->rope_scaling == KILN_ROPE_SCALING_NTK) return;
    int ours = c->rope_scaling == KILN_ROPE_SCALING_DYNAMIC || c->rope_scaling == KILN_ROPE_SCALING_LLAMA3;
    const char *prefix = ours ? "kiln" : c->arch;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", prefix);
    gguf_set_str(w, key, SCALINGS[c->rope_scaling]);
    set_scaling(w, prefix, "factor", c->rope_factor);
    if (c->rope_orig_ctx) {
        snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", prefix);
        gguf_set_u32(w, key, (uint32_t)c->rope_orig_ctx);
    }
    set_scaling(w, prefix, "yarn_attn_factor", c->rope_attn_factor);
    set_scaling(w, prefix, "yarn_beta_fast", c->yarn_beta_fast);
    set_scaling(w, prefix, "yarn_beta_slow", c->yarn_beta_slow);
    set_scaling(w, prefix, "low_freq_factor", c->rope_low_freq);
    set_scaling(w, prefix, "high_freq_factor", c->rope_high_freq);
}

float model_file_rope_base(const kiln_config *c) {
    if (c->rope_scaling != KILN_ROPE_SCALING_NTK) return c->rope_theta;
    return (float)(c->rope_theta * pow(c->rope_factor, (double)c->rope_dim / (c->rope_dim - 2)));
}

void model_file_write_rope_freqs(gguf_writer *w, const kiln_config *c) {
    if (c->pos != KILN_POS_ROPE || c->rope_scaling != KILN_ROPE_SCALING_LLAMA3) return;
    int half = c->rope_dim / 2;
    kiln_config plain = *c;
    plain.rope_scaling = KILN_ROPE_SCALING_NONE;
    float *base = kiln_xmalloc(sizeof(float) * half), *scaled = kiln_xmalloc(sizeof(float) * half), m;
    kiln_rope_freqs(&plain, c->ctx_len, NULL, base, &m);
    kiln_rope_freqs(c, c->ctx_len, NULL, scaled, &m);
    for (int i = 0; i < half; i++) scaled[i] = base[i] / scaled[i];
    uint64_t ne[1] = {(uint64_t)half};
    gguf_add_tensor(w, "rope_freqs.weight", KILN_TYPE_F32, 1, ne, scaled);
    free(base);
    free(scaled);
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
        set_f32(w, c, "rope.freq_base", model_file_rope_base(c));
    }
    if (c->head_dim * c->n_heads != c->dim) {
        set_u32(w, c, "attention.key_length", c->head_dim);
        set_u32(w, c, "attention.value_length", c->head_dim);
    }
    if (c->sliding_window) set_u32(w, c, "attention.sliding_window", c->sliding_window);
    if (c->attn_logn) gguf_set_bool(w, "kiln.attention.logn", true);
    if (c->pos == KILN_POS_ROPE) write_rope_scaling(w, c);
}
