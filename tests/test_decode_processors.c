/* Logits processors against tests/golden/decode_processors.txt (numpy, tests/ref/decode_golden.py),
 * their parameter checks, and the sampler order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "kiln.h"
#include "test.h"

#define GOLDEN "tests/golden/decode_processors.txt"
#define REGENERATE "regenerate with /usr/bin/python3 tests/ref/decode_golden.py"

enum { MAX_V = 256, MAX_T = 64, MAX_B = 16 };

typedef struct {
    char name[128];
    int n_vocab, sampling, n_prompt, n_tokens;
    kiln_gen_params p;
    char samplers[256];
    int32_t tokens[MAX_T], stop[MAX_B], ban[MAX_B];
    kiln_logit_bias bias[MAX_B];
    float logits[MAX_V], expect[MAX_V];
} golden_case;

static int parse_floats(char *s, float *out, int max) {
    int n = 0;
    for (char *tok = strtok(s, " \n"); tok && n < max; tok = strtok(NULL, " \n")) out[n++] = strtof(tok, NULL);
    return n;
}

static void parse_params(golden_case *g, char *s) {
    kiln_gen_defaults(&g->p);
    for (char *kv = strtok(s, " \n"); kv; kv = strtok(NULL, " \n")) {
        char *v = strchr(kv, '=');
        if (!v) continue; /* "-": no parameters */
        *v++ = 0;
        kiln_gen_params *p = &g->p;
        if (!strcmp(kv, "temperature")) p->temperature = strtof(v, NULL);
        else if (!strcmp(kv, "top_k")) p->top_k = atoi(v);
        else if (!strcmp(kv, "top_p")) p->top_p = strtof(v, NULL);
        else if (!strcmp(kv, "min_p")) p->min_p = strtof(v, NULL);
        else if (!strcmp(kv, "typical_p")) p->typical_p = strtof(v, NULL);
        else if (!strcmp(kv, "min_keep")) p->min_tokens_to_keep = atoi(v);
        else if (!strcmp(kv, "repetition_penalty")) p->repetition_penalty = strtof(v, NULL);
        else if (!strcmp(kv, "presence_penalty")) p->presence_penalty = strtof(v, NULL);
        else if (!strcmp(kv, "frequency_penalty")) p->frequency_penalty = strtof(v, NULL);
        else if (!strcmp(kv, "no_repeat_ngram")) p->no_repeat_ngram = atoi(v);
        else if (!strcmp(kv, "min_new_tokens")) p->min_new_tokens = atoi(v);
        else if (!strcmp(kv, "samplers")) snprintf(g->samplers, sizeof g->samplers, "%s", v), p->samplers = g->samplers;
        else if (!strcmp(kv, "stop") || !strcmp(kv, "ban")) {
            int32_t *dst = !strcmp(kv, "stop") ? g->stop : g->ban;
            int n = 0;
            for (char *e = v; *e && n < MAX_B; e += strcspn(e, ","), e += *e == ',') dst[n++] = atoi(e);
            if (dst == g->stop) p->stop_tokens = g->stop, p->n_stop_tokens = n;
            else p->banned_tokens = g->ban, p->n_banned_tokens = n;
        } else if (!strcmp(kv, "bias")) {
            int n = 0;
            for (char *e = v; *e && n < MAX_B; e += strcspn(e, ","), e += *e == ',') {
                g->bias[n].token = atoi(e);
                g->bias[n++].bias = strtof(strchr(e, ':') + 1, NULL);
            }
            p->logit_bias = g->bias, p->n_logit_bias = n;
        } else test_fail(__FILE__, __LINE__, "%s: unknown parameter %s (" REGENERATE ")", g->name, kv);
    }
}

/* Reads every case of the golden file into a malloc'd array. */
static golden_case *load_cases(int *n_cases) {
    size_t size;
    char *text = kiln_read_file(GOLDEN, &size);
    CHECKF(text != NULL, "%s (" REGENERATE ")", kiln_last_error());
    int cap = 128, n = 0;
    golden_case *cases = calloc(cap, sizeof *cases);
    char *save, *line = strtok_r(text, "\n", &save);
    while (line) {
        if (strncmp(line, "case ", 5) != 0) {
            line = strtok_r(NULL, "\n", &save);
            continue;
        }
        CHECK(n < cap);
        golden_case *g = &cases[n++];
        CHECK(sscanf(line, "case %127s %d %d", g->name, &g->n_vocab, &g->sampling) == 3 && g->n_vocab <= MAX_V);
        char *params = strtok_r(NULL, "\n", &save), *tokens = strtok_r(NULL, "\n", &save);
        char *logits = strtok_r(NULL, "\n", &save), *expect = strtok_r(NULL, "\n", &save);
        CHECKF(params && tokens && logits && expect, "%s: truncated case (" REGENERATE ")", g->name);
        parse_params(g, params + 7);
        char *e = tokens + 7;
        g->n_prompt = (int)strtol(e, &e, 10);
        while (g->n_tokens < MAX_T) {
            char *next;
            long t = strtol(e, &next, 10);
            if (next == e) break;
            g->tokens[g->n_tokens++] = (int32_t)t;
            e = next;
        }
        CHECK(parse_floats(logits + 7, g->logits, MAX_V) == g->n_vocab);
        CHECK(parse_floats(expect + 7, g->expect, MAX_V) == g->n_vocab);
        line = strtok_r(NULL, "\n", &save);
    }
    free(text);
    *n_cases = n;
    return cases;
}

TEST(every_processor_matches_the_numpy_reference_including_edge_cases) {
    int n;
    golden_case *cases = load_cases(&n);
    CHECKF(n >= 60, "only %d golden cases (" REGENERATE ")", n);
    for (int i = 0; i < n; i++) {
        golden_case *g = &cases[i];
        float x[MAX_V];
        memcpy(x, g->logits, sizeof(float) * g->n_vocab);
        int rc = kiln_process_logits(&g->p, g->sampling, g->tokens, g->n_tokens, g->n_prompt, x, g->n_vocab);
        CHECKF(rc == 0, "%s: %s", g->name, kiln_last_error());
        for (int j = 0; j < g->n_vocab; j++) {
            int want_gone = isinf(g->expect[j]) && g->expect[j] < 0, gone = isinf(x[j]) && x[j] < 0;
            CHECKF(want_gone == gone, "%s: token %d is %s, expected %s (logit %g)", g->name, j, gone ? "removed" : "kept",
                   want_gone ? "removed" : "kept", g->logits[j]);
            if (!gone)
                CHECKF(fabsf(x[j] - g->expect[j]) <= 1e-5f + 1e-5f * fabsf(g->expect[j]), "%s: token %d: %.9g, expected %.9g",
                       g->name, j, x[j], g->expect[j]);
        }
    }
    free(cases);
}

TEST(the_golden_file_covers_ties_neg_inf_equal_logits_min_keep_and_a_vocabulary_of_one) {
    int n;
    golden_case *cases = load_cases(&n);
    const char *need[] = {"ties", "neg_inf", "all_equal", "min_keep", "vocab_of_one", "top_p_1_is_off"};
    for (size_t k = 0; k < sizeof need / sizeof need[0]; k++) {
        int found = 0;
        for (int i = 0; i < n; i++) found += strstr(cases[i].name, need[k]) != NULL;
        CHECKF(found > 0, "no golden case about %s (" REGENERATE ")", need[k]);
    }
    free(cases);
}

static void expect_rejected(kiln_gen_params p, const char *want) {
    float x[4] = {0, 1, 2, 3};
    CHECKF(kiln_process_logits(&p, 1, NULL, 0, 0, x, 4) < 0, "accepted parameters that mention %s", want);
    CHECKF(strstr(kiln_last_error(), want) != NULL, "error \"%s\" does not mention %s", kiln_last_error(), want);
}

TEST(out_of_range_processor_parameters_are_rejected_with_their_name) {
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    kiln_gen_params q = p;
    q.top_p = 0, expect_rejected(q, "top_p");
    q = p, q.top_p = 1.01f, expect_rejected(q, "top_p");
    q = p, q.top_k = -1, expect_rejected(q, "top_k");
    q = p, q.min_p = 1.5f, expect_rejected(q, "min_p");
    q = p, q.typical_p = 0, expect_rejected(q, "typical_p");
    q = p, q.repetition_penalty = 0, expect_rejected(q, "repetition_penalty");
    q = p, q.repetition_penalty = -1, expect_rejected(q, "repetition_penalty");
    q = p, q.presence_penalty = 2.5f, expect_rejected(q, "presence_penalty");
    q = p, q.frequency_penalty = NAN, expect_rejected(q, "frequency_penalty");
    q = p, q.temperature = -0.5f, expect_rejected(q, "temperature");
    q = p, q.min_tokens_to_keep = 0, expect_rejected(q, "min_tokens_to_keep");
    q = p, q.no_repeat_ngram = -2, expect_rejected(q, "no_repeat_ngram");
    int32_t ban = 9;
    q = p, q.banned_tokens = &ban, q.n_banned_tokens = 1, expect_rejected(q, "outside the vocabulary");
    kiln_logit_bias b = {1, INFINITY};
    q = p, q.logit_bias = &b, q.n_logit_bias = 1, expect_rejected(q, "logit_bias");
}

TEST(temperature_zero_is_rejected_when_sampling_but_fine_for_greedy) {
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.temperature = 0;
    CHECK(kiln_gen_check(&p, 8) == 0);
    p.search = KILN_SEARCH_SAMPLE;
    CHECK(kiln_gen_check(&p, 8) < 0);
    CHECKF(strstr(kiln_last_error(), "temperature") && strstr(kiln_last_error(), "sampling"), "%s", kiln_last_error());
    p.search = KILN_SEARCH_STOCHASTIC_BEAM;
    CHECK(kiln_gen_check(&p, 8) < 0);
}

TEST(sampler_order_names_are_checked) {
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.samplers = "top_k;bogus";
    expect_rejected(p, "unknown processor 'bogus'");
    p.samplers = "top_k, top_k";
    expect_rejected(p, "named twice");
    p.samplers = "top_k";
    p.top_p = 0.5f;
    expect_rejected(p, "top_p is set but not named");
    p.samplers = "top_p , top_k";
    float x[4] = {0, 1, 2, 3};
    CHECKF(kiln_process_logits(&p, 1, NULL, 0, 0, x, 4) == 0, "%s", kiln_last_error());
}

TEST(top_k_and_top_p_handle_a_vocabulary_of_151936) {
    enum { V = 151936 };
    float *x = malloc(sizeof(float) * V), *y = malloc(sizeof(float) * V);
    uint64_t s = 5;
    for (int i = 0; i < V; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((s >> 40) % 100000) / 10000.0f; /* many ties at this resolution */
    }
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.top_k = 40;
    memcpy(y, x, sizeof(float) * V);
    CHECK(kiln_process_logits(&p, 1, NULL, 0, 0, y, V) == 0);
    /* reference: the 40th largest by a full sort, then every token >= it */
    float *sorted = malloc(sizeof(float) * V);
    memcpy(sorted, x, sizeof(float) * V);
    for (int k = 0; k < 40; k++) { /* partial selection sort: the 40 largest */
        int best = k;
        for (int i = k + 1; i < V; i++)
            if (sorted[i] > sorted[best]) best = i;
        float t = sorted[k];
        sorted[k] = sorted[best];
        sorted[best] = t;
    }
    int kept = 0;
    for (int i = 0; i < V; i++) {
        int want = x[i] >= sorted[39];
        CHECKF(want == !isinf(y[i]), "token %d (logit %g, 40th %g)", i, x[i], sorted[39]);
        kept += want;
    }
    CHECK(kept >= 40);
    p.top_k = 0, p.top_p = 0.3f;
    memcpy(y, x, sizeof(float) * V);
    CHECK(kiln_process_logits(&p, 1, NULL, 0, 0, y, V) == 0);
    double total = 0, kept_mass = 0, max_removed = -INFINITY, min_kept = INFINITY;
    for (int i = 0; i < V; i++) total += exp(x[i] - 10.0);
    for (int i = 0; i < V; i++) {
        if (isinf(y[i])) max_removed = x[i] > max_removed ? x[i] : max_removed;
        else kept_mass += exp(x[i] - 10.0), min_kept = x[i] < min_kept ? x[i] : min_kept;
    }
    CHECKF(min_kept >= max_removed, "kept a token (%g) below a removed one (%g)", min_kept, max_removed);
    CHECKF(kept_mass / total >= 0.3 - 1e-6, "kept mass %g < 0.3", kept_mass / total);
    CHECKF((kept_mass - exp(min_kept - 10.0)) / total < 0.3, "the kept set is not the smallest: %g without its last",
           (kept_mass - exp(min_kept - 10.0)) / total);
    free(x), free(y), free(sorted);
}

/* ---- the fast paths (near tokens, bucketed cut) against a plain sort, on a large vocabulary ---- */

static const double *sort_key;
static int by_key_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    if (sort_key[x] != sort_key[y]) return sort_key[x] > sort_key[y] ? -1 : 1;
    return x - y;
}

/* Which tokens top-p (TYPICAL 0) or typical-p (1) keeps, by sorting the whole vocabulary. */
static void reference_keep(const float *x, int n, double mass, int typical, int keep_min, char *keep) {
    double max = -INFINITY, total = 0, ent = 0;
    for (int i = 0; i < n; i++) max = fmax(max, x[i]);
    double *p = malloc(sizeof(double) * n), *key = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) total += p[i] = exp(x[i] - max);
    for (int i = 0; i < n; i++) p[i] /= total, ent -= p[i] > 0 ? p[i] * log(p[i]) : 0;
    for (int i = 0; i < n; i++) key[i] = typical ? -fabs(-log(p[i]) - ent) : x[i];
    int *order = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) order[i] = i;
    sort_key = key;
    qsort(order, n, sizeof *order, by_key_desc);
    for (int i = 0; i < n; i++) keep[i] = 0;
    double before = 0, last = 0;
    for (int r = 0; r < n; r++) {
        int t = order[r];
        if (before < mass * (1 - 1e-6) || r < keep_min) keep[t] = 1, last = key[t];
        else if (!(typical && key[t] == last)) break;
        else keep[t] = 1;
        before += p[t];
    }
    free(p), free(key), free(order);
}

TEST(top_p_and_typical_p_fast_paths_agree_with_a_full_sort_on_50000_tokens) {
    enum { V = 50000 };
    float *x = malloc(sizeof(float) * V), *y = malloc(sizeof(float) * V);
    char *keep = malloc(V);
    uint64_t s = 11;
    for (int shape = 0; shape < 3; shape++) {
        for (int i = 0; i < V; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            double u = (double)(s >> 11) / 9007199254740992.0;
            x[i] = shape == 0 ? (float)(-1.1 * log(1 + u * V)) /* Zipf-like */
                   : shape == 1 ? (float)(u * 0.5)              /* flat */
                                : (float)(u < 0.001 ? 5 + u : u); /* a few dominant tokens */
        }
        for (int typical = 0; typical < 2; typical++)
            for (int keep_min = 1; keep_min <= 50; keep_min += 49) {
                double mass = typical ? 0.6 : 0.8;
                kiln_gen_params p;
                kiln_gen_defaults(&p);
                p.min_tokens_to_keep = keep_min;
                if (typical) p.typical_p = (float)mass;
                else p.top_p = (float)mass;
                memcpy(y, x, sizeof(float) * V);
                CHECK(kiln_process_logits(&p, 1, NULL, 0, 0, y, V) == 0);
                reference_keep(x, V, (float)mass, typical, keep_min, keep);
                int kept = 0;
                for (int i = 0; i < V; i++) {
                    CHECKF(keep[i] == !isinf(y[i]), "shape %d, %s, min_keep %d: token %d (logit %.7g) %s", shape,
                           typical ? "typical" : "top-p", keep_min, i, x[i], keep[i] ? "removed" : "kept");
                    kept += keep[i];
                }
                CHECK(kept >= keep_min);
            }
    }
    free(x), free(y), free(keep);
}

/* The cut over dense candidates (a histogram bounds the crossing, a sliver is selected token by token)
 * against a full sort: trained-like (Zipf) logits over 151,936 tokens, where the kept set runs into the
 * thousands; tie-heavy logits over an odd size; flat ones; a crossing deep among a few hundred tokens
 * over a plateau of low ones (the kept few become a list); min_tokens_to_keep beyond the crossing. */
TEST(the_cut_agrees_with_a_full_sort_on_large_tie_heavy_and_odd_vocabularies) {
    enum { V = 151936 };
    float *x = malloc(sizeof(float) * V), *y = malloc(sizeof(float) * V);
    char *keep = malloc(V);
    uint64_t s = 23;
    const int sizes[] = {V, 65537, 4099, V};
    for (int shape = 0; shape < 4; shape++) {
        int n = sizes[shape];
        for (int i = 0; i < n; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            double u = (double)(s >> 11) / 9007199254740992.0;
            x[i] = shape == 0   ? (float)(-1.2 * log(1 + u * n))                 /* Zipf, the ranks shuffled */
                   : shape == 1 ? (float)((int)(u * 40) / 8.0)                   /* 40 distinct values */
                   : shape == 2 ? (float)(-3 * u)                                /* flat */
                   : i % 128 == 5 ? (float)(-20 * u) : (float)(-13.5 - 0.5 * u); /* a few over a low plateau */
        }
        const int keep_mins[] = {1, 7, 3000};
        for (int typical = 0; typical < 2; typical++)
            for (int k = 0; k < 3; k++) {
                double mass = shape == 3 ? 0.995 : typical ? 0.95 : 0.9; /* 3: 7 to 12 nats down among the few */
                kiln_gen_params p;
                kiln_gen_defaults(&p);
                p.min_tokens_to_keep = keep_mins[k];
                if (typical) p.typical_p = (float)mass;
                else p.top_p = (float)mass;
                memcpy(y, x, sizeof(float) * n);
                CHECK(kiln_process_logits(&p, 1, NULL, 0, 0, y, n) == 0);
                reference_keep(x, n, (float)mass, typical, keep_mins[k], keep);
                for (int i = 0; i < n; i++)
                    CHECKF(keep[i] == !isinf(y[i]), "shape %d (%d tokens), %s, min_keep %d: token %d (logit %.7g) %s",
                           shape, n, typical ? "typical" : "top-p", keep_mins[k], i, x[i], keep[i] ? "removed" : "kept");
            }
    }
    free(x), free(y), free(keep);
}
