/* kiln eval: a model's bits per byte on a corpus split, beside general-purpose compressors on the same
 * bytes: xz -9e, zstd -19, and conditional xz (what xz needs for the split once it has seen train). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/progress.h"
#include "cli/cli.h"
#include "format/gguf.h"
#include "format/model_file.h"
#include "train/blas.h"
#include "train/trainer.h"

static const char *USAGE =
    "usage: kiln eval -m MODEL --data CORPUS [--split valid|train] [--max-bytes SIZE] [--stride N]\n"
    "                 [--batch N] [--cond-bytes SIZE] [--no-compressors] [--json] [--threads N]\n"
    "  Bits per byte of MODEL (a checkpoint of kiln train) on a split of CORPUS, beside xz -9e, zstd -19\n"
    "  and conditional xz: size(xz(train + split)) - size(xz(train)), the fair anchor for a model that\n"
    "  has seen train (xz's 64 MiB window holds only so much train: the tail of it is used).\n"
    "  --split S        valid (default) or train\n"
    "  --max-bytes SIZE evaluate about SIZE bytes: whole files spread evenly over the split (default: all)\n"
    "  --stride N       windows of the model's context start N bytes apart and score their last N\n"
    "                   bytes, so each byte is predicted once with at least ctx - N bytes before it\n"
    "                   (default ctx/2, as llama.cpp's perplexity; ctx: tiled, the cheapest)\n"
    "  --batch N        windows per forward pass (default 8)\n"
    "  --cond-bytes SIZE train bytes before the split for conditional xz (default: what fits the window)\n"
    "  --no-compressors only the model\n"
    "  --json           one JSON object on stdout instead of the table\n"
    "  --threads N      threads (default: all cores)\n";

enum { XZ_WINDOW = 64 << 20 };

/* Writes N bytes of DATA (then M of MORE) to a temporary file; its path goes into PATH. */
static int write_temp(char *path, size_t size, const unsigned char *data, size_t n, const unsigned char *more,
                      size_t m) {
    const char *dir = getenv("TMPDIR");
    snprintf(path, size, "%s/kiln-eval-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) return kiln_fail("%s: cannot create a temporary file", path);
    FILE *f = fdopen(fd, "wb");
    int ok = fwrite(data, 1, n, f) == n && (!m || fwrite(more, 1, m, f) == m);
    ok = fclose(f) == 0 && ok;
    if (!ok) unlink(path);
    return ok ? 0 : kiln_fail("%s: write failed", path);
}

/* Starts "COMPRESSOR < PATH | wc -c". */
static FILE *start(const char *compressor, const char *path) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "command -v %.*s >/dev/null 2>&1 && %s < '%s' | wc -c", (int)strcspn(compressor, " "),
             compressor, compressor, path);
    return popen(cmd, "r");
}

/* Compressed size from a started compressor; -1 when it is not installed or failed. */
static double finish(FILE *p) {
    long long n = -1;
    if (!p) return -1;
    if (fscanf(p, "%lld", &n) != 1) n = -1;
    return pclose(p) == 0 && n > 0 ? (double)n : -1;
}

typedef struct {
    double xz, zstd, cond_xz; /* bits per byte; < 0 when unavailable */
    uint64_t cond_train;      /* train bytes used by the conditional figure */
} compressors;

/* Compresses the N bytes of BYTES (from split SPLIT of C) alone and after the tail of C's train split. */
static void run_compressors(const kiln_corpus *c, int split, const unsigned char *bytes, uint64_t n,
                            uint64_t cond_bytes, compressors *out) {
    *out = (compressors){-1, -1, -1, 0};
    char solo[4200], joint[4200], train[4200];
    if (write_temp(solo, sizeof solo, bytes, n, NULL, 0) < 0) return;
    /* conditional xz: train's tail, then the evaluated bytes, all inside xz's window */
    uint64_t room = n < XZ_WINDOW ? XZ_WINDOW - n : 0, tn = c->stream_size[CORPUS_TRAIN];
    if (cond_bytes && cond_bytes < room) room = cond_bytes;
    if (split == CORPUS_TRAIN) tn = 0; /* train given train means nothing */
    if (tn > room) tn = room;
    const unsigned char *tail = c->stream[CORPUS_TRAIN] + c->stream_size[CORPUS_TRAIN] - tn;
    int cond = tn > 0 && write_temp(train, sizeof train, tail, tn, NULL, 0) == 0;
    cond = cond && write_temp(joint, sizeof joint, tail, tn, bytes, n) == 0;
    /* two at a time: the machine's cores, and each compressor is single-threaded */
    FILE *a = start("xz -9e -T1 -c", solo), *b = start("zstd -19 -c -q", solo);
    double xz = finish(a), zstd = finish(b);
    if (cond) {
        a = start("xz -9e -T1 -c", train), b = start("xz -9e -T1 -c", joint);
        double xt = finish(a), xj = finish(b);
        if (xt > 0 && xj > 0) out->cond_xz = (xj - xt) * 8 / n, out->cond_train = tn;
        unlink(train);
        unlink(joint);
    }
    unlink(solo);
    if (xz > 0) out->xz = xz * 8 / n;
    if (zstd > 0) out->zstd = zstd * 8 / n;
}

static void print_figure(const char *name, double bpb, const char *note) {
    if (bpb < 0) printf("  %-22s %s\n", name, "n/a (compressor not installed)");
    else printf("  %-22s %6.3f bits/byte%s\n", name, bpb, note);
}

static int eval(int argc, char **argv) {
    blas_prefer_avx512(argv - 1); /* argv[-1]: the program, as main received it */
    const char *model_path = NULL, *data = NULL, *v;
    int split = CORPUS_VALID, json = 0, compress = 1;
    long long batch = 8, threads = 0, stride = 0;
    uint64_t max_bytes = 0, cond_bytes = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (!strcmp(a, "--no-compressors")) { compress = 0; continue; }
        if (!(v = cli_value(argc, argv, &i))) return 1;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--split")) {
            if (strcmp(v, "valid") && strcmp(v, "train")) return cli_error("eval: --split: '%s' is not valid or train", v);
            split = strcmp(v, "valid") ? CORPUS_TRAIN : CORPUS_VALID;
        } else if (!strcmp(a, "--max-bytes")) { if (cli_size(a, v, &max_bytes)) return 1; }
        else if (!strcmp(a, "--cond-bytes")) { if (cli_size(a, v, &cond_bytes)) return 1; }
        else if (!strcmp(a, "--stride")) { if (cli_int(a, v, 1, 1 << 20, &stride)) return 1; }
        else if (!strcmp(a, "--batch")) { if (cli_int(a, v, 1, 4096, &batch)) return 1; }
        else if (!strcmp(a, "--threads")) { if (cli_int(a, v, 1, 1024, &threads)) return 1; }
        else return cli_error("eval: unknown flag '%s' (see kiln eval --help)", a);
    }
    if (!model_path || !data) return cli_error("eval: -m MODEL and --data CORPUS are required (see kiln eval --help)");
    if (threads) kiln_set_threads((int)threads);
    gguf_file *g = gguf_open(model_path);
    if (!g) return cli_error("eval: %s", kiln_errmsg());
    kiln_config cfg;
    train_model m = {0};
    kiln_corpus *c = NULL, *sample = NULL;
    train_loader l = {0};
    int rc = 1;
    if (model_file_read_config(g, &cfg) < 0 || train_model_init(&m, &cfg, 0) < 0 || train_model_from_gguf(&m, g) < 0) {
        cli_error("eval: %s", kiln_errmsg());
        goto done;
    }
    if (stride > cfg.ctx_len) {
        cli_error("eval: --stride %lld is larger than the model's context %d", stride, cfg.ctx_len);
        goto done;
    }
    if (!stride) stride = cfg.ctx_len > 1 ? cfg.ctx_len / 2 : 1;
    if (cfg.n_vocab != 256) {
        cli_error("eval: %s: a byte-level model has 256 tokens, this one %d", model_path, cfg.n_vocab);
        goto done;
    }
    if (!(c = kiln_corpus_open(data))) {
        cli_error("eval: %s", kiln_errmsg());
        goto done;
    }
    if (max_bytes && max_bytes < c->stream_size[split]) sample = corpus_sample(c, split, max_bytes);
    const kiln_corpus *src = sample ? sample : c;
    if (train_loader_init(&l, src, split, cfg.ctx_len, 0) < 0) {
        cli_error("eval: %s", kiln_errmsg());
        goto done;
    }
    train_batch *tb = train_batch_new(&m, (int)batch, cfg.ctx_len, 0);
    train_eval_result r;
    train_evaluate(&m, tb, &l, (int)stride, &r, json ? KILN_PROGRESS_OFF : KILN_PROGRESS_AUTO);
    train_batch_free(tb);
    uint64_t n = src->stream_size[split]; /* the model scores all but the first of these bytes */
    compressors z = {-1, -1, -1, 0};
    if (compress) run_compressors(c, split, src->stream[split], n, cond_bytes, &z);
    double bpb = r.total_sum / r.total_count / M_LN2;
    const char *split_name = split == CORPUS_VALID ? "valid" : "train";
    if (json) {
        printf("{\"model\":\"%s\",\"split\":\"%s\",\"bytes\":%llu,\"stride\":%lld,\"bpb\":%.6f,\"xz\":%.6f,\"zstd\":%.6f,\"cond_xz\":%.6f,"
               "\"cond_train_bytes\":%llu}\n",
               model_path, split_name, (unsigned long long)n, stride, bpb, z.xz, z.zstd, z.cond_xz,
               (unsigned long long)z.cond_train);
    } else {
        char size[32], tsize[32], note[96] = "";
        kiln_progress_format(size, sizeof size, (double)n, "B");
        kiln_progress_format(tsize, sizeof tsize, (double)z.cond_train, "B");
        printf("bits per byte on %s of %s (%s in %llu files%s), model %s (windows of %d bytes, stride %lld):\n",
               split_name, data, size, (unsigned long long)src->split_n_files[split],
               sample ? " spread over the split" : "", model_path, cfg.ctx_len, stride);
        print_figure("model", bpb, "");
        if (compress) {
            print_figure("xz -9e", z.xz, "");
            print_figure("zstd -19", z.zstd, "");
            snprintf(note, sizeof note, "  (after %s of train)", tsize);
            if (split == CORPUS_VALID) print_figure("conditional xz -9e", z.cond_xz, note);
        }
        printf("per channel (model):\n");
        for (int k = 0; k < r.n_channels; k++) {
            int best = -1; /* largest remaining channel first */
            for (int i = 0; i < r.n_channels; i++)
                if (r.count[i] > 0 && (best < 0 || r.count[i] > r.count[best])) best = i;
            if (best < 0) break;
            kiln_progress_format(size, sizeof size, r.count[best], "B");
            printf("  %-22s %6.3f bits/byte  (%s)\n", c->channels[best], r.sum[best] / r.count[best] / M_LN2, size);
            r.count[best] = -r.count[best];
        }
    }
    train_eval_free(&r);
    rc = 0;
done:
    train_loader_free(&l);
    kiln_corpus_close(sample);
    kiln_corpus_close(c);
    train_model_free(&m);
    gguf_close(g);
    return rc;
}

KILN_COMMAND("eval", "bits per byte of a model on a corpus, beside xz and zstd", eval)
