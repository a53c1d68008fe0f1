/* make_model: writes a llama-family GGUF with random weights, for benchmarks (no model comes from a hub).
 * usage: make_model OUT.gguf f32|f16|bf16 [dim layers heads kv_heads ffn vocab ctx] [--tokenizer TOK.bin]
 * Defaults: the ~110M shape of ../shared/PEERS.md (768, 12, 12, 12, 2048, 32000, 4096). With a llama2.c
 * tokenizer of the same vocabulary size the file carries it, so llama.cpp loads the file too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/half.h"
#include "base/rng.h"
#include "format/gguf.h"
#include "format/model_file.h"
#include "tokenizer/tokenizer.h"

static void *random_tensor(kiln_rng *r, size_t n, int type, float scale) {
    void *p = malloc(n * (type == KILN_TYPE_F32 ? 4 : 2));
    for (size_t i = 0; i < n; i++) {
        /* sum of uniforms: a cheap bell-shaped distribution; only the speed matters here */
        float u = (kiln_rng_f32(r) + kiln_rng_f32(r) + kiln_rng_f32(r) - 1.5f) * 2 * scale;
        if (type == KILN_TYPE_F32) ((float *)p)[i] = u;
        else if (type == KILN_TYPE_F16) ((uint16_t *)p)[i] = kiln_f32_to_f16(u);
        else ((uint16_t *)p)[i] = kiln_f32_to_bf16(u);
    }
    return p;
}

static void add(gguf_writer *w, kiln_rng *r, const char *name, int rows, int cols, int type, float scale) {
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    void *p = random_tensor(r, (size_t)rows * cols, type, scale);
    gguf_add_tensor(w, name, type, rows == 1 ? 1 : 2, ne, p);
    free(p);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: make_model OUT.gguf f32|f16|bf16 [dim layers heads kv_heads ffn vocab ctx] "
                        "[--tokenizer TOK.bin]\n");
        return 1;
    }
    int type = !strcmp(argv[2], "f16") ? KILN_TYPE_F16 : !strcmp(argv[2], "bf16") ? KILN_TYPE_BF16 : KILN_TYPE_F32;
    int v[7] = {768, 12, 12, 12, 2048, 32000, 4096}, nv = 0;
    const char *tok_path = NULL;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tok_path = argv[++i];
        else if (nv < 7) v[nv++] = atoi(argv[i]);
    }
    kiln_config c = {0};
    model_file_arch_defaults("llama", &c);
    c.dim = v[0], c.n_layers = v[1], c.n_heads = v[2], c.n_kv_heads = v[3], c.ffn_dim = v[4], c.n_vocab = v[5];
    c.ctx_len = v[6], c.head_dim = c.dim / c.n_heads, c.rope_dim = c.head_dim, c.rope_theta = 10000, c.norm_eps = 1e-5f;
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.name", "kiln random llama");
    model_file_write_config(w, &c);
    if (tok_path) {
        kiln_tokenizer *t = tokenizer_load_llama2c(tok_path, c.n_vocab);
        if (!t) return fprintf(stderr, "make_model: %s\n", kiln_last_error()), 1;
        tokenizer_to_gguf(t, w);
        tokenizer_free(t);
    }
    kiln_rng r;
    kiln_rng_seed(&r, 1234);
    int kv = c.n_kv_heads * c.head_dim;
    add(w, &r, "token_embd.weight", c.n_vocab, c.dim, type, 0.02f);
    add(w, &r, "output_norm.weight", 1, c.dim, KILN_TYPE_F32, 1.0f);
    add(w, &r, "output.weight", c.n_vocab, c.dim, type, 0.02f);
    for (int l = 0; l < c.n_layers; l++) {
        char n[64];
#define LAYER(NAME, R, C, T, S) snprintf(n, sizeof n, "blk.%d." NAME, l), add(w, &r, n, R, C, T, S)
        LAYER("attn_norm.weight", 1, c.dim, KILN_TYPE_F32, 1.0f);
        LAYER("attn_q.weight", c.dim, c.dim, type, 0.02f);
        LAYER("attn_k.weight", kv, c.dim, type, 0.02f);
        LAYER("attn_v.weight", kv, c.dim, type, 0.02f);
        LAYER("attn_output.weight", c.dim, c.dim, type, 0.02f);
        LAYER("ffn_norm.weight", 1, c.dim, KILN_TYPE_F32, 1.0f);
        LAYER("ffn_gate.weight", c.ffn_dim, c.dim, type, 0.02f);
        LAYER("ffn_up.weight", c.ffn_dim, c.dim, type, 0.02f);
        LAYER("ffn_down.weight", c.dim, c.ffn_dim, type, 0.02f);
#undef LAYER
    }
    if (gguf_write(w, argv[1]) < 0) return fprintf(stderr, "make_model: %s\n", kiln_last_error()), 1;
    gguf_writer_free(w);
    return 0;
}
