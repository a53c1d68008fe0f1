/* The public model and context API of include/kiln.h: a GGUF file opened as a model with its
 * tokenizer, and contexts that run it. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/error.h"
#include "kernels/kernels.h"

void kiln_set_threads(int n) {
    if (n > 0) omp_set_num_threads(n);
}

int kiln_get_threads(void) { return omp_get_max_threads(); }

kiln_model *kiln_model_open(const char *path) {
    gguf_file *g = gguf_open(path);
    if (!g) return NULL;
    kiln_model *m = kiln_xcalloc(1, sizeof *m);
    m->file = g;
    if (model_file_read_config(g, &m->cfg) < 0 || model_file_read_weights(g, &m->cfg, &m->weights) < 0) goto fail;
    m->tok = tokenizer_from_gguf(g);
    if (!m->tok && gguf_find_kv(g, "tokenizer.ggml.model")) goto fail_keep_weights; /* present but malformed */
    if (m->tok && tokenizer_n_vocab(m->tok) > m->cfg.n_vocab) {
        kiln_fail("%s: tokenizer has %d tokens but the model only %d", path, tokenizer_n_vocab(m->tok), m->cfg.n_vocab);
        goto fail_keep_weights;
    }
    return m;
fail_keep_weights:
    model_file_weights_free(&m->weights, &m->cfg);
fail:
    gguf_close(g);
    tokenizer_free(m->tok);
    free(m);
    return NULL;
}

void kiln_model_close(kiln_model *m) {
    if (!m) return;
    model_file_weights_free(&m->weights, &m->cfg);
    tokenizer_free(m->tok);
    gguf_close(m->file);
    free(m);
}

const kiln_config *kiln_model_config(const kiln_model *m) { return &m->cfg; }

size_t kiln_model_kv_bytes_per_token(const kiln_model *m) { return kiln_config_kv_bytes(&m->cfg); }

static size_t mat_bytes(const kiln_mat *x) { return x->data ? kiln_row_bytes(x->type, x->cols) * x->rows : 0; }

size_t kiln_model_weight_bytes(const kiln_model *m) {
    const kiln_weights *w = &m->weights.w;
    size_t n = mat_bytes(&w->output) + kiln_row_bytes(w->tok_embd.type, m->cfg.dim);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const kiln_layer_weights *L = &w->layers[l];
        n += mat_bytes(&L->wq) + mat_bytes(&L->wk) + mat_bytes(&L->wv) + mat_bytes(&L->wo) + mat_bytes(&L->w_gate) +
             mat_bytes(&L->w_up) + mat_bytes(&L->w_down);
    }
    return n;
}

int kiln_model_n_tensors(const kiln_model *m) { return (int)m->file->n_tensors; }

int kiln_model_tensor(const kiln_model *m, int i, kiln_tensor_info *out) {
    if (i < 0 || (uint64_t)i >= m->file->n_tensors) return kiln_fail("tensor index %d out of range", i);
    const gguf_tensor *t = &m->file->tensors[i];
    const char *type = gguf_type_name(t->type);
    *out = (kiln_tensor_info){t->name.ptr, t->name.len, type ? type : "?", (int)t->n_dims, {0}, t->nbytes};
    for (int d = 0; d < 4; d++) out->ne[d] = (int64_t)t->ne[d];
    return 0;
}

size_t kiln_model_file_size(const kiln_model *m) { return m->file->map.size; }

static int need_tokenizer(const kiln_model *m) {
    return m->tok ? 0 : kiln_fail("%s: the model file has no tokenizer", m->file->path);
}

int kiln_tokenize(const kiln_model *m, const char *text, size_t len, int add_bos, int32_t *out, int max) {
    if (need_tokenizer(m) < 0) return -1;
    return tokenizer_encode(m->tok, text, len, add_bos, out, max);
}

const char *kiln_token_text(const kiln_model *m, int prev, int tok, size_t *len) {
    if (!m->tok) {
        *len = 0;
        return "";
    }
    return tokenizer_decode(m->tok, prev, tok, len);
}

int kiln_token_bos(const kiln_model *m) { return m->tok ? tokenizer_bos(m->tok) : -1; }
int kiln_token_eos(const kiln_model *m) { return m->tok ? tokenizer_eos(m->tok) : -1; }

kiln_ctx *kiln_ctx_new(const kiln_model *m, int n_ctx) {
    if (n_ctx < 0) return kiln_fail("context size %d must not be negative", n_ctx), NULL;
    if (n_ctx == 0 || n_ctx > m->cfg.ctx_len) n_ctx = m->cfg.ctx_len;
    kiln_ctx *c = kiln_xcalloc(1, sizeof *c);
    c->m = m;
    c->state = kiln_state_new(&m->cfg, n_ctx);
    c->logits = kiln_xcalloc(m->cfg.n_vocab, sizeof(float));
    return c;
}

void kiln_ctx_free(kiln_ctx *c) {
    if (!c) return;
    kiln_state_free(c->state);
    free(c->logits);
    free(c);
}

int kiln_eval(kiln_ctx *c, const int32_t *tokens, int n, float *all_logits) {
    const kiln_config *cfg = &c->m->cfg;
    if (n <= 0) return kiln_fail("nothing to evaluate (%d tokens)", n);
    if (n > c->state->n_ctx - c->pos)
        return kiln_fail("%d tokens at position %d do not fit in the context of %d", n, c->pos, c->state->n_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= cfg->n_vocab)
            return kiln_fail("token id %d at index %d is outside the vocabulary (0 to %d)", tokens[i], i,
                             cfg->n_vocab - 1);
    kiln_forward(cfg, &c->m->weights.w, c->state, tokens, n, c->pos, all_logits ? all_logits : c->logits,
                 all_logits != NULL);
    if (all_logits) memcpy(c->logits, all_logits + (size_t)(n - 1) * cfg->n_vocab, sizeof(float) * cfg->n_vocab);
    c->pos += n;
    return 0;
}

float *kiln_logits(kiln_ctx *c) { return c->logits; }

int kiln_ctx_pos(const kiln_ctx *c) { return c->pos; }

int kiln_ctx_truncate(kiln_ctx *c, int pos) {
    if (pos < 0 || pos > c->pos) return kiln_fail("cannot roll back to position %d (at %d)", pos, c->pos);
    c->pos = pos; /* later positions are overwritten before they are read */
    return 0;
}
