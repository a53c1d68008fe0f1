/* Turning processed candidates into a token: the argmax, a draw, probabilities and log-probabilities. */
#ifndef KILN_DECODE_SAMPLE_H
#define KILN_DECODE_SAMPLE_H

#include "decode/processor.h"

/* Draws a token from the softmax of C's candidates, U uniform in [0, 1); sets *LOGPROB to its
 * log-probability. -1 when every token has been removed. */
int decode_draw(decode_cands *c, double u, double *logprob);
/* The log-probability of token T under the softmax of C's candidates (-INFINITY when removed). */
double decode_logprob(decode_cands *c, int t);
/* The candidates' distribution as N_VOCAB probabilities in P: the softmax, or when GREEDY all the mass
 * on the argmax. Returns the argmax (-1 when every token has been removed). */
int decode_probs(decode_cands *c, int greedy, float *p);

#endif
