/* Logits processors: one small interface, one file per family, one line each in the registry of
 * processor.c. A processor rewrites the logits of the next token given the sequence so far; a chain
 * runs the enabled ones in the user's order.
 *
 * Candidates: the logits array is authoritative (-INFINITY removes a token), but once a processor has
 * cut the vocabulary down (top-k, top-p, ...) it also records the short list of tokens that may still be
 * finite, so that the processors after it and the final draw touch a few entries instead of the whole
 * vocabulary. Tokens outside that list count as removed whatever their logit holds. */
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
} decode_cands;

typedef struct {
    const char *name;            /* as in kiln_gen_params.samplers and --samplers */
    int warper;                  /* only shapes a distribution to sample: greedy and beams skip it */
    int (*enabled)(const kiln_gen_params *p);
    /* -1 with a message naming the parameter when it is out of range (checked even when disabled) */
    int (*check)(const kiln_gen_params *p, int n_vocab);
    void (*apply)(const kiln_gen_params *p, const decode_history *h, decode_cands *c);
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
/* exp(logit - MAX) of the candidates into c->s->prob (at their token ids); returns the sum. */
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

/* For dense candidates: keeps the smallest prefix, in the order of KEY (N_VOCAB values at most 0, larger
 * first, ties by lower id; a function of the logit), whose probability (c->s->prob, from cands_exp)
 * reaches TARGET, and at least KEEP_MIN; with TIES also every token whose key equals the crossing
 * token's. The others become -INFINITY in place and the candidates stay dense. Tokens are bucketed by
 * key (1/64 nat wide, 16 nats deep) and only the bucket where the mass crosses TARGET is ranked token
 * by token: two passes over the vocabulary, no sort. Returns 0, changing nothing, when fewer than
 * KEEP_MIN tokens reach that bucket. */
int cands_cut(decode_cands *c, const float *key, double target, int keep_min, int ties);

#endif
