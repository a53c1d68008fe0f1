/* Causal attention for training, forward and backward, in the manner of FlashAttention: the T x T
 * probabilities are never stored. The forward pass keeps only each row's log-sum-exp; the backward
 * pass recomputes the scores of a block of QB queries from it. A thread works on one (sequence,
 * kv head) at a time, so the key and value gradients of a group of query heads need no locks.
 *
 * The head's queries, keys and values are first copied into padded scratch (head dim to a multiple of
 * 16 floats, time to a multiple of QB, zeros in the padding), so one small register-blocked matrix
 * product, written with GCC vector extensions, serves every product of the pass. */
/* -std=c11 turns off the contraction of a * b + c into one fused multiply-add; these kernels want it */
#pragma GCC optimize("fp-contract=fast")

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "train/ops.h"

enum { QB = 32, VL = 16 }; /* queries per block; floats per vector */

typedef float v16 __attribute__((vector_size(64)));

static inline v16 vload(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, v16 v) { memcpy(p, &v, sizeof v); }

/* C[8][NV*16] (+)= A[8][K] B[K][NV*16], with A's elements SR apart along rows and SK apart along k
 * (so a transposed A costs nothing); 8 x NV vector accumulators stay in registers. Each k loads NV
 * vectors of B once and broadcasts 8 elements of A: with NV = 2 that is 10 loads for 16 FMAs, so the
 * FMA units, not the two load ports, set the pace. The empty asm keeps B's vectors in registers: left
 * alone, GCC folds them into the FMAs as memory operands and loads each one 8 times. */
#define DEFINE_KERNEL(NV)                                                                                      \
    static void kernel_8x##NV(float *C, const float *A, const float *B, int K, size_t sr, size_t sk, int ldb,  \
                              int ldc, int add) {                                                              \
        v16 c[8][NV];                                                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) _Pragma("GCC unroll 2") for (int j = 0; j < NV;   \
                                                                                           j++) c[r][j] =    \
            add ? vload(C + (size_t)r * ldc + j * VL) : (v16){0};                                              \
        for (int k = 0; k < K; k++) {                                                                          \
            v16 b[NV];                                                                                         \
            _Pragma("GCC unroll 2") for (int j = 0; j < NV; j++) {                                             \
                b[j] = vload(B + (size_t)k * ldb + j * VL);                                                    \
                __asm__("" : "+v"(b[j]));                                                                      \
            }                                                                                                  \
            _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) {                                              \
                float a = A[r * sr + k * sk];                                                                  \
                _Pragma("GCC unroll 2") for (int j = 0; j < NV; j++) c[r][j] += a * b[j];                      \
            }                                                                                                  \
        }                                                                                                      \
        _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) _Pragma("GCC unroll 2") for (int j = 0; j < NV;   \
                                                                                           j++)              \
            vstore(C + (size_t)r * ldc + j * VL, c[r][j]);                                                     \
    }
DEFINE_KERNEL(2)
DEFINE_KERNEL(1)

/* C (+)= A B for M x K A (element (m, k) at A[m SR + k SK]) and row-major K x N B; M a multiple of 8,
 * N of 16 (the callers' sizes are multiples of 16: QB, padded time, padded head dim). */
static void small_gemm(float *C, const float *A, const float *B, int M, int N, int K, size_t sr, size_t sk, int ldb,
                       int ldc, int add) {
    for (int m = 0; m < M; m += 8) {
        int n = 0;
        for (; n + 2 * VL <= N; n += 2 * VL)
            kernel_8x2(C + (size_t)m * ldc + n, A + m * sr, B + n, K, sr, sk, ldb, ldc, add);
        for (; n < N; n += VL) kernel_8x1(C + (size_t)m * ldc + n, A + m * sr, B + n, K, sr, sk, ldb, ldc, add);
    }
}

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

/* One thread's scratch for one (sequence, kv head): padded copies and block buffers. */
typedef struct {
    int Tp, hdp;
    float *q, *kh, *kt, *vh, *vt;  /* q: Tp x hdp (scaled); kh, vh: Tp x hdp; kt, vt: hdp x Tp */
    float *s, *p, *dp;             /* QB x Tp: scores (then their gradient), probabilities, dP */
    float *o, *dout, *dq, *dk, *dv; /* Tp x hdp (o, dout), QB x hdp (dq), Tp x hdp (dk, dv) */
    float *d;                      /* Tp: rowsum(dout * out) */
} scratch;

/* Each thread keeps its scratch from call to call (OpenMP reuses its threads): fresh memory on every
 * call would cost a page fault per 4 KiB, more than the arithmetic. Zeroed whenever the shape changes,
 * as the padding must stay zero and nothing writes it afterwards. */
static _Thread_local struct {
    float *all;
    int T, HD;
} cache;

static void scratch_init(scratch *w, int T, int HD) {
    w->Tp = round_up(T, QB);
    w->hdp = round_up(HD, VL);
    size_t th = (size_t)w->Tp * w->hdp, bt = (size_t)QB * w->Tp;
    if (cache.T != T || cache.HD != HD) {
        free(cache.all);
        cache.all = kiln_xcalloc(9 * th + 3 * bt + (size_t)QB * w->hdp + w->Tp, sizeof(float));
        cache.T = T, cache.HD = HD;
    }
    float *all = cache.all;
    w->q = all, w->kh = w->q + th, w->kt = w->kh + th, w->vh = w->kt + th, w->vt = w->vh + th;
    w->o = w->vt + th, w->dout = w->o + th, w->dk = w->dout + th, w->dv = w->dk + th;
    w->s = w->dv + th, w->p = w->s + bt, w->dp = w->p + bt;
    w->dq = w->dp + bt, w->d = w->dq + (size_t)QB * w->hdp;
}

/* Copies T rows of HD floats (SRC_STRIDE apart) into DST rows of hdp (padding stays zero), scaled. */
static void copy_rows(float *dst, const float *src, int T, int HD, int hdp, int src_stride, float scale) {
    for (int t = 0; t < T; t++) {
        float *d = dst + (size_t)t * hdp;
        const float *x = src + (size_t)t * src_stride;
#pragma omp simd
        for (int i = 0; i < HD; i++) d[i] = scale * x[i];
    }
}

/* DST = SRC^T for ROWS x COLS SRC (both multiples of 16), in 16 x 16 tiles that stay in cache. */
static void transpose(float *dst, const float *src, int rows, int cols, int ld_src, int ld_dst) {
    for (int r0 = 0; r0 < rows; r0 += 16)
        for (int c0 = 0; c0 < cols; c0 += 16)
            for (int r = r0; r < r0 + 16; r++)
                for (int c = c0; c < c0 + 16; c++) dst[(size_t)c * ld_dst + r] = src[(size_t)r * ld_src + c];
}

/* Loads kv head G of sequence B: kh, kt, vh (and vt for the backward pass). */
static void load_kv(scratch *w, const float *qkv, int b, int g, int T, int H, int KVH, int HD, int with_vt) {
    int stride = (H + 2 * KVH) * HD;
    const float *base = qkv + (size_t)b * T * stride;
    copy_rows(w->kh, base + (size_t)(H + g) * HD, T, HD, w->hdp, stride, 1.0f);
    copy_rows(w->vh, base + (size_t)(H + KVH + g) * HD, T, HD, w->hdp, stride, 1.0f);
    transpose(w->kt, w->kh, w->Tp, w->hdp, w->hdp, w->Tp);
    if (with_vt) transpose(w->vt, w->vh, w->Tp, w->hdp, w->hdp, w->Tp);
}

/* Scores of queries q0..q0+QB-1 against keys 0..J-1 into w->s (QB x Jp, Jp = J rounded up to 16). */
static void block_scores(scratch *w, int q0, int Jp) {
    small_gemm(w->s, w->q + (size_t)q0 * w->hdp, w->kt, QB, Jp, w->hdp, w->hdp, 1, w->Tp, w->Tp, 0);
}

void op_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int H, int KVH, int HD) {
    int rep = H / KVH, stride = (H + 2 * KVH) * HD;
    float scale = 1.0f / sqrtf((float)HD);
#pragma omp parallel
    {
        scratch w;
        scratch_init(&w, T, HD);
#pragma omp for schedule(dynamic)
        for (int task = 0; task < B * KVH; task++) {
            int b = task / KVH, g = task % KVH;
            load_kv(&w, qkv, b, g, T, H, KVH, HD, 0);
            for (int h = g * rep; h < (g + 1) * rep; h++) {
                copy_rows(w.q, qkv + (size_t)b * T * stride + (size_t)h * HD, T, HD, w.hdp, stride, scale);
                for (int q0 = 0; q0 < T; q0 += QB) {
                    int rows = T - q0 < QB ? T - q0 : QB, J = q0 + rows, Jp = round_up(J, VL);
                    block_scores(&w, q0, Jp);
                    for (int r = 0; r < QB; r++) {
                        float *s = w.s + (size_t)r * w.Tp, *p = w.p + (size_t)r * w.Tp;
                        int n_keys = r < rows ? q0 + r + 1 : 0;
                        float mx = -INFINITY, sum = 0;
#pragma omp simd reduction(max : mx)
                        for (int j = 0; j < n_keys; j++) mx = s[j] > mx ? s[j] : mx;
#pragma omp simd reduction(+ : sum)
                        for (int j = 0; j < n_keys; j++) {
                            p[j] = op_expf(s[j] - mx);
                            sum += p[j];
                        }
                        float inv = n_keys ? 1.0f / sum : 0;
#pragma omp simd
                        for (int j = 0; j < n_keys; j++) p[j] *= inv;
                        for (int j = n_keys; j < Jp; j++) p[j] = 0;
                        if (r < rows) lse[((size_t)b * T + q0 + r) * H + h] = mx + logf(sum);
                    }
                    small_gemm(w.o, w.p, w.vh, QB, w.hdp, Jp, w.Tp, 1, w.hdp, w.hdp, 0);
                    for (int r = 0; r < rows; r++)
                        memcpy(out + ((size_t)b * T + q0 + r) * H * HD + (size_t)h * HD, w.o + (size_t)r * w.hdp,
                               sizeof(float) * HD);
                }
            }
        }
    }
}

void op_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out, const float *lse, int B,
                           int T, int H, int KVH, int HD) {
    int rep = H / KVH, stride = (H + 2 * KVH) * HD, width = H * HD;
    float scale = 1.0f / sqrtf((float)HD);
#pragma omp parallel
    {
        scratch w;
        scratch_init(&w, T, HD);
#pragma omp for schedule(dynamic)
        for (int task = 0; task < B * KVH; task++) {
            int b = task / KVH, g = task % KVH;
            load_kv(&w, qkv, b, g, T, H, KVH, HD, 1);
            memset(w.dk, 0, sizeof(float) * w.Tp * w.hdp);
            memset(w.dv, 0, sizeof(float) * w.Tp * w.hdp);
            for (int h = g * rep; h < (g + 1) * rep; h++) {
                const float *ob = out + (size_t)b * T * width + (size_t)h * HD;
                const float *dob = dout + (size_t)b * T * width + (size_t)h * HD;
                copy_rows(w.q, qkv + (size_t)b * T * stride + (size_t)h * HD, T, HD, w.hdp, stride, scale);
                copy_rows(w.dout, dob, T, HD, w.hdp, width, 1.0f);
                for (int t = 0; t < T; t++) {
                    const float *x = dob + (size_t)t * width, *y = ob + (size_t)t * width;
                    float d = 0;
#pragma omp simd reduction(+ : d)
                    for (int i = 0; i < HD; i++) d += x[i] * y[i];
                    w.d[t] = d;
                }
                for (int q0 = 0; q0 < T; q0 += QB) {
                    int rows = T - q0 < QB ? T - q0 : QB, J = q0 + rows, Jp = round_up(J, VL);
                    block_scores(&w, q0, Jp);
                    small_gemm(w.dp, w.dout + (size_t)q0 * w.hdp, w.vt, QB, Jp, w.hdp, w.hdp, 1, w.Tp, w.Tp, 0);
                    for (int r = 0; r < QB; r++) {
                        float *s = w.s + (size_t)r * w.Tp, *p = w.p + (size_t)r * w.Tp, *dp = w.dp + (size_t)r * w.Tp;
                        int n_keys = r < rows ? q0 + r + 1 : 0;
                        float l = r < rows ? lse[((size_t)b * T + q0 + r) * H + h] : 0, d = r < rows ? w.d[q0 + r] : 0;
#pragma omp simd
                        for (int j = 0; j < n_keys; j++) {
                            p[j] = op_expf(s[j] - l);
                            s[j] = p[j] * (dp[j] - d); /* s now holds dS */
                        }
                        for (int j = n_keys; j < Jp; j++) p[j] = s[j] = 0;
                    }
                    /* dQ = scale dS K */
                    small_gemm(w.dq, w.s, w.kh, QB, w.hdp, Jp, w.Tp, 1, w.hdp, w.hdp, 0);
                    copy_rows(dqkv + ((size_t)b * T + q0) * stride + (size_t)h * HD, w.dq, rows, HD, stride, w.hdp,
                              scale);
                    /* dV += P^T dO and dK += dS^T (scale q): the transposes are strides */
                    small_gemm(w.dv, w.p, w.dout + (size_t)q0 * w.hdp, Jp, w.hdp, QB, 1, w.Tp, w.hdp, w.hdp, 1);
                    small_gemm(w.dk, w.s, w.q + (size_t)q0 * w.hdp, Jp, w.hdp, QB, 1, w.Tp, w.hdp, w.hdp, 1);
                }
            }
            for (int t = 0; t < T; t++) {
                float *row = dqkv + ((size_t)b * T + t) * stride;
                memcpy(row + (size_t)(H + g) * HD, w.dk + (size_t)t * w.hdp, sizeof(float) * HD);
                memcpy(row + (size_t)(H + KVH + g) * HD, w.dv + (size_t)t * w.hdp, sizeof(float) * HD);
            }
        }
    }
}
