/* Speculative decoding: a drafter proposes tokens, the target checks them all in one batched forward
 * pass, and an acceptance rule decides how many to keep. The rule is a small interface so that the
 * tests can run the same loop with a deliberately wrong one. */
#ifndef KILN_DECODE_SPECULATIVE_H
#define KILN_DECODE_SPECULATIVE_H

#include <stdint.h>

#include "base/rng.h"
#include "decode/search.h"

struct spec_verifier {
    const char *name;
    /* Decides drafted token D against the target's distribution P and the draft's Q (N_VOCAB
     * probabilities each; Q is NULL when the draft was deterministic, all its mass on D). Returns 1 to
     * accept D, or 0 after drawing its replacement with R into *REPLACEMENT. */
    int (*check)(const float *p, const float *q, int n_vocab, int32_t d, kiln_rng *r, int32_t *replacement);
};

/* min(1, p/q) acceptance, replacement from max(0, p - q) renormalised: exactly the target's law. */
extern const spec_verifier spec_rejection;
/* Draw from p, accept when it equals the draft (HF's assisted decoding): exact too, accepts less. */
extern const spec_verifier spec_exact;
const spec_verifier *spec_verifier_for(kiln_spec_mode mode);

/* The token at which the running sum of the N_VOCAB probabilities P passes U (in [0, 1)); the last
 * token with mass when rounding keeps the sum below. */
int32_t spec_pick(const float *p, int n_vocab, double u);

/* Prompt lookup: the tokens (at most K) that followed the latest earlier occurrence of the last n
 * tokens of TOKS[0..N), trying n = NGRAM_MAX down to 1. Returns how many were written to OUT. */
int spec_lookup(const int32_t *toks, int n, int ngram_max, int k, int32_t *out);

#endif
