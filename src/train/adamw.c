/* AdamW, the learning-rate schedule and gradient clipping. */
#include "train/adamw.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
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

/* The widest vector of the build's target. GCC does not vectorise sqrtf (it keeps the call that would
 * set errno), and scalar the update took 4% of a training step, four times its memory traffic; vector
 * square roots, divisions and products round exactly as scalar ones, so both give the same bits. */
#if defined(__AVX512F__)
typedef __m512 vfloat;
#define vsqrt _mm512_sqrt_ps
#elif defined(__AVX__)
typedef __m256 vfloat;
#define vsqrt _mm256_sqrt_ps
#else
typedef __m128 vfloat;
#define vsqrt _mm_sqrt_ps
#endif
enum { VW = sizeof(vfloat) / sizeof(float) };

/* One thread's share of a tensor: N parameters. */
static void adamw_update(float *p, const float *g, float *mm, float *vv, size_t n, const adamw_opts *o,
                         float grad_scale, float decay, float step_size, float bc2_sqrt) {
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    size_t j = 0;
    for (; j + VW <= n; j += VW) {
        vfloat gj, mj, vj, pj;
        memcpy(&gj, g + j, sizeof gj);
        memcpy(&mj, mm + j, sizeof mj);
        memcpy(&vj, vv + j, sizeof vj);
        memcpy(&pj, p + j, sizeof pj);
        gj = gj * grad_scale;
        mj = b1 * mj + (1.0f - b1) * gj;
        vj = b2 * vj + (1.0f - b2) * gj * gj;
        pj = pj * decay - step_size * mj / (vsqrt(vj) / bc2_sqrt + eps);
        memcpy(mm + j, &mj, sizeof mj);
        memcpy(vv + j, &vj, sizeof vj);
        memcpy(p + j, &pj, sizeof pj);
    }
    for (; j < n; j++) {
        float gj = g[j] * grad_scale;
        mm[j] = b1 * mm[j] + (1.0f - b1) * gj;
        vv[j] = b2 * vv[j] + (1.0f - b2) * gj * gj;
        p[j] = p[j] * decay - step_size * mm[j] / (sqrtf(vv[j]) / bc2_sqrt + eps);
    }
}

void adamw_step(train_model *m, adamw_state *s, const adamw_opts *o, float lr, float grad_scale) {
    s->t++;
    /* as torch.optim.AdamW: p *= 1 - lr wd; p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps) */
    double bc1 = 1.0 - pow(o->beta1, (double)s->t), bc2 = 1.0 - pow(o->beta2, (double)s->t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
#pragma omp parallel /* one team for all tensors: a barrier per tensor would cost more than small ones */
    {
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        for (int i = 0; i < m->n_tensors; i++) {
            const train_tensor *t = &m->tensors[i];
            /* each thread a contiguous share, in whole 64-byte lines */
            size_t share = (t->n + nt - 1) / nt, lo = (share + 15) / 16 * 16 * id, hi = lo + (share + 15) / 16 * 16;
            if (hi > t->n) hi = t->n;
            if (lo >= hi) continue;
            float decay = t->decay ? (float)(1.0 - (double)lr * o->weight_decay) : 1.0f;
            adamw_update(m->params + t->off + lo, m->grads + t->off + lo, s->m + t->off + lo, s->v + t->off + lo,
                         hi - lo, o, grad_scale, decay, step_size, bc2_sqrt);
        }
    }
}
