/* The data loader (loader.h). */
#include "train/loader.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"

int train_loader_init(train_loader *l, const kiln_corpus *c, int split, int T, uint64_t seed) {
    memset(l, 0, sizeof *l);
    const char *name = split == CORPUS_TRAIN ? "train" : "valid";
    uint64_t size = c->stream_size[split];
    if (size < (uint64_t)T + 1)
        return kiln_fail("%s: the %s split holds %llu bytes, fewer than one window of --ctx %d + 1%s", c->path, name,
                         (unsigned long long)size, T,
                         size ? "" : " (no file landed in it: add files or change --valid when building the corpus)");
    if (size > UINT32_MAX)
        return kiln_fail("%s: the %s split holds %llu bytes; the loader indexes at most 4 GiB", c->path, name,
                         (unsigned long long)size);
    if (c->n_channels >= UINT16_MAX)
        return kiln_fail("%s: %d channels; at most %d (use a smaller --channel-depth)", c->path, c->n_channels,
                         UINT16_MAX - 1);
    l->corpus = c;
    l->split = split;
    l->T = T;
    l->seed = seed;
    l->bytes = c->stream[split];
    l->size = size;
    uint64_t last = size - T - 1, cap = 1024;
    l->starts = kiln_xmalloc(cap * sizeof *l->starts);
    for (uint64_t p = 0; p <= last;) {
        if (l->n_starts == cap) l->starts = kiln_xrealloc(l->starts, (cap *= 2) * sizeof *l->starts);
        if (l->bytes[p] != 0) l->starts[l->n_starts++] = (uint32_t)p; /* not a file's end right after its last line */
        /* the next line start: after the next newline or separator */
        const unsigned char *q = l->bytes + p;
        while (q < l->bytes + last && *q != '\n' && *q != 0) q++;
        p = (uint64_t)(q - l->bytes) + 1;
    }
    return 0;
}

void train_loader_free(train_loader *l) {
    free(l->starts);
    memset(l, 0, sizeof *l);
}

/* Channels of the N bytes from stream position POS on. */
static void channels(const train_loader *l, uint64_t pos, int n, uint16_t *ch) {
    const kiln_corpus *c = l->corpus;
    const corpus_file *files = c->split_files[l->split];
    uint64_t f = corpus_file_at(c, l->split, pos), nf = c->split_n_files[l->split];
    for (int i = 0; i < n; i++, pos++) {
        while (f + 1 < nf && pos > files[f].offset + files[f].size) f++;
        ch[i] = (uint16_t)files[f].channel;
    }
}

void train_loader_row(const train_loader *l, uint64_t step, uint64_t row, int32_t *in, int32_t *tg, uint16_t *ch) {
    kiln_rng r;
    kiln_rng_seed(&r, kiln_hash3(l->seed, step, row));
    uint64_t p = l->starts[kiln_rng_below(&r, l->n_starts)];
    for (int t = 0; t < l->T; t++) {
        in[t] = l->bytes[p + t];
        tg[t] = l->bytes[p + t + 1];
    }
    channels(l, p + 1, l->T, ch);
}

uint64_t train_loader_n_windows(const train_loader *l, int stride) {
    uint64_t targets = l->size - 1; /* every byte but the first */
    return targets <= (uint64_t)l->T ? 1 : 1 + (targets - l->T + stride - 1) / stride;
}

int train_loader_window(const train_loader *l, uint64_t w, int stride, int32_t *in, int32_t *tg, uint16_t *ch) {
    uint64_t p = w * stride;
    int n = l->size - 1 - p < (uint64_t)l->T ? (int)(l->size - 1 - p) : l->T;
    int first = w == 0 ? 0 : l->T - stride; /* the targets before it were scored by earlier windows */
    for (int t = 0; t < l->T; t++) {
        in[t] = t < n ? l->bytes[p + t] : 0;
        tg[t] = t < n ? l->bytes[p + t + 1] : 0;
    }
    for (int t = 0; t < first; t++) ch[t] = UINT16_MAX;
    if (n > first) channels(l, p + 1 + first, n - first, ch + first);
    for (int t = n > first ? n : first; t < l->T; t++) ch[t] = UINT16_MAX;
    return n > first ? n - first : 0;
}
