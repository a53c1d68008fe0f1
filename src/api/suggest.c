/* The suggestion engine of `kiln complete` (see suggest.h). The context always holds the tokens
 * cache[0..n_cache): the text's tokens X (n_x of them) followed by the first p_eval tokens of the greedy
 * path, and kiln_logits is always that of the last of them, since every roll-back is followed by an
 * evaluation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/suggest.h"
#include "base/error.h"

struct kiln_suggester {
    const kiln_model *m;
    kiln_ctx *c;
    int n_ctx, max_len, bytes, window;
    int32_t *cache, *toks, *path, *all;
    size_t all_cap;
    float *prob;            /* prob[i]: the probability of path[i] given what precedes it */
    int n_cache, n_x, n_path, p_eval, start, n_evaluated;
    char *out;
};

kiln_suggester *kiln_suggester_new(const kiln_model *m, int max_len) {
    int bytes = !m->tok;
    if (bytes && m->cfg.n_vocab != 256)
        return kiln_fail("the model has no tokenizer and %d tokens: suggestions need a tokenizer or 256 byte tokens",
                         m->cfg.n_vocab), NULL;
    if (max_len < 1 || max_len > 1024) return kiln_fail("suggestion length %d must be 1 to 1024", max_len), NULL;
    if (m->cfg.ctx_len < 2 * max_len + 8)
        return kiln_fail("the model's context (%d) is too short for suggestions of %d bytes", m->cfg.ctx_len, max_len), NULL;
    kiln_suggester *s = kiln_xcalloc(1, sizeof *s);
    s->m = m;
    s->c = kiln_ctx_new(m, 0);
    if (!s->c) return free(s), NULL;
    s->n_ctx = kiln_ctx_size(s->c);
    s->max_len = max_len;
    s->bytes = bytes;
    s->window = s->n_ctx - max_len - 2;
    s->cache = kiln_xmalloc(sizeof(int32_t) * s->n_ctx);
    s->toks = kiln_xmalloc(sizeof(int32_t) * s->n_ctx);
    s->path = kiln_xmalloc(sizeof(int32_t) * (max_len + 1));
    s->prob = kiln_xmalloc(sizeof(float) * (max_len + 1));
    s->out = kiln_xmalloc((size_t)max_len + 1);
    return s;
}

void kiln_suggester_free(kiln_suggester *s) {
    if (!s) return;
    kiln_ctx_free(s->c);
    free(s->cache);
    free(s->toks);
    free(s->all);
    free(s->path);
    free(s->prob);
    free(s->out);
    free(s);
}

int kiln_suggest_evaluated(const kiln_suggester *s) { return s->n_evaluated; }

/* The tokens of TEXT into s->toks, cut to the window: the first token (BOS, or byte 0) and then the
 * text's tokens from s->start, which moves by half a window at a time so that the cache stays valid
 * between jumps. Returns how many, or -1. */
static int context_tokens(kiln_suggester *s, const char *text, size_t len) {
    if (s->all_cap < len + 2) {
        s->all_cap = len + 2;
        s->all = kiln_xrealloc(s->all, sizeof(int32_t) * s->all_cap);
    }
    int32_t *all = s->all;
    int n;
    if (s->bytes) {
        all[0] = 0;
        for (size_t i = 0; i < len; i++) all[i + 1] = (unsigned char)text[i];
        n = (int)len + 1;
    } else if ((n = kiln_tokenize(s->m, text, len, 1, all, (int)s->all_cap)) < 0) {
        return -1;
    }
    if (n <= s->window) {
        s->start = 1;
    } else if (s->start < 1 || s->start > n || n - s->start + 1 > s->window) {
        s->start = n - s->window / 2;
    }
    s->toks[0] = all[0];
    memcpy(s->toks + 1, all + s->start, sizeof(int32_t) * (n - s->start));
    return n - s->start + 1;
}

static int eval(kiln_suggester *s, const int32_t *t, int n) {
    if (kiln_eval(s->c, t, n, NULL) < 0) return -1;
    memcpy(s->cache + s->n_cache, t, sizeof(int32_t) * n);
    s->n_cache += n;
    s->n_evaluated += n;
    return 0;
}

/* Brings the cache to the new text's tokens X' (s->toks[0..n)), reusing the path when X' is the old
 * text followed by path tokens that were evaluated already. */
static int sync_context(kiln_suggester *s, int n) {
    int d = n - s->n_x;
    if (d >= 0 && d <= s->p_eval && !memcmp(s->toks, s->cache, sizeof(int32_t) * n)) {
        memmove(s->path, s->path + d, sizeof(int32_t) * (s->n_path - d));
        memmove(s->prob, s->prob + d, sizeof(float) * (s->n_path - d));
        s->n_path -= d, s->p_eval -= d, s->n_x = n;
        return 0;
    }
    int l = 0;
    while (l < s->n_cache && l < n && s->cache[l] == s->toks[l]) l++;
    if (l == n) l--; /* the logits after the last token are needed: evaluate it again */
    if (kiln_ctx_truncate(s->c, l) < 0) return -1;
    s->n_cache = l;
    s->n_x = n, s->n_path = 0, s->p_eval = 0;
    return eval(s, s->toks + l, n - l);
}

/* The bytes path token I adds (at most up to a newline; BYTE holds a byte token's); *NL set when it
 * holds a newline. */
static const char *piece(kiln_suggester *s, int i, char *byte, size_t *len, int *nl) {
    const char *p;
    if (s->bytes) {
        *byte = (char)s->path[i];
        p = byte, *len = 1;
    } else {
        p = kiln_token_text(s->m, i ? s->path[i - 1] : s->toks[s->n_x - 1], s->path[i], len);
    }
    const char *e = p ? memchr(p, '\n', *len) : NULL;
    *nl = e != NULL;
    if (e) *len = (size_t)(e - p);
    return p;
}

/* Appends the greedy next token after the path to it. 0, 1 when the path cannot grow, -1 on error. */
static int extend(kiln_suggester *s) {
    if (s->n_path == s->max_len || s->n_cache + 1 >= s->n_ctx) return 1;
    if (s->p_eval < s->n_path) {
        if (eval(s, s->path + s->p_eval, 1) < 0) return -1;
        s->p_eval++;
    }
    const float *x = kiln_logits(s->c);
    int V = s->m->cfg.n_vocab, best = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[best]) best = i;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)x[i] - x[best]);
    if (!s->bytes && (best == kiln_token_eos(s->m) || best == kiln_token_bos(s->m))) return 1;
    s->path[s->n_path] = best;
    s->prob[s->n_path++] = (float)(1 / sum);
    return 0;
}

const char *kiln_suggest(kiln_suggester *s, const char *text, size_t len) {
    s->n_evaluated = 0;
    int n = context_tokens(s, text, len);
    if (n < 0 || sync_context(s, n) < 0) return NULL;
    double cum = 1, best = 0;
    size_t total = 0, best_len = 0;
    for (int i = 0;; i++) {
        if (i == s->n_path) {
            int rc = extend(s);
            if (rc < 0) return NULL;
            if (rc) break;
        }
        size_t plen;
        int nl;
        char byte;
        const char *p = piece(s, i, &byte, &plen, &nl);
        if (total + plen > (size_t)s->max_len) break;
        memcpy(s->out + total, p, plen);
        total += plen;
        cum *= s->prob[i];
        if (total * cum > best) best = total * cum, best_len = total;
        if (nl || (total + 8 < (size_t)s->max_len ? total + 8 : (size_t)s->max_len) * cum < best) break;
    }
    s->out[best_len] = 0;
    return s->out;
}
