/* CAN (see can.h), written from the paper's algorithm and its reference numpy code's order of
 * operations: power, column normalisation toward the prior, row normalisation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/can.h"
#include "base/error.h"

static int by_value_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Entropy of the K largest values of ROW (M of them), renormalised, divided by log K. */
static double topk_entropy(const double *row, int m, int k, double *scratch) {
    memcpy(scratch, row, sizeof(double) * m);
    qsort(scratch, m, sizeof(double), by_value_desc);
    double sum = 0, h = 0;
    for (int i = 0; i < k; i++) sum += scratch[i];
    for (int i = 0; i < k; i++) {
        double q = scratch[i] / sum;
        if (q > 0) h -= q * log(q);
    }
    return h / log((double)k);
}

int kiln_can(double *p, int n, int m, const double *prior, const kiln_can_params *c, uint8_t *adjusted) {
    if (m < 2) return kiln_fail("CAN needs at least 2 classes (got %d)", m);
    if (c->top_k < 2 || c->top_k > m) return kiln_fail("CAN top-k %d must be 2 to %d (the classes)", c->top_k, m);
    if (!(c->threshold >= 0 && c->threshold <= 1)) return kiln_fail("CAN threshold %g must be 0 to 1", c->threshold);
    if (!(c->alpha > 0)) return kiln_fail("CAN alpha %g must be > 0", c->alpha);
    if (c->iters < 1) return kiln_fail("CAN iterations %d must be >= 1", c->iters);
    double *scratch = kiln_xmalloc(sizeof(double) * m);
    uint8_t *unsure = kiln_xcalloc(n ? n : 1, 1);
    int n_sure = 0;
    for (int i = 0; i < n; i++) {
        unsure[i] = topk_entropy(p + (size_t)i * m, m, c->top_k, scratch) >= c->threshold;
        n_sure += !unsure[i];
    }
    /* L: the confident rows (as they were), then one uncertain row */
    double *L = kiln_xmalloc(sizeof(double) * (n_sure + 1) * m), *col = kiln_xmalloc(sizeof(double) * m);
    for (int i = 0, r = 0; i < n; i++)
        if (!unsure[i]) memcpy(L + (size_t)r++ * m, p + (size_t)i * m, sizeof(double) * m);
    double *sure = kiln_xmalloc(sizeof(double) * (n_sure + 1) * m);
    memcpy(sure, L, sizeof(double) * n_sure * m);
    for (int i = 0; i < n; i++) {
        if (!unsure[i]) continue;
        memcpy(L, sure, sizeof(double) * n_sure * m);
        memcpy(L + (size_t)n_sure * m, p + (size_t)i * m, sizeof(double) * m);
        int rows = n_sure + 1;
        for (int it = 0; it < c->iters; it++) {
            memset(col, 0, sizeof(double) * m);
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < m; j++) {
                    double *x = &L[(size_t)r * m + j];
                    *x = pow(*x, c->alpha);
                    col[j] += *x;
                }
            for (int r = 0; r < rows; r++) {
                double sum = 0;
                for (int j = 0; j < m; j++) {
                    double *x = &L[(size_t)r * m + j];
                    *x = col[j] > 0 ? *x / col[j] * prior[j] : 0;
                    sum += *x;
                }
                for (int j = 0; j < m && sum > 0; j++) L[(size_t)r * m + j] /= sum;
            }
        }
        memcpy(p + (size_t)i * m, L + (size_t)n_sure * m, sizeof(double) * m);
    }
    if (adjusted) memcpy(adjusted, unsure, n);
    free(scratch), free(unsure), free(L), free(col), free(sure);
    return 0;
}
