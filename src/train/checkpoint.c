/* Checkpoints (checkpoint.h). */
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/error.h"
#include "format/gguf.h"
#include "format/model_file.h"

enum { PATH_MAX_LEN = 4096 };

static void ckpt_path(char *buf, const char *dir, int64_t step, const char *ext) {
    snprintf(buf, PATH_MAX_LEN, "%s/ckpt-%08lld.%s", dir, (long long)step, ext);
}

static uint64_t checksum(const float *x, size_t n) { return XXH3_64bits(x, n * sizeof(float)); }

static int save_optim(const char *path, const adamw_state *s, int64_t step) {
    gguf_writer *w = gguf_writer_new();
    uint64_t ne[1] = {s->n};
    gguf_set_str(w, "general.type", "kiln optimizer state");
    gguf_set_u64(w, "kiln.train.step", (uint64_t)step);
    gguf_set_u64(w, "kiln.train.adam_t", (uint64_t)s->t);
    gguf_set_u64(w, "kiln.train.checksum_m", checksum(s->m, s->n));
    gguf_set_u64(w, "kiln.train.checksum_v", checksum(s->v, s->n));
    gguf_add_tensor_ref(w, "adam.m", 0, 1, ne, s->m);
    gguf_add_tensor_ref(w, "adam.v", 0, 1, ne, s->v);
    int rc = gguf_write(w, path);
    gguf_writer_free(w);
    return rc;
}

static int save_model(const char *path, const train_model *m, const train_hparams *h, const train_progress *p) {
    gguf_writer *w = gguf_writer_new();
    train_model_to_gguf(m, w);
    gguf_set_u64(w, "kiln.train.step", (uint64_t)p->step);
    gguf_set_u64(w, "kiln.train.tokens", p->tokens);
    gguf_set_u64(w, "kiln.train.steps", (uint64_t)h->steps);
    gguf_set_u64(w, "kiln.train.warmup", (uint64_t)h->warmup);
    gguf_set_u32(w, "kiln.train.batch", (uint32_t)h->batch);
    gguf_set_u32(w, "kiln.train.accum", (uint32_t)h->accum);
    gguf_set_f32(w, "kiln.train.lr", h->lr);
    gguf_set_f32(w, "kiln.train.min_lr_ratio", h->min_lr_ratio);
    gguf_set_f32(w, "kiln.train.beta1", h->adam.beta1);
    gguf_set_f32(w, "kiln.train.beta2", h->adam.beta2);
    gguf_set_f32(w, "kiln.train.eps", h->adam.eps);
    gguf_set_f32(w, "kiln.train.weight_decay", h->adam.weight_decay);
    gguf_set_f32(w, "kiln.train.clip", h->clip);
    gguf_set_u64(w, "kiln.train.seed", h->seed);
    gguf_set_str(w, "kiln.train.data", h->data);
    gguf_set_u64(w, "kiln.train.log_every", (uint64_t)h->log_every);
    gguf_set_u64(w, "kiln.train.eval_every", (uint64_t)h->eval_every);
    gguf_set_u64(w, "kiln.train.save_every", (uint64_t)h->save_every);
    gguf_set_u32(w, "kiln.train.keep", (uint32_t)h->keep);
    gguf_set_u64(w, "kiln.train.eval_bytes", h->eval_bytes);
    gguf_set_u64(w, "kiln.train.checksum", checksum(m->params, m->n_params));
    int rc = gguf_write(w, path);
    gguf_writer_free(w);
    return rc;
}

/* Steps of the complete checkpoints in DIR, newest first. *N gets the count; NULL (n 0) when none. */
static int64_t *list_steps(const char *dir, int *n) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int64_t *steps = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        long long step;
        char tail[8], path[PATH_MAX_LEN];
        if (sscanf(e->d_name, "ckpt-%lld.%7s", &step, tail) != 2 || strcmp(tail, "gguf") || step < 0) continue;
        ckpt_path(path, dir, step, "optim");
        if (access(path, F_OK) != 0) continue;
        if (*n == cap) steps = kiln_xrealloc(steps, sizeof *steps * (cap = cap ? 2 * cap : 16));
        steps[(*n)++] = step;
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort, descending: a run keeps a handful */
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
            int64_t t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    return steps;
}

/* Points DIR/latest.gguf at checkpoint STEP (a relative link, replaced atomically). */
static void link_latest(const char *dir, int64_t step) {
    char target[64], link[PATH_MAX_LEN], tmp[PATH_MAX_LEN];
    snprintf(target, sizeof target, "ckpt-%08lld.gguf", (long long)step);
    snprintf(link, sizeof link, "%s/latest.gguf", dir);
    snprintf(tmp, sizeof tmp, "%s/latest.gguf.tmp.%ld", dir, (long)getpid());
    unlink(tmp);
    if (symlink(target, tmp) == 0 && rename(tmp, link) != 0) unlink(tmp);
}

int checkpoint_save(const char *dir, const train_model *m, const adamw_state *s, const train_hparams *h,
                    const train_progress *p, int keep) {
    char path[PATH_MAX_LEN];
    ckpt_path(path, dir, p->step, "optim");
    if (save_optim(path, s, p->step) < 0) return -1;
    ckpt_path(path, dir, p->step, "gguf");
    if (save_model(path, m, h, p) < 0) return -1;
    link_latest(dir, p->step);
    int n;
    int64_t *steps = list_steps(dir, &n);
    for (int i = keep; keep > 0 && i < n; i++) {
        ckpt_path(path, dir, steps[i], "gguf");
        unlink(path);
        ckpt_path(path, dir, steps[i], "optim");
        unlink(path);
    }
    free(steps);
    return 0;
}

int checkpoint_latest(const char *dir, int64_t *step) {
    DIR *d = opendir(dir);
    if (!d) return kiln_fail("%s: %s", dir, strerror(errno));
    closedir(d);
    int n;
    int64_t *steps = list_steps(dir, &n);
    if (n) *step = steps[0];
    free(steps);
    return n > 0;
}

static int get_u64(const gguf_file *g, const char *key, uint64_t *out) {
    const gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv || kv->value.type != GGUF_UINT64) return kiln_fail("%s: missing or malformed key %s", g->path, key);
    *out = kv->value.u64;
    return 0;
}

static int get_f32(const gguf_file *g, const char *key, float *out) {
    if (gguf_get_f32(g, key, out) == 1) return 0;
    return kiln_fail("%s: missing or malformed key %s", g->path, key);
}

static int get_u32(const gguf_file *g, const char *key, int *out) {
    uint32_t v;
    if (gguf_get_u32(g, key, &v) == 1 && v > 0 && v < (1u << 30)) return *out = (int)v, 0;
    return kiln_fail("%s: missing or malformed key %s", g->path, key);
}

/* Opens checkpoint file EXT of STEP, with a message that says what to do when it is damaged. */
static gguf_file *open_ckpt(const char *dir, int64_t step, const char *ext) {
    char path[PATH_MAX_LEN];
    ckpt_path(path, dir, step, ext);
    gguf_file *g = gguf_open(path);
    if (!g) kiln_fail("%s (the checkpoint is damaged: move ckpt-%08lld.* away to resume from an older one)",
                      kiln_errmsg(), (long long)step);
    return g;
}

int checkpoint_read_settings(const char *dir, int64_t step, kiln_config *c, train_hparams *h, train_progress *p) {
    gguf_file *g = open_ckpt(dir, step, "gguf");
    if (!g) return -1;
    memset(h, 0, sizeof *h);
    uint64_t st = 0, steps = 0, warmup = 0, log_every = 0, eval_every = 0, save_every = 0;
    uint32_t keep = 0;
    gguf_str data;
    int rc = -1;
    if (model_file_read_config(g, c) < 0 || get_u64(g, "kiln.train.step", &st) || get_u64(g, "kiln.train.tokens", &p->tokens) ||
        get_u64(g, "kiln.train.steps", &steps) || get_u64(g, "kiln.train.warmup", &warmup) ||
        get_u32(g, "kiln.train.batch", &h->batch) || get_u32(g, "kiln.train.accum", &h->accum) ||
        get_f32(g, "kiln.train.lr", &h->lr) || get_f32(g, "kiln.train.min_lr_ratio", &h->min_lr_ratio) ||
        get_f32(g, "kiln.train.beta1", &h->adam.beta1) || get_f32(g, "kiln.train.beta2", &h->adam.beta2) ||
        get_f32(g, "kiln.train.eps", &h->adam.eps) || get_f32(g, "kiln.train.weight_decay", &h->adam.weight_decay) ||
        get_f32(g, "kiln.train.clip", &h->clip) || get_u64(g, "kiln.train.seed", &h->seed) ||
        get_u64(g, "kiln.train.log_every", &log_every) || get_u64(g, "kiln.train.eval_every", &eval_every) ||
        get_u64(g, "kiln.train.save_every", &save_every) || gguf_get_u32(g, "kiln.train.keep", &keep) != 1 ||
        get_u64(g, "kiln.train.eval_bytes", &h->eval_bytes))
        goto done;
    if (!log_every || !eval_every || !save_every || log_every > INT64_MAX || eval_every > INT64_MAX ||
        save_every > INT64_MAX || keep > (1u << 20)) {
        kiln_fail("%s: malformed kiln.train output settings", g->path);
        goto done;
    }
    h->log_every = (int64_t)log_every;
    h->eval_every = (int64_t)eval_every;
    h->save_every = (int64_t)save_every;
    h->keep = (int)keep;
    if (gguf_get_str(g, "kiln.train.data", &data) != 1 || data.len >= sizeof h->data) {
        kiln_fail("%s: missing or malformed key kiln.train.data", g->path);
        goto done;
    }
    if ((int64_t)st != step || steps > INT64_MAX || warmup > steps) {
        kiln_fail("%s: inconsistent step counts (step %llu of %llu)", g->path, (unsigned long long)st,
                  (unsigned long long)steps);
        goto done;
    }
    memcpy(h->data, data.ptr, data.len);
    h->data[data.len] = 0;
    h->steps = (int64_t)steps;
    h->warmup = (int64_t)warmup;
    h->ctx = c->ctx_len;
    p->step = step;
    rc = 0;
done:
    gguf_close(g);
    return rc;
}

/* The F32 vector tensor NAME of N floats in G, or NULL with a message. */
static const float *vector(const gguf_file *g, const char *name, size_t n) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t || t->type != 0 || t->n_dims != 1 || t->ne[0] != n)
        return kiln_fail("%s: tensor %s is missing or not %zu F32 values", g->path, name, n), NULL;
    return t->data;
}

int checkpoint_load(const char *dir, int64_t step, train_model *m, adamw_state *s) {
    gguf_file *g = open_ckpt(dir, step, "gguf"), *o = NULL;
    int rc = -1;
    uint64_t sum = 0, sm = 0, sv = 0, ost = 0, t = 0;
    if (!g || train_model_from_gguf(m, g) < 0 || get_u64(g, "kiln.train.checksum", &sum)) goto done;
    if (sum != checksum(m->params, m->n_params)) {
        kiln_fail("%s: the weights do not match their checksum (damaged file: move ckpt-%08lld.* away to resume "
                  "from an older checkpoint)", g->path, (long long)step);
        goto done;
    }
    if (!(o = open_ckpt(dir, step, "optim"))) goto done;
    const float *mm = vector(o, "adam.m", m->n_params), *vv = vector(o, "adam.v", m->n_params);
    if (!mm || !vv || get_u64(o, "kiln.train.step", &ost) || get_u64(o, "kiln.train.adam_t", &t) ||
        get_u64(o, "kiln.train.checksum_m", &sm) || get_u64(o, "kiln.train.checksum_v", &sv))
        goto done;
    if ((int64_t)ost != step || sm != checksum(mm, m->n_params) || sv != checksum(vv, m->n_params)) {
        kiln_fail("%s: the optimizer state is damaged or belongs to another step (move ckpt-%08lld.* away to "
                  "resume from an older checkpoint)", o->path, (long long)step);
        goto done;
    }
    memcpy(s->m, mm, sizeof(float) * m->n_params);
    memcpy(s->v, vv, sizeof(float) * m->n_params);
    s->t = (int64_t)t;
    rc = 0;
done:
    gguf_close(g);
    gguf_close(o);
    return rc;
}
