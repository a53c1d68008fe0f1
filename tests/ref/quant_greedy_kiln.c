/* Greedy decoding in kiln, for tests/ref/quant_greedy_vs_llama_cpp.sh: the same output as
 * quant_greedy_llama_cpp.c ("token runner_up margin top_logit" per step), or with TEXT instead of token
 * ids (-t TEXT) the prompt's token ids with BOS, on one line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "greedy_top2.h"
#include "kiln.h"

int main(int argc, char **argv) {
    if (argc < 4) return fprintf(stderr, "usage: %s MODEL.gguf N TOKEN... | MODEL.gguf -t TEXT\n", argv[0]), 1;
    kiln_model *m = kiln_model_open(argv[1]);
    if (!m) return fprintf(stderr, "%s\n", kiln_last_error()), 1;
    int32_t toks[256];
    if (!strcmp(argv[2], "-t")) {
        int n = kiln_tokenize(m, argv[3], strlen(argv[3]), 1, toks, 256);
        for (int i = 0; i < n; i++) printf("%d%s", toks[i], i + 1 < n ? " " : "\n");
        return n < 0;
    }
    int n = atoi(argv[2]), np = argc - 3, nv = kiln_model_config(m)->n_vocab;
    if (np > 256) return fprintf(stderr, "at most 256 prompt tokens\n"), 1;
    for (int i = 0; i < np; i++) toks[i] = atoi(argv[3 + i]);
    kiln_ctx *ctx = kiln_ctx_new(m, 512);
    kiln_eval(ctx, toks, np, NULL);
    for (int s = 0; s < n; s++) {
        int32_t t = greedy_top2_print(kiln_logits(ctx), nv);
        kiln_eval(ctx, &t, 1, NULL);
    }
    kiln_ctx_free(ctx);
    kiln_model_close(m);
    return 0;
}
