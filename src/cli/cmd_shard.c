/* kiln shard / kiln merge: Megatron-style tensor- and pipeline-parallel shards of a model. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "kiln.h"

static const char *SHARD_USAGE =
    "usage: kiln shard MODEL --tp N --pp M -o DIR\n"
    "  Splits MODEL into N tensor-parallel ranks x M pipeline stages in Megatron-LM's layout:\n"
    "  DIR/mp_rank_TT_PPP/model.safetensors per rank, DIR/config.gguf, DIR/shards.json.\n"
    "  --tp N   tensor-parallel ranks: must divide the heads and the MLP width; N and the kv heads\n"
    "           must divide one another (kv heads are copied when N exceeds them) (default 1)\n"
    "  --pp M   pipeline stages: must divide the layers (default 1)\n";

static int shard(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *v;
    long long tp = 1, pp = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(SHARD_USAGE, stdout), 0;
        if (a[0] != '-') {
            if (in) return cli_error("shard: one model at a time ('%s' and '%s')", in, a);
            in = a;
            continue;
        }
        if (!(v = cli_value(argc, argv, &i))) return 1;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = v;
        else if (!strcmp(a, "--tp")) { if (cli_int(a, v, 1, 256, &tp)) return 1; }
        else if (!strcmp(a, "--pp")) { if (cli_int(a, v, 1, 256, &pp)) return 1; }
        else return cli_error("shard: unknown flag '%s' (see kiln shard --help)", a);
    }
    if (!in || !out) return cli_error("shard: need MODEL and -o DIR (see kiln shard --help)");
    if (kiln_shard(in, (int)tp, (int)pp, out) < 0) return cli_error("%s", kiln_last_error());
    fprintf(stderr, "kiln: wrote %lld x %lld shards to %s\n", tp, pp, out);
    return 0;
}

static int merge(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return puts("usage: kiln merge DIR -o MODEL.gguf"), 0;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(out = cli_value(argc, argv, &i))) return 1;
        } else if (a[0] == '-') return cli_error("merge: unknown flag '%s'", a);
        else if (in) return cli_error("merge: one shard folder at a time ('%s' and '%s')", in, a);
        else in = a;
    }
    if (!in || !out) return cli_error("merge: need DIR and -o MODEL (see kiln merge --help)");
    if (kiln_merge(in, out) < 0) return cli_error("%s", kiln_last_error());
    fprintf(stderr, "kiln: wrote %s\n", out);
    return 0;
}

KILN_COMMAND("shard", "split a model into Megatron-style tensor/pipeline-parallel shards", shard)
KILN_COMMAND("merge", "merge Megatron-style shards back into one model", merge)
