/* Import of llama2.c checkpoints into GGUF. */
#include "format/llama2c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "format/model_file.h"
#include "kernels/kernels.h"

/* Adds N_MATS consecutive ROWS x COLS f32 matrices from SRC as NAME of layers 0.., in TYPE. */
static void add_matrix(gguf_writer *w, const char *name, int layer, const float *src, int rows, int cols, int type) {
    char full[96];
    if (layer >= 0) snprintf(full, sizeof full, "blk.%d.%s", layer, name);
    else snprintf(full, sizeof full, "%s", name);
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    int n_dims = rows == 1 ? 1 : 2;
    size_t n = (size_t)rows * cols;
    if (type == KILN_TYPE_F32) {
        gguf_add_tensor_ref(w, full, KILN_TYPE_F32, n_dims, ne, src);
        return;
    }
    uint16_t *h = kiln_xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = type == KILN_TYPE_F16 ? kiln_f32_to_f16(src[i]) : kiln_f32_to_bf16(src[i]);
    gguf_add_tensor(w, full, type, n_dims, ne, h);
    free(h);
}

int llama2c_to_gguf(const char *path, kiln_map *map, int type, kiln_config *c, gguf_writer *w) {
    if (kiln_map_open(map, path) < 0) return -1;
    int32_t h[7];
    if (map->size < sizeof h) {
        kiln_map_close(map);
        return kiln_fail("%s: too short for a llama2.c checkpoint (%zu bytes)", path, map->size);
    }
    memcpy(h, map->data, sizeof h);
    int shared = h[5] > 0;
    memset(c, 0, sizeof *c);
    model_file_arch_defaults("llama", c);
    c->dim = h[0];
    c->ffn_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->n_vocab = shared ? h[5] : -h[5];
    c->ctx_len = h[6];
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    c->rope_dim = c->head_dim;
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->tied_output = shared;
    for (int i = 0; i < 7; i++)
        if (h[i] <= 0 && i != 5) {
            kiln_map_close(map);
            return kiln_fail("%s: header value %d is %d: not a llama2.c checkpoint", path, i, h[i]);
        }
    if (h[0] > 65536 || h[1] > 1 << 20 || h[2] > 4096 || h[5] == 0 || abs(h[5]) > 1 << 22 || h[6] > 1 << 22 ||
        kiln_config_check(c) < 0 || c->dim % c->n_heads) {
        kiln_map_close(map);
        return kiln_fail("%s: header (dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, seq %d) is not a "
                         "valid llama2.c configuration",
                         path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    }
    size_t D = c->dim, F = c->ffn_dim, L = c->n_layers, V = c->n_vocab, kv = (size_t)c->n_kv_heads * c->head_dim;
    size_t n_floats = V * D + L * D + L * D * D + 2 * L * D * kv + L * D * D + L * D + 3 * L * D * F + D +
                      (size_t)c->ctx_len * c->head_dim + (shared ? 0 : V * D);
    if (map->size != sizeof h + n_floats * 4) {
        size_t want = sizeof h + n_floats * 4;
        kiln_map_close(map);
        return kiln_fail("%s: %zu bytes, but its header describes %zu: truncated or not a llama2.c checkpoint", path,
                         map->size, want);
    }
    const float *p = (const float *)(map->data + sizeof h);
    const float *emb = p, *att_norm = emb + V * D, *wq = att_norm + L * D, *wk = wq + L * D * D, *wv = wk + L * D * kv,
                *wo = wv + L * D * kv, *ffn_norm = wo + L * D * D, *w1 = ffn_norm + L * D, *w2 = w1 + L * F * D,
                *w3 = w2 + L * D * F, *out_norm = w3 + L * F * D,
                *wcls = out_norm + D + (size_t)c->ctx_len * c->head_dim; /* skips the RoPE tables */
    model_file_write_config(w, c);
    add_matrix(w, "token_embd.weight", -1, emb, (int)V, (int)D, type);
    add_matrix(w, "output_norm.weight", -1, out_norm, 1, (int)D, KILN_TYPE_F32);
    if (!shared) add_matrix(w, "output.weight", -1, wcls, (int)V, (int)D, type);
    for (size_t l = 0; l < L; l++) {
        add_matrix(w, "attn_norm.weight", (int)l, att_norm + l * D, 1, (int)D, KILN_TYPE_F32);
        add_matrix(w, "attn_q.weight", (int)l, wq + l * D * D, (int)D, (int)D, type);
        add_matrix(w, "attn_k.weight", (int)l, wk + l * D * kv, (int)kv, (int)D, type);
        add_matrix(w, "attn_v.weight", (int)l, wv + l * D * kv, (int)kv, (int)D, type);
        add_matrix(w, "attn_output.weight", (int)l, wo + l * D * D, (int)D, (int)D, type);
        add_matrix(w, "ffn_norm.weight", (int)l, ffn_norm + l * D, 1, (int)D, KILN_TYPE_F32);
        add_matrix(w, "ffn_gate.weight", (int)l, w1 + l * F * D, (int)F, (int)D, type);
        add_matrix(w, "ffn_down.weight", (int)l, w2 + l * D * F, (int)D, (int)F, type);
        add_matrix(w, "ffn_up.weight", (int)l, w3 + l * F * D, (int)F, (int)D, type);
    }
    return 0;
}
