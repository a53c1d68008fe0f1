/* AdamW, the learning-rate schedule and gradient clipping. */
#include "train/adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

void adamw_init(adamw_state *s, size_t n) {
    s->n = n;
    s->m = kiln_xcalloc(n, sizeof(float));
    s->v = kiln_xcalloc(n, sizeof(float));
    s->t = 0;
}

void adamw_free(adamw_state *s) {
    free(s->m);
    free(s->v);
    memset(s, 0, sizeof *s);
}

float train_lr(int64_t step, int64_t warmup, int64_t total, float lr, float min_ratio) {
    if (step < warmup) return (float)((double)lr * (step + 1) / warmup);
    int64_t span = total - 1 - warmup;
    double progress = span > 0 ? (double)(step - warmup) / span : 1.0;
    if (progress > 1) progress = 1;
    double lo = (double)lr * min_ratio;
    return (float)(lo + 0.5 * ((double)lr - lo) * (1.0 + cos(M_PI * progress)));
}

double train_grad_norm(const float *g, size_t n) {
    double s = 0;
#pragma omp parallel for simd reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

float train_clip_scale(double norm, float max_norm) {
    if (max_norm <= 0) return 1.0f;
    double k = max_norm / (norm + 1e-6);
    return k < 1 ? (float)k : 1.0f;
}

void adamw_step(train_model *m, adamw_state *s, const adamw_opts *o, float lr, float grad_scale) {
    s->t++;
    /* as torch.optim.AdamW: p *= 1 - lr wd; p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps) */
    double bc1 = 1.0 - pow(o->beta1, (double)s->t), bc2 = 1.0 - pow(o->beta2, (double)s->t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
#pragma omp parallel /* one team for all tensors: a barrier per tensor would cost more than small ones */
    for (int i = 0; i < m->n_tensors; i++) {
        const train_tensor *t = &m->tensors[i];
        float *p = m->params + t->off, *g = m->grads + t->off, *mm = s->m + t->off, *vv = s->v + t->off;
        float decay = t->decay ? (float)(1.0 - (double)lr * o->weight_decay) : 1.0f;
#pragma omp for simd schedule(static) nowait
        for (size_t j = 0; j < t->n; j++) {
            float gj = g[j] * grad_scale;
            mm[j] = o->beta1 * mm[j] + (1.0f - o->beta1) * gj;
            vv[j] = o->beta2 * vv[j] + (1.0f - o->beta2) * gj * gj;
            p[j] = p[j] * decay - step_size * mm[j] / (sqrtf(vv[j]) / bc2_sqrt + o->eps);
        }
    }
}
