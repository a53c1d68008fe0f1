/* The stories260K model end to end, and the model loader's and CLI's answers to bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "format/gguf.h"
#include "kiln.h"
#include "test.h"
#include "test_decode.h"

/* Runs `kiln ARGS`, expecting failure with a one-line error on stderr containing WANT. */
static void expect_cli_error(const char *args, const char *want) {
    char cmd[16384], *err;
    snprintf(cmd, sizeof cmd, "%s %s", test_kiln_bin(), args);
    int rc = test_run(cmd, NULL, &err);
    CHECKF(rc == 1, "'kiln %s' exited %d, expected 1 (stderr: %s)", args, rc, err);
    CHECKF(strstr(err, want) != NULL, "'kiln %s' said \"%s\", expected it to mention \"%s\"", args, err, want);
    CHECKF(strncmp(err, "kiln: ", 6) == 0 && strchr(err, '\n') == err + strlen(err) - 1,
           "'kiln %s': error is not one line starting 'kiln: ': \"%s\"", args, err);
    free(err);
}

TEST(stories260K_greedy_200_tokens_match_llama2c_byte_for_byte) {
    const char *model = stories_gguf();
    char cmd[16384], *out, *err;
    snprintf(cmd, sizeof cmd, "%s generate -m %s --temp 0 -n 200", test_kiln_bin(), model);
    int rc = test_run(cmd, &out, &err);
    CHECKF(rc == 0, "generate failed: %s", err);
    size_t n;
    char *want = kiln_read_file(test_data("stories260K/expected_greedy_200.txt"), &n);
    CHECKF(want != NULL, "%s", kiln_last_error());
    CHECKF(strlen(out) == n && memcmp(out, want, n) == 0, "got %zu bytes:\n%s\nexpected %zu bytes:\n%s", strlen(out),
           out, n, want);
}

TEST(stories260K_greedy_text_is_the_same_in_bf16_for_the_first_sentence) {
    const char *f32 = stories_gguf();
    const char *bf16 = test_tmp("bf16.gguf");
    char cmd[16384], *out;
    snprintf(cmd, sizeof cmd, "%s convert %s --tokenizer %s -o %s --type bf16", test_kiln_bin(),
             test_data("stories260K/stories260K.bin"), test_data("stories260K/tok512.bin"), bf16);
    CHECK(test_run(cmd, NULL, NULL) == 0);
    snprintf(cmd, sizeof cmd, "%s generate -m %s --temp 0 -n 16", test_kiln_bin(), bf16);
    CHECK(test_run(cmd, &out, NULL) == 0);
    CHECKF(strncmp(out, "Once upon a time, there was a little girl named Lily.", 52) == 0, "bf16 said: %s", out);
    (void)f32;
}

TEST(prefill_logits_equal_token_by_token_logits_on_stories260K) {
    kiln_model *m = kiln_model_open(stories_gguf());
    CHECKF(m != NULL, "%s", kiln_last_error());
    int32_t toks[64];
    const char *text = "Once upon a time, there was a big dog named Max. He liked to run.";
    int n = kiln_tokenize(m, text, strlen(text), 1, toks, 64);
    CHECK(n > 10);
    int V = kiln_model_config(m)->n_vocab;
    float *all = malloc(sizeof(float) * n * V);
    kiln_ctx *a = kiln_ctx_new(m, 0), *b = kiln_ctx_new(m, 0);
    CHECK(kiln_eval(a, toks, n, all) == 0);
    for (int i = 0; i < n; i++) {
        CHECK(kiln_eval(b, toks + i, 1, NULL) == 0);
        CHECK_CLOSE(kiln_logits(b), all + (size_t)i * V, V, 1e-5f, 1e-5f, "decode vs prefill logits");
    }
}

TEST(context_rolls_back_and_recomputes_the_same_logits) {
    kiln_model *m = kiln_model_open(stories_gguf());
    CHECK(m != NULL);
    int V = kiln_model_config(m)->n_vocab;
    int32_t toks[] = {1, 403, 407, 261, 378, 415};
    kiln_ctx *c = kiln_ctx_new(m, 0);
    CHECK(kiln_eval(c, toks, 6, NULL) == 0);
    float *first = malloc(sizeof(float) * V);
    memcpy(first, kiln_logits(c), sizeof(float) * V);
    CHECK(kiln_ctx_truncate(c, 3) == 0);
    CHECK_EQ_INT(kiln_ctx_pos(c), 3);
    CHECK(kiln_eval(c, toks + 3, 3, NULL) == 0);
    CHECK_CLOSE(kiln_logits(c), first, V, 1e-5f, 1e-5f, "logits after rollback"); /* batch sizes differ: sum order too */
}

TEST(eval_rejects_tokens_outside_the_vocabulary_and_context_overflow) {
    kiln_model *m = kiln_model_open(stories_gguf());
    CHECK(m != NULL);
    kiln_ctx *c = kiln_ctx_new(m, 4);
    int32_t bad[] = {1, 512};
    CHECK(kiln_eval(c, bad, 2, NULL) < 0);
    CHECKF(strstr(kiln_last_error(), "token id 512") != NULL, "%s", kiln_last_error());
    int32_t five[] = {1, 2, 3, 4, 5};
    CHECK(kiln_eval(c, five, 5, NULL) < 0);
    CHECKF(strstr(kiln_last_error(), "do not fit in the context of 4") != NULL, "%s", kiln_last_error());
}

TEST(convert_rejects_a_missing_checkpoint) {
    expect_cli_error("convert /nonexistent/model.bin -o build/tmp/x.gguf", "/nonexistent/model.bin");
}

TEST(convert_rejects_a_truncated_checkpoint) {
    const char *cut = test_tmp("cut.bin");
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "head -c 100000 %s > %s", test_data("stories260K/stories260K.bin"), cut);
    CHECK(test_run(cmd, NULL, NULL) == 0);
    snprintf(cmd, sizeof cmd, "convert %s -o %s", cut, test_tmp("out.gguf"));
    expect_cli_error(cmd, "truncated or not a llama2.c checkpoint");
}

TEST(convert_rejects_a_tokenizer_of_the_wrong_size) {
    char args[16384];
    snprintf(args, sizeof args, "convert %s --tokenizer %s -o %s", test_data("stories260K/stories260K.bin"),
             test_data("llama2-tokenizer/tokenizer.bin"), test_tmp("out.gguf"));
    char cmd[16500], *err;
    snprintf(cmd, sizeof cmd, "%s %s", test_kiln_bin(), args);
    CHECK(test_run(cmd, NULL, &err) == 1);
    CHECKF(strstr(err, "tokenizer.bin") != NULL, "error does not name the tokenizer: %s", err);
}

TEST(generate_rejects_nonsense_flag_values) {
    const char *m = stories_gguf();
    char args[8192];
    snprintf(args, sizeof args, "generate -m %s -n -5", m);
    expect_cli_error(args, "-n: -5 is out of range");
    snprintf(args, sizeof args, "generate -m %s --temp -1", m);
    expect_cli_error(args, "--temp: -1 is out of range");
    snprintf(args, sizeof args, "generate -m %s --top-p 2", m);
    expect_cli_error(args, "--top-p: 2 is out of range");
    snprintf(args, sizeof args, "generate -m %s --top-k x", m);
    expect_cli_error(args, "--top-k: 'x' is not an integer");
    snprintf(args, sizeof args, "generate -m %s --bogus 1", m);
    expect_cli_error(args, "unknown flag '--bogus'");
    expect_cli_error("generate -p hello", "-m MODEL is required");
    snprintf(args, sizeof args, "generate -m %s -n", m);
    expect_cli_error(args, "-n needs a value");
}

TEST(generate_rejects_a_prompt_longer_than_the_context) {
    const char *m = stories_gguf();
    char *prompt = malloc(6000), args[16384];
    for (int i = 0; i < 5999; i++) prompt[i] = "ab c"[i % 4];
    prompt[5999] = 0;
    snprintf(args, sizeof args, "generate -m %s -n 4 -p '%s'", m, prompt);
    expect_cli_error(args, "longer than the model's context of 512 tokens");
}

TEST(model_open_rejects_missing_empty_and_png_files) {
    expect_cli_error("info /nonexistent.gguf", "/nonexistent.gguf");
    const char *empty = test_tmp("empty.gguf"), *png = test_tmp("image.png");
    FILE *f = fopen(empty, "wb");
    fclose(f);
    f = fopen(png, "wb");
    fwrite("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 1, 16, f);
    fclose(f);
    char args[8192];
    snprintf(args, sizeof args, "info %s", empty);
    expect_cli_error(args, empty);
    snprintf(args, sizeof args, "info %s", png);
    expect_cli_error(args, png);
}

TEST(model_open_rejects_a_tensor_shape_that_disagrees_with_the_config) {
    gguf_file *g = gguf_open(stories_gguf());
    CHECK(g != NULL);
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "llama.feed_forward_length", 100); /* the file's tensors have 172 */
    gguf_copy_kvs(w, g);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        CHECK(gguf_add_tensor_ref(w, name, t->type, (int)t->n_dims, t->ne, t->data) == 0);
    }
    const char *bad = test_tmp("bad_shape.gguf");
    CHECK(gguf_write(w, bad) == 0);
    CHECK(kiln_model_open(bad) == NULL);
    CHECKF(strstr(kiln_last_error(), "blk.0.ffn_up.weight has shape [64, 172], expected [64, 100]") != NULL, "%s", kiln_last_error());
}

TEST(info_reports_architecture_and_kv_cache_per_token) {
    char cmd[8192], *out;
    snprintf(cmd, sizeof cmd, "%s info %s", test_kiln_bin(), stories_gguf());
    CHECK(test_run(cmd, &out, NULL) == 0);
    CHECKF(strstr(out, "architecture    llama") && strstr(out, "kv cache        1280 bytes per token") &&
               strstr(out, "blk.4.ffn_down.weight") && strstr(out, "heads           8 (kv heads 4, head dim 8)"),
           "%s", out);
}
