/* Shared by tests/test_decode_*.c: tiny random-weight models written on the fly, and the statistics
 * of the distribution tests. */
#ifndef KILN_TEST_DECODE_H
#define KILN_TEST_DECODE_H

#include <stdint.h>

#include "kiln.h"

/* Writes a one-layer llama of N_VOCAB tokens and context CTX with random weights from SEED into this
 * test's scratch directory and opens it. LOGIT_SCALE sets how peaked its distributions are (about
 * the standard deviation of its logits). No tokenizer, so no stop tokens. */
kiln_model *tiny_model(const char *name, int n_vocab, int ctx, uint64_t seed, float logit_scale);
/* The same with DIM wide layers (DIM / 8 heads of 8, as many KV heads) and N_LAYERS of them. */
kiln_model *random_model(const char *name, int n_vocab, int ctx, int dim, int n_layers, uint64_t seed,
                         float logit_scale);
/* stories260K converted into this test's scratch directory: the GGUF's path, or the model opened (its
 * path to *PATH when not NULL). */
const char *stories_gguf(void);
kiln_model *stories_model(const char **path);

/* kiln_generate's greedy text (malloc'd) for N_NEW tokens after PROMPT with BOS: the reference that
 * the server and batch inference must reproduce. */
char *greedy_text(kiln_model *m, const char *prompt, int n_new);

/* The model's probability of generating TOKS[0..N) after PROMPT (teacher forcing, fresh context). */
double sequence_logprob(kiln_model *m, const int32_t *prompt, int n_prompt, const int32_t *toks, int n);

/* Pearson's chi-square of COUNTS (N cells, TOTAL draws) against probabilities P; cells expecting
 * fewer than 5 draws are pooled into one. *DOF receives the degrees of freedom. */
double chi_square(const int *counts, const double *p, int n, int total, int *dof);
/* The chi-square value that DOF degrees of freedom exceed with probability 0.001. */
double chi_square_limit(int dof);

#endif
