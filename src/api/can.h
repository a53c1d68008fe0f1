/* Classification with Alternating Normalization (CAN; Jia, Su et al., "When in Doubt: Improving
 * Classification Performance with Alternating Normalization", Findings of EMNLP 2021), the
 * post-processing `kiln classify --can` applies to zero-shot predictions.
 *
 * A prediction is uncertain when the entropy of its top-K probabilities (renormalised, divided by
 * log K) is at least THRESHOLD. Each uncertain prediction b is re-estimated with the confident ones A:
 * L = [A; b], then ITERS times: L = L^ALPHA (element-wise), each column scaled to sum to the class
 * prior, each row scaled to sum to one; b becomes the last row of L. Confident predictions stay. */
#ifndef KILN_API_CAN_H
#define KILN_API_CAN_H

#include <stdint.h>

typedef struct {
    int top_k;              /* entropy over the K largest probabilities (>= 2, <= classes) */
    double threshold;       /* in [0, 1]: uncertain when the normalised top-K entropy is >= this */
    double alpha;           /* > 0 */
    int iters;              /* >= 1 */
} kiln_can_params;

/* Rewrites the uncertain rows of P (N rows of M probabilities) in place; PRIOR: M values summing to 1.
 * ADJUSTED[i] (when not NULL) is set to whether row i was uncertain. -1 with a message on bad params. */
int kiln_can(double *p, int n, int m, const double *prior, const kiln_can_params *c, uint8_t *adjusted);

#endif
