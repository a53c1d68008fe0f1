/* libFuzzer target for the tokenizer.json reader and the byte-level BPE it builds: any bytes as
 * tokenizer.json give a tokenizer or an error; an accepted tokenizer must encode a few texts (the input's
 * own tail among them) and decode every id it returns. Built by scripts/check-long.sh with
 * -fsanitize=fuzzer,address,undefined. */
#include <stdint.h>
#include <string.h>

#include "base/error.h"
#include "tokenizer/hf_tokenizer.h"

static volatile unsigned sink;

static void exercise(const kiln_tokenizer *t, const char *text, size_t len) {
    int32_t ids[256];
    int n = tokenizer_encode(t, text, len, 1, ids, 256);
    for (int i = 0; i < n; i++) {
        size_t l;
        const char *s = tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], &l);
        if (l) sink += (unsigned char)s[0] + (unsigned char)s[l - 1];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kiln_tokenizer *t = hf_tokenizer_parse((const char *)data, size, NULL, "fuzz/tokenizer.json");
    if (!t) {
        sink += (unsigned)strlen(kiln_errmsg());
        return 0;
    }
    static const char *const texts[] = {"Hello world", "  x\n\n\t1234 \xe4\xb8\xad\xf0\x9f\x98\x80", "\xff\xfe\x80"};
    for (int i = 0; i < 3; i++) exercise(t, texts[i], strlen(texts[i]));
    exercise(t, (const char *)data + size / 2, size - size / 2);
    tokenizer_free(t);
    return 0;
}
