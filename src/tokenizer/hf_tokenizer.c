/* Hugging Face tokenizer files in and out. */
#include "tokenizer/hf_tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/file.h"
#include "tokenizer/bpe.h"
#include "tokenizer/sp_model.h"
#include "tokenizer/vocab.h"

/* The vocabulary being assembled: pieces by id (holes stay empty and unused). */
typedef struct {
    const char *name;
    int n, cap;
    const char **pieces;
    uint32_t *lens;
    uint8_t *types;
    const char **merges;
    uint32_t *merge_lens;
    char **merge_owned; /* "a b" strings made from [a, b] pairs */
    int n_merges;
    int bos, eos, unk, add_bos, ignore_merges;
    const char *regex;
    size_t max_id; /* ids past this are refused: a vocabulary is (nearly) dense, so ids bound its size */
} hf_vocab;

static void vocab_free(hf_vocab *v) {
    free(v->pieces);
    free(v->lens);
    free(v->types);
    free(v->merges);
    free(v->merge_lens);
    for (int i = 0; v->merge_owned && i < v->n_merges; i++) free(v->merge_owned[i]);
    free(v->merge_owned);
}

static void grow(hf_vocab *v, int n) {
    if (n <= v->n) return;
    if (n > v->cap) { /* ids come in any order: grow by doubling */
        v->cap = n > 2 * v->cap ? n : 2 * v->cap;
        v->pieces = kiln_xrealloc(v->pieces, v->cap * sizeof *v->pieces);
        v->lens = kiln_xrealloc(v->lens, v->cap * sizeof *v->lens);
        v->types = kiln_xrealloc(v->types, v->cap);
    }
    for (int i = v->n; i < n; i++) {
        v->pieces[i] = "";
        v->lens[i] = 0;
        v->types[i] = TOKEN_UNUSED;
    }
    v->n = n;
}

static int set_piece(hf_vocab *v, json_int_t id, const char *piece, size_t len, uint8_t type) {
    if (id < 0 || (size_t)id > v->max_id || id >= (1 << 26))
        return kiln_fail("%s: token '%.32s' has id %lld (the file has %zu tokens)", v->name, piece, (long long)id,
                         v->max_id / 2);
    grow(v, (int)id + 1);
    v->pieces[id] = piece;
    v->lens[id] = (uint32_t)len;
    v->types[id] = type;
    return 0;
}

static int read_vocab(hf_vocab *v, json_t *vocab) {
    if (!json_is_object(vocab)) return kiln_fail("%s: the model has no 'vocab' object", v->name);
    const char *key;
    json_t *id;
    json_object_foreach(vocab, key, id) {
        if (!json_is_integer(id)) return kiln_fail("%s: vocab entry '%.32s' has no integer id", v->name, key);
        if (set_piece(v, json_integer_value(id), key, strlen(key), TOKEN_NORMAL) < 0) return -1;
    }
    return 0;
}

static int read_merges(hf_vocab *v, json_t *merges) {
    if (!json_is_array(merges)) return kiln_fail("%s: the model has no 'merges' array", v->name);
    size_t n = json_array_size(merges);
    v->merges = kiln_xmalloc((n + 1) * sizeof *v->merges);
    v->merge_lens = kiln_xmalloc((n + 1) * sizeof *v->merge_lens);
    v->merge_owned = kiln_xcalloc(n + 1, sizeof *v->merge_owned);
    for (size_t i = 0; i < n; i++, v->n_merges++) {
        json_t *m = json_array_get(merges, i);
        if (json_is_string(m)) {
            v->merges[i] = json_string_value(m);
            v->merge_lens[i] = (uint32_t)json_string_length(m);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            const char *a = json_string_value(json_array_get(m, 0)), *b = json_string_value(json_array_get(m, 1));
            size_t la = strlen(a), lb = strlen(b);
            char *s = v->merge_owned[i] = kiln_xmalloc(la + lb + 2);
            memcpy(s, a, la);
            s[la] = ' ';
            memcpy(s + la + 1, b, lb + 1);
            v->merges[i] = s;
            v->merge_lens[i] = (uint32_t)(la + lb + 1);
        } else {
            return kiln_fail("%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", v->name, i);
        }
    }
    return 0;
}

static int read_added(hf_vocab *v, json_t *added) {
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
        if (!json_is_integer(id) || !json_is_string(content))
            return kiln_fail("%s: added token %zu needs an integer id and a content string", v->name, i);
        uint8_t type = json_is_true(json_object_get(a, "special")) ? TOKEN_CONTROL : TOKEN_USER_DEFINED;
        if (set_piece(v, json_integer_value(id), json_string_value(content), json_string_length(content), type) < 0)
            return -1;
    }
    return 0;
}

/* The pre-tokenizer: ByteLevel with its GPT-2 regex, or a Split by a regex (isolating the matches)
 * followed by ByteLevel without one. */
static int read_pre_tokenizer(hf_vocab *v, json_t *pre) {
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (type && !strcmp(type, "ByteLevel")) {
        if (json_is_true(json_object_get(pre, "add_prefix_space")))
            return kiln_fail("%s: ByteLevel add_prefix_space is not supported", v->name);
        v->regex = json_is_false(json_object_get(pre, "use_regex")) ? "[\\s\\S]+" : BPE_REGEX_GPT2;
        return 0;
    }
    json_t *seq = json_object_get(pre, "pretokenizers");
    if (type && !strcmp(type, "Sequence") && json_array_size(seq) == 2) {
        json_t *split = json_array_get(seq, 0), *bl = json_array_get(seq, 1);
        const char *st = json_string_value(json_object_get(split, "type")), *bt = json_string_value(json_object_get(bl, "type"));
        const char *re = json_string_value(json_object_get(json_object_get(split, "pattern"), "Regex"));
        const char *behavior = json_string_value(json_object_get(split, "behavior"));
        if (st && bt && re && behavior && !strcmp(st, "Split") && !strcmp(bt, "ByteLevel") &&
            !strcmp(behavior, "Isolated") && !json_is_true(json_object_get(split, "invert")) &&
            json_is_false(json_object_get(bl, "use_regex")) && !json_is_true(json_object_get(bl, "add_prefix_space"))) {
            v->regex = re;
            return 0;
        }
    }
    return kiln_fail("%s: pre_tokenizer '%s' is not supported (supported: ByteLevel, or Split by a regex then "
                     "ByteLevel)", v->name, type ? type : "(none)");
}

static int token_id(const hf_vocab *v, const char *content) {
    if (!content) return -1;
    size_t len = strlen(content);
    for (int i = 0; i < v->n; i++)
        if (v->lens[i] == len && !memcmp(v->pieces[i], content, len)) return i;
    return -1;
}

/* A special token of tokenizer_config.json: a string or an {"content": ...} object. */
static const char *config_token(json_t *config, const char *key) {
    json_t *t = json_object_get(config, key);
    return json_is_object(t) ? json_string_value(json_object_get(t, "content")) : json_string_value(t);
}

/* BOS, EOS and UNK from tokenizer_config.json; BOS also from a post-processor template that starts with a
 * special token (llama 3). */
static void read_specials(hf_vocab *v, json_t *config, json_t *post) {
    v->bos = token_id(v, config_token(config, "bos_token"));
    v->eos = token_id(v, config_token(config, "eos_token"));
    if (v->unk < 0) v->unk = token_id(v, config_token(config, "unk_token"));
    json_t *single = json_object_get(post, "single"), *first = json_array_get(single, 0);
    const char *tmpl_bos = json_string_value(json_object_get(json_object_get(first, "SpecialToken"), "id"));
    if (tmpl_bos && token_id(v, tmpl_bos) >= 0) {
        v->bos = token_id(v, tmpl_bos);
        v->add_bos = 1;
    }
    if (json_is_true(json_object_get(config, "add_bos_token")) && v->bos >= 0) v->add_bos = 1;
}

static kiln_tokenizer *build(hf_vocab *v) {
    if (v->n == 0) return kiln_fail("%s: empty vocabulary", v->name), NULL;
    bpe_spec spec = {v->n, v->pieces, v->lens, v->types, v->n_merges, v->merges, v->merge_lens, v->regex, NULL,
                     v->ignore_merges, v->bos, v->eos, v->unk, v->add_bos};
    return bpe_build(v->name, &spec);
}

kiln_tokenizer *hf_tokenizer_parse(const char *text, size_t len, const char *config_text, const char *name) {
    json_error_t err;
    json_t *root = json_loadb(text, len, 0, &err), *config = NULL;
    if (!root) return kiln_fail("%s: %s (line %d)", name, err.text, err.line), NULL;
    if (config_text && !(config = json_loads(config_text, JSON_DECODE_INT_AS_REAL, &err)))
        kiln_fail("%s: tokenizer_config.json: %s (line %d)", name, err.text, err.line);
    hf_vocab v = {.name = name, .bos = -1, .eos = -1, .unk = -1};
    kiln_tokenizer *t = NULL;
    json_t *model = json_object_get(root, "model"), *norm = json_object_get(root, "normalizer");
    const char *type = json_string_value(json_object_get(model, "type")), *nt = json_string_value(json_object_get(norm, "type"));
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if (config_text && !config) goto done;
    if (!json_is_object(root) || !type || strcmp(type, "BPE")) {
        kiln_fail("%s: unknown model type '%s' (supported: BPE)", name, type ? type : "(none)");
        goto done;
    }
    const char *prefix = json_string_value(json_object_get(model, "continuing_subword_prefix")),
               *suffix = json_string_value(json_object_get(model, "end_of_word_suffix"));
    if (json_is_true(json_object_get(model, "byte_fallback")) || (prefix && *prefix) || (suffix && *suffix)) {
        kiln_fail("%s: only byte-level BPE is supported (this one has byte_fallback or word affixes: use its "
                  "sentencepiece tokenizer.model)", name);
        goto done;
    }
    /* NFC: kiln takes text as given, which for NFC text (nearly all) is the same */
    if (!json_is_null(norm) && norm && (!nt || strcmp(nt, "NFC"))) {
        kiln_fail("%s: normalizer '%s' is not supported (supported: none, NFC)", name, nt ? nt : "?");
        goto done;
    }
    v.ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    v.max_id = 2 * (json_object_size(json_object_get(model, "vocab")) + json_array_size(json_object_get(root, "added_tokens")));
    if (read_vocab(&v, json_object_get(model, "vocab")) < 0 || read_merges(&v, json_object_get(model, "merges")) < 0 ||
        read_added(&v, json_object_get(root, "added_tokens")) < 0 ||
        read_pre_tokenizer(&v, json_object_get(root, "pre_tokenizer")) < 0)
        goto done;
    v.unk = token_id(&v, unk);
    read_specials(&v, config, json_object_get(root, "post_processor"));
    t = build(&v);
done:
    vocab_free(&v);
    json_decref(config);
    json_decref(root);
    return t;
}

/* GPT-2's vocab.json + merges.txt ("#version" line, then "a b" per line). */
static kiln_tokenizer *load_gpt2_files(const char *vocab_path, const char *merges_path, const char *config_text) {
    json_error_t err;
    json_t *vocab = json_load_file(vocab_path, 0, &err), *config = NULL;
    if (vocab && config_text && !(config = json_loads(config_text, JSON_DECODE_INT_AS_REAL, &err))) {
        kiln_fail("%s: tokenizer_config.json: %s (line %d)", vocab_path, err.text, err.line);
        json_decref(vocab);
        return NULL;
    }
    size_t n;
    char *merges = vocab ? kiln_read_file(merges_path, &n) : NULL;
    hf_vocab v = {.name = vocab_path, .bos = -1, .eos = -1, .unk = -1, .regex = BPE_REGEX_GPT2};
    kiln_tokenizer *t = NULL;
    if (!vocab) kiln_fail("%s: %s (line %d)", vocab_path, err.text, err.line);
    v.max_id = 2 * (json_object_size(vocab) + json_object_size(json_object_get(config, "added_tokens_decoder")));
    if (!merges || read_vocab(&v, vocab) < 0) goto done;
    int cap = 1024;
    v.merges = kiln_xmalloc(cap * sizeof *v.merges);
    v.merge_lens = kiln_xmalloc(cap * sizeof *v.merge_lens);
    for (char *line = merges, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) nl = line + strlen(line) - 1;
        size_t len = (size_t)(nl - line) + (*nl != '\n');
        if (len && line[len - 1] == '\r') len--;
        if (len == 0 || (line == merges && !strncmp(line, "#version", 8))) continue;
        if (v.n_merges == cap) {
            v.merges = kiln_xrealloc(v.merges, (cap *= 2) * sizeof *v.merges);
            v.merge_lens = kiln_xrealloc(v.merge_lens, cap * sizeof *v.merge_lens);
        }
        v.merges[v.n_merges] = line;
        v.merge_lens[v.n_merges++] = (uint32_t)len;
    }
    json_t *added = json_object_get(config, "added_tokens_decoder");
    const char *key;
    json_t *a;
    json_object_foreach(added, key, a) {
        const char *content = json_string_value(json_object_get(a, "content"));
        if (content && json_is_true(json_object_get(a, "special")) && set_piece(&v, atoll(key), content, strlen(content), TOKEN_CONTROL) < 0)
            goto done;
    }
    read_specials(&v, config, NULL);
    t = build(&v);
done:
    vocab_free(&v);
    free(merges);
    json_decref(vocab);
    json_decref(config);
    return t;
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = kiln_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int exists(const char *dir, const char *name) {
    char *p = join(dir, name);
    int ok = access(p, F_OK) == 0;
    free(p);
    return ok;
}

int hf_tokenizer_absent(const char *dir) {
    return !exists(dir, "tokenizer.model") && !exists(dir, "tokenizer.json") && !(exists(dir, "vocab.json") && exists(dir, "merges.txt")) &&
           !(exists(dir, "encoder.json") && exists(dir, "vocab.bpe"));
}

kiln_tokenizer *hf_tokenizer_load(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return kiln_fail("%s: no such file or directory", path), NULL;
    char *dir = kiln_xstrdup(path), *file = NULL;
    if (!S_ISDIR(st.st_mode)) { /* tokenizer.json itself, or one of GPT-2's files: their directory */
        char *slash = strrchr(dir, '/');
        size_t n = strlen(path);
        if (n >= 14 && !strcmp(path + n - 14, "tokenizer.json")) file = kiln_xstrdup(path);
        if (slash) *slash = 0;
        else strcpy(dir, ".");
    } else if (exists(dir, "tokenizer.model")) { /* sentencepiece: its tokenizer.json is derived from it */
        char *sp = join(dir, "tokenizer.model");
        kiln_tokenizer *t = sp_model_load(sp);
        free(sp);
        free(dir);
        return t;
    } else if (exists(dir, "tokenizer.json")) {
        file = join(dir, "tokenizer.json");
    }
    char *config_path = join(dir, "tokenizer_config.json"), *config = NULL;
    if (access(config_path, F_OK) == 0) config = kiln_read_file(config_path, NULL);
    kiln_tokenizer *t = NULL;
    if (file) {
        size_t len;
        char *text = kiln_read_file(file, &len);
        if (text) t = hf_tokenizer_parse(text, len, config, file);
        free(text);
    } else if (!hf_tokenizer_absent(dir)) {
        int gpt2 = exists(dir, "vocab.json");
        char *vp = join(dir, gpt2 ? "vocab.json" : "encoder.json"), *mp = join(dir, gpt2 ? "merges.txt" : "vocab.bpe");
        t = load_gpt2_files(vp, mp, config);
        free(vp);
        free(mp);
    } else {
        kiln_fail("%s: no tokenizer files (tokenizer.model, tokenizer.json, or vocab.json and merges.txt)", dir);
    }
    free(config);
    free(config_path);
    free(file);
    free(dir);
    return t;
}

/* ---- Writing ---- */

static json_t *byte_level(void) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0, "use_regex", 0);
}

static json_t *piece_json(const kiln_tokenizer *t, int id) {
    return json_stringn(t->pieces + t->piece_off[id], t->piece_len[id]);
}

/* llama 3's template: BOS, then the text. */
static json_t *bos_template(const kiln_tokenizer *t) {
    json_t *bos = piece_json(t, t->bos), *special = json_object();
    json_object_set_new(special, json_string_value(bos),
                        json_pack("{s:O, s:[i], s:[O]}", "id", bos, "ids", t->bos, "tokens", bos));
    json_t *p = json_pack("{s:s, s:[{s:{s:O, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:O, s:i}}, {s:{s:s, s:i}}, {s:{s:O, s:i}},"
                          " {s:{s:s, s:i}}], s:o}",
                          "type", "TemplateProcessing", "single", "SpecialToken", "id", bos, "type_id", 0, "Sequence",
                          "id", "A", "type_id", 0, "pair", "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id",
                          "A", "type_id", 0, "SpecialToken", "id", bos, "type_id", 1, "Sequence", "id", "B", "type_id",
                          1, "special_tokens", special);
    json_decref(bos);
    return p;
}

static json_t *tokenizer_json(const kiln_tokenizer *t) {
    json_t *vocab = json_object(), *added = json_array(), *merges = json_array();
    for (int id = 0; id < t->n_vocab; id++) {
        json_t *piece = piece_json(t, id);
        if (t->types[id] == TOKEN_NORMAL) json_object_set(vocab, json_string_value(piece), json_integer(id));
        else if (t->types[id] == TOKEN_CONTROL || t->types[id] == TOKEN_USER_DEFINED)
            json_array_append_new(added, json_pack("{s:i, s:O, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", piece,
                                                   "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
                                                   "special", t->types[id] == TOKEN_CONTROL));
        json_decref(piece);
    }
    int n;
    char **m = bpe_merge_strings(t, &n);
    for (int i = 0; i < n; i++) json_array_append_new(merges, json_string(m[i]));
    bpe_merges_free(m);
    json_t *split = json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", bpe_regex(t), "behavior",
                              "Isolated", "invert", 0);
    json_t *model = json_pack("{s:s, s:n, s:o, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                              "unk_token", t->unk >= 0 ? piece_json(t, t->unk) : json_null(),
                              "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                              "ignore_merges", bpe_ignore_merges(t), "vocab", vocab, "merges", merges);
    return json_pack("{s:s, s:n, s:n, s:o, s:n, s:{s:s, s:[o, o]}, s:o, s:o, s:o}", "version", "1.0", "truncation",
                     "padding", "added_tokens", added, "normalizer", "pre_tokenizer", "type", "Sequence",
                     "pretokenizers", split, byte_level(), "post_processor",
                     t->add_bos ? bos_template(t) : byte_level(), "decoder", byte_level(), "model", model);
}

static int write_json(json_t *j, const char *dir, const char *name) {
    char *path = join(dir, name);
    kiln_atomic a;
    int rc = kiln_atomic_open(&a, path);
    if (rc == 0) {
        if (json_dumpf(j, a.f, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) == 0) rc = kiln_atomic_commit(&a);
        else {
            kiln_atomic_abort(&a);
            rc = kiln_fail("%s: write failed", path);
        }
    }
    free(path);
    json_decref(j);
    return rc;
}

static void set_token(json_t *config, const char *key, const kiln_tokenizer *t, int id) {
    if (id >= 0) json_object_set_new(config, key, piece_json(t, id));
}

int hf_tokenizer_write(const kiln_tokenizer *t, const char *dir) {
    if (t->is_bytes) return kiln_fail("%s: kiln's byte vocabulary has no Hugging Face tokenizer files", dir);
    json_t *config = json_object();
    json_object_set_new(config, "tokenizer_class", json_string(t->bpe ? "PreTrainedTokenizerFast" : "LlamaTokenizer"));
    set_token(config, "bos_token", t, t->bos);
    set_token(config, "eos_token", t, t->eos);
    set_token(config, "unk_token", t, t->unk);
    json_object_set_new(config, "add_bos_token", json_boolean(t->add_bos));
    json_object_set_new(config, "add_eos_token", json_false());
    if (!t->bpe) {
        char *path = join(dir, "tokenizer.model");
        int rc = sp_model_write(t, path);
        free(path);
        if (rc < 0) {
            json_decref(config);
            return -1;
        }
        json_object_set_new(config, "legacy", json_true());
    } else if (write_json(tokenizer_json(t), dir, "tokenizer.json") < 0) {
        json_decref(config);
        return -1;
    }
    return write_json(config, dir, "tokenizer_config.json");
}
