/* Vocabularies: building one (byte-level, llama2.c tokenizer.bin), the piece hash, and decoding.
 * Encoding of scored vocabularies is in spm.c, GGUF metadata in tokenizer_gguf.c. */
#include "tokenizer/vocab.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "base/error.h"
#include "base/file.h"
#include "tokenizer/bpe.h"

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int vocab_piece_byte(const char *p, size_t len) {
    if (len != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static uint64_t piece_hash(const char *p, size_t len) { return XXH3_64bits(p, len); }

int vocab_lookup(const kiln_tokenizer *t, const char *p, size_t len) {
    if (len == 0 || len > t->max_piece_len) return -1;
    for (uint64_t h = piece_hash(p, len) & t->slot_mask;; h = (h + 1) & t->slot_mask) {
        int32_t id = t->slots[h];
        if (id < 0) return -1;
        if (t->piece_len[id] == len && memcmp(t->pieces + t->piece_off[id], p, len) == 0) return id;
    }
}

/* Only normal and user-defined pieces take part in merges: sentencepiece never produces a control,
 * unknown, unused or byte token from text (so "<s>" in a text is three characters, not BOS). */
static void index_pieces(kiln_tokenizer *t) {
    uint64_t n_slots = 16;
    while (n_slots < 2 * (uint64_t)t->n_vocab) n_slots *= 2;
    t->slots = kiln_xmalloc(n_slots * sizeof *t->slots);
    memset(t->slots, 0xff, n_slots * sizeof *t->slots);
    t->slot_mask = n_slots - 1;
    t->max_piece_len = 0;
    t->split_words = 1;
    for (int id = 0; id < t->n_vocab; id++) {
        uint32_t len = t->piece_len[id];
        if ((t->types[id] != TOKEN_NORMAL && t->types[id] != TOKEN_USER_DEFINED) || len == 0) continue;
        if (len > t->max_piece_len) t->max_piece_len = len;
        const char *p = t->pieces + t->piece_off[id];
        uint32_t lead = 0;
        while (len - lead >= SPM_SPACE_LEN && memcmp(p + lead, SPM_SPACE, SPM_SPACE_LEN) == 0) lead += SPM_SPACE_LEN;
        if (memmem(p + lead, len - lead, SPM_SPACE, SPM_SPACE_LEN)) t->split_words = 0;
        if (vocab_lookup(t, p, len) >= 0) continue; /* a duplicate piece: the first id wins */
        uint64_t h = piece_hash(p, len) & t->slot_mask;
        while (t->slots[h] >= 0) h = (h + 1) & t->slot_mask;
        t->slots[h] = id;
    }
}

static uint8_t inferred_type(int id, const char *p, size_t len, int bos, int eos, int unk) {
    if (id == unk) return TOKEN_UNKNOWN;
    if (id == bos || id == eos || len == 0) return TOKEN_CONTROL;
    if (vocab_piece_byte(p, len) >= 0) return TOKEN_BYTE;
    return TOKEN_NORMAL;
}

/* What token ID adds to a decoded text, appended at TEXTS + *USED. */
static void set_token_text(kiln_tokenizer *t, int id, size_t *used) {
    const char *p = t->pieces + t->piece_off[id];
    uint32_t len = t->piece_len[id], n = 0;
    char *out = t->texts + *used;
    if (t->types[id] == TOKEN_BYTE) {
        out[n++] = (char)vocab_piece_byte(p, len);
    } else if (t->types[id] != TOKEN_CONTROL && t->types[id] != TOKEN_UNKNOWN) {
        for (uint32_t i = 0; i < len;) {
            if (len - i >= SPM_SPACE_LEN && memcmp(p + i, SPM_SPACE, SPM_SPACE_LEN) == 0) {
                out[n++] = ' ';
                i += SPM_SPACE_LEN;
            } else {
                out[n++] = p[i++];
            }
        }
    }
    t->text_off[id] = *used;
    t->text_len[id] = n;
    *used += n;
}

kiln_tokenizer *vocab_build(const char *name, int n_vocab, const char *const *pieces, const uint32_t *lens,
                            const float *scores, const uint8_t *types, int bos, int eos, int unk) {
    if (n_vocab <= 0) {
        kiln_fail("%s: empty vocabulary", name);
        return NULL;
    }
    kiln_tokenizer *t = kiln_xcalloc(1, sizeof *t);
    t->n_vocab = n_vocab;
    t->bos = bos;
    t->eos = eos;
    t->unk = unk;
    t->add_bos = bos >= 0;
    t->add_space_prefix = 1;
    size_t total = 0;
    for (int i = 0; i < n_vocab; i++) total += lens[i];
    t->pieces = kiln_xmalloc(total);
    t->texts = kiln_xmalloc(total); /* no token decodes to more bytes than its piece has */
    t->piece_off = kiln_xmalloc(n_vocab * sizeof *t->piece_off);
    t->piece_len = kiln_xmalloc(n_vocab * sizeof *t->piece_len);
    t->text_off = kiln_xmalloc(n_vocab * sizeof *t->text_off);
    t->text_len = kiln_xmalloc(n_vocab * sizeof *t->text_len);
    t->scores = kiln_xmalloc(n_vocab * sizeof *t->scores);
    t->types = kiln_xmalloc(n_vocab);
    memset(t->byte_id, 0xff, sizeof t->byte_id);
    size_t off = 0, used = 0;
    for (int i = 0; i < n_vocab; i++) {
        memcpy(t->pieces + off, pieces[i], lens[i]);
        t->piece_off[i] = off;
        t->piece_len[i] = lens[i];
        off += lens[i];
        t->scores[i] = scores ? scores[i] : 0.0f;
        t->types[i] = types ? types[i] : inferred_type(i, pieces[i], lens[i], bos, eos, unk);
        if (isnan(t->scores[i])) {
            kiln_fail("%s: token %d has score NaN", name, i);
            goto fail;
        }
        if (t->types[i] < TOKEN_NORMAL || t->types[i] > TOKEN_BYTE) {
            kiln_fail("%s: token %d has unknown token type %d", name, i, t->types[i]);
            goto fail;
        }
        if (t->types[i] == TOKEN_BYTE) {
            int b = vocab_piece_byte(pieces[i], lens[i]);
            if (b < 0) {
                kiln_fail("%s: token %d is a byte token but reads '%.*s', not <0xXX>", name, i,
                          (int)(lens[i] > 32 ? 32 : lens[i]), pieces[i]);
                goto fail;
            }
            if (t->byte_id[b] < 0) t->byte_id[b] = i;
        }
        set_token_text(t, i, &used);
    }
    index_pieces(t);
    return t;
fail:
    tokenizer_free(t);
    return NULL;
}

kiln_tokenizer *tokenizer_new_bytes(void) {
    char text[256][7];
    const char *pieces[256];
    uint32_t lens[256];
    uint8_t types[256];
    for (int b = 0; b < 256; b++) {
        snprintf(text[b], sizeof text[b], "<0x%02X>", b);
        pieces[b] = text[b];
        lens[b] = 6;
        types[b] = TOKEN_BYTE;
    }
    kiln_tokenizer *t = vocab_build("byte vocabulary", 256, pieces, lens, NULL, types, -1, -1, -1);
    t->is_bytes = 1;
    t->add_bos = 0;
    t->add_space_prefix = 0;
    return t;
}

static uint32_t read_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* llama2.c writes pieces with plain spaces and BOS/EOS as "\n<s>\n"/"\n</s>\n"; kiln keeps them as
 * sentencepiece (and llama.cpp's GGUF) does, so both sources give the same vocabulary. */
static size_t sentencepiece_form(char *out, int id, const unsigned char *p, size_t len) {
    static const char *const special[3] = {"<unk>", "<s>", "</s>"};
    if (id < 3) {
        size_t n = strlen(special[id]);
        memcpy(out, special[id], n);
        return n;
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == ' ') {
            memcpy(out + n, SPM_SPACE, SPM_SPACE_LEN);
            n += SPM_SPACE_LEN;
        } else {
            out[n++] = (char)p[i];
        }
    }
    return n;
}

kiln_tokenizer *tokenizer_load_llama2c(const char *path, int n_vocab) {
    if (n_vocab < 3) {
        kiln_fail("%s: vocabulary size %d is too small (ids 0, 1, 2 are <unk>, <s>, </s>)", path, n_vocab);
        return NULL;
    }
    kiln_map map;
    if (kiln_map_open(&map, path) != 0) return NULL;
    kiln_tokenizer *t = NULL;
    const unsigned char *d = map.data;
    size_t size = map.size, pos = 4;
    char *text = kiln_xmalloc(3 * size + 16);
    const char **pieces = kiln_xmalloc(n_vocab * sizeof *pieces);
    uint32_t *lens = kiln_xmalloc(n_vocab * sizeof *lens);
    float *scores = kiln_xmalloc(n_vocab * sizeof *scores);
    if (size < 4) {
        kiln_fail("%s: truncated: no header", path);
        goto done;
    }
    uint32_t max_len = read_u32(d);
    size_t used = 0;
    for (int i = 0; i < n_vocab; i++) {
        if (size - pos < 8) {
            kiln_fail("%s: truncated at token %d of %d", path, i, n_vocab);
            goto done;
        }
        uint32_t bits = read_u32(d + pos), len = read_u32(d + pos + 4);
        memcpy(&scores[i], &bits, 4);
        pos += 8;
        if (len > max_len) {
            kiln_fail("%s: token %d has length %d, over the header's max_token_length %u", path, i, (int32_t)len,
                      max_len);
            goto done;
        }
        if (size - pos < len) {
            kiln_fail("%s: truncated at token %d of %d", path, i, n_vocab);
            goto done;
        }
        pieces[i] = text + used;
        lens[i] = (uint32_t)sentencepiece_form(text + used, i, d + pos, len);
        used += lens[i];
        pos += len;
    }
    if (pos != size) {
        kiln_fail("%s: %zu bytes follow token %d: the file holds more than %d tokens", path, size - pos, n_vocab - 1,
                  n_vocab);
        goto done;
    }
    t = vocab_build(path, n_vocab, pieces, lens, scores, NULL, 1, 2, 0);
done:
    free(text);
    free(pieces);
    free(lens);
    free(scores);
    kiln_map_close(&map);
    return t;
}

void tokenizer_free(kiln_tokenizer *t) {
    if (!t) return;
    free(t->pieces);
    free(t->piece_off);
    free(t->piece_len);
    free(t->scores);
    free(t->types);
    free(t->texts);
    free(t->text_off);
    free(t->text_len);
    free(t->slots);
    bpe_free(t->bpe);
    free(t);
}

int tokenizer_n_vocab(const kiln_tokenizer *t) { return t->n_vocab; }
int tokenizer_bos(const kiln_tokenizer *t) { return t->bos; }
int tokenizer_eos(const kiln_tokenizer *t) { return t->eos; }
int tokenizer_add_bos(const kiln_tokenizer *t) { return t->add_bos; }

int tokenizer_encode(const kiln_tokenizer *t, const char *text, size_t len, int add_bos, int32_t *out, int max) {
    if (t->bpe) return bpe_encode(t, text, len, add_bos, out, max);
    if (!t->is_bytes) return spm_encode(t, text, len, add_bos, out, max);
    if (max < 0 || len > (size_t)max)
        return kiln_fail("tokenizer: %zu bytes need %zu tokens, more than the %d allowed", len, len, max);
    for (size_t i = 0; i < len; i++) out[i] = (unsigned char)text[i];
    return (int)len;
}

const char *tokenizer_decode(const kiln_tokenizer *t, int prev, int tok, size_t *len) {
    if (tok < 0 || tok >= t->n_vocab) {
        *len = 0;
        return "";
    }
    const char *s = t->texts + t->text_off[tok];
    size_t n = t->text_len[tok];
    if (t->add_space_prefix && t->bos >= 0 && prev == t->bos && t->types[tok] != TOKEN_BYTE && n > 0 && s[0] == ' ') {
        s++;
        n--;
    }
    *len = n;
    return s;
}
