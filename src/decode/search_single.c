/* Greedy search and multinomial sampling: one token at a time from the processed distribution, the
 * llama2.c loop with a processor chain in it. num_return > 1 draws that many samples one after the
 * other; the prompt stays in the cache and only its logits are restored between them. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "decode/sample.h"
#include "decode/search.h"

static int one_sequence(decode_run *r, decode_chain *ch, int greedy, int seq, int32_t *toks) {
    decode_text text;
    run_text_init(r, &text, r->p->num_return == 1);
    int n = r->n_prompt, rc = 0;
    double logprob = 0;
    kiln_stop_reason why = r->at_max;
    for (int step = 0;; step++) {
        decode_history h = run_history(r, toks, n);
        decode_cands c;
        decode_chain_apply(ch, &h, kiln_logits(r->c), &c);
        double lp = 0;
        int t = greedy ? cands_argmax(&c) : decode_draw(&c, run_uniform(r, seq, step), &lp);
        if (t < 0) {
            rc = kiln_fail("every token was removed by the processors after %d generated tokens", n - r->n_prompt);
            break;
        }
        logprob += greedy ? decode_logprob(&c, t) : lp;
        if (run_is_stop_token(r, t)) {
            why = KILN_STOP_TOKEN;
            break;
        }
        size_t len;
        const char *piece = run_piece(r, toks[n - 1], t, &len);
        toks[n++] = t;
        if (text_append(&text, piece, len)) {
            why = text.stopped ? KILN_STOP_STRING : KILN_STOP_CALLBACK;
            break;
        }
        if (n - r->n_prompt == r->max_new) break;
        if (run_timed_out(r)) {
            why = KILN_STOP_TIME;
            break;
        }
        if (kiln_eval(r->c, &t, 1, NULL) < 0) {
            rc = -1;
            break;
        }
        r->out->n_forward++;
    }
    if (rc == 0) {
        text_finish(&text);
        run_add(r, toks + r->n_prompt, n - r->n_prompt, logprob, logprob, why, &text);
    }
    text_free(&text);
    return rc;
}

int search_single(decode_run *r) {
    int greedy = r->p->search == KILN_SEARCH_GREEDY, V = r->n_vocab, pos0 = kiln_ctx_pos(r->c);
    decode_chain ch;
    decode_chain_init(&ch, r->p, V, !greedy);
    int32_t *toks = kiln_xmalloc(sizeof(int32_t) * (r->n_prompt + r->max_new));
    memcpy(toks, r->prompt, sizeof(int32_t) * r->n_prompt);
    float *first = NULL;
    if (r->p->num_return > 1) {
        first = kiln_xmalloc(sizeof(float) * V);
        memcpy(first, kiln_logits(r->c), sizeof(float) * V);
    }
    int rc = 0;
    for (int s = 0; s < r->p->num_return && rc == 0; s++) {
        if (s > 0) {
            kiln_ctx_truncate(r->c, pos0);
            memcpy(kiln_logits(r->c), first, sizeof(float) * V);
        }
        rc = one_sequence(r, &ch, greedy, s, toks);
    }
    free(first);
    free(toks);
    decode_chain_free(&ch);
    return rc;
}
