/* Megatron-style tensor/pipeline-parallel shards of kiln's GGUF model files. */
#include "base/error.h"
#include "format/model_file.h"
#include "format/shard.h"
#include "kiln.h"

int kiln_shard(const char *model_path, int tp, int pp, const char *dir) {
    gguf_file *g = gguf_open(model_path);
    if (!g) return -1;
    kiln_config c;
    int rc = model_file_read_config(g, &c);
    if (rc == 0) rc = shard_write(g, &c, tp, pp, dir);
    gguf_close(g);
    return rc;
}

int kiln_merge(const char *dir, const char *out_path) { return shard_merge(dir, out_path); }
