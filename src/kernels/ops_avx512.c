/* AVX-512 element-wise kernels (norms, softmax, activations, rope), the attention row kernel, and the
 * table that gathers them with the matrix products of matmul_avx512.c. */
#include <immintrin.h>
#include <math.h>

#include "kernels/isa.h"
#include "kernels/kernels.h"

#define INLINE static inline __attribute__((always_inline))

INLINE __mmask16 tail_mask(int n) { return n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1); }

/* exp(x) = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2], ln 2 split in two
 * (Cody-Waite) so r is exact enough; e^r by its degree-7 Taylor polynomial (truncation < 2e-9
 * relative). scalef does the 2^n scaling, including overflow to inf and gradual underflow. */
INLINE __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x)); /* NaN passes */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
        acc = _mm512_fmadd_ps(v, v, acc);
    }
    float ss = _mm512_reduce_add_ps(acc);
    __m512 r = _mm512_set1_ps(1.0f / sqrtf(ss / n + eps));
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), r), _mm512_maskz_loadu_ps(m, w + i));
        _mm512_mask_storeu_ps(out + i, m, v);
    }
}

static void layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
    float mean = _mm512_reduce_add_ps(acc) / n;
    __m512 mv = _mm512_set1_ps(mean);
    acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + i), mv);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    float var = _mm512_reduce_add_ps(acc) / n;
    __m512 r = _mm512_set1_ps(1.0f / sqrtf(var + eps));
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mv), r);
        d = _mm512_add_ps(_mm512_mul_ps(d, _mm512_maskz_loadu_ps(m, w + i)), _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(out + i, m, d);
    }
}

static void softmax(float *x, int n) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail_mask(n - i), x + i));
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m));
        e = _mm512_maskz_mov_ps(k, e);
        sum = _mm512_add_ps(sum, e);
        _mm512_mask_storeu_ps(x + i, k, e);
    }
    __m512 s = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_div_ps(_mm512_maskz_loadu_ps(k, x + i), s));
    }
}

/* 0.5 x (1 + tanh(y)) = x / (1 + exp(-2y)): the same function without the cancellation of 1 + tanh
 * for negative x. */
static void gelu(float *x, int n) {
    const __m512 c = _mm512_set1_ps(0.7978845608028654f), c3 = _mm512_set1_ps(0.044715f);
    const __m512 one = _mm512_set1_ps(1.0f), m2 = _mm512_set1_ps(-2.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 y = _mm512_mul_ps(c, _mm512_add_ps(v, _mm512_mul_ps(c3, _mm512_mul_ps(_mm512_mul_ps(v, v), v))));
        __m512 e = exp16(_mm512_mul_ps(m2, y));
        _mm512_mask_storeu_ps(x + i, k, _mm512_div_ps(v, _mm512_add_ps(one, e)));
    }
}

static void swiglu(float *gate, const float *up, int n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(k, gate + i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 v = _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(k, up + i));
        _mm512_mask_storeu_ps(gate + i, k, v);
    }
}

/* Products and sums in the order of the reference (no FMA), so the rotation is bit-identical. */
static void rope_apply(float *x, int n_heads, int head_dim, int rot_dim, const float *cos, const float *sin,
                       int style) {
    int half = rot_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        if (style == KILN_ROPE_NEOX) {
            for (int i = 0; i < half; i += 16) {
                __mmask16 k = tail_mask(half - i);
                __m512 a0 = _mm512_maskz_loadu_ps(k, v + i), a1 = _mm512_maskz_loadu_ps(k, v + half + i);
                __m512 c = _mm512_maskz_loadu_ps(k, cos + i), s = _mm512_maskz_loadu_ps(k, sin + i);
                _mm512_mask_storeu_ps(v + i, k, _mm512_sub_ps(_mm512_mul_ps(a0, c), _mm512_mul_ps(a1, s)));
                _mm512_mask_storeu_ps(v + half + i, k, _mm512_add_ps(_mm512_mul_ps(a0, s), _mm512_mul_ps(a1, c)));
            }
        } else {
            for (int i = 0; i < rot_dim; i += 16) {
                __mmask16 k = tail_mask(rot_dim - i);
                __m512 a = _mm512_maskz_loadu_ps(k, v + i), sw = _mm512_permute_ps(a, _MM_SHUFFLE(2, 3, 0, 1));
                __m512 r = _mm512_add_ps(_mm512_mul_ps(a, _mm512_maskz_loadu_ps(k, cos + i)),
                                         _mm512_mul_ps(sw, _mm512_maskz_loadu_ps(k, sin + i)));
                _mm512_mask_storeu_ps(v + i, k, r);
            }
        }
    }
}

/* The four horizontal sums of A, B, C, D. */
INLINE __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xee));
    __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd));
    s = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(2, 3, 0, 1)));
    s = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), s));
}

/* Scores of one block of keys, s[i] = q . k_i * scale. */
static void score_block(float *s, const float *q, const float *K, int nb, int hd, int kv_stride, float scale) {
    int i = 0;
    __mmask16 tm = tail_mask(hd & 15);
    int hfull = hd & ~15;
    for (; i + 4 <= nb; i += 4) {
        const float *k0 = K + (size_t)i * kv_stride, *k1 = k0 + kv_stride, *k2 = k1 + kv_stride, *k3 = k2 + kv_stride;
        __m512 d0 = _mm512_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
        int j = 0;
        for (; j < hfull; j += 16) {
            __m512 qv = _mm512_loadu_ps(q + j);
            d0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + j), d0);
            d1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k1 + j), d1);
            d2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k2 + j), d2);
            d3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k3 + j), d3);
        }
        if (j < hd) {
            __m512 qv = _mm512_maskz_loadu_ps(tm, q + j);
            d0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tm, k0 + j), d0);
            d1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tm, k1 + j), d1);
            d2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tm, k2 + j), d2);
            d3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(tm, k3 + j), d3);
        }
        _mm_storeu_ps(s + i, _mm_mul_ps(reduce4(d0, d1, d2, d3), _mm_set1_ps(scale)));
    }
    for (; i < nb; i++) {
        const float *k0 = K + (size_t)i * kv_stride;
        __m512 d0 = _mm512_setzero_ps();
        for (int j = 0; j < hd; j += 16) {
            __mmask16 m = tail_mask(hd - j);
            d0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + j), _mm512_maskz_loadu_ps(m, k0 + j), d0);
        }
        s[i] = _mm512_reduce_add_ps(d0) * scale;
    }
}

/* acc += sum_i p[i] v_i over one block of keys, four keys per pass over acc. */
static void accumulate_block(float *acc, const float *p, const float *V, int nb, int hd, int kv_stride) {
    int i = 0;
    for (; i + 4 <= nb; i += 4) {
        const float *v0 = V + (size_t)i * kv_stride, *v1 = v0 + kv_stride, *v2 = v1 + kv_stride, *v3 = v2 + kv_stride;
        __m512 p0 = _mm512_set1_ps(p[i]), p1 = _mm512_set1_ps(p[i + 1]);
        __m512 p2 = _mm512_set1_ps(p[i + 2]), p3 = _mm512_set1_ps(p[i + 3]);
        for (int j = 0; j < hd; j += 16) {
            __mmask16 m = tail_mask(hd - j);
            __m512 a = _mm512_maskz_loadu_ps(m, acc + j);
            a = _mm512_fmadd_ps(p0, _mm512_maskz_loadu_ps(m, v0 + j), a);
            a = _mm512_fmadd_ps(p1, _mm512_maskz_loadu_ps(m, v1 + j), a);
            a = _mm512_fmadd_ps(p2, _mm512_maskz_loadu_ps(m, v2 + j), a);
            a = _mm512_fmadd_ps(p3, _mm512_maskz_loadu_ps(m, v3 + j), a);
            _mm512_mask_storeu_ps(acc + j, m, a);
        }
    }
    for (; i < nb; i++) {
        const float *v0 = V + (size_t)i * kv_stride;
        __m512 p0 = _mm512_set1_ps(p[i]);
        for (int j = 0; j < hd; j += 16) {
            __mmask16 m = tail_mask(hd - j);
            __m512 a = _mm512_fmadd_ps(p0, _mm512_maskz_loadu_ps(m, v0 + j), _mm512_maskz_loadu_ps(m, acc + j));
            _mm512_mask_storeu_ps(acc + j, m, a);
        }
    }
}

INLINE void scale_row(float *a, int n, float f) {
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail_mask(n - j);
        _mm512_mask_storeu_ps(a + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + j), _mm512_set1_ps(f)));
    }
}

/* Online softmax over blocks of keys: when a block raises the running maximum, the sums so far are
 * rescaled by exp(old - new), so each score is exponentiated once. */
static void attend(float *out, const float *q, const float *K, const float *V, int n_keys, int hd, int kv_stride,
                   float scale, float *scratch) {
    float *acc = scratch, *s = scratch + hd, mx = -INFINITY, sum = 0;
    for (int j = 0; j < hd; j++) acc[j] = 0;
    for (int b0 = 0; b0 < n_keys; b0 += KILN_ATTEND_BLOCK) {
        int nb = n_keys - b0 < KILN_ATTEND_BLOCK ? n_keys - b0 : KILN_ATTEND_BLOCK;
        const float *kb = K + (size_t)b0 * kv_stride, *vb = V + (size_t)b0 * kv_stride;
        score_block(s, q, kb, nb, hd, kv_stride, scale);
        __m512 bm = _mm512_set1_ps(-INFINITY);
        for (int i = 0; i < nb; i += 16) bm = _mm512_max_ps(bm, _mm512_mask_loadu_ps(bm, tail_mask(nb - i), s + i));
        float m = _mm512_reduce_max_ps(bm);
        if (m > mx) {
            float corr = expf(mx - m);
            sum *= corr;
            scale_row(acc, hd, corr);
            mx = m;
        }
        __m512 mv = _mm512_set1_ps(mx), bs = _mm512_setzero_ps();
        for (int i = 0; i < nb; i += 16) {
            __mmask16 k = tail_mask(nb - i);
            __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + i), mv)));
            bs = _mm512_add_ps(bs, e);
            _mm512_mask_storeu_ps(s + i, k, e);
        }
        sum += _mm512_reduce_add_ps(bs);
        accumulate_block(acc, s, vb, nb, hd, kv_stride);
    }
    for (int j = 0; j < hd; j++) out[j] = acc[j] / sum;
}

/* Key rows for a group of four starting at S: rows past the last key repeat a valid one (their scores
 * are masked out), so no row outside the cache is read. */
INLINE const float *key_row(const float *base, int s, int n_keys, int kv_stride) {
    return base + (size_t)(s < n_keys ? s : n_keys - 1) * kv_stride;
}

/* Sixteen queries at once, one per lane, so that scores, maxima and sums are plain vector operations
 * and no horizontal sum is needed: per chunk of 16 keys, scores are q . k with the queries transposed
 * (four keys at a time, two accumulators each to cover the FMA latency), the causal mask sets the
 * scores a query may not see to -inf, and p . v accumulates into the transposed output. */
static void attend_block(float *out, size_t out_stride, const float *q, size_t q_stride, int nq, const float *K,
                         const float *V, int n_keys0, int hd, int kv_stride, float scale, float *scratch) {
    enum { L = 16, C = 16 };
    float *qt = scratch, *ot = scratch + (size_t)L * hd;
    for (int j = 0; j < hd; j++)
        for (int i = 0; i < L; i++) qt[j * L + i] = i < nq ? q[i * q_stride + j] : 0;
    for (int j = 0; j < L * hd; j++) ot[j] = 0;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 sc = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
    __m512 m = ninf, l = _mm512_setzero_ps();
    int n_keys = n_keys0 + nq - 1;
    for (int s0 = 0; s0 < n_keys; s0 += C) {
        __m512 S[C];
#pragma GCC unroll 4
        for (int g = 0; g < C; g += 4) {
            const float *k0 = key_row(K, s0 + g, n_keys, kv_stride), *k1 = key_row(K, s0 + g + 1, n_keys, kv_stride);
            const float *k2 = key_row(K, s0 + g + 2, n_keys, kv_stride), *k3 = key_row(K, s0 + g + 3, n_keys, kv_stride);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            int j = 0;
            for (; j + 2 <= hd; j += 2) {
                __m512 q0 = _mm512_load_ps(qt + j * L), q1 = _mm512_load_ps(qt + (j + 1) * L);
                a0 = _mm512_fmadd_ps(q0, _mm512_set1_ps(k0[j]), a0);
                a1 = _mm512_fmadd_ps(q0, _mm512_set1_ps(k1[j]), a1);
                a2 = _mm512_fmadd_ps(q0, _mm512_set1_ps(k2[j]), a2);
                a3 = _mm512_fmadd_ps(q0, _mm512_set1_ps(k3[j]), a3);
                b0 = _mm512_fmadd_ps(q1, _mm512_set1_ps(k0[j + 1]), b0);
                b1 = _mm512_fmadd_ps(q1, _mm512_set1_ps(k1[j + 1]), b1);
                b2 = _mm512_fmadd_ps(q1, _mm512_set1_ps(k2[j + 1]), b2);
                b3 = _mm512_fmadd_ps(q1, _mm512_set1_ps(k3[j + 1]), b3);
            }
            if (j < hd) {
                __m512 q0 = _mm512_load_ps(qt + j * L);
                a0 = _mm512_fmadd_ps(q0, _mm512_set1_ps(k0[j]), a0);
                a1 = _mm512_fmadd_ps(q0, _mm512_set1_ps(k1[j]), a1);
                a2 = _mm512_fmadd_ps(q0, _mm512_set1_ps(k2[j]), a2);
                a3 = _mm512_fmadd_ps(q0, _mm512_set1_ps(k3[j]), a3);
            }
            S[g] = _mm512_add_ps(a0, b0), S[g + 1] = _mm512_add_ps(a1, b1);
            S[g + 2] = _mm512_add_ps(a2, b2), S[g + 3] = _mm512_add_ps(a3, b3);
        }
        __m512 mn = m;
#pragma GCC unroll 16
        for (int c = 0; c < C; c++) { /* lane i sees key s when s < n_keys0 + i */
            __mmask16 ok = s0 + c < n_keys ? _mm512_cmpge_epi32_mask(lane, _mm512_set1_epi32(s0 + c - n_keys0 + 1)) : 0;
            S[c] = _mm512_mask_mul_ps(ninf, ok, S[c], sc);
            mn = _mm512_max_ps(mn, S[c]);
        }
        __m512 corr = exp16(_mm512_sub_ps(m, mn));
        m = mn;
        l = _mm512_mul_ps(l, corr);
#pragma GCC unroll 16
        for (int c = 0; c < C; c++) {
            S[c] = exp16(_mm512_sub_ps(S[c], m));
            l = _mm512_add_ps(l, S[c]);
        }
        if (_mm512_cmp_ps_mask(corr, _mm512_set1_ps(1.0f), _CMP_NEQ_UQ))
            for (int j = 0; j < hd; j++) _mm512_store_ps(ot + j * L, _mm512_mul_ps(_mm512_load_ps(ot + j * L), corr));
        /* P.V: 8 output dims at a time stay in registers (8 + the 16 of S) over all C keys, so ot is
         * loaded and stored once per block of keys, not once per 4 keys. */
        const float *v[C];
#pragma GCC unroll 16
        for (int c = 0; c < C; c++) v[c] = key_row(V, s0 + c, n_keys, kv_stride);
        int j = 0;
        for (; j + 8 <= hd; j += 8) {
            __m512 o[8];
#pragma GCC unroll 8
            for (int u = 0; u < 8; u++) o[u] = _mm512_load_ps(ot + (j + u) * L);
#pragma GCC unroll 16
            for (int c = 0; c < C; c++)
#pragma GCC unroll 8
                for (int u = 0; u < 8; u++) o[u] = _mm512_fmadd_ps(S[c], _mm512_set1_ps(v[c][j + u]), o[u]);
#pragma GCC unroll 8
            for (int u = 0; u < 8; u++) _mm512_store_ps(ot + (j + u) * L, o[u]);
        }
        for (; j < hd; j++) {
            __m512 o = _mm512_load_ps(ot + j * L);
#pragma GCC unroll 16
            for (int c = 0; c < C; c++) o = _mm512_fmadd_ps(S[c], _mm512_set1_ps(v[c][j]), o);
            _mm512_store_ps(ot + j * L, o);
        }
    }
    float ls[L];
    _mm512_storeu_ps(ls, l);
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < hd; j++) out[i * out_stride + j] = ot[j * L + i] / ls[i];
}

const kiln_kernels kiln_kernels_avx512 = {
    .name = "avx512",
    .rmsnorm = rmsnorm,
    .layernorm = layernorm,
    .softmax = softmax,
    .gelu = gelu,
    .swiglu = swiglu,
    .matvec = kiln_matvec_avx512,
    .matvecs = kiln_matvecs_avx512,
    .matvecs_max = 16, /* bench_kernels (d): still 1.5-2.8x cheaper than the GEMM at 16 tokens */
    .gemm_mr = KILN_AVX512_MR,
    .gemm_nr = KILN_AVX512_NR,
    .pack_w = kiln_pack_w_avx512,
    .tile = kiln_tile_avx512,
    .rope_apply = rope_apply,
    .attend = attend,
    .attn_lanes = 16,
    .attend_block = attend_block,
};
