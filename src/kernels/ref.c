/* Scalar references: the plainest correct code for each kernel. Tests compare the SIMD kernels with
 * these; they are also the fallback on CPUs without AVX2. */
#include <math.h>
#include <stdlib.h>

#include "base/half.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

size_t kiln_row_bytes(int type, int64_t k) {
    switch (type) {
    case KILN_TYPE_F32: return (size_t)k * 4;
    case KILN_TYPE_F16:
    case KILN_TYPE_BF16: return (size_t)k * 2;
    default: return kiln_quant_row_bytes(type, k);
    }
}

void kiln_row_to_f32(float *out, const void *row, int type, int k) {
    const uint16_t *h = row;
    switch (type) {
    case KILN_TYPE_F32:
        for (int j = 0; j < k; j++) out[j] = ((const float *)row)[j];
        break;
    case KILN_TYPE_F16:
        for (int j = 0; j < k; j++) out[j] = kiln_f16_to_f32(h[j]);
        break;
    case KILN_TYPE_BF16:
        for (int j = 0; j < k; j++) out[j] = kiln_bf16_to_f32(h[j]);
        break;
    default: kiln_dequantize_row(type, row, out, k);
    }
}

void kiln_matmul_ref(float *Y, const float *X, const void *W, int type, int T, int N, int K) {
    float *w = malloc(sizeof(float) * (size_t)K);
    size_t rb = kiln_row_bytes(type, K);
    for (int i = 0; i < N; i++) {
        kiln_row_to_f32(w, (const char *)W + rb * i, type, K);
        for (int t = 0; t < T; t++) {
            const float *x = X + (size_t)t * K;
            float s = 0;
            for (int j = 0; j < K; j++) s += x[j] * w[j];
            Y[(size_t)t * N + i] = s;
        }
    }
    free(w);
}

void kiln_rmsnorm_ref(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

void kiln_layernorm_ref(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    float mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    float r = 1.0f / sqrtf(var + eps);
    for (int i = 0; i < n; i++) out[i] = (x[i] - mean) * r * w[i] + b[i];
}

void kiln_softmax_ref(float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++) if (x[i] > m) m = x[i];
    float s = 0;
    for (int i = 0; i < n; i++) s += (x[i] = expf(x[i] - m));
    for (int i = 0; i < n; i++) x[i] /= s;
}

void kiln_gelu_ref(float *x, int n) {
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    for (int i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + tanhf(c * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
}

void kiln_swiglu_ref(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void kiln_rope_ref(float *x, int n_heads, int head_dim, int rot_dim, int pos, float theta, int style) {
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < rot_dim / 2; i++) {
            double freq = pow((double)theta, -2.0 * i / rot_dim), a = pos * freq;
            float c = (float)cos(a), s = (float)sin(a);
            int i0 = style == KILN_ROPE_NEOX ? i : 2 * i, i1 = style == KILN_ROPE_NEOX ? i + rot_dim / 2 : 2 * i + 1;
            float a0 = v[i0], a1 = v[i1];
            v[i0] = a0 * c - a1 * s;
            v[i1] = a0 * s + a1 * c;
        }
    }
}

void kiln_attention_ref(float *out, const float *Q, const float *K, const float *V, int T, int pos0, int n_heads,
                        int n_kv_heads, int head_dim, int kv_stride, float scale) {
    int group = n_heads / n_kv_heads, qdim = n_heads * head_dim;
    float *att = malloc(sizeof(float) * (size_t)(pos0 + T));
    for (int t = 0; t < T; t++) {
        int n_keys = pos0 + t + 1;
        for (int h = 0; h < n_heads; h++) {
            const float *q = Q + (size_t)t * qdim + (size_t)h * head_dim;
            int kvh = h / group;
            for (int s = 0; s < n_keys; s++) {
                const float *k = K + (size_t)s * kv_stride + (size_t)kvh * head_dim;
                float d = 0;
                for (int j = 0; j < head_dim; j++) d += q[j] * k[j];
                att[s] = d * scale;
            }
            kiln_softmax_ref(att, n_keys);
            float *o = out + (size_t)t * qdim + (size_t)h * head_dim;
            for (int j = 0; j < head_dim; j++) o[j] = 0;
            for (int s = 0; s < n_keys; s++) {
                const float *v = V + (size_t)s * kv_stride + (size_t)kvh * head_dim;
                for (int j = 0; j < head_dim; j++) o[j] += att[s] * v[j];
            }
        }
    }
    free(att);
}
