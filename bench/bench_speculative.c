/* bench_speculative: speculative decoding against plain decoding, measured in the same run.
 *
 * 1. Acceptance on trained models: a byte-level target (4 layers, dim 192) and draft (1 layer, dim
 *    64) trained by `kiln train` on /usr/include (SPEC_TRAIN_MINUTES, default 6, for the target;
 *    half for the draft; kept in $BENCH_TMP/spec), sampling at temperature 0.7 and 1.0: the
 *    acceptance rate of rejection sampling (min(1, p/q)) against HF's exact-match check of a greedy
 *    draft.
 * 2. Speed: a byte-level llama of the ~110M shape (dim 768, 12 layers, 256 tokens; random weights
 *    with a scaled output head so its distributions are peaked like a trained model's) in f32 against
 *    its Q4_0 quantization (`kiln quantize`) as the draft: tokens/s of plain decoding and of
 *    speculative decoding (greedy and rejection sampling), acceptance, tokens per target pass, and
 *    what a batched target pass of 5 and 9 tokens costs against one token (speculation pays only when
 *    that is close to 1).
 * Models go to $BENCH_TMP (default /tmp/kiln-bench). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/file.h"
#include "base/rng.h"
#include "format/gguf.h"
#include "format/model_file.h"
#include "kiln.h"

static void die(const char *what) {
    fprintf(stderr, "bench_speculative: %s: %s\n", what, kiln_last_error());
    exit(1);
}

static void random_tensor(gguf_writer *w, kiln_rng *r, const char *name, int rows, int cols, float scale) {
    float *x = malloc(sizeof(float) * rows * cols);
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        x[i] = scale < 0 ? 1.0f : (kiln_rng_f32(r) + kiln_rng_f32(r) + kiln_rng_f32(r) - 1.5f) * 2 * scale;
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
    gguf_add_tensor(w, name, KILN_TYPE_F32, rows == 1 ? 1 : 2, ne, x);
    free(x);
}

/* A byte-level llama of the ~110M shape. Layer weights of scale 0.02 keep the embedding dominant in
 * the residual stream, so early layers already predict much of what the full stack does. */
static void byte_llama(const char *path) {
    kiln_config c = {0};
    model_file_arch_defaults("llama", &c);
    c.dim = 768, c.n_layers = 12, c.n_heads = 12, c.n_kv_heads = 12, c.ffn_dim = 2048, c.n_vocab = 256;
    c.ctx_len = 1024, c.head_dim = 64, c.rope_dim = 64, c.rope_theta = 10000, c.norm_eps = 1e-5f;
    gguf_writer *w = gguf_writer_new();
    model_file_write_config(w, &c);
    kiln_rng r;
    kiln_rng_seed(&r, 4321);
    random_tensor(w, &r, "token_embd.weight", 256, 768, 1.0f);
    random_tensor(w, &r, "output_norm.weight", 1, 768, -1);
    random_tensor(w, &r, "output.weight", 256, 768, 2.5f / sqrtf(768)); /* logits of std ~2.5 */
    for (int l = 0; l < 12; l++) {
        char n[64];
#define LAYER(NAME, R, C, S) snprintf(n, sizeof n, "blk.%d." NAME, l), random_tensor(w, &r, n, R, C, S)
        LAYER("attn_norm.weight", 1, 768, -1);
        LAYER("attn_q.weight", 768, 768, 0.02f);
        LAYER("attn_k.weight", 768, 768, 0.02f);
        LAYER("attn_v.weight", 768, 768, 0.02f);
        LAYER("attn_output.weight", 768, 768, 0.02f);
        LAYER("ffn_norm.weight", 1, 768, -1);
        LAYER("ffn_gate.weight", 2048, 768, 0.02f);
        LAYER("ffn_up.weight", 2048, 768, 0.02f);
        LAYER("ffn_down.weight", 768, 2048, 0.02f);
#undef LAYER
    }
    if (gguf_write(w, path) < 0) die(path);
    gguf_writer_free(w);
}

typedef struct {
    double tok_s, accept, per_pass;
} run_stats;

/* Generates from PROMPT once per seed: the best tokens/s of the runs (the machine may be shared) and
 * the acceptance and tokens per target pass over all of them. */
static run_stats run(kiln_ctx *c, const int32_t *prompt, int n_prompt, kiln_gen_params p, int seeds) {
    int tokens = 0, passes = 0, drafted = 0, accepted = 0;
    double best = 0;
    for (int s = 0; s < seeds; s++) {
        p.seed = 1000 + s;
        kiln_gen_result r;
        if (kiln_generate(c, prompt, n_prompt, &p, &r) < 0) die("generate");
        tokens += r.seqs[0].n_tokens, passes += r.n_forward;
        drafted += r.n_drafted, accepted += r.n_accepted;
        best = fmax(best, r.seqs[0].n_tokens / r.decode_s);
        kiln_gen_result_free(&r);
    }
    return (run_stats){best, drafted ? (double)accepted / drafted : 0, (double)tokens / passes};
}

/* Trains a byte-level llama on the C headers of /usr/include with `kiln train` (once; kept in TMP). */
static void train(const char *tmp, const char *name, const char *shape, int minutes, char *model, size_t size) {
    char cmd[16384];
    snprintf(model, size, "%s/spec/%s/latest.gguf", tmp, name);
    if (access(model, R_OK) == 0) return;
    snprintf(cmd, sizeof cmd, "mkdir -p %s/spec && cd %s/spec && ([ -s inc.corpus ] || %s/build/kiln corpus /usr/include "
             "-o inc.corpus --quiet) && %s/build/kiln train --data inc.corpus --out %s --arch llama %s --ctx 256 "
             "--minutes %d --quiet", tmp, tmp, getenv("PWD"), getenv("PWD"), name, shape, minutes);
    printf("   training %s (%d minutes): %s\n", name, minutes, shape);
    if (system(cmd) != 0) fprintf(stderr, "bench_speculative: training %s failed\n", name), exit(1);
}

static void acceptance_on_trained_models(const char *tmp) {
    char target[4096], draft[4096];
    int minutes = getenv("SPEC_TRAIN_MINUTES") ? atoi(getenv("SPEC_TRAIN_MINUTES")) : 6;
    printf("-- acceptance: byte-level models trained by kiln train on C headers, 4 drafted tokens, 10 x 200 tokens\n");
    train(tmp, "target", "--layers 4 --dim 192 --heads 6", minutes, target, sizeof target);
    train(tmp, "draft", "--layers 1 --dim 64 --heads 2", minutes / 2 + 1, draft, sizeof draft);
    kiln_model *tm = kiln_model_open(target), *dm = kiln_model_open(draft);
    if (!tm || !dm) die("open");
    kiln_ctx *tc = kiln_ctx_new(tm, 0), *dc = kiln_ctx_new(dm, 0);
    const char *text = "#include <stdio.h>\n\nstatic int ";
    int32_t prompt[64];
    int n = (int)strlen(text);
    for (int i = 0; i < n; i++) prompt[i] = (unsigned char)text[i];
    float temps[2] = {0.7f, 1.0f};
    for (int t = 0; t < 2; t++) {
        kiln_gen_params p;
        kiln_gen_defaults(&p);
        p.search = KILN_SEARCH_SAMPLE, p.temperature = temps[t], p.max_new_tokens = 200, p.draft = dc, p.draft_n = 4;
        p.spec = KILN_SPEC_REJECTION;
        run_stats rej = run(tc, prompt, n, p, 10);
        p.spec = KILN_SPEC_EXACT;
        run_stats ex = run(tc, prompt, n, p, 10);
        printf("   temperature %.1f: rejection sampling accepts %.1f%% (%.2f tokens per target pass), exact match "
               "%.1f%% (%.2f): %.1fx\n", temps[t], 100 * rej.accept, rej.per_pass, 100 * ex.accept, ex.per_pass,
               rej.accept / ex.accept);
        printf("accept_rejection_t%.1f %.3f\naccept_exact_t%.1f %.3f\n", temps[t], rej.accept, temps[t], ex.accept);
    }
    kiln_ctx_free(tc), kiln_ctx_free(dc), kiln_model_close(tm), kiln_model_close(dm);
}

/* Median milliseconds of a target pass over T tokens after a 64-token prefix. */
static double pass_ms(kiln_ctx *c, int t) {
    int32_t toks[64];
    for (int i = 0; i < 64; i++) toks[i] = 'a' + i % 26;
    float *rows = malloc(sizeof(float) * 256 * 64);
    kiln_ctx_truncate(c, 0);
    kiln_eval(c, toks, 64, NULL);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        kiln_ctx_truncate(c, 64);
        double t0 = kiln_now();
        kiln_eval(c, toks, t, rows);
        best = fmin(best, kiln_now() - t0);
    }
    kiln_ctx_truncate(c, 0);
    free(rows);
    return best * 1e3;
}

static void speed_on_byte_llama(const char *tmp) {
    char target[4096], draft[4096], cmd[16384];
    snprintf(target, sizeof target, "%s/byte-llama110m.gguf", tmp);
    snprintf(draft, sizeof draft, "%s/byte-llama110m-q4_0.gguf", tmp);
    if (access(target, R_OK) != 0) byte_llama(target);
    if (access(draft, R_OK) != 0) {
        snprintf(cmd, sizeof cmd, "build/kiln quantize %s %s --type q4_0 --quiet", target, draft);
        if (system(cmd) != 0) return (void)fprintf(stderr, "bench_speculative: cannot quantize %s\n", target);
    }
    kiln_model *tm = kiln_model_open(target), *dm = kiln_model_open(draft);
    if (!tm || !dm) die("open");
    kiln_ctx *tc = kiln_ctx_new(tm, 0), *dc = kiln_ctx_new(dm, 0);
    printf("-- speed: byte-level 110M-shape target (f32), its Q4_0 quantization as draft, best of 3 x 64 tokens, %d threads\n",
           kiln_get_threads());
    printf("   target pass: 1 token %.1f ms, 5 tokens %.1f ms, 9 tokens %.1f ms; draft pass: 1 token %.1f ms, 5 tokens "
           "%.1f ms\n", pass_ms(tc, 1), pass_ms(tc, 5), pass_ms(tc, 9), pass_ms(dc, 1), pass_ms(dc, 5));
    int32_t prompt[32];
    for (int i = 0; i < 32; i++) prompt[i] = "Speculative decoding, measured.."[i];
    for (int greedy = 1; greedy >= 0; greedy--) {
        kiln_gen_params p;
        kiln_gen_defaults(&p);
        p.search = greedy ? KILN_SEARCH_GREEDY : KILN_SEARCH_SAMPLE, p.temperature = greedy ? 1 : 0.7f;
        p.max_new_tokens = 64;
        run_stats plain = run(tc, prompt, 32, p, 3);
        printf("   %s: plain %.1f tok/s\n", greedy ? "greedy" : "sampling at 0.7", plain.tok_s);
        int ks[2] = {4, 8};
        for (int k = 0; k < 2; k++) {
            p.spec = KILN_SPEC_REJECTION, p.draft = dc, p.draft_n = ks[k];
            run_stats s = run(tc, prompt, 32, p, 3);
            printf("   %s, draft %d: %.1f tok/s, %.2fx, acceptance %.1f%%, %.2f tokens per target pass\n",
                   greedy ? "greedy" : "rejection sampling", ks[k], s.tok_s, s.tok_s / plain.tok_s, 100 * s.accept,
                   s.per_pass);
            printf("speedup_%s_k%d %.2f\n", greedy ? "greedy" : "sampling", ks[k], s.tok_s / plain.tok_s);
        }
    }
    kiln_ctx_free(tc), kiln_ctx_free(dc), kiln_model_close(tm), kiln_model_close(dm);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *tmp = getenv("BENCH_TMP") ? getenv("BENCH_TMP") : "/tmp/kiln-bench";
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tmp);
    if (system(cmd) != 0) return 1;
    acceptance_on_trained_models(tmp);
    speed_on_byte_llama(tmp);
    return 0;
}
