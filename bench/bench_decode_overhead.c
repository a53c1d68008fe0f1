/* bench_decode_overhead: what the logits processor chain and the draw cost per token, against a decode
 * step of a ~110M llama measured in the same run, for a 32,000- and a 151,936-entry vocabulary.
 * usage: bench_decode_overhead [MODEL.gguf]   (default $BENCH_TMP/llama110m-f32.gguf, made if missing)
 *
 * Logits are "trained-like" (Zipf: the r-th most probable token has logit -1.2 ln r plus noise,
 * shuffled, as a trained model's next-token distributions are) and "flat" (a random-weight model's:
 * the worst case for top-p and typical-p, whose kept sets then span most of the vocabulary). Each
 * chain runs on a fresh copy of the logits (the copy is not timed) with a 512-token history. Figures
 * are medians. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/file.h"
#include "base/rng.h"
#include "decode/processor.h"
#include "decode/sample.h"
#include "kiln.h"

enum { HISTORY = 512, REPS = 41 };

static int by_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *t, int n) {
    qsort(t, n, sizeof *t, by_double);
    return t[n / 2];
}

/* Median seconds of one decode step of the model (after a 16-token prompt). */
static double decode_step(const char *path) {
    kiln_model *m = kiln_model_open(path);
    if (!m) fprintf(stderr, "bench_decode_overhead: %s\n", kiln_last_error()), exit(1);
    kiln_ctx *c = kiln_ctx_new(m, 256);
    int32_t prompt[16];
    for (int i = 0; i < 16; i++) prompt[i] = 100 + i;
    kiln_eval(c, prompt, 16, NULL);
    double t[REPS];
    for (int i = 0; i < REPS; i++) {
        int32_t tok = 200 + i;
        double t0 = kiln_now();
        kiln_eval(c, &tok, 1, NULL);
        t[i] = kiln_now() - t0;
    }
    kiln_ctx_free(c);
    kiln_model_close(m);
    return median(t, REPS);
}

static void make_logits(float *x, int n, int flat, uint64_t seed) {
    kiln_rng r;
    kiln_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        float noise = (kiln_rng_f32(&r) - 0.5f) * 0.2f;
        x[i] = flat ? (kiln_rng_f32(&r) + kiln_rng_f32(&r) + kiln_rng_f32(&r) - 1.5f) * 0.4f
                    : -1.2f * logf((float)(i + 1)) + noise;
    }
    for (int i = n - 1; i > 0; i--) { /* shuffle: the probable tokens are anywhere in the vocabulary */
        int j = (int)kiln_rng_below(&r, i + 1);
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

typedef struct {
    const char *name;
    kiln_search search;
    float temperature, top_p, min_p, typical_p, repetition, presence, frequency;
    int top_k, no_repeat_ngram;
} chain_spec;

static const chain_spec chains[] = {
    {"greedy + repetition penalty", KILN_SEARCH_GREEDY, 1, 1, 0, 1, 1.1f, 0, 0, 0, 0},
    {"temperature + top-p 0.9 (HF sampling)", KILN_SEARCH_SAMPLE, 0.7f, 0.9f, 0, 1, 1, 0, 0, 0, 0},
    {"llama.cpp-like: penalties, top-k 40, top-p .95, min-p .05, temp", KILN_SEARCH_SAMPLE, 0.8f, 0.95f, 0.05f, 1,
     1.1f, 0.1f, 0.1f, 40, 0},
    {"everything: + no-repeat-3gram, typical-p .95, top-k 0", KILN_SEARCH_SAMPLE, 0.8f, 0.95f, 0.05f, 0.95f, 1.1f,
     0.1f, 0.1f, 0, 3},
    {"  the same without typical-p (its share is the difference)", KILN_SEARCH_SAMPLE, 0.8f, 0.95f, 0.05f, 1, 1.1f,
     0.1f, 0.1f, 0, 3},
    {"typical-p .95 alone", KILN_SEARCH_SAMPLE, 1, 1, 0, 0.95f, 1, 0, 0, 0, 0},
};

/* Median seconds of the chain plus the pick on a copy of X. */
static double chain_time(const chain_spec *cs, const float *x, int n, const int32_t *hist) {
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.search = cs->search, p.temperature = cs->temperature, p.top_k = cs->top_k, p.top_p = cs->top_p;
    p.min_p = cs->min_p, p.typical_p = cs->typical_p, p.repetition_penalty = cs->repetition;
    p.presence_penalty = cs->presence, p.frequency_penalty = cs->frequency, p.no_repeat_ngram = cs->no_repeat_ngram;
    if (kiln_gen_check(&p, n) < 0) fprintf(stderr, "bench_decode_overhead: %s\n", kiln_last_error()), exit(1);
    decode_chain ch;
    int greedy = cs->search == KILN_SEARCH_GREEDY;
    decode_chain_init(&ch, &p, n, !greedy);
    decode_history h = {hist, HISTORY, HISTORY / 2, NULL, 0};
    float *work = malloc(sizeof(float) * n);
    double t[REPS];
    for (int i = 0; i < REPS; i++) {
        memcpy(work, x, sizeof(float) * n);
        double t1 = kiln_now();
        decode_cands c;
        decode_chain_apply(&ch, &h, work, &c);
        double lp;
        int tok = greedy ? cands_argmax(&c) : decode_draw(&c, (i + 0.5) / REPS, &lp);
        if (tok < 0) fprintf(stderr, "bench_decode_overhead: nothing left to draw\n"), exit(1);
        double t2 = kiln_now();
        t[i] = t2 - t1;
    }
    free(work);
    decode_chain_free(&ch);
    return median(t, REPS);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char path[4096];
    const char *tmp = getenv("BENCH_TMP") ? getenv("BENCH_TMP") : "/tmp/kiln-bench";
    if (argc > 1) snprintf(path, sizeof path, "%s", argv[1]);
    else snprintf(path, sizeof path, "%s/llama110m-f32.gguf", tmp);
    if (access(path, R_OK) != 0) {
        char cmd[8300];
        snprintf(cmd, sizeof cmd, "mkdir -p %s && build/bench/make_model %s f32", tmp, path);
        if (system(cmd) != 0) return fprintf(stderr, "bench_decode_overhead: cannot make %s\n", path), 1;
    }
    double step = decode_step(path);
    printf("decode step of %s: %.2f ms (%d threads)\n", path, step * 1e3, kiln_get_threads());
    int vocabs[2] = {32000, 151936};
    int32_t hist[HISTORY];
    double worst_realistic = 0;
    for (int v = 0; v < 2; v++) {
        int n = vocabs[v];
        kiln_rng r;
        kiln_rng_seed(&r, 9);
        for (int i = 0; i < HISTORY; i++) hist[i] = (int32_t)kiln_rng_below(&r, n);
        float *x = malloc(sizeof(float) * n);
        for (int flat = 0; flat < 2; flat++) {
            make_logits(x, n, flat, 100 + v);
            for (size_t k = 0; k < sizeof chains / sizeof chains[0]; k++) {
                double t = chain_time(&chains[k], x, n, hist);
                if (!flat && t / step > worst_realistic) worst_realistic = t / step;
                printf("vocab %6d  %-12s %-64s %8.1f us  %5.2f%% of the step, %5.2f%% of 10 ms\n", n,
                       flat ? "flat" : "trained-like", chains[k].name, t * 1e6, 100 * t / step, 100 * t / 0.010);
            }
        }
        free(x);
    }
    printf("overhead_max_trained_like_pct %.2f\n", 100 * worst_realistic);
    printf("(10 ms: a 110M decode step on an idle 2-core machine of this project; the chain is single-threaded)\n");
    return 0;
}
