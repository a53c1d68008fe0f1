/* The greedy step both quant_greedy_*.c programs print: the top token of N_VOCAB logits LG, the runner-up,
 * their margin and the top logit, "token runner_up margin top_logit"; returns the top token. */
#ifndef KILN_TESTS_REF_GREEDY_TOP2_H
#define KILN_TESTS_REF_GREEDY_TOP2_H

#include <stdio.h>

static int greedy_top2_print(const float *lg, int n_vocab) {
    int a = 0, b;
    for (int i = 1; i < n_vocab; i++)
        if (lg[i] > lg[a]) a = i;
    b = a == 0;
    for (int i = 0; i < n_vocab; i++)
        if (i != a && lg[i] > lg[b]) b = i;
    printf("%d %d %.6f %.6f\n", a, b, lg[a] - lg[b], lg[a]);
    return a;
}

#endif
