/* Checkpoints of a training run, in the run's folder:
 *   ckpt-NNNNNNNN.gguf   the model after NNNNNNNN steps, a GGUF model file `kiln generate` loads, with
 *                        the run's settings under kiln.train.* (everything a resume needs)
 *   ckpt-NNNNNNNN.optim  the AdamW moments (a GGUF file: tensors adam.m and adam.v)
 *   latest.gguf          a symbolic link to the newest model file
 * Each file is written atomically (temporary file, fsync, rename), the optimizer state first: a
 * checkpoint counts only when both files exist, so a crash or a full disk during a save leaves the
 * previous checkpoint as it was. Checksums of the parameters and moments detect a damaged file. */
#ifndef KILN_TRAIN_CHECKPOINT_H
#define KILN_TRAIN_CHECKPOINT_H

#include <stdint.h>

#include "train/adamw.h"
#include "train/model.h"

/* The settings of a run that a resume must reproduce exactly. */
typedef struct {
    int batch, accum, ctx;
    int64_t steps, warmup;
    float lr, min_lr_ratio;
    adamw_opts adam;
    float clip;
    uint64_t seed;
    char data[1024];       /* the corpus path */
    /* outputs: kept so that a resume goes on as the run began, unless its flags say otherwise */
    int64_t log_every, eval_every, save_every;
    int keep;
    uint64_t eval_bytes;
} train_hparams;

/* The state after STEP steps (TOKENS tokens seen per process group). */
typedef struct {
    int64_t step;
    uint64_t tokens;
} train_progress;

/* Saves a checkpoint into DIR, then deletes all but the newest KEEP (0: keep all). */
int checkpoint_save(const char *dir, const train_model *m, const adamw_state *s, const train_hparams *h,
                    const train_progress *p, int keep);

/* The step of the newest complete checkpoint in DIR: 1 and *STEP when found, 0 when none, -1 on error. */
int checkpoint_latest(const char *dir, int64_t *step);

/* Reads the model configuration and run settings of checkpoint STEP in DIR. */
int checkpoint_read_settings(const char *dir, int64_t step, kiln_config *c, train_hparams *h, train_progress *p);
/* Loads the parameters and optimizer moments of checkpoint STEP into M and S (initialised with the
 * configuration checkpoint_read_settings gave), verifying checksums. -1 with a message naming the file. */
int checkpoint_load(const char *dir, int64_t step, train_model *m, adamw_state *s);

#endif
