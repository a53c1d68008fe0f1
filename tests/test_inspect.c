/* kiln inspect and its traced forward pass (src/api/inspect.c) against the numpy reference
 * tests/ref/inspect_golden.py (tests/golden/inspect_*.json). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/inspect.h"
#include "kiln.h"
#include "test.h"

static json_t *golden(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "tests/golden/inspect_%s.json", name);
    json_error_t e;
    json_t *o = json_load_file(path, 0, &e);
    if (!o) test_fail(__FILE__, __LINE__, "%s: %s", path, e.text);
    return o;
}

static void check_trace(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "tests/golden/%s.gguf", name);
    kiln_model *m = kiln_model_open(path);
    CHECKF(m, "%s", kiln_last_error());
    const kiln_config *c = kiln_model_config(m);
    json_t *g = golden(name);
    json_t *jt = json_object_get(g, "tokens");
    int n = (int)json_array_size(jt);
    int32_t toks[64];
    for (int i = 0; i < n; i++) toks[i] = (int32_t)json_integer_value(json_array_get(jt, i));
    kiln_trace tr;
    CHECKF(kiln_trace_run(m, toks, n, &tr) == 0, "%s", kiln_last_error());
    float *logits = malloc(sizeof(float) * c->n_vocab), *want = malloc(sizeof(float) * c->n_vocab);
    for (int l = 0; l < c->n_layers; l++)
        for (int t = 0; t < n; t++) {
            kiln_trace_lens(m, tr.resid + ((size_t)(l + 1) * n + t) * c->dim, logits);
            json_t *row = json_array_get(json_array_get(json_object_get(g, "lens"), l), t);
            for (int v = 0; v < c->n_vocab; v++) want[v] = (float)json_number_value(json_array_get(row, v));
            CHECK_CLOSE(logits, want, (size_t)c->n_vocab, 1e-4f, 1e-4f, "logit lens");
            double cos = kiln_cos_distance(tr.resid + ((size_t)l * n + t) * c->dim,
                                           tr.resid + ((size_t)(l + 1) * n + t) * c->dim, c->dim);
            double wc = json_number_value(json_array_get(json_array_get(json_object_get(g, "cos"), l), t));
            CHECKF(fabs(cos - wc) < 1e-5, "cos distance layer %d token %d: %g, expected %g", l, t, cos, wc);
            for (int h = 0; h < c->n_heads; h++) {
                json_t *wr = json_array_get(json_array_get(json_array_get(json_object_get(g, "attn"), l), h), t);
                for (int j = 0; j < n; j++) want[j] = (float)json_number_value(json_array_get(wr, j));
                CHECK_CLOSE(tr.attn + (((size_t)l * c->n_heads + h) * n + t) * n, want, (size_t)n, 1e-4f, 1e-5f,
                            "attention weights");
            }
        }
    free(logits);
    free(want);
    kiln_trace_free(&tr);
    json_decref(g);
    kiln_model_close(m);
}

TEST(trace_matches_numpy_lens_attention_and_cos_on_gqa_llama) { check_trace("llama_gqa_f32"); }

TEST(trace_matches_numpy_lens_attention_and_cos_on_gpt2) { check_trace("gpt2_f32"); }

static char *token_list(json_t *g) {
    static char buf[1024];
    buf[0] = 0;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(g, "tokens"), i, t)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%d", i ? "," : "", (int)json_integer_value(t));
    return buf;
}

TEST(inspect_json_reports_the_reference_top_tokens_attention_and_cos) {
    json_t *g = golden("llama_gqa_f32");
    char cmd[2048], *out, *err;
    snprintf(cmd, sizeof cmd,
             "%s inspect -m tests/golden/llama_gqa_f32.gguf --tokens %s --topk-per-layer 3 --attention 1 --from 7 "
             "--to 3 --cos --json", test_kiln_bin(), token_list(g));
    CHECKF(test_run(cmd, &out, &err) == 0, "%s", err);
    json_t *o = json_loads(out, 0, NULL);
    CHECKF(o, "not JSON: %.300s", out);
    int n = (int)json_array_size(json_object_get(g, "tokens"));
    /* lens: the last token after each layer, top 3 in the reference's order */
    json_t *lens = json_object_get(o, "logit_lens");
    CHECK_EQ_INT(json_array_size(lens), 2);
    for (int l = 0; l < 2; l++) {
        json_t *row = json_array_get(json_array_get(json_object_get(g, "lens"), l), n - 1);
        int best[3] = {-1, -1, -1};
        for (int r = 0; r < 3; r++)
            for (int v = 0; v < (int)json_array_size(row); v++) {
                if (v == best[0] || v == best[1]) continue;
                if (best[r] < 0 || json_number_value(json_array_get(row, v)) > json_number_value(json_array_get(row, best[r])))
                    best[r] = v;
            }
        json_t *top = json_object_get(json_array_get(lens, l), "top");
        for (int r = 0; r < 3; r++) CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(top, r), "id")), best[r]);
    }
    json_t *heads = json_object_get(json_object_get(o, "attention"), "heads");
    CHECK_EQ_INT(json_array_size(heads), 4);
    for (int h = 0; h < 4; h++) {
        double want = json_number_value(json_array_get(
            json_array_get(json_array_get(json_array_get(json_object_get(g, "attn"), 1), h), 7), 3));
        CHECKF(fabs(json_number_value(json_array_get(heads, h)) - want) < 1e-5, "head %d: %g, expected %g", h,
               json_number_value(json_array_get(heads, h)), want);
    }
    json_t *cos = json_object_get(o, "cos");
    CHECK_EQ_INT(json_array_size(cos), 2);
    double want = json_number_value(json_array_get(json_array_get(json_object_get(g, "cos"), 1), n - 1));
    CHECK(fabs(json_number_value(json_object_get(json_array_get(cos, 1), "distance")) - want) < 1e-5);
    json_decref(o);
    json_decref(g);
    free(out);
    free(err);
}

TEST(inspect_refuses_a_layer_or_token_that_does_not_exist) {
    char *err;
    CHECK(test_run("build/kiln inspect -m tests/golden/llama_gqa_f32.gguf --tokens 1,2,3 --attention 2 --from 1 --to 0",
                   NULL, &err) != 0);
    CHECKF(strstr(err, "--attention: layer 2 does not exist") != NULL, "%s", err);
    free(err);
    CHECK(test_run("build/kiln inspect -m tests/golden/llama_gqa_f32.gguf --tokens 1,2,3 --attention 0 --from 3 --to 0",
                   NULL, &err) != 0);
    CHECKF(strstr(err, "--from: token 3 does not exist") != NULL, "%s", err);
    free(err);
    CHECK(test_run("build/kiln inspect -m tests/golden/llama_gqa_f32.gguf --tokens 1,2,3 --attention 0 --from 0 --to 2",
                   NULL, &err) != 0);
    CHECKF(strstr(err, "attends only to itself and earlier") != NULL, "%s", err);
    free(err);
    CHECK(test_run("build/kiln inspect -m tests/golden/llama_gqa_f32.gguf --tokens 1,x --cos", NULL, &err) != 0);
    CHECKF(strstr(err, "--tokens") != NULL, "%s", err);
    free(err);
}

TEST(inspect_prints_a_table_of_the_lens_on_a_text) {
    char *out, *err;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s convert %s --tokenizer %s -o %s >/dev/null && %s inspect -m %s -p 'Once upon a time' "
             "--topk-per-layer 2 --cos --all-tokens", test_kiln_bin(), test_data("stories260K/stories260K.bin"),
             test_data("stories260K/tok512.bin"), test_tmp("s.gguf"), test_kiln_bin(), test_tmp("s.gguf"));
    CHECKF(test_run(cmd, &out, &err) == 0, "%s", err);
    CHECK(strstr(out, "tokens: 0:") != NULL);
    CHECK(strstr(out, "1:'Once'") != NULL);
    CHECK(strstr(out, "logit lens") != NULL);
    /* 5 layers x 5 tokens of lens and of cos */
    int rows = 0;
    for (char *p = strstr(out, "cosine distance"); p && (p = strchr(p + 1, '\n'));) rows++;
    CHECKF(rows == 5 * 5 + 2, "%d lines after the cosine header", rows);
    free(out);
    free(err);
}
