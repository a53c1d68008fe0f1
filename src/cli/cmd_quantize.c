/* kiln quantize: a GGUF model with float matrices into a quantized one (Q8_0, Q4_0, Q4_K_M). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/progress.h"
#include "cli/cli.h"
#include "format/quantize.h"

static const char *USAGE =
    "usage: kiln quantize IN.gguf OUT.gguf --type q8_0|q4_0|q4_k_m [--progress|--quiet]\n"
    "  Quantizes the weight matrices of IN, tensor by tensor as llama.cpp's llama-quantize does for the\n"
    "  same type; norms and other vectors stay as they are. OUT is written under a temporary name and\n"
    "  renamed at the end.\n"
    "  --type        q8_0: 8.5 bits per weight, nearly lossless\n"
    "                q4_0: 4.5 bits, the output head Q6_K\n"
    "                q4_k_m: 4.5-bit K-quants, the output head and some attn_v/ffn_down layers Q6_K\n"
    "  --progress    always show progress on stderr (default: when stderr is a terminal)\n"
    "  --quiet       never show progress\n";

static int quantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type = NULL;
    int progress = KILN_PROGRESS_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (!strcmp(a, "--progress")) progress = KILN_PROGRESS_ON;
        else if (!strcmp(a, "--quiet")) progress = KILN_PROGRESS_OFF;
        else if (!strcmp(a, "--type")) {
            if (!(type = cli_value(argc, argv, &i))) return 1;
        } else if (a[0] == '-' && a[1]) return cli_error("quantize: unknown flag '%s' (see kiln quantize --help)", a);
        else if (!in) in = a;
        else if (!out) out = a;
        else return cli_error("quantize: one input and one output ('%s' is a third file)", a);
    }
    if (!in || !out || !type)
        return cli_error("quantize: need IN.gguf OUT.gguf --type TYPE (see kiln quantize --help)");
    kiln_quant_scheme scheme;
    if (quantize_scheme_parse(type, &scheme) < 0) return cli_error("quantize: --type: %s", kiln_errmsg());
    if (quantize_gguf(in, out, scheme, progress) < 0) return cli_error("quantize: %s", kiln_errmsg());
    struct stat a, b;
    if (stat(in, &a) == 0 && stat(out, &b) == 0)
        fprintf(stderr, "kiln: wrote %s (%s, %.1f MiB from %.1f MiB)\n", out, quantize_scheme_name(scheme),
                b.st_size / 1048576.0, a.st_size / 1048576.0);
    return 0;
}

KILN_COMMAND("quantize", "quantize a GGUF model's weights to Q8_0, Q4_0 or Q4_K_M", quantize)
