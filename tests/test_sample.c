/* Sampling: greedy, temperature, top-k, top-p, seeds. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "decode/processor.h"
#include "decode/sample.h"
#include "kiln.h"
#include "test.h"

TEST(greedy_sampling_picks_the_largest_logit) {
    float l[] = {0.1f, 2.0f, -1.0f, 1.9f};
    kiln_sampling s = {0, 0, 1, 1};
    uint64_t st = 1;
    CHECK_EQ_INT(kiln_sample(l, 4, &s, &st), 1);
}

TEST(top_k_one_is_greedy_at_any_temperature) {
    float l[] = {0.1f, 2.0f, -1.0f, 1.9f};
    kiln_sampling s = {5.0f, 1, 1, 7};
    uint64_t st = 7;
    for (int i = 0; i < 100; i++) CHECK_EQ_INT(kiln_sample(l, 4, &s, &st), 1);
}

static void counts(float *logits, int n, kiln_sampling s, int draws, int *out) {
    memset(out, 0, sizeof(int) * n);
    uint64_t st = s.seed;
    for (int i = 0; i < draws; i++) {
        float l[16];
        memcpy(l, logits, sizeof(float) * n);
        out[kiln_sample(l, n, &s, &st)]++;
    }
}

TEST(sampling_frequencies_follow_the_softmax) {
    float l[] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    int c[3];
    counts(l, 3, (kiln_sampling){1.0f, 0, 1.0f, 3}, 30000, c);
    double chi = 0, p[] = {0.5, 0.3, 0.2};
    for (int i = 0; i < 3; i++) chi += (c[i] - 30000 * p[i]) * (c[i] - 30000 * p[i]) / (30000 * p[i]);
    CHECKF(chi < 13.8, "chi-square %.2f with 2 dof (p < 0.001): counts %d %d %d", chi, c[0], c[1], c[2]);
}

TEST(top_p_keeps_the_token_that_crosses_the_threshold) {
    float l[] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    int c[3];
    counts(l, 3, (kiln_sampling){1.0f, 0, 0.6f, 5}, 5000, c); /* 0.5 < 0.6: token 1 crosses it and stays */
    CHECKF(c[0] > 0 && c[1] > 0 && c[2] == 0, "counts %d %d %d", c[0], c[1], c[2]);
    counts(l, 3, (kiln_sampling){1.0f, 0, 0.5f, 5}, 5000, c); /* 0.5 reaches 0.5 exactly: only token 0 */
    CHECKF(c[0] == 5000, "counts %d %d %d", c[0], c[1], c[2]);
}

TEST(top_k_keeps_only_the_k_most_probable) {
    float l[] = {0.0f, 3.0f, 2.9f, 1.0f, 2.8f};
    int c[5];
    counts(l, 5, (kiln_sampling){1.0f, 2, 1.0f, 9}, 5000, c);
    CHECKF(c[1] > 0 && c[2] > 0 && c[0] + c[3] + c[4] == 0, "counts %d %d %d %d %d", c[0], c[1], c[2], c[3], c[4]);
}

TEST(same_seed_gives_the_same_draws) {
    float l[] = {0.0f, 0.5f, 0.2f, 0.1f, 0.3f};
    int a[5], b[5];
    counts(l, 5, (kiln_sampling){1.0f, 0, 0.9f, 11}, 1000, a);
    counts(l, 5, (kiln_sampling){1.0f, 0, 0.9f, 11}, 1000, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
}

TEST(sampling_check_rejects_out_of_range_parameters) {
    CHECK(kiln_sampling_check(&(kiln_sampling){-1, 0, 1, 0}) < 0);
    CHECK(strstr(kiln_last_error(), "temperature") != NULL);
    CHECK(kiln_sampling_check(&(kiln_sampling){1, 0, 1.5f, 0}) < 0);
    CHECK(strstr(kiln_last_error(), "top-p") != NULL);
    CHECK(kiln_sampling_check(&(kiln_sampling){1, 0, 0, 0}) < 0);
    CHECK(kiln_sampling_check(&(kiln_sampling){1, -1, 1, 0}) < 0);
    CHECK(kiln_sampling_check(&(kiln_sampling){0.7f, 40, 0.9f, 0}) == 0);
}

/* The processors that only remove tokens hand their exponentials on to the draw; the draw with them
 * picks what it picks with exponentials taken afresh from the processed logits. */
TEST(a_draw_with_the_weights_the_chain_kept_equals_one_with_fresh_weights) {
    enum { V = 4099 };
    float *x = malloc(sizeof(float) * V), *y = malloc(sizeof(float) * V);
    uint64_t s = 7;
    for (int i = 0; i < V; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)(-1.2 * log(1 + (double)(s >> 11) / 9007199254740992.0 * V));
    }
    for (int chain = 0; chain < 4; chain++) {
        kiln_gen_params p;
        kiln_gen_defaults(&p);
        p.search = KILN_SEARCH_SAMPLE;
        if (chain == 0) p.top_p = 0.9f;
        if (chain == 1) p.typical_p = 0.95f;
        if (chain == 2) p.top_k = 40, p.min_p = 0.05f;
        if (chain == 3) p.top_p = 0.99f, p.min_p = 0.001f, p.typical_p = 0.9f;
        decode_chain ch;
        decode_chain_init(&ch, &p, V, 1);
        for (int k = 0; k < 20; k++) {
            double u = (k + 0.5) / 20, lp_kept, lp_fresh;
            memcpy(y, x, sizeof(float) * V);
            decode_cands c;
            decode_chain_apply(&ch, &(decode_history){0}, y, &c);
            CHECKF(c.weighted || chain == 2, "chain %d: the weights were dropped", chain); /* 2 takes none */
            decode_cands fresh = c;
            int kept = decode_draw(&c, u, &lp_kept);
            fresh.weighted = 0;
            int again = decode_draw(&fresh, u, &lp_fresh);
            CHECKF(kept == again, "chain %d, u %g: drew %d with the kept weights, %d with fresh ones", chain, u, kept, again);
            CHECKF(fabs(lp_kept - lp_fresh) < 1e-6, "chain %d: log-probability %g, fresh %g", chain, lp_kept, lp_fresh);
        }
        decode_chain_free(&ch);
    }
    free(x), free(y);
}
