/* Beam search and diverse (group) beam search, with Hugging Face's semantics (BeamSearchScorer,
 * BeamHypotheses, group_beam_search, HammingDiversityLogitsProcessor).
 *
 * Each step, for each group of G = num_beams / num_beam_groups beams: the log-softmax of each beam's
 * logits, minus diversity_penalty times how often each token was chosen by the earlier groups this
 * step, through the processors (no warpers), plus the beam's score, gives candidate scores; the best
 * (2 + stop tokens) * G candidates are walked in order. A candidate that ends its sequence (a stop
 * token, or a stop string completed) becomes a finished hypothesis if it ranks among the first G,
 * scored sum / generated_length^length_penalty with the stop token counted; the others become the next
 * beams until G are found. A group is done per early_stopping; at the end the running beams of groups
 * not done join the hypotheses, and the best num_return over all groups are returned. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "decode/beams.h"
#include "decode/sample.h"

typedef struct {
    double score;                /* length-penalised */
    double logprob;
    int32_t *toks;               /* generated tokens only */
    int n;
    decode_text text;
    kiln_stop_reason why;
} hyp;

typedef struct {
    hyp *h;
    int n, cap;
    double worst;
    int done;
} hyp_list;

typedef struct {
    decode_run *r;
    beam_set b;
    decode_chain ch;
    hyp_list *groups;
    int n_groups, size;          /* groups and beams per group */
    int32_t *used;               /* tokens chosen by earlier groups this step, counted by token id */
    int32_t *used_list;
    int n_used;
    beam_child *cands;
    int n_keep;                  /* candidates kept per beam */
} beam_search;

/* HF BeamHypotheses.add: keep the best CAP hypotheses. */
static void hyp_add(beam_search *s, hyp_list *l, const beam *from, int32_t extra, double sum, double logprob,
                    const decode_text *text, kiln_stop_reason why) {
    int n_gen = from->n - s->r->n_prompt, len = n_gen + 1; /* the final token (stop token too) counts */
    double score = sum / pow(len, s->r->p->length_penalty);
    if (l->n == l->cap && score <= l->worst) return;
    hyp *h;
    if (l->n < l->cap) {
        h = &l->h[l->n++];
        h->toks = kiln_xmalloc(sizeof(int32_t) * (s->r->max_new + 1));
        run_text_init(s->r, &h->text, 0);
    } else {
        h = l->h;
        for (int i = 1; i < l->n; i++)
            if (l->h[i].score < h->score) h = &l->h[i];
    }
    memcpy(h->toks, from->toks + s->r->n_prompt, sizeof(int32_t) * n_gen);
    h->n = n_gen;
    if (extra >= 0) h->toks[h->n++] = extra;
    text_copy(&h->text, text);
    h->score = score, h->logprob = logprob, h->why = why;
    l->worst = l->h[0].score;
    for (int i = 1; i < l->n; i++) l->worst = l->h[i].score < l->worst ? l->h[i].score : l->worst;
}

/* HF BeamHypotheses.is_done, BEST being the best candidate score of the step and LEN the generated
 * length it would have. */
static int hyp_done(const beam_search *s, const hyp_list *l, double best, int len) {
    const kiln_gen_params *p = s->r->p;
    if (l->n < l->cap) return 0;
    if (p->early_stopping == KILN_EARLY_STOP_TRUE) return 1;
    if (p->early_stopping == KILN_EARLY_STOP_NEVER && p->length_penalty > 0) len = s->r->max_new;
    return l->worst >= best / pow(len, p->length_penalty);
}

/* Processed log-probabilities of the beam in SLOT; its best candidates go to s->cands[*n..]. */
static void expand(beam_search *s, int slot, int *n) {
    decode_run *r = s->r;
    beam *bm = &s->b.cur[slot];
    float *x = kiln_logits(beams_ctx(&s->b, slot)), max = -INFINITY;
    for (int i = 0; i < r->n_vocab; i++) max = x[i] > max ? x[i] : max;
    double log_total = log(decode_exp(s->ch.s.prob, x, max, r->n_vocab));
    for (int i = 0; i < r->n_vocab; i++) x[i] = (float)(x[i] - max - log_total);
    float penalty = r->p->diversity_penalty;
    for (int i = 0; i < s->n_used; i++) x[s->used_list[i]] -= penalty * s->used[s->used_list[i]];
    decode_history h = run_history(r, bm->toks, bm->n);
    decode_cands c;
    decode_chain_apply(&s->ch, &h, x, &c);
    int32_t *top = c.s->ids;
    int m = decode_top(x, c.n < c.n_vocab ? c.ids : NULL, c.n, s->n_keep, top);
    for (int i = 0; i < m; i++) {
        int32_t t = top[i];
        double diversity = penalty * s->used[t];
        s->cands[(*n)++] = (beam_child){slot, t, bm->score + x[t], bm->logprob + x[t] + diversity};
    }
}

static int by_score(const void *a, const void *b) {
    const beam_child *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->parent != y->parent) return x->parent - y->parent;
    return x->token - y->token;
}

/* Whether candidate C ends its sequence; a text that the candidate completes goes to *TEXT. */
static kiln_stop_reason ends(beam_search *s, const beam_child *c, decode_text *text, int *end) {
    decode_run *r = s->r;
    const beam *from = &s->b.cur[c->parent];
    *end = 1;
    if (run_is_stop_token(r, c->token)) {
        text_copy(text, &from->text);
        return KILN_STOP_TOKEN;
    }
    size_t len;
    const char *piece = run_piece(r, from->toks[from->n - 1], c->token, &len);
    if (text_would_stop(&from->text, piece, len)) {
        text_copy(text, &from->text);
        text_append(text, piece, len);
        return KILN_STOP_STRING;
    }
    *end = 0;
    return KILN_STOP_LENGTH;
}

/* One step of group G: returns the number of next beams placed (0 when the group is done). */
static int group_step(beam_search *s, int g, decode_text *tmp) {
    decode_run *r = s->r;
    int lo = g * s->size, hi = lo + s->size, n = 0, len = 0;
    for (int slot = lo; slot < hi; slot++)
        if (s->b.cur[slot].alive) {
            expand(s, slot, &n);
            len = s->b.cur[slot].n - r->n_prompt + 1;
        }
    hyp_list *l = &s->groups[g];
    if (!n) return l->done = 1, 0;
    qsort(s->cands, n, sizeof *s->cands, by_score);
    beam_child next[s->size];
    int n_next = 0;
    for (int rank = 0; rank < n && n_next < s->size; rank++) {
        const beam_child *c = &s->cands[rank];
        int end;
        kiln_stop_reason why = ends(s, c, tmp, &end);
        if (!end) next[n_next++] = *c;
        else if (rank < s->size)
            hyp_add(s, l, &s->b.cur[c->parent], why == KILN_STOP_STRING ? c->token : -1, c->score, c->logprob, tmp,
                    why);
    }
    if (hyp_done(s, l, s->cands[0].score, len) || !n_next) return l->done = 1, 0;
    int slot[s->size];
    if (beams_advance(&s->b, next, n_next, lo, hi, slot) < 0) return -1;
    for (int j = 0; j < n_next; j++) {
        beam *bm = &s->b.cur[slot[j]];
        size_t plen;
        const char *piece = run_piece(r, bm->toks[bm->n - 2], next[j].token, &plen);
        text_append(&bm->text, piece, plen);
        if (!s->used[next[j].token]++) s->used_list[s->n_used++] = next[j].token;
    }
    return n_next;
}

/* Runs the beams' new tokens through their branches. */
static int eval_beams(beam_search *s) {
    for (int slot = 0; slot < s->b.n; slot++) {
        beam *bm = &s->b.cur[slot];
        if (!bm->alive || s->groups[slot / s->size].done) continue;
        if (kiln_eval(beams_ctx(&s->b, slot), &bm->toks[bm->n - 1], 1, NULL) < 0) return -1;
        s->r->out->n_forward++;
    }
    return 0;
}

static int by_hyp_score(const void *a, const void *b) {
    const hyp *x = *(const hyp *const *)a, *y = *(const hyp *const *)b;
    return x->score > y->score ? -1 : x->score < y->score ? 1 : 0;
}

/* Running beams of groups not done join the hypotheses; the best num_return go to the result. */
static int finish(beam_search *s, kiln_stop_reason why) {
    decode_run *r = s->r;
    for (int slot = 0; slot < s->b.n; slot++) {
        beam *bm = &s->b.cur[slot];
        hyp_list *l = &s->groups[slot / s->size];
        if (!bm->alive || l->done) continue;
        /* the last token is already in toks: hyp_add counts one more, so drop it and pass it back */
        bm->n--;
        hyp_add(s, l, bm, bm->toks[bm->n], bm->score, bm->logprob, &bm->text, why);
        bm->n++;
    }
    int total = 0;
    for (int g = 0; g < s->n_groups; g++) total += s->groups[g].n;
    if (!total) return kiln_fail("beam search: every token was removed by the processors");
    const hyp **all = kiln_xmalloc(sizeof *all * total);
    total = 0;
    for (int g = 0; g < s->n_groups; g++)
        for (int i = 0; i < s->groups[g].n; i++) all[total++] = &s->groups[g].h[i];
    qsort(all, total, sizeof *all, by_hyp_score);
    for (int i = 0; i < total && i < r->p->num_return; i++)
        run_add(r, all[i]->toks, all[i]->n, all[i]->logprob, all[i]->score, all[i]->why, &all[i]->text);
    free(all);
    return 0;
}

static int run_steps(beam_search *s) {
    decode_run *r = s->r;
    decode_text tmp;
    run_text_init(r, &tmp, 0);
    kiln_stop_reason why = r->at_max;
    int rc = 0;
    for (int step = 0; step < r->max_new && rc == 0; step++) {
        for (int i = 0; i < s->n_used; i++) s->used[s->used_list[i]] = 0;
        s->n_used = 0;
        int active = 0;
        for (int g = 0; g < s->n_groups && rc == 0; g++) {
            if (s->groups[g].done) continue;
            int placed = group_step(s, g, &tmp);
            if (placed < 0) rc = -1;
            active += placed > 0;
        }
        if (rc < 0 || !active || step + 1 == r->max_new) break;
        if (run_timed_out(r)) {
            why = KILN_STOP_TIME;
            break;
        }
        rc = eval_beams(s);
    }
    text_free(&tmp);
    return rc < 0 ? -1 : finish(s, why);
}

int search_beam(decode_run *r) {
    const kiln_gen_params *p = r->p;
    beam_search s = {.r = r, .n_groups = p->num_beam_groups, .size = p->num_beams / p->num_beam_groups};
    if (beams_init(&s.b, r, p->num_beams) < 0) return -1;
    /* first step: each group's first beam holds the prompt (HF gives the others -1e9) */
    for (int g = 1; g < s.n_groups; g++) {
        beam *first = &s.b.cur[g * s.size];
        memcpy(first->toks, r->prompt, sizeof(int32_t) * r->n_prompt);
        first->n = r->n_prompt, first->alive = 1;
    }
    decode_chain_init(&s.ch, p, r->n_vocab, 0);
    s.groups = kiln_xcalloc(s.n_groups, sizeof *s.groups);
    for (int g = 0; g < s.n_groups; g++) {
        s.groups[g].cap = s.size;
        s.groups[g].h = kiln_xcalloc(s.size, sizeof(hyp));
    }
    s.used = kiln_xcalloc(r->n_vocab, sizeof(int32_t));
    s.used_list = kiln_xmalloc(sizeof(int32_t) * (p->num_beams + 1));
    s.n_keep = (2 + r->n_stop_tokens) * s.size;
    s.n_keep = s.n_keep < r->n_vocab ? s.n_keep : r->n_vocab;
    s.cands = kiln_xmalloc(sizeof(beam_child) * s.n_keep * s.size);
    int rc = run_steps(&s);
    for (int g = 0; g < s.n_groups; g++) {
        for (int i = 0; i < s.groups[g].n; i++) {
            free(s.groups[g].h[i].toks);
            text_free(&s.groups[g].h[i].text);
        }
        free(s.groups[g].h);
    }
    free(s.groups);
    free(s.used);
    free(s.used_list);
    free(s.cands);
    decode_chain_free(&s.ch);
    beams_free(&s.b);
    return rc;
}
