/* kiln generate: text from a prompt, streamed to stdout as it is produced. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "cli/cli.h"
#include "kiln.h"

static const char *USAGE =
    "usage: kiln generate -m MODEL [-p PROMPT] [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S] [--threads N]\n"
    "  -m MODEL      GGUF model file\n"
    "  -p PROMPT     text to continue (default: none, start from BOS)\n"
    "  -n N          new tokens to generate (default 256; stops early at EOS)\n"
    "  --temp T      temperature, 0 for greedy (default 0.8)\n"
    "  --top-k K     keep the K most probable tokens (default 0: off)\n"
    "  --top-p P     keep the smallest set reaching probability P (default 0.95; 1: off)\n"
    "  --seed S      sampling seed (default 42)\n"
    "  --threads N   threads (default: all cores)\n";

static int generate(int argc, char **argv) {
    const char *model_path = NULL, *prompt = "", *v;
    long long n_new = 256, seed = 42, threads = 0, top_k = 0;
    double temp = 0.8, top_p = 0.95;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (!(v = cli_value(argc, argv, &i))) return 1;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "-n")) { if (cli_int("-n", v, 1, 1 << 24, &n_new)) return 1; }
        else if (!strcmp(a, "--temp")) { if (cli_float("--temp", v, 0, 100, &temp)) return 1; }
        else if (!strcmp(a, "--top-k")) { if (cli_int("--top-k", v, 0, 1 << 30, &top_k)) return 1; }
        else if (!strcmp(a, "--top-p")) { if (cli_float("--top-p", v, 1e-9, 1, &top_p)) return 1; }
        else if (!strcmp(a, "--seed")) { if (cli_int("--seed", v, 0, INT64_MAX, &seed)) return 1; }
        else if (!strcmp(a, "--threads")) { if (cli_int("--threads", v, 1, 1024, &threads)) return 1; }
        else return cli_error("generate: unknown flag '%s' (see kiln generate --help)", a);
    }
    if (!model_path) return cli_error("generate: -m MODEL is required (see kiln generate --help)");
    kiln_sampling sp = {(float)temp, (int)top_k, (float)top_p, (uint64_t)seed};
    if (kiln_sampling_check(&sp) < 0) return cli_error("generate: %s", kiln_last_error());
    if (threads) kiln_set_threads((int)threads);

    double t0 = kiln_now();
    kiln_model *m = kiln_model_open(model_path);
    if (!m) return cli_error("%s", kiln_last_error());
    const kiln_config *cfg = kiln_model_config(m);
    int max_prompt = cfg->ctx_len + 1;
    int32_t *toks = malloc(sizeof(int32_t) * max_prompt);
    int n_prompt = kiln_tokenize(m, prompt, strlen(prompt), 1, toks, max_prompt);
    if (n_prompt < 0 || n_prompt > cfg->ctx_len) {
        kiln_model_close(m);
        free(toks);
        if (n_prompt < 0 && !strstr(kiln_last_error(), "more than"))
            return cli_error("generate: %s", kiln_last_error());
        return cli_error("generate: -p: the prompt is longer than the model's context of %d tokens", cfg->ctx_len);
    }
    if (n_prompt == 0) return free(toks), kiln_model_close(m), cli_error("generate: empty prompt and no BOS token");
    kiln_ctx *c = kiln_ctx_new(m, 0);
    if (n_new > cfg->ctx_len - n_prompt) n_new = cfg->ctx_len - n_prompt;
    fputs(prompt, stdout);
    fflush(stdout);
    double t1 = kiln_now();
    int rc = kiln_eval(c, toks, n_prompt, NULL);
    double t2 = kiln_now(), t_first = t2 - t0;
    int prev = toks[n_prompt - 1], n_out = 0, bos = kiln_token_bos(m), eos = kiln_token_eos(m);
    uint64_t state = sp.seed;
    while (rc == 0 && n_out < n_new) {
        int next = kiln_sample(kiln_logits(c), cfg->n_vocab, &sp, &state);
        if (next == eos || next == bos) break; /* a BOS would start a new document: the text is done */
        size_t len;
        const char *piece = kiln_token_text(m, prev, next, &len);
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
        n_out++;
        prev = next;
        if (n_out < n_new) rc = kiln_eval(c, &next, 1, NULL);
    }
    double t3 = kiln_now();
    if (rc < 0) cli_error("generate: %s", kiln_last_error());
    fprintf(stderr, "\n[kiln] prompt %d tokens, prefill %.1f tok/s, decode %.1f tok/s (%d tokens), first token %.1f ms, "
                    "%d threads\n",
            n_prompt, n_prompt / (t2 - t1), n_out > 1 ? (n_out - 1) / (t3 - t2) : 0.0, n_out, t_first * 1e3,
            kiln_get_threads());
    kiln_ctx_free(c);
    kiln_model_close(m);
    free(toks);
    return rc < 0;
}

KILN_COMMAND("generate", "generate text from a prompt", generate)
