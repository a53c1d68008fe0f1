/* The data loader: rows of T+1 bytes from one split of a corpus.
 *
 * A training row is a window starting at a line start (a byte after a newline or a file's NUL
 * separator, or the stream's first byte; never a separator itself), chosen uniformly among the line starts whose window fits in
 * the stream, by a counter-based hash of (seed, step, row): the rows of a step never depend on thread
 * count, process count or history, so resuming needs only the step number. A window may run past the
 * end of its file into the next one, through the NUL that separates them.
 *
 * An evaluation window w covers stream bytes [w S, w S + T + 1) for a stride S in 1..T, and scores
 * only its last S targets (window 0 all T): every byte after the first is predicted exactly once, and
 * each but the first T with at least T - S bytes of context. S = T tiles the stream (context 0..T-1,
 * one forward pass per T bytes); S = T/2, as llama.cpp's perplexity, costs twice that and gives every
 * scored byte at least T/2 bytes of context.
 *
 * Each target byte carries the channel of the file it belongs to (a separator belongs to the file
 * before it), so per-channel losses are sums over that channel's own bytes. */
#ifndef KILN_TRAIN_LOADER_H
#define KILN_TRAIN_LOADER_H

#include <stdint.h>

#include "data/corpus.h"

typedef struct {
    const kiln_corpus *corpus;
    int split, T;
    uint64_t seed;
    const unsigned char *bytes;
    uint64_t size;
    uint32_t *starts;    /* line starts p with p + T + 1 <= size */
    uint64_t n_starts;
} train_loader;

/* -1 with a message when the split is too small for one window of T+1 bytes or larger than 4 GiB. */
int train_loader_init(train_loader *l, const kiln_corpus *c, int split, int T, uint64_t seed);
void train_loader_free(train_loader *l);

/* Row ROW of step STEP: T inputs, the T bytes after them as targets, and the targets' channels. */
void train_loader_row(const train_loader *l, uint64_t step, uint64_t row, int32_t *in, int32_t *tg, uint16_t *ch);

/* Number of evaluation windows of stride STRIDE (the last may be partial) and window W, whose targets
 * that are not scored (already scored by an earlier window, or past the end) carry channel UINT16_MAX
 * and count nowhere. Returns the number of scored targets. */
uint64_t train_loader_n_windows(const train_loader *l, int stride);
int train_loader_window(const train_loader *l, uint64_t w, int stride, int32_t *in, int32_t *tg, uint16_t *ch);

#endif
