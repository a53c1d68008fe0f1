/* The prefill GEMM driver: Y[T][N] = X[T][K] . W[N][K]^T for T > 1, threaded, for any ISA table with a
 * micro-kernel.
 *
 * Blocking (GotoBLAS style, with the weights in the role of the panel that stays in L1):
 *   - X is packed once per call into panels of gemm_mr tokens, k-major, zero-padded past T.
 *   - Threads claim runs of output panels of gemm_nr rows (base/pool.h). For each panel and each
 *     block of KC columns it packs (and widens to f32) the weights, kc x gemm_nr floats that stay in
 *     L1, then runs the micro-kernel over every token panel (streamed from L2/L3), accumulating into Y
 *     across column blocks. (Column blocks outermost, to keep the token panels in L2, measured slower:
 *     Y then makes K/KC round trips to memory.)
 * Weights are read and converted once per call, so f16 and bf16 cost the same as f32 but for the
 * conversion in the packing. On one Zen 5 core this runs at ~90% of the FMA peak (the micro-kernel
 * alone, on data in cache, at ~97%). */
#include <stdint.h>
#include <stdlib.h>

#include "base/error.h"
#include "base/pool.h"
#include "kernels/isa.h"
#include "kernels/kernels.h"

/* Weight columns per packed block: 256 x 32 floats = 32 KiB, in L1. */
enum { KC = 256 };

/* Scratch of the calling thread, kept between calls: a prefill does ~85 GEMMs, and fresh multi-MiB
 * buffers would be page-faulted in every time. */
static _Thread_local struct {
    void *raw;
    size_t size;
} scratch;

static float *scratch_floats(size_t n) {
    size_t bytes = n * sizeof(float) + 64;
    if (bytes > scratch.size) {
        free(scratch.raw);
        scratch.raw = kiln_xmalloc(bytes);
        scratch.size = bytes;
    }
    return (float *)(((uintptr_t)scratch.raw + 63) & ~(uintptr_t)63);
}

/* Token panel P of X, k-major: dst[k][r] = X[p * mr + r][k]. Written in order, one k at a time from
 * the mr rows (each read in order too): row by row, every row strided over the whole panel, measured
 * slower. */
static void pack_x_panel(float *dst, const float *X, int T, int K, int mr, int p) {
    enum { MAX_MR = 16 }; /* gemm_mr of every table is at most this */
    const float *x[MAX_MR];
    int rows = T - p * mr < mr ? T - p * mr : mr;
    for (int r = 0; r < rows; r++) x[r] = X + (size_t)(p * mr + r) * K;
    for (int k = 0; k < K; k++) {
        float *d = dst + (size_t)k * mr;
        for (int r = 0; r < rows; r++) d[r] = x[r][k];
        for (int r = rows; r < mr; r++) d[r] = 0;
    }
}

/* Output panels j0..j1-1 of Y, from the packed X. */
static void gemm_panels(const kiln_kernels *kk, float *Y, const float *xp, float *wp, const void *W, int type, int T,
                        int N, int K, int j0, int j1) {
    int mr = kk->gemm_mr, nr = kk->gemm_nr, n_tp = (T + mr - 1) / mr;
    for (int j = j0; j < j1; j++) {
        int n0 = j * nr, nt = N - n0 < nr ? N - n0 : nr;
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = K - k0 < KC ? K - k0 : KC;
            kk->pack_w(wp, W, type, N, K, n0, k0, kc);
            for (int p = 0; p < n_tp; p++) {
                int t0 = p * mr, mt = T - t0 < mr ? T - t0 : mr;
                kk->tile(Y + (size_t)t0 * N + n0, (size_t)N, mt, nt, xp + ((size_t)p * K + k0) * mr, wp, kc, k0 > 0);
            }
        }
    }
}

typedef struct {
    const kiln_kernels *kk;
    float *Y;
    const float *X;
    const void *W;
    int type, T, N, K;
    float *xp, *wp; /* packed X; then one weight panel of wp_floats per thread */
    size_t wp_floats;
} gemm_job;

static void pack_x_panels(void *p, int p0, int p1, int tid) {
    const gemm_job *j = p;
    int mr = j->kk->gemm_mr;
    for (int q = p0; q < p1; q++) pack_x_panel(j->xp + (size_t)q * j->K * mr, j->X, j->T, j->K, mr, q);
}

static void gemm_panel_range(void *p, int j0, int j1, int tid) {
    const gemm_job *j = p;
    gemm_panels(j->kk, j->Y, j->xp, j->wp + j->wp_floats * tid, j->W, j->type, j->T, j->N, j->K, j0, j1);
}

/* Weight panels per chunk: about four chunks per thread. Runs of neighbouring panels measured 1.2-1.3x
 * faster than panels claimed one at a time (pp512 of the 110M model, f32 and Q8_0), and four chunks
 * leave a thread that falls behind (another process on its core) only a quarter of its share. */
static int panel_grain(int n_np) {
    int g = n_np / (4 * kiln_pool_threads());
    return g > 1 ? g : 1;
}

void kiln_gemm_with(const kiln_kernels *kk, float *Y, const float *X, const void *W, int type, int T, int N,
                    int K) {
    int mr = kk->gemm_mr, nr = kk->gemm_nr;
    int n_tp = (T + mr - 1) / mr, n_np = (N + nr - 1) / nr;
    size_t xp_floats = ((size_t)n_tp * K * mr + 15) & ~(size_t)15, wp_floats = (size_t)KC * nr;
    /* Threads pay only where the work is worth handing out: below ~1 MFLOP one thread is as fast. */
    if ((double)T * N * K < 5e5) {
        float *xp = scratch_floats(xp_floats + wp_floats);
        for (int p = 0; p < n_tp; p++) pack_x_panel(xp + (size_t)p * K * mr, X, T, K, mr, p);
        gemm_panels(kk, Y, xp, xp + xp_floats, W, type, T, N, K, 0, n_np);
        return;
    }
    float *xp = scratch_floats(xp_floats + wp_floats * kiln_pool_threads());
    gemm_job j = {kk, Y, X, W, type, T, N, K, xp, xp + xp_floats, wp_floats};
    kiln_pool_for(n_tp, 1, pack_x_panels, &j);
    kiln_pool_for(n_np, panel_grain(n_np), gemm_panel_range, &j);
}
