/* BytePiece: training, the file, encoding (Viterbi and sampling) and the command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "base/rng.h"
#include "test.h"
#include "tokenizer/bytepiece.h"
#include "tokenizer/bytepiece_impl.h"

static const char *HEADERS[] = {"/usr/include/stdio.h", "/usr/include/stdlib.h", "/usr/include/string.h",
                                "/usr/include/unistd.h", "/usr/include/math.h", "/usr/include/signal.h",
                                "/usr/include/time.h", "/usr/include/fcntl.h", "/usr/include/wchar.h"};

/* A corpus of C headers (about 200 KB) at test_tmp(NAME). */
static const char *write_corpus(const char *name) {
    const char *path = test_tmp(name);
    FILE *f = fopen(path, "wb");
    CHECK(f);
    for (size_t i = 0; i < sizeof HEADERS / sizeof *HEADERS; i++) {
        size_t n;
        char *s = kiln_read_file(HEADERS[i], &n);
        CHECKF(s, "%s", kiln_errmsg());
        fwrite(s, 1, n, f);
        free(s);
    }
    fclose(f);
    return path;
}

static bytepiece_train_opts opts(int vocab) {
    return (bytepiece_train_opts){.vocab = vocab, .max_piece_length = 36, .min_count = 2, .threads = 1};
}

static bytepiece *train_on(const char *corpus, bytepiece_train_opts o, const char *out) {
    const char *paths[] = {corpus};
    CHECKF(bytepiece_train(paths, 1, &o, out) == 0, "training: %s", kiln_errmsg());
    bytepiece *t = bytepiece_open(out);
    CHECKF(t, "%s", kiln_errmsg());
    return t;
}

static bytepiece *trained(void) {
    static bytepiece *t;
    if (!t) t = train_on(write_corpus("corpus.txt"), opts(1000), test_tmp("tok.gguf"));
    return t;
}

/* Encodes and decodes LEN bytes of S (sampling when ALPHA >= 0) and checks the bytes come back. */
static void check_round_trip(const bytepiece *t, const void *s, size_t len, double alpha) {
    int32_t *ids = malloc((len + 1) * sizeof *ids);
    char *back = malloc(len + 1);
    kiln_rng rng;
    kiln_rng_seed(&rng, 7);
    long n = alpha >= 0 ? bytepiece_sample(t, s, len, alpha, &rng, ids, len) : bytepiece_encode(t, s, len, ids, len);
    CHECKF(n >= 0 && (size_t)n <= len, "encode: %ld ids for %zu bytes: %s", n, len, kiln_errmsg());
    long m = bytepiece_decode(t, ids, (size_t)n, back, len);
    CHECKF(m == (long)len, "decoded %ld bytes, expected %zu", m, len);
    CHECK(len == 0 || memcmp(back, s, len) == 0);
    free(ids);
    free(back);
}

TEST(bytepiece_round_trips_random_bytes) {
    size_t len = 300000; /* several encoder blocks */
    unsigned char *s = malloc(len);
    kiln_rng rng;
    kiln_rng_seed(&rng, 1);
    for (size_t i = 0; i < len; i++) s[i] = (unsigned char)kiln_rng_u64(&rng);
    check_round_trip(trained(), s, len, -1);
    free(s);
}

TEST(bytepiece_round_trips_invalid_utf8) {
    const char s[] = "caf\xc3\xa9 \xc3 \xa9\xa9 \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82 \xff\xfe\x00tail\xc0\xaf";
    check_round_trip(trained(), s, sizeof s - 1, -1);
}

TEST(bytepiece_round_trips_empty_input) {
    int32_t id;
    CHECK_EQ_INT(bytepiece_encode(trained(), "", 0, &id, 0), 0);
    check_round_trip(trained(), "", 0, 0.5);
}

TEST(bytepiece_round_trips_a_system_header) {
    size_t n;
    char *s = kiln_read_file("/usr/include/stdint.h", &n);
    CHECKF(s, "%s", kiln_errmsg());
    check_round_trip(trained(), s, n, -1);
    free(s);
}

TEST(bytepiece_sampled_segmentations_round_trip) {
    size_t n;
    char *s = kiln_read_file("/usr/include/stdint.h", &n);
    CHECKF(s, "%s", kiln_errmsg());
    for (int k = 0; k < 3; k++) check_round_trip(trained(), s, n, k * 0.3);
    free(s);
}

TEST(bytepiece_compresses_c_code_it_has_not_seen) {
    size_t n;
    char *s = kiln_read_file("/usr/include/stdint.h", &n);
    CHECKF(s, "%s", kiln_errmsg());
    int32_t *ids = malloc(n * sizeof *ids);
    long k = bytepiece_encode(trained(), s, n, ids, n);
    CHECKF(k > 0 && (double)n / k > 1.5, "%zu bytes in %ld tokens", n, k);
    free(ids);
    free(s);
}

TEST(bytepiece_ids_0_to_255_are_the_single_bytes) {
    const bytepiece *t = trained();
    for (int b = 0; b < 256; b++) {
        size_t len;
        const unsigned char *p = bytepiece_piece(t, b, &len);
        CHECKF(len == 1 && p[0] == b, "id %d is %zu bytes", b, len);
    }
    for (int id = 256; id < bytepiece_n_vocab(t); id++) {
        size_t len;
        bytepiece_piece(t, id, &len);
        CHECKF(len >= 2 && len <= 36, "id %d has %zu bytes", id, len);
    }
}

TEST(bytepiece_vocabulary_size_stays_within_the_request) {
    const char *corpus = write_corpus("corpus.txt");
    int sizes[] = {256, 300, 1000};
    for (int i = 0; i < 3; i++) {
        bytepiece *t = train_on(corpus, opts(sizes[i]), test_tmp("tok.gguf"));
        int n = bytepiece_n_vocab(t);
        CHECKF(n <= sizes[i] && n >= sizes[i] * 9 / 10, "asked for %d pieces, got %d", sizes[i], n);
        bytepiece_free(t);
    }
}

static char *file_bytes(const char *path, size_t *n) {
    char *s = kiln_read_file(path, n);
    CHECKF(s, "%s", kiln_errmsg());
    return s;
}

TEST(bytepiece_training_twice_gives_the_same_file) {
    const char *corpus = write_corpus("corpus.txt");
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s", test_tmp("a.gguf"));
    snprintf(b, sizeof b, "%s", test_tmp("b.gguf"));
    bytepiece_free(train_on(corpus, opts(800), a));
    bytepiece_free(train_on(corpus, opts(800), b));
    size_t na, nb;
    char *x = file_bytes(a, &na), *y = file_bytes(b, &nb);
    CHECK(na == nb && memcmp(x, y, na) == 0);
    free(x);
    free(y);
}

TEST(bytepiece_training_does_not_depend_on_the_thread_count) {
    const char *corpus = write_corpus("corpus.txt");
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s", test_tmp("a.gguf"));
    snprintf(b, sizeof b, "%s", test_tmp("b.gguf"));
    bytepiece_train_opts o = opts(800);
    o.mem = 1 << 20; /* small enough that pruning during counting happens */
    bytepiece *t = train_on(corpus, o, a);
    CHECK(bytepiece_get_settings(t)->pruned_below > 0);
    bytepiece_free(t);
    o.threads = 3;
    bytepiece_free(train_on(corpus, o, b));
    size_t na, nb;
    char *x = file_bytes(a, &na), *y = file_bytes(b, &nb);
    CHECK(na == nb && memcmp(x, y, na) == 0);
    free(x);
    free(y);
}

TEST(bytepiece_ngram_counts_stay_within_their_memory_budget) {
    bp_ngrams *m = malloc(sizeof *m);
    uint64_t budget = 1 << 20;
    bp_ngrams_init(m, budget, 36, 2, false, false);
    size_t len = 1 << 20;
    unsigned char *s = malloc(len);
    kiln_rng rng;
    kiln_rng_seed(&rng, 3);
    /* Random bytes (every 6-gram new) interleaved with a phrase that recurs. */
    for (size_t i = 0; i < len; i++) s[i] = i % 64 < 16 ? "for (i = 0; i < "[i % 16] : (unsigned char)kiln_rng_u64(&rng);
    bp_block b = {s, len};
    bp_ngrams_count(m, &b, 1, 0, 1);
    uint64_t bytes = 0;
    for (int sh = 0; sh < BP_SHARDS; sh++) bytes += (m->shard[sh].mask + 1) * sizeof(bp_ngram_slot);
    CHECKF(bytes <= budget, "tables take %llu bytes, budget %llu", (unsigned long long)bytes, (unsigned long long)budget);
    CHECK(bp_ngrams_dropped_below(m) >= 1);
    bp_ngrams_finish(m, 1);
    /* The recurring phrase survives: its 6-grams are all there, with probability near 1. */
    float lp = 1;
    for (int sh = 0; sh < BP_SHARDS; sh++)
        for (uint64_t i = 0; i <= m->shard[sh].mask; i++)
            if (m->shard[sh].slot[i].key == ((uint64_t)6 << 56 | 0x2869203d2030)) /* "(i = 0" */
                memcpy(&lp, &m->shard[sh].slot[i].val, 4);
    CHECKF(lp <= 0 && lp > -0.1f, "log p of the phrase's 6-gram: %g", lp);
    bp_ngrams_free(m);
    free(m);
    free(s);
}

TEST(bytepiece_an_empty_corpus_file_changes_nothing) {
    const char *corpus = write_corpus("corpus.txt");
    char a[4096], b[4096], empty[4096];
    snprintf(a, sizeof a, "%s", test_tmp("a.gguf"));
    snprintf(b, sizeof b, "%s", test_tmp("b.gguf"));
    snprintf(empty, sizeof empty, "%s", test_tmp("empty.txt"));
    fclose(fopen(empty, "wb"));
    bytepiece_train_opts o = opts(600);
    const char *one[] = {corpus}, *three[] = {empty, corpus, empty};
    CHECKF(bytepiece_train(one, 1, &o, a) == 0, "%s", kiln_errmsg());
    CHECKF(bytepiece_train(three, 3, &o, b) == 0, "%s", kiln_errmsg());
    size_t na, nb;
    char *x = file_bytes(a, &na), *y = file_bytes(b, &nb);
    CHECK(na == nb && memcmp(x, y, na) == 0);
    free(x);
    free(y);
}

static bool has_digit(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] >= '0' && p[i] <= '9') return true;
    return false;
}

TEST(bytepiece_isolate_digits_leaves_digits_in_single_byte_pieces_only) {
    bytepiece_train_opts o = opts(1000);
    o.isolate_digits = true;
    bytepiece *t = train_on(write_corpus("corpus.txt"), o, test_tmp("tok.gguf"));
    for (int id = 256; id < bytepiece_n_vocab(t); id++) {
        size_t len;
        const unsigned char *p = bytepiece_piece(t, id, &len);
        CHECKF(!has_digit(p, len), "piece %d holds a digit", id);
    }
    CHECK(bytepiece_get_settings(t)->isolate_digits);
    bytepiece_free(t);
}

TEST(bytepiece_ensure_unicode_keeps_characters_whole) {
    const char *path = test_tmp("utf8.txt");
    FILE *f = fopen(path, "wb");
    const char *words[] = {"naïve ", "café ", "日本語の", "テキスト", "Ωμέγα ", "€100 ", "😀 ", "über ", "niño\n"};
    kiln_rng rng;
    kiln_rng_seed(&rng, 5);
    for (int i = 0; i < 20000; i++) fputs(words[kiln_rng_below(&rng, 9)], f);
    fclose(f);
    bytepiece_train_opts o = opts(600);
    o.ensure_unicode = true;
    bytepiece *t = train_on(path, o, test_tmp("tok.gguf"));
    int multi = 0;
    for (int id = 256; id < bytepiece_n_vocab(t); id++) {
        size_t len;
        const unsigned char *p = bytepiece_piece(t, id, &len);
        for (size_t i = 0; i < len;) {
            size_t l = bp_utf8_len(p + i, len - i);
            CHECKF(l > 1 || p[i] < 0x80, "piece %d splits a character at byte %zu", id, i);
            multi += l > 1;
            i += l;
        }
    }
    CHECK(multi > 0);
    bytepiece_free(t);
}

/* ---- Viterbi and sampling against enumeration of every segmentation ---- */

typedef struct {
    int n;
    const unsigned char *p[64];
    uint32_t len[64];
    float score[64];
} small_vocab;

/* All 256 bytes (scores from RNG) and the multi-byte pieces EXTRA. */
static bytepiece *small_tokenizer(small_vocab *v, const char *const *extra, int n_extra, kiln_rng *rng) {
    static unsigned char bytes[256];
    const unsigned char *pieces[256 + 64];
    uint32_t lens[256 + 64];
    float scores[256 + 64];
    for (int b = 0; b < 256; b++) {
        bytes[b] = (unsigned char)b;
        pieces[b] = &bytes[b];
        lens[b] = 1;
        scores[b] = -1 - 4 * kiln_rng_f32(rng);
    }
    v->n = n_extra;
    for (int i = 0; i < n_extra; i++) {
        pieces[256 + i] = v->p[i] = (const unsigned char *)extra[i];
        lens[256 + i] = v->len[i] = (uint32_t)strlen(extra[i]);
        scores[256 + i] = v->score[i] = -1 - 6 * kiln_rng_f32(rng);
    }
    bytepiece *t = bytepiece_build("test", 256 + n_extra, pieces, lens, scores);
    CHECKF(t, "%s", kiln_errmsg());
    return t;
}

/* Enumerates every segmentation of S[i..n): calls back with the ids and total score of each. */
typedef void (*seg_fn)(void *ctx, const int32_t *ids, int k, double score);

static void enumerate(const bytepiece *t, const unsigned char *s, size_t i, size_t n, int32_t *ids, int k,
                      double score, seg_fn fn, void *ctx) {
    if (i == n) {
        fn(ctx, ids, k, score);
        return;
    }
    for (int id = 0; id < bytepiece_n_vocab(t); id++) {
        size_t len;
        const unsigned char *p = bytepiece_piece(t, id, &len);
        if (len <= n - i && memcmp(p, s + i, len) == 0) {
            ids[k] = id;
            enumerate(t, s, i + len, n, ids, k + 1, score + bytepiece_score(t, id), fn, ctx);
        }
    }
}

static void keep_max(void *ctx, const int32_t *ids, int k, double score) {
    double *best = ctx;
    if (score > *best) *best = score;
}

TEST(bytepiece_viterbi_finds_the_max_score_segmentation) {
    const char *extra[] = {"ab", "ba", "abc", "bca", "cab", "aa", "bb", "cc", "abca", "bcab", "aab", "bcc", "cabc", "ca"};
    kiln_rng rng;
    kiln_rng_seed(&rng, 11);
    for (int trial = 0; trial < 40; trial++) {
        small_vocab v;
        bytepiece *t = small_tokenizer(&v, extra, 14, &rng);
        for (int w = 0; w < 10; w++) {
            unsigned char s[10];
            size_t n = 1 + kiln_rng_below(&rng, 10);
            for (size_t i = 0; i < n; i++) s[i] = "abcx"[kiln_rng_below(&rng, 4)];
            int32_t ids[10], tmp[10];
            long k = bytepiece_encode(t, s, n, ids, 10);
            double got = 0, best = -1e30;
            size_t at = 0;
            for (long i = 0; i < k; i++) {
                size_t len;
                const unsigned char *p = bytepiece_piece(t, ids[i], &len);
                CHECK(at + len <= n && memcmp(p, s + at, len) == 0);
                at += len;
                got += bytepiece_score(t, ids[i]);
            }
            CHECK(at == n);
            enumerate(t, s, 0, n, tmp, 0, 0, keep_max, &best);
            CHECKF(got >= best - 1e-4, "trial %d: Viterbi scored %g, the best is %g", trial, got, best);
        }
        bytepiece_free(t);
    }
}

typedef struct {
    int n;
    int32_t ids[64][8];
    int k[64];
    double score[64];
} seg_list;

static void keep_all(void *ctx, const int32_t *ids, int k, double score) {
    seg_list *l = ctx;
    CHECK(l->n < 64);
    memcpy(l->ids[l->n], ids, k * sizeof *ids);
    l->k[l->n] = k;
    l->score[l->n++] = score;
}

TEST(bytepiece_sampling_frequencies_match_exp_alpha_score) {
    const char *extra[] = {"ab", "ba", "aba", "bab", "abab"};
    kiln_rng rng;
    kiln_rng_seed(&rng, 2);
    small_vocab v;
    bytepiece *t = small_tokenizer(&v, extra, 5, &rng);
    const unsigned char *s = (const unsigned char *)"ababa";
    seg_list segs = {0};
    int32_t tmp[8];
    enumerate(t, s, 0, 5, tmp, 0, 0, keep_all, &segs);
    CHECK(segs.n >= 8);
    const double alpha = 0.6;
    double z = 0, expect[64];
    for (int i = 0; i < segs.n; i++) z += expect[i] = exp(alpha * segs.score[i]);
    const int draws = 40000;
    int seen[64] = {0};
    kiln_rng_seed(&rng, 99);
    for (int d = 0; d < draws; d++) {
        int32_t ids[8];
        long k = bytepiece_sample(t, s, 5, alpha, &rng, ids, 8);
        int which = -1;
        for (int i = 0; i < segs.n && which < 0; i++)
            if (segs.k[i] == k && memcmp(segs.ids[i], ids, k * sizeof *ids) == 0) which = i;
        CHECK(which >= 0);
        seen[which]++;
    }
    /* Pearson's chi-square against the 0.999 quantile (Wilson-Hilferty), pooling cells expected < 5. */
    double chi2 = 0, pool_e = 0, pool_o = 0;
    int cells = 0;
    for (int i = 0; i < segs.n; i++) {
        double e = draws * expect[i] / z;
        if (e < 5) {
            pool_e += e;
            pool_o += seen[i];
            continue;
        }
        chi2 += (seen[i] - e) * (seen[i] - e) / e;
        cells++;
    }
    if (pool_e > 0) chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e, cells++;
    double df = cells - 1, c = 1 - 2 / (9 * df) + 3.09 * sqrt(2 / (9 * df)), crit = df * c * c * c;
    CHECKF(chi2 < crit, "chi-square %.1f over %d cells exceeds %.1f", chi2, cells, crit);
    bytepiece_free(t);
}

TEST(bytepiece_build_rejects_duplicate_pieces_and_missing_bytes) {
    unsigned char bytes[256];
    const unsigned char *pieces[258];
    uint32_t lens[258];
    float scores[258] = {0};
    for (int b = 0; b < 256; b++) bytes[b] = (unsigned char)b, pieces[b] = &bytes[b], lens[b] = 1;
    pieces[256] = pieces[257] = (const unsigned char *)"ab";
    lens[256] = lens[257] = 2;
    CHECK(!bytepiece_build("dup", 258, pieces, lens, scores));
    CHECK(strstr(kiln_errmsg(), "same bytes"));
    pieces[0] = (const unsigned char *)"cd";
    lens[0] = 2;
    CHECK(!bytepiece_build("nobyte", 257, pieces, lens, scores));
    CHECK(strstr(kiln_errmsg(), "single bytes"));
}

/* ---- The command line ---- */

/* Runs CMD and checks it fails with one line on stderr that mentions NEEDLE. */
static void check_one_line_error(const char *cmd, const char *needle) {
    char *err;
    int rc = test_run(cmd, NULL, &err);
    CHECKF(rc != 0, "exit status 0, stderr: %s", err);
    CHECKF(strstr(err, needle), "stderr lacks '%s': %s", needle, err);
    CHECKF(strchr(err, '\n') == err + strlen(err) - 1, "not one line: %s", err);
    free(err);
}

TEST(tokenizer_train_cli_names_a_missing_corpus) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s tokenizer train /nonexistent/corpus.txt --vocab 500 -o %s --quiet", test_kiln_bin(),
             test_tmp("t.gguf"));
    check_one_line_error(cmd, "/nonexistent/corpus.txt");
}

TEST(tokenizer_train_cli_rejects_a_vocab_below_256) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s tokenizer train %s --vocab 100 -o %s --quiet", test_kiln_bin(),
             write_corpus("c.txt"), test_tmp("t.gguf"));
    check_one_line_error(cmd, "--vocab");
}

TEST(tokenize_cli_rejects_a_corrupt_tokenizer_file) {
    const char *good = test_tmp("good.gguf");
    bytepiece_free(train_on(write_corpus("c.txt"), opts(400), good));
    size_t n;
    char *bytes = file_bytes(good, &n);
    const char *bad = test_tmp("bad.gguf");
    char cmd[8192];
    /* Truncated, and with piece 65 (the byte 'A') changed to another byte. */
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(bad, "wb");
        if (k == 1) {
            char *a = memmem(bytes, n, "\x01\x00\x00\x00\x00\x00\x00\x00" "A", 9);
            CHECK(a);
            a[8] = 'B';
        }
        fwrite(bytes, 1, k == 0 ? n / 2 : n, f);
        fclose(f);
        snprintf(cmd, sizeof cmd, "%s tokenize -m %s hello", test_kiln_bin(), bad);
        check_one_line_error(cmd, bad);
    }
    free(bytes);
}

TEST(tokenize_cli_prints_ids_that_decode_to_the_text) {
    const char *tok = test_tmp("tok.gguf");
    bytepiece *t = train_on(write_corpus("c.txt"), opts(500), tok);
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "%s tokenize -m %s 'int main(void) { return 0; }'", test_kiln_bin(), tok);
    CHECKF(test_run(cmd, &out, &err) == 0, "%s", err);
    int32_t ids[64];
    int n = 0;
    for (char *p = out, *end; n < 64 && (ids[n] = (int32_t)strtol(p, &end, 10), end != p); p = end) n++;
    char back[64];
    long m = bytepiece_decode(t, ids, (size_t)n, back, sizeof back);
    CHECK(m == 28 && memcmp(back, "int main(void) { return 0; }", 28) == 0);
    free(out);
    free(err);
    bytepiece_free(t);
}

TEST(tokenize_cli_uses_a_model_files_own_tokenizer) {
    const char *model = test_tmp("m.gguf");
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "%s convert %s --tokenizer %s -o %s", test_kiln_bin(),
             test_data("stories260K/stories260K.bin"), test_data("stories260K/tok512.bin"), model);
    CHECKF(test_run(cmd, NULL, &err) == 0, "convert: %s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s tokenize -m %s --bos --pieces 'Once upon a time'", test_kiln_bin(), model);
    CHECKF(test_run(cmd, &out, &err) == 0, "%s", err);
    CHECKF(strstr(out, "\"Once\"") || strstr(out, "\"Once \"") || strstr(out, "\" Once\"") || strstr(out, "\"On\""),
           "pieces: %s", out);
    free(out);
    free(err);
}
