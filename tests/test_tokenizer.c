#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "base/rng.h"
#include "test.h"
#include "tokenizer/tokenizer.h"

static kiln_tokenizer *load_llama2(void) {
    kiln_tokenizer *t = tokenizer_load_llama2c(test_data("llama2-tokenizer/tokenizer.bin"), 32000);
    CHECKF(t, "%s", kiln_errmsg());
    return t;
}

static kiln_tokenizer *load_tok512(void) {
    kiln_tokenizer *t = tokenizer_load_llama2c(test_data("stories260K/tok512.bin"), 512);
    CHECKF(t, "%s", kiln_errmsg());
    return t;
}

/* Fails naming TEXT and the first id that differs. */
static void check_encoding(const kiln_tokenizer *t, const char *text, size_t len, const int32_t *want, int n_want) {
    int32_t got[4096];
    int n = tokenizer_encode(t, text, len, 1, got, 4096);
    CHECKF(n >= 0, "encoding '%s': %s", text, kiln_errmsg());
    for (int i = 0; i < n && i < n_want; i++)
        CHECKF(got[i] == want[i], "encoding '%s': id %d is %d, expected %d", text, i, got[i], want[i]);
    CHECKF(n == n_want, "encoding '%s': %d ids, expected %d", text, n, n_want);
}

/* The text IDS decode to (after BOS when ids[0] is it), into OUT (NUL-terminated); returns its length. */
static size_t decode_all(const kiln_tokenizer *t, const int32_t *ids, int n, char *out) {
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *s = tokenizer_decode(t, i > 0 ? ids[i - 1] : -1, ids[i], &len);
        memcpy(out + used, s, len);
        used += len;
    }
    out[used] = 0;
    return used;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

TEST(byte_tokenizer_encodes_each_byte_as_its_id_without_bos) {
    kiln_tokenizer *t = tokenizer_new_bytes();
    char text[256];
    for (int b = 0; b < 256; b++) text[b] = (char)b;
    int32_t ids[256];
    CHECK_EQ_INT(tokenizer_encode(t, text, 256, 1, ids, 256), 256);
    for (int b = 0; b < 256; b++) CHECK_EQ_INT(ids[b], b);
    CHECK_EQ_INT(tokenizer_n_vocab(t), 256);
    CHECK_EQ_INT(tokenizer_bos(t), -1);
    CHECK_EQ_INT(tokenizer_eos(t), -1);
    CHECK_EQ_INT(tokenizer_add_bos(t), 0);
    tokenizer_free(t);
}

TEST(byte_tokenizer_decodes_each_id_to_its_byte) {
    kiln_tokenizer *t = tokenizer_new_bytes();
    for (int b = 0; b < 256; b++) {
        size_t len;
        const char *s = tokenizer_decode(t, b == 0 ? -1 : b - 1, b, &len);
        CHECK_EQ_INT(len, 1);
        CHECK_EQ_INT((unsigned char)s[0], b);
    }
    tokenizer_free(t);
}

TEST(byte_tokenizer_fails_when_output_is_too_small) {
    kiln_tokenizer *t = tokenizer_new_bytes();
    int32_t ids[4];
    CHECK_EQ_INT(tokenizer_encode(t, "hello", 5, 0, ids, 4), -1);
    CHECKF(strstr(kiln_errmsg(), "4 allowed"), "%s", kiln_errmsg());
    tokenizer_free(t);
}

TEST(llama2_tokenizer_gives_the_known_encodings) {
    kiln_tokenizer *t = load_llama2();
    check_encoding(t, "", 0, (int32_t[]){1}, 1);
    const char *a = "I believe the meaning of life is";
    check_encoding(t, a, strlen(a), (int32_t[]){1, 306, 4658, 278, 6593, 310, 2834, 338}, 8);
    const char *b = "Simply put, the theory of relativity states that ";
    check_encoding(t, b, strlen(b), (int32_t[]){1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871},
                   13);
    tokenizer_free(t);
}

static int hex_value(char c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

/* Checks T against every case of tests/golden/spm_cases.txt (written by tests/ref/spm_cases.py). */
static void check_golden_cases(const kiln_tokenizer *t) {
    size_t size;
    char *golden = kiln_read_file("tests/golden/spm_cases.txt", &size);
    CHECKF(golden, "%s", kiln_errmsg());
    int n_cases = 0;
    for (char *line = strtok(golden, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        CHECKF(tab, "golden line without a tab: %s", line);
        char text[1024];
        size_t len = 0;
        for (char *h = line; h < tab; h += 2) text[len++] = (char)(hex_value(h[0]) * 16 + hex_value(h[1]));
        text[len] = 0;
        int32_t want[1024];
        int n_want = 0;
        for (char *p = tab + 1, *end; *p; p = end) {
            want[n_want++] = (int32_t)strtol(p, &end, 10);
            CHECK(end != p);
        }
        check_encoding(t, text, len, want, n_want);
        n_cases++;
    }
    CHECKF(n_cases >= 30, "only %d golden cases", n_cases);
    free(golden);
}

TEST(llama2_tokenizer_matches_sentencepiece_on_golden_cases) {
    kiln_tokenizer *t = load_llama2();
    check_golden_cases(t);
    tokenizer_free(t);
}

TEST(control_token_text_in_input_is_encoded_as_plain_text) {
    kiln_tokenizer *t = load_llama2();
    int32_t ids[64];
    int n = tokenizer_encode(t, "<s></s><unk><0x41>", 18, 0, ids, 64);
    CHECK(n > 4);
    for (int i = 0; i < n; i++) CHECKF(ids[i] > 258, "id %d is %d, a special or byte token", i, ids[i]);
    tokenizer_free(t);
}

TEST(decode_turns_the_space_marker_into_a_space_and_drops_it_after_bos_only) {
    kiln_tokenizer *t = load_llama2();
    size_t len;
    const char *s = tokenizer_decode(t, 306, 278, &len); /* "▁the" */
    CHECK_EQ_INT(len, 4);
    CHECK(memcmp(s, " the", 4) == 0);
    s = tokenizer_decode(t, 1, 278, &len);
    CHECK_EQ_INT(len, 3);
    CHECK(memcmp(s, "the", 3) == 0);
    s = tokenizer_decode(t, -1, 278, &len);
    CHECK_EQ_INT(len, 4);
    tokenizer_free(t);
}

TEST(decode_gives_the_raw_byte_of_byte_tokens_even_after_bos) {
    kiln_tokenizer *t = load_llama2();
    size_t len;
    const char *s = tokenizer_decode(t, 1, 3 + 0x20, &len); /* <0x20> */
    CHECK_EQ_INT(len, 1);
    CHECK_EQ_INT(s[0], ' ');
    s = tokenizer_decode(t, 5, 3 + 0xF0, &len);
    CHECK_EQ_INT(len, 1);
    CHECK_EQ_INT((unsigned char)s[0], 0xF0);
    tokenizer_free(t);
}

TEST(decode_gives_nothing_for_control_tokens_and_out_of_range_ids) {
    kiln_tokenizer *t = load_llama2();
    int ids[] = {0, 1, 2, -1, -1000, 32000, 1 << 30};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        size_t len = 99;
        const char *s = tokenizer_decode(t, 1, ids[i], &len);
        CHECKF(s && len == 0, "id %d decodes to %zu bytes", ids[i], len);
    }
    tokenizer_free(t);
}

TEST(decode_of_encode_gives_back_unicode_text) {
    kiln_tokenizer *t = load_llama2();
    const char *texts[] = {"Hello, world!", "  two leading spaces", "tabs\tand\nnewlines\n", "Grüße, 日本語, 😀🦙",
                           "trailing ", " ", "x"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t ids[256];
        char back[1024];
        int n = tokenizer_encode(t, texts[i], strlen(texts[i]), 1, ids, 256);
        CHECKF(n > 0, "%s", kiln_errmsg());
        decode_all(t, ids, n, back);
        CHECK_STR(back, texts[i]);
    }
    tokenizer_free(t);
}

TEST(decode_of_encode_gives_back_random_bytes_including_invalid_utf8) {
    kiln_tokenizer *t = load_tok512();
    kiln_rng r;
    kiln_rng_seed(&r, 7);
    for (int iter = 0; iter < 300; iter++) {
        char text[96], back[1024];
        size_t len = kiln_rng_below(&r, sizeof text);
        for (size_t i = 0; i < len; i++) /* half the strings mostly ASCII, half any byte */
            text[i] = iter % 2 ? (char)kiln_rng_below(&r, 256) : " aeinost\n\xc3\xa9\xe2\x96\x80"[kiln_rng_below(&r, 14)];
        int32_t ids[512];
        int n = tokenizer_encode(t, text, len, 1, ids, 512);
        CHECKF(n > 0, "%s", kiln_errmsg());
        size_t back_len = decode_all(t, ids, n, back);
        CHECKF(back_len == len && memcmp(back, text, len) == 0, "iteration %d: %zu bytes came back as %zu", iter, len,
               back_len);
    }
    tokenizer_free(t);
}

TEST(stories260K_tokenizer_merges_and_round_trips) {
    kiln_tokenizer *t = load_tok512();
    const char *text = "Once upon a time, there was a little girl named Lily.";
    int32_t ids[128];
    char back[256];
    int n = tokenizer_encode(t, text, strlen(text), 1, ids, 128);
    CHECKF(n > 1 && n < (int)strlen(text) / 2, "%d ids", n);
    CHECK_EQ_INT(ids[0], 1);
    decode_all(t, ids, n, back);
    CHECK_STR(back, text);
    tokenizer_free(t);
}

TEST(encode_fails_when_output_is_too_small) {
    kiln_tokenizer *t = load_llama2();
    int32_t ids[8];
    const char *text = "I believe the meaning of life is"; /* 8 ids with BOS */
    CHECK_EQ_INT(tokenizer_encode(t, text, strlen(text), 1, ids, 8), 8);
    CHECK_EQ_INT(tokenizer_encode(t, text, strlen(text), 1, ids, 7), -1);
    CHECKF(strstr(kiln_errmsg(), "more than 7"), "%s", kiln_errmsg());
    CHECK_EQ_INT(tokenizer_encode(t, "", 0, 1, ids, 0), -1);
    tokenizer_free(t);
}

TEST(a_megabyte_of_text_encodes_and_decodes_back) { /* speed is measured in bench, never asserted */
    kiln_tokenizer *t = load_llama2();
    size_t size = 1 << 20, used = 0;
    char *text = kiln_xmalloc(size + 64);
    kiln_rng r;
    kiln_rng_seed(&r, 1);
    while (used < size) { /* English-ish: random pieces of the vocabulary */
        size_t len;
        const char *s = tokenizer_decode(t, 0, 259 + (int)kiln_rng_below(&r, 31741), &len);
        memcpy(text + used, s, len);
        used += len;
    }
    int32_t *ids = kiln_xmalloc((used + 1) * sizeof *ids);
    int n = tokenizer_encode(t, text, used, 1, ids, (int)used + 1);
    CHECKF(n > 0, "%s", kiln_errmsg());
    char *back = kiln_xmalloc(used + 64);
    size_t at = 0;
    for (int i = 1; i < n; i++) {
        size_t len;
        const char *s = tokenizer_decode(t, ids[i - 1], ids[i], &len);
        memcpy(back + at, s, len);
        at += len;
    }
    CHECKF(at == used && memcmp(back, text, used) == 0, "decoded %zu bytes of %zu differ", at, used);
    free(back);
    free(ids);
    free(text);
    tokenizer_free(t);
}

TEST(llama2c_load_rejects_a_truncated_file_naming_the_token) {
    size_t size;
    char *data = kiln_read_file(test_data("stories260K/tok512.bin"), &size);
    CHECKF(data, "%s", kiln_errmsg());
    const char *path = test_tmp("truncated.bin");
    write_file(path, data, size - 10);
    CHECK(tokenizer_load_llama2c(path, 512) == NULL);
    CHECKF(strstr(kiln_errmsg(), path) && strstr(kiln_errmsg(), "truncated at token 511"), "%s", kiln_errmsg());
    write_file(path, data, 2);
    CHECK(tokenizer_load_llama2c(path, 512) == NULL);
    CHECKF(strstr(kiln_errmsg(), path), "%s", kiln_errmsg());
    free(data);
}

TEST(llama2c_load_rejects_a_garbage_token_length_naming_the_token) {
    size_t size;
    char *data = kiln_read_file(test_data("stories260K/tok512.bin"), &size);
    CHECKF(data, "%s", kiln_errmsg());
    memset(data + 4 + 4, 0xff, 4); /* length of token 0 becomes -1 */
    const char *path = test_tmp("garbage.bin");
    write_file(path, data, size);
    CHECK(tokenizer_load_llama2c(path, 512) == NULL);
    CHECKF(strstr(kiln_errmsg(), path) && strstr(kiln_errmsg(), "token 0 has length -1"), "%s", kiln_errmsg());
    static const char garbage[] = "\x07\0\0\0garbage, not a tokenizer at all";
    write_file(path, garbage, sizeof garbage - 1);
    CHECK(tokenizer_load_llama2c(path, 512) == NULL);
    CHECKF(strstr(kiln_errmsg(), path) && strstr(kiln_errmsg(), "token 0"), "%s", kiln_errmsg());
    free(data);
}

TEST(llama2c_load_rejects_a_vocabulary_size_the_file_disagrees_with) {
    const char *path = test_data("stories260K/tok512.bin");
    CHECK(tokenizer_load_llama2c(path, 511) == NULL);
    CHECKF(strstr(kiln_errmsg(), path) && strstr(kiln_errmsg(), "more than 511 tokens"), "%s", kiln_errmsg());
    CHECK(tokenizer_load_llama2c(path, 513) == NULL);
    CHECKF(strstr(kiln_errmsg(), "truncated at token 512"), "%s", kiln_errmsg());
    CHECK(tokenizer_load_llama2c(path, 2) == NULL);
    CHECK(tokenizer_load_llama2c(test_tmp("missing.bin"), 512) == NULL);
    CHECKF(strstr(kiln_errmsg(), "missing.bin"), "%s", kiln_errmsg());
}

/* ---- GGUF ---- */

static const char *write_tokenizer_gguf(const kiln_tokenizer *t, const char *name) {
    const char *path = test_tmp(name);
    gguf_writer *w = gguf_writer_new();
    tokenizer_to_gguf(t, w);
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    return path;
}

static gguf_file *open_gguf(const char *path) {
    gguf_file *g = gguf_open(path);
    CHECKF(g, "%s", kiln_errmsg());
    return g;
}

/* The tokens of G as the writer takes them (pointing into G). */
static int gguf_tokens(const gguf_file *g, const char ***strs, size_t **lens) {
    const void *data;
    uint64_t n;
    CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING, &data, &n) == 1);
    *strs = kiln_xmalloc((n + 1) * sizeof **strs);
    *lens = kiln_xmalloc((n + 1) * sizeof **lens);
    for (uint64_t i = 0; i < n; i++) {
        (*strs)[i] = ((const gguf_str *)data)[i].ptr;
        (*lens)[i] = ((const gguf_str *)data)[i].len;
    }
    return (int)n;
}

/* Loads a GGUF file holding the keys of the llama2.c tok512 vocabulary as EDIT leaves them; NULL if refused. */
static kiln_tokenizer *load_edited(void (*edit)(gguf_writer *w, const gguf_file *g)) {
    kiln_tokenizer *t = load_tok512();
    gguf_file *g = open_gguf(write_tokenizer_gguf(t, "tok512.gguf"));
    gguf_writer *w = gguf_writer_new();
    edit(w, g);
    gguf_copy_kvs(w, g);
    const char *path = test_tmp("edited.gguf");
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    gguf_close(g);
    tokenizer_free(t);
    g = open_gguf(path);
    kiln_tokenizer *edited = tokenizer_from_gguf(g);
    gguf_close(g);
    return edited;
}

TEST(llama2_tokenizer_round_trips_through_gguf) {
    kiln_tokenizer *t = load_llama2();
    gguf_file *g = open_gguf(write_tokenizer_gguf(t, "llama2.gguf"));
    kiln_tokenizer *back = tokenizer_from_gguf(g);
    CHECKF(back, "%s", kiln_errmsg());
    CHECK_EQ_INT(tokenizer_n_vocab(back), 32000);
    CHECK_EQ_INT(tokenizer_bos(back), 1);
    CHECK_EQ_INT(tokenizer_eos(back), 2);
    CHECK_EQ_INT(tokenizer_add_bos(back), 1);
    for (int id = 0; id < 32000; id++) {
        size_t a_len, b_len;
        const char *a = tokenizer_decode(t, 5, id, &a_len), *b = tokenizer_decode(back, 5, id, &b_len);
        CHECKF(a_len == b_len && memcmp(a, b, a_len) == 0, "token %d decodes differently", id);
    }
    check_golden_cases(back);
    tokenizer_free(back);
    gguf_close(g);
    tokenizer_free(t);
}

TEST(tokenizer_gguf_uses_llama_cpp_keys_and_token_types) {
    kiln_tokenizer *t = load_llama2();
    gguf_file *g = open_gguf(write_tokenizer_gguf(t, "llama2.gguf"));
    gguf_str model;
    CHECK(gguf_get_str(g, "tokenizer.ggml.model", &model) == 1);
    CHECK(model.len == 5 && memcmp(model.ptr, "llama", 5) == 0);
    const void *data;
    uint64_t n;
    CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING, &data, &n) == 1 && n == 32000);
    const gguf_str *tokens = data;
    CHECK(tokens[278].len == 6 && memcmp(tokens[278].ptr, "\xe2\x96\x81the", 6) == 0); /* "▁the" */
    CHECK(tokens[1].len == 3 && memcmp(tokens[1].ptr, "<s>", 3) == 0);
    CHECK(gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_FLOAT32, &data, &n) == 1 && n == 32000);
    CHECK(gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_INT32, &data, &n) == 1 && n == 32000);
    int32_t types[300];
    memcpy(types, data, sizeof types);
    CHECK_EQ_INT(types[0], 2);   /* <unk>: unknown */
    CHECK_EQ_INT(types[1], 3);   /* <s>: control */
    CHECK_EQ_INT(types[2], 3);   /* </s>: control */
    CHECK_EQ_INT(types[3], 6);   /* <0x00>: byte */
    CHECK_EQ_INT(types[258], 6); /* <0xFF>: byte */
    CHECK_EQ_INT(types[278], 1); /* ▁the: normal */
    uint32_t id;
    CHECK(gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &id) == 1 && id == 1);
    CHECK(gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &id) == 1 && id == 2);
    CHECK(gguf_get_u32(g, "tokenizer.ggml.unknown_token_id", &id) == 1 && id == 0);
    bool b;
    CHECK(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) == 1 && b);
    CHECK(gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b) == 1 && b);
    gguf_close(g);
    tokenizer_free(t);
}

TEST(byte_tokenizer_round_trips_through_gguf_as_bytes) {
    kiln_tokenizer *t = tokenizer_new_bytes();
    gguf_file *g = open_gguf(write_tokenizer_gguf(t, "bytes.gguf"));
    const void *data;
    uint64_t n;
    CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING, &data, &n) == 1 && n == 256);
    CHECK(memcmp(((const gguf_str *)data)[0xAB].ptr, "<0xAB>", 6) == 0);
    CHECK(gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_INT32, &data, &n) == 1 && n == 256);
    for (int i = 0; i < 256; i++) CHECK_EQ_INT(((const int32_t *)data)[i], 6);
    bool b;
    CHECK(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) == 1 && !b);
    CHECK(gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b) == 1 && !b);
    CHECK(gguf_find_kv(g, "tokenizer.ggml.bos_token_id") == NULL);
    CHECK(gguf_find_kv(g, "tokenizer.ggml.eos_token_id") == NULL);
    kiln_tokenizer *back = tokenizer_from_gguf(g);
    CHECKF(back, "%s", kiln_errmsg());
    CHECK_EQ_INT(tokenizer_n_vocab(back), 256);
    CHECK_EQ_INT(tokenizer_bos(back), -1);
    int32_t ids[8];
    CHECK_EQ_INT(tokenizer_encode(back, "a b", 3, 1, ids, 8), 3); /* no BOS, no dummy prefix, no merges */
    CHECK(ids[0] == 'a' && ids[1] == ' ' && ids[2] == 'b');
    tokenizer_free(back);
    gguf_close(g);
    tokenizer_free(t);
}

TEST(gguf_without_a_tokenizer_gives_null_and_no_error) {
    const char *path = test_tmp("no_tokenizer.gguf");
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "llama");
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    gguf_file *g = open_gguf(path);
    kiln_fail("untouched");
    CHECK(tokenizer_from_gguf(g) == NULL);
    CHECK_STR(kiln_errmsg(), "untouched");
    gguf_close(g);
}

static void set_model_bert(gguf_writer *w, const gguf_file *g) { gguf_set_str(w, "tokenizer.ggml.model", "bert"); }

TEST(gguf_tokenizer_model_bert_is_refused_by_name) {
    CHECK(load_edited(set_model_bert) == NULL);
    CHECKF(strstr(kiln_errmsg(), "edited.gguf: unsupported tokenizer model 'bert' (supported: llama, gpt2)"), "%s",
           kiln_errmsg());
}

static void set_model_gpt2(gguf_writer *w, const gguf_file *g) { gguf_set_str(w, "tokenizer.ggml.model", "gpt2"); }

TEST(gguf_tokenizer_model_gpt2_over_a_sentencepiece_vocabulary_is_refused_naming_the_token) {
    CHECK(load_edited(set_model_gpt2) == NULL);
    CHECKF(strstr(kiln_errmsg(), "edited.gguf: token 0 has type 2, which a byte-level BPE vocabulary does not have"),
           "%s", kiln_errmsg());
}

static void drop_a_score(gguf_writer *w, const gguf_file *g) {
    const void *data;
    uint64_t n;
    CHECK(gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_FLOAT32, &data, &n) == 1);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, data, n - 1);
}

TEST(gguf_tokenizer_arrays_of_different_lengths_are_refused) {
    CHECK(load_edited(drop_a_score) == NULL);
    CHECKF(strstr(kiln_errmsg(), "tokenizer.ggml.scores has 511 entries but tokenizer.ggml.tokens has 512"), "%s",
           kiln_errmsg());
}

static void set_scores_as_i32(gguf_writer *w, const gguf_file *g) {
    int32_t zeros[512] = {0};
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_INT32, zeros, 512);
}

TEST(gguf_tokenizer_array_of_the_wrong_type_is_refused) {
    CHECK(load_edited(set_scores_as_i32) == NULL);
    CHECKF(strstr(kiln_errmsg(), "tokenizer.ggml.scores"), "%s", kiln_errmsg());
}

static void set_bos_out_of_range(gguf_writer *w, const gguf_file *g) { gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 512); }

TEST(gguf_special_token_id_out_of_range_is_refused) {
    CHECK(load_edited(set_bos_out_of_range) == NULL);
    CHECKF(strstr(kiln_errmsg(), "tokenizer.ggml.bos_token_id is 512, outside the vocabulary of 512 tokens"), "%s",
           kiln_errmsg());
}

static void set_bad_token_types(gguf_writer *w, const gguf_file *g) {
    int32_t types[512];
    for (int i = 0; i < 512; i++) types[i] = 1;
    types[300] = 9;
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, 512);
}

static void set_normal_token_as_byte(gguf_writer *w, const gguf_file *g) {
    int32_t types[512];
    for (int i = 0; i < 512; i++) types[i] = 1;
    types[400] = 6;
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, 512);
}

TEST(gguf_unknown_or_inconsistent_token_types_are_refused_naming_the_token) {
    CHECK(load_edited(set_bad_token_types) == NULL);
    CHECKF(strstr(kiln_errmsg(), "token 300 has tokenizer.ggml.token_type 9"), "%s", kiln_errmsg());
    CHECK(load_edited(set_normal_token_as_byte) == NULL);
    CHECKF(strstr(kiln_errmsg(), "token 400 is a byte token"), "%s", kiln_errmsg());
}

static void only_tokens(gguf_writer *w, const gguf_file *g) {
    const char **strs;
    size_t *lens;
    int n = gguf_tokens(g, &strs, &lens);
    gguf_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", strs, lens, n);
    free(strs);
    free(lens);
}

/* gguf_copy_kvs adds every key the writer lacks, so a stripped file is written from scratch. */
TEST(gguf_tokenizer_without_scores_types_or_ids_gets_defaults) {
    kiln_tokenizer *t = load_tok512();
    gguf_file *g = open_gguf(write_tokenizer_gguf(t, "tok512.gguf"));
    gguf_writer *w = gguf_writer_new();
    only_tokens(w, g);
    const char *path = test_tmp("stripped.gguf");
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    gguf_close(g);
    g = open_gguf(path);
    CHECK(gguf_find_kv(g, "tokenizer.ggml.scores") == NULL);
    kiln_tokenizer *back = tokenizer_from_gguf(g);
    CHECKF(back, "%s", kiln_errmsg());
    CHECK_EQ_INT(tokenizer_bos(back), -1);
    const char *text = "Once upon a time\n\xff";
    int32_t ids[64];
    char out[128];
    int n = tokenizer_encode(back, text, strlen(text), 1, ids, 64);
    CHECKF(n > 0, "%s", kiln_errmsg());
    CHECK_EQ_INT(ids[n - 1], 3 + 0xff); /* byte tokens were recognised without token types */
    decode_all(back, ids, n, out);
    CHECK_STR(out, " Once upon a time\n\xff"); /* no BOS, so the dummy prefix stays */
    tokenizer_free(back);
    gguf_close(g);
    tokenizer_free(t);
}

/* A piece with "▁" after another character stops the word-by-word shortcut; encodings must not change
 * as long as that piece never applies ("Ω" is in none of the golden cases). */
TEST(encoding_without_word_splitting_gives_the_same_ids) {
    kiln_tokenizer *t = load_llama2();
    gguf_file *g = open_gguf(write_tokenizer_gguf(t, "llama2.gguf"));
    const char **strs;
    size_t *lens;
    int n = gguf_tokens(g, &strs, &lens);
    const void *data;
    uint64_t n_arr;
    float *scores = kiln_xmalloc((n + 1) * sizeof *scores);
    int32_t *types = kiln_xmalloc((n + 1) * sizeof *types);
    CHECK(gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_FLOAT32, &data, &n_arr) == 1);
    memcpy(scores, data, n * sizeof *scores);
    CHECK(gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_INT32, &data, &n_arr) == 1);
    memcpy(types, data, n * sizeof *types);
    strs[n] = "\xce\xa9\xe2\x96\x81"; /* "Ω▁" */
    lens[n] = 5;
    scores[n] = -1e6f;
    types[n] = 1;
    gguf_writer *w = gguf_writer_new();
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", strs, lens, n + 1);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, n + 1);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, n + 1);
    gguf_copy_kvs(w, g);
    const char *path = test_tmp("unsplit.gguf");
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    gguf_file *g2 = open_gguf(path);
    kiln_tokenizer *unsplit = tokenizer_from_gguf(g2);
    CHECKF(unsplit, "%s", kiln_errmsg());
    check_golden_cases(unsplit);
    int32_t ids[8];
    CHECK_EQ_INT(tokenizer_encode(unsplit, "Ω ", 3, 0, ids, 8), 2); /* "▁" then the new piece */
    CHECK_EQ_INT(ids[1], n);
    tokenizer_free(unsplit);
    gguf_close(g2);
    free(strs);
    free(lens);
    free(scores);
    free(types);
    gguf_close(g);
    tokenizer_free(t);
}
