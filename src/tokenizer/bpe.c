/* Byte-level BPE: building the merge tables, and encoding. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/bpe.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "base/error.h"

const char *const BPE_REGEX_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char *const BPE_REGEX_LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char *const BPE_REGEX_QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

struct bpe_model {
    pcre2_code *re;
    char *regex, *pre;
    int ignore_merges;
    int32_t byte_tok[256];  /* the token of each single byte, -1 when the vocabulary lacks it */
    int32_t *text_slots;    /* hash of normal tokens' bytes -> id (-1: empty) */
    uint64_t text_mask;
    int n_merges;
    int32_t *merge_a, *merge_b; /* by rank */
    uint64_t *merge_keys;       /* hash of (a, b) -> rank; key (a << 32 | b) + 1, 0 when empty */
    int32_t *merge_rank, *merge_out;
    uint64_t merge_mask;
    int32_t *added;             /* added tokens, longest first: matched literally before splitting */
    int n_added;
};

/* ---- The byte-level alphabet ---- */

/* Printable Latin-1 bytes stand for themselves; the others take the code points from 256 on, in order. */
static int byte_code(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    int n = 0;
    for (int x = 0; x < b; x++) n += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174);
    return 256 + n;
}

int bpe_byte_char(int b, char out[2]) {
    int c = byte_code(b);
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    out[0] = (char)(0xc0 | c >> 6);
    out[1] = (char)(0x80 | (c & 0x3f));
    return 2;
}

static int16_t code_byte[324];
static pthread_once_t code_byte_once = PTHREAD_ONCE_INIT;
static void fill_code_byte(void) {
    for (int b = 0; b < 256; b++) code_byte[byte_code(b)] = (int16_t)b;
}

int bpe_char_byte(const unsigned char *p, size_t n, int *len) {
    pthread_once(&code_byte_once, fill_code_byte);
    int c;
    if (n >= 1 && p[0] < 0x80) c = p[0], *len = 1;
    else if (n >= 2 && (p[0] & 0xe0) == 0xc0 && (p[1] & 0xc0) == 0x80) c = (p[0] & 0x1f) << 6 | (p[1] & 0x3f), *len = 2;
    else return -1;
    if (c < 33 || c >= 324 || (c >= 127 && c <= 160) || c == 173) return -1;
    return code_byte[c];
}

/* ---- Tables ---- */

static uint64_t slots_for(uint64_t n) {
    uint64_t s = 16;
    while (s < 2 * n) s *= 2;
    return s;
}

static int text_lookup(const kiln_tokenizer *t, const char *p, size_t len) {
    const struct bpe_model *b = t->bpe;
    for (uint64_t h = XXH3_64bits(p, len) & b->text_mask;; h = (h + 1) & b->text_mask) {
        int32_t id = b->text_slots[h];
        if (id < 0) return -1;
        if (t->text_len[id] == len && memcmp(t->texts + t->text_off[id], p, len) == 0) return id;
    }
}

static uint64_t pair_hash(uint64_t key) { return XXH3_64bits(&key, sizeof key); }

/* The rank of merging A and B (and its result in *OUT), or -1. */
static int merge_lookup(const struct bpe_model *b, int32_t x, int32_t y, int32_t *out) {
    uint64_t key = ((uint64_t)(uint32_t)x << 32 | (uint32_t)y) + 1;
    for (uint64_t h = pair_hash(key) & b->merge_mask;; h = (h + 1) & b->merge_mask) {
        if (b->merge_keys[h] == 0) return -1;
        if (b->merge_keys[h] == key) {
            *out = b->merge_out[h];
            return b->merge_rank[h];
        }
    }
}

/* Each normal token's text is its bytes, decoded from the byte-level alphabet. */
static int set_texts(kiln_tokenizer *t, const char *name) {
    size_t used = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        const unsigned char *p = (const unsigned char *)t->pieces + t->piece_off[id];
        uint32_t len = t->piece_len[id], n = 0;
        char *out = t->texts + used;
        if (t->types[id] == TOKEN_NORMAL) {
            for (uint32_t i = 0; i < len;) {
                int l, byte = bpe_char_byte(p + i, len - i, &l);
                if (byte < 0)
                    return kiln_fail("%s: token %d '%.*s' has a character outside the byte-level alphabet", name, id,
                                     (int)(len > 32 ? 32 : len), (const char *)p);
                out[n++] = (char)byte;
                i += (uint32_t)l;
            }
        } else if (t->types[id] != TOKEN_CONTROL) {
            memcpy(out, p, len);
            n = len;
        }
        t->text_off[id] = used;
        t->text_len[id] = n;
        used += n;
    }
    return 0;
}

static void index_texts(kiln_tokenizer *t) {
    struct bpe_model *b = t->bpe;
    uint64_t n = slots_for((uint64_t)t->n_vocab);
    b->text_slots = kiln_xmalloc(n * sizeof *b->text_slots);
    memset(b->text_slots, 0xff, n * sizeof *b->text_slots);
    b->text_mask = n - 1;
    memset(b->byte_tok, 0xff, sizeof b->byte_tok);
    for (int id = 0; id < t->n_vocab; id++) {
        if (t->types[id] != TOKEN_NORMAL || t->text_len[id] == 0) continue;
        const char *p = t->texts + t->text_off[id];
        if (text_lookup(t, p, t->text_len[id]) >= 0) continue; /* a duplicate: the first id wins */
        if (t->text_len[id] == 1) b->byte_tok[(unsigned char)p[0]] = id;
        uint64_t h = XXH3_64bits(p, t->text_len[id]) & b->text_mask;
        while (b->text_slots[h] >= 0) h = (h + 1) & b->text_mask;
        b->text_slots[h] = id;
    }
}

/* "a b": the space that splits it into two pieces of the vocabulary. */
static int split_merge(const kiln_tokenizer *t, const char *m, uint32_t len, int32_t *x, int32_t *y) {
    for (uint32_t i = 1; i + 1 < len; i++) {
        if (m[i] != ' ') continue;
        *x = vocab_lookup(t, m, i);
        *y = vocab_lookup(t, m + i + 1, len - i - 1);
        if (*x >= 0 && *y >= 0) return 0;
    }
    return -1;
}

static int index_merges(kiln_tokenizer *t, const char *name, const bpe_spec *s) {
    struct bpe_model *b = t->bpe;
    uint64_t n = slots_for((uint64_t)s->n_merges);
    b->merge_keys = kiln_xcalloc(n, sizeof *b->merge_keys);
    b->merge_rank = kiln_xmalloc(n * sizeof *b->merge_rank);
    b->merge_out = kiln_xmalloc(n * sizeof *b->merge_out);
    b->merge_mask = n - 1;
    b->merge_a = kiln_xmalloc((s->n_merges + 1) * sizeof *b->merge_a);
    b->merge_b = kiln_xmalloc((s->n_merges + 1) * sizeof *b->merge_b);
    for (int r = 0; r < s->n_merges; r++) {
        int32_t x, y, z;
        const char *m = s->merges[r];
        uint32_t len = s->merge_lens[r];
        if (split_merge(t, m, len, &x, &y) < 0)
            return kiln_fail("%s: merge %d '%.*s' is not two tokens of the vocabulary", name, r, (int)(len > 64 ? 64 : len), m);
        char joined[1024];
        if (len - 1 > sizeof joined) return kiln_fail("%s: merge %d is %u bytes long", name, r, len);
        memcpy(joined, m, t->piece_len[x]);
        memcpy(joined + t->piece_len[x], m + t->piece_len[x] + 1, t->piece_len[y]);
        if ((z = vocab_lookup(t, joined, len - 1)) < 0)
            return kiln_fail("%s: merge %d '%.*s' makes '%.*s', which is not in the vocabulary", name, r,
                             (int)(len > 64 ? 64 : len), m, (int)(len > 64 ? 64 : len - 1), joined);
        if (merge_lookup(b, x, y, &(int32_t){0}) >= 0) continue; /* a repeated merge keeps its first rank */
        uint64_t key = ((uint64_t)(uint32_t)x << 32 | (uint32_t)y) + 1, h = pair_hash(key) & b->merge_mask;
        while (b->merge_keys[h]) h = (h + 1) & b->merge_mask;
        b->merge_keys[h] = key;
        b->merge_rank[h] = b->n_merges;
        b->merge_out[h] = z;
        b->merge_a[b->n_merges] = x;
        b->merge_b[b->n_merges++] = y;
    }
    return 0;
}

static int longer_first(const void *x, const void *y, void *tok) {
    const kiln_tokenizer *t = tok;
    uint32_t a = t->text_len[*(const int32_t *)x], b = t->text_len[*(const int32_t *)y];
    return a < b ? 1 : a > b ? -1 : *(const int32_t *)x - *(const int32_t *)y;
}

static void index_added(kiln_tokenizer *t) {
    struct bpe_model *b = t->bpe;
    b->added = kiln_xmalloc((t->n_vocab + 1) * sizeof *b->added);
    for (int id = 0; id < t->n_vocab; id++)
        if ((t->types[id] == TOKEN_CONTROL || t->types[id] == TOKEN_USER_DEFINED) && t->piece_len[id] > 0)
            b->added[b->n_added++] = id;
    qsort_r(b->added, b->n_added, sizeof *b->added, longer_first, t);
}

static const struct {
    const char *name, *const *regex;
} KNOWN_PRE[] = {{"gpt-2", &BPE_REGEX_GPT2}, {"llama-bpe", &BPE_REGEX_LLAMA3}, {"qwen2", &BPE_REGEX_QWEN2}};

static int compile_regex(struct bpe_model *b, const char *name, const char *regex, const char *pre) {
    b->regex = kiln_xstrdup(regex ? regex : BPE_REGEX_GPT2);
    for (size_t i = 0; !pre && i < sizeof KNOWN_PRE / sizeof KNOWN_PRE[0]; i++)
        if (!strcmp(b->regex, *KNOWN_PRE[i].regex)) pre = KNOWN_PRE[i].name;
    b->pre = kiln_xstrdup(pre ? pre : "default");
    int err;
    PCRE2_SIZE off;
    b->re = pcre2_compile((PCRE2_SPTR)b->regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                          &err, &off, NULL);
    if (!b->re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(err, msg, sizeof msg);
        return kiln_fail("%s: pre-tokenizer regex does not compile at offset %zu: %s", name, (size_t)off, (char *)msg);
    }
    pcre2_jit_compile(b->re, PCRE2_JIT_COMPLETE); /* when JIT is unavailable the interpreter runs */
    return 0;
}

kiln_tokenizer *bpe_build(const char *name, const bpe_spec *s) {
    uint8_t *types = kiln_xmalloc(s->n_vocab > 0 ? s->n_vocab : 1);
    for (int i = 0; i < s->n_vocab; i++) {
        types[i] = s->types ? s->types[i] : TOKEN_NORMAL;
        if (types[i] != TOKEN_NORMAL && types[i] != TOKEN_CONTROL && types[i] != TOKEN_USER_DEFINED &&
            types[i] != TOKEN_UNUSED) {
            kiln_fail("%s: token %d has type %d, which a byte-level BPE vocabulary does not have", name, i, types[i]);
            free(types);
            return NULL;
        }
    }
    kiln_tokenizer *t = vocab_build(name, s->n_vocab, s->pieces, s->lens, NULL, types, s->bos, s->eos, s->unk);
    free(types);
    if (!t) return NULL;
    t->bpe = kiln_xcalloc(1, sizeof *t->bpe);
    t->add_space_prefix = 0;
    t->add_bos = s->add_bos && s->bos >= 0;
    t->bpe->ignore_merges = s->ignore_merges;
    if (set_texts(t, name) < 0 || compile_regex(t->bpe, name, s->regex, s->pre) < 0) goto fail;
    index_texts(t);
    if (index_merges(t, name, s) < 0) goto fail;
    index_added(t);
    return t;
fail:
    tokenizer_free(t);
    return NULL;
}

void bpe_free(struct bpe_model *b) {
    if (!b) return;
    pcre2_code_free(b->re);
    free(b->regex);
    free(b->pre);
    free(b->text_slots);
    free(b->merge_a);
    free(b->merge_b);
    free(b->merge_keys);
    free(b->merge_rank);
    free(b->merge_out);
    free(b->added);
    free(b);
}

const char *bpe_regex(const kiln_tokenizer *t) { return t->bpe->regex; }
const char *bpe_pre(const kiln_tokenizer *t) { return t->bpe->pre; }
int bpe_ignore_merges(const kiln_tokenizer *t) { return t->bpe->ignore_merges; }

char **bpe_merge_strings(const kiln_tokenizer *t, int *n) {
    const struct bpe_model *b = t->bpe;
    size_t total = 0;
    for (int r = 0; r < b->n_merges; r++) total += t->piece_len[b->merge_a[r]] + t->piece_len[b->merge_b[r]] + 2;
    char **out = kiln_xmalloc((b->n_merges + 1) * sizeof *out), *p = kiln_xmalloc(total + 1);
    for (int r = 0; r < b->n_merges; r++) {
        int32_t x = b->merge_a[r], y = b->merge_b[r];
        out[r] = p;
        memcpy(p, t->pieces + t->piece_off[x], t->piece_len[x]);
        p += t->piece_len[x];
        *p++ = ' ';
        memcpy(p, t->pieces + t->piece_off[y], t->piece_len[y]);
        p += t->piece_len[y];
        *p++ = 0;
    }
    out[b->n_merges] = p; /* keeps the block reachable when there are no merges */
    *n = b->n_merges;
    return out;
}

void bpe_merges_free(char **m) {
    if (!m) return;
    free(m[0]);
    free(m);
}

/* ---- Encoding ---- */

typedef struct {
    int32_t *out;
    int n, max;
    int failed;
} sink;

static void emit(sink *s, int32_t id) {
    if (s->n < s->max) s->out[s->n] = id;
    else s->failed = 1;
    s->n++;
}

typedef struct {
    int32_t id, prev, next;
} symbol;

typedef struct {
    int32_t rank, left; /* the pair of symbols LEFT and its next, merged into a token of rank RANK */
    int32_t a, b;       /* the ids it was made for: stale entries no longer match */
} pair;

static int pair_before(const pair *x, const pair *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->left < y->left;
}

typedef struct {
    pair *v;
    int n, cap;
} heap;

static void heap_push(heap *h, pair p) {
    if (h->n == h->cap) h->v = kiln_xrealloc(h->v, sizeof *h->v * (h->cap = h->cap ? 2 * h->cap : 64));
    int i = h->n++;
    while (i > 0 && pair_before(&p, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = p;
}

static pair heap_pop(heap *h) {
    pair top = h->v[0], last = h->v[--h->n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && pair_before(&h->v[c + 1], &h->v[c])) c++;
        if (!pair_before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

typedef struct {
    symbol *sym;
    int cap;
    heap heap;
} scratch;

static void offer(const struct bpe_model *b, scratch *w, int32_t left) {
    int32_t right = w->sym[left].next, out;
    if (right < 0 || w->sym[left].id < 0 || w->sym[right].id < 0) return;
    int rank = merge_lookup(b, w->sym[left].id, w->sym[right].id, &out);
    if (rank >= 0) heap_push(&w->heap, (pair){rank, left, w->sym[left].id, w->sym[right].id});
}

static void encode_word(const kiln_tokenizer *t, const unsigned char *p, size_t n, scratch *w, sink *s) {
    const struct bpe_model *b = t->bpe;
    int id;
    if (n == 0) return;
    if (b->ignore_merges && (id = text_lookup(t, (const char *)p, n)) >= 0) {
        emit(s, id);
        return;
    }
    if ((size_t)w->cap < n) w->sym = kiln_xrealloc(w->sym, sizeof *w->sym * (w->cap = (int)n));
    for (size_t i = 0; i < n; i++)
        w->sym[i] = (symbol){b->byte_tok[p[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
    w->heap.n = 0;
    for (size_t i = 0; i + 1 < n; i++) offer(b, w, (int32_t)i);
    while (w->heap.n) {
        pair q = heap_pop(&w->heap);
        symbol *l = &w->sym[q.left];
        if (l->id != q.a || l->next < 0 || w->sym[l->next].id != q.b) continue; /* stale */
        int32_t merged;
        merge_lookup(b, q.a, q.b, &merged);
        symbol *r = &w->sym[l->next];
        l->id = merged;
        r->id = -2; /* gone */
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = q.left;
        if (l->prev >= 0) offer(b, w, l->prev);
        offer(b, w, q.left);
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next)
        if (w->sym[i].id >= 0) emit(s, w->sym[i].id);
        else if (t->unk >= 0) emit(s, t->unk); /* a byte the vocabulary lacks */
}

/* Splits TEXT into words with the pre-tokenizer; unmatched stretches are words too. */
static void encode_text(const kiln_tokenizer *t, const unsigned char *p, size_t n, pcre2_match_data *md, scratch *w,
                        sink *s) {
    size_t at = 0;
    while (at < n) {
        int rc = pcre2_match(t->bpe->re, p, n, at, 0, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t start = ov[0], end = ov[1];
        if (start > at) encode_word(t, p + at, start - at, w, s);
        if (end == start) { /* an empty match: step over one character */
            end = start + 1;
            while (end < n && (p[end] & 0xc0) == 0x80) end++;
        }
        encode_word(t, p + start, end - start, w, s);
        at = end;
    }
    if (at < n) encode_word(t, p + at, n - at, w, s);
}

/* The added token that starts at P, longest first, or -1. */
static int added_at(const kiln_tokenizer *t, const char *p, size_t n) {
    const struct bpe_model *b = t->bpe;
    for (int i = 0; i < b->n_added; i++) {
        int id = b->added[i];
        uint32_t len = t->piece_len[id];
        if (len <= n && memcmp(p, t->pieces + t->piece_off[id], len) == 0) return id;
    }
    return -1;
}

int bpe_encode(const kiln_tokenizer *t, const char *text, size_t len, int add_bos, int32_t *out, int max) {
    sink s = {out, 0, max < 0 ? 0 : max, 0};
    scratch w = {0};
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->bpe->re, NULL);
    if (add_bos && t->bos >= 0) emit(&s, t->bos);
    unsigned char first[256] = {0};
    for (int i = 0; i < t->bpe->n_added; i++) first[(unsigned char)t->pieces[t->piece_off[t->bpe->added[i]]]] = 1;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        int id;
        if (!first[(unsigned char)text[i]] || (id = added_at(t, text + i, len - i)) < 0) continue;
        encode_text(t, (const unsigned char *)text + start, i - start, md, &w, &s);
        emit(&s, id);
        i += t->piece_len[id] - 1;
        start = i + 1;
    }
    encode_text(t, (const unsigned char *)text + start, len - start, md, &w, &s);
    pcre2_match_data_free(md);
    free(w.sym);
    free(w.heap.v);
    if (s.failed) return kiln_fail("tokenizer: the text needs %d tokens, more than the %d allowed", s.n, max);
    return s.n;
}
