/* kiln quantize: the per-tensor choice of type (quantize.h) and the quantization of a whole file. */
#include "format/quantize.h"

#include <ctype.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/progress.h"
#include "kernels/kernels.h"
#include "kernels/quant.h"

static const char *const SCHEMES[] = {"q8_0", "q4_0", "q4_k_m"};

int quantize_scheme_parse(const char *name, kiln_quant_scheme *out) {
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(SCHEMES[i]), j = 0;
        while (j < n && name[j] && tolower((unsigned char)name[j]) == SCHEMES[i][j]) j++;
        if (j == n && !name[j]) {
            *out = (kiln_quant_scheme)i;
            return 0;
        }
    }
    return kiln_fail("quantization type '%s' is not one of q8_0, q4_0, q4_k_m", name);
}

const char *quantize_scheme_name(kiln_quant_scheme s) { return SCHEMES[s]; }

/* llama.cpp's general.file_type for the scheme (its LLAMA_FTYPE_MOSTLY_*). */
static uint32_t file_type(kiln_quant_scheme s) { return s == KILN_QUANT_Q8_0 ? 7 : s == KILN_QUANT_Q4_0 ? 2 : 15; }

static int name_is(const gguf_str *s, const char *z) { return s->len == strlen(z) && !memcmp(s->ptr, z, s->len); }

static int name_ends(const gguf_str *s, const char *z) {
    size_t n = strlen(z);
    return s->len >= n && !memcmp(s->ptr + s->len - n, z, n);
}

static int name_has(const gguf_str *s, const char *z) {
    size_t n = strlen(z);
    for (size_t i = 0; i + n <= s->len; i++)
        if (!memcmp(s->ptr + i, z, n)) return 1;
    return 0;
}

/* Layer index of "blk.N.*", or -1. */
static int layer_of(const gguf_str *s) {
    if (s->len < 5 || memcmp(s->ptr, "blk.", 4) != 0) return -1;
    int n = 0;
    size_t i = 4;
    for (; i < s->len && isdigit((unsigned char)s->ptr[i]) && n < 1000000; i++) n = n * 10 + (s->ptr[i] - '0');
    return i > 4 && i < s->len && s->ptr[i] == '.' ? n : -1;
}

/* How many tensors of G end with SUFFIX (llama.cpp counts layers this way). */
static int count_ending(const gguf_file *g, const char *suffix) {
    int n = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) n += name_ends(&g->tensors[i].name, suffix);
    return n;
}

/* More bits for the first and last eighth of the layers and every third one between. */
static int use_more_bits(int layer, int n_layers) {
    return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

static int is_float(uint32_t type) { return type == KILN_TYPE_F32 || type == KILN_TYPE_F16 || type == KILN_TYPE_BF16; }

uint32_t quantize_tensor_type(const gguf_file *g, const gguf_tensor *t, kiln_quant_scheme scheme) {
    const gguf_str *n = &t->name;
    if (t->n_dims < 2 || !name_ends(n, "weight") || name_has(n, "_norm.weight") || name_is(n, "position_embd.weight") ||
        name_is(n, "token_types.weight") || !is_float(t->type))
        return t->type;
    uint32_t type = scheme == KILN_QUANT_Q8_0   ? KILN_TYPE_Q8_0
                    : scheme == KILN_QUANT_Q4_0 ? KILN_TYPE_Q4_0
                                                : KILN_TYPE_Q4_K;
    int tied = !gguf_find_tensor(g, "output.weight");
    int head = name_is(n, "output.weight") || (tied && name_is(n, "token_embd.weight"));
    if (head && type != KILN_TYPE_Q8_0) type = KILN_TYPE_Q6_K;
    else if (scheme == KILN_QUANT_Q4_K_M) {
        int layer = layer_of(n);
        if ((name_ends(n, ".attn_v.weight") || name_ends(n, ".attn_qkv.weight")) && layer >= 0 &&
            use_more_bits(layer, count_ending(g, ".attn_v.weight") + count_ending(g, ".attn_qkv.weight")))
            type = KILN_TYPE_Q6_K;
        if (name_ends(n, ".ffn_down.weight") && layer >= 0 && use_more_bits(layer, count_ending(g, ".ffn_down.weight")))
            type = KILN_TYPE_Q6_K;
    }
    if (t->ne[0] % (uint64_t)kiln_quant_block((int)type)) type = KILN_TYPE_Q8_0;
    return t->ne[0] % 32 ? t->type : type;
}

typedef struct {
    const gguf_tensor *t;
    uint32_t type;
    void *out; /* NULL: copied as it is */
} plan;

/* Quantizes the rows of P->t into P->out, threads sharing the rows; thread 0 draws the progress. */
static void quantize_tensor(plan *p, kiln_progress *prog, uint64_t *done) {
    const gguf_tensor *t = p->t;
    int64_t k = (int64_t)t->ne[0], rows = (int64_t)(t->nbytes / kiln_row_bytes((int)t->type, k));
    size_t in_rb = kiln_row_bytes((int)t->type, k), out_rb = kiln_quant_row_bytes((int)p->type, k);
    int64_t chunk = 16, rows_done = 0;
#pragma omp parallel
    {
        float *f = kiln_xmalloc(sizeof(float) * (size_t)k);
#pragma omp for schedule(dynamic)
        for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
            int64_t r1 = r0 + chunk < rows ? r0 + chunk : rows;
            for (int64_t r = r0; r < r1; r++) {
                kiln_row_to_f32(f, (const char *)t->data + in_rb * r, (int)t->type, (int)k);
                kiln_quantize_row((int)p->type, f, (char *)p->out + out_rb * r, k);
            }
            int64_t now;
#pragma omp atomic capture
            now = rows_done += r1 - r0;
            if (omp_get_thread_num() == 0) kiln_progress_update(prog, *done + (uint64_t)now * in_rb);
        }
        free(f);
    }
    *done += t->nbytes;
    kiln_progress_update(prog, *done);
}

int quantize_gguf(const char *in, const char *out, kiln_quant_scheme scheme, int progress) {
    gguf_file *g = gguf_open(in);
    if (!g) return -1;
    plan *plans = kiln_xcalloc(g->n_tensors ? g->n_tensors : 1, sizeof *plans);
    uint64_t total = 0;
    int rc = 0;
    for (uint64_t i = 0; i < g->n_tensors && rc == 0; i++) {
        const gguf_tensor *t = &g->tensors[i];
        if (!is_float(t->type) && t->n_dims >= 2 && name_ends(&t->name, "weight"))
            rc = kiln_fail("%s: tensor %.*s is already %s; kiln quantize needs float (F32, F16, BF16) weights", in,
                           (int)t->name.len, t->name.ptr, gguf_type_name(t->type));
        plans[i].t = t;
        plans[i].type = quantize_tensor_type(g, t, scheme);
        if (plans[i].type != t->type) total += t->nbytes;
    }
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "general.file_type", file_type(scheme));
    gguf_set_u32(w, "general.quantization_version", 2);
    gguf_copy_kvs(w, g);
    kiln_progress prog;
    kiln_progress_begin(&prog, "quantize", total, "B", progress);
    uint64_t done = 0;
    for (uint64_t i = 0; i < g->n_tensors && rc == 0; i++) {
        plan *p = &plans[i];
        const gguf_tensor *t = p->t;
        char *name = kiln_xmalloc(t->name.len + 1);
        memcpy(name, t->name.ptr, t->name.len);
        name[t->name.len] = 0;
        if (strlen(name) != t->name.len) rc = kiln_fail("%s: a tensor name contains a NUL byte", in);
        const void *data = t->data;
        if (rc == 0 && p->type != t->type) {
            int64_t k = (int64_t)t->ne[0];
            size_t rows = t->nbytes / kiln_row_bytes((int)t->type, k);
            p->out = kiln_xmalloc(kiln_quant_row_bytes((int)p->type, k) * rows);
            quantize_tensor(p, &prog, &done);
            data = p->out;
        }
        if (rc == 0 && gguf_add_tensor_ref(w, name, p->type, (int)t->n_dims, t->ne, data) < 0)
            rc = kiln_fail("%s: %s", in, kiln_errmsg());
        free(name);
    }
    if (rc == 0) {
        kiln_progress_end(&prog);
        rc = gguf_write(w, out);
    } else kiln_progress_abort(&prog);
    gguf_writer_free(w);
    for (uint64_t i = 0; i < g->n_tensors; i++) free(plans[i].out);
    free(plans);
    gguf_close(g);
    return rc;
}
