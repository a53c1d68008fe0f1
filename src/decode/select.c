/* Vocabulary-wide loops of the decoding layer: exp, sums, logit histograms, top-m by heap, and mass
 * selection by bucketing and quickselect. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "decode/select.h"
#include "kernels/kernels.h"

int decode_use_avx512(void) { return strcmp(kiln_isa(), "avx512") == 0; }

/* exp over 16 lanes with GCC vector extensions (AVX-512, or pairs/quads of narrower registers): range
 * reduction x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r (Cephes' expf coefficients,
 * about 1 ulp), and 2^n built in the exponent bits. Lanes below -87 (and -inf) give 0. */
typedef decode_vfloat vfloat;
typedef decode_vint vint;
typedef decode_vdouble vdouble;
enum { LANES = DECODE_LANES };

static inline vfloat select_lanes(vint mask, vfloat a, vfloat b) {
    return (vfloat)(((vint)a & mask) | ((vint)b & ~mask));
}

/* The lanes of a comparison's mask as the bits of an integer, lane j bit j. */
static inline unsigned lane_bits(vint m) {
    const vint bit = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
    return (unsigned)decode_any_lane(m & bit);
}

/* The exponentials fuse their multiply-adds (the build is ISO C, where GCC keeps them apart): a third
 * fewer operations and a rounding less per step of the polynomial. */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

static inline vfloat exp_lanes(vfloat x) {
    vfloat zero = {0};
    vint under = x < -87.0f;
    vfloat c = select_lanes(x > 88.0f, zero + 88.0f, select_lanes(under, zero - 87.0f, x));
    /* n = round(c / ln2) by adding 1.5 * 2^23, whose float spacing is 1, and k its bits as an integer */
    vfloat m = c * 1.44269504088896341f + 12582912.0f, n = m - 12582912.0f;
    vint k = (vint)m - 0x4B400000;
    vfloat r = c - n * 0.693359375f + n * 2.12194440e-4f;
    vfloat p = zero + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return select_lanes(under, zero, p * (vfloat)((k + 127) << 23));
}

/* The exponentials of the N values (and, when DOT, their dot product with X - SHIFT): float lanes for 256
 * values at a time, double beyond. */
static inline double exp_pass(float *out, const float *x, float shift, int n, double *dot) {
    vdouble sum = {0}, dsum = {0};
    vfloat acc = {0}, dacc = {0}, zero = {0};
    int i = 0, blocks = 0;
    for (; i + LANES <= n; i += LANES) {
        vfloat v, e;
        memcpy(&v, x + i, sizeof v);
        v -= shift;
        e = exp_lanes(v);
        memcpy(out + i, &e, sizeof e);
        acc += e;
        if (dot) dacc += select_lanes(v > -INFINITY, e * v, zero);
        if (++blocks % 16 == 0) {
            sum += decode_lanes_widen(acc);
            if (dot) dsum += decode_lanes_widen(dacc);
            acc = dacc = zero;
        }
    }
    double total = decode_lanes_total(sum + decode_lanes_widen(acc));
    double dtotal = dot ? decode_lanes_total(dsum + decode_lanes_widen(dacc)) : 0;
    if (i < n) {
        vfloat v = zero - INFINITY, e;
        for (int j = 0; i + j < n; j++) v[j] = x[i + j] - shift;
        e = exp_lanes(v);
        for (int j = 0; i + j < n; j++) {
            out[i + j] = e[j], total += e[j];
            if (v[j] > -INFINITY) dtotal += e[j] * v[j];
        }
    }
    if (dot) *dot = dtotal;
    return total;
}

double decode_exp_generic(float *out, const float *x, float shift, int n) { return exp_pass(out, x, shift, n, NULL); }

double decode_exp_dot_generic(float *out, const float *x, float shift, int n, double *dot) {
    return exp_pass(out, x, shift, n, dot);
}

double decode_exp(float *out, const float *x, float shift, int n) {
    return decode_use_avx512() ? decode_exp_avx512(out, x, shift, n) : decode_exp_generic(out, x, shift, n);
}

double decode_exp_dot(float *out, const float *x, float shift, int n, double *dot) {
    return decode_use_avx512() ? decode_exp_dot_avx512(out, x, shift, n, dot)
                               : decode_exp_dot_generic(out, x, shift, n, dot);
}

double decode_exp_ids(float *out, const float *x, const int32_t *ids, int n, float shift) {
    double sum = 0;
    for (int i = 0; i < n; i += LANES) {
        int m = n - i < LANES ? n - i : LANES;
        vfloat v = (vfloat){0} - INFINITY;
        for (int j = 0; j < m; j++) v[j] = x[ids[i + j]] - shift;
        v = exp_lanes(v);
        for (int j = 0; j < m; j++) out[ids[i + j]] = v[j], sum += v[j];
    }
    return sum;
}

#pragma GCC pop_options

double decode_exp_dot_of(const float *x, const float *e, float shift, int n) {
    return decode_use_avx512() ? decode_exp_dot_of_avx512(x, e, shift, n) : decode_exp_dot_of_generic(x, e, shift, n);
}

double decode_exp_dot_of_generic(const float *x, const float *e, float shift, int n) {
    double dot = 0;
    for (int b = 0; b < n; b += 256) {
        int end = n - b < 256 ? n : b + 256;
        float block = 0;
#pragma omp simd reduction(+ : block)
        for (int i = b; i < end; i++) block += x[i] > -INFINITY ? e[i] * (x[i] - shift) : 0.0f;
        dot += block;
    }
    return dot;
}

double decode_sum(const float *w, int n) {
    vdouble sum = {0};
    vfloat acc = {0};
    int i = 0, blocks = 0;
    for (; i + LANES <= n; i += LANES) {
        vfloat v;
        memcpy(&v, w + i, sizeof v);
        acc += v;
        if (++blocks % 16 == 0) {
            sum += decode_lanes_widen(acc);
            acc = (vfloat){0};
        }
    }
    double total = decode_lanes_total(sum + decode_lanes_widen(acc));
    for (; i < n; i++) total += w[i];
    return total;
}

double decode_sum_ids(const float *w, const int32_t *ids, int n) {
    double sum[4] = {0};
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) sum[j] += w[ids[i + j]];
    for (; i < n; i++) sum[0] += w[ids[i]];
    return (sum[0] + sum[1]) + (sum[2] + sum[3]);
}

/* The histogram's bucket of each of N logits (N <= LANES) into B. */
static inline void hist_buckets(const float *x, float top, int n, int *b) {
#pragma omp simd
    for (int j = 0; j < n; j++) { /* -inf beyond the last bucket, NaN in the first */
        float v = (top - x[j]) * DECODE_BUCKETS_PER_NAT;
        v = v > 0.0f ? v : 0.0f;
        b[j] = v < DECODE_BUCKETS - 1 ? (int)v : DECODE_BUCKETS - 1;
    }
}

void decode_hist_build(decode_hist *h, const float *x, const float *w, float top, int n, int counts) {
    /* Two histograms, merged at the end: consecutive tokens in one bucket do not wait on each other.
     * Float sums per bucket: the cut only takes bounds from them and checks them exactly. */
    float mass[2][DECODE_BUCKETS] = {{0}};
    int32_t count[2][DECODE_BUCKETS] = {{0}};
    int b[LANES];
    for (int i = 0; i < n; i += LANES) {
        int len = n - i < LANES ? n - i : LANES;
        hist_buckets(x + i, top, len, b);
        for (int j = 0; j < len; j++) mass[j & 1][b[j]] += w[i + j];
        if (counts)
            for (int j = 0; j < len; j++) count[j & 1][b[j]]++;
    }
    for (int j = 0; j < DECODE_BUCKETS; j++) {
        h->mass[j] = (double)mass[0][j] + mass[1][j];
        h->count[j] = count[0][j] + count[1][j];
    }
}

/* The sampled histogram's work on one block of LEN tokens at X, W: a sampled block counts its tokens
 * SAMPLE times (LEN < LANES, the last block, once), a block not sampled only its heavy tokens, once. */
static inline void hist_sample_block(float *mass, int32_t *count, const float *x, const float *w, float top, int len,
                                     int sampled, int sample, float heavy) {
    int b[LANES];
    hist_buckets(x, top, len, b);
    if (!sampled) {
        for (int j = 0; j < LANES; j++)
            if (w[j] >= heavy) mass[b[j]] += w[j], count[b[j]]++;
        return;
    }
    for (int j = 0; j < len; j++) { /* a heavy token stands for itself, a sampled one for SAMPLE */
        int times = w[j] >= heavy || len < LANES ? 1 : sample;
        mass[b[j]] += times * w[j];
        count[b[j]] += times;
    }
}

void decode_hist_sample_generic(float *mass, int32_t *count, const float *x, const float *w, float top, int n,
                                int sample, float heavy) {
    for (int i = 0, since = 0; i < n; i += LANES, since = since + 1 == sample ? 0 : since + 1) {
        int len = n - i < LANES ? n - i : LANES, sampled = since == 0 || len < LANES, any = 0;
        if (!sampled && heavy == INFINITY) continue;
        if (!sampled) { /* a whole block: a constant trip count keeps the test one vector compare */
            for (int j = 0; j < LANES; j++) any |= w[i + j] >= heavy;
            if (!any) continue;
        }
        hist_sample_block(mass, count, x + i, w + i, top, len, sampled, sample, heavy);
    }
}

void decode_hist_sample(decode_hist *h, const float *x, const float *w, float top, int n, int sample, float heavy) {
    float mass[DECODE_BUCKETS] = {0};
    int32_t count[DECODE_BUCKETS] = {0};
    if (decode_use_avx512()) decode_hist_sample_avx512(mass, count, x, w, top, n, sample, heavy);
    else decode_hist_sample_generic(mass, count, x, w, top, n, sample, heavy);
    for (int j = 0; j < DECODE_BUCKETS; j++) h->mass[j] = mass[j], h->count[j] = count[j];
}

/* How far from CENTER the logits of each bucket lie, at least (LO) and at most (HI), widened by MARGIN.
 * Plain arithmetic on arrays, so that the loop is vectorised. */
static void bucket_reach(float top, double center, double margin, double *lo, double *hi) {
    enum { LAST = DECODE_BUCKETS - 1 };
#pragma omp simd
    for (int j = 0; j < LAST; j++) {
        double xh = top - j / (double)DECODE_BUCKETS_PER_NAT, xl = top - (j + 1) / (double)DECODE_BUCKETS_PER_NAT;
        double near = xl > center ? xl - center : xh < center ? center - xh : 0, up = xh - center, down = center - xl;
        lo[j] = near - margin > 0 ? near - margin : 0;
        hi[j] = (up > down ? up : down) + margin; /* fmax: neither is NaN */
    }
    double xh = top - LAST / (double)DECODE_BUCKETS_PER_NAT; /* the last bucket reaches down to -inf */
    double near = xh < center ? center - xh : 0;
    lo[LAST] = near - margin > 0 ? near - margin : 0;
    hi[LAST] = INFINITY;
}

/* Walking the buckets by DIST (their reach, growing away from the bucket JC holding the center on both
 * sides), the distance at which the walked ones weigh TARGET (or, with BY_COUNT, hold TARGET tokens);
 * INFINITY when all of them do not. */
static double reach_at(const decode_hist *h, const double *dist, int jc, double target, int by_count) {
    int l = jc, r = jc + 1;
    double acc = 0;
    while (l >= 0 || r < DECODE_BUCKETS) {
        int j = r >= DECODE_BUCKETS || (l >= 0 && dist[l] <= dist[r]) ? l-- : r++;
        acc += by_count ? h->count[j] : h->mass[j];
        if (acc >= target) return dist[j];
    }
    return INFINITY;
}

/* The smallest float >= D (UP) or the largest <= D: "float < D" is "float < that" (and "> D", "> it"). */
static float float_bound(double d, int up) {
    float f = (float)d;
    if (up && (double)f < d) f = nextafterf(f, INFINITY);
    if (!up && (double)f > d) f = nextafterf(f, -INFINITY);
    return f;
}

/* exp((j + 1) / 64) for each bucket j but the last, by repeated multiplication */
static double inverse_weight[DECODE_BUCKETS - 1];
static pthread_once_t inverse_weights_once = PTHREAD_ONCE_INIT;

static void inverse_weights_init(void) {
    double step = exp(1 / DECODE_BUCKETS_PER_NAT), inv = step;
    for (int j = 0; j < DECODE_BUCKETS - 1; j++, inv *= step) inverse_weight[j] = inv;
}

decode_band_bounds decode_hist_bounds(const decode_hist *h, float top, float center, double target, double slack,
                                      int keep_min) {
    /* Bucket edges and each token's distance are rounded: bounds widened well past the rounding. */
    double margin = 1.0 / 256 + 1e-6 * (fabs(top) + fabs(center)), lo[DECODE_BUCKETS], hi[DECODE_BUCKETS];
    bucket_reach(top, center, margin, lo, hi);
    double jc_at = floor(((double)top - center) * DECODE_BUCKETS_PER_NAT);
    int jc = jc_at < DECODE_BUCKETS - 1 ? (int)jc_at : DECODE_BUCKETS - 1;
    double near = reach_at(h, lo, jc, target - slack, 0), far = reach_at(h, hi, jc, target + slack, 0);
    if (keep_min > 1) far = fmax(far, reach_at(h, hi, jc, keep_min, 1));
    /* A weight in bucket j is at least exp(-(j + 1) / 64); the last bucket's have no such bound. The
     * buckets within FAR are one run around the center's: the sum skips the others, adding nothing. */
    pthread_once(&inverse_weights_once, inverse_weights_init);
    double est = lo[DECODE_BUCKETS - 1] <= far ? INFINITY : 0;
    for (int j = 0; j < DECODE_BUCKETS - 1; j++)
        if (lo[j] <= far) est += h->mass[j] * inverse_weight[j];
    return (decode_band_bounds){float_bound(near, 1), float_bound(far, 0), est};
}

int decode_band(const float *x, const float *w, int n, float center, float near, float far, int all, int32_t *out,
                double *mass_near, int *count_near, uint16_t *beyond) {
    return (decode_use_avx512() ? decode_band_avx512 : decode_band_generic)(x, w, n, center, near, far, all, out,
                                                                             mass_near, count_near, beyond);
}

int decode_band_generic(const float *x, const float *w, int n, float center, float near, float far, int all,
                        int32_t *out, double *mass_near, int *count_near, uint16_t *beyond) {
    int k = 0, count = 0, i = 0, blocks = 0;
    vdouble mass_lanes = {0};
    vfloat acc = {0}, zero = {0};
    vint cnt = {0};
    for (; i + LANES <= n; i += LANES) {
        vfloat v, e;
        memcpy(&v, x + i, sizeof v);
        memcpy(&e, w + i, sizeof e);
        vfloat d = (vfloat)((vint)(center - v) & 0x7fffffff);
        vint in = d < near, take = (d <= far) & (v > -INFINITY);
        if (!all) take &= d >= near;
        acc += (vfloat)((vint)e & in);
        cnt -= in;
        if (++blocks % 16 == 0) {
            mass_lanes += decode_lanes_widen(acc);
            acc = zero;
        }
        if (beyond) beyond[i / LANES] = (uint16_t)lane_bits(d > far);
        if (!decode_any_lane(take)) continue;
        for (int j = 0; j < LANES; j++) { /* branch-free: written always, counted when taken */
            out[k] = i + j;
            k -= take[j];
        }
    }
    double mass = decode_lanes_total(mass_lanes + decode_lanes_widen(acc));
    for (int j = 0; j < LANES; j++) count += cnt[j];
    k = decode_band_tail(x, w, i, n, center, near, far, all, out, k, &mass, &count, beyond);
    *mass_near = mass;
    *count_near = count;
    return k;
}

int decode_band_tail(const float *x, const float *w, int i, int n, float center, float near, float far, int all,
                     int32_t *out, int k, double *mass, int *count, uint16_t *beyond) {
    if (beyond && i < n) beyond[i / LANES] = 0;
    for (; i < n; i++) {
        float d = fabsf(center - x[i]);
        *mass += d < near ? w[i] : 0.0f;
        *count += d < near;
        out[k] = i;
        k += (all || d >= near) & (d <= far) & (x[i] > -INFINITY);
        if (beyond) beyond[i / LANES] |= (uint16_t)((d > far) << i % LANES);
    }
    return k;
}

void decode_remove_marked(float *x, float *w, int n, const uint16_t *beyond) {
    if (decode_use_avx512()) decode_remove_marked_avx512(x, w, n, beyond);
    else decode_remove_marked_generic(x, w, n, beyond);
}

void decode_remove_marked_generic(float *x, float *w, int n, const uint16_t *beyond) {
    const vint bit = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
    const vfloat ninf = (vfloat){0} - INFINITY, zero = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        if (!beyond[i / LANES]) continue;
        vint out = (beyond[i / LANES] & bit) != 0;
        vfloat v, e;
        memcpy(&v, x + i, sizeof v);
        memcpy(&e, w + i, sizeof e);
        v = select_lanes(out, ninf, v);
        e = select_lanes(out, zero, e);
        memcpy(x + i, &v, sizeof v);
        memcpy(w + i, &e, sizeof e);
    }
    for (; i < n; i++)
        if (beyond[i / LANES] >> i % LANES & 1) x[i] = -INFINITY, w[i] = 0;
}

/* a ranks before b: larger value, then lower id */
static inline int before(float va, int32_t a, float vb, int32_t b) { return va > vb || (va == vb && a < b); }

/* Min-heap on the order (the worst kept entry at the root), entries are token ids. */
static void heap_sift_down(const float *v, int32_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && before(v[h[w]], h[w], v[h[l]], h[l])) w = l;
        if (r < n && before(v[h[w]], h[w], v[h[r]], h[r])) w = r;
        if (w == i) return;
        int32_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void heap_push(const float *v, int32_t *h, int *n, int32_t id) {
    int i = (*n)++;
    h[i] = id;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!before(v[h[parent]], h[parent], v[h[i]], h[i])) return;
        int32_t t = h[i];
        h[i] = h[parent];
        h[parent] = t;
        i = parent;
    }
}

static void heap_offer(const float *v, int32_t *h, int *n, int m, int32_t id) {
    if (!(v[id] > -INFINITY)) return; /* removed tokens (and NaN) never rank */
    if (*n < m) heap_push(v, h, n, id);
    else if (before(v[id], id, v[h[0]], h[0])) {
        h[0] = id;
        heap_sift_down(v, h, m, 0);
    }
}

enum { BLOCK = 16 };

int decode_top(const float *value, const int32_t *ids, int n, int m, int32_t *out) {
    int k = 0;
    if (m <= 0) return 0;
    if (ids) {
        for (int i = 0; i < n; i++) heap_offer(value, out, &k, m, ids[i]);
        return k;
    }
    int i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        if (k == m) {
            /* Scanning in id order, an entry equal to the root comes later than it and ranks below:
             * only strictly larger values can enter, and most blocks hold none. */
            float worst = value[out[0]];
            int any = 0;
            for (int j = 0; j < BLOCK; j++) any |= value[i + j] > worst;
            if (!any) continue;
        }
        for (int j = 0; j < BLOCK; j++) heap_offer(value, out, &k, m, i + j);
    }
    for (; i < n; i++) heap_offer(value, out, &k, m, i);
    return k;
}

int decode_collect_ge(const float *value, const int32_t *ids, int n, float min, int32_t *out) {
    /* Branch-free: where an entry goes is not predictable. An entry is always written and counted only
     * when it qualifies; the write lands at most at the index being read, so OUT needs no spare room. */
    int k = 0;
    if (ids) {
        for (int i = 0; i < n; i++) {
            out[k] = ids[i];
            k += value[ids[i]] >= min;
        }
        return k;
    }
    int i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        int any = 0;
        for (int j = 0; j < BLOCK; j++) any |= value[i + j] >= min;
        if (!any) continue;
        for (int j = 0; j < BLOCK; j++) {
            out[k] = i + j;
            k += value[i + j] >= min;
        }
    }
    for (; i < n; i++) {
        out[k] = i;
        k += value[i] >= min;
    }
    return k;
}

int decode_count_ge(const float *x, int n, float min, int cap) {
    enum { STRETCH = 4096 }; /* checked against CAP this often */
    int k = 0, i = 0;
    while (i + LANES <= n) {
        vint cnt = {0};
        for (int end = n - i < STRETCH ? n - LANES : i + STRETCH - LANES; i <= end; i += LANES) {
            vfloat v;
            memcpy(&v, x + i, sizeof v);
            cnt -= v >= min;
        }
        for (int j = 0; j < LANES; j++) k += cnt[j];
        if (k > cap) return -1;
    }
    for (; i < n; i++) k += x[i] >= min;
    return k <= cap ? k : -1;
}

void decode_remove_below(float *x, float *w, int n, float min) {
    enum { GROUP = 16 * LANES }; /* a group's masks or-ed before any is reduced: most groups have none */
    const vfloat ninf = (vfloat){0} - INFINITY, zero = {0};
    int i = 0;
    for (; i + GROUP <= n; i += GROUP) {
        vint any = {0};
        for (int j = i; j < i + GROUP; j += LANES) {
            vfloat v;
            memcpy(&v, x + j, sizeof v);
            any |= ~(v >= min) & (v != ninf);
        }
        if (!decode_any_lane(any)) continue;
        for (int j = i; j < i + GROUP; j += LANES) {
            vfloat v, e;
            memcpy(&v, x + j, sizeof v);
            vint out = ~(v >= min) & (v != ninf);
            v = select_lanes(out, ninf, v);
            memcpy(x + j, &v, sizeof v);
            if (!w) continue;
            memcpy(&e, w + j, sizeof e);
            e = select_lanes(out, zero, e);
            memcpy(w + j, &e, sizeof e);
        }
    }
    for (; i < n; i++)
        if (!(x[i] >= min)) {
            x[i] = -INFINITY;
            if (w) w[i] = 0;
        }
}

static inline int item_before(const decode_item *a, const decode_item *b) {
    return (a->key > b->key) | ((a->key == b->key) & (a->id < b->id));
}

static inline void item_swap(decode_item *a, decode_item *b) {
    decode_item t = *a;
    *a = *b;
    *b = t;
}

double decode_items_mass(const decode_item *it, int n) {
    double m[4] = {0}; /* four chains of additions, not one */
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) m[j] += it[i + j].w;
    for (; i < n; i++) m[0] += it[i].w;
    return (m[0] + m[1]) + (m[2] + m[3]);
}

/* Moves the median of it[lo], it[mid], it[hi-1] to it[hi-1] as the pivot. */
static void choose_pivot(decode_item *it, int lo, int hi) {
    int mid = lo + (hi - lo) / 2, last = hi - 1;
    if (item_before(&it[mid], &it[lo])) item_swap(&it[mid], &it[lo]);
    if (item_before(&it[last], &it[lo])) item_swap(&it[last], &it[lo]);
    if (item_before(&it[mid], &it[last])) item_swap(&it[mid], &it[last]);
}

/* Partitions it[lo..hi) around the pivot at it[hi-1]: items before it first. Returns the pivot's final
 * index and the weight of the items before it in *MASS. Branch-free (Lomuto): every item is swapped with
 * the first one not known to come first, and that boundary moves on when it comes first. */
static int partition(decode_item *it, int lo, int hi, double *mass) {
    decode_item pivot = it[hi - 1];
    int s = lo;
    for (int i = lo; i < hi - 1; i++) {
        decode_item t = it[i];
        int first = item_before(&t, &pivot);
        it[i] = it[s];
        it[s] = t;
        s += first;
    }
    item_swap(&it[s], &it[hi - 1]);
    *mass = decode_items_mass(it + lo, s - lo);
    return s;
}

static int by_order(const void *a, const void *b) {
    const decode_item *x = a, *y = b;
    return item_before(x, y) ? -1 : item_before(y, x) ? 1 : 0;
}

/* Sorts IT in order: the few items left once a selection has narrowed down. */
static void decode_sort(decode_item *it, int n) { qsort(it, n, sizeof *it, by_order); }

enum { SMALL = 24 }; /* ranges this short are sorted instead of partitioned */

void decode_partition(decode_item *it, int n, int k) {
    int lo = 0, hi = n;
    while (hi - lo > SMALL) {
        double unused;
        choose_pivot(it, lo, hi);
        int s = partition(it, lo, hi, &unused);
        if (s == k || s + 1 == k) return;
        if (s > k) hi = s;
        else lo = s + 1;
    }
    decode_sort(it + lo, hi - lo);
}

/* Ranges of more items than BUCKETED are first narrowed by a histogram of their keys over
 * SELECT_BUCKETS equal buckets between the smallest and the largest (larger keys in lower buckets): one
 * pass finds the bucket where the weight crosses the target, two branch-free passes move the buckets
 * before it to the front and it next. A quickselect over thousands of items costs mispredicted
 * branches on every comparison. */
enum { BUCKETED = 2048, SELECT_BUCKETS = 512 };

static inline int key_bucket(float key, float kmax, float scale) {
    float b = (kmax - key) * scale;
    return b < SELECT_BUCKETS - 1 ? (int)b : SELECT_BUCKETS - 1;
}

/* Moves the items of it[lo..hi) whose bucket is below BC (EQUAL: is BC) to the front of the range;
 * returns where they end. */
static int move_buckets_front(decode_item *it, int lo, int hi, float kmax, float scale, int bc, int equal) {
    int s = lo;
    for (int i = lo; i < hi; i++) {
        decode_item t = it[i];
        int b = key_bucket(t.key, kmax, scale), front = equal ? b == bc : b < bc;
        it[i] = it[s];
        it[s] = t;
        s += front;
    }
    return s;
}

/* Narrows [*lo, *hi) to the items of the bucket holding the crossing, adding the weight of those moved
 * before it to *ACC. Returns 0 when the keys are all equal (nothing to bucket by), -1 when the range
 * weighs less than the target (all of it is kept). */
static int narrow_by_buckets(decode_item *it, int *lo, int *hi, double *acc, double target) {
    float kmax = -INFINITY, kmin = INFINITY;
    for (int i = *lo; i < *hi; i++) {
        kmax = it[i].key > kmax ? it[i].key : kmax;
        kmin = it[i].key < kmin ? it[i].key : kmin;
    }
    float scale = (SELECT_BUCKETS - 1) / (kmax - kmin);
    if (!(kmax > kmin) || !isfinite(scale) || !isfinite(kmax - kmin)) return 0;
    double mass[SELECT_BUCKETS] = {0};
    for (int i = *lo; i < *hi; i++) mass[key_bucket(it[i].key, kmax, scale)] += it[i].w;
    int bc = 0;
    double before = *acc;
    for (; bc < SELECT_BUCKETS; bc++) {
        if (before + mass[bc] >= target) break;
        before += mass[bc];
    }
    if (bc == SELECT_BUCKETS) return -1;
    int mid = move_buckets_front(it, *lo, *hi, kmax, scale, bc, 0);
    *hi = move_buckets_front(it, mid, *hi, kmax, scale, bc, 1);
    *lo = mid;
    *acc = before;
    return 1;
}

int decode_select_mass(decode_item *it, int n, double target) {
    int lo = 0, hi = n;
    double acc = 0; /* weight of it[0..lo), all known to come first */
    while (hi - lo > BUCKETED) {
        int r = narrow_by_buckets(it, &lo, &hi, &acc, target);
        if (r < 0) return hi;
        if (r == 0) break;
        if (acc >= target) return lo; /* only by rounding: the buckets before reach it already */
    }
    while (hi - lo > SMALL) {
        double before_mass;
        choose_pivot(it, lo, hi);
        int s = partition(it, lo, hi, &before_mass);
        if (acc + before_mass >= target) {
            hi = s; /* the crossing item is before the pivot */
        } else {
            acc += before_mass + it[s].w;
            lo = s + 1;
            if (acc >= target) return lo; /* the pivot crosses */
        }
    }
    decode_sort(it + lo, hi - lo);
    for (int i = lo; i < hi; i++) {
        if (acc >= target) return i;
        acc += it[i].w;
    }
    return hi;
}
