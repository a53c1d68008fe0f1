/* Acceptance rules and prompt-lookup drafting for speculative decoding. */
#include <string.h>

#include "decode/speculative.h"

int32_t spec_pick(const float *p, int n_vocab, double u) {
    double cum = 0;
    int last = 0;
    for (int i = 0; i < n_vocab; i++) {
        if (p[i] <= 0) continue;
        cum += p[i];
        last = i;
        if (cum > u) return i;
    }
    return last;
}

/* Leviathan et al. 2023 / Chen et al. 2023: accepting with probability min(1, p(d)/q(d)) and otherwise
 * drawing from (p - q)+ makes every emitted token distributed as p, whatever q is. */
static int rejection_check(const float *p, const float *q, int n_vocab, int32_t d, kiln_rng *r, int32_t *replacement) {
    double qd = q ? q[d] : 1.0;
    if (kiln_rng_f64(r) * qd < p[d]) return 1;
    double total = 0;
    for (int i = 0; i < n_vocab; i++) {
        double res = p[i] - (q ? q[i] : i == d);
        total += res > 0 ? res : 0;
    }
    if (total <= 0) { /* p == q up to rounding: the rejection was rounding too */
        *replacement = spec_pick(p, n_vocab, kiln_rng_f64(r));
        return 0;
    }
    double target = kiln_rng_f64(r) * total, cum = 0;
    int32_t last = d;
    for (int i = 0; i < n_vocab; i++) {
        double res = p[i] - (q ? q[i] : i == d);
        if (res <= 0) continue;
        cum += res;
        last = i;
        if (cum > target) break;
    }
    *replacement = last;
    return 0;
}

static int exact_check(const float *p, const float *q, int n_vocab, int32_t d, kiln_rng *r, int32_t *replacement) {
    int32_t t = spec_pick(p, n_vocab, kiln_rng_f64(r));
    if (t == d) return 1;
    *replacement = t;
    return 0;
}

const spec_verifier spec_rejection = {"rejection", rejection_check};
const spec_verifier spec_exact = {"exact", exact_check};

const spec_verifier *spec_verifier_for(kiln_spec_mode mode) {
    /* A prompt-lookup draft is deterministic (q is one-hot): both rules then accept with p(d) and
     * replace from p without d, so the cheaper exact check serves. */
    return mode == KILN_SPEC_REJECTION ? &spec_rejection : &spec_exact;
}

int spec_lookup(const int32_t *toks, int n, int ngram_max, int k, int32_t *out) {
    for (int g = ngram_max < n ? ngram_max : n - 1; g >= 1; g--) {
        const int32_t *tail = toks + n - g;
        for (int i = n - g - 1; i >= 0; i--) /* latest first; the tail itself excluded */
            if (memcmp(toks + i, tail, sizeof(int32_t) * g) == 0) {
                int avail = n - (i + g), m = avail < k ? avail : k;
                memcpy(out, toks + i + g, sizeof(int32_t) * m);
                return m;
            }
    }
    return 0;
}
