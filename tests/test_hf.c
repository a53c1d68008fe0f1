/* Hugging Face checkpoints: import of every supported architecture against PyTorch, the real tiny-gpt2,
 * RoPE scaling frequencies against transformers' formulas, export round trips, and bad input.
 *
 * tests/ref/hf_golden.py writes each case's checkpoint (Hugging Face's names and config keys) into
 * tests/golden/hf/NAME/ and its logits from an independent PyTorch float64 forward pass. Each case is
 * converted with kiln_convert_hf, run as one prefill and token by token, and compared after every token:
 * |kiln - torch| <= tol (1 + |torch|), tol 1e-5 for f32 checkpoints and 1e-4 for f16/bf16 ones (the
 * reference uses the rounded weights, so this is arithmetic, as in test_golden.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/file.h"
#include "base/half.h"
#include "format/gguf.h"
#include "format/hf.h"
#include "format/safetensors.h"
#include "kiln.h"
#include "model/transformer.h"
#include "test.h"

#define REGEN "regenerate with /usr/bin/python3 tests/ref/hf_golden.py"
enum { MAX_TOKENS = 64 };

static char *read_golden(const char *name, const char *ext, size_t *size) {
    char path[256];
    snprintf(path, sizeof path, "tests/golden/hf/%s.%s", name, ext);
    CHECKF(access(path, R_OK) == 0, "%s: missing (%s)", path, REGEN);
    char *d = kiln_read_file(path, size);
    CHECKF(d, "%s", kiln_errmsg());
    return d;
}

static int read_tokens(const char *name, int32_t *tokens) {
    size_t size;
    char *text = read_golden(name, "tokens", &size), *p = text, *end;
    int n = 0;
    for (long v = strtol(p, &end, 10); end != p && n < MAX_TOKENS; v = strtol(p, &end, 10)) {
        tokens[n++] = (int32_t)v;
        p = end;
    }
    free(text);
    return n;
}

/* Converts tests/golden/hf/NAME (or DIR) to a GGUF in the test's scratch directory and opens it. */
static kiln_model *convert_and_open(const char *dir, int type) {
    const char *out = test_tmp("model.gguf");
    CHECKF(kiln_convert_hf(dir, out, type) == 0, "convert %s: %s", dir, kiln_last_error());
    kiln_model *m = kiln_model_open(out);
    CHECKF(m, "%s: %s", out, kiln_last_error());
    return m;
}

static void compare_logits(const char *name, const char *run, const float *got, const float *want, int n_tokens,
                           int n_vocab, float tol) {
    char what[128];
    for (int t = 0; t < n_tokens; t++) {
        snprintf(what, sizeof what, "%s: %s, logits after token %d", name, run, t);
        CHECK_CLOSE(got + (size_t)t * n_vocab, want + (size_t)t * n_vocab, n_vocab, tol, tol, what);
    }
}

/* Prefill and token-by-token decode of the case's tokens, both against the reference logits. */
static void check_logits(const char *name, kiln_model *m, float tol) {
    int32_t tokens[MAX_TOKENS];
    int n = read_tokens(name, tokens), V = kiln_model_config(m)->n_vocab;
    size_t size;
    float *want = (float *)read_golden(name, "logits", &size);
    CHECKF(size == (size_t)n * V * sizeof(float), "%s.logits: %zu bytes for %d tokens x %d vocab (%s)", name, size, n,
           V, REGEN);
    float *got = kiln_xmalloc(size);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    CHECKF(kiln_eval(c, tokens, n, got) == 0, "%s", kiln_last_error());
    compare_logits(name, "prefill vs torch", got, want, n, V, tol);
    CHECK(kiln_ctx_truncate(c, 0) == 0);
    for (int t = 0; t < n; t++) {
        CHECKF(kiln_eval(c, &tokens[t], 1, NULL) == 0, "%s", kiln_last_error());
        memcpy(got + (size_t)t * V, kiln_logits(c), V * sizeof(float));
    }
    compare_logits(name, "decode vs torch", got, want, n, V, tol);
    kiln_ctx_free(c);
    free(got);
    free(want);
}

static void check_case(const char *name, float tol) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/golden/hf/%s", name);
    kiln_model *m = convert_and_open(dir, -1);
    check_logits(name, m, tol);
    kiln_model_close(m);
}

TEST(hf_real_tiny_gpt2_from_transformers_matches_torch) {
    kiln_model *m = convert_and_open(test_data("tiny-gpt2"), -1);
    CHECK_STR(kiln_model_config(m)->arch, "gpt2");
    check_logits("tiny_gpt2", m, 1e-5f);
    kiln_model_close(m);
}
TEST(hf_llama_matches_torch) { check_case("llama", 1e-5f); }
TEST(hf_llama_bf16_in_three_shards_tied_matches_torch) { check_case("llama_bf16_sharded", 1e-4f); }
TEST(hf_mistral_sliding_window_of_4_matches_torch) { check_case("mistral_window", 1e-5f); }
TEST(hf_qwen2_qkv_bias_two_shards_matches_torch) { check_case("qwen2", 1e-5f); }
TEST(hf_gpt2_conv1d_transformer_prefix_matches_torch) { check_case("gpt2", 1e-5f); }
TEST(hf_baichuan2_w_pack_and_normalized_head_matches_torch) { check_case("baichuan2", 1e-5f); }
TEST(hf_gemma_geglu_norm_plus_one_embedding_scale_head_dim_12_matches_torch) { check_case("gemma", 1e-5f); }
TEST(hf_phi3_fused_qkv_and_gate_up_f16_matches_torch) { check_case("phi3", 1e-4f); }
TEST(hf_llama_yarn_rope_scaling_matches_torch) { check_case("llama_yarn", 1e-5f); }
TEST(hf_llama3_rope_scaling_matches_torch) { check_case("llama3_scaled", 1e-5f); }

TEST(hf_sequence_classifier_score_head_matches_torch) {
    kiln_model *m = convert_and_open("tests/golden/hf/llama_score", -1);
    CHECK_EQ_INT(kiln_model_config(m)->n_cls, 2);
    int32_t tokens[MAX_TOKENS];
    int n = read_tokens("llama_score", tokens);
    size_t size;
    float *want = (float *)read_golden("llama_score", "score", &size), got[2];
    CHECK_EQ_INT(size, 2 * sizeof(float));
    kiln_ctx *c = kiln_ctx_new(m, 0);
    CHECK(kiln_eval(c, tokens, n, NULL) == 0);
    CHECKF(kiln_score(c, got) == 0, "%s", kiln_last_error());
    CHECK_CLOSE(got, want, 2, 1e-5f, 1e-5f, "score head");
    kiln_ctx_free(c);
    free(want);
    kiln_model_close(m);
}

TEST(hf_score_fails_on_a_model_without_a_score_head) {
    kiln_model *m = convert_and_open("tests/golden/hf/llama", -1);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t t = 1;
    float out[4];
    CHECK(kiln_eval(c, &t, 1, NULL) == 0);
    CHECK(kiln_score(c, out) == -1);
    CHECKF(strstr(kiln_last_error(), "no score head"), "%s", kiln_last_error());
    kiln_ctx_free(c);
    kiln_model_close(m);
}

TEST(hf_convert_with_type_bf16_stores_matrices_as_bf16_and_norms_as_f32) {
    kiln_model *m = convert_and_open("tests/golden/hf/llama", KILN_TYPE_BF16);
    for (int i = 0; i < kiln_model_n_tensors(m); i++) {
        kiln_tensor_info t;
        kiln_model_tensor(m, i, &t);
        CHECKF(!strcmp(t.type, t.n_dims == 1 ? "F32" : "BF16"), "%.*s is %s", (int)t.name_len, t.name, t.type);
    }
    kiln_model_close(m);
}

/* ---- RoPE frequencies ---- */

static const struct {
    const char *name;
    kiln_config cfg;
} ROPE_CASES[] = {
    {"none", {.rope_theta = 10000, .ctx_len = 2048}},
    {"linear", {.rope_theta = 10000, .ctx_len = 8192, .rope_scaling = KILN_ROPE_SCALING_LINEAR, .rope_factor = 4}},
    {"ntk", {.rope_theta = 10000, .ctx_len = 4096, .rope_scaling = KILN_ROPE_SCALING_NTK, .rope_factor = 4}},
    {"dynamic_within",
     {.rope_theta = 10000, .ctx_len = 4096, .rope_orig_ctx = 2048, .rope_scaling = KILN_ROPE_SCALING_DYNAMIC,
      .rope_factor = 2}},
    {"dynamic_beyond",
     {.rope_theta = 10000, .ctx_len = 4096, .rope_orig_ctx = 2048, .rope_scaling = KILN_ROPE_SCALING_DYNAMIC,
      .rope_factor = 2}},
    {"yarn",
     {.rope_theta = 1000000, .ctx_len = 131072, .rope_orig_ctx = 32768, .rope_scaling = KILN_ROPE_SCALING_YARN,
      .rope_factor = 4}},
    {"yarn_betas",
     {.rope_theta = 10000, .ctx_len = 16384, .rope_orig_ctx = 2048, .rope_scaling = KILN_ROPE_SCALING_YARN,
      .rope_factor = 8, .yarn_beta_fast = 16, .yarn_beta_slow = 2, .rope_attn_factor = 1.5f}},
    {"llama3",
     {.rope_theta = 500000, .ctx_len = 131072, .rope_orig_ctx = 8192, .rope_scaling = KILN_ROPE_SCALING_LLAMA3,
      .rope_factor = 8, .rope_low_freq = 1, .rope_high_freq = 4}},
};

TEST(rope_scaling_frequencies_match_transformers_formulas_to_1e6) {
    size_t size;
    char *text = read_golden("rope_freqs", "txt", &size), *line = text;
    int n_cases = 0;
    for (char *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = 0;
        char name[32];
        int d, n_ctx, used;
        double mscale;
        CHECK(sscanf(line, "%31s %d %d %lf%n", name, &d, &n_ctx, &mscale, &used) == 4);
        kiln_config c = {0};
        for (size_t i = 0; i < sizeof ROPE_CASES / sizeof ROPE_CASES[0]; i++)
            if (!strcmp(ROPE_CASES[i].name, name)) c = ROPE_CASES[i].cfg;
        CHECKF(c.rope_theta > 0, "rope_freqs.txt: unknown case %s", name);
        c.rope_dim = d;
        float want[256], got[256], m;
        char *p = line + used;
        for (int i = 0; i < d / 2; i++) want[i] = strtof(p, &p);
        kiln_rope_freqs(&c, n_ctx, NULL, got, &m);
        CHECK_CLOSE(got, want, d / 2, 1e-6f, 0, name);
        CHECK_CLOSE(&m, &(float){(float)mscale}, 1, 1e-6f, 0, name);
        n_cases++;
    }
    CHECK_EQ_INT(n_cases, 8);
    free(text);
}

TEST(rope_dynamic_ntk_import_extends_the_context_by_its_factor) {
    const char *dir = test_tmp("dyn");
    mkdir(dir, 0755);
    char path[512], cmd[1024];
    snprintf(cmd, sizeof cmd, "cp tests/golden/hf/llama/model.safetensors %s/ && sed "
             "'s/\"rope_theta\": 10000.0,/\"rope_theta\": 10000.0, \"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0},/' "
             "tests/golden/hf/llama/config.json > %s/config.json", dir, dir);
    CHECK(system(cmd) == 0);
    kiln_config c;
    const hf_family *fam;
    CHECKF(hf_config_read(dir, &c, &fam) == 0, "%s", kiln_errmsg());
    CHECK_EQ_INT(c.rope_scaling, KILN_ROPE_SCALING_DYNAMIC);
    CHECK_EQ_INT(c.rope_orig_ctx, 64);
    CHECK_EQ_INT(c.ctx_len, 128);
    snprintf(path, sizeof path, "%s/x.gguf", dir);
    CHECKF(kiln_convert_hf(dir, path, -1) == 0, "%s", kiln_last_error());
    kiln_model *m = kiln_model_open(path);
    CHECKF(m, "%s", kiln_last_error());
    CHECK_EQ_INT(kiln_model_config(m)->rope_scaling, KILN_ROPE_SCALING_DYNAMIC);
    CHECK_EQ_INT(kiln_model_config(m)->rope_orig_ctx, 64);
    kiln_model_close(m);
}

/* ---- Bad input ---- */

static void check_error_has(const char *needle) {
    CHECKF(strstr(kiln_last_error(), needle), "error \"%s\" lacks \"%s\"", kiln_last_error(), needle);
    CHECKF(!strchr(kiln_last_error(), '\n'), "error is not one line: %s", kiln_last_error());
}

/* A copy of golden case FROM in a scratch directory, with FIND replaced by REPLACE in its config.json. */
static const char *variant(const char *from, const char *find, const char *replace) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s", test_tmp("variant"));
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r tests/golden/hf/%s %s", dir, from, dir);
    CHECK(system(cmd) == 0);
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t n;
    char *text = kiln_read_file(path, &n), *at = strstr(text, find);
    CHECKF(at, "config of %s lacks %s", from, find);
    FILE *f = fopen(path, "w");
    fprintf(f, "%.*s%s%s", (int)(at - text), text, replace, at + strlen(find));
    fclose(f);
    free(text);
    return dir;
}

static void check_convert_fails(const char *dir, const char *needle) {
    CHECK(kiln_convert_hf(dir, test_tmp("bad.gguf"), -1) == -1);
    check_error_has(needle);
    CHECK(access(test_tmp("bad.gguf"), F_OK) != 0);
}

TEST(hf_unsupported_architecture_is_named_and_the_supported_ones_listed) {
    check_convert_fails(variant("llama", "LlamaForCausalLM", "FalconForCausalLM"), "'FalconForCausalLM' is not supported");
    check_error_has("Qwen2ForCausalLM");
    check_error_has("config.json");
}

TEST(hf_config_with_a_missing_key_names_the_key) {
    check_convert_fails(variant("llama", "\"hidden_size\"", "\"hidden_sise\""), "missing key 'hidden_size'");
}

TEST(hf_config_with_contradictory_heads_fails) {
    check_convert_fails(variant("llama", "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
                        "not a multiple of num_key_value_heads 3");
}

TEST(hf_config_vocab_size_contradicting_the_embedding_names_the_tensor) {
    check_convert_fails(variant("llama", "\"vocab_size\": 56", "\"vocab_size\": 57"),
                        "model.embed_tokens.weight has shape [56, 32], but config.json implies [57, 32]");
}

TEST(hf_config_with_a_wrong_type_or_bad_json_fails) {
    check_convert_fails(variant("llama", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": \"2\""),
                        "'num_hidden_layers' must be a positive integer");
    check_convert_fails(variant("llama", "\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": -1"), "'rms_norm_eps'");
    check_convert_fails(variant("llama", "{", "{{"), "config.json");
    check_convert_fails(variant("llama", "\"hidden_act\": \"silu\"", "\"hidden_act\": \"relu\""),
                        "hidden_act 'relu' is not supported");
    check_convert_fails(variant("llama", "\"rope_theta\": 10000.0",
                                "\"rope_theta\": 10000.0, \"rope_scaling\": {\"type\": \"su\", \"factor\": 2}"),
                        "rope_scaling type 'su' is not supported");
}

TEST(hf_sharded_checkpoint_with_a_missing_shard_names_it) {
    const char *dir = variant("qwen2", "{", "{");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm %s/model-00002-of-00002.safetensors", dir);
    CHECK(system(cmd) == 0);
    check_convert_fails(dir, "model-00002-of-00002.safetensors");
}

TEST(hf_shard_index_pointing_at_the_wrong_shard_fails) {
    const char *dir = variant("qwen2", "{", "{");
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    size_t n;
    char *text = kiln_read_file(path, &n), *at = strstr(text, "00001-of");
    CHECK(at);
    at[4] = '2';
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    check_convert_fails(dir, "where the index puts it");
}

TEST(hf_checkpoint_without_safetensors_says_so) {
    const char *dir = variant("llama", "{", "{");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm %s/model.safetensors", dir);
    CHECK(system(cmd) == 0);
    check_convert_fails(dir, "no model.safetensors");
}

TEST(hf_cli_convert_of_an_unsupported_architecture_exits_1_with_one_line) {
    const char *dir = variant("llama", "LlamaForCausalLM", "MambaForCausalLM");
    char cmd[700], *out, *err;
    snprintf(cmd, sizeof cmd, "%s convert %s -o %s", test_kiln_bin(), dir, test_tmp("x.gguf"));
    CHECK_EQ_INT(test_run(cmd, &out, &err), 1);
    CHECKF(strstr(err, "'MambaForCausalLM' is not supported") && strchr(err, '\n') == err + strlen(err) - 1, "%s", err);
    free(out);
    free(err);
}

/* ---- Export ---- */

static float value_at(const st_tensor *t, size_t i) {
    if (t->type == KILN_TYPE_F32) {
        float v;
        memcpy(&v, (const char *)t->data + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, (const char *)t->data + 2 * i, 2);
    return t->type == KILN_TYPE_F16 ? kiln_f16_to_f32(h) : kiln_bf16_to_f32(h);
}

/* Every tensor of the original checkpoint comes back with the same name, shape and values. */
static void check_same_tensors(const char *orig_dir, const char *exported, float atol) {
    hf_weights a, b;
    CHECKF(hf_weights_open(&a, orig_dir) == 0, "%s", kiln_errmsg());
    CHECKF(hf_weights_open(&b, exported) == 0, "%s", kiln_errmsg());
    int n_a = 0, n_b = b.files[0]->n_tensors;
    for (int f = 0; f < a.n_files; f++)
        for (int i = 0; i < a.files[f]->n_tensors; i++, n_a++) {
            const st_tensor *x = &a.files[f]->tensors[i];
            const char *name = strncmp(x->name, "transformer.", 12) ? x->name : x->name + 12;
            const st_tensor *y = hf_weights_find(&b, name);
            CHECKF(y, "%s: %s was not exported", exported, name);
            CHECKF(x->n_dims == y->n_dims && x->n_elems == y->n_elems && !memcmp(x->shape, y->shape, 8 * x->n_dims),
                   "%s: %s has another shape", exported, name);
            if (x->n_dims == 2) CHECKF(x->type == y->type, "%s: %s has type %s, was %s", exported, name, y->dtype, x->dtype);
            for (uint64_t k = 0; k < x->n_elems; k++)
                CHECKF(fabsf(value_at(x, k) - value_at(y, k)) <= atol, "%s: %s[%llu] is %g, was %g", exported, name,
                       (unsigned long long)k, value_at(y, k), value_at(x, k));
        }
    CHECK_EQ_INT(n_b, n_a);
    hf_weights_close(&a);
    hf_weights_close(&b);
}

static void check_export_round_trip(const char *name, float atol) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/golden/hf/%s", name);
    const char *gguf = test_tmp("model.gguf"), *out = test_tmp("exported");
    CHECKF(kiln_convert_hf(dir, gguf, -1) == 0, "%s", kiln_last_error());
    CHECKF(kiln_export_hf(gguf, out) == 0, "%s", kiln_last_error());
    check_same_tensors(dir, out, atol);
    kiln_config c1, c2;
    const hf_family *f1, *f2;
    CHECK(hf_config_read(dir, &c1, &f1) == 0 && hf_config_read(out, &c2, &f2) == 0);
    CHECK(f1 == f2 || !strcmp(f1->name, "GPT2Model"));
    CHECKF(!memcmp(&c1, &c2, sizeof c1), "%s: config.json reads back differently", name);
}

TEST(hf_export_llama_gives_back_the_checkpoint_bit_for_bit) { check_export_round_trip("llama", 0); }
TEST(hf_export_bf16_llama_keeps_bf16_and_the_tied_head) { check_export_round_trip("llama_bf16_sharded", 0); }
TEST(hf_export_mistral_qwen2_gpt2_phi3_give_back_their_checkpoints) {
    check_export_round_trip("mistral_window", 0);
    check_export_round_trip("qwen2", 0);
    check_export_round_trip("gpt2", 0);
    check_export_round_trip("phi3", 0);
    check_export_round_trip("llama_score", 0);
    check_export_round_trip("llama_yarn", 0);
    check_export_round_trip("llama3_scaled", 0);
}
/* Gemma's norms are stored as 1 + w: w comes back to f32 rounding of 1 + w */
TEST(hf_export_gemma_gives_back_its_checkpoint_to_rounding) { check_export_round_trip("gemma", 1e-7f); }

TEST(hf_export_of_baichuan_is_refused_naming_it) {
    const char *gguf = test_tmp("model.gguf");
    CHECK(kiln_convert_hf("tests/golden/hf/baichuan2", gguf, -1) == 0);
    CHECK(kiln_export_hf(gguf, test_tmp("out")) == -1);
    check_error_has("exporting baichuan is not supported");
}

TEST(hf_export_writes_tokenizer_files_that_encode_the_same) {
    const char *gguf = test_tmp("tg.gguf"), *out = test_tmp("tg-hf");
    CHECKF(kiln_convert_hf(test_data("tiny-gpt2"), gguf, -1) == 0, "%s", kiln_last_error());
    CHECKF(kiln_export_hf(gguf, out) == 0, "%s", kiln_last_error());
    char cmd[1024], *a, *b;
    snprintf(cmd, sizeof cmd, "%s convert %s -o %s/again.gguf && %s tokenize -m %s/again.gguf ' lowest newer x'",
             test_kiln_bin(), out, out, test_kiln_bin(), out);
    CHECK_EQ_INT(test_run(cmd, &a, NULL), 0);
    snprintf(cmd, sizeof cmd, "%s tokenize -m %s ' lowest newer x'", test_kiln_bin(), gguf);
    CHECK_EQ_INT(test_run(cmd, &b, NULL), 0);
    CHECK_STR(a, "14 3 5 6 10 9 3 2 15 10 19\n");
    CHECK_STR(b, a);
    free(a);
    free(b);
}

/* stories260K (llama2.c) -> GGUF -> Hugging Face (tokenizer.model) -> GGUF: the same model. */
TEST(hf_export_of_a_llama2c_model_round_trips_with_its_sentencepiece_tokenizer) {
    const char *g1 = test_tmp("s1.gguf"), *dir = test_tmp("s-hf"), *g2 = test_tmp("s2.gguf");
    CHECK(kiln_convert_llama2c(test_data("stories260K/stories260K.bin"), test_data("stories260K/tok512.bin"), g1,
                               KILN_TYPE_F32) == 0);
    CHECKF(kiln_export_hf(g1, dir) == 0, "%s", kiln_last_error());
    CHECKF(kiln_convert_hf(dir, g2, -1) == 0, "%s", kiln_last_error());
    kiln_model *m1 = kiln_model_open(g1), *m2 = kiln_model_open(g2);
    CHECK(m1 && m2);
    int32_t a[64], b[64];
    const char *text = "Once upon a time, there was a little girl named Lily.";
    int n = kiln_tokenize(m1, text, strlen(text), 1, a, 64);
    CHECK(n > 5 && kiln_tokenize(m2, text, strlen(text), 1, b, 64) == n && !memcmp(a, b, n * 4));
    kiln_ctx *c1 = kiln_ctx_new(m1, 0), *c2 = kiln_ctx_new(m2, 0);
    CHECK(kiln_eval(c1, a, n, NULL) == 0 && kiln_eval(c2, b, n, NULL) == 0);
    CHECK(!memcmp(kiln_logits(c1), kiln_logits(c2), 512 * sizeof(float)));
    kiln_ctx_free(c1);
    kiln_ctx_free(c2);
    kiln_model_close(m1);
    kiln_model_close(m2);
}

/* ---- llama <-> qwen2 ---- */

static void check_same_logits(const char *a_path, const char *b_path, float tol) {
    kiln_model *a = kiln_model_open(a_path), *b = kiln_model_open(b_path);
    CHECKF(a && b, "%s", kiln_last_error());
    int32_t tokens[MAX_TOKENS];
    int n = read_tokens("llama", tokens), V = kiln_model_config(a)->n_vocab;
    float *la = kiln_xmalloc(sizeof(float) * n * V), *lb = kiln_xmalloc(sizeof(float) * n * V);
    kiln_ctx *ca = kiln_ctx_new(a, 0), *cb = kiln_ctx_new(b, 0);
    CHECK(kiln_eval(ca, tokens, n, la) == 0 && kiln_eval(cb, tokens, n, lb) == 0);
    compare_logits(b_path, "moved vs original", lb, la, n, V, tol);
    kiln_ctx_free(ca);
    kiln_ctx_free(cb);
    free(la);
    free(lb);
    kiln_model_close(a);
    kiln_model_close(b);
}

TEST(arch_llama_to_qwen2_and_back_keeps_the_logits_and_the_tensors) {
    const char *llama = test_tmp("llama.gguf"), *qwen = test_tmp("qwen2.gguf"), *back = test_tmp("back.gguf");
    CHECK(kiln_convert_hf("tests/golden/hf/llama", llama, -1) == 0);
    CHECKF(kiln_convert_arch(llama, "qwen2", qwen) == 0, "%s", kiln_last_error());
    kiln_model *m = kiln_model_open(qwen);
    CHECK(m && !strcmp(kiln_model_config(m)->arch, "qwen2") && kiln_model_config(m)->qkv_bias);
    kiln_model_close(m);
    check_same_logits(llama, qwen, 1e-5f);
    CHECKF(kiln_convert_arch(qwen, "llama", back) == 0, "%s", kiln_last_error());
    check_same_logits(llama, back, 1e-5f);
    gguf_file *a = gguf_open(llama), *b = gguf_open(back);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        char name[96];
        snprintf(name, sizeof name, "%.*s", (int)a->tensors[i].name.len, a->tensors[i].name.ptr);
        const gguf_tensor *t = gguf_find_tensor(b, name);
        CHECKF(t && t->nbytes == a->tensors[i].nbytes && !memcmp(t->data, a->tensors[i].data, t->nbytes),
               "%s differs after llama -> qwen2 -> llama", name);
    }
    gguf_close(a);
    gguf_close(b);
}

TEST(arch_qwen2_with_biases_moves_to_llama_and_exports_with_attention_bias) {
    const char *qwen = test_tmp("qwen2.gguf"), *llama = test_tmp("llama.gguf"), *dir = test_tmp("llama-hf"),
               *again = test_tmp("again.gguf");
    CHECK(kiln_convert_hf("tests/golden/hf/qwen2", qwen, -1) == 0);
    CHECKF(kiln_convert_arch(qwen, "llama", llama) == 0, "%s", kiln_last_error());
    check_same_logits(qwen, llama, 1e-5f);
    CHECKF(kiln_export_hf(llama, dir) == 0, "%s", kiln_last_error());
    hf_weights hw;
    CHECK(hf_weights_open(&hw, dir) == 0);
    CHECK(hf_weights_find(&hw, "model.layers.1.self_attn.o_proj.bias")); /* zeros, as attention_bias needs */
    hf_weights_close(&hw);
    CHECKF(kiln_convert_hf(dir, again, -1) == 0, "%s", kiln_last_error());
    check_same_logits(qwen, again, 1e-5f);
}

TEST(arch_move_between_other_architectures_is_refused) {
    const char *gpt2 = test_tmp("gpt2.gguf");
    CHECK(kiln_convert_hf("tests/golden/hf/gpt2", gpt2, -1) == 0);
    CHECK(kiln_convert_arch(gpt2, "llama", test_tmp("x.gguf")) == -1);
    check_error_has("cannot move a gpt2 model to llama (only llama <-> qwen2)");
    const char *mistral = test_tmp("mistral.gguf");
    CHECK(kiln_convert_hf("tests/golden/hf/mistral_window", mistral, -1) == 0);
    CHECK(kiln_convert_arch(mistral, "qwen2", test_tmp("x.gguf")) == -1);
    check_error_has("sliding window");
}

/* llama.cpp keeps llama 3's scaling only as the rope_freqs tensor (no keys): such a file, read by kiln,
 * must rotate as the one with kiln's keys does. */
TEST(rope_llama3_as_llama_cpp_stores_it_rope_freqs_tensor_only_gives_the_same_logits) {
    const char *with_keys = test_tmp("keys.gguf"), *tensor_only = test_tmp("tensor.gguf");
    CHECK(kiln_convert_hf("tests/golden/hf/llama3_scaled", with_keys, -1) == 0);
    gguf_file *g = gguf_open(with_keys);
    CHECK(g && gguf_find_tensor(g, "rope_freqs.weight"));
    kiln_config c;
    CHECK(model_file_read_config(g, &c) == 0 && c.rope_scaling == KILN_ROPE_SCALING_LLAMA3);
    c.rope_scaling = KILN_ROPE_SCALING_NONE;
    gguf_writer *w = gguf_writer_new();
    model_file_write_config(w, &c);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char name[96];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        CHECK(gguf_add_tensor_ref(w, name, t->type, (int)t->n_dims, t->ne, t->data) == 0);
    }
    CHECK(gguf_write(w, tensor_only) == 0);
    gguf_writer_free(w);
    gguf_close(g);
    kiln_model *m = kiln_model_open(tensor_only);
    CHECKF(m && kiln_model_config(m)->rope_scaling == KILN_ROPE_SCALING_NONE, "%s", kiln_last_error());
    check_logits("llama3_scaled", m, 1e-5f);
    kiln_model_close(m);
}

TEST(rope_logn_attention_scales_queries_past_the_trained_context_only) {
    kiln_config c = {.ctx_len = 64, .rope_orig_ctx = 16, .attn_logn = 1};
    CHECK(kiln_logn_scale(&c, 15) == 1.0f);
    CHECK_CLOSE(&(float){kiln_logn_scale(&c, 31)}, &(float){(float)(log(32.0) / log(16.0))}, 1, 1e-7f, 0, "pos 31");
    c.attn_logn = 0;
    CHECK(kiln_logn_scale(&c, 40) == 1.0f);
    /* in the forward pass: the llama case with a trained context of 4 (linear scaling by 1 changes no
     * frequency) gives the same logits up to position 3 and others after it */
    const char *plain = test_tmp("plain.gguf"), *logn = test_tmp("logn.gguf");
    CHECK(kiln_convert_hf("tests/golden/hf/llama", plain, -1) == 0);
    gguf_file *g = gguf_open(plain);
    kiln_config cfg;
    CHECK(g && model_file_read_config(g, &cfg) == 0);
    cfg.attn_logn = 1, cfg.rope_scaling = KILN_ROPE_SCALING_LINEAR, cfg.rope_factor = 1, cfg.rope_orig_ctx = 4;
    gguf_writer *w = gguf_writer_new();
    model_file_write_config(w, &cfg);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        char name[96];
        snprintf(name, sizeof name, "%.*s", (int)g->tensors[i].name.len, g->tensors[i].name.ptr);
        CHECK(gguf_add_tensor_ref(w, name, g->tensors[i].type, (int)g->tensors[i].n_dims, g->tensors[i].ne,
                                  g->tensors[i].data) == 0);
    }
    CHECK(gguf_write(w, logn) == 0);
    gguf_writer_free(w);
    gguf_close(g);
    kiln_model *a = kiln_model_open(plain), *b = kiln_model_open(logn);
    CHECKF(a && b && kiln_model_config(b)->attn_logn, "%s", kiln_last_error());
    int32_t tokens[MAX_TOKENS];
    int n = read_tokens("llama", tokens), V = kiln_model_config(a)->n_vocab;
    float *la = kiln_xmalloc(sizeof(float) * n * V), *lb = kiln_xmalloc(sizeof(float) * n * V);
    kiln_ctx *ca = kiln_ctx_new(a, 0), *cb = kiln_ctx_new(b, 0);
    CHECK(kiln_eval(ca, tokens, n, la) == 0 && kiln_eval(cb, tokens, n, lb) == 0);
    CHECK(!memcmp(la, lb, sizeof(float) * 4 * V));
    CHECK(memcmp(la + 4 * V, lb + 4 * V, sizeof(float) * V));
    kiln_ctx_free(ca), kiln_ctx_free(cb), free(la), free(lb);
    kiln_model_close(a), kiln_model_close(b);
}
