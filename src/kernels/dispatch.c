/* Run-time dispatch of the kernels to the best implementation this CPU supports, and the threaded
 * drivers of the matrix-vector product and rope (gemm.c and attention.c hold the other two).
 *
 * The table is chosen once: the best of avx512 > avx2 > scalar that the CPU (and OS) supports, capped by
 * KILN_ISA. Threads are kiln's pool (base/pool.h): the rows of a product are handed out in chunks,
 * large first, then smaller down to ~32 KiB of weights (see pool.h). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/pool.h"
#include "kernels/isa.h"
#include "kernels/kernels.h"
#include "kernels/quant_isa.h"

const kiln_kernels kiln_kernels_scalar = {
    .name = "scalar",
    .rmsnorm = kiln_rmsnorm_ref,
    .layernorm = kiln_layernorm_ref,
    .softmax = kiln_softmax_ref,
    .gelu = kiln_gelu_ref,
    .swiglu = kiln_swiglu_ref,
};

static const kiln_kernels *supported[4];
static const kiln_kernels *active;
static pthread_once_t chosen = PTHREAD_ONCE_INIT;

/* Rank of an instruction set by name, best first; -1 for a name that is none of them. */
static int isa_rank(const char *name) {
    static const char *const order[] = {"avx512", "avx2", "scalar"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, order[i]) == 0) return i;
    return -1;
}

static void choose(void) {
    int n = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("f16c"))
        supported[n++] = &kiln_kernels_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        supported[n++] = &kiln_kernels_avx2;
    supported[n++] = &kiln_kernels_scalar;
    supported[n] = NULL;
    active = supported[0];
    const char *cap = getenv("KILN_ISA");
    if (!cap || !*cap) return;
    int cap_rank = isa_rank(cap);
    if (cap_rank < 0) {
        fprintf(stderr, "kiln: KILN_ISA=%s is not one of avx512, avx2, scalar; ignored\n", cap);
        return;
    }
    for (int i = 0; supported[i]; i++)
        if (isa_rank(supported[i]->name) >= cap_rank) {
            active = supported[i];
            return;
        }
}

const kiln_kernels *const *kiln_kernels_supported(void) {
    pthread_once(&chosen, choose);
    return supported;
}

const kiln_kernels *kiln_kernels_active(void) {
    pthread_once(&chosen, choose);
    return active;
}

const char *kiln_isa(void) { return kiln_kernels_active()->name; }

/* Rows r0..r1 of the product of T <= matvecs_max tokens, each weight row read once. */
static void matvec_rows(const kiln_kernels *kk, float *Y, const float *X, const void *W, int type, int T, int N, int K,
                        int r0, int r1) {
    if (T == 1) kk->matvec(Y, X, W, type, r0, r1, K);
    else kk->matvecs(Y, (size_t)N, X, T, W, type, r0, r1, K);
}

typedef struct {
    const kiln_kernels *kk;
    float *Y;
    const float *X;
    const void *W;
    int type, T, N, K;
} matvec_job;

static void matvec_chunk(void *p, int r0, int r1, int tid) {
    const matvec_job *j = p;
    matvec_rows(j->kk, j->Y, j->X, j->W, j->type, j->T, j->N, j->K, r0, r1);
}

void kiln_matmul_with(const kiln_kernels *kk, float *Y, const float *X, const void *W, int type, int T, int N,
                      int K) {
    if (T <= 0 || N <= 0) return;
    if (kiln_quant_block(type)) { /* quantized weights: integer kernels of the same level (quant_gemm.c) */
        kiln_qmatmul_with(kiln_qkernels_for(kk->name), Y, X, W, type, T, N, K);
        return;
    }
    size_t ny = (size_t)T * N;
    if (kiln_row_bytes(type, 1) == 0) { /* not a weight type: make the mistake loud, not plausible */
        for (size_t i = 0; i < ny; i++) Y[i] = NAN;
        return;
    }
    if (K <= 0) {
        memset(Y, 0, ny * sizeof *Y);
        return;
    }
    if (!kk->matvec) {
        kiln_matmul_ref(Y, X, W, type, T, N, K);
        return;
    }
    if (T > kk->matvecs_max) {
        kiln_gemm_with(kk, Y, X, W, type, T, N, K);
        return;
    }
    /* Below ~128K weights handing out chunks costs more than the second thread saves. */
    if ((int64_t)N * K < (1 << 17)) {
        matvec_rows(kk, Y, X, W, type, T, N, K, 0, N);
        return;
    }
    matvec_job j = {kk, Y, X, W, type, T, N, K};
    kiln_pool_rows(N, kiln_row_bytes(type, K), matvec_chunk, &j);
}

void kiln_matmul(float *Y, const float *X, const void *W, int type, int T, int N, int K) {
    kiln_matmul_with(kiln_kernels_active(), Y, X, W, type, T, N, K);
}

/* Rope angles of the calling thread's last call: the frequencies depend only on (theta, rot_dim), and q
 * and k are rotated at the same position one after the other, so both are usually reused. The formulas
 * are the reference's, in double, so the rotation is bit-identical to it. */
static _Thread_local struct {
    float theta;
    int rot_dim, pos, style, valid_freq, valid_angles, cap;
    double *freq;
    float *cos, *sin;
} rope_cache;

static void rope_angles(int rot_dim, int pos, float theta, int style) {
    int half = rot_dim / 2;
    if (rope_cache.cap < rot_dim) {
        free(rope_cache.freq);
        free(rope_cache.cos);
        free(rope_cache.sin);
        rope_cache.freq = kiln_xmalloc(sizeof(double) * (size_t)rot_dim);
        rope_cache.cos = kiln_xmalloc(sizeof(float) * (size_t)rot_dim);
        rope_cache.sin = kiln_xmalloc(sizeof(float) * (size_t)rot_dim);
        rope_cache.cap = rot_dim;
        rope_cache.valid_freq = rope_cache.valid_angles = 0;
    }
    if (!rope_cache.valid_freq || rope_cache.theta != theta || rope_cache.rot_dim != rot_dim) {
        for (int i = 0; i < half; i++) rope_cache.freq[i] = pow((double)theta, -2.0 * i / rot_dim);
        rope_cache.theta = theta;
        rope_cache.rot_dim = rot_dim;
        rope_cache.valid_freq = 1;
        rope_cache.valid_angles = 0;
    }
    if (rope_cache.valid_angles && rope_cache.pos == pos && rope_cache.style == style) return;
    for (int i = 0; i < half; i++) {
        double a = pos * rope_cache.freq[i];
        float c = (float)cos(a), s = (float)sin(a);
        if (style == KILN_ROPE_NEOX) {
            rope_cache.cos[i] = c;
            rope_cache.sin[i] = s;
        } else {
            rope_cache.cos[2 * i] = rope_cache.cos[2 * i + 1] = c;
            rope_cache.sin[2 * i] = -s;
            rope_cache.sin[2 * i + 1] = s;
        }
    }
    rope_cache.pos = pos;
    rope_cache.style = style;
    rope_cache.valid_angles = 1;
}

void kiln_rope_with(const kiln_kernels *kk, float *x, int n_heads, int head_dim, int rot_dim, int pos, float theta,
                    int style) {
    if (!kk->rope_apply || rot_dim < 2) {
        kiln_rope_ref(x, n_heads, head_dim, rot_dim, pos, theta, style);
        return;
    }
    rope_angles(rot_dim, pos, theta, style);
    /* An odd last dimension belongs to no pair and stays as it is, as in the reference. */
    kk->rope_apply(x, n_heads, head_dim, rot_dim & ~1, rope_cache.cos, rope_cache.sin, style);
}

void kiln_rope(float *x, int n_heads, int head_dim, int rot_dim, int pos, float theta, int style) {
    kiln_rope_with(kiln_kernels_active(), x, n_heads, head_dim, rot_dim, pos, theta, style);
}

void kiln_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    kiln_kernels_active()->rmsnorm(out, x, w, n, eps);
}
void kiln_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    kiln_kernels_active()->layernorm(out, x, w, b, n, eps);
}
void kiln_softmax(float *x, int n) { kiln_kernels_active()->softmax(x, n); }
/* The activations of a prefill (T x ffn values) run on the worker threads in chunks of ACT_CHUNK; a
 * decoded token's row stays on the calling thread. Each value is computed alone, so the split changes no
 * result. A 512-token prefill of the 110M model spent ~5% of its time in SwiGLU on one thread. */
enum { ACT_CHUNK = 1 << 14 };

typedef struct {
    const kiln_kernels *kk;
    float *x;
    const float *up; /* NULL: GELU */
    int n;
} act_job;

static void act_chunks(void *p, int c0, int c1, int tid) {
    const act_job *j = p;
    for (int c = c0; c < c1; c++) {
        int i0 = c * ACT_CHUNK, m = j->n - i0 < ACT_CHUNK ? j->n - i0 : ACT_CHUNK;
        if (j->up) j->kk->swiglu(j->x + i0, j->up + i0, m);
        else j->kk->gelu(j->x + i0, m);
    }
}

static void activation(float *x, const float *up, int n) {
    const kiln_kernels *kk = kiln_kernels_active();
    if (n < 2 * ACT_CHUNK) {
        if (up) kk->swiglu(x, up, n);
        else kk->gelu(x, n);
        return;
    }
    act_job j = {kk, x, up, n};
    kiln_pool_for((n + ACT_CHUNK - 1) / ACT_CHUNK, 1, act_chunks, &j);
}

void kiln_gelu(float *x, int n) { activation(x, NULL, n); }
void kiln_swiglu(float *gate, const float *up, int n) { activation(gate, up, n); }

void kiln_attention(float *out, const float *Q, const float *K, const float *V, int T, int pos0, int n_heads,
                    int n_kv_heads, int head_dim, int kv_stride, float scale) {
    kiln_attention_with(kiln_kernels_active(), out, Q, K, V, T, pos0, n_heads, n_kv_heads, head_dim, kv_stride,
                        scale);
}
