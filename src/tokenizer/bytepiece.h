/* BytePiece: a byte-level unigram tokenizer and its trainer, after Su Jianlin's BytePiece
 * (kexue.fm/archives/9752, github.com/bojone/bytepiece). See docs/TOKENIZER.md.
 *
 * A vocabulary is a set of byte strings ("pieces"), each with a score (its log-probability). Ids 0..255
 * are the 256 single bytes (id b is byte b), so every byte string has a segmentation and decodes back
 * exactly, and the low ids agree with kiln's byte-level models. Encoding picks the segmentation with the
 * largest sum of scores (unigram Viterbi over a trie of the pieces), or samples one with probability
 * proportional to exp(alpha * sum of scores).
 *
 * Long texts are cut into blocks (bytepiece_block_len) that are segmented independently: memory stays
 * bounded, and the trainer, the encoder and `kiln tokenize` cut the same way. */
#ifndef KILN_TOKENIZER_BYTEPIECE_H
#define KILN_TOKENIZER_BYTEPIECE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/rng.h"
#include "format/gguf.h"

typedef struct bytepiece bytepiece;

enum {
    BYTEPIECE_ORDER = 6,            /* order of the byte n-gram model the trainer segments with */
    BYTEPIECE_MAX_PIECE = 256,      /* longest piece a vocabulary may hold */
    BYTEPIECE_BLOCK = 1 << 16,      /* a block is cut after the first newline at >= this many bytes... */
};

/* How a vocabulary was trained; carried in the file as kiln.bytepiece.*. */
typedef struct {
    int vocab;                  /* the requested size (the trained one may be smaller) */
    int max_piece_length;
    int min_count;
    bool isolate_digits;        /* digits are pieces of their own */
    bool ensure_unicode;        /* multi-byte pieces hold whole UTF-8 characters only */
    uint64_t corpus_bytes;
    uint64_t pruned_below;      /* memory pressure dropped counts below this while counting (0: none) */
} bytepiece_settings;

/* A vocabulary of N pieces: PIECES[i] (LENS[i] bytes, 1..BYTEPIECE_MAX_PIECE) has id i and score
 * SCORES[i] (finite). Pieces must be distinct and every single byte must be one of them. NAME is used
 * in errors. NULL with an error naming the piece at fault. */
bytepiece *bytepiece_build(const char *name, int n, const unsigned char *const *pieces, const uint32_t *lens,
                           const float *scores);
/* The vocabulary stored in G (tokenizer.ggml.model "bytepiece"), validated. NULL with an error when
 * G holds no bytepiece vocabulary or a malformed one. */
bytepiece *bytepiece_from_gguf(const gguf_file *g);
bytepiece *bytepiece_open(const char *path);
/* Writes tokenizer.ggml.* and kiln.bytepiece.* of T into W. */
void bytepiece_to_gguf(const bytepiece *t, gguf_writer *w);
int bytepiece_save(const bytepiece *t, const char *path);
void bytepiece_free(bytepiece *t);

int bytepiece_n_vocab(const bytepiece *t);
const unsigned char *bytepiece_piece(const bytepiece *t, int id, size_t *len);
float bytepiece_score(const bytepiece *t, int id);
const bytepiece_settings *bytepiece_get_settings(const bytepiece *t);
void bytepiece_set_settings(bytepiece *t, const bytepiece_settings *s);

/* The length of the block that starts at P, given AVAIL bytes from P on (AT_END: nothing follows them).
 * A block ends after the first newline at offset >= BYTEPIECE_BLOCK - 1, or at 2 * BYTEPIECE_BLOCK
 * bytes, or at the end of the text. Returns 0 when AVAIL bytes do not decide it (more must be read). */
size_t bytepiece_block_len(const unsigned char *p, size_t avail, bool at_end);

/* The max-score segmentation of LEN bytes of TEXT: ids into OUT (at most MAX; LEN always suffices).
 * Returns the number of ids, or -1 with an error when MAX is too small. */
long bytepiece_encode(const bytepiece *t, const void *text, size_t len, int32_t *out, size_t max);
/* A segmentation drawn with probability proportional to exp(ALPHA * sum of its scores) (ALPHA >= 0;
 * 0 draws uniformly among all segmentations), using and advancing RNG. As bytepiece_encode otherwise. */
long bytepiece_sample(const bytepiece *t, const void *text, size_t len, double alpha, kiln_rng *rng, int32_t *out,
                      size_t max);
/* The bytes of N ids back to back into OUT (at most MAX bytes). Returns the byte count, or -1 with an
 * error on an id out of range or when MAX is too small. */
long bytepiece_decode(const bytepiece *t, const int32_t *ids, size_t n, void *out, size_t max);

/* ---- Training ---- */
typedef struct {
    int vocab;                  /* target vocabulary size, >= 256 */
    int max_piece_length;       /* 2..BYTEPIECE_MAX_PIECE; default 36 */
    int min_count;              /* n-grams and pieces seen fewer times are dropped; default 2 */
    bool isolate_digits, ensure_unicode;
    int threads;                /* 0: OpenMP's default */
    uint64_t mem;               /* memory for the n-gram counts (pieces get a quarter more); 0: 1 GiB */
    bool progress;              /* a progress bar on stderr */
} bytepiece_train_opts;

/* Trains a vocabulary on the N_PATHS files PATHS and writes it to OUT (GGUF, atomically). The result does
 * not depend on the thread count. -1 with an error naming the file or option at fault. */
int bytepiece_train(const char *const *paths, int n_paths, const bytepiece_train_opts *o, const char *out);

#endif
