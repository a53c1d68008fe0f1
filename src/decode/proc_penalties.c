/* Penalties on tokens already seen. Repetition (HF RepetitionPenaltyLogitsProcessor, CTRL): each
 * distinct token of the prompt and output, once: a positive logit is divided by the penalty, a negative
 * one multiplied. Presence and frequency (OpenAI): over the generated tokens only,
 * logit -= presence * [count > 0] + frequency * count. */
#include <math.h>

#include "base/error.h"
#include "decode/processor.h"

static int repetition_enabled(const kiln_gen_params *p) { return p->repetition_penalty != 1.0f; }

static int repetition_check(const kiln_gen_params *p, int n_vocab) {
    if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty))
        return kiln_fail("repetition_penalty %g must be > 0 (1 turns it off)", p->repetition_penalty);
    return 0;
}

static void repetition_apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    uint8_t *seen = c->s->mark;
    float pen = p->repetition_penalty;
    for (int i = 0; i < h->n_tokens; i++) {
        int32_t t = h->tokens[i];
        if (seen[t]) continue;
        seen[t] = 1;
        float l = c->logits[t];
        c->logits[t] = l < 0 ? l * pen : l / pen;
    }
    for (int i = 0; i < h->n_tokens; i++) seen[h->tokens[i]] = 0;
}

static int openai_check(float v, const char *name) {
    if (!(v >= -2 && v <= 2)) return kiln_fail("%s %g must be in [-2, 2] (0 turns it off)", name, v);
    return 0;
}

static int presence_enabled(const kiln_gen_params *p) { return p->presence_penalty != 0; }
static int presence_check(const kiln_gen_params *p, int n_vocab) {
    return openai_check(p->presence_penalty, "presence_penalty");
}

static void presence_apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    uint8_t *seen = c->s->mark;
    for (int i = h->n_prompt; i < h->n_tokens; i++) {
        int32_t t = h->tokens[i];
        if (seen[t]) continue;
        seen[t] = 1;
        c->logits[t] -= p->presence_penalty;
    }
    for (int i = h->n_prompt; i < h->n_tokens; i++) seen[h->tokens[i]] = 0;
}

static int frequency_enabled(const kiln_gen_params *p) { return p->frequency_penalty != 0; }
static int frequency_check(const kiln_gen_params *p, int n_vocab) {
    return openai_check(p->frequency_penalty, "frequency_penalty");
}

static void frequency_apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    int32_t *count = c->s->count;
    for (int i = h->n_prompt; i < h->n_tokens; i++) count[h->tokens[i]]++;
    for (int i = h->n_prompt; i < h->n_tokens; i++) {
        int32_t t = h->tokens[i];
        c->logits[t] -= p->frequency_penalty * count[t];
        count[t] = 0; /* also marks it done */
    }
}

const decode_processor proc_repetition_penalty = {"repetition_penalty", 0, repetition_enabled, repetition_check,
                                                  repetition_apply, 0};
const decode_processor proc_presence_penalty = {"presence_penalty", 0, presence_enabled, presence_check,
                                                presence_apply, 0};
const decode_processor proc_frequency_penalty = {"frequency_penalty", 0, frequency_enabled, frequency_check,
                                                 frequency_apply, 0};
