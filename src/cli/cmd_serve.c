/* kiln serve: an OpenAI-compatible HTTP server with continuous batching (docs/SERVING.md). */
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "cli/cli.h"
#include "kiln.h"
#include "serve/serve.h"

static const char *USAGE =
    "usage: kiln serve -m MODEL [--host 127.0.0.1] [--port 8080] [flags]\n"
    "  -m MODEL             GGUF model file (with a tokenizer)\n"
    "  --host ADDR          IPv4 address to listen on (default 127.0.0.1: this machine only)\n"
    "  --port N             port (default 8080; 0: any free port)\n"
    "  --port-file FILE     write the port there once listening\n"
    "  --api-key KEY        require 'Authorization: Bearer KEY'\n"
    "  --model-id NAME      the model's name in the API (default: the file name)\n"
    "  --slots N            sequences decoded together in one batch (default 8)\n"
    "  --queue N            sequences that may wait for a slot; more get 429 (default 64)\n"
    "  --ctx N              context of each slot (default: the model's)\n"
    "  --max-tokens N       the most new tokens a request may ask for (default 2048)\n"
    "  --max-body SIZE      largest request body (default 1M)\n"
    "  --timeout S          seconds a request may run before it is cut short (default 300)\n"
    "  --threads N          threads of the forward pass (default: all cores)\n";

static int cmd_serve(int argc, char **argv) {
    serve_opts o = {.host = "127.0.0.1", .port = 8080, .slots = 8, .queue = 64, .max_tokens = 2048,
                    .max_body = 1 << 20, .timeout = 300};
    long long v;
    double d;
    uint64_t size;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (!(val = cli_value(argc, argv, &i))) return 1;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o.model_path = val;
        else if (!strcmp(a, "--host")) o.host = val;
        else if (!strcmp(a, "--port")) { if (cli_int(a, val, 0, 65535, &v)) return 1; o.port = (int)v; }
        else if (!strcmp(a, "--port-file")) o.port_file = val;
        else if (!strcmp(a, "--api-key")) o.api_key = val;
        else if (!strcmp(a, "--model-id")) o.model_id = val;
        else if (!strcmp(a, "--slots")) { if (cli_int(a, val, 1, 256, &v)) return 1; o.slots = (int)v; }
        else if (!strcmp(a, "--queue")) { if (cli_int(a, val, 1, 1 << 20, &v)) return 1; o.queue = (int)v; }
        else if (!strcmp(a, "--ctx")) { if (cli_int(a, val, 0, 1 << 24, &v)) return 1; o.n_ctx = (int)v; }
        else if (!strcmp(a, "--max-tokens")) { if (cli_int(a, val, 1, 1 << 24, &v)) return 1; o.max_tokens = (int)v; }
        else if (!strcmp(a, "--max-body")) { if (cli_size(a, val, &size)) return 1; o.max_body = (size_t)size; }
        else if (!strcmp(a, "--timeout")) { if (cli_float(a, val, 0.001, 1e7, &d)) return 1; o.timeout = d; }
        else if (!strcmp(a, "--threads")) { if (cli_int(a, val, 1, 1024, &v)) return 1; o.threads = (int)v; }
        else return cli_error("serve: unknown flag '%s'\n%s", a, USAGE);
    }
    if (!o.model_path) return cli_error("serve: -m MODEL is required\n%s", USAGE);
    if (!o.model_id) {
        const char *slash = strrchr(o.model_path, '/');
        o.model_id = slash ? slash + 1 : o.model_path;
    }
    if (serve_main(&o) < 0) return cli_error("serve: %s", kiln_last_error());
    return 0;
}

KILN_COMMAND("serve", "an OpenAI-compatible HTTP server with continuous batching", cmd_serve)
