/* kiln info: what a model file holds. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "kiln.h"

static const char *NORMS[] = {"rmsnorm", "layernorm"}, *POSITIONS[] = {"rope", "learned"},
                  *ACTS[] = {"swiglu", "gelu", "geglu"}, *ROPES[] = {"interleaved", "neox"};

static int info(int argc, char **argv) {
    int tensors = 1;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return puts("usage: kiln info MODEL [--no-tensors]"), 0;
        else if (!strcmp(argv[i], "--no-tensors")) tensors = 0;
        else if (argv[i][0] == '-') return cli_error("info: unknown flag '%s'", argv[i]);
        else if (path) return cli_error("info: one model at a time ('%s' and '%s')", path, argv[i]);
        else path = argv[i];
    }
    if (!path) return cli_error("info: which model? usage: kiln info MODEL");
    kiln_model *m = kiln_model_open(path);
    if (!m) return cli_error("%s", kiln_last_error());
    const kiln_config *c = kiln_model_config(m);
    size_t wbytes = kiln_model_weight_bytes(m);
    printf("file            %s (%.2f MB)\n", path, kiln_model_file_size(m) / 1e6);
    printf("architecture    %s\n", c->arch);
    printf("vocab           %d\n", c->n_vocab);
    printf("dim             %d\n", c->dim);
    printf("layers          %d\n", c->n_layers);
    printf("heads           %d (kv heads %d, head dim %d)\n", c->n_heads, c->n_kv_heads, c->head_dim);
    printf("ffn             %d (%s)\n", c->ffn_dim, ACTS[c->act]);
    printf("context         %d\n", c->ctx_len);
    printf("norm            %s, eps %g\n", NORMS[c->norm], c->norm_eps);
    if (c->pos == KILN_POS_ROPE)
        printf("positions       rope (%s, %d dims, theta %g)\n", ROPES[c->rope_style], c->rope_dim, c->rope_theta);
    else printf("positions       %s\n", POSITIONS[c->pos]);
    printf("biases          qkv %s, output %s\n", c->qkv_bias ? "yes" : "no", c->out_bias ? "yes" : "no");
    printf("output head     %s\n", c->tied_output ? "tied to token embedding" : "separate");
    printf("weights read    %.2f MB per token\n", wbytes / 1e6);
    printf("kv cache        %zu bytes per token (%.1f MB at full context)\n", kiln_model_kv_bytes_per_token(m),
           kiln_model_kv_bytes_per_token(m) * (double)c->ctx_len / 1e6);
    printf("tokenizer       %s (bos %d, eos %d)\n", kiln_token_bos(m) >= 0 || kiln_token_eos(m) >= 0 ? "yes" : "none",
           kiln_token_bos(m), kiln_token_eos(m));
    int n = kiln_model_n_tensors(m);
    printf("tensors         %d\n", n);
    for (int i = 0; tensors && i < n; i++) {
        kiln_tensor_info t;
        kiln_model_tensor(m, i, &t);
        printf("  %-32.*s %-5s [", (int)t.name_len, t.name, t.type);
        for (int d = 0; d < t.n_dims; d++) printf(d ? ", %lld" : "%lld", (long long)t.ne[d]);
        printf("] %zu bytes\n", t.nbytes);
    }
    kiln_model_close(m);
    return 0;
}

KILN_COMMAND("info", "show a model's architecture, configuration and tensors", info)
