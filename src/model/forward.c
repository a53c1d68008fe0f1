/* The forward pass. A batch of T tokens goes through each layer as matrices (T rows), so prefill is
 * matrix-matrix work and decode (T == 1) the same code with one row. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/error.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"
#include "model/transformer.h"

enum { MAX_BATCH = 512 }; /* prefill runs in chunks of this many tokens: bounds scratch memory */

/* Faults in the pages of N floats at P in one system call, before a batch writes them. A 512-token
 * prefill in a fresh context first-touches tens of MiB (its rows of the KV cache and the activations);
 * one page fault at a time that cost ~150 ms on a virtual machine, a third of the prefill. The memory
 * stays allocated lazily (what is never used is never touched). */
static void populate(float *p, size_t n) {
    uintptr_t page = 4096, lo = (uintptr_t)p & ~(page - 1), hi = ((uintptr_t)(p + n) + page - 1) & ~(page - 1);
    madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
}

/* Transparent huge pages for the 2 MiB-aligned part of the KV cache's N floats at P. A 4 KiB page costs a
 * fault the first time it is written (~10 us on a virtual machine): a decoded token of the 110M model
 * first-touches ~18 pages of its cache, a 512-token prefill thousands; a 2 MiB page is one fault and one
 * TLB entry. Measured there (kiln generate, f32 and Q8_0): prefill +6-22%, decode +9-17%. Huge pages
 * for the activations as well made the prefill slower (probably buffers whose sizes are multiples of
 * 512 KiB then sharing cache sets), so they keep small pages. */
static void want_huge_pages(float *p, size_t n) {
    uintptr_t huge = 2 << 20, lo = ((uintptr_t)p + huge - 1) & ~(huge - 1), hi = (uintptr_t)(p + n) & ~(huge - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}

kiln_state *kiln_state_new(const kiln_config *c, int n_ctx) {
    kiln_state *s = kiln_xcalloc(1, sizeof *s);
    int B = MAX_BATCH, qdim = c->n_heads * c->head_dim, kvdim = c->n_kv_heads * c->head_dim;
    int wide = c->dim > qdim ? c->dim : qdim;
    s->n_ctx = n_ctx;
    s->max_batch = B;
    /* calloc: the kernel hands out zero pages lazily, so a long context costs only what is used */
    size_t kv = (size_t)c->n_layers * n_ctx * kvdim;
    s->k_cache = kiln_xcalloc(kv, sizeof(float));
    s->v_cache = kiln_xcalloc(kv, sizeof(float));
    want_huge_pages(s->k_cache, kv);
    want_huge_pages(s->v_cache, kv);
    s->x = kiln_xmalloc(sizeof(float) * B * c->dim);
    s->xb = kiln_xmalloc(sizeof(float) * B * wide);
    s->q = kiln_xmalloc(sizeof(float) * B * qdim);
    s->att = kiln_xmalloc(sizeof(float) * B * qdim);
    s->hb = kiln_xmalloc(sizeof(float) * B * c->ffn_dim);
    s->hb2 = kiln_xmalloc(sizeof(float) * B * c->ffn_dim);
    s->row = kiln_xmalloc(sizeof(float) * c->dim);
    s->hidden = kiln_xcalloc(c->dim, sizeof(float));
    int half = c->rope_dim / 2 > 0 ? c->rope_dim / 2 : 1;
    s->rope_inv_freq = kiln_xmalloc(sizeof(float) * half);
    s->rope_cos = kiln_xmalloc(sizeof(float) * B * half);
    s->rope_sin = kiln_xmalloc(sizeof(float) * B * half);
    return s;
}

void kiln_state_free(kiln_state *s) {
    if (!s) return;
    free(s->k_cache);
    free(s->v_cache);
    free(s->x);
    free(s->xb);
    free(s->q);
    free(s->att);
    free(s->hb);
    free(s->hb2);
    free(s->row);
    free(s->hidden);
    free(s->rope_inv_freq);
    free(s->rope_cos);
    free(s->rope_sin);
    free(s);
}

static void add_bias(float *y, const float *b, int T, int n) {
    if (!b) return;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n; i++) y[(size_t)t * n + i] += b[i];
}

static void add_rows(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void norm_rows(const kiln_config *c, float *out, const float *x, const float *w, const float *b, int T) {
    for (int t = 0; t < T; t++) {
        size_t o = (size_t)t * c->dim;
        if (c->norm == KILN_NORM_RMS) kiln_rmsnorm(out + o, x + o, w, c->dim, c->norm_eps);
        else kiln_layernorm(out + o, x + o, w, b, c->dim, c->norm_eps);
    }
}

static void matmul(float *y, const float *x, const kiln_mat *w, int T) {
    kiln_matmul(y, x, w->data, w->type, T, w->rows, w->cols);
}

/* The products of X with N matrices that share it (q, k, v; gate, up). Quantized ones of one type run
 * together (kiln_qmatmul_parts): X is quantized once and a decode step hands their rows to the worker
 * pool as one loop, one join instead of N. Each result is bit for bit its own matmul's. */
static void matmuls(int n, float *const *y, const float *x, const kiln_mat *const *w, int T) {
    int together = n <= 3 && kiln_quant_block(w[0]->type) > 0;
    for (int i = 1; i < n; i++) together = together && w[i]->type == w[0]->type && w[i]->cols == w[0]->cols;
    if (!together) {
        for (int i = 0; i < n; i++) matmul(y[i], x, w[i], T);
        return;
    }
    kiln_qpart parts[3];
    for (int i = 0; i < n; i++) parts[i] = (kiln_qpart){y[i], w[i]->data, w[i]->rows};
    kiln_qmatmul_parts(n, parts, x, w[0]->type, T, w[0]->cols);
}

static void embed(const kiln_config *c, const kiln_weights *w, float *x, float *row, const int32_t *tokens, int T,
                  int pos0) {
    size_t rb = kiln_row_bytes(w->tok_embd.type, c->dim);
    for (int t = 0; t < T; t++) {
        float *xt = x + (size_t)t * c->dim;
        kiln_row_to_f32(xt, (const char *)w->tok_embd.data + rb * tokens[t], w->tok_embd.type, c->dim);
        if (c->embd_scale)
            for (int i = 0; i < c->dim; i++) xt[i] *= c->embd_scale;
        if (c->pos == KILN_POS_LEARNED) {
            size_t pb = kiln_row_bytes(w->pos_embd.type, c->dim);
            kiln_row_to_f32(row, (const char *)w->pos_embd.data + pb * (pos0 + t), w->pos_embd.type, c->dim);
            add_rows(xt, row, c->dim);
        }
    }
}

/* RoPE on the T new query and key rows: the cosines and sines of a position serve every head. */
/* The cosines and sines of the T positions from POS0, once per chunk for every layer (in double: a
 * 512-token prefill spent 4% of its time on them when each layer made its own). */
static void rope_angles(const kiln_config *c, kiln_state *s, int T, int pos0) {
    int half = c->rope_dim / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double a = (double)(pos0 + t) * s->rope_inv_freq[i];
            s->rope_cos[(size_t)t * half + i] = (float)cos(a) * s->rope_mscale;
            s->rope_sin[(size_t)t * half + i] = (float)sin(a) * s->rope_mscale;
        }
}

static void rope_rows(const kiln_config *c, kiln_state *s, float *k, int T) {
    int qdim = c->n_heads * c->head_dim, kvdim = c->n_kv_heads * c->head_dim, half = c->rope_dim / 2;
    for (int t = 0; t < T; t++) {
        const float *cs = s->rope_cos + (size_t)t * half, *sn = s->rope_sin + (size_t)t * half;
        kiln_rope_apply(s->q + (size_t)t * qdim, c->n_heads, c->head_dim, c->rope_dim, c->rope_style, cs, sn);
        kiln_rope_apply(k + (size_t)t * kvdim, c->n_kv_heads, c->head_dim, c->rope_dim, c->rope_style, cs, sn);
    }
}

/* Causal attention of the T new queries; with a sliding window each query sees only the last
 * sliding_window positions, so each runs against its own slice of the cache. */
static void attend(const kiln_config *c, kiln_state *s, const float *kc, const float *vc, int T, int pos0) {
    int qdim = c->n_heads * c->head_dim, kvdim = c->n_kv_heads * c->head_dim, W = c->sliding_window;
    float scale = 1.0f / sqrtf((float)c->head_dim);
    if (!W || pos0 + T <= W) {
        kiln_attention(s->att, s->q, kc, vc, T, pos0, c->n_heads, c->n_kv_heads, c->head_dim, kvdim, scale);
        return;
    }
    for (int t = 0; t < T; t++) {
        int pos = pos0 + t, first = pos - W + 1 > 0 ? pos - W + 1 : 0;
        size_t o = (size_t)first * kvdim;
        kiln_attention(s->att + (size_t)t * qdim, s->q + (size_t)t * qdim, kc + o, vc + o, 1, pos - first,
                       c->n_heads, c->n_kv_heads, c->head_dim, kvdim, scale);
    }
}

static void attention_block(const kiln_config *c, const kiln_layer_weights *L, kiln_state *s, int layer, int T,
                            int pos0) {
    int qdim = c->n_heads * c->head_dim, kvdim = c->n_kv_heads * c->head_dim;
    float *kc = s->k_cache + (size_t)layer * s->n_ctx * kvdim, *vc = s->v_cache + (size_t)layer * s->n_ctx * kvdim;
    float *k = kc + (size_t)pos0 * kvdim, *v = vc + (size_t)pos0 * kvdim; /* new rows go straight into the cache */
    norm_rows(c, s->xb, s->x, L->attn_norm, L->attn_norm_b, T);
    matmuls(3, (float *[]){s->q, k, v}, s->xb, (const kiln_mat *[]){&L->wq, &L->wk, &L->wv}, T);
    add_bias(s->q, L->bq, T, qdim);
    add_bias(k, L->bk, T, kvdim);
    add_bias(v, L->bv, T, kvdim);
    if (c->pos == KILN_POS_ROPE) rope_rows(c, s, k, T);
    for (int t = 0; c->attn_logn && t < T; t++) {
        float f = kiln_logn_scale(c, pos0 + t);
        for (int i = 0; i < qdim; i++) s->q[(size_t)t * qdim + i] *= f;
    }
    attend(c, s, kc, vc, T, pos0);
    matmul(s->xb, s->att, &L->wo, T);
    add_bias(s->xb, L->bo, T, c->dim);
    add_rows(s->x, s->xb, (size_t)T * c->dim);
}

static void mlp_block(const kiln_config *c, const kiln_layer_weights *L, kiln_state *s, int T) {
    size_t n = (size_t)T * c->ffn_dim;
    norm_rows(c, s->xb, s->x, L->ffn_norm, L->ffn_norm_b, T);
    if (c->act == KILN_ACT_SWIGLU) {
        matmuls(2, (float *[]){s->hb, s->hb2}, s->xb, (const kiln_mat *[]){&L->w_gate, &L->w_up}, T);
        kiln_swiglu(s->hb, s->hb2, (int)n);
    } else if (c->act == KILN_ACT_GEGLU) {
        matmuls(2, (float *[]){s->hb, s->hb2}, s->xb, (const kiln_mat *[]){&L->w_gate, &L->w_up}, T);
        kiln_gelu(s->hb, (int)n);
        for (size_t i = 0; i < n; i++) s->hb[i] *= s->hb2[i];
    } else {
        matmul(s->hb, s->xb, &L->w_up, T);
        add_bias(s->hb, L->b_up, T, c->ffn_dim);
        kiln_gelu(s->hb, (int)n);
    }
    matmul(s->xb, s->hb, &L->w_down, T);
    add_bias(s->xb, L->b_down, T, c->dim);
    add_rows(s->x, s->xb, (size_t)T * c->dim);
}

/* Below this many tokens a batch touches too few new pages for populate() to matter. */
enum { POPULATE_FROM = 32 };

static void populate_batch(const kiln_config *c, kiln_state *s, int T, int pos0) {
    int qdim = c->n_heads * c->head_dim, kvdim = c->n_kv_heads * c->head_dim;
    int wide = c->dim > qdim ? c->dim : qdim;
    populate(s->x, (size_t)T * c->dim);
    populate(s->xb, (size_t)T * wide);
    populate(s->q, (size_t)T * qdim);
    populate(s->att, (size_t)T * qdim);
    populate(s->hb, (size_t)T * c->ffn_dim);
    populate(s->hb2, (size_t)T * c->ffn_dim);
    for (int l = 0; l < c->n_layers; l++) {
        size_t o = ((size_t)l * s->n_ctx + pos0) * kvdim;
        populate(s->k_cache + o, (size_t)T * kvdim);
        populate(s->v_cache + o, (size_t)T * kvdim);
    }
}

/* Faulting in the pages of the KV cache ahead of a decode. A decoded token writes a new row of every
 * layer's keys and values: for the 110M model 24 rows of 3 KiB, a new 4 KiB page every 1.3 rows, ~18
 * page faults per token at ~10 us each on a virtual machine (5% of a 2-thread Q8_0 decode's samples in
 * perf). Faulting the next rows of each layer in at once takes one system call per layer's keys or values
 * every ~20 tokens. Ahead goes as many rows as the context has run in short batches before (at most
 * KV_AHEAD_BYTES of each layer's keys or values), so what is faulted in and not used stays below what is
 * used, and the branches of a fork (kiln_fork_new), whose caches are copy-on-write mappings, copy only
 * pages they go on to write. Fewer than KV_POPULATE_MIN_BYTES are left to fault. */
enum { KV_AHEAD_BYTES = 64 << 10, KV_POPULATE_MIN_BYTES = 16 << 10 };

static void populate_kv_ahead(const kiln_config *c, kiln_state *s, int pos0, int T) {
    int end = pos0 + T, before = s->kv_decoded;
    s->kv_decoded = before < s->n_ctx - T ? before + T : s->n_ctx; /* only ever compared with a few rows */
    if (end <= s->kv_populated) return;
    size_t kvdim = (size_t)c->n_kv_heads * c->head_dim, row = kvdim * sizeof(float);
    int most = row >= KV_AHEAD_BYTES ? 1 : (int)(KV_AHEAD_BYTES / row), ahead = before < most ? before : most;
    int from = pos0 > s->kv_populated ? pos0 : s->kv_populated, to = end + ahead < s->n_ctx ? end + ahead : s->n_ctx;
    if ((size_t)(to - from) * row < KV_POPULATE_MIN_BYTES) return;
    for (int l = 0; l < c->n_layers; l++) {
        size_t o = ((size_t)l * s->n_ctx + from) * kvdim;
        populate(s->k_cache + o, (size_t)(to - from) * kvdim);
        populate(s->v_cache + o, (size_t)(to - from) * kvdim);
    }
    s->kv_populated = to;
}

static void forward_chunk(const kiln_config *c, const kiln_weights *w, kiln_state *s, const int32_t *tokens, int T,
                          int pos0, float *logits, int all) {
    if (T >= POPULATE_FROM) populate_batch(c, s, T, pos0);
    else populate_kv_ahead(c, s, pos0, T);
    embed(c, w, s->x, s->row, tokens, T, pos0);
    if (c->pos == KILN_POS_ROPE) rope_angles(c, s, T, pos0);
    for (int l = 0; l < c->n_layers; l++) {
        attention_block(c, &w->layers[l], s, l, T, pos0);
        mlp_block(c, &w->layers[l], s, T);
    }
    if (!logits) return; /* a chunk before the last one only fills the cache */
    if (all) {
        norm_rows(c, s->xb, s->x, w->out_norm, w->out_norm_b, T);
        matmul(logits, s->xb, &w->output, T);
    } else {
        norm_rows(c, s->xb, s->x + (size_t)(T - 1) * c->dim, w->out_norm, w->out_norm_b, 1);
        matmul(logits, s->xb, &w->output, 1);
    }
    memcpy(s->hidden, s->xb + (size_t)(all ? T - 1 : 0) * c->dim, sizeof(float) * c->dim);
}

void kiln_forward(const kiln_config *c, const kiln_weights *w, kiln_state *s, const int32_t *tokens, int T, int pos0,
                  float *logits, int all) {
    if (!s->rope_ready && c->pos == KILN_POS_ROPE) {
        kiln_rope_freqs(c, s->n_ctx, w->rope_freqs, s->rope_inv_freq, &s->rope_mscale);
        s->rope_ready = 1;
    }
    for (int done = 0; done < T;) {
        int n = T - done < s->max_batch ? T - done : s->max_batch;
        int last = done + n == T;
        if (all) forward_chunk(c, w, s, tokens + done, n, pos0 + done, logits + (size_t)done * c->n_vocab, 1);
        else if (last) forward_chunk(c, w, s, tokens + done, n, pos0 + done, logits, 0);
        else forward_chunk(c, w, s, tokens + done, n, pos0 + done, NULL, 0);
        done += n;
    }
}

void kiln_forward_score(const kiln_config *c, const kiln_weights *w, kiln_state *s, float *out) {
    matmul(out, s->hidden, &w->cls, 1);
}
