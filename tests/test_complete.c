/* kiln complete: the suggestion engine (src/api/suggest.c) against a from-scratch implementation of the
 * seed's scoring, its incremental cache, and the editor for real in tmux. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/suggest.h"
#include "kiln.h"
#include "test.h"
#include "test_decode.h"

/* The seed's sugguest_from_model on a byte-level model, written out plainly: a fresh context, the
 * greedy bytes until a newline or MAX_LEN, the prefix of largest length x probability, stopping when
 * min(len + 8, MAX_LEN) x probability falls below the best. */
static void seed_suggestion(kiln_model *m, const char *text, int max_len, char *out) {
    int n = (int)strlen(text);
    int32_t *toks = malloc(sizeof(int32_t) * (n + 1));
    toks[0] = 0;
    for (int i = 0; i < n; i++) toks[i + 1] = (unsigned char)text[i];
    kiln_ctx *c = kiln_ctx_new(m, 0);
    CHECK(kiln_eval(c, toks, n + 1, NULL) == 0);
    double cum = 1, best = 0;
    int best_len = 0, len = 0;
    char pred[1024];
    while (len < max_len) {
        float *x = kiln_logits(c);
        int a = 0;
        for (int i = 1; i < 256; i++)
            if (x[i] > x[a]) a = i;
        double sum = 0;
        for (int i = 0; i < 256; i++) sum += exp((double)x[i] - x[a]);
        if (a == '\n') break;
        pred[len++] = (char)a;
        cum *= 1 / sum;
        if (len * cum > best) best = len * cum, best_len = len;
        if ((len + 8 < max_len ? len + 8 : max_len) * cum < best) break;
        int32_t t = a;
        CHECK(kiln_eval(c, &t, 1, NULL) == 0);
    }
    memcpy(out, pred, best_len);
    out[best_len] = 0;
    kiln_ctx_free(c);
    free(toks);
}

/* A byte-level model whose greedy paths are long enough to be interesting. */
static kiln_model *byte_model(void) { return random_model("bytes.gguf", 256, 256, 32, 2, 11, 3.0f); }

TEST(suggestion_matches_the_seed_scoring_computed_from_scratch) {
    kiln_model *m = byte_model();
    kiln_suggester *s = kiln_suggester_new(m, 32);
    CHECKF(s, "%s", kiln_last_error());
    const char *texts[] = {"int main(", "for (i = 0; i < n", "x", "static void f(void) {\n\t", ""};
    for (int i = 0; i < 5; i++) {
        char want[64];
        seed_suggestion(m, texts[i], 32, want);
        const char *got = kiln_suggest(s, texts[i], strlen(texts[i]));
        CHECKF(got && !strcmp(got, want), "after '%s': '%s', expected '%s'", texts[i], got ? got : "(null)", want);
    }
    kiln_suggester_free(s);
    kiln_model_close(m);
}

TEST(suggestion_is_incremental_typing_feeds_one_byte_and_backspace_rolls_back) {
    kiln_model *m = byte_model();
    kiln_suggester *s = kiln_suggester_new(m, 16);
    char text[256];
    for (int i = 0; i < 200; i++) text[i] = (char)('a' + i % 26);
    size_t n = 200;
    CHECK(kiln_suggest(s, text, n));
    CHECK(kiln_suggest_evaluated(s) >= 201); /* the 0 start byte and the text, then the path */
    const char *g = kiln_suggest(s, text, n);
    CHECK_EQ_INT(kiln_suggest_evaluated(s), 0);
    char first = g[0];
    /* a byte the path predicted costs nothing more than extending the path; another byte, or a
     * backspace, one token of text and the new path (at most 16), never the 200 bytes before */
    if (first) {
        text[n] = first;
        kiln_suggest(s, text, n + 1);
        CHECK(kiln_suggest_evaluated(s) <= 1);
    }
    text[n] = (char)(first == 'z' ? 'y' : 'z');
    kiln_suggest(s, text, n + 1);
    CHECK(kiln_suggest_evaluated(s) <= 1 + 16);
    kiln_suggest(s, text, n);
    CHECK(kiln_suggest_evaluated(s) <= 1 + 16);
    kiln_suggester_free(s);
    kiln_model_close(m);
}

TEST(incremental_suggestions_equal_fresh_ones_over_a_typing_session) {
    kiln_model *m = byte_model();
    kiln_suggester *s = kiln_suggester_new(m, 24);
    const char *src = "int f(int x) {\n\treturn x * 2;\n}\n";
    char text[256];
    size_t len = 0;
    int fed = 0, fresh_fed = 0, keys = 0;
    for (const char *p = src; *p; p++, keys++) {
        text[len++] = *p;
        if (keys % 7 == 3) len--, keys++; /* a backspace now and then, retyped below */
        if (keys % 7 == 4) text[len++] = *p;
        const char *got = kiln_suggest(s, text, len);
        fed += kiln_suggest_evaluated(s);
        kiln_suggester *fresh = kiln_suggester_new(m, 24);
        const char *want = kiln_suggest(fresh, text, len);
        fresh_fed += kiln_suggest_evaluated(fresh);
        CHECKF(got && want && !strcmp(got, want), "after %zu bytes: '%s' incrementally, '%s' from scratch", len,
               got ? got : "(null)", want ? want : "(null)");
        kiln_suggester_free(fresh);
    }
    CHECKF(fed * 4 < fresh_fed, "%d tokens fed over %d keystrokes, %d from scratch: the cache is not reused", fed,
           keys, fresh_fed);
    kiln_suggester_free(s);
    kiln_model_close(m);
}

TEST(suggester_needs_a_tokenizer_or_byte_tokens) {
    kiln_model *m = random_model("v100.gguf", 100, 64, 16, 1, 3, 1.0f);
    CHECK(kiln_suggester_new(m, 32) == NULL);
    CHECK(strstr(kiln_last_error(), "256 byte tokens") != NULL);
    kiln_model_close(m);
}

static void tmux(const char *session, const char *verb, const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "tmux %s -t %s %s", verb, session, args);
    test_run(cmd, NULL, NULL);
}

TEST(complete_in_tmux_shows_the_suggestion_and_tab_inserts_it_into_the_saved_file) {
    CHECKF(test_run("command -v tmux", NULL, NULL) == 0, "tmux is not installed (apt-get install tmux)");
    const char *path;
    kiln_model *m = stories_model(&path);
    kiln_suggester *s = kiln_suggester_new(m, 32);
    char want[128];
    snprintf(want, sizeof want, "%s", kiln_suggest(s, "Once upon a", 11));
    kiln_suggester_free(s);
    kiln_model_close(m);
    CHECK(strlen(want) > 0);
    char session[64], out[4096], cmd[8192];
    snprintf(session, sizeof session, "kiln-complete-%d", (int)getpid());
    snprintf(out, sizeof out, "%s", test_tmp("typed.txt"));
    snprintf(cmd, sizeof cmd, "tmux new-session -d -s %s -x 100 -y 12 '%s complete -m %s %s --threads 1'", session,
             test_kiln_bin(), path, out);
    CHECK(test_run(cmd, NULL, NULL) == 0);
    char *pane = NULL;
    tmux(session, "send-keys", "'Once upon a'");
    for (int i = 0; i < 50; i++) { /* wait (at most 5 s) for the ghost text */
        usleep(100 * 1000);
        free(pane);
        snprintf(cmd, sizeof cmd, "tmux capture-pane -p -t %s", session);
        test_run(cmd, &pane, NULL);
        char line[256];
        snprintf(line, sizeof line, "Once upon a%s", want);
        if (strstr(pane, line)) break;
    }
    char line[256];
    snprintf(line, sizeof line, "Once upon a%s", want);
    int shown = strstr(pane, line) != NULL, status = strstr(pane, "ms,") != NULL;
    tmux(session, "send-keys", "Tab");
    usleep(300 * 1000);
    tmux(session, "send-keys", "C-d");
    for (int i = 0; i < 50 && access(out, F_OK) != 0; i++) usleep(100 * 1000);
    tmux(session, "kill-session", "");
    CHECKF(shown, "the pane does not show '%s':\n%s", line, pane);
    CHECK(status);
    free(pane);
    FILE *f = fopen(out, "r");
    CHECKF(f, "%s was not written", out);
    char got[256] = {0};
    CHECK(fread(got, 1, sizeof got - 1, f) > 0);
    fclose(f);
    CHECK_STR(got, line);
}
