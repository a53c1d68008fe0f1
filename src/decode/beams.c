/* Beam slots over a kiln_fork. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "decode/beams.h"

static void beam_alloc(beam *x, const decode_run *r) {
    memset(x, 0, sizeof *x);
    x->toks = kiln_xmalloc(sizeof(int32_t) * (r->n_prompt + r->max_new + 1));
    run_text_init(r, &x->text, 0);
}

int beams_init(beam_set *b, decode_run *r, int n) {
    memset(b, 0, sizeof *b);
    if (!(b->fork = kiln_fork_new(r->c, n))) return -1;
    b->n = n;
    b->cur = kiln_xcalloc(n, sizeof *b->cur);
    b->next = kiln_xcalloc(n, sizeof *b->next);
    for (int i = 0; i < n; i++) {
        beam_alloc(&b->cur[i], r);
        beam_alloc(&b->next[i], r);
    }
    memcpy(b->cur[0].toks, r->prompt, sizeof(int32_t) * r->n_prompt);
    b->cur[0].n = r->n_prompt;
    b->cur[0].alive = 1;
    return 0;
}

void beams_free(beam_set *b) {
    for (int i = 0; i < b->n; i++) {
        free(b->cur[i].toks);
        free(b->next[i].toks);
        text_free(&b->cur[i].text);
        text_free(&b->next[i].text);
    }
    free(b->cur);
    free(b->next);
    kiln_fork_free(b->fork);
    memset(b, 0, sizeof *b);
}

kiln_ctx *beams_ctx(beam_set *b, int slot) { return kiln_fork_ctx(b->fork, slot); }

int beams_advance(beam_set *b, const beam_child *child, int n, int lo, int hi, int *slot) {
    int taken[hi - lo];
    memset(taken, 0, sizeof taken);
    for (int j = 0; j < n; j++) { /* a parent's first child stays in its branch */
        slot[j] = -1;
        if (!taken[child[j].parent - lo]) taken[child[j].parent - lo] = 1, slot[j] = child[j].parent;
    }
    int free_slot = lo;
    for (int j = 0; j < n; j++) { /* the others copy their parent's branch into a branch no child uses */
        if (slot[j] >= 0) continue;
        while (taken[free_slot - lo]) free_slot++;
        taken[free_slot - lo] = 1;
        slot[j] = free_slot;
        if (kiln_fork_copy(b->fork, slot[j], child[j].parent) < 0) return -1;
    }
    for (int j = 0; j < n; j++) {
        const beam *from = &b->cur[child[j].parent];
        beam *to = &b->next[slot[j]];
        memcpy(to->toks, from->toks, sizeof(int32_t) * from->n);
        to->n = from->n;
        text_copy(&to->text, &from->text);
        to->finished = from->finished, to->why = from->why;
        if (child[j].token >= 0) to->toks[to->n++] = child[j].token;
        to->score = child[j].score, to->logprob = child[j].logprob, to->alive = 1;
    }
    for (int s = lo; s < hi; s++) {
        if (!taken[s - lo]) b->next[s].alive = 0;
        beam t = b->cur[s];
        b->cur[s] = b->next[s];
        b->next[s] = t;
    }
    return 0;
}
