/* bench_model: prefill and decode speed of one model through the public API, and decode as a fraction
 * of the memory-bandwidth limit measured in the same run.
 * usage: bench_model MODEL.gguf [--quick]
 * Prints one "key value" line per figure (bench_decode.sh compares them with llama.cpp). prefill512_tps is
 * on a warmed context, as llama-bench measures; prefill512_fresh_context_tps on new contexts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bandwidth.h"
#include "base/file.h"
#include "kiln.h"

/* Decode tok/s of N_DECODE greedy tokens after a prompt of N_PROMPT random tokens. */
static double decode_speed(kiln_model *m, int n_prompt, int n_decode) {
    const kiln_config *c = kiln_model_config(m);
    kiln_ctx *ctx = kiln_ctx_new(m, n_prompt + n_decode + 1);
    int32_t *toks = malloc(sizeof(int32_t) * n_prompt);
    for (int i = 0; i < n_prompt; i++) toks[i] = (int32_t)((i * 7919u + 13) % (unsigned)c->n_vocab);
    kiln_eval(ctx, toks, n_prompt, NULL);
    double t1 = kiln_now();
    kiln_sampling greedy = {0, 0, 1, 0};
    uint64_t st = 0;
    for (int i = 0; i < n_decode; i++) {
        int32_t next = kiln_sample(kiln_logits(ctx), c->n_vocab, &greedy, &st);
        kiln_eval(ctx, &next, 1, NULL);
    }
    double t2 = kiln_now();
    kiln_ctx_free(ctx);
    free(toks);
    return n_decode / (t2 - t1);
}

/* Prefill tok/s of N random tokens, the best of 3 (single runs swing by ~15%). WARM: on one context
 * that has run the same prefill once, as llama-bench takes its pp figure (a warm-up run, then runs on the
 * same context), so the figure leaves out the first touch of the context's buffers, which on this VM
 * costs ~10 us per 4 KiB page; otherwise each run on a new context, first touch included. */
static double prefill_speed(kiln_model *m, int n, int warm) {
    const kiln_config *c = kiln_model_config(m);
    int32_t *toks = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) toks[i] = (int32_t)((i * 7919u + 13) % (unsigned)c->n_vocab);
    kiln_ctx *ctx = NULL;
    if (warm) {
        ctx = kiln_ctx_new(m, n + 1);
        kiln_eval(ctx, toks, n, NULL);
    }
    double best = 0;
    for (int r = 0; r < 3; r++) {
        if (warm) kiln_ctx_truncate(ctx, 0);
        else ctx = kiln_ctx_new(m, n + 1);
        double t0 = kiln_now();
        kiln_eval(ctx, toks, n, NULL);
        double tps = n / (kiln_now() - t0);
        if (tps > best) best = tps;
        if (!warm) kiln_ctx_free(ctx);
    }
    if (warm) kiln_ctx_free(ctx);
    free(toks);
    return best;
}

/* Milliseconds of one pass over T tokens after a 64-token prefix, the best of 5: what a speculative
 * target's check of T - 1 drafted tokens (or a server's batched step) costs against one decoded token. */
static double pass_ms(kiln_model *m, int t) {
    const kiln_config *c = kiln_model_config(m);
    kiln_ctx *ctx = kiln_ctx_new(m, 64 + t + 1);
    int32_t toks[64];
    for (int i = 0; i < 64; i++) toks[i] = (int32_t)((i * 7919u + 13) % (unsigned)c->n_vocab);
    kiln_eval(ctx, toks, 64, NULL);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        kiln_ctx_truncate(ctx, 64);
        double t0 = kiln_now();
        kiln_eval(ctx, toks, t, NULL);
        double dt = kiln_now() - t0;
        if (dt < best) best = dt;
    }
    kiln_ctx_free(ctx);
    return best * 1e3;
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: bench_model MODEL.gguf [--quick]\n"), 1;
    int quick = argc > 2 && !strcmp(argv[2], "--quick");
    /* time to first token: open (mmap, file in page cache), tokenize, prefill a short prompt, sample */
    kiln_model *warm = kiln_model_open(argv[1]);
    if (!warm) return fprintf(stderr, "bench_model: %s\n", kiln_last_error()), 1;
    kiln_model_close(warm);
    double t0 = kiln_now();
    kiln_model *m = kiln_model_open(argv[1]);
    kiln_ctx *ctx = kiln_ctx_new(m, 64);
    int32_t prompt[8] = {1, 450, 4996, 17354, 1701, 432, 17204, 975};
    kiln_eval(ctx, prompt, 8, NULL);
    kiln_sampling greedy = {0, 0, 1, 0};
    uint64_t st = 0;
    kiln_sample(kiln_logits(ctx), kiln_model_config(m)->n_vocab, &greedy, &st);
    double ttft = kiln_now() - t0;
    kiln_ctx_free(ctx);

    double bw = bench_read_bandwidth();
    size_t wbytes = kiln_model_weight_bytes(m);
    printf("threads %d\n", kiln_get_threads());
    printf("read_bandwidth_GBps %.1f\n", bw / 1e9);
    printf("weight_bytes_per_token %zu\n", wbytes);
    printf("time_to_first_token_ms %.1f\n", ttft * 1e3);
    printf("prefill512_tps %.1f\n", prefill_speed(m, 512, 1));
    printf("prefill512_fresh_context_tps %.1f\n", prefill_speed(m, 512, 0));
    double one = pass_ms(m, 1), five = pass_ms(m, 5), nine = pass_ms(m, 9);
    printf("pass_ms_1_5_9_tokens %.2f %.2f %.2f\n", one, five, nine);
    printf("pass_5_tokens_over_1 %.2f\n", five / one);
    printf("pass_9_tokens_over_1 %.2f\n", nine / one);
    int lens[] = {16, 256, 1024, 2048};
    for (int i = 0; i < (quick ? 1 : 4); i++) {
        double tg = decode_speed(m, lens[i], 64);
        printf("decode_after_%d_tps %.1f\n", lens[i], tg);
        if (i == 0) { /* the host's bandwidth drifts: probe again beside the decode and hold it to the higher */
            double after = bench_read_bandwidth();
            printf("read_bandwidth_after_decode_GBps %.1f\n", after / 1e9);
            if (after > bw) bw = after;
            printf("decode_fraction_of_bandwidth_limit %.2f (limit %.1f tok/s)\n", tg / (bw / wbytes), bw / wbytes);
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak_rss_MB %.1f\n", ru.ru_maxrss / 1024.0);
    kiln_model_close(m);
    return 0;
}
