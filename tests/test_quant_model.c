/* Quantized models end to end: files gguf-py quantized and wrote (tests/ref/quant_model_golden.py),
 * stories260K quantized by kiln, and the loader's answers to bad quantized tensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "format/gguf.h"
#include "format/quantize.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "kiln.h"
#include "test.h"

static const int32_t TOKENS[] = {3, 17, 42, 5, 88, 1, 60, 23, 9, 71, 33, 50};
enum { N_TOKENS = sizeof TOKENS / sizeof TOKENS[0] };

/* A copy of the model at IN with every quantized tensor dequantized to F32. */
static const char *dequantized_copy(const char *in, const char *name) {
    const char *out = test_tmp(name);
    gguf_file *g = gguf_open(in);
    CHECKF(g, "%s", kiln_errmsg());
    gguf_writer *w = gguf_writer_new();
    gguf_copy_kvs(w, g);
    float **owned = calloc(g->n_tensors, sizeof *owned);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char tn[128];
        snprintf(tn, sizeof tn, "%.*s", (int)t->name.len, t->name.ptr);
        if (!kiln_quant_block((int)t->type)) {
            gguf_add_tensor_ref(w, tn, t->type, (int)t->n_dims, t->ne, t->data);
            continue;
        }
        size_t k = t->ne[0], rb = kiln_quant_row_bytes((int)t->type, (int64_t)k), rows = t->nbytes / rb;
        owned[i] = malloc(sizeof(float) * k * rows);
        for (size_t r = 0; r < rows; r++)
            kiln_dequantize_row((int)t->type, (const char *)t->data + rb * r, owned[i] + k * r, (int64_t)k);
        gguf_add_tensor_ref(w, tn, KILN_TYPE_F32, (int)t->n_dims, t->ne, owned[i]);
    }
    CHECKF(gguf_write(w, out) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    for (uint64_t i = 0; i < g->n_tensors; i++) free(owned[i]);
    free(owned);
    gguf_close(g);
    return out;
}

/* The logits after each of TOKENS, as one prefill (STEPWISE 0) or token by token. */
static float *all_logits(const char *path, int stepwise, int *n_vocab) {
    kiln_model *m = kiln_model_open(path);
    CHECKF(m, "%s", kiln_last_error());
    *n_vocab = kiln_model_config(m)->n_vocab;
    float *out = malloc(sizeof(float) * N_TOKENS * *n_vocab);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    if (!stepwise) CHECK(kiln_eval(c, TOKENS, N_TOKENS, out) == 0);
    for (int t = 0; stepwise && t < N_TOKENS; t++) CHECK(kiln_eval(c, TOKENS + t, 1, out + (size_t)t * *n_vocab) == 0);
    kiln_ctx_free(c);
    kiln_model_close(m);
    return out;
}

static double relative_rms(const float *a, const float *b, size_t n) {
    double se = 0, sb = 0;
    for (size_t i = 0; i < n; i++) se += (a[i] - b[i]) * (double)(a[i] - b[i]), sb += (double)b[i] * b[i];
    return sqrt(se / sb);
}

/* What is left between a quantized model and the same weights in f32 is the int8 rounding of the
 * activations, ~0.6% of each product's rms, 1.7-1.8% of the logits' after the 15 products of these
 * files (with the nibbles of every Q4_0 byte swapped: 146%). */
static void check_gguf_py_model(const char *file) {
    const char *f32 = dequantized_copy(file, "f32.gguf");
    int nv;
    float *q = all_logits(file, 0, &nv), *q_step = all_logits(file, 1, &nv), *f = all_logits(f32, 0, &nv);
    double prefill = relative_rms(q, f, (size_t)N_TOKENS * nv), step = relative_rms(q_step, f, (size_t)N_TOKENS * nv);
    CHECKF(prefill < 0.03 && step < 0.03, "%s: relative rms error of the logits %.4f (prefill), %.4f (token by token)",
           file, prefill, step);
    free(q), free(q_step), free(f);
}

TEST(quant_model_runs_a_q8_0_file_written_by_gguf_py) { check_gguf_py_model("tests/golden/quant_llama_q8_0.gguf"); }
TEST(quant_model_runs_a_q4_0_file_written_by_gguf_py) { check_gguf_py_model("tests/golden/quant_llama_q4_0.gguf"); }

TEST(quant_model_stories260K_in_q8_0_tells_llama2c_greedy_first_paragraph) {
    const char *f32 = test_tmp("stories260K.gguf"), *q8 = test_tmp("q8.gguf");
    char cmd[16384], *out, *err;
    snprintf(cmd, sizeof cmd, "%s convert %s --tokenizer %s -o %s", test_kiln_bin(),
             test_data("stories260K/stories260K.bin"), test_data("stories260K/tok512.bin"), f32);
    CHECK(test_run(cmd, NULL, NULL) == 0);
    CHECKF(quantize_gguf(f32, q8, KILN_QUANT_Q8_0, 2) == 0, "%s", kiln_errmsg());
    snprintf(cmd, sizeof cmd, "%s generate -m %s --temp 0 -n 64", test_kiln_bin(), q8);
    CHECKF(test_run(cmd, &out, &err) == 0, "%s", err);
    const char *want = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                       "One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n";
    CHECKF(strncmp(out, want, strlen(want)) == 0, "q8_0 said: %s", out);
    free(out), free(err);
}

/* A GGUF file of one tensor NAME (dims NE, TYPE) followed by DATA_BYTES bytes of data. */
static const char *raw_gguf(const char *file, const char *name, uint32_t type, uint64_t ne0, uint64_t ne1,
                            size_t data_bytes) {
    const char *path = test_tmp(file);
    FILE *f = fopen(path, "wb");
    uint32_t u32;
    uint64_t u64, len = strlen(name);
    fwrite("GGUF", 1, 4, f);
    u32 = 3, fwrite(&u32, 4, 1, f);
    u64 = 1, fwrite(&u64, 8, 1, f); /* tensors */
    u64 = 0, fwrite(&u64, 8, 1, f); /* key/values */
    fwrite(&len, 8, 1, f), fwrite(name, 1, len, f);
    u32 = 2, fwrite(&u32, 4, 1, f);
    fwrite(&ne0, 8, 1, f), fwrite(&ne1, 8, 1, f);
    fwrite(&type, 4, 1, f);
    u64 = 0, fwrite(&u64, 8, 1, f);
    long at = ftell(f);
    for (long i = at; i % 32; i++) fputc(0, f);
    for (size_t i = 0; i < data_bytes; i++) fputc((int)(i * 7), f);
    fclose(f);
    return path;
}

static void check_open_fails(const char *path, const char *want1, const char *want2) {
    gguf_file *g = gguf_open(path);
    CHECK(g == NULL);
    CHECKF(strstr(kiln_errmsg(), want1) && strstr(kiln_errmsg(), want2) && !strchr(kiln_errmsg(), '\n'), "%s",
           kiln_errmsg());
}

TEST(quant_model_rejects_rows_that_are_not_whole_blocks_naming_the_tensor) {
    check_open_fails(raw_gguf("a.gguf", "blk.0.attn_q.weight", KILN_TYPE_Q4_K, 128, 2, 144),
                     "blk.0.attn_q.weight", "128 elements are not a multiple of the Q4_K block size 256");
}

TEST(quant_model_rejects_quantized_data_shorter_than_its_type_needs) {
    /* 4 rows of 64 Q8_0 weights are 272 bytes; the file has 200 */
    check_open_fails(raw_gguf("b.gguf", "output.weight", KILN_TYPE_Q8_0, 64, 4, 200), "output.weight",
                     "272 bytes of data");
}

TEST(quant_model_rejects_an_unknown_type_listing_the_supported_ones) {
    check_open_fails(raw_gguf("c.gguf", "token_embd.weight", 99, 64, 4, 1024), "unknown tensor type id 99",
                     "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K");
}

TEST(quant_model_rejects_a_quantized_type_it_cannot_compute_listing_the_supported_ones) {
    /* the gguf-py model with one matrix in Q5_0 (22 bytes per 32 weights), which kiln does not compute */
    gguf_file *g = gguf_open("tests/golden/quant_llama_q8_0.gguf");
    CHECK(g);
    gguf_writer *w = gguf_writer_new();
    gguf_copy_kvs(w, g);
    char *q5 = calloc(1, 64 * 64 / 32 * 22);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char tn[128];
        snprintf(tn, sizeof tn, "%.*s", (int)t->name.len, t->name.ptr);
        if (!strcmp(tn, "blk.1.attn_q.weight")) gguf_add_tensor_ref(w, tn, 6, 2, t->ne, q5);
        else gguf_add_tensor_ref(w, tn, t->type, (int)t->n_dims, t->ne, t->data);
    }
    const char *path = test_tmp("q5.gguf");
    CHECK(gguf_write(w, path) == 0);
    gguf_writer_free(w);
    gguf_close(g);
    free(q5);
    CHECK(kiln_model_open(path) == NULL);
    CHECKF(strstr(kiln_last_error(), "blk.1.attn_q.weight has type Q5_0") &&
               strstr(kiln_last_error(), "supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K"),
           "%s", kiln_last_error());
}
