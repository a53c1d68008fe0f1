/* kiln quantize: llama.cpp's per-tensor choice of types, the written file (types, values within the
 * round-trip bound, llama.cpp's metadata), the atomic write and its errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/progress.h"
#include "base/rng.h"
#include "format/gguf.h"
#include "format/quantize.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "test.h"

/* A file with the tensor names of a llama model of N_LAYERS layers, rows of COLS floats, 4 rows each
 * (2 rows for norms' 1-D tensors); OUTPUT: whether it has an output head of its own. */
static const char *write_names_model(const char *name, int n_layers, int cols, int output) {
    const char *path = test_tmp(name);
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "llama");
    kiln_rng r;
    kiln_rng_seed(&r, 1);
    float *v = malloc(sizeof(float) * 4 * (size_t)cols);
    for (int i = 0; i < 4 * cols; i++) v[i] = kiln_rng_f32(&r) - 0.5f;
    uint64_t mat[2] = {(uint64_t)cols, 4}, vec[1] = {(uint64_t)cols};
    gguf_add_tensor(w, "token_embd.weight", KILN_TYPE_F32, 2, mat, v);
    gguf_add_tensor(w, "output_norm.weight", KILN_TYPE_F32, 1, vec, v);
    if (output) gguf_add_tensor(w, "output.weight", KILN_TYPE_F32, 2, mat, v);
    static const char *const mats[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    for (int l = 0; l < n_layers; l++) {
        char t[64];
        snprintf(t, sizeof t, "blk.%d.attn_norm.weight", l);
        gguf_add_tensor(w, t, KILN_TYPE_F32, 1, vec, v);
        for (int m = 0; m < 7; m++) {
            snprintf(t, sizeof t, "blk.%d.%s.weight", l, mats[m]);
            gguf_add_tensor(w, t, KILN_TYPE_F32, 2, mat, v);
        }
    }
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    free(v);
    return path;
}

static uint32_t type_of(const gguf_file *g, const char *name, kiln_quant_scheme s) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    CHECKF(t, "no tensor %s", name);
    return quantize_tensor_type(g, t, s);
}

TEST(quantize_q4_k_m_gives_q6_k_to_the_head_and_to_attn_v_and_ffn_down_of_llama_cpp_layers) {
    gguf_file *g = gguf_open(write_names_model("m.gguf", 16, 256, 1));
    CHECK(g);
    /* llama.cpp's use_more_bits for 16 layers: layers 0-1, 14-15, and 4, 7, 10, 13 */
    static const int more[16] = {1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1};
    for (int l = 0; l < 16; l++) {
        char t[64];
        uint32_t want = more[l] ? KILN_TYPE_Q6_K : KILN_TYPE_Q4_K;
        snprintf(t, sizeof t, "blk.%d.attn_v.weight", l);
        CHECKF(type_of(g, t, KILN_QUANT_Q4_K_M) == want, "%s", t);
        snprintf(t, sizeof t, "blk.%d.ffn_down.weight", l);
        CHECKF(type_of(g, t, KILN_QUANT_Q4_K_M) == want, "%s", t);
        snprintf(t, sizeof t, "blk.%d.attn_q.weight", l);
        CHECKF(type_of(g, t, KILN_QUANT_Q4_K_M) == KILN_TYPE_Q4_K, "%s", t);
        snprintf(t, sizeof t, "blk.%d.attn_norm.weight", l);
        CHECKF(type_of(g, t, KILN_QUANT_Q4_K_M) == KILN_TYPE_F32, "%s", t);
    }
    CHECK_EQ_INT(type_of(g, "output.weight", KILN_QUANT_Q4_K_M), KILN_TYPE_Q6_K);
    CHECK_EQ_INT(type_of(g, "token_embd.weight", KILN_QUANT_Q4_K_M), KILN_TYPE_Q4_K);
    CHECK_EQ_INT(type_of(g, "output_norm.weight", KILN_QUANT_Q4_K_M), KILN_TYPE_F32);
    gguf_close(g);
}

TEST(quantize_q8_0_and_q4_0_quantize_every_matrix_and_give_q4_0_a_q6_k_head) {
    gguf_file *g = gguf_open(write_names_model("m.gguf", 2, 256, 1));
    CHECK(g);
    CHECK_EQ_INT(type_of(g, "output.weight", KILN_QUANT_Q8_0), KILN_TYPE_Q8_0);
    CHECK_EQ_INT(type_of(g, "blk.0.ffn_down.weight", KILN_QUANT_Q8_0), KILN_TYPE_Q8_0);
    CHECK_EQ_INT(type_of(g, "output.weight", KILN_QUANT_Q4_0), KILN_TYPE_Q6_K);
    CHECK_EQ_INT(type_of(g, "token_embd.weight", KILN_QUANT_Q4_0), KILN_TYPE_Q4_0);
    CHECK_EQ_INT(type_of(g, "blk.1.attn_v.weight", KILN_QUANT_Q4_0), KILN_TYPE_Q4_0);
    CHECK_EQ_INT(type_of(g, "blk.1.attn_norm.weight", KILN_QUANT_Q4_0), KILN_TYPE_F32);
    gguf_close(g);
}

TEST(quantize_treats_a_tied_embedding_as_the_head) {
    gguf_file *g = gguf_open(write_names_model("m.gguf", 2, 256, 0));
    CHECK(g);
    CHECK_EQ_INT(type_of(g, "token_embd.weight", KILN_QUANT_Q4_K_M), KILN_TYPE_Q6_K);
    CHECK_EQ_INT(type_of(g, "token_embd.weight", KILN_QUANT_Q4_0), KILN_TYPE_Q6_K);
    CHECK_EQ_INT(type_of(g, "token_embd.weight", KILN_QUANT_Q8_0), KILN_TYPE_Q8_0);
    gguf_close(g);
}

TEST(quantize_falls_back_to_q8_0_or_keeps_rows_that_do_not_split_into_blocks) {
    gguf_file *g = gguf_open(write_names_model("m.gguf", 2, 96, 1)); /* 96: 3 blocks of 32, no 256 */
    CHECK(g);
    CHECK_EQ_INT(type_of(g, "blk.0.attn_q.weight", KILN_QUANT_Q4_K_M), KILN_TYPE_Q8_0);
    CHECK_EQ_INT(type_of(g, "output.weight", KILN_QUANT_Q4_0), KILN_TYPE_Q8_0);
    CHECK_EQ_INT(type_of(g, "blk.0.attn_q.weight", KILN_QUANT_Q4_0), KILN_TYPE_Q4_0);
    gguf_close(g);
    g = gguf_open(write_names_model("n.gguf", 2, 100, 1));
    CHECK(g);
    CHECK_EQ_INT(type_of(g, "blk.0.attn_q.weight", KILN_QUANT_Q8_0), KILN_TYPE_F32);
    gguf_close(g);
}

TEST(quantize_scheme_names_parse_and_a_bad_one_lists_the_choices) {
    kiln_quant_scheme s;
    CHECK(quantize_scheme_parse("Q4_K_M", &s) == 0 && s == KILN_QUANT_Q4_K_M);
    CHECK(quantize_scheme_parse("q8_0", &s) == 0 && s == KILN_QUANT_Q8_0);
    CHECK(quantize_scheme_parse("q4_k", &s) < 0);
    CHECK(strstr(kiln_errmsg(), "'q4_k'") && strstr(kiln_errmsg(), "q8_0, q4_0, q4_k_m"));
}

/* Every tensor of OUT has the type the policy gives it in IN, and dequantizes to within TOL (relative
 * rms) of IN's values; vectors are copied bit for bit. */
static void check_quantized_file(const char *in, const char *out, kiln_quant_scheme s, double tol) {
    gguf_file *a = gguf_open(in), *b = gguf_open(out);
    CHECKF(a && b, "%s", kiln_errmsg());
    CHECK_EQ_INT(a->n_tensors, b->n_tensors);
    uint32_t ftype = 0, qv = 0;
    uint32_t want_ftype = s == KILN_QUANT_Q8_0 ? 7 : s == KILN_QUANT_Q4_0 ? 2 : 15; /* llama.cpp's LLAMA_FTYPE_* */
    CHECK(gguf_get_u32(b, "general.file_type", &ftype) == 1 && ftype == want_ftype);
    CHECK(gguf_get_u32(b, "general.quantization_version", &qv) == 1 && qv == 2);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const gguf_tensor *ta = &a->tensors[i], *tb = &b->tensors[i];
        CHECK(ta->name.len == tb->name.len && !memcmp(ta->name.ptr, tb->name.ptr, ta->name.len));
        CHECKF(tb->type == quantize_tensor_type(a, ta, s), "%.*s: type %u", (int)ta->name.len, ta->name.ptr, tb->type);
        if (tb->type == ta->type) {
            CHECK(ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes));
            continue;
        }
        int k = (int)ta->ne[0];
        size_t rows = ta->nbytes / kiln_row_bytes((int)ta->type, k);
        float *x = malloc(sizeof(float) * k), *y = malloc(sizeof(float) * k);
        double se = 0, sx = 0;
        for (size_t r = 0; r < rows; r++) {
            kiln_row_to_f32(x, (const char *)ta->data + kiln_row_bytes((int)ta->type, k) * r, (int)ta->type, k);
            size_t rb = kiln_quant_row_bytes((int)tb->type, k);
            kiln_dequantize_row((int)tb->type, (const char *)tb->data + rb * r, y, k);
            for (int j = 0; j < k; j++) se += (x[j] - y[j]) * (double)(x[j] - y[j]), sx += (double)x[j] * x[j];
        }
        CHECKF(sqrt(se / sx) < tol, "%.*s (%s): relative rms error %.4f", (int)ta->name.len, ta->name.ptr,
               gguf_type_name(tb->type), sqrt(se / sx));
        free(x), free(y);
    }
    gguf_close(a), gguf_close(b);
}

TEST(quantize_writes_every_tensor_within_its_round_trip_bound) {
    const char *in = write_names_model("m.gguf", 3, 512, 1), *out = test_tmp("q.gguf");
    CHECKF(quantize_gguf(in, out, KILN_QUANT_Q8_0, KILN_PROGRESS_OFF) == 0, "%s", kiln_errmsg());
    check_quantized_file(in, out, KILN_QUANT_Q8_0, 0.01);
    CHECKF(quantize_gguf(in, out, KILN_QUANT_Q4_K_M, KILN_PROGRESS_OFF) == 0, "%s", kiln_errmsg());
    check_quantized_file(in, out, KILN_QUANT_Q4_K_M, 0.1);
    CHECKF(quantize_gguf(in, out, KILN_QUANT_Q4_0, KILN_PROGRESS_OFF) == 0, "%s", kiln_errmsg());
    check_quantized_file(in, out, KILN_QUANT_Q4_0, 0.12);
}

TEST(quantize_refuses_an_already_quantized_matrix_and_leaves_the_output_alone) {
    const char *in = write_names_model("m.gguf", 1, 256, 1), *q = test_tmp("q.gguf"), *out = test_tmp("out.gguf");
    CHECK(quantize_gguf(in, q, KILN_QUANT_Q8_0, KILN_PROGRESS_OFF) == 0);
    FILE *f = fopen(out, "w");
    fputs("precious", f);
    fclose(f);
    CHECK(quantize_gguf(q, out, KILN_QUANT_Q4_0, KILN_PROGRESS_OFF) < 0);
    CHECKF(strstr(kiln_errmsg(), "token_embd.weight is already Q8_0"), "%s", kiln_errmsg());
    char buf[16] = {0};
    f = fopen(out, "r");
    CHECK(f && fread(buf, 1, sizeof buf - 1, f) == 8 && !strcmp(buf, "precious"));
    fclose(f);
}

TEST(quantize_command_writes_a_file_and_rejects_a_bad_type) {
    const char *in = write_names_model("m.gguf", 2, 256, 1), *out = test_tmp("cli.gguf");
    char cmd[1024], *err = NULL;
    snprintf(cmd, sizeof cmd, "%s quantize %s %s --type q4_k_m --quiet", test_kiln_bin(), in, out);
    CHECK_EQ_INT(test_run(cmd, NULL, &err), 0);
    CHECKF(strstr(err, "wrote") && strstr(err, "q4_k_m"), "%s", err);
    free(err);
    check_quantized_file(in, out, KILN_QUANT_Q4_K_M, 0.1);
    snprintf(cmd, sizeof cmd, "%s quantize %s %s --type q5_k", test_kiln_bin(), in, out);
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, "'q5_k'") && strstr(err, "q8_0, q4_0, q4_k_m"), "%s", err);
    free(err);
}
