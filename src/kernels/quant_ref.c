/* Scalar references of the quantized formats (layouts in quant.h): dequantization, reference-quality
 * quantization of weights, quantization of activations, and the integer dot products that the SIMD
 * kernels are tested against. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "kernels/quant.h"

int kiln_quant_block(int type) {
    switch (type) {
    case KILN_TYPE_Q8_0:
    case KILN_TYPE_Q4_0: return 32;
    case KILN_TYPE_Q4_K:
    case KILN_TYPE_Q6_K: return 256;
    default: return 0;
    }
}

static size_t block_bytes(int type) {
    switch (type) {
    case KILN_TYPE_Q8_0: return sizeof(kiln_block_q8_0);
    case KILN_TYPE_Q4_0: return sizeof(kiln_block_q4_0);
    case KILN_TYPE_Q4_K: return sizeof(kiln_block_q4_k);
    case KILN_TYPE_Q6_K: return sizeof(kiln_block_q6_k);
    default: return 0;
    }
}

size_t kiln_quant_row_bytes(int type, int64_t k) {
    int qk = kiln_quant_block(type);
    if (!qk || k < 0 || k % qk) return 0;
    return (size_t)(k / qk) * block_bytes(type);
}

const char *kiln_quant_names(void) { return "Q8_0, Q4_0, Q4_K, Q6_K"; }

void kiln_q4k_scale_min(const uint8_t *scales, int s, int *sc, int *m) {
    if (s < 4) {
        *sc = scales[s] & 63;
        *m = scales[s + 4] & 63;
    } else {
        *sc = (scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4;
        *m = (scales[s + 4] >> 4) | (scales[s] >> 6) << 4;
    }
}

/* ---- dequantization: the products are formed in the order llama.cpp forms them, so both give the same
 * floats ---- */

static void dequant_q8_0(const kiln_block_q8_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += 32) {
        float d = kiln_f16_to_f32(b[i].d);
        for (int j = 0; j < 32; j++) y[j] = b[i].qs[j] * d;
    }
}

static void dequant_q4_0(const kiln_block_q4_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += 32) {
        float d = kiln_f16_to_f32(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = ((b[i].qs[j] & 15) - 8) * d;
            y[j + 16] = ((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_k(const kiln_block_q4_k *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        float d = kiln_f16_to_f32(b[i].d), dmin = kiln_f16_to_f32(b[i].dmin);
        for (int g = 0; g < 4; g++) {
            const uint8_t *q = b[i].qs + 32 * g;
            int sc, m;
            kiln_q4k_scale_min(b[i].scales, 2 * g, &sc, &m);
            float d1 = d * sc, m1 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 15) - m1;
            kiln_q4k_scale_min(b[i].scales, 2 * g + 1, &sc, &m);
            float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

/* The 6-bit value of weight J (0..255) of a Q6_K block. */
static int q6k_value(const kiln_block_q6_k *b, int j) {
    int h = j / 128, c = j % 128 / 32, l = j % 32;
    const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
    int lo = c & 1 ? ql[l + 32] : ql[l];
    lo = c & 2 ? lo >> 4 : lo & 15;
    return lo | ((qh[l] >> (2 * c)) & 3) << 4;
}

static void dequant_q6_k(const kiln_block_q6_k *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += 256) {
        float d = kiln_f16_to_f32(b[i].d);
        for (int j = 0; j < 256; j++) y[j] = d * b[i].scales[j / 16] * (q6k_value(&b[i], j) - 32);
    }
}

void kiln_dequantize_row(int type, const void *src, float *dst, int64_t k) {
    int64_t nb = k / (kiln_quant_block(type) ? kiln_quant_block(type) : 1);
    switch (type) {
    case KILN_TYPE_Q8_0: dequant_q8_0(src, dst, nb); break;
    case KILN_TYPE_Q4_0: dequant_q4_0(src, dst, nb); break;
    case KILN_TYPE_Q4_K: dequant_q4_k(src, dst, nb); break;
    case KILN_TYPE_Q6_K: dequant_q6_k(src, dst, nb); break;
    }
}

/* ---- quantization of weights ---- */

/* roundf (halves away from zero), inline: the largest float below 0.5 added with x's sign, then truncated.
 * Equal to roundf for every float but NaN (checked over all 2^32); GCC calls libm's roundf per value,
 * which made Q8_0 quantization 9 ns a weight. */
static inline float round_half_away(float v) { return truncf(v + copysignf(0x1.fffffep-2f, v)); }

static void quant_q8_0(const float *x, kiln_block_q8_0 *b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]); /* ggml's MAX, not fmaxf */
        float d = amax / 127, id = d ? 1 / d : 0;
        b[i].d = kiln_f32_to_f16(d);
        for (int j = 0; j < 32; j++) b[i].qs[j] = (int8_t)round_half_away(x[j] * id);
    }
}

/* Q4_0 maps the value of largest magnitude to -8 (not +7): the one step of asymmetry goes to it. */
static void quant_q4_0(const float *x, kiln_block_q4_0 *b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
        float d = max / -8, id = d ? 1 / d : 0;
        b[i].d = kiln_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int lo = (int)(x[j] * id + 8.5f), hi = (int)(x[j + 16] * id + 8.5f);
            b[i].qs[j] = (uint8_t)((lo > 15 ? 15 : lo) | (hi > 15 ? 15 : hi) << 4);
        }
    }
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Scale and min for N values X with weights W quantized to L in [0, NMAX] as x ~ scale * l - min: starts
 * from the full range, then tries 21 slightly different ranges and keeps the weighted least-squares fit
 * with the smallest error (llama.cpp's make_qkx2_quants). Returns the scale; *MIN >= 0. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *min_out) {
    float lo = x[0], hi = x[0], sw = 0, swx = 0;
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
        sw += w[i];
        swx += w[i] * x[i];
    }
    if (lo > 0) lo = 0;
    if (hi == lo) {
        memset(L, 0, (size_t)n);
        *min_out = -lo;
        return 0;
    }
    float iscale = nmax / (hi - lo), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi((int)rintf(iscale * (x[i] - lo)), 0, nmax);
        float e = scale * L[i] + lo - x[i];
        best += w[i] * e * e;
    }
    uint8_t trial[256];
    for (int step = 0; step <= 20; step++) {
        iscale = (-1.0f + 0.1f * step + nmax) / (hi - lo);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi((int)rintf(iscale * (x[i] - lo)), 0, nmax);
            trial[i] = (uint8_t)l;
            sl += w[i] * l;
            sl2 += w[i] * l * l;
            sxl += w[i] * l * x[i];
        }
        float det = sw * sl2 - sl * sl;
        if (det <= 0) continue;
        float s = (sw * sxl - swx * sl) / det, m = (sl2 * swx - sl * sxl) / det;
        if (m > 0) { /* the fit wants a positive offset, which the format cannot hold */
            m = 0;
            s = sxl / sl2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float e = s * trial[i] + m - x[i];
            err += w[i] * e * e;
        }
        if (err < best) {
            memcpy(L, trial, (size_t)n);
            best = err;
            scale = s;
            lo = m;
        }
    }
    *min_out = -lo;
    return scale;
}

static void quant_q4_k(const float *x, kiln_block_q4_k *b, int64_t nb) {
    uint8_t L[256];
    float w[32], scales[8], mins[8];
    for (int64_t i = 0; i < nb; i++, x += 256) {
        float max_scale = 0, max_min = 0;
        for (int s = 0; s < 8; s++) {
            const float *xs = x + 32 * s;
            float ss = 0;
            for (int l = 0; l < 32; l++) ss += xs[l] * xs[l];
            float rms = sqrtf(ss / 32);
            /* errors on large values cost more: weight each value by its magnitude plus the rms */
            for (int l = 0; l < 32; l++) w[l] = rms + fabsf(xs[l]);
            scales[s] = fit_scale_min(32, 15, xs, w, L + 32 * s, &mins[s]);
            max_scale = fmaxf(max_scale, scales[s]);
            max_min = fmaxf(max_min, mins[s]);
        }
        float inv_scale = max_scale > 0 ? 63 / max_scale : 0, inv_min = max_min > 0 ? 63 / max_min : 0;
        memset(b[i].scales, 0, sizeof b[i].scales);
        for (int s = 0; s < 8; s++) {
            int ls = clampi((int)rintf(inv_scale * scales[s]), 0, 63);
            int lm = clampi((int)rintf(inv_min * mins[s]), 0, 63);
            if (s < 4) {
                b[i].scales[s] = (uint8_t)ls;
                b[i].scales[s + 4] = (uint8_t)lm;
            } else {
                b[i].scales[s + 4] = (uint8_t)((ls & 15) | (lm & 15) << 4);
                b[i].scales[s - 4] |= (uint8_t)((ls >> 4) << 6);
                b[i].scales[s] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        b[i].d = kiln_f32_to_f16(max_scale / 63);
        b[i].dmin = kiln_f32_to_f16(max_min / 63);
        /* requantize against the scales as stored, 6-bit and f16 rounding included */
        float d = kiln_f16_to_f32(b[i].d), dmin = kiln_f16_to_f32(b[i].dmin);
        for (int s = 0; s < 8; s++) {
            int sc, m;
            kiln_q4k_scale_min(b[i].scales, s, &sc, &m);
            float ds = d * sc, dm = dmin * m;
            if (!ds) continue;
            for (int l = 0; l < 32; l++) L[32 * s + l] = (uint8_t)clampi((int)rintf((x[32 * s + l] + dm) / ds), 0, 15);
        }
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) b[i].qs[32 * g + l] = (uint8_t)(L[64 * g + l] | L[64 * g + 32 + l] << 4);
    }
}

/* Symmetric scale for N values quantized to L in [-NMAX, NMAX-1], the value of largest magnitude at
 * -NMAX: tries 19 scales around that one and keeps the best least-squares fit weighted by x^2
 * (llama.cpp's make_qx_quants). Returns the scale; L holds l + NMAX. */
static float fit_scale_sym(int n, int nmax, const float *x, int8_t *L) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float scale = 0, best = 0;
    for (int step = 0; step <= 19; step++) { /* step 0: the plain scale, then -0.9 .. +0.9 around it */
        if (step == 10) continue;
        float iscale = step == 0 ? -nmax / max : -(nmax + 0.1f * (step - 10)) / max;
        float slx = 0, sl2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi((int)rintf(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            slx += w * x[i] * l;
            sl2 += w * l * l;
        }
        if (step > 0 && !(sl2 > 0 && slx * slx > best * sl2)) continue;
        for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + clampi((int)rintf(iscale * x[i]), -nmax, nmax - 1));
        scale = sl2 ? slx / sl2 : 0;
        best = scale * slx;
    }
    return scale;
}

static void quant_q6_k(const float *x, kiln_block_q6_k *b, int64_t nb) {
    int8_t L[256];
    float scales[16];
    for (int64_t i = 0; i < nb; i++, x += 256) {
        float max_scale = 0, amax = 0;
        for (int s = 0; s < 16; s++) {
            scales[s] = fit_scale_sym(16, 32, x + 16 * s, L + 16 * s);
            if (fabsf(scales[s]) > amax) amax = fabsf(scales[s]), max_scale = scales[s];
        }
        memset(&b[i], 0, sizeof b[i]);
        if (amax < 1e-15f) continue;
        float iscale = -128 / max_scale;
        b[i].d = kiln_f32_to_f16(1 / iscale);
        for (int s = 0; s < 16; s++) {
            int v = (int)rintf(iscale * scales[s]);
            b[i].scales[s] = (int8_t)(v > 127 ? 127 : v);
        }
        float d = kiln_f16_to_f32(b[i].d);
        for (int s = 0; s < 16; s++) {
            float ds = d * b[i].scales[s];
            if (!ds) continue;
            for (int l = 0; l < 16; l++) L[16 * s + l] = (int8_t)(32 + clampi((int)rintf(x[16 * s + l] / ds), -32, 31));
        }
        for (int h = 0; h < 2; h++) {
            uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *Lh = L + 128 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 15) | (Lh[l + 64] & 15) << 4);
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 15) | (Lh[l + 96] & 15) << 4);
                qh[l] = (uint8_t)(Lh[l] >> 4 | (Lh[l + 32] >> 4) << 2 | (Lh[l + 64] >> 4) << 4 |
                                  (Lh[l + 96] >> 4) << 6);
            }
        }
    }
}

void kiln_quantize_row(int type, const float *src, void *dst, int64_t k) {
    int64_t nb = k / (kiln_quant_block(type) ? kiln_quant_block(type) : 1);
    switch (type) {
    case KILN_TYPE_Q8_0: quant_q8_0(src, dst, nb); break;
    case KILN_TYPE_Q4_0: quant_q4_0(src, dst, nb); break;
    case KILN_TYPE_Q4_K: quant_q4_k(src, dst, nb); break;
    case KILN_TYPE_Q6_K: quant_q6_k(src, dst, nb); break;
    }
}

/* ---- activations ---- */

int kiln_qx_block(int type) { return type == KILN_TYPE_Q4_K || type == KILN_TYPE_Q6_K ? 256 : 32; }

void kiln_qx_reserve(kiln_qx *qx, int k) {
    static _Atomic uint64_t stamps;
    qx->stamp = ++stamps;
    qx->k = k;
    if (k <= qx->cap && qx->mem) return;
    free(qx->mem);
    /* q, then a scale per 32 and a sum per 16: enough for either grouping */
    size_t qbytes = ((size_t)k + 63) & ~(size_t)63;
    qx->mem = kiln_xmalloc(qbytes + sizeof(float) * (size_t)(k / 32 + 1) + sizeof(int32_t) * (size_t)(k / 16 + 1) + 64);
    qx->q = (int8_t *)(((uintptr_t)qx->mem + 63) & ~(uintptr_t)63);
    qx->d = (float *)(qx->q + qbytes);
    qx->sum = (int32_t *)(qx->d + k / 32 + 1);
    qx->cap = k;
}

void kiln_qx_free(kiln_qx *qx) {
    free(qx->mem);
    memset(qx, 0, sizeof *qx);
}

void kiln_quantize_x_ref(kiln_qx *qx, const float *x, int type, int k) {
    kiln_qx_reserve(qx, k);
    if (kiln_qx_block(type) == 32) {
        for (int b = 0; b < k / 32; b++) {
            const float *xb = x + 32 * b;
            int8_t *q = qx->q + 32 * b;
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
            float id = amax >= KILN_QX_TINY ? 127 / amax : 0;
            int sum = 0;
            for (int j = 0; j < 32; j++) sum += q[j] = (int8_t)rintf(xb[j] * id);
            qx->d[b] = kiln_f16_to_f32(kiln_f32_to_f16(amax / 127));
            qx->sum[b] = sum;
        }
        memset(qx->q + k, 0, (size_t)(((k + 63) & ~63) - k));
        return;
    }
    for (int b = 0; b < k / 256; b++) {
        const float *xb = x + 256 * b;
        int8_t *q = qx->q + 256 * b;
        float amax = 0, max = 0;
        for (int j = 0; j < 256; j++)
            if (fabsf(xb[j]) > amax) amax = fabsf(xb[j]), max = xb[j];
        float iscale = amax >= KILN_QX_TINY ? -127 / max : 0;
        for (int j = 0; j < 256; j++) {
            int v = (int)rintf(iscale * xb[j]);
            q[j] = (int8_t)(v > 127 ? 127 : v);
        }
        qx->d[b] = iscale ? 1 / iscale : 0;
        for (int s = 0; s < 16; s++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += q[16 * s + j];
            qx->sum[16 * b + s] = sum;
        }
    }
    memset(qx->q + k, 0, (size_t)(((k + 63) & ~63) - k));
}

/* ---- integer dot products ---- */

static float qdot_q8_0(const kiln_block_q8_0 *w, const kiln_qx *qx) {
    float s = 0;
    for (int b = 0; b < qx->k / 32; b++) {
        int isum = 0;
        for (int j = 0; j < 32; j++) isum += w[b].qs[j] * qx->q[32 * b + j];
        s += (float)isum * (kiln_f16_to_f32(w[b].d) * qx->d[b]);
    }
    return s;
}

static float qdot_q4_0(const kiln_block_q4_0 *w, const kiln_qx *qx) {
    float s = 0;
    for (int b = 0; b < qx->k / 32; b++) {
        const int8_t *q = qx->q + 32 * b;
        int isum = 0;
        for (int j = 0; j < 16; j++) isum += ((w[b].qs[j] & 15) - 8) * q[j] + ((w[b].qs[j] >> 4) - 8) * q[j + 16];
        s += (float)isum * (kiln_f16_to_f32(w[b].d) * qx->d[b]);
    }
    return s;
}

static float qdot_q4_k(const kiln_block_q4_k *w, const kiln_qx *qx) {
    float s = 0;
    for (int b = 0; b < qx->k / 256; b++) {
        const int8_t *q = qx->q + 256 * b;
        const int32_t *bsum = qx->sum + 16 * b;
        int isum = 0, imin = 0;
        for (int sb = 0; sb < 8; sb++) {
            int sc, m, dot = 0;
            kiln_q4k_scale_min(w[b].scales, sb, &sc, &m);
            const uint8_t *qs = w[b].qs + 32 * (sb / 2);
            for (int l = 0; l < 32; l++) dot += (sb & 1 ? qs[l] >> 4 : qs[l] & 15) * q[32 * sb + l];
            isum += sc * dot;
            imin += m * (bsum[2 * sb] + bsum[2 * sb + 1]);
        }
        s += qx->d[b] * (kiln_f16_to_f32(w[b].d) * isum - kiln_f16_to_f32(w[b].dmin) * imin);
    }
    return s;
}

static float qdot_q6_k(const kiln_block_q6_k *w, const kiln_qx *qx) {
    float s = 0;
    for (int b = 0; b < qx->k / 256; b++) {
        const int8_t *q = qx->q + 256 * b;
        int isum = 0;
        for (int sb = 0; sb < 16; sb++) {
            int dot = 0;
            for (int l = 0; l < 16; l++) dot += (q6k_value(&w[b], 16 * sb + l) - 32) * q[16 * sb + l];
            isum += w[b].scales[sb] * dot;
        }
        s += qx->d[b] * kiln_f16_to_f32(w[b].d) * (float)isum;
    }
    return s;
}

float kiln_qdot_ref(const void *wrow, int type, const kiln_qx *qx) {
    switch (type) {
    case KILN_TYPE_Q8_0: return qdot_q8_0(wrow, qx);
    case KILN_TYPE_Q4_0: return qdot_q4_0(wrow, qx);
    case KILN_TYPE_Q4_K: return qdot_q4_k(wrow, qx);
    case KILN_TYPE_Q6_K: return qdot_q6_k(wrow, qx);
    default: return NAN;
    }
}

void kiln_qmatmul_ref(float *Y, const float *X, const void *W, int type, int T, int N, int K) {
    kiln_qx qx = {0};
    size_t rb = kiln_quant_row_bytes(type, K);
    for (int t = 0; t < T; t++) {
        kiln_quantize_x_ref(&qx, X + (size_t)t * K, type, K);
        for (int i = 0; i < N; i++) Y[(size_t)t * N + i] = kiln_qdot_ref((const char *)W + rb * i, type, &qx);
    }
    kiln_qx_free(&qx);
}
