/* kiln convert: other model formats into kiln's GGUF files. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "kiln.h"

static const char *USAGE =
    "usage: kiln convert CHECKPOINT [--tokenizer TOK] -o OUT.gguf [--type f32|f16|bf16]\n"
    "  CHECKPOINT    a llama2.c checkpoint (.bin)\n"
    "  --tokenizer   its llama2.c tokenizer (tokenizer.bin, tok512.bin)\n"
    "  --type        storage of the weight matrices (default f32; norms stay f32)\n";

static int convert(int argc, char **argv) {
    const char *in = NULL, *tok = NULL, *out = NULL, *v;
    kiln_type type = KILN_TYPE_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (a[0] != '-') {
            if (in) return cli_error("convert: one input at a time ('%s' and '%s')", in, a);
            in = a;
            continue;
        }
        if (!(v = cli_value(argc, argv, &i))) return 1;
        if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = v;
        else if (!strcmp(a, "--type")) {
            if (!strcmp(v, "f32")) type = KILN_TYPE_F32;
            else if (!strcmp(v, "f16")) type = KILN_TYPE_F16;
            else if (!strcmp(v, "bf16")) type = KILN_TYPE_BF16;
            else return cli_error("convert: --type: '%s' is not one of f32, f16, bf16", v);
        } else return cli_error("convert: unknown flag '%s' (see kiln convert --help)", a);
    }
    if (!in || !out) return cli_error("convert: need CHECKPOINT and -o OUT (see kiln convert --help)");
    if (kiln_convert_llama2c(in, tok, out, type) < 0) return cli_error("%s", kiln_last_error());
    fprintf(stderr, "kiln: wrote %s\n", out);
    return 0;
}

KILN_COMMAND("convert", "convert a llama2.c checkpoint into a GGUF model", convert)
