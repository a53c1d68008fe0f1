/* Logits processors: one small interface, one file per family, one line each in the registry of
 * processor.c. A processor rewrites the logits of the next token given the sequence so far; a chain
 * runs the enabled ones in the user's order.
 *
 * Candidates: the logits array is authoritative (-INFINITY removes a token), but once a processor has
 * cut the vocabulary down (top-k, top-p, ...) it also records the short list of tokens that may still be
 * finite, so that the processors after it and the final draw touch a few entries instead of the whole
 * vocabulary. Tokens outside that list count as removed whatever their logit holds.
 *
 * Weights: the exponentials of the candidates' logits, computed once per token and kept by the processors
 * that only remove candidates (top-k, top-p, min-p, typical-p), so that the processors after them and
 * the draw do not take them again over the whole vocabulary. */
#ifndef KILN_DECODE_PROCESSOR_H
#define KILN_DECODE_PROCESSOR_H

#include <stdint.h>

#include "decode/select.h"
#include "kiln.h"

/* The sequence a processor looks at. */
typedef struct {
    const int32_t *tokens;       /* the prompt, then the generated tokens */
    int n_tokens, n_prompt;
    const int32_t *stop_tokens;  /* what min_new_tokens masks */
    int n_stop_tokens;
} decode_history;

/* Working memory of vocabulary size, owned by a chain. COUNT and MARK are all zero between uses. */
typedef struct {
    float *prob;
    float *key;
    decode_item *items;
    int32_t *ids;
    int32_t *count;
    uint8_t *mark;
} decode_scratch;

typedef struct {
    float *logits;
    int n_vocab;
    int32_t *ids;                /* when n < n_vocab: every token that may be finite is in ids[0..n) */
    int n;
    decode_scratch *s;
    /* When WEIGHTED, s->prob[t] = exp(logits[t] - SHIFT) for every candidate t (with dense candidates
     * also 0 for every removed token), SHIFT being the largest candidate logit when they were taken;
     * TOTAL is their sum over the candidates, or -1 when not known. */
    int weighted;
    float shift;
    double total;
} decode_cands;

typedef struct {
    const char *name;            /* as in kiln_gen_params.samplers and --samplers */
    int warper;                  /* only shapes a distribution to sample: greedy and beams skip it */
    int (*enabled)(const kiln_gen_params *p);
    /* -1 with a message naming the parameter when it is out of range (checked even when disabled) */
    int (*check)(const kiln_gen_params *p, int n_vocab);
    void (*apply)(const kiln_gen_params *p, const decode_history *h, decode_cands *c);
    /* only removes candidates and keeps the weights valid (see decode_cands); 0 makes the chain drop them */
    int keeps_weights;
} decode_processor;

enum { DECODE_MAX_PROCESSORS = 32 };

/* A cumulative probability within this relative distance of a threshold (top-p, typical-p) counts as
 * reaching it, so that a set whose mass is exactly the threshold does not depend on rounding. */
#define DECODE_MASS_SLACK 1e-6

typedef struct {
    const kiln_gen_params *p;
    const decode_processor *procs[DECODE_MAX_PROCESSORS];
    int n_procs;
    int n_vocab;
    decode_scratch s;
    int32_t *ids;                /* the candidates' list; it trades places with s.ids */
} decode_chain;

/* Checks every processor's parameters and the sampler order. */
int decode_processors_check(const kiln_gen_params *p, int n_vocab);
/* The enabled processors of P in order; SAMPLING includes the warpers. P must have passed the check. */
void decode_chain_init(decode_chain *ch, const kiln_gen_params *p, int n_vocab, int sampling);
void decode_chain_free(decode_chain *ch);
/* Runs the chain on LOGITS (N_VOCAB values, in place) and describes the result in C. */
void decode_chain_apply(decode_chain *ch, const decode_history *h, float *logits, decode_cands *c);

/* ---- Helpers for processors and searches ---- */
/* The largest logit among the candidates (-INFINITY when every token is removed). */
float cands_max(const decode_cands *c);
/* exp(logit - MAX) of the candidates into c->s->prob (at their token ids); returns the sum. The candidates
 * become weighted with shift MAX; weights already taken with that shift are reused. */
double cands_exp(decode_cands *c, float max);
/* Keeps only IDS[0..N) (a list in c->s->ids, which trades places with the candidates' list). */
void cands_keep(decode_cands *c, int n);
/* Makes every token outside the candidates' list -INFINITY in the logits (n becomes n_vocab). */
void cands_dense(decode_cands *c);
/* Items (key = logit, w = exp(logit - MAX)) of the finite candidates into c->s->items; returns how many.
 * Needs cands_exp first. */
int cands_items(decode_cands *c);
/* The most probable candidate, lowest id on ties; -1 when none is left. */
int cands_argmax(const decode_cands *c);
/* The dense candidates with logit >= MIN into OUT, in id order; returns how many, or -1 as soon as there
 * are more than CAP (collecting most of the vocabulary only to find it too many costs a pass). */
int cands_collect_ge(const decode_cands *c, float min, int cap, int32_t *out);
/* Whether more than CAP dense candidates look to have logit >= MIN, judged from the first few thousand:
 * then a count (which gives up past CAP) is worth a pass before a collection (which writes every id),
 * and when they are few it would be a pass for nothing. */
int cands_many_ge(const decode_cands *c, float min, int cap);

/* Keeps the items it[0..m) of the N items (w from cands_exp) that a mass cut keeps, and returns m: the
 * smallest prefix in order whose weight reaches TARGET, with TIES also every item whose key equals the
 * crossing one's, and at least KEEP_MIN items (all N when fewer). */
int cands_select(decode_item *it, int n, double target, int keep_min, int ties);

/* The same cut over dense weighted candidates (cands_exp first; MAX their largest logit), ranked by logit
 * (TYPICAL 0: top-p) or by closeness to the logit CENTER (TYPICAL 1: key -|CENTER - logit|, the crossing's
 * ties kept). Both are a cut by distance |CENTER - logit| (top-p's CENTER is MAX). A histogram of the
 * logits bounds the distance at which the mass crosses TARGET to a sliver of the vocabulary (with a large
 * vocabulary first one estimated from a sample, the exact one when the crossing turns out to lie
 * outside); one pass (decode_band) weighs the tokens inside, collects the sliver, where the crossing is
 * selected token by token, and marks the tokens outside, which decode_remove_marked removes. No sort of
 * the vocabulary. The kept tokens become a list when they are few, else stay dense. */
void cands_cut(decode_cands *c, float max, int typical, float center, double target, int keep_min);

#endif
