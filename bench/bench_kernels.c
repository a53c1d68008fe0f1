/* bench_kernels: the kernels against the machine and against OpenBLAS, measured in one run.
 *   (a) read bandwidth: all threads streaming a 256 MiB buffer, best of 9 (bandwidth.h);
 *   (b) decode matrix-vector products, GB/s of weights read and as a fraction of (a), per weight type,
 *       for each matrix shape of a 110M llama (dim 768, ffn 2048, vocab 32000), and for a sweep over all
 *       its matrices (440 MB in f32: what one decoded token reads, far beyond any cache);
 *   (c) prefill GEMM at T = 512, GFLOP/s per type and shape, against OpenBLAS cblas_sgemm on the same
 *       f32 shapes in the same run; attention at the same T; and the prefill tok/s they add up to;
 *   (d) short batches (a target's pass over drafted tokens): every matrix of the 110M model once, at
 *       T = 1..16 tokens, by the short-batch kernel against the prefill GEMM, as a multiple of T = 1, in
 *       f32, bf16, Q8_0 and Q4_0;
 *   (e) the integer GEMM of quantized weights at T = 512 (Q8_0, Q4_0, Q4_K, Q6_K), GOP/s per shape.
 * usage: bench_kernels [--quick] [--short-only] [--quant-prefill-only]   (KILN_ISA caps the kernels as
 * everywhere, the quantized ones too) */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bandwidth.h"
#include "base/file.h"
#include "base/half.h"
#include "kernels/isa.h"
#include "kernels/kernels.h"
#include "kernels/quant_isa.h"

enum { DIM = 768, FFN = 2048, VOCAB = 32000, LAYERS = 12, HEADS = 12, HEAD_DIM = 64, T_PREFILL = 512 };

static const struct {
    const char *name;
    int n, k, per_layer; /* per_layer 0: once per model */
} shapes[] = {
    {"attn 768x768", DIM, DIM, 4},
    {"ffn up 2048x768", FFN, DIM, 2},
    {"ffn down 768x2048", DIM, FFN, 1},
    {"output 32000x768", VOCAB, DIM, 0},
};
enum { N_SHAPES = sizeof shapes / sizeof shapes[0] };
static const int types[] = {KILN_TYPE_F32, KILN_TYPE_F16, KILN_TYPE_BF16};
static const char *const type_names[] = {"f32", "f16", "bf16"};

static double min_seconds = 0.4;

/* A matrix of N x K values in [-1, 1) of TYPE, filled in parallel (first touch spreads the pages). */
static void *make_matrix(int type, int n, int k, unsigned seed) {
    size_t count = (size_t)n * k, bytes = kiln_row_bytes(type, k) * n;
    void *w = malloc(bytes);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        uint32_t h = (uint32_t)(i * 2654435761u) ^ seed;
        h ^= h >> 15, h *= 0x2c1b3c6du, h ^= h >> 12;
        float f = (float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f;
        if (type == KILN_TYPE_F32) ((float *)w)[i] = f;
        else ((uint16_t *)w)[i] = type == KILN_TYPE_F16 ? kiln_f32_to_f16(f) : kiln_f32_to_bf16(f);
    }
    return w;
}

static float *make_floats(size_t n, unsigned seed) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 7919u + seed) % 2001) / 1000.0f - 1.0f;
    return x;
}

typedef void (*bench_fn)(void *arg);

/* Seconds per call: batches of calls lasting at least min_seconds / 5, median of 5 batches. */
static double time_call(bench_fn f, void *arg) {
    int reps = 1;
    for (;; reps *= 2) {
        double t0 = kiln_now();
        for (int i = 0; i < reps; i++) f(arg);
        if (kiln_now() - t0 >= min_seconds / 5) break;
    }
    double runs[5];
    for (int r = 0; r < 5; r++) {
        double t0 = kiln_now();
        for (int i = 0; i < reps; i++) f(arg);
        runs[r] = (kiln_now() - t0) / reps;
    }
    qsort(runs, 5, sizeof runs[0], bench_cmp_double);
    return runs[2];
}

typedef struct {
    float *y;
    const float *x;
    void *const *w; /* n_w matrices used in turn */
    int n_w, type, T, n, k;
    int next;
} matmul_arg;

static void call_matmul(void *p) {
    matmul_arg *a = p;
    kiln_matmul(a->y, a->x, a->w[a->next], a->type, a->T, a->n, a->k);
    a->next = (a->next + 1) % a->n_w;
}

static void call_sgemm(void *p) {
    matmul_arg *a = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a->T, a->n, a->k, 1.0f, a->x, a->k, a->w[0], a->k, 0.0f,
                a->y, a->n);
}

/* One decoded token's weight reads: every matrix of the model once. */
typedef struct {
    void **w;
    int type;
    float *x, *y;
} sweep_arg;

static void call_sweep(void *p) {
    sweep_arg *a = p;
    int m = 0;
    for (int l = 0; l < LAYERS; l++)
        for (int s = 0; s < N_SHAPES - 1; s++)
            for (int r = 0; r < shapes[s].per_layer; r++, m++)
                kiln_matmul(a->y, a->x, a->w[m], a->type, 1, shapes[s].n, shapes[s].k);
    kiln_matmul(a->y, a->x, a->w[m], a->type, 1, VOCAB, DIM);
}

static void bench_decode(double bandwidth) {
    printf("\n(b) decode matrix-vector product (T = 1): GB/s of weights, fraction of read bandwidth\n");
    printf("%-20s %8s %8s %8s %8s %8s %8s\n", "shape", "f32", "of bw", "f16", "of bw", "bf16", "of bw");
    float *x = make_floats(FFN, 1), *y = malloc(sizeof(float) * VOCAB);
    /* Each shape twice: the same matrix again and again (in cache where it fits), then enough distinct
     * copies to fill 256 MiB, far beyond the caches, so each call reads DRAM as decode does. */
    for (int s = 0; s < N_SHAPES; s++) {
        for (int cached = 1; cached >= 0; cached--) {
            printf("%-20s", cached ? shapes[s].name : "  (from DRAM)");
            for (int ti = 0; ti < 3; ti++) {
                size_t bytes = kiln_row_bytes(types[ti], shapes[s].k) * shapes[s].n;
                int n_w = cached ? 1 : (int)((256u << 20) / bytes + 1);
                void **w = malloc(sizeof(void *) * n_w);
                for (int i = 0; i < n_w; i++) w[i] = make_matrix(types[ti], shapes[s].n, shapes[s].k, 17 + i);
                matmul_arg a = {y, x, w, n_w, types[ti], 1, shapes[s].n, shapes[s].k, 0};
                double gbs = bytes / time_call(call_matmul, &a);
                printf(" %8.1f %7.0f%%", gbs / 1e9, 100 * gbs / bandwidth);
                for (int i = 0; i < n_w; i++) free(w[i]);
                free(w);
            }
            printf("\n");
        }
    }
    printf("%-20s", "110M model sweep");
    double ms[3];
    for (int ti = 0; ti < 3; ti++) {
        int n_w = LAYERS * 7 + 1, m = 0;
        void **w = malloc(sizeof(void *) * n_w);
        size_t bytes = 0;
        for (int l = 0; l < LAYERS; l++)
            for (int s = 0; s < N_SHAPES - 1; s++)
                for (int r = 0; r < shapes[s].per_layer; r++, m++) {
                    w[m] = make_matrix(types[ti], shapes[s].n, shapes[s].k, 100 + m);
                    bytes += kiln_row_bytes(types[ti], shapes[s].k) * shapes[s].n;
                }
        w[m] = make_matrix(types[ti], VOCAB, DIM, 99);
        bytes += kiln_row_bytes(types[ti], DIM) * VOCAB;
        sweep_arg a = {w, types[ti], x, y};
        double t = time_call(call_sweep, &a);
        ms[ti] = 1e3 * t;
        printf(" %8.1f %7.0f%%", bytes / t / 1e9, 100 * bytes / t / bandwidth);
        for (int i = 0; i < n_w; i++) free(w[i]);
        free(w);
    }
    printf("\n%-20s %8.2f %8s %8.2f %8s %8.2f  (%d matmuls)\n", "  ms per token", ms[0], "", ms[1], "", ms[2],
           LAYERS * 7 + 1);
    /* The fixed cost of a call: a matrix small enough that the work is nothing. */
    void *small[1] = {make_matrix(KILN_TYPE_F32, DIM, DIM, 5)};
    void *tiny[1] = {make_matrix(KILN_TYPE_F32, 64, 64, 6)};
    matmul_arg a1 = {y, x, small, 1, KILN_TYPE_F32, 1, DIM, DIM, 0}, a2 = {y, x, tiny, 1, KILN_TYPE_F32, 1, 64, 64, 0};
    printf("per call: 768x768 f32 %.2f us, 64x64 f32 %.2f us\n", 1e6 * time_call(call_matmul, &a1),
           1e6 * time_call(call_matmul, &a2));
    free(small[0]), free(tiny[0]), free(x), free(y);
}

typedef struct {
    float *out, *q, *k, *v;
    int T, pos0;
} attn_arg;

static void call_attention(void *p) {
    attn_arg *a = p;
    kiln_attention(a->out, a->q, a->k, a->v, a->T, a->pos0, HEADS, HEADS, HEAD_DIM, DIM, 0.125f);
}

static void bench_prefill(void) {
    int T = T_PREFILL;
    printf("\n(c) prefill GEMM, T = %d: GFLOP/s; OpenBLAS cblas_sgemm (f32) in the same run\n", T);
    printf("%-20s %8s %8s %8s %8s %8s\n", "shape", "f32", "f16", "bf16", "sgemm", "f32/sgemm");
    float *x = make_floats((size_t)T * FFN, 2), *y = malloc(sizeof(float) * T * VOCAB);
    double layer_s[3] = {0, 0, 0}, head_s[3] = {0, 0, 0};
    for (int s = 0; s < N_SHAPES; s++) {
        double flop = 2.0 * T * shapes[s].n * shapes[s].k, g[3];
        printf("%-20s", shapes[s].name);
        for (int ti = 0; ti < 3; ti++) {
            void *w[1] = {make_matrix(types[ti], shapes[s].n, shapes[s].k, 31)};
            matmul_arg a = {y, x, w, 1, types[ti], T, shapes[s].n, shapes[s].k, 0};
            double t = time_call(call_matmul, &a);
            if (shapes[s].per_layer) layer_s[ti] += shapes[s].per_layer * t;
            else head_s[ti] = t;
            g[ti] = flop / t / 1e9;
            printf(" %8.1f", g[ti]);
            free(w[0]);
        }
        void *w[1] = {make_matrix(KILN_TYPE_F32, shapes[s].n, shapes[s].k, 31)};
        matmul_arg a = {y, x, w, 1, KILN_TYPE_F32, T, shapes[s].n, shapes[s].k, 0};
        double gs = flop / time_call(call_sgemm, &a) / 1e9;
        printf(" %8.1f %8.2fx\n", gs, g[0] / gs);
        free(w[0]);
    }
    /* Causal attention of T tokens from position 0: q.k and p.v over the triangle. */
    attn_arg aa = {malloc(sizeof(float) * T * DIM), make_floats((size_t)T * DIM, 3), make_floats((size_t)T * DIM, 4),
                   make_floats((size_t)T * DIM, 5), T, 0};
    double ta = time_call(call_attention, &aa), aflop = 4.0 * HEADS * HEAD_DIM * (T * (T + 1) / 2.0);
    printf("attention T=%d, 12 heads x 64: %.1f GFLOP/s (%.2f ms per layer)\n", T, aflop / ta / 1e9, 1e3 * ta);
    free(aa.q), free(aa.k), free(aa.v);
    aa.q = make_floats(DIM, 6), aa.k = make_floats((size_t)2048 * DIM, 7), aa.v = make_floats((size_t)2048 * DIM, 8);
    aa.T = 1, aa.pos0 = 2047;
    printf("decode attention at pos 2047: %.1f us per layer\n", 1e6 * time_call(call_attention, &aa));
    free(aa.out), free(aa.q), free(aa.k), free(aa.v);
    printf("110M llama prefill of %d tokens (matmuls + attention, logits of the last token only):", T);
    for (int ti = 0; ti < 3; ti++) {
        double t = LAYERS * (layer_s[ti] + ta) + head_s[ti] / T;
        printf(" %s %.0f tok/s%s", type_names[ti], T / t, ti < 2 ? "," : "\n");
    }
    free(x), free(y);
}

/* A matrix of TYPE as make_matrix, quantized row by row for the quantized types. */
static void *make_weights(int type, int n, int k, unsigned seed) {
    if (!kiln_quant_block(type)) return make_matrix(type, n, k, seed);
    float *f = make_matrix(KILN_TYPE_F32, n, k, seed);
    size_t rb = kiln_quant_row_bytes(type, k);
    char *q = malloc(rb * n);
    for (int i = 0; i < n; i++) kiln_quantize_row(type, f + (size_t)i * k, q + rb * i, k);
    free(f);
    return q;
}

/* The integer GEMM of quantized weights at T = 512, with the table kiln_matmul uses (KILN_ISA=avx2 for
 * the AVX2 tile). */
static void bench_quant_prefill(void) {
    int T = T_PREFILL;
    static const int qtypes[] = {KILN_TYPE_Q8_0, KILN_TYPE_Q4_0, KILN_TYPE_Q4_K, KILN_TYPE_Q6_K};
    printf("\n(e) quantized prefill GEMM, T = %d, %s tile: GOP/s (2 ops per multiply-add)\n", T,
           kiln_qkernels_active()->name);
    printf("%-20s %8s %8s %8s %8s\n", "shape", "q8_0", "q4_0", "q4_k", "q6_k");
    float *x = make_floats((size_t)T * FFN, 2), *y = malloc(sizeof(float) * T * FFN);
    for (int s = 0; s < N_SHAPES - 1; s++) {
        printf("%-20s", shapes[s].name);
        for (int ti = 0; ti < 4; ti++) {
            void *w[1] = {make_weights(qtypes[ti], shapes[s].n, shapes[s].k, 31)};
            matmul_arg a = {y, x, w, 1, qtypes[ti], T, shapes[s].n, shapes[s].k, 0};
            printf(" %8.1f", 2.0 * T * shapes[s].n * shapes[s].k / time_call(call_matmul, &a) / 1e9);
            free(w[0]);
        }
        printf("\n");
    }
    free(x), free(y);
}

/* One pass of T tokens over every matrix of the model, with the table's short-batch kernel or forced
 * onto the GEMM; quantized weights through their own table (QK). */
typedef struct {
    void **w;
    int type, T;
    const kiln_kernels *kk;
    const kiln_qkernels *qk;
    float *x, *y;
} pass_arg;

static void pass_matmul(const pass_arg *a, const void *w, int n, int k) {
    if (a->qk) kiln_qmatmul_with(a->qk, a->y, a->x, w, a->type, a->T, n, k);
    else kiln_matmul_with(a->kk, a->y, a->x, w, a->type, a->T, n, k);
}

static void call_pass(void *p) {
    pass_arg *a = p;
    int m = 0;
    for (int l = 0; l < LAYERS; l++)
        for (int s = 0; s < N_SHAPES - 1; s++)
            for (int r = 0; r < shapes[s].per_layer; r++, m++) pass_matmul(a, a->w[m], shapes[s].n, shapes[s].k);
    pass_matmul(a, a->w[m], VOCAB, DIM);
}

static void bench_short_batches(void) {
    const kiln_kernels *kk = kiln_kernels_active();
    const kiln_qkernels *qk = kiln_qkernels_active();
    if (!kk->matvecs) return;
    kiln_kernels gemm_only = *kk;
    gemm_only.matvecs_max = 1;
    kiln_qkernels qgemm_only = *qk;
    qgemm_only.matvecs_max = 1;
    printf("\n(d) short batches: all 85 matrices of the 110M model at T tokens, ms per pass and as a multiple of\n"
           "    T = 1 (memory-bound: ideally ~1); short-batch kernel (used for T <= %d, quantized %d) against the "
           "GEMM\n",
           kk->matvecs_max, qk->matvecs_max);
    float *x = make_floats((size_t)16 * FFN, 9), *y = malloc(sizeof(float) * 16 * VOCAB);
    static const int sb_types[] = {KILN_TYPE_F32, KILN_TYPE_BF16, KILN_TYPE_Q8_0, KILN_TYPE_Q4_0};
    static const char *const sb_names[] = {"f32", "bf16", "q8_0", "q4_0"};
    for (int ti = 0; ti < 4; ti++) {
        int type = sb_types[ti], quant = kiln_quant_block(type) != 0, n_w = LAYERS * 7 + 1, m = 0;
        void **w = malloc(sizeof(void *) * n_w);
        for (int l = 0; l < LAYERS; l++)
            for (int s = 0; s < N_SHAPES - 1; s++)
                for (int r = 0; r < shapes[s].per_layer; r++, m++)
                    w[m] = make_weights(type, shapes[s].n, shapes[s].k, 100 + m);
        w[m] = make_weights(type, VOCAB, DIM, 99);
        printf("%-5s %4s %9s %7s %9s %7s\n", sb_names[ti], "T", "matvecs", "x T=1", "gemm", "x T=1");
        double one = 0;
        for (int T = 1; T <= 16; T++) {
            pass_arg a = {w, type, T, kk, quant ? qk : NULL, x, y};
            pass_arg g = {w, type, T, &gemm_only, quant ? &qgemm_only : NULL, x, y};
            double tm = time_call(call_pass, &a), tg = T > 1 ? time_call(call_pass, &g) : tm;
            if (T == 1) one = tm;
            printf("%-5s %4d %9.2f %6.2fx %9.2f %6.2fx\n", "", T, 1e3 * tm, tm / one, 1e3 * tg, tg / one);
        }
        for (int i = 0; i < n_w; i++) free(w[i]);
        free(w);
    }
    free(x), free(y);
}

int main(int argc, char **argv) {
    int quick = 0, short_only = 0, quant_prefill_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--short-only")) short_only = 1;
        else if (!strcmp(argv[i], "--quant-prefill-only")) quant_prefill_only = 1;
    }
    if (quick) min_seconds = 0.1;
    if (short_only) {
        bench_short_batches();
        return 0;
    }
    if (quant_prefill_only) {
        bench_quant_prefill();
        return 0;
    }
    printf("bench_kernels: isa %s, %d OpenMP threads; OpenBLAS %s kernels, %d threads\n", kiln_isa(),
           omp_get_max_threads(), openblas_get_corename(), openblas_get_num_threads());
    double bw = bench_read_bandwidth();
    printf("(a) read bandwidth: %.1f GB/s (256 MiB read, all threads, best of 9)\n", bw / 1e9);
    bench_decode(bw);
    bench_prefill();
    bench_short_batches();
    bench_quant_prefill();
    return 0;
}
