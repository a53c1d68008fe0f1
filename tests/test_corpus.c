/* The corpus builder and reader (src/data/corpus.h) and the training data loader (src/train/loader.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/file.h"
#include "base/progress.h"
#include "data/corpus.h"
#include "test.h"
#include "train/loader.h"

static void write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECKF(f != NULL, "cannot create %s", path);
    fwrite(data, 1, n, f);
    fclose(f);
}

/* A source tree: src/a.c, src/lib/b.h, src/lib/deep/c.c, plus files that must be skipped. */
static const char *make_tree(void) {
    const char *root = test_tmp("src");
    char p[4200];
    mkdir(root, 0755);
    snprintf(p, sizeof p, "%s/lib", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/lib/deep", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/a.c", root), write_file(p, "int a;\n", 7);
    snprintf(p, sizeof p, "%s/lib/b.h", root), write_file(p, "#define B 1\n", 12);
    snprintf(p, sizeof p, "%s/lib/deep/c.c", root), write_file(p, "int c(void) { return 3; }\n", 26);
    snprintf(p, sizeof p, "%s/lib/copy.c", root), write_file(p, "int a;\n", 7);             /* duplicate of a.c */
    snprintf(p, sizeof p, "%s/bin.c", root), write_file(p, "x\0y", 3);                       /* binary */
    snprintf(p, sizeof p, "%s/notes.txt", root), write_file(p, "text\n", 5);                 /* not matched */
    char big[2000];
    memset(big, 'x', sizeof big);
    snprintf(p, sizeof p, "%s/big.h", root), write_file(p, big, sizeof big);                 /* too large */
    return root;
}

static kiln_corpus *build(const char *root, const char *out, double valid, int depth) {
    const char *dirs[] = {root};
    kiln_corpus_opts o = {.dirs = dirs, .n_dirs = 1, .output = out, .max_file_size = 1024, .valid_fraction = valid,
                          .channel_depth = depth, .progress = KILN_PROGRESS_OFF};
    kiln_corpus_stats st;
    CHECKF(kiln_corpus_build(&o, &st) == 0, "%s", kiln_errmsg());
    CHECK_EQ_INT(st.kept, 3);
    CHECK_EQ_INT(st.duplicate, 1);
    CHECK_EQ_INT(st.binary, 1);
    CHECK_EQ_INT(st.too_large, 1);
    kiln_corpus *c = kiln_corpus_open(out);
    CHECKF(c != NULL, "%s", kiln_errmsg());
    return c;
}

static const char *channel_of(const kiln_corpus *c, const char *suffix) {
    for (uint64_t i = 0; i < c->n_files; i++) {
        const corpus_file *f = &c->files[i];
        size_t n = strlen(suffix);
        if (f->path_len >= n && !memcmp(f->path + f->path_len - n, suffix, n)) return c->channels[f->channel];
    }
    return NULL;
}

TEST(corpus_keeps_sources_and_skips_binary_large_duplicate_and_unmatched_files) {
    kiln_corpus *c = build(make_tree(), test_tmp("x.corpus"), 0, 1);
    CHECK_EQ_INT(c->n_files, 3);
    CHECK_EQ_INT(c->split_n_files[CORPUS_VALID], 0);
    /* the train stream: files in path order, each followed by a NUL */
    const char want[] = "int a;\n\0#define B 1\n\0int c(void) { return 3; }\n";
    CHECK_EQ_INT(c->stream_size[CORPUS_TRAIN], sizeof want);
    CHECK(!memcmp(c->stream[CORPUS_TRAIN], want, sizeof want));
    kiln_corpus_close(c);
}

TEST(corpus_channel_is_the_first_directory_or_the_dirs_own_name) {
    kiln_corpus *c = build(make_tree(), test_tmp("x.corpus"), 0, 1);
    CHECK_STR(channel_of(c, "/a.c"), "src");
    CHECK_STR(channel_of(c, "/b.h"), "lib");
    CHECK_STR(channel_of(c, "/c.c"), "lib");
    kiln_corpus_close(c);
    c = build(make_tree(), test_tmp("y.corpus"), 0, 2);
    CHECK_STR(channel_of(c, "/c.c"), "lib/deep");
    CHECK_STR(channel_of(c, "/b.h"), "lib");
    kiln_corpus_close(c);
}

TEST(corpus_split_follows_the_path_hash_and_is_reproducible) {
    const char *root = make_tree();
    kiln_corpus *c = build(root, test_tmp("all.corpus"), 1, 1);
    CHECK_EQ_INT(c->split_n_files[CORPUS_TRAIN], 0);
    CHECK_EQ_INT(c->split_n_files[CORPUS_VALID], 3);
    kiln_corpus_close(c);
    kiln_corpus_close(build(root, test_tmp("a.corpus"), 0.5, 1));
    kiln_corpus_close(build(root, test_tmp("b.corpus"), 0.5, 1));
    size_t na, nb;
    char *a = kiln_read_file(test_tmp("a.corpus"), &na), *b = kiln_read_file(test_tmp("b.corpus"), &nb);
    CHECK(a && b && na == nb && !memcmp(a, b, na));
}

TEST(corpus_open_rejects_truncated_and_foreign_files) {
    kiln_corpus_close(build(make_tree(), test_tmp("x.corpus"), 0, 1));
    size_t n;
    char *data = kiln_read_file(test_tmp("x.corpus"), &n);
    write_file(test_tmp("cut.corpus"), data, n - 5);
    CHECK(kiln_corpus_open(test_tmp("cut.corpus")) == NULL);
    CHECKF(strstr(kiln_errmsg(), "cut.corpus") && strstr(kiln_errmsg(), "not a valid corpus"), "%s", kiln_errmsg());
    write_file(test_tmp("foreign.corpus"), "GGUF\3\0\0\0", 8);
    CHECK(kiln_corpus_open(test_tmp("foreign.corpus")) == NULL);
    CHECK(kiln_corpus_open(test_tmp("missing.corpus")) == NULL);
    CHECKF(strstr(kiln_errmsg(), "missing.corpus"), "%s", kiln_errmsg());
}

TEST(corpus_cli_names_a_missing_directory_and_an_empty_one) {
    char cmd[4200], *err;
    snprintf(cmd, sizeof cmd, "%s corpus /nonexistent/dir -o %s", test_kiln_bin(), test_tmp("x.corpus"));
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, "/nonexistent/dir"), "%s", err);
    mkdir(test_tmp("empty"), 0755);
    snprintf(cmd, sizeof cmd, "%s corpus %s -o %s", test_kiln_bin(), test_tmp("empty"), test_tmp("y.corpus"));
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, "no file matched"), "%s", err);
}

/* ---- loader ---- */

/* One file per channel directory: "one/x.c" holds LONG (a single long line) then short lines. */
static kiln_corpus *loader_corpus(const char *name, const char *one, const char *two) {
    char root[4200], p[4300];
    snprintf(root, sizeof root, "%s", test_tmp(name));
    mkdir(root, 0755);
    snprintf(p, sizeof p, "%s/one", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/two", root), mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/one/x.c", root), write_file(p, one, strlen(one));
    snprintf(p, sizeof p, "%s/two/y.c", root), write_file(p, two, strlen(two));
    char out[4300];
    snprintf(out, sizeof out, "%s.corpus", root);
    const char *dirs[] = {root};
    kiln_corpus_opts o = {.dirs = dirs, .n_dirs = 1, .output = out, .channel_depth = 1, .progress = KILN_PROGRESS_OFF};
    kiln_corpus_stats st;
    CHECKF(kiln_corpus_build(&o, &st) == 0, "%s", kiln_errmsg());
    kiln_corpus *c = kiln_corpus_open(out);
    CHECKF(c != NULL, "%s", kiln_errmsg());
    return c;
}

TEST(loader_rows_start_at_line_starts_uniformly_not_after_long_lines) {
    char one[600];
    memset(one, 'L', 500);
    strcpy(one + 500, "\na\nb\nc\nd\n");
    kiln_corpus *c = loader_corpus("uni", one, "p\nq\nr\ns\nt\nu\nv\nw\n");
    train_loader l;
    CHECKF(train_loader_init(&l, c, CORPUS_TRAIN, 4, 7) == 0, "%s", kiln_errmsg());
    /* line starts: 0, then after each newline and separator */
    int hits_after_long = 0, n = 20000;
    for (int i = 0; i < n; i++) {
        int32_t in[4], tg[4];
        uint16_t ch[4];
        train_loader_row(&l, (uint64_t)i, 0, in, tg, ch);
        int32_t first = in[0];
        CHECK(first == 'L' || (first >= 'a' && first <= 'd') || (first >= 'p' && first <= 'w'));
        for (int t = 0; t < 3; t++) CHECK_EQ_INT(tg[t], in[t + 1]);
        hits_after_long += first == 'a';
    }
    /* 12 line starts fit a window: 'a' should come up 1/12 of the time (a random byte offset snapped
     * to the next line would give it 500/527) */
    CHECKF(hits_after_long > n / 12 * 0.85 && hits_after_long < n / 12 * 1.15, "'a' drawn %d times of %d",
           hits_after_long, n);
    train_loader_free(&l);
    kiln_corpus_close(c);
}

TEST(loader_rows_are_a_pure_function_of_seed_step_and_row) {
    kiln_corpus *c = loader_corpus("pure", "a\nb\nc\nd\ne\nf\ng\n", "h\ni\nj\nk\nl\nm\n");
    train_loader l, l2;
    CHECK(train_loader_init(&l, c, CORPUS_TRAIN, 3, 11) == 0);
    CHECK(train_loader_init(&l2, c, CORPUS_TRAIN, 3, 11) == 0);
    int32_t a[3], b[3], t[3];
    uint16_t ch[3];
    int differ = 0;
    for (int step = 0; step < 50; step++) {
        train_loader_row(&l, step, 5, a, t, ch);
        train_loader_row(&l2, step, 5, b, t, ch);
        CHECK(!memcmp(a, b, sizeof a));
        train_loader_row(&l, step, 6, b, t, ch);
        differ += memcmp(a, b, sizeof a) != 0;
    }
    CHECK(differ > 10);
    train_loader_free(&l);
    train_loader_free(&l2);
    kiln_corpus_close(c);
}

/* Every target after the first exactly once, with its file's channel, whatever the stride. */
static void check_windows_score_each_byte_once(kiln_corpus *c, const train_loader *l, int stride) {
    int32_t in[4], tg[4];
    uint16_t ch[4];
    int seen = 0; /* targets scored so far: the next is stream byte seen + 1 */
    for (uint64_t w = 0; w < train_loader_n_windows(l, stride); w++) {
        int n = train_loader_window(l, w, stride, in, tg, ch), scored = 0;
        for (int t = 0; t < 4; t++) {
            if (ch[t] == UINT16_MAX) continue;
            int pos = seen + 1;
            CHECK_EQ_INT((int)(w * stride) + t + 1, pos);
            CHECK_EQ_INT(tg[t], c->stream[0][pos]);
            CHECK_EQ_INT(in[t], c->stream[0][pos - 1]);
            CHECK_STR(c->channels[ch[t]], pos <= 8 ? "one" : "two"); /* the NUL at 8 ends file one */
            seen++, scored++;
        }
        CHECK_EQ_INT(n, scored);
    }
    CHECK_EQ_INT(seen, 14);
}

TEST(loader_windows_score_every_byte_once_with_its_files_channel_at_every_stride) {
    kiln_corpus *c = loader_corpus("tile", "abc\ndef\n", "ghij\n");
    train_loader l;
    CHECK(train_loader_init(&l, c, CORPUS_TRAIN, 4, 1) == 0);
    /* stream: "abc\ndef\n" NUL "ghij\n" NUL = 15 bytes: 14 targets, in 4 tiled windows */
    CHECK_EQ_INT(l.size, 15);
    CHECK_EQ_INT(train_loader_n_windows(&l, 4), 4);
    CHECK_EQ_INT(train_loader_n_windows(&l, 2), 6);
    CHECK_EQ_INT(train_loader_n_windows(&l, 1), 11);
    for (int stride = 1; stride <= 4; stride++) check_windows_score_each_byte_once(c, &l, stride);
    train_loader_free(&l);
    kiln_corpus_close(c);
}

TEST(loader_rejects_a_context_longer_than_the_split_and_an_empty_valid_split) {
    kiln_corpus *c = loader_corpus("small", "abc\n", "def\n");
    train_loader l;
    CHECK(train_loader_init(&l, c, CORPUS_TRAIN, 64, 1) < 0);
    CHECKF(strstr(kiln_errmsg(), "--ctx 64") && strstr(kiln_errmsg(), "train split"), "%s", kiln_errmsg());
    CHECK(train_loader_init(&l, c, CORPUS_VALID, 2, 1) < 0);
    CHECKF(strstr(kiln_errmsg(), "valid split") && strstr(kiln_errmsg(), "no file"), "%s", kiln_errmsg());
    kiln_corpus_close(c);
}

TEST(corpus_sample_takes_whole_files_spread_over_the_split) {
    kiln_corpus *c = build(make_tree(), test_tmp("x.corpus"), 0, 1);
    /* 3 train files of 8, 13 and 27 bytes with separators: a quarter of the bytes takes the first
     * (8 < 12 walked over 4), skips the second (8 >= 21 / 4) and takes the third (8 < 48 / 4) */
    kiln_corpus *s = corpus_sample(c, CORPUS_TRAIN, 12);
    CHECK_EQ_INT(s->split_n_files[CORPUS_TRAIN], 2);
    CHECK_EQ_INT(s->stream_size[CORPUS_TRAIN], 35);
    CHECK(!memcmp(s->stream[CORPUS_TRAIN], "int a;\n\0int c(void) { return 3; }\n\0", 35));
    CHECK_EQ_INT(s->split_n_files[CORPUS_VALID], 0);
    kiln_corpus_close(s);
    s = corpus_sample(c, CORPUS_TRAIN, 0);
    CHECK_EQ_INT(s->stream_size[CORPUS_TRAIN], c->stream_size[CORPUS_TRAIN]);
    CHECK(!memcmp(s->stream[CORPUS_TRAIN], c->stream[CORPUS_TRAIN], c->stream_size[CORPUS_TRAIN]));
    kiln_corpus_close(s);
    kiln_corpus_close(c);
}
