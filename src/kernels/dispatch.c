/* Run-time dispatch of the kernels to the best implementation this CPU supports. */
#include "kernels/kernels.h"

const char *kiln_isa(void) { return "scalar"; }

void kiln_matmul(float *Y, const float *X, const void *W, int type, int T, int N, int K) {
    kiln_matmul_ref(Y, X, W, type, T, N, K);
}
void kiln_rmsnorm(float *out, const float *x, const float *w, int n, float eps) { kiln_rmsnorm_ref(out, x, w, n, eps); }
void kiln_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    kiln_layernorm_ref(out, x, w, b, n, eps);
}
void kiln_softmax(float *x, int n) { kiln_softmax_ref(x, n); }
void kiln_gelu(float *x, int n) { kiln_gelu_ref(x, n); }
void kiln_swiglu(float *gate, const float *up, int n) { kiln_swiglu_ref(gate, up, n); }
void kiln_rope(float *x, int n_heads, int head_dim, int rot_dim, int pos, float theta, int style) {
    kiln_rope_ref(x, n_heads, head_dim, rot_dim, pos, theta, style);
}
void kiln_attention(float *out, const float *Q, const float *K, const float *V, int T, int pos0, int n_heads,
                    int n_kv_heads, int head_dim, int kv_stride, float scale) {
    kiln_attention_ref(out, Q, K, V, T, pos0, n_heads, n_kv_heads, head_dim, kv_stride, scale);
}
