/* kiln convert: other model formats into kiln's GGUF files, and GGUF models out to Hugging Face. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "kiln.h"

static const char *USAGE =
    "usage: kiln convert INPUT -o OUT [--to gguf|hf] [--arch llama|qwen2] [--type f32|f16|bf16] [--tokenizer TOK]\n"
    "  INPUT         a Hugging Face checkpoint directory (config.json, safetensors, tokenizer.json),\n"
    "                a llama2.c checkpoint (.bin), or with --to hf a GGUF model\n"
    "  --to          gguf (default): write a GGUF model; hf: write a Hugging Face directory OUT\n"
    "  --arch        rewrite a GGUF model as another architecture with the same math (llama <-> qwen2)\n"
    "  --type        storage of the weight matrices (default: as stored in a Hugging Face checkpoint,\n"
    "                f32 for llama2.c; norms stay f32)\n"
    "  --tokenizer   the llama2.c tokenizer (tokenizer.bin, tok512.bin) of a llama2.c checkpoint\n";

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int convert(int argc, char **argv) {
    const char *in = NULL, *tok = NULL, *out = NULL, *to = "gguf", *arch = NULL, *v;
    int type = -1;
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
        else if (!strcmp(a, "--arch")) arch = v;
        else if (!strcmp(a, "--to")) {
            if (strcmp(v, "gguf") && strcmp(v, "hf")) return cli_error("convert: --to: '%s' is not one of gguf, hf", v);
            to = v;
        } else if (!strcmp(a, "--type")) {
            if (!strcmp(v, "f32")) type = KILN_TYPE_F32;
            else if (!strcmp(v, "f16")) type = KILN_TYPE_F16;
            else if (!strcmp(v, "bf16")) type = KILN_TYPE_BF16;
            else return cli_error("convert: --type: '%s' is not one of f32, f16, bf16", v);
        } else return cli_error("convert: unknown flag '%s' (see kiln convert --help)", a);
    }
    if (!in || !out) return cli_error("convert: need INPUT and -o OUT (see kiln convert --help)");
    int rc;
    if (arch) {
        if (tok || type >= 0 || strcmp(to, "gguf"))
            return cli_error("convert: --arch rewrites a GGUF model as it is (no --to hf, --type, --tokenizer)");
        rc = kiln_convert_arch(in, arch, out);
    } else if (!strcmp(to, "hf")) {
        if (tok || type >= 0) return cli_error("convert: --to hf keeps the model's types and tokenizer (no --type, --tokenizer)");
        rc = kiln_export_hf(in, out);
    } else if (is_dir(in)) {
        if (tok) return cli_error("convert: a Hugging Face directory brings its own tokenizer (no --tokenizer)");
        rc = kiln_convert_hf(in, out, type);
    } else {
        rc = kiln_convert_llama2c(in, tok, out, type < 0 ? KILN_TYPE_F32 : (kiln_type)type);
    }
    if (rc < 0) return cli_error("%s", kiln_last_error());
    fprintf(stderr, "kiln: wrote %s\n", out);
    return 0;
}

KILN_COMMAND("convert", "convert models: Hugging Face or llama2.c to GGUF, GGUF to Hugging Face", convert)
