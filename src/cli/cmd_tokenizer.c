/* kiln tokenizer train: trains a BytePiece vocabulary. kiln tokenize: text to token ids with a BytePiece
 * vocabulary or a model's own tokenizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "cli/cli.h"
#include "format/gguf.h"
#include "kiln.h"
#include "tokenizer/bytepiece.h"

static const char *TRAIN_USAGE =
    "usage: kiln tokenizer train CORPUS... --vocab N -o TOK [options]\n"
    "  Trains a byte-level unigram (BytePiece) vocabulary on the CORPUS files; writes it to TOK (GGUF).\n"
    "  --vocab N               vocabulary size, at least 256 (may come out a little smaller)\n"
    "  -o TOK                  output file\n"
    "  --max-piece-length L    longest piece in bytes (default 36, at most 256)\n"
    "  --min-count C           drop n-grams and pieces seen fewer times (default 2)\n"
    "  --isolate-digits        every digit is a token of its own\n"
    "  --ensure-unicode        multi-byte pieces hold whole UTF-8 characters only\n"
    "  --threads N             threads (default: all cores; the result is the same for any N)\n"
    "  --mem SIZE              memory for the n-gram counts (default 1G; pieces get a quarter more);\n"
    "                          rare n-grams are dropped to stay within it\n"
    "  --quiet                 no progress bar\n";

static int tokenizer_train(int argc, char **argv) {
    bytepiece_train_opts o = {.vocab = 0, .max_piece_length = 36, .min_count = 2, .progress = true};
    const char *out = NULL, *v;
    const char **paths = kiln_xmalloc((size_t)argc * sizeof *paths);
    int n_paths = 0, rc = 1;
    long long x;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(TRAIN_USAGE, stdout);
            rc = 0;
            goto done;
        }
        if (!strcmp(a, "--isolate-digits")) o.isolate_digits = true;
        else if (!strcmp(a, "--ensure-unicode")) o.ensure_unicode = true;
        else if (!strcmp(a, "--quiet")) o.progress = false;
        else if (a[0] != '-' || !a[1]) paths[n_paths++] = a;
        else if (!(v = cli_value(argc, argv, &i))) goto done;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--vocab")) {
            if (cli_int(a, v, 256, 1 << 24, &x)) goto done;
            o.vocab = (int)x;
        } else if (!strcmp(a, "--max-piece-length")) {
            if (cli_int(a, v, 2, BYTEPIECE_MAX_PIECE, &x)) goto done;
            o.max_piece_length = (int)x;
        } else if (!strcmp(a, "--min-count")) {
            if (cli_int(a, v, 1, 1 << 30, &x)) goto done;
            o.min_count = (int)x;
        } else if (!strcmp(a, "--threads")) {
            if (cli_int(a, v, 1, 1024, &x)) goto done;
            o.threads = (int)x;
        } else if (!strcmp(a, "--mem")) {
            if (cli_size(a, v, &o.mem)) goto done;
            if (o.mem < (1u << 20)) {
                cli_error("--mem: %s is too small (at least 1M)", v);
                goto done;
            }
        } else {
            cli_error("tokenizer train: unknown flag '%s' (see kiln tokenizer train --help)", a);
            goto done;
        }
    }
    if (!n_paths) cli_error("tokenizer train: no CORPUS files given (see kiln tokenizer train --help)");
    else if (!o.vocab) cli_error("tokenizer train: --vocab N is required");
    else if (!out) cli_error("tokenizer train: -o TOK is required");
    else if (bytepiece_train(paths, n_paths, &o, out) != 0) cli_error("tokenizer train: %s", kiln_errmsg());
    else {
        bytepiece *t = bytepiece_open(out);
        if (!t) cli_error("tokenizer train: %s", kiln_errmsg());
        else {
            printf("%s: %d pieces (--vocab %d)\n", out, bytepiece_n_vocab(t), o.vocab);
            uint64_t pruned = bytepiece_get_settings(t)->pruned_below;
            if (pruned)
                fprintf(stderr, "kiln: note: --mem was too small for exact counts: some seen %llu times or fewer "
                        "were dropped while counting\n", (unsigned long long)pruned);
            bytepiece_free(t);
            rc = 0;
        }
    }
done:
    free(paths);
    return rc;
}

static int tokenizer_cmd(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "train")) return tokenizer_train(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) return fputs(TRAIN_USAGE, stdout), 0;
    return cli_error("tokenizer: expected 'train' (see kiln tokenizer train --help)");
}

KILN_COMMAND("tokenizer", "train a byte-level tokenizer (BytePiece): tokenizer train CORPUS... --vocab N -o TOK",
             tokenizer_cmd)

static const char *TOKENIZE_USAGE =
    "usage: kiln tokenize -m TOK [--ids] [--pieces] [--alpha A [--seed S]] [--bos] (TEXT | -f FILE)\n"
    "  -m TOK       a BytePiece tokenizer, or a GGUF model (its own tokenizer is used)\n"
    "  --ids        print the ids, space-separated on one line (the default)\n"
    "  --pieces     print the pieces, quoted with C escapes (after the ids when --ids is given too)\n"
    "  --alpha A    sample a segmentation with probability proportional to exp(A * score) (BytePiece only)\n"
    "  --seed S     sampling seed (default 0)\n"
    "  --bos        prepend the BOS token (models whose vocabulary has one)\n"
    "  -f FILE      tokenize the contents of FILE instead of TEXT\n";

typedef struct {
    bytepiece *bp;
    kiln_model *model;
} tok_source;

/* Appends ids as decimal text to F through a buffer: printf per id would dominate the encoding time. */
static void print_ids(FILE *f, const int32_t *ids, size_t n, bool *first) {
    char buf[1 << 14];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k > sizeof buf - 16) {
            fwrite(buf, 1, k, f);
            k = 0;
        }
        if (!*first) buf[k++] = ' ';
        *first = false;
        char tmp[12];
        int t = 0;
        uint32_t x = (uint32_t)ids[i];
        do tmp[t++] = (char)('0' + x % 10);
        while (x /= 10);
        while (t) buf[k++] = tmp[--t];
    }
    fwrite(buf, 1, k, f);
}

static void print_piece(FILE *f, const unsigned char *p, size_t n, bool first) {
    if (!first) fputc(' ', f);
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned c = p[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20 || c >= 0x7f) fprintf(f, "\\x%02x", c);
        else fputc((int)c, f);
    }
    fputc('"', f);
}

static int open_source(const char *path, tok_source *src) {
    gguf_file *g = gguf_open(path);
    if (!g) return -1;
    gguf_str model;
    int r = gguf_get_str(g, "tokenizer.ggml.model", &model);
    bool is_bp = r == 1 && model.len == 9 && !memcmp(model.ptr, "bytepiece", 9);
    if (is_bp) src->bp = bytepiece_from_gguf(g);
    gguf_close(g);
    if (is_bp) return src->bp ? 0 : -1;
    if (r < 0) return -1;
    src->model = kiln_model_open(path);
    return src->model ? 0 : kiln_fail("%s", kiln_last_error());
}

/* Tokenizes LEN bytes of TEXT with a model's tokenizer and prints the result. */
static int tokenize_model(kiln_model *m, const char *text, size_t len, bool bos, bool ids, bool pieces) {
    if (len + 2 > (size_t)INT32_MAX) return kiln_fail("the text is too long for a model's tokenizer");
    int max = (int)len + 2;
    int32_t *out = kiln_xmalloc((size_t)max * sizeof *out);
    int n = kiln_tokenize(m, text, len, bos, out, max);
    if (n < 0) {
        free(out);
        return kiln_fail("%s", kiln_last_error());
    }
    bool first = true;
    if (ids) {
        print_ids(stdout, out, (size_t)n, &first);
        fputc('\n', stdout);
    }
    if (pieces) {
        for (int i = 0; i < n; i++) {
            size_t l;
            const char *p = kiln_token_text(m, i ? out[i - 1] : -1, out[i], &l);
            print_piece(stdout, (const unsigned char *)p, l, i == 0);
        }
        fputc('\n', stdout);
    }
    free(out);
    return 0;
}

/* Tokenizes block by block (the blocks the encoder cuts anyway), so a large file needs little memory. */
static int tokenize_bp(const bytepiece *t, const unsigned char *text, size_t len, double alpha, uint64_t seed,
                       bool ids, bool pieces) {
    int32_t *out = kiln_xmalloc(2 * (size_t)BYTEPIECE_BLOCK * sizeof *out);
    kiln_rng rng;
    kiln_rng_seed(&rng, seed);
    bool first_id = true, first_piece = true;
    for (int pass = 0; pass < 2; pass++) {
        if ((pass == 0 && !ids) || (pass == 1 && !pieces)) continue;
        kiln_rng_seed(&rng, seed);
        for (size_t i = 0; i < len;) {
            size_t n = bytepiece_block_len(text + i, len - i, true);
            long k = alpha >= 0 ? bytepiece_sample(t, text + i, n, alpha, &rng, out, n)
                                : bytepiece_encode(t, text + i, n, out, n);
            if (k < 0) {
                free(out);
                return -1;
            }
            if (pass == 0) print_ids(stdout, out, (size_t)k, &first_id);
            for (long j = 0; pass == 1 && j < k; j++) {
                size_t l;
                const unsigned char *p = bytepiece_piece(t, out[j], &l);
                print_piece(stdout, p, l, first_piece);
                first_piece = false;
            }
            i += n;
        }
        fputc('\n', stdout);
    }
    free(out);
    return 0;
}

static int tokenize_cmd(int argc, char **argv) {
    const char *tok_path = NULL, *file = NULL, *text = NULL, *v;
    bool ids = false, pieces = false, bos = false;
    double alpha = -1;
    long long seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(TOKENIZE_USAGE, stdout), 0;
        if (!strcmp(a, "--ids")) ids = true;
        else if (!strcmp(a, "--pieces")) pieces = true;
        else if (!strcmp(a, "--bos")) bos = true;
        else if (a[0] != '-' || !a[1]) {
            if (text) return cli_error("tokenize: more than one TEXT given (quote the text)");
            text = a;
        } else if (!(v = cli_value(argc, argv, &i))) return 1;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) tok_path = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) file = v;
        else if (!strcmp(a, "--alpha")) { if (cli_float(a, v, 0, 1e6, &alpha)) return 1; }
        else if (!strcmp(a, "--seed")) { if (cli_int(a, v, 0, INT64_MAX, &seed)) return 1; }
        else return cli_error("tokenize: unknown flag '%s' (see kiln tokenize --help)", a);
    }
    if (!tok_path) return cli_error("tokenize: -m TOK is required (see kiln tokenize --help)");
    if (!text == !file) return cli_error("tokenize: give either TEXT or -f FILE");
    if (!pieces) ids = true;
    tok_source src = {0};
    if (open_source(tok_path, &src) != 0) return cli_error("tokenize: %s", kiln_errmsg());
    kiln_map map = {0};
    const unsigned char *data = (const unsigned char *)text;
    size_t len = text ? strlen(text) : 0;
    int rc = 0;
    if (file) {
        rc = kiln_map_open(&map, file);
        data = map.data;
        len = map.size;
    }
    if (rc == 0 && src.bp) {
        if (bos) rc = kiln_fail("--bos: a BytePiece vocabulary has no BOS token");
        else rc = tokenize_bp(src.bp, data, len, alpha, (uint64_t)seed, ids, pieces);
    } else if (rc == 0) {
        if (alpha >= 0) rc = kiln_fail("--alpha: sampling needs a BytePiece tokenizer, %s is a model", tok_path);
        else rc = tokenize_model(src.model, (const char *)data, len, bos, ids, pieces);
    }
    kiln_map_close(&map);
    bytepiece_free(src.bp);
    if (src.model) kiln_model_close(src.model);
    if (fflush(stdout) != 0 && rc == 0) rc = kiln_fail("writing the output failed");
    return rc ? cli_error("tokenize: %s", kiln_errmsg()) : 0;
}

KILN_COMMAND("tokenize", "text to token ids: tokenize -m TOK [--ids] [--pieces] [--alpha A --seed S] TEXT",
             tokenize_cmd)
