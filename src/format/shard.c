/* Megatron-style shards: splitting a GGUF model by tensor and pipeline rank, and merging it back. */
#include "format/shard.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "format/safetensors.h"

enum { VOCAB_DIVISOR = 128, MAX_SEGMENTS = 4096 };

typedef struct {
    int tp, pp, L, H, KV, hd, dim, ffn, V, Vp, tied;
} layout;

/* The q heads and kv group of one piece of a rank's fused qkv. */
typedef struct {
    int q0, nq, g;
} segment;

/* Rank R's pieces: whole groups when there are at least as many kv heads as ranks, else its share of
 * one group's q heads and that group's k and v. */
static int qkv_segments(const layout *s, int r, segment *seg) {
    int qpg = s->H / s->KV;
    if (s->KV >= s->tp) {
        int per = s->KV / s->tp;
        for (int i = 0; i < per; i++) seg[i] = (segment){(r * per + i) * qpg, qpg, r * per + i};
        return per;
    }
    seg[0] = (segment){r * (s->H / s->tp), s->H / s->tp, r / (s->tp / s->KV)};
    return 1;
}

static int qkv_rows(const layout *s) { return (s->H / s->tp + 2 * (s->KV >= s->tp ? s->KV / s->tp : 1)) * s->hd; }

void shard_rank_path(char *buf, size_t n, const char *dir, int tp_rank, int pp_rank) {
    snprintf(buf, n, "%s/mp_rank_%02d_%03d/model.safetensors", dir, tp_rank, pp_rank);
}

static const char *const LAYER_NAMES[][2] = {
    /* GGUF name, Megatron name (the q/k/v and gate/up pairs map to one fused tensor) */
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attention.linear_qkv.weight"},
    {"attn_k.weight", "self_attention.linear_qkv.weight"},
    {"attn_v.weight", "self_attention.linear_qkv.weight"},
    {"attn_q.bias", "self_attention.linear_qkv.bias"},
    {"attn_k.bias", "self_attention.linear_qkv.bias"},
    {"attn_v.bias", "self_attention.linear_qkv.bias"},
    {"attn_output.weight", "self_attention.linear_proj.weight"},
    {"attn_output.bias", "self_attention.linear_proj.bias"},
    {"ffn_norm.weight", "pre_mlp_layernorm.weight"},
    {"ffn_gate.weight", "mlp.linear_fc1.weight"},
    {"ffn_up.weight", "mlp.linear_fc1.weight"},
    {"ffn_down.weight", "mlp.linear_fc2.weight"},
    {"ffn_down.bias", "mlp.linear_fc2.bias"},
};
enum { N_LAYER_NAMES = sizeof LAYER_NAMES / sizeof LAYER_NAMES[0] };

/* The entry of LAYER_NAMES for GGUF tensor NAME and its layer, or -1 (not a layer tensor). */
static int layer_entry(const char *name, int *layer) {
    int n = 0;
    if (sscanf(name, "blk.%d.%n", layer, &n) != 1 || n == 0) return -1;
    for (int i = 0; i < N_LAYER_NAMES; i++)
        if (!strcmp(name + n, LAYER_NAMES[i][0])) return i;
    return -2;
}

static char *dup_name(gguf_str s) {
    char *z = kiln_xmalloc(s.len + 1);
    memcpy(z, s.ptr, s.len);
    z[s.len] = 0;
    return z;
}

/* ---- Splitting ---- */

typedef struct {
    const gguf_file *g;
    const layout *s;
    st_writer **w; /* [pp][tp] */
} splitter;

static const gguf_tensor *tensor(const gguf_file *g, int layer, const char *name) {
    char full[96];
    if (layer >= 0) snprintf(full, sizeof full, "blk.%d.%s", layer, name);
    else snprintf(full, sizeof full, "%s", name);
    return gguf_find_tensor(g, full);
}

static int put(splitter *sp, int r, int stage, int local, const char *name, int type, int n_dims, int64_t rows,
               int64_t cols, void *data) {
    char full[160];
    if (local >= 0) snprintf(full, sizeof full, "decoder.layers.%d.%s", local, name);
    else snprintf(full, sizeof full, "%s", name);
    int64_t shape[2] = {rows, cols};
    return safetensors_add_owned(sp->w[stage * sp->s->tp + r], full, type, n_dims, shape, data);
}

static size_t esize(const gguf_tensor *t) { return gguf_type_nbytes(t->type, 1); }

/* Q, K, V (and their biases when COLS is 1 and they are vectors) fused per query group for rank R. */
static void *fuse_qkv(const layout *s, int r, const gguf_tensor *q, const gguf_tensor *k, const gguf_tensor *v) {
    size_t row = (q->n_dims == 1 ? 1 : q->ne[0]) * esize(q), hrow = row * s->hd;
    segment seg[MAX_SEGMENTS];
    int n = qkv_segments(s, r, seg);
    char *out = kiln_xmalloc(hrow * qkv_rows(s) / s->hd), *p = out;
    for (int i = 0; i < n; i++) {
        memcpy(p, (const char *)q->data + hrow * seg[i].q0, hrow * seg[i].nq);
        p += hrow * seg[i].nq;
        memcpy(p, (const char *)k->data + hrow * seg[i].g, hrow);
        p += hrow;
        memcpy(p, (const char *)v->data + hrow * seg[i].g, hrow);
        p += hrow;
    }
    return out;
}

/* Columns [C0, C0+N) of every row of T. */
static void *columns(const gguf_tensor *t, int64_t c0, int64_t n) {
    size_t e = esize(t), rows = t->ne[1];
    char *out = kiln_xmalloc(rows * n * e);
    for (size_t i = 0; i < rows; i++) memcpy(out + i * n * e, (const char *)t->data + (i * t->ne[0] + c0) * e, n * e);
    return out;
}

/* Rows [R0, R0+N) of T, zeros past its end (vocabulary padding). */
static void *rows_padded(const gguf_tensor *t, int64_t r0, int64_t n) {
    size_t rb = t->ne[0] * esize(t);
    char *out = kiln_xcalloc(n, rb);
    for (int64_t i = 0; i < n && r0 + i < (int64_t)t->ne[1]; i++) memcpy(out + i * rb, (const char *)t->data + (r0 + i) * rb, rb);
    return out;
}

static void *copy_of(const gguf_tensor *t) {
    void *p = kiln_xmalloc(t->nbytes);
    memcpy(p, t->data, t->nbytes);
    return p;
}

static int split_layer(splitter *sp, int l) {
    const layout *s = sp->s;
    const gguf_file *g = sp->g;
    int stage = l / (s->L / s->pp), local = l % (s->L / s->pp), rc = 0;
    const gguf_tensor *q = tensor(g, l, "attn_q.weight"), *k = tensor(g, l, "attn_k.weight"),
                      *v = tensor(g, l, "attn_v.weight"), *qb = tensor(g, l, "attn_q.bias"),
                      *kb = tensor(g, l, "attn_k.bias"), *vb = tensor(g, l, "attn_v.bias"),
                      *o = tensor(g, l, "attn_output.weight"), *gate = tensor(g, l, "ffn_gate.weight"),
                      *up = tensor(g, l, "ffn_up.weight"), *down = tensor(g, l, "ffn_down.weight");
    if (!q || !k || !v || !o || !gate || !up || !down || !!qb != !!kb || !!qb != !!vb || q->type != k->type ||
        q->type != v->type || gate->type != up->type || (qb && (qb->type != kb->type || qb->type != vb->type)))
        return kiln_fail("%s: layer %d lacks separate q/k/v and gate/up tensors of one type each", g->path, l);
    int fr = s->ffn / s->tp, oc = s->H / s->tp * s->hd;
    for (int r = 0; r < s->tp && rc == 0; r++) {
        rc = put(sp, r, stage, local, LAYER_NAMES[1][1], q->type, 2, qkv_rows(s), s->dim, fuse_qkv(s, r, q, k, v));
        if (rc == 0 && qb) rc = put(sp, r, stage, local, LAYER_NAMES[4][1], qb->type, 1, qkv_rows(s), 0, fuse_qkv(s, r, qb, kb, vb));
        if (rc == 0) rc = put(sp, r, stage, local, LAYER_NAMES[7][1], o->type, 2, s->dim, oc, columns(o, (int64_t)r * oc, oc));
        if (rc == 0) rc = put(sp, r, stage, local, LAYER_NAMES[12][1], down->type, 2, s->dim, fr, columns(down, (int64_t)r * fr, fr));
        if (rc == 0) {
            size_t half = (size_t)fr * gate->ne[0] * esize(gate);
            char *fc1 = kiln_xmalloc(2 * half);
            memcpy(fc1, (const char *)gate->data + half * r, half);
            memcpy(fc1 + half, (const char *)up->data + half * r, half);
            rc = put(sp, r, stage, local, LAYER_NAMES[10][1], gate->type, 2, 2 * fr, s->dim, fc1);
        }
        static const int replicated[] = {0, 8, 9, 13};
        for (int i = 0; rc == 0 && i < 4; i++) {
            const gguf_tensor *t = tensor(g, l, LAYER_NAMES[replicated[i]][0]);
            if (t) rc = put(sp, r, stage, local, LAYER_NAMES[replicated[i]][1], t->type, 1, s->dim, 0, copy_of(t));
        }
    }
    return rc;
}

static int split_vocab(splitter *sp, const gguf_tensor *t, int stage, const char *name) {
    const layout *s = sp->s;
    int per = s->Vp / s->tp;
    for (int r = 0; r < s->tp; r++)
        if (put(sp, r, stage, -1, name, t->type, 2, per, s->dim, rows_padded(t, (int64_t)r * per, per)) < 0) return -1;
    return 0;
}

static int check_layout(const gguf_file *g, const kiln_config *c, int tp, int pp) {
    if (tp < 1 || pp < 1 || tp > 256 || pp > 256) return kiln_fail("tp %d and pp %d must be 1 to 256", tp, pp);
    if (c->pos != KILN_POS_ROPE || c->act == KILN_ACT_GELU)
        return kiln_fail("%s: sharding covers rotary-embedding, gated-MLP models (llama, qwen2, gemma, ...), not %s",
                         g->path, c->arch);
    if (c->n_heads % tp || c->ffn_dim % tp)
        return kiln_fail("%s: --tp %d must divide the %d heads and the MLP width %d", g->path, tp, c->n_heads, c->ffn_dim);
    if (c->n_kv_heads % tp && tp % c->n_kv_heads)
        return kiln_fail("%s: --tp %d and the %d kv heads must divide one another", g->path, tp, c->n_kv_heads);
    if (c->n_layers % pp) return kiln_fail("%s: --pp %d must divide the %d layers", g->path, pp, c->n_layers);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].type != KILN_TYPE_F32 && g->tensors[i].type != KILN_TYPE_F16 && g->tensors[i].type != KILN_TYPE_BF16)
            return kiln_fail("%s: tensor %.*s is %s: only F32, F16 and BF16 are sharded", g->path,
                             (int)g->tensors[i].name.len, g->tensors[i].name.ptr, gguf_type_name(g->tensors[i].type));
    return 0;
}

static int write_manifest(const char *dir, const layout *s, const gguf_file *g) {
    json_t *names = json_array();
    for (uint64_t i = 0; i < g->n_tensors; i++) json_array_append_new(names, json_stringn(g->tensors[i].name.ptr, g->tensors[i].name.len));
    json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:o}", "format",
                          "kiln-megatron-1", "tp", s->tp, "pp", s->pp, "n_layers", s->L, "n_heads", s->H, "n_kv_heads",
                          s->KV, "head_dim", s->hd, "dim", s->dim, "ffn_dim", s->ffn, "n_vocab", s->V,
                          "padded_vocab", s->Vp, "tied", s->tied, "tensors", names);
    char path[4096];
    snprintf(path, sizeof path, "%s/shards.json", dir);
    kiln_atomic a;
    int rc = kiln_atomic_open(&a, path);
    if (rc == 0) rc = json_dumpf(j, a.f, JSON_INDENT(1) | JSON_PRESERVE_ORDER) == 0 ? kiln_atomic_commit(&a)
                                                                                  : (kiln_atomic_abort(&a), -1);
    json_decref(j);
    return rc;
}

int shard_write(const gguf_file *g, const kiln_config *c, int tp, int pp, const char *dir) {
    if (check_layout(g, c, tp, pp) < 0) return -1;
    int vp = (c->n_vocab + VOCAB_DIVISOR * tp - 1) / (VOCAB_DIVISOR * tp) * (VOCAB_DIVISOR * tp);
    layout s = {tp, pp, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->dim, c->ffn_dim, c->n_vocab, vp,
                c->tied_output};
    char path[4096];
    snprintf(path, sizeof path, "%s/shards.json", dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return kiln_fail("%s: cannot create directory", dir);
    if (access(path, F_OK) == 0) return kiln_fail("%s: already holds shards (shards.json)", dir);
    splitter sp = {g, &s, kiln_xcalloc((size_t)tp * pp, sizeof(st_writer *))};
    for (int i = 0; i < tp * pp; i++) sp.w[i] = safetensors_writer_new();
    gguf_writer *rest = gguf_writer_new();
    gguf_copy_kvs(rest, g);
    int rc = 0;
    for (int l = 0; l < s.L && rc == 0; l++) rc = split_layer(&sp, l);
    for (uint64_t i = 0; i < g->n_tensors && rc == 0; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char *name = dup_name(t->name);
        int layer, e = layer_entry(name, &layer);
        if (e == -2) rc = kiln_fail("%s: tensor %s has no place in the Megatron layout", g->path, name);
        else if (!strcmp(name, "token_embd.weight")) {
            rc = split_vocab(&sp, t, 0, "embedding.word_embeddings.weight");
            if (rc == 0 && s.tied && pp > 1) rc = split_vocab(&sp, t, pp - 1, "embedding.word_embeddings.weight");
        } else if (!strcmp(name, "output.weight")) rc = split_vocab(&sp, t, pp - 1, "output_layer.weight");
        else if (!strcmp(name, "output_norm.weight"))
            for (int r = 0; r < tp && rc == 0; r++) rc = put(&sp, r, pp - 1, -1, "decoder.final_layernorm.weight", t->type, 1, s.dim, 0, copy_of(t));
        else if (e == -1) rc = gguf_add_tensor_ref(rest, name, t->type, (int)t->n_dims, t->ne, t->data);
        free(name);
    }
    for (int st = 0; st < pp && rc == 0; st++)
        for (int r = 0; r < tp && rc == 0; r++) {
            shard_rank_path(path, sizeof path, dir, r, st);
            *strrchr(path, '/') = 0;
            if (mkdir(path, 0755) != 0 && errno != EEXIST) rc = kiln_fail("%s: cannot create directory", path);
            *(path + strlen(path)) = '/';
            if (rc == 0) rc = safetensors_write(sp.w[st * tp + r], path);
        }
    snprintf(path, sizeof path, "%s/config.gguf", dir);
    if (rc == 0) rc = gguf_write(rest, path);
    if (rc == 0) rc = write_manifest(dir, &s, g); /* last: a folder with shards.json is complete */
    for (int i = 0; i < tp * pp; i++) safetensors_writer_free(sp.w[i]);
    free(sp.w);
    gguf_writer_free(rest);
    return rc;
}
