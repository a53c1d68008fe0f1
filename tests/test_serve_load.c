/* kiln serve under load: many concurrent clients batched together, a flood of malformed requests, a full
 * queue, and the official `openai` npm client. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln.h"
#include "test.h"
#include "test_decode.h"
#include "test_serve.h"

static const char *PROMPTS[4] = {"Once upon a time", "Tom and Lily went", "The cat sat", "One day, a little bird"};

static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static long long metric(const char *text, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    return p ? atoll(p + strlen(key)) : -1;
}

/* 32 clients at once, each with one of four prompts; every answer must be the one it gets alone. One
 * curl opens all 32 connections together (--parallel-immediate): 32 curl processes started one after
 * another arrive milliseconds apart, and the tiny model answers each before the next one comes. */
static void run_clients(test_server *s, char **want) {
    char script[4096];
    snprintf(script, sizeof script, "%s", test_tmp("clients.sh"));
    FILE *f = fopen(script, "w");
    fprintf(f, "curl -s -Z --parallel-immediate --parallel-max 32");
    for (int i = 0; i < 32; i++)
        fprintf(f, "%s -m 60 -o '%s.%d' -d '{\"prompt\":\"%s\",\"max_tokens\":16,\"temperature\":0}' %s/v1/completions",
                i ? " --next" : "", script, i, PROMPTS[i % 4], s->url);
    fprintf(f, "\n");
    fclose(f);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "sh '%s'", script);
    CHECK_EQ_INT(test_run(cmd, NULL, NULL), 0);
    for (int i = 0; i < 32; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s.%d", script, i);
        size_t n;
        FILE *g = fopen(path, "r");
        CHECKF(g, "client %d wrote nothing", i);
        char buf[8192];
        n = fread(buf, 1, sizeof buf - 1, g);
        buf[n] = 0;
        fclose(g);
        json_t *o = json_loads(buf, 0, NULL);
        CHECKF(o, "client %d: not JSON: %.200s", i, buf);
        const char *text = json_string_value(json_object_get(json_array_get(json_object_get(o, "choices"), 0), "text"));
        CHECKF(text && !strcmp(text, want[i % 4]), "client %d got '%s', expected '%s'", i, text ? text : "(none)",
               want[i % 4]);
        json_decref(o);
    }
}

TEST(serve_32_concurrent_clients_are_batched_answered_correctly_in_bounded_memory) {
    const char *path;
    kiln_model *m = stories_model(&path);
    char *want[4];
    for (int i = 0; i < 4; i++) want[i] = greedy_text(m, PROMPTS[i], 16);
    kiln_model_close(m);
    test_server s;
    server_start(&s, path, "--threads 1 --slots 16 --queue 64");
    run_clients(&s, want);
    long rss1 = rss_kb(s.pid);
    run_clients(&s, want);
    long rss2 = rss_kb(s.pid);
    char *metrics;
    CHECK_EQ_INT(server_curl(&s, "/metrics", "", &metrics), 200);
    server_stop(&s);
    CHECKF(rss2 - rss1 < 16 * 1024, "memory grew from %ld to %ld kB over one more round", rss1, rss2);
    long long steps = metric(metrics, "kiln_batch_steps_total"), rows = metric(metrics, "kiln_batch_rows_total");
    long long widest = metric(metrics, "kiln_batch_rows_max");
    CHECKF(rows > steps && widest >= 4, "%lld sequences over %lld steps, at most %lld in one: requests were not batched",
           rows, steps, widest);
    CHECK_EQ_INT(metric(metrics, "kiln_request_errors_total"), 0);
    free(metrics);
    for (int i = 0; i < 4; i++) free(want[i]);
}

TEST(serve_keeps_answering_after_1000_malformed_requests) {
    const char *path;
    kiln_model *m = stories_model(&path);
    kiln_model_close(m);
    test_server s;
    server_start(&s, path, "--threads 1 --max-body 4K");
    static const char *bad[] = {"{bad", "[]", "{\\\"prompt\\\":7}", "{\\\"prompt\\\":\\\"a\\\",\\\"n\\\":1e99}",
                                "{\\\"messages\\\":{}}", "", "{\\\"prompt\\\":[99999999]}",
                                "{\\\"prompt\\\":\\\"a\\\",\\\"stop\\\":[1]}"};
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s", test_tmp("flood.cfg"));
    FILE *f = fopen(cfg, "w");
    for (int i = 0; i < 1000; i++)
        fprintf(f, "%surl = \"%s/v1/%s\"\ndata = \"%s\"\noutput = \"/dev/null\"\nwrite-out = \"%%{http_code}\\n\"\n",
                i ? "next\n" : "", s.url, i % 2 ? "completions" : "chat/completions", bad[i % 8]);
    fclose(f);
    char cmd[4200], *out;
    snprintf(cmd, sizeof cmd, "curl -s -m 120 --parallel --parallel-max 16 -K '%s'", cfg);
    test_run(cmd, &out, NULL);
    int n400 = 0, other = 0;
    for (char *p = strtok(out, "\n"); p; p = strtok(NULL, "\n")) {
        if (atoi(p) == 400) n400++;
        else other++;
    }
    free(out);
    CHECKF(n400 == 1000, "%d of 1000 malformed requests got 400 (%d something else)", n400, other);
    char *body;
    CHECK_EQ_INT(server_curl(&s, "/v1/completions", "-d '{\"prompt\":\"Once\",\"max_tokens\":4}'", &body), 200);
    free(body);
    server_stop(&s);
}

TEST(serve_answers_429_when_the_queue_is_full) {
    const char *path;
    kiln_model *m = stories_model(&path);
    kiln_model_close(m);
    test_server s;
    server_start(&s, path, "--threads 1 --slots 1 --queue 1");
    char script[4096];
    snprintf(script, sizeof script, "%s", test_tmp("burst.sh"));
    FILE *f = fopen(script, "w");
    for (int i = 0; i < 12; i++)
        fprintf(f, "curl -s -m 60 -o /dev/null -w '%%{http_code}\\n' -d '{\"prompt\":\"Once\",\"max_tokens\":400,\"n\":1}' %s/v1/completions &\n",
                s.url);
    fprintf(f, "wait\n");
    fclose(f);
    char cmd[4200], *out;
    snprintf(cmd, sizeof cmd, "sh '%s'", script);
    test_run(cmd, &out, NULL);
    server_stop(&s);
    int ok = 0, busy = 0;
    for (char *p = strtok(out, "\n"); p; p = strtok(NULL, "\n")) {
        if (atoi(p) == 200) ok++;
        else if (atoi(p) == 429) busy++;
    }
    free(out);
    CHECKF(ok >= 1 && busy >= 1 && ok + busy == 12, "%d answered, %d refused with 429, of 12", ok, busy);
}

/* The official client, installed outside the repository on first use. */
TEST(serve_works_with_the_official_openai_npm_client) {
    const char *home = getenv("HOME");
    char dir[1024], cmd[8192];
    snprintf(dir, sizeof dir, "%s/.cache/kiln-npm", home ? home : "/tmp");
    snprintf(cmd, sizeof cmd, "test -f '%s/node_modules/openai/package.json' || (mkdir -p '%s' && cd '%s' && "
             "npm install --silent --no-audit --no-fund openai@4 >/dev/null 2>&1)", dir, dir, dir);
    CHECKF(test_run(cmd, NULL, NULL) == 0, "could not install the openai npm package into %s", dir);
    const char *path;
    kiln_model *m = stories_model(&path);
    char *want = greedy_text(m, "Once upon a time", 10);
    kiln_model_close(m);
    test_server s;
    server_start(&s, path, "--threads 1 --api-key k123");
    char js[4096];
    snprintf(js, sizeof js, "%s", test_tmp("client.js"));
    FILE *f = fopen(js, "w");
    fprintf(f,
            "const OpenAI = require('%s/node_modules/openai');\n"
            "const c = new OpenAI({apiKey: 'k123', baseURL: '%s/v1', maxRetries: 0});\n"
            "(async () => {\n"
            "  const a = await c.completions.create({model: (await c.models.list()).data[0].id,\n"
            "    prompt: 'Once upon a time', max_tokens: 10, temperature: 0});\n"
            "  const b = await c.chat.completions.create({model: a.model, max_tokens: 5, temperature: 0,\n"
            "    messages: [{role: 'user', content: 'Hi'}]});\n"
            "  let streamed = '';\n"
            "  for await (const ch of await c.completions.create({model: a.model, prompt: 'Once upon a time',\n"
            "      max_tokens: 10, temperature: 0, stream: true})) streamed += ch.choices[0].text;\n"
            "  let chat = '';\n"
            "  for await (const ch of await c.chat.completions.create({model: a.model, max_tokens: 5, temperature: 0,\n"
            "      stream: true, messages: [{role: 'user', content: 'Hi'}]})) chat += ch.choices[0].delta.content || '';\n"
            "  let err = 0;\n"
            "  try { await c.completions.create({model: 'nope', prompt: 'x'}); } catch (e) { err = e.status; }\n"
            "  console.log(JSON.stringify({text: a.choices[0].text, chat: b.choices[0].message.content,\n"
            "    role: b.choices[0].message.role, streamed, chat_streamed: chat, err}));\n"
            "})().catch(e => { console.error(e); process.exit(1); });\n",
            dir, s.url);
    fclose(f);
    snprintf(cmd, sizeof cmd, "timeout 60 node '%s'", js);
    char *out, *err;
    int rc = test_run(cmd, &out, &err);
    server_stop(&s);
    CHECKF(rc == 0, "node failed (%d): %.500s", rc, err);
    json_t *o = json_loads(out, 0, NULL);
    CHECKF(o, "not JSON: %s", out);
    CHECK_STR(json_string_value(json_object_get(o, "text")), want);
    CHECK_STR(json_string_value(json_object_get(o, "streamed")), want);
    CHECK_STR(json_string_value(json_object_get(o, "role")), "assistant");
    CHECK_STR(json_string_value(json_object_get(o, "chat_streamed")), json_string_value(json_object_get(o, "chat")));
    CHECK_EQ_INT(json_integer_value(json_object_get(o, "err")), 404);
    json_decref(o);
    free(out);
    free(err);
    free(want);
}
