/* Min-p (HF MinPLogitsWarper): drops tokens less probable than min_p times the most probable one,
 * keeping at least min_tokens_to_keep. In log space, p_i < min_p * p_max is
 * logit_i < max_logit + log(min_p): comparison passes (a count, then the removal or a collection of the
 * kept ones), no exponentials. */
#include <math.h>

#include "base/error.h"
#include "decode/processor.h"

static int enabled(const kiln_gen_params *p) { return p->min_p > 0; }

static int check(const kiln_gen_params *p, int n_vocab) {
    if (!(p->min_p >= 0 && p->min_p <= 1)) return kiln_fail("min_p %g must be in [0, 1] (0 turns it off)", p->min_p);
    return 0;
}

static void apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    float max = cands_max(c);
    if (max == -INFINITY) return;
    const int32_t *ids = c->n < c->n_vocab ? c->ids : NULL;
    float min = max + logf(p->min_p), *x = c->logits;
    /* counted before collected when most of the vocabulary looks to stay: collecting it is what costs */
    int counted = !ids && cands_many_ge(c, min, c->n_vocab / 4);
    int n = counted ? decode_count_ge(x, c->n, min, c->n) : decode_collect_ge(x, ids, c->n, min, c->s->ids);
    if (n >= p->min_tokens_to_keep && !ids && n > c->n_vocab / 4) { /* mark the rest, stay dense */
        decode_remove_below(x, c->weighted ? c->s->prob : NULL, c->n_vocab, min);
        if (c->weighted) c->total = -1;
        return;
    }
    if (counted) decode_collect_ge(x, ids, c->n, min, c->s->ids);
    if (n < p->min_tokens_to_keep) cands_keep(c, decode_top(x, ids, c->n, p->min_tokens_to_keep, c->s->ids));
    else cands_keep(c, n);
}

const decode_processor proc_min_p = {"min_p", 1, enabled, check, apply, 1};
