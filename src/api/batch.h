/* Batched decoding: one step of several sequences in one forward pass. Each sequence keeps its own
 * context (KV cache, position, logits); the matrices of every layer run once on the stacked rows of all
 * sequences, so the weights are read once per step however many sequences there are, and attention
 * runs per sequence against its own cache. This is what continuous batching in `kiln serve` and
 * batched `kiln infer` run on. */
#ifndef KILN_API_BATCH_H
#define KILN_API_BATCH_H

#include <stdint.h>

#include "kiln.h"

typedef struct kiln_batch kiln_batch;

/* Scratch for up to MAX_SEQS sequences of model M. */
kiln_batch *kiln_batch_new(const kiln_model *m, int max_seqs);
void kiln_batch_free(kiln_batch *b);
/* Evaluates TOKENS[i] in context CS[i] at its position, for i < N (N <= max_seqs, distinct contexts of
 * the batch's model): afterwards kiln_logits(CS[i]) are the logits after that token and each position
 * has advanced by one. Fails, changing nothing, if a context is full. */
int kiln_batch_eval(kiln_batch *b, kiln_ctx **cs, const int32_t *tokens, int n);

#endif
