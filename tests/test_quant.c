/* Quantized weights: the block formats against llama.cpp's gguf-py and the quantizers against ggml's C
 * reference quantizers (both in tests/golden/quant_gguf_py.gguf, written by tests/ref/quant_golden.py),
 * the round-trip error, and every SIMD kernel table against the scalar references on sizes that leave
 * partial groups and tiles: decode (T = 1), short batches (2..16 tokens) and prefill (the GEMM). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/half.h"
#include "base/rng.h"
#include "format/gguf.h"
#include "kernels/quant_isa.h"
#include "test.h"

#define GOLDEN "tests/golden/quant_gguf_py.gguf"

static const int TYPES[] = {KILN_TYPE_Q8_0, KILN_TYPE_Q4_0, KILN_TYPE_Q4_K, KILN_TYPE_Q6_K};

static void gaussian(float *x, size_t n, uint64_t seed, float sigma) {
    kiln_rng r;
    kiln_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        double u = kiln_rng_f64(&r) + 1e-12, v = kiln_rng_f64(&r);
        x[i] = (float)(sigma * sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
    }
}

static const gguf_tensor *golden_tensor(const gguf_file *g, const char *name) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    CHECKF(t, "%s: no tensor %s", GOLDEN, name);
    return t;
}

TEST(quant_block_sizes_match_ggml) {
    CHECK_EQ_INT(sizeof(kiln_block_q8_0), 34);
    CHECK_EQ_INT(sizeof(kiln_block_q4_0), 18);
    CHECK_EQ_INT(sizeof(kiln_block_q4_k), 144);
    CHECK_EQ_INT(sizeof(kiln_block_q6_k), 210);
    for (int i = 0; i < 4; i++)
        for (int k = 256; k <= 4096; k += 256)
            CHECK_EQ_INT(kiln_quant_row_bytes(TYPES[i], k), gguf_type_nbytes(TYPES[i], k));
    CHECK_EQ_INT(kiln_quant_row_bytes(KILN_TYPE_Q8_0, 48), 0);
    CHECK_EQ_INT(kiln_quant_row_bytes(KILN_TYPE_Q4_K, 32 * 9), 0);
    CHECK_EQ_INT(kiln_quant_row_bytes(KILN_TYPE_Q8_0 + 1, 256), 0);
}

TEST(quant_q4_0_low_nibbles_are_the_first_sixteen_weights) {
    kiln_block_q4_0 b = {.d = kiln_f32_to_f16(0.5f)};
    for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    kiln_dequantize_row(KILN_TYPE_Q4_0, &b, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECK(y[j] == (j - 8) * 0.5f);
        CHECK(y[j + 16] == (7 - j) * 0.5f);
    }
}

TEST(quant_q4_k_unpacks_six_bit_scales_and_mins) {
    /* sub-blocks 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); 4-7 split across byte 8-11
     * (low 4 bits) and the top 2 bits of bytes 0-3 / 4-7 */
    uint8_t s[12] = {0xC1, 0x02, 0x43, 0x84, 0x05, 0x46, 0x87, 0xC8, 0x9A, 0x0B, 0xFC, 0x3D};
    int want_sc[8] = {1, 2, 3, 4, 0x3A, 0x0B, 0x1C, 0x2D}, want_m[8] = {5, 6, 7, 8, 0x09, 0x10, 0x2F, 0x33};
    for (int i = 0; i < 8; i++) {
        int sc, m;
        kiln_q4k_scale_min(s, i, &sc, &m);
        CHECKF(sc == want_sc[i] && m == want_m[i], "sub-block %d: scale %d min %d, expected %d %d", i, sc, m,
               want_sc[i], want_m[i]);
    }
}

/* Dequantizing NAME gives gguf-py's NAME.deq bit for bit. */
static void check_dequant_golden(const char *name) {
    gguf_file *g = gguf_open(GOLDEN);
    CHECKF(g, "%s", GOLDEN);
    const gguf_tensor *t = golden_tensor(g, name);
    char deq[32];
    snprintf(deq, sizeof deq, "%s.deq", name);
    const gguf_tensor *d = golden_tensor(g, deq);
    int k = (int)t->ne[0], rows = (int)t->ne[1];
    float *y = malloc(sizeof(float) * k);
    const float *want = d->data;
    for (int r = 0; r < rows; r++) {
        kiln_dequantize_row((int)t->type, (const char *)t->data + kiln_quant_row_bytes((int)t->type, k) * r, y, k);
        for (int j = 0; j < k; j++)
            CHECKF(memcmp(&y[j], &want[r * k + j], 4) == 0, "%s[%d][%d] = %.9g, gguf-py %.9g", name, r, j, y[j],
                   want[r * k + j]);
    }
    free(y);
    gguf_close(g);
}

TEST(quant_dequantizes_gguf_py_q8_0_identically) { check_dequant_golden("q8_0"); }
TEST(quant_dequantizes_gguf_py_q4_0_identically) { check_dequant_golden("q4_0"); }
TEST(quant_dequantizes_gguf_py_q4_k_identically) { check_dequant_golden("q4_k"); }
TEST(quant_dequantizes_gguf_py_q6_k_identically) { check_dequant_golden("q6_k"); }

TEST(quant_q8_0_and_q4_0_quantize_to_the_bytes_gguf_py_writes) {
    gguf_file *g = gguf_open(GOLDEN);
    CHECKF(g, "%s", GOLDEN);
    const gguf_tensor *src = golden_tensor(g, "src");
    int k = (int)src->ne[0], rows = (int)src->ne[1];
    static const struct {
        const char *name;
        int type;
    } cases[] = {{"q8_0", KILN_TYPE_Q8_0}, {"q4_0", KILN_TYPE_Q4_0}};
    for (int c = 0; c < 2; c++) {
        const gguf_tensor *t = golden_tensor(g, cases[c].name);
        size_t rb = kiln_quant_row_bytes(cases[c].type, k);
        unsigned char *out = malloc(rb);
        for (int r = 0; r < rows; r++) {
            kiln_quantize_row(cases[c].type, (const float *)src->data + (size_t)r * k, out, k);
            const unsigned char *want = (const unsigned char *)t->data + rb * r;
            for (size_t i = 0; i < rb; i++)
                CHECKF(out[i] == want[i], "%s row %d byte %zu: 0x%02x, gguf-py 0x%02x", cases[c].name, r, i, out[i],
                       want[i]);
        }
        free(out);
    }
    gguf_close(g);
}

TEST(quant_every_type_quantizes_to_the_bytes_of_ggml_reference_quantizers) {
    /* what llama-quantize writes without an importance matrix: same scale searches, same roundings */
    gguf_file *g = gguf_open(GOLDEN);
    CHECKF(g, "%s", GOLDEN);
    const gguf_tensor *src = golden_tensor(g, "srck");
    int k = (int)src->ne[0], rows = (int)src->ne[1];
    static const char *const names[] = {"srck.q8_0", "srck.q4_0", "srck.q4_k", "srck.q6_k"};
    for (int c = 0; c < 4; c++) {
        const gguf_tensor *t = golden_tensor(g, names[c]);
        CHECK_EQ_INT(t->type, TYPES[c]);
        size_t rb = kiln_quant_row_bytes(TYPES[c], k);
        unsigned char *out = malloc(rb);
        for (int r = 0; r < rows; r++) {
            kiln_quantize_row(TYPES[c], (const float *)src->data + (size_t)r * k, out, k);
            const unsigned char *want = (const unsigned char *)t->data + rb * r;
            for (size_t i = 0; i < rb; i++)
                CHECKF(out[i] == want[i], "%s row %d byte %zu: 0x%02x, ggml 0x%02x", names[c], r, i, out[i], want[i]);
        }
        free(out);
    }
    gguf_close(g);
}

/* Root-mean-square round-trip error relative to the rms of gaussian weights, and the worst element
 * relative to its block's largest magnitude. */
static void round_trip(int type, double *rel_rms, double *worst_step) {
    int k = 4096;
    float *x = malloc(sizeof(float) * k), *y = malloc(sizeof(float) * k);
    void *q = malloc(kiln_quant_row_bytes(type, k));
    gaussian(x, k, 42, 0.02f);
    kiln_quantize_row(type, x, q, k);
    kiln_dequantize_row(type, q, y, k);
    double se = 0, sx = 0;
    *worst_step = 0;
    for (int b = 0; b < k / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
        for (int j = 0; j < 32; j++) {
            double e = y[32 * b + j] - x[32 * b + j];
            se += e * e;
            sx += (double)x[32 * b + j] * x[32 * b + j];
            if (fabs(e) / amax > *worst_step) *worst_step = fabs(e) / amax;
        }
    }
    *rel_rms = sqrt(se / sx);
    free(x), free(y), free(q);
}

TEST(quant_round_trip_error_is_within_half_a_step) {
    /* nearest rounding: at most half a step (amax/127), plus the f16 rounding of the scale (2^-11 relative)
     * on the largest quantized value; Q4_0 puts -amax at -8 and clips +amax at +7, a whole step */
    double rms, worst;
    round_trip(KILN_TYPE_Q8_0, &rms, &worst);
    CHECKF(worst <= 0.5 / 127 + 1.0 / 2048, "Q8_0 worst error %.5f of the block max", worst);
    CHECKF(rms < 0.006, "Q8_0 relative rms error %.5f", rms);
    round_trip(KILN_TYPE_Q4_0, &rms, &worst);
    CHECKF(worst <= 1.0 / 8 + 1.0 / 2048, "Q4_0 worst error %.5f of the block max", worst);
    CHECKF(rms < 0.1, "Q4_0 relative rms error %.5f", rms);
}

TEST(quant_k_quants_round_trip_within_their_bounds) {
    /* bounds ~1.1x the errors measured for gaussian weights: Q4_K (4.5 bits, with mins) below Q4_0 at
     * the same size, Q6_K (6.6 bits) far below both */
    double q40, q4k, q6k, worst;
    round_trip(KILN_TYPE_Q4_0, &q40, &worst);
    round_trip(KILN_TYPE_Q4_K, &q4k, &worst);
    round_trip(KILN_TYPE_Q6_K, &q6k, &worst);
    CHECKF(q4k < 0.9 * q40, "Q4_K rms %.5f, Q4_0 %.5f", q4k, q40);
    CHECKF(q4k < 0.078, "Q4_K relative rms error %.5f", q4k);
    CHECKF(q6k < 0.022, "Q6_K relative rms error %.5f", q6k);
}

TEST(quant_all_zero_rows_quantize_to_zero) {
    float x[512] = {0}, y[512];
    for (int i = 0; i < 4; i++) {
        unsigned char q[1024];
        kiln_quantize_row(TYPES[i], x, q, 512);
        kiln_dequantize_row(TYPES[i], q, y, 512);
        for (int j = 0; j < 512; j++) CHECKF(y[j] == 0, "type %d: %g at %d", TYPES[i], y[j], j);
    }
}

/* A random N x K matrix quantized to TYPE. */
static void *random_quant(int type, int N, int K, uint64_t seed) {
    float *f = malloc(sizeof(float) * (size_t)N * K);
    gaussian(f, (size_t)N * K, seed, 0.05f);
    size_t rb = kiln_quant_row_bytes(type, K);
    char *q = malloc(rb * N);
    for (int i = 0; i < N; i++) kiln_quantize_row(type, f + (size_t)i * K, q + rb * i, K);
    free(f);
    return q;
}

TEST(quant_activation_quantizers_of_every_isa_equal_the_reference) {
    int ks[] = {32, 32 * 7, 256, 256 * 3};
    for (const kiln_qkernels *const *qk = kiln_qkernels_supported(); *qk; qk++)
        for (int i = 0; i < 4; i++)
            for (int c = 0; c < 4; c++) {
                int type = TYPES[i], k = ks[c];
                if (k % kiln_qx_block(type)) continue;
                float *x = malloc(sizeof(float) * k);
                gaussian(x, k, 9 + c, 1.5f);
                x[k / 3] = -9; /* largest magnitude negative */
                kiln_qx a = {0}, b = {0};
                kiln_quantize_x_ref(&a, x, type, k);
                (*qk)->quantize_x(&b, x, type, k);
                const char *isa = (*qk)->name;
                size_t padded = (size_t)(k + 63) / 64 * 64;
                CHECKF(memcmp(a.q, b.q, padded) == 0, "%s: q differs (type %d, k %d)", isa, type, k);
                int nd = k / kiln_qx_block(type), ns = kiln_qx_block(type) == 32 ? k / 32 : k / 16;
                CHECKF(memcmp(a.d, b.d, sizeof(float) * nd) == 0, "%s: scales differ (type %d, k %d)", isa, type, k);
                CHECKF(memcmp(a.sum, b.sum, sizeof(int32_t) * ns) == 0, "%s: sums differ (type %d, k %d)", isa, type,
                       k);
                kiln_qx_free(&a);
                kiln_qx_free(&b);
                free(x);
            }
}

/* Sums of integers are exact; only the order of the float accumulation of the blocks differs. */
static void check_qmatmul(const kiln_qkernels *qk, int type, int T, int N, int K) {
    void *W = random_quant(type, N, K, 100 + (uint64_t)N * 7 + K);
    float *X = malloc(sizeof(float) * T * K), *Y = malloc(sizeof(float) * T * N), *R = malloc(sizeof(float) * T * N);
    float *w = malloc(sizeof(float) * K);
    gaussian(X, (size_t)T * K, 5 + T, 1);
    for (int i = 0; i < T * N; i++) Y[i] = NAN;
    kiln_qmatmul_ref(R, X, W, type, T, N, K);
    kiln_qmatmul_with(qk, Y, X, W, type, T, N, K);
    size_t rb = kiln_quant_row_bytes(type, K);
    for (int i = 0; i < N; i++) {
        kiln_dequantize_row(type, (const char *)W + rb * i, w, K);
        for (int t = 0; t < T; t++) {
            double mag = 0;
            for (int j = 0; j < K; j++) mag += fabs((double)X[t * K + j] * w[j]);
            float got = Y[t * N + i], want = R[t * N + i];
            CHECKF(fabs(got - want) <= 1e-5 * mag, "%s type %d T=%d N=%d K=%d: Y[%d][%d] = %.9g, reference %.9g",
                   qk->name, type, T, N, K, t, i, got, want);
        }
    }
    free(W), free(X), free(Y), free(R), free(w);
}

/* Block counts that leave every partial group (Q8_0 pairs, Q4_0 fours), rows not a multiple of the
 * tile or of 16, and (BIG) one size big enough to be threaded. */
static void check_qmatmul_sizes(int type, int T, int big) {
    int qk32[] = {32, 32 * 2, 32 * 3, 32 * 13, 32 * 40}, qk256[] = {256, 256 * 3, 256 * 5};
    const int *ks = kiln_quant_block(type) == 32 ? qk32 : qk256, nk = kiln_quant_block(type) == 32 ? 5 : 3;
    int ns[] = {1, 7, 37};
    for (const kiln_qkernels *const *qk = kiln_qkernels_supported(); *qk; qk++) {
        for (int a = 0; a < nk; a++)
            for (int b = 0; b < 3; b++) check_qmatmul(*qk, type, T, ns[b], ks[a]);
        if (big) check_qmatmul(*qk, type, T, 300, ks[nk - 1]);
    }
}

TEST(quant_matvec_equals_reference_for_q8_0) { check_qmatmul_sizes(KILN_TYPE_Q8_0, 1, 1); }
TEST(quant_matvec_equals_reference_for_q4_0) { check_qmatmul_sizes(KILN_TYPE_Q4_0, 1, 1); }
TEST(quant_matvec_equals_reference_for_q4_k) { check_qmatmul_sizes(KILN_TYPE_Q4_K, 1, 1); }
TEST(quant_matvec_equals_reference_for_q6_k) { check_qmatmul_sizes(KILN_TYPE_Q6_K, 1, 1); }
/* 2..16 tokens: the short-batch kernels (each weight block read once for all tokens). */
TEST(quant_short_batch_equals_reference_for_q8_0) {
    check_qmatmul_sizes(KILN_TYPE_Q8_0, 2, 0);
    check_qmatmul_sizes(KILN_TYPE_Q8_0, 15, 1);
}
TEST(quant_short_batch_equals_reference_for_q4_0) {
    check_qmatmul_sizes(KILN_TYPE_Q4_0, 5, 0);
    check_qmatmul_sizes(KILN_TYPE_Q4_0, 11, 1);
}
TEST(quant_short_batch_equals_reference_for_q4_k) {
    check_qmatmul_sizes(KILN_TYPE_Q4_K, 3, 0);
    check_qmatmul_sizes(KILN_TYPE_Q4_K, 16, 1);
}
TEST(quant_short_batch_equals_reference_for_q6_k) {
    check_qmatmul_sizes(KILN_TYPE_Q6_K, 8, 0);
    check_qmatmul_sizes(KILN_TYPE_Q6_K, 9, 1);
}

/* Above 16 tokens: the GEMM. */
TEST(quant_prefill_equals_reference_for_q8_0) {
    check_qmatmul_sizes(KILN_TYPE_Q8_0, 17, 0);
    check_qmatmul_sizes(KILN_TYPE_Q8_0, 40, 1);
}
TEST(quant_prefill_equals_reference_for_q4_0) {
    check_qmatmul_sizes(KILN_TYPE_Q4_0, 19, 0);
    check_qmatmul_sizes(KILN_TYPE_Q4_0, 37, 1);
}
TEST(quant_prefill_equals_reference_for_q4_k) {
    check_qmatmul_sizes(KILN_TYPE_Q4_K, 17, 0);
    check_qmatmul_sizes(KILN_TYPE_Q4_K, 29, 1);
}
TEST(quant_prefill_equals_reference_for_q6_k) {
    check_qmatmul_sizes(KILN_TYPE_Q6_K, 18, 0);
    check_qmatmul_sizes(KILN_TYPE_Q6_K, 33, 1);
}

TEST(quant_short_batch_gives_each_token_its_one_token_product_bit_for_bit) {
    /* so a speculative target pass over drafted tokens scores them exactly as plain decoding would */
    int N = 37;
    for (const kiln_qkernels *const *qk = kiln_qkernels_supported(); *qk; qk++)
        for (int i = 0; i < 4; i++) {
            int type = TYPES[i], K = kiln_quant_block(type) == 32 ? 32 * 13 : 256 * 3;
            void *W = random_quant(type, N, K, 11);
            float *X = malloc(sizeof(float) * 16 * K), *Y = malloc(sizeof(float) * 16 * N), y[37];
            gaussian(X, (size_t)16 * K, 12, 1);
            for (int T = 2; T <= 16; T++) {
                kiln_qmatmul_with(*qk, Y, X, W, type, T, N, K);
                for (int t = 0; t < T; t++) {
                    kiln_qmatmul_with(*qk, y, X + (size_t)t * K, W, type, 1, N, K);
                    CHECKF(memcmp(y, Y + (size_t)t * N, sizeof y) == 0, "%s type %d: token %d of %d differs",
                           (*qk)->name, type, t, T);
                }
            }
            free(W), free(X), free(Y);
        }
}

TEST(quant_matrices_sharing_activations_give_each_its_own_product_bit_for_bit) {
    /* the q, k, v (gate, up) products of a layer run as one: parts whose rows do not fill the pool's
     * chunks, with 2 threads, for decode, short batches and the GEMM */
    int rows[3] = {37, 64, 300};
    kiln_set_threads(2);
    for (const kiln_qkernels *const *qk = kiln_qkernels_supported(); *qk; qk++)
        for (int i = 0; i < 4; i++) {
            int type = TYPES[i], K = kiln_quant_block(type) == 32 ? 32 * 13 : 256 * 2, Tmax = 20;
            float *X = malloc(sizeof(float) * Tmax * K);
            gaussian(X, (size_t)Tmax * K, 21, 1);
            kiln_qpart parts[3];
            float *want[3];
            for (int p = 0; p < 3; p++) {
                parts[p] = (kiln_qpart){malloc(sizeof(float) * Tmax * rows[p]), random_quant(type, rows[p], K, 30 + p),
                                        rows[p]};
                want[p] = malloc(sizeof(float) * Tmax * rows[p]);
            }
            for (int T = 1; T <= Tmax; T += T < 3 ? 1 : 17) {
                kiln_qmatmul_parts_with(*qk, 3, parts, X, type, T, K);
                for (int p = 0; p < 3; p++) {
                    kiln_qmatmul_with(*qk, want[p], X, parts[p].w, type, T, rows[p], K);
                    CHECKF(memcmp(want[p], parts[p].y, sizeof(float) * T * rows[p]) == 0,
                           "%s type %d T=%d: part %d differs from its own product", (*qk)->name, type, T, p);
                }
            }
            for (int p = 0; p < 3; p++) free(parts[p].y), free((void *)parts[p].w), free(want[p]);
            free(X);
        }
}

TEST(quant_matmul_is_close_to_the_float_product_of_the_dequantized_weights) {
    /* what remains is the int8 rounding of the activations: ~0.4% of the rms of a dot product */
    int T = 3, N = 16, K = 512;
    float *X = malloc(sizeof(float) * T * K), *w = malloc(sizeof(float) * K), Y[3 * 16];
    gaussian(X, (size_t)T * K, 77, 1);
    for (int i = 0; i < 4; i++) {
        void *W = random_quant(TYPES[i], N, K, 3);
        kiln_qmatmul(Y, X, W, TYPES[i], T, N, K);
        double se = 0, sy = 0;
        for (int n = 0; n < N; n++) {
            kiln_dequantize_row(TYPES[i], (const char *)W + kiln_quant_row_bytes(TYPES[i], K) * n, w, K);
            for (int t = 0; t < T; t++) {
                double s = 0;
                for (int j = 0; j < K; j++) s += (double)w[j] * X[t * K + j];
                se += (Y[t * N + n] - s) * (Y[t * N + n] - s);
                sy += s * s;
            }
        }
        CHECKF(sqrt(se / sy) < 0.01, "type %d: relative rms error %.5f", TYPES[i], sqrt(se / sy));
        free(W);
    }
    free(X), free(w);
}
