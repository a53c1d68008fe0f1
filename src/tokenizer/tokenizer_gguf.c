/* Tokenizers in GGUF, under llama.cpp's keys (gguf-py's Keys.Tokenizer): tokenizer.ggml.model "llama" for
 * sentencepiece-style vocabularies, tokens in sentencepiece form ("▁" for space), f32 scores, i32 token
 * types, u32 special ids, and the add_bos_token / add_space_prefix flags. kiln's byte-level vocabulary
 * is written as a "llama" vocabulary of the 256 byte tokens and recognised as such on reading. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/vocab.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_BOS "tokenizer.ggml.bos_token_id"
#define KEY_EOS "tokenizer.ggml.eos_token_id"
#define KEY_UNK "tokenizer.ggml.unknown_token_id"
#define KEY_ADD_BOS "tokenizer.ggml.add_bos_token"
#define KEY_ADD_SPACE_PREFIX "tokenizer.ggml.add_space_prefix"
#define KEY_MERGES "tokenizer.ggml.merges"
#define KEY_PRE "tokenizer.ggml.pre"
#define KEY_PRE_REGEX "kiln.tokenizer.pre_regex"
#define KEY_IGNORE_MERGES "kiln.tokenizer.ignore_merges"

/* Byte-level BPE as llama.cpp stores it ("gpt2": no scores, merges "a b" by rank, the pre-tokenizer by
 * name), with kiln's own keys for the regex itself and llama 3's ignore_merges. */
static void bpe_to_gguf(const kiln_tokenizer *t, gguf_writer *w) {
    int n_merges;
    char **merges = bpe_merge_strings(t, &n_merges);
    gguf_set_str(w, KEY_MODEL, "gpt2");
    gguf_set_arr_str(w, KEY_MERGES, (const char *const *)merges, NULL, (uint64_t)n_merges);
    gguf_set_str(w, KEY_PRE, bpe_pre(t));
    gguf_set_str(w, KEY_PRE_REGEX, bpe_regex(t));
    if (bpe_ignore_merges(t)) gguf_set_bool(w, KEY_IGNORE_MERGES, true);
    bpe_merges_free(merges);
}

void tokenizer_to_gguf(const kiln_tokenizer *t, gguf_writer *w) {
    int n = t->n_vocab;
    const char **strs = kiln_xmalloc(n * sizeof *strs);
    size_t *lens = kiln_xmalloc(n * sizeof *lens);
    int32_t *types = kiln_xmalloc(n * sizeof *types);
    for (int i = 0; i < n; i++) {
        strs[i] = t->pieces + t->piece_off[i];
        lens[i] = t->piece_len[i];
        types[i] = t->types[i];
    }
    if (t->bpe) bpe_to_gguf(t, w);
    else {
        gguf_set_str(w, KEY_MODEL, "llama");
        gguf_set_arr(w, KEY_SCORES, GGUF_FLOAT32, t->scores, n);
        gguf_set_bool(w, KEY_ADD_SPACE_PREFIX, t->add_space_prefix);
    }
    gguf_set_arr_str(w, KEY_TOKENS, strs, lens, n);
    gguf_set_arr(w, KEY_TYPES, GGUF_INT32, types, n);
    if (t->bos >= 0) gguf_set_u32(w, KEY_BOS, (uint32_t)t->bos);
    if (t->eos >= 0) gguf_set_u32(w, KEY_EOS, (uint32_t)t->eos);
    if (t->unk >= 0) gguf_set_u32(w, KEY_UNK, (uint32_t)t->unk);
    gguf_set_bool(w, KEY_ADD_BOS, t->add_bos);
    free(strs);
    free(lens);
    free(types);
}

/* An optional special-token id: -1 when absent, -2 (error set) when malformed or out of range. */
static int special_id(const gguf_file *g, const char *key, int n_vocab) {
    uint32_t id;
    int rc = gguf_get_u32(g, key, &id);
    if (rc < 0) return -2;
    if (rc == 0) return -1;
    if (id >= (uint32_t)n_vocab) {
        kiln_fail("%s: %s is %u, outside the vocabulary of %d tokens", g->path, key, id, n_vocab);
        return -2;
    }
    return (int)id;
}

/* An optional bool: DEF when absent, -1 (error set) when of another type. */
static int flag(const gguf_file *g, const char *key, int def) {
    bool b;
    int rc = gguf_get_bool(g, key, &b);
    return rc < 0 ? -1 : rc == 0 ? def : b;
}

/* An optional per-token array of TYPE: *DATA NULL when absent; -1 (error set) when mistyped or its
 * length is not the vocabulary's. */
static int token_array(const gguf_file *g, const char *key, gguf_vtype type, int n_vocab, const void **data) {
    uint64_t n;
    *data = NULL;
    int rc = gguf_get_arr(g, key, type, data, &n);
    if (rc < 0) return -1;
    if (rc > 0 && n != (uint64_t)n_vocab)
        return kiln_fail("%s: %s has %llu entries but %s has %d", g->path, key, (unsigned long long)n, KEY_TOKENS,
                         n_vocab);
    return 0;
}

static int is_byte_vocabulary(const char *const *pieces, const uint32_t *lens, const uint8_t *types, int n) {
    if (n != 256) return 0;
    for (int i = 0; i < n; i++)
        if (vocab_piece_byte(pieces[i], lens[i]) != i || (types && types[i] != TOKEN_BYTE)) return 0;
    return 1;
}

/* A string key as a NUL-terminated copy (NULL when absent); -1 in *RC when present but not a string. */
static char *str_key(const gguf_file *g, const char *key, int *rc) {
    gguf_str s;
    int r = gguf_get_str(g, key, &s);
    if (r < 0) *rc = -1;
    if (r <= 0) return NULL;
    char *z = kiln_xmalloc(s.len + 1);
    memcpy(z, s.ptr, s.len);
    z[s.len] = 0;
    return z;
}

static kiln_tokenizer *bpe_from_gguf(const gguf_file *g, const char *const *pieces, const uint32_t *lens,
                                     const uint8_t *types, int n, int bos, int eos, int unk, int add_bos) {
    const void *data;
    uint64_t n_merges = 0;
    int rc = gguf_get_arr(g, KEY_MERGES, GGUF_STRING, &data, &n_merges);
    if (rc < 0) return NULL;
    if (n_merges > INT32_MAX) return kiln_fail("%s: %s has %llu entries", g->path, KEY_MERGES, (unsigned long long)n_merges), NULL;
    const gguf_str *ms = data;
    const char **merges = kiln_xmalloc((n_merges + 1) * sizeof *merges);
    uint32_t *merge_lens = kiln_xmalloc((n_merges + 1) * sizeof *merge_lens);
    kiln_tokenizer *t = NULL;
    int ok = 0, ignore = flag(g, KEY_IGNORE_MERGES, 0);
    for (uint64_t i = 0; i < n_merges; i++) {
        if (ms[i].len > UINT32_MAX) {
            kiln_fail("%s: merge %llu of %s is %llu bytes long", g->path, (unsigned long long)i, KEY_MERGES,
                      (unsigned long long)ms[i].len);
            goto done;
        }
        merges[i] = ms[i].ptr;
        merge_lens[i] = (uint32_t)ms[i].len;
    }
    char *regex = str_key(g, KEY_PRE_REGEX, &ok), *pre = str_key(g, KEY_PRE, &ok);
    if (ok == 0 && ignore >= 0) {
        const char *re = regex;
        static const struct { const char *name, *const *regex; } KNOWN[] = {
            {"gpt-2", &BPE_REGEX_GPT2}, {"default", &BPE_REGEX_GPT2}, {"llama-bpe", &BPE_REGEX_LLAMA3},
            {"llama3", &BPE_REGEX_LLAMA3}, {"qwen2", &BPE_REGEX_QWEN2}};
        for (size_t i = 0; !re && pre && i < sizeof KNOWN / sizeof KNOWN[0]; i++)
            if (!strcmp(pre, KNOWN[i].name)) re = *KNOWN[i].regex;
        if (!re && pre)
            kiln_fail("%s: %s '%.32s' is not a pre-tokenizer kiln knows (gpt-2, llama-bpe, qwen2) and the file has no %s",
                      g->path, KEY_PRE, pre, KEY_PRE_REGEX);
        else {
            bpe_spec spec = {n, pieces, lens, types, (int)n_merges, merges, merge_lens, re, pre, ignore, bos, eos,
                             unk, add_bos};
            t = bpe_build(g->path, &spec);
        }
    }
    free(regex);
    free(pre);
done:
    free(merges);
    free(merge_lens);
    return t;
}

kiln_tokenizer *tokenizer_from_gguf(const gguf_file *g) {
    gguf_str model;
    int rc = gguf_get_str(g, KEY_MODEL, &model);
    if (rc <= 0) return NULL;
    int is_bpe = model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0;
    if (!is_bpe && (model.len != 5 || memcmp(model.ptr, "llama", 5) != 0)) {
        kiln_fail("%s: unsupported tokenizer model '%.*s' (supported: llama, gpt2)", g->path,
                  (int)(model.len > 64 ? 64 : model.len), model.ptr);
        return NULL;
    }
    const void *data;
    uint64_t n64;
    rc = gguf_get_arr(g, KEY_TOKENS, GGUF_STRING, &data, &n64);
    if (rc <= 0) {
        if (rc == 0) kiln_fail("%s: %s is missing", g->path, KEY_TOKENS);
        return NULL;
    }
    if (n64 == 0 || n64 > INT32_MAX) {
        kiln_fail("%s: %s has %llu tokens", g->path, KEY_TOKENS, (unsigned long long)n64);
        return NULL;
    }
    int n = (int)n64;
    const gguf_str *strs = data;
    const void *score_data, *type_data;
    if (token_array(g, KEY_SCORES, GGUF_FLOAT32, n, &score_data) != 0 ||
        token_array(g, KEY_TYPES, GGUF_INT32, n, &type_data) != 0)
        return NULL;
    int bos = special_id(g, KEY_BOS, n), eos = special_id(g, KEY_EOS, n), unk = special_id(g, KEY_UNK, n);
    int add_bos = flag(g, KEY_ADD_BOS, bos >= 0), add_space_prefix = flag(g, KEY_ADD_SPACE_PREFIX, 1);
    if (bos < -1 || eos < -1 || unk < -1 || add_bos < 0 || add_space_prefix < 0) return NULL;

    kiln_tokenizer *t = NULL;
    const char **pieces = kiln_xmalloc(n * sizeof *pieces);
    uint32_t *lens = kiln_xmalloc(n * sizeof *lens);
    float *scores = score_data ? kiln_xmalloc(n * sizeof *scores) : NULL;
    uint8_t *types = type_data ? kiln_xmalloc(n) : NULL;
    if (scores) memcpy(scores, score_data, n * sizeof *scores); /* packed little-endian, maybe unaligned */
    for (int i = 0; i < n; i++) {
        if (strs[i].len > UINT32_MAX) {
            kiln_fail("%s: token %d of %s is %llu bytes long", g->path, i, KEY_TOKENS, (unsigned long long)strs[i].len);
            goto done;
        }
        pieces[i] = strs[i].ptr;
        lens[i] = (uint32_t)strs[i].len;
        if (types) {
            int32_t ty;
            memcpy(&ty, (const char *)type_data + 4 * (size_t)i, 4);
            if (ty < TOKEN_NORMAL || ty > TOKEN_BYTE) {
                kiln_fail("%s: token %d has %s %d (known: 1 to 6)", g->path, i, KEY_TYPES, ty);
                goto done;
            }
            types[i] = (uint8_t)ty;
        }
    }
    if (is_bpe) {
        t = bpe_from_gguf(g, pieces, lens, types, n, bos, eos, unk, add_bos);
        goto done;
    }
    if (is_byte_vocabulary(pieces, lens, types, n)) {
        t = tokenizer_new_bytes();
        goto done;
    }
    t = vocab_build(g->path, n, pieces, lens, scores, types, bos, eos, unk);
    if (t) {
        t->add_bos = add_bos;
        t->add_space_prefix = add_space_prefix;
    }
done:
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    return t;
}
