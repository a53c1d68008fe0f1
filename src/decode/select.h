/* The loops over the whole vocabulary that processors and searches share: exponentials, top-m
 * selection and "smallest prefix reaching a mass" selection. Each costs a few vectorised passes or a
 * partial selection, never a full sort of the vocabulary, so that the processor chain stays a small
 * fraction of a decode step even with a 152k vocabulary.
 *
 * One order ranks tokens everywhere: larger value first, and among equal values the lower token id. */
#ifndef KILN_DECODE_SELECT_H
#define KILN_DECODE_SELECT_H

#include <stdint.h>

/* Sixteen float lanes (GCC vector extensions: AVX-512, or pairs/quads of narrower registers). Sums run in
 * float lanes over 256 values at a time, then go to double lanes with decode_lanes_widen, which keeps
 * them in registers (indexing a lane would send the accumulator through memory every iteration). */
typedef float decode_vfloat __attribute__((vector_size(64)));
typedef int32_t decode_vint __attribute__((vector_size(64)));
typedef double decode_vdouble __attribute__((vector_size(64)));
enum { DECODE_LANES = 16 };

static inline decode_vdouble decode_lanes_widen(decode_vfloat a) {
    typedef float half __attribute__((vector_size(32)));
    half lo = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7);
    half hi = __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    return __builtin_convertvector(lo, decode_vdouble) + __builtin_convertvector(hi, decode_vdouble);
}

static inline double decode_lanes_total(decode_vdouble a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* Whether any lane of a comparison's mask is set: halves or-ed together. */
static inline int decode_any_lane(decode_vint m) {
    typedef int32_t half __attribute__((vector_size(32)));
    typedef int32_t quarter __attribute__((vector_size(16)));
    half h = __builtin_shufflevector(m, m, 0, 1, 2, 3, 4, 5, 6, 7) |
             __builtin_shufflevector(m, m, 8, 9, 10, 11, 12, 13, 14, 15);
    quarter q = __builtin_shufflevector(h, h, 0, 1, 2, 3) | __builtin_shufflevector(h, h, 4, 5, 6, 7);
    q |= __builtin_shufflevector(q, q, 2, 3, 0, 1);
    q |= __builtin_shufflevector(q, q, 1, 0, 3, 2);
    return q[0];
}

/* A token with the value it is ranked by (KEY) and its probability mass (W, unnormalised). */
typedef struct {
    float key;
    float w;
    int32_t id;
} decode_item;

/* OUT[i] = exp(X[i] - SHIFT) for the N values, 0 for -inf; returns their sum. Vectorised, and the same
 * result whatever the thread count (one thread, fixed order). */
double decode_exp(float *out, const float *x, float shift, int n);
/* The same, also setting *DOT to the sum of OUT[i] * (X[i] - SHIFT) over the finite X[i] (what an entropy
 * needs), in the same pass. */
double decode_exp_dot(float *out, const float *x, float shift, int n, double *dot);
/* The same for the tokens IDS[0..N): OUT[IDS[i]] = exp(X[IDS[i]] - SHIFT). */
double decode_exp_ids(float *out, const float *x, const int32_t *ids, int n, float shift);
/* The dot product of decode_exp_dot for weights E already taken: the sum of E[i] * (X[i] - SHIFT) over
 * the finite X[i], in float per 256 values (sixteen lanes, then the lanes in order) and double beyond
 * (an order of its own: equal to decode_exp_dot's up to rounding). */
double decode_exp_dot_of(const float *x, const float *e, float shift, int n);
/* The sum of W[0..N), or of W[IDS[i]] for i < N. */
double decode_sum(const float *w, int n);
double decode_sum_ids(const float *w, const int32_t *ids, int n);

/* Mass and count of the tokens per logit bucket: bucket b holds the logits in (TOP - (b+1)/64, TOP - b/64]
 * (up to rounding), the last one everything lower, -inf included. */
enum { DECODE_BUCKETS = 1024 };
#define DECODE_BUCKETS_PER_NAT 64.0f
typedef struct {
    double mass[DECODE_BUCKETS];
    int32_t count[DECODE_BUCKETS];
} decode_hist;


/* The histogram of the N logits X with weights W, buckets counted down from TOP (>= every X); the counts
 * only with COUNTS (else 0). Sums in float: a bound, not a total. */
void decode_hist_build(decode_hist *h, const float *x, const float *w, float top, int n, int counts);
/* An estimate of it from every SAMPLE-th block of 16 tokens, each counted SAMPLE times, and every token
 * of weight >= HEAVY, counted once wherever it is: those few carry much of the weight, and sampling
 * them would make the estimate swing. HEAVY = INFINITY: none is, and the blocks not sampled go unread. */
void decode_hist_sample(decode_hist *h, const float *x, const float *w, float top, int n, int sample, float heavy);

/* Bounds from a histogram H of the logits (buckets counted down from TOP) on the distance d from CENTER
 * (d = |CENTER - x|) at which a cut by distance, nearest first, gathers TARGET of the weight: the tokens
 * with d < NEAR weigh less than TARGET - SLACK, those with d <= FAR at least TARGET + SLACK and (KEEP_MIN
 * > 1) number KEEP_MIN; EST bounds how many tokens have d <= FAR. Rounded outwards, widened past the
 * rounding of bucket edges and distances: with an exact histogram (SLACK 0) the crossing lies between. */
typedef struct {
    float near, far;
    double est;
} decode_band_bounds;
decode_band_bounds decode_hist_bounds(const decode_hist *h, float top, float center, double target, double slack,
                                      int keep_min);

/* One pass over N dense logits X (weights W) by their distance d = |CENTER - x|: the weight (*MASS_NEAR,
 * in float lanes per 256 tokens as decode_exp sums) and count (*COUNT_NEAR) of the tokens with d < NEAR,
 * and the ids of the finite ones with NEAR <= d <= FAR (ALL: of every finite one with d <= FAR), written
 * to OUT in id order; returns how many. A block with no id to write costs only its vector part. With
 * BEYOND (room for (N + 15) / 16), also which tokens lie farther than FAR: bit j of BEYOND[b] for token
 * 16 b + j, so that decode_remove_marked can remove them without reading the logits again. */
int decode_band(const float *x, const float *w, int n, float center, float near, float far, int all, int32_t *out,
                double *mass_near, int *count_near, uint16_t *beyond);
/* Removes the N dense tokens that BEYOND marks (as decode_band writes it): x = -INFINITY, w = 0. */
void decode_remove_marked(float *x, float *w, int n, const uint16_t *beyond);

/* The M best finite entries of VALUE (VALUE[IDS[i]] for i < N, or VALUE[0..N) when IDS is NULL), by the
 * order above, written to OUT in no particular order. Returns how many (< M when fewer are finite).
 * A heap of M entries, with a vectorised pre-check that skips blocks holding nothing better. */
int decode_top(const float *value, const int32_t *ids, int n, int m, int32_t *out);

/* The entries (as decode_top reads them) whose value is >= MIN, in index order, written to OUT;
 * returns how many. */
int decode_collect_ge(const float *value, const int32_t *ids, int n, float min, int32_t *out);

/* How many of the N values X are >= MIN, or -1 as soon as a stretch of them shows more than CAP. */
int decode_count_ge(const float *x, int n, float min, int cap);

/* Removes the N dense tokens whose logit X is not >= MIN (NaN too): x = -INFINITY, and w = 0 when W is
 * not NULL. Tokens already removed (-inf, weight 0) stay as they are: a block with no finite token
 * below MIN is only read. */
void decode_remove_below(float *x, float *w, int n, float min);

/* Reorders IT so that IT[0..K) are the first K items in order (quickselect). */
void decode_partition(decode_item *it, int n, int k);

/* Reorders IT so that IT[0..m) are the items whose predecessors in order weigh less than TARGET, and
 * returns m: the smallest prefix whose weight reaches TARGET, the item that crosses it included (all
 * N when the total stays below). Expected O(N): many items are first bucketed by key (one histogram
 * finds the bucket holding the crossing), then a quickselect recurses on the side holding it. */
int decode_select_mass(decode_item *it, int n, double target);

/* The total weight of the N items. */
double decode_items_mass(const decode_item *it, int n);

/* Two versions of the passes above: the portable one (select.c, GCC vector extensions) and one for
 * AVX-512 (select_avx512.c, compiled for it), which they call when kiln_isa() is avx512 (KILN_ISA caps
 * it). Both give the same results to the bit (the exponentials where the portable code's multiply-adds
 * are fused, as -march on an FMA machine makes them); tests hold them to it. */
int decode_use_avx512(void);
double decode_exp_generic(float *out, const float *x, float shift, int n);
double decode_exp_avx512(float *out, const float *x, float shift, int n);
double decode_exp_dot_generic(float *out, const float *x, float shift, int n, double *dot);
double decode_exp_dot_avx512(float *out, const float *x, float shift, int n, double *dot);
double decode_exp_dot_of_generic(const float *x, const float *e, float shift, int n);
double decode_exp_dot_of_avx512(const float *x, const float *e, float shift, int n);
/* the histogram's float sums per bucket (MASS, COUNT zeroed by the caller) */
void decode_hist_sample_generic(float *mass, int32_t *count, const float *x, const float *w, float top, int n,
                                int sample, float heavy);
void decode_hist_sample_avx512(float *mass, int32_t *count, const float *x, const float *w, float top, int n,
                               int sample, float heavy);
int decode_band_generic(const float *x, const float *w, int n, float center, float near, float far, int all,
                        int32_t *out, double *mass_near, int *count_near, uint16_t *beyond);
int decode_band_avx512(const float *x, const float *w, int n, float center, float near, float far, int all,
                       int32_t *out, double *mass_near, int *count_near, uint16_t *beyond);
void decode_remove_marked_generic(float *x, float *w, int n, const uint16_t *beyond);
void decode_remove_marked_avx512(float *x, float *w, int n, const uint16_t *beyond);
/* The band's last values I..N-1 (fewer than a block of lanes), one at a time, after the blocks: adds to
 * *MASS and *COUNT, appends to OUT from K and returns the new count, and marks BEYOND. */
int decode_band_tail(const float *x, const float *w, int i, int n, float center, float near, float far, int all,
                     int32_t *out, int k, double *mass, int *count, uint16_t *beyond);

#endif
