/* Hugging Face tensors <-> GGUF tensors. One table per layout lists each tensor's Hugging Face name,
 * llama.cpp name, shape and the transformations between them; import walks it forwards, export backwards.
 *
 * Transformations: Conv1D weights (GPT-2) are stored [in, out] and transposed; q/k rows of families
 * whose GGUF architecture pairs RoPE dims (llama, baichuan) are permuted from Hugging Face's halves to
 * interleaved pairs, as llama.cpp's convert_hf_to_gguf does; Gemma's norm weights w (used as 1 + w)
 * are stored as 1 + w and Baichuan 2's lm_head normalized, as llama.cpp stores them; Baichuan's fused
 * W_pack is split into q, k and v. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/half.h"
#include "format/hf.h"
#include "kernels/kernels.h"

/* Sizes a shape is written in. */
typedef enum { S_NONE, S_DIM, S_Q, S_KV, S_QKV, S_FFN, S_FFN2, S_VOCAB, S_CTX, S_CLS } size_sym;

enum {
    T_OPTIONAL = 1,   /* absent in some checkpoints (biases) */
    T_NORM = 2,       /* a norm weight (HF_NORM_PLUS_ONE applies) */
    T_HEAD = 4,       /* the output head: only when untied (HF_NORM_HEAD applies) */
    T_SCORE = 8,      /* the score head: only with HF_SCORE_HEAD */
    T_ROPE_Q = 16,    /* rows of n_heads RoPE heads (HF_PERMUTE_QK applies) */
    T_ROPE_K = 32,    /* rows of n_kv_heads RoPE heads */
    T_CONV1D = 64,    /* stored transposed, [in, out] */
    T_SLICE_Q = 128,  /* rows of a fused [q; k; v] tensor */
    T_SLICE_K = 256,
    T_SLICE_V = 512,
    T_ATTN_BIAS = 1024, /* HF llama's attention_bias gives o_proj a bias along with q/k/v: zeros on export
                           when the model has q/k/v biases only (a qwen2 model moved to llama) */
};

typedef struct {
    const char *hf, *gguf; /* names after the layer prefix (model.layers.N. / h.N. and blk.N.) for layers */
    size_sym rows, cols;   /* cols S_NONE: a vector */
    unsigned ops;
} tensor_map;

static const tensor_map LLAMA_GLOBAL[] = {
    {"model.embed_tokens.weight", "token_embd.weight", S_VOCAB, S_DIM, 0},
    {"model.norm.weight", "output_norm.weight", S_DIM, S_NONE, T_NORM},
    {"lm_head.weight", "output.weight", S_VOCAB, S_DIM, T_HEAD},
    {"score.weight", "cls.weight", S_CLS, S_DIM, T_SCORE},
    {0},
};
static const tensor_map LLAMA_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", S_DIM, S_NONE, T_NORM},
    {"self_attn.q_proj.weight", "attn_q.weight", S_Q, S_DIM, T_ROPE_Q},
    {"self_attn.k_proj.weight", "attn_k.weight", S_KV, S_DIM, T_ROPE_K},
    {"self_attn.v_proj.weight", "attn_v.weight", S_KV, S_DIM, 0},
    {"self_attn.q_proj.bias", "attn_q.bias", S_Q, S_NONE, T_ROPE_Q | T_OPTIONAL},
    {"self_attn.k_proj.bias", "attn_k.bias", S_KV, S_NONE, T_ROPE_K | T_OPTIONAL},
    {"self_attn.v_proj.bias", "attn_v.bias", S_KV, S_NONE, T_OPTIONAL},
    {"self_attn.o_proj.weight", "attn_output.weight", S_DIM, S_Q, 0},
    {"self_attn.o_proj.bias", "attn_output.bias", S_DIM, S_NONE, T_OPTIONAL | T_ATTN_BIAS},
    {"post_attention_layernorm.weight", "ffn_norm.weight", S_DIM, S_NONE, T_NORM},
    {"mlp.gate_proj.weight", "ffn_gate.weight", S_FFN, S_DIM, 0},
    {"mlp.up_proj.weight", "ffn_up.weight", S_FFN, S_DIM, 0},
    {"mlp.down_proj.weight", "ffn_down.weight", S_DIM, S_FFN, 0},
    {0},
};
static const tensor_map PHI3_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", S_DIM, S_NONE, T_NORM},
    {"self_attn.qkv_proj.weight", "attn_qkv.weight", S_QKV, S_DIM, 0},
    {"self_attn.o_proj.weight", "attn_output.weight", S_DIM, S_Q, 0},
    {"post_attention_layernorm.weight", "ffn_norm.weight", S_DIM, S_NONE, T_NORM},
    {"mlp.gate_up_proj.weight", "ffn_up.weight", S_FFN2, S_DIM, 0},
    {"mlp.down_proj.weight", "ffn_down.weight", S_DIM, S_FFN, 0},
    {0},
};
static const tensor_map BAICHUAN_LAYER[] = {
    {"input_layernorm.weight", "attn_norm.weight", S_DIM, S_NONE, T_NORM},
    {"self_attn.W_pack.weight", "attn_q.weight", S_Q, S_DIM, T_SLICE_Q | T_ROPE_Q},
    {"self_attn.W_pack.weight", "attn_k.weight", S_KV, S_DIM, T_SLICE_K | T_ROPE_K},
    {"self_attn.W_pack.weight", "attn_v.weight", S_KV, S_DIM, T_SLICE_V},
    {"self_attn.o_proj.weight", "attn_output.weight", S_DIM, S_Q, 0},
    {"post_attention_layernorm.weight", "ffn_norm.weight", S_DIM, S_NONE, T_NORM},
    {"mlp.gate_proj.weight", "ffn_gate.weight", S_FFN, S_DIM, 0},
    {"mlp.up_proj.weight", "ffn_up.weight", S_FFN, S_DIM, 0},
    {"mlp.down_proj.weight", "ffn_down.weight", S_DIM, S_FFN, 0},
    {0},
};
static const tensor_map GPT2_GLOBAL[] = {
    {"wte.weight", "token_embd.weight", S_VOCAB, S_DIM, 0},
    {"wpe.weight", "position_embd.weight", S_CTX, S_DIM, 0},
    {"ln_f.weight", "output_norm.weight", S_DIM, S_NONE, 0},
    {"ln_f.bias", "output_norm.bias", S_DIM, S_NONE, 0},
    {0},
};
static const tensor_map GPT2_LAYER[] = {
    {"ln_1.weight", "attn_norm.weight", S_DIM, S_NONE, 0},
    {"ln_1.bias", "attn_norm.bias", S_DIM, S_NONE, 0},
    {"attn.c_attn.weight", "attn_qkv.weight", S_QKV, S_DIM, T_CONV1D},
    {"attn.c_attn.bias", "attn_qkv.bias", S_QKV, S_NONE, 0},
    {"attn.c_proj.weight", "attn_output.weight", S_DIM, S_Q, T_CONV1D},
    {"attn.c_proj.bias", "attn_output.bias", S_DIM, S_NONE, 0},
    {"ln_2.weight", "ffn_norm.weight", S_DIM, S_NONE, 0},
    {"ln_2.bias", "ffn_norm.bias", S_DIM, S_NONE, 0},
    {"mlp.c_fc.weight", "ffn_up.weight", S_FFN, S_DIM, T_CONV1D},
    {"mlp.c_fc.bias", "ffn_up.bias", S_FFN, S_NONE, 0},
    {"mlp.c_proj.weight", "ffn_down.weight", S_DIM, S_FFN, T_CONV1D},
    {"mlp.c_proj.bias", "ffn_down.bias", S_DIM, S_NONE, 0},
    {0},
};

typedef struct {
    const tensor_map *global, *layer;
    const char *layer_prefix; /* printf format of a layer's prefix */
} layout_tables;

static layout_tables tables_of(hf_layout layout) {
    switch (layout) {
    case HF_LAYOUT_GPT2: return (layout_tables){GPT2_GLOBAL, GPT2_LAYER, "h.%d."};
    case HF_LAYOUT_PHI3: return (layout_tables){LLAMA_GLOBAL, PHI3_LAYER, "model.layers.%d."};
    case HF_LAYOUT_BAICHUAN: return (layout_tables){LLAMA_GLOBAL, BAICHUAN_LAYER, "model.layers.%d."};
    default: return (layout_tables){LLAMA_GLOBAL, LLAMA_LAYER, "model.layers.%d."};
    }
}

static int size_of(const kiln_config *c, size_sym s) {
    int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    switch (s) {
    case S_DIM: return c->dim;
    case S_Q: return q;
    case S_KV: return kv;
    case S_QKV: return q + 2 * kv;
    case S_FFN: return c->ffn_dim;
    case S_FFN2: return 2 * c->ffn_dim;
    case S_VOCAB: return c->n_vocab;
    case S_CTX: return c->ctx_len;
    case S_CLS: return c->n_cls;
    default: return 1;
    }
}

/* Whether entry M applies to this model at all. */
static int applies(const tensor_map *m, const kiln_config *c, const hf_family *fam) {
    if ((m->ops & T_HEAD) && c->tied_output) return 0;
    if ((m->ops & T_SCORE) && !(fam->quirks & HF_SCORE_HEAD)) return 0;
    return 1;
}

/* The transformations of entry M on an f32 tensor of ROWS x COLS (GGUF orientation), in place.
 * Import: permute to interleaved, +1 on norms, normalize the head. Export: their inverses. */
static void transform(const tensor_map *m, const kiln_config *c, const hf_family *fam, float *x, int rows, int cols,
                      int to_gguf) {
    int n = cols ? cols : 1;
    if ((fam->quirks & HF_PERMUTE_QK) && (m->ops & (T_ROPE_Q | T_ROPE_K))) {
        float *tmp = kiln_xmalloc(sizeof(float) * (size_t)rows * n);
        model_file_permute_heads(tmp, x, m->ops & T_ROPE_Q ? c->n_heads : c->n_kv_heads, c->head_dim, n, to_gguf);
        memcpy(x, tmp, sizeof(float) * (size_t)rows * n);
        free(tmp);
    }
    if ((fam->quirks & HF_NORM_PLUS_ONE) && (m->ops & T_NORM))
        for (int i = 0; i < rows; i++) x[i] += to_gguf ? 1.0f : -1.0f;
    if ((fam->quirks & HF_NORM_HEAD) && (m->ops & T_HEAD) && to_gguf)
        for (int r = 0; r < rows; r++) { /* torch.nn.functional.normalize: w / max(|w|, 1e-12) */
            float *row = x + (size_t)r * n;
            double ss = 0;
            for (int i = 0; i < n; i++) ss += (double)row[i] * row[i];
            float norm = (float)fmax(sqrt(ss), 1e-12);
            for (int i = 0; i < n; i++) row[i] /= norm;
        }
}

static int changes_values(const tensor_map *m, const hf_family *fam) {
    return ((fam->quirks & HF_PERMUTE_QK) && (m->ops & (T_ROPE_Q | T_ROPE_K))) ||
           ((fam->quirks & HF_NORM_PLUS_ONE) && (m->ops & T_NORM)) ||
           ((fam->quirks & HF_NORM_HEAD) && (m->ops & T_HEAD)) || (m->ops & T_CONV1D);
}

static void from_f32(void *dst, const float *src, size_t n, int type) {
    uint16_t *h = dst;
    if (type == KILN_TYPE_F32) memcpy(dst, src, n * sizeof(float));
    else if (type == KILN_TYPE_F16)
        for (size_t i = 0; i < n; i++) h[i] = kiln_f32_to_f16(src[i]);
    else
        for (size_t i = 0; i < n; i++) h[i] = kiln_f32_to_bf16(src[i]);
}

static void to_f32(float *dst, const void *src, size_t n, int type) {
    if (type == KILN_TYPE_F32) {
        memcpy(dst, src, n * sizeof(float)); /* the source may be unaligned */
        return;
    }
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = type == KILN_TYPE_F16 ? kiln_f16_to_f32(h) : kiln_bf16_to_f32(h);
    }
}

/* ---- Import ---- */

typedef struct {
    const hf_weights *hw;
    const kiln_config *c;
    const hf_family *fam;
    int type;
    gguf_writer *w;
    const char *prefix; /* "transformer." for GPT-2 checkpoints saved from GPT2LMHeadModel */
} importer;

static int shape_mismatch(const importer *im, const char *name, const st_tensor *t, int rows, int cols) {
    char got[96] = "[";
    for (int d = 0; d < t->n_dims; d++)
        snprintf(got + strlen(got), sizeof got - strlen(got), d ? ", %lld" : "%lld", (long long)t->shape[d]);
    char want[48];
    if (cols) snprintf(want, sizeof want, "[%d, %d]", rows, cols);
    else snprintf(want, sizeof want, "[%d]", rows);
    return kiln_fail("%s: tensor %s has shape %s], but config.json implies %s", im->hw->dir, name, got, want);
}

static int import_one(const importer *im, const tensor_map *m, const char *hf_name, const char *gguf_name) {
    const kiln_config *c = im->c;
    const st_tensor *t = hf_weights_find(im->hw, hf_name);
    if (!t) {
        if (m->ops & T_OPTIONAL) return 0;
        return kiln_fail("%s: missing tensor %s (needed by %s)", im->hw->dir, hf_name, im->fam->name);
    }
    if (t->type < 0)
        return kiln_fail("%s: tensor %s has dtype %s (supported: F32, F16, BF16)", im->hw->dir, hf_name, t->dtype);
    int rows = size_of(c, m->rows), cols = m->cols ? size_of(c, m->cols) : 0, q = size_of(c, S_Q),
        kv = size_of(c, S_KV), first = 0;
    int hf_rows = rows, hf_cols = cols;
    if (m->ops & (T_SLICE_Q | T_SLICE_K | T_SLICE_V)) {
        hf_rows = q + 2 * kv;
        first = m->ops & T_SLICE_Q ? 0 : m->ops & T_SLICE_K ? q : q + kv;
    }
    if (m->ops & T_CONV1D) hf_rows = cols, hf_cols = rows;
    if (t->n_dims != (cols ? 2 : 1) || t->shape[0] != hf_rows || (cols && t->shape[1] != hf_cols))
        return shape_mismatch(im, hf_name, t, hf_rows, hf_cols);
    int n = cols ? cols : 1, out_type = !cols ? KILN_TYPE_F32 : im->type < 0 ? t->type : im->type;
    size_t count = (size_t)rows * n, esize = kiln_row_bytes(t->type, 1);
    const char *src = (const char *)t->data + (size_t)first * n * esize;
    uint64_t ne[2] = {cols ? (uint64_t)cols : (uint64_t)rows, (uint64_t)rows};
    int n_dims = cols ? 2 : 1;
    if (!changes_values(m, im->fam) && out_type == t->type)
        return gguf_add_tensor_ref(im->w, gguf_name, out_type, n_dims, ne, src);
    float *x = kiln_xmalloc(sizeof(float) * count);
    if (m->ops & T_CONV1D) { /* [cols][rows] -> [rows][cols] */
        float *tmp = kiln_xmalloc(sizeof(float) * count);
        to_f32(tmp, src, count, t->type);
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) x[(size_t)r * cols + k] = tmp[(size_t)k * rows + r];
        free(tmp);
    } else {
        to_f32(x, src, count, t->type);
    }
    transform(m, c, im->fam, x, rows, cols, 1);
    void *out = kiln_xmalloc(kiln_row_bytes(out_type, (int64_t)count));
    from_f32(out, x, count, out_type);
    int rc = gguf_add_tensor(im->w, gguf_name, out_type, n_dims, ne, out);
    free(out);
    free(x);
    return rc;
}

static int import_table(const importer *im, const tensor_map *table, int layer, const char *layer_prefix) {
    for (const tensor_map *m = table; m->hf; m++) {
        if (!applies(m, im->c, im->fam)) continue;
        char hf_name[256], gguf_name[128], lp[64] = "";
        if (layer >= 0) snprintf(lp, sizeof lp, layer_prefix, layer);
        snprintf(hf_name, sizeof hf_name, "%s%s%s", im->prefix, lp, m->hf);
        if (layer >= 0) snprintf(gguf_name, sizeof gguf_name, "blk.%d.%s", layer, m->gguf);
        else snprintf(gguf_name, sizeof gguf_name, "%s", m->gguf);
        if (import_one(im, m, hf_name, gguf_name) < 0) return -1;
    }
    return 0;
}

int hf_import(const hf_weights *hw, const kiln_config *c, const hf_family *fam, int type, gguf_writer *w) {
    importer im = {hw, c, fam, type, w, ""};
    if (fam->layout == HF_LAYOUT_GPT2 && hf_weights_find(hw, "transformer.wte.weight")) im.prefix = "transformer.";
    layout_tables tb = tables_of(fam->layout);
    model_file_write_config(w, c);
    model_file_write_rope_freqs(w, c);
    if (import_table(&im, tb.global, -1, NULL) < 0) return -1;
    for (int l = 0; l < c->n_layers; l++)
        if (import_table(&im, tb.layer, l, tb.layer_prefix) < 0) return -1;
    return 0;
}

/* ---- Export ---- */

static int export_one(const gguf_file *g, const kiln_config *c, const hf_family *fam, const tensor_map *m,
                      const char *gguf_name, const char *hf_name, st_writer *sw, int *mat_type) {
    const gguf_tensor *t = gguf_find_tensor(g, gguf_name);
    if (!t && (m->ops & T_ATTN_BIAS) && c->qkv_bias && !strcmp(fam->arch, "llama"))
        return safetensors_add_owned(sw, hf_name, KILN_TYPE_F32, 1, (int64_t[]){c->dim},
                                     kiln_xcalloc(c->dim, sizeof(float)));
    if (!t) {
        if (m->ops & T_OPTIONAL) return 0;
        return kiln_fail("%s: missing tensor %s", g->path, gguf_name);
    }
    if (t->type != KILN_TYPE_F32 && t->type != KILN_TYPE_F16 && t->type != KILN_TYPE_BF16)
        return kiln_fail("%s: tensor %s has type %s (exportable: F32, F16, BF16)", g->path, gguf_name,
                         gguf_type_name(t->type) ? gguf_type_name(t->type) : "unknown");
    int rows = size_of(c, m->rows), cols = m->cols ? size_of(c, m->cols) : 0, n = cols ? cols : 1;
    size_t count = (size_t)rows * n;
    if (t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3] != count)
        return kiln_fail("%s: tensor %s does not have %d x %d elements", g->path, gguf_name, rows, n);
    if (cols) *mat_type = (int)t->type;
    float *x = kiln_xmalloc(sizeof(float) * count);
    to_f32(x, t->data, count, (int)t->type);
    transform(m, c, fam, x, rows, cols, 0);
    int out_type = cols ? (int)t->type : KILN_TYPE_F32, rc;
    int64_t shape[2] = {rows, cols};
    if (m->ops & T_CONV1D) {
        float *tmp = kiln_xmalloc(sizeof(float) * count);
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) tmp[(size_t)k * rows + r] = x[(size_t)r * cols + k];
        free(x);
        x = tmp;
        shape[0] = cols;
        shape[1] = rows;
    }
    void *out = kiln_xmalloc(kiln_row_bytes(out_type, (int64_t)count));
    from_f32(out, x, count, out_type);
    free(x);
    rc = safetensors_add_owned(sw, hf_name, out_type, cols ? 2 : 1, shape, out);
    return rc;
}

static int export_table(const gguf_file *g, const kiln_config *c, const hf_family *fam, const tensor_map *table,
                        int layer, const char *layer_prefix, st_writer *sw, int *mat_type) {
    for (const tensor_map *m = table; m->hf; m++) {
        if (!applies(m, c, fam)) continue;
        char hf_name[256], gguf_name[128], lp[64] = "";
        if (layer >= 0) snprintf(lp, sizeof lp, layer_prefix, layer);
        snprintf(hf_name, sizeof hf_name, "%s%s", lp, m->hf);
        if (layer >= 0) snprintf(gguf_name, sizeof gguf_name, "blk.%d.%s", layer, m->gguf);
        else snprintf(gguf_name, sizeof gguf_name, "%s", m->gguf);
        if (export_one(g, c, fam, m, gguf_name, hf_name, sw, mat_type) < 0) return -1;
    }
    return 0;
}

int hf_export(const gguf_file *g, const kiln_config *c, int bos, int eos, const char *dir) {
    const hf_family *fam = hf_family_for_export(c);
    if (!fam) return kiln_fail("%s: %s", g->path, kiln_errmsg());
    if (fam->layout == HF_LAYOUT_BAICHUAN)
        return kiln_fail("%s: exporting baichuan is not supported (export llama, qwen2, gpt2, gemma, phi3)", g->path);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return kiln_fail("%s: cannot create directory", dir);
    layout_tables tb = tables_of(fam->layout);
    st_writer *sw = safetensors_writer_new();
    safetensors_set_meta(sw, "format", "pt");
    int mat_type = KILN_TYPE_F32, rc = export_table(g, c, fam, tb.global, -1, NULL, sw, &mat_type);
    for (int l = 0; rc == 0 && l < c->n_layers; l++)
        rc = export_table(g, c, fam, tb.layer, l, tb.layer_prefix, sw, &mat_type);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (rc == 0) rc = safetensors_write(sw, path);
    safetensors_writer_free(sw);
    if (rc < 0) return -1;
    const char *dtype = mat_type == KILN_TYPE_BF16 ? "bfloat16" : mat_type == KILN_TYPE_F16 ? "float16" : "float32";
    json_t *cfg = hf_config_json(c, fam, bos, eos, dtype);
    snprintf(path, sizeof path, "%s/config.json", dir);
    kiln_atomic a;
    rc = kiln_atomic_open(&a, path);
    if (rc == 0) {
        rc = json_dumpf(cfg, a.f, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0 && fputc('\n', a.f) != EOF
                 ? kiln_atomic_commit(&a)
                 : (kiln_atomic_abort(&a), kiln_fail("%s: write failed", path));
    }
    json_decref(cfg);
    return rc;
}
