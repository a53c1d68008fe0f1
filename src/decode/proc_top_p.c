/* Top-p, nucleus (HF TopPLogitsWarper): keeps the smallest set of most probable tokens whose
 * probability reaches top_p, the token that crosses it included, and at least min_tokens_to_keep.
 * Ties rank by lower token id. No sort of the vocabulary: when the tokens within a few nats of the most
 * probable one already reach top_p (the usual case with a trained model) a mass selection runs over
 * those few hundred; otherwise (a flat distribution) the mass per logit bucket finds the bucket where
 * the sum crosses top_p, and only that bucket is selected token by token. */
#include <math.h>

#include "base/error.h"
#include "decode/processor.h"

static int enabled(const kiln_gen_params *p) { return p->top_p < 1.0f; }

static int check(const kiln_gen_params *p, int n_vocab) {
    if (!(p->top_p > 0 && p->top_p <= 1)) return kiln_fail("top_p %g must be in (0, 1] (1 turns it off)", p->top_p);
    return 0;
}

/* Items of the candidates with logit >= MIN, if they are few (an eighth of the vocabulary at most: a
 * selection over more costs more than the bucketed cut) and reach TARGET and KEEP_MIN; 0 when they do
 * not, -1 when they are too many. */
static int near_items(decode_cands *c, float min, double target, int keep_min) {
    int32_t *sel = c->s->ids;
    int m = decode_collect_ge(c->logits, c->n < c->n_vocab ? c->ids : NULL, c->n, min, sel);
    if (m >= c->n || m > c->n_vocab / 8) return -1;
    if (m < keep_min) return 0;
    double mass = 0;
    for (int i = 0; i < m; i++) mass += c->s->prob[sel[i]];
    if (mass < target) return 0;
    for (int i = 0; i < m; i++) c->s->items[i] = (decode_item){c->logits[sel[i]], c->s->prob[sel[i]], sel[i]};
    return m;
}

/* Mass selection over the N items, at least KEEP_MIN kept; their ids go to c->s->ids. */
static int select_items(decode_cands *c, int n, double target, int keep_min) {
    decode_item *it = c->s->items;
    int m = decode_select_mass(it, n, target);
    if (m < keep_min) {
        m = keep_min < n ? keep_min : n;
        decode_partition(it, n, m);
    }
    for (int i = 0; i < m; i++) c->s->ids[i] = it[i].id;
    return m;
}

/* The bucketed cut over dense candidates, ranked by logit - max. */
static int cut_below_max(decode_cands *c, float max, double target, int keep_min) {
    float *key = c->s->key;
    const float *x = c->logits;
#pragma omp simd
    for (int i = 0; i < c->n_vocab; i++) key[i] = x[i] - max;
    return cands_cut(c, key, target, keep_min, 0);
}

static void apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    float max = cands_max(c);
    if (max == -INFINITY) return;
    double target = p->top_p * cands_exp(c, max) * (1 - DECODE_MASS_SLACK);
    int keep_min = p->min_tokens_to_keep, n = 0;
    /* within 7 nats: p > p_max / 1100; within 14: p > p_max / 1.2e6 */
    for (float gap = 7; !n && gap <= 14; gap += 7) n = near_items(c, max - gap, target, keep_min);
    if (n > 0) cands_keep(c, select_items(c, n, target, keep_min));
    else if (c->n < c->n_vocab || !cut_below_max(c, max, target, keep_min))
        cands_keep(c, select_items(c, cands_items(c), target, keep_min));
}

const decode_processor proc_top_p = {"top_p", 1, enabled, check, apply};
