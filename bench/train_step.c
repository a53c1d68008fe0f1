/* kiln's side of the training benchmark (bench/bench_train.sh): times optimizer steps of a byte-level
 * model on random bytes (speed does not depend on them), exactly as kiln train runs them: forward,
 * backward, gradient norm and clipping, AdamW. Prints one JSON line with tokens/s, the model FLOP/s
 * (6 per parameter per token plus attention), the machine's fp32 peak (an FMA loop on one core, timed
 * by CPU time so that other processes do not lower it, times the threads) and the fraction of it
 * reached; the same per CPU-second (cpu_peak_fraction: what the cores did while they ran ours) and
 * peak resident memory.
 *
 * usage: train_step [--arch gpt2|llama] [--layers 6] [--dim 384] [--heads 6] [--ctx 256] [--batch 8]
 *                   [--steps 10] [--warmup-steps 2] [--threads N] */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/rng.h"
#include "peak_flops.h"
#include "train/adamw.h"
#include "train/batch.h"
#include "train/blas.h"
#include "train/model.h"

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    blas_prefer_avx512(argv);
    const char *arch = "gpt2";
    int layers = 6, dim = 384, heads = 6, ctx = 256, batch = 8, steps = 10, warm = 2, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--arch")) arch = argv[i + 1];
        else if (!strcmp(argv[i], "--layers")) layers = v;
        else if (!strcmp(argv[i], "--dim")) dim = v;
        else if (!strcmp(argv[i], "--heads")) heads = v;
        else if (!strcmp(argv[i], "--ctx")) ctx = v;
        else if (!strcmp(argv[i], "--batch")) batch = v;
        else if (!strcmp(argv[i], "--steps")) steps = v;
        else if (!strcmp(argv[i], "--warmup-steps")) warm = v;
        else if (!strcmp(argv[i], "--threads")) threads = v;
        else return fprintf(stderr, "train_step: unknown flag %s\n", argv[i]), 1;
    }
    if (threads > 0) omp_set_num_threads(threads);
    threads = omp_get_max_threads();
    kiln_config c;
    train_model m;
    if (train_config_make(&c, arch, layers, dim, heads, heads, 0, ctx) < 0 || train_model_init(&m, &c, 1) < 0)
        return fprintf(stderr, "train_step: bad configuration\n"), 1;
    int N = batch * ctx;
    train_batch *tb = train_batch_new(&m, batch, ctx, threads);
    adamw_state s;
    adamw_init(&s, m.n_params);
    adamw_opts o = {0.9f, 0.95f, 1e-8f, 0.1f};
    int32_t *in = malloc(sizeof(int32_t) * N), *tg = malloc(sizeof(int32_t) * N);
    kiln_rng r;
    kiln_rng_seed(&r, 1);
    double t0 = 0, c0 = 0;
    float loss = 0;
    for (int step = 0; step < warm + steps; step++) {
        if (step == warm) t0 = kiln_now(), c0 = cpu_seconds();
        for (int i = 0; i < N; i++) in[i] = (int32_t)kiln_rng_below(&r, 256), tg[i] = (int32_t)kiln_rng_below(&r, 256);
        train_batch_zero_grad(&m, tb);
        train_batch_run(&m, tb, in, tg, 1.0f / N);
        train_batch_reduce(&m, tb);
        float k = train_clip_scale(train_grad_norm(m.grads, m.n_params), 1.0f);
        adamw_step(&m, &s, &o, 1e-3f, k);
        loss = 0;
        for (int i = 0; i < N; i++) loss += tb->losses[i] / N;
    }
    double dt = kiln_now() - t0, dc = cpu_seconds() - c0, tok_s = (double)steps * N / dt;
    /* matrix FLOPs: 6 per weight per token (forward 2, backward 4); attention: QK^T and PV over half
     * the context on average, forward 4 T/2 per width per token, backward twice that */
    double flops_per_tok = 6.0 * (m.n_params - (c.pos == KILN_POS_LEARNED ? (size_t)ctx * dim : 0)) +
                           3.0 * 4 * (ctx / 2.0) * c.n_heads * c.head_dim * c.n_layers;
    /* the peak: one core's FMA rate per CPU-second (other processes do not lower it) times the threads */
    double core_peak, flops = flops_per_tok * steps * N;
    peak_flops(1, 1.0, &core_peak);
    double peak = core_peak * threads;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"peer\":\"kiln\",\"params\":%zu,\"tok_s\":%.1f,\"step_s\":%.4f,\"cpu_s_per_step\":%.4f,\"threads\":%d,"
           "\"gflops\":%.1f,\"peak_gflops\":%.1f,\"peak_fraction\":%.3f,\"core_peak_gflops\":%.1f,"
           "\"cpu_peak_fraction\":%.3f,\"peak_rss_mb\":%.1f,\"blas\":\"%s\",\"loss\":%.4f}\n",
           m.n_params, tok_s, dt / steps, dc / steps, threads, flops / dt * 1e-9, peak * 1e-9, flops / dt / peak,
           core_peak * 1e-9, flops / dc / core_peak, ru.ru_maxrss / 1024.0, blas_core_name(), loss);
    free(in);
    free(tg);
    adamw_free(&s);
    train_batch_free(tb);
    train_model_free(&m);
    return 0;
}
