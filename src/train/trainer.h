/* The training loop of `kiln train` and the evaluation shared with `kiln eval`.
 *
 * A run lives in a folder: checkpoints (checkpoint.h) and log.jsonl, one JSON object per line:
 *   {"step":N,"split":"train","loss":L,"bpb":B,"lr":..,"grad_norm":..,"tok_s":..,"tokens":..,"elapsed_s":..,
 *    "channels":{"NAME":L,...}}       mean loss (nats per byte) since the previous train line
 *   {"step":N,"split":"valid","loss":L,"bpb":B,"bytes":..,"channels":{"NAME":L,...}}
 * Channel losses are sum / count over the channel's own bytes, never averages of averages. */
#ifndef KILN_TRAIN_TRAINER_H
#define KILN_TRAIN_TRAINER_H

#include <stdint.h>

#include "train/batch.h"
#include "train/checkpoint.h"
#include "train/loader.h"
#include "train/model.h"

typedef struct {
    kiln_config model;      /* fresh runs */
    train_hparams h;        /* fresh runs; h.steps 0 with minutes: fitted to the budget; h.warmup -1: default */
    const char *out;        /* the run folder */
    int resume;             /* continue the run in OUT from its newest checkpoint */
    const char *data;       /* on resume: NULL for the run's own corpus */
    int64_t steps;          /* on resume: > 0 sets a new total */
    double minutes;         /* > 0: stop after this long (fresh runs also fit their steps to it) */
    int64_t stop_at;        /* > 0: stop after this step, as if interrupted (the schedule is unchanged) */
    /* on resume, overrides of the run's output settings (h.log_every ...): 0 keeps the run's own */
    int64_t log_every, eval_every, save_every;
    int keep;               /* -1: keep the run's own */
    int64_t eval_bytes;     /* -1: keep the run's own */
    int progress;           /* KILN_PROGRESS_AUTO, _ON or _OFF */
    int quiet;              /* no lines on stderr */
} train_opts;

/* Runs training. 0 when done, 2 when interrupted by SIGINT/SIGTERM after saving a checkpoint, -1 with
 * a message on error (the newest checkpoint in the folder stays usable). */
int kiln_train(const train_opts *o);

/* Losses of a split, per channel (sums in nats and byte counts) and overall. */
typedef struct {
    int n_channels;
    double *sum, total_sum;
    double *count, total_count;
} train_eval_result;

/* Evaluates M on every window of stride STRIDE of L's stream (see loader.h; corpus_sample for a part of
 * a split), TB's B windows per forward pass, spread over the processes of the run. R's arrays are
 * allocated; free with train_eval_free. */
void train_evaluate(train_model *m, train_batch *tb, const train_loader *l, int stride, train_eval_result *r,
                    int progress);
void train_eval_free(train_eval_result *r);

#endif
