/* The optimizer: AdamW with decoupled weight decay (only on tensors marked for it), the learning-rate
 * schedule (linear warmup, then cosine decay to a floor), and gradient clipping by global norm.
 * The update is PyTorch's torch.optim.AdamW, term for term, so the golden test can compare steps. */
#ifndef KILN_TRAIN_ADAMW_H
#define KILN_TRAIN_ADAMW_H

#include <stddef.h>
#include <stdint.h>

#include "train/model.h"

typedef struct {
    float beta1, beta2, eps, weight_decay;
} adamw_opts;

typedef struct {
    size_t n;
    float *m, *v;  /* first and second moments, one per parameter */
    int64_t t;     /* updates done */
} adamw_state;

void adamw_init(adamw_state *s, size_t n);
void adamw_free(adamw_state *s);

/* Learning rate at STEP (0-based): LR * (step + 1) / warmup during warmup, then cosine from LR down to
 * LR * MIN_RATIO at step TOTAL - 1 (and after). */
float train_lr(int64_t step, int64_t warmup, int64_t total, float lr, float min_ratio);

/* The global L2 norm of the N gradients (summed in double). */
double train_grad_norm(const float *g, size_t n);
/* The factor PyTorch's clip_grad_norm_ scales gradients by: min(1, max_norm / (norm + 1e-6)); 1 when
 * MAX_NORM is 0 (no clipping). */
float train_clip_scale(double norm, float max_norm);

/* One AdamW step on every parameter of M with its gradient times GRAD_SCALE (the clip factor). */
void adamw_step(train_model *m, adamw_state *s, const adamw_opts *o, float lr, float grad_scale);

#endif
