/* kiln classify: label likelihoods against teacher forcing, and CAN (src/api/can.c) against the numpy
 * reference tests/ref/can_golden.py (tests/golden/can.json). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/can.h"
#include "kiln.h"
#include "test.h"
#include "test_decode.h"

TEST(can_matches_the_numpy_reference) {
    json_error_t e;
    json_t *g = json_load_file("tests/golden/can.json", 0, &e);
    CHECKF(g, "tests/golden/can.json: %s", e.text);
    json_t *jp = json_object_get(g, "probs");
    int n = (int)json_array_size(jp), m = (int)json_array_size(json_array_get(jp, 0));
    double prior[16], *p = malloc(sizeof(double) * n * m);
    for (int j = 0; j < m; j++) prior[j] = json_number_value(json_array_get(json_object_get(g, "prior"), j));
    size_t k;
    json_t *cs;
    json_array_foreach(json_object_get(g, "cases"), k, cs) {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++) p[i * m + j] = json_number_value(json_array_get(json_array_get(jp, i), j));
        kiln_can_params c = {(int)json_integer_value(json_object_get(cs, "top_k")),
                             json_number_value(json_object_get(cs, "threshold")),
                             json_number_value(json_object_get(cs, "alpha")),
                             (int)json_integer_value(json_object_get(cs, "iters"))};
        uint8_t adjusted[64];
        CHECK(kiln_can(p, n, m, prior, &c, adjusted) == 0);
        for (int i = 0; i < n; i++) {
            CHECKF(adjusted[i] == json_is_true(json_array_get(json_object_get(cs, "adjusted"), i)),
                   "case %zu row %d: adjusted %d", k, i, adjusted[i]);
            for (int j = 0; j < m; j++) {
                double want = json_number_value(json_array_get(json_array_get(json_object_get(cs, "expected"), i), j));
                CHECKF(fabs(p[i * m + j] - want) < 1e-9, "case %zu row %d class %d: %.12f, expected %.12f", k, i, j,
                       p[i * m + j], want);
            }
        }
    }
    free(p);
    json_decref(g);
}

TEST(can_rejects_bad_parameters) {
    double p[4] = {0.5, 0.5, 0.9, 0.1}, prior[2] = {0.5, 0.5};
    kiln_can_params c = {3, 0.9, 1, 1};
    CHECK(kiln_can(p, 2, 2, prior, &c, NULL) == -1);
    CHECK(strstr(kiln_last_error(), "top-k 3") != NULL);
    c = (kiln_can_params){2, 0.9, 0, 1};
    CHECK(kiln_can(p, 2, 2, prior, &c, NULL) == -1);
    CHECK(strstr(kiln_last_error(), "alpha") != NULL);
}

/* The probability of each label is the softmax over labels of log P(label text | template text). */
TEST(classify_scores_labels_by_their_likelihood_after_the_text) {
    const char *path;
    kiln_model *m = stories_model(&path);
    const char *labels[2] = {" cat", " dog"};
    double lp[2];
    for (int j = 0; j < 2; j++) {
        int32_t pre[64], full[64];
        const char *prefix = "Lily had a pet. It was a";
        char text[128];
        snprintf(text, sizeof text, "%s%s", prefix, labels[j]);
        int np = kiln_tokenize(m, prefix, strlen(prefix), 1, pre, 64), nf = kiln_tokenize(m, text, strlen(text), 1, full, 64);
        CHECK(np > 0 && nf > np && !memcmp(pre, full, sizeof(int32_t) * np));
        lp[j] = sequence_logprob(m, pre, np, full + np, nf - np);
    }
    double want_cat = 1 / (1 + exp(lp[1] - lp[0]));
    kiln_model_close(m);
    char in[4096], cmd[16384], *out, *err;
    snprintf(in, sizeof in, "%s", test_tmp("in.jsonl"));
    FILE *f = fopen(in, "w");
    fprintf(f, "{\"id\":\"x\",\"text\":\"Lily had a pet.\",\"label\":\"cat\"}\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s classify -m %s --labels cat,dog --in %s --template '{text} It was a {label}'",
             test_kiln_bin(), path, in);
    CHECKF(test_run(cmd, &out, &err) == 0, "%s", err);
    json_t *o = json_loads(out, 0, NULL);
    CHECKF(o, "not JSON: %s", out);
    double got = json_number_value(json_object_get(json_object_get(o, "probs"), "cat"));
    CHECKF(fabs(got - want_cat) < 1e-4, "p(cat) %.6f, expected %.6f", got, want_cat);
    CHECK_STR(json_string_value(json_object_get(o, "label")), want_cat > 0.5 ? "cat" : "dog");
    CHECK(strstr(err, "accuracy") != NULL);
    json_decref(o);
    free(out);
    free(err);
}

TEST(classify_refuses_a_template_without_its_placeholders) {
    char *err;
    CHECK(test_run("build/kiln classify -m x.gguf --labels a,b --in x.jsonl --template 'no placeholders'", NULL, &err) != 0);
    CHECKF(strstr(err, "--template") != NULL, "%s", err);
    free(err);
    CHECK(test_run("build/kiln classify -m x.gguf --labels a --in x.jsonl", NULL, &err) != 0);
    CHECKF(strstr(err, "at least two labels") != NULL, "%s", err);
    free(err);
}
