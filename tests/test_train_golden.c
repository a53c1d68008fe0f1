/* The trainer against PyTorch: tests/ref/train_golden.py computed, for a tiny GPT-2 and a tiny llama
 * (grouped kv heads, rotary positions, SwiGLU, untied head), the logits, loss and every gradient of
 * one batch, and ten AdamW steps with warmup + cosine learning rate, weight decay on matrices only,
 * gradient clipping and two accumulated micro-batches per step.
 *
 * Tolerances: logits and loss 1e-5 relative (+1e-6 absolute); each gradient tensor 1e-5 relative to
 * its element plus 1e-5 of the tensor's largest element (float rounding of sums of many O(max) terms
 * lands on the small elements too); the ten losses and the final weights 1e-5 relative (weights
 * +1e-6 absolute). llm.c accepts 1e-2. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "test.h"
#include "train/adamw.h"
#include "train/batch.h"
#include "train/model.h"

#define REGENERATE "regenerate with /usr/bin/python3 tests/ref/train_golden.py"

typedef struct {
    char *blob;
    size_t size;
} golden;

/* The values of entry NAME (N of them), or a test failure. */
static const float *entry(const golden *g, const char *name, size_t *n) {
    const char *p = g->blob + 8, *end = g->blob + g->size;
    uint32_t count;
    memcpy(&count, g->blob + 4, 4);
    for (uint32_t i = 0; i < count && p + 4 <= end; i++) {
        uint32_t len, vals;
        memcpy(&len, p, 4);
        memcpy(&vals, p + 4 + len, 4);
        const char *data = p + 8 + len;
        if (strlen(name) == len && !memcmp(p + 4, name, len)) {
            *n = vals;
            return (const float *)data;
        }
        p = data + (size_t)vals * 4;
    }
    test_fail(__FILE__, __LINE__, "golden entry %s missing (" REGENERATE ")", name);
}

enum { IS_GPT2, N_VOCAB, DIM, N_LAYERS, N_HEADS, N_KV_HEADS, HEAD_DIM, FFN_DIM, CTX_LEN, TIED, BATCH, TIME, STEPS,
       ACCUM, WARMUP, LR, MIN_LR_RATIO, BETA1, BETA2, EPS, WEIGHT_DECAY, CLIP, ROPE_THETA, NORM_EPS };

typedef struct {
    golden g;
    const float *cf;
    train_model m;
    train_acts *a;
} golden_run;

static void load(golden_run *r, const char *name) {
    char path[256];
    snprintf(path, sizeof path, "tests/golden/train_%s.bin", name);
    r->g.blob = kiln_read_file(path, &r->g.size);
    CHECKF(r->g.blob && r->g.size > 8 && !memcmp(r->g.blob, "KTG1", 4), "%s: unreadable (" REGENERATE ")", path);
    size_t n;
    r->cf = entry(&r->g, "config", &n);
    const float *cf = r->cf;
    kiln_config c;
    CHECK(train_config_make(&c, cf[IS_GPT2] ? "gpt2" : "llama", (int)cf[N_LAYERS], (int)cf[DIM], (int)cf[N_HEADS],
                            (int)cf[N_KV_HEADS], (int)cf[FFN_DIM], (int)cf[CTX_LEN]) == 0);
    c.n_vocab = (int)cf[N_VOCAB];
    c.rope_theta = cf[ROPE_THETA];
    c.norm_eps = cf[NORM_EPS];
    CHECK_EQ_INT(c.head_dim, (int)cf[HEAD_DIM]);
    CHECK_EQ_INT(c.tied_output, (int)cf[TIED]);
    CHECK(train_model_init(&r->m, &c, 1) == 0);
    for (int i = 0; i < r->m.n_tensors; i++) {
        const train_tensor *t = &r->m.tensors[i];
        char key[80];
        snprintf(key, sizeof key, "param.%s", t->name);
        const float *v = entry(&r->g, key, &n);
        CHECK_EQ_INT(n, t->n);
        memcpy(r->m.params + t->off, v, sizeof(float) * n);
    }
    r->a = train_acts_new(&c, (int)cf[BATCH], (int)cf[TIME]);
}

/* Splits rows of T+1 tokens into inputs and targets. */
static void split_tokens(const float *rows, int B, int T, int32_t *in, int32_t *tg) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            in[b * T + t] = (int32_t)rows[b * (T + 1) + t];
            tg[b * T + t] = (int32_t)rows[b * (T + 1) + t + 1];
        }
}

static void check_one_batch(const char *name) {
    golden_run r;
    load(&r, name);
    int B = r.a->B, T = r.a->T, N = B * T, V = r.m.cfg.n_vocab;
    size_t n;
    int32_t in[256], tg[256];
    split_tokens(entry(&r.g, "tokens", &n), B, T, in, tg);
    train_forward(&r.m, r.a, in, tg, 0);
    float loss = 0;
    for (int i = 0; i < N; i++) loss += r.a->losses[i] / N;
    CHECK_CLOSE(&loss, entry(&r.g, "loss", &n), 1, 1e-5f, 1e-6f, "loss");
    /* logits survive only a forward pass without gradient: compare those first */
    const float *want = entry(&r.g, "logits", &n);
    CHECK_EQ_INT(n, (size_t)N * V);
    CHECK_CLOSE(r.a->logits, want, n, 1e-5f, 1e-6f, "logits");
    train_forward(&r.m, r.a, in, tg, 1.0f / N);
    train_backward(&r.m, r.a, in);
    for (int i = 0; i < r.m.n_tensors; i++) {
        const train_tensor *t = &r.m.tensors[i];
        char key[80];
        snprintf(key, sizeof key, "grad.%s", t->name);
        const float *g = entry(&r.g, key, &n);
        float mx = 0;
        for (size_t j = 0; j < n; j++) mx = fabsf(g[j]) > mx ? fabsf(g[j]) : mx;
        CHECK_CLOSE(r.m.grads + t->off, g, n, 1e-5f, 1e-5f * mx, key);
    }
    train_acts_free(r.a);
    train_model_free(&r.m);
    free(r.g.blob);
}

static void check_ten_steps(const char *name) {
    golden_run r;
    load(&r, name);
    const float *cf = r.cf;
    int B = r.a->B, T = r.a->T, N = B * T, steps = (int)cf[STEPS], accum = (int)cf[ACCUM];
    size_t n;
    const float *rows = entry(&r.g, "steps.tokens", &n), *want_loss = entry(&r.g, "steps.loss", &n);
    const float *want_lr = entry(&r.g, "steps.lr", &n);
    adamw_state s;
    adamw_init(&s, r.m.n_params);
    adamw_opts o = {cf[BETA1], cf[BETA2], cf[EPS], cf[WEIGHT_DECAY]};
    for (int step = 0; step < steps; step++) {
        float lr = train_lr(step, (int)cf[WARMUP], steps, cf[LR], cf[MIN_LR_RATIO]);
        CHECK_CLOSE(&lr, want_lr + step, 1, 1e-6f, 0, "lr");
        train_model_zero_grad(&r.m);
        double loss = 0;
        for (int micro = 0; micro < accum; micro++) {
            int32_t in[256], tg[256];
            split_tokens(rows + (size_t)(step * accum + micro) * B * (T + 1), B, T, in, tg);
            train_forward(&r.m, r.a, in, tg, 1.0f / ((float)N * accum));
            train_backward(&r.m, r.a, in);
            for (int i = 0; i < N; i++) loss += r.a->losses[i] / ((double)N * accum);
        }
        float got = (float)loss;
        char what[32];
        snprintf(what, sizeof what, "loss of step %d", step);
        CHECK_CLOSE(&got, want_loss + step, 1, 1e-5f, 0, what);
        float k = train_clip_scale(train_grad_norm(r.m.grads, r.m.n_params), cf[CLIP]);
        adamw_step(&r.m, &s, &o, lr, k);
    }
    int qdim = r.m.cfg.n_heads * r.m.cfg.head_dim, kvdim = r.m.cfg.n_kv_heads * r.m.cfg.head_dim;
    for (int i = 0; i < r.m.n_tensors; i++) {
        const train_tensor *t = &r.m.tensors[i];
        char key[80];
        snprintf(key, sizeof key, "final.%s", t->name);
        const float *want = entry(&r.g, key, &n), *got = r.m.params + t->off;
        if (strstr(t->name, "attn_qkv.bias")) {
            /* The key bias adds q.b to every score of a row, which softmax ignores: its gradient is zero
             * but for rounding, which Adam's normalisation turns into steps of +-lr. Compare the rest. */
            CHECK_CLOSE(got, want, qdim, 1e-5f, 1e-6f, key);
            CHECK_CLOSE(got + qdim + kvdim, want + qdim + kvdim, kvdim, 1e-5f, 1e-6f, key);
        } else CHECK_CLOSE(got, want, t->n, 1e-5f, 1e-6f, key);
    }
    adamw_free(&s);
    train_acts_free(r.a);
    train_model_free(&r.m);
    free(r.g.blob);
}

/* The trained model must mean the same thing to the inference forward pass (kiln generate). */
static void check_inference_agrees(const char *name) {
    golden_run r;
    load(&r, name);
    int T = r.a->T, V = r.m.cfg.n_vocab;
    size_t n;
    int32_t in[256], tg[256];
    split_tokens(entry(&r.g, "tokens", &n), r.a->B, T, in, tg);
    train_forward(&r.m, r.a, in, tg, 0);
    kiln_weights w;
    train_model_weights(&r.m, &w);
    kiln_state *s = kiln_state_new(&r.m.cfg, T);
    float *logits = malloc(sizeof(float) * T * V);
    kiln_forward(&r.m.cfg, &w, s, in, T, 0, logits, 1);
    CHECK_CLOSE(logits, r.a->logits, (size_t)T * V, 1e-5f, 1e-5f, "inference logits");
    free(logits);
    free(w.layers);
    kiln_state_free(s);
    train_acts_free(r.a);
    train_model_free(&r.m);
    free(r.g.blob);
}

TEST(train_gpt2_model_means_the_same_to_the_inference_forward_pass) { check_inference_agrees("gpt2"); }
TEST(train_llama_model_means_the_same_to_the_inference_forward_pass) { check_inference_agrees("llama"); }

/* Each thread's share of the batch through the model on its own, its gradients summed afterwards
 * (batch.c), must give the gradients of one pass over the whole batch. */
static void check_batch_on_threads(const char *name) {
    golden_run r;
    load(&r, name);
    int B = r.a->B, T = r.a->T, N = B * T;
    size_t n;
    int32_t in[256], tg[256];
    split_tokens(entry(&r.g, "tokens", &n), B, T, in, tg);
    train_forward(&r.m, r.a, in, tg, 1.0f / N);
    train_backward(&r.m, r.a, in);
    float *want = malloc(sizeof(float) * r.m.n_params);
    memcpy(want, r.m.grads, sizeof(float) * r.m.n_params);
    train_batch *tb = train_batch_new(&r.m, B, T, B);
    CHECK_EQ_INT(tb->n_groups, B);
    train_batch_zero_grad(&r.m, tb);
    train_batch_run(&r.m, tb, in, tg, 1.0f / N);
    train_batch_reduce(&r.m, tb);
    CHECK_CLOSE(tb->losses, r.a->losses, N, 1e-6f, 0, "losses");
    float mx = 0;
    for (size_t i = 0; i < r.m.n_params; i++) mx = fabsf(want[i]) > mx ? fabsf(want[i]) : mx;
    CHECK_CLOSE(r.m.grads, want, r.m.n_params, 1e-5f, 1e-6f * mx, "gradients");
    train_batch_free(tb);
    free(want);
    train_acts_free(r.a);
    train_model_free(&r.m);
    free(r.g.blob);
}

TEST(train_gpt2_batch_split_over_threads_gives_the_gradients_of_one_pass) { check_batch_on_threads("gpt2"); }
TEST(train_llama_batch_split_over_threads_gives_the_gradients_of_one_pass) { check_batch_on_threads("llama"); }

TEST(train_gpt2_logits_loss_and_gradients_match_pytorch) { check_one_batch("gpt2"); }
TEST(train_llama_logits_loss_and_gradients_match_pytorch) { check_one_batch("llama"); }
TEST(train_gpt2_ten_adamw_steps_match_pytorch) { check_ten_steps("gpt2"); }
TEST(train_llama_ten_adamw_steps_match_pytorch) { check_ten_steps("llama"); }
