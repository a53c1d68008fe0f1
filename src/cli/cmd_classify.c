/* kiln classify: zero-shot classification by likelihood. Each row's text goes into the template; the
 * score of a label is the log-probability of the template's continuation from {label} on (the label
 * and what follows it) given what precedes it; a softmax over the labels gives the prediction. --can
 * re-estimates the uncertain predictions with Classification with Alternating Normalization
 * (src/api/can.h) toward a class prior (--prior, default uniform). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/can.h"
#include "base/error.h"
#include "base/file.h"
#include "cli/cli.h"
#include "kiln.h"

static const char *USAGE =
    "usage: kiln classify -m MODEL --labels A,B,C --in IN.jsonl [--out OUT.jsonl] [--template T] [--can]\n"
    "                     [--prior FILE] [--can-top-k K] [--can-threshold H] [--can-alpha A] [--can-iters N]\n"
    "  --in FILE          one {\"id\": ..., \"text\": ..., optional \"label\": the true one} per line\n"
    "  --template T       where {text} and {label} go (default \"{text}\\nLabel: {label}\")\n"
    "  --can              CAN post-processing of the uncertain predictions (Jia, Su et al. 2021)\n"
    "  --prior FILE       class prior for CAN: one number per label, in order (default uniform)\n"
    "  --can-top-k K      uncertainty = entropy of the top K probabilities / log K (default 3, at most the labels)\n"
    "  --can-threshold H  predictions with uncertainty >= H are re-estimated (default 0.9)\n"
    "  --can-alpha A      exponent of the alternating normalisation (default 1)\n"
    "  --can-iters N      rounds of it (default 1)\n"
    "Each answer: {\"id\", \"label\", \"probs\": {label: p}, \"can\": adjusted or not}. With true labels,\n"
    "the accuracy (before and after CAN) goes to stderr.\n";

enum { MAX_LABELS = 256, MAX_TOKENS = 4096 };

/* log softmax(LOGITS)[T] over N values. */
static double log_prob(const float *x, int n, int t) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return x[t] - mx - log(sum);
}

/* The log-probability of FULL's tokens from the first one where FULL and the prefix's tokens PRE part
 * (a token may straddle the boundary between the text and the label), given the tokens before it. */
static int score(kiln_ctx *c, const int32_t *pre, int n_pre, const int32_t *full, int n_full, double *out) {
    int V = kiln_model_config(kiln_ctx_model(c))->n_vocab, l = 0;
    while (l < n_pre && l < n_full && pre[l] == full[l]) l++;
    if (l == 0 || l >= n_full) return kiln_fail("the label adds no tokens to the template's text");
    if (kiln_ctx_truncate(c, 0) < 0 || (l > 1 && kiln_eval(c, full, l - 1, NULL) < 0)) return -1;
    float *all = kiln_xmalloc(sizeof(float) * (size_t)(n_full - l + 1) * V);
    int rc = kiln_eval(c, full + l - 1, n_full - l + 1, all);
    double lp = 0;
    for (int i = l; rc == 0 && i < n_full; i++) lp += log_prob(all + (size_t)(i - l) * V, V, full[i]);
    free(all);
    *out = lp;
    return rc;
}

static char *fill(const char *tmpl, const char *text, const char *label) {
    size_t cap = strlen(tmpl) + strlen(text) + (label ? strlen(label) : 0) + 1, n = 0;
    char *s = kiln_xmalloc(cap);
    for (const char *p = tmpl; *p;) {
        if (!strncmp(p, "{text}", 6)) n += (size_t)sprintf(s + n, "%s", text), p += 6;
        else if (!strncmp(p, "{label}", 7)) {
            if (!label) break;
            n += (size_t)sprintf(s + n, "%s", label), p += 7;
        } else s[n++] = *p++;
    }
    s[n] = 0;
    return s;
}

static int read_prior(const char *path, int m, double *prior) {
    size_t size;
    char *text = kiln_read_file(path, &size);
    if (!text) return cli_error("--prior: %s", kiln_last_error()), -1;
    char *p = text, *end;
    double sum = 0;
    for (int i = 0; i < m; i++) {
        prior[i] = strtod(p, &end);
        if (end == p || !(prior[i] > 0)) {
            free(text);
            return cli_error("--prior: %s: value %d is missing or not positive (one number per label)", path, i + 1), -1;
        }
        sum += prior[i];
        p = end;
    }
    free(text);
    for (int i = 0; i < m; i++) prior[i] /= sum;
    return 0;
}

static int cmd_classify(int argc, char **argv) {
    const char *model = NULL, *labels_arg = NULL, *in = NULL, *out_path = NULL, *prior_path = NULL;
    const char *tmpl = "{text}\nLabel: {label}";
    int use_can = 0;
    kiln_can_params cp = {3, 0.9, 1, 1};
    long long v;
    double d;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (!strcmp(a, "--can")) { use_can = 1; continue; }
        if (!(val = cli_value(argc, argv, &i))) return 1;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = val;
        else if (!strcmp(a, "--labels")) labels_arg = val;
        else if (!strcmp(a, "--in")) in = val;
        else if (!strcmp(a, "--out")) out_path = val;
        else if (!strcmp(a, "--template")) tmpl = val;
        else if (!strcmp(a, "--prior")) prior_path = val;
        else if (!strcmp(a, "--can-top-k")) { if (cli_int(a, val, 2, MAX_LABELS, &v)) return 1; cp.top_k = (int)v; }
        else if (!strcmp(a, "--can-threshold")) { if (cli_float(a, val, 0, 1, &cp.threshold)) return 1; }
        else if (!strcmp(a, "--can-alpha")) { if (cli_float(a, val, 1e-6, 1e6, &d)) return 1; cp.alpha = d; }
        else if (!strcmp(a, "--can-iters")) { if (cli_int(a, val, 1, 1000, &v)) return 1; cp.iters = (int)v; }
        else return cli_error("classify: unknown flag '%s'\n%s", a, USAGE);
    }
    if (!model || !labels_arg || !in) return cli_error("classify: -m MODEL, --labels and --in are required\n%s", USAGE);
    if (!strstr(tmpl, "{text}") || !strstr(tmpl, "{label}") || strstr(tmpl, "{label}") < strstr(tmpl, "{text}"))
        return cli_error("--template: '%s' must hold {text} and then {label}", tmpl);
    char *labels_buf = kiln_xstrdup(labels_arg), *labels[MAX_LABELS];
    int m = 0;
    for (char *t = strtok(labels_buf, ","); t; t = strtok(NULL, ",")) {
        if (m == MAX_LABELS) return cli_error("--labels: more than %d labels", MAX_LABELS);
        labels[m++] = t;
    }
    if (m < 2) return cli_error("--labels: '%s' must name at least two labels, separated by commas", labels_arg);
    if (cp.top_k > m) cp.top_k = m;
    double prior[MAX_LABELS];
    for (int j = 0; j < m; j++) prior[j] = 1.0 / m;
    if (prior_path && read_prior(prior_path, m, prior) < 0) return 1;
    kiln_model *mod = kiln_model_open(model);
    if (!mod) return cli_error("%s", kiln_last_error());
    size_t size;
    char *text = kiln_read_file(in, &size);
    if (!text) return cli_error("--in: %s", kiln_last_error());
    int n = 0, cap = 64, rc = 0;
    json_t **rows = kiln_xmalloc(sizeof(json_t *) * cap);
    double *probs = kiln_xmalloc(sizeof(double) * cap * m);
    kiln_ctx *c = kiln_ctx_new(mod, 0);
    int32_t *pre = kiln_xmalloc(sizeof(int32_t) * MAX_TOKENS), *full = kiln_xmalloc(sizeof(int32_t) * MAX_TOKENS);
    for (char *line = strtok(text, "\n"); line && !rc; line = strtok(NULL, "\n")) {
        if (strspn(line, " \t\r") == strlen(line)) continue;
        json_t *row = json_loads(line, 0, NULL);
        const char *t = json_string_value(json_object_get(row, "text"));
        if (!t) {
            rc = cli_error("--in: %s: row %d has no string \"text\"", in, n + 1);
            json_decref(row);
            break;
        }
        if (n == cap) {
            rows = kiln_xrealloc(rows, sizeof(json_t *) * (cap *= 2));
            probs = kiln_xrealloc(probs, sizeof(double) * cap * m);
        }
        rows[n] = row;
        char *ptext = fill(tmpl, t, NULL);
        int n_pre = kiln_tokenize(mod, ptext, strlen(ptext), 1, pre, MAX_TOKENS);
        free(ptext);
        double *p = probs + (size_t)n * m, mx = -INFINITY, sum = 0;
        for (int j = 0; j < m && !rc; j++) {
            char *ftext = fill(tmpl, t, labels[j]);
            int n_full = kiln_tokenize(mod, ftext, strlen(ftext), 1, full, MAX_TOKENS);
            free(ftext);
            if (n_pre < 0 || n_full < 0 || score(c, pre, n_pre, full, n_full, &p[j]) < 0)
                rc = cli_error("--in: %s: row %d, label '%s': %s", in, n + 1, labels[j], kiln_last_error());
            mx = p[j] > mx ? p[j] : mx;
        }
        for (int j = 0; j < m; j++) sum += exp(p[j] - mx);
        for (int j = 0; j < m; j++) p[j] = exp(p[j] - mx) / sum;
        n++;
    }
    uint8_t *adjusted = kiln_xcalloc(n ? n : 1, 1);
    double *before = kiln_xmalloc(sizeof(double) * (n ? n : 1) * m);
    memcpy(before, probs, sizeof(double) * n * m);
    if (!rc && use_can && kiln_can(probs, n, m, prior, &cp, adjusted) < 0) rc = cli_error("--can: %s", kiln_last_error());
    FILE *f = out_path ? fopen(out_path, "w") : stdout;
    if (!rc && !f) rc = cli_error("--out: %s: cannot write", out_path);
    int gold = 0, right0 = 0, right1 = 0;
    for (int i = 0; i < n && !rc; i++) {
        const double *p = probs + (size_t)i * m, *p0 = before + (size_t)i * m;
        int best = 0, best0 = 0;
        json_t *pj = json_object();
        for (int j = 0; j < m; j++) {
            if (p[j] > p[best]) best = j;
            if (p0[j] > p0[best0]) best0 = j;
            json_object_set_new(pj, labels[j], json_real(p[j]));
        }
        json_t *id = json_object_get(rows[i], "id");
        json_t *o = json_pack("{s:O, s:s, s:o, s:b}", "id", id ? id : json_integer(i), "label", labels[best], "probs", pj,
                              "can", adjusted[i]);
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(8));
        fprintf(f, "%s\n", s);
        free(s);
        json_decref(o);
        const char *truth = json_string_value(json_object_get(rows[i], "label"));
        if (truth) gold++, right0 += !strcmp(truth, labels[best0]), right1 += !strcmp(truth, labels[best]);
    }
    if (f && f != stdout && fclose(f) != 0 && !rc) rc = cli_error("--out: %s: write failed", out_path);
    if (!rc && gold) {
        fprintf(stderr, "kiln classify: accuracy %.4f (%d of %d)", (double)right0 / gold, right0, gold);
        if (use_can) fprintf(stderr, ", after CAN %.4f (%d of %d)", (double)right1 / gold, right1, gold);
        fputc('\n', stderr);
    }
    for (int i = 0; i < n; i++) json_decref(rows[i]);
    free(rows), free(probs), free(before), free(adjusted), free(pre), free(full), free(text), free(labels_buf);
    kiln_ctx_free(c);
    kiln_model_close(mod);
    return rc;
}

KILN_COMMAND("classify", "zero-shot classification by label likelihood, with CAN post-processing", cmd_classify)
