/* BytePiece encoding: a double-array trie of the pieces and unigram Viterbi over the lattice of matches.
 *
 * The lattice is scanned right to left: best[i] is the best score of a segmentation of text[i..n), the
 * max over pieces p matching at i of score(p) + best[i + |p|]. Walking the trie from i finds every piece
 * that starts at i in one pass over text[i..], and the left-to-right read-out that follows emits the ids
 * in order. Sampling replaces the max by a log-sum-exp (backward filtering) and then draws each piece
 * from its exact conditional probability (forward sampling). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tokenizer/bytepiece_impl.h"

/* One unit of the double array: the child of unit s on byte c is unit u[s].base + c, when its check is s. */
typedef struct {
    int32_t base;
    int32_t check; /* the parent unit; UNIT_FREE while unused */
    int32_t id;    /* the piece that ends here, or -1 */
    float score;
} da_unit;

enum { UNIT_FREE = -1, UNIT_ROOT = -2 };

struct bytepiece {
    int n;
    unsigned char *bytes; /* all pieces back to back */
    uint64_t *off;        /* n + 1 offsets into bytes */
    uint32_t *len;
    float *score;
    da_unit *units;
    bytepiece_settings settings;
};

/* ---- Double-array construction ---- */

/* Free units form a doubly linked list in index order; a node's children are placed at the first base
 * whose slots are all free. Units are padded so that base + 255 is always inside the array. */
typedef struct {
    da_unit *u;
    int32_t *next, *prev;
    size_t cap;
    int32_t tail; /* the last free unit */
    int32_t scan; /* the free unit searches start from: the first, or one past a crowded front */
} da_builder;

static void da_grow(da_builder *b) {
    size_t old = b->cap, cap = old ? 2 * old : 1024;
    if (cap > INT32_MAX) cap = INT32_MAX;
    b->u = kiln_xrealloc(b->u, cap * sizeof *b->u);
    b->next = kiln_xrealloc(b->next, cap * sizeof *b->next);
    b->prev = kiln_xrealloc(b->prev, cap * sizeof *b->prev);
    for (size_t i = old; i < cap; i++) {
        b->u[i] = (da_unit){0, UNIT_FREE, -1, 0};
        b->prev[i] = i == old ? b->tail : (int32_t)i - 1;
        b->next[i] = i + 1 < cap ? (int32_t)i + 1 : -1;
    }
    if (b->tail >= 0) b->next[b->tail] = (int32_t)old;
    if (b->scan < 0) b->scan = (int32_t)old;
    b->tail = (int32_t)cap - 1;
    b->cap = cap;
}

static void da_take(da_builder *b, int32_t i, int32_t parent) {
    if (b->scan == i) b->scan = b->next[i];
    if (b->prev[i] >= 0) b->next[b->prev[i]] = b->next[i];
    if (b->next[i] >= 0) b->prev[b->next[i]] = b->prev[i];
    else b->tail = b->prev[i];
    b->u[i].check = parent;
}

/* A base at which the K children labelled LAB (ascending) all find free units. */
static int32_t da_find_base(da_builder *b, const uint8_t *lab, int k) {
    int32_t p = b->scan;
    for (int scanned = 0;; scanned++) {
        /* Keep 512 units past any candidate: the list then never runs out and base + 255 fits. */
        while ((size_t)p + 512 > b->cap) da_grow(b);
        if (p >= lab[0]) {
            int32_t base = p - lab[0];
            int i = 1;
            while (i < k && b->u[base + lab[i]].check == UNIT_FREE) i++;
            if (i == k) return base;
        }
        /* A crowded front of the array would be rescanned by every node: give up on it. */
        if (scanned == 4096) b->scan = p;
        p = b->next[p];
    }
}

typedef struct {
    int32_t unit;
    uint32_t lo, hi, depth;
} da_frame;

/* Builds the trie of the N pieces whose ids sorted by bytes are ORDER. */
static void da_build(bytepiece *t, const int32_t *order) {
    da_builder b = {.tail = -1, .scan = -1};
    da_grow(&b);
    da_take(&b, 0, UNIT_ROOT);
    size_t cap = 256, sp = 0;
    da_frame *stack = kiln_xmalloc(cap * sizeof *stack);
    stack[sp++] = (da_frame){0, 0, (uint32_t)t->n, 0};
    uint8_t lab[256];
    uint32_t start[257];
    while (sp) {
        da_frame f = stack[--sp];
        uint32_t lo = f.lo;
        if (lo < f.hi && t->len[order[lo]] == f.depth) {
            b.u[f.unit].id = order[lo];
            b.u[f.unit].score = t->score[order[lo]];
            lo++;
        }
        if (lo == f.hi) continue;
        int k = 0;
        for (uint32_t j = lo; j < f.hi; j++) {
            uint8_t c = t->bytes[t->off[order[j]] + f.depth];
            if (k == 0 || lab[k - 1] != c) {
                lab[k] = c;
                start[k++] = j;
            }
        }
        start[k] = f.hi;
        int32_t base = da_find_base(&b, lab, k);
        b.u[f.unit].base = base;
        if (sp + (size_t)k > cap) stack = kiln_xrealloc(stack, (cap = 2 * cap + k) * sizeof *stack);
        for (int i = k - 1; i >= 0; i--) {
            da_take(&b, base + lab[i], f.unit);
            stack[sp++] = (da_frame){base + lab[i], start[i], start[i + 1], f.depth + 1};
        }
    }
    free(stack);
    free(b.next);
    free(b.prev);
    t->units = b.u;
}

static int cmp_piece(const void *pa, const void *pb, void *ctx) {
    const bytepiece *t = ctx;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    uint32_t la = t->len[a], lb = t->len[b];
    int c = memcmp(t->bytes + t->off[a], t->bytes + t->off[b], la < lb ? la : lb);
    if (c) return c;
    return la < lb ? -1 : la > lb;
}

bytepiece *bytepiece_build(const char *name, int n, const unsigned char *const *pieces, const uint32_t *lens,
                           const float *scores) {
    if (n < 256 || n > (1 << 28)) {
        kiln_fail("%s: %d pieces (must be 256 to %d)", name, n, 1 << 28);
        return NULL;
    }
    bytepiece *t = kiln_xcalloc(1, sizeof *t);
    t->n = n;
    t->off = kiln_xmalloc((n + 1) * sizeof *t->off);
    t->len = kiln_xmalloc(n * sizeof *t->len);
    t->score = kiln_xmalloc(n * sizeof *t->score);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (lens[i] < 1 || lens[i] > BYTEPIECE_MAX_PIECE) {
            kiln_fail("%s: piece %d has %u bytes (must be 1 to %d)", name, i, lens[i], BYTEPIECE_MAX_PIECE);
            bytepiece_free(t);
            return NULL;
        }
        if (!isfinite(scores[i])) {
            kiln_fail("%s: piece %d has score %g (must be finite)", name, i, scores[i]);
            bytepiece_free(t);
            return NULL;
        }
        t->off[i] = total;
        t->len[i] = lens[i];
        t->score[i] = scores[i];
        total += lens[i];
    }
    t->off[n] = total;
    t->bytes = kiln_xmalloc(total);
    for (int i = 0; i < n; i++) memcpy(t->bytes + t->off[i], pieces[i], lens[i]);

    int32_t *order = kiln_xmalloc(n * sizeof *order);
    for (int i = 0; i < n; i++) order[i] = i;
    qsort_r(order, n, sizeof *order, cmp_piece, t);
    int n_single = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && cmp_piece(&order[i - 1], &order[i], t) == 0) {
            kiln_fail("%s: pieces %d and %d are the same bytes", name, order[i - 1], order[i]);
            free(order);
            bytepiece_free(t);
            return NULL;
        }
        n_single += t->len[order[i]] == 1;
    }
    if (n_single != 256) {
        kiln_fail("%s: %d of the 256 single bytes are pieces (all must be)", name, n_single);
        free(order);
        bytepiece_free(t);
        return NULL;
    }
    da_build(t, order);
    free(order);
    return t;
}

void bytepiece_free(bytepiece *t) {
    if (!t) return;
    free(t->bytes);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->units);
    free(t);
}

int bytepiece_n_vocab(const bytepiece *t) { return t->n; }
uint32_t bp_piece_len(const bytepiece *t, int id) { return t->len[id]; }
float bytepiece_score(const bytepiece *t, int id) { return t->score[id]; }
const bytepiece_settings *bytepiece_get_settings(const bytepiece *t) { return &t->settings; }
void bytepiece_set_settings(bytepiece *t, const bytepiece_settings *s) { t->settings = *s; }

const unsigned char *bytepiece_piece(const bytepiece *t, int id, size_t *len) {
    *len = t->len[id];
    return t->bytes + t->off[id];
}

/* ---- The file: tokenizer.ggml.* as llama.cpp names them, plus kiln.bytepiece.* ---- */

enum { TYPE_NORMAL = 1, TYPE_BYTE = 6 };

bytepiece *bytepiece_from_gguf(const gguf_file *g) {
    const char *name = g->path;
    gguf_str model;
    int r = gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (r < 0) return NULL;
    if (r == 0) {
        kiln_fail("%s: no tokenizer.ggml.model (not a tokenizer file)", name);
        return NULL;
    }
    if (model.len != 9 || memcmp(model.ptr, "bytepiece", 9) != 0) {
        kiln_fail("%s: tokenizer.ggml.model is '%.*s', not 'bytepiece'", name, (int)(model.len > 40 ? 40 : model.len),
                  model.ptr);
        return NULL;
    }
    const void *tok, *sc, *ty = NULL;
    uint64_t n, ns, nt = 0;
    int rt = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING, &tok, &n);
    if (rt < 0) return NULL;
    int rs = gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_FLOAT32, &sc, &ns);
    if (rs < 0 || gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_INT32, &ty, &nt) < 0) return NULL;
    if (rt == 0 || rs == 0) {
        kiln_fail("%s: tokenizer.ggml.%s is missing", name, rt == 0 ? "tokens" : "scores");
        return NULL;
    }
    if (n < 256 || n > (1u << 28) || ns != n || (ty && nt != n)) {
        kiln_fail("%s: %llu tokens, %llu scores, %llu token types (need as many tokens as scores, at least 256)",
                  name, (unsigned long long)n, (unsigned long long)ns, (unsigned long long)nt);
        return NULL;
    }
    const gguf_str *s = tok;
    const unsigned char **pieces = kiln_xmalloc(n * sizeof *pieces);
    uint32_t *lens = kiln_xmalloc(n * sizeof *lens);
    float *scores = kiln_xmalloc(n * sizeof *scores);
    bytepiece *t = NULL;
    for (uint64_t i = 0; i < n; i++) {
        int32_t type = TYPE_NORMAL;
        if (ty) memcpy(&type, (const char *)ty + 4 * i, 4);
        bool byte = i < 256;
        if (byte && (s[i].len != 1 || (unsigned char)s[i].ptr[0] != i)) {
            kiln_fail("%s: token %llu is not the single byte 0x%02llx (ids 0..255 must be the 256 bytes)", name,
                      (unsigned long long)i, (unsigned long long)i);
            goto done;
        }
        if (!byte && (s[i].len < 2 || s[i].len > BYTEPIECE_MAX_PIECE)) {
            kiln_fail("%s: token %llu has %llu bytes (must be 2 to %d)", name, (unsigned long long)i,
                      (unsigned long long)s[i].len, BYTEPIECE_MAX_PIECE);
            goto done;
        }
        if (type != (byte ? TYPE_BYTE : TYPE_NORMAL)) {
            kiln_fail("%s: token %llu has type %d (expected %d)", name, (unsigned long long)i, type,
                      byte ? TYPE_BYTE : TYPE_NORMAL);
            goto done;
        }
        pieces[i] = (const unsigned char *)s[i].ptr;
        lens[i] = (uint32_t)s[i].len;
        memcpy(&scores[i], (const char *)sc + 4 * i, 4);
    }
    t = bytepiece_build(name, (int)n, pieces, lens, scores);
    if (t) {
        uint32_t u;
        bool b;
        const gguf_kv *kv;
        if (gguf_get_u32(g, "kiln.bytepiece.vocab", &u) > 0) t->settings.vocab = (int)u;
        if (gguf_get_u32(g, "kiln.bytepiece.max_piece_length", &u) > 0) t->settings.max_piece_length = (int)u;
        if (gguf_get_u32(g, "kiln.bytepiece.min_count", &u) > 0) t->settings.min_count = (int)u;
        if (gguf_get_bool(g, "kiln.bytepiece.isolate_digits", &b) > 0) t->settings.isolate_digits = b;
        if (gguf_get_bool(g, "kiln.bytepiece.ensure_unicode", &b) > 0) t->settings.ensure_unicode = b;
        if ((kv = gguf_find_kv(g, "kiln.bytepiece.corpus_bytes")) && kv->value.type == GGUF_UINT64)
            t->settings.corpus_bytes = kv->value.u64;
        if ((kv = gguf_find_kv(g, "kiln.bytepiece.pruned_below")) && kv->value.type == GGUF_UINT64)
            t->settings.pruned_below = kv->value.u64;
    }
done:
    free(pieces);
    free(lens);
    free(scores);
    return t;
}

bytepiece *bytepiece_open(const char *path) {
    gguf_file *g = gguf_open(path);
    if (!g) return NULL;
    bytepiece *t = bytepiece_from_gguf(g);
    gguf_close(g);
    return t;
}

void bytepiece_to_gguf(const bytepiece *t, gguf_writer *w) {
    const char **strs = kiln_xmalloc(t->n * sizeof *strs);
    size_t *lens = kiln_xmalloc(t->n * sizeof *lens);
    int32_t *types = kiln_xmalloc(t->n * sizeof *types);
    for (int i = 0; i < t->n; i++) {
        strs[i] = (const char *)t->bytes + t->off[i];
        lens[i] = t->len[i];
        types[i] = t->len[i] == 1 ? TYPE_BYTE : TYPE_NORMAL;
    }
    gguf_set_str(w, "tokenizer.ggml.model", "bytepiece");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", strs, lens, t->n);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, t->score, t->n);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, t->n);
    const bytepiece_settings *s = &t->settings;
    gguf_set_u32(w, "kiln.bytepiece.order", BYTEPIECE_ORDER);
    gguf_set_u32(w, "kiln.bytepiece.vocab", (uint32_t)s->vocab);
    gguf_set_u32(w, "kiln.bytepiece.max_piece_length", (uint32_t)s->max_piece_length);
    gguf_set_u32(w, "kiln.bytepiece.min_count", (uint32_t)s->min_count);
    gguf_set_bool(w, "kiln.bytepiece.isolate_digits", s->isolate_digits);
    gguf_set_bool(w, "kiln.bytepiece.ensure_unicode", s->ensure_unicode);
    gguf_set_u64(w, "kiln.bytepiece.corpus_bytes", s->corpus_bytes);
    gguf_set_u64(w, "kiln.bytepiece.pruned_below", s->pruned_below);
    free(strs);
    free(lens);
    free(types);
}

int bytepiece_save(const bytepiece *t, const char *path) {
    gguf_writer *w = gguf_writer_new();
    bytepiece_to_gguf(t, w);
    int rc = gguf_write(w, path);
    gguf_writer_free(w);
    return rc;
}

/* ---- Segmentation ---- */

size_t bytepiece_block_len(const unsigned char *p, size_t avail, bool at_end) {
    const size_t lo = BYTEPIECE_BLOCK, hi = 2 * (size_t)BYTEPIECE_BLOCK;
    if (avail <= lo) return at_end ? avail : 0;
    size_t end = avail < hi ? avail : hi;
    const unsigned char *nl = memchr(p + lo - 1, '\n', end - (lo - 1));
    if (nl) return (size_t)(nl - p) + 1;
    if (avail >= hi) return hi;
    return at_end ? avail : 0;
}

static void scratch_reserve(bp_scratch *w, size_t n) {
    if (n + 1 <= w->cap) return;
    w->cap = n + 1 > 2 * w->cap ? n + 1 : 2 * w->cap;
    free(w->best);
    free(w->choice);
    w->best = kiln_xmalloc(w->cap * sizeof *w->best);
    w->choice = kiln_xmalloc(w->cap * sizeof *w->choice);
}

void bp_scratch_free(bp_scratch *w) {
    free(w->best);
    free(w->choice);
    *w = (bp_scratch){0};
}

size_t bp_viterbi(const bytepiece *t, const unsigned char *s, size_t n, bp_scratch *w, int32_t *out, size_t room) {
    scratch_reserve(w, n);
    const da_unit *u = t->units;
    double *best = w->best;
    int32_t *choice = w->choice;
    best[n] = 0;
    for (size_t i = n; i-- > 0;) {
        double b = -INFINITY;
        int32_t bid = -1, node = 0;
        for (size_t j = i; j < n; j++) {
            int32_t next = u[node].base + s[j];
            if (u[next].check != node) break;
            node = next;
            if (u[node].id >= 0) {
                double v = u[node].score + best[j + 1];
                if (v >= b) { /* ties go to the longer piece */
                    b = v;
                    bid = u[node].id;
                }
            }
        }
        best[i] = b;
        choice[i] = bid;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i += t->len[choice[i]]) {
        if (k == room) return SIZE_MAX;
        out[k++] = choice[i];
    }
    return k;
}

/* Backward filtering: best[i] becomes log of the sum over segmentations of text[i..n) of
 * exp(alpha * their score). */
static void sample_sums(const bytepiece *t, const unsigned char *s, size_t n, double alpha, double *beta) {
    const da_unit *u = t->units;
    double v[BYTEPIECE_MAX_PIECE];
    beta[n] = 0;
    for (size_t i = n; i-- > 0;) {
        int k = 0;
        double m = -INFINITY;
        int32_t node = 0;
        for (size_t j = i; j < n; j++) {
            int32_t next = u[node].base + s[j];
            if (u[next].check != node) break;
            node = next;
            if (u[node].id >= 0) {
                v[k] = alpha * u[node].score + beta[j + 1];
                if (v[k] > m) m = v[k];
                k++;
            }
        }
        double sum = 0;
        for (int q = 0; q < k; q++) sum += exp(v[q] - m);
        beta[i] = m + log(sum);
    }
}

/* Forward sampling: each piece from its probability given the text before it. */
static size_t sample_block(const bytepiece *t, const unsigned char *s, size_t n, double alpha, kiln_rng *rng,
                           bp_scratch *w, int32_t *out, size_t room) {
    scratch_reserve(w, n);
    double *beta = w->best;
    sample_sums(t, s, n, alpha, beta);
    const da_unit *u = t->units;
    double p[BYTEPIECE_MAX_PIECE];
    int32_t id[BYTEPIECE_MAX_PIECE];
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        int c = 0;
        double total = 0;
        int32_t node = 0;
        for (size_t j = i; j < n; j++) {
            int32_t next = u[node].base + s[j];
            if (u[next].check != node) break;
            node = next;
            if (u[node].id >= 0) {
                p[c] = exp(alpha * u[node].score + beta[j + 1] - beta[i]);
                total += p[c];
                id[c++] = u[node].id;
            }
        }
        double x = kiln_rng_f64(rng) * total;
        int pick = c - 1;
        for (int q = 0; q < c - 1; q++) {
            if (x < p[q]) {
                pick = q;
                break;
            }
            x -= p[q];
        }
        if (k == room) return SIZE_MAX;
        out[k++] = id[pick];
        i += t->len[id[pick]];
    }
    return k;
}

static long encode_blocks(const bytepiece *t, const unsigned char *s, size_t len, double alpha, kiln_rng *rng,
                          int32_t *out, size_t max) {
    bp_scratch w = {0};
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        size_t n = bytepiece_block_len(s + i, len - i, true);
        size_t got = rng ? sample_block(t, s + i, n, alpha, rng, &w, out + k, max - k)
                         : bp_viterbi(t, s + i, n, &w, out + k, max - k);
        if (got == SIZE_MAX) {
            bp_scratch_free(&w);
            return kiln_fail("encoding %zu bytes needs more than %zu ids", len, max);
        }
        k += got;
        i += n;
    }
    bp_scratch_free(&w);
    return (long)k;
}

long bytepiece_encode(const bytepiece *t, const void *text, size_t len, int32_t *out, size_t max) {
    return encode_blocks(t, text, len, 0, NULL, out, max);
}

long bytepiece_sample(const bytepiece *t, const void *text, size_t len, double alpha, kiln_rng *rng, int32_t *out,
                      size_t max) {
    if (!(alpha >= 0) || !isfinite(alpha)) return kiln_fail("alpha %g: must be a finite number >= 0", alpha);
    return encode_blocks(t, text, len, alpha, rng, out, max);
}

long bytepiece_decode(const bytepiece *t, const int32_t *ids, size_t n, void *out, size_t max) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n) return kiln_fail("id %d is out of range (vocabulary of %d)", ids[i], t->n);
        uint32_t l = t->len[ids[i]];
        if (l > max - k) return kiln_fail("decoding %zu ids needs more than %zu bytes", n, max);
        memcpy((char *)out + k, t->bytes + t->off[ids[i]], l);
        k += l;
    }
    return (long)k;
}
