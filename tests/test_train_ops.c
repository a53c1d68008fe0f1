/* Finite-difference gradient checks of every training operation (src/train/ops.h).
 *
 * Each check projects an operation's output onto fixed random weights R, loss = sum(out * R) in
 * double, so the backward pass given dout = R must return the loss's gradient. Central differences
 * in float with step 1e-2..1e-3 are good to about 1e-3 relative; the tolerance (2e-2 relative of the
 * larger magnitude plus a small absolute term) is far below what a wrong formula moves a gradient by. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "kernels/kernels.h"
#include "test.h"
#include "train/ops.h"

static float *randn(size_t n, uint64_t seed, float scale) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    kiln_rng r;
    kiln_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * (2.0f * kiln_rng_f32(&r) - 1.0f);
    return x;
}

static double project(const float *out, const float *R, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * R[i];
    return s;
}

/* Compares G (analytic) with central differences of LOSS over X[0..n) (every STEP-th element). */
typedef double (*loss_fn)(void);
static void check_grad(loss_fn loss, float *x, const float *g, size_t n, size_t step, float eps, const char *what) {
    for (size_t i = 0; i < n; i += step) {
        float saved = x[i];
        x[i] = saved + eps;
        double lp = loss();
        x[i] = saved - eps;
        double lm = loss();
        x[i] = saved;
        double num = (lp - lm) / (2.0 * eps), big = fabs(num) > fabs(g[i]) ? fabs(num) : fabs(g[i]);
        CHECKF(fabs(num - g[i]) <= 2e-2 * big + 2e-3, "%s[%zu]: analytic %.6g, finite difference %.6g", what, i, g[i],
               num);
    }
}

/* ---- matmul ---- */
enum { MM_N = 5, MM_OC = 7, MM_IC = 6 };
static float *mm_x, *mm_w, *mm_b, *mm_r;
static double mm_loss(void) {
    float out[MM_N * MM_OC];
    op_matmul_forward(out, mm_x, mm_w, mm_b, NULL, MM_N, MM_OC, MM_IC);
    return project(out, mm_r, MM_N * MM_OC);
}

TEST(train_matmul_backward_matches_finite_differences) {
    mm_x = randn(MM_N * MM_IC, 1, 1), mm_w = randn(MM_OC * MM_IC, 2, 1), mm_b = randn(MM_OC, 3, 1);
    mm_r = randn(MM_N * MM_OC, 4, 1);
    float dx[MM_N * MM_IC], dw[MM_OC * MM_IC] = {0}, db[MM_OC] = {0};
    op_matmul_backward(dx, dw, db, mm_r, mm_x, mm_w, MM_N, MM_OC, MM_IC, 0);
    check_grad(mm_loss, mm_x, dx, MM_N * MM_IC, 1, 1e-2f, "dx");
    check_grad(mm_loss, mm_w, dw, MM_OC * MM_IC, 1, 1e-2f, "dW");
    check_grad(mm_loss, mm_b, db, MM_OC, 1, 1e-2f, "db");
}

TEST(train_matmul_backward_accumulates_weight_grads_and_optionally_dinp) {
    float x[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 0, 0, 0, 1, 0}, dout[4] = {1, 1, 1, 1};
    float dx[6] = {10, 10, 10, 10, 10, 10}, dw[6] = {100, 0, 0, 0, 0, 0}, db[2] = {1, 1};
    op_matmul_backward(dx, dw, db, dout, x, w, 2, 2, 3, 1);
    CHECK_CLOSE(dx, ((float[]){11, 11, 10, 11, 11, 10}), 6, 0, 0, "dx added");
    CHECK_CLOSE(dw, ((float[]){105, 7, 9, 5, 7, 9}), 6, 0, 0, "dW accumulated");
    CHECK_CLOSE(db, ((float[]){3, 3}), 2, 0, 0, "db accumulated");
}


TEST(train_matmul_forward_adds_bias_and_residual) {
    float x[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 0, 0, 0, 1, 0}, b[2] = {10, 20}, res[4] = {100, 200, 300, 400};
    float out[4];
    op_matmul_forward(out, x, w, b, res, 2, 2, 3);
    CHECK_CLOSE(out, ((float[]){111, 222, 314, 425}), 4, 0, 0, "bias and residual");
    op_matmul_forward(out, x, w, NULL, res, 2, 2, 3);
    CHECK_CLOSE(out, ((float[]){101, 202, 304, 405}), 4, 0, 0, "residual only");
    op_matmul_forward(out, x, w, NULL, NULL, 2, 2, 3);
    CHECK_CLOSE(out, ((float[]){1, 2, 4, 5}), 4, 0, 0, "product only");
}
/* ---- norms ---- */
enum { NM_N = 4, NM_C = 24 };
static float *nm_x, *nm_w, *nm_b, *nm_r;
static int nm_rms;
static double nm_loss(void) {
    float out[NM_N * NM_C], mean[NM_N], rstd[NM_N];
    if (nm_rms) op_rmsnorm_forward(out, rstd, nm_x, nm_w, NM_N, NM_C, 1e-5f);
    else op_layernorm_forward(out, mean, rstd, nm_x, nm_w, nm_b, NM_N, NM_C, 1e-5f);
    return project(out, nm_r, NM_N * NM_C);
}

static void check_norm(int rms) {
    nm_rms = rms;
    nm_x = randn(NM_N * NM_C, 5, 2), nm_w = randn(NM_C, 6, 1), nm_b = randn(NM_C, 7, 1), nm_r = randn(NM_N * NM_C, 8, 1);
    float out[NM_N * NM_C], mean[NM_N], rstd[NM_N], dx[NM_N * NM_C], dw[NM_C] = {0}, db[NM_C] = {0};
    for (int i = 0; i < NM_N * NM_C; i++) dx[i] = 0;
    if (rms) {
        op_rmsnorm_forward(out, rstd, nm_x, nm_w, NM_N, NM_C, 1e-5f);
        op_rmsnorm_backward(dx, dw, nm_r, nm_x, nm_w, rstd, NM_N, NM_C);
    } else {
        op_layernorm_forward(out, mean, rstd, nm_x, nm_w, nm_b, NM_N, NM_C, 1e-5f);
        op_layernorm_backward(dx, dw, db, nm_r, nm_x, nm_w, mean, rstd, NM_N, NM_C);
        check_grad(nm_loss, nm_b, db, NM_C, 1, 1e-2f, "db");
    }
    check_grad(nm_loss, nm_x, dx, NM_N * NM_C, 1, 1e-2f, "dx");
    check_grad(nm_loss, nm_w, dw, NM_C, 1, 1e-2f, "dw");
}

TEST(train_layernorm_backward_matches_finite_differences) { check_norm(0); }
TEST(train_rmsnorm_backward_matches_finite_differences) { check_norm(1); }

TEST(train_norm_forwards_match_the_inference_kernels) {
    float *x = randn(3 * 40, 9, 3), *w = randn(40, 10, 1), *b = randn(40, 11, 1);
    float out[120], want[120], mean[3], rstd[3];
    op_layernorm_forward(out, mean, rstd, x, w, b, 3, 40, 1e-5f);
    for (int n = 0; n < 3; n++) kiln_layernorm_ref(want + n * 40, x + n * 40, w, b, 40, 1e-5f);
    CHECK_CLOSE(out, want, 120, 1e-5f, 1e-6f, "layernorm");
    op_rmsnorm_forward(out, rstd, x, w, 3, 40, 1e-5f);
    for (int n = 0; n < 3; n++) kiln_rmsnorm_ref(want + n * 40, x + n * 40, w, 40, 1e-5f);
    CHECK_CLOSE(out, want, 120, 1e-5f, 1e-6f, "rmsnorm");
}

/* ---- activations ---- */
enum { ACT_N = 3, ACT_F = 19 };
static float *act_x, *act_r;
static double gelu_loss(void) {
    float out[ACT_N * ACT_F];
    op_gelu_forward(out, NULL, act_x, ACT_N * ACT_F);
    return project(out, act_r, ACT_N * ACT_F);
}
static double swiglu_loss(void) {
    float out[ACT_N * ACT_F];
    op_swiglu_forward(out, act_x, ACT_N, ACT_F);
    return project(out, act_r, ACT_N * ACT_F);
}

TEST(train_gelu_backward_matches_finite_differences_and_forward_matches_kernel) {
    act_x = randn(ACT_N * ACT_F, 12, 4), act_r = randn(ACT_N * ACT_F, 13, 1);
    float dx[ACT_N * ACT_F], out[ACT_N * ACT_F], want[ACT_N * ACT_F], dgelu[ACT_N * ACT_F], out2[ACT_N * ACT_F];
    op_gelu_forward(out, dgelu, act_x, ACT_N * ACT_F);
    op_gelu_backward(dx, dgelu, act_r, ACT_N * ACT_F);
    check_grad(gelu_loss, act_x, dx, ACT_N * ACT_F, 1, 1e-2f, "dx");
    memcpy(want, act_x, sizeof want);
    kiln_gelu_ref(want, ACT_N * ACT_F);
    CHECK_CLOSE(out, want, ACT_N * ACT_F, 1e-5f, 1e-6f, "gelu");
    op_gelu_forward(out2, NULL, act_x, ACT_N * ACT_F);
    CHECK_CLOSE(out2, out, ACT_N * ACT_F, 0, 0, "gelu without its derivative");
}

TEST(train_swiglu_backward_matches_finite_differences_and_forward_matches_kernel) {
    act_x = randn(ACT_N * 2 * ACT_F, 14, 4), act_r = randn(ACT_N * ACT_F, 15, 1);
    float dgu[ACT_N * 2 * ACT_F], out[ACT_N * ACT_F], gate[ACT_F];
    op_swiglu_backward(dgu, act_x, act_r, ACT_N, ACT_F);
    check_grad(swiglu_loss, act_x, dgu, ACT_N * 2 * ACT_F, 1, 1e-2f, "dgu");
    op_swiglu_forward(out, act_x, ACT_N, ACT_F);
    for (int n = 0; n < ACT_N; n++) {
        memcpy(gate, act_x + n * 2 * ACT_F, sizeof gate);
        kiln_swiglu_ref(gate, act_x + n * 2 * ACT_F + ACT_F, ACT_F);
        CHECK_CLOSE(out + n * ACT_F, gate, ACT_F, 1e-5f, 1e-6f, "swiglu");
    }
}

TEST(train_expf_is_accurate_to_a_few_ulp_over_the_float_range) {
    for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
        float got = op_expf(x), want = expf(x);
        CHECKF(fabsf(got - want) <= 3e-7f * want, "op_expf(%g) = %.9g, expf = %.9g", x, got, want);
    }
    CHECK(op_expf(-100.0f) == 0.0f);
    CHECK(op_expf(-INFINITY) == 0.0f);
}

/* ---- rope ---- */
enum { RP_T = 5, RP_H = 3, RP_HD = 8, RP_STRIDE = 30 };
static float *rp_x, *rp_r, rp_cos[RP_T * RP_HD / 2], rp_sin[RP_T * RP_HD / 2];
static int rp_style;
static double rope_loss(void) {
    float y[2 * RP_T * RP_STRIDE];
    memcpy(y, rp_x, sizeof y);
    op_rope_forward(y, 2 * RP_T, RP_T, RP_STRIDE, RP_H, RP_HD, 6, rp_style, rp_cos, rp_sin);
    return project(y, rp_r, 2 * RP_T * RP_STRIDE);
}

TEST(train_rope_backward_matches_finite_differences_and_forward_matches_kernel) {
    for (rp_style = 0; rp_style < 2; rp_style++) {
        int n = 2 * RP_T * RP_STRIDE;
        rp_x = randn(n, 16, 1), rp_r = randn(n, 17, 1);
        op_rope_table(rp_cos, rp_sin, RP_T, 6, 10000.0f);
        float d[2 * RP_T * RP_STRIDE], y[2 * RP_T * RP_STRIDE];
        memcpy(d, rp_r, sizeof d);
        op_rope_backward(d, 2 * RP_T, RP_T, RP_STRIDE, RP_H, RP_HD, 6, rp_style, rp_cos, rp_sin);
        check_grad(rope_loss, rp_x, d, n, 1, 1e-2f, "dx");
        memcpy(y, rp_x, sizeof y);
        op_rope_forward(y, 2 * RP_T, RP_T, RP_STRIDE, RP_H, RP_HD, 6, rp_style, rp_cos, rp_sin);
        for (int row = 0; row < 2 * RP_T; row++) {
            float want[RP_STRIDE];
            memcpy(want, rp_x + row * RP_STRIDE, sizeof want);
            kiln_rope_ref(want, RP_H, RP_HD, 6, row % RP_T, 10000.0f, rp_style);
            CHECK_CLOSE(y + row * RP_STRIDE, want, RP_STRIDE, 1e-5f, 1e-6f, "rope");
        }
    }
}

/* ---- embedding ---- */
TEST(train_embedding_backward_scatters_into_token_and_position_rows) {
    int32_t tok[4] = {2, 0, 2, 1};
    float wte[3 * 2] = {1, 2, 3, 4, 5, 6}, wpe[2 * 2] = {10, 20, 30, 40}, x[8];
    op_embedding_forward(x, tok, wte, wpe, 4, 2, 2);
    CHECK_CLOSE(x, ((float[]){15, 26, 31, 42, 15, 26, 33, 44}), 8, 0, 0, "x");
    float dx[8] = {1, 2, 3, 4, 5, 6, 7, 8}, dwte[6] = {0}, dwpe[4] = {0};
    op_embedding_backward(dwte, dwpe, dx, tok, 4, 2, 2, 3);
    CHECK_CLOSE(dwte, ((float[]){3, 4, 7, 8, 6, 8}), 6, 0, 0, "dwte");
    CHECK_CLOSE(dwpe, ((float[]){6, 8, 10, 12}), 4, 0, 0, "dwpe");
}

/* ---- cross-entropy ---- */
enum { CE_N = 4, CE_V = 11 };
static float *ce_z;
static int32_t ce_t[CE_N] = {3, 0, 10, 7};
static double ce_loss(void) {
    float z[CE_N * CE_V], l[CE_N];
    memcpy(z, ce_z, sizeof z);
    op_crossentropy(l, z, ce_t, CE_N, CE_V, 0);
    double s = 0;
    for (int i = 0; i < CE_N; i++) s += l[i];
    return 0.25 * s;
}

TEST(train_crossentropy_loss_and_gradient_are_right) {
    ce_z = randn(CE_N * CE_V, 18, 3);
    float z[CE_N * CE_V], l[CE_N];
    memcpy(z, ce_z, sizeof z);
    op_crossentropy(l, z, ce_t, CE_N, CE_V, 0.25f);
    check_grad(ce_loss, ce_z, z, CE_N * CE_V, 1, 1e-2f, "dlogits");
    for (int n = 0; n < CE_N; n++) {
        double s = 0;
        for (int i = 0; i < CE_V; i++) s += exp(ce_z[n * CE_V + i]);
        CHECKF(fabs(l[n] - (log(s) - ce_z[n * CE_V + ce_t[n]])) < 1e-5, "loss[%d] = %g", n, l[n]);
    }
}

/* ---- attention ---- */
enum { AT_B = 2, AT_T = 37, AT_H = 4, AT_KVH = 2, AT_HD = 12, AT_W = (AT_H + 2 * AT_KVH) * AT_HD };
static float *at_qkv, *at_r;
static double attention_loss(void) {
    static float out[AT_B * AT_T * AT_H * AT_HD], lse[AT_B * AT_T * AT_H];
    op_attention_forward(out, lse, at_qkv, AT_B, AT_T, AT_H, AT_KVH, AT_HD);
    return project(out, at_r, AT_B * AT_T * AT_H * AT_HD);
}

TEST(train_attention_forward_matches_the_inference_kernel) {
    float *qkv = randn(AT_B * AT_T * AT_W, 19, 2);
    static float out[AT_B * AT_T * AT_H * AT_HD], lse[AT_B * AT_T * AT_H], want[AT_T * AT_H * AT_HD];
    static float q[AT_T * AT_H * AT_HD], k[AT_T * AT_KVH * AT_HD], v[AT_T * AT_KVH * AT_HD];
    op_attention_forward(out, lse, qkv, AT_B, AT_T, AT_H, AT_KVH, AT_HD);
    for (int b = 0; b < AT_B; b++) {
        for (int t = 0; t < AT_T; t++) {
            const float *row = qkv + (b * AT_T + t) * AT_W;
            memcpy(q + t * AT_H * AT_HD, row, sizeof(float) * AT_H * AT_HD);
            memcpy(k + t * AT_KVH * AT_HD, row + AT_H * AT_HD, sizeof(float) * AT_KVH * AT_HD);
            memcpy(v + t * AT_KVH * AT_HD, row + (AT_H + AT_KVH) * AT_HD, sizeof(float) * AT_KVH * AT_HD);
        }
        kiln_attention_ref(want, q, k, v, AT_T, 0, AT_H, AT_KVH, AT_HD, AT_KVH * AT_HD, 1.0f / sqrtf(AT_HD));
        CHECK_CLOSE(out + b * AT_T * AT_H * AT_HD, want, AT_T * AT_H * AT_HD, 1e-5f, 1e-6f, "attention");
    }
}

TEST(train_attention_backward_matches_finite_differences) {
    at_qkv = randn(AT_B * AT_T * AT_W, 20, 1), at_r = randn(AT_B * AT_T * AT_H * AT_HD, 21, 1);
    static float out[AT_B * AT_T * AT_H * AT_HD], lse[AT_B * AT_T * AT_H], d[AT_B * AT_T * AT_W];
    op_attention_forward(out, lse, at_qkv, AT_B, AT_T, AT_H, AT_KVH, AT_HD);
    op_attention_backward(d, at_r, at_qkv, out, lse, AT_B, AT_T, AT_H, AT_KVH, AT_HD);
    check_grad(attention_loss, at_qkv, d, AT_B * AT_T * AT_W, 13, 1e-2f, "dqkv");
}
