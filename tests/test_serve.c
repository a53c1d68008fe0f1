/* kiln serve through curl: the OpenAI endpoints, streaming, errors and limits. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "test.h"
#include "test_decode.h"
#include "test_serve.h"

static json_t *parse(const char *body) {
    json_t *o = json_loads(body, 0, NULL);
    if (!o) test_fail(__FILE__, __LINE__, "not JSON: %.300s", body);
    return o;
}

static const char *choice_text(json_t *o, int i) {
    json_t *c = json_array_get(json_object_get(o, "choices"), i);
    json_t *msg = json_object_get(c, "message");
    return json_string_value(json_object_get(msg ? msg : c, msg ? "content" : "text"));
}

TEST(serve_greedy_completion_matches_kiln_generate) {
    const char *path;
    kiln_model *m = stories_model(&path);
    char *want = greedy_text(m, "Once upon a time", 24);
    test_server s;
    server_start(&s, path, "--threads 1");
    char *body;
    int code = server_curl(&s, "/v1/completions", "-d '{\"prompt\":\"Once upon a time\",\"max_tokens\":24,\"temperature\":0}'",
                           &body);
    server_stop(&s);
    CHECK_EQ_INT(code, 200);
    json_t *o = parse(body);
    CHECK_STR(json_string_value(json_object_get(o, "object")), "text_completion");
    CHECK_STR(choice_text(o, 0), want);
    json_t *usage = json_object_get(o, "usage");
    CHECK_EQ_INT(json_integer_value(json_object_get(usage, "completion_tokens")), 24);
    CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(o, "choices"), 0), "finish_reason")),
              "length");
    json_decref(o);
    free(body);
    free(want);
    kiln_model_close(m);
}

/* The text of every SSE chunk of BODY, concatenated; checks the stream ends with [DONE]. */
static char *sse_text(const char *body, int chat) {
    const char *end = "data: [DONE]\n\n";
    size_t bl = strlen(body), el = strlen(end);
    if (bl < el || strcmp(body + bl - el, end)) test_fail(__FILE__, __LINE__, "stream does not end with [DONE]: %.300s", body);
    char *out = calloc(1, bl + 1);
    for (const char *p = body; (p = strstr(p, "data: {")); p++) {
        const char *e = strstr(p, "\n\n");
        char *line = strndup(p + 6, (size_t)(e - p - 6));
        json_t *o = parse(line);
        json_t *c = json_array_get(json_object_get(o, "choices"), 0);
        json_t *t = chat ? json_object_get(json_object_get(c, "delta"), "content") : json_object_get(c, "text");
        if (json_is_string(t)) strcat(out, json_string_value(t));
        json_decref(o);
        free(line);
    }
    return out;
}

TEST(serve_stream_sends_sse_chunks_ending_with_done_that_add_up_to_the_text) {
    const char *path;
    kiln_model *m = stories_model(&path);
    char *want = greedy_text(m, "Lily had a", 20);
    test_server s;
    server_start(&s, path, "--threads 1");
    char *body, *chat;
    int code = server_curl(&s, "/v1/completions",
                           "-d '{\"prompt\":\"Lily had a\",\"max_tokens\":20,\"temperature\":0,\"stream\":true}'", &body);
    int chat_code = server_curl(&s, "/v1/chat/completions",
                                "-d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":5,"
                                "\"temperature\":0,\"stream\":true}'",
                                &chat);
    server_stop(&s);
    CHECK_EQ_INT(code, 200);
    CHECK_EQ_INT(chat_code, 200);
    char *got = sse_text(body, 0);
    CHECK_STR(got, want);
    CHECK(strstr(body, "\"finish_reason\":\"length\"") != NULL);
    CHECK(strstr(chat, "\"object\":\"chat.completion.chunk\"") != NULL);
    CHECK(strstr(chat, "\"role\":\"assistant\"") != NULL);
    free(sse_text(chat, 1));
    free(got);
    free(body);
    free(chat);
    free(want);
    kiln_model_close(m);
}

TEST(serve_chat_completion_uses_the_plain_template_and_answers_as_assistant) {
    const char *path;
    kiln_model *m = stories_model(&path);
    char *want = greedy_text(m, "System: Be brief.\n\nUser: Tell a story.\n\nAssistant:", 12);
    test_server s;
    server_start(&s, path, "--threads 1");
    char *body;
    int code = server_curl(&s, "/v1/chat/completions",
                           "-d '{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                           "{\"role\":\"user\",\"content\":\"Tell a story.\"}],\"max_tokens\":12,\"temperature\":0}'",
                           &body);
    server_stop(&s);
    CHECK_EQ_INT(code, 200);
    json_t *o = parse(body);
    CHECK_STR(json_string_value(json_object_get(o, "object")), "chat.completion");
    json_t *msg = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message");
    CHECK_STR(json_string_value(json_object_get(msg, "role")), "assistant");
    CHECK_STR(choice_text(o, 0), want);
    json_decref(o);
    free(body);
    free(want);
    kiln_model_close(m);
}

TEST(serve_stop_string_ends_the_text_before_it) {
    const char *path;
    kiln_model *m = stories_model(&path);
    char *full = greedy_text(m, "Once upon a time", 30);
    char *cut = strstr(full, " was");
    CHECK(cut != NULL);
    *cut = 0;
    test_server s;
    server_start(&s, path, "--threads 1");
    char *body;
    int code = server_curl(&s, "/v1/completions",
                           "-d '{\"prompt\":\"Once upon a time\",\"max_tokens\":30,\"temperature\":0,\"stop\":[\" was\"]}'",
                           &body);
    server_stop(&s);
    CHECK_EQ_INT(code, 200);
    json_t *o = parse(body);
    CHECK_STR(choice_text(o, 0), full);
    CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(o, "choices"), 0), "finish_reason")),
              "stop");
    json_decref(o);
    free(body);
    free(full);
    kiln_model_close(m);
}

/* Checks that a request answers CODE with an OpenAI error naming PARAM (NULL: none) and saying WHAT. */
static void check_error(test_server *s, const char *path, const char *args, int code, const char *param,
                        const char *what) {
    char *body;
    int got = server_curl(s, path, args, &body);
    CHECKF(got == code, "%s %s: status %d, expected %d (%s)", path, args, got, code, body);
    json_t *o = parse(body);
    json_t *e = json_object_get(o, "error");
    CHECKF(json_is_object(e), "no error object: %s", body);
    const char *msg = json_string_value(json_object_get(e, "message"));
    CHECKF(msg && strstr(msg, what), "message '%s' does not say '%s'", msg ? msg : "", what);
    json_t *p = json_object_get(e, "param");
    if (param) CHECK_STR(json_string_value(p), param);
    else CHECK(json_is_null(p));
    json_decref(o);
    free(body);
}

TEST(serve_answers_bad_requests_with_4xx_and_an_openai_error_body) {
    const char *path;
    kiln_model *m = stories_model(&path);
    kiln_model_close(m);
    test_server s;
    server_start(&s, path, "--threads 1 --max-body 2K --api-key secret");
    const char *auth = "-H 'Authorization: Bearer secret'";
    char args[8192];
    check_error(&s, "/v1/completions", "-d '{\"prompt\":\"a\"}'", 401, NULL, "API key");
    snprintf(args, sizeof args, "%s -d '{\"prompt\": \"a\",'", auth);
    check_error(&s, "/v1/completions", args, 400, NULL, "not valid JSON");
    snprintf(args, sizeof args, "%s -d '{\"prompt\":\"a\",\"temperature\":\"hot\"}'", auth);
    check_error(&s, "/v1/completions", args, 400, "temperature", "must be a number");
    snprintf(args, sizeof args, "%s -d '{\"prompt\":\"a\",\"max_tokens\":0}'", auth);
    check_error(&s, "/v1/completions", args, 400, "max_tokens", "must be 1 to");
    snprintf(args, sizeof args, "%s -d '{\"prompt\":\"a\",\"model\":\"gpt-4\"}'", auth);
    check_error(&s, "/v1/completions", args, 404, "model", "does not exist");
    snprintf(args, sizeof args, "%s -d '{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}'", auth);
    check_error(&s, "/v1/chat/completions", args, 400, "messages", "role 'wizard'");
    snprintf(args, sizeof args, "%s -d '[1,2]'", auth);
    check_error(&s, "/v1/completions", args, 400, NULL, "JSON object");
    snprintf(args, sizeof args, "%s -d '{\"prompt\":\"%0*d\"}'", auth, 3000, 0);
    check_error(&s, "/v1/completions", args, 413, NULL, "larger than 2048 bytes");
    snprintf(args, sizeof args, "%s -X GET", auth);
    check_error(&s, "/v1/completions", args, 405, NULL, "POST");
    check_error(&s, "/v2/nothing", auth, 404, NULL, "no route");
    char *body;
    CHECK_EQ_INT(server_curl(&s, "/v1/completions", "-H 'Authorization: Bearer secret' -d '{\"prompt\":\"a\",\"max_tokens\":2}'", &body),
                 200);
    free(body);
    server_stop(&s);
}

TEST(serve_lists_the_model_and_reports_health_and_prometheus_metrics) {
    const char *path;
    kiln_model *m = stories_model(&path);
    kiln_model_close(m);
    test_server s;
    server_start(&s, path, "--threads 1 --model-id tiny-stories");
    char *models, *health, *metrics, *body;
    CHECK_EQ_INT(server_curl(&s, "/v1/models", "", &models), 200);
    CHECK_EQ_INT(server_curl(&s, "/health", "", &health), 200);
    /* the same prompt twice: the second finds it in a slot's cache */
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(server_curl(&s, "/v1/completions", "-d '{\"prompt\":\"Once upon a time there was\",\"max_tokens\":3}'", &body),
                     200);
        free(body);
    }
    CHECK_EQ_INT(server_curl(&s, "/metrics", "", &metrics), 200);
    server_stop(&s);
    json_t *o = parse(models);
    CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(o, "data"), 0), "id")), "tiny-stories");
    json_decref(o);
    CHECK(strstr(health, "ok") != NULL);
    CHECK(strstr(metrics, "# TYPE kiln_requests_total counter") != NULL);
    CHECK(strstr(metrics, "kiln_generated_tokens_total 6") != NULL);
    CHECK(strstr(metrics, "kiln_queue_depth 0") != NULL);
    long long reused = -1;
    const char *r = strstr(metrics, "\nkiln_prompt_tokens_reused_total ");
    CHECK(r && sscanf(r + 1, "kiln_prompt_tokens_reused_total %lld", &reused) == 1);
    CHECKF(reused >= 5, "the repeated prompt reused %lld cached tokens", reused);
    free(models);
    free(health);
    free(metrics);
}
