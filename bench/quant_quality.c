/* quant_quality: what quantization costs in prediction quality: bits per byte of each MODEL on the
 * same TEXT, through the public API (so the quantized kernels are what runs).
 * usage: quant_quality TEXT MAX_BYTES MODEL...
 * A model with a tokenizer reads TEXT as its tokens (each token's bytes counted once); a model without
 * one reads it byte by byte (token id = byte, for byte-level models). TEXT is cut into windows of the
 * model's context (at most 512 tokens); every token but a window's first is predicted. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "kiln.h"

static double bits_per_byte(kiln_model *m, const char *text, size_t len, int *n_tokens) {
    *n_tokens = 0;
    const kiln_config *c = kiln_model_config(m);
    int32_t *toks = malloc(sizeof(int32_t) * (len + 1));
    int n = kiln_tokenize(m, text, len, 0, toks, (int)len + 1);
    int bytewise = n < 0;
    if (bytewise) {
        if (c->n_vocab < 256) return fprintf(stderr, "quant_quality: no tokenizer and fewer than 256 tokens\n"), NAN;
        n = (int)len;
        for (size_t i = 0; i < len; i++) toks[i] = (unsigned char)text[i];
    }
    *n_tokens = n;
    int ctx = c->ctx_len < 512 ? c->ctx_len : 512;
    float *logits = malloc(sizeof(float) * (size_t)ctx * c->n_vocab);
    double nll = 0, bytes = 0;
    for (int w0 = 0; w0 + 1 < n; w0 += ctx) {
        int T = n - w0 < ctx ? n - w0 : ctx;
        kiln_ctx *k = kiln_ctx_new(m, ctx);
        if (kiln_eval(k, toks + w0, T, logits) < 0)
            return fprintf(stderr, "quant_quality: %s\n", kiln_last_error()), NAN;
        for (int t = 0; t + 1 < T; t++) {
            const float *l = logits + (size_t)t * c->n_vocab;
            int next = toks[w0 + t + 1];
            double mx = l[0], s = 0;
            for (int v = 1; v < c->n_vocab; v++) mx = l[v] > mx ? l[v] : mx;
            for (int v = 0; v < c->n_vocab; v++) s += exp(l[v] - mx);
            nll += log(s) + mx - l[next];
            size_t nb = 1;
            if (!bytewise) kiln_token_text(m, toks[w0 + t], next, &nb);
            bytes += (double)nb;
        }
        kiln_ctx_free(k);
    }
    free(logits);
    free(toks);
    return nll / log(2) / bytes;
}

int main(int argc, char **argv) {
    if (argc < 4) return fprintf(stderr, "usage: quant_quality TEXT MAX_BYTES MODEL...\n"), 1;
    size_t len;
    char *text = kiln_read_file(argv[1], &len);
    if (!text) return fprintf(stderr, "quant_quality: %s\n", kiln_last_error()), 1;
    size_t max = strtoull(argv[2], NULL, 10);
    if (max && len > max) len = max;
    double base = 0;
    for (int i = 3; i < argc; i++) {
        kiln_model *m = kiln_model_open(argv[i]);
        if (!m) return fprintf(stderr, "quant_quality: %s\n", kiln_last_error()), 1;
        int n = 0;
        double bpb = bits_per_byte(m, text, len, &n);
        if (i == 3) base = bpb;
        printf("%s: %.4f bits/byte over %zu bytes (%d tokens), %+.2f%% against the first\n", argv[i], bpb, len, n,
               100 * (bpb / base - 1));
        kiln_model_close(m);
    }
    free(text);
    return 0;
}
