/* Moving a model between the llama and qwen2 architectures (the seed's trans_llama_to_qwen): the same
 * math in two layouts. qwen2 rotates Hugging Face's halves of each head where llama pairs neighbours, so
 * q and k rows (and their biases) are permuted; qwen2 has q/k/v biases, so a llama model gets zero ones.
 * Everything else is copied as it is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/half.h"
#include "format/model_file.h"
#include "kernels/kernels.h"

void model_file_permute_heads(float *dst, const float *src, int n_heads, int head_dim, int cols, int to_interleaved) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++) {
                size_t inter = (size_t)h * head_dim + 2 * i + j, split = (size_t)h * head_dim + j * half + i;
                size_t d = to_interleaved ? inter : split, s = to_interleaved ? split : inter;
                memcpy(dst + d * cols, src + s * cols, sizeof(float) * cols);
            }
}

static void store(void *dst, const float *src, size_t n, uint32_t type) {
    uint16_t *h = dst;
    if (type == KILN_TYPE_F32) memcpy(dst, src, n * sizeof(float));
    else
        for (size_t i = 0; i < n; i++) h[i] = type == KILN_TYPE_F16 ? kiln_f32_to_f16(src[i]) : kiln_f32_to_bf16(src[i]);
}

/* A q or k tensor of N_HEADS heads with its rows permuted, in its own type (values are only moved). */
static int add_permuted(gguf_writer *w, const gguf_tensor *t, const char *name, int n_heads, int head_dim,
                        int to_interleaved) {
    int cols = t->n_dims == 1 ? 1 : (int)t->ne[0];
    size_t n = (size_t)n_heads * head_dim * cols;
    float *x = kiln_xmalloc(n * sizeof(float)), *y = kiln_xmalloc(n * sizeof(float));
    for (int r = 0; r < n_heads * head_dim; r++)
        kiln_row_to_f32(x + (size_t)r * cols, (const char *)t->data + kiln_row_bytes((int)t->type, cols) * r,
                        (int)t->type, cols);
    model_file_permute_heads(y, x, n_heads, head_dim, cols, to_interleaved);
    void *out = kiln_xmalloc(t->nbytes);
    store(out, y, n, t->type);
    int rc = gguf_add_tensor(w, name, t->type, (int)t->n_dims, t->ne, out);
    free(out);
    free(x);
    free(y);
    return rc;
}

int model_file_retarget(const gguf_file *g, const kiln_config *c, const char *arch, gguf_writer *w) {
    int to_qwen2 = !strcmp(arch, "qwen2");
    if (!((!strcmp(c->arch, "llama") && to_qwen2) || (!strcmp(c->arch, "qwen2") && !strcmp(arch, "llama"))))
        return kiln_fail("%s: cannot move a %s model to %s (only llama <-> qwen2)", g->path, c->arch, arch);
    if (to_qwen2 && (c->out_bias || c->sliding_window || c->rope_dim != c->head_dim))
        return kiln_fail("%s: qwen2 has no output bias, sliding window or partial rotation: this llama model has one",
                         g->path);
    kiln_config out = *c;
    model_file_arch_defaults(arch, &out);
    out.qkv_bias = c->qkv_bias || to_qwen2;
    model_file_write_config(w, &out);
    gguf_str name;
    if (gguf_get_str(g, "general.name", &name) == 1) {
        char *s = kiln_xmalloc(name.len + 1);
        memcpy(s, name.ptr, name.len);
        s[name.len] = 0;
        gguf_set_str(w, "general.name", s);
        free(s);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char full[128];
        snprintf(full, sizeof full, "%.*s", (int)(t->name.len < 127 ? t->name.len : 127), t->name.ptr);
        const char *dot = strchr(full + (strncmp(full, "blk.", 4) ? 0 : 4), '.');
        const char *leaf = dot && !strncmp(full, "blk.", 4) ? dot + 1 : "";
        int q = !strncmp(leaf, "attn_q.", 7), k = !strncmp(leaf, "attn_k.", 7), rc;
        if ((q || k) && t->type != KILN_TYPE_F32 && t->type != KILN_TYPE_F16 && t->type != KILN_TYPE_BF16)
            return kiln_fail("%s: tensor %s is %s: only F32, F16 and BF16 q/k rows are moved", g->path, full,
                             gguf_type_name(t->type));
        if (q || k) rc = add_permuted(w, t, full, q ? c->n_heads : c->n_kv_heads, c->head_dim, !to_qwen2);
        else rc = gguf_add_tensor_ref(w, full, t->type, (int)t->n_dims, t->ne, t->data);
        if (rc < 0) return -1;
    }
    for (int l = 0; to_qwen2 && !c->qkv_bias && l < c->n_layers; l++) {
        static const char *const names[3] = {"attn_q.bias", "attn_k.bias", "attn_v.bias"};
        for (int j = 0; j < 3; j++) {
            uint64_t ne[1] = {(uint64_t)(j ? c->n_kv_heads : c->n_heads) * c->head_dim};
            float *zero = kiln_xcalloc(ne[0], sizeof(float));
            char full[64];
            snprintf(full, sizeof full, "blk.%d.%s", l, names[j]);
            int rc = gguf_add_tensor(w, full, KILN_TYPE_F32, 1, ne, zero);
            free(zero);
            if (rc < 0) return -1;
        }
    }
    return 0;
}
