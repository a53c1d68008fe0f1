/* kiln serve: an OpenAI-compatible HTTP server with continuous batching (docs/SERVING.md).
 *
 * http.c parses requests (request.c) into jobs and answers them; the scheduler (sched.c) owns the model
 * and a fixed set of slots, each a context with its KV cache. Every step it admits waiting sequences
 * into free slots (prefilling only what the slot's cache does not already hold), picks the next token of
 * every running sequence, and evaluates all of them in one batched forward pass (api/batch.h). The
 * scheduler never waits on a client: output goes into the job's buffers, which HTTP threads drain. */
#ifndef KILN_SERVE_SERVE_H
#define KILN_SERVE_SERVE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kiln.h"

typedef struct {
    const char *model_path;
    const char *model_id;   /* the name /v1/models lists and requests may give (default: the file name) */
    const char *host;
    int port;               /* 0: any free port */
    const char *port_file;  /* when set, the bound port is written there once the server listens */
    const char *api_key;    /* when set, requests need "Authorization: Bearer KEY" */
    int slots;              /* sequences decoded together */
    int queue;              /* sequences that may wait for a slot; beyond that: 429 */
    int n_ctx;              /* context of each slot (0: the model's) */
    int max_tokens;         /* the most new tokens a request may ask for */
    size_t max_body;        /* bytes */
    double timeout;         /* seconds a request may take before it is cut short */
    int threads;
} serve_opts;

/* Runs the server until SIGINT or SIGTERM. Returns 0, or -1 with a message. */
int serve_main(const serve_opts *o);

/* ---- Jobs: one request, with N sequences (choices) ---- */
typedef struct {
    char *text;             /* final text (non-streaming) */
    size_t len;
    const char *finish;     /* "stop", "length", or NULL while running */
    int n_tokens;
    json_t *logprobs;       /* per-token entries when logprobs were asked for, else NULL */
} serve_choice;

typedef struct serve_job {
    /* the request, fixed once queued */
    int chat;               /* chat.completion rather than text_completion */
    int stream, include_usage;
    int n;
    int32_t *prompt;
    int n_prompt;
    char *echo;             /* the prompt's text when "echo" is set */
    kiln_gen_params p;
    int32_t stop_tokens[2];
    char **stop;
    kiln_logit_bias *bias;
    char *samplers;
    int top_logprobs;       /* -1: no logprobs */
    double deadline;        /* kiln_now() after which the sequences stop */
    char id[48];
    long created;
    const char *model_id;
    /* the answer, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    serve_choice *choices;
    int n_done;
    char *error;            /* a failure during decoding */
    char *sse;              /* streaming: events not yet sent */
    size_t sse_len, sse_cap, sse_sent;
    int cancelled;          /* the client went away */
    int refs;
} serve_job;

void job_release(serve_job *j);
/* Appends "data: JSON\n\n" to the job's stream (under mu). */
void job_push_event(serve_job *j, const char *json);

/* ---- The scheduler ---- */
typedef struct serve_sched serve_sched;

serve_sched *sched_new(kiln_model *m, const serve_opts *o);
void sched_free(serve_sched *s);
/* Queues J's sequences; -1 when the queue is full (the caller answers 429). */
int sched_submit(serve_sched *s, serve_job *j);
/* Prometheus text of the scheduler's counters (malloc'd). */
char *sched_metrics(serve_sched *s);
int sched_slots(const serve_sched *s);

/* ---- Requests (request.c) ---- */
/* Fills J from a completions (CHAT 0) or chat completions (CHAT 1) request body. On a bad request
 * returns -1 with *PARAM naming the field at fault (or NULL) and the message in kiln_last_error(). */
int request_parse(serve_job *j, const kiln_model *m, const serve_opts *o, int chat, const char *body, size_t len,
                  const char **param);
/* The prompt text for chat MESSAGES (a JSON array) under the model's chat template (chat.c). */
char *chat_render(const kiln_model *m, const void *messages);

#endif
