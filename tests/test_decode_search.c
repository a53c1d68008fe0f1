/* Searches on tiny models whose every sequence can be enumerated: greedy, sampling, beam search
 * against exhaustive search, diverse beams, stochastic beams against the model's probabilities. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "test.h"
#include "test_decode.h"

static kiln_gen_params defaults(kiln_search s, int n_new) {
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.search = s, p.max_new_tokens = n_new;
    return p;
}

static void generate(kiln_ctx *c, const int32_t *prompt, int n, const kiln_gen_params *p, kiln_gen_result *r) {
    CHECKF(kiln_generate(c, prompt, n, p, r) == 0, "%s", kiln_last_error());
}

/* Index of a sequence of N tokens of a V-token vocabulary, as a base-V number. */
static int seq_index(const int32_t *t, int n, int V) {
    int k = 0;
    for (int i = 0; i < n; i++) k = k * V + t[i];
    return k;
}

TEST(greedy_search_takes_the_argmax_at_every_step_and_restores_the_context) {
    kiln_model *m = tiny_model("m.gguf", 16, 32, 3, 3.0f);
    kiln_ctx *c = kiln_ctx_new(m, 0), *ref = kiln_ctx_new(m, 0);
    int32_t prompt[3] = {1, 5, 9}, want[12];
    CHECK(kiln_eval(ref, prompt, 3, NULL) == 0);
    for (int i = 0; i < 12; i++) {
        const float *l = kiln_logits(ref);
        int best = 0;
        for (int j = 1; j < 16; j++) best = l[j] > l[best] ? j : best;
        want[i] = best;
        CHECK(kiln_eval(ref, &want[i], 1, NULL) == 0);
    }
    kiln_gen_params p = defaults(KILN_SEARCH_GREEDY, 12);
    kiln_gen_result r;
    generate(c, prompt, 3, &p, &r);
    CHECK_EQ_INT(r.n_seqs, 1);
    CHECK_EQ_INT(r.seqs[0].n_tokens, 12);
    CHECK(memcmp(r.seqs[0].tokens, want, sizeof want) == 0);
    CHECK_EQ_INT(r.seqs[0].stop, KILN_STOP_LENGTH);
    CHECK(fabs(r.seqs[0].logprob - sequence_logprob(m, prompt, 3, want, 12)) < 1e-4);
    CHECK_EQ_INT(kiln_ctx_pos(c), 0);
    kiln_gen_result_free(&r);
    kiln_ctx_free(c), kiln_ctx_free(ref), kiln_model_close(m);
}

TEST(samples_follow_the_model_distribution_over_two_token_sequences) {
    enum { V = 6, N = 6000 };
    kiln_model *m = tiny_model("m.gguf", V, 16, 11, 2.5f);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t prompt[1] = {2};
    double p[V * V];
    for (int i = 0; i < V * V; i++) p[i] = exp(sequence_logprob(m, prompt, 1, (int32_t[]){i / V, i % V}, 2));
    kiln_gen_params gp = defaults(KILN_SEARCH_SAMPLE, 2);
    gp.num_return = N, gp.seed = 99;
    kiln_gen_result r;
    generate(c, prompt, 1, &gp, &r);
    CHECK_EQ_INT(r.n_seqs, N);
    int counts[V * V] = {0}, dof;
    for (int i = 0; i < N; i++) counts[seq_index(r.seqs[i].tokens, 2, V)]++;
    double chi = chi_square(counts, p, V * V, N, &dof);
    CHECKF(chi < chi_square_limit(dof), "chi-square %.1f > %.1f (%d dof)", chi, chi_square_limit(dof), dof);
    kiln_gen_result_free(&r);
    kiln_ctx_free(c), kiln_model_close(m);
}

TEST(sampling_depends_on_the_seed_not_on_the_thread_count) {
    kiln_model *m = tiny_model("m.gguf", 64, 64, 5, 1.5f);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t prompt[2] = {1, 2};
    kiln_gen_params p = defaults(KILN_SEARCH_SAMPLE, 40);
    p.temperature = 0.9f, p.top_p = 0.95f, p.top_k = 30, p.seed = 1234;
    kiln_gen_result a, b, d;
    kiln_set_threads(1);
    generate(c, prompt, 2, &p, &a);
    kiln_set_threads(2);
    generate(c, prompt, 2, &p, &b);
    p.seed = 1235;
    generate(c, prompt, 2, &p, &d);
    CHECK(a.seqs[0].n_tokens == b.seqs[0].n_tokens && memcmp(a.seqs[0].tokens, b.seqs[0].tokens, 40 * 4) == 0);
    CHECK(memcmp(a.seqs[0].tokens, d.seqs[0].tokens, 40 * 4) != 0);
    kiln_gen_result_free(&a), kiln_gen_result_free(&b), kiln_gen_result_free(&d);
    kiln_ctx_free(c), kiln_model_close(m);
}

/* Every sequence beam search could return with V tokens, stop token 0 and at most L new tokens:
 * j non-stop tokens then the stop token (j < L), or L non-stop tokens, scored as HF scores them. */
typedef struct {
    int32_t t[8];
    int n;
    double score;
} scored;

static int by_score_desc(const void *a, const void *b) {
    double x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return x > y ? -1 : x < y;
}

static int enumerate(kiln_model *m, const int32_t *prompt, int V, int L, int stop, double alpha, scored *out) {
    int n = 0;
    for (int len = 1; len <= L; len++) {
        int total = 1;
        for (int i = 0; i < len; i++) total *= V;
        for (int k = 0; k < total; k++) {
            scored s = {.n = len};
            for (int i = len - 1, x = k; i >= 0; i--, x /= V) s.t[i] = x % V;
            int stops = 0;
            for (int i = 0; i < len; i++) stops += s.t[i] == stop;
            int ends_with_stop = s.t[len - 1] == stop;
            if (stop >= 0 && (stops > ends_with_stop || (!ends_with_stop && len < L))) continue;
            if (stop < 0 && len < L) continue;
            s.score = sequence_logprob(m, prompt, 1, s.t, len) / pow(len, alpha);
            if (ends_with_stop) s.n--; /* returned sequences leave the stop token out */
            out[n++] = s;
        }
    }
    qsort(out, n, sizeof *out, by_score_desc);
    return n;
}

static void check_beams_equal_exhaustive(int V, int L, int stop, double alpha) {
    kiln_model *m = tiny_model("m.gguf", V, 16, 21, 2.0f);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t prompt[1] = {1}, stops[1] = {stop};
    scored *all = malloc(sizeof(scored) * 4096);
    int n_all = enumerate(m, prompt, V, L, stop, alpha, all);
    kiln_gen_params p = defaults(KILN_SEARCH_BEAM, L);
    p.num_beams = 64, p.num_return = 6, p.length_penalty = (float)alpha, p.early_stopping = KILN_EARLY_STOP_NEVER;
    if (stop >= 0) p.stop_tokens = stops, p.n_stop_tokens = 1;
    else p.stop_tokens = stops, p.n_stop_tokens = 0;
    kiln_gen_result r;
    generate(c, prompt, 1, &p, &r);
    CHECK_EQ_INT(r.n_seqs, 6);
    for (int i = 0; i < 6; i++) {
        const kiln_gen_sequence *s = &r.seqs[i];
        CHECKF(fabs(s->score - all[i].score) < 1e-4, "rank %d: beam score %.6f, exhaustive %.6f", i, s->score,
               all[i].score);
        CHECKF(s->n_tokens == all[i].n && memcmp(s->tokens, all[i].t, sizeof(int32_t) * s->n_tokens) == 0,
               "rank %d: beam search and exhaustive search found different sequences", i);
    }
    CHECK(n_all >= 6);
    kiln_gen_result_free(&r);
    free(all);
    kiln_ctx_free(c), kiln_model_close(m);
}

TEST(beam_search_as_wide_as_vocab_to_the_length_equals_exhaustive_search) {
    check_beams_equal_exhaustive(4, 3, -1, 1.0); /* 64 sequences, 64 beams */
}

TEST(beam_search_with_a_stop_token_and_length_penalty_equals_exhaustive_search) {
    check_beams_equal_exhaustive(4, 3, 0, 0.5); /* the stop token counts in the length, as in HF */
    check_beams_equal_exhaustive(4, 3, 0, 2.0);
}

TEST(early_stopping_true_stops_sooner_than_never) {
    kiln_model *m = tiny_model("m.gguf", 8, 32, 4, 2.0f);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t prompt[1] = {1}, stop[1] = {0};
    kiln_gen_params p = defaults(KILN_SEARCH_BEAM, 20);
    kiln_logit_bias likely_stop = {0, 4.0f};
    p.num_beams = 3, p.stop_tokens = stop, p.n_stop_tokens = 1, p.logit_bias = &likely_stop, p.n_logit_bias = 1;
    kiln_gen_result early, never;
    p.early_stopping = KILN_EARLY_STOP_TRUE;
    generate(c, prompt, 1, &p, &early);
    p.early_stopping = KILN_EARLY_STOP_NEVER;
    generate(c, prompt, 1, &p, &never);
    CHECKF(early.n_forward < never.n_forward, "true: %d passes, never: %d", early.n_forward, never.n_forward);
    CHECK(never.seqs[0].score >= early.seqs[0].score - 1e-9);
    CHECK_EQ_INT(early.seqs[0].stop, KILN_STOP_TOKEN);
    kiln_gen_result_free(&early), kiln_gen_result_free(&never);
    kiln_ctx_free(c), kiln_model_close(m);
}

/* Distinct sequences among the returned ones. */
static int n_distinct(const kiln_gen_result *r) {
    int n = 0;
    for (int i = 0; i < r->n_seqs; i++) {
        int dup = 0;
        for (int j = 0; j < i && !dup; j++)
            dup = r->seqs[i].n_tokens == r->seqs[j].n_tokens &&
                  !memcmp(r->seqs[i].tokens, r->seqs[j].tokens, sizeof(int32_t) * r->seqs[i].n_tokens);
        n += !dup;
    }
    return n;
}

TEST(diverse_beam_groups_differ_more_as_the_penalty_grows) {
    kiln_model *m = tiny_model("m.gguf", 16, 32, 8, 3.0f);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t prompt[2] = {1, 2};
    kiln_gen_params p = defaults(KILN_SEARCH_BEAM, 6);
    p.num_beams = 4, p.num_beam_groups = 4, p.num_return = 4;
    kiln_gen_result g;
    kiln_gen_params greedy = defaults(KILN_SEARCH_GREEDY, 6);
    generate(c, prompt, 2, &greedy, &g);
    int distinct[3];
    float penalties[3] = {0, 0.5f, 100};
    for (int i = 0; i < 3; i++) {
        kiln_gen_result r;
        p.diversity_penalty = penalties[i];
        generate(c, prompt, 2, &p, &r);
        CHECK_EQ_INT(r.n_seqs, 4);
        distinct[i] = n_distinct(&r);
        /* the first group sees no penalty: one beam per group makes it greedy search, the best score */
        CHECKF(!memcmp(r.seqs[0].tokens, g.seqs[0].tokens, sizeof(int32_t) * 6), "penalty %g", penalties[i]);
        if (penalties[i] == 100)
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < a; b++) CHECK(r.seqs[a].tokens[0] != r.seqs[b].tokens[0]);
        kiln_gen_result_free(&r);
    }
    CHECKF(distinct[0] == 1 && distinct[1] >= distinct[0] && distinct[2] == 4, "distinct sequences %d, %d, %d",
           distinct[0], distinct[1], distinct[2]);
    kiln_gen_result_free(&g);
    kiln_ctx_free(c), kiln_model_close(m);
}

TEST(stochastic_beams_sample_distinct_sequences_with_the_model_probabilities) {
    enum { V = 4, L = 2, K = 3, N = 2000, S = V * V };
    kiln_model *m = tiny_model("m.gguf", V, 16, 13, 2.0f);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t prompt[1] = {3};
    double p[S], second[S] = {0};
    for (int i = 0; i < S; i++) p[i] = exp(sequence_logprob(m, prompt, 1, (int32_t[]){i / V, i % V}, 2));
    for (int x = 0; x < S; x++) /* sampling without replacement: P(second = y) = sum_x p(x) p(y) / (1 - p(x)) */
        for (int y = 0; y < S; y++)
            if (y != x) second[y] += p[x] * p[y] / (1 - p[x]);
    kiln_gen_params gp = defaults(KILN_SEARCH_STOCHASTIC_BEAM, L);
    gp.num_beams = K, gp.num_return = K;
    int first_counts[S] = {0}, second_counts[S] = {0}, dof;
    for (int s = 0; s < N; s++) {
        gp.seed = 1000 + s;
        kiln_gen_result r;
        generate(c, prompt, 1, &gp, &r);
        CHECK_EQ_INT(r.n_seqs, K);
        CHECKF(n_distinct(&r) == K, "seed %d: repeated sequences", s);
        for (int i = 1; i < K; i++) CHECK(r.seqs[i].score <= r.seqs[i - 1].score);
        first_counts[seq_index(r.seqs[0].tokens, L, V)]++;
        second_counts[seq_index(r.seqs[1].tokens, L, V)]++;
        kiln_gen_result_free(&r);
    }
    double chi = chi_square(first_counts, p, S, N, &dof);
    CHECKF(chi < chi_square_limit(dof), "first sample: chi-square %.1f > %.1f (%d dof)", chi, chi_square_limit(dof), dof);
    chi = chi_square(second_counts, second, S, N, &dof);
    CHECKF(chi < chi_square_limit(dof), "second sample: chi-square %.1f > %.1f (%d dof)", chi, chi_square_limit(dof),
           dof);
    kiln_ctx_free(c), kiln_model_close(m);
}

TEST(generation_stops_for_the_callback_the_time_limit_and_the_context) {
    kiln_model *m = tiny_model("m.gguf", 16, 12, 2, 1.0f);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t prompt[4] = {1, 2, 3, 4};
    kiln_gen_params p = defaults(KILN_SEARCH_GREEDY, 100);
    kiln_gen_result r;
    generate(c, prompt, 4, &p, &r); /* 12 positions, 4 taken: 8 evaluated tokens, the 9th is not needed */
    CHECK_EQ_INT(r.seqs[0].n_tokens, 9);
    CHECK_EQ_INT(r.seqs[0].stop, KILN_STOP_CONTEXT);
    kiln_gen_result_free(&r);
    p.max_time = 1e-9;
    generate(c, prompt, 4, &p, &r);
    CHECK_EQ_INT(r.seqs[0].stop, KILN_STOP_TIME);
    CHECK_EQ_INT(r.seqs[0].n_tokens, 1);
    kiln_gen_result_free(&r);
    kiln_model_close(m), kiln_ctx_free(c);
}

TEST(generation_rejects_bad_search_parameters_with_a_message) {
    kiln_model *m = tiny_model("m.gguf", 16, 12, 2, 1.0f);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t prompt[1] = {1};
    kiln_gen_result r;
    struct {
        kiln_gen_params p;
        const char *want;
    } bad[8];
    for (int i = 0; i < 8; i++) bad[i].p = defaults(KILN_SEARCH_BEAM, 4);
    bad[0].p.num_beams = 4, bad[0].p.num_beam_groups = 3, bad[0].want = "num_beam_groups";
    bad[1].p.num_beams = 2, bad[1].p.num_return = 3, bad[1].want = "num_return";
    bad[2].p.search = KILN_SEARCH_GREEDY, bad[2].p.num_return = 2, bad[2].want = "greedy";
    bad[3].p.diversity_penalty = -1, bad[3].want = "diversity_penalty";
    bad[4].p.max_new_tokens = 0, bad[4].want = "max_new_tokens";
    bad[5].p.spec = KILN_SPEC_REJECTION, bad[5].want = "speculative";
    bad[6].p.search = KILN_SEARCH_GREEDY, bad[6].p.spec = KILN_SPEC_REJECTION, bad[6].want = "draft";
    bad[7].p.num_beams = 0, bad[7].want = "num_beams";
    for (int i = 0; i < 8; i++) {
        CHECKF(kiln_generate(c, prompt, 1, &bad[i].p, &r) < 0, "case %d accepted", i);
        CHECKF(strstr(kiln_last_error(), bad[i].want), "case %d: \"%s\" does not mention %s", i, kiln_last_error(),
               bad[i].want);
    }
    kiln_gen_params p = defaults(KILN_SEARCH_GREEDY, 4);
    CHECK(kiln_generate(c, prompt, 0, &p, &r) < 0);
    CHECK(strstr(kiln_last_error(), "empty") != NULL);
    kiln_model_close(m), kiln_ctx_free(c);
}
