/* Compares the tensors of two GGUF files: the same names (in any order: llama-quantize writes the output
 * head first), each with the same type and the same bytes (the key-value metadata may differ). For tests/ref/quantize_vs_llama_cpp.sh.
 * Prints one line per file pair and exits 1 at the first difference it names. */
#include <stdio.h>
#include <string.h>

#include "format/gguf.h"

int main(int argc, char **argv) {
    if (argc != 3) return fprintf(stderr, "usage: %s A.gguf B.gguf\n", argv[0]), 2;
    gguf_file *a = gguf_open(argv[1]), *b = gguf_open(argv[2]);
    if (!a || !b) return fprintf(stderr, "cannot open %s\n", a ? argv[2] : argv[1]), 2;
    if (a->n_tensors != b->n_tensors)
        return printf("%llu tensors against %llu\n", (unsigned long long)a->n_tensors,
                      (unsigned long long)b->n_tensors), 1;
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const gguf_tensor *x = &a->tensors[i], *y = NULL;
        for (uint64_t j = 0; j < b->n_tensors && !y; j++)
            if (b->tensors[j].name.len == x->name.len && !memcmp(b->tensors[j].name.ptr, x->name.ptr, x->name.len))
                y = &b->tensors[j];
        if (!y) return printf("%.*s: only in %s\n", (int)x->name.len, x->name.ptr, argv[1]), 1;
        if (x->type != y->type)
            return printf("%.*s: type %s against %s\n", (int)x->name.len, x->name.ptr, gguf_type_name(x->type),
                          gguf_type_name(y->type)), 1;
        if (x->nbytes != y->nbytes || memcmp(x->data, y->data, x->nbytes))
            return printf("%.*s (%s): the bytes differ\n", (int)x->name.len, x->name.ptr, gguf_type_name(x->type)), 1;
    }
    printf("all %llu tensors equal (names, types, bytes)\n", (unsigned long long)a->n_tensors);
    gguf_close(a), gguf_close(b);
    return 0;
}
