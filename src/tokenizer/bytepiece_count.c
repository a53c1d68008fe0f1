/* BytePiece training, the counting side: byte n-gram counts, the n-gram model made from them, Viterbi
 * segmentation under that model, and piece counts.
 *
 * Counts live in hash tables with a memory budget. When a table is full and may not grow, the entries
 * with the lowest counts are dropped (lossy counting): frequent n-grams and pieces, the only ones that
 * survive min_count anyway, keep counts that are exact or close to it, and memory stays bounded however
 * large the corpus. Each table is one of BP_SHARDS shards picked by hash; a shard is filled by one thread
 * in corpus order, so what pruning drops does not depend on how many threads there are. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "base/error.h"
#include "base/rng.h"
#include "tokenizer/bytepiece_impl.h"

enum { INITIAL_SLOTS = 1 << 10, HIST_EXACT = 1024, HIST_LOG2_EXACT = 10, HIST_BINS = HIST_EXACT + 64 - HIST_LOG2_EXACT };

static inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline int key_order(uint64_t key) { return (int)(key >> 56); }
static inline uint64_t ngram_key(uint64_t window, int k) {
    return (window & ((1ull << (8 * k)) - 1)) | (uint64_t)k << 56;
}
static inline uint64_t ngram_hash(uint64_t key) { return kiln_mix64(key); }

static inline float val_float(uint64_t v) {
    uint32_t u = (uint32_t)v;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint64_t float_val(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* A count histogram bin: exact below HIST_EXACT, then one bin per power of two. */
static int hist_bin(uint64_t c) {
    if (c < HIST_EXACT) return (int)c;
    return HIST_EXACT + 63 - __builtin_clzll(c) - HIST_LOG2_EXACT;
}

/* The smallest count in bin B. */
static uint64_t bin_floor(int b) { return b < HIST_EXACT ? (uint64_t)b : 1ull << (b - HIST_EXACT + HIST_LOG2_EXACT); }

/* The smallest count threshold that keeps at most TARGET of the counts in HIST. */
static uint64_t prune_threshold(const uint64_t *hist, uint64_t target) {
    uint64_t kept = 0;
    for (int b = HIST_BINS - 1; b >= 1; b--) {
        if (kept + hist[b] > target) return b + 1 < HIST_BINS ? bin_floor(b + 1) : UINT64_MAX;
        kept += hist[b];
    }
    return 1;
}

/* ---- n-gram counts ---- */

static void ngram_table_alloc(bp_ngram_table *t, uint64_t slots) {
    t->slot = kiln_xcalloc(slots, sizeof *t->slot);
    t->mask = slots - 1;
    t->n = 0;
}

static void ngram_insert_new(bp_ngram_table *t, uint64_t key, uint64_t val) {
    uint64_t i = ngram_hash(key) & t->mask;
    while (t->slot[i].key) i = (i + 1) & t->mask;
    t->slot[i] = (bp_ngram_slot){key, val};
    t->n++;
}

/* Rehashes the entries with a count of at least MIN into a table of SLOTS slots. */
static void ngram_rehash(bp_ngram_table *t, uint64_t slots, uint64_t min) {
    bp_ngram_slot *old = t->slot;
    uint64_t n = t->mask + 1;
    ngram_table_alloc(t, slots);
    for (uint64_t i = 0; i < n; i++)
        if (old[i].key && old[i].val >= min) ngram_insert_new(t, old[i].key, old[i].val);
    free(old);
}

/* Called when the table passes 3/4 full: doubles it within the budget, or else drops the rarest
 * entries until at most 3/8 of the slots are used. */
static void ngram_make_room(bp_ngram_table *t) {
    uint64_t slots = t->mask + 1;
    if (2 * slots * sizeof(bp_ngram_slot) <= t->limit) {
        ngram_rehash(t, 2 * slots, 0);
        return;
    }
    uint64_t *hist = kiln_xcalloc(HIST_BINS, sizeof *hist);
    for (uint64_t i = 0; i < slots; i++)
        if (t->slot[i].key) hist[hist_bin(t->slot[i].val)]++;
    uint64_t min = prune_threshold(hist, slots * 3 / 8);
    free(hist);
    if (min - 1 > t->dropped_below) t->dropped_below = min - 1;
    ngram_rehash(t, slots, min);
}

static inline void ngram_add(bp_ngram_table *t, uint64_t key, uint64_t h) {
    uint64_t i = h & t->mask;
    for (;;) {
        bp_ngram_slot *s = &t->slot[i];
        if (s->key == key) {
            s->val++;
            return;
        }
        if (!s->key) {
            *s = (bp_ngram_slot){key, 1};
            if (++t->n > (t->mask + 1) / 4 * 3) ngram_make_room(t);
            return;
        }
        i = (i + 1) & t->mask;
    }
}

static const bp_ngram_slot *ngram_find(const bp_ngrams *m, uint64_t key) {
    uint64_t h = ngram_hash(key);
    const bp_ngram_table *t = &m->shard[bp_shard_of(h)];
    for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const bp_ngram_slot *s = &t->slot[i];
        if (s->key == key) return s;
        if (!s->key) return NULL;
    }
}

void bp_ngrams_init(bp_ngrams *m, uint64_t mem, int max_len, int min_count, bool isolate_digits,
                    bool ensure_unicode) {
    memset(m, 0, sizeof *m);
    m->max_len = max_len;
    m->min_count = min_count;
    m->isolate_digits = isolate_digits;
    m->ensure_unicode = ensure_unicode;
    for (int s = 0; s < BP_SHARDS; s++) {
        ngram_table_alloc(&m->shard[s], INITIAL_SLOTS);
        m->shard[s].limit = mem / BP_SHARDS;
    }
}

void bp_ngrams_free(bp_ngrams *m) {
    for (int s = 0; s < BP_SHARDS; s++) free(m->shard[s].slot);
    memset(m, 0, sizeof *m);
}

uint64_t bp_ngrams_dropped_below(const bp_ngrams *m) {
    uint64_t d = 0;
    for (int s = 0; s < BP_SHARDS; s++)
        if (m->shard[s].dropped_below > d) d = m->shard[s].dropped_below;
    return d;
}

/* Inserts wait in a ring while the cache lines of their slots are fetched: the table is far larger than
 * the cache, and a miss per insert would otherwise leave the core idle. */
enum { RING = 64, RING_LAG = 40 };

typedef struct {
    uint64_t key, hash;
} pending;

void bp_ngrams_count(bp_ngrams *m, const bp_block *b, size_t nb, int t, int nt) {
    pending ring[RING];
    unsigned head = 0, tail = 0;
    for (size_t k = 0; k < nb; k++) {
        const unsigned char *s = b[k].p;
        uint64_t w = 0;
        int run = 0; /* bytes that may share an n-gram with the next one */
        for (size_t i = 0; i < b[k].n; i++) {
            w = w << 8 | s[i];
            if (m->isolate_digits && is_digit(s[i])) {
                run = 0;
                continue;
            }
            if (run < BYTEPIECE_ORDER) run++;
            for (int order = 2; order <= run; order++) {
                uint64_t key = ngram_key(w, order), h = ngram_hash(key);
                bp_ngram_table *tb = &m->shard[bp_shard_of(h)];
                if (bp_shard_of(h) % nt != t) continue;
                __builtin_prefetch(&tb->slot[h & tb->mask], 1);
                ring[head++ % RING] = (pending){key, h};
            }
            while (head - tail > RING_LAG) {
                pending p = ring[tail++ % RING];
                ngram_add(&m->shard[bp_shard_of(p.hash)], p.key, p.hash);
            }
        }
    }
    while (head != tail) {
        pending p = ring[tail++ % RING];
        ngram_add(&m->shard[bp_shard_of(p.hash)], p.key, p.hash);
    }
}

static inline uint64_t prefix_key(uint64_t key) {
    int order = key_order(key);
    return ((key & ((1ull << 56) - 1)) >> 8) | (uint64_t)(order - 1) << 56;
}

/* Turns the counts of the slots IDX[0..N) of T into log-probabilities given their prefixes. */
static void logp_of_counts(const bp_ngrams *m, bp_ngram_table *t, const uint64_t *idx, int n) {
    for (int k = 0; k < n; k++) {
        bp_ngram_slot *s = &t->slot[idx[k]];
        uint64_t prefix = 0;
        if (key_order(s->key) == 2) prefix = m->uni[(s->key >> 8) & 0xff];
        else {
            const bp_ngram_slot *p = ngram_find(m, prefix_key(s->key));
            if (p) prefix = p->val;
        }
        /* Pruning may have cut the prefix's count below its extension's. */
        float lp = prefix ? (float)(log((double)s->val) - log((double)(prefix > s->val ? prefix : s->val))) : -INFINITY;
        s->val = float_val(lp);
    }
}

void bp_ngrams_finish(bp_ngrams *m, int threads) {
    uint64_t total = 0, uni[256];
    for (int c = 0; c < 256; c++) total += uni[c] = m->uni[c] ? m->uni[c] : 1;
    for (int c = 0; c < 256; c++) m->uni_logp[c] = (float)(log((double)uni[c]) - log((double)total));
    /* Highest order first: an n-gram needs the raw count of its prefix, one order lower. The prefixes
     * are looked up in batches whose slots are prefetched first. */
    for (int order = BYTEPIECE_ORDER; order >= 2; order--) {
#pragma omp parallel for schedule(dynamic) num_threads(threads)
        for (int sh = 0; sh < BP_SHARDS; sh++) {
            bp_ngram_table *t = &m->shard[sh];
            uint64_t batch[64];
            int n = 0;
            for (uint64_t i = 0; i <= t->mask; i++) {
                bp_ngram_slot *s = &t->slot[i];
                if (!s->key || key_order(s->key) != order) continue;
                if (s->val < (uint64_t)m->min_count) {
                    s->val = float_val(-INFINITY);
                    continue;
                }
                uint64_t h = ngram_hash(prefix_key(s->key));
                const bp_ngram_table *pt = &m->shard[bp_shard_of(h)];
                __builtin_prefetch(&pt->slot[h & pt->mask]);
                batch[n++] = i;
                if (n == 64) logp_of_counts(m, t, batch, n), n = 0;
            }
            logp_of_counts(m, t, batch, n);
        }
    }
    /* Only the kept n-grams are looked up from now on: a table of just those, half full, keeps probes
     * short and more of it in the cache. */
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int sh = 0; sh < BP_SHARDS; sh++) {
        bp_ngram_table *t = &m->shard[sh];
        uint64_t kept = 0, slots = 16;
        for (uint64_t i = 0; i <= t->mask; i++) kept += t->slot[i].key && val_float(t->slot[i].val) != -INFINITY;
        while (slots < 2 * kept) slots *= 2;
        bp_ngram_slot *old = t->slot;
        uint64_t n = t->mask + 1;
        ngram_table_alloc(t, slots);
        for (uint64_t i = 0; i < n; i++)
            if (old[i].key && val_float(old[i].val) != -INFINITY) ngram_insert_new(t, old[i].key, old[i].val);
        free(old);
    }
}

static inline float ngram_logp(const bp_ngrams *m, uint64_t key) {
    const bp_ngram_slot *s = ngram_find(m, key);
    return s ? val_float(s->val) : -INFINITY;
}

size_t bp_utf8_len(const unsigned char *p, size_t avail) {
    unsigned c = p[0];
    if (c < 0xc2 || c > 0xf4) return 1;
    size_t len = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (avail < len) return 1;
    unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80, hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
    if (p[1] < lo || p[1] > hi) return 1;
    for (size_t q = 2; q < len; q++)
        if ((p[q] & 0xc0) != 0x80) return 1;
    return len;
}

/* The Viterbi states: state j means the byte is the (j+1)-th of its piece, scored by the n-gram of
 * order min(j+1, ORDER) that ends at it. State 0 starts a piece and follows any state; state j follows
 * state j-1, up to max_len - 1, so no piece is longer than max_len. A segmentation thus scores the sum
 * over its pieces of the n-gram log-probability of each piece taken on its own: the best one cuts where
 * the bytes predict each other least. Scores are kept relative to the best state, so floats suffice. */
void bp_ngrams_segment(const bp_ngrams *m, const unsigned char *s, size_t n, uint8_t *bp, uint8_t *start) {
    enum { K = BYTEPIECE_ORDER };
    const int L = m->max_len;
    uint8_t *inside = start; /* reused: START is written only after the forward pass has read INSIDE */
    if (m->ensure_unicode) {
        memset(inside, 0, n);
        for (size_t i = 0; i < n;) {
            size_t l = bp_utf8_len(s + i, n - i);
            for (size_t q = 1; q < l; q++) inside[i + q] = 1;
            i += l;
        }
    }
    float prev[BYTEPIECE_MAX_PIECE], cur[BYTEPIECE_MAX_PIECE];
    int best = 0; /* the best state of PREV */
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) {
        float node[K];
        w = w << 8 | s[i];
        bool in = m->ensure_unicode && inside[i];
        node[0] = in ? -INFINITY : m->uni_logp[s[i]];
        bool cut = m->isolate_digits && (is_digit(s[i]) || (i > 0 && is_digit(s[i - 1])));
        bool missing = cut;
        for (int j = 1; j < K; j++) {
            /* A longer n-gram is no more frequent than its suffix: once one is missing, all are. */
            float lp = missing || (size_t)j > i ? -INFINITY : ngram_logp(m, ngram_key(w, j + 1));
            missing = lp == -INFINITY;
            /* Inside a character a piece must go on: back off to the byte's own probability. There is
             * always a way on: some state before is finite, and its successor then is too. */
            node[j] = missing && in && !cut ? m->uni_logp[s[i]] : lp;
        }
        if (i == 0) {
            cur[0] = 0;
            for (int j = 1; j < L; j++) cur[j] = -INFINITY;
            bp[0] = 0;
        } else {
            float top = prev[best];
            cur[0] = top + node[0];
            for (int j = 1; j < K && j < L; j++) cur[j] = prev[j - 1] + node[j];
            for (int j = K; j < L; j++) cur[j] = prev[j - 1] + node[K - 1];
            bp[i] = (uint8_t)best;
        }
        best = 0;
        for (int j = 1; j < L; j++)
            if (cur[j] > cur[best]) best = j;
        float top = cur[best];
        for (int j = 0; j < L; j++) prev[j] = cur[j] - top;
    }
    for (size_t i = n, state = (size_t)best; i-- > 0;) {
        start[i] = state == 0;
        state = state == 0 ? bp[i] : state - 1;
    }
}

/* ---- piece counts ---- */

uint64_t bp_piece_hash(const unsigned char *p, size_t n) {
    uint64_t h = XXH3_64bits(p, n);
    return h ? h : 1;
}

static void piece_table_alloc(bp_piece_table *t, uint64_t slots) {
    t->slot = kiln_xcalloc(slots, sizeof *t->slot);
    t->mask = slots - 1;
    t->n = 0;
}

/* Keeps the entries with a count of at least MIN in a table of SLOTS slots, compacting the arena. */
static void piece_rehash(bp_piece_table *t, uint64_t slots, uint64_t min) {
    bp_piece_slot *old = t->slot;
    uint64_t n = t->mask + 1;
    unsigned char *arena = t->arena;
    bool compact = min > 0;
    if (compact) {
        t->cap = t->cap ? t->cap : 1;
        t->arena = kiln_xmalloc(t->cap);
        t->used = 0;
    }
    piece_table_alloc(t, slots);
    for (uint64_t i = 0; i < n; i++) {
        bp_piece_slot e = old[i];
        if (!e.hash || e.count < min) continue;
        if (compact) {
            memcpy(t->arena + t->used, arena + e.off, e.len);
            e.off = t->used;
            t->used += e.len;
        }
        uint64_t j = e.hash & t->mask;
        while (t->slot[j].hash) j = (j + 1) & t->mask;
        t->slot[j] = e;
        t->n++;
    }
    if (compact) free(arena);
    free(old);
}

static uint64_t piece_table_bytes(const bp_piece_table *t) { return (t->mask + 1) * sizeof(bp_piece_slot) + t->cap; }

/* Drops the rarest pieces until the slots are at most 3/8 used and the arena at most half full. */
static void piece_prune(bp_piece_table *t) {
    uint64_t *hist = kiln_xcalloc(HIST_BINS, sizeof *hist), *bytes = kiln_xcalloc(HIST_BINS, sizeof *bytes);
    for (uint64_t i = 0; i <= t->mask; i++)
        if (t->slot[i].hash) {
            int b = hist_bin(t->slot[i].count);
            hist[b]++;
            bytes[b] += t->slot[i].len;
        }
    uint64_t min = prune_threshold(hist, (t->mask + 1) * 3 / 8), min_bytes = prune_threshold(bytes, t->cap / 2);
    if (min_bytes > min) min = min_bytes;
    free(hist);
    free(bytes);
    if (min - 1 > t->dropped_below) t->dropped_below = min - 1;
    piece_rehash(t, t->mask + 1, min);
}

void bp_pieces_init(bp_pieces *c, uint64_t mem) {
    memset(c, 0, sizeof *c);
    for (int s = 0; s < BP_SHARDS; s++) {
        piece_table_alloc(&c->shard[s], INITIAL_SLOTS);
        c->shard[s].limit = mem / BP_SHARDS;
        c->shard[s].cap = INITIAL_SLOTS * 8;
        c->shard[s].arena = kiln_xmalloc(c->shard[s].cap);
    }
}

void bp_pieces_free(bp_pieces *c) {
    for (int s = 0; s < BP_SHARDS; s++) {
        free(c->shard[s].slot);
        free(c->shard[s].arena);
    }
    memset(c, 0, sizeof *c);
}

uint64_t bp_pieces_dropped_below(const bp_pieces *c) {
    uint64_t d = 0;
    for (int s = 0; s < BP_SHARDS; s++)
        if (c->shard[s].dropped_below > d) d = c->shard[s].dropped_below;
    return d;
}

/* Room for one more entry of N bytes: grow the slots or the arena within the budget, else prune once;
 * a piece that still does not fit (one longer than the whole budget) is let in over it. */
static void piece_make_room(bp_piece_table *t, uint32_t n) {
    for (bool pruned = false;;) {
        bool slots_full = t->n + 1 > (t->mask + 1) / 4 * 3, arena_full = t->used + n > t->cap;
        if (!slots_full && !arena_full) return;
        uint64_t grow_slots = slots_full ? (t->mask + 1) * sizeof(bp_piece_slot) : 0;
        uint64_t grow_arena = arena_full ? (t->cap > n ? t->cap : n) : 0;
        bool within = piece_table_bytes(t) + grow_slots + grow_arena <= t->limit;
        if (!within && !pruned && t->n > 0) {
            piece_prune(t);
            pruned = true;
            continue;
        }
        if (slots_full) piece_rehash(t, 2 * (t->mask + 1), 0);
        if (arena_full) t->arena = kiln_xrealloc(t->arena, t->cap += within ? grow_arena : n);
    }
}

void bp_pieces_add(bp_pieces *c, uint64_t h, const unsigned char *p, uint32_t n) {
    bp_piece_table *t = &c->shard[bp_shard_of(h)];
    uint64_t i = h & t->mask;
    for (;; i = (i + 1) & t->mask) {
        bp_piece_slot *s = &t->slot[i];
        if (!s->hash) break;
        if (s->hash == h && s->len == n && memcmp(t->arena + s->off, p, n) == 0) {
            s->count++;
            return;
        }
    }
    piece_make_room(t, n);
    for (i = h & t->mask; t->slot[i].hash; i = (i + 1) & t->mask) {}
    memcpy(t->arena + t->used, p, n);
    t->slot[i] = (bp_piece_slot){h, 1, t->used, n};
    t->used += n;
    t->n++;
}
