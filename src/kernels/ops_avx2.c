/* AVX2 element-wise kernels, the attention row kernel, and the AVX2 table; the algorithms are those of
 * ops_avx512.c at 8 floats per vector, with masked loads and stores for the tails. */
#include <immintrin.h>
#include <math.h>

#include "kernels/isa.h"
#include "kernels/kernels.h"

#define INLINE static inline __attribute__((always_inline))

INLINE __m256i lane_mask(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
INLINE __m256 load(const float *p, int n) { return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(n)); }
INLINE void store(float *p, int n, __m256 v) {
    if (n >= 8) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, lane_mask(n), v);
}

INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* exp as in ops_avx512.c; without scalef, 2^n is applied as 2^(n/2) 2^(n - n/2), two factors that are
 * each normal for every n in range, so overflow and gradual underflow come out right. */
INLINE __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(89.0f), _mm256_max_ps(_mm256_set1_ps(-104.0f), x)); /* NaN passes */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256i bias = _mm256_set1_epi32(127);
    __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
}

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        __m256 v = load(x + i, n - i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    __m256 r = _mm256_set1_ps(1.0f / sqrtf(hsum(acc) / n + eps));
    for (int i = 0; i < n; i += 8) store(out + i, n - i, _mm256_mul_ps(_mm256_mul_ps(load(x + i, n - i), r), load(w + i, n - i)));
}

static void layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) acc = _mm256_add_ps(acc, load(x + i, n - i));
    float mean = hsum(acc) / n;
    __m256 mv = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        __m256 d = _mm256_and_ps(_mm256_sub_ps(load(x + i, n - i), mv), _mm256_castsi256_ps(lane_mask(n - i)));
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    __m256 r = _mm256_set1_ps(1.0f / sqrtf(hsum(acc) / n + eps));
    for (int i = 0; i < n; i += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(load(x + i, n - i), mv), r);
        store(out + i, n - i, _mm256_add_ps(_mm256_mul_ps(d, load(w + i, n - i)), load(b + i, n - i)));
    }
}

/* Maximum of N floats; the lanes past N are ignored. */
INLINE float max_of(const float *x, int n) {
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 8) {
        __m256 v = load(x + i, n - i);
        if (n - i < 8) v = _mm256_blendv_ps(mx, v, _mm256_castsi256_ps(lane_mask(n - i)));
        mx = _mm256_max_ps(mx, v);
    }
    return hmax(mx);
}

/* x[i] = exp(x[i] - m) for i < n; returns their sum. */
INLINE float exp_shifted(float *x, int n, float m) {
    __m256 mv = _mm256_set1_ps(m), sum = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(load(x + i, n - i), mv)), _mm256_castsi256_ps(lane_mask(n - i)));
        sum = _mm256_add_ps(sum, e);
        store(x + i, n - i, e);
    }
    return hsum(sum);
}

static void softmax(float *x, int n) {
    float s = exp_shifted(x, n, max_of(x, n));
    __m256 sv = _mm256_set1_ps(s);
    for (int i = 0; i < n; i += 8) store(x + i, n - i, _mm256_div_ps(load(x + i, n - i), sv));
}

/* gelu as x / (1 + exp(-2y)); see ops_avx512.c. */
static void gelu(float *x, int n) {
    const __m256 c = _mm256_set1_ps(0.7978845608028654f), c3 = _mm256_set1_ps(0.044715f);
    const __m256 one = _mm256_set1_ps(1.0f), m2 = _mm256_set1_ps(-2.0f);
    for (int i = 0; i < n; i += 8) {
        __m256 v = load(x + i, n - i);
        __m256 y = _mm256_mul_ps(c, _mm256_add_ps(v, _mm256_mul_ps(c3, _mm256_mul_ps(_mm256_mul_ps(v, v), v))));
        store(x + i, n - i, _mm256_div_ps(v, _mm256_add_ps(one, exp8(_mm256_mul_ps(m2, y)))));
    }
}

static void swiglu(float *gate, const float *up, int n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int i = 0; i < n; i += 8) {
        __m256 g = load(gate + i, n - i);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        store(gate + i, n - i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), load(up + i, n - i)));
    }
}

/* Products and sums in the order of the reference (no FMA), so the rotation is bit-identical. */
static void rope_apply(float *x, int n_heads, int head_dim, int rot_dim, const float *cos, const float *sin,
                       int style) {
    int half = rot_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        if (style == KILN_ROPE_NEOX) {
            for (int i = 0; i < half; i += 8) {
                int n = half - i;
                __m256 a0 = load(v + i, n), a1 = load(v + half + i, n), c = load(cos + i, n), s = load(sin + i, n);
                store(v + i, n, _mm256_sub_ps(_mm256_mul_ps(a0, c), _mm256_mul_ps(a1, s)));
                store(v + half + i, n, _mm256_add_ps(_mm256_mul_ps(a0, s), _mm256_mul_ps(a1, c)));
            }
        } else {
            for (int i = 0; i < rot_dim; i += 8) {
                int n = rot_dim - i;
                __m256 a = load(v + i, n), sw = _mm256_permute_ps(a, _MM_SHUFFLE(2, 3, 0, 1));
                store(v + i, n, _mm256_add_ps(_mm256_mul_ps(a, load(cos + i, n)), _mm256_mul_ps(sw, load(sin + i, n))));
            }
        }
    }
}

/* The four horizontal sums of A, B, C, D. */
INLINE __m128 reduce4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d), s = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

static void score_block(float *s, const float *q, const float *K, int nb, int hd, int kv_stride, float scale) {
    int i = 0;
    for (; i + 4 <= nb; i += 4) {
        const float *k0 = K + (size_t)i * kv_stride, *k1 = k0 + kv_stride, *k2 = k1 + kv_stride, *k3 = k2 + kv_stride;
        __m256 d0 = _mm256_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
        for (int j = 0; j < hd; j += 8) {
            int n = hd - j;
            __m256 qv = load(q + j, n);
            d0 = _mm256_fmadd_ps(qv, load(k0 + j, n), d0);
            d1 = _mm256_fmadd_ps(qv, load(k1 + j, n), d1);
            d2 = _mm256_fmadd_ps(qv, load(k2 + j, n), d2);
            d3 = _mm256_fmadd_ps(qv, load(k3 + j, n), d3);
        }
        _mm_storeu_ps(s + i, _mm_mul_ps(reduce4(d0, d1, d2, d3), _mm_set1_ps(scale)));
    }
    for (; i < nb; i++) {
        const float *k0 = K + (size_t)i * kv_stride;
        __m256 d0 = _mm256_setzero_ps();
        for (int j = 0; j < hd; j += 8) d0 = _mm256_fmadd_ps(load(q + j, hd - j), load(k0 + j, hd - j), d0);
        s[i] = hsum(d0) * scale;
    }
}

static void accumulate_block(float *acc, const float *p, const float *V, int nb, int hd, int kv_stride) {
    int i = 0;
    for (; i + 4 <= nb; i += 4) {
        const float *v0 = V + (size_t)i * kv_stride, *v1 = v0 + kv_stride, *v2 = v1 + kv_stride, *v3 = v2 + kv_stride;
        __m256 p0 = _mm256_set1_ps(p[i]), p1 = _mm256_set1_ps(p[i + 1]);
        __m256 p2 = _mm256_set1_ps(p[i + 2]), p3 = _mm256_set1_ps(p[i + 3]);
        for (int j = 0; j < hd; j += 8) {
            int n = hd - j;
            __m256 a = load(acc + j, n);
            a = _mm256_fmadd_ps(p0, load(v0 + j, n), a);
            a = _mm256_fmadd_ps(p1, load(v1 + j, n), a);
            a = _mm256_fmadd_ps(p2, load(v2 + j, n), a);
            a = _mm256_fmadd_ps(p3, load(v3 + j, n), a);
            store(acc + j, n, a);
        }
    }
    for (; i < nb; i++) {
        const float *v0 = V + (size_t)i * kv_stride;
        __m256 p0 = _mm256_set1_ps(p[i]);
        for (int j = 0; j < hd; j += 8) store(acc + j, hd - j, _mm256_fmadd_ps(p0, load(v0 + j, hd - j), load(acc + j, hd - j)));
    }
}

/* Online softmax over blocks of keys; see ops_avx512.c. */
static void attend(float *out, const float *q, const float *K, const float *V, int n_keys, int hd, int kv_stride,
                   float scale, float *scratch) {
    float *acc = scratch, *s = scratch + hd, mx = -INFINITY, sum = 0;
    for (int j = 0; j < hd; j++) acc[j] = 0;
    for (int b0 = 0; b0 < n_keys; b0 += KILN_ATTEND_BLOCK) {
        int nb = n_keys - b0 < KILN_ATTEND_BLOCK ? n_keys - b0 : KILN_ATTEND_BLOCK;
        score_block(s, q, K + (size_t)b0 * kv_stride, nb, hd, kv_stride, scale);
        float m = max_of(s, nb);
        if (m > mx) {
            float corr = expf(mx - m);
            sum *= corr;
            for (int j = 0; j < hd; j++) acc[j] *= corr;
            mx = m;
        }
        sum += exp_shifted(s, nb, mx);
        accumulate_block(acc, s, V + (size_t)b0 * kv_stride, nb, hd, kv_stride);
    }
    for (int j = 0; j < hd; j++) out[j] = acc[j] / sum;
}

INLINE const float *key_row(const float *base, int s, int n_keys, int kv_stride) {
    return base + (size_t)(s < n_keys ? s : n_keys - 1) * kv_stride;
}

/* Eight queries at once, one per lane; see ops_avx512.c. */
static void attend_block(float *out, size_t out_stride, const float *q, size_t q_stride, int nq, const float *K,
                         const float *V, int n_keys0, int hd, int kv_stride, float scale, float *scratch) {
    enum { L = 8, C = 8 };
    float *qt = scratch, *ot = scratch + (size_t)L * hd;
    for (int j = 0; j < hd; j++)
        for (int i = 0; i < L; i++) qt[j * L + i] = i < nq ? q[i * q_stride + j] : 0;
    for (int j = 0; j < L * hd; j++) ot[j] = 0;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 sc = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
    __m256 m = ninf, l = _mm256_setzero_ps();
    int n_keys = n_keys0 + nq - 1;
    for (int s0 = 0; s0 < n_keys; s0 += C) {
        __m256 S[C];
#pragma GCC unroll 2
        for (int g = 0; g < C; g += 4) {
            const float *k0 = key_row(K, s0 + g, n_keys, kv_stride), *k1 = key_row(K, s0 + g + 1, n_keys, kv_stride);
            const float *k2 = key_row(K, s0 + g + 2, n_keys, kv_stride), *k3 = key_row(K, s0 + g + 3, n_keys, kv_stride);
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            int j = 0;
            for (; j + 2 <= hd; j += 2) {
                __m256 q0 = _mm256_load_ps(qt + j * L), q1 = _mm256_load_ps(qt + (j + 1) * L);
                a0 = _mm256_fmadd_ps(q0, _mm256_broadcast_ss(k0 + j), a0);
                a1 = _mm256_fmadd_ps(q0, _mm256_broadcast_ss(k1 + j), a1);
                a2 = _mm256_fmadd_ps(q0, _mm256_broadcast_ss(k2 + j), a2);
                a3 = _mm256_fmadd_ps(q0, _mm256_broadcast_ss(k3 + j), a3);
                b0 = _mm256_fmadd_ps(q1, _mm256_broadcast_ss(k0 + j + 1), b0);
                b1 = _mm256_fmadd_ps(q1, _mm256_broadcast_ss(k1 + j + 1), b1);
                b2 = _mm256_fmadd_ps(q1, _mm256_broadcast_ss(k2 + j + 1), b2);
                b3 = _mm256_fmadd_ps(q1, _mm256_broadcast_ss(k3 + j + 1), b3);
            }
            if (j < hd) {
                __m256 q0 = _mm256_load_ps(qt + j * L);
                a0 = _mm256_fmadd_ps(q0, _mm256_broadcast_ss(k0 + j), a0);
                a1 = _mm256_fmadd_ps(q0, _mm256_broadcast_ss(k1 + j), a1);
                a2 = _mm256_fmadd_ps(q0, _mm256_broadcast_ss(k2 + j), a2);
                a3 = _mm256_fmadd_ps(q0, _mm256_broadcast_ss(k3 + j), a3);
            }
            S[g] = _mm256_add_ps(a0, b0), S[g + 1] = _mm256_add_ps(a1, b1);
            S[g + 2] = _mm256_add_ps(a2, b2), S[g + 3] = _mm256_add_ps(a3, b3);
        }
        __m256 mn = m;
#pragma GCC unroll 8
        for (int c = 0; c < C; c++) { /* lane i sees key s when s < n_keys0 + i */
            __m256 ok = s0 + c < n_keys ? _mm256_castsi256_ps(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(s0 + c - n_keys0)))
                                        : _mm256_setzero_ps();
            S[c] = _mm256_blendv_ps(ninf, _mm256_mul_ps(S[c], sc), ok);
            mn = _mm256_max_ps(mn, S[c]);
        }
        __m256 corr = exp8(_mm256_sub_ps(m, mn));
        m = mn;
        l = _mm256_mul_ps(l, corr);
#pragma GCC unroll 8
        for (int c = 0; c < C; c++) {
            S[c] = exp8(_mm256_sub_ps(S[c], m));
            l = _mm256_add_ps(l, S[c]);
        }
        if (_mm256_movemask_ps(_mm256_cmp_ps(corr, _mm256_set1_ps(1.0f), _CMP_NEQ_UQ)))
            for (int j = 0; j < hd; j++) _mm256_store_ps(ot + j * L, _mm256_mul_ps(_mm256_load_ps(ot + j * L), corr));
#pragma GCC unroll 2
        for (int g = 0; g < C; g += 4) {
            const float *v0 = key_row(V, s0 + g, n_keys, kv_stride), *v1 = key_row(V, s0 + g + 1, n_keys, kv_stride);
            const float *v2 = key_row(V, s0 + g + 2, n_keys, kv_stride), *v3 = key_row(V, s0 + g + 3, n_keys, kv_stride);
            for (int j = 0; j < hd; j++) {
                __m256 o = _mm256_load_ps(ot + j * L);
                o = _mm256_fmadd_ps(S[g], _mm256_broadcast_ss(v0 + j), o);
                o = _mm256_fmadd_ps(S[g + 1], _mm256_broadcast_ss(v1 + j), o);
                o = _mm256_fmadd_ps(S[g + 2], _mm256_broadcast_ss(v2 + j), o);
                o = _mm256_fmadd_ps(S[g + 3], _mm256_broadcast_ss(v3 + j), o);
                _mm256_store_ps(ot + j * L, o);
            }
        }
    }
    float ls[L];
    _mm256_storeu_ps(ls, l);
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < hd; j++) out[i * out_stride + j] = ot[j * L + i] / ls[i];
}

const kiln_kernels kiln_kernels_avx2 = {
    .name = "avx2",
    .rmsnorm = rmsnorm,
    .layernorm = layernorm,
    .softmax = softmax,
    .gelu = gelu,
    .swiglu = swiglu,
    .matvec = kiln_matvec_avx2,
    .matvecs = kiln_matvecs_avx2,
    .matvecs_max = 16, /* bench_kernels (d): still 1.9-2.3x cheaper than the GEMM at 16 tokens */
    .gemm_mr = KILN_AVX2_MR,
    .gemm_nr = KILN_AVX2_NR,
    .pack_w = kiln_pack_w_avx2,
    .tile = kiln_tile_avx2,
    .rope_apply = rope_apply,
    .attend = attend,
    .attn_lanes = 8,
    .attend_block = attend_block,
};
