/* kiln train end to end, on a small synthetic corpus and a tiny model: the run folder, resume
 * (bit-exact after a stop and after kill -9), checkpoints that `kiln generate` loads, and each bad
 * input of the trainer's issue with its one-line error. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/file.h"
#include "base/rng.h"
#include "test.h"

#define TINY "--layers 1 --dim 32 --heads 2 --ctx 32 --batch 2 --eval-bytes 2K --threads 1 --quiet"

/* A corpus of C-like files in two channels (alpha, beta), a third of them held out. */
static const char *make_corpus(const char *name, double valid) {
    char root[4200], p[4300], cmd[9000];
    snprintf(root, sizeof root, "%s", test_tmp(name));
    mkdir(root, 0755);
    kiln_rng r;
    kiln_rng_seed(&r, 3);
    for (int ch = 0; ch < 2; ch++) {
        snprintf(p, sizeof p, "%s/%s", root, ch ? "beta" : "alpha");
        mkdir(p, 0755);
        for (int f = 0; f < 12; f++) {
            snprintf(p, sizeof p, "%s/%s/f%d.c", root, ch ? "beta" : "alpha", f);
            FILE *out = fopen(p, "w");
            for (int line = 0; line < 40; line++)
                fprintf(out, "%sint %s_%d_%d(int x) { return x * %d; }\n", ch ? "static " : "", ch ? "b" : "a", f,
                        line, (int)kiln_rng_below(&r, 100));
            fclose(out);
        }
    }
    static char out[4300];
    snprintf(out, sizeof out, "%s.corpus", root);
    snprintf(cmd, sizeof cmd, "%s corpus %s -o %s --valid %g --quiet", test_kiln_bin(), root, out, valid);
    char *err;
    CHECKF(test_run(cmd, NULL, &err) == 0, "corpus failed: %s", err);
    return out;
}

/* A new run folder NAME (emptied: test scratch survives between test runs). */
static const char *fresh(const char *name) {
    const char *dir = test_tmp(name);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return dir;
}

static int train(const char *corpus, const char *run, const char *extra, char **err) {
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "%s train --data %s --out %s " TINY " %s", test_kiln_bin(), corpus, run, extra);
    return test_run(cmd, NULL, err);
}

static int resume(const char *run, const char *extra, char **err) {
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "%s train --resume %s --threads 1 --quiet %s", test_kiln_bin(), run, extra);
    return test_run(cmd, NULL, err);
}

static void strip_field(char *s, const char *key) {
    for (char *p; (p = strstr(s, key));) {
        char *end = p + strlen(key);
        while (*end && *end != ',' && *end != '}') end++;
        if (*end == ',') end++;
        memmove(p, end, strlen(end) + 1);
    }
}

/* The log without its timing fields (elapsed_s, tok_s), which differ from run to run. */
static char *stable_log(const char *run) {
    char path[4200];
    snprintf(path, sizeof path, "%s/log.jsonl", run);
    size_t n;
    char *s = kiln_read_file(path, &n);
    CHECKF(s != NULL, "%s: missing", path);
    strip_field(s, "\"tok_s\":");
    strip_field(s, "\"elapsed_s\":");
    return s;
}

static void check_same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = kiln_read_file(a, &na), *y = kiln_read_file(b, &nb);
    CHECKF(x && y, "%s or %s missing", a, b);
    CHECKF(na == nb && !memcmp(x, y, na), "%s and %s differ", a, b);
    free(x);
    free(y);
}

TEST(train_writes_log_checkpoints_and_a_model_that_generate_loads) {
    const char *corpus = make_corpus("c", 0.3), *run = fresh("run");
    char *err, cmd[9000], *out;
    CHECKF(train(corpus, run, "--steps 6 --save-every 2 --log-every 2 --eval-every 3 --keep 2", &err) == 0, "%s",
           err);
    char path[4200];
    snprintf(path, sizeof path, "%s/ckpt-00000002.gguf", run);
    CHECKF(access(path, F_OK) != 0, "keep 2 should have removed %s", path);
    snprintf(path, sizeof path, "%s/ckpt-00000006.optim", run);
    CHECK(access(path, F_OK) == 0);
    char *log = stable_log(run);
    CHECKF(strstr(log, "{\"step\":2,\"split\":\"train\"") && strstr(log, "\"split\":\"valid\"") &&
               strstr(log, "\"alpha\":") && strstr(log, "\"beta\":"),
           "log: %s", log);
    snprintf(cmd, sizeof cmd, "%s generate -m %s/latest.gguf -p 'int ' -n 8 --temp 0", test_kiln_bin(), run);
    CHECKF(test_run(cmd, &out, &err) == 0, "generate failed: %s", err);
    CHECKF(!strncmp(out, "int ", 4), "generate printed: %s", out);
}

TEST(train_resume_after_a_stop_repeats_the_uninterrupted_run_bit_for_bit) {
    const char *corpus = make_corpus("c", 0.3), *a = fresh("a"), *b = fresh("b");
    char *err;
    const char *flags = "--steps 12 --save-every 4 --log-every 2 --eval-every 4 --accum 2";
    CHECKF(train(corpus, a, flags, &err) == 0, "%s", err);
    char extra[256];
    snprintf(extra, sizeof extra, "%s --stop-at 6", flags);
    CHECKF(train(corpus, b, extra, &err) == 0, "%s", err);
    CHECKF(resume(b, "", &err) == 0, "%s", err);
    char *la = stable_log(a), *lb = stable_log(b);
    CHECKF(!strcmp(la, lb), "logs differ:\n%s\n---\n%s", la, lb);
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s/ckpt-00000012.gguf", a);
    snprintf(pb, sizeof pb, "%s/ckpt-00000012.gguf", b);
    check_same_file(pa, pb);
    snprintf(pa, sizeof pa, "%s/ckpt-00000012.optim", a);
    snprintf(pb, sizeof pb, "%s/ckpt-00000012.optim", b);
    check_same_file(pa, pb);
}

TEST(train_killed_at_a_random_moment_resumes_to_the_same_model) {
    const char *corpus = make_corpus("c", 0.3), *a = fresh("a"), *b = fresh("b");
    char *err, cmd[9000];
    const char *flags = "--steps 150 --save-every 5 --log-every 5 --eval-every 50";
    CHECKF(train(corpus, a, flags, &err) == 0, "%s", err);
    snprintf(cmd, sizeof cmd, "%s train --data %s --out %s " TINY " %s", test_kiln_bin(), corpus, b, flags);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    char latest[4200];
    snprintf(latest, sizeof latest, "%s/latest.gguf", b);
    for (int i = 0; i < 2000 && access(latest, F_OK) != 0; i++) usleep(1000);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    usleep((useconds_t)(ts.tv_nsec % 400000)); /* a random moment: mid-step, mid-save or mid-eval */
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    /* sh -c runs the command itself, so the kill reached kiln */
    CHECKF(resume(b, "", &err) == 0, "%s", err);
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s/ckpt-00000150.gguf", a);
    snprintf(pb, sizeof pb, "%s/ckpt-00000150.gguf", b);
    check_same_file(pa, pb);
    char *la = stable_log(a), *lb = stable_log(b);
    CHECKF(!strcmp(la, lb), "logs differ:\n%s\n---\n%s", la, lb);
}

TEST(train_names_a_missing_or_empty_corpus) {
    char *err;
    CHECK(train("/nonexistent.corpus", fresh("r"), "--steps 2", &err) != 0);
    CHECKF(strstr(err, "/nonexistent.corpus") && !strchr(strchr(err, '\n') + 1, '\n'), "%s", err);
    FILE *f = fopen(test_tmp("empty.corpus"), "w");
    fclose(f);
    CHECK(train(test_tmp("empty.corpus"), fresh("r"), "--steps 2", &err) != 0);
    CHECKF(strstr(err, "empty.corpus"), "%s", err);
}

TEST(train_rejects_a_corpus_without_valid_split_and_a_context_longer_than_the_data) {
    char *err;
    CHECK(train(make_corpus("c", 0), fresh("r"), "--steps 2", &err) != 0);
    CHECKF(strstr(err, "valid split"), "%s", err);
    const char *corpus = make_corpus("d", 0.3);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "%s train --data %s --out %s --layers 1 --dim 32 --heads 2 --ctx 60000 --steps 2 --quiet",
             test_kiln_bin(), corpus, fresh("r2"));
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, "--ctx 60000"), "%s", err);
}

TEST(train_refuses_an_existing_run_without_resume) {
    const char *corpus = make_corpus("c", 0.3), *run = fresh("run");
    char *err;
    CHECKF(train(corpus, run, "--steps 2", &err) == 0, "%s", err);
    CHECK(train(corpus, run, "--steps 2", &err) != 0);
    CHECKF(strstr(err, "already exists") && strstr(err, "--resume"), "%s", err);
    CHECK(resume(run, "--lr 0.5", &err) != 0);
    CHECKF(strstr(err, "--lr cannot change"), "%s", err);
}

TEST(train_resume_names_a_truncated_or_corrupt_checkpoint) {
    const char *corpus = make_corpus("c", 0.3), *run = fresh("run");
    char *err, path[4200];
    CHECKF(train(corpus, run, "--steps 4 --save-every 2 --stop-at 2", &err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/ckpt-00000002.gguf", run);
    size_t n;
    char *data = kiln_read_file(path, &n);
    CHECK(truncate(path, (off_t)(n / 2)) == 0);
    CHECK(resume(run, "", &err) != 0);
    CHECKF(strstr(err, "ckpt-00000002.gguf") && strstr(err, "damaged"), "%s", err);
    data[n - 100] ^= 0x40; /* one flipped bit in the weights */
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
    CHECK(resume(run, "", &err) != 0);
    CHECKF(strstr(err, "checksum"), "%s", err);
}

TEST(train_full_disk_while_saving_keeps_the_previous_checkpoint) {
    const char *corpus = make_corpus("c", 0.3), *run = fresh("run");
    char *err, cmd[9000], path[4200];
    CHECKF(train(corpus, run, "--steps 8 --save-every 2 --stop-at 2", &err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/ckpt-00000002.gguf", run);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    /* files may grow to 1.5 x the model file: the optimizer state (twice the weights) cannot be written */
    snprintf(cmd, sizeof cmd, "bash -c \"trap '' XFSZ; ulimit -f %lld; exec %s train --resume %s --threads 1 --quiet\"",
             (long long)(st.st_size * 3 / 2 / 1024), test_kiln_bin(), run);
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, "ckpt-00000004.optim") && strstr(err, "write failed"), "%s", err);
    CHECKF(resume(run, "", &err) == 0, "resuming from the surviving checkpoint: %s", err);
    snprintf(path, sizeof path, "%s/ckpt-00000008.gguf", run);
    CHECK(access(path, F_OK) == 0);
}

TEST(eval_prints_bits_per_byte_beside_xz_zstd_and_conditional_xz) {
    const char *corpus = make_corpus("c", 0.3), *run = fresh("run");
    char *err, *out, cmd[9000];
    CHECKF(train(corpus, run, "--steps 4", &err) == 0, "%s", err);
    snprintf(cmd, sizeof cmd, "%s eval -m %s/latest.gguf --data %s --json --threads 1", test_kiln_bin(), run, corpus);
    CHECKF(test_run(cmd, &out, &err) == 0, "%s", err);
    double bpb, xz, zstd, cond;
    const char *p = strstr(out, "\"bpb\":");
    CHECKF(p && sscanf(p, "\"bpb\":%lf,\"xz\":%lf,\"zstd\":%lf,\"cond_xz\":%lf", &bpb, &xz, &zstd, &cond) == 4, "%s",
           out);
    /* a 4-step model is near 8 bits; the compressors find the repetitive synthetic code easy, and
     * conditional xz (which has seen train's identical lines) easier still */
    CHECKF(bpb > 4 && bpb < 8.5, "model %g", bpb);
    CHECKF(xz > 0 && xz < 3 && zstd > 0 && zstd < 3 && cond > 0 && cond < xz, "xz %g zstd %g cond %g", xz, zstd, cond);
}

TEST(plot_draws_an_svg_with_axes_legend_and_channels) {
    const char *corpus = make_corpus("c", 0.3), *run = fresh("run");
    char *err, cmd[9000], svg_path[4200];
    CHECKF(train(corpus, run, "--steps 6 --log-every 1 --eval-every 2", &err) == 0, "%s", err);
    snprintf(svg_path, sizeof svg_path, "%s/curves.svg", run);
    snprintf(cmd, sizeof cmd, "%s plot %s -o %s", test_kiln_bin(), run, svg_path);
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    size_t n;
    char *svg = kiln_read_file(svg_path, &n);
    CHECK(svg && strstr(svg, "<svg") && strstr(svg, "</svg>"));
    CHECK(strstr(svg, "bits per byte") && strstr(svg, "step") && strstr(svg, "legend"));
    CHECK(strstr(svg, ">alpha<") && strstr(svg, ">beta<") && strstr(svg, "valid (all)"));
    snprintf(cmd, sizeof cmd, "%s plot %s -o %s", test_kiln_bin(), test_tmp("nothing"), svg_path);
    CHECK(test_run(cmd, NULL, &err) != 0);
    CHECKF(strstr(err, "log.jsonl"), "%s", err);
}

/* The "loss" values of a run's log, in order (train and valid lines). */
static int log_losses(const char *run, double *out, int max) {
    char path[4200];
    snprintf(path, sizeof path, "%s/log.jsonl", run);
    size_t size;
    char *s = kiln_read_file(path, &size);
    CHECKF(s != NULL, "%s missing", path);
    int n = 0;
    for (const char *p = s; n < max && (p = strstr(p, "\"loss\":")); p += 7) out[n++] = atof(p + 7);
    free(s);
    return n;
}

/* The "bpb" of kiln eval --json with EXTRA flags; -1 when it fails (its message in *ERR). */
static double eval_bpb(const char *run, const char *corpus, const char *extra, char **err) {
    char cmd[9000], *out;
    snprintf(cmd, sizeof cmd, "%s eval -m %s/latest.gguf --data %s --json --threads 1 --no-compressors %s",
             test_kiln_bin(), run, corpus, extra);
    if (test_run(cmd, &out, err) != 0) return -1;
    const char *p = strstr(out, "\"bpb\":");
    double bpb = -1;
    CHECKF(p && sscanf(p, "\"bpb\":%lf", &bpb) == 1, "%s", out);
    return bpb;
}

TEST(eval_stride_of_the_context_reproduces_the_trainers_tiled_valid_figure_and_a_shorter_one_helps) {
    const char *corpus = make_corpus("c", 0.3), *run = fresh("run");
    char *err;
    CHECKF(train(corpus, run, "--steps 30 --eval-bytes 0", &err) == 0, "%s", err);
    double tiled = eval_bpb(run, corpus, "--stride 32", &err), half = eval_bpb(run, corpus, "", &err);
    double losses[64];
    int n = log_losses(run, losses, 64); /* the last line: the final valid evaluation, tiled */
    CHECKF(fabs(tiled - losses[n - 1] / M_LN2) < 1e-4 * tiled, "eval %g, trainer %g", tiled, losses[n - 1] / M_LN2);
    CHECKF(half < tiled, "stride ctx/2 %g, tiled %g: more context should predict better", half, tiled);
    CHECK(eval_bpb(run, corpus, "--stride 33", &err) < 0);
    CHECKF(strstr(err, "--stride 33") && strstr(err, "context 32"), "%s", err);
}

TEST(train_on_two_mpi_processes_matches_one_process_with_twice_the_batch) {
    CHECKF(system("command -v mpirun >/dev/null 2>&1") == 0,
           "mpirun not found: install openmpi-bin (scripts/setup.sh does)");
    const char *corpus = make_corpus("c", 0.3), *one = fresh("one"), *two = fresh("two");
    char cmd[9000], *err;
    const char *flags = "--layers 1 --dim 32 --heads 2 --ctx 32 --eval-bytes 2K --steps 5 --log-every 1 "
                        "--eval-every 5 --threads 1 --quiet";
    snprintf(cmd, sizeof cmd, "%s train --data %s --out %s --batch 4 %s", test_kiln_bin(), corpus, one, flags);
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    /* mpirun refuses root unless told; --oversubscribe: the machine may have fewer slots than 2 */
    snprintf(cmd, sizeof cmd,
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 --oversubscribe "
             "%s train --data %s --out %s --batch 2 %s",
             test_kiln_bin(), corpus, two, flags);
    CHECKF(test_run(cmd, NULL, &err) == 0, "%s", err);
    double a[16], b[16];
    int na = log_losses(one, a, 16), nb = log_losses(two, b, 16);
    CHECK_EQ_INT(na, 6); /* 5 train lines and the final valid line */
    CHECK_EQ_INT(nb, na);
    for (int i = 0; i < na; i++) CHECKF(fabs(a[i] - b[i]) <= 1e-5 * fabs(a[i]), "loss %d: %.9g vs %.9g", i, a[i], b[i]);
}
