/* Sentencepiece BPE encoding: the text (with the dummy-prefix space, spaces as "▁") is split into UTF-8
 * characters; then the adjacent pair whose concatenation is the best-scoring piece merges, leftmost on
 * ties, until no pair is a piece; characters left without a piece fall back to their "<0xXX>" tokens.
 *
 * The symbols form a linked list over the normalised text and the candidate pairs a max-heap, so a text
 * of n characters costs O(n log n). A pair in the heap goes stale when either side merges elsewhere; it
 * is recognised on popping (its sides are no longer neighbours of the recorded length) and dropped. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tokenizer/vocab.h"

typedef struct {
    size_t start;          /* in the normalised text */
    uint32_t len;          /* 0 once merged into its left neighbour */
    int32_t prev, next;    /* -1 at the ends */
} symbol;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t len;          /* of the merged piece: a pair whose sides changed no longer adds up to it */
} pair;

typedef struct {
    pair *a;
    size_t n, cap;
} pair_heap;

static int pair_before(const pair *x, const pair *y) {
    return x->score > y->score || (x->score == y->score && x->left < y->left);
}

static void heap_push(pair_heap *h, pair p) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        h->a = kiln_xrealloc(h->a, h->cap * sizeof *h->a);
    }
    size_t i = h->n++;
    while (i > 0 && pair_before(&p, &h->a[(i - 1) / 2])) {
        h->a[i] = h->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->a[i] = p;
}

static pair heap_pop(pair_heap *h) {
    pair top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && pair_before(&h->a[c + 1], &h->a[c])) c++;
        if (!pair_before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0) h->a[i] = last;
    return top;
}

/* Queues the merge of symbols L and R if their concatenation is a piece. */
static void offer_pair(const kiln_tokenizer *t, const char *text, const symbol *sym, pair_heap *h, int32_t l,
                       int32_t r) {
    if (l < 0 || r < 0) return;
    uint32_t len = sym[l].len + sym[r].len;
    int id = vocab_lookup(t, text + sym[l].start, len);
    if (id >= 0) heap_push(h, (pair){t->scores[id], l, r, len});
}

/* Length of the UTF-8 character at P (N bytes left); an invalid sequence counts as a one-byte character,
 * which has no piece and so falls back to its byte token: encoding stays lossless for any bytes. */
static size_t utf8_char_len(const unsigned char *p, size_t n) {
    size_t len = p[0] < 0x80 ? 1 : p[0] < 0xc2 ? 0 : p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : p[0] < 0xf5 ? 4 : 0;
    if (len == 0 || len > n) return 1;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80) return 1;
    return len;
}

/* Sentencepiece's normalisation for llama: the dummy prefix, then every space as "▁". */
static size_t normalise(const kiln_tokenizer *t, const char *text, size_t len, char *out) {
    size_t n = 0;
    if (t->add_space_prefix) {
        memcpy(out, SPM_SPACE, SPM_SPACE_LEN);
        n = SPM_SPACE_LEN;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(out + n, SPM_SPACE, SPM_SPACE_LEN);
            n += SPM_SPACE_LEN;
        } else {
            out[n++] = text[i];
        }
    }
    return n;
}

static int emit(int32_t *out, int *n, int max, int id) {
    if (*n >= max) return -1;
    out[(*n)++] = id;
    return 0;
}

/* Writes the ids of the symbols left after merging; -1 when OUT is full or a byte has no token. */
static int emit_symbols(const kiln_tokenizer *t, const char *text, const symbol *sym, int32_t *out, int *n,
                        int max) {
    for (int32_t s = 0; s >= 0; s = sym[s].next) {
        int id = vocab_lookup(t, text + sym[s].start, sym[s].len);
        if (id >= 0) {
            if (emit(out, n, max, id) != 0) return kiln_fail("tokenizer: the text needs more than %d tokens", max);
            continue;
        }
        for (uint32_t i = 0; i < sym[s].len; i++) {
            unsigned char b = (unsigned char)text[sym[s].start + i];
            id = t->byte_id[b] >= 0 ? t->byte_id[b] : t->unk;
            if (id < 0) return kiln_fail("tokenizer: byte 0x%02X has no token and the vocabulary no <unk>", b);
            if (emit(out, n, max, id) != 0) return kiln_fail("tokenizer: the text needs more than %d tokens", max);
        }
    }
    return 0;
}

/* The end of the word starting at I: before the next "▁" that follows another character. */
static size_t word_end(const char *text, size_t len, size_t i) {
    while (len - i >= SPM_SPACE_LEN && memcmp(text + i, SPM_SPACE, SPM_SPACE_LEN) == 0) i += SPM_SPACE_LEN;
    const char *space = memmem(text + i, len - i, SPM_SPACE, SPM_SPACE_LEN);
    return space ? (size_t)(space - text) : len;
}

/* Merges the LEN bytes at TEXT and appends their ids; SYM has room for LEN symbols. */
static int encode_span(const kiln_tokenizer *t, const char *text, size_t len, symbol *sym, pair_heap *heap,
                       int32_t *out, int *n, int max) {
    int32_t n_sym = 0;
    for (size_t i = 0; i < len; n_sym++) {
        size_t c = utf8_char_len((const unsigned char *)text + i, len - i);
        sym[n_sym] = (symbol){i, (uint32_t)c, n_sym - 1, -1};
        if (n_sym > 0) sym[n_sym - 1].next = n_sym;
        i += c;
    }
    heap->n = 0;
    for (int32_t s = 0; s + 1 < n_sym; s++) offer_pair(t, text, sym, heap, s, s + 1);
    while (heap->n > 0) {
        pair p = heap_pop(heap);
        symbol *l = &sym[p.left], *r = &sym[p.right];
        if (l->next != p.right || l->len + r->len != p.len || l->len == 0 || r->len == 0) continue;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (l->next >= 0) sym[l->next].prev = p.left;
        offer_pair(t, text, sym, heap, l->prev, p.left);
        offer_pair(t, text, sym, heap, p.left, l->next);
    }
    return emit_symbols(t, text, sym, out, n, max);
}

int spm_encode(const kiln_tokenizer *t, const char *text, size_t len, int add_bos, int32_t *out, int max) {
    int n = 0;
    if (add_bos && t->bos >= 0 && emit(out, &n, max, t->bos) != 0)
        return kiln_fail("tokenizer: the text needs more than %d tokens", max);
    if (len == 0) return n;
    if (len >= INT32_MAX / SPM_SPACE_LEN) return kiln_fail("tokenizer: a text of %zu bytes is too long", len);
    char *norm = kiln_xmalloc(SPM_SPACE_LEN * (len + 1));
    size_t norm_len = normalise(t, text, len, norm);
    symbol *sym = kiln_xmalloc(norm_len * sizeof *sym);
    pair_heap heap = {0};
    int rc = 0;
    /* Words merge independently when no piece spans two (checked on loading): small heaps stay in cache. */
    for (size_t start = 0, end; start < norm_len && rc == 0; start = end) {
        end = t->split_words ? word_end(norm, norm_len, start) : norm_len;
        rc = encode_span(t, norm + start, end - start, sym, &heap, out, &n, max);
    }
    free(heap.a);
    free(sym);
    free(norm);
    return rc < 0 ? -1 : n;
}
