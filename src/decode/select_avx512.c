/* AVX-512 versions of the vocabulary-wide passes of select.c that typical-p (and the cut of top-p) spend
 * their time in. Same arithmetic in the same order as the generic code, so the same results to the bit;
 * what changes is what the vector-extension code cannot say: comparisons land in mask registers, so a
 * block with nothing to do costs one kortest (not a shuffle reduction), clamps are min/max, selects are
 * masked operations, and the ids a pass collects are compressed into place instead of written lane by
 * lane. Compiled with the AVX-512 flags; select.c calls these when kiln_isa() is avx512. */
#include <immintrin.h>
#include <math.h>

#include "decode/select.h"

/* decode_lanes_widen and decode_lanes_total of select.h on registers */
static inline __m512d widen(__m512 a) {
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
    return _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(a)), _mm512_cvtps_pd(hi));
}

static inline double lanes_total(__m512d a) {
    double t[8];
    _mm512_storeu_pd(t, a);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

/* exp_lanes of select.c: the same steps, the multiply-adds fused where GCC fuses them there. */
static inline __m512 exp16(__m512 x) {
    __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
    /* max and min return their second operand when one is NaN: a NaN stays NaN, as with the selects */
    __m512 c = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), x));
    __m512 m = _mm512_fmadd_ps(c, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(12582912.0f));
    __m512 n = _mm512_sub_ps(m, _mm512_set1_ps(12582912.0f));
    __m512i k = _mm512_sub_epi32(_mm512_castps_si512(m), _mm512_set1_epi32(0x4B400000 - 127)); /* n + 127 */
    __m512i scale = _mm512_slli_epi32(k, 23);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), c);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500e-4f), r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    return _mm512_maskz_mul_ps(~under, p, _mm512_castsi512_ps(scale));
}

/* Inlined with constant WITH_DOT: without it, no dot product. */
static inline __attribute__((always_inline)) double exp_pass(float *out, const float *x, float shift, int n,
                                                             const int with_dot, double *dot) {
    __m512 s = _mm512_set1_ps(shift), ninf = _mm512_set1_ps(-INFINITY), acc = _mm512_setzero_ps(), dacc = acc;
    __m512d sum = _mm512_setzero_pd(), dsum = sum;
    int i = 0, blocks = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_sub_ps(_mm512_loadu_ps(x + i), s), e = exp16(v);
        _mm512_storeu_ps(out + i, e);
        acc = _mm512_add_ps(acc, e);
        if (with_dot) dacc = _mm512_add_ps(dacc, _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(v, ninf, _CMP_GT_OQ), e, v));
        if (++blocks % 16 == 0) {
            sum = _mm512_add_pd(sum, widen(acc));
            if (with_dot) dsum = _mm512_add_pd(dsum, widen(dacc));
            acc = dacc = _mm512_setzero_ps();
        }
    }
    double total = lanes_total(_mm512_add_pd(sum, widen(acc)));
    double dtotal = with_dot ? lanes_total(_mm512_add_pd(dsum, widen(dacc))) : 0;
    if (i < n) {
        __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
        float v[16], e[16];
        _mm512_storeu_ps(v, _mm512_mask_sub_ps(ninf, tail, _mm512_maskz_loadu_ps(tail, x + i), s));
        _mm512_storeu_ps(e, exp16(_mm512_loadu_ps(v)));
        for (int j = 0; i + j < n; j++) {
            out[i + j] = e[j], total += e[j];
            if (with_dot && v[j] > -INFINITY) dtotal += e[j] * v[j];
        }
    }
    if (with_dot) *dot = dtotal;
    return total;
}

double decode_exp_avx512(float *out, const float *x, float shift, int n) { return exp_pass(out, x, shift, n, 0, NULL); }

double decode_exp_dot_avx512(float *out, const float *x, float shift, int n, double *dot) {
    return exp_pass(out, x, shift, n, 1, dot);
}

/* decode_exp_dot_of_generic as GCC vectorises its reduction: a lane per token modulo 16 (the tokens past
 * the last whole vector of a block added to lane 0), the lanes summed in order from 0. The lanes stay
 * in a register, where the generic code keeps them in memory: a store and a load per step. */
double decode_exp_dot_of_avx512(const float *x, const float *e, float shift, int n) {
    __m512 s = _mm512_set1_ps(shift), ninf = _mm512_set1_ps(-INFINITY);
    double dot = 0;
    for (int b = 0; b < n; b += 256) {
        int end = n - b < 256 ? n : b + 256, i = b;
        __m512 acc = _mm512_setzero_ps();
        for (; i + 16 <= end; i += 16) {
            __m512 v = _mm512_loadu_ps(x + i);
            __mmask16 finite = _mm512_cmp_ps_mask(v, ninf, _CMP_GT_OQ);
            __m512 d = _mm512_maskz_sub_ps(finite, v, s);
            acc = _mm512_add_ps(acc, _mm512_maskz_mul_ps(finite, _mm512_maskz_loadu_ps(finite, e + i), d));
        }
        float lane[16], block = 0;
        _mm512_storeu_ps(lane, acc);
        for (; i < end; i++) lane[0] += x[i] > -INFINITY ? e[i] * (x[i] - shift) : 0.0f;
        for (int j = 0; j < 16; j++) block += lane[j];
        dot += block;
    }
    return dot;
}

/* hist_buckets of select.c for one logit */
static inline int bucket(float x, float top) {
    float v = (top - x) * DECODE_BUCKETS_PER_NAT;
    v = v > 0.0f ? v : 0.0f;
    return v < DECODE_BUCKETS - 1 ? (int)v : DECODE_BUCKETS - 1;
}

/* The buckets of 16 logits, as hist_buckets takes them (max returns its second operand, 0, for NaN). */
static inline __m512i buckets16(const float *x, __m512 top) {
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(top, _mm512_loadu_ps(x)), _mm512_set1_ps(DECODE_BUCKETS_PER_NAT));
    v = _mm512_max_ps(v, _mm512_setzero_ps());
    __mmask16 inside = _mm512_cmp_ps_mask(v, _mm512_set1_ps(DECODE_BUCKETS - 1), _CMP_LT_OQ);
    return _mm512_mask_cvttps_epi32(_mm512_set1_epi32(DECODE_BUCKETS - 1), inside, v);
}

void decode_hist_sample_avx512(float *mass, int32_t *count, const float *x, const float *w, float top, int n,
                               int sample, float heavy) {
    __m512 hv = _mm512_set1_ps(heavy), t = _mm512_set1_ps(top);
    __m512i one = _mm512_set1_epi32(1), times_sampled = _mm512_set1_epi32(sample);
    int32_t bs[16], ts[16];
    float tw[16];
    int i = 0;
    for (int since = 0; i + 16 <= n; i += 16, since = since + 1 == sample ? 0 : since + 1) {
        if (since && heavy == INFINITY) continue;
        __m512 e = _mm512_loadu_ps(w + i);
        __mmask16 heavy_lanes = _mm512_cmp_ps_mask(e, hv, _CMP_GE_OQ);
        if (since) { /* not sampled: its heavy tokens only, once */
            if (!heavy_lanes) continue;
            _mm512_storeu_si512(bs, buckets16(x + i, t));
            if (__builtin_popcount(heavy_lanes) > 4) { /* many: every lane, the others adding 0 to their bucket */
                _mm512_storeu_ps(tw, _mm512_maskz_mov_ps(heavy_lanes, e));
                for (int j = 0; j < 16; j++) mass[bs[j]] += tw[j], count[bs[j]] += heavy_lanes >> j & 1;
                continue;
            }
            for (unsigned m = heavy_lanes; m; m &= m - 1) {
                int j = __builtin_ctz(m);
                mass[bs[j]] += w[i + j], count[bs[j]]++;
            }
            continue;
        }
        /* sampled: a heavy token stands for itself, a sampled one for SAMPLE; the sums in token order */
        __m512i times = _mm512_mask_blend_epi32(heavy_lanes, times_sampled, one);
        _mm512_storeu_si512(bs, buckets16(x + i, t));
        _mm512_storeu_si512(ts, times);
        _mm512_storeu_ps(tw, _mm512_mul_ps(_mm512_cvtepi32_ps(times), e));
        for (int j = 0; j < 16; j++) mass[bs[j]] += tw[j], count[bs[j]] += ts[j];
    }
    for (int j = i; j < n; j++) { /* the last, short block: each token once */
        int b = bucket(x[j], top);
        mass[b] += w[j];
        count[b]++;
    }
}

int decode_band_avx512(const float *x, const float *w, int n, float center, float near, float far, int all,
                       int32_t *out, double *mass_near, int *count_near, uint16_t *beyond) {
    __m512 c = _mm512_set1_ps(center), vnear = _mm512_set1_ps(near), vfar = _mm512_set1_ps(far);
    __m512 ninf = _mm512_set1_ps(-INFINITY), acc = _mm512_setzero_ps();
    __m512i ids = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i sixteen = _mm512_set1_epi32(16);
    __m512i cnt = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
    __m512d lanes = _mm512_setzero_pd();
    int k = 0, i = 0, blocks = 0, finite_far = far < INFINITY;
    for (; i + 16 <= n; i += 16, ids = _mm512_add_epi32(ids, sixteen)) {
        __m512 v = _mm512_loadu_ps(x + i), d = _mm512_abs_ps(_mm512_sub_ps(c, v));
        __mmask16 in = _mm512_cmp_ps_mask(d, vnear, _CMP_LT_OQ), take = _mm512_cmp_ps_mask(d, vfar, _CMP_LE_OQ);
        /* d <= FAR leaves out NaN, so "d >= NEAR" is "not d < NEAR"; and -inf, with any finite FAR */
        if (!all) take &= ~in;
        if (!finite_far) take &= _mm512_cmp_ps_mask(v, ninf, _CMP_GT_OQ);
        acc = _mm512_mask_add_ps(acc, in, acc, _mm512_loadu_ps(w + i));
        cnt = _mm512_mask_add_epi32(cnt, in, cnt, one);
        if (beyond) beyond[i / 16] = _mm512_cmp_ps_mask(d, vfar, _CMP_GT_OQ);
        if (++blocks % 16 == 0) {
            lanes = _mm512_add_pd(lanes, widen(acc));
            acc = _mm512_setzero_ps();
        }
        if (take) { /* a whole vector stored, TAKE of it kept: it lands at most at the index being read */
            _mm512_storeu_si512(out + k, _mm512_maskz_compress_epi32(take, ids));
            k += __builtin_popcount(take);
        }
    }
    double mass = lanes_total(_mm512_add_pd(lanes, widen(acc)));
    int count = _mm512_reduce_add_epi32(cnt);
    k = decode_band_tail(x, w, i, n, center, near, far, all, out, k, &mass, &count, beyond);
    *mass_near = mass;
    *count_near = count;
    return k;
}

void decode_remove_marked_avx512(float *x, float *w, int n, const uint16_t *beyond) {
    __m512 ninf = _mm512_set1_ps(-INFINITY), zero = _mm512_setzero_ps();
    for (int b = 0; b < (n + 15) / 16; b++) {
        __mmask16 out = beyond[b];
        if (!out) continue;
        _mm512_mask_storeu_ps(x + 16 * b, out, ninf); /* lanes beyond N are never marked */
        _mm512_mask_storeu_ps(w + 16 * b, out, zero);
    }
}
