/* Top-p, nucleus (HF TopPLogitsWarper): keeps the smallest set of most probable tokens whose
 * probability reaches top_p, the token that crosses it included, and at least min_tokens_to_keep.
 * Ties rank by lower token id. No sort of the vocabulary: when the tokens within a few nats of the most
 * probable one already reach top_p (the usual case with a trained model) a mass selection runs over
 * those few hundred or thousand; otherwise (a flat distribution) cands_cut bounds the crossing with a
 * histogram of the logits and selects token by token only around it. */
#include <math.h>

#include "base/error.h"
#include "decode/processor.h"

static int enabled(const kiln_gen_params *p) { return p->top_p < 1.0f; }

static int check(const kiln_gen_params *p, int n_vocab) {
    if (!(p->top_p > 0 && p->top_p <= 1)) return kiln_fail("top_p %g must be in (0, 1] (1 turns it off)", p->top_p);
    return 0;
}

/* Items of the dense candidates with logit >= MIN, if they are few (an eighth of the vocabulary at most:
 * a selection over more costs more than the cut) and reach TARGET and KEEP_MIN; 0 when they do not, -1
 * when they are too many. */
static int near_items(decode_cands *c, float min, double target, int keep_min) {
    int32_t *sel = c->s->ids;
    int m = cands_collect_ge(c, min, c->n_vocab / 8, sel);
    if (m < 0 || m == c->n) return -1;
    if (m < keep_min) return 0;
    double mass = decode_sum_ids(c->s->prob, sel, m);
    if (mass < target) return 0;
    for (int i = 0; i < m; i++) c->s->items[i] = (decode_item){c->logits[sel[i]], c->s->prob[sel[i]], sel[i]};
    return m;
}

/* Selection over the N items in c->s->items; the kept ids become the candidates. */
static void keep_selected(decode_cands *c, int n, double target, int keep_min) {
    decode_item *it = c->s->items;
    int m = cands_select(it, n, target, keep_min, 0);
    for (int i = 0; i < m; i++) c->s->ids[i] = it[i].id;
    cands_keep(c, m);
}

static void apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    float max = cands_max(c);
    if (max == -INFINITY) return;
    double target = p->top_p * cands_exp(c, max) * (1 - DECODE_MASS_SLACK);
    int keep_min = p->min_tokens_to_keep;
    if (c->n < c->n_vocab) return keep_selected(c, cands_items(c), target, keep_min);
    /* within 6 nats: p > p_max / 400; within 12: p > p_max / 1.6e5. Steps of 3 nats: a step too far
     * collects a few times too many tokens, a step too short costs one vectorised pass. */
    for (float gap = 6; gap <= 12; gap += 3) {
        int n = near_items(c, max - gap, target, keep_min);
        if (n > 0) return keep_selected(c, n, target, keep_min);
        if (n < 0) break;
    }
    cands_cut(c, max, 0, max, target, keep_min);
}

const decode_processor proc_top_p = {"top_p", 1, enabled, check, apply, 1};
