/* kiln infer: batch inference over a JSONL file. Each line is {"id": ..., "prompt": ..., and any
 * field of /v1/completions (docs/SERVING.md)}; each answer is a line {"id", "text", "finish_reason",
 * "prompt_tokens", "completion_tokens"} (or {"id", "error"} for a row that cannot run), written in
 * input order. N workers, each a thread with its own context (KV cache) and T OpenMP threads, share
 * the one memory map of the weights: the seed's "8 GPUs load 8 models" on cores.
 *
 * --resume continues after a kill: the answers already written are kept (a torn last line is cut
 * off) and their rows skipped, so nothing is lost and nothing is done twice.
 *
 * Under mpirun (base/comm.h) the rows still to do are dealt out to the processes by index, the k-th
 * to process k mod N. Each writes its answers to its part file OUT.partR (R its rank), one line
 * "ROW<TAB>ANSWER" each, and once all have finished, process 0 merges the parts (and with --resume the
 * answers OUT already held) into OUT in input order, atomically, and removes them. An answer in OUT or
 * in any part counts as done when its id is its row's, so --resume works after a kill whatever the
 * number of processes before and after; a run without mpirun resumes the same way when parts are
 * left. OUT must be on a file system that all processes share. */
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/comm.h"
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
    "  --resume         keep the answers OUT already holds and do only the rest\n"
    "Under `mpirun -np N kiln infer ...` each process answers every N-th row into OUT.partR, and\n"
    "process 0 merges the parts into OUT (which must be on a file system all processes share).\n";

typedef struct {
    char *line;             /* the input row */
    char *answer;           /* the output line, once done */
    int tokens;
} row;

typedef struct {
    kiln_model *m;
    serve_opts o;
    row *rows;
    int n_rows;
    int *todo, n_todo;      /* the rows this process answers, in input order */
    int next;               /* the first entry of todo that no worker has taken */
    int tagged;             /* writing a part file: each line is "ROW<TAB>ANSWER" */
    long long tokens;
    int threads, workers, batch;
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
        int i = r->next < r->n_todo ? r->todo[r->next++] : -1;
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

/* One line of the output, flushed: a kill loses at most the line being written, which --resume cuts
 * off. A part file's lines begin with the row's index. */
static void write_answer(infer_run *r, FILE *f, int i, const char *a) {
    if (r->tagged) fprintf(f, "%d\t", i);
    fprintf(f, "%s\n", a);
    fflush(f);
}

/* --batch N: the rows go through kiln serve's continuous-batching scheduler, N sequences sharing each
 * forward pass and new rows joining as others finish; at most 4N rows are in flight, and answers are
 * written in input order. */
static int run_batched(infer_run *r, FILE *f, kiln_progress *p) {
    serve_opts o = r->o;
    int batch = r->batch;
    o.slots = batch, o.queue = 4 * batch * 64, o.threads = r->threads;
    serve_sched *s = sched_new(r->m, &o);
    if (!s) return -1;
    batch_row *b = kiln_xcalloc(r->n_todo ? r->n_todo : 1, sizeof *b);
    int submitted = 0;
    for (int k = 0; k < r->n_todo; k++) {
        for (; submitted < r->n_todo && submitted - k < 4 * batch; submitted++)
            batch_submit(r, s, r->todo[submitted], &b[submitted]);
        int n;
        char *a = batch_answer(&b[k], &n);
        r->tokens += n;
        write_answer(r, f, r->todo[k], a);
        free(a);
        if (b[k].job) job_release(b[k].job);
        json_decref(b[k].id);
        kiln_progress_update(p, (uint64_t)(k + 1));
    }
    sched_free(s);
    free(b);
    return 0;
}

/* --workers N: N threads, each answering the next row no other has taken; answers are written in
 * input order as they become ready. */
static void run_workers(infer_run *r, FILE *f, kiln_progress *p) {
    r->next = 0;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->done, NULL);
    pthread_t *tids = kiln_xmalloc(sizeof(pthread_t) * r->workers);
    for (int i = 0; i < r->workers; i++) pthread_create(&tids[i], NULL, worker, r);
    for (int k = 0; k < r->n_todo; k++) {
        row *w = &r->rows[r->todo[k]];
        pthread_mutex_lock(&r->mu);
        while (!w->answer) pthread_cond_wait(&r->done, &r->mu);
        r->tokens += w->tokens;
        pthread_mutex_unlock(&r->mu);
        write_answer(r, f, r->todo[k], w->answer);
        free(w->answer);
        w->answer = NULL;
        kiln_progress_update(p, (uint64_t)(k + 1));
    }
    for (int i = 0; i < r->workers; i++) pthread_join(tids[i], NULL);
    free(tids);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->done);
}

static void detail(void *ctx, char *buf, size_t size) {
    infer_run *r = ctx;
    snprintf(buf, size, "%lld tokens generated", r->tokens);
}

/* Answers the rows of r->todo into F, closing it; the progress bar when SHOW. 0, or -1 with a message. */
static int answer_rows(infer_run *r, FILE *f, const char *path, int show) {
    kiln_progress p;
    kiln_progress_begin(&p, "infer", (uint64_t)r->n_todo, "rows", show ? KILN_PROGRESS_AUTO : KILN_PROGRESS_OFF);
    p.detail = detail, p.detail_ctx = r;
    int rc = 0;
    if (r->batch) rc = run_batched(r, f, &p);
    else run_workers(r, f, &p);
    if (rc < 0) kiln_progress_abort(&p);
    else kiln_progress_end(&p);
    if (fclose(f) != 0 && !rc) rc = kiln_fail("%s: write failed", path);
    return rc;
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

static char *copy_line(const char *p, size_t len) {
    char *s = kiln_xmalloc(len + 1);
    memcpy(s, p, len);
    s[len] = 0;
    return s;
}

/* Whether the answer line A (LEN bytes) is row I's: its id is the row's (I when the row has none). */
static int answers_row(const infer_run *r, int i, const char *a, size_t len) {
    json_t *ans = json_loadb(a, len, 0, NULL), *in = json_loads(r->rows[i].line, 0, NULL);
    json_t *want = json_is_object(in) ? json_object_get(in, "id") : NULL;
    int same = ans && (want ? json_equal(json_object_get(ans, "id"), want)
                            : json_integer_value(json_object_get(ans, "id")) == i);
    json_decref(ans);
    json_decref(in);
    return same;
}

/* The answers at the start of OUT's TEXT that are the first rows' (complete lines, in order, each with
 * its row's id): how many, with *END just after the last. ANSWERS, when given, gets copies. */
static int answered_prefix(const infer_run *r, const char *text, size_t size, size_t *end, char **answers) {
    int done = 0;
    *end = 0;
    for (const char *p = text; p < text + size && done < r->n_rows;) {
        const char *e = memchr(p, '\n', (size_t)(text + size - p));
        if (!e || !answers_row(r, done, p, (size_t)(e - p))) break;
        if (answers) answers[done] = copy_line(p, (size_t)(e - p));
        done++;
        p = e + 1;
        *end = (size_t)(p - text);
    }
    return done;
}
/* The part files next to OUT: OUT.part0, OUT.part1, ..., those of an earlier run included. */
static char **part_paths(const char *out, int *n) {
    const char *slash = strrchr(out, '/');
    char *dir = slash ? copy_line(out, (size_t)(slash - out + 1)) : kiln_xstrdup("./");
    const char *base = slash ? slash + 1 : out;
    size_t nb = strlen(base);
    char **paths = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        const char *digits = e->d_name + nb + 5;
        if (strncmp(e->d_name, base, nb) || strncmp(e->d_name + nb, ".part", 5) || !*digits ||
            strspn(digits, "0123456789") != strlen(digits))
            continue;
        paths = kiln_xrealloc(paths, sizeof(char *) * (*n + 1));
        paths[*n] = kiln_xmalloc(strlen(dir) + strlen(e->d_name) + 1);
        sprintf(paths[(*n)++], "%s%s", slash ? dir : "", e->d_name);
    }
    if (d) closedir(d);
    free(dir);
    return paths;
}

static void free_paths(char **paths, int n) {
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

/* Cuts PATH after its last complete line (what a kill leaves half written). 0, or -1 with a message. */
static int cut_torn_line(const char *path) {
    if (access(path, F_OK) != 0) return 0;
    size_t size;
    char *text = kiln_read_file(path, &size);
    if (!text) return -1;
    while (size && text[size - 1] != '\n') size--;
    free(text);
    return truncate(path, (off_t)size) < 0 ? kiln_fail("%s: cannot cut the torn last line", path) : 0;
}

/* The answers written so far into ANSWERS (row by row, NULL where none): OUT's in-order prefix when
 * FROM_OUT, then the lines of every part file whose id is their row's (complete lines only; the first
 * answer found for a row wins). Returns how many rows have one, or -1 with a message. */
static int load_answers(const infer_run *r, const char *out, int from_out, char **answers) {
    int found = 0, n_parts;
    size_t size, end;
    if (from_out && access(out, F_OK) == 0) {
        char *text = kiln_read_file(out, &size);
        if (!text) return -1;
        found = answered_prefix(r, text, size, &end, answers);
        free(text);
    }
    char **parts = part_paths(out, &n_parts);
    for (int k = 0; k < n_parts; k++) {
        char *text = kiln_read_file(parts[k], &size);
        if (!text) return free_paths(parts, n_parts), -1;
        for (char *p = text, *e; p < text + size && (e = memchr(p, '\n', (size_t)(text + size - p))); p = e + 1) {
            char *tab;
            long i = strtol(p, &tab, 10);
            if (tab == p || *tab != '\t' || i < 0 || i >= r->n_rows || answers[i]) continue;
            if (!answers_row(r, (int)i, tab + 1, (size_t)(e - tab - 1))) continue;
            answers[i] = copy_line(tab + 1, (size_t)(e - tab - 1));
            found++;
        }
        free(text);
    }
    free_paths(parts, n_parts);
    return found;
}

/* Under mpirun, whether any process failed (every process calls it at the same points, and waits there
 * for the others); alone, FAILED. A process that did not fail itself gets a message saying so. */
static int any_failed(int failed) {
    double n = failed != 0;
    comm_sum_f64(&n, 1);
    if (n > 0 && !failed) kiln_fail("stopped: another process of the mpirun failed (see its message)");
    return n > 0;
}

/* Process 0, once every part is complete: OUT from all the answers in input order, atomically; then
 * the parts are removed. */
static int merge_parts(const infer_run *r, const char *out, int resume) {
    char **answers = kiln_xcalloc(r->n_rows ? r->n_rows : 1, sizeof(char *));
    int rc = load_answers(r, out, resume, answers) < 0 ? -1 : 0;
    for (int i = 0; i < r->n_rows && !rc; i++)
        if (!answers[i]) rc = kiln_fail("%s: row %d has no answer in any part file", out, i + 1);
    kiln_atomic a;
    if (!rc && (rc = kiln_atomic_open(&a, out)) == 0) {
        for (int i = 0; i < r->n_rows; i++) fprintf(a.f, "%s\n", answers[i]);
        rc = kiln_atomic_commit(&a);
    }
    for (int i = 0; i < r->n_rows; i++) free(answers[i]);
    free(answers);
    if (rc) return -1;
    int n_parts;
    char **parts = part_paths(out, &n_parts);
    for (int k = 0; k < n_parts; k++) unlink(parts[k]);
    free_paths(parts, n_parts);
    return 0;
}

/* Every process of the run (one without mpirun) answers its share of the rows into its part file, and
 * process 0 merges them (see the top of the file). FAILED: this process failed before; all processes
 * pass the same points. 0, or -1 with a message. */
static int run_sharded(infer_run *r, const char *out, int resume, int failed) {
    int rank = comm_rank(), size = comm_size();
    if (any_failed(failed)) return -1;
    char *part = kiln_xmalloc(strlen(out) + 32);
    sprintf(part, "%s.part%d", out, rank);
    /* nobody writes before every process has seen the same answers, so they deal out the same rows */
    if (resume) {
        failed = cut_torn_line(part) < 0;
    } else if (rank == 0) {
        int n_parts;
        char **parts = part_paths(out, &n_parts);
        for (int k = 0; k < n_parts; k++) unlink(parts[k]);
        free_paths(parts, n_parts);
    }
    if (any_failed(failed)) return free(part), -1;
    char **answers = kiln_xcalloc(r->n_rows ? r->n_rows : 1, sizeof(char *));
    int done = resume ? load_answers(r, out, 1, answers) : 0;
    if (any_failed(done < 0)) return free(answers), free(part), -1;
    r->todo = kiln_xmalloc(sizeof(int) * (r->n_rows ? r->n_rows : 1));
    for (int i = 0, k = 0; i < r->n_rows; i++) {
        if (!answers[i] && k++ % size == rank) r->todo[r->n_todo++] = i;
        free(answers[i]);
    }
    free(answers);
    if (rank == 0 && done) fprintf(stderr, "kiln infer: %d rows already answered, resuming\n", done);
    r->tagged = 1;
    FILE *f = fopen(part, resume ? "a" : "w");
    failed = !f ? kiln_fail("%s: cannot write", part) : answer_rows(r, f, part, rank == 0);
    free(part);
    if (any_failed(failed)) return -1;
    return rank == 0 ? merge_parts(r, out, resume) : 0;
}

/* One process without parts to merge: answers appended to OUT in input order as they come. */
static int run_single(infer_run *r, const char *out, int resume) {
    int first = 0;
    if (resume && access(out, F_OK) == 0) {
        size_t size, end;
        char *text = kiln_read_file(out, &size);
        if (!text) return -1;
        first = answered_prefix(r, text, size, &end, NULL);
        free(text);
        if (truncate(out, (off_t)end) < 0) return kiln_fail("%s: cannot cut the torn last line", out);
    }
    FILE *f = fopen(out, resume ? "a" : "w");
    if (!f) return kiln_fail("%s: cannot write", out);
    if (first) fprintf(stderr, "kiln infer: %d rows already in %s, resuming\n", first, out);
    r->todo = kiln_xmalloc(sizeof(int) * (r->n_rows ? r->n_rows : 1));
    for (int i = first; i < r->n_rows; i++) r->todo[r->n_todo++] = i;
    return answer_rows(r, f, out, 1);
}

static int infer(infer_run *r, const char *model, const char *in, const char *out, int resume) {
    int n_lines = 0, failed = 0;
    char **lines = read_lines(in, &n_lines);
    if (!lines) failed = kiln_fail("--in: %s", kiln_last_error());
    else if (!(r->m = kiln_model_open(model))) failed = -1;
    r->rows = kiln_xcalloc(n_lines ? n_lines : 1, sizeof(row));
    for (int i = 0; i < n_lines; i++) r->rows[i].line = lines[i];
    free(lines);
    r->n_rows = n_lines;
    int n_parts;
    char **parts = part_paths(out, &n_parts);
    free_paths(parts, n_parts);
    int rc = comm_size() > 1 || (resume && n_parts) ? run_sharded(r, out, resume, failed)
             : failed                                ? -1
                                                     : run_single(r, out, resume);
    for (int i = 0; i < n_lines; i++) free(r->rows[i].line);
    free(r->rows);
    free(r->todo);
    kiln_model_close(r->m);
    return rc;
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
    if (comm_init() < 0) return cli_error("infer: %s", kiln_last_error());
    infer_run r = {0};
    r.o = (serve_opts){.model_id = "", .slots = 64, .max_tokens = (int)max_tokens, .timeout = 1e9};
    r.workers = (int)workers, r.batch = (int)batch;
    /* the cores are shared by the workers, and under mpirun by the processes on this machine */
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    long cores = sysconf(_SC_NPROCESSORS_ONLN), share = (batch ? 1 : workers) * (local ? atoi(local) : 1);
    r.threads = threads ? (int)threads : (int)(cores / share > 0 ? cores / share : 1);
    int rc = infer(&r, model, in, out, resume);
    comm_finalize();
    return rc < 0 ? cli_error("%s", kiln_last_error()) : 0;
}

KILN_COMMAND("infer", "batch inference over a JSONL file with parallel workers, in input order, resumable; "
             "sharded under mpirun", cmd_infer)
