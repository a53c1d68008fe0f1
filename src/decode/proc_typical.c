/* Locally typical sampling (HF TypicalLogitsWarper, Meister et al. 2022): ranks tokens by how close
 * their surprisal s = -log p is to the entropy H of the distribution, and keeps the smallest such prefix
 * whose probability reaches typical_p, the crossing token and every token tied with it included, and
 * at least min_tokens_to_keep.
 *
 * The selection first runs over the tokens within GAP nats of the most probable one. Every other token
 * has s > s_min + GAP, so it ranks after any token closer to H than s_min + GAP - H: when the crossing
 * found among the near tokens is closer than that, it is the crossing of the whole vocabulary. Otherwise
 * cands_cut, by distance from the center c = s_shift - H (|s - H| = |c - logit|: the typical set is the
 * logits nearest a constant), bounds the crossing with a histogram of the logits, sums the weight inside
 * the bounds and selects among the sliver between them, token by token, in three passes over the
 * vocabulary (histogram, band, removal) on top of the max and the exponentials. */
#include <math.h>

#include "base/error.h"
#include "decode/processor.h"

#define GAP 14.0f

static int enabled(const kiln_gen_params *p) { return p->typical_p < 1.0f; }

static int check(const kiln_gen_params *p, int n_vocab) {
    if (!(p->typical_p > 0 && p->typical_p <= 1))
        return kiln_fail("typical_p %g must be in (0, 1] (1 turns it off)", p->typical_p);
    return 0;
}

/* sum e (l - max) over the weighted candidates, e = exp(l - max) */
static double weighted_logits(const decode_cands *c, float max) {
    const float *x = c->logits, *e = c->s->prob;
    double dot = 0;
    if (c->n < c->n_vocab) {
        for (int i = 0; i < c->n; i++)
            if (x[c->ids[i]] > -INFINITY) dot += e[c->ids[i]] * (x[c->ids[i]] - max);
        return dot;
    }
    return decode_exp_dot_of(x, e, max, c->n_vocab);
}

/* H = -sum p log p = log S - sum e (l - max) / S over the candidates, S = sum e; sets *TOTAL to S. When
 * the weights are still to be taken over the whole vocabulary, one pass takes both. */
static double entropy(decode_cands *c, float max, double *total) {
    double dot;
    if (c->n == c->n_vocab && !(c->weighted && c->shift == max)) {
        c->total = decode_exp_dot(c->s->prob, c->logits, max, c->n_vocab, &dot);
        c->weighted = 1, c->shift = max;
        *total = c->total;
    } else {
        *total = cands_exp(c, max);
        dot = weighted_logits(c, max);
    }
    return log(*total) - dot / *total;
}

/* Selects among the N items (key = logit on entry) and writes the kept ids to c->s->ids; returns how
 * many and sets *FARTHEST to the largest |s - H| kept. */
static int select_typical(decode_cands *c, int n, double target, double h, double s_shift, int keep_min,
                          double *farthest) {
    decode_item *it = c->s->items;
    for (int i = 0; i < n; i++) it[i].key = (float)-fabs(s_shift - it[i].key - h); /* s = s_shift - logit */
    int m = cands_select(it, n, target, keep_min, 1);
    *farthest = 0;
    for (int i = 0; i < m; i++) {
        c->s->ids[i] = it[i].id;
        *farthest = fmax(*farthest, -it[i].key);
    }
    return m;
}

static void apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    float max = cands_max(c);
    if (max == -INFINITY) return;
    double total, ent = entropy(c, max, &total), s_shift = max + log(total);
    double target = p->typical_p * total * (1 - DECODE_MASS_SLACK), farthest;
    int keep_min = p->min_tokens_to_keep;
    int32_t *near = c->s->ids;
    int n = -1, cap = c->n_vocab / 32;
    if (c->n == c->n_vocab) n = cands_collect_ge(c, max - GAP, cap, near);
    if (n >= 0 && n < c->n && n >= keep_min) { /* few: else the cut costs less */
        double mass = decode_sum_ids(c->s->prob, near, n);
        if (mass >= target) {
            for (int i = 0; i < n; i++) c->s->items[i] = (decode_item){c->logits[near[i]], c->s->prob[near[i]], near[i]};
            int m = select_typical(c, n, target, ent, s_shift, keep_min, &farthest);
            if (farthest < s_shift - max + GAP - ent) { /* s_min = s_shift - max */
                cands_keep(c, m);
                return;
            }
        }
    }
    if (c->n == c->n_vocab) return cands_cut(c, max, 1, (float)(s_shift - ent), target, keep_min);
    cands_keep(c, select_typical(c, cands_items(c), target, ent, s_shift, keep_min, &farthest));
}

const decode_processor proc_typical_p = {"typical_p", 1, enabled, check, apply, 1};
