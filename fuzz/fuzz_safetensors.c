/* libFuzzer target for the safetensors header parser: parses the input and, when it is accepted, reads
 * the first and last byte of every tensor the parser vouches for, looks each name up and reads the
 * metadata. Built by scripts/check-long.sh with -fsanitize=fuzzer,address,undefined. */
#include <stdint.h>
#include <string.h>

#include "base/error.h"
#include "format/safetensors.h"

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = safetensors_parse(data, size, "fuzz.safetensors");
    if (!f) {
        sink += (unsigned)strlen(kiln_errmsg());
        return 0;
    }
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (t->nbytes) sink += ((const unsigned char *)t->data)[0] + ((const unsigned char *)t->data)[t->nbytes - 1];
        sink += safetensors_find(f, t->name) == t;
    }
    for (int i = 0; i < f->n_meta; i++) sink += safetensors_meta(f, f->meta_keys[i]) != NULL;
    safetensors_close(f);
    return 0;
}
