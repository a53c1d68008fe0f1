/* Helpers of the decoding tests (tests/test_decode.h), and checks that they do what they say. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "format/gguf.h"
#include "format/model_file.h"
#include "test.h"
#include "test_decode.h"

static void add_tensor(gguf_writer *w, kiln_rng *r, const char *name, int rows, int cols, float scale) {
    float *x = malloc(sizeof(float) * rows * cols);
    for (int i = 0; i < rows * cols; i++)
        x[i] = scale < 0 ? 1.0f : (kiln_rng_f32(r) + kiln_rng_f32(r) + kiln_rng_f32(r) - 1.5f) * 2 * scale;
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    CHECK(gguf_add_tensor(w, name, KILN_TYPE_F32, rows == 1 ? 1 : 2, ne, x) == 0);
    free(x);
}

kiln_model *random_model(const char *name, int n_vocab, int ctx, int dim, int n_layers, uint64_t seed,
                         float logit_scale) {
    kiln_config c = {0};
    CHECK(model_file_arch_defaults("llama", &c) == 0);
    c.dim = dim, c.n_layers = n_layers, c.n_heads = dim / 8, c.n_kv_heads = dim / 8, c.ffn_dim = 2 * dim;
    c.n_vocab = n_vocab, c.ctx_len = ctx, c.head_dim = 8, c.rope_dim = 8, c.rope_theta = 10000, c.norm_eps = 1e-5f;
    gguf_writer *w = gguf_writer_new();
    model_file_write_config(w, &c);
    kiln_rng r;
    kiln_rng_seed(&r, seed);
    float s = 1.0f / sqrtf((float)dim); /* unit-variance rows after the norms */
    add_tensor(w, &r, "token_embd.weight", n_vocab, dim, 1.0f);
    add_tensor(w, &r, "output_norm.weight", 1, dim, -1);
    add_tensor(w, &r, "output.weight", n_vocab, dim, logit_scale * s);
    for (int l = 0; l < n_layers; l++) {
        char n[64];
#define LAYER(NAME, R, C, S) snprintf(n, sizeof n, "blk.%d." NAME, l), add_tensor(w, &r, n, R, C, S)
        LAYER("attn_norm.weight", 1, dim, -1);
        LAYER("attn_q.weight", dim, dim, 2 * s);
        LAYER("attn_k.weight", dim, dim, 2 * s);
        LAYER("attn_v.weight", dim, dim, s);
        LAYER("attn_output.weight", dim, dim, s);
        LAYER("ffn_norm.weight", 1, dim, -1);
        LAYER("ffn_gate.weight", 2 * dim, dim, s);
        LAYER("ffn_up.weight", 2 * dim, dim, s);
        LAYER("ffn_down.weight", dim, 2 * dim, s);
#undef LAYER
    }
    const char *path = test_tmp(name);
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_last_error());
    gguf_writer_free(w);
    kiln_model *m = kiln_model_open(path);
    CHECKF(m != NULL, "%s", kiln_last_error());
    return m;
}

kiln_model *tiny_model(const char *name, int n_vocab, int ctx, uint64_t seed, float logit_scale) {
    return random_model(name, n_vocab, ctx, 16, 1, seed, logit_scale);
}

const char *stories_gguf(void) {
    static char path[4096];
    snprintf(path, sizeof path, "%s", test_tmp("stories260K.gguf"));
    char cmd[16384], *err;
    snprintf(cmd, sizeof cmd, "%s convert %s --tokenizer %s -o %s", test_kiln_bin(),
             test_data("stories260K/stories260K.bin"), test_data("stories260K/tok512.bin"), path);
    int rc = test_run(cmd, NULL, &err);
    CHECKF(rc == 0, "convert failed (%d): %s", rc, err);
    free(err);
    return path;
}

kiln_model *stories_model(const char **path_out) {
    const char *path = stories_gguf();
    if (path_out) *path_out = path;
    kiln_model *m = kiln_model_open(path);
    CHECKF(m != NULL, "%s", kiln_last_error());
    return m;
}

double sequence_logprob(kiln_model *m, const int32_t *prompt, int n_prompt, const int32_t *toks, int n) {
    int V = kiln_model_config(m)->n_vocab, total = n_prompt + n;
    int32_t *all = malloc(sizeof(int32_t) * total);
    memcpy(all, prompt, sizeof(int32_t) * n_prompt);
    memcpy(all + n_prompt, toks, sizeof(int32_t) * n);
    float *logits = malloc(sizeof(float) * V * total);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    CHECK(kiln_eval(c, all, total, logits) == 0);
    double lp = 0;
    for (int i = 0; i < n; i++) {
        const float *row = logits + (size_t)(n_prompt - 1 + i) * V;
        double max = row[0], sum = 0;
        for (int j = 1; j < V; j++) max = row[j] > max ? row[j] : max;
        for (int j = 0; j < V; j++) sum += exp(row[j] - max);
        lp += row[toks[i]] - max - log(sum);
    }
    kiln_ctx_free(c);
    free(logits);
    free(all);
    return lp;
}

double chi_square(const int *counts, const double *p, int n, int total, int *dof) {
    double chi = 0, pool_p = 0;
    int pool_c = 0, cells = 0;
    for (int i = 0; i < n; i++) {
        double e = p[i] * total;
        if (e < 5) {
            pool_p += p[i], pool_c += counts[i];
            continue;
        }
        chi += (counts[i] - e) * (counts[i] - e) / e;
        cells++;
    }
    if (pool_p * total >= 5) {
        double e = pool_p * total;
        chi += (pool_c - e) * (pool_c - e) / e;
        cells++;
    } else if (pool_c > 10 + 10 * pool_p * total) {
        chi += 1e9; /* draws where the model puts (almost) no mass */
    }
    *dof = cells - 1;
    return chi;
}

double chi_square_limit(int dof) {
    /* Wilson-Hilferty: (X/k)^(1/3) is about normal with mean 1 - 2/(9k), variance 2/(9k); z(0.999) = 3.09 */
    double k = dof, v = 2.0 / (9 * k), t = 1 - v + 3.090232 * sqrt(v);
    return k * t * t * t;
}

TEST(chi_square_limit_matches_the_tables) {
    CHECK(fabs(chi_square_limit(10) - 29.59) < 0.3);
    CHECK(fabs(chi_square_limit(63) - 103.4) < 0.6);
}

TEST(tiny_models_have_peaked_distributions_and_sequence_logprobs_add_up) {
    kiln_model *m = tiny_model("m.gguf", 4, 16, 7, 4.0f);
    int32_t prompt[1] = {1};
    double total = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) total += exp(sequence_logprob(m, prompt, 1, (int32_t[]){a, b}, 2));
    CHECKF(fabs(total - 1) < 1e-5, "probabilities of all 16 two-token sequences sum to %g", total);
    double best = 0;
    for (int a = 0; a < 4; a++) best = fmax(best, exp(sequence_logprob(m, prompt, 1, (int32_t[]){a}, 1)));
    CHECKF(best > 0.4, "the most probable first token has only %g", best);
    kiln_model_close(m);
}

char *greedy_text(kiln_model *m, const char *prompt, int n_new) {
    int32_t toks[256];
    int n = kiln_tokenize(m, prompt, strlen(prompt), 1, toks, 256);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.max_new_tokens = n_new;
    kiln_gen_result r;
    if (kiln_generate(c, toks, n, &p, &r) < 0) test_fail(__FILE__, __LINE__, "%s", kiln_last_error());
    char *s = strdup(r.seqs[0].text);
    kiln_gen_result_free(&r);
    kiln_ctx_free(c);
    return s;
}
