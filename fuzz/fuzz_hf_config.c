/* libFuzzer target for the Hugging Face config.json reader: any bytes as config.json must give a
 * configuration that passes kiln_config_check, or an error; and an accepted one must write back out as
 * config.json. Built by scripts/check-long.sh with -fsanitize=fuzzer,address,undefined. */
#include <stdint.h>
#include <string.h>

#include "base/error.h"
#include "format/hf.h"

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kiln_config c;
    const hf_family *fam;
    if (hf_config_parse((const char *)data, size, "fuzz/config.json", &c, &fam) < 0) {
        sink += (unsigned)strlen(kiln_errmsg());
        return 0;
    }
    if (kiln_config_check(&c) < 0) __builtin_trap();
    json_t *out = hf_config_json(&c, fam, 1, 2, "float32");
    sink += (unsigned)json_object_size(out);
    json_decref(out);
    return 0;
}
