/* bench_complete: the latency of `kiln complete` per keystroke, replaying a typing session: a C file
 * typed byte by byte, with a typo fixed by a backspace every 13 keystrokes, a suggestion computed after
 * every key as the editor does. Prints mean, median, p95 and max latency and the tokens fed per key,
 * and the ratio to the peer of the seed's demo, which evaluates the whole context again for every
 * suggestion (a fresh suggester, timed on every 10th key of the same session).
 * usage: bench_complete [MODEL.gguf ...] (default: a random byte-level model of the demo's shape, made
 * with build/bench/make_model, and stories260K) — set THREADS (default 1: one core per keystroke). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/suggest.h"
#include "base/file.h"
#include "kiln.h"

enum { MAX_KEYS = 1200 };

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int bench(const char *path, const char *src, size_t n_src) {
    kiln_model *m = kiln_model_open(path);
    if (!m) return fprintf(stderr, "%s\n", kiln_last_error()), 1;
    kiln_suggester *s = kiln_suggester_new(m, 32);
    if (!s) return fprintf(stderr, "%s: %s\n", path, kiln_last_error()), 1;
    char *text = malloc(n_src + 2);
    double *ms = malloc(sizeof(double) * (MAX_KEYS + MAX_KEYS / 13 + 2));
    size_t len = 0;
    long fed = 0;
    int keys = 0, n_scratch = 0;
    double scratch = 0;
    for (size_t i = 0; i < n_src && keys < MAX_KEYS; i++) {
        for (int typo = keys % 13 == 12; typo >= 0; typo--) {
            text[len++] = typo ? 'x' : src[i];
            double t0 = kiln_now();
            kiln_suggest(s, text, len);
            ms[keys++] = (kiln_now() - t0) * 1000;
            fed += kiln_suggest_evaluated(s);
            if (keys % 10 == 0) {
                kiln_suggester *fresh = kiln_suggester_new(m, 32);
                t0 = kiln_now();
                kiln_suggest(fresh, text, len);
                scratch += (kiln_now() - t0) * 1000;
                n_scratch++;
                kiln_suggester_free(fresh);
            }
            if (typo) { /* the backspace */
                len--;
                t0 = kiln_now();
                kiln_suggest(s, text, len);
                ms[keys++] = (kiln_now() - t0) * 1000;
                fed += kiln_suggest_evaluated(s);
            }
        }
    }
    double sum = 0;
    for (int i = 0; i < keys; i++) sum += ms[i];
    qsort(ms, keys, sizeof *ms, by_value);
    const kiln_config *c = kiln_model_config(m);
    printf("%s (dim %d, %d layers, %d tokens, %d threads): %d keystrokes, latency mean %.2f ms, median %.2f, "
           "p95 %.2f, max %.2f; %.1f tokens fed per key\n",
           path, c->dim, c->n_layers, c->n_vocab, kiln_get_threads(), keys, sum / keys, ms[keys / 2],
           ms[keys * 95 / 100], ms[keys - 1], (double)fed / keys);
    printf("  peer, the whole context evaluated again per suggestion: mean %.2f ms; incremental is %.1fx faster\n",
           scratch / n_scratch, scratch / n_scratch / (sum / keys));
    free(text);
    free(ms);
    kiln_suggester_free(s);
    kiln_model_close(m);
    return 0;
}

int main(int argc, char **argv) {
    const char *threads = getenv("THREADS");
    kiln_set_threads(threads ? atoi(threads) : 1);
    size_t n_src;
    char *src = kiln_read_file("src/api/suggest.c", &n_src);
    if (!src) return fprintf(stderr, "%s\n", kiln_last_error()), 1;
    int rc = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) rc |= bench(argv[i], src, n_src);
    } else {
        const char *tmp = getenv("BENCH_TMP") ? getenv("BENCH_TMP") : "/tmp/kiln-bench";
        char bytes[1024], stories[1024], cmd[4096];
        snprintf(bytes, sizeof bytes, "%s/complete-bytes.gguf", tmp);
        snprintf(stories, sizeof stories, "%s/stories260K.gguf", tmp);
        snprintf(cmd, sizeof cmd, "mkdir -p %s && (test -s %s || build/bench/make_model %s f32 384 6 6 6 1024 256 512 "
                 ">/dev/null)", tmp, bytes, bytes);
        if (system(cmd) != 0) return fprintf(stderr, "could not make %s\n", bytes), 1;
        if (kiln_convert_llama2c("../shared/testdata/stories260K/stories260K.bin",
                                 "../shared/testdata/stories260K/tok512.bin", stories, KILN_TYPE_F32) < 0)
            return fprintf(stderr, "%s\n", kiln_last_error()), 1;
        rc |= bench(bytes, src, n_src);
        rc |= bench(stories, src, n_src);
    }
    free(src);
    return rc;
}
