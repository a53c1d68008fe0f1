/* kiln shuffle: records kept exactly, order uniform (chi-square) and deterministic, memory bounded,
 * temporary files cleaned up on errors and signals. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/file.h"
#include "base/progress.h"
#include "base/rng.h"
#include "data/shuffle.h"
#include "test.h"

/* ---- Files and records ---- */
static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECKF(f != NULL, "cannot create %s", path);
    CHECK(fwrite(data, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}

static char *slurp(const char *path, size_t *n) {
    char *d = kiln_read_file(path, n);
    CHECKF(d != NULL, "%s", kiln_errmsg());
    return d;
}

/* LINES records of 0..MAX_LEN bytes each, bytes drawn from [LO, HI] except SEP, each followed by SEP. */
static void write_random_records(const char *path, uint64_t seed, int lines, int max_len, int lo, int hi,
                                 unsigned char sep) {
    FILE *f = fopen(path, "wb");
    CHECKF(f != NULL, "cannot create %s", path);
    kiln_rng r;
    kiln_rng_seed(&r, seed);
    unsigned char *line = malloc((size_t)max_len + 1);
    for (int i = 0; i < lines; i++) {
        int len = (int)kiln_rng_below(&r, (uint64_t)max_len + 1);
        for (int k = 0; k < len; k++) {
            int c = lo + (int)(((kiln_rng_u64(&r) >> 32) * (uint64_t)(hi - lo + 1)) >> 32);
            line[k] = (unsigned char)(c == sep ? sep + 1 : c);
        }
        line[len] = sep;
        CHECK(fwrite(line, 1, (size_t)len + 1, f) == (size_t)len + 1);
    }
    free(line);
    CHECK(fclose(f) == 0);
}

typedef struct {
    const char *p;
    size_t n;
} rec;

typedef struct {
    rec *r;
    size_t n, cap;
    char *data[16];
    int n_data;
} recs;

static void push_rec(recs *R, const char *p, size_t n) {
    if (R->n == R->cap) {
        R->cap = R->cap ? 2 * R->cap : 1024;
        R->r = realloc(R->r, R->cap * sizeof *R->r);
    }
    R->r[R->n++] = (rec){p, n};
}

/* Appends the records of PATH: split at SEP, a last record without SEP counted too. */
static void add_records(recs *R, const char *path, unsigned char sep) {
    size_t n;
    char *d = slurp(path, &n);
    CHECK(R->n_data < 16);
    R->data[R->n_data++] = d;
    size_t start = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)d[i] == sep) {
            push_rec(R, d + start, i - start);
            start = i + 1;
        }
    if (start < n) push_rec(R, d + start, n - start);
}

static void free_recs(recs *R) {
    for (int i = 0; i < R->n_data; i++) free(R->data[i]);
    free(R->r);
    memset(R, 0, sizeof *R);
}

static int rec_cmp(const void *a, const void *b) {
    const rec *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* The output holds exactly the records of the inputs (as a multiset), each ended by SEP. */
static void check_same_records(const char *const *inputs, int n_inputs, const char *out, unsigned char sep) {
    recs in = {0}, got = {0};
    for (int i = 0; i < n_inputs; i++) add_records(&in, inputs[i], sep);
    add_records(&got, out, sep);
    size_t n;
    char *o = slurp(out, &n);
    CHECKF(n == 0 || (unsigned char)o[n - 1] == sep, "%s does not end with the separator", out);
    free(o);
    CHECKF(got.n == in.n, "%zu records out, %zu in", got.n, in.n);
    qsort(in.r, in.n, sizeof *in.r, rec_cmp);
    qsort(got.r, got.n, sizeof *got.r, rec_cmp);
    for (size_t i = 0; i < in.n; i++)
        CHECKF(rec_cmp(&in.r[i], &got.r[i]) == 0, "sorted record %zu differs (%zu vs %zu bytes)", i, got.r[i].n,
               in.r[i].n);
    free_recs(&in);
    free_recs(&got);
}

static void run_lib(const char *const *inputs, int n, const char *out, uint64_t mem, uint64_t seed,
                    unsigned char sep) {
    kiln_shuffle_opts o = {inputs, n, out, mem, seed, NULL, sep, KILN_PROGRESS_OFF};
    CHECKF(kiln_shuffle(&o) == 0, "%s", kiln_errmsg());
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* Inputs with the awkward cases: no final newline, empty lines, an empty file, many random lines. */
static void write_awkward_inputs(const char *paths[4], int lines) {
    paths[0] = test_tmp("a.txt");
    paths[1] = test_tmp("b.txt");
    paths[2] = test_tmp("c.txt");
    paths[3] = test_tmp("d.txt");
    write_bytes(paths[0], "one\n\ntwo\nthree", 14);
    write_bytes(paths[1], "", 0);
    write_bytes(paths[2], "\n\n\nx\n", 5);
    write_random_records(paths[3], 7, lines, 80, 'a', 'z', '\n');
}

/* Names of the entries of DIR (joined by spaces), "" when empty. */
static void dir_entries(const char *dir, char *buf, size_t size) {
    buf[0] = 0;
    DIR *d = opendir(dir);
    CHECKF(d != NULL, "cannot open %s", dir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(buf + strlen(buf), size - strlen(buf), "%s ", e->d_name);
    closedir(d);
}

/* A fresh empty directory (test_tmp keeps what an earlier run left). */
static const char *empty_dir(const char *name) {
    const char *dir = test_tmp(name);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir '%s'", dir, dir);
    CHECK(system(cmd) == 0);
    return dir;
}

/* Runs build/kiln with ARGV (failing the test, with its stderr, if it fails) and returns its peak
 * resident memory in KB. */
static long spawn_kiln(char *const argv[]) {
    const char *err_path = test_tmp("spawn-stderr.txt");
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY), err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(null, 1);
        dup2(err, 2);
        execv(test_kiln_bin(), argv);
        _exit(127);
    }
    int st;
    struct rusage ru;
    CHECK(wait4(pid, &st, 0, &ru) == pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        size_t n;
        char *err = slurp(err_path, &n);
        test_fail(__FILE__, __LINE__, "kiln %s failed (status %d): %s", argv[1], st, err);
    }
    return ru.ru_maxrss;
}

/* The resident memory of the kiln process itself, doing nothing (code, libraries, libc). */
static long kiln_footprint_kb(void) {
    char *argv[] = {"kiln", "shuffle", "--help", NULL};
    return spawn_kiln(argv);
}

/* ---- Records kept ---- */
TEST(shuffle_in_memory_keeps_every_record) {
    const char *in[4], *out = test_tmp("out.txt");
    write_awkward_inputs(in, 2000);
    run_lib(in, 4, out, 64 << 20, 1, '\n');
    check_same_records(in, 4, out, '\n');
}

TEST(shuffle_through_buckets_keeps_every_record) {
    const char *in[4], *out = test_tmp("out.txt");
    write_awkward_inputs(in, 40000); /* ~1.6 MB through 256K of memory */
    run_lib(in, 4, out, 256 << 10, 2, '\n');
    check_same_records(in, 4, out, '\n');
}

TEST(overflowing_buckets_are_split_again_keeping_every_record) {
    /* The bucket count comes from the mean record length of the first read block (8K at --mem 256K):
     * here long lines, while the rest is 500000 empty lines needing 9 bytes each in memory, so every
     * bucket overflows and is split again. */
    const char *in = test_tmp("in.txt"), *out = test_tmp("out.txt");
    FILE *f = fopen(in, "wb");
    CHECK(f != NULL);
    for (int i = 0; i < 40; i++) {
        for (int k = 0; k < 300; k++) fprintf(f, "L%d ", i);
        fputc('\n', f);
    }
    char *empty = malloc(500000);
    memset(empty, '\n', 500000);
    CHECK(fwrite(empty, 1, 500000, f) == 500000);
    free(empty);
    CHECK(fclose(f) == 0);
    run_lib(&in, 1, out, 256 << 10, 13, '\n');
    check_same_records(&in, 1, out, '\n');
}

TEST(shuffle_keeps_binary_records_with_nul_bytes) {
    const char *in = test_tmp("bin.dat"), *out1 = test_tmp("out1.dat"), *out2 = test_tmp("out2.dat");
    write_random_records(in, 3, 20000, 60, 0, 255, '\n');
    run_lib(&in, 1, out1, 64 << 20, 3, '\n');
    check_same_records(&in, 1, out1, '\n');
    run_lib(&in, 1, out2, 128 << 10, 3, '\n');
    check_same_records(&in, 1, out2, '\n');
}

TEST(shuffle_splits_records_at_the_chosen_separator) {
    const char *in = test_tmp("nul.dat"), *out = test_tmp("out.dat");
    write_random_records(in, 4, 20000, 60, 0, 255, '\0'); /* records hold newlines, end with NUL */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s shuffle %s -o %s --mem 128K --sep '\\0' --seed 4", test_kiln_bin(), in, out);
    char *err;
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    check_same_records(&in, 1, out, '\0');
    free(err);
}

TEST(shuffle_reads_an_input_of_unknown_size_from_a_pipe) {
    const char *in = test_tmp("in.txt"), *fifo = test_tmp("fifo"), *out = test_tmp("out.txt");
    write_random_records(in, 8, 30000, 60, 'a', 'z', '\n');
    unlink(fifo); /* from an earlier run */
    CHECK(mkfifo(fifo, 0600) == 0);
    char cmd[2048], *err;
    snprintf(cmd, sizeof cmd, "cat %s > %s & %s shuffle %s -o %s --mem 256K --seed 8", in, fifo, test_kiln_bin(),
             fifo, out);
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    check_same_records(&in, 1, out, '\n');
    free(err);
}

TEST(output_to_stdout_or_a_link_to_it_leaves_the_link_alone) {
    /* "-", and a link like /dev/stdout (a copy of it here: a failure must not replace the real one)
     * with stdout redirected to a file: the file gets the records and the link stays a link. */
    const char *in = test_tmp("in.txt"), *o1 = test_tmp("o1.txt"), *o2 = test_tmp("o2.txt");
    const char *link = test_tmp("stdout");
    write_random_records(in, 9, 20000, 60, 'a', 'z', '\n');
    unlink(link);
    CHECK(symlink("/proc/self/fd/1", link) == 0);
    char cmd[2048], *err;
    snprintf(cmd, sizeof cmd, "%s shuffle %s -o - --mem 256K --seed 1 > %s && %s shuffle %s -o %s > %s",
             test_kiln_bin(), in, o1, test_kiln_bin(), in, link, o2);
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    check_same_records(&in, 1, o1, '\n');
    check_same_records(&in, 1, o2, '\n');
    struct stat st;
    CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode));
    free(err);
}

TEST(shuffle_may_overwrite_its_input) {
    const char *in = test_tmp("in.txt"), *copy = test_tmp("copy.txt");
    write_random_records(in, 5, 5000, 40, 'a', 'z', '\n');
    write_random_records(copy, 5, 5000, 40, 'a', 'z', '\n');
    run_lib(&in, 1, in, 64 << 20, 5, '\n');
    check_same_records(&copy, 1, in, '\n');
    CHECK(!same_file(in, copy));
}

/* ---- Memory ---- */
TEST(peak_memory_stays_under_mem_on_an_input_five_times_larger) {
    const char *in = test_tmp("big.txt"), *out = test_tmp("out.txt");
    write_random_records(in, 6, 800000, 98, ' ', '~', '\n'); /* ~40 MB */
    long base = kiln_footprint_kb();
    char *argv[] = {"kiln", "shuffle", (char *)in, "-o", (char *)out, "--mem", "8M", "--quiet", NULL};
    long peak = spawn_kiln(argv);
    CHECKF(peak <= 8 * 1024 + base, "peak RSS %ld KB > 8 MiB + the process's own %ld KB", peak, base);
}

TEST(long_records_pass_through_in_bounded_memory) {
    const char *in = test_tmp("long.txt"), *out = test_tmp("out.txt");
    FILE *f = fopen(in, "wb");
    CHECK(f != NULL);
    char *line = malloc(1500001);
    for (int i = 0; i < 12; i++) { /* 1.5 MB records: far more than --mem/10 */
        memset(line, 'a' + i, 1500000);
        line[1500000] = '\n';
        CHECK(fwrite(line, 1, 1500001, f) == 1500001);
        for (int k = 0; k < 2000; k++) fprintf(f, "short %d %d\n", i, k);
    }
    free(line);
    CHECK(fclose(f) == 0);
    long base = kiln_footprint_kb();
    char *argv[] = {"kiln", "shuffle", (char *)in, "-o", (char *)out, "--mem", "8M", "--seed", "9", "--quiet", NULL};
    long peak = spawn_kiln(argv);
    check_same_records(&in, 1, out, '\n');
    CHECKF(peak <= 8 * 1024 + base, "peak RSS %ld KB > 8 MiB + the process's own %ld KB", peak, base);
}

/* ---- Determinism ---- */
TEST(same_seed_gives_the_same_output) {
    const char *in[4], *o1 = test_tmp("o1.txt"), *o2 = test_tmp("o2.txt");
    write_awkward_inputs(in, 20000);
    run_lib(in, 4, o1, 256 << 10, 11, '\n');
    run_lib(in, 4, o2, 256 << 10, 11, '\n');
    CHECK(same_file(o1, o2));
}

TEST(thread_count_does_not_change_the_output) {
    const char *in[4], *o1 = test_tmp("o1.txt"), *o2 = test_tmp("o2.txt");
    write_awkward_inputs(in, 20000);
    char cmd[2048], *err;
    for (int t = 1; t <= 2; t++) {
        snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=%d %s shuffle %s %s %s %s -o %s --mem 256K --seed 12", t,
                 test_kiln_bin(), in[0], in[1], in[2], in[3], t == 1 ? o1 : o2);
        CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
        free(err);
    }
    CHECK(same_file(o1, o2));
}

TEST(different_seeds_give_different_outputs) {
    const char *in[4], *o[3] = {test_tmp("o1.txt"), test_tmp("o2.txt"), test_tmp("o3.txt")};
    write_awkward_inputs(in, 20000);
    for (int i = 0; i < 3; i++) run_lib(in, 4, o[i], 256 << 10, 100 + (uint64_t)i, '\n');
    CHECK(!same_file(o[0], o[1]));
    CHECK(!same_file(o[0], o[2]));
    CHECK(!same_file(o[1], o[2]));
}

/* ---- Uniformity ----
 * Five records shuffled with many seeds, two chi-square statistics. Positions: the 5x5 table of
 * (record, position) counts. Each seed adds a whole permutation matrix, whose cells are not independent
 * draws: under uniform orders the Pearson sum is 5/4 times a chi-square with 16 degrees of freedom, so
 * it is scaled by 4/5. Orders: the counts of the 120 orders, a plain multinomial (119 degrees of
 * freedom). Critical values at p = 0.001: 39.25 and 173. */
static const double CRIT_POSITIONS = 39.25, CRIT_ORDERS = 173.0;

typedef struct {
    long seeds;
    long pos[5][5];
    long order[3125]; /* an order as a base-5 number */
} tally;

static void tally_add(tally *t, const int perm[5]) {
    int code = 0;
    for (int p = 0; p < 5; p++) {
        t->pos[perm[p]][p]++;
        code = code * 5 + perm[p];
    }
    t->order[code]++;
    t->seeds++;
}

static double chi_positions(const tally *t) {
    double e = t->seeds / 5.0, x = 0;
    for (int r = 0; r < 5; r++)
        for (int p = 0; p < 5; p++) x += (t->pos[r][p] - e) * (t->pos[r][p] - e) / e;
    return x * 4 / 5;
}

static double chi_orders(const tally *t) {
    double e = t->seeds / 120.0, x = 0;
    int seen = 0;
    for (int c = 0; c < 3125; c++) {
        int digits = 0;
        for (int k = c, i = 0; i < 5; i++, k /= 5) digits |= 1 << (k % 5);
        if (digits != 31) continue; /* not a permutation */
        seen++;
        x += (t->order[c] - e) * (t->order[c] - e) / e;
    }
    CHECK(seen == 120);
    return x;
}

/* Shuffles five records of LEN bytes (record i is LEN copies of 'A' + i) with SEEDS seeds under MEM. */
static void tally_kiln(tally *t, size_t len, uint64_t mem, uint64_t seeds) {
    /* A tmpfs when there is one: each run fsyncs its output. */
    char dir[256];
    snprintf(dir, sizeof dir, "/dev/shm/kiln-test-%ld", (long)getpid());
    if (mkdir(dir, 0700) != 0) snprintf(dir, sizeof dir, "%s", test_tmp("chi"));
    char in[300], out[300];
    snprintf(in, sizeof in, "%s/in.txt", dir);
    snprintf(out, sizeof out, "%s/out.txt", dir);
    char *data = malloc(5 * (len + 1));
    for (int i = 0; i < 5; i++) {
        memset(data + i * (len + 1), 'A' + i, len);
        data[i * (len + 1) + len] = '\n';
    }
    write_bytes(in, data, 5 * (len + 1));
    const char *inputs[1] = {in};
    memset(t, 0, sizeof *t);
    for (uint64_t seed = 0; seed < seeds; seed++) {
        kiln_shuffle_opts o = {inputs, 1, out, mem, seed, dir, '\n', KILN_PROGRESS_OFF};
        CHECKF(kiln_shuffle(&o) == 0, "%s", kiln_errmsg());
        size_t n;
        char *got = slurp(out, &n);
        CHECK(n == 5 * (len + 1));
        int perm[5];
        for (int p = 0; p < 5; p++) perm[p] = got[p * (len + 1)] - 'A';
        free(got);
        tally_add(t, perm);
    }
    free(data);
    unlink(in);
    unlink(out);
    rmdir(dir);
}

TEST(in_memory_shuffle_positions_and_orders_are_uniform) {
    tally t;
    tally_kiln(&t, 3, 1 << 20, 2000);
    double xp = chi_positions(&t), xo = chi_orders(&t);
    CHECKF(xp < CRIT_POSITIONS, "positions: chi-square %.1f >= %.2f", xp, CRIT_POSITIONS);
    CHECKF(xo < CRIT_ORDERS, "orders: chi-square %.1f >= %.1f", xo, CRIT_ORDERS);
}

TEST(bucketed_shuffle_positions_and_orders_are_uniform) {
    tally t;
    tally_kiln(&t, 11000, 64 << 10, 1000); /* 55 KB of records under 64K of memory: scattered to buckets */
    double xp = chi_positions(&t), xo = chi_orders(&t);
    CHECKF(xp < CRIT_POSITIONS, "positions: chi-square %.1f >= %.2f", xp, CRIT_POSITIONS);
    CHECKF(xo < CRIT_ORDERS, "orders: chi-square %.1f >= %.1f", xo, CRIT_ORDERS);
}

TEST(chi_square_flags_a_biased_shuffle) {
    /* The classic mistake: swap each slot with any slot, n^n equally likely paths onto n! orders. */
    tally t;
    memset(&t, 0, sizeof t);
    for (uint64_t seed = 0; seed < 2000; seed++) {
        kiln_rng r;
        kiln_rng_seed(&r, kiln_hash3(seed, 1, 2));
        int perm[5] = {0, 1, 2, 3, 4};
        for (int i = 0; i < 5; i++) {
            int j = (int)kiln_rng_below(&r, 5), x = perm[i];
            perm[i] = perm[j];
            perm[j] = x;
        }
        tally_add(&t, perm);
    }
    double xp = chi_positions(&t);
    CHECKF(xp > CRIT_POSITIONS, "positions: chi-square %.1f <= %.2f: the bias went unseen", xp, CRIT_POSITIONS);
}

/* ---- Bad input and cleanup ---- */
TEST(missing_input_is_named) {
    char cmd[1024], *err;
    const char *out = test_tmp("out.txt");
    snprintf(cmd, sizeof cmd, "%s shuffle %s/no-such-file.txt -o %s", test_kiln_bin(), test_tmp(""), out);
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, "no-such-file.txt") && strstr(err, "No such file"), "stderr: %s", err);
    CHECK(access(out, F_OK) != 0);
    free(err);
}

TEST(output_that_is_a_directory_is_rejected) {
    const char *in = test_tmp("in.txt"), *dir = test_tmp("dir");
    write_random_records(in, 1, 100, 10, 'a', 'z', '\n');
    mkdir(dir, 0755);
    char cmd[1024], *err;
    snprintf(cmd, sizeof cmd, "%s shuffle %s -o %s", test_kiln_bin(), in, dir);
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, "dir: is a directory"), "stderr: %s", err);
    free(err);
}

TEST(unwritable_tmp_dir_is_reported) {
    const char *in = test_tmp("in.txt"), *not_dir = test_tmp("file"), *out = test_tmp("out.txt");
    write_random_records(in, 1, 100, 10, 'a', 'z', '\n');
    write_bytes(not_dir, "x", 1);
    char cmd[1024], *err;
    snprintf(cmd, sizeof cmd, "%s shuffle %s -o %s --tmp %s/sub", test_kiln_bin(), in, out, not_dir);
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, "file/sub") && strstr(err, "temporary directory"), "stderr: %s", err);
    CHECK(access(out, F_OK) != 0);
    free(err);
}

TEST(too_small_mem_is_rejected) {
    const char *in = test_tmp("in.txt"), *out = test_tmp("out.txt");
    write_random_records(in, 1, 100, 10, 'a', 'z', '\n');
    char cmd[1024], *err;
    snprintf(cmd, sizeof cmd, "%s shuffle %s -o %s --mem 10K", test_kiln_bin(), in, out);
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, "--mem") && strstr(err, "too small"), "stderr: %s", err);
    CHECK(access(out, F_OK) != 0);
    free(err);
}

/* A file size limit (ulimit -f, in 512-byte blocks in sh) makes writes fail as on a full disk. */
static void check_write_failure(const char *mem, const char *expect) {
    const char *in = test_tmp("in.txt"), *copy = test_tmp("copy.txt"), *out_dir = empty_dir("out");
    const char *tmp_dir = empty_dir("tmp");
    write_random_records(in, 2, 40000, 50, 'a', 'z', '\n'); /* ~1 MB */
    write_random_records(copy, 2, 40000, 50, 'a', 'z', '\n');
    char cmd[2048], *err, left[1024];
    snprintf(cmd, sizeof cmd, "ulimit -f 64; %s shuffle %s -o %s/out.txt --mem %s --tmp %s", test_kiln_bin(), in,
             out_dir, mem, tmp_dir);
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, expect) && strstr(err, "too large"), "stderr: %s", err);
    dir_entries(out_dir, left, sizeof left);
    CHECKF(!left[0], "left in the output directory: %s", left);
    dir_entries(tmp_dir, left, sizeof left);
    CHECKF(!left[0], "left in the temporary directory: %s", left);
    CHECK(same_file(in, copy));
    free(err);
}

TEST(failed_output_write_is_reported_and_cleaned_up) { check_write_failure("64M", "out.txt: write failed"); }

TEST(failed_temporary_write_is_reported_and_cleaned_up) { check_write_failure("256K", "cannot write temporary file"); }

/* Interrupts a run over a large input once its temporary directory exists. */
static void check_signal_cleanup(int sig) {
    const char *in = test_tmp("in.txt"), *out_dir = empty_dir("out"), *tmp_dir = empty_dir("tmp");
    write_random_records(in, 3, 600000, 80, 'a', 'z', '\n'); /* ~24 MB at 256K: a second or more */
    char out[512], left[1024];
    snprintf(out, sizeof out, "%s/out.txt", out_dir);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        signal(sig, SIG_DFL); /* not ignored, as it would be in a background job */
        execl(test_kiln_bin(), "kiln", "shuffle", in, "-o", out, "--mem", "256K", "--tmp", tmp_dir, "--quiet",
              (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 5000; i++) {
        dir_entries(tmp_dir, left, sizeof left);
        if (left[0]) break;
        usleep(1000);
    }
    CHECKF(left[0], "no temporary directory appeared");
    usleep(20000);
    kill(pid, sig);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == sig, "status %d", st);
    dir_entries(tmp_dir, left, sizeof left);
    CHECKF(!left[0], "left in the temporary directory: %s", left);
    dir_entries(out_dir, left, sizeof left);
    CHECKF(!left[0], "left in the output directory: %s", left);
}

TEST(sigint_removes_temporary_files) { check_signal_cleanup(SIGINT); }

TEST(sigterm_removes_temporary_files) { check_signal_cleanup(SIGTERM); }

/* ---- Progress ---- */
TEST(progress_reports_bytes_read_and_written) {
    const char *in[4], *out = test_tmp("out.txt");
    write_awkward_inputs(in, 20000);
    char cmd[2048], *err;
    snprintf(cmd, sizeof cmd, "%s shuffle %s %s %s %s -o %s --mem 256K --progress", test_kiln_bin(), in[0], in[1],
             in[2], in[3], out);
    CHECK(test_run(cmd, NULL, &err) == 0);
    CHECKF(strstr(err, "shuffle") && strstr(err, "read ") && strstr(err, "written ") && strstr(err, "MiB/s"),
           "stderr: %s", err);
    free(err);
}

TEST(progress_formats_sizes_and_counts) {
    char buf[64];
    kiln_progress_format(buf, sizeof buf, 1536.0 * 1024 * 1024, "B");
    CHECK_STR(buf, "1.50 GiB");
    kiln_progress_format(buf, sizeof buf, 512, "B");
    CHECK_STR(buf, "512 B");
    kiln_progress_format(buf, sizeof buf, 2500000, "tok");
    CHECK_STR(buf, "2.50M tok");
}
