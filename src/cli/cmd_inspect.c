/* kiln inspect: what each layer does to a text. The logit lens (the top next tokens if the model
 * stopped after each layer), the attention between two tokens in every head of a layer, and the cosine
 * distance between each layer's input and output. A table, or --json. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/inspect.h"
#include "base/error.h"
#include "cli/cli.h"
#include "kiln.h"

static const char *USAGE =
    "usage: kiln inspect -m MODEL (-p TEXT | --tokens IDS) [--topk-per-layer K] [--attention LAYER --from I --to J]\n"
    "                    [--cos] [--all-tokens] [--json]\n"
    "  -p TEXT              the text (tokenized with BOS)\n"
    "  --tokens IDS         token ids instead, comma-separated (models without a tokenizer)\n"
    "  --topk-per-layer K   logit lens: the K most probable next tokens after each layer\n"
    "  --attention LAYER    attention weights of LAYER (0-based) from token --from I to token --to J\n"
    "  --cos                cosine distance between each layer's input and output hidden states\n"
    "  --all-tokens         lens and cosine for every token, not only the last\n"
    "  --json               JSON instead of a table\n";

enum { MAX_TOKENS = 1024, MAX_K = 100 };

typedef struct {
    const char *model, *text, *ids;
    long long topk, layer, from, to;
    int cos, all, json;
} inspect_args;

static int parse_ids(const char *s, int32_t *out, int max) {
    int n = 0;
    for (const char *p = s; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < 0 || v > INT32_MAX)
            return cli_error("--tokens: '%s' is not a comma-separated list of token ids", s), -1;
        if (n == max) return cli_error("--tokens: more than %d tokens", max), -1;
        out[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!n) return cli_error("--tokens: no token ids"), -1;
    return n;
}

static json_t *token_json(const kiln_model *m, int prev, int id) {
    size_t len = 0;
    const char *t = kiln_token_text(m, prev, id, &len);
    return json_pack("{s:i, s:s%}", "id", id, "text", t ? t : "", t ? len : 0);
}

/* The lens of hidden state H: the K most probable tokens, with logit and probability. */
static json_t *lens_top(const kiln_model *m, const float *h, int k, int prev, float *logits) {
    int V = kiln_model_config(m)->n_vocab;
    kiln_trace_lens(m, h, logits);
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    json_t *top = json_array();
    char *taken = kiln_xcalloc((unsigned)V, 1);
    for (int r = 0; r < k && r < V; r++) {
        int best = -1;
        for (int i = 0; i < V; i++)
            if (!taken[i] && (best < 0 || logits[i] > logits[best])) best = i;
        taken[best] = 1;
        json_t *t = token_json(m, prev, best);
        json_object_set_new(t, "logit", json_real(logits[best]));
        json_object_set_new(t, "prob", json_real(exp((double)logits[best] - mx) / sum));
        json_array_append_new(top, t);
    }
    free(taken);
    return top;
}

static json_t *report(const kiln_model *m, const inspect_args *a, const int32_t *toks, int n, const kiln_trace *tr) {
    const kiln_config *c = kiln_model_config(m);
    json_t *o = json_object(), *tokens = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(tokens, token_json(m, i ? toks[i - 1] : -1, toks[i]));
    json_object_set_new(o, "tokens", tokens);
    int first = a->all ? 0 : n - 1;
    if (a->topk > 0) {
        float *logits = kiln_xmalloc(sizeof(float) * c->n_vocab);
        json_t *lens = json_array();
        for (int l = 0; l < c->n_layers; l++)
            for (int t = first; t < n; t++) {
                const float *h = tr->resid + ((size_t)(l + 1) * n + t) * c->dim;
                json_array_append_new(lens, json_pack("{s:i, s:i, s:o}", "layer", l, "token", t, "top",
                                                      lens_top(m, h, (int)a->topk, toks[t], logits)));
            }
        free(logits);
        json_object_set_new(o, "logit_lens", lens);
    }
    if (a->layer >= 0) {
        json_t *heads = json_array();
        for (int h = 0; h < c->n_heads; h++)
            json_array_append_new(heads, json_real(tr->attn[(((size_t)a->layer * c->n_heads + h) * n + a->from) * n + a->to]));
        json_object_set_new(o, "attention", json_pack("{s:I, s:I, s:I, s:o}", "layer", (json_int_t)a->layer, "from",
                                                      (json_int_t)a->from, "to", (json_int_t)a->to, "heads", heads));
    }
    if (a->cos) {
        json_t *cos = json_array();
        for (int l = 0; l < c->n_layers; l++)
            for (int t = first; t < n; t++) {
                const float *in = tr->resid + ((size_t)l * n + t) * c->dim, *out = in + (size_t)n * c->dim;
                json_array_append_new(cos, json_pack("{s:i, s:i, s:f}", "layer", l, "token", t, "distance",
                                                     kiln_cos_distance(in, out, c->dim)));
            }
        json_object_set_new(o, "cos", cos);
    }
    return o;
}

/* A token's text made printable (newlines and other control bytes escaped), or #ID when it has none. */
static void print_token(const json_t *t) {
    const char *s = json_string_value(json_object_get(t, "text"));
    if (!*s) {
        printf("#%d", (int)json_integer_value(json_object_get(t, "id")));
        return;
    }
    putchar('\'');
    for (; *s; s++) {
        if (*s == '\n') fputs("\\n", stdout);
        else if ((unsigned char)*s < 32) printf("\\x%02x", (unsigned char)*s);
        else putchar(*s);
    }
    putchar('\'');
}

static void print_table(const json_t *o) {
    size_t i;
    json_t *e;
    printf("tokens:");
    json_array_foreach(json_object_get(o, "tokens"), i, e) {
        printf(" %zu:", i);
        print_token(e);
    }
    putchar('\n');
    json_t *lens = json_object_get(o, "logit_lens");
    if (lens) printf("\nlogit lens: next tokens if the model stopped after each layer\nlayer token  top\n");
    json_array_foreach(lens, i, e) {
        printf("%5d %5d ", (int)json_integer_value(json_object_get(e, "layer")),
               (int)json_integer_value(json_object_get(e, "token")));
        size_t k;
        json_t *t;
        json_array_foreach(json_object_get(e, "top"), k, t) {
            putchar(' ');
            print_token(t);
            printf(" %.3f", json_real_value(json_object_get(t, "prob")));
        }
        putchar('\n');
    }
    json_t *att = json_object_get(o, "attention");
    if (att) {
        printf("\nattention in layer %d from token %d to token %d:\nhead  weight\n",
               (int)json_integer_value(json_object_get(att, "layer")), (int)json_integer_value(json_object_get(att, "from")),
               (int)json_integer_value(json_object_get(att, "to")));
        json_array_foreach(json_object_get(att, "heads"), i, e) printf("%4zu  %.6f\n", i, json_real_value(e));
    }
    json_t *cos = json_object_get(o, "cos");
    if (cos) printf("\ncosine distance between each layer's input and output\nlayer token  distance\n");
    json_array_foreach(cos, i, e)
        printf("%5d %5d  %.6f\n", (int)json_integer_value(json_object_get(e, "layer")),
               (int)json_integer_value(json_object_get(e, "token")), json_real_value(json_object_get(e, "distance")));
}

static int cmd_inspect(int argc, char **argv) {
    inspect_args a = {.layer = -1, .from = -1, .to = -1};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v;
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) return fputs(USAGE, stdout), 0;
        if (!strcmp(f, "--cos")) { a.cos = 1; continue; }
        if (!strcmp(f, "--all-tokens")) { a.all = 1; continue; }
        if (!strcmp(f, "--json")) { a.json = 1; continue; }
        if (!(v = cli_value(argc, argv, &i))) return 1;
        if (!strcmp(f, "-m") || !strcmp(f, "--model")) a.model = v;
        else if (!strcmp(f, "-p") || !strcmp(f, "--prompt")) a.text = v;
        else if (!strcmp(f, "--tokens")) a.ids = v;
        else if (!strcmp(f, "--topk-per-layer")) { if (cli_int(f, v, 1, MAX_K, &a.topk)) return 1; }
        else if (!strcmp(f, "--attention")) { if (cli_int(f, v, 0, 1 << 20, &a.layer)) return 1; }
        else if (!strcmp(f, "--from")) { if (cli_int(f, v, 0, 1 << 20, &a.from)) return 1; }
        else if (!strcmp(f, "--to")) { if (cli_int(f, v, 0, 1 << 20, &a.to)) return 1; }
        else return cli_error("inspect: unknown flag '%s'\n%s", f, USAGE);
    }
    if (!a.model) return cli_error("inspect: -m MODEL is required\n%s", USAGE);
    if (!a.text == !a.ids) return cli_error("inspect: give the text as -p TEXT or --tokens IDS (one of them)");
    if (!a.topk && a.layer < 0 && !a.cos) return cli_error("inspect: nothing to show: give --topk-per-layer, --attention or --cos");
    if ((a.layer >= 0) != (a.from >= 0) || (a.layer >= 0) != (a.to >= 0))
        return cli_error("inspect: --attention LAYER needs --from I and --to J (and they need --attention)");
    kiln_model *m = kiln_model_open(a.model);
    if (!m) return cli_error("%s", kiln_last_error());
    int32_t *toks = kiln_xmalloc(sizeof(int32_t) * MAX_TOKENS);
    int n = a.ids ? parse_ids(a.ids, toks, MAX_TOKENS) : kiln_tokenize(m, a.text, strlen(a.text), 1, toks, MAX_TOKENS);
    int rc = 1;
    kiln_trace tr = {0};
    if (n < 0) {
        if (!a.ids) cli_error("-p: %s", kiln_last_error());
    } else if (a.layer >= kiln_model_config(m)->n_layers) {
        cli_error("--attention: layer %lld does not exist (the model has %d: 0 to %d)", a.layer,
                  kiln_model_config(m)->n_layers, kiln_model_config(m)->n_layers - 1);
    } else if (a.from >= n || a.to >= n) {
        cli_error("--%s: token %lld does not exist (the text has %d tokens: 0 to %d)", a.from >= n ? "from" : "to",
                  a.from >= n ? a.from : a.to, n, n - 1);
    } else if (a.to > a.from) {
        cli_error("--to %lld is after --from %lld: a token attends only to itself and earlier tokens", a.to, a.from);
    } else if (kiln_trace_run(m, toks, n, &tr) < 0) {
        cli_error("%s", kiln_last_error());
    } else {
        json_t *o = report(m, &a, toks, n, &tr);
        if (a.json) {
            char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
            puts(s);
            free(s);
        } else {
            print_table(o);
        }
        json_decref(o);
        rc = 0;
    }
    kiln_trace_free(&tr);
    free(toks);
    kiln_model_close(m);
    return rc;
}

KILN_COMMAND("inspect", "look inside: logit lens per layer, attention weights, layer cosine distances", cmd_inspect)
