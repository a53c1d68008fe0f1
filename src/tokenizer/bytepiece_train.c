/* BytePiece training (kexue.fm/archives/9752, after the word discovery of kexue.fm/archives/3956):
 *
 *   1. count the byte n-grams (orders 1..6) of the corpus in one streaming pass;
 *   2. segment the corpus by Viterbi under that n-gram model (a piece is cut where its bytes predict
 *      each other least) and count the pieces, in a second pass;
 *   3. keep the pieces seen at least min_count times and no longer than max_piece_length, plus the 256
 *      single bytes; each dropped piece is segmented by the unigram model of the kept ones and its count
 *      goes to the pieces it splits into;
 *   4. drop "wasted" pieces, those the unigram model never picks for their own bytes because other pieces
 *      cover them at a better score, re-segmenting their counts, until no more go;
 *   5. if more than --vocab remain, keep the most frequent, re-segment the rest, and repeat step 4.
 * Scores are then log(count / total). Counting is sharded by hash and counts are merged as integer
 * sums, so the result does not depend on the thread count. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/progress.h"
#include "tokenizer/bytepiece_impl.h"

enum { ROUND_BYTES = 32 << 20 };

/* ---- Reading the corpus in rounds of whole blocks ---- */

typedef struct {
    const char *const *paths;
    int n_paths, file, fd;
    bool file_eof;
    unsigned char *buf;
    size_t cap, len, pos; /* buf[pos, len) is read but not yet handed out */
    uint64_t total, done;
    bp_block *blocks;
    size_t n_blocks, cap_blocks;
} corpus;

static int corpus_check(const char *const *paths, int n, uint64_t *total) {
    *total = 0;
    for (int i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDONLY);
        struct stat st;
        if (fd < 0) return kiln_fail("%s: %s", paths[i], strerror(errno));
        int rc = fstat(fd, &st);
        close(fd);
        if (rc != 0 || !S_ISREG(st.st_mode)) return kiln_fail("%s: not a regular file", paths[i]);
        *total += (uint64_t)st.st_size;
    }
    return 0;
}

static void corpus_open(corpus *c, const char *const *paths, int n, uint64_t total) {
    *c = (corpus){.paths = paths, .n_paths = n, .fd = -1, .file = -1, .file_eof = true, .total = total};
    c->cap = ROUND_BYTES;
    c->buf = kiln_xmalloc(c->cap);
}

static void corpus_close(corpus *c) {
    if (c->fd >= 0) close(c->fd);
    free(c->buf);
    free(c->blocks);
    *c = (corpus){0};
}

static void add_block(corpus *c, size_t n) {
    if (c->n_blocks == c->cap_blocks)
        c->blocks = kiln_xrealloc(c->blocks, (c->cap_blocks = c->cap_blocks ? 2 * c->cap_blocks : 256) * sizeof *c->blocks);
    c->blocks[c->n_blocks++] = (bp_block){c->buf + c->pos, n};
    c->pos += n;
    c->done += n;
}

/* Fills c->blocks with the next round of blocks: 0 when the corpus is done, -1 on a read error. Blocks
 * never span files; the unfinished tail of a full buffer moves to the next round. */
static int corpus_round(corpus *c) {
    memmove(c->buf, c->buf + c->pos, c->len - c->pos);
    c->len -= c->pos;
    c->pos = 0;
    c->n_blocks = 0;
    for (;;) {
        size_t n;
        while ((n = bytepiece_block_len(c->buf + c->pos, c->len - c->pos, c->file_eof)) > 0) add_block(c, n);
        if (c->file_eof) {
            if (c->fd >= 0) close(c->fd);
            c->fd = -1;
            if (c->file + 1 == c->n_paths) return c->n_blocks > 0;
            const char *path = c->paths[++c->file];
            if ((c->fd = open(path, O_RDONLY)) < 0) return kiln_fail("%s: %s", path, strerror(errno));
            c->file_eof = false;
            continue;
        }
        if (c->len == c->cap) return 1;
        ssize_t got = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (got < 0) return kiln_fail("%s: %s", c->paths[c->file], strerror(errno));
        if (got == 0) c->file_eof = true;
        c->len += (size_t)got;
    }
}

/* ---- Passes over the corpus ---- */

static int count_ngrams(corpus *c, bp_ngrams *m, int threads, int mode) {
    kiln_progress bar;
    kiln_progress_begin(&bar, "count n-grams", c->total, "B", mode);
    int r;
    while ((r = corpus_round(c)) > 0) {
#pragma omp parallel num_threads(threads)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            uint64_t uni[256] = {0};
            for (size_t k = (size_t)t; k < c->n_blocks; k += (size_t)nt)
                for (size_t i = 0; i < c->blocks[k].n; i++) uni[c->blocks[k].p[i]]++;
#pragma omp critical
            for (int b = 0; b < 256; b++) m->uni[b] += uni[b];
            bp_ngrams_count(m, c->blocks, c->n_blocks, t, nt);
        }
        kiln_progress_update(&bar, c->done);
    }
    if (r < 0) {
        kiln_progress_abort(&bar);
        return -1;
    }
    kiln_progress_end(&bar);
    return 0;
}

static int count_pieces(corpus *c, const bp_ngrams *m, bp_pieces *pc, int threads, int mode) {
    kiln_progress bar;
    kiln_progress_begin(&bar, "segment", c->total, "B", mode);
    uint8_t *start = kiln_xmalloc(c->cap);
    int r;
    while ((r = corpus_round(c)) > 0) {
        const bp_block *b = c->blocks;
        size_t nb = c->n_blocks;
#pragma omp parallel num_threads(threads)
        {
            uint8_t *bp = kiln_xmalloc(2 * (size_t)BYTEPIECE_BLOCK);
#pragma omp for schedule(dynamic)
            for (size_t k = 0; k < nb; k++) bp_ngrams_segment(m, b[k].p, b[k].n, bp, start + (b[k].p - c->buf));
            free(bp);
            /* Each thread counts the pieces of its own shards, in corpus order. */
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            for (size_t k = 0; k < nb; k++) {
                const uint8_t *st = start + (b[k].p - c->buf);
                for (size_t i = 0; i < b[k].n;) {
                    size_t j = i + 1;
                    while (j < b[k].n && !st[j]) j++;
                    uint64_t h = bp_piece_hash(b[k].p + i, j - i);
                    if (bp_shard_of(h) % nt == t) bp_pieces_add(pc, h, b[k].p + i, (uint32_t)(j - i));
                    i = j;
                }
            }
        }
        kiln_progress_update(&bar, c->done);
    }
    free(start);
    if (r < 0) {
        kiln_progress_abort(&bar);
        return -1;
    }
    kiln_progress_end(&bar);
    return 0;
}

/* ---- Pruning the pieces ---- */

typedef struct {
    const unsigned char *p;
    uint32_t len;
    uint64_t count;
} cand;

typedef struct {
    cand *v;
    size_t n, cap;
} cand_list;

static void cand_push(cand_list *l, cand c) {
    if (l->n == l->cap) l->v = kiln_xrealloc(l->v, (l->cap = l->cap ? 2 * l->cap : 1024) * sizeof *l->v);
    l->v[l->n++] = c;
}

static const unsigned char single_bytes[256] = {
#define R16(b) b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9, b + 10, b + 11, b + 12, b + 13, b + 14, b + 15
    R16(0), R16(16), R16(32), R16(48), R16(64), R16(80), R16(96), R16(112),
    R16(128), R16(144), R16(160), R16(176), R16(192), R16(208), R16(224), R16(240),
#undef R16
};

static int cmp_bytes(const cand *a, const cand *b) {
    int c = memcmp(a->p, b->p, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int cmp_cand_bytes(const void *a, const void *b) { return cmp_bytes(a, b); }

/* Single bytes first, then by count, longer first, then by bytes: the order pieces are kept in. */
static int cmp_cand_rank(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if ((a->len > 1) != (b->len > 1)) return a->len > 1 ? 1 : -1;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return cmp_bytes(a, b);
}

/* Whether piece P ends with the start of a UTF-8 character that a longer text could complete. */
static bool ends_mid_char(const unsigned char *p, uint32_t n) {
    uint32_t q = n; /* back over at most three continuation bytes to the last other byte */
    while (q > 0 && n - q < 3 && (p[q - 1] & 0xc0) == 0x80) q--;
    if (q == 0) return false;
    unsigned lead = p[q - 1];
    uint32_t have = n - q + 1, need = lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
    if (lead < 0xc2 || lead > 0xf4 || have >= need) return false;
    if (have == 1) return true;
    unsigned lo = lead == 0xe0 ? 0xa0 : lead == 0xf0 ? 0x90 : 0x80, hi = lead == 0xed ? 0x9f : lead == 0xf4 ? 0x8f : 0xbf;
    return p[q] >= lo && p[q] <= hi;
}

/* Whether piece P may be in a vocabulary of these settings: with ensure_unicode it neither starts with
 * a continuation byte nor ends in the middle of a character, so that on valid UTF-8 only single bytes
 * can split a character; with isolate_digits it holds no digit. */
static bool piece_allowed(const unsigned char *p, uint32_t n, const bytepiece_train_opts *o) {
    if (n == 1) return true;
    if (o->isolate_digits)
        for (uint32_t i = 0; i < n; i++)
            if (p[i] >= '0' && p[i] <= '9') return false;
    return !o->ensure_unicode || ((p[0] & 0xc0) != 0x80 && !ends_mid_char(p, n));
}

static bytepiece *unigram_of(const cand *v, size_t n) {
    const unsigned char **pieces = kiln_xmalloc(n * sizeof *pieces);
    uint32_t *lens = kiln_xmalloc(n * sizeof *lens);
    float *scores = kiln_xmalloc(n * sizeof *scores);
    double total = 0;
    for (size_t i = 0; i < n; i++) total += (double)v[i].count;
    for (size_t i = 0; i < n; i++) {
        pieces[i] = v[i].p;
        lens[i] = v[i].len;
        scores[i] = (float)(log((double)v[i].count) - log(total));
    }
    bytepiece *t = bytepiece_build("training", (int)n, pieces, lens, scores);
    free(pieces);
    free(lens);
    free(scores);
    return t;
}

/* Segments each of the ND pieces DROP by the unigram model of the NK pieces KEEP and adds its count to
 * ADD[i] for each keep piece i it splits into. */
static void split_pieces(const cand *keep, size_t nk, const cand *drop, size_t nd, uint64_t *add, int threads) {
    bytepiece *t = unigram_of(keep, nk);
    uint32_t longest = 1;
    for (size_t d = 0; d < nd; d++)
        if (drop[d].len > longest) longest = drop[d].len;
#pragma omp parallel num_threads(threads)
    {
        uint64_t *mine = kiln_xcalloc(nk, sizeof *mine);
        int32_t *ids = kiln_xmalloc(longest * sizeof *ids);
        bp_scratch w = {0};
#pragma omp for schedule(dynamic, 256)
        for (size_t d = 0; d < nd; d++) {
            size_t n = bp_viterbi(t, drop[d].p, drop[d].len, &w, ids, longest);
            for (size_t i = 0; i < n; i++) mine[ids[i]] += drop[d].count;
        }
#pragma omp critical
        for (size_t i = 0; i < nk; i++) add[i] += mine[i];
        bp_scratch_free(&w);
        free(ids);
        free(mine);
    }
    bytepiece_free(t);
}

/* Re-segments every kept piece by the model of all of them, until each one is its own best segmentation
 * somewhere: pieces left with no count are gone. */
static void drop_wasted(cand_list *keep, int threads, kiln_progress *bar, uint64_t *steps) {
    for (;;) {
        uint64_t *add = kiln_xcalloc(keep->n, sizeof *add);
        split_pieces(keep->v, keep->n, keep->v, keep->n, add, threads);
        size_t n = 0;
        for (size_t i = 0; i < keep->n; i++)
            if (add[i] > 0) keep->v[n++] = (cand){keep->v[i].p, keep->v[i].len, add[i]};
        free(add);
        kiln_progress_update(bar, *steps += keep->n);
        bool stable = n == keep->n;
        keep->n = n;
        if (stable) return;
    }
}

/* Moves the pieces from index FROM on out of KEEP, adding their counts to what they split into. */
static void drop_tail(cand_list *keep, size_t from, int threads) {
    uint64_t *add = kiln_xcalloc(from, sizeof *add);
    split_pieces(keep->v, from, keep->v + from, keep->n - from, add, threads);
    for (size_t i = 0; i < from; i++) keep->v[i].count += add[i];
    keep->n = from;
    free(add);
}

static void prune_pieces(cand_list *all, const bytepiece_train_opts *o, int threads, int mode) {
    kiln_progress bar;
    kiln_progress_begin(&bar, "prune", 0, "pieces", mode);
    uint64_t steps = 0;
    /* Kept pieces first, then the dropped ones: by frequency, length and the vocabulary's rules. */
    size_t n_keep = 0;
    for (size_t i = 0; i < all->n; i++) {
        cand c = all->v[i];
        if (c.len == 1 || (c.len <= (uint32_t)o->max_piece_length && c.count >= (uint64_t)o->min_count &&
                           piece_allowed(c.p, c.len, o))) {
            all->v[i] = all->v[n_keep];
            all->v[n_keep++] = c;
        }
    }
    drop_tail(all, n_keep, threads);
    kiln_progress_update(&bar, steps += all->n);
    /* BytePiece drops wasted pieces here as well; when a cut to the vocabulary size follows, that moves
     * little of the counts the cut ranks by and costs several passes over every candidate. */
    if (all->n > (size_t)o->vocab) {
        qsort(all->v, all->n, sizeof *all->v, cmp_cand_rank);
        size_t n = all->n;
        drop_tail(all, (size_t)o->vocab, threads);
        kiln_progress_update(&bar, steps += n);
    }
    drop_wasted(all, threads, &bar, &steps);
    kiln_progress_end(&bar);
}

/* Every piece counted, sorted by bytes (an order that does not depend on the tables' layout), with the
 * 256 single bytes present. */
static void collect_pieces(const bp_pieces *pc, cand_list *all) {
    bool seen[256] = {0};
    for (int s = 0; s < BP_SHARDS; s++) {
        const bp_piece_table *t = &pc->shard[s];
        for (uint64_t i = 0; i <= t->mask; i++) {
            const bp_piece_slot *e = &t->slot[i];
            if (!e->hash) continue;
            cand_push(all, (cand){t->arena + e->off, e->len, e->count});
            if (e->len == 1) seen[t->arena[e->off]] = true;
        }
    }
    for (int b = 0; b < 256; b++)
        if (!seen[b]) cand_push(all, (cand){&single_bytes[b], 1, 1});
    qsort(all->v, all->n, sizeof *all->v, cmp_cand_bytes);
}

static int cmp_cand_len(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    return a->len != b->len ? (a->len > b->len) - (a->len < b->len) : cmp_bytes(a, b);
}

/* The vocabulary file: pieces by length and bytes, so ids 0..255 are the single bytes. */
static int write_vocab(cand_list *keep, const bytepiece_train_opts *o, uint64_t corpus_bytes, uint64_t pruned_below,
                       const char *out) {
    qsort(keep->v, keep->n, sizeof *keep->v, cmp_cand_len);
    bytepiece *t = unigram_of(keep->v, keep->n);
    if (!t) return -1;
    bytepiece_settings s = {o->vocab, o->max_piece_length, o->min_count, o->isolate_digits, o->ensure_unicode,
                            corpus_bytes, pruned_below};
    bytepiece_set_settings(t, &s);
    int rc = bytepiece_save(t, out);
    bytepiece_free(t);
    return rc;
}

int bytepiece_train(const char *const *paths, int n_paths, const bytepiece_train_opts *o, const char *out) {
    if (n_paths < 1) return kiln_fail("no corpus files given");
    if (o->vocab < 256) return kiln_fail("--vocab %d: must be at least 256 (the single bytes)", o->vocab);
    if (o->max_piece_length < 2 || o->max_piece_length > BYTEPIECE_MAX_PIECE)
        return kiln_fail("--max-piece-length %d: must be 2 to %d", o->max_piece_length, BYTEPIECE_MAX_PIECE);
    if (o->min_count < 1) return kiln_fail("--min-count %d: must be at least 1", o->min_count);
    uint64_t total;
    if (corpus_check(paths, n_paths, &total) != 0) return -1;
    if (total == 0) return kiln_fail("%s: the corpus is empty", paths[0]);
    int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    int mode = o->progress ? KILN_PROGRESS_AUTO : KILN_PROGRESS_OFF;
    uint64_t mem = o->mem ? o->mem : 1ull << 30;

    bp_ngrams *m = kiln_xmalloc(sizeof *m);
    bp_ngrams_init(m, mem, o->max_piece_length, o->min_count, o->isolate_digits, o->ensure_unicode);
    corpus c;
    corpus_open(&c, paths, n_paths, total);
    int rc = count_ngrams(&c, m, threads, mode);
    corpus_close(&c);
    uint64_t pruned_below = bp_ngrams_dropped_below(m);
    bp_pieces pc;
    bp_pieces_init(&pc, mem / 4);
    if (rc == 0) {
        bp_ngrams_finish(m, threads);
        corpus_open(&c, paths, n_paths, total);
        rc = count_pieces(&c, m, &pc, threads, mode);
        corpus_close(&c);
    }
    bp_ngrams_free(m);
    free(m);
    if (rc == 0) {
        cand_list all = {0};
        collect_pieces(&pc, &all);
        prune_pieces(&all, o, threads, mode);
        uint64_t p = bp_pieces_dropped_below(&pc);
        rc = write_vocab(&all, o, total, p > pruned_below ? p : pruned_below, out);
        free(all.v);
    }
    bp_pieces_free(&pc);
    return rc;
}
