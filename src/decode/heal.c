/* Token healing (the seed's "large vocabulary continuation problem"). A prompt that stops inside what
 * would be one token, "import num", ends in the token " num" where training text had " numpy": the
 * model never saw "py" follow " num", so it continues badly. Healing removes the prompt's last tokens
 * while some token could extend their text, and lets the model regenerate them under the constraint
 * that the new tokens' bytes start with the removed ones.
 *
 * The constraint needs, for pending bytes R, the tokens whose text starts with R (they complete it) and
 * those whose text is a proper prefix of R (they consume part of it). Token texts sorted bytewise make
 * both lookups binary searches: the texts starting with R are one contiguous range (the leaves under
 * R's node of a byte trie), and the prefixes of R are exact matches of R's first 1..|R|-1 bytes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kiln.h"

enum { MAX_BACKOFF = 4 }; /* tokens a prompt may lose: more would rewrite what the user wrote */

typedef struct {
    const char *text;
    size_t len;
    int32_t id;
} heal_entry;

struct kiln_healer {
    const kiln_model *m;
    heal_entry *e; /* tokens with text, sorted by text */
    int n;
};

static int text_cmp(const char *a, size_t la, const char *b, size_t lb) {
    int c = memcmp(a, b, la < lb ? la : lb);
    return c ? c : (la > lb) - (la < lb);
}

static int by_text(const void *x, const void *y) {
    const heal_entry *a = x, *b = y;
    int c = text_cmp(a->text, a->len, b->text, b->len);
    return c ? c : a->id - b->id;
}

kiln_healer *kiln_healer_new(const kiln_model *m) {
    int V = kiln_model_config(m)->n_vocab;
    int32_t probe;
    if (kiln_tokenize(m, "", 0, 0, &probe, 1) < 0) /* fails only without a tokenizer */
        return kiln_fail("token healing needs the model's tokenizer: %s", kiln_last_error()), NULL;
    kiln_healer *h = kiln_xcalloc(1, sizeof *h);
    h->m = m;
    h->e = kiln_xmalloc(sizeof *h->e * (size_t)V);
    for (int id = 0; id < V; id++) {
        size_t len;
        const char *s = kiln_token_text(m, -1, id, &len);
        if (len) h->e[h->n++] = (heal_entry){s, len, id};
    }
    qsort(h->e, h->n, sizeof *h->e, by_text);
    return h;
}

void kiln_healer_free(kiln_healer *h) {
    if (!h) return;
    free(h->e);
    free(h);
}

/* The first entry whose text is >= P (LEN bytes). */
static int lower_bound(const kiln_healer *h, const char *p, size_t len) {
    int lo = 0, hi = h->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (text_cmp(h->e[mid].text, h->e[mid].len, p, len) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int starts_with(const heal_entry *e, const char *p, size_t len) {
    return e->len >= len && !memcmp(e->text, p, len);
}

/* Whether some token's text starts with P and is longer than it. */
static int extendable(const kiln_healer *h, const char *p, size_t len) {
    for (int i = lower_bound(h, p, len); i < h->n && starts_with(&h->e[i], p, len); i++)
        if (h->e[i].len > len) return 1;
    return 0;
}

int kiln_heal_prompt(const kiln_healer *h, const int32_t *prompt, int n, char *prefix, size_t cap, size_t *len) {
    int keep = n, bos = kiln_token_bos(h->m), eos = kiln_token_eos(h->m);
    size_t used = 0;
    char tail[256], cand[256];
    while (keep > 0 && n - keep < MAX_BACKOFF && prompt[keep - 1] != bos && prompt[keep - 1] != eos) {
        size_t tl;
        const char *t = kiln_token_text(h->m, -1, prompt[keep - 1], &tl);
        if (!tl || tl + used > sizeof cand || tl + used > cap) break;
        memcpy(cand, t, tl);
        memcpy(cand + tl, tail, used);
        if (!extendable(h, cand, tl + used)) break;
        used += tl;
        memcpy(tail, cand, used);
        keep--;
    }
    memcpy(prefix, tail, used);
    *len = used;
    return keep;
}

int kiln_heal_mask(const kiln_healer *h, const char *prefix, size_t len, float *logits) {
    int V = kiln_model_config(h->m)->n_vocab, kept = 0;
    if (len == 0) return V;
    uint8_t *allowed = kiln_xcalloc(V, 1);
    for (int i = lower_bound(h, prefix, len); i < h->n && starts_with(&h->e[i], prefix, len); i++)
        allowed[h->e[i].id] = 1;
    for (size_t l = 1; l < len; l++)
        for (int i = lower_bound(h, prefix, l); i < h->n && h->e[i].len == l && !memcmp(h->e[i].text, prefix, l); i++)
            allowed[h->e[i].id] = 1;
    for (int id = 0; id < V; id++) {
        if (allowed[id] && logits[id] != -INFINITY) kept++;
        else logits[id] = -INFINITY;
    }
    free(allowed);
    return kept;
}

/* The most probable token the pending bytes allow, after P's processors. */
static int pick_allowed(const kiln_healer *h, const kiln_gen_params *p, const int32_t *seq, int n_seq, int n_prompt,
                        const float *logits, const char *prefix, size_t len) {
    int V = kiln_model_config(h->m)->n_vocab;
    float *l = kiln_xmalloc(sizeof(float) * V);
    memcpy(l, logits, sizeof(float) * V);
    int best = -1;
    if (kiln_process_logits(p, 0, seq, n_seq, n_prompt, l, V) == 0 && kiln_heal_mask(h, prefix, len, l) > 0)
        for (int id = 0; id < V; id++)
            if (l[id] != -INFINITY && (best < 0 || l[id] > l[best])) best = id;
    free(l);
    return best;
}

/* Prepends the healed tokens and their bytes past the prompt's text to every returned sequence. */
static void prepend(kiln_gen_result *out, const int32_t *healed, int n_healed, const char *extra, size_t n_extra) {
    for (int s = 0; s < out->n_seqs; s++) {
        kiln_gen_sequence *q = &out->seqs[s];
        int32_t *t = kiln_xmalloc(sizeof *t * (size_t)(q->n_tokens + n_healed));
        memcpy(t, healed, sizeof *t * n_healed);
        memcpy(t + n_healed, q->tokens, sizeof *t * q->n_tokens);
        free(q->tokens);
        q->tokens = t;
        q->n_tokens += n_healed;
        char *x = kiln_xmalloc(n_extra + q->text_len + 1);
        memcpy(x, extra, n_extra);
        memcpy(x + n_extra, q->text, q->text_len + 1);
        free(q->text);
        q->text = x;
        q->text_len += n_extra;
    }
}

int kiln_generate_healed(kiln_ctx *c, const kiln_healer *h, const int32_t *prompt, int n, const kiln_gen_params *p,
                         kiln_gen_result *out) {
    char prefix[256], extra[256];
    size_t len, n_extra = 0;
    if (n < 1) return kiln_fail("nothing to complete: the prompt has no tokens");
    int keep = kiln_heal_prompt(h, prompt, n, prefix, sizeof prefix, &len);
    if (len == 0 || keep == 0) return kiln_generate(c, prompt, n, p, out);
    int start = kiln_ctx_pos(c), n_seq = keep;
    int32_t *seq = kiln_xmalloc(sizeof *seq * (size_t)(n + len + 1));
    memcpy(seq, prompt, sizeof *seq * keep);
    int rc = kiln_eval(c, seq, keep, NULL);
    while (rc == 0 && len > 0) { /* each healed token consumes part of the pending bytes, or all of them */
        int tok = pick_allowed(h, p, seq, n_seq, keep, kiln_logits(c), prefix, len);
        if (tok < 0) {
            rc = kiln_fail("token healing: no token continues '%.*s'", (int)len, prefix);
            break;
        }
        size_t tl;
        const char *t = kiln_token_text(h->m, -1, tok, &tl);
        if (tl >= len) {
            n_extra = tl - len < sizeof extra ? tl - len : sizeof extra;
            memcpy(extra, t + len, n_extra);
            len = 0;
        } else {
            memmove(prefix, prefix + tl, len - tl);
            len -= tl;
        }
        seq[n_seq++] = tok;
        if (len > 0) rc = kiln_eval(c, &tok, 1, NULL);
    }
    if (rc == 0) rc = kiln_ctx_truncate(c, start);
    if (rc == 0) rc = kiln_generate(c, seq, n_seq, p, out);
    if (rc == 0) prepend(out, seq + keep, n_seq - keep, extra, n_extra);
    else kiln_ctx_truncate(c, start);
    free(seq);
    return rc;
}
