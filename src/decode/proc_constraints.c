/* Hard constraints on single tokens: logit bias (OpenAI's logit_bias: added to the logit, -inf bans),
 * banned tokens, and minimum new tokens (HF MinNewTokensLengthLogitsProcessor: the stop tokens are
 * masked until that many tokens are generated). */
#include <math.h>

#include "base/error.h"
#include "decode/processor.h"

static int token_check(const char *what, int32_t t, int n_vocab) {
    if (t < 0 || t >= n_vocab) return kiln_fail("%s: token %d is outside the vocabulary (0 to %d)", what, t, n_vocab - 1);
    return 0;
}

static int bias_enabled(const kiln_gen_params *p) { return p->n_logit_bias > 0; }

static int bias_check(const kiln_gen_params *p, int n_vocab) {
    if (p->n_logit_bias < 0 || (p->n_logit_bias > 0 && !p->logit_bias))
        return kiln_fail("logit_bias: %d entries but no array", p->n_logit_bias);
    for (int i = 0; i < p->n_logit_bias; i++) {
        const kiln_logit_bias *b = &p->logit_bias[i];
        if (token_check("logit_bias", b->token, n_vocab) < 0) return -1;
        if (isnan(b->bias) || b->bias == INFINITY)
            return kiln_fail("logit_bias: bias %g of token %d must be a number or -inf", b->bias, b->token);
    }
    return 0;
}

static void bias_apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    for (int i = 0; i < p->n_logit_bias; i++) c->logits[p->logit_bias[i].token] += p->logit_bias[i].bias;
}

static int banned_enabled(const kiln_gen_params *p) { return p->n_banned_tokens > 0; }

static int banned_check(const kiln_gen_params *p, int n_vocab) {
    if (p->n_banned_tokens < 0 || (p->n_banned_tokens > 0 && !p->banned_tokens))
        return kiln_fail("banned tokens: %d entries but no array", p->n_banned_tokens);
    for (int i = 0; i < p->n_banned_tokens; i++)
        if (token_check("banned tokens", p->banned_tokens[i], n_vocab) < 0) return -1;
    return 0;
}

static void banned_apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    for (int i = 0; i < p->n_banned_tokens; i++) c->logits[p->banned_tokens[i]] = -INFINITY;
}

static int min_new_enabled(const kiln_gen_params *p) { return p->min_new_tokens > 0; }

static int min_new_check(const kiln_gen_params *p, int n_vocab) {
    if (p->min_new_tokens < 0) return kiln_fail("min_new_tokens %d must be >= 0", p->min_new_tokens);
    return 0;
}

static void min_new_apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    if (h->n_tokens - h->n_prompt >= p->min_new_tokens) return;
    for (int i = 0; i < h->n_stop_tokens; i++) c->logits[h->stop_tokens[i]] = -INFINITY;
}

const decode_processor proc_logit_bias = {"logit_bias", 0, bias_enabled, bias_check, bias_apply, 0};
const decode_processor proc_banned = {"banned", 0, banned_enabled, banned_check, banned_apply, 0};
const decode_processor proc_min_new_tokens = {"min_new_tokens", 0, min_new_enabled, min_new_check, min_new_apply, 0};
