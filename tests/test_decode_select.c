/* The vocabulary-wide loops of src/decode/select.c against plain loops and full sorts: mass selection
 * (bucketed and quickselect), collecting, exponentials with their sums, logit histograms. Random and
 * tie-heavy inputs, sizes around the block and bucketing thresholds. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "decode/select.h"
#include "test.h"

static const int sizes[] = {1, 2, 15, 16, 17, 23, 24, 25, 255, 2047, 2048, 2049, 5000, 30001};
enum { N_SIZES = sizeof sizes / sizeof sizes[0] };

/* Keys: 0 random, 1 a few distinct values (ties everywhere), 2 all equal, 3 Zipf-like logits. */
static void make_items(decode_item *it, int n, int shape, kiln_rng *r) {
    for (int i = 0; i < n; i++) {
        float u = kiln_rng_f32(r);
        float key = shape == 0 ? u * 10 - 5 : shape == 1 ? (float)(int)(u * 4) : shape == 2 ? 1.5f : -1.2f * logf(1 + u * n);
        it[i] = (decode_item){key, expf(key - 5), (int32_t)i};
    }
    for (int i = n - 1; i > 0; i--) { /* ids in no particular order */
        int j = (int)kiln_rng_below(r, i + 1);
        decode_item t = it[i];
        it[i] = it[j];
        it[j] = t;
    }
}

static int by_rank(const void *a, const void *b) {
    const decode_item *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return x->id - y->id;
}

/* The smallest prefix of the sorted items whose weight reaches TARGET (all when it never does). */
static int reference_prefix(const decode_item *sorted, int n, double target) {
    double acc = 0;
    for (int i = 0; i < n; i++) {
        if (acc >= target) return i;
        acc += sorted[i].w;
    }
    return n;
}

TEST(select_mass_keeps_the_same_prefix_as_a_full_sort) {
    kiln_rng r;
    kiln_rng_seed(&r, 17);
    decode_item *it = malloc(sizeof *it * 30001), *sorted = malloc(sizeof *it * 30001);
    char *in = malloc(30001);
    for (int s = 0; s < N_SIZES; s++)
        for (int shape = 0; shape < 4; shape++) {
            int n = sizes[s];
            make_items(sorted, n, shape, &r);
            double total = decode_items_mass(sorted, n);
            qsort(sorted, n, sizeof *sorted, by_rank);
            const double fractions[] = {0, 1e-9, 0.1, 0.5, 0.9, 0.999, 1.0, 1.5};
            for (int f = 0; f < 8; f++) {
                double target = total * fractions[f];
                memcpy(it, sorted, sizeof *it * n);
                for (int i = n - 1; i > 0; i--) { /* shuffled again */
                    int j = (int)kiln_rng_below(&r, i + 1);
                    decode_item t = it[i];
                    it[i] = it[j];
                    it[j] = t;
                }
                int m = decode_select_mass(it, n, target), want = reference_prefix(sorted, n, target);
                /* sums in another order may cross a hair earlier or later only when the target is the
                 * total itself */
                CHECKF(m == want || (fractions[f] == 1.0 && abs(m - want) <= 1), "n %d shape %d target %g: kept %d, a sort keeps %d",
                       n, shape, fractions[f], m, want);
                for (int i = 0; i < n; i++) in[i] = 0;
                for (int i = 0; i < m; i++) in[it[i].id] = 1;
                for (int i = 0; i < m && m == want; i++)
                    CHECKF(in[sorted[i].id], "n %d shape %d target %g: item %d of the sorted prefix is missing", n,
                           shape, fractions[f], i);
            }
        }
    free(it), free(sorted), free(in);
}

TEST(partition_puts_the_first_k_in_order_in_front) {
    kiln_rng r;
    kiln_rng_seed(&r, 3);
    decode_item *it = malloc(sizeof *it * 5000), *sorted = malloc(sizeof *it * 5000);
    char *in = malloc(5000);
    for (int shape = 0; shape < 4; shape++)
        for (int k = 1; k <= 4097; k += 512) {
            make_items(it, 5000, shape, &r);
            memcpy(sorted, it, sizeof *it * 5000);
            qsort(sorted, 5000, sizeof *sorted, by_rank);
            decode_partition(it, 5000, k);
            memset(in, 0, 5000);
            for (int i = 0; i < k; i++) in[it[i].id] = 1;
            for (int i = 0; i < k; i++) CHECKF(in[sorted[i].id], "shape %d k %d: item %d of the first k is missing", shape, k, i);
        }
    free(it), free(sorted), free(in);
}

TEST(collect_ge_finds_every_entry_at_or_above_the_bound_in_order) {
    kiln_rng r;
    kiln_rng_seed(&r, 5);
    float *v = malloc(sizeof(float) * 30001);
    int32_t *out = malloc(sizeof(int32_t) * 30001), *ids = malloc(sizeof(int32_t) * 30001);
    for (int s = 0; s < N_SIZES; s++)
        for (int density = 0; density < 3; density++) {
            int n = sizes[s];
            float bound = density == 0 ? 0.999f : density == 1 ? 0.5f : 0.0f;
            for (int i = 0; i < n; i++) v[i] = (i % 7 == 3) ? -INFINITY : kiln_rng_f32(&r);
            int k = decode_collect_ge(v, NULL, n, bound, out), want = 0;
            for (int i = 0; i < n; i++)
                if (v[i] >= bound) {
                    CHECKF(want < k && out[want] == i, "n %d bound %g: entry %d missing or out of order", n, bound, i);
                    want++;
                }
            CHECK_EQ_INT(k, want);
            for (int i = 0; i < n; i++) ids[i] = n - 1 - i; /* through a list: in the list's order */
            k = decode_collect_ge(v, ids, n, bound, out);
            CHECK_EQ_INT(k, want);
            for (int i = 1; i < k; i++) CHECK(out[i] < out[i - 1]);
        }
    free(v), free(out), free(ids);
}

TEST(exponentials_sums_and_the_entropy_dot_match_double_loops) {
    kiln_rng r;
    kiln_rng_seed(&r, 9);
    float *x = malloc(sizeof(float) * 30001), *e = malloc(sizeof(float) * 30001);
    for (int s = 0; s < N_SIZES; s++) {
        int n = sizes[s];
        for (int i = 0; i < n; i++) x[i] = i % 5 == 1 ? -INFINITY : kiln_rng_f32(&r) * 40 - 30;
        double dot, sum = decode_exp_dot(e, x, 10.0f, n, &dot), want = 0, want_dot = 0;
        for (int i = 0; i < n; i++) {
            double ex = isinf(x[i]) ? 0 : exp((double)x[i] - 10.0);
            CHECKF(fabs(e[i] - ex) <= 2e-6 * ex + 1e-30, "n %d: exp(%g - 10) = %g, expected %g", n, x[i], e[i], ex);
            want += ex;
            want_dot += isinf(x[i]) ? 0 : ex * ((double)x[i] - 10.0);
        }
        CHECKF(fabs(sum - want) <= 1e-6 * want, "n %d: sum %.9g, expected %.9g", n, sum, want);
        CHECKF(fabs(dot - want_dot) <= 1e-6 * fabs(want_dot) + 1e-30, "n %d: dot %.9g, expected %.9g", n, dot, want_dot);
        CHECKF(fabs(decode_sum(e, n) - want) <= 1e-6 * want, "n %d: decode_sum", n);
        CHECKF(fabs(decode_exp(e, x, 10.0f, n) - want) <= 1e-6 * want, "n %d: decode_exp", n);
    }
    free(x), free(e);
}

TEST(logit_histogram_counts_every_token_in_its_bucket) {
    kiln_rng r;
    kiln_rng_seed(&r, 13);
    int n = 4099;
    float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n);
    static decode_hist h;
    for (int i = 0; i < n; i++) {
        x[i] = i % 11 == 0 ? -INFINITY : 3.0f - kiln_rng_f32(&r) * 20; /* some beyond the last bucket */
        w[i] = kiln_rng_f32(&r);
    }
    decode_hist_build(&h, x, w, 3.0f, n, 1);
    double mass[DECODE_BUCKETS] = {0};
    int count[DECODE_BUCKETS] = {0};
    for (int i = 0; i < n; i++) {
        float v = (3.0f - x[i]) * DECODE_BUCKETS_PER_NAT;
        int b = v < DECODE_BUCKETS - 1 ? (int)v : DECODE_BUCKETS - 1;
        mass[b] += w[i];
        count[b]++;
    }
    for (int b = 0; b < DECODE_BUCKETS; b++) {
        CHECKF(h.count[b] == count[b], "bucket %d: %d tokens, expected %d", b, h.count[b], count[b]);
        CHECKF(fabs(h.mass[b] - mass[b]) <= 1e-5 * mass[b], "bucket %d: mass %g, expected %g", b, h.mass[b], mass[b]);
    }
    decode_hist_build(&h, x, w, 3.0f, n, 0);
    for (int b = 0; b < DECODE_BUCKETS; b++) CHECK_EQ_INT(h.count[b], 0);
    free(x), free(w);
}

TEST(sampled_histogram_counts_heavy_tokens_once_and_sampled_blocks_for_all) {
    kiln_rng r;
    kiln_rng_seed(&r, 19);
    int n = 4099, sample = 4;
    float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n);
    static decode_hist exact, est;
    for (int i = 0; i < n; i++) x[i] = -kiln_rng_f32(&r) * 20, w[i] = expf(x[i]);
    decode_hist_build(&exact, x, w, 0.0f, n, 1);
    decode_hist_sample(&est, x, w, 0.0f, n, sample, 0.0f); /* every token heavy: the exact histogram */
    for (int b = 0; b < DECODE_BUCKETS; b++) {
        CHECK_EQ_INT(est.count[b], exact.count[b]);
        CHECKF(fabs(est.mass[b] - exact.mass[b]) <= 1e-5 * exact.mass[b], "bucket %d", b);
    }
    float heavy = expf(-5.0f);
    decode_hist_sample(&est, x, w, 0.0f, n, sample, heavy);
    double mass[DECODE_BUCKETS] = {0};
    int count[DECODE_BUCKETS] = {0};
    for (int i = 0; i < n; i++) {
        float v = -x[i] * DECODE_BUCKETS_PER_NAT;
        int block = i / 16, last = n - n % 16, b = v < DECODE_BUCKETS - 1 ? (int)v : DECODE_BUCKETS - 1;
        int times = w[i] >= heavy || i >= last ? 1 : block % sample == 0 ? sample : 0;
        mass[b] += times * w[i];
        count[b] += times;
    }
    for (int b = 0; b < DECODE_BUCKETS; b++) {
        CHECKF(est.count[b] == count[b], "bucket %d: %d, expected %d", b, est.count[b], count[b]);
        CHECKF(fabs(est.mass[b] - mass[b]) <= 1e-5 * mass[b], "bucket %d: mass %g, expected %g", b, est.mass[b], mass[b]);
    }
    free(x), free(w);
}
