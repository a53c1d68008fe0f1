/* Sampling of the next token: greedy, or temperature then top-k then top-p (nucleus) then a draw.
 * Top-p keeps the smallest set of most probable tokens whose probability reaches top_p, including the
 * token that crosses it. Draws come from a counter-based generator, so a seed gives the same tokens
 * whatever the thread count. */
#include <math.h>
#include <stdlib.h>

#include "base/error.h"
#include "base/rng.h"
#include "kiln.h"

int kiln_sampling_check(const kiln_sampling *s) {
    if (!(s->temperature >= 0) || !isfinite(s->temperature))
        return kiln_fail("temperature %g must be >= 0 (0 is greedy)", s->temperature);
    if (s->top_k < 0) return kiln_fail("top-k %d must be >= 1 (0 turns it off)", s->top_k);
    if (!(s->top_p > 0 && s->top_p <= 1)) return kiln_fail("top-p %g must be in (0, 1]", s->top_p);
    return 0;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

typedef struct {
    float p;
    int id;
} prob_index;

static int by_prob_desc(const void *a, const void *b) {
    const prob_index *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id; /* ties: lower id first, so the order is total */
}

int kiln_sample(float *logits, int n, const kiln_sampling *s, uint64_t *state) {
    if (s->temperature == 0 || s->top_k == 1) return argmax(logits, n);
    float max = logits[argmax(logits, n)], sum = 0;
    prob_index *c = malloc(sizeof *c * n);
    for (int i = 0; i < n; i++) {
        c[i].p = expf((logits[i] - max) / s->temperature);
        c[i].id = i;
        sum += c[i].p;
    }
    int keep = n;
    if ((s->top_k > 0 && s->top_k < n) || s->top_p < 1) {
        qsort(c, n, sizeof *c, by_prob_desc);
        if (s->top_k > 0 && s->top_k < n) keep = s->top_k;
        if (s->top_p < 1) {
            float kept = 0;
            for (int i = 0; i < keep; i++) kept += c[i].p;
            float cum = 0;
            for (int i = 0; i < keep; i++) {
                cum += c[i].p;
                if (cum >= s->top_p * kept) {
                    keep = i + 1;
                    break;
                }
            }
        }
        sum = 0;
        for (int i = 0; i < keep; i++) sum += c[i].p;
    }
    kiln_rng r = {*state};
    float u = kiln_rng_f32(&r) * sum, cum = 0;
    *state = r.state;
    int pick = c[keep - 1].id;
    for (int i = 0; i < keep; i++) {
        cum += c[i].p;
        if (u < cum) {
            pick = c[i].id;
            break;
        }
    }
    free(c);
    return pick;
}
