/* BytePiece internals shared by the encoder and the trainer. Private to src/tokenizer/. */
#ifndef KILN_TOKENIZER_BYTEPIECE_IMPL_H
#define KILN_TOKENIZER_BYTEPIECE_IMPL_H

#include "tokenizer/bytepiece.h"

/* ---- Encoder pieces the trainer reuses ---- */

/* Working memory of one Viterbi pass, grown on demand; one per thread. */
typedef struct {
    double *best;       /* best[i]: the best score of a segmentation of text[i..n) */
    int32_t *choice;    /* choice[i]: the first piece of that segmentation */
    size_t cap;
} bp_scratch;

void bp_scratch_free(bp_scratch *w);

/* The max-score segmentation of the N bytes at S as a whole (no blocks): at most ROOM ids into OUT.
 * Returns the number of ids, or SIZE_MAX when they do not fit. */
size_t bp_viterbi(const bytepiece *t, const unsigned char *s, size_t n, bp_scratch *w, int32_t *out, size_t room);

uint32_t bp_piece_len(const bytepiece *t, int id);

/* The length of the well-formed multi-byte UTF-8 character at P (AVAIL bytes), or 1 when P does not
 * start one. */
size_t bp_utf8_len(const unsigned char *p, size_t avail);

/* ---- Counting, sharded by hash so that threads own disjoint shards and the counts, and where memory
 * pressure drops the rarest entries, do not depend on the thread count. ---- */

enum { BP_SHARDS = 64 };

typedef struct {
    const unsigned char *p;
    size_t n;
} bp_block;

/* Open addressing, linear probing. A key packs an n-gram's bytes (last byte lowest) and its order in
 * bits 56..63; 0 marks an empty slot. val is a count while counting, then the float bits of the
 * conditional log-probability. */
typedef struct {
    uint64_t key, val;
} bp_ngram_slot;

typedef struct {
    bp_ngram_slot *slot;
    uint64_t mask, n;
    uint64_t limit;        /* bytes the slots may take */
    uint64_t dropped_below; /* the highest count pruning has dropped entries under */
} bp_ngram_table;

typedef struct {
    bp_ngram_table shard[BP_SHARDS];
    uint64_t uni[256];     /* 1-gram counts */
    float uni_logp[256];
    int max_len;           /* longest piece the segmentation makes */
    int min_count;
    bool isolate_digits, ensure_unicode;
} bp_ngrams;

void bp_ngrams_init(bp_ngrams *m, uint64_t mem, int max_len, int min_count, bool isolate_digits,
                    bool ensure_unicode);
void bp_ngrams_free(bp_ngrams *m);
/* Counts the n-grams of orders 2..BYTEPIECE_ORDER in the NB blocks that fall in thread T's shards (of
 * NT threads). Called by every thread of a team at once. */
void bp_ngrams_count(bp_ngrams *m, const bp_block *b, size_t nb, int t, int nt);
/* Turns the counts into log-probabilities of a byte given the bytes before it, dropping n-grams seen
 * fewer than min_count times. */
void bp_ngrams_finish(bp_ngrams *m, int threads);
/* Segments the N bytes at S by Viterbi under the n-gram model into pieces of at most max_len bytes:
 * START[i] = 1 where a piece starts. BP is scratch of N bytes. */
void bp_ngrams_segment(const bp_ngrams *m, const unsigned char *s, size_t n, uint8_t *bp, uint8_t *start);
uint64_t bp_ngrams_dropped_below(const bp_ngrams *m);

/* Piece counts: the bytes live in a per-shard arena. */
typedef struct {
    uint64_t hash, count, off;
    uint32_t len;
} bp_piece_slot;

typedef struct {
    bp_piece_slot *slot;
    uint64_t mask, n;
    unsigned char *arena;
    uint64_t used, cap;
    uint64_t limit;         /* bytes the slots and the arena may take */
    uint64_t dropped_below;
} bp_piece_table;

typedef struct {
    bp_piece_table shard[BP_SHARDS];
} bp_pieces;

void bp_pieces_init(bp_pieces *c, uint64_t mem);
void bp_pieces_free(bp_pieces *c);
uint64_t bp_piece_hash(const unsigned char *p, size_t n);
static inline int bp_shard_of(uint64_t hash) { return (int)(hash >> 58); }
/* Counts one occurrence of piece P (N bytes, hash H) in its shard. */
void bp_pieces_add(bp_pieces *c, uint64_t h, const unsigned char *p, uint32_t n);
uint64_t bp_pieces_dropped_below(const bp_pieces *c);

#endif
