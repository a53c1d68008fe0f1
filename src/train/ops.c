/* Forward and backward of the trainer's operations (attention is in attention.c). Large matrix
 * products go to BLAS, one call per thread; everything else is OpenMP loops over rows or, for sums
 * over rows, over blocks of columns. */
/* -std=c11 turns off the contraction of a * b + c into one fused multiply-add: the polynomial of
 * op_expf and the GELU around it take a third less time with it */
#pragma GCC optimize("fp-contract=fast")

#include "train/ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <string.h>

#include "kiln.h"

enum { MAX_COL_BLOCK = 1024 }; /* columns per task in sums over rows, at most: their sums live on the stack */

/* BLAS runs single-threaded inside OpenMP's threads, each call on a block of output rows: one pool of
 * threads for the whole pass, where BLAS's own pool would spin against OpenMP's between calls. Blocks
 * are handed out as threads come free, so a thread that another process delays holds up one block, not
 * half the product; but every call repacks the other operand, so blocks are no smaller than needed
 * (alone, a thread makes one call: 30% faster than in blocks of 64 rows). An element's sum runs in the
 * same order whichever thread computes its block. */
static void blas_one_thread(void) { openblas_set_num_threads(1); }

static void blas_init(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_one_thread);
}

/* Rows per block for splitting N rows among this context's threads: about four blocks per thread, at
 * least 128 rows (a multiple of 16), or all N for one thread. */
static int block_rows(int N) {
    int nt = omp_get_max_threads(); /* inside a batch group (batch.c): the group's threads */
    if (nt == 1) return N;
    int rows = (N / (4 * nt) + 15) / 16 * 16;
    return rows < 128 ? 128 : rows;
}

/* Columns per task in sums over rows: an even share of this context's threads, a multiple of 16, at
 * most MAX_COL_BLOCK. Long row pieces read faster than short ones (one thread reads all of a row of
 * up to 1024 columns), and a column's sum runs over the rows in order whatever the split. */
static int col_block(int C) {
    int nt = omp_get_max_threads(), cb = ((C + nt - 1) / nt + 15) / 16 * 16;
    return cb < MAX_COL_BLOCK ? cb : MAX_COL_BLOCK;
}

void op_matmul_forward(float *out, const float *inp, const float *W, const float *b, const float *res, int N, int OC,
                       int IC) {
    blas_init();
    int R = block_rows(N);
#pragma omp parallel for schedule(dynamic, 1) if (R < N)
    for (int lo = 0; lo < N; lo += R) {
        int rows = N - lo < R ? N - lo : R;
        /* OpenBLAS clears C in a pass of its own when beta is 0; starting from the bias and the residual
         * instead costs the same pass and saves adding them afterwards */
        for (int n = lo; n < lo + rows; n++) {
            float *o = out + (size_t)n * OC;
            const float *r = res ? res + (size_t)n * OC : NULL;
            if (r && b) {
#pragma omp simd
                for (int i = 0; i < OC; i++) o[i] = r[i] + b[i];
            } else if (r || b) memcpy(o, r ? r : b, sizeof(float) * OC);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, OC, IC, 1.0f, inp + (size_t)lo * IC, IC, W, IC,
                    b || res ? 1.0f : 0.0f, out + (size_t)lo * OC, OC);
    }
}

/* db[c] += sum over rows of dout[n][c]: each thread owns a block of columns and sums rows in order. */
static void column_sums(float *db, const float *dout, int N, int OC) {
    int cb = col_block(OC);
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < OC; c0 += cb) {
        int nc = OC - c0 < cb ? OC - c0 : cb;
        float acc[MAX_COL_BLOCK];
        for (int c = 0; c < nc; c++) acc[c] = 0;
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC + c0;
#pragma omp simd
            for (int c = 0; c < nc; c++) acc[c] += d[c];
        }
        for (int c = 0; c < nc; c++) db[c0 + c] += acc[c];
    }
}

void op_matmul_backward(float *dinp, float *dW, float *db, const float *dout, const float *inp, const float *W,
                        int N, int OC, int IC, int add_dinp) {
    blas_init();
    int R = block_rows(N), RW = block_rows(OC);
    int n_in = dinp ? (N + R - 1) / R : 0, n_w = (OC + RW - 1) / RW;
    /* blocks of the batch's rows for dinp, then blocks of the weight's rows for dW (each summed over the
     * whole batch) */
#pragma omp parallel for schedule(dynamic, 1) if (n_in + n_w > 1)
    for (int k = 0; k < n_in + n_w; k++) {
        if (k < n_in) {
            int lo = k * R, rows = N - lo < R ? N - lo : R;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, IC, OC, 1.0f, dout + (size_t)lo * OC, OC, W,
                        IC, add_dinp ? 1.0f : 0.0f, dinp + (size_t)lo * IC, IC);
        } else {
            int lo = (k - n_in) * RW, rows = OC - lo < RW ? OC - lo : RW;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, IC, N, 1.0f, dout + lo, OC, inp, IC, 1.0f,
                        dW + (size_t)lo * IC, IC);
        }
    }
    if (db) column_sums(db, dout, N, OC);
}

void op_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                          int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float m = 0, v = 0;
#pragma omp simd reduction(+ : m)
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
#pragma omp simd reduction(+ : v)
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        float s = 1.0f / sqrtf(v / C + eps);
#pragma omp simd
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * w[i] + b[i];
        mean[n] = m;
        rstd[n] = s;
    }
}

void op_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                           const float *mean, const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C, m = mean[n], s = rstd[n];
        /* with xhat = (x - m) s and g = dout * w: dx = s (g - mean(g) - xhat mean(g xhat)) */
        float gm = 0, gxm = 0;
#pragma omp simd reduction(+ : gm, gxm)
        for (int i = 0; i < C; i++) {
            float g = d[i] * w[i];
            gm += g;
            gxm += g * (x[i] - m) * s;
        }
        gm /= C;
        gxm /= C;
#pragma omp simd
        for (int i = 0; i < C; i++) dx[i] += s * (d[i] * w[i] - gm - (x[i] - m) * s * gxm);
    }
    int cb = col_block(C);
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += cb) {
        int nc = C - c0 < cb ? C - c0 : cb;
        float aw[MAX_COL_BLOCK], ab[MAX_COL_BLOCK];
        for (int c = 0; c < nc; c++) aw[c] = ab[c] = 0;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C + c0, *d = dout + (size_t)n * C + c0;
            float m = mean[n], s = rstd[n];
#pragma omp simd
            for (int c = 0; c < nc; c++) {
                aw[c] += d[c] * (x[c] - m) * s;
                ab[c] += d[c];
            }
        }
        for (int c = 0; c < nc; c++) {
            dw[c0 + c] += aw[c];
            db[c0 + c] += ab[c];
        }
    }
}

void op_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < C; i++) ss += x[i] * x[i];
        float s = 1.0f / sqrtf(ss / C + eps);
#pragma omp simd
        for (int i = 0; i < C; i++) o[i] = x[i] * s * w[i];
        rstd[n] = s;
    }
}

void op_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                         const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C, s = rstd[n];
        /* with g = dout * w: dx = s g - x s^3 mean(g x) */
        float gx = 0;
#pragma omp simd reduction(+ : gx)
        for (int i = 0; i < C; i++) gx += d[i] * w[i] * x[i];
        float k = s * s * s * gx / C;
#pragma omp simd
        for (int i = 0; i < C; i++) dx[i] += s * d[i] * w[i] - k * x[i];
    }
    int cb = col_block(C);
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += cb) {
        int nc = C - c0 < cb ? C - c0 : cb;
        float aw[MAX_COL_BLOCK];
        for (int c = 0; c < nc; c++) aw[c] = 0;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C + c0, *d = dout + (size_t)n * C + c0;
            float s = rstd[n];
#pragma omp simd
            for (int c = 0; c < nc; c++) aw[c] += d[c] * x[c] * s;
        }
        for (int c = 0; c < nc; c++) dw[c0 + c] += aw[c];
    }
}

#define GELU_S 0.7978845608f /* sqrt(2 / pi) */
#define GELU_C 0.044715f

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u): one exponential and one division, and no cancellation in
 * 1 + tanh(u) for negative x. sigmoid(-2u) with op_expf capped at e^88 stays finite. */
static inline float gelu_sigmoid(float x) { return 1.0f / (1.0f + op_expf(-2.0f * GELU_S * (x + GELU_C * x * x * x))); }

void op_gelu_forward(float *out, float *dgelu, const float *inp, size_t n) {
    if (!dgelu) {
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < n; i++) out[i] = inp[i] * gelu_sigmoid(inp[i]);
        return;
    }
    /* with s = sigmoid(2u): d/dx x s = s + 2 x s (1 - s) du/dx */
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], s = gelu_sigmoid(x);
        out[i] = x * s;
        dgelu[i] = s + 2.0f * GELU_S * x * s * (1.0f - s) * (1.0f + 3.0f * GELU_C * x * x);
    }
}

void op_gelu_backward(float *dinp, const float *dgelu, const float *dout, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) dinp[i] = dout[i] * dgelu[i];
}

void op_swiglu_forward(float *out, const float *gu, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * F, *u = g + F;
        float *o = out + (size_t)n * F;
#pragma omp simd
        for (int i = 0; i < F; i++) o[i] = g[i] / (1.0f + op_expf(-g[i])) * u[i];
    }
}

void op_swiglu_backward(float *dgu, const float *gu, const float *dout, int N, int F) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * F, *u = g + F, *d = dout + (size_t)n * F;
        float *dg = dgu + (size_t)n * 2 * F, *du = dg + F;
#pragma omp simd
        for (int i = 0; i < F; i++) {
            float sig = 1.0f / (1.0f + op_expf(-g[i]));
            dg[i] = d[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
            du[i] = d[i] * g[i] * sig;
        }
    }
}

void op_rope_table(float *cos_t, float *sin_t, int T, int rot_dim, float theta) {
    int half = rot_dim / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double a = t * pow((double)theta, -2.0 * i / rot_dim); /* as kiln_rope computes it */
            cos_t[(size_t)t * half + i] = (float)cos(a);
            sin_t[(size_t)t * half + i] = (float)sin(a);
        }
}

/* Rotates pairs by +angle (SIGN 1) or -angle (SIGN -1). */
static void rope_rotate(float *x, int N, int T, int row_stride, int n_heads, int head_dim, int rot_dim, int style,
                        const float *cos_t, const float *sin_t, float sign) {
    int half = rot_dim / 2, neox = style == KILN_ROPE_NEOX;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *c = cos_t + (size_t)(n % T) * half, *s = sin_t + (size_t)(n % T) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)n * row_stride + (size_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
                float a0 = v[i0], a1 = v[i1], si = sign * s[i];
                v[i0] = a0 * c[i] - a1 * si;
                v[i1] = a0 * si + a1 * c[i];
            }
        }
    }
}

void op_rope_forward(float *x, int N, int T, int row_stride, int n_heads, int head_dim, int rot_dim, int style,
                     const float *cos_t, const float *sin_t) {
    rope_rotate(x, N, T, row_stride, n_heads, head_dim, rot_dim, style, cos_t, sin_t, 1.0f);
}

void op_rope_backward(float *dx, int N, int T, int row_stride, int n_heads, int head_dim, int rot_dim, int style,
                      const float *cos_t, const float *sin_t) {
    rope_rotate(dx, N, T, row_stride, n_heads, head_dim, rot_dim, style, cos_t, sin_t, -1.0f);
}

void op_embedding_forward(float *x, const int32_t *tokens, const float *wte, const float *wpe, int N, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *o = x + (size_t)n * C;
        const float *e = wte + (size_t)tokens[n] * C, *p = wpe ? wpe + (size_t)(n % T) * C : NULL;
        if (p) {
#pragma omp simd
            for (int i = 0; i < C; i++) o[i] = e[i] + p[i];
        } else memcpy(o, e, sizeof(float) * C);
    }
}

void op_embedding_backward(float *dwte, float *dwpe, const float *dx, const int32_t *tokens, int N, int T, int C,
                           int V) {
    int cb = col_block(C);
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += cb) {
        int nc = C - c0 < cb ? C - c0 : cb;
        for (int n = 0; n < N; n++) {
            const float *d = dx + (size_t)n * C + c0;
            float *e = dwte + (size_t)tokens[n] * C + c0;
#pragma omp simd
            for (int c = 0; c < nc; c++) e[c] += d[c];
            if (dwpe) {
                float *p = dwpe + (size_t)(n % T) * C + c0;
#pragma omp simd
                for (int c = 0; c < nc; c++) p[c] += d[c];
            }
        }
    }
}

void op_zero(float *p, size_t n) {
#pragma omp parallel
    {
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        size_t share = (n + nt - 1) / nt, lo = share * id < n ? share * id : n, hi = lo + share < n ? lo + share : n;
        memset(p + lo, 0, sizeof(float) * (hi - lo));
    }
}

void op_crossentropy(float *losses, float *logits, const int32_t *targets, int N, int V, float dscale) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *z = logits + (size_t)n * V, mx = z[0], sum = 0;
#pragma omp simd reduction(max : mx)
        for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < V; i++) sum += op_expf(z[i] - mx);
        losses[n] = mx + logf(sum) - z[targets[n]];
        if (dscale == 0) continue;
        float k = dscale / sum;
#pragma omp simd
        for (int i = 0; i < V; i++) z[i] = op_expf(z[i] - mx) * k;
        z[targets[n]] -= dscale;
    }
}
