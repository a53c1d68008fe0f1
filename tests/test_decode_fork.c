/* Forks: branches that share a context's prefix copy-on-write behave like independent contexts, copy
 * each other for beam reordering, and do not hold a copy of the prefix each. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "test.h"
#include "test_decode.h"

/* Logits after REF's prompt (its first N positions) then TOKS. */
static void ref_logits(kiln_ctx *ref, int n, const int32_t *toks, int k, float *out) {
    CHECK(kiln_ctx_truncate(ref, n) == 0);
    CHECK(kiln_eval(ref, toks, k, NULL) == 0);
    memcpy(out, kiln_logits(ref), sizeof(float) * kiln_model_config(kiln_ctx_model(ref))->n_vocab);
}

static void check_branches(kiln_model *m, int n_prompt) {
    int V = kiln_model_config(m)->n_vocab;
    int32_t *prompt = malloc(sizeof(int32_t) * n_prompt);
    for (int i = 0; i < n_prompt; i++) prompt[i] = (i * 7 + 3) % V;
    kiln_ctx *base = kiln_ctx_new(m, 0), *ref = kiln_ctx_new(m, 0);
    CHECK(kiln_eval(base, prompt, n_prompt, NULL) == 0);
    CHECK(kiln_eval(ref, prompt, n_prompt, NULL) == 0);
    kiln_fork *f = kiln_fork_new(base, 3);
    CHECKF(f != NULL, "%s", kiln_last_error());
    float *want = malloc(sizeof(float) * V);
    CHECK(kiln_eval(base, (int32_t[]){1}, 1, NULL) == 0); /* the base moving on does not disturb the branches */
    for (int b = 0; b < 3; b++) {
        kiln_ctx *c = kiln_fork_ctx(f, b);
        CHECK_EQ_INT(kiln_ctx_pos(c), n_prompt);
        int32_t toks[2] = {b + 2, b + 5};
        CHECK(kiln_eval(c, toks, 2, NULL) == 0);
        ref_logits(ref, n_prompt, toks, 2, want);
        CHECK_CLOSE(kiln_logits(c), want, V, 1e-5f, 1e-5f, "branch logits");
    }
    /* branch 0 becomes a copy of branch 2, then both go on alike */
    CHECK(kiln_fork_copy(f, 0, 2) == 0);
    int32_t next = 9;
    CHECK(kiln_eval(kiln_fork_ctx(f, 0), &next, 1, NULL) == 0);
    CHECK(kiln_eval(kiln_fork_ctx(f, 2), &next, 1, NULL) == 0);
    ref_logits(ref, n_prompt, (int32_t[]){4, 7, 9}, 3, want);
    CHECK_CLOSE(kiln_logits(kiln_fork_ctx(f, 0)), want, V, 1e-5f, 1e-5f, "copied branch");
    CHECK_CLOSE(kiln_logits(kiln_fork_ctx(f, 2)), want, V, 1e-5f, 1e-5f, "source branch");
    CHECK(kiln_ctx_truncate(kiln_fork_ctx(f, 1), n_prompt - 1) == 0);
    CHECK(kiln_fork_copy(f, 2, 1) < 0);
    CHECKF(strstr(kiln_last_error(), "before the shared prefix"), "%s", kiln_last_error());
    kiln_fork_free(f);
    kiln_ctx_free(base), kiln_ctx_free(ref);
    free(want), free(prompt);
}

TEST(fork_branches_continue_like_fresh_contexts_with_a_copied_prefix) {
    kiln_model *m = tiny_model("m.gguf", 32, 64, 5, 1.0f);
    check_branches(m, 20); /* 20 positions of a tiny model: copied */
    kiln_model_close(m);
}

TEST(fork_branches_continue_like_fresh_contexts_with_a_shared_prefix) {
    kiln_model *m = random_model("m.gguf", 32, 320, 256, 2, 5, 1.0f);
    check_branches(m, 300); /* 300 positions of 4 KiB: shared */
    kiln_model_close(m);
}

/* Over the mappings of fork caches (the memfd "kiln-kv-prefix"): the proportional set size (a page
 * mapped N times counts 1/N each time) and the pages copied on write. */
static void fork_memory(long *pss, long *copied) {
    FILE *f = fopen("/proc/self/smaps", "r");
    CHECK(f != NULL);
    char line[512];
    int in_fork = 0;
    long kb;
    *pss = *copied = 0;
    while (fgets(line, sizeof line, f)) {
        if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' ')) in_fork = strstr(line, "kiln-kv-prefix") != NULL;
        else if (in_fork && sscanf(line, "Pss: %ld kB", &kb) == 1) *pss += kb * 1024;
        else if (in_fork && sscanf(line, "Anonymous: %ld kB", &kb) == 1) *copied += kb * 1024;
    }
    fclose(f);
}

TEST(branches_of_a_long_prompt_share_its_cache_instead_of_copying_it) {
    kiln_model *m = random_model("m.gguf", 32, 320, 256, 2, 6, 1.0f);
    int n = 300;
    int32_t prompt[300];
    for (int i = 0; i < n; i++) prompt[i] = i % 32;
    kiln_ctx *base = kiln_ctx_new(m, 0);
    CHECK(kiln_eval(base, prompt, n, NULL) == 0);
    long prefix = (long)kiln_model_kv_bytes_per_token(m) * n, pss, copied;
    kiln_fork *f = kiln_fork_new(base, 8);
    CHECK(f != NULL);
    for (int b = 0; b < 8; b++) CHECK(kiln_eval(kiln_fork_ctx(f, b), (int32_t[]){b, b + 1}, 2, NULL) == 0);
    fork_memory(&pss, &copied);
    /* every branch read the whole prefix (attention) and wrote two positions */
    CHECKF(pss > prefix / 2 && pss < 2 * prefix, "8 branches of a %ld KiB prefix hold %ld KiB", prefix / 1024,
           pss / 1024);
    CHECKF(copied < prefix / 2, "8 branches copied %ld KiB of a %ld KiB prefix", copied / 1024, prefix / 1024);
    kiln_fork_free(f);
    kiln_ctx_free(base);
    kiln_model_close(m);
}
