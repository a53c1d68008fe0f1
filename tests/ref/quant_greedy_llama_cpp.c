/* Greedy decoding in llama.cpp through its C API, for tests/ref/quant_greedy_vs_llama_cpp.sh: the prompt
 * token ids as one batch, then N greedy steps; per step one line "token runner_up margin top_logit".
 * f32 KV cache and flash attention off: llama.cpp's CPU flash attention rounds through f16.
 * With LLAMA_PROMPT_TOKENWISE=1 the prompt goes in one token per decode call instead: llama.cpp then
 * takes its matrix-vector kernels for it rather than its matrix-matrix ones, the same arithmetic in
 * another float order (the noise floor of llama.cpp against itself). */
#include <stdio.h>
#include <stdlib.h>

#include "greedy_top2.h"
#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)level, (void)text, (void)user;
}

int main(int argc, char **argv) {
    if (argc < 4) return fprintf(stderr, "usage: %s MODEL.gguf N TOKEN...\n", argv[0]), 1;
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model *model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) return fprintf(stderr, "%s: cannot load\n", argv[1]), 1;
    int n = atoi(argv[2]), np = argc - 3;
    if (np > 256) return fprintf(stderr, "at most 256 prompt tokens\n"), 1;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512, cp.n_batch = 512, cp.n_ubatch = 512, cp.n_threads = 2, cp.n_threads_batch = 2;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = GGML_TYPE_F32, cp.type_v = GGML_TYPE_F32;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_token toks[256];
    for (int i = 0; i < np; i++) toks[i] = atoi(argv[3 + i]);
    const char *tokenwise = getenv("LLAMA_PROMPT_TOKENWISE");
    if (tokenwise && *tokenwise == '1')
        for (int i = 0; i < np; i++) llama_decode(ctx, llama_batch_get_one(toks + i, 1));
    else
        llama_decode(ctx, llama_batch_get_one(toks, np));
    for (int s = 0; s < n; s++) {
        llama_token t = greedy_top2_print(llama_get_logits_ith(ctx, -1), nv);
        llama_decode(ctx, llama_batch_get_one(&t, 1));
    }
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
