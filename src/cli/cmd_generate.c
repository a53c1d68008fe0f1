/* kiln generate: text from a prompt with any of the decoding strategies of include/kiln.h, streamed to
 * stdout as it is produced (one sequence) or printed with scores (several). Flag names follow
 * llama.cpp and Hugging Face. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "cli/cli.h"
#include "kiln.h"

static const char *USAGE =
    "usage: kiln generate -m MODEL [-p PROMPT] [-n N] [flags]\n"
    "  -m MODEL                GGUF model file\n"
    "  -p PROMPT               text to continue (default: none, start from BOS)\n"
    "  -n N                    new tokens to generate (default 256; stops early at EOS)\n"
    "  --seed S                sampling seed (default 42)\n"
    "  --threads N             threads (default: all cores)\n"
    "sampling (HF semantics; --temp 0 is greedy search):\n"
    "  --temp T                temperature (default 0.8)\n"
    "  --top-k K               keep the K most probable tokens (default 0: off)\n"
    "  --top-p P               keep the smallest set reaching probability P (default 0.95; 1: off)\n"
    "  --min-p P               drop tokens below P times the most probable (default 0: off)\n"
    "  --typical-p P           locally typical sampling (default 1: off)\n"
    "  --min-keep N            top-k/top-p/min-p/typical-p keep at least N tokens (default 1)\n"
    "  --samplers ORDER        processor order, e.g. 'top_k;top_p;temperature' (default: HF's order:\n"
    "                          logit_bias;banned;repetition_penalty;presence_penalty;frequency_penalty;\n"
    "                          no_repeat_ngram;min_new_tokens;temperature;top_k;top_p;min_p;typical_p)\n"
    "penalties and constraints:\n"
    "  --repeat-penalty R      repetition penalty over prompt and output (default 1: off)\n"
    "  --presence-penalty A    OpenAI presence penalty, -2 to 2 (default 0)\n"
    "  --frequency-penalty A   OpenAI frequency penalty, -2 to 2 (default 0)\n"
    "  --no-repeat-ngram N     never repeat an N-gram (default 0: off)\n"
    "  --logit-bias ID+B       add B to token ID's logit (ID-B subtracts; ID-inf bans); repeatable\n"
    "  --ban ID                never generate token ID; repeatable\n"
    "  --min-new-tokens N      no EOS before N new tokens (default 0)\n"
    "beam search (no warpers: temperature, top-k/p, min-p, typical-p do not apply):\n"
    "  --beams N               beam search with N beams (default 1)\n"
    "  --length-penalty A      score = sum log p / length^A (default 1)\n"
    "  --early-stopping [E]    true (alone: true), false (heuristic, default) or never\n"
    "  --beam-groups G         diverse beam search with G groups\n"
    "  --diversity-penalty D   Hamming diversity penalty between groups (default 0)\n"
    "  --stochastic-beams      stochastic beam search: N samples without replacement (Gumbel-top-k)\n"
    "  --num-return N          sequences to return (beams, or samples); each printed with its score\n"
    "speculative decoding:\n"
    "  --draft MODEL           draft model with the same vocabulary\n"
    "  --draft-n K             tokens drafted per round (default 4)\n"
    "  --spec-mode M           rejection (default with --draft), exact, or ngram (prompt lookup)\n"
    "  --ngram-max N           longest n-gram prompt lookup matches (default 3)\n"
    "stopping:\n"
    "  --stop STR              end the text before STR; repeatable\n"
    "  --max-time S            stop after S seconds of decoding\n";

enum { MAX_LIST = 64 };

typedef struct {
    kiln_gen_params p;
    const char *model, *prompt, *draft, *spec_mode;
    long long n_new, threads;
    double temp;
    int explicit_temp, explicit_top_p, stochastic;
    const char *stop[MAX_LIST];
    kiln_logit_bias bias[MAX_LIST];
    int32_t ban[MAX_LIST];
} gen_args;

/* llama.cpp's --logit-bias format: ID followed by +B or -B (B a number or inf). */
static int parse_bias(const char *v, kiln_logit_bias *out) {
    char *end;
    long id = strtol(v, &end, 10);
    if (end == v || (*end != '+' && *end != '-') || id < 0 || id > INT32_MAX)
        return cli_error("--logit-bias: '%s' is not TOKEN+BIAS or TOKEN-BIAS (e.g. 15043+1, 2-inf)", v), -1;
    char *bend;
    double b = strtod(end, &bend);
    if (*bend || isnan(b) || b == INFINITY)
        return cli_error("--logit-bias: '%s': the bias must be a number or -inf", v), -1;
    *out = (kiln_logit_bias){(int32_t)id, (float)b};
    return 0;
}

static int parse_early_stopping(const char *v, kiln_early_stopping *out) {
    if (!strcmp(v, "true")) *out = KILN_EARLY_STOP_TRUE;
    else if (!strcmp(v, "false")) *out = KILN_EARLY_STOP_HEURISTIC;
    else if (!strcmp(v, "never")) *out = KILN_EARLY_STOP_NEVER;
    else return cli_error("--early-stopping: '%s' must be true, false or never", v), -1;
    return 0;
}

static int set_float(const char *flag, const char *v, double lo, double hi, float *out) {
    double d;
    if (cli_float(flag, v, lo, hi, &d)) return -1;
    *out = (float)d;
    return 0;
}

static int set_int(const char *flag, const char *v, long long lo, long long hi, int *out) {
    long long n;
    if (cli_int(flag, v, lo, hi, &n)) return -1;
    *out = (int)n;
    return 0;
}

/* One flag with its value V; 1 when A is not a flag of this command, -1 on a bad value. */
static int parse_flag(gen_args *g, const char *a, const char *v) {
    kiln_gen_params *p = &g->p;
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) g->model = v;
    else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) g->prompt = v;
    else if (!strcmp(a, "-n")) return cli_int("-n", v, 1, 1 << 24, &g->n_new);
    else if (!strcmp(a, "--seed")) return cli_int("--seed", v, 0, INT64_MAX, (long long *)&p->seed);
    else if (!strcmp(a, "--threads")) return cli_int("--threads", v, 1, 1024, &g->threads);
    else if (!strcmp(a, "--temp")) return g->explicit_temp = 1, cli_float("--temp", v, 0, 100, &g->temp);
    else if (!strcmp(a, "--top-k")) return set_int("--top-k", v, 0, 1 << 30, &p->top_k);
    else if (!strcmp(a, "--top-p")) return g->explicit_top_p = 1, set_float("--top-p", v, 1e-9, 1, &p->top_p);
    else if (!strcmp(a, "--min-p")) return set_float("--min-p", v, 0, 1, &p->min_p);
    else if (!strcmp(a, "--typical-p")) return set_float("--typical-p", v, 1e-9, 1, &p->typical_p);
    else if (!strcmp(a, "--min-keep")) return set_int("--min-keep", v, 1, 1 << 30, &p->min_tokens_to_keep);
    else if (!strcmp(a, "--samplers")) p->samplers = v;
    else if (!strcmp(a, "--repeat-penalty")) return set_float("--repeat-penalty", v, 1e-6, 1e6, &p->repetition_penalty);
    else if (!strcmp(a, "--presence-penalty")) return set_float("--presence-penalty", v, -2, 2, &p->presence_penalty);
    else if (!strcmp(a, "--frequency-penalty")) return set_float("--frequency-penalty", v, -2, 2, &p->frequency_penalty);
    else if (!strcmp(a, "--no-repeat-ngram")) return set_int("--no-repeat-ngram", v, 0, 1 << 20, &p->no_repeat_ngram);
    else if (!strcmp(a, "--min-new-tokens")) return set_int("--min-new-tokens", v, 0, 1 << 24, &p->min_new_tokens);
    else if (!strcmp(a, "--logit-bias") || !strcmp(a, "--ban") || !strcmp(a, "--stop")) {
        int *n = !strcmp(a, "--logit-bias") ? &p->n_logit_bias : !strcmp(a, "--ban") ? &p->n_banned_tokens : &p->n_stop_strings;
        if (*n == MAX_LIST) return cli_error("%s: at most %d of them", a, MAX_LIST), -1;
        if (!strcmp(a, "--logit-bias")) return parse_bias(v, &g->bias[(*n)++]);
        if (!strcmp(a, "--stop")) {
            if (!*v) return cli_error("--stop: the stop string is empty"), -1;
            g->stop[(*n)++] = v;
            return 0;
        }
        long long id;
        if (cli_int("--ban", v, 0, INT32_MAX, &id)) return -1;
        g->ban[(*n)++] = (int32_t)id;
    } else if (!strcmp(a, "--beams")) return set_int("--beams", v, 1, 4096, &p->num_beams);
    else if (!strcmp(a, "--length-penalty")) return set_float("--length-penalty", v, -100, 100, &p->length_penalty);
    else if (!strcmp(a, "--early-stopping")) return parse_early_stopping(v, &p->early_stopping);
    else if (!strcmp(a, "--beam-groups")) return set_int("--beam-groups", v, 1, 4096, &p->num_beam_groups);
    else if (!strcmp(a, "--diversity-penalty")) return set_float("--diversity-penalty", v, 0, 1e6, &p->diversity_penalty);
    else if (!strcmp(a, "--num-return")) return set_int("--num-return", v, 1, 4096, &p->num_return);
    else if (!strcmp(a, "--draft")) g->draft = v;
    else if (!strcmp(a, "--draft-n")) return set_int("--draft-n", v, 1, 64, &p->draft_n);
    else if (!strcmp(a, "--spec-mode")) g->spec_mode = v;
    else if (!strcmp(a, "--ngram-max")) return set_int("--ngram-max", v, 1, 16, &p->ngram_max);
    else if (!strcmp(a, "--max-time")) {
        double t;
        if (cli_float("--max-time", v, 0, 1e9, &t)) return -1;
        p->max_time = t;
    } else return 1;
    return 0;
}

/* The search and speculation the flags ask for; the CLI's sampling defaults apply to sampling only,
 * and with --samplers only to the processors it names. */
static int settle_params(gen_args *g) {
    kiln_gen_params *p = &g->p;
    p->max_new_tokens = (int)g->n_new;
    p->logit_bias = g->bias, p->banned_tokens = g->ban, p->stop_strings = g->stop;
    int sampling = g->temp > 0;
    if (g->stochastic) p->search = KILN_SEARCH_STOCHASTIC_BEAM;
    else if (p->num_beams > 1 || p->num_beam_groups > 1) p->search = KILN_SEARCH_BEAM;
    else p->search = sampling ? KILN_SEARCH_SAMPLE : KILN_SEARCH_GREEDY;
    if (g->stochastic && !sampling) return cli_error("generate: --stochastic-beams samples: --temp must be > 0");
    if (p->search == KILN_SEARCH_STOCHASTIC_BEAM || p->search == KILN_SEARCH_SAMPLE) p->temperature = (float)g->temp;
    if (!g->explicit_top_p && p->search == KILN_SEARCH_SAMPLE) p->top_p = 0.95f;
    if (p->samplers) {
        if (!g->explicit_temp && !strstr(p->samplers, "temperature")) p->temperature = 1;
        if (!g->explicit_top_p && !strstr(p->samplers, "top_p")) p->top_p = 1;
    }
    if (g->spec_mode) {
        if (!strcmp(g->spec_mode, "rejection")) p->spec = KILN_SPEC_REJECTION;
        else if (!strcmp(g->spec_mode, "exact")) p->spec = KILN_SPEC_EXACT;
        else if (!strcmp(g->spec_mode, "ngram")) p->spec = KILN_SPEC_NGRAM;
        else return cli_error("--spec-mode: '%s' must be rejection, exact or ngram", g->spec_mode);
        if (p->spec != KILN_SPEC_NGRAM && !g->draft)
            return cli_error("--spec-mode %s needs a draft model (--draft MODEL)", g->spec_mode);
    } else if (g->draft) {
        p->spec = KILN_SPEC_REJECTION;
    }
    if (g->draft && p->spec == KILN_SPEC_NGRAM) return cli_error("--spec-mode ngram drafts without a model: drop --draft");
    return 0;
}

static int stream_out(void *user, const char *text, size_t len) {
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static const char *stop_name(kiln_stop_reason r) {
    static const char *names[] = {"length", "eos", "stop string", "time", "callback", "context full"};
    return names[r];
}

static void print_result(const gen_args *g, const kiln_gen_result *res, int streamed) {
    if (streamed) return;
    if (res->n_seqs == 1) {
        printf("%s%s", g->prompt, res->seqs[0].text);
        return;
    }
    for (int i = 0; i < res->n_seqs; i++) {
        const kiln_gen_sequence *s = &res->seqs[i];
        printf("%s[%d] score %.4f, log-prob %.4f, %d tokens, %s\n%s%s\n", i ? "\n" : "", i + 1, s->score, s->logprob,
               s->n_tokens, stop_name(s->stop), g->prompt, s->text);
    }
}

static int run(gen_args *g) {
    kiln_gen_params *p = &g->p;
    double t0 = kiln_now();
    kiln_model *m = kiln_model_open(g->model), *dm = NULL;
    if (!m) return cli_error("%s", kiln_last_error());
    const kiln_config *cfg = kiln_model_config(m);
    kiln_ctx *c = NULL, *dc = NULL;
    int rc = 1, max_prompt = cfg->ctx_len + 1;
    int32_t *toks = malloc(sizeof(int32_t) * max_prompt);
    int n_prompt = kiln_tokenize(m, g->prompt, strlen(g->prompt), 1, toks, max_prompt);
    if (n_prompt < 0 && !strstr(kiln_last_error(), "more than")) {
        cli_error("generate: %s", kiln_last_error());
        goto done;
    }
    if (n_prompt < 0 || n_prompt > cfg->ctx_len) {
        cli_error("generate: -p: the prompt is longer than the model's context of %d tokens", cfg->ctx_len);
        goto done;
    }
    if (n_prompt == 0) {
        cli_error("generate: empty prompt and no BOS token");
        goto done;
    }
    if (g->draft) {
        if (!(dm = kiln_model_open(g->draft))) {
            cli_error("--draft: %s", kiln_last_error());
            goto done;
        }
        dc = kiln_ctx_new(dm, 0);
        p->draft = dc;
    }
    c = kiln_ctx_new(m, 0);
    int streamed = (p->search == KILN_SEARCH_GREEDY || p->search == KILN_SEARCH_SAMPLE) && p->num_return == 1;
    if (streamed) {
        p->on_text = stream_out;
        fputs(g->prompt, stdout);
        fflush(stdout);
    }
    kiln_gen_result res;
    double t1 = kiln_now();
    if (kiln_generate(c, toks, n_prompt, p, &res) < 0) {
        if (streamed) fputc('\n', stdout);
        cli_error("generate: %s", kiln_last_error());
        goto done;
    }
    print_result(g, &res, streamed);
    int n_out = 0;
    for (int i = 0; i < res.n_seqs; i++) n_out += res.seqs[i].n_tokens;
    fprintf(stderr, "\n[kiln] prompt %d tokens, prefill %.1f tok/s, decode %.1f tok/s (%d tokens, %d forward passes), "
                    "first token %.1f ms, %d threads\n",
            n_prompt, n_prompt / res.prefill_s, res.decode_s > 0 ? n_out / res.decode_s : 0.0, n_out, res.n_forward,
            (t1 - t0 + res.prefill_s) * 1e3, kiln_get_threads());
    if (p->spec != KILN_SPEC_OFF)
        fprintf(stderr, "[kiln] speculative: %d drafted, %d accepted (%.1f%%), %.2f tokens per target pass\n",
                res.n_drafted, res.n_accepted, res.n_drafted ? 100.0 * res.n_accepted / res.n_drafted : 0.0,
                res.n_forward ? (double)n_out / res.n_forward : 0.0);
    kiln_gen_result_free(&res);
    rc = 0;
done:
    kiln_ctx_free(c);
    kiln_ctx_free(dc);
    kiln_model_close(m);
    kiln_model_close(dm);
    free(toks);
    return rc;
}

static int generate(int argc, char **argv) {
    gen_args g = {.prompt = "", .n_new = 256, .temp = 0.8};
    kiln_gen_defaults(&g.p);
    g.p.seed = 42;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (!strcmp(a, "--stochastic-beams")) {
            g.stochastic = 1;
            continue;
        }
        if (!strcmp(a, "--early-stopping") && (i + 1 == argc || argv[i + 1][0] == '-')) { /* bare: true */
            g.p.early_stopping = KILN_EARLY_STOP_TRUE;
            continue;
        }
        if (!(v = cli_value(argc, argv, &i))) return 1;
        int r = parse_flag(&g, a, v);
        if (r < 0) return 1;
        if (r > 0) return cli_error("generate: unknown flag '%s' (see kiln generate --help)", a);
    }
    if (!g.model) return cli_error("generate: -m MODEL is required (see kiln generate --help)");
    if (settle_params(&g)) return 1;
    if (g.threads) kiln_set_threads((int)g.threads);
    return run(&g);
}

KILN_COMMAND("generate", "generate text with any decoding strategy", generate)
