/* Batches on threads (batch.h). */
#include "train/batch.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "train/ops.h"

train_batch *train_batch_new(const train_model *m, int B, int T, int threads) {
    train_batch *b = kiln_xcalloc(1, sizeof *b);
    if (threads <= 0) threads = omp_get_max_threads();
    b->B = B;
    b->T = T;
    b->n_groups = threads < B ? threads : B;
    b->group_threads = threads / b->n_groups;
    b->first = kiln_xmalloc(sizeof(int) * (b->n_groups + 1));
    b->acts = kiln_xcalloc(b->n_groups, sizeof *b->acts);
    b->grads = kiln_xcalloc(b->n_groups, sizeof *b->grads);
    b->views = kiln_xcalloc(b->n_groups, sizeof *b->views);
    for (int g = 0; g <= b->n_groups; g++) b->first[g] = (int)((long)B * g / b->n_groups);
    for (int g = 0; g < b->n_groups; g++) {
        b->acts[g] = train_acts_new(&m->cfg, b->first[g + 1] - b->first[g], T);
        if (g > 0) {
            b->grads[g] = kiln_xcalloc(m->n_params, sizeof(float));
            train_params_bind(m, b->grads[g], &b->views[g]);
        }
    }
    b->losses = kiln_xmalloc(sizeof(float) * B * T);
    return b;
}

void train_batch_free(train_batch *b) {
    if (!b) return;
    for (int g = 0; g < b->n_groups; g++) {
        train_acts_free(b->acts[g]);
        if (g > 0) train_params_free(&b->views[g]);
        free(b->grads[g]);
    }
    free(b->first);
    free(b->acts);
    free(b->grads);
    free(b->views);
    free(b->losses);
    free(b);
}

void train_batch_zero_grad(train_model *m, train_batch *b) {
    train_model_zero_grad(m);
    for (int g = 1; g < b->n_groups; g++) op_zero(b->grads[g], m->n_params);
}

/* Group G's share: its sequences through the model, single-threaded or on its group of threads. */
static void run_group(train_model *m, train_batch *b, int g, const int32_t *inputs, const int32_t *targets,
                      float grad_scale) {
    size_t off = (size_t)b->first[g] * b->T;
    train_acts *a = b->acts[g];
    train_forward(m, a, inputs + off, targets + off, grad_scale);
    if (grad_scale != 0) train_backward_into(m, a, inputs + off, g == 0 ? &m->g : &b->views[g]);
    memcpy(b->losses + off, a->losses, sizeof(float) * a->B * b->T);
}

void train_batch_run(train_model *m, train_batch *b, const int32_t *inputs, const int32_t *targets, float grad_scale) {
    if (b->n_groups == 1) {
        run_group(m, b, 0, inputs, targets, grad_scale);
        return;
    }
    /* the operations' own parallel loops run inside: on the group's threads, or on the calling one */
    int levels = omp_get_max_active_levels();
    if (b->group_threads > 1) omp_set_max_active_levels(2);
#pragma omp parallel num_threads(b->n_groups)
    {
        omp_set_num_threads(b->group_threads);
        run_group(m, b, omp_get_thread_num(), inputs, targets, grad_scale);
    }
    omp_set_max_active_levels(levels);
}

void train_batch_reduce(train_model *m, train_batch *b) {
    if (b->n_groups == 1) return;
    /* in blocks, each summed over the groups in order: the same sums as element by element, but the
     * inner loop is one array into another, which vectorises */
    enum { BLOCK = 4096 };
#pragma omp parallel for schedule(static)
    for (size_t i0 = 0; i0 < m->n_params; i0 += BLOCK) {
        size_t n = m->n_params - i0 < BLOCK ? m->n_params - i0 : BLOCK;
        float *s = m->grads + i0;
        for (int g = 1; g < b->n_groups; g++) {
            const float *x = b->grads[g] + i0;
#pragma omp simd
            for (size_t i = 0; i < n; i++) s[i] += x[i];
        }
    }
}
