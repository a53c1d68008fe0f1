/* Speculative decoding (Leviathan et al. 2023, Chen et al. 2023). Each round a drafter proposes up to
 * K tokens (a small model, or prompt lookup), the target runs [last token, drafts] in one batched
 * forward pass, and the acceptance rule keeps a prefix of the drafts plus one token of the target's
 * own: a replacement for the first rejected draft, or a bonus token when all are accepted. Both
 * contexts then roll back to the kept tokens with kiln_ctx_truncate.
 *
 * Neither context has evaluated the last kept token at the start of a round: the target evaluates it
 * at the head of its batch, the draft from its queue of pending tokens. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "decode/sample.h"
#include "decode/speculative.h"

enum { MAX_DRAFT = 64 };

typedef struct {
    decode_run *r;
    decode_chain ch;
    int greedy;                  /* greedy search: every distribution is its argmax */
    int draft_greedy;            /* the draft proposes its argmax (greedy search, or the exact rule) */
    kiln_ctx *draft;             /* NULL: prompt lookup */
    int32_t pending[MAX_DRAFT + 2]; /* tokens the draft has not evaluated yet */
    int n_pending;
    int32_t *toks;               /* the prompt, the kept tokens, then this round's drafts */
    int n;                       /* kept tokens, prompt included */
    float *rows;                 /* the target's logits after [last, drafts]: (K + 1) x n_vocab */
    float *q;                    /* the draft's distributions: K x n_vocab (NULL when deterministic) */
    float *p;                    /* one target distribution */
} spec_state;

/* Proposes up to K tokens with the draft model into s->toks[n..]; returns how many. */
static int draft_with_model(spec_state *s, int k, kiln_rng *rng) {
    decode_run *r = s->r;
    int room = kiln_ctx_size(s->draft) - kiln_ctx_pos(s->draft) - s->n_pending + 1;
    k = k < room ? k : room;
    if (k <= 0) return 0;
    if (kiln_eval(s->draft, s->pending, s->n_pending, NULL) < 0) return kiln_fail("draft: %s", kiln_last_error());
    s->n_pending = 0;
    for (int i = 0; i < k; i++) {
        decode_history h = run_history(r, s->toks, s->n + i);
        decode_cands c;
        decode_chain_apply(&s->ch, &h, kiln_logits(s->draft), &c);
        int32_t t = s->draft_greedy ? cands_argmax(&c) : decode_probs(&c, 0, s->q + (size_t)i * r->n_vocab);
        if (t < 0) { /* the processors left the draft nothing: propose what we have, drafts 0..i-2 evaluated */
            if (i > 0) kiln_ctx_truncate(s->draft, kiln_ctx_pos(s->draft) - 1);
            return i;
        }
        if (!s->draft_greedy) t = spec_pick(s->q + (size_t)i * r->n_vocab, r->n_vocab, kiln_rng_f64(rng));
        s->toks[s->n + i] = t;
        if (run_is_stop_token(r, t)) return i + 1;
        if (i + 1 < k && kiln_eval(s->draft, &t, 1, NULL) < 0) return kiln_fail("draft: %s", kiln_last_error());
    }
    return k;
}

/* The draft has evaluated its pending tokens and drafts 0..k-2; keeps those the round kept and queues
 * the rest of the kept tokens. */
static void draft_rollback(spec_state *s, int k, int accepted, int32_t next) {
    if (!s->draft || k == 0) {
        if (s->draft && s->n_pending < MAX_DRAFT + 2) s->pending[s->n_pending++] = next;
        return;
    }
    int evaluated = k - 1, keep = accepted < evaluated ? accepted : evaluated;
    kiln_ctx_truncate(s->draft, kiln_ctx_pos(s->draft) - evaluated + keep);
    s->n_pending = 0;
    if (accepted == k) s->pending[s->n_pending++] = s->toks[s->n + k - 1];
    s->pending[s->n_pending++] = next;
}

/* Checks the K drafts in s->toks[n..] against the target's rows: returns how many are accepted, sets
 * *NEXT to the target's token after them and LP[i] to each kept token's log-probability. */
static int verify(spec_state *s, int k, kiln_rng *rng, int32_t *next, double *lp) {
    decode_run *r = s->r;
    size_t V = r->n_vocab;
    for (int i = 0; i <= k; i++) {
        decode_history h = run_history(r, s->toks, s->n + i);
        decode_cands c;
        decode_chain_apply(&s->ch, &h, s->rows + i * V, &c);
        if (i == k) { /* all accepted: the bonus token */
            *next = s->greedy ? cands_argmax(&c) : decode_draw(&c, kiln_rng_f64(rng), &lp[i]);
            if (*next < 0) return kiln_fail("every token was removed by the processors");
            if (s->greedy) lp[i] = decode_logprob(&c, *next);
            return k;
        }
        if (decode_probs(&c, s->greedy, s->p) < 0) return kiln_fail("every token was removed by the processors");
        int32_t d = s->toks[s->n + i];
        const float *q = s->draft_greedy || !s->draft ? NULL : s->q + i * V;
        int ok = r->verifier->check(s->p, q, V, d, rng, next);
        lp[i] = decode_logprob(&c, ok ? d : *next);
        if (!ok) return i;
    }
    return k;
}

/* Appends the round's kept tokens to the sequence; returns 1 when generation ends. */
static int emit(spec_state *s, int accepted, int32_t next, const double *lp, decode_text *text, double *logprob,
                kiln_stop_reason *why) {
    decode_run *r = s->r;
    s->toks[s->n + accepted] = next;
    for (int j = 0; j <= accepted; j++) {
        int32_t t = s->toks[s->n];
        *logprob += lp[j];
        if (run_is_stop_token(r, t)) return *why = KILN_STOP_TOKEN, 1;
        size_t len;
        const char *piece = run_piece(r, s->toks[s->n - 1], t, &len);
        s->n++;
        if (text_append(text, piece, len)) return *why = text->stopped ? KILN_STOP_STRING : KILN_STOP_CALLBACK, 1;
        if (s->n - r->n_prompt == r->max_new) return 1;
    }
    return 0;
}

static int run_rounds(spec_state *s) {
    decode_run *r = s->r;
    const kiln_gen_params *p = r->p;
    decode_text text;
    run_text_init(r, &text, 1);
    double logprob = 0, lp[MAX_DRAFT + 1];
    kiln_stop_reason why = r->at_max;
    for (uint64_t round = 0;; round++) {
        kiln_rng rng = {kiln_hash3(p->seed, 0x5bec, round)};
        int left = r->max_new - (s->n - r->n_prompt), k = p->draft_n < left - 1 ? p->draft_n : left - 1;
        if (s->draft) k = draft_with_model(s, k, &rng);
        else k = spec_lookup(s->toks, s->n, p->ngram_max, k, s->toks + s->n);
        if (k < 0) return text_free(&text), -1;
        int32_t batch[MAX_DRAFT + 1];
        batch[0] = s->toks[s->n - 1];
        memcpy(batch + 1, s->toks + s->n, sizeof(int32_t) * k);
        int base = kiln_ctx_pos(r->c);
        if (kiln_eval(r->c, batch, k + 1, s->rows) < 0) return text_free(&text), -1;
        r->out->n_forward++;
        int32_t next;
        int accepted = verify(s, k, &rng, &next, lp);
        if (accepted < 0) return text_free(&text), -1;
        r->out->n_drafted += k, r->out->n_accepted += accepted;
        kiln_ctx_truncate(r->c, base + 1 + accepted);
        draft_rollback(s, k, accepted, next);
        if (emit(s, accepted, next, lp, &text, &logprob, &why)) break;
        if (run_timed_out(r)) {
            why = KILN_STOP_TIME;
            break;
        }
    }
    text_finish(&text);
    run_add(r, s->toks + r->n_prompt, s->n - r->n_prompt, logprob, logprob, why, &text);
    text_free(&text);
    return 0;
}

int search_speculative(decode_run *r) {
    const kiln_gen_params *p = r->p;
    size_t V = r->n_vocab, K = p->draft_n;
    spec_state s = {.r = r, .greedy = p->search == KILN_SEARCH_GREEDY, .n = r->n_prompt};
    s.draft = p->spec == KILN_SPEC_NGRAM ? NULL : p->draft;
    s.draft_greedy = s.greedy || p->spec == KILN_SPEC_EXACT;
    decode_chain_init(&s.ch, p, V, !s.greedy);
    s.toks = kiln_xmalloc(sizeof(int32_t) * (r->n_prompt + r->max_new + K + 1));
    memcpy(s.toks, r->prompt, sizeof(int32_t) * r->n_prompt);
    s.rows = kiln_xmalloc(sizeof(float) * V * (K + 1));
    s.p = kiln_xmalloc(sizeof(float) * V);
    if (s.draft && !s.draft_greedy) s.q = kiln_xmalloc(sizeof(float) * V * K);
    /* Both contexts forget the prompt's last token, which the first round evaluates again. */
    kiln_ctx_truncate(r->c, kiln_ctx_pos(r->c) - 1);
    if (s.draft) {
        kiln_ctx_truncate(s.draft, kiln_ctx_pos(s.draft) - 1);
        s.pending[s.n_pending++] = r->prompt[r->n_prompt - 1];
    }
    int rc = run_rounds(&s);
    decode_chain_free(&s.ch);
    free(s.toks);
    free(s.rows);
    free(s.p);
    free(s.q);
    return rc;
}
