/* Vocabulary-wide loops of the decoding layer: exp, top-m by heap, and mass selection by quickselect. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "decode/select.h"

/* exp over 16 lanes with GCC vector extensions (AVX-512, or pairs/quads of narrower registers): range
 * reduction x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r (Cephes' expf coefficients,
 * about 1 ulp), and 2^n built in the exponent bits. Lanes below -87 (and -inf) give 0. */
typedef float vfloat __attribute__((vector_size(64)));
typedef int32_t vint __attribute__((vector_size(64)));
enum { LANES = 16 };

static inline vfloat select_lanes(vint mask, vfloat a, vfloat b) {
    return (vfloat)(((vint)a & mask) | ((vint)b & ~mask));
}

static inline vfloat exp_lanes(vfloat x) {
    vfloat zero = {0};
    vint under = x < -87.0f;
    vfloat c = select_lanes(x > 88.0f, zero + 88.0f, select_lanes(under, zero - 87.0f, x));
    vfloat t = c * 1.44269504088896341f;
    vint k = __builtin_convertvector(t + select_lanes(t >= 0.0f, zero + 0.5f, zero - 0.5f), vint);
    vfloat n = __builtin_convertvector(k, vfloat);
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

double decode_exp(float *out, const float *x, float shift, int n) {
    double sum = 0;
    vfloat acc = {0};
    int i = 0, blocks = 0;
    for (; i + LANES <= n; i += LANES) {
        vfloat v;
        memcpy(&v, x + i, sizeof v);
        v = exp_lanes(v - shift);
        memcpy(out + i, &v, sizeof v);
        acc += v;
        if (++blocks % 16 == 0) { /* float lanes for 256 values, double beyond */
            for (int j = 0; j < LANES; j++) sum += acc[j];
            acc = (vfloat){0};
        }
    }
    for (int j = 0; j < LANES; j++) sum += acc[j];
    if (i < n) {
        vfloat v = (vfloat){0} - INFINITY;
        for (int j = 0; i + j < n; j++) v[j] = x[i + j] - shift;
        v = exp_lanes(v);
        for (int j = 0; i + j < n; j++) out[i + j] = v[j], sum += v[j];
    }
    return sum;
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
    int k = 0;
    if (ids) {
        for (int i = 0; i < n; i++)
            if (value[ids[i]] >= min) out[k++] = ids[i];
        return k;
    }
    int i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        int any = 0;
        for (int j = 0; j < BLOCK; j++) any |= value[i + j] >= min;
        if (!any) continue;
        for (int j = 0; j < BLOCK; j++)
            if (value[i + j] >= min) out[k++] = i + j;
    }
    for (; i < n; i++)
        if (value[i] >= min) out[k++] = i;
    return k;
}

static inline int item_before(const decode_item *a, const decode_item *b) { return before(a->key, a->id, b->key, b->id); }

static inline void item_swap(decode_item *a, decode_item *b) {
    decode_item t = *a;
    *a = *b;
    *b = t;
}

/* Moves the median of it[lo], it[mid], it[hi-1] to it[hi-1] as the pivot. */
static void choose_pivot(decode_item *it, int lo, int hi) {
    int mid = lo + (hi - lo) / 2, last = hi - 1;
    if (item_before(&it[mid], &it[lo])) item_swap(&it[mid], &it[lo]);
    if (item_before(&it[last], &it[lo])) item_swap(&it[last], &it[lo]);
    if (item_before(&it[mid], &it[last])) item_swap(&it[mid], &it[last]);
}

/* Partitions it[lo..hi) around the pivot at it[hi-1]: items before it first. Returns the pivot's final
 * index and the weight of the items before it in *MASS. */
static int partition(decode_item *it, int lo, int hi, double *mass) {
    decode_item pivot = it[hi - 1];
    int s = lo;
    double m = 0;
    for (int i = lo; i < hi - 1; i++)
        if (item_before(&it[i], &pivot)) {
            m += it[i].w;
            item_swap(&it[i], &it[s++]);
        }
    item_swap(&it[s], &it[hi - 1]);
    *mass = m;
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

int decode_select_mass(decode_item *it, int n, double target) {
    int lo = 0, hi = n;
    double acc = 0; /* weight of it[0..lo), all known to come first */
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
