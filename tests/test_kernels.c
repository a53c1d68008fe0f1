/* Kernels: every SIMD implementation the CPU supports against the scalar references, on sizes that are
 * not multiples of any vector width or tile, for each weight type, decode (T = 1) and prefill (T > 1). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/half.h"
#include "base/rng.h"
#include "kernels/isa.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "test.h"

static void fill(float *x, size_t n, uint64_t seed, float lo, float hi) {
    kiln_rng r;
    kiln_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * kiln_rng_f32(&r);
}

/* A random N x K matrix of TYPE, and the same values as f32 (what the reference sees). */
static void *random_weights(int type, int N, int K, uint64_t seed) {
    size_t n = (size_t)N * K;
    float *f = malloc(n * sizeof *f);
    fill(f, n, seed, -1, 1);
    if (type == KILN_TYPE_F32) return f;
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = type == KILN_TYPE_F16 ? kiln_f32_to_f16(f[i]) : kiln_f32_to_bf16(f[i]);
    free(f);
    return h;
}

/* Dot products summed in another order differ by a few ulps of the sum of |terms|, not of the result. */
static void check_matmul_against_reference(const kiln_kernels *kk, int type, int T, int N, int K) {
    void *W = random_weights(type, N, K, 1000 + N * 7 + K);
    float *X = malloc(sizeof(float) * T * K), *Y = malloc(sizeof(float) * T * N), *R = malloc(sizeof(float) * T * N);
    float *w = malloc(sizeof(float) * K);
    fill(X, (size_t)T * K, 7 + T, -1, 1);
    for (int i = 0; i < T * N; i++) Y[i] = NAN;
    kiln_matmul_ref(R, X, W, type, T, N, K);
    kiln_matmul_with(kk, Y, X, W, type, T, N, K);
    for (int i = 0; i < N; i++) {
        kiln_row_to_f32(w, (const char *)W + kiln_row_bytes(type, K) * i, type, K);
        for (int t = 0; t < T; t++) {
            double mag = 0;
            for (int j = 0; j < K; j++) mag += fabs((double)X[t * K + j] * w[j]);
            float got = Y[t * N + i], want = R[t * N + i];
            CHECKF(fabs(got - want) <= 1e-5 * mag + 1e-30, "%s type %d T=%d N=%d K=%d: Y[%d][%d] = %.9g, reference %.9g",
                   kk->name, type, T, N, K, t, i, got, want);
        }
    }
    free(W), free(X), free(Y), free(R), free(w);
}

static const int ks[] = {1, 7, 33, 257, 1001}, ns[] = {1, 3, 17, 67};

static int check_matmul_sizes(int type, int T) {
    int isas = 0;
    for (const kiln_kernels *const *kk = kiln_kernels_supported(); *kk; kk++) {
        if (!(*kk)->matvec) continue;
        isas++;
        for (int a = 0; a < 5; a++)
            for (int b = 0; b < 4; b++) check_matmul_against_reference(*kk, type, T, ns[b], ks[a]);
        check_matmul_against_reference(*kk, type, T, 515, 1001); /* big enough to be threaded */
    }
    return isas;
}

TEST(matvec_equals_reference_for_f32_weights) { check_matmul_sizes(KILN_TYPE_F32, 1); }
TEST(matvec_equals_reference_for_f16_weights) { check_matmul_sizes(KILN_TYPE_F16, 1); }
TEST(matvec_equals_reference_for_bf16_weights) { check_matmul_sizes(KILN_TYPE_BF16, 1); }
TEST(short_batch_matmul_equals_reference_for_every_token_count_and_type) {
    int types[] = {KILN_TYPE_F32, KILN_TYPE_F16, KILN_TYPE_BF16};
    for (const kiln_kernels *const *kk = kiln_kernels_supported(); *kk; kk++) {
        if (!(*kk)->matvec) continue;
        for (int ty = 0; ty < 3; ty++)
            for (int T = 2; T <= (*kk)->matvecs_max + 1; T++) { /* the last one: just past the short-batch path */
                check_matmul_against_reference(*kk, types[ty], T, 67, 257);
                check_matmul_against_reference(*kk, types[ty], T, 3, 33);
                check_matmul_against_reference(*kk, types[ty], T, 515, 1001); /* threaded */
            }
    }
}

TEST(quantized_short_batch_equals_the_tokens_one_at_a_time) {
    /* A speculative draft catching up on 2 to 4 tokens: the integer GEMM would pack every weight, so
     * they run one at a time, and each row of the batch is exactly the one-token product. */
    enum { N = 67, K = 32 * 24 };
    float *f = malloc(sizeof(float) * N * K), *X = malloc(sizeof(float) * 4 * K);
    float *Y = malloc(sizeof(float) * 4 * N), *y = malloc(sizeof(float) * N);
    fill(f, (size_t)N * K, 3, -1, 1);
    fill(X, (size_t)4 * K, 4, -1, 1);
    size_t rb = kiln_row_bytes(KILN_TYPE_Q4_0, K);
    char *W = malloc(rb * N);
    for (int i = 0; i < N; i++) kiln_quantize_row(KILN_TYPE_Q4_0, f + (size_t)i * K, W + rb * i, K);
    for (int T = 2; T <= 4; T++) {
        kiln_matmul(Y, X, W, KILN_TYPE_Q4_0, T, N, K);
        for (int t = 0; t < T; t++) {
            kiln_matmul(y, X + (size_t)t * K, W, KILN_TYPE_Q4_0, 1, N, K);
            for (int i = 0; i < N; i++)
                CHECKF(Y[t * N + i] == y[i], "T=%d: Y[%d][%d] = %.9g, one token at a time %.9g", T, t, i,
                       Y[t * N + i], y[i]);
        }
    }
    free(f), free(X), free(Y), free(y), free(W);
}

TEST(prefill_matmul_equals_reference_for_f32_weights) {
    check_matmul_sizes(KILN_TYPE_F32, 2);
    check_matmul_sizes(KILN_TYPE_F32, 33);
}
TEST(prefill_matmul_equals_reference_for_f16_weights) {
    check_matmul_sizes(KILN_TYPE_F16, 15);
    check_matmul_sizes(KILN_TYPE_F16, 33);
}
TEST(prefill_matmul_equals_reference_for_bf16_weights) {
    check_matmul_sizes(KILN_TYPE_BF16, 3);
    check_matmul_sizes(KILN_TYPE_BF16, 29);
}

TEST(simd_kernels_are_tested_on_this_cpu) {
    /* The x86-64 machines kiln targets have at least AVX2; without it the tests above test nothing. */
    CHECKF(check_matmul_sizes(KILN_TYPE_F32, 1) > 0, "no SIMD kernel table is supported here");
}

TEST(matmul_of_an_unknown_type_yields_nan) {
    float x[4] = {1, 2, 3, 4}, w[8] = {0}, y[2] = {0, 0};
    kiln_matmul(y, x, w, 99, 1, 2, 4);
    CHECK(isnan(y[0]) && isnan(y[1]));
}

TEST(matmul_with_no_columns_is_zero) {
    float x[1] = {1}, w[1] = {1}, y[6];
    for (int i = 0; i < 6; i++) y[i] = NAN;
    kiln_matmul(y, x, w, KILN_TYPE_F32, 3, 2, 0);
    for (int i = 0; i < 6; i++) CHECK(y[i] == 0);
}

#define FOR_EACH_ISA(kk) for (const kiln_kernels *const *kk = kiln_kernels_supported(); *kk; kk++)

static const int lens[] = {1, 7, 16, 33, 257, 1001};

TEST(rmsnorm_matches_reference) {
    FOR_EACH_ISA(kk) for (int a = 0; a < 6; a++) {
        int n = lens[a];
        float x[1001], w[1001], got[1001], want[1001];
        fill(x, n, 1, -3, 3);
        fill(w, n, 2, 0.5f, 1.5f);
        kiln_rmsnorm_ref(want, x, w, n, 1e-5f);
        (*kk)->rmsnorm(got, x, w, n, 1e-5f);
        CHECK_CLOSE(got, want, n, 2e-6f, 0, (*kk)->name);
    }
}

TEST(layernorm_matches_reference) {
    FOR_EACH_ISA(kk) for (int a = 0; a < 6; a++) {
        int n = lens[a];
        float x[1001], w[1001], b[1001], got[1001], want[1001];
        fill(x, n, 3, 1, 4); /* a mean far from 0 */
        fill(w, n, 4, 0.5f, 1.5f);
        fill(b, n, 5, -1, 1);
        kiln_layernorm_ref(want, x, w, b, n, 1e-5f);
        (*kk)->layernorm(got, x, w, b, n, 1e-5f);
        CHECK_CLOSE(got, want, n, 2e-6f, 2e-6f, (*kk)->name);
    }
}

TEST(softmax_matches_reference_over_a_wide_range) {
    FOR_EACH_ISA(kk) for (int a = 0; a < 6; a++) {
        int n = lens[a];
        float got[1001], want[1001];
        fill(want, n, 6 + a, -60, 60);
        memcpy(got, want, sizeof(float) * n);
        kiln_softmax_ref(want, n);
        (*kk)->softmax(got, n);
        CHECK_CLOSE(got, want, n, 1e-6f, 1e-37f, (*kk)->name);
    }
}

TEST(softmax_of_huge_logits_does_not_overflow) {
    FOR_EACH_ISA(kk) {
        float x[5] = {1e30f, 1e30f, -1e30f, 0, 1e30f};
        (*kk)->softmax(x, 5);
        for (int i = 0; i < 5; i++) CHECKF(fabsf(x[i] - (i == 2 || i == 3 ? 0 : 1.0f / 3)) < 1e-7f, "%s: x[%d] = %g", (*kk)->name, i, x[i]);
    }
}

/* Every exp the kernels compute, across the whole float range it covers: swiglu(g) = g e^g / (1 + e^g)
 * has the relative error of exp(-g) for negative g. */
TEST(swiglu_matches_reference_from_underflow_to_overflow) {
    enum { n = 2001 };
    static float g[n], up[n], got[n], want[n];
    for (int i = 0; i < n; i++) g[i] = -110.0f + 220.0f * i / (n - 1) + 0.0137f;
    fill(up, n, 9, -2, 2);
    FOR_EACH_ISA(kk) {
        memcpy(want, g, sizeof g);
        memcpy(got, g, sizeof g);
        kiln_swiglu_ref(want, up, n);
        (*kk)->swiglu(got, up, n);
        CHECK_CLOSE(got, want, n, 1e-6f, 0, (*kk)->name);
    }
}

/* The reference's 1 + tanh(y) loses precision for x < -3 (cancellation, ~6e-8 |x| absolute); the
 * kernels compute the same function as x / (1 + exp(-2y)), which does not. */
TEST(gelu_matches_reference) {
    enum { n = 1001 };
    static float x[n], got[n], want[n];
    for (int i = 0; i < n; i++) x[i] = -12.0f + 24.0f * i / (n - 1) + 0.0031f;
    FOR_EACH_ISA(kk) {
        memcpy(want, x, sizeof x);
        memcpy(got, x, sizeof x);
        kiln_gelu_ref(want, n);
        (*kk)->gelu(got, n);
        for (int i = 0; i < n; i++)
            CHECKF(fabsf(got[i] - want[i]) <= 1e-6f * fabsf(want[i]) + 1e-7f * fabsf(x[i]),
                   "%s: gelu(%.9g) = %.9g, reference %.9g", (*kk)->name, x[i], got[i], want[i]);
    }
}

/* A prefill's activations run on the worker threads in chunks: each value as the active kernel computes
 * it in one call, bit for bit, whatever the length (chunks and their remainder). */
TEST(activations_split_across_threads_equal_one_call) {
    int sizes[] = {2048, 20000, 3 * 16384 + 77};
    kiln_set_threads(2);
    for (int c = 0; c < 3; c++) {
        int n = sizes[c];
        float *g = malloc(sizeof(float) * n), *up = malloc(sizeof(float) * n), *a = malloc(sizeof(float) * n),
              *b = malloc(sizeof(float) * n);
        fill(g, n, 3 + c, -8, 8);
        fill(up, n, 4 + c, -2, 2);
        memcpy(a, g, sizeof(float) * n);
        memcpy(b, g, sizeof(float) * n);
        kiln_swiglu(a, up, n);
        kiln_kernels_active()->swiglu(b, up, n);
        CHECKF(memcmp(a, b, sizeof(float) * n) == 0, "swiglu of %d values differs from one call", n);
        memcpy(a, g, sizeof(float) * n);
        memcpy(b, g, sizeof(float) * n);
        kiln_gelu(a, n);
        kiln_kernels_active()->gelu(b, n);
        CHECKF(memcmp(a, b, sizeof(float) * n) == 0, "gelu of %d values differs from one call", n);
        free(g), free(up), free(a), free(b);
    }
}

TEST(gelu_is_accurate_to_a_few_ulps_given_its_argument) {
    enum { n = 1001 };
    static float x[n], got[n];
    for (int i = 0; i < n; i++) x[i] = -12.0f + 24.0f * i / (n - 1) + 0.0031f;
    FOR_EACH_ISA(kk) {
        if (!(*kk)->matvec) continue; /* the reference is what it is */
        memcpy(got, x, sizeof x);
        (*kk)->gelu(got, n);
        for (int i = 0; i < n; i++) {
            /* y rounded as the kernels round it (its rounding alone moves gelu by |2y| ulps for x << 0),
             * the rest exact: 0.5 x (1 + tanh y) = x / (1 + exp(-2y)) */
            float xf = x[i], y = 0.7978845608028654f * (xf + 0.044715f * ((xf * xf) * xf));
            double want = xf / (1 + exp(-2.0 * y));
            CHECKF(fabs(got[i] - want) <= 5e-7 * fabs(want) + 1e-37, "%s: gelu(%.9g) = %.9g, exact %.9g", (*kk)->name,
                   x[i], got[i], want);
        }
    }
}

static void check_rope(int style) {
    static const int rot[] = {40, 24, 25, 2};
    static const int pos[] = {0, 7, 1000, 7, 4095};
    float x[3 * 40], got[3 * 40], want[3 * 40];
    FOR_EACH_ISA(kk) for (int a = 0; a < 4; a++) for (int b = 0; b < 5; b++) {
        float theta = b == 3 ? 1e6f : 10000.0f; /* same position, new theta: the cached angles must go */
        fill(x, 120, 11 + b, -2, 2);
        memcpy(got, x, sizeof x);
        memcpy(want, x, sizeof x);
        kiln_rope_ref(want, 3, 40, rot[a], pos[b], theta, style);
        kiln_rope_with(*kk, got, 3, 40, rot[a], pos[b], theta, style);
        CHECKF(memcmp(got, want, sizeof got) == 0, "%s: rot_dim %d pos %d differs from the reference", (*kk)->name,
               rot[a], pos[b]);
    }
}

TEST(rope_interleaved_is_bit_identical_to_reference) { check_rope(KILN_ROPE_INTERLEAVED); }
TEST(rope_neox_is_bit_identical_to_reference) { check_rope(KILN_ROPE_NEOX); }

static void check_attention(int T, int pos0, int n_heads, int n_kv_heads, int head_dim, int pad) {
    int kv_stride = n_kv_heads * head_dim + pad, n_pos = pos0 + T, qdim = n_heads * head_dim;
    float *Q = malloc(sizeof(float) * T * qdim), *K = malloc(sizeof(float) * n_pos * kv_stride);
    float *V = malloc(sizeof(float) * n_pos * kv_stride);
    float *got = malloc(sizeof(float) * T * qdim), *want = malloc(sizeof(float) * T * qdim);
    fill(Q, (size_t)T * qdim, 21, -3, 3); /* scores spread over several units: the softmax is peaked */
    fill(K, (size_t)n_pos * kv_stride, 22, -1, 1);
    fill(V, (size_t)n_pos * kv_stride, 23, -1, 1);
    float scale = 1.0f / sqrtf((float)head_dim);
    kiln_attention_ref(want, Q, K, V, T, pos0, n_heads, n_kv_heads, head_dim, kv_stride, scale);
    FOR_EACH_ISA(kk) {
        for (int i = 0; i < T * qdim; i++) got[i] = NAN;
        kiln_attention_with(*kk, got, Q, K, V, T, pos0, n_heads, n_kv_heads, head_dim, kv_stride, scale);
        char what[64];
        snprintf(what, sizeof what, "%s T=%d pos0=%d head_dim=%d", (*kk)->name, T, pos0, head_dim);
        CHECK_CLOSE(got, want, (size_t)T * qdim, 1e-5f, 1e-6f, what);
    }
    free(Q), free(K), free(V), free(got), free(want);
}

TEST(prefill_attention_with_gqa_after_a_prefix_matches_reference) {
    check_attention(9, 131, 6, 2, 40, 8);
    check_attention(33, 0, 4, 4, 17, 0);
    check_attention(5, 3, 3, 1, 64, 1);
    check_attention(2, 40, 4, 2, 24, 0); /* too few tokens for the vector-lane blocks: rows */
}

TEST(decode_attention_over_a_long_context_matches_reference) {
    check_attention(1, 2047, 12, 4, 64, 0);
    check_attention(1, 300, 2, 1, 7, 3);
}

TEST(kiln_isa_env_caps_dispatch) {
    setenv("KILN_ISA", "scalar", 1);
    CHECK_STR(kiln_isa(), "scalar");
    float x[3] = {1, 2, 3};
    kiln_softmax(x, 3);
    float want[3] = {1, 2, 3};
    kiln_softmax_ref(want, 3);
    CHECK(memcmp(x, want, sizeof x) == 0);
}

TEST(kiln_isa_env_naming_a_better_isa_than_the_cpu_has_gives_the_best_it_has) {
    setenv("KILN_ISA", "avx512", 1);
    CHECK_STR(kiln_isa(), kiln_kernels_supported()[0]->name);
}

TEST(kiln_isa_env_caps_dispatch_to_avx2) {
    if (!__builtin_cpu_supports("avx2")) return;
    setenv("KILN_ISA", "avx2", 1);
    CHECK_STR(kiln_isa(), "avx2");
}

TEST(kiln_isa_env_with_an_unknown_name_is_ignored) {
    setenv("KILN_ISA", "sse9", 1);
    CHECK_STR(kiln_isa(), kiln_kernels_supported()[0]->name);
}
