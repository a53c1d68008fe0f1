/* kiln infer: batch inference over a JSONL file. Each line is {"id": ..., "prompt": ..., and any
 * field of /v1/completions (docs/SERVING.md)}; each answer is a line {"id", "text", "finish_reason",
 * "prompt_tokens", "completion_tokens"} (or {"id", "error"} for a row that cannot run), written in
 * input order. N workers, each a thread with its own context (KV cache) and T OpenMP threads, share
 * the one memory map of the weights: the seed's "8 GPUs load 8 models" on cores.
 *
 * --resume continues after a kill: the answers already written are kept (a torn last line is cut
 * off) and their rows skipped, so nothing is lost and nothing is done twice. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/file.h"
#include "base/progress.h"
#include "cli/cli.h"
#include "kiln.h"
#include "serve/serve.h"

static const char *USAGE =
    "usage: kiln infer -m MODEL --in IN.jsonl --out OUT.jsonl [--workers N | --batch N] [--threads T] [--resume]\n"
    "  --in FILE        one JSON object per line: {\"id\": ..., \"prompt\": ..., decoding fields of\n"
    "                   /v1/completions: max_tokens, temperature, top_p, top_k, seed, stop, ...}\n"
    "  --out FILE       the answers, one line per row, in input order\n"
    "  --workers N      rows decoded at once, each with its own KV cache (default 1)\n"
    "  --threads T      threads per worker (default: cores / workers)\n"
    "  --max-tokens N   new tokens of a row without max_tokens (default 256)\n"
    "  --batch N        one worker decoding N rows per forward pass (continuous batching, as kiln serve)\n"
    "  --resume         keep the answers OUT already holds and do only the rest\n";

typedef struct {
    char *line;             /* the input row */
    char *answer;           /* the output line, once done */
    int tokens;
} row;

typedef struct {
    kiln_model *m;
    serve_opts o;
    row *rows;
    int n_rows, next;       /* next: the first row no worker has taken */
    long long tokens;
    int threads;
    pthread_mutex_t mu;
    pthread_cond_t done;
} infer_run;

static char *error_line(json_t *id, const char *msg) {
    json_t *o = json_pack("{s:O, s:s}", "id", id, "error", msg);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* The row as a /v1/completions request body, with infer's defaults (greedy, --max-tokens); *ID gets
 * its id (its index when it has none). NULL with *ERR set when the line is not a JSON object. */
static char *request_body(infer_run *r, int index, const char *line, json_t **id) {
    json_t *in = json_loads(line, 0, NULL);
    *id = in && json_object_get(in, "id") ? json_incref(json_object_get(in, "id")) : json_integer(index);
    if (!json_is_object(in)) {
        json_decref(in);
        return NULL;
    }
    if (!json_object_get(in, "max_tokens")) json_object_set_new(in, "max_tokens", json_integer(r->o.max_tokens));
    if (!json_object_get(in, "temperature")) json_object_set_new(in, "temperature", json_integer(0));
    json_object_del(in, "stream");
    json_object_del(in, "model");
    char *body = json_dumps(in, JSON_COMPACT);
    json_decref(in);
    return body;
}

static void job_free_fields(serve_job *j) {
    for (int i = 0; i < j->p.n_stop_strings; i++) free(j->stop[i]);
    free(j->stop), free(j->bias), free(j->samplers), free(j->prompt), free(j->echo);
}

static char *answer_line(json_t *id, const char *const *texts, const size_t *lens, int n, const char *finish,
                         int n_prompt, int n_tokens) {
    json_t *o = json_pack("{s:O}", "id", id);
    if (n == 1) {
        json_object_set_new(o, "text", json_stringn(texts[0], lens[0]));
        json_object_set_new(o, "finish_reason", json_string(finish));
    } else {
        json_t *all = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(all, json_stringn(texts[i], lens[i]));
        json_object_set_new(o, "texts", all);
    }
    json_object_set_new(o, "prompt_tokens", json_integer(n_prompt));
    json_object_set_new(o, "completion_tokens", json_integer(n_tokens));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* One row: its fields parsed as a /v1/completions request, then kiln_generate from an empty cache. */
static char *answer(infer_run *r, kiln_ctx *c, int index, const char *line, int *n_tokens) {
    json_t *id;
    char *body = request_body(r, index, line, &id), *out;
    *n_tokens = 0;
    if (!body) {
        out = error_line(id, "the line is not a JSON object");
        json_decref(id);
        return out;
    }
    serve_job j = {0};
    const char *param;
    kiln_gen_result g;
    if (request_parse(&j, r->m, &r->o, 0, body, strlen(body), &param) < 0 ||
        (j.n > 1 && j.p.search == KILN_SEARCH_SAMPLE && (j.p.num_return = j.n) < 0) || kiln_ctx_truncate(c, 0) < 0 ||
        kiln_generate(c, j.prompt, j.n_prompt, &j.p, &g) < 0) {
        out = error_line(id, kiln_last_error());
    } else {
        const char *texts[64];
        size_t lens[64];
        for (int i = 0; i < g.n_seqs && i < 64; i++) texts[i] = g.seqs[i].text, lens[i] = g.seqs[i].text_len;
        for (int i = 0; i < g.n_seqs; i++) *n_tokens += g.seqs[i].n_tokens;
        out = answer_line(id, texts, lens, g.n_seqs < 64 ? g.n_seqs : 64,
                          g.seqs[0].stop == KILN_STOP_LENGTH ? "length" : "stop", j.n_prompt, *n_tokens);
        kiln_gen_result_free(&g);
    }
    job_free_fields(&j);
    free(body);
    json_decref(id);
    return out;
}

static void *worker(void *arg) {
    infer_run *r = arg;
    kiln_set_threads(r->threads);
    kiln_ctx *c = kiln_ctx_new(r->m, r->o.n_ctx);
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int i = r->next < r->n_rows ? r->next++ : -1;
        pthread_mutex_unlock(&r->mu);
        if (i < 0) break;
        int n = 0;
        char *a;
        if (c) {
            a = answer(r, c, i, r->rows[i].line, &n);
        } else {
            json_t *id = json_integer(i);
            a = error_line(id, kiln_last_error());
            json_decref(id);
        }
        pthread_mutex_lock(&r->mu);
        r->rows[i].answer = a;
        r->rows[i].tokens = n;
        pthread_cond_broadcast(&r->done);
        pthread_mutex_unlock(&r->mu);
    }
    kiln_ctx_free(c);
    return NULL;
}

/* A row queued with the scheduler of --batch: its job (NULL when it failed before) or its answer. */
typedef struct {
    serve_job *job;
    json_t *id;
    char *done;
} batch_row;

static void batch_submit(infer_run *r, serve_sched *s, int k, batch_row *b) {
    char *body = request_body(r, k, r->rows[k].line, &b->id);
    if (!body) {
        b->done = error_line(b->id, "the line is not a JSON object");
        return;
    }
    serve_job *j = kiln_xcalloc(1, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    j->model_id = "";
    const char *param;
    if (request_parse(j, r->m, &r->o, 0, body, strlen(body), &param) < 0) {
        b->done = error_line(b->id, kiln_last_error());
        j->n = 0;
        job_release(j);
    } else {
        j->choices = kiln_xcalloc(j->n, sizeof *j->choices);
        if (sched_submit(s, j) < 0) {
            b->done = error_line(b->id, "the scheduler's queue is full");
            job_release(j);
        } else {
            b->job = j;
        }
    }
    free(body);
}

/* The answer of a submitted row, once the scheduler has finished it. */
static char *batch_answer(batch_row *b, int *n_tokens) {
    *n_tokens = 0;
    if (b->done) return b->done;
    serve_job *j = b->job;
    pthread_mutex_lock(&j->mu);
    while (j->n_done < j->n) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
    if (j->error) return error_line(b->id, j->error);
    const char *texts[64];
    size_t lens[64];
    int n = j->n < 64 ? j->n : 64;
    for (int i = 0; i < j->n; i++) *n_tokens += j->choices[i].n_tokens;
    for (int i = 0; i < n; i++) texts[i] = j->choices[i].text, lens[i] = j->choices[i].len;
    return answer_line(b->id, texts, lens, n, j->choices[0].finish, j->n_prompt, *n_tokens);
}

/* --batch N: the rows go through kiln serve's continuous-batching scheduler, N sequences sharing each
 * forward pass and new rows joining as others finish; at most 4N rows are in flight, and answers are
 * written in input order. */
static int run_batched(infer_run *r, int first, FILE *f, kiln_progress *p, int batch) {
    serve_opts o = r->o;
    o.slots = batch, o.queue = 4 * batch * 64, o.threads = r->threads;
    serve_sched *s = sched_new(r->m, &o);
    if (!s) return cli_error("%s", kiln_last_error());
    batch_row *b = kiln_xcalloc(r->n_rows ? r->n_rows : 1, sizeof *b);
    int submitted = first;
    for (int i = first; i < r->n_rows; i++) {
        while (submitted < r->n_rows && submitted - i < 4 * batch) batch_submit(r, s, submitted, &b[submitted]), submitted++;
        int n;
        char *a = batch_answer(&b[i], &n);
        r->tokens += n;
        fprintf(f, "%s\n", a);
        fflush(f);
        free(a);
        if (b[i].job) job_release(b[i].job);
        json_decref(b[i].id);
        kiln_progress_update(p, (uint64_t)(i + 1 - first));
    }
    sched_free(s);
    free(b);
    return 0;
}

static char **read_lines(const char *path, int *n) {
    size_t size;
    char *text = kiln_read_file(path, &size);
    if (!text) return NULL;
    int cap = 16;
    char **lines = kiln_xmalloc(sizeof(char *) * cap);
    *n = 0;
    for (char *p = text; p < text + size;) {
        char *e = memchr(p, '\n', (size_t)(text + size - p));
        size_t len = e ? (size_t)(e - p) : (size_t)(text + size - p);
        if (len && strspn(p, " \t\r") < len) {
            if (*n == cap) lines = kiln_xrealloc(lines, sizeof(char *) * (cap *= 2));
            lines[*n] = kiln_xmalloc(len + 1);
            memcpy(lines[*n], p, len);
            lines[(*n)++][len] = 0;
        }
        p += len + 1;
    }
    free(text);
    return lines;
}

/* --resume: the number of complete answers OUT holds; a torn last line is cut off. */
static int answers_done(const char *path, row *rows, int n_rows) {
    size_t size;
    if (access(path, F_OK) != 0) return 0;
    char *text = kiln_read_file(path, &size);
    if (!text) return -1;
    int done = 0;
    size_t keep = 0;
    for (char *p = text; p < text + size && done < n_rows;) {
        char *e = memchr(p, '\n', (size_t)(text + size - p));
        if (!e) break;
        json_t *a = json_loadb(p, (size_t)(e - p), 0, NULL), *in = json_loads(rows[done].line, 0, NULL);
        json_t *want = json_object_get(in, "id");
        int same = a && (want ? json_equal(json_object_get(a, "id"), want)
                              : json_integer_value(json_object_get(a, "id")) == done);
        json_decref(a);
        json_decref(in);
        if (!same) break;
        done++;
        p = e + 1;
        keep = (size_t)(p - text);
    }
    free(text);
    if (truncate(path, (off_t)keep) < 0) return kiln_fail("%s: cannot cut the torn last line", path);
    return done;
}

static void detail(void *ctx, char *buf, size_t size) {
    infer_run *r = ctx;
    snprintf(buf, size, "%lld tokens generated", r->tokens);
}

static int cmd_infer(int argc, char **argv) {
    const char *model = NULL, *in = NULL, *out = NULL;
    long long workers = 1, threads = 0, max_tokens = 256, batch = 0;
    int resume = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (!strcmp(a, "--resume")) { resume = 1; continue; }
        if (!(v = cli_value(argc, argv, &i))) return 1;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--in")) in = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--workers")) { if (cli_int(a, v, 1, 1024, &workers)) return 1; }
        else if (!strcmp(a, "--threads")) { if (cli_int(a, v, 1, 1024, &threads)) return 1; }
        else if (!strcmp(a, "--max-tokens")) { if (cli_int(a, v, 1, 1 << 24, &max_tokens)) return 1; }
        else if (!strcmp(a, "--batch")) { if (cli_int(a, v, 1, 256, &batch)) return 1; }
        else return cli_error("infer: unknown flag '%s'\n%s", a, USAGE);
    }
    if (!model || !in || !out) return cli_error("infer: -m MODEL, --in FILE and --out FILE are required\n%s", USAGE);
    if (batch && workers > 1) return cli_error("infer: --batch runs one worker: it cannot go with --workers %lld", workers);
    infer_run r = {0};
    r.o = (serve_opts){.model_id = "", .slots = 64, .max_tokens = (int)max_tokens, .timeout = 1e9};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    r.threads = threads ? (int)threads : (int)(cores / workers > 0 ? cores / workers : 1);
    int n_lines;
    char **lines = read_lines(in, &n_lines);
    if (!lines) return cli_error("--in: %s", kiln_last_error());
    r.m = kiln_model_open(model);
    if (!r.m) return cli_error("%s", kiln_last_error());
    r.rows = kiln_xcalloc(n_lines ? n_lines : 1, sizeof(row));
    for (int i = 0; i < n_lines; i++) r.rows[i].line = lines[i];
    free(lines);
    r.n_rows = n_lines;
    int first = resume ? answers_done(out, r.rows, n_lines) : 0;
    if (first < 0) return cli_error("--out: %s", kiln_last_error());
    FILE *f = fopen(out, resume ? "a" : "w");
    if (!f) return cli_error("--out: %s: cannot write", out);
    if (first) fprintf(stderr, "kiln infer: %d rows already in %s, resuming\n", first, out);
    kiln_progress p;
    if (batch) {
        r.threads = threads ? (int)threads : (int)cores;
        kiln_progress_begin(&p, "infer", (uint64_t)(n_lines - first), "rows", KILN_PROGRESS_AUTO);
        p.detail = detail, p.detail_ctx = &r;
        int rc = run_batched(&r, first, f, &p, (int)batch);
        kiln_progress_end(&p);
        if (fclose(f) != 0 && !rc) rc = cli_error("--out: %s: write failed", out);
        for (int i = 0; i < n_lines; i++) free(r.rows[i].line);
        free(r.rows);
        kiln_model_close(r.m);
        return rc;
    }
    r.next = first;
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.done, NULL);
    pthread_t *tids = kiln_xmalloc(sizeof(pthread_t) * workers);
    for (int i = 0; i < workers; i++) pthread_create(&tids[i], NULL, worker, &r);
    kiln_progress_begin(&p, "infer", (uint64_t)(n_lines - first), "rows", KILN_PROGRESS_AUTO);
    p.detail = detail, p.detail_ctx = &r;
    for (int i = first; i < n_lines; i++) {
        pthread_mutex_lock(&r.mu);
        while (!r.rows[i].answer) pthread_cond_wait(&r.done, &r.mu);
        r.tokens += r.rows[i].tokens;
        pthread_mutex_unlock(&r.mu);
        fprintf(f, "%s\n", r.rows[i].answer);
        fflush(f); /* a kill loses at most the line being written, which --resume cuts off */
        free(r.rows[i].answer);
        kiln_progress_update(&p, (uint64_t)(i + 1 - first));
    }
    kiln_progress_end(&p);
    for (int i = 0; i < workers; i++) pthread_join(tids[i], NULL);
    int rc = fclose(f) == 0 ? 0 : cli_error("--out: %s: write failed", out);
    for (int i = 0; i < n_lines; i++) free(r.rows[i].line);
    free(r.rows);
    free(tids);
    kiln_model_close(r.m);
    return rc;
}

KILN_COMMAND("infer", "batch inference over a JSONL file with parallel workers, in input order, resumable", cmd_infer)
