/* Megatron-style shards: split and merge give back the model byte for byte (GQA with whole groups per
 * rank, kv heads copied when ranks outnumber them, tied and untied heads, bf16), a forward pass computed
 * shard by shard with partial sums reduced across ranks matches the unsharded logits, and broken folders
 * fail with one-line errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/file.h"
#include "format/safetensors.h"
#include "format/shard.h"
#include "kernels/kernels.h"
#include "kiln.h"
#include "model/transformer.h"
#include "test.h"

static const char *import(const char *name) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/golden/hf/%s", name);
    const char *out = test_tmp("model.gguf");
    CHECKF(kiln_convert_hf(dir, out, -1) == 0, "%s", kiln_last_error());
    return out;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = kiln_read_file(a, &na), *y = kiln_read_file(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

static void check_round_trip(const char *name, int tp, int pp) {
    char sub[128];
    snprintf(sub, sizeof sub, "shards-%s-%d-%d", name, tp, pp);
    const char *model = import(name), *dir = test_tmp(sub), *back = test_tmp("merged.gguf");
    CHECKF(kiln_shard(model, tp, pp, dir) == 0, "%s", kiln_last_error());
    CHECKF(kiln_merge(dir, back) == 0, "%s", kiln_last_error());
    CHECKF(same_file(model, back), "%s tp %d pp %d: the merged file differs from the original", name, tp, pp);
}

TEST(shard_tp2_pp2_of_gqa_llama_merges_back_byte_for_byte) { check_round_trip("llama", 2, 2); }
TEST(shard_tp4_copies_the_2_kv_heads_and_merges_back_byte_for_byte) { check_round_trip("llama", 4, 1); }
TEST(shard_of_tied_bf16_llama_and_qwen2_biases_merge_back_byte_for_byte) {
    check_round_trip("llama_bf16_sharded", 2, 2);
    check_round_trip("qwen2", 4, 2);
}

TEST(shard_rank_files_hold_megatron_names_and_shapes) {
    const char *model = import("llama"), *dir = test_tmp("shards");
    CHECK(kiln_shard(model, 2, 2, dir) == 0);
    char path[512];
    shard_rank_path(path, sizeof path, dir, 1, 0);
    st_file *f = safetensors_open(path);
    CHECKF(f, "%s", kiln_errmsg());
    /* 4 heads on 2 kv heads over 2 ranks: one group each, [2 q heads; k; v] of 8 dims */
    const st_tensor *qkv = safetensors_find(f, "decoder.layers.0.self_attention.linear_qkv.weight");
    CHECK(qkv && qkv->shape[0] == 32 && qkv->shape[1] == 32);
    const st_tensor *proj = safetensors_find(f, "decoder.layers.0.self_attention.linear_proj.weight");
    CHECK(proj && proj->shape[0] == 32 && proj->shape[1] == 16);
    const st_tensor *fc1 = safetensors_find(f, "decoder.layers.0.mlp.linear_fc1.weight");
    CHECK(fc1 && fc1->shape[0] == 48 && fc1->shape[1] == 32);
    const st_tensor *emb = safetensors_find(f, "embedding.word_embeddings.weight");
    CHECK(emb && emb->shape[0] == 128); /* vocab 56 padded to 256 over 2 ranks */
    CHECK(!safetensors_find(f, "decoder.layers.1.self_attention.linear_qkv.weight")); /* layer 1 is stage 1's 0 */
    CHECK(!safetensors_find(f, "output_layer.weight"));
    safetensors_close(f);
    shard_rank_path(path, sizeof path, dir, 0, 1);
    f = safetensors_open(path);
    CHECK(f && safetensors_find(f, "output_layer.weight") && safetensors_find(f, "decoder.final_layernorm.weight"));
    safetensors_close(f);
}

/* ---- A TP=2, PP=2 forward pass, shard by shard ---- */

typedef struct {
    st_file *f[2][2]; /* [stage][rank] */
    const kiln_config *c;
} ranks;

static const st_tensor *get(const ranks *r, int stage, int rank, int layer, const char *name) {
    char full[160];
    if (layer >= 0) snprintf(full, sizeof full, "decoder.layers.%d.%s", layer, name);
    else snprintf(full, sizeof full, "%s", name);
    const st_tensor *t = safetensors_find(r->f[stage][rank], full);
    CHECKF(t && t->type == KILN_TYPE_F32, "%s: missing or not F32", full);
    return t;
}

static void rmsnorm_rows(float *out, const float *x, const st_tensor *w, int T, int dim, float eps) {
    for (int t = 0; t < T; t++) kiln_rmsnorm(out + (size_t)t * dim, x + (size_t)t * dim, w->data, dim, eps);
}

/* One layer on rank RANK: the partial sums its row-parallel projections add to the residual X. */
static void layer_partial(const ranks *r, int stage, int rank, int layer, const float *x, float *x_attn_out, int T) {
    const kiln_config *c = r->c;
    int dim = c->dim, hd = c->head_dim, nq = c->n_heads / 2, nkv = c->n_kv_heads / 2, qkv_rows = (nq + 2 * nkv) * hd;
    float *h = kiln_xmalloc(sizeof(float) * T * dim), *qkv = kiln_xmalloc(sizeof(float) * T * qkv_rows),
          *q = kiln_xmalloc(sizeof(float) * T * nq * hd), *k = kiln_xmalloc(sizeof(float) * T * nkv * hd),
          *v = kiln_xmalloc(sizeof(float) * T * nkv * hd), *att = kiln_xmalloc(sizeof(float) * T * nq * hd);
    rmsnorm_rows(h, x, get(r, stage, rank, layer, "input_layernorm.weight"), T, dim, c->norm_eps);
    kiln_matmul(qkv, h, get(r, stage, rank, layer, "self_attention.linear_qkv.weight")->data, KILN_TYPE_F32, T, qkv_rows, dim);
    int qpg = c->n_heads / c->n_kv_heads; /* here one group per rank: [q heads; k; v] */
    float inv[64], cs[64], sn[64], m;
    kiln_rope_freqs(c, c->ctx_len, NULL, inv, &m);
    for (int t = 0; t < T; t++) {
        const float *row = qkv + (size_t)t * qkv_rows;
        memcpy(q + (size_t)t * nq * hd, row, sizeof(float) * qpg * hd);
        memcpy(k + (size_t)t * hd, row + qpg * hd, sizeof(float) * hd);
        memcpy(v + (size_t)t * hd, row + (qpg + 1) * hd, sizeof(float) * hd);
        for (int i = 0; i < c->rope_dim / 2; i++) cs[i] = (float)cos((double)t * inv[i]) * m, sn[i] = (float)sin((double)t * inv[i]) * m;
        kiln_rope_apply(q + (size_t)t * nq * hd, nq, hd, c->rope_dim, c->rope_style, cs, sn);
        kiln_rope_apply(k + (size_t)t * hd, nkv, hd, c->rope_dim, c->rope_style, cs, sn);
    }
    kiln_attention(att, q, k, v, T, 0, nq, nkv, hd, nkv * hd, 1.0f / sqrtf((float)hd));
    kiln_matmul(x_attn_out, att, get(r, stage, rank, layer, "self_attention.linear_proj.weight")->data, KILN_TYPE_F32,
                T, dim, nq * hd);
    free(h), free(qkv), free(q), free(k), free(v), free(att);
}

static void mlp_partial(const ranks *r, int stage, int rank, int layer, const float *x, float *out, int T) {
    const kiln_config *c = r->c;
    int dim = c->dim, f = c->ffn_dim / 2;
    float *h = kiln_xmalloc(sizeof(float) * T * dim), *gu = kiln_xmalloc(sizeof(float) * T * 2 * f),
          *gate = kiln_xmalloc(sizeof(float) * T * f), *up = kiln_xmalloc(sizeof(float) * T * f);
    rmsnorm_rows(h, x, get(r, stage, rank, layer, "pre_mlp_layernorm.weight"), T, dim, c->norm_eps);
    kiln_matmul(gu, h, get(r, stage, rank, layer, "mlp.linear_fc1.weight")->data, KILN_TYPE_F32, T, 2 * f, dim);
    for (int t = 0; t < T; t++) {
        memcpy(gate + (size_t)t * f, gu + (size_t)t * 2 * f, sizeof(float) * f);
        memcpy(up + (size_t)t * f, gu + (size_t)t * 2 * f + f, sizeof(float) * f);
    }
    kiln_swiglu(gate, up, T * f);
    kiln_matmul(out, gate, get(r, stage, rank, layer, "mlp.linear_fc2.weight")->data, KILN_TYPE_F32, T, dim, f);
    free(h), free(gu), free(gate), free(up);
}

/* Every rank computes its partial sums from the same input; the all-reduce adds them to the residual. */
static void all_reduce_layer(const ranks *r, int stage, int layer, float *x, int T, int mlp) {
    size_t n = (size_t)T * r->c->dim;
    float *sum = kiln_xcalloc(n, sizeof(float)), *part = kiln_xmalloc(sizeof(float) * n);
    for (int k = 0; k < 2; k++) {
        if (mlp) mlp_partial(r, stage, k, layer, x, part, T);
        else layer_partial(r, stage, k, layer, x, part, T);
        for (size_t i = 0; i < n; i++) sum[i] += part[i];
    }
    for (size_t i = 0; i < n; i++) x[i] += sum[i];
    free(sum);
    free(part);
}

TEST(shard_tp2_forward_computed_rank_by_rank_matches_the_unsharded_logits) {
    const char *model = import("llama"), *dir = test_tmp("shards");
    CHECK(kiln_shard(model, 2, 2, dir) == 0);
    kiln_model *m = kiln_model_open(model);
    CHECK(m);
    const kiln_config *c = kiln_model_config(m);
    CHECK(c->n_kv_heads == 2 && c->n_layers == 2); /* one query group per rank, one layer per stage */
    ranks r = {.c = c};
    char path[512];
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 2; k++) {
            shard_rank_path(path, sizeof path, dir, k, s);
            CHECKF((r.f[s][k] = safetensors_open(path)), "%s", kiln_errmsg());
        }
    enum { T = 10 };
    int32_t tokens[T] = {3, 17, 42, 5, 55, 0, 29, 29, 8, 31};
    int dim = c->dim, V = c->n_vocab, per_v = (int)get(&r, 0, 0, -1, "embedding.word_embeddings.weight")->shape[0];
    float *x = kiln_xcalloc((size_t)T * dim, sizeof(float)), *h = kiln_xmalloc(sizeof(float) * T * dim);
    for (int t = 0; t < T; t++) /* vocabulary-parallel lookup: the owning rank gives the row, the others zeros */
        for (int k = 0; k < 2; k++) {
            int local = tokens[t] - k * per_v;
            if (local < 0 || local >= per_v) continue;
            const float *row = (const float *)get(&r, 0, k, -1, "embedding.word_embeddings.weight")->data + (size_t)local * dim;
            for (int i = 0; i < dim; i++) x[(size_t)t * dim + i] += row[i];
        }
    for (int s = 0; s < 2; s++) { /* stage s runs layer 0 of its own: the pipeline hands x on */
        all_reduce_layer(&r, s, 0, x, T, 0);
        all_reduce_layer(&r, s, 0, x, T, 1);
    }
    rmsnorm_rows(h, x, get(&r, 1, 0, -1, "decoder.final_layernorm.weight"), T, dim, c->norm_eps);
    float *logits = kiln_xmalloc(sizeof(float) * T * V), *slice = kiln_xmalloc(sizeof(float) * T * per_v);
    for (int k = 0; k < 2; k++) { /* gather the vocabulary slices, padding dropped */
        kiln_matmul(slice, h, get(&r, 1, k, -1, "output_layer.weight")->data, KILN_TYPE_F32, T, per_v, dim);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < per_v && k * per_v + j < V; j++) logits[(size_t)t * V + k * per_v + j] = slice[(size_t)t * per_v + j];
    }
    float *want = kiln_xmalloc(sizeof(float) * T * V);
    kiln_ctx *ctx = kiln_ctx_new(m, 0);
    CHECK(kiln_eval(ctx, tokens, T, want) == 0);
    CHECK_CLOSE(logits, want, (size_t)T * V, 1e-5f, 1e-5f, "TP=2 PP=2 logits vs unsharded");
    kiln_ctx_free(ctx);
    free(x), free(h), free(logits), free(slice), free(want);
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 2; k++) safetensors_close(r.f[s][k]);
    kiln_model_close(m);
}

/* ---- Broken folders ---- */

static const char *sharded(int tp, int pp) {
    const char *model = import("llama"), *dir = test_tmp("shards");
    CHECK(kiln_shard(model, tp, pp, dir) == 0);
    return dir;
}

static void check_merge_fails(const char *dir, const char *needle) {
    CHECK(kiln_merge(dir, test_tmp("out.gguf")) == -1);
    CHECKF(strstr(kiln_last_error(), needle) && !strchr(kiln_last_error(), '\n'), "error \"%s\" lacks \"%s\"",
           kiln_last_error(), needle);
    CHECK(access(test_tmp("out.gguf"), F_OK) != 0);
}

TEST(shard_merge_with_a_missing_shard_names_it) {
    const char *dir = sharded(2, 2);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -r %s/mp_rank_01_001", dir);
    CHECK(system(cmd) == 0);
    check_merge_fails(dir, "missing shard mp_rank_01_001");
}

TEST(shard_merge_with_an_extra_shard_names_it) {
    const char *dir = sharded(2, 1);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cp -r %s/mp_rank_01_000 %s/mp_rank_02_000", dir, dir);
    CHECK(system(cmd) == 0);
    check_merge_fails(dir, "extra shard mp_rank_02_000 (the layout has tp 2, pp 1)");
}

TEST(shard_merge_with_disagreeing_kv_copies_or_a_missing_tensor_fails) {
    const char *dir = sharded(4, 1); /* ranks 0 and 1 hold copies of kv head 0 */
    char path[512];
    shard_rank_path(path, sizeof path, dir, 1, 0);
    size_t n;
    char *data = kiln_read_file(path, &n);
    st_file *f = safetensors_parse(data, n, path);
    const st_tensor *t = safetensors_find(f, "decoder.layers.0.self_attention.linear_qkv.weight");
    ((char *)t->data)[t->nbytes - 1] ^= 1; /* the last byte of the copied v head */
    FILE *o = fopen(path, "wb");
    fwrite(data, 1, n, o);
    fclose(o);
    safetensors_close(f);
    free(data);
    check_merge_fails(dir, "the copies of kv head 0 on different ranks differ");
}

TEST(shard_refuses_a_tp_that_does_not_divide_the_heads_and_a_non_shard_folder) {
    const char *model = import("llama");
    CHECK(kiln_shard(model, 3, 1, test_tmp("s3")) == -1);
    CHECKF(strstr(kiln_last_error(), "--tp 3 must divide the 4 heads"), "%s", kiln_last_error());
    CHECK(kiln_shard(model, 1, 3, test_tmp("s3")) == -1);
    CHECKF(strstr(kiln_last_error(), "--pp 3 must divide the 2 layers"), "%s", kiln_last_error());
    check_merge_fails(test_tmp("empty"), "not a shard folder (no shards.json)");
    const char *gpt2 = test_tmp("gpt2.gguf");
    CHECK(kiln_convert_hf("tests/golden/hf/gpt2", gpt2, -1) == 0);
    CHECK(kiln_shard(gpt2, 2, 1, test_tmp("s2")) == -1);
    CHECKF(strstr(kiln_last_error(), "not gpt2"), "%s", kiln_last_error());
}

TEST(shard_cli_round_trip) {
    const char *model = import("llama"), *dir = test_tmp("cli"), *back = test_tmp("back.gguf");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s shard %s --tp 2 --pp 2 -o %s && %s merge %s -o %s", test_kiln_bin(), model, dir,
             test_kiln_bin(), dir, back);
    CHECK_EQ_INT(test_run(cmd, NULL, NULL), 0);
    CHECK(same_file(model, back));
}
