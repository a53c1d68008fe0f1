/* sentencepiece's tokenizer.model: a protobuf ModelProto. Only the fields a BPE vocabulary needs are read:
 *   1 pieces (repeated SentencePiece: 1 piece, 2 score (float), 3 type)
 *   2 trainer_spec (3 model_type: 2 = BPE; 40 unk_id, 41 bos_id, 42 eos_id)
 *   3 normalizer_spec (1 name, 3 add_dummy_prefix, 4 remove_extra_whitespaces)
 * and the same written back, so that a kiln vocabulary loads in sentencepiece (and LlamaTokenizer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "tokenizer/sp_model.h"
#include "tokenizer/vocab.h"

typedef struct {
    const unsigned char *p, *end;
} pb;

static int pb_varint(pb *b, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) return -1;
        unsigned char c = *b->p++;
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return 0;
    }
    return -1;
}

/* The next field: its number, wire type and (for length-delimited ones) its bytes. -1 when malformed. */
static int pb_field(pb *b, uint32_t *field, int *wire, uint64_t *v, pb *sub) {
    uint64_t key;
    if (pb_varint(b, &key) < 0 || key >> 32) return -1;
    *field = (uint32_t)(key >> 3);
    *wire = (int)(key & 7);
    switch (*wire) {
    case 0: return pb_varint(b, v);
    case 1:
        if (b->end - b->p < 8) return -1;
        memcpy(v, b->p, 8);
        b->p += 8;
        return 0;
    case 2:
        if (pb_varint(b, v) < 0 || *v > (uint64_t)(b->end - b->p)) return -1;
        sub->p = b->p;
        sub->end = b->p + *v;
        b->p += *v;
        return 0;
    case 5: {
        uint32_t x;
        if (b->end - b->p < 4) return -1;
        memcpy(&x, b->p, 4);
        *v = x;
        b->p += 4;
        return 0;
    }
    default: return -1;
    }
}

typedef struct {
    int n, cap;
    const char **pieces;
    uint32_t *lens;
    float *scores;
    uint8_t *types;
    int model_type, unk, bos, eos, add_dummy_prefix, remove_extra_whitespaces;
} sp_vocab;

static int read_piece(sp_vocab *v, pb m) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 1024;
        v->pieces = kiln_xrealloc(v->pieces, v->cap * sizeof *v->pieces);
        v->lens = kiln_xrealloc(v->lens, v->cap * sizeof *v->lens);
        v->scores = kiln_xrealloc(v->scores, v->cap * sizeof *v->scores);
        v->types = kiln_xrealloc(v->types, v->cap);
    }
    int i = v->n++;
    v->pieces[i] = "";
    v->lens[i] = 0;
    v->scores[i] = 0;
    v->types[i] = TOKEN_NORMAL;
    while (m.p < m.end) {
        uint32_t f;
        int w;
        uint64_t x;
        pb s;
        if (pb_field(&m, &f, &w, &x, &s) < 0) return -1;
        if (f == 1 && w == 2) {
            v->pieces[i] = (const char *)s.p;
            v->lens[i] = (uint32_t)x;
        } else if (f == 2 && w == 5) {
            uint32_t u = (uint32_t)x;
            memcpy(&v->scores[i], &u, 4);
        } else if (f == 3 && w == 0) {
            if (x < TOKEN_NORMAL || x > TOKEN_BYTE) return -1;
            v->types[i] = (uint8_t)x;
        }
    }
    return 0;
}

static int read_spec(sp_vocab *v, pb m, int trainer) {
    while (m.p < m.end) {
        uint32_t f;
        int w;
        uint64_t x;
        pb s;
        if (pb_field(&m, &f, &w, &x, &s) < 0) return -1;
        if (w != 0) continue;
        if (trainer && f == 3) v->model_type = (int)x;
        else if (trainer && f == 40) v->unk = (int32_t)x;
        else if (trainer && f == 41) v->bos = (int32_t)x;
        else if (trainer && f == 42) v->eos = (int32_t)x;
        else if (!trainer && f == 3) v->add_dummy_prefix = x != 0;
        else if (!trainer && f == 4) v->remove_extra_whitespaces = x != 0;
    }
    return 0;
}

kiln_tokenizer *sp_model_load(const char *path) {
    kiln_map map;
    if (kiln_map_open(&map, path) < 0) return NULL;
    /* sentencepiece's defaults for fields the file leaves out */
    sp_vocab v = {.model_type = 1, .unk = 0, .bos = 1, .eos = 2, .add_dummy_prefix = 1, .remove_extra_whitespaces = 1};
    kiln_tokenizer *t = NULL;
    pb b = {map.data, map.data + map.size};
    while (b.p < b.end) {
        uint32_t f;
        int w;
        uint64_t x;
        pb s;
        if (pb_field(&b, &f, &w, &x, &s) < 0 || (w == 2 && f == 1 && read_piece(&v, s) < 0) ||
            (w == 2 && (f == 2 || f == 3) && read_spec(&v, s, f == 2) < 0)) {
            kiln_fail("%s: not a sentencepiece model (malformed protobuf near byte %zu)", path,
                      (size_t)(b.p - map.data));
            goto done;
        }
    }
    if (v.model_type != 2) {
        kiln_fail("%s: sentencepiece model type %d is not supported (supported: 2, BPE)", path, v.model_type);
        goto done;
    }
    if (v.remove_extra_whitespaces) {
        kiln_fail("%s: remove_extra_whitespaces is not supported (kiln keeps the text's whitespace)", path);
        goto done;
    }
    for (int i = 0; i < 3; i++) {
        int *id = i == 0 ? &v.unk : i == 1 ? &v.bos : &v.eos;
        if (*id >= v.n) {
            kiln_fail("%s: special token id %d is outside the %d pieces", path, *id, v.n);
            goto done;
        }
        if (*id < 0) *id = -1;
    }
    t = vocab_build(path, v.n, v.pieces, v.lens, v.scores, v.types, v.bos, v.eos, v.unk);
    if (t) t->add_space_prefix = v.add_dummy_prefix;
done:
    free(v.pieces);
    free(v.lens);
    free(v.scores);
    free(v.types);
    kiln_map_close(&map);
    return t;
}

/* ---- Writing ---- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) b->p = kiln_xrealloc(b->p, b->cap = 2 * (b->n + n) + 64);
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_varint(buf *b, uint64_t v) {
    unsigned char c[10];
    int n = 0;
    do {
        c[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v) c[n] |= 0x80;
        n++;
    } while (v);
    put(b, c, n);
}

static void put_bytes(buf *b, uint32_t field, const void *d, size_t n) {
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, n);
    put(b, d, n);
}

static void put_int(buf *b, uint32_t field, int64_t v) {
    put_varint(b, (uint64_t)field << 3);
    put_varint(b, (uint64_t)v);
}

int sp_model_write(const kiln_tokenizer *t, const char *path) {
    if (t->bpe || t->is_bytes) return kiln_fail("%s: only sentencepiece-style vocabularies have a tokenizer.model", path);
    buf out = {0}, m = {0};
    for (int i = 0; i < t->n_vocab; i++) {
        m.n = 0;
        put_bytes(&m, 1, t->pieces + t->piece_off[i], t->piece_len[i]);
        uint32_t score;
        memcpy(&score, &t->scores[i], 4);
        put_varint(&m, 2 << 3 | 5);
        put(&m, &score, 4);
        put_int(&m, 3, t->types[i]);
        put_bytes(&out, 1, m.p, m.n);
    }
    int byte_fallback = 0;
    for (int b = 0; b < 256; b++) byte_fallback |= t->byte_id[b] >= 0;
    m.n = 0;
    put_int(&m, 3, 2); /* BPE */
    put_int(&m, 35, byte_fallback);
    put_int(&m, 40, t->unk);
    put_int(&m, 41, t->bos);
    put_int(&m, 42, t->eos);
    put_int(&m, 43, -1);
    put_bytes(&out, 2, m.p, m.n);
    m.n = 0;
    put_bytes(&m, 1, "identity", 8);
    put_int(&m, 3, t->add_space_prefix);
    put_int(&m, 4, 0);
    put_int(&m, 5, 1);
    put_bytes(&out, 3, m.p, m.n);
    kiln_atomic a;
    int rc = kiln_atomic_open(&a, path);
    if (rc == 0) {
        fwrite(out.p, 1, out.n, a.f);
        rc = kiln_atomic_commit(&a);
    }
    free(out.p);
    free(m.p);
    return rc;
}
