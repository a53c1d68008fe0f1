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

typedef int v16i __attribute__((vector_size(64)));

static inline v16 vselect(v16i keep, v16 a, v16 b) { return (v16)(((v16i)a & keep) | ((v16i)b & ~keep)); }

static inline v16 vsplat(float x) { return (v16){0} + x; }

/* op_expf on 16 lanes, in the same steps */
static inline v16 vexp(v16 x) {
    v16 hi = vsplat(88.3f), lo = vsplat(-87.3f);
    v16 xc = vselect(x > hi, hi, vselect(x < lo, lo, x));
    v16 n = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;
    v16 r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    v16 p = r * (1.0f / 5040) + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    v16 scale = (v16)((__builtin_convertvector(n, v16i) + 127) << 23);
    return vselect(x < lo, vsplat(0), p * scale);
}

static const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* One row of the forward pass: P[0..Jp) = exp(S - max) over the first N_KEYS scores (the row's causal
 * keys), 0 after them; returns the sum, and the max in *MX. Written with vectors: OpenMP's simd
 * reductions keep their partial results in memory, a store and a load on every step. */
static float softmax_row(float *p, const float *s, int n_keys, int Jp, float *mx) {
    v16 m = vsplat(-INFINITY);
    for (int j = 0; j < Jp; j += VL) {
        v16 x = vselect(lane + j < n_keys, vload(s + j), vsplat(-INFINITY));
        m = vselect(x > m, x, m);
    }
    float top = m[0];
    for (int i = 1; i < VL; i++) top = m[i] > top ? m[i] : top;
    v16 sum = vsplat(0);
    for (int j = 0; j < Jp; j += VL) {
        v16 e = vselect(lane + j < n_keys, vexp(vload(s + j) - top), vsplat(0));
        vstore(p + j, e);
        sum += e;
    }
    float total = 0;
    for (int i = 0; i < VL; i++) total += sum[i];
    *mx = top;
    return total;
}

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

/* Copies T rows of HD floats, SRC_STRIDE apart, into rows DST_STRIDE apart (padding stays as it is),
 * scaled. */
static void copy_rows(float *dst, const float *src, int T, int HD, int dst_stride, int src_stride, float scale) {
    for (int t = 0; t < T; t++) {
        float *d = dst + (size_t)t * dst_stride;
        const float *x = src + (size_t)t * src_stride;
#pragma omp simd
        for (int i = 0; i < HD; i++) d[i] = scale * x[i];
    }
}

/* DST = SRC^T for ROWS x COLS SRC (both multiples of 16), a 16 x 16 tile at a time in registers. A
 * tile is transposed in four rounds: the round of width b swaps, in every 2b x 2b block, the top-right
 * b x b block with the bottom-left one (rows i and i + b exchange halves), which leaves each b x b
 * block to transpose in the next round. */
static void transpose(float *dst, const float *src, int rows, int cols, int ld_src, int ld_dst) {
    static const v16i lo[4] = { /* row i takes row i + b's left halves into its right halves */
        {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
        {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
        {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
        {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}};
    static const v16i hi[4] = { /* row i + b takes row i's right halves into its left halves */
        {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
        {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
        {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
        {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}};
    for (int r0 = 0; r0 < rows; r0 += 16)
        for (int c0 = 0; c0 < cols; c0 += 16) {
            v16 t[16];
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) t[r] = vload(src + (size_t)(r0 + r) * ld_src + c0);
#pragma GCC unroll 4
            for (int round = 0, b = 8; round < 4; round++, b /= 2)
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) {
                    if (i & b) continue;
                    v16 x = t[i], y = t[i + b];
                    t[i] = __builtin_shuffle(x, y, lo[round]);
                    t[i + b] = __builtin_shuffle(x, y, hi[round]);
                }
#pragma GCC unroll 16
            for (int c = 0; c < 16; c++) vstore(dst + (size_t)(c0 + c) * ld_dst + r0, t[c]);
        }
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

/* Query row m of the block of QB queries from q0 sees keys 0..q0+m (and none past J, the block's last
 * query + 1). The products below skip what no row of an 8-row group sees, so the block on the
 * diagonal costs a triangle, not a square: rows m..m+7 stop at key q0 + m + 8. What they leave out
 * is exactly 0 (or masked), so the results are the same. */
static int keys_seen(int q0, int m, int J) { return q0 + m + 8 < J ? q0 + m + 8 : J; }

/* C (QB x keys, LDC) = A (QB x K, rows SR apart) B (K x keys, LDB): scores and dP. */
static void rows_by_keys(float *C, const float *A, const float *B, int q0, int J, int K, int sr, int ldb, int ldc) {
    for (int m = 0; m < QB; m += 8)
        small_gemm(C + (size_t)m * ldc, A + (size_t)m * sr, B, 8, round_up(keys_seen(q0, m, J), VL), K, sr, 1, ldb,
                   ldc, 0);
}

/* C (QB x N, LDC) = P (QB x keys, LDP) B (keys x N, LDB): O and dQ. */
static void rows_over_keys(float *C, const float *P, const float *B, int q0, int J, int N, int ldp, int ldb, int ldc) {
    for (int m = 0; m < QB; m += 8)
        small_gemm(C + (size_t)m * ldc, P + (size_t)m * ldp, B, 8, N, keys_seen(q0, m, J), ldp, 1, ldb, ldc, 0);
}

/* C (Jp keys x N, LDC) += P^T B, P QB x keys (LDP), B QB x N (LDB): dV and dK. Keys j0..j0+7 are seen
 * from query row j0 - q0 on. The keys of the block's own diagonal (q0 on) are seen first here: with
 * FIRST (the first query head of the kv head) their rows are written, not added to, so nothing needs
 * clearing beforehand. */
static void keys_over_rows(float *C, const float *P, const float *B, int q0, int Jp, int N, int ldp, int ldb, int ldc,
                           int first) {
    for (int j0 = 0; j0 < Jp; j0 += 8) {
        int k0 = j0 > q0 ? j0 - q0 : 0;
        small_gemm(C + (size_t)j0 * ldc, P + j0 + (size_t)k0 * ldp, B + (size_t)k0 * ldb, 8, N, QB - k0, 1, ldp, ldb,
                   ldc, !(first && j0 >= q0));
    }
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
                    rows_by_keys(w.s, w.q + (size_t)q0 * w.hdp, w.kt, q0, J, w.hdp, w.hdp, w.Tp, w.Tp);
                    for (int r = 0; r < QB; r++) {
                        float *p = w.p + (size_t)r * w.Tp, mx;
                        int n_keys = r < rows ? q0 + r + 1 : 0;
                        float sum = softmax_row(p, w.s + (size_t)r * w.Tp, n_keys, Jp, &mx);
                        float inv = n_keys ? 1.0f / sum : 0;
#pragma omp simd
                        for (int j = 0; j < Jp; j++) p[j] *= inv;
                        if (r < rows) lse[((size_t)b * T + q0 + r) * H + h] = mx + logf(sum);
                    }
                    rows_over_keys(w.o, w.p, w.vh, q0, J, w.hdp, w.Tp, w.hdp, w.hdp);
                    copy_rows(out + ((size_t)b * T + q0) * H * HD + (size_t)h * HD, w.o, rows, HD, H * HD, w.hdp,
                              1.0f);
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
                    rows_by_keys(w.s, w.q + (size_t)q0 * w.hdp, w.kt, q0, J, w.hdp, w.hdp, w.Tp, w.Tp);
                    rows_by_keys(w.dp, w.dout + (size_t)q0 * w.hdp, w.vt, q0, J, w.hdp, w.hdp, w.Tp, w.Tp);
                    for (int r = 0; r < QB; r++) {
                        float *s = w.s + (size_t)r * w.Tp, *p = w.p + (size_t)r * w.Tp, *dp = w.dp + (size_t)r * w.Tp;
                        int n_keys = r < rows ? q0 + r + 1 : 0;
                        float l = r < rows ? lse[((size_t)b * T + q0 + r) * H + h] : 0, d = r < rows ? w.d[q0 + r] : 0;
                        for (int j = 0; j < Jp; j += VL) {
                            v16i keep = lane + j < n_keys; /* past the row's keys, s and dp are stale */
                            v16 e = vselect(keep, vexp(vload(s + j) - l), vsplat(0));
                            vstore(p + j, e);
                            vstore(s + j, vselect(keep, e * (vload(dp + j) - d), vsplat(0))); /* s: dS */
                        }
                    }
                    /* dQ = scale dS K */
                    rows_over_keys(w.dq, w.s, w.kh, q0, J, w.hdp, w.Tp, w.hdp, w.hdp);
                    copy_rows(dqkv + ((size_t)b * T + q0) * stride + (size_t)h * HD, w.dq, rows, HD, stride, w.hdp,
                              scale);
                    /* dV += P^T dO and dK += dS^T (scale q): the transposes are strides */
                    keys_over_rows(w.dv, w.p, w.dout + (size_t)q0 * w.hdp, q0, Jp, w.hdp, w.Tp, w.hdp, w.hdp,
                                   h == g * rep);
                    keys_over_rows(w.dk, w.s, w.q + (size_t)q0 * w.hdp, q0, Jp, w.hdp, w.Tp, w.hdp, w.hdp,
                                   h == g * rep);
                }
            }
            float *row = dqkv + (size_t)b * T * stride;
            copy_rows(row + (size_t)(H + g) * HD, w.dk, T, HD, stride, w.hdp, 1.0f);
            copy_rows(row + (size_t)(H + KVH + g) * HD, w.dv, T, HD, stride, w.hdp, 1.0f);
        }
    }
}
