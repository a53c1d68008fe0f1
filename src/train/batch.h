/* Running a batch on the threads: each thread takes a share of the batch's sequences through the whole
 * forward and backward pass on its own, into its own gradient buffer, and the buffers are summed once
 * per optimizer step. Threads meet twice a step instead of at every operation: on a machine whose
 * cores other processes also want, a thread that is made to wait holds up a barrier once, not a few
 * hundred times. (With more threads than sequences, groups of threads share a sequence range and the
 * operations split their work among the group.) */
#ifndef KILN_TRAIN_BATCH_H
#define KILN_TRAIN_BATCH_H

#include "train/model.h"

typedef struct {
    int B, T;
    int n_groups, group_threads; /* groups of threads, threads per group */
    int *first;                  /* first sequence of each group; first[n_groups] == B */
    train_acts **acts;           /* each group's activations */
    float **grads;               /* group g > 0: its own gradient buffer (group 0 adds into m->grads) */
    train_params *views;         /* views of grads[g] */
    float *losses;               /* B x T: each token's loss after train_batch_run */
} train_batch;

/* A runner for B x T tokens on THREADS threads (0: OpenMP's default). */
train_batch *train_batch_new(const train_model *m, int B, int T, int threads);
void train_batch_free(train_batch *b);

/* Zeroes m's gradients and the groups' buffers. */
void train_batch_zero_grad(train_model *m, train_batch *b);
/* Forward pass of B x T tokens (losses into b->losses); when GRAD_SCALE is not 0, the backward pass too,
 * adding the gradient of grad_scale * sum(losses) to the groups' buffers. */
void train_batch_run(train_model *m, train_batch *b, const int32_t *inputs, const int32_t *targets, float grad_scale);
/* Adds the groups' gradient buffers into m->grads, in group order (call once before the update). */
void train_batch_reduce(train_model *m, train_batch *b);

#endif
