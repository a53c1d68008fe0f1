/* Looking inside a forward pass: the residual stream between layers and the attention weights, for
 * `kiln inspect` (logit lens, attention between two tokens, cosine distance of each layer's input and
 * output). A trace runs its own forward pass over a short text from position 0, with the same math as
 * src/model/forward.c, keeping what the cached forward pass throws away. */
#ifndef KILN_API_INSPECT_H
#define KILN_API_INSPECT_H

#include <stdint.h>

#include "kiln.h"

typedef struct {
    int n_tokens, n_layers, dim, n_heads;
    float *resid;           /* (n_layers + 1) x n_tokens x dim: resid[l] enters layer l; resid[n_layers]
                               leaves the last layer (before the final norm) */
    float *attn;            /* n_layers x n_heads x n_tokens x n_tokens: the softmax weight of query i on
                               key j (0 for j > i, and outside a sliding window) */
} kiln_trace;

/* Runs TOKENS[0..N) through M and records the trace. -1 with a message on bad tokens or N too large. */
int kiln_trace_run(const kiln_model *m, const int32_t *tokens, int n, kiln_trace *out);
void kiln_trace_free(kiln_trace *t);
/* The logit lens: the final norm and output head applied to hidden state H (dim floats): n_vocab
 * logits into LOGITS. */
void kiln_trace_lens(const kiln_model *m, const float *h, float *logits);
/* 1 - cos(A, B) for two vectors of N floats (1 when either is zero). */
double kiln_cos_distance(const float *a, const float *b, int n);

#endif
