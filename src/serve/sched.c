/* The continuous-batching scheduler: one thread owns the model and SLOTS contexts. Each step admits
 * waiting sequences into free slots, picks the next token of every running sequence with its own
 * processor chain, and evaluates all the new tokens in one batched forward pass. A sequence joins at the
 * next step after it arrives and leaves as soon as it stops, so short and long requests share the
 * weights' memory traffic without waiting for each other. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/batch.h"
#include "base/error.h"
#include "base/file.h"
#include "base/rng.h"
#include "decode/processor.h"
#include "decode/sample.h"
#include "decode/text.h"
#include "serve/serve.h"

typedef struct {
    serve_job *job;
    int index;              /* the choice it fills */
    int32_t *toks;          /* prompt then generated tokens */
    int n_toks;
    decode_chain ch;
    decode_text text;
    size_t text_off;        /* bytes of text before the next token (logprobs' text_offset) */
} serve_seq;

typedef struct {
    kiln_ctx *c;
    int32_t *cached;        /* the tokens whose keys and values the cache holds (kiln_ctx_pos of them) */
    serve_seq *seq;         /* NULL when free */
} serve_slot;

struct serve_sched {
    kiln_model *m;
    const serve_opts *o;
    int n_vocab, n_ctx;
    serve_slot *slots;
    kiln_batch *batch;
    float *raw;             /* a copy of the logits before processing, for logprobs */
    serve_seq **queue;      /* waiting sequences, oldest first */
    int n_queue, queue_cap;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    /* counters (under mu) */
    long long n_seqs, n_prompt_tokens, n_reused_tokens, n_gen_tokens, n_steps, n_batched;
    int max_batched;        /* the most sequences one step has run */
    int n_active;
};

int sched_slots(const serve_sched *s) { return s->o->slots; }

void job_push_event(serve_job *j, const char *json) {
    size_t n = strlen(json) + 8;
    if (j->sse_len + n + 1 > j->sse_cap) {
        j->sse_cap = (j->sse_len + n + 1) * 2;
        j->sse = kiln_xrealloc(j->sse, j->sse_cap);
    }
    j->sse_len += (size_t)snprintf(j->sse + j->sse_len, j->sse_cap - j->sse_len, "data: %s\n\n", json);
    pthread_cond_broadcast(&j->cv);
}

void job_release(serve_job *j) {
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    for (int i = 0; i < j->n; i++) {
        free(j->choices[i].text);
        json_decref(j->choices[i].logprobs);
    }
    for (int i = 0; i < j->p.n_stop_strings; i++) free(j->stop[i]);
    free(j->stop);
    free(j->bias);
    free(j->samplers);
    free(j->choices);
    free(j->prompt);
    free(j->echo);
    free(j->error);
    free(j->sse);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

/* One streamed chunk of choice INDEX: TEXT (LEN bytes) and/or a FINISH reason. */
static void push_chunk(serve_job *j, int index, const char *text, size_t len, const char *finish) {
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(index));
    if (j->chat) {
        json_t *delta = json_object();
        if (text) json_object_set_new(delta, "content", json_stringn(text, len));
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", json_stringn(text ? text : "", text ? len : 0));
        json_object_set_new(choice, "logprobs", json_null());
    }
    json_object_set_new(choice, "finish_reason", finish ? json_string(finish) : json_null());
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", j->id, "object",
                          j->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)j->created,
                          "model", j->model_id, "choices", choice);
    char *s = json_dumps(o, JSON_COMPACT);
    job_push_event(j, s);
    free(s);
    json_decref(o);
}

static int stream_text(void *user, const char *text, size_t len) {
    serve_seq *q = user;
    pthread_mutex_lock(&q->job->mu);
    if (len) push_chunk(q->job, q->index, text, len, NULL);
    pthread_mutex_unlock(&q->job->mu);
    return 0;
}

/* Appends the end of the stream once every choice is done: the usage chunk when asked for, and [DONE]. */
static void finish_stream(serve_job *j) {
    if (j->include_usage) {
        int gen = 0;
        for (int i = 0; i < j->n; i++) gen += j->choices[i].n_tokens;
        json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[], s:{s:i, s:i, s:i}}", "id", j->id, "object",
                              j->chat ? "chat.completion.chunk" : "text_completion", "created",
                              (json_int_t)j->created, "model", j->model_id, "choices", "usage", "prompt_tokens",
                              j->n_prompt, "completion_tokens", gen, "total_tokens", j->n_prompt + gen);
        char *s = json_dumps(o, JSON_COMPACT);
        job_push_event(j, s);
        free(s);
        json_decref(o);
    }
    size_t n = strlen("data: [DONE]\n\n");
    if (j->sse_len + n + 1 > j->sse_cap) {
        j->sse_cap = j->sse_len + n + 1;
        j->sse = kiln_xrealloc(j->sse, j->sse_cap);
    }
    memcpy(j->sse + j->sse_len, "data: [DONE]\n\n", n + 1);
    j->sse_len += n;
}

/* Records choice INDEX as finished (under the job's lock) and wakes whoever waits on the job. */
static void finish_choice(serve_job *j, int index, const char *text, size_t len, int n_tokens, const char *why) {
    pthread_mutex_lock(&j->mu);
    serve_choice *ch = &j->choices[index];
    ch->text = kiln_xmalloc(len + 1);
    memcpy(ch->text, text, len);
    ch->text[len] = 0;
    ch->len = len;
    ch->n_tokens = n_tokens;
    ch->finish = why;
    if (j->stream) push_chunk(j, index, NULL, 0, why);
    if (++j->n_done == j->n && j->stream) finish_stream(j);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void seq_free(serve_seq *q) {
    decode_chain_free(&q->ch);
    text_free(&q->text);
    free(q->toks);
    job_release(q->job);
    free(q);
}

static void seq_finish(serve_sched *s, serve_slot *sl, const char *why) {
    serve_seq *q = sl->seq;
    text_finish(&q->text);
    finish_choice(q->job, q->index, q->text.buf, text_length(&q->text), q->n_toks - q->job->n_prompt, why);
    int pos = kiln_ctx_pos(sl->c);
    memcpy(sl->cached, q->toks, sizeof(int32_t) * pos);
    sl->seq = NULL;
    seq_free(q);
    pthread_mutex_lock(&s->mu);
    s->n_active--;
    pthread_mutex_unlock(&s->mu);
}

/* Beam searches keep several hypotheses per sequence, so they run whole, through kiln_generate, in the
 * slot they were given; each returned hypothesis fills one choice. */
static void run_beams(serve_sched *s, serve_slot *sl, serve_seq *q) {
    serve_job *j = q->job;
    kiln_ctx_truncate(sl->c, 0);
    kiln_gen_params p = j->p;
    p.num_return = j->n;
    kiln_gen_result r;
    if (kiln_generate(sl->c, j->prompt, j->n_prompt, &p, &r) < 0) {
        pthread_mutex_lock(&j->mu);
        if (!j->error) j->error = kiln_xstrdup(kiln_last_error());
        pthread_mutex_unlock(&j->mu);
        for (int i = 0; i < j->n; i++) finish_choice(j, i, "", 0, 0, "error");
    } else {
        for (int i = 0; i < j->n; i++) {
            kiln_gen_sequence *g = &r.seqs[i < r.n_seqs ? i : r.n_seqs - 1];
            finish_choice(j, i, g->text, g->text_len, g->n_tokens, g->stop == KILN_STOP_LENGTH ? "length" : "stop");
        }
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < r.n_seqs; i++) s->n_gen_tokens += r.seqs[i].n_tokens;
        pthread_mutex_unlock(&s->mu);
        kiln_gen_result_free(&r);
    }
    pthread_mutex_lock(&s->mu);
    s->n_active--;
    pthread_mutex_unlock(&s->mu);
    sl->seq = NULL;
    seq_free(q);
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = 0;
    while (n < na && n < nb && a[n] == b[n]) n++;
    return n;
}

/* Puts Q into the free slot whose cache shares the longest prefix with its prompt and evaluates the rest
 * of the prompt there. The last prompt token is always evaluated again: its logits start decoding. */
static void admit(serve_sched *s, serve_seq *q) {
    serve_job *j = q->job;
    serve_slot *best = NULL;
    int best_len = -1;
    for (int i = 0; i < s->o->slots; i++) {
        serve_slot *sl = &s->slots[i];
        if (sl->seq) continue;
        int l = common_prefix(sl->cached, kiln_ctx_pos(sl->c), j->prompt, j->n_prompt - 1);
        if (l > best_len) best = sl, best_len = l;
    }
    best->seq = q;
    if (j->p.search == KILN_SEARCH_BEAM || j->p.search == KILN_SEARCH_STOCHASTIC_BEAM) {
        run_beams(s, best, q);
        return;
    }
    kiln_ctx_truncate(best->c, best_len);
    pthread_mutex_lock(&s->mu);
    s->n_reused_tokens += best_len;
    s->n_prompt_tokens += j->n_prompt;
    pthread_mutex_unlock(&s->mu);
    if (kiln_eval(best->c, j->prompt + best_len, j->n_prompt - best_len, NULL) < 0) {
        pthread_mutex_lock(&j->mu);
        if (!j->error) j->error = kiln_xstrdup(kiln_last_error());
        pthread_mutex_unlock(&j->mu);
        kiln_ctx_truncate(best->c, 0);
        seq_finish(s, best, "error");
        return;
    }
    memcpy(best->cached, j->prompt, sizeof(int32_t) * j->n_prompt);
}

static void add_logprob(serve_sched *s, serve_seq *q, int32_t t, const char *piece, size_t len) {
    serve_job *j = q->job;
    const float *x = s->raw;
    float mx = -INFINITY;
    for (int i = 0; i < s->n_vocab; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < s->n_vocab; i++) sum += exp((double)x[i] - mx);
    double lse = mx + log(sum);
    json_t *top = json_array();
    int32_t ids[20];
    int k = decode_top(x, NULL, s->n_vocab, j->top_logprobs, ids);
    for (int i = 1; i < k; i++) /* most probable first */
        for (int a = i; a > 0 && x[ids[a]] > x[ids[a - 1]]; a--) {
            int32_t tmp = ids[a];
            ids[a] = ids[a - 1], ids[a - 1] = tmp;
        }
    for (int i = 0; i < k; i++) {
        size_t n;
        const char *tx = kiln_token_text(s->m, q->toks[q->n_toks - 1], ids[i], &n);
        json_array_append_new(top, json_pack("{s:s%, s:f}", "token", tx, n, "logprob", x[ids[i]] - lse));
    }
    json_t *e = json_pack("{s:s%, s:f, s:o, s:I}", "token", piece, len, "logprob", x[t] - lse, "top_logprobs", top,
                          "text_offset", (json_int_t)q->text_off);
    pthread_mutex_lock(&j->mu);
    serve_choice *c = &j->choices[q->index];
    if (!c->logprobs) c->logprobs = json_array();
    json_array_append_new(c->logprobs, e);
    pthread_mutex_unlock(&j->mu);
}

/* Picks SL's next token. Returns it when the sequence goes on, or -1 when it finished (and left SL). */
static int32_t step_seq(serve_sched *s, serve_slot *sl) {
    serve_seq *q = sl->seq;
    serve_job *j = q->job;
    pthread_mutex_lock(&j->mu);
    int cancelled = j->cancelled;
    pthread_mutex_unlock(&j->mu);
    if (cancelled) return seq_finish(s, sl, "cancelled"), -1;
    float *logits = kiln_logits(sl->c);
    if (j->top_logprobs >= 0) memcpy(s->raw, logits, sizeof(float) * s->n_vocab);
    decode_history h = {q->toks, q->n_toks, j->n_prompt, j->stop_tokens,
                        j->stop_tokens[0] >= 0 ? (j->stop_tokens[1] >= 0 ? 2 : 1) : 0};
    decode_cands c;
    decode_chain_apply(&q->ch, &h, logits, &c);
    int greedy = j->p.search == KILN_SEARCH_GREEDY;
    double lp, u = (double)(kiln_hash3(j->p.seed, (uint64_t)q->index, (uint64_t)(q->n_toks - j->n_prompt)) >> 11) *
                   (1.0 / 9007199254740992.0);
    int t = greedy ? cands_argmax(&c) : decode_draw(&c, u, &lp);
    if (t < 0) return seq_finish(s, sl, "stop"), -1;
    for (int i = 0; i < 2; i++)
        if (t == j->stop_tokens[i]) return seq_finish(s, sl, "stop"), -1;
    size_t len;
    const char *piece = kiln_token_text(s->m, q->toks[q->n_toks - 1], t, &len);
    if (j->top_logprobs >= 0) add_logprob(s, q, t, piece, len);
    q->text_off += len;
    q->toks[q->n_toks++] = t;
    pthread_mutex_lock(&s->mu);
    s->n_gen_tokens++;
    pthread_mutex_unlock(&s->mu);
    if (text_append(&q->text, piece, len)) return seq_finish(s, sl, "stop"), -1;
    if (q->n_toks - j->n_prompt >= j->p.max_new_tokens || kiln_ctx_pos(sl->c) >= s->n_ctx ||
        kiln_now() > j->deadline)
        return seq_finish(s, sl, "length"), -1;
    return t;
}

static void *sched_loop(void *arg) {
    serve_sched *s = arg;
    int S = s->o->slots;
    if (s->o->threads) kiln_set_threads(s->o->threads); /* OpenMP's thread count is per calling thread */
    kiln_ctx **cs = kiln_xmalloc(sizeof(kiln_ctx *) * S);
    int32_t *next = kiln_xmalloc(sizeof(int32_t) * S);
    serve_slot **run = kiln_xmalloc(sizeof(serve_slot *) * S);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && !s->n_queue && !s->n_active) pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        int admitted = 0;
        serve_seq *admit_now[64];
        while (s->n_queue && s->n_active < S && admitted < 64) {
            admit_now[admitted++] = s->queue[0];
            memmove(s->queue, s->queue + 1, sizeof(serve_seq *) * --s->n_queue);
            s->n_active++;
        }
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < admitted; i++) admit(s, admit_now[i]);
        int n = 0;
        for (int i = 0; i < S; i++) {
            serve_slot *sl = &s->slots[i];
            if (!sl->seq) continue;
            int32_t t = step_seq(s, sl);
            if (t < 0) continue;
            run[n] = sl, cs[n] = sl->c, next[n++] = t;
        }
        if (!n) continue;
        if (kiln_batch_eval(s->batch, cs, next, n) < 0) {
            for (int i = 0; i < n; i++) seq_finish(s, run[i], "length");
            continue;
        }
        for (int i = 0; i < n; i++) memcpy(run[i]->cached, run[i]->seq->toks, sizeof(int32_t) * kiln_ctx_pos(cs[i]));
        pthread_mutex_lock(&s->mu);
        s->n_steps++;
        s->n_batched += n;
        if (n > s->max_batched) s->max_batched = n;
        pthread_mutex_unlock(&s->mu);
    }
    free(cs);
    free(next);
    free(run);
    return NULL;
}

serve_sched *sched_new(kiln_model *m, const serve_opts *o) {
    serve_sched *s = kiln_xcalloc(1, sizeof *s);
    s->m = m;
    s->o = o;
    s->n_vocab = kiln_model_config(m)->n_vocab;
    s->slots = kiln_xcalloc(o->slots, sizeof *s->slots);
    for (int i = 0; i < o->slots; i++) {
        s->slots[i].c = kiln_ctx_new(m, o->n_ctx);
        if (!s->slots[i].c) {
            for (int k = 0; k < i; k++) kiln_ctx_free(s->slots[k].c), free(s->slots[k].cached);
            free(s->slots);
            free(s);
            return NULL;
        }
        s->n_ctx = kiln_ctx_size(s->slots[i].c);
        s->slots[i].cached = kiln_xmalloc(sizeof(int32_t) * s->n_ctx);
    }
    s->batch = kiln_batch_new(m, o->slots);
    s->raw = kiln_xmalloc(sizeof(float) * s->n_vocab);
    s->queue_cap = o->queue;
    s->queue = kiln_xmalloc(sizeof(serve_seq *) * (s->queue_cap + 1));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_create(&s->thread, NULL, sched_loop, s);
    return s;
}

void sched_free(serve_sched *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    for (int i = 0; i < s->o->slots; i++) {
        if (s->slots[i].seq) seq_finish(s, &s->slots[i], "cancelled");
        kiln_ctx_free(s->slots[i].c);
        free(s->slots[i].cached);
    }
    for (int i = 0; i < s->n_queue; i++) seq_free(s->queue[i]);
    kiln_batch_free(s->batch);
    free(s->raw);
    free(s->queue);
    free(s->slots);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int sched_submit(serve_sched *s, serve_job *j) {
    int beams = j->p.search == KILN_SEARCH_BEAM || j->p.search == KILN_SEARCH_STOCHASTIC_BEAM;
    int n_seqs = beams ? 1 : j->n;
    pthread_mutex_lock(&s->mu);
    if (s->n_queue + n_seqs > s->queue_cap) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    for (int i = 0; i < n_seqs; i++) {
        serve_seq *q = kiln_xcalloc(1, sizeof *q);
        q->job = j;
        q->index = i;
        q->toks = kiln_xmalloc(sizeof(int32_t) * (j->n_prompt + j->p.max_new_tokens + 1));
        memcpy(q->toks, j->prompt, sizeof(int32_t) * j->n_prompt);
        q->n_toks = j->n_prompt;
        if (!beams) decode_chain_init(&q->ch, &j->p, s->n_vocab, j->p.search != KILN_SEARCH_GREEDY);
        text_init(&q->text, (const char *const *)j->stop, j->p.n_stop_strings, j->stream ? stream_text : NULL, q);
        pthread_mutex_lock(&j->mu);
        j->refs++;
        pthread_mutex_unlock(&j->mu);
        s->queue[s->n_queue++] = q;
        s->n_seqs++;
    }
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

char *sched_metrics(serve_sched *s) {
    pthread_mutex_lock(&s->mu);
    char *out;
    int n = asprintf(&out,
                     "# HELP kiln_sequences_total Sequences (choices) submitted.\n# TYPE kiln_sequences_total counter\n"
                     "kiln_sequences_total %lld\n"
                     "# HELP kiln_prompt_tokens_total Prompt tokens of admitted sequences.\n"
                     "# TYPE kiln_prompt_tokens_total counter\nkiln_prompt_tokens_total %lld\n"
                     "# HELP kiln_prompt_tokens_reused_total Prompt tokens found in a slot's cache.\n"
                     "# TYPE kiln_prompt_tokens_reused_total counter\nkiln_prompt_tokens_reused_total %lld\n"
                     "# HELP kiln_generated_tokens_total Tokens generated.\n"
                     "# TYPE kiln_generated_tokens_total counter\nkiln_generated_tokens_total %lld\n"
                     "# HELP kiln_batch_steps_total Batched forward passes.\n"
                     "# TYPE kiln_batch_steps_total counter\nkiln_batch_steps_total %lld\n"
                     "# HELP kiln_batch_rows_total Sequences summed over batched forward passes.\n"
                     "# TYPE kiln_batch_rows_total counter\nkiln_batch_rows_total %lld\n"
                     "# HELP kiln_batch_rows_max The most sequences one batched forward pass has run.\n"
                     "# TYPE kiln_batch_rows_max gauge\nkiln_batch_rows_max %d\n"
                     "# HELP kiln_queue_depth Sequences waiting for a slot.\n# TYPE kiln_queue_depth gauge\n"
                     "kiln_queue_depth %d\n"
                     "# HELP kiln_active_sequences Sequences in the running batch.\n"
                     "# TYPE kiln_active_sequences gauge\nkiln_active_sequences %d\n",
                     s->n_seqs, s->n_prompt_tokens, s->n_reused_tokens, s->n_gen_tokens, s->n_steps, s->n_batched,
                     s->max_batched, s->n_queue, s->n_active);
    pthread_mutex_unlock(&s->mu);
    return n < 0 ? kiln_xstrdup("") : out;
}
