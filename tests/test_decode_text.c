/* Stopping and streaming: stop strings across token boundaries, UTF-8 characters across tokens, the
 * text held back only as long as needed; and `kiln generate`'s decoding flags. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "decode/text.h"
#include "kiln.h"
#include "test.h"
#include "test_decode.h"

typedef struct {
    char buf[4096];
    size_t len;
    int calls;
    size_t piece_end[64]; /* where each delivered piece ended */
} sink;

static int collect(void *user, const char *text, size_t len) {
    sink *s = user;
    memcpy(s->buf + s->len, text, len);
    s->len += len;
    s->buf[s->len] = 0;
    if (s->calls < 64) s->piece_end[s->calls] = s->len;
    s->calls++;
    return 0;
}

static int push(decode_text *t, const char *piece) { return text_append(t, piece, strlen(piece)); }

TEST(a_stop_string_spanning_three_tokens_is_never_delivered) {
    const char *stop[] = {"<end>"};
    sink s = {0};
    decode_text t;
    text_init(&t, stop, 1, collect, &s);
    CHECK(push(&t, "Hello <e") == 0);
    CHECK_STR(s.buf, "Hello "); /* "<e" may start the stop string: held back */
    CHECK(push(&t, "n") == 0);
    CHECK_STR(s.buf, "Hello ");
    CHECK(push(&t, "d> more") == 1);
    CHECK(t.stopped);
    text_finish(&t);
    CHECK_STR(s.buf, "Hello ");
    CHECK_EQ_INT(text_length(&t), 6);
    text_free(&t);
}

TEST(text_is_held_back_only_while_it_can_still_become_a_stop_string) {
    const char *stop[] = {"abc", "xyz"};
    sink s = {0};
    decode_text t;
    text_init(&t, stop, 2, collect, &s);
    CHECK(push(&t, "1a") == 0);
    CHECK_STR(s.buf, "1");
    CHECK(push(&t, "bd") == 0); /* "abd" cannot become "abc" any more */
    CHECK_STR(s.buf, "1abd");
    CHECK(push(&t, "ab") == 0);
    CHECK_STR(s.buf, "1abd");
    CHECK(push(&t, "x") == 0); /* "abx": "ab" is dead, "x" may start "xyz" */
    CHECK_STR(s.buf, "1abdab");
    text_finish(&t); /* generation ended for another reason: all of it */
    CHECK_STR(s.buf, "1abdabx");
    text_free(&t);
}

TEST(the_earliest_of_several_stop_strings_wins) {
    const char *stop[] = {"world", "o w"};
    decode_text t;
    text_init(&t, stop, 2, NULL, NULL);
    CHECK(push(&t, "Hello") == 0);
    CHECK(push(&t, " world") == 1);
    CHECK_EQ_INT(text_length(&t), 4); /* "Hell": "o w" starts before "world" */
    text_free(&t);
}

TEST(multibyte_characters_split_across_tokens_are_delivered_whole) {
    sink s = {0};
    decode_text t;
    text_init(&t, NULL, 0, collect, &s);
    CHECK(push(&t, "a\xE2") == 0); /* the first byte of the euro sign (E2 82 AC) */
    CHECK_STR(s.buf, "a");
    CHECK(push(&t, "\x82") == 0);
    CHECK_STR(s.buf, "a");
    CHECK(push(&t, "\xAC") == 0);
    CHECK_STR(s.buf, "a\xE2\x82\xAC");
    CHECK(push(&t, "\xF0\x9F") == 0); /* half of a four-byte emoji */
    CHECK_STR(s.buf, "a\xE2\x82\xAC");
    CHECK(push(&t, "\x98\x80!") == 0);
    CHECK_STR(s.buf, "a\xE2\x82\xAC\xF0\x9F\x98\x80!");
    CHECK(push(&t, "\xFF") == 0); /* not UTF-8 at all: not held forever */
    CHECK_EQ_INT(s.len, 10);
    text_free(&t);
}

TEST(a_stop_string_inside_a_multibyte_character_sequence_still_cuts_before_it) {
    const char *stop[] = {"\xE2\x82\xAC"};
    sink s = {0};
    decode_text t;
    text_init(&t, stop, 1, collect, &s);
    CHECK(push(&t, "5 \xE2") == 0);
    CHECK(push(&t, "\x82\xAC") == 1);
    text_finish(&t);
    CHECK_STR(s.buf, "5 ");
    text_free(&t);
}

TEST(text_would_stop_looks_ahead_without_changing_the_text) {
    const char *stop[] = {"cat"};
    decode_text t;
    text_init(&t, stop, 1, NULL, NULL);
    push(&t, "a c");
    CHECK(text_would_stop(&t, "at", 2));
    CHECK(!text_would_stop(&t, "ow", 2));
    CHECK_EQ_INT(t.len, 3);
    text_free(&t);
}

/* ---- end to end on stories260K ---- */

static char *run_kiln(const char *args, int want_rc) {
    char cmd[16384], *out, *err;
    snprintf(cmd, sizeof cmd, "%s %s", test_kiln_bin(), args);
    int rc = test_run(cmd, &out, &err);
    CHECKF(rc == want_rc, "'kiln %s' exited %d (stderr: %s)", args, rc, err);
    free(err);
    return out;
}

TEST(kiln_generate_stops_before_a_stop_string_that_spans_tokens) {
    const char *path;
    kiln_model_close(stories_model(&path));
    char args[8192];
    snprintf(args, sizeof args, "generate -m %s --temp 0 -n 100 --stop ' named Li'", path);
    char *out = run_kiln(args, 0);
    CHECK_STR(out, "Once upon a time, there was a little girl");
    free(out);
}

static int stream_pieces(void *user, const char *text, size_t len) { return collect(user, text, len); }

/* Whether position E of TEXT falls inside a complete, valid euro sign (E2 82 AC). */
static int inside_a_character(const char *text, size_t len, size_t e) {
    for (size_t i = e >= 2 ? e - 2 : 0; i < e; i++)
        if (i + 3 <= len && !memcmp(text + i, "\xE2\x82\xAC", 3)) return 1;
    return 0;
}

TEST(streamed_pieces_of_generated_bytes_end_on_character_boundaries) {
    kiln_model *m = stories_model(NULL);
    kiln_ctx *c = kiln_ctx_new(m, 0);
    /* Only the byte tokens E2, 82, AC and 'x' may be generated: every split of the euro sign occurs */
    int allowed[4] = {-1, -1, -1, -1};
    const unsigned char want[4] = {0xE2, 0x82, 0xAC, 'x'};
    for (int id = 0; id < 512; id++) {
        size_t len;
        const char *piece = kiln_token_text(m, 5, id, &len);
        for (int k = 0; k < 4; k++)
            if (len == 1 && (unsigned char)piece[0] == want[k] && allowed[k] < 0) allowed[k] = id;
    }
    for (int k = 0; k < 4; k++) CHECKF(allowed[k] >= 0, "no byte token for 0x%02X", want[k]);
    int32_t *ban = malloc(sizeof(int32_t) * 512), n_ban = 0;
    for (int id = 0; id < 512; id++)
        if (id != allowed[0] && id != allowed[1] && id != allowed[2] && id != allowed[3]) ban[n_ban++] = id;
    kiln_gen_params p;
    kiln_gen_defaults(&p);
    p.search = KILN_SEARCH_SAMPLE, p.max_new_tokens = 400, p.seed = 3, p.temperature = 50; /* near uniform */
    p.banned_tokens = ban, p.n_banned_tokens = n_ban;
    sink s = {0};
    p.on_text = stream_pieces, p.user = &s;
    int32_t prompt[1] = {1};
    kiln_gen_result r;
    CHECKF(kiln_generate(c, prompt, 1, &p, &r) == 0, "%s", kiln_last_error());
    CHECK(s.len == r.seqs[0].text_len && memcmp(s.buf, r.seqs[0].text, s.len) == 0);
    int euros = 0;
    for (size_t i = 0; i + 2 < s.len; i++) euros += !memcmp(s.buf + i, "\xE2\x82\xAC", 3);
    CHECKF(euros >= 2, "only %d complete characters in %zu bytes: the test shows little", euros, s.len);
    for (int i = 0; i + 1 < s.calls && i < 64; i++) /* all but the final flush */
        CHECKF(!inside_a_character(s.buf, s.len, s.piece_end[i]), "piece %d ends inside a character", i);
    kiln_gen_result_free(&r);
    free(ban);
    kiln_ctx_free(c), kiln_model_close(m);
}

TEST(kiln_generate_prints_several_sequences_with_their_scores) {
    const char *path;
    kiln_model_close(stories_model(&path));
    char args[8192];
    snprintf(args, sizeof args, "generate -m %s -p 'Once upon a time' -n 12 --beams 4 --num-return 3", path);
    char *out = run_kiln(args, 0);
    CHECKF(strstr(out, "[1] score -") && strstr(out, "[2] score -") && strstr(out, "[3] score -") &&
               !strstr(out, "[4]"),
           "%s", out);
    free(out);
    snprintf(args, sizeof args, "generate -m %s -p 'Once' -n 8 --stochastic-beams --beams 3 --num-return 2 --seed 5", path);
    out = run_kiln(args, 0);
    CHECKF(strstr(out, "[1] score") && strstr(out, "[2] score") && !strstr(out, "[3]"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "generate -m %s -n 8 --num-return 2 --temp 1 --seed 5", path);
    out = run_kiln(args, 0);
    CHECKF(strstr(out, "[1] score") && strstr(out, "[2] score"), "%s", out);
    free(out);
}

TEST(kiln_generate_with_a_draft_or_prompt_lookup_prints_the_plain_greedy_text) {
    const char *path;
    kiln_model_close(stories_model(&path));
    char args[8192];
    snprintf(args, sizeof args, "generate -m %s --temp 0 -n 80", path);
    char *plain = run_kiln(args, 0);
    snprintf(args, sizeof args, "generate -m %s --temp 0 -n 80 --draft %s --draft-n 3", path, path);
    char *spec = run_kiln(args, 0);
    CHECK_STR(spec, plain);
    snprintf(args, sizeof args, "generate -m %s --temp 0 -n 80 --spec-mode ngram", path);
    char *ngram = run_kiln(args, 0);
    CHECK_STR(ngram, plain);
    free(plain), free(spec), free(ngram);
}

TEST(kiln_generate_processor_flags_change_the_text) {
    const char *path;
    kiln_model_close(stories_model(&path));
    char args[8192];
    snprintf(args, sizeof args, "generate -m %s --temp 0 -n 60", path);
    char *plain = run_kiln(args, 0);
    const char *flags[] = {"--repeat-penalty 1.5", "--no-repeat-ngram 2", "--frequency-penalty 1", "--ban 317",
                           "--logit-bias 376+5"}; /* 317 is " Lily", 376 " little" */
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        snprintf(args, sizeof args, "generate -m %s --temp 0 -n 60 %s", path, flags[i]);
        char *out = run_kiln(args, 0);
        CHECKF(strcmp(out, plain) != 0, "%s did not change the greedy text", flags[i]);
        free(out);
    }
    snprintf(args, sizeof args, "generate -m %s -n 30 --seed 4 --top-k 20 --min-p 0.05 --presence-penalty 0.5 "
                                "--samplers 'presence_penalty;top_k;top_p;min_p;temperature'", path);
    free(run_kiln(args, 0));
    free(plain);
}

static void expect_error(const char *args, const char *want) {
    char cmd[16384], *err;
    snprintf(cmd, sizeof cmd, "%s %s", test_kiln_bin(), args);
    int rc = test_run(cmd, NULL, &err);
    CHECKF(rc == 1, "'kiln %s' exited %d, expected 1 (stderr: %s)", args, rc, err);
    CHECKF(strstr(err, want) != NULL, "'kiln %s' said \"%s\", expected it to mention \"%s\"", args, err, want);
    CHECKF(strncmp(err, "kiln: ", 6) == 0 && strchr(err, '\n') == err + strlen(err) - 1, "not one line: \"%s\"", err);
    free(err);
}

TEST(kiln_generate_rejects_bad_decoding_flags_in_one_line) {
    const char *path;
    kiln_model_close(stories_model(&path));
    char args[8192];
    struct {
        const char *flags, *want;
    } bad[] = {
        {"--min-p 1.5", "--min-p: 1.5 is out of range"},
        {"--typical-p 0", "--typical-p: 0 is out of range"},
        {"--repeat-penalty 0", "--repeat-penalty: 0 is out of range"},
        {"--presence-penalty 3", "--presence-penalty: 3 is out of range"},
        {"--logit-bias 12", "--logit-bias: '12' is not TOKEN+BIAS"},
        {"--logit-bias 99999+1", "outside the vocabulary"},
        {"--samplers 'top_k;nucleus'", "unknown processor 'nucleus'"},
        {"--samplers top_k --top-p 0.9", "top_p is set but not named"},
        {"--beams 4 --beam-groups 3", "num_beam_groups 3 must divide num_beams 4"},
        {"--beams 2 --num-return 3", "num_return 3 must not exceed num_beams 2"},
        {"--early-stopping maybe", "--early-stopping: 'maybe'"},
        {"--spec-mode fast", "--spec-mode: 'fast'"},
        {"--spec-mode rejection", "needs a draft model"},
        {"--temp 0 --stochastic-beams", "--temp must be > 0"},
        {"--stop ''", "the stop string is empty"},
        {"--draft /nonexistent.gguf", "/nonexistent.gguf"},
        {"--draft-n 0", "--draft-n: 0 is out of range"},
        {"--beams 2 --draft-n 2 --spec-mode ngram", "speculative decoding works with greedy search and sampling"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "generate -m %s -n 4 %s", path, bad[i].flags);
        expect_error(args, bad[i].want);
    }
}
