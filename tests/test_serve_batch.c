/* Batched decoding (src/api/batch.c): one step of several sequences at different positions gives each
 * the logits that evaluating it alone gives, whatever the number of sequences and the width of the
 * matrices. */
#include <stdlib.h>
#include <string.h>

#include "api/batch.h"
#include "kiln.h"
#include "test.h"
#include "test_decode.h"

/* N sequences with prompts of different lengths, stepped together, against the same steps alone. */
static void check_batch_matches_single(kiln_model *m, int n) {
    int V = kiln_model_config(m)->n_vocab;
    kiln_ctx *batched[24], *alone[24];
    kiln_batch *b = kiln_batch_new(m, n);
    CHECK(b && n <= 24);
    for (int i = 0; i < n; i++) {
        int32_t prompt[5];
        for (int j = 0; j < 5; j++) prompt[j] = (1 + 3 * i + 7 * j) % V;
        batched[i] = kiln_ctx_new(m, 64);
        alone[i] = kiln_ctx_new(m, 64);
        CHECK(kiln_eval(batched[i], prompt, 1 + i % 5, NULL) == 0);
        CHECK(kiln_eval(alone[i], prompt, 1 + i % 5, NULL) == 0);
    }
    for (int step = 0; step < 3; step++) {
        int32_t next[24];
        for (int i = 0; i < n; i++) next[i] = (10 + 11 * i + step) % V;
        CHECK(kiln_batch_eval(b, batched, next, n) == 0);
        for (int i = 0; i < n; i++) {
            CHECK(kiln_eval(alone[i], &next[i], 1, NULL) == 0);
            CHECK_EQ_INT(kiln_ctx_pos(batched[i]), kiln_ctx_pos(alone[i]));
            CHECK_CLOSE(kiln_logits(batched[i]), kiln_logits(alone[i]), (size_t)V, 1e-4f, 1e-4f, "logits");
        }
    }
    for (int i = 0; i < n; i++) kiln_ctx_free(batched[i]), kiln_ctx_free(alone[i]);
    kiln_batch_free(b);
}

TEST(batch_eval_matches_single_sequence_eval_on_llama) {
    kiln_model *m = stories_model(NULL);
    CHECK(m);
    check_batch_matches_single(m, 3);
    kiln_model_close(m);
}

TEST(batch_eval_matches_single_sequence_eval_on_gpt2) {
    kiln_model *m = kiln_model_open("tests/golden/gpt2_f32.gguf");
    CHECKF(m, "%s", kiln_last_error());
    check_batch_matches_single(m, 3);
    kiln_model_close(m);
}

/* Matrices big enough to be shared by two threads, and steps short enough for the multi-row matvec
 * (3 rows) and long enough for the GEMM (18 rows). */
TEST(batch_eval_matches_single_sequence_eval_on_wide_layers_in_short_and_long_steps) {
    kiln_model *m = random_model("wide.gguf", 1024, 64, 256, 1, 5, 4.0f);
    check_batch_matches_single(m, 3);
    check_batch_matches_single(m, 18);
    kiln_model_close(m);
}

TEST(batch_eval_refuses_a_full_context_and_changes_nothing) {
    kiln_model *m = stories_model(NULL);
    CHECK(m);
    kiln_ctx *c[2] = {kiln_ctx_new(m, 8), kiln_ctx_new(m, 4)};
    int32_t toks[4] = {1, 2, 3, 4};
    CHECK(kiln_eval(c[0], toks, 2, NULL) == 0);
    CHECK(kiln_eval(c[1], toks, 4, NULL) == 0);
    kiln_batch *b = kiln_batch_new(m, 2);
    CHECK(kiln_batch_eval(b, c, toks, 2) == -1);
    CHECK(strstr(kiln_last_error(), "sequence 1") != NULL);
    CHECK_EQ_INT(kiln_ctx_pos(c[0]), 2);
    kiln_batch_free(b);
    kiln_ctx_free(c[0]);
    kiln_ctx_free(c[1]);
    kiln_model_close(m);
}
