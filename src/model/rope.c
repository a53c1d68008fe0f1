/* RoPE frequencies, with the context-extension schemes of Hugging Face's rope_scaling (the formulas of
 * transformers' modeling_rope_utils, checked against tests/ref/rope_ref.py), and the rotation itself. */
#include <math.h>

#include "model/transformer.h"

static double yarn_mscale(double factor) { return factor <= 1 ? 1.0 : 0.1 * log(factor) + 1.0; }

/* The dimension (of D rotated ones) whose wavelength makes N_ROT turns in CTX positions. */
static double yarn_correction_dim(double n_rot, int d, double base, int ctx) {
    return d * log(ctx / (n_rot * 2 * M_PI)) / (2 * log(base));
}

static void yarn_freqs(const kiln_config *c, double base, int orig, double *inv, float *mscale) {
    int d = c->rope_dim, half = d / 2;
    double f = c->rope_factor, fast = c->yarn_beta_fast ? c->yarn_beta_fast : 32,
           slow = c->yarn_beta_slow ? c->yarn_beta_slow : 1;
    double lo = floor(yarn_correction_dim(fast, d, base, orig)), hi = ceil(yarn_correction_dim(slow, d, base, orig));
    if (lo < 0) lo = 0;
    if (hi > d - 1) hi = d - 1;
    if (lo == hi) hi += 0.001; /* keeps the ramp finite */
    for (int i = 0; i < half; i++) {
        double ramp = (i - lo) / (hi - lo), extrap = 1 - (ramp < 0 ? 0 : ramp > 1 ? 1 : ramp);
        inv[i] = inv[i] / f * (1 - extrap) + inv[i] * extrap;
    }
    *mscale = c->rope_attn_factor ? c->rope_attn_factor : (float)yarn_mscale(f);
}

static void llama3_freqs(const kiln_config *c, int orig, double *inv) {
    double f = c->rope_factor, lo = c->rope_low_freq, hi = c->rope_high_freq;
    double lo_wave = orig / lo, hi_wave = orig / hi;
    for (int i = 0; i < c->rope_dim / 2; i++) {
        double wave = 2 * M_PI / inv[i];
        if (wave > lo_wave) inv[i] /= f;
        else if (wave >= hi_wave) {
            double smooth = (orig / wave - lo) / (hi - lo);
            inv[i] = (1 - smooth) * inv[i] / f + smooth * inv[i];
        }
    }
}

void kiln_rope_freqs(const kiln_config *c, int n_ctx, const float *factors, float *inv_freq, float *mscale) {
    int d = c->rope_dim, half = d / 2, orig = c->rope_orig_ctx ? c->rope_orig_ctx : c->ctx_len;
    double base = c->rope_theta, f = c->rope_factor, inv[half > 0 ? half : 1];
    if (c->rope_scaling == KILN_ROPE_SCALING_NTK) base *= pow(f, (double)d / (d - 2));
    if (c->rope_scaling == KILN_ROPE_SCALING_DYNAMIC && n_ctx > orig)
        base *= pow(f * n_ctx / orig - (f - 1), (double)d / (d - 2));
    for (int i = 0; i < half; i++) inv[i] = pow(base, -2.0 * i / d) / (factors ? factors[i] : 1.0f);
    *mscale = 1;
    if (c->rope_scaling == KILN_ROPE_SCALING_LINEAR)
        for (int i = 0; i < half; i++) inv[i] /= f;
    if (c->rope_scaling == KILN_ROPE_SCALING_YARN) yarn_freqs(c, base, orig, inv, mscale);
    if (c->rope_scaling == KILN_ROPE_SCALING_LLAMA3) llama3_freqs(c, orig, inv);
    for (int i = 0; i < half; i++) inv_freq[i] = (float)inv[i];
}

float kiln_logn_scale(const kiln_config *c, int pos) {
    int trained = c->rope_orig_ctx ? c->rope_orig_ctx : c->ctx_len;
    if (!c->attn_logn || pos + 1 <= trained) return 1;
    return (float)(log(pos + 1.0) / log((double)trained));
}

void kiln_rope_apply(float *x, int n_heads, int head_dim, int rope_dim, int style, const float *cs, const float *sn) {
    int half = rope_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            int i0 = style == KILN_ROPE_NEOX ? i : 2 * i, i1 = style == KILN_ROPE_NEOX ? i + half : 2 * i + 1;
            float a0 = v[i0], a1 = v[i1];
            v[i0] = a0 * cs[i] - a1 * sn[i];
            v[i1] = a0 * sn[i] + a1 * cs[i];
        }
    }
}
