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

TEST(count_ge_counts_or_gives_up_past_the_cap) {
    kiln_rng r;
    kiln_rng_seed(&r, 29);
    float *v = malloc(sizeof(float) * 30001);
    for (int s = 0; s < N_SIZES; s++) {
        int n = sizes[s], want = 0;
        for (int i = 0; i < n; i++) v[i] = i % 9 == 4 ? -INFINITY : kiln_rng_f32(&r);
        for (int i = 0; i < n; i++) want += v[i] >= 0.3f;
        const int caps[] = {0, want - 1, want, n};
        for (int c = 0; c < 4; c++)
            CHECKF(decode_count_ge(v, n, 0.3f, caps[c]) == (want <= caps[c] ? want : -1), "n %d cap %d: %d, %d",
                   n, caps[c], decode_count_ge(v, n, 0.3f, caps[c]), want);
    }
    free(v);
}

/* Logits with removed tokens, ties and a NaN; weights their exponentials. */
static void make_band_logits(float *x, float *w, int n, kiln_rng *r) {
    for (int i = 0; i < n; i++) {
        float u = kiln_rng_f32(r);
        x[i] = i % 7 == 2 ? -INFINITY : i % 5 == 1 ? (float)(int)(u * 8) - 6 : u * 20 - 16;
        w[i] = isinf(x[i]) ? 0 : expf(x[i]);
    }
    if (n > 40) x[37] = NAN;
}

TEST(band_and_removal_match_plain_loops_and_both_versions_agree_to_the_bit) {
    kiln_rng r;
    kiln_rng_seed(&r, 31);
    int nmax = 30001;
    float *x = malloc(sizeof(float) * nmax), *w = malloc(sizeof(float) * nmax);
    float *x2 = malloc(sizeof(float) * nmax), *w2 = malloc(sizeof(float) * nmax);
    int32_t *out = malloc(sizeof(int32_t) * nmax), *out2 = malloc(sizeof(int32_t) * nmax);
    uint16_t *beyond = malloc(sizeof(uint16_t) * (nmax / 16 + 1));
    uint16_t *beyond2 = malloc(sizeof(uint16_t) * (nmax / 16 + 1));
    const float bands[][2] = {{1.0f, 1.5f}, {0.0f, 0.25f}, {2.0f, INFINITY}, {-1.0f, -1.0f}, {3.0f, 3.0f}};
    for (int s = 0; s < N_SIZES; s++)
        for (int b = 0; b < 5; b++)
            for (int all = 0; all < 2; all++) {
                int n = sizes[s];
                float center = -4.0f, near = bands[b][0], far = bands[b][1];
                make_band_logits(x, w, n, &r);
                double mass;
                int count, k = decode_band(x, w, n, center, near, far, all, out, &mass, &count, beyond), want = 0;
                double want_mass = 0;
                int want_count = 0;
                for (int i = 0; i < n; i++) {
                    float d = fabsf(center - x[i]);
                    if (d < near) want_mass += w[i], want_count++;
                    if ((all || d >= near) && d <= far && x[i] > -INFINITY) {
                        CHECKF(want < k && out[want] == i, "n %d band %d all %d: token %d missing", n, b, all, i);
                        want++;
                    }
                    CHECKF(!(beyond[i / 16] >> i % 16 & 1) == !(d > far), "n %d band %d: token %d marked wrongly", n, b,
                           i);
                }
                CHECK_EQ_INT(k, want);
                CHECK_EQ_INT(count, want_count);
                CHECKF(fabs(mass - want_mass) <= 1e-6 * want_mass, "n %d band %d: mass %.9g, expected %.9g", n, b, mass,
                       want_mass);
                memcpy(x2, x, sizeof(float) * n), memcpy(w2, w, sizeof(float) * n);
                decode_remove_marked(x2, w2, n, beyond);
                for (int i = 0; i < n; i++) {
                    int out_ = fabsf(center - x[i]) > far;
                    CHECKF(out_ ? x2[i] == -INFINITY && w2[i] == 0 : memcmp(&x2[i], &x[i], 4) == 0 && w2[i] == w[i],
                           "n %d band %d: token %d %s", n, b, i, out_ ? "kept" : "removed");
                }
                if (!decode_use_avx512()) continue;
                double mass2;
                int count2, k2 = decode_band_generic(x, w, n, center, near, far, all, out2, &mass2, &count2, beyond2);
                k = decode_band_avx512(x, w, n, center, near, far, all, out, &mass, &count, beyond);
                CHECK(k == k2 && count == count2 && mass == mass2);
                CHECK(memcmp(out, out2, sizeof(int32_t) * k) == 0);
                CHECK(memcmp(beyond, beyond2, sizeof(uint16_t) * ((n + 15) / 16)) == 0);
                memcpy(x2, x, sizeof(float) * n), memcpy(w2, w, sizeof(float) * n);
                decode_remove_marked_generic(x2, w2, n, beyond);
                decode_remove_marked_avx512(x, w, n, beyond);
                CHECK(memcmp(x, x2, sizeof(float) * n) == 0 && memcmp(w, w2, sizeof(float) * n) == 0);
            }
    free(x), free(w), free(x2), free(w2), free(out), free(out2), free(beyond), free(beyond2);
}

TEST(avx512_exponentials_and_sampled_histogram_agree_with_the_portable_code_to_the_bit) {
    if (!decode_use_avx512()) return; /* only the portable code runs here */
    kiln_rng r;
    kiln_rng_seed(&r, 37);
    float *x = malloc(sizeof(float) * 30001), *e = malloc(sizeof(float) * 30001), *e2 = malloc(sizeof(float) * 30001);
    static float mass[DECODE_BUCKETS], mass2[DECODE_BUCKETS];
    static int32_t count[DECODE_BUCKETS], count2[DECODE_BUCKETS];
    for (int s = 0; s < N_SIZES; s++) {
        int n = sizes[s];
        for (int i = 0; i < n; i++) x[i] = i % 5 == 1 ? -INFINITY : kiln_rng_f32(&r) * 200 - 190; /* under -87 too */
        if (n > 40) x[11] = NAN, x[12] = INFINITY;
        double dot, dot2, sum = decode_exp_dot_avx512(e, x, 0.5f, n, &dot);
        double sum2 = decode_exp_dot_generic(e2, x, 0.5f, n, &dot2);
#ifdef __FMA__ /* the portable code fuses its multiply-adds as the AVX-512 code does */
        CHECKF(memcmp(e, e2, sizeof(float) * n) == 0, "n %d", n); /* sums and dots NaN with the NaN: bits too */
        CHECKF(memcmp(&sum, &sum2, sizeof sum) == 0 && memcmp(&dot, &dot2, sizeof dot) == 0, "n %d", n);
        sum = decode_exp_avx512(e, x, 0.5f, n), sum2 = decode_exp_generic(e2, x, 0.5f, n);
        CHECK(memcmp(e, e2, sizeof(float) * n) == 0 && memcmp(&sum, &sum2, sizeof sum) == 0);
#else
        CHECKF(isnan(sum2) || fabs(sum - sum2) <= 1e-6 * sum2, "n %d", n);
#endif
        for (int i = 0; i < n; i++) x[i] = isnan(x[i]) ? x[i] : x[i] / 20, e[i] = isinf(x[i]) ? 0 : expf(x[i]);
        const float heavies[] = {0.0f, expf(-3.0f), INFINITY};
        for (int h = 0; h < 3; h++)
            for (int sample = 1; sample <= 16; sample *= 4) {
                memset(mass, 0, sizeof mass), memset(count, 0, sizeof count);
                memset(mass2, 0, sizeof mass2), memset(count2, 0, sizeof count2);
                decode_hist_sample_avx512(mass, count, x, e, 0.5f, n, sample, heavies[h]);
                decode_hist_sample_generic(mass2, count2, x, e, 0.5f, n, sample, heavies[h]);
                CHECKF(memcmp(mass, mass2, sizeof mass) == 0 && memcmp(count, count2, sizeof count) == 0,
                       "n %d heavy %g sample %d", n, heavies[h], sample);
            }
    }
    free(x), free(e), free(e2);
}

/* decode_hist_bounds on Zipf, flat and tied logits: fewer than the target's mass strictly inside NEAR of
 * the center, at least the target up to FAR, and no more than EST tokens (nor fewer than KEEP_MIN) up to
 * FAR. The center is the entropy's logit (typical-p) or, AT_TOP, the top logit (top-p, whose distance
 * |top - x| is top - x). */
static void check_hist_bounds_bracket_the_crossing(uint64_t seed, int at_top, int keep_min) {
    kiln_rng r;
    kiln_rng_seed(&r, seed);
    int n = 30001;
    float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n);
    static decode_hist h;
    for (int shape = 0; shape < 3; shape++) {
        for (int i = 0; i < n; i++) {
            float u = kiln_rng_f32(&r);
            x[i] = shape == 0 ? -1.2f * logf(1 + u * n) : shape == 1 ? u * 0.5f : (float)(int)(u * 30) / 8;
        }
        float max = -INFINITY;
        for (int i = 0; i < n; i++) max = fmaxf(max, x[i]);
        double total = decode_exp(w, x, max, n), dot = 0;
        float center = max;
        if (!at_top) {
            for (int i = 0; i < n; i++) dot += w[i] * (double)(x[i] - max);
            center = (float)(max + dot / total);
        }
        decode_hist_build(&h, x, w, max, n, 1);
        for (int t = 1; t <= 9; t += 4) {
            double target = total * t / 10;
            decode_band_bounds b = decode_hist_bounds(&h, max, center, target, 0, keep_min);
            double inside = 0, within = 0;
            int up_to_far = 0;
            for (int i = 0; i < n; i++) {
                float d = fabsf(center - x[i]);
                if (at_top) CHECK(d == max - x[i]);
                inside += d < b.near ? w[i] : 0;
                within += d <= b.far ? w[i] : 0;
                up_to_far += d <= b.far;
            }
            CHECKF(inside < target && within >= target, "shape %d target %d/10: %g below, %g within, of %g", shape, t,
                   inside, within, target);
            CHECKF(up_to_far >= keep_min && up_to_far <= b.est, "shape %d: %d tokens up to far, estimate %g", shape,
                   up_to_far, b.est);
        }
    }
    free(x), free(w);
}

TEST(histogram_bounds_bracket_the_crossing_of_a_cut_by_distance) { check_hist_bounds_bracket_the_crossing(41, 0, 1); }

TEST(histogram_bounds_with_the_center_at_the_top_bracket_the_crossing_of_top_p) {
    check_hist_bounds_bracket_the_crossing(43, 1, 7);
}

TEST(remove_below_matches_a_plain_loop_and_leaves_removed_tokens_alone) {
    kiln_rng r;
    kiln_rng_seed(&r, 47);
    int nmax = 30001;
    float *x = malloc(sizeof(float) * nmax), *w = malloc(sizeof(float) * nmax);
    float *x2 = malloc(sizeof(float) * nmax), *w2 = malloc(sizeof(float) * nmax);
    const float mins[] = {-20.0f, -3.0f, 1.0f, 10.0f};
    for (int s = 0; s < N_SIZES; s++)
        for (int m = 0; m < 4; m++)
            for (int weighted = 0; weighted < 2; weighted++) {
                int n = sizes[s];
                make_band_logits(x, w, n, &r);
                if (m == 0 && n > 300) x[299] = -25.0f; /* one token to remove in a group of none */
                for (int i = 0; i < n; i++) w[i] = isinf(x[i]) ? 0 : w[i];
                memcpy(x2, x, sizeof(float) * n), memcpy(w2, w, sizeof(float) * n);
                decode_remove_below(x2, weighted ? w2 : NULL, n, mins[m]);
                for (int i = 0; i < n; i++) {
                    int out = !(x[i] >= mins[m]);
                    CHECKF(out ? x2[i] == -INFINITY : memcmp(&x2[i], &x[i], 4) == 0, "n %d min %g: token %d", n,
                           mins[m], i);
                    CHECKF(w2[i] == (out && weighted ? 0 : w[i]), "n %d min %g: weight %d", n, mins[m], i);
                }
            }
    free(x), free(w), free(x2), free(w2);
}

TEST(dot_of_taken_weights_matches_exp_dot_and_its_avx512_version_the_portable_one_to_the_bit) {
    kiln_rng r;
    kiln_rng_seed(&r, 53);
    int nmax = 70001;
    float *x = malloc(sizeof(float) * nmax), *e = malloc(sizeof(float) * nmax);
    const int lens[] = {1, 15, 16, 17, 255, 256, 257, 4095, 4096, 4097, 8191, 70001};
    for (int s = 0; s < 12; s++) {
        int n = lens[s];
        for (int i = 0; i < n; i++) x[i] = i % 7 == 3 ? -INFINITY : kiln_rng_f32(&r) * 30 - 25;
        if (n > 40) x[21] = NAN;
        double dot, dot_of;
        decode_exp_dot(e, x, 0.5f, n, &dot);
        dot_of = decode_exp_dot_of(x, e, 0.5f, n);
        CHECKF(isnan(dot) || fabs(dot - dot_of) <= 1e-5 * fabs(dot), "n %d: %.9g, exp_dot %.9g", n, dot_of, dot);
        if (!decode_use_avx512()) continue;
        double a = decode_exp_dot_of_avx512(x, e, 0.5f, n), g = decode_exp_dot_of_generic(x, e, 0.5f, n);
        CHECKF(memcmp(&a, &g, sizeof a) == 0, "n %d: avx512 %.17g, generic %.17g", n, a, g);
        for (int i = 0; i < n; i++) x[i] = isnan(x[i]) ? 0 : x[i]; /* and without the NaN: the bits of a number */
        decode_exp(e, x, 0.5f, n);
        a = decode_exp_dot_of_avx512(x, e, 0.5f, n), g = decode_exp_dot_of_generic(x, e, 0.5f, n);
        CHECKF(memcmp(&a, &g, sizeof a) == 0, "n %d: avx512 %.17g, generic %.17g", n, a, g);
    }
    free(x), free(e);
}
