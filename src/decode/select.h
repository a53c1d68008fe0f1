/* The loops over the whole vocabulary that processors and searches share: exponentials, top-m
 * selection and "smallest prefix reaching a mass" selection. Each costs a few vectorised passes or a
 * partial selection, never a full sort of the vocabulary, so that the processor chain stays a small
 * fraction of a decode step even with a 152k vocabulary.
 *
 * One order ranks tokens everywhere: larger value first, and among equal values the lower token id. */
#ifndef KILN_DECODE_SELECT_H
#define KILN_DECODE_SELECT_H

#include <stdint.h>

/* A token with the value it is ranked by (KEY) and its probability mass (W, unnormalised). */
typedef struct {
    float key;
    float w;
    int32_t id;
} decode_item;

/* OUT[i] = exp(X[i] - SHIFT) for the N values, 0 for -inf; returns their sum. Vectorised, and the same
 * result whatever the thread count (one thread, fixed order). */
double decode_exp(float *out, const float *x, float shift, int n);
/* The same for the tokens IDS[0..N): OUT[IDS[i]] = exp(X[IDS[i]] - SHIFT). */
double decode_exp_ids(float *out, const float *x, const int32_t *ids, int n, float shift);

/* The M best finite entries of VALUE (VALUE[IDS[i]] for i < N, or VALUE[0..N) when IDS is NULL), by the
 * order above, written to OUT in no particular order. Returns how many (< M when fewer are finite).
 * A heap of M entries, with a vectorised pre-check that skips blocks holding nothing better. */
int decode_top(const float *value, const int32_t *ids, int n, int m, int32_t *out);

/* The entries (as decode_top reads them) whose value is >= MIN, in index order, written to OUT;
 * returns how many. */
int decode_collect_ge(const float *value, const int32_t *ids, int n, float min, int32_t *out);

/* Reorders IT so that IT[0..K) are the first K items in order (quickselect). */
void decode_partition(decode_item *it, int n, int k);

/* Reorders IT so that IT[0..m) are the items whose predecessors in order weigh less than TARGET, and
 * returns m: the smallest prefix whose weight reaches TARGET, the item that crosses it included (all
 * N when the total stays below). Expected O(N): a quickselect that recurses on the side holding the
 * crossing. */
int decode_select_mass(decode_item *it, int n, double target);

#endif
