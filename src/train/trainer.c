/* The training loop (trainer.h): data-parallel steps with gradient accumulation, logging, evaluation,
 * checkpoints, resume and a time budget. Process 0 of a data-parallel run writes the log and the
 * checkpoints; every process computes the same schedule from the same numbers. */
#include "train/trainer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/comm.h"
#include "base/error.h"
#include "base/file.h"
#include "base/progress.h"
#include "train/blas.h"

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    stop_signal = sig;
    signal(sig, SIG_DFL); /* a second one ends the process at once */
}

/* ---- evaluation ---- */

void train_evaluate(train_model *m, train_batch *tb, const train_loader *l, int stride, train_eval_result *r,
                    int progress) {
    int n_ch = l->corpus->n_channels, B = tb->B, T = tb->T, rank = comm_rank(), world = comm_size();
    memset(r, 0, sizeof *r);
    r->n_channels = n_ch;
    r->sum = kiln_xcalloc(n_ch + 1, sizeof(double));
    r->count = kiln_xcalloc(n_ch + 1, sizeof(double));
    uint64_t n_win = train_loader_n_windows(l, stride);
    int32_t *in = kiln_xmalloc(sizeof(int32_t) * B * T), *tg = kiln_xmalloc(sizeof(int32_t) * B * T);
    uint16_t *ch = kiln_xmalloc(sizeof(uint16_t) * B * T);
    kiln_progress bar;
    kiln_progress_begin(&bar, "eval", l->size - 1, "B", rank == 0 ? progress : KILN_PROGRESS_OFF);
    /* process p takes batches p, p + world, ...: B consecutive windows each */
    for (uint64_t w0 = (uint64_t)rank * B; w0 < n_win; w0 += (uint64_t)world * B) {
        for (int b = 0; b < B; b++) {
            if (w0 + b < n_win) train_loader_window(l, w0 + b, stride, in + b * T, tg + b * T, ch + b * T);
            else {
                memset(in + b * T, 0, sizeof(int32_t) * T);
                memset(tg + b * T, 0, sizeof(int32_t) * T);
                for (int t = 0; t < T; t++) ch[b * T + t] = UINT16_MAX;
            }
        }
        train_batch_run(m, tb, in, tg, 0);
        for (int i = 0; i < B * T; i++)
            if (ch[i] != UINT16_MAX) r->sum[ch[i]] += tb->losses[i], r->count[ch[i]] += 1;
        kiln_progress_update(&bar, (w0 + B) * stride);
    }
    kiln_progress_end(&bar);
    comm_sum_f64(r->sum, n_ch);
    comm_sum_f64(r->count, n_ch);
    for (int c = 0; c < n_ch; c++) r->total_sum += r->sum[c], r->total_count += r->count[c];
    free(in);
    free(tg);
    free(ch);
}

void train_eval_free(train_eval_result *r) {
    free(r->sum);
    free(r->count);
    memset(r, 0, sizeof *r);
}

/* ---- the run folder and its log ---- */

static int mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) return kiln_fail("%s: cannot create: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return kiln_fail("%s: cannot create: %s", buf, strerror(errno));
    return 0;
}

/* Whether a run lives in PATH already: a complete checkpoint. (A folder whose run died before its
 * first checkpoint holds nothing worth keeping: a new run starts over in it.) */
static int has_run(const char *path) {
    int64_t step;
    return checkpoint_latest(path, &step) == 1;
}

/* Keeps the lines of DIR/log.jsonl up to STEP (the rest belong to steps that a resume redoes). */
static int trim_log(const char *dir, int64_t step) {
    char path[4200];
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    size_t size;
    char *text = kiln_read_file(path, &size);
    if (!text) return 0;
    kiln_atomic out;
    if (kiln_atomic_open(&out, path) < 0) return free(text), -1;
    for (char *line = text, *next; line < text + size; line = next) {
        char *nl = memchr(line, '\n', text + size - line);
        next = nl ? nl + 1 : text + size;
        json_t *j = json_loadb(line, next - line, 0, NULL);
        json_t *s = j ? json_object_get(j, "step") : NULL;
        if (s && json_is_integer(s) && json_integer_value(s) <= step) fwrite(line, 1, next - line, out.f);
        json_decref(j);
    }
    free(text);
    return kiln_atomic_commit(&out);
}

static json_t *channel_object(const kiln_corpus *c, const double *sum, const double *count) {
    json_t *o = json_object();
    for (int i = 0; i < c->n_channels; i++)
        if (count[i] > 0) json_object_set_new(o, c->channels[i], json_real(sum[i] / count[i]));
    return o;
}

static void log_line(FILE *log, json_t *j) {
    if (log) {
        char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9));
        fprintf(log, "%s\n", s);
        fflush(log);
        free(s);
    }
    json_decref(j);
}

/* ---- the loop ---- */

typedef struct {
    const train_opts *o;
    train_hparams h;
    kiln_config cfg;
    train_progress p;
    kiln_corpus *corpus, *sample; /* sample: the valid files evaluated during training */
    train_loader train, valid;
    train_model m;
    adamw_state s;
    train_batch *tb;
    int32_t *in, *tg;
    uint16_t *ch;
    double *ch_sum, *ch_count; /* train losses since the last log line, per channel, then the total */
    FILE *log;
    int rank, world;
} run;

/* One micro-batch: rows (micro * world + rank) * B + b of STEP, forward and backward. */
static void micro_step(run *r, int64_t step, int micro) {
    int B = r->h.batch, T = r->h.ctx, N = B * T;
    for (int b = 0; b < B; b++)
        train_loader_row(&r->train, (uint64_t)step, ((uint64_t)micro * r->world + r->rank) * B + b, r->in + b * T,
                         r->tg + b * T, r->ch + b * T);
    train_batch_run(&r->m, r->tb, r->in, r->tg, 1.0f / ((float)N * r->h.accum * r->world));
    int n_ch = r->corpus->n_channels;
    for (int i = 0; i < N; i++) {
        r->ch_sum[r->ch[i]] += r->tb->losses[i];
        r->ch_count[r->ch[i]] += 1;
        r->ch_sum[n_ch] += r->tb->losses[i];
        r->ch_count[n_ch] += 1;
    }
}

/* Fits the number of steps to a time budget from the time of one micro-batch. */
static int64_t steps_for_budget(run *r, double seconds, int64_t eval_every) {
    micro_step(r, 0, 0); /* the first pass touches fresh memory: time the second */
    double t0 = kiln_now();
    micro_step(r, 0, 0);
    double t_micro = kiln_now() - t0;
    train_batch_zero_grad(&r->m, r->tb);
    memset(r->ch_sum, 0, sizeof(double) * (r->corpus->n_channels + 1));
    memset(r->ch_count, 0, sizeof(double) * (r->corpus->n_channels + 1));
    uint64_t windows = train_loader_n_windows(&r->valid, r->h.ctx);
    double t_step = t_micro * r->h.accum * 1.02, t_eval = ceil((double)windows / r->h.batch / r->world) * t_micro * 0.4;
    double steps = (seconds - t_eval) / (t_step + t_eval / eval_every);
    double agreed[1] = {r->rank == 0 ? steps : 0}; /* everyone takes process 0's figure */
    comm_sum_f64(agreed, 1);
    return agreed[0] < 1 ? 1 : (int64_t)agreed[0];
}

static float evaluate_and_log(run *r, int64_t step, int quiet) {
    train_eval_result e;
    train_evaluate(&r->m, r->tb, &r->valid, r->h.ctx, &e, KILN_PROGRESS_OFF); /* tiled: the cheapest */
    float loss = (float)(e.total_sum / e.total_count);
    json_t *j = json_pack("{s:I, s:s, s:f, s:f, s:f}", "step", (json_int_t)step, "split", "valid", "loss", (double)loss, "bpb",
                          loss / M_LN2, "bytes", e.total_count);
    json_object_set_new(j, "channels", channel_object(r->corpus, e.sum, e.count));
    log_line(r->log, j);
    if (!quiet) fprintf(stderr, "step %lld: valid %.4f bits/byte on %.0f bytes\n", (long long)step, loss / M_LN2,
                        e.total_count);
    train_eval_free(&e);
    return loss;
}

/* Saves on process 0; every process learns whether it worked. */
static int save(run *r) {
    int rc = 0;
    if (r->rank == 0) rc = checkpoint_save(r->o->out, &r->m, &r->s, &r->h, &r->p, r->h.keep);
    double failed[1] = {rc < 0};
    comm_sum_f64(failed, 1);
    if (failed[0] > 0 && rc == 0) return kiln_fail("saving the checkpoint failed on process 0");
    return rc;
}

static void progress_detail(void *ctx, char *buf, size_t size) {
    const double *d = ctx; /* loss, tok/s */
    char rate[32];
    kiln_progress_format(rate, sizeof rate, d[1], "tok/s");
    snprintf(buf, size, "loss %.3f (%.2f bits/byte)  %s", d[0], d[0] / M_LN2, rate);
}

/* Fits the step count of a time budget again to the pace so far (evaluations and saves included): a
 * shared machine's speed changes, and a run fitted to its first seconds would stop early or be cut off
 * before its learning rate has come down. The cosine takes the new length from the current step on. */
static void refit_steps(run *r, double t0, int64_t step0, double deadline, kiln_progress *bar) {
    double now = kiln_now();
    if (r->p.step - step0 < 2 || now >= deadline) return;
    double pace = (r->p.step - step0) / (now - t0), fit[1] = {r->rank == 0 ? r->p.step + (deadline - now) * pace : 0};
    comm_sum_f64(fit, 1); /* everyone takes process 0's figure */
    int64_t steps = (int64_t)fit[0];
    if (steps > r->p.step && fabs((double)steps - r->h.steps) > 0.02 * r->h.steps) {
        r->h.steps = steps;
        bar->total = (uint64_t)steps;
    }
}

static int prepare(run *r) {
    const train_opts *o = r->o;
    if (o->resume) {
        int64_t step;
        int found = checkpoint_latest(o->out, &step);
        if (found < 0) return kiln_fail("--resume %s: %s", o->out, kiln_errmsg());
        if (!found)
            return kiln_fail("--resume %s: no checkpoint in this folder yet (start the run again without --resume)",
                             o->out);
        if (checkpoint_read_settings(o->out, step, &r->cfg, &r->h, &r->p) < 0) return -1;
        if (o->data) snprintf(r->h.data, sizeof r->h.data, "%s", o->data);
        if (o->log_every) r->h.log_every = o->log_every;
        if (o->eval_every) r->h.eval_every = o->eval_every;
        if (o->save_every) r->h.save_every = o->save_every;
        if (o->keep >= 0) r->h.keep = o->keep;
        if (o->eval_bytes >= 0) r->h.eval_bytes = (uint64_t)o->eval_bytes;
        if (o->steps > 0) {
            if (o->steps < step) return kiln_fail("--steps %lld: the run is already at step %lld", (long long)o->steps,
                                                  (long long)step);
            r->h.steps = o->steps;
        }
    } else {
        if (has_run(o->out))
            return kiln_fail("%s: a run already exists there (continue it with --resume %s, or choose another --out)",
                             o->out, o->out);
        r->cfg = o->model;
        r->h = o->h;
    }
    if (!(r->corpus = kiln_corpus_open(r->h.data))) return -1;
    if (train_loader_init(&r->train, r->corpus, CORPUS_TRAIN, r->h.ctx, r->h.seed) < 0 ||
        train_loader_init(&r->valid, r->corpus, CORPUS_VALID, r->h.ctx, r->h.seed) < 0)
        return -1;
    /* evaluations during training read whole valid files spread over the split, so every channel
     * shows, unless that sample is too small for a window */
    if (r->h.eval_bytes && r->h.eval_bytes < r->corpus->stream_size[CORPUS_VALID]) {
        train_loader l;
        r->sample = corpus_sample(r->corpus, CORPUS_VALID, r->h.eval_bytes);
        if (train_loader_init(&l, r->sample, CORPUS_VALID, r->h.ctx, r->h.seed) == 0) {
            train_loader_free(&r->valid);
            r->valid = l;
        }
    }
    if (train_model_init(&r->m, &r->cfg, r->h.seed) < 0) return -1;
    adamw_init(&r->s, r->m.n_params);
    if (o->resume && checkpoint_load(o->out, r->p.step, &r->m, &r->s) < 0) return -1;
    if (!o->resume && r->rank == 0 && mkdirs(o->out) < 0) return -1;
    int B = r->h.batch, T = r->h.ctx, n_ch = r->corpus->n_channels;
    r->tb = train_batch_new(&r->m, B, T, 0);
    r->in = kiln_xmalloc(sizeof(int32_t) * B * T);
    r->tg = kiln_xmalloc(sizeof(int32_t) * B * T);
    r->ch = kiln_xmalloc(sizeof(uint16_t) * B * T);
    r->ch_sum = kiln_xcalloc(n_ch + 1, sizeof(double));
    r->ch_count = kiln_xcalloc(n_ch + 1, sizeof(double));
    return 0;
}

static void finish(run *r) {
    if (r->log) fclose(r->log);
    free(r->in);
    free(r->tg);
    free(r->ch);
    free(r->ch_sum);
    free(r->ch_count);
    train_batch_free(r->tb);
    adamw_free(&r->s);
    train_model_free(&r->m);
    train_loader_free(&r->train);
    train_loader_free(&r->valid);
    kiln_corpus_close(r->sample);
    kiln_corpus_close(r->corpus);
}

static int train_loop(run *r, double t_start) {
    const train_opts *o = r->o;
    int quiet = o->quiet || r->rank != 0, n_ch = r->corpus->n_channels, N = r->h.batch * r->h.ctx;
    double deadline = o->minutes > 0 ? t_start + o->minutes * 60 : INFINITY;
    int fitted = !o->resume && r->h.steps <= 0; /* the step count follows the time budget */
    if (fitted) r->h.steps = steps_for_budget(r, deadline - kiln_now() - 1.0, r->h.eval_every);
    double t_fit = kiln_now();
    int64_t step_fit = r->p.step;
    if (r->h.warmup < 0) r->h.warmup = r->h.steps / 20 < 1 ? 1 : r->h.steps / 20 > 200 ? 200 : r->h.steps / 20;
    if (r->rank == 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/log.jsonl", o->out);
        if (o->resume && trim_log(o->out, r->p.step) < 0) return -1;
        if (!(r->log = fopen(path, o->resume ? "a" : "w"))) return kiln_fail("%s: %s", path, strerror(errno));
    }
    if (!quiet)
        fprintf(stderr,
                "train: %s, %zu parameters (%d layers, dim %d, %d heads), %lld steps of %d x %d x %d bytes%s; "
                "%d threads x %d processes, OpenBLAS %s kernels\n",
                r->cfg.arch, r->m.n_params, r->cfg.n_layers, r->cfg.dim, r->cfg.n_heads, (long long)r->h.steps,
                r->h.batch * r->world, r->h.accum, r->h.ctx, o->resume ? " (resumed)" : "", omp_get_max_threads(),
                r->world, blas_core_name());
    double shown[2] = {0, 0}, busy = 0;
    uint64_t tokens_log = 0;
    kiln_progress bar;
    kiln_progress_begin(&bar, "train", (uint64_t)r->h.steps, "steps", quiet ? KILN_PROGRESS_OFF : o->progress);
    bar.detail = progress_detail;
    bar.detail_ctx = shown;
    kiln_progress_update(&bar, (uint64_t)r->p.step);
    int rc = 0, ran = 0;
    float valid = NAN;
    while (r->p.step < r->h.steps) {
        int64_t step = r->p.step;
        double t0 = kiln_now();
        train_batch_zero_grad(&r->m, r->tb);
        for (int micro = 0; micro < r->h.accum; micro++) micro_step(r, step, micro);
        train_batch_reduce(&r->m, r->tb);
        comm_sum_f32(r->m.grads, r->m.n_params);
        double norm = train_grad_norm(r->m.grads, r->m.n_params);
        float lr = train_lr(step, r->h.warmup, r->h.steps, r->h.lr, r->h.min_lr_ratio);
        adamw_step(&r->m, &r->s, &r->h.adam, lr, train_clip_scale(norm, r->h.clip));
        r->p.step++;
        r->p.tokens += (uint64_t)N * r->h.accum * r->world;
        tokens_log += (uint64_t)N * r->h.accum * r->world;
        busy += kiln_now() - t0;
        int last = r->p.step == r->h.steps;
        /* a signal, the time budget, --stop-at: everyone stops together */
        double flags[3] = {stop_signal != 0, kiln_now() >= deadline, r->p.step == o->stop_at};
        comm_sum_f64(flags, 3);
        int stopping = flags[0] > 0 || flags[1] > 0 || flags[2] > 0;
        if (r->p.step % r->h.log_every == 0 || last || stopping) {
            comm_sum_f64(r->ch_sum, n_ch + 1);
            comm_sum_f64(r->ch_count, n_ch + 1);
            double loss = r->ch_sum[n_ch] / r->ch_count[n_ch], tok_s = busy > 0 ? tokens_log / busy : 0;
            json_t *j = json_pack("{s:I, s:s, s:f, s:f, s:f, s:f, s:f, s:I, s:f}", "step", (json_int_t)r->p.step, "split",
                                  "train", "loss", loss, "bpb", loss / M_LN2, "lr", (double)lr, "grad_norm", norm,
                                  "tok_s", tok_s, "tokens", (json_int_t)r->p.tokens, "elapsed_s", kiln_now() - t_start);
            json_object_set_new(j, "channels", channel_object(r->corpus, r->ch_sum, r->ch_count));
            log_line(r->log, j);
            shown[0] = loss, shown[1] = tok_s;
            if (!quiet && !bar.on)
                fprintf(stderr, "step %lld/%lld: loss %.4f (%.3f bits/byte), lr %.2e, grad norm %.3f, %.0f tok/s\n",
                        (long long)r->p.step, (long long)r->h.steps, loss, loss / M_LN2, lr, norm, tok_s);
            memset(r->ch_sum, 0, sizeof(double) * (n_ch + 1));
            memset(r->ch_count, 0, sizeof(double) * (n_ch + 1));
            busy = 0, tokens_log = 0;
        }
        if (fitted && r->p.step % r->h.log_every == 0) refit_steps(r, t_fit, step_fit, deadline, &bar);
        kiln_progress_update(&bar, (uint64_t)r->p.step);
        ran = 1;
        if (r->p.step % r->h.eval_every == 0 || last || flags[1] > 0) { /* a budget's end: its last figure */
            if (bar.on) kiln_progress_abort(&bar);
            valid = evaluate_and_log(r, r->p.step, quiet);
        }
        if (r->p.step % r->h.save_every == 0 || last || stopping) {
            if ((rc = save(r)) < 0) break;
        }
        if (stopping && !last) {
            if (!quiet)
                fprintf(stderr, "train: %s at step %lld of %lld; checkpoint saved (continue: kiln train --resume %s)\n",
                        flags[0] > 0 ? "stopped by a signal" : flags[1] > 0 ? "time budget spent" : "stopped",
                        (long long)r->p.step, (long long)r->h.steps, o->out);
            if (flags[0] > 0) rc = 2;
            break;
        }
    }
    if (bar.on) kiln_progress_end(&bar);
    if (rc == 0 && !quiet && ran == 0) fprintf(stderr, "train: %s is already at its last step\n", o->out);
    if (rc == 0 && !quiet && ran && r->p.step == r->h.steps)
        fprintf(stderr, "train: done, %lld steps in %.0f s; valid %.3f bits/byte; model %s/latest.gguf\n",
                (long long)r->p.step, kiln_now() - t_start, valid / M_LN2, o->out);
    return rc;
}

int kiln_train(const train_opts *o) {
    double t_start = kiln_now();
    run r = {.o = o, .rank = comm_rank(), .world = comm_size()};
    int rc = prepare(&r);
    if (rc == 0) {
        stop_signal = 0;
        void (*old_int)(int) = signal(SIGINT, on_signal), (*old_term)(int) = signal(SIGTERM, on_signal);
        rc = train_loop(&r, t_start);
        signal(SIGINT, old_int);
        signal(SIGTERM, old_term);
    }
    finish(&r);
    return rc;
}
