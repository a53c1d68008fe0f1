/* Encodes a file with a Hugging Face tokenizer (tokenizer.json, or GPT-2's encoder.json + vocab.bpe) and
 * prints "TOKENS SECONDS" for the best of 3 runs: the kiln side of bench/bench_bpe.sh.
 *     build/bench/bpe_encode TOKENIZER FILE */
#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"
#include "base/file.h"
#include "tokenizer/hf_tokenizer.h"

int main(int argc, char **argv) {
    if (argc != 3) return fputs("usage: bpe_encode TOKENIZER FILE\n", stderr), 2;
    kiln_tokenizer *t = hf_tokenizer_load(argv[1]);
    kiln_map text;
    if (!t || kiln_map_open(&text, argv[2]) < 0) return fprintf(stderr, "bpe_encode: %s\n", kiln_errmsg()), 1;
    int max = (int)text.size + 16, n = 0;
    int32_t *ids = kiln_xmalloc(sizeof *ids * (size_t)max);
    double best = 1e30;
    for (int run = 0; run < 3; run++) {
        double t0 = kiln_now();
        n = tokenizer_encode(t, (const char *)text.data, text.size, 0, ids, max);
        double dt = kiln_now() - t0;
        if (n < 0) return fprintf(stderr, "bpe_encode: %s\n", kiln_errmsg()), 1;
        if (dt < best) best = dt;
    }
    printf("%d %.6f\n", n, best);
    free(ids);
    kiln_map_close(&text);
    tokenizer_free(t);
    return 0;
}
