/* Stochastic beam search (Kool, van Hoof and Welling 2019): samples num_beams sequences without
 * replacement by running beam search on Gumbel-perturbed log-probabilities.
 *
 * A sequence's key G is its log-probability plus Gumbel noise, drawn top-down: a child's perturbed
 * log-probability g_i = phi_i + Gumbel is conditioned on the maximum over its siblings being the
 * parent's key T, G_i = -log(exp(-T) - exp(-Z) + exp(-g_i)) with Z = max_i g_i; keeping the k largest
 * keys at every step then yields the k largest keys among all complete sequences, which is a sample
 * of k sequences without replacement, the first distributed as the model (Gumbel-top-k). A finished
 * sequence keeps its key and competes with the expanded ones. The warpers run: the sampled law is the
 * processed one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "decode/beams.h"

typedef struct {
    decode_run *r;
    beam_set b;
    decode_chain ch;
    float *g;                    /* perturbed log-probabilities of one beam's children */
    beam_child *cands;
} stochastic_search;

/* log(1 - exp(a)) for a <= 0, accurate at both ends (Maechler 2012). */
static double log1mexp(double a) { return a > -0.693147 ? log(-expm1(a)) : log1p(-exp(a)); }

/* The key of a child with perturbed log-probability G under a parent of key T whose children's
 * maximum is Z, in the stable form of Kool et al.'s appendix. */
static double conditioned_key(double t, double z, double g) {
    double v = t - g + log1mexp(g - z);
    return t - (v > 0 ? v : 0) - log1p(exp(-fabs(v)));
}

/* Gumbel-perturbed children of the beam in SLOT; the best k go to s->cands[*n..]. */
static void expand(stochastic_search *s, int step, int slot, int *n) {
    decode_run *r = s->r;
    beam *bm = &s->b.cur[slot];
    decode_history h = run_history(r, bm->toks, bm->n);
    decode_cands c;
    decode_chain_apply(&s->ch, &h, kiln_logits(beams_ctx(&s->b, slot)), &c);
    float max = cands_max(&c);
    if (max == -INFINITY) return;
    double log_total = log(cands_exp(&c, max)), z = -INFINITY;
    for (int i = 0; i < r->n_vocab; i++) s->g[i] = -INFINITY;
    for (int i = 0; i < c.n; i++) {
        int32_t t = c.n < c.n_vocab ? c.ids[i] : i;
        if (!(c.logits[t] > -INFINITY)) continue;
        double u = (double)((kiln_hash3(r->p->seed, (uint64_t)step * s->b.n + slot, t) >> 11) + 0.5) / 9007199254740992.0;
        double phi = bm->logprob + (c.logits[t] - max - log_total);
        s->g[t] = (float)(phi - log(-log(u)));
        z = s->g[t] > z ? s->g[t] : z;
    }
    int32_t *top = c.s->ids;
    int m = decode_top(s->g, c.n < c.n_vocab ? c.ids : NULL, c.n, s->b.n, top);
    for (int i = 0; i < m; i++) {
        int32_t t = top[i];
        double phi = bm->logprob + (c.logits[t] - max - log_total);
        s->cands[(*n)++] = (beam_child){slot, t, conditioned_key(bm->score, z, s->g[t]), phi};
    }
}

static int by_key(const void *a, const void *b) {
    const beam_child *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->parent != y->parent) return x->parent - y->parent;
    return x->token - y->token;
}

/* The new token of the beam in SLOT: ends the beam, or is evaluated unless this was the last step. */
static int settle(stochastic_search *s, int slot, int last_step) {
    decode_run *r = s->r;
    beam *bm = &s->b.cur[slot];
    int32_t t = bm->toks[bm->n - 1];
    if (run_is_stop_token(r, t)) {
        bm->n--; /* stop tokens are not part of the sequence */
        bm->finished = 1, bm->why = KILN_STOP_TOKEN;
        return 0;
    }
    size_t len;
    const char *piece = run_piece(r, bm->toks[bm->n - 2], t, &len);
    if (text_append(&bm->text, piece, len)) {
        bm->finished = 1, bm->why = KILN_STOP_STRING;
        return 0;
    }
    if (last_step) return 0;
    r->out->n_forward++;
    return kiln_eval(beams_ctx(&s->b, slot), &t, 1, NULL);
}

static int run_steps(stochastic_search *s) {
    decode_run *r = s->r;
    int k = s->b.n;
    kiln_stop_reason why = r->at_max;
    for (int step = 0; step < r->max_new; step++) {
        int n = 0, open = 0;
        for (int slot = 0; slot < k; slot++) {
            beam *bm = &s->b.cur[slot];
            if (!bm->alive) continue;
            if (bm->finished) s->cands[n++] = (beam_child){slot, -1, bm->score, bm->logprob};
            else open = 1, expand(s, step, slot, &n);
        }
        if (!open) break;
        qsort(s->cands, n, sizeof *s->cands, by_key);
        n = n < k ? n : k;
        int slots[k];
        if (beams_advance(&s->b, s->cands, n, 0, k, slots) < 0) return -1;
        for (int j = 0; j < n; j++)
            if (s->cands[j].token >= 0 && settle(s, slots[j], step + 1 == r->max_new) < 0) return -1;
        if (run_timed_out(r)) {
            why = KILN_STOP_TIME;
            break;
        }
    }
    beam *order[k];
    int n = 0;
    for (int slot = 0; slot < k; slot++)
        if (s->b.cur[slot].alive) order[n++] = &s->b.cur[slot];
    if (!n) return kiln_fail("stochastic beam search: every token was removed by the processors");
    for (int i = 1; i < n; i++) /* insertion sort by key, best first */
        for (int j = i; j > 0 && order[j]->score > order[j - 1]->score; j--) {
            beam *t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int i = 0; i < n && i < r->p->num_return; i++) {
        beam *bm = order[i];
        run_add(r, bm->toks + r->n_prompt, bm->n - r->n_prompt, bm->logprob, bm->score, bm->finished ? bm->why : why,
                &bm->text);
    }
    return 0;
}

int search_stochastic(decode_run *r) {
    stochastic_search s = {.r = r};
    int k = r->p->num_beams;
    if (beams_init(&s.b, r, k) < 0) return -1;
    decode_chain_init(&s.ch, r->p, r->n_vocab, 1);
    s.g = kiln_xmalloc(sizeof(float) * r->n_vocab);
    s.cands = kiln_xmalloc(sizeof(beam_child) * k * (k + 1));
    int rc = run_steps(&s);
    free(s.g);
    free(s.cands);
    decode_chain_free(&s.ch);
    beams_free(&s.b);
    return rc;
}
