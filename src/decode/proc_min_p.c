/* Min-p (HF MinPLogitsWarper): drops tokens less probable than min_p times the most probable one,
 * keeping at least min_tokens_to_keep. In log space, p_i < min_p * p_max is
 * logit_i < max_logit + log(min_p): one comparison pass, no exponentials. */
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
    int n = decode_collect_ge(x, ids, c->n, min, c->s->ids);
    if (n < p->min_tokens_to_keep) {
        cands_keep(c, decode_top(x, ids, c->n, p->min_tokens_to_keep, c->s->ids));
    } else if (!ids && n > c->n_vocab / 4) { /* most of the vocabulary stays: mark the rest, stay dense */
        float *w = c->s->prob;
        if (c->weighted) {
#pragma omp simd
            for (int i = 0; i < c->n_vocab; i++) w[i] = x[i] >= min ? w[i] : 0.0f;
            c->total = -1;
        }
#pragma omp simd
        for (int i = 0; i < c->n_vocab; i++) x[i] = x[i] >= min ? x[i] : -INFINITY;
    } else {
        cands_keep(c, n);
    }
}

const decode_processor proc_min_p = {"min_p", 1, enabled, check, apply, 1};
