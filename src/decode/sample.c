/* Drawing tokens from processed candidates, and the one-call sampler of include/kiln.h (temperature,
 * top-k, top-p) on the same processors. Draws take their uniform from the caller, who derives it from
 * a counter-based generator, so that a seed gives the same tokens whatever the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"
#include "decode/sample.h"

enum { DRAW_BLOCK = 64 };

/* The first of N entries of P at which the running sum passes TARGET, in blocks so that the search is
 * a vectorised pass plus one short scan; the last non-zero entry when rounding keeps it below. */
static int dense_pick(const float *p, int n, double target) {
    double cum = 0;
    int i = 0;
    for (; i + DRAW_BLOCK <= n; i += DRAW_BLOCK) {
        double b = 0;
#pragma omp simd reduction(+ : b)
        for (int j = 0; j < DRAW_BLOCK; j++) b += p[i + j];
        if (cum + b > target) break;
        cum += b;
    }
    for (; i < n; i++) {
        cum += p[i];
        if (cum > target && p[i] > 0) return i;
    }
    for (i = n - 1; i > 0 && p[i] == 0; i--) {}
    return i;
}

/* The shift for the draw's weights: the kept one when they sum to enough that none of the candidates'
 * weights can have lost precision to underflow (the largest is at least total / n_vocab), saving a pass
 * for the largest logit; else that logit. */
static float draw_shift(const decode_cands *c) {
    return c->weighted && c->total >= 1e-6 ? c->shift : cands_max(c);
}

int decode_draw(decode_cands *c, double u, double *logprob) {
    float max = draw_shift(c);
    if (max == -INFINITY) return -1;
    double total = cands_exp(c, max), target = u * total;
    const float *p = c->s->prob;
    int pick = -1;
    if (c->n < c->n_vocab) {
        double cum = 0;
        for (int i = 0; i < c->n && pick < 0; i++) {
            int32_t id = c->ids[i];
            if (!(c->logits[id] > -INFINITY)) continue;
            cum += p[id];
            if (cum > target && p[id] > 0) pick = id;
        }
        for (int i = c->n - 1; pick < 0; i--)
            if (c->logits[c->ids[i]] > -INFINITY && p[c->ids[i]] > 0) pick = c->ids[i];
    } else {
        pick = dense_pick(p, c->n_vocab, target);
    }
    *logprob = (c->logits[pick] - max) - log(total);
    return pick;
}

double decode_logprob(decode_cands *c, int t) {
    float max = cands_max(c);
    if (max == -INFINITY || !(c->logits[t] > -INFINITY)) return -INFINITY;
    if (c->n < c->n_vocab) {
        int in = 0;
        for (int i = 0; i < c->n && !in; i++) in = c->ids[i] == t;
        if (!in) return -INFINITY;
    }
    return (c->logits[t] - max) - log(cands_exp(c, max));
}

int decode_probs(decode_cands *c, int greedy, float *p) {
    int best = cands_argmax(c);
    memset(p, 0, sizeof(float) * c->n_vocab);
    if (best < 0) return -1;
    if (greedy) {
        p[best] = 1;
        return best;
    }
    float max = c->logits[best];
    double inv = 1 / cands_exp(c, max);
    const float *e = c->s->prob;
    if (c->n < c->n_vocab) {
        for (int i = 0; i < c->n; i++)
            if (c->logits[c->ids[i]] > -INFINITY) p[c->ids[i]] = (float)(e[c->ids[i]] * inv);
    } else {
        for (int i = 0; i < c->n_vocab; i++) p[i] = (float)(e[i] * inv);
    }
    return best;
}

int kiln_sampling_check(const kiln_sampling *s) {
    if (!(s->temperature >= 0) || !isfinite(s->temperature))
        return kiln_fail("temperature %g must be >= 0 (0 is greedy)", s->temperature);
    if (s->top_k < 0) return kiln_fail("top-k %d must be >= 1 (0 turns it off)", s->top_k);
    if (!(s->top_p > 0 && s->top_p <= 1)) return kiln_fail("top-p %g must be in (0, 1]", s->top_p);
    return 0;
}

int kiln_sample(float *logits, int n, const kiln_sampling *s, uint64_t *state) {
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.temperature = s->temperature, p.top_k = s->top_k, p.top_p = s->top_p;
    decode_chain ch;
    decode_chain_init(&ch, &p, n, s->temperature > 0 && s->top_k != 1);
    decode_cands c;
    decode_chain_apply(&ch, &(decode_history){0}, logits, &c);
    int pick;
    if (!(s->temperature > 0) || s->top_k == 1) {
        pick = cands_argmax(&c);
    } else {
        kiln_rng r = {*state};
        double lp;
        pick = decode_draw(&c, kiln_rng_f64(&r), &lp);
        *state = r.state;
    }
    decode_chain_free(&ch);
    return pick < 0 ? 0 : pick;
}
