/* The HTTP side of kiln serve, on libmicrohttpd with a thread per connection: a request thread reads
 * and checks the body, queues a job with the scheduler, and then either waits for the whole answer or
 * streams Server-Sent Events as the scheduler produces them. Waiting happens on the job, never in the
 * scheduler, so a slow or vanished client only holds its own thread. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "base/error.h"
#include "base/file.h"
#include "serve/serve.h"

typedef struct {
    kiln_model *m;
    const serve_opts *o;
    serve_sched *sched;
    pthread_mutex_t mu;
    long long n_requests, n_errors, n_active;
    double latency_sum;
    long long latency_count;
    unsigned long long next_id;
} server;

typedef struct {
    char *body;
    size_t len, cap;
    int too_big;
} conn;

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { stop_flag = sig; }

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned code, const char *type, const char *text) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned code, json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    enum MHD_Result rc = send_text(c, code, "application/json", s);
    free(s);
    return rc;
}

/* OpenAI's error body: {"error": {"message", "type", "param", "code"}}. */
static enum MHD_Result send_error(server *sv, struct MHD_Connection *c, unsigned code, const char *type,
                                  const char *param, const char *message) {
    pthread_mutex_lock(&sv->mu);
    sv->n_errors++;
    pthread_mutex_unlock(&sv->mu);
    json_t *e = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", message, "type", type, "param",
                          param ? json_string(param) : json_null(), "code",
                          code == 404 && param ? json_string("model_not_found") : json_null());
    return send_json(c, code, e);
}

static json_t *usage_of(const serve_job *j) {
    int gen = 0;
    for (int i = 0; i < j->n; i++) gen += j->choices[i].n_tokens;
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", j->n_prompt, "completion_tokens", gen, "total_tokens",
                     j->n_prompt + gen);
}

/* Completions' logprobs object from the per-token entries. */
static json_t *completion_logprobs(json_t *entries, size_t echo_len) {
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offsets = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        json_array_append(tokens, json_object_get(e, "token"));
        json_array_append(lps, json_object_get(e, "logprob"));
        json_t *top = json_object();
        size_t k;
        json_t *t;
        json_array_foreach(json_object_get(e, "top_logprobs"), k, t)
            json_object_set(top, json_string_value(json_object_get(t, "token")), json_object_get(t, "logprob"));
        json_array_append_new(tops, top);
        json_array_append_new(offsets,
                              json_integer(json_integer_value(json_object_get(e, "text_offset")) + (json_int_t)echo_len));
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offsets);
}

/* Chat's logprobs object: {"content": [{token, logprob, top_logprobs}]}. */
static json_t *chat_logprobs(json_t *entries) {
    json_t *content = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        json_t *x = json_deep_copy(e);
        json_object_del(x, "text_offset");
        json_array_append_new(content, x);
    }
    return json_pack("{s:o}", "content", content);
}

static json_t *answer_of(const serve_job *j) {
    json_t *choices = json_array();
    for (int i = 0; i < j->n; i++) {
        const serve_choice *ch = &j->choices[i];
        json_t *c = json_pack("{s:i, s:s}", "index", i, "finish_reason", ch->finish ? ch->finish : "stop");
        if (j->chat) {
            json_object_set_new(c, "message",
                                json_pack("{s:s, s:s%}", "role", "assistant", "content", ch->text, ch->len));
            json_object_set_new(c, "logprobs", ch->logprobs ? chat_logprobs(ch->logprobs) : json_null());
        } else {
            size_t elen = j->echo ? strlen(j->echo) : 0;
            char *text = kiln_xmalloc(elen + ch->len + 1);
            if (elen) memcpy(text, j->echo, elen);
            memcpy(text + elen, ch->text, ch->len + 1);
            json_object_set_new(c, "text", json_stringn(text, elen + ch->len));
            free(text);
            json_object_set_new(c, "logprobs", ch->logprobs ? completion_logprobs(ch->logprobs, elen) : json_null());
        }
        json_array_append_new(choices, c);
    }
    return json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", j->id, "object",
                     j->chat ? "chat.completion" : "text_completion", "created", (json_int_t)j->created, "model",
                     j->model_id, "choices", choices, "usage", usage_of(j));
}

/* The streaming body: whatever events are ready, waiting (bounded) for more; ends after [DONE]. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    serve_job *j = cls;
    pthread_mutex_lock(&j->mu);
    while (j->sse_sent == j->sse_len && j->n_done < j->n && !j->cancelled) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (kiln_now() > j->deadline + 5) j->cancelled = 1;
    }
    ssize_t n;
    if (j->sse_sent < j->sse_len) {
        n = (ssize_t)(j->sse_len - j->sse_sent < max ? j->sse_len - j->sse_sent : max);
        memcpy(buf, j->sse + j->sse_sent, (size_t)n);
        j->sse_sent += (size_t)n;
    } else {
        n = j->cancelled && j->n_done < j->n ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

/* Called when the stream ends, finished or not: a client that went away cancels what is left. */
static void stream_done(void *cls) {
    serve_job *j = cls;
    pthread_mutex_lock(&j->mu);
    j->cancelled = 1;
    pthread_mutex_unlock(&j->mu);
    job_release(j);
}

static void push_role_chunks(serve_job *j) {
    for (int i = 0; i < j->n; i++) {
        json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:{s:s, s:s}, s:n}]}", "id", j->id, "object",
                              "chat.completion.chunk", "created", (json_int_t)j->created, "model", j->model_id,
                              "choices", "index", i, "delta", "role", "assistant", "content", "", "finish_reason");
        char *s = json_dumps(o, JSON_COMPACT);
        job_push_event(j, s);
        free(s);
        json_decref(o);
    }
}

static enum MHD_Result handle_generation(server *sv, struct MHD_Connection *c, int chat, const char *body,
                                         size_t len) {
    double t0 = kiln_now();
    serve_job *j = kiln_xcalloc(1, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    const char *param;
    if (request_parse(j, sv->m, sv->o, chat, body, len, &param) < 0) {
        int not_found = param && !strcmp(param, "model") && strstr(kiln_last_error(), "does not exist");
        char *msg = kiln_xstrdup(kiln_last_error());
        j->n = 0;
        job_release(j);
        enum MHD_Result rc = send_error(sv, c, not_found ? 404 : 400, "invalid_request_error", param, msg);
        free(msg);
        return rc;
    }
    j->choices = kiln_xcalloc(j->n, sizeof *j->choices);
    j->model_id = sv->o->model_id;
    j->created = (long)time(NULL);
    pthread_mutex_lock(&sv->mu);
    snprintf(j->id, sizeof j->id, "%s-%llu", chat ? "chatcmpl" : "cmpl", ++sv->next_id);
    pthread_mutex_unlock(&sv->mu);
    if (j->stream && chat) push_role_chunks(j);
    if (sched_submit(sv->sched, j) < 0) {
        job_release(j);
        return send_error(sv, c, 429, "rate_limit_error", NULL, "the server is busy: too many requests are waiting");
    }
    if (j->stream) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, j, stream_done);
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result rc = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return rc;
    }
    pthread_mutex_lock(&j->mu);
    while (j->n_done < j->n) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
    enum MHD_Result rc;
    if (j->error) {
        rc = send_error(sv, c, 500, "server_error", NULL, j->error);
    } else {
        rc = send_json(c, 200, answer_of(j));
        pthread_mutex_lock(&sv->mu);
        sv->latency_sum += kiln_now() - t0;
        sv->latency_count++;
        pthread_mutex_unlock(&sv->mu);
    }
    job_release(j);
    return rc;
}

static enum MHD_Result handle_metrics(server *sv, struct MHD_Connection *c) {
    char *sched = sched_metrics(sv->sched), *all;
    pthread_mutex_lock(&sv->mu);
    int n = asprintf(&all,
                     "# HELP kiln_requests_total HTTP requests received.\n# TYPE kiln_requests_total counter\n"
                     "kiln_requests_total %lld\n"
                     "# HELP kiln_request_errors_total Requests answered with an error.\n"
                     "# TYPE kiln_request_errors_total counter\nkiln_request_errors_total %lld\n"
                     "# HELP kiln_requests_active Requests being answered.\n# TYPE kiln_requests_active gauge\n"
                     "kiln_requests_active %lld\n"
                     "# HELP kiln_request_latency_seconds Time to answer non-streaming generation requests.\n"
                     "# TYPE kiln_request_latency_seconds summary\nkiln_request_latency_seconds_sum %.6f\n"
                     "kiln_request_latency_seconds_count %lld\n%s",
                     sv->n_requests, sv->n_errors, sv->n_active, sv->latency_sum, sv->latency_count, sched);
    pthread_mutex_unlock(&sv->mu);
    free(sched);
    if (n < 0) return send_error(sv, c, 500, "server_error", NULL, "out of memory");
    enum MHD_Result rc = send_text(c, 200, "text/plain; version=0.0.4", all);
    free(all);
    return rc;
}

static int authorized(server *sv, struct MHD_Connection *c) {
    if (!sv->o->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    return h && !strncmp(h, "Bearer ", 7) && !strcmp(h + 7, sv->o->api_key);
}

static enum MHD_Result route(server *sv, struct MHD_Connection *c, const char *url, const char *method, conn *k) {
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (!get) return send_error(sv, c, 405, "invalid_request_error", NULL, "/health takes GET");
        return send_text(c, 200, "application/json", "{\"status\":\"ok\"}");
    }
    if (!authorized(sv, c))
        return send_error(sv, c, 401, "invalid_request_error", NULL,
                          "missing or wrong API key: send 'Authorization: Bearer KEY'");
    if (!strcmp(url, "/metrics") && get) return handle_metrics(sv, c);
    if (!strcmp(url, "/v1/models") && get)
        return send_json(c, 200,
                         json_pack("{s:s, s:[{s:s, s:s, s:i, s:s}]}", "object", "list", "data", "id", sv->o->model_id,
                                   "object", "model", "created", 0, "owned_by", "kiln"));
    int chat = !strcmp(url, "/v1/chat/completions");
    if (chat || !strcmp(url, "/v1/completions")) {
        if (!post) return send_error(sv, c, 405, "invalid_request_error", NULL, "generation endpoints take POST");
        if (k->too_big) {
            char msg[128];
            snprintf(msg, sizeof msg, "the body is larger than %zu bytes", sv->o->max_body);
            return send_error(sv, c, 413, "invalid_request_error", NULL, msg);
        }
        return handle_generation(sv, c, chat, k->body ? k->body : "", k->len);
    }
    char msg[300];
    snprintf(msg, sizeof msg, "no route for %s %.200s", method, url);
    return send_error(sv, c, 404, "invalid_request_error", NULL, msg);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **con_cls) {
    server *sv = cls;
    conn *k = *con_cls;
    if (!k) {
        *con_cls = kiln_xcalloc(1, sizeof(conn));
        return MHD_YES;
    }
    if (*size) {
        if (k->len + *size > sv->o->max_body) {
            k->too_big = 1;
        } else {
            if (k->len + *size + 1 > k->cap) {
                k->cap = (k->len + *size + 1) * 2;
                k->body = kiln_xrealloc(k->body, k->cap);
            }
            memcpy(k->body + k->len, data, *size);
            k->len += *size;
            k->body[k->len] = 0;
        }
        *size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&sv->mu);
    sv->n_requests++;
    sv->n_active++;
    pthread_mutex_unlock(&sv->mu);
    enum MHD_Result rc = route(sv, c, url, method, k);
    pthread_mutex_lock(&sv->mu);
    sv->n_active--;
    pthread_mutex_unlock(&sv->mu);
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    conn *k = *con_cls;
    if (!k) return;
    free(k->body);
    free(k);
    *con_cls = NULL;
}

int serve_main(const serve_opts *o) {
    kiln_model *m = kiln_model_open(o->model_path);
    if (!m) return -1;
    if (!m->tok) {
        kiln_model_close(m);
        return kiln_fail("%s: the model has no tokenizer: kiln serve needs one", o->model_path);
    }
    if (o->threads) kiln_set_threads(o->threads);
    server sv = {.m = m, .o = o};
    pthread_mutex_init(&sv.mu, NULL);
    sv.sched = sched_new(m, o);
    if (!sv.sched) {
        kiln_model_close(m);
        return -1;
    }
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, o->host, &addr.sin_addr) != 1) {
        sched_free(sv.sched);
        kiln_model_close(m);
        return kiln_fail("--host: '%s' is not an IPv4 address", o->host);
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG, (uint16_t)o->port, NULL,
        NULL, on_request, &sv, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(o->slots + o->queue + 64), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)(o->timeout + 30), MHD_OPTION_END);
    if (!d) {
        sched_free(sv.sched);
        kiln_model_close(m);
        return kiln_fail("%s:%d: cannot listen there (in use, or not an address of this machine)", o->host, o->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = info ? info->port : o->port;
    fprintf(stderr, "kiln serve: %s on http://%s:%d (%d slots, queue %d)\n", o->model_id, o->host, port, o->slots,
            o->queue);
    kiln_atomic a;
    if (o->port_file && kiln_atomic_open(&a, o->port_file) == 0) {
        fprintf(a.f, "%d\n", port);
        kiln_atomic_commit(&a);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    while (!stop_flag) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(d);
    sched_free(sv.sched);
    pthread_mutex_destroy(&sv.mu);
    kiln_model_close(m);
    return 0;
}
