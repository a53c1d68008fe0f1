/* kiln_generate: checks the parameters, runs the prompt, hands over to the search they name, and puts
 * the context back where it was. The searches live in search_*.c; this file also holds what they share
 * (stop tokens, time limit, text pieces, seeded uniforms, the result). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "decode/search.h"
#include "decode/speculative.h"

/* The searches, by kiln_search. Adding one: its file, a kiln_search value, and a line here. */
static const struct {
    const char *name;
    decode_search_fn run;
} searches[] = {
    [KILN_SEARCH_GREEDY] = {"greedy", search_single},
    [KILN_SEARCH_SAMPLE] = {"sample", search_single},
    [KILN_SEARCH_BEAM] = {"beam", search_beam},
    [KILN_SEARCH_STOCHASTIC_BEAM] = {"stochastic beam", search_stochastic},
};
enum { N_SEARCHES = sizeof searches / sizeof searches[0] };

void kiln_gen_defaults(kiln_gen_params *p) {
    memset(p, 0, sizeof *p);
    p->search = KILN_SEARCH_GREEDY;
    p->max_new_tokens = 256;
    p->temperature = 1, p->top_p = 1, p->typical_p = 1, p->min_tokens_to_keep = 1, p->repetition_penalty = 1;
    p->num_beams = 1, p->length_penalty = 1, p->early_stopping = KILN_EARLY_STOP_HEURISTIC;
    p->num_beam_groups = 1, p->num_return = 1;
    p->draft_n = 4, p->ngram_max = 3;
}

static int sampling(const kiln_gen_params *p) {
    return p->search == KILN_SEARCH_SAMPLE || p->search == KILN_SEARCH_STOCHASTIC_BEAM;
}

static int check_stopping(const kiln_gen_params *p, int n_vocab) {
    if (p->max_new_tokens < 1) return kiln_fail("max_new_tokens %d must be >= 1", p->max_new_tokens);
    if (!(p->max_time >= 0) || !isfinite(p->max_time)) return kiln_fail("max_time %g must be >= 0 seconds", p->max_time);
    if (p->n_stop_tokens < 0 || (p->n_stop_tokens > 0 && !p->stop_tokens))
        return kiln_fail("stop tokens: %d entries but no array", p->n_stop_tokens);
    for (int i = 0; i < p->n_stop_tokens; i++)
        if (p->stop_tokens[i] < 0 || p->stop_tokens[i] >= n_vocab)
            return kiln_fail("stop token %d is outside the vocabulary (0 to %d)", p->stop_tokens[i], n_vocab - 1);
    if (p->n_stop_strings < 0 || (p->n_stop_strings > 0 && !p->stop_strings))
        return kiln_fail("stop strings: %d entries but no array", p->n_stop_strings);
    for (int i = 0; i < p->n_stop_strings; i++)
        if (!p->stop_strings[i] || !p->stop_strings[i][0]) return kiln_fail("stop string %d is empty", i + 1);
    return 0;
}

static int check_beams(const kiln_gen_params *p) {
    int beams = p->search == KILN_SEARCH_BEAM || p->search == KILN_SEARCH_STOCHASTIC_BEAM;
    if (p->num_beams < 1 || p->num_beams > 4096) return kiln_fail("num_beams %d must be in 1 to 4096", p->num_beams);
    if (!isfinite(p->length_penalty)) return kiln_fail("length_penalty %g must be finite", p->length_penalty);
    if (p->early_stopping < KILN_EARLY_STOP_HEURISTIC || p->early_stopping > KILN_EARLY_STOP_NEVER)
        return kiln_fail("early_stopping %d must be heuristic (0), true (1) or never (2)", (int)p->early_stopping);
    if (p->num_beam_groups < 1 || p->num_beams % p->num_beam_groups != 0)
        return kiln_fail("num_beam_groups %d must divide num_beams %d", p->num_beam_groups, p->num_beams);
    if (p->num_beam_groups > 1 && p->search != KILN_SEARCH_BEAM)
        return kiln_fail("num_beam_groups %d needs beam search", p->num_beam_groups);
    if (!(p->diversity_penalty >= 0) || !isfinite(p->diversity_penalty))
        return kiln_fail("diversity_penalty %g must be >= 0", p->diversity_penalty);
    if (p->num_return < 1) return kiln_fail("num_return %d must be >= 1", p->num_return);
    if (beams && p->num_return > p->num_beams)
        return kiln_fail("num_return %d must not exceed num_beams %d", p->num_return, p->num_beams);
    if (p->search == KILN_SEARCH_GREEDY && p->num_return > 1)
        return kiln_fail("num_return %d: greedy search gives one sequence (sample, or use beams)", p->num_return);
    return 0;
}

static int check_spec(const kiln_gen_params *p) {
    if (p->spec < KILN_SPEC_OFF || p->spec > KILN_SPEC_NGRAM)
        return kiln_fail("spec %d must be off (0), rejection (1), exact (2) or ngram (3)", (int)p->spec);
    if (p->spec == KILN_SPEC_OFF) return 0;
    if (p->search != KILN_SEARCH_GREEDY && p->search != KILN_SEARCH_SAMPLE)
        return kiln_fail("speculative decoding works with greedy search and sampling, not %s", searches[p->search].name);
    if (p->num_return != 1) return kiln_fail("speculative decoding gives one sequence, not num_return %d", p->num_return);
    if (p->spec != KILN_SPEC_NGRAM && !p->draft) return kiln_fail("speculative decoding needs a draft model context");
    if (p->draft_n < 1 || p->draft_n > 64) return kiln_fail("draft_n %d must be in 1 to 64", p->draft_n);
    if (p->ngram_max < 1 || p->ngram_max > 16) return kiln_fail("ngram_max %d must be in 1 to 16", p->ngram_max);
    return 0;
}

int kiln_gen_check(const kiln_gen_params *p, int n_vocab) {
    if ((int)p->search < 0 || (int)p->search >= N_SEARCHES)
        return kiln_fail("search %d must be greedy (0), sample (1), beam (2) or stochastic beam (3)", (int)p->search);
    if (sampling(p) && !(p->temperature > 0))
        return kiln_fail("temperature %g must be > 0 when sampling (greedy search takes the most probable token)",
                         p->temperature);
    if (check_stopping(p, n_vocab) < 0 || decode_processors_check(p, n_vocab) < 0 || check_beams(p) < 0 ||
        check_spec(p) < 0)
        return -1;
    return 0;
}

int run_is_stop_token(const decode_run *r, int32_t t) {
    for (int i = 0; i < r->n_stop_tokens; i++)
        if (r->stop_tokens[i] == t) return 1;
    return 0;
}

int run_timed_out(const decode_run *r) { return r->p->max_time > 0 && kiln_now() - r->t_start >= r->p->max_time; }

decode_history run_history(const decode_run *r, const int32_t *tokens, int n) {
    return (decode_history){tokens, n, r->n_prompt, r->stop_tokens, r->n_stop_tokens};
}

const char *run_piece(const decode_run *r, int32_t prev, int32_t t, size_t *len) {
    return kiln_token_text(r->m, prev, t, len);
}

double run_uniform(const decode_run *r, uint64_t a, uint64_t b) {
    return (double)(kiln_hash3(r->p->seed, a, b) >> 11) * (1.0 / 9007199254740992.0);
}

void run_text_init(const decode_run *r, decode_text *t, int stream) {
    text_init(t, r->p->stop_strings, r->p->n_stop_strings, stream ? r->p->on_text : NULL, r->p->user);
}

void run_add(decode_run *r, const int32_t *tokens, int n, double logprob, double score, kiln_stop_reason why,
             const decode_text *text) {
    kiln_gen_result *o = r->out;
    o->seqs = kiln_xrealloc(o->seqs, sizeof *o->seqs * (o->n_seqs + 1));
    kiln_gen_sequence *s = &o->seqs[o->n_seqs++];
    s->tokens = kiln_xmalloc(sizeof(int32_t) * (n ? n : 1));
    memcpy(s->tokens, tokens, sizeof(int32_t) * n);
    s->n_tokens = n;
    s->text_len = text_length(text);
    s->text = kiln_xmalloc(s->text_len + 1);
    memcpy(s->text, text->buf, s->text_len);
    s->text[s->text_len] = 0;
    s->logprob = logprob, s->score = score, s->stop = why;
}

void kiln_gen_result_free(kiln_gen_result *r) {
    for (int i = 0; i < r->n_seqs; i++) {
        free(r->seqs[i].tokens);
        free(r->seqs[i].text);
    }
    free(r->seqs);
    memset(r, 0, sizeof *r);
}

/* Evaluates the prompt in C, failing with a message that says which model. */
static int prefill(kiln_ctx *c, const int32_t *prompt, int n, const char *which) {
    if (kiln_eval(c, prompt, n, NULL) < 0) return kiln_fail("%s: %s", which, kiln_last_error());
    return 0;
}

int decode_generate(kiln_ctx *c, const int32_t *prompt, int n_prompt, const kiln_gen_params *p,
                    const spec_verifier *v, kiln_gen_result *out) {
    memset(out, 0, sizeof *out);
    const kiln_model *m = kiln_ctx_model(c);
    int n_vocab = kiln_model_config(m)->n_vocab;
    if (kiln_gen_check(p, n_vocab) < 0) return -1;
    if (n_prompt < 1 || !prompt) return kiln_fail("the prompt is empty: generation needs at least one token");
    kiln_ctx *draft = p->spec == KILN_SPEC_REJECTION || p->spec == KILN_SPEC_EXACT ? p->draft : NULL;
    if (draft && kiln_model_config(kiln_ctx_model(draft))->n_vocab != n_vocab)
        return kiln_fail("the draft model has %d tokens but the target %d: they must share the vocabulary",
                         kiln_model_config(kiln_ctx_model(draft))->n_vocab, n_vocab);
    int32_t own_stop[2];
    decode_run r = {c, m, p, prompt, n_prompt, n_vocab, 0, KILN_STOP_LENGTH, p->stop_tokens, p->n_stop_tokens,
                    0, v ? v : spec_verifier_for(p->spec), out};
    if (!p->stop_tokens) {
        int eos = kiln_token_eos(m), bos = kiln_token_bos(m), n = 0;
        if (eos >= 0) own_stop[n++] = eos;
        if (bos >= 0 && bos != eos) own_stop[n++] = bos;
        r.stop_tokens = own_stop, r.n_stop_tokens = n;
    }
    int start = kiln_ctx_pos(c), room = kiln_ctx_size(c) - start - n_prompt + 1; /* the last token is not evaluated */
    r.max_new = p->max_new_tokens < room ? p->max_new_tokens : room;
    r.at_max = p->max_new_tokens <= room ? KILN_STOP_LENGTH : KILN_STOP_CONTEXT;
    double t0 = kiln_now();
    if (prefill(c, prompt, n_prompt, "prompt") < 0) return -1;
    int draft_start = draft ? kiln_ctx_pos(draft) : 0;
    if (draft && prefill(draft, prompt, n_prompt, "draft prompt") < 0) {
        kiln_ctx_truncate(c, start);
        return -1;
    }
    r.t_start = kiln_now();
    out->prefill_s = r.t_start - t0;
    int rc = p->spec != KILN_SPEC_OFF ? search_speculative(&r) : searches[p->search].run(&r);
    out->decode_s = kiln_now() - r.t_start;
    kiln_ctx_truncate(c, start);
    if (draft) kiln_ctx_truncate(draft, draft_start);
    if (rc < 0) kiln_gen_result_free(out);
    return rc;
}

int kiln_generate(kiln_ctx *c, const int32_t *prompt, int n_prompt, const kiln_gen_params *p, kiln_gen_result *out) {
    return decode_generate(c, prompt, n_prompt, p, NULL, out);
}

int kiln_process_logits(const kiln_gen_params *p, int sampling_on, const int32_t *tokens, int n_tokens, int n_prompt,
                        float *logits, int n_vocab) {
    if (n_vocab < 1) return kiln_fail("vocabulary of %d tokens", n_vocab);
    if (decode_processors_check(p, n_vocab) < 0) return -1;
    if (n_tokens < 0 || n_prompt < 0 || n_prompt > n_tokens)
        return kiln_fail("%d tokens with a prompt of %d", n_tokens, n_prompt);
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return kiln_fail("token %d at index %d is outside the vocabulary (0 to %d)", tokens[i], i, n_vocab - 1);
    for (int i = 0; i < p->n_stop_tokens; i++)
        if (p->stop_tokens[i] < 0 || p->stop_tokens[i] >= n_vocab)
            return kiln_fail("stop token %d is outside the vocabulary (0 to %d)", p->stop_tokens[i], n_vocab - 1);
    decode_chain ch;
    decode_chain_init(&ch, p, n_vocab, sampling_on);
    decode_cands c;
    decode_history h = {tokens, n_tokens, n_prompt, p->stop_tokens, p->stop_tokens ? p->n_stop_tokens : 0};
    decode_chain_apply(&ch, &h, logits, &c);
    cands_dense(&c);
    decode_chain_free(&ch);
    return 0;
}
