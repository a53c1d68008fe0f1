/* Requests of /v1/completions and /v1/chat/completions: OpenAI's fields first, then kiln's decoding
 * options (docs/SERVING.md lists them), checked field by field so that a bad one gets a 400 naming it.
 * Unknown fields are ignored, as OpenAI clients send some the server need not know. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "serve/serve.h"

enum { MAX_STOP = 4, MAX_BIAS = 300, MAX_TOP_LOGPROBS = 20 };

typedef struct {
    json_t *root;
    const char **param;
} req;

/* A number field within [LO, HI]; 1 when absent (OUT unchanged), 0 when set, -1 when wrong. */
static int get_number(req *r, const char *key, double lo, double hi, double *out) {
    json_t *v = json_object_get(r->root, key);
    if (!v || json_is_null(v)) return 1;
    *r->param = key;
    if (!json_is_number(v)) return kiln_fail("'%s' must be a number", key);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) return kiln_fail("'%s' is %g: it must be %g to %g", key, d, lo, hi);
    *out = d;
    return 0;
}

static int get_float(req *r, const char *key, double lo, double hi, float *out) {
    double d = 0;
    int rc = get_number(r, key, lo, hi, &d);
    if (rc == 0) *out = (float)d;
    return rc < 0 ? -1 : 0;
}

static int get_int(req *r, const char *key, long long lo, long long hi, long long *out) {
    json_t *v = json_object_get(r->root, key);
    if (!v || json_is_null(v)) return 1;
    *r->param = key;
    if (!json_is_integer(v)) return kiln_fail("'%s' must be an integer", key);
    long long n = json_integer_value(v);
    if (n < lo || n > hi) return kiln_fail("'%s' is %lld: it must be %lld to %lld", key, n, lo, hi);
    *out = n;
    return 0;
}

static int set_int(req *r, const char *key, long long lo, long long hi, int *out) {
    long long n = 0;
    int rc = get_int(r, key, lo, hi, &n);
    if (rc == 0) *out = (int)n;
    return rc < 0 ? -1 : 0;
}

static int get_bool(req *r, const char *key, int *out) {
    json_t *v = json_object_get(r->root, key);
    if (!v || json_is_null(v)) return 0;
    *r->param = key;
    if (!json_is_boolean(v)) return kiln_fail("'%s' must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

static int parse_stop(req *r, serve_job *j) {
    json_t *v = json_object_get(r->root, "stop");
    if (!v || json_is_null(v)) return 0;
    *r->param = "stop";
    json_t *one = json_is_string(v) ? v : NULL;
    size_t n = one ? 1 : json_is_array(v) ? json_array_size(v) : 0;
    if (!one && !json_is_array(v)) return kiln_fail("'stop' must be a string or an array of strings");
    if (n > MAX_STOP) return kiln_fail("'stop' has %zu strings: at most %d", n, MAX_STOP);
    j->stop = kiln_xcalloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        json_t *s = one ? one : json_array_get(v, i);
        if (!json_is_string(s) || !json_string_length(s)) return kiln_fail("'stop' strings must be non-empty strings");
        j->stop[j->p.n_stop_strings++] = kiln_xstrdup(json_string_value(s));
    }
    j->p.stop_strings = (const char *const *)j->stop;
    return 0;
}

static int parse_bias(req *r, serve_job *j, int n_vocab) {
    json_t *v = json_object_get(r->root, "logit_bias");
    if (!v || json_is_null(v)) return 0;
    *r->param = "logit_bias";
    if (!json_is_object(v)) return kiln_fail("'logit_bias' must be an object of token id to bias");
    if (json_object_size(v) > MAX_BIAS) return kiln_fail("'logit_bias' has more than %d entries", MAX_BIAS);
    j->bias = kiln_xcalloc(json_object_size(v) + 1, sizeof *j->bias);
    const char *key;
    json_t *b;
    json_object_foreach(v, key, b) {
        char *end;
        long id = strtol(key, &end, 10);
        if (!*key || *end || id < 0 || id >= n_vocab)
            return kiln_fail("'logit_bias': '%s' is not a token id (0 to %d)", key, n_vocab - 1);
        if (!json_is_number(b) || fabs(json_number_value(b)) > 100)
            return kiln_fail("'logit_bias': the bias of %s must be a number from -100 to 100", key);
        double d = json_number_value(b);
        j->bias[j->p.n_logit_bias++] = (kiln_logit_bias){(int32_t)id, d <= -100 ? -INFINITY : (float)d};
    }
    j->p.logit_bias = j->bias;
    return 0;
}

/* The prompt of a completions request: a string, or an array of token ids (or of one string). */
static char *prompt_text(req *r, serve_job *j, const kiln_model *m) {
    json_t *v = json_object_get(r->root, "prompt");
    *r->param = "prompt";
    if (json_is_array(v) && json_array_size(v) == 1 && json_is_string(json_array_get(v, 0))) v = json_array_get(v, 0);
    if (json_is_string(v)) return kiln_xstrdup(json_string_value(v));
    if (!json_is_array(v) || !json_array_size(v))
        return kiln_fail("'prompt' must be a non-empty string or array of token ids"), NULL;
    int V = kiln_model_config(m)->n_vocab;
    j->n_prompt = (int)json_array_size(v);
    j->prompt = kiln_xmalloc(sizeof(int32_t) * j->n_prompt);
    for (int i = 0; i < j->n_prompt; i++) {
        json_t *t = json_array_get(v, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= V)
            return kiln_fail("'prompt'[%d] is not a token id (0 to %d)", i, V - 1), NULL;
        j->prompt[i] = (int32_t)json_integer_value(t);
    }
    return kiln_xstrdup("");
}

static int parse_text(req *r, serve_job *j, const kiln_model *m, const serve_opts *o, int chat) {
    char *text;
    if (chat) {
        json_t *msgs = json_object_get(r->root, "messages");
        *r->param = "messages";
        if (!json_is_array(msgs) || !json_array_size(msgs))
            return kiln_fail("'messages' must be a non-empty array of {role, content}");
        text = chat_render(m, msgs);
        if (!text) return -1;
    } else if (!(text = prompt_text(r, j, m))) {
        return -1;
    }
    if (!j->prompt) {
        int cap = (int)strlen(text) + 2;
        j->prompt = kiln_xmalloc(sizeof(int32_t) * cap);
        j->n_prompt = kiln_tokenize(m, text, strlen(text), 1, j->prompt, cap);
        if (j->n_prompt < 1) {
            free(text);
            return kiln_fail("the prompt could not be tokenized");
        }
    }
    int echo = 0;
    if (!chat && get_bool(r, "echo", &echo) < 0) return free(text), -1;
    if (echo) j->echo = kiln_xstrdup(text);
    free(text);
    int n_ctx = o->n_ctx ? o->n_ctx : kiln_model_config(m)->ctx_len;
    *r->param = chat ? "messages" : "prompt";
    if (j->n_prompt >= n_ctx)
        return kiln_fail("the prompt has %d tokens: the context holds %d, with room for at least one new token",
                         j->n_prompt, n_ctx);
    if (j->p.max_new_tokens > n_ctx - j->n_prompt) j->p.max_new_tokens = n_ctx - j->n_prompt;
    return 0;
}

static int parse_logprobs(req *r, serve_job *j, int chat) {
    j->top_logprobs = -1;
    if (chat) {
        int on = 0;
        if (get_bool(r, "logprobs", &on) < 0) return -1;
        int top = 0;
        if (set_int(r, "top_logprobs", 0, MAX_TOP_LOGPROBS, &top) < 0) return -1;
        if (on) j->top_logprobs = top;
        return 0;
    }
    return set_int(r, "logprobs", 0, 5, &j->top_logprobs);
}

static int parse_decoding(req *r, serve_job *j, const kiln_model *m, const serve_opts *o, int chat) {
    kiln_gen_params *p = &j->p;
    kiln_gen_defaults(p);
    long long seed = 0;
    double temperature = 1;
    int max_tokens = chat ? o->max_tokens : 16;
    if (set_int(r, "max_tokens", 1, o->max_tokens, &max_tokens) < 0 ||
        set_int(r, "max_completion_tokens", 1, o->max_tokens, &max_tokens) < 0 ||
        get_number(r, "temperature", 0, 2, &temperature) < 0 || get_float(r, "top_p", 1e-9, 1, &p->top_p) < 0 ||
        set_int(r, "n", 1, o->slots, &j->n) < 0 || get_int(r, "seed", INT64_MIN, INT64_MAX, &seed) < 0 ||
        get_float(r, "presence_penalty", -2, 2, &p->presence_penalty) < 0 ||
        get_float(r, "frequency_penalty", -2, 2, &p->frequency_penalty) < 0 || parse_stop(r, j) < 0 ||
        parse_bias(r, j, kiln_model_config(m)->n_vocab) < 0 || parse_logprobs(r, j, chat) < 0 ||
        set_int(r, "top_k", 0, 1 << 30, &p->top_k) < 0 || get_float(r, "min_p", 0, 1, &p->min_p) < 0 ||
        get_float(r, "typical_p", 1e-9, 1, &p->typical_p) < 0 ||
        get_float(r, "repetition_penalty", 1e-6, 1e6, &p->repetition_penalty) < 0 ||
        get_float(r, "repeat_penalty", 1e-6, 1e6, &p->repetition_penalty) < 0 ||
        set_int(r, "no_repeat_ngram_size", 0, 1 << 20, &p->no_repeat_ngram) < 0 ||
        set_int(r, "min_tokens", 0, 1 << 24, &p->min_new_tokens) < 0 ||
        set_int(r, "num_beams", 1, 64, &p->num_beams) < 0 ||
        get_float(r, "length_penalty", -100, 100, &p->length_penalty) < 0 ||
        set_int(r, "min_keep", 1, 1 << 30, &p->min_tokens_to_keep) < 0 || get_bool(r, "stream", &j->stream) < 0)
        return -1;
    json_t *opts = json_object_get(r->root, "stream_options");
    if (json_is_object(opts) && json_is_true(json_object_get(opts, "include_usage"))) j->include_usage = 1;
    json_t *samplers = json_object_get(r->root, "samplers");
    if (samplers && !json_is_null(samplers)) {
        *r->param = "samplers";
        if (!json_is_string(samplers)) return kiln_fail("'samplers' must be a string such as \"top_k;top_p;temperature\"");
        p->samplers = j->samplers = kiln_xstrdup(json_string_value(samplers));
    }
    p->seed = (uint64_t)seed;
    p->max_new_tokens = max_tokens;
    if (p->num_beams > 1) {
        *r->param = "num_beams";
        if (j->stream) return kiln_fail("'num_beams' > 1 cannot be streamed");
        if (j->n > p->num_beams) return kiln_fail("'n' (%d) must not exceed 'num_beams' (%d)", j->n, p->num_beams);
        p->search = temperature > 0 && json_is_true(json_object_get(r->root, "do_sample")) ? KILN_SEARCH_STOCHASTIC_BEAM
                                                                                           : KILN_SEARCH_BEAM;
        p->num_return = j->n;
    } else if (temperature > 0) {
        p->search = KILN_SEARCH_SAMPLE;
        p->temperature = (float)temperature;
    }
    return 0;
}

int request_parse(serve_job *j, const kiln_model *m, const serve_opts *o, int chat, const char *body, size_t len,
                  const char **param) {
    *param = NULL;
    json_error_t err;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (!root) return kiln_fail("the body is not valid JSON: %s (line %d, column %d)", err.text, err.line, err.column);
    req r = {root, param};
    int rc = -1;
    j->chat = chat;
    j->n = 1;
    if (!json_is_object(root)) {
        kiln_fail("the body must be a JSON object");
        goto done;
    }
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model)) {
        *param = "model";
        if (!json_is_string(model)) {
            kiln_fail("'model' must be a string");
            goto done;
        }
        if (strcmp(json_string_value(model), o->model_id)) {
            kiln_fail("the model '%s' does not exist: this server serves '%s'", json_string_value(model), o->model_id);
            goto done;
        }
    }
    if (parse_decoding(&r, j, m, o, chat) < 0 || parse_text(&r, j, m, o, chat) < 0) goto done;
    *param = NULL;
    if (kiln_gen_check(&j->p, kiln_model_config(m)->n_vocab) < 0) goto done;
    int eos = kiln_token_eos(m), bos = kiln_token_bos(m);
    j->stop_tokens[0] = eos;
    j->stop_tokens[1] = bos != eos ? bos : -1;
    if (eos < 0) j->stop_tokens[0] = j->stop_tokens[1], j->stop_tokens[1] = -1;
    j->deadline = kiln_now() + o->timeout;
    rc = 0;
done:
    json_decref(root);
    return rc;
}
