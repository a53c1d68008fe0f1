/* Speculative decoding: greedy output identical to the target's, sampled output distributed as the
 * target's (and a biased acceptance rule caught by the same test), rollback, acceptance counts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "decode/speculative.h"
#include "kiln.h"
#include "test.h"
#include "test_decode.h"

static kiln_gen_params greedy(int n_new) {
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.max_new_tokens = n_new;
    return p;
}

static void generate(kiln_ctx *c, const int32_t *prompt, int n, const kiln_gen_params *p, kiln_gen_result *r) {
    CHECKF(kiln_generate(c, prompt, n, p, r) == 0, "%s", kiln_last_error());
}

static void check_same_tokens(const kiln_gen_result *a, const kiln_gen_result *b, const char *what) {
    CHECKF(a->seqs[0].n_tokens == b->seqs[0].n_tokens, "%s: %d tokens, plain decoding %d", what, a->seqs[0].n_tokens,
           b->seqs[0].n_tokens);
    for (int i = 0; i < a->seqs[0].n_tokens; i++)
        CHECKF(a->seqs[0].tokens[i] == b->seqs[0].tokens[i], "%s: token %d is %d, plain decoding %d", what, i,
               a->seqs[0].tokens[i], b->seqs[0].tokens[i]);
    CHECKF(strcmp(a->seqs[0].text, b->seqs[0].text) == 0, "%s: text differs", what);
}

TEST(speculative_greedy_returns_the_targets_greedy_text_with_any_drafter) {
    kiln_model *t = stories_model(NULL);
    kiln_model *noise = tiny_model("noise.gguf", 512, 64, 9, 2.0f); /* a poor draft with a short context */
    kiln_ctx *c = kiln_ctx_new(t, 0), *self = kiln_ctx_new(t, 0), *bad = kiln_ctx_new(noise, 0);
    int32_t prompt[64];
    const char *text = "Once upon a time, there was a little girl named Lily. She";
    int n = kiln_tokenize(t, text, strlen(text), 1, prompt, 64);
    kiln_gen_params p = greedy(150);
    kiln_gen_result plain, r;
    generate(c, prompt, n, &p, &plain);
    struct {
        kiln_spec_mode mode;
        kiln_ctx *draft;
        int k;
        const char *what;
    } runs[] = {
        {KILN_SPEC_REJECTION, self, 4, "the target as its own draft"},
        {KILN_SPEC_REJECTION, bad, 3, "a random draft"},
        {KILN_SPEC_EXACT, bad, 7, "exact check, random draft"},
        {KILN_SPEC_NGRAM, NULL, 5, "prompt lookup"},
        {KILN_SPEC_REJECTION, self, 1, "one token drafts"},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        p.spec = runs[i].mode, p.draft = runs[i].draft, p.draft_n = runs[i].k;
        generate(c, prompt, n, &p, &r);
        check_same_tokens(&r, &plain, runs[i].what);
        CHECKF(fabs(r.seqs[0].logprob - plain.seqs[0].logprob) < 1e-3, "%s: log-prob %g, plain %g", runs[i].what,
               r.seqs[0].logprob, plain.seqs[0].logprob);
        CHECK_EQ_INT(kiln_ctx_pos(c), 0);
        if (runs[i].draft) CHECK_EQ_INT(kiln_ctx_pos(runs[i].draft), 0);
        if (runs[i].draft == self) CHECKF(r.n_accepted == r.n_drafted, "%d of %d accepted", r.n_accepted, r.n_drafted);
        if (runs[i].draft == self && runs[i].k == 4)
            CHECKF(r.n_forward * 4 < plain.n_forward, "%d target passes, plain %d", r.n_forward, plain.n_forward);
        kiln_gen_result_free(&r);
    }
    kiln_gen_result_free(&plain);
    kiln_ctx_free(c), kiln_ctx_free(self), kiln_ctx_free(bad);
    kiln_model_close(t), kiln_model_close(noise);
}

enum { V = 4, L = 3, CELLS = V * V * V };

/* Counts of the L-token sequences that speculative sampling generates over N seeds with rule RULE. */
static void sample_counts(kiln_ctx *target, kiln_ctx *draft, const spec_verifier *rule, int n, int *counts) {
    int32_t prompt[1] = {1};
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.search = KILN_SEARCH_SAMPLE, p.max_new_tokens = L, p.temperature = 0.8f;
    p.spec = KILN_SPEC_REJECTION, p.draft = draft, p.draft_n = 2;
    memset(counts, 0, sizeof(int) * CELLS);
    for (int s = 0; s < n; s++) {
        kiln_gen_result r;
        p.seed = 77 + s;
        CHECKF(decode_generate(target, prompt, 1, &p, rule, &r) == 0, "%s", kiln_last_error());
        CHECK_EQ_INT(r.seqs[0].n_tokens, L);
        const int32_t *t = r.seqs[0].tokens;
        counts[(t[0] * V + t[1]) * V + t[2]]++;
        kiln_gen_result_free(&r);
    }
}

/* The target's own law of L-token sequences at temperature 0.8. */
static void target_law(kiln_model *m, double *p) {
    kiln_ctx *c = kiln_ctx_new(m, 0);
    kiln_gen_params gp;
    kiln_gen_defaults(&gp);
    gp.temperature = 0.8f;
    for (int i = 0; i < CELLS; i++) {
        int32_t seq[L + 1] = {1, i / (V * V), i / V % V, i % V};
        float rows[(L + 1) * V];
        CHECK(kiln_eval(c, seq, L + 1, rows) == 0);
        CHECK(kiln_ctx_truncate(c, 0) == 0);
        double lp = 0;
        for (int j = 0; j < L; j++) {
            float *x = rows + j * V;
            CHECK(kiln_process_logits(&gp, 1, NULL, 0, 0, x, V) == 0);
            double max = x[0], sum = 0;
            for (int k = 1; k < V; k++) max = x[k] > max ? x[k] : max;
            for (int k = 0; k < V; k++) sum += exp(x[k] - max);
            lp += x[seq[j + 1]] - max - log(sum);
        }
        p[i] = exp(lp);
    }
    kiln_ctx_free(c);
}

/* Rejection sampling with a classic mistake: the replacement drawn from p instead of (p - q)+. */
static int biased_check(const float *p, const float *q, int n_vocab, int32_t d, kiln_rng *r, int32_t *replacement) {
    if (kiln_rng_f64(r) * q[d] < p[d]) return 1;
    *replacement = spec_pick(p, n_vocab, kiln_rng_f64(r));
    return 0;
}
static const spec_verifier biased = {"biased", biased_check};

TEST(speculative_sampling_follows_the_targets_law_and_a_biased_rule_is_caught) {
    kiln_model *tm = tiny_model("target.gguf", V, 16, 31, 2.5f), *dm = tiny_model("draft.gguf", V, 16, 35, 3.5f);
    kiln_ctx *target = kiln_ctx_new(tm, 0), *draft = kiln_ctx_new(dm, 0);
    double p[CELLS];
    target_law(tm, p);
    int counts[CELLS], dof;
    sample_counts(target, draft, &spec_rejection, 1500, counts);
    double chi = chi_square(counts, p, CELLS, 1500, &dof);
    CHECKF(chi < chi_square_limit(dof), "rejection sampling: chi-square %.1f > %.1f (%d dof)", chi, chi_square_limit(dof),
           dof);
    sample_counts(target, draft, &biased, 1500, counts);
    chi = chi_square(counts, p, CELLS, 1500, &dof);
    CHECKF(chi > chi_square_limit(dof), "the biased rule passed: chi-square %.1f <= %.1f (%d dof)", chi,
           chi_square_limit(dof), dof);
    kiln_ctx_free(target), kiln_ctx_free(draft), kiln_model_close(tm), kiln_model_close(dm);
}

TEST(rejection_sampling_accepts_more_than_the_exact_check_of_a_greedy_draft) {
    kiln_model *tm = tiny_model("target.gguf", 32, 64, 41, 1.5f), *dm = tiny_model("draft.gguf", 32, 64, 41, 1.2f);
    kiln_ctx *target = kiln_ctx_new(tm, 0), *draft = kiln_ctx_new(dm, 0);
    int32_t prompt[2] = {1, 2};
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.search = KILN_SEARCH_SAMPLE, p.max_new_tokens = 60, p.draft = draft, p.draft_n = 4;
    double rate[2];
    kiln_spec_mode modes[2] = {KILN_SPEC_REJECTION, KILN_SPEC_EXACT};
    for (int i = 0; i < 2; i++) {
        int drafted = 0, accepted = 0;
        p.spec = modes[i];
        for (int s = 0; s < 10; s++) {
            kiln_gen_result r;
            p.seed = s;
            generate(target, prompt, 2, &p, &r);
            drafted += r.n_drafted, accepted += r.n_accepted;
            CHECK(r.n_accepted <= r.n_drafted);
            kiln_gen_result_free(&r);
        }
        rate[i] = (double)accepted / drafted;
    }
    /* a draft with the same weights but flatter logits: rejection keeps sum min(p, q), the exact check
     * only p(argmax q) */
    CHECKF(rate[0] > 0.6 && rate[0] > 3 * rate[1], "acceptance: rejection %.2f, exact %.2f", rate[0], rate[1]);
    kiln_ctx_free(target), kiln_ctx_free(draft), kiln_model_close(tm), kiln_model_close(dm);
}

TEST(a_draft_with_another_vocabulary_is_rejected) {
    kiln_model *tm = tiny_model("target.gguf", 32, 64, 1, 1.0f), *dm = tiny_model("draft.gguf", 33, 64, 1, 1.0f);
    kiln_ctx *target = kiln_ctx_new(tm, 0), *draft = kiln_ctx_new(dm, 0);
    int32_t prompt[1] = {1};
    kiln_gen_params p = greedy(4);
    p.spec = KILN_SPEC_REJECTION, p.draft = draft;
    kiln_gen_result r;
    CHECK(kiln_generate(target, prompt, 1, &p, &r) < 0);
    CHECKF(strstr(kiln_last_error(), "vocabulary"), "%s", kiln_last_error());
    kiln_ctx_free(target), kiln_ctx_free(draft), kiln_model_close(tm), kiln_model_close(dm);
}

TEST(prompt_lookup_finds_the_latest_longest_match) {
    int32_t toks[] = {1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3}, out[4];
    int n = spec_lookup(toks, 13, 3, 4, out); /* "1 2 3" last occurred before "7 8 5 1" */
    CHECK_EQ_INT(n, 4);
    CHECK(out[0] == 7 && out[1] == 8 && out[2] == 5 && out[3] == 1);
    int32_t short_tail[] = {4, 5, 6, 5};
    CHECK_EQ_INT(spec_lookup(short_tail, 4, 3, 4, out), 2); /* only the 1-gram "5" matches: 6 5 follow */
    CHECK(out[0] == 6 && out[1] == 5);
    int32_t none[] = {1, 2, 3};
    CHECK_EQ_INT(spec_lookup(none, 3, 3, 4, out), 0);
}
