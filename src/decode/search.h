/* Searches: how tokens are chosen from the processed distributions. Each search is one file with one
 * function over a decode_run, registered by one line in generate.c. The run holds what every search
 * needs: the target context after the prompt, the parameters, the stopping rules and the result. */
#ifndef KILN_DECODE_SEARCH_H
#define KILN_DECODE_SEARCH_H

#include <stdint.h>

#include "base/rng.h"
#include "decode/processor.h"
#include "decode/text.h"
#include "kiln.h"

typedef struct spec_verifier spec_verifier;

typedef struct {
    kiln_ctx *c;                 /* the target, positioned after the prompt, its logits those of the prompt */
    const kiln_model *m;
    const kiln_gen_params *p;
    const int32_t *prompt;
    int n_prompt;
    int n_vocab;
    int max_new;                 /* max_new_tokens, or less when the context is full first */
    kiln_stop_reason at_max;     /* why reaching max_new stops: LENGTH, or CONTEXT */
    const int32_t *stop_tokens;
    int n_stop_tokens;
    double t_start;              /* when decoding began (max_time) */
    const spec_verifier *verifier; /* speculative decoding: the acceptance rule */
    kiln_gen_result *out;
} decode_run;

typedef int (*decode_search_fn)(decode_run *r);

int search_single(decode_run *r);      /* greedy and sampling: search_single.c */
int search_beam(decode_run *r);        /* beam and diverse beam search: search_beam.c */
int search_stochastic(decode_run *r);  /* stochastic beam search: search_stochastic.c */
int search_speculative(decode_run *r); /* speculative decoding: search_speculative.c */

/* kiln_generate with a given acceptance rule for speculative decoding (NULL: the one p->spec names). */
int decode_generate(kiln_ctx *c, const int32_t *prompt, int n_prompt, const kiln_gen_params *p,
                    const spec_verifier *v, kiln_gen_result *out);

/* ---- Shared by the searches (generate.c) ---- */
int run_is_stop_token(const decode_run *r, int32_t t);
int run_timed_out(const decode_run *r);
/* The processors' view of TOKENS (the prompt then N - n_prompt generated tokens). */
decode_history run_history(const decode_run *r, const int32_t *tokens, int n);
/* The bytes token T adds after PREV. */
const char *run_piece(const decode_run *r, int32_t prev, int32_t t, size_t *len);
/* A uniform in [0, 1) that depends only on the seed and the two counters. */
double run_uniform(const decode_run *r, uint64_t a, uint64_t b);
/* Appends a sequence to the result (copies TOKENS and the text). */
void run_add(decode_run *r, const int32_t *tokens, int n, double logprob, double score, kiln_stop_reason why,
             const decode_text *text);
/* A text for one sequence; streams to p->on_text when STREAM. */
void run_text_init(const decode_run *r, decode_text *t, int stream);

#endif
