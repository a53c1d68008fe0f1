/* Golden tests: kiln's forward pass against an independent reference.
 *
 * tests/ref/make_golden.py writes small random-weight models (with its own GGUF writer) and their
 * logits, computed by numpy in float64 from the exact values stored in the file. Each case runs its
 * token sequence through kiln twice, as one prefill and token by token, and compares the logits after
 * every token with the reference. docs/REFERENCE.md describes the cases and how to regenerate them.
 *
 * Tolerances: |kiln - reference| <= atol + rtol * |reference|.
 * - f32 files: rtol = atol = 1e-5. kiln computes in f32, the reference in f64 from the same weights,
 *   so only f32 rounding separates them; make_golden.py checks that numpy's own f32 pass of each case
 *   lands within a quarter of this tolerance (measured on logits of size 1 to 6: numpy f32 at most
 *   2.5e-6 off, kiln 2.8e-6).
 *   That rounding error is absolute, inherited from the O(1) terms a logit is summed from, so a logit
 *   that happens to be near 0 carries it too: the atol keeps such logits from failing a pure relative
 *   test while staying far below what any wrong formula moves them by (1e-3 and up).
 * - f16/bf16 files: rtol = atol = 1e-4. The reference uses the same rounded weights, so this still
 *   tests arithmetic, not rounding: rounding the weights moves these logits by 3e-3 (f16) and 2.5e-2
 *   (bf16), 30 and 250 times the tolerance. The extra factor of 10 over f32 leaves room for half
 *   precision kernels that convert and accumulate in their own order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/file.h"
#include "kiln.h"
#include "test.h"

#define REGENERATE "regenerate with /usr/bin/python3 tests/ref/make_golden.py"
enum { GOLDEN_MAX_TOKENS = 64 };

typedef struct {
    const char *name;
    float tol;        /* rtol and atol against the reference */
    kiln_config want; /* the hyperparameters make_golden.py wrote */
} golden_case;

static const golden_case golden_cases[] = {
    {"gpt2_f32", 1e-5f,
     {.arch = "gpt2", .n_vocab = 64, .dim = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4, .head_dim = 8,
      .ffn_dim = 128, .ctx_len = 16, .norm = KILN_NORM_LAYER, .pos = KILN_POS_LEARNED, .act = KILN_ACT_GELU,
      .norm_eps = 1e-5f, .qkv_bias = 1, .out_bias = 1, .tied_output = 1}},
    {"llama_gqa_f32", 1e-5f,
     {.arch = "llama", .n_vocab = 80, .dim = 48, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 12,
      .ffn_dim = 64, .ctx_len = 64, .norm = KILN_NORM_RMS, .pos = KILN_POS_ROPE, .act = KILN_ACT_SWIGLU,
      .rope_style = KILN_ROPE_INTERLEAVED, .rope_dim = 12, .rope_theta = 10000.0f, .norm_eps = 1e-5f}},
    {"llama_mqa_headdim_f32", 1e-5f,
     {.arch = "llama", .n_vocab = 64, .dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 1, .head_dim = 24,
      .ffn_dim = 32, .ctx_len = 64, .norm = KILN_NORM_RMS, .pos = KILN_POS_ROPE, .act = KILN_ACT_SWIGLU,
      .rope_style = KILN_ROPE_INTERLEAVED, .rope_dim = 24, .rope_theta = 500000.0f, .norm_eps = 1e-5f,
      .tied_output = 1}},
    {"qwen2_bias_f32", 1e-5f,
     {.arch = "qwen2", .n_vocab = 72, .dim = 48, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 12,
      .ffn_dim = 64, .ctx_len = 64, .norm = KILN_NORM_RMS, .pos = KILN_POS_ROPE, .act = KILN_ACT_SWIGLU,
      .rope_style = KILN_ROPE_NEOX, .rope_dim = 12, .rope_theta = 1000000.0f, .norm_eps = 1e-6f, .qkv_bias = 1,
      .tied_output = 1}},
    {"llama_gqa_f16", 1e-4f,
     {.arch = "llama", .n_vocab = 80, .dim = 48, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 12,
      .ffn_dim = 64, .ctx_len = 64, .norm = KILN_NORM_RMS, .pos = KILN_POS_ROPE, .act = KILN_ACT_SWIGLU,
      .rope_style = KILN_ROPE_INTERLEAVED, .rope_dim = 12, .rope_theta = 10000.0f, .norm_eps = 1e-5f}},
    {"llama_gqa_bf16", 1e-4f,
     {.arch = "llama", .n_vocab = 80, .dim = 48, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 12,
      .ffn_dim = 64, .ctx_len = 64, .norm = KILN_NORM_RMS, .pos = KILN_POS_ROPE, .act = KILN_ACT_SWIGLU,
      .rope_style = KILN_ROPE_INTERLEAVED, .rope_dim = 12, .rope_theta = 10000.0f, .norm_eps = 1e-5f}},
    {"gpt2_bf16", 1e-4f,
     {.arch = "gpt2", .n_vocab = 64, .dim = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4, .head_dim = 8,
      .ffn_dim = 128, .ctx_len = 16, .norm = KILN_NORM_LAYER, .pos = KILN_POS_LEARNED, .act = KILN_ACT_GELU,
      .norm_eps = 1e-5f, .qkv_bias = 1, .out_bias = 1, .tied_output = 1}},
};
enum { N_GOLDEN_CASES = sizeof golden_cases / sizeof golden_cases[0] };

typedef struct {
    kiln_model *model;
    int n_tokens, n_vocab;
    int32_t tokens[GOLDEN_MAX_TOKENS];
    float *logits; /* n_tokens x n_vocab: the reference */
} golden;

static const golden_case *golden_find(const char *name) {
    for (int i = 0; i < N_GOLDEN_CASES; i++)
        if (strcmp(golden_cases[i].name, name) == 0) return &golden_cases[i];
    test_fail(__FILE__, __LINE__, "no golden case named %s", name);
}

static const char *golden_path(const char *name, const char *ext) {
    static char buf[3][256];
    static int k;
    char *b = buf[k++ % 3];
    snprintf(b, sizeof buf[0], "tests/golden/%s.%s", name, ext);
    return b;
}

/* Reads a whole golden file; a missing one fails the test saying how to make it. */
static char *golden_read(const char *path, size_t *size) {
    CHECKF(access(path, R_OK) == 0, "%s: missing (%s)", path, REGENERATE);
    char *data = kiln_read_file(path, size);
    CHECKF(data, "%s", kiln_errmsg());
    return data;
}

static void golden_load(const char *name, golden *g) {
    const char *path = golden_path(name, "gguf");
    CHECKF(access(path, R_OK) == 0, "%s: missing (%s)", path, REGENERATE);
    g->model = kiln_model_open(path);
    CHECKF(g->model, "%s: kiln_model_open failed: %s", path, kiln_last_error());
    g->n_vocab = kiln_model_config(g->model)->n_vocab;

    path = golden_path(name, "tokens");
    size_t size;
    char *text = golden_read(path, &size), *p = text, *end;
    g->n_tokens = 0;
    for (long id = strtol(p, &end, 10); end != p; id = strtol(p, &end, 10)) {
        CHECKF(g->n_tokens < GOLDEN_MAX_TOKENS, "%s: more than %d tokens", path, GOLDEN_MAX_TOKENS);
        CHECKF(id >= 0 && id < g->n_vocab, "%s: token %ld out of the vocabulary of %d", path, id, g->n_vocab);
        g->tokens[g->n_tokens++] = (int32_t)id;
        p = end;
    }
    CHECKF(g->n_tokens > 0, "%s: no tokens", path);
    free(text);

    path = golden_path(name, "logits");
    char *raw = golden_read(path, &size);
    size_t want = (size_t)g->n_tokens * g->n_vocab * sizeof(float);
    CHECKF(size == want, "%s: %zu bytes, expected %d tokens x %d vocab x 4 = %zu (%s)", path, size, g->n_tokens,
           g->n_vocab, want, REGENERATE);
    g->logits = kiln_xmalloc(want);
    memcpy(g->logits, raw, want);
    free(raw);
}

static void golden_free(golden *g) {
    kiln_model_close(g->model);
    free(g->logits);
}

/* The logits after each token when the whole sequence goes through one kiln_eval. */
static float *golden_prefill(const golden *g) {
    kiln_ctx *c = kiln_ctx_new(g->model, 0);
    CHECKF(c, "kiln_ctx_new: %s", kiln_last_error());
    float *out = kiln_xmalloc((size_t)g->n_tokens * g->n_vocab * sizeof(float));
    CHECKF(kiln_eval(c, g->tokens, g->n_tokens, out) >= 0, "prefill of %d tokens: %s", g->n_tokens,
           kiln_last_error());
    kiln_ctx_free(c);
    return out;
}

/* The logits after each token when the tokens go through kiln_eval one at a time. */
static float *golden_decode(const golden *g) {
    kiln_ctx *c = kiln_ctx_new(g->model, 0);
    CHECKF(c, "kiln_ctx_new: %s", kiln_last_error());
    float *out = kiln_xmalloc((size_t)g->n_tokens * g->n_vocab * sizeof(float));
    for (int t = 0; t < g->n_tokens; t++) {
        CHECKF(kiln_eval(c, &g->tokens[t], 1, NULL) >= 0, "decode of token %d: %s", t, kiln_last_error());
        memcpy(out + (size_t)t * g->n_vocab, kiln_logits(c), g->n_vocab * sizeof(float));
    }
    kiln_ctx_free(c);
    return out;
}

/* Compares position by position, so that a failure names the token after which the logits differ. */
static void golden_compare(const char *name, const char *run, const golden *g, const float *got, const float *want,
                           float tol) {
    char what[160];
    for (int t = 0; t < g->n_tokens; t++) {
        snprintf(what, sizeof what, "%s: %s, logits after token %d (id %d)", name, run, t, g->tokens[t]);
        size_t at = (size_t)t * g->n_vocab;
        CHECK_CLOSE(got + at, want + at, g->n_vocab, tol, tol, what);
    }
}

static void check_against_reference(const char *name) {
    const golden_case *gc = golden_find(name);
    golden g;
    golden_load(name, &g);
    float *prefill = golden_prefill(&g), *decode = golden_decode(&g);
    golden_compare(name, "prefill vs numpy", &g, prefill, g.logits, gc->tol);
    golden_compare(name, "decode vs numpy", &g, decode, g.logits, gc->tol);
    free(prefill);
    free(decode);
    golden_free(&g);
}

TEST(golden_gpt2_f32_tied_head_matches_numpy) { check_against_reference("gpt2_f32"); }
TEST(golden_llama_gqa_f32_matches_numpy) { check_against_reference("llama_gqa_f32"); }
TEST(golden_llama_mqa_with_head_dim_24_of_dim_64_matches_numpy) { check_against_reference("llama_mqa_headdim_f32"); }
TEST(golden_qwen2_qkv_bias_neox_rope_f32_matches_numpy) { check_against_reference("qwen2_bias_f32"); }
TEST(golden_llama_gqa_f16_matches_numpy) { check_against_reference("llama_gqa_f16"); }
TEST(golden_llama_gqa_bf16_matches_numpy) { check_against_reference("llama_gqa_bf16"); }
TEST(golden_gpt2_bf16_matches_numpy) { check_against_reference("gpt2_bf16"); }

/* Prefill (matrix-matrix) and decode (matrix-vector, KV cache) must agree to f32 rounding whatever
 * the reference says: a difference points at one of the two paths, not at the model's math. */
TEST(golden_prefill_logits_equal_token_by_token_decode_logits) {
    for (int i = 0; i < N_GOLDEN_CASES; i++) {
        golden g;
        golden_load(golden_cases[i].name, &g);
        float *prefill = golden_prefill(&g), *decode = golden_decode(&g);
        golden_compare(golden_cases[i].name, "prefill vs decode", &g, prefill, decode, 1e-5f);
        free(prefill);
        free(decode);
        golden_free(&g);
    }
}

/* When a golden case fails, this says whether kiln read the file as written or computed wrongly. The
 * qwen2 file has no key_length, rope.dimension_count or vocab_size (real ones have none): kiln must
 * derive head_dim = dim / n_heads and n_vocab from token_embd. */
TEST(golden_model_configs_match_the_hyperparameters_written) {
    for (int i = 0; i < N_GOLDEN_CASES; i++) {
        const golden_case *gc = &golden_cases[i];
        const kiln_config *w = &gc->want;
        const char *path = golden_path(gc->name, "gguf");
        CHECKF(access(path, R_OK) == 0, "%s: missing (%s)", path, REGENERATE);
        kiln_model *m = kiln_model_open(path);
        CHECKF(m, "%s: kiln_model_open failed: %s", path, kiln_last_error());
        const kiln_config *c = kiln_model_config(m);
        CHECKF(strcmp(c->arch, w->arch) == 0, "%s: arch %s, expected %s", path, c->arch, w->arch);
#define FIELD(f) CHECKF(c->f == w->f, "%s: " #f " %g, expected %g", path, (double)c->f, (double)w->f)
        FIELD(n_vocab);
        FIELD(dim);
        FIELD(n_layers);
        FIELD(n_heads);
        FIELD(n_kv_heads);
        FIELD(head_dim);
        FIELD(ffn_dim);
        FIELD(ctx_len);
        FIELD(norm);
        FIELD(pos);
        FIELD(act);
        FIELD(norm_eps);
        FIELD(qkv_bias);
        FIELD(out_bias);
        FIELD(tied_output);
        if (w->pos == KILN_POS_ROPE) {
            FIELD(rope_style);
            FIELD(rope_dim);
            FIELD(rope_theta);
        }
#undef FIELD
        kiln_model_close(m);
    }
}
