/* Beams for the beam searches: one context branch per beam (a kiln_fork, so the prompt's cache is
 * shared copy-on-write) and the sequence each beam holds. When a step picks the next beams, the first
 * child of a beam takes over its parent's branch; other children take a free branch and copy only the
 * parent's generated positions into it. */
#ifndef KILN_DECODE_BEAMS_H
#define KILN_DECODE_BEAMS_H

#include "decode/search.h"

typedef struct {
    int32_t *toks;               /* the prompt, then the generated tokens */
    int n;
    double score;                /* what the search ranks by */
    double logprob;              /* sum of the processed log-probabilities */
    decode_text text;
    int alive;                   /* 0: an empty slot */
    int finished;                /* stochastic beams carry finished sequences along */
    kiln_stop_reason why;
} beam;

typedef struct {
    int parent;                  /* slot of the beam it extends */
    int32_t token;               /* the token it adds (-1: none, a finished beam carried along) */
    double score, logprob;
} beam_child;

typedef struct {
    kiln_fork *fork;
    beam *cur, *next;            /* by slot */
    int n;
} beam_set;

/* N beams over R's context after the prompt; only beam 0 is alive, holding the prompt. */
int beams_init(beam_set *b, decode_run *r, int n);
void beams_free(beam_set *b);
kiln_ctx *beams_ctx(beam_set *b, int slot);
/* Replaces the beams of slots [LO, HI) by the N children (whose parents are in that range) and writes
 * each child's slot to SLOT. Children get their parent's sequence, text and cache plus their token
 * (not yet evaluated or added to the text); slots left over are emptied. -1 on error. */
int beams_advance(beam_set *b, const beam_child *child, int n, int lo, int hi, int *slot);

#endif
