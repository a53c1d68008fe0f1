/* The threaded attention driver. Work items are independent and handed out to the threads (base/pool.h)
 * one at a time, the longest (latest tokens) first so the causal triangle balances:
 *   - prefill: blocks of attn_lanes consecutive query tokens of one head, one query per vector lane;
 *   - decode (and a prefill of too few tokens to fill the lanes): single (token, head) rows, so threads
 *     split the heads of even a long context. */
#include <stdint.h>
#include <stdlib.h>

#include "base/error.h"
#include "base/pool.h"
#include "kernels/isa.h"
#include "kernels/kernels.h"

typedef struct {
    const kiln_kernels *kk;
    float *out;
    const float *Q, *K, *V;
    int T, pos0, n_heads, group, head_dim, kv_stride, lanes, n_blocks;
    float scale;
    float *scratch;        /* scratch_floats per thread, 64-byte aligned */
    size_t scratch_floats;
} attention_job;

/* Item IT: block n_blocks - 1 - IT / n_heads (the latest first) of head IT % n_heads. */
static void attend_item(const attention_job *a, int it, float *scratch) {
    int b = a->n_blocks - 1 - it / a->n_heads, h = it % a->n_heads, kvh = h / a->group, t0 = b * a->lanes;
    size_t qdim = (size_t)a->n_heads * a->head_dim, off = t0 * qdim + (size_t)h * a->head_dim;
    const float *k = a->K + (size_t)kvh * a->head_dim, *v = a->V + (size_t)kvh * a->head_dim;
    if (a->lanes == 1)
        a->kk->attend(a->out + off, a->Q + off, k, v, a->pos0 + t0 + 1, a->head_dim, a->kv_stride, a->scale, scratch);
    else
        a->kk->attend_block(a->out + off, qdim, a->Q + off, qdim, a->T - t0 < a->lanes ? a->T - t0 : a->lanes, k, v,
                            a->pos0 + t0 + 1, a->head_dim, a->kv_stride, a->scale, scratch);
}

/* Items I0..I1-1, with thread TID's scratch. */
static void attend_items(void *p, int i0, int i1, int tid) {
    const attention_job *a = p;
    for (int it = i0; it < i1; it++) attend_item(a, it, a->scratch + a->scratch_floats * tid);
}

void kiln_attention_with(const kiln_kernels *kk, float *out, const float *Q, const float *K, const float *V, int T,
                         int pos0, int n_heads, int n_kv_heads, int head_dim, int kv_stride, float scale) {
    if (!kk->attend) {
        kiln_attention_ref(out, Q, K, V, T, pos0, n_heads, n_kv_heads, head_dim, kv_stride, scale);
        return;
    }
    if (T <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0) return;
    /* A block costs as much as its lanes full: worth it from a quarter full (measured break-even). */
    int lanes = kk->attend_block && T >= kk->attn_lanes / 4 ? kk->attn_lanes : 1;
    /* Threads only when the items hold enough multiply-adds to pay for handing them out (~100K). A decoded
     * token's heads split from 16K: alone, the caller would read the whole cache (6 MB per token of the
     * 110M model at 80 positions) while the workers wait for the next product. */
    double work = (double)T * n_heads * (pos0 + T) * head_dim;
    int nth = work < (T == 1 ? 1 << 14 : 1e5) ? 1 : kiln_pool_threads();
    size_t scratch_floats = (KILN_ATTEND_SCRATCH(head_dim) + 15) & ~(size_t)15;
    void *raw = kiln_xmalloc(sizeof(float) * (scratch_floats * nth + 16));
    attention_job a = {kk, out, Q, K, V, T, pos0, n_heads, n_heads / n_kv_heads, head_dim, kv_stride, lanes,
                       (T + lanes - 1) / lanes, scale, (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63),
                       scratch_floats};
    int items = a.n_blocks * n_heads;
    if (nth == 1) attend_items(&a, 0, items, 0);
    else kiln_pool_for(items, 1, attend_items, &a);
    free(raw);
}
