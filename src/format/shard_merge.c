/* Merging Megatron-style shards (shard.c) back into one GGUF model: every rank's file must be there, and
 * nothing else that looks like a rank; copies of one tensor on several ranks must agree. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "format/safetensors.h"
#include "format/shard.h"

enum { MAX_SEGMENTS = 4096 };

typedef struct {
    int tp, pp, L, H, KV, hd, dim, ffn, V, Vp, tied;
    const char *dir;
    st_file **f; /* [pp][tp] */
} shards;

static const st_tensor *need(const shards *s, int r, int stage, int local, const char *name) {
    char full[160];
    if (local >= 0) snprintf(full, sizeof full, "decoder.layers.%d.%s", local, name);
    else snprintf(full, sizeof full, "%s", name);
    const st_tensor *t = safetensors_find(s->f[stage * s->tp + r], full);
    if (!t) kiln_fail("%s: tensor %s is missing", s->f[stage * s->tp + r]->path, full);
    return t;
}

static int get_layout(shards *s, const char *path) {
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) return kiln_fail("%s: %s (line %d)", path, err.text, err.line);
    const char *format = NULL;
    int rc = json_unpack_ex(j, &err, 0, "{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b}", "format",
                            &format, "tp", &s->tp, "pp", &s->pp, "n_layers", &s->L, "n_heads", &s->H, "n_kv_heads",
                            &s->KV, "head_dim", &s->hd, "dim", &s->dim, "ffn_dim", &s->ffn, "n_vocab", &s->V,
                            "padded_vocab", &s->Vp, "tied", &s->tied);
    if (rc < 0) rc = kiln_fail("%s: %s", path, err.text);
    else if (strcmp(format, "kiln-megatron-1")) rc = kiln_fail("%s: format '%s' is not kiln-megatron-1", path, format);
    else if (s->tp < 1 || s->pp < 1 || s->tp > 256 || s->pp > 256 || s->L < 1 || s->L % s->pp || s->H < 1 ||
             s->KV < 1 || s->H % s->tp || s->H % s->KV || (s->KV % s->tp && s->tp % s->KV) || s->hd < 1 ||
             s->dim < 1 || s->ffn < 1 || s->ffn % s->tp || s->V < 1 || s->Vp < s->V || s->Vp % s->tp ||
             (int64_t)s->H * s->hd > 1 << 24 || s->KV > MAX_SEGMENTS)
        rc = kiln_fail("%s: an impossible layout (tp %d, pp %d, %d layers, %d heads, %d kv heads)", path, s->tp, s->pp,
                       s->L, s->H, s->KV);
    json_decref(j);
    return rc;
}

/* Exactly the tp x pp rank folders: a missing one or one beyond the layout is an error. */
static int check_folders(const shards *s) {
    DIR *d = opendir(s->dir);
    if (!d) return kiln_fail("%s: cannot open the shard folder", s->dir);
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && rc == 0) {
        int r, st, n = 0;
        if (strncmp(e->d_name, "mp_rank_", 8)) continue;
        if (sscanf(e->d_name, "mp_rank_%d_%d%n", &r, &st, &n) != 2 || e->d_name[n] || r < 0 || st < 0 || r >= s->tp ||
            st >= s->pp)
            rc = kiln_fail("%s: extra shard %s (the layout has tp %d, pp %d)", s->dir, e->d_name, s->tp, s->pp);
    }
    closedir(d);
    return rc;
}

static int open_ranks(shards *s) {
    s->f = kiln_xcalloc((size_t)s->tp * s->pp, sizeof *s->f);
    char path[4096];
    for (int st = 0; st < s->pp; st++)
        for (int r = 0; r < s->tp; r++) {
            shard_rank_path(path, sizeof path, s->dir, r, st);
            if (access(path, F_OK) != 0) return kiln_fail("%s: missing shard mp_rank_%02d_%03d", s->dir, r, st);
            if (!(s->f[st * s->tp + r] = safetensors_open(path))) return -1;
        }
    return 0;
}

static int same_copy(const st_tensor *a, const st_tensor *b, const char *what) {
    if (a->nbytes != b->nbytes || a->type != b->type || memcmp(a->data, b->data, a->nbytes))
        return kiln_fail("%s: the copies on different ranks differ", what);
    return 0;
}

/* ---- Reassembly, one GGUF tensor at a time ---- */

typedef struct {
    void *data;
    int type, n_dims;
    uint64_t ne[2];
} built;

static int from_replicas(const shards *s, int stage, int local, const char *name, built *b) {
    const st_tensor *t0 = need(s, 0, stage, local, name);
    if (!t0 || t0->n_dims != 1) return t0 ? kiln_fail("%s: %s is not a vector", s->dir, t0->name) : -1;
    for (int r = 1; r < s->tp; r++) {
        const st_tensor *t = need(s, r, stage, local, name);
        if (!t || same_copy(t0, t, t->name) < 0) return -1;
    }
    void *data = kiln_xmalloc(t0->nbytes);
    memcpy(data, t0->data, t0->nbytes);
    *b = (built){data, t0->type, 1, {(uint64_t)t0->shape[0], 1}};
    return 0;
}

static int check_shape(const st_tensor *t, int64_t rows, int64_t cols) {
    if (t->type < 0 || (cols ? t->n_dims != 2 || t->shape[1] != cols : t->n_dims != 1) || t->shape[0] != rows)
        return kiln_fail("%s: has the wrong shape or dtype for the layout", t->name);
    return 0;
}

/* Part WHICH (0 q, 1 k, 2 v) of the fused qkv (weight when COLS > 0, bias when 0). */
static int from_qkv(const shards *s, int stage, int local, int which, int cols, built *b) {
    const char *name = cols ? "self_attention.linear_qkv.weight" : "self_attention.linear_qkv.bias";
    int rows = (which ? s->KV : s->H) * s->hd, per = s->KV >= s->tp ? s->KV / s->tp : 1;
    int local_rows = (s->H / s->tp + 2 * per) * s->hd;
    const st_tensor *t0 = need(s, 0, stage, local, name);
    if (!t0 || check_shape(t0, local_rows, cols) < 0) return -1;
    size_t hrow = (cols ? cols : 1) * safetensors_dtype_size(t0->dtype) * s->hd;
    char *out = kiln_xcalloc(rows, hrow / s->hd);
    uint8_t *filled = kiln_xcalloc(s->KV, 1);
    int rc = 0, qpg = s->H / s->KV;
    for (int r = 0; r < s->tp && rc == 0; r++) {
        const st_tensor *t = need(s, r, stage, local, name);
        if (!t || check_shape(t, local_rows, cols) < 0 || t->type != t0->type) {
            rc = t && t->type != t0->type ? kiln_fail("%s: another dtype than rank 0's", t->name) : -1;
            break;
        }
        const char *p = t->data;
        int nseg = s->KV >= s->tp ? per : 1;
        for (int i = 0; i < nseg && rc == 0; i++) {
            int g = s->KV >= s->tp ? r * per + i : r / (s->tp / s->KV);
            int q0 = s->KV >= s->tp ? g * qpg : r * (s->H / s->tp), nq = s->KV >= s->tp ? qpg : s->H / s->tp;
            const char *kv = p + hrow * nq + (which == 2 ? hrow : 0);
            if (which == 0) memcpy(out + hrow * q0, p, hrow * nq);
            else if (!filled[g]) memcpy(out + hrow * g, kv, hrow);
            else if (memcmp(out + hrow * g, kv, hrow))
                rc = kiln_fail("%s: the copies of kv head %d on different ranks differ", t->name, g);
            if (which) filled[g] = 1;
            p += hrow * (nq + 2);
        }
    }
    free(filled);
    if (rc < 0) {
        free(out);
        return -1;
    }
    *b = (built){out, t0->type, cols ? 2 : 1, {cols ? (uint64_t)cols : (uint64_t)rows, cols ? (uint64_t)rows : 1}};
    return 0;
}

/* A row-parallel matrix: its rank slices side by side by columns. */
static int from_columns(const shards *s, int stage, int local, const char *name, int rows, int cols, built *b) {
    int per = cols / s->tp;
    const st_tensor *t0 = need(s, 0, stage, local, name);
    if (!t0 || check_shape(t0, rows, per) < 0) return -1;
    size_t e = safetensors_dtype_size(t0->dtype);
    char *out = kiln_xmalloc((size_t)rows * cols * e);
    for (int r = 0; r < s->tp; r++) {
        const st_tensor *t = need(s, r, stage, local, name);
        if (!t || check_shape(t, rows, per) < 0 || t->type != t0->type) {
            free(out);
            return t ? kiln_fail("%s: another shape or dtype than rank 0's", t->name) : -1;
        }
        for (int i = 0; i < rows; i++)
            memcpy(out + ((size_t)i * cols + (size_t)r * per) * e, (const char *)t->data + (size_t)i * per * e, per * e);
    }
    *b = (built){out, t0->type, 2, {(uint64_t)cols, (uint64_t)rows}};
    return 0;
}

/* Rows: the vocabulary-parallel embedding and output layer (padding dropped), or the fused gate/up
 * (PART 0: gate, 1: up, each rank holding [gate slice; up slice]). */
static int from_rows(const shards *s, int stage, const char *name, int local, int part, built *b) {
    int vocab = part < 0, per = vocab ? s->Vp / s->tp : s->ffn / s->tp, rows = vocab ? s->V : s->ffn;
    const st_tensor *t0 = need(s, 0, stage, local, name);
    if (!t0 || check_shape(t0, vocab ? per : 2 * per, s->dim) < 0) return -1;
    size_t rb = (size_t)s->dim * safetensors_dtype_size(t0->dtype);
    char *out = kiln_xmalloc(rb * rows);
    for (int r = 0; r < s->tp; r++) {
        const st_tensor *t = need(s, r, stage, local, name);
        if (!t || check_shape(t, t0->shape[0], s->dim) < 0 || t->type != t0->type) {
            free(out);
            return t ? kiln_fail("%s: another shape or dtype than rank 0's", t->name) : -1;
        }
        int n = vocab ? (r * per >= rows ? 0 : rows - r * per < per ? rows - r * per : per) : per;
        memcpy(out + rb * r * per, (const char *)t->data + (vocab ? 0 : rb * per * part), rb * n);
    }
    *b = (built){out, t0->type, 2, {(uint64_t)s->dim, (uint64_t)rows}};
    return 0;
}

static int build_tensor(const shards *s, const char *name, built *b) {
    int l, n = 0;
    if (!strcmp(name, "token_embd.weight")) {
        if (s->tied && s->pp > 1)
            for (int r = 0; r < s->tp; r++) {
                const st_tensor *a = need(s, r, 0, -1, "embedding.word_embeddings.weight"),
                                *c = need(s, r, s->pp - 1, -1, "embedding.word_embeddings.weight");
                if (!a || !c || same_copy(a, c, c->name) < 0) return -1;
            }
        return from_rows(s, 0, "embedding.word_embeddings.weight", -1, -1, b);
    }
    if (!strcmp(name, "output.weight")) return from_rows(s, s->pp - 1, "output_layer.weight", -1, -1, b);
    if (!strcmp(name, "output_norm.weight")) return from_replicas(s, s->pp - 1, -1, "decoder.final_layernorm.weight", b);
    if (sscanf(name, "blk.%d.%n", &l, &n) != 1 || !n || l < 0 || l >= s->L) return 1;
    int stage = l / (s->L / s->pp), local = l % (s->L / s->pp), q = s->H * s->hd;
    const char *leaf = name + n;
    static const char *const qkv[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight",
                                      "attn_q.bias", "attn_k.bias", "attn_v.bias"};
    for (int i = 0; i < 6; i++)
        if (!strcmp(leaf, qkv[i])) return from_qkv(s, stage, local, i % 3, i < 3 ? s->dim : 0, b);
    if (!strcmp(leaf, "attn_output.weight")) return from_columns(s, stage, local, "self_attention.linear_proj.weight", s->dim, q, b);
    if (!strcmp(leaf, "ffn_down.weight")) return from_columns(s, stage, local, "mlp.linear_fc2.weight", s->dim, s->ffn, b);
    if (!strcmp(leaf, "ffn_gate.weight")) return from_rows(s, stage, "mlp.linear_fc1.weight", local, 0, b);
    if (!strcmp(leaf, "ffn_up.weight")) return from_rows(s, stage, "mlp.linear_fc1.weight", local, 1, b);
    static const char *const rep[][2] = {{"attn_norm.weight", "input_layernorm.weight"},
                                         {"ffn_norm.weight", "pre_mlp_layernorm.weight"},
                                         {"attn_output.bias", "self_attention.linear_proj.bias"},
                                         {"ffn_down.bias", "mlp.linear_fc2.bias"}};
    for (int i = 0; i < 4; i++)
        if (!strcmp(leaf, rep[i][0])) return from_replicas(s, stage, local, rep[i][1], b);
    return 1;
}

int shard_merge(const char *dir, const char *out_path) {
    char path[4096];
    shards s = {.dir = dir};
    snprintf(path, sizeof path, "%s/shards.json", dir);
    if (access(path, F_OK) != 0) return kiln_fail("%s: not a shard folder (no shards.json)", dir);
    if (get_layout(&s, path) < 0) return -1;
    snprintf(path, sizeof path, "%s/config.gguf", dir);
    gguf_file *cfg = NULL;
    json_t *j = NULL;
    gguf_writer *w = gguf_writer_new();
    int rc = check_folders(&s);
    if (rc == 0) rc = open_ranks(&s);
    if (rc == 0 && !(cfg = gguf_open(path))) rc = -1;
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/shards.json", dir);
        j = json_load_file(path, 0, NULL);
        gguf_copy_kvs(w, cfg);
    }
    json_t *names = json_object_get(j, "tensors"), *n;
    size_t i;
    json_array_foreach(names, i, n) {
        if (rc) break;
        const char *name = json_string_value(n);
        built b;
        const gguf_tensor *whole;
        int r = name ? build_tensor(&s, name, &b) : kiln_fail("%s: tensors list holds a non-string", dir);
        if (r < 0) rc = -1;
        else if (r == 0) {
            rc = gguf_add_tensor(w, name, (uint32_t)b.type, b.n_dims, b.ne, b.data);
            free(b.data);
        } else if ((whole = gguf_find_tensor(cfg, name)))
            rc = gguf_add_tensor_ref(w, name, whole->type, (int)whole->n_dims, whole->ne, whole->data);
        else rc = kiln_fail("%s: tensor %s is in no shard and not in config.gguf", dir, name);
    }
    if (rc == 0) rc = gguf_write(w, out_path);
    gguf_writer_free(w);
    json_decref(j);
    gguf_close(cfg);
    for (int k = 0; s.f && k < s.tp * s.pp; k++) safetensors_close(s.f[k]);
    free(s.f);
    return rc;
}
