/* The quantized matmul: choice of the kernel table, the threaded decode matrix-vector product and its
 * short-batch form, and the prefill GEMM driver with its packing of weights and activations (layouts in
 * quant_isa.h).
 *
 * GEMM blocking follows gemm.c: the activations are quantized and packed once per call into panels of
 * mr tokens; the threads claim runs of nr-row weight panels (base/pool.h), unpack KC columns of
 * one at a time (they stay in L1) and run the tile over every token panel, accumulating into Y. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "base/pool.h"
#include "kernels/kernels.h"
#include "kernels/quant_isa.h"

enum { KC = 256 }; /* weight columns per unpacked block: a multiple of every block size */

static void matvec_ref(float *y, const kiln_qx *qx, const void *W, int type, int r0, int r1) {
    size_t rb = kiln_quant_row_bytes(type, qx->k);
    for (int i = r0; i < r1; i++) y[i] = kiln_qdot_ref((const char *)W + rb * i, type, qx);
}

const kiln_qkernels kiln_qkernels_scalar = {
    .name = "scalar",
    .quantize_x = kiln_quantize_x_ref,
    .matvec = matvec_ref,
    .matvecs_max = KILN_QMATVECS_MAX,
};

static const kiln_qkernels *supported[5];
static const kiln_qkernels *active;
static pthread_once_t chosen = PTHREAD_ONCE_INIT;

/* avx2-vnni is at the level of avx2 (KILN_ISA=avx2 runs it where the CPU has AVX-VNNI). */
static int isa_level(const char *name) {
    return !strcmp(name, "avx512") ? 0 : !strcmp(name, "avx2") || !strcmp(name, "avx2-vnni") ? 1 : 2;
}

static const kiln_qkernels *best_at_or_below(int level) {
    for (int i = 0; supported[i]; i++)
        if (isa_level(supported[i]->name) >= level) return supported[i];
    return &kiln_qkernels_scalar;
}

static void choose(void) {
    int n = 0;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c"))
        supported[n++] = &kiln_qkernels_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        if (__builtin_cpu_supports("avxvnni")) supported[n++] = &kiln_qkernels_avx2vnni;
        supported[n++] = &kiln_qkernels_avx2;
    }
    supported[n++] = &kiln_qkernels_scalar;
    supported[n] = NULL;
    active = best_at_or_below(isa_level(kiln_isa())); /* never above the float kernels, which KILN_ISA caps */
}

const kiln_qkernels *const *kiln_qkernels_supported(void) {
    pthread_once(&chosen, choose);
    return supported;
}

const kiln_qkernels *kiln_qkernels_active(void) {
    pthread_once(&chosen, choose);
    return active;
}

const kiln_qkernels *kiln_qkernels_for(const char *isa) {
    pthread_once(&chosen, choose);
    return best_at_or_below(isa_level(isa));
}

int kiln_qpack_offset(int type) {
    switch (type) {
    case KILN_TYPE_Q8_0: return 128;
    case KILN_TYPE_Q4_0: return 8;
    case KILN_TYPE_Q6_K: return 32;
    default: return 0;
    }
}

int kiln_qpack_unit(int type) { return type == KILN_TYPE_Q6_K ? 16 : 32; }

/* Scratch of the calling thread, kept between calls (a prefill makes ~85 of them). */
static _Thread_local struct {
    void *raw;
    size_t size;
} scratch;

static char *scratch_bytes(size_t n) {
    if (n + 64 > scratch.size) {
        free(scratch.raw);
        scratch.raw = kiln_xmalloc(n + 64);
        scratch.size = n + 64;
    }
    return (char *)(((uintptr_t)scratch.raw + 63) & ~(uintptr_t)63);
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* ---- weights: one row's KC columns as stored values plus OFF, unit scales and (Q4_K) unit mins ----
 * Values come out as 16-bit (the wide tables' operands) or as bytes, which with the offset of the type
 * are the unsigned operands of vpdpbusd. The byte forms are written 16 or 32 at a time: a prefill
 * unpacks every weight once per call, as many bytes as the tile reads per token panel. */

static void unpack_row(int type, const void *row, int k0, int kc, int off, int16_t *v, uint8_t *u, float *s,
                       float *m) {
    switch (type) {
    case KILN_TYPE_Q8_0:
        for (int b = 0; b < kc / 32; b++) {
            const kiln_block_q8_0 *blk = (const kiln_block_q8_0 *)row + k0 / 32 + b;
            if (u) /* offset 128: the sign bit flipped, 8 bytes at a time */
                for (int j = 0; j < 32; j += 8) {
                    uint64_t q;
                    memcpy(&q, blk->qs + j, 8);
                    q ^= 0x8080808080808080u;
                    memcpy(u + 32 * b + j, &q, 8);
                }
            else
                for (int j = 0; j < 32; j++) v[32 * b + j] = blk->qs[j];
            s[b] = kiln_f16_to_f32(blk->d);
        }
        break;
    case KILN_TYPE_Q4_0:
        for (int b = 0; b < kc / 32; b++) {
            const kiln_block_q4_0 *blk = (const kiln_block_q4_0 *)row + k0 / 32 + b;
            if (u) /* offset 8: the nibbles themselves, 8 bytes at a time */
                for (int j = 0; j < 16; j += 8) {
                    uint64_t q, lo, hi;
                    memcpy(&q, blk->qs + j, 8);
                    lo = q & 0x0f0f0f0f0f0f0f0fu;
                    hi = q >> 4 & 0x0f0f0f0f0f0f0f0fu;
                    memcpy(u + 32 * b + j, &lo, 8);
                    memcpy(u + 32 * b + j + 16, &hi, 8);
                }
            else
                for (int j = 0; j < 16; j++) {
                    v[32 * b + j] = (int16_t)((blk->qs[j] & 15) - 8);
                    v[32 * b + j + 16] = (int16_t)((blk->qs[j] >> 4) - 8);
                }
            s[b] = kiln_f16_to_f32(blk->d);
        }
        break;
    case KILN_TYPE_Q4_K: {
        const kiln_block_q4_k *blk = (const kiln_block_q4_k *)row + k0 / 256;
        float d = kiln_f16_to_f32(blk->d), dmin = kiln_f16_to_f32(blk->dmin);
        uint64_t scs, ms;
        kiln_q4k_unpack_scales(blk->scales, &scs, &ms);
        for (int sb = 0; sb < 8; sb++) {
            s[sb] = d * (int)(scs >> 8 * sb & 0xff);
            m[sb] = dmin * (int)(ms >> 8 * sb & 0xff);
            const uint8_t *q = blk->qs + 32 * (sb / 2);
            if (u) { /* offset 0: the nibbles themselves, 8 bytes at a time (sub-blocks 2g, 2g+1 share q) */
                for (int l = 0; l < 32 && !(sb & 1); l += 8) {
                    uint64_t w, lo, hi;
                    memcpy(&w, q + l, 8);
                    lo = w & 0x0f0f0f0f0f0f0f0fu;
                    hi = w >> 4 & 0x0f0f0f0f0f0f0f0fu;
                    memcpy(u + 32 * sb + l, &lo, 8);
                    memcpy(u + 32 * sb + 32 + l, &hi, 8);
                }
            } else
                for (int l = 0; l < 32; l++) v[32 * sb + l] = (int16_t)(sb & 1 ? q[l] >> 4 : q[l] & 15);
        }
        break;
    }
    case KILN_TYPE_Q6_K: {
        const kiln_block_q6_k *blk = (const kiln_block_q6_k *)row + k0 / 256;
        float d = kiln_f16_to_f32(blk->d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = blk->ql + 64 * h, *qh = blk->qh + 32 * h;
            if (u) /* offset 32: the 6-bit values themselves, 8 bytes at a time; the high bit pairs of the
                    * 4 values of qh[l] moved to bits 4-5 within each byte */
                for (int l = 0; l < 32; l += 8) {
                    uint64_t a, b, H, c[4];
                    memcpy(&a, ql + l, 8);
                    memcpy(&b, ql + l + 32, 8);
                    memcpy(&H, qh + l, 8);
                    c[0] = (a & 0x0f0f0f0f0f0f0f0fu) | (H & 0x0303030303030303u) << 4;
                    c[1] = (b & 0x0f0f0f0f0f0f0f0fu) | (H & 0x0c0c0c0c0c0c0c0cu) << 2;
                    c[2] = (a >> 4 & 0x0f0f0f0f0f0f0f0fu) | (H & 0x3030303030303030u);
                    c[3] = (b >> 4 & 0x0f0f0f0f0f0f0f0fu) | (H >> 2 & 0x3030303030303030u);
                    for (int j = 0; j < 4; j++) memcpy(u + 128 * h + 32 * j + l, &c[j], 8);
                }
            else
                for (int l = 0; l < 32; l++) {
                    v[128 * h + l] = (int16_t)(((ql[l] & 15) | (qh[l] & 3) << 4) - 32);
                    v[128 * h + l + 32] = (int16_t)(((ql[l + 32] & 15) | (qh[l] >> 2 & 3) << 4) - 32);
                    v[128 * h + l + 64] = (int16_t)(((ql[l] >> 4) | (qh[l] >> 4 & 3) << 4) - 32);
                    v[128 * h + l + 96] = (int16_t)(((ql[l + 32] >> 4) | (qh[l] >> 6) << 4) - 32);
                }
        }
        for (int sb = 0; sb < 16; sb++) s[sb] = d * blk->scales[sb];
        break;
    }
    }
}

typedef struct {
    void *wq;
    float *ws, *wm;
} wpanel;

/* Unpacks rows n0..n0+nr-1 (zero past N), columns k0..k0+kc-1, into P. */
static void pack_w(const kiln_qkernels *qk, wpanel *P, const void *W, int type, int N, int K, int n0, int k0, int kc) {
    int nr = qk->nr, U = kiln_qpack_unit(type), off = qk->wide ? 0 : kiln_qpack_offset(type), nu = kc / U;
    size_t rb = kiln_quant_row_bytes(type, K);
    int16_t v[KC];
    uint8_t u[KC];
    float s[KC / 16], m[KC / 32];
    for (int c = 0; c < nr; c++) {
        int n = n0 + c;
        if (n < N) unpack_row(type, (const char *)W + rb * n, k0, kc, off, v, qk->wide ? NULL : u, s, m);
        else { /* zero weights: stored value 0, packed as the offset */
            memset(v, 0, sizeof v);
            memset(u, off, sizeof u);
            memset(s, 0, sizeof s);
            memset(m, 0, sizeof m);
        }
        for (int q = 0; q < nu; q++) P->ws[q * nr + c] = s[q];
        if (type == KILN_TYPE_Q4_K)
            for (int q = 0; q < nu; q++) P->wm[q * nr + c] = m[q];
        if (qk->wide) {
            int16_t *wq = P->wq;
            for (int k = 0; k < kc; k += 2) memcpy(wq + (k / 2 * nr + c) * 2, v + k, 4);
        } else {
            uint8_t *wq = P->wq;
            for (int k = 0; k < kc; k += 4) memcpy(wq + (k / 4 * nr + c) * 4, u + k, 4);
        }
    }
}

/* ---- activations: panels of mr tokens ---- */

typedef struct {
    void *xq;
    float *xd, *xm;
    int32_t *xb;
} xpanel;

static _Thread_local kiln_qx row_qx;

static void pack_x(const kiln_qkernels *qk, xpanel *P, const float *X, int type, int T, int K, int t0) {
    int mr = qk->mr, U = kiln_qpack_unit(type), nu = K / U, xblk = kiln_qx_block(type);
    int off = qk->wide ? 0 : kiln_qpack_offset(type);
    for (int r = 0; r < mr; r++) {
        int t = t0 + r;
        if (t < T) qk->quantize_x(&row_qx, X + (size_t)t * K, type, K);
        for (int q = 0; q < nu; q++) {
            int sum = 0;
            float d = 0;
            if (t < T) {
                /* unit sums from the quantizer's sums: per 32 for Q8_0/Q4_0, per 16 for the K-quants */
                sum = xblk == 32 ? row_qx.sum[q] : U == 16 ? row_qx.sum[q] : row_qx.sum[2 * q] + row_qx.sum[2 * q + 1];
                d = row_qx.d[q * U / xblk];
            }
            P->xd[q * mr + r] = d;
            P->xb[q * mr + r] = -off * sum;
            P->xm[q * mr + r] = d * (float)sum;
        }
        /* 4 bytes (wide: 2 int16) per column group, token r's slot of each group */
        if (qk->wide) {
            int16_t *xq = (int16_t *)P->xq + 2 * r;
            for (int k = 0; k < K; k += 2, xq += 2 * mr) {
                xq[0] = t < T ? row_qx.q[k] : 0;
                xq[1] = t < T ? row_qx.q[k + 1] : 0;
            }
        } else {
            int8_t *xq = (int8_t *)P->xq + 4 * r;
            if (t < T)
                for (int k = 0; k < K; k += 4, xq += 4 * mr) memcpy(xq, row_qx.q + k, 4);
            else
                for (int k = 0; k < K; k += 4, xq += 4 * mr) memset(xq, 0, 4);
        }
    }
}

typedef struct {
    const kiln_qkernels *qk;
    float *Y;
    const float *X;
    const void *W;
    int type, T, N, K;
    char *base;                 /* token panels, then one weight panel per thread */
    size_t xq_bytes, xs_bytes, xp_bytes, wq_bytes, ws_bytes, wp_bytes;
} qgemm_job;

/* Token panels P0..P1-1 of job J, quantized and packed. */
static void qgemm_pack(void *job, int p0, int p1, int tid) {
    const qgemm_job *j = job;
    for (int p = p0; p < p1; p++) {
        char *b = j->base + j->xp_bytes * p;
        xpanel P = {b, (float *)(b + j->xq_bytes), (float *)(b + j->xq_bytes + j->xs_bytes),
                    (int32_t *)(b + j->xq_bytes + 2 * j->xs_bytes)};
        pack_x(j->qk, &P, j->X, j->type, j->T, j->K, p * j->qk->mr);
    }
}

/* Weight panels JP0..JP1-1 of job J against every packed token panel, in thread TID's weight panel. */
static void qgemm_panels(void *job, int jp0, int jp1, int tid) {
    const qgemm_job *j = job;
    const kiln_qkernels *qk = j->qk;
    int mr = qk->mr, nr = qk->nr, U = kiln_qpack_unit(j->type), esz = qk->wide ? 2 : 1, T = j->T, N = j->N, K = j->K;
    int n_tp = (T + mr - 1) / mr;
    char *wb = j->base + j->xp_bytes * n_tp + j->wp_bytes * tid;
    wpanel WP = {wb, (float *)(wb + j->wq_bytes), (float *)(wb + j->wq_bytes + j->ws_bytes)};
    for (int jp = jp0; jp < jp1; jp++) {
        int n0 = jp * nr, nt = N - n0 < nr ? N - n0 : nr;
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = K - k0 < KC ? K - k0 : KC, u0 = k0 / U;
            pack_w(qk, &WP, j->W, j->type, N, K, n0, k0, kc);
            for (int p = 0; p < n_tp; p++) {
                char *b = j->base + j->xp_bytes * p;
                int t0 = p * mr;
                kiln_qtile a = {
                    .Y = j->Y + (size_t)t0 * N + n0,
                    .ldy = (size_t)N,
                    .mt = T - t0 < mr ? T - t0 : mr,
                    .nt = nt,
                    .xq = (const int8_t *)(b + (size_t)k0 * mr * esz),
                    .xd = (const float *)(b + j->xq_bytes) + u0 * mr,
                    .xm = (const float *)(b + j->xq_bytes + j->xs_bytes) + u0 * mr,
                    .xb = (const int32_t *)(b + j->xq_bytes + 2 * j->xs_bytes) + u0 * mr,
                    .wq = WP.wq,
                    .ws = WP.ws,
                    .wm = j->type == KILN_TYPE_Q4_K ? WP.wm : NULL,
                    .units = kc / U,
                    .unit_k = U,
                    .accumulate = k0 > 0,
                };
                qk->tile(&a);
            }
        }
    }
}

/* Weight panels per chunk: about four chunks per thread. Runs of neighbouring panels measured 1.2-1.3x
 * faster than panels claimed one at a time (pp512 of the 110M model, f32 and Q8_0), and four chunks
 * leave a thread that falls behind (another process on its core) only a quarter of its share. */
static int panel_grain(int n_np) {
    int g = n_np / (4 * kiln_pool_threads());
    return g > 1 ? g : 1;
}

static void qgemm(const kiln_qkernels *qk, float *Y, const float *X, const void *W, int type, int T, int N, int K) {
    int mr = qk->mr, nr = qk->nr, nu = K / kiln_qpack_unit(type), esz = qk->wide ? 2 : 1;
    qgemm_job j = {.qk = qk, .Y = Y, .X = X, .W = W, .type = type, .T = T, .N = N, .K = K};
    j.xq_bytes = align64((size_t)K * mr * esz);
    j.xs_bytes = align64(sizeof(float) * nu * mr);
    j.xp_bytes = j.xq_bytes + 3 * j.xs_bytes;
    j.wq_bytes = align64((size_t)KC * nr * esz);
    j.ws_bytes = align64(sizeof(float) * (KC / 16) * nr);
    j.wp_bytes = j.wq_bytes + 2 * j.ws_bytes;
    int n_tp = (T + mr - 1) / mr, n_np = (N + nr - 1) / nr;
    j.base = scratch_bytes(j.xp_bytes * n_tp + j.wp_bytes * kiln_pool_threads());
    /* Below ~1 MFLOP one thread is as fast */
    if ((double)T * N * K <= 5e5) {
        qgemm_pack(&j, 0, n_tp, 0);
        qgemm_panels(&j, 0, n_np, 0);
        return;
    }
    kiln_pool_for(n_tp, 1, qgemm_pack, &j);
    kiln_pool_for(n_np, panel_grain(n_np), qgemm_panels, &j);
}

static _Thread_local kiln_qx vec_qx[KILN_QMATVECS_MAX];

/* Rows r0..r1 of T <= KILN_QMATVECS_MAX tokens. Without a short-batch kernel for TYPE, each token's
 * matvec runs over chunks of rows small enough (16 KiB) to stay in L1 for the next token, so the weights
 * still come from memory once. */
static void matvecs_rows(const kiln_qkernels *qk, float *Y, size_t ldy, const kiln_qx *qx, int T, const void *W,
                         int type, int r0, int r1) {
    if (T == 1) {
        qk->matvec(Y, qx, W, type, r0, r1);
        return;
    }
    if (qk->matvecs && qk->matvecs(Y, ldy, qx, T, W, type, r0, r1)) return;
    size_t rb = kiln_quant_row_bytes(type, qx->k);
    int chunk = rb >= 16384 ? 1 : (int)(16384 / rb);
    for (int i = r0; i < r1; i += chunk) {
        int i1 = r1 - i < chunk ? r1 : i + chunk;
        for (int t = 0; t < T; t++) qk->matvec(Y + (size_t)t * ldy, qx + t, W, type, i, i1);
    }
}

/* Rows of several matrices that share their activations, numbered one after the other. */
typedef struct {
    const kiln_qkernels *qk;
    const kiln_qx *qx;
    int T, type, n_parts;
    const kiln_qpart *parts;
    size_t t0; /* the first token of this pass: part i's outputs start at its y + t0 * rows */
} qmatvec_job;

static void qmatvec_chunk(void *job, int r0, int r1, int tid) {
    const qmatvec_job *j = job;
    for (int i = 0, first = 0; i < j->n_parts && first < r1; first += j->parts[i++].rows) {
        const kiln_qpart *p = &j->parts[i];
        int a = r0 > first ? r0 - first : 0, b = r1 - first < p->rows ? r1 - first : p->rows;
        if (a < b) matvecs_rows(j->qk, p->y + j->t0 * p->rows, (size_t)p->rows, j->qx, j->T, p->w, j->type, a, b);
    }
}

void kiln_qmatmul_parts_with(const kiln_qkernels *qk, int n_parts, const kiln_qpart *parts, const float *X, int type,
                             int T, int K) {
    if (T <= 0) return;
    if (T > qk->matvecs_max && qk->tile) {
        for (int i = 0; i < n_parts; i++)
            if (parts[i].rows > 0) qgemm(qk, parts[i].y, X, parts[i].w, type, T, parts[i].rows, K);
        return;
    }
    int rows = 0;
    for (int i = 0; i < n_parts; i++) rows += parts[i].rows > 0 ? parts[i].rows : 0;
    if (rows == 0) return;
    kiln_qx *qx = vec_qx; /* the calling thread's, read by every thread of the loop */
    for (int t0 = 0; t0 < T; t0 += KILN_QMATVECS_MAX) { /* decode, short batches, prefill on the scalar table */
        int nt = T - t0 < KILN_QMATVECS_MAX ? T - t0 : KILN_QMATVECS_MAX;
        for (int t = 0; t < nt; t++) qk->quantize_x(qx + t, X + (size_t)(t0 + t) * K, type, K);
        qmatvec_job j = {qk, qx, nt, type, n_parts, parts, (size_t)t0};
        /* Below ~128K weights handing out chunks costs more than the second thread saves. */
        if ((int64_t)rows * K < (1 << 17)) qmatvec_chunk(&j, 0, rows, 0);
        else kiln_pool_rows(rows, kiln_quant_row_bytes(type, K), qmatvec_chunk, &j);
    }
}

void kiln_qmatmul_parts(int n_parts, const kiln_qpart *parts, const float *X, int type, int T, int K) {
    kiln_qmatmul_parts_with(kiln_qkernels_active(), n_parts, parts, X, type, T, K);
}

void kiln_qmatmul_with(const kiln_qkernels *qk, float *Y, const float *X, const void *W, int type, int T, int N,
                       int K) {
    if (N <= 0) return;
    kiln_qpart p = {Y, W, N};
    kiln_qmatmul_parts_with(qk, 1, &p, X, type, T, K);
}

void kiln_qmatmul(float *Y, const float *X, const void *W, int type, int T, int N, int K) {
    kiln_qmatmul_with(kiln_qkernels_active(), Y, X, W, type, T, N, K);
}
