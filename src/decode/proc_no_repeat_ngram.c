/* No-repeat n-gram (HF NoRepeatNGramLogitsProcessor): bans every token that would complete an n-gram
 * already present in the sequence, the prompt included. */
#include <math.h>
#include <string.h>

#include "base/error.h"
#include "decode/processor.h"

static int enabled(const kiln_gen_params *p) { return p->no_repeat_ngram > 0; }

static int check(const kiln_gen_params *p, int n_vocab) {
    if (p->no_repeat_ngram < 0) return kiln_fail("no_repeat_ngram %d must be >= 0 (0 turns it off)", p->no_repeat_ngram);
    return 0;
}

static void apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    int n = p->no_repeat_ngram, len = h->n_tokens;
    if (len + 1 < n) return;
    const int32_t *t = h->tokens, *last = t + len - (n - 1); /* the n-1 tokens a new n-gram would start with */
    for (int i = 0; i + n <= len; i++)
        if (memcmp(t + i, last, sizeof(int32_t) * (n - 1)) == 0) c->logits[t[i + n - 1]] = -INFINITY;
}

const decode_processor proc_no_repeat_ngram = {"no_repeat_ngram", 0, enabled, check, apply, 0};
