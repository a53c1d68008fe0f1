/* The processor registry and the chain that runs processors in the user's order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "decode/processor.h"

/* The registry, in the default order (HF's: constraints and penalties, then the warpers with
 * temperature first). Adding a processor: its file, and its name here. */
#define DECODE_PROCESSORS(X)                                                                                  \
    X(logit_bias) X(banned) X(repetition_penalty) X(presence_penalty) X(frequency_penalty) X(no_repeat_ngram) \
    X(min_new_tokens) X(temperature) X(top_k) X(top_p) X(min_p) X(typical_p)

#define DECLARE(name) extern const decode_processor proc_##name;
DECODE_PROCESSORS(DECLARE)
#define ENTRY(name) &proc_##name,
static const decode_processor *const registry[] = {DECODE_PROCESSORS(ENTRY)};
enum { N_REGISTERED = sizeof registry / sizeof registry[0] };

static const decode_processor *find(const char *name, size_t len) {
    for (int i = 0; i < N_REGISTERED; i++)
        if (strlen(registry[i]->name) == len && memcmp(registry[i]->name, name, len) == 0) return registry[i];
    return NULL;
}

static const char *known_names(void) {
    static char buf[512];
    size_t n = 0;
    for (int i = 0; i < N_REGISTERED && n < sizeof buf; i++)
        n += snprintf(buf + n, sizeof buf - n, "%s%s", i ? ", " : "", registry[i]->name);
    return buf;
}

/* Parses ORDER ("top_k;top_p, temperature") into OUT; -1 on an unknown or repeated name. */
static int parse_order(const char *order, const decode_processor **out, int *n_out) {
    int n = 0;
    for (const char *s = order; *s;) {
        while (*s == ',' || *s == ';' || *s == ' ') s++;
        size_t len = strcspn(s, ",; ");
        if (!len) break;
        const decode_processor *p = find(s, len);
        if (!p) return kiln_fail("samplers: unknown processor '%.*s' (known: %s)", (int)len, s, known_names());
        for (int i = 0; i < n; i++)
            if (out[i] == p) return kiln_fail("samplers: '%s' is named twice", p->name);
        out[n++] = p;
        s += len;
    }
    *n_out = n;
    return 0;
}

int decode_processors_check(const kiln_gen_params *p, int n_vocab) {
    for (int i = 0; i < N_REGISTERED; i++)
        if (registry[i]->check && registry[i]->check(p, n_vocab) < 0) return -1;
    if (p->min_tokens_to_keep < 1) return kiln_fail("min_tokens_to_keep %d must be >= 1", p->min_tokens_to_keep);
    if (!p->samplers) return 0;
    const decode_processor *order[DECODE_MAX_PROCESSORS];
    int n;
    if (parse_order(p->samplers, order, &n) < 0) return -1;
    for (int i = 0; i < N_REGISTERED; i++) {
        if (!registry[i]->enabled(p)) continue;
        int named = 0;
        for (int j = 0; j < n; j++) named |= order[j] == registry[i];
        if (!named) return kiln_fail("samplers: %s is set but not named in the order '%s'", registry[i]->name, p->samplers);
    }
    return 0;
}

void decode_chain_init(decode_chain *ch, const kiln_gen_params *p, int n_vocab, int sampling) {
    memset(ch, 0, sizeof *ch);
    const decode_processor *order[DECODE_MAX_PROCESSORS];
    int n = N_REGISTERED;
    if (p->samplers) parse_order(p->samplers, order, &n);
    else memcpy(order, registry, sizeof registry);
    for (int i = 0; i < n; i++)
        if (order[i]->enabled(p) && (sampling || !order[i]->warper)) ch->procs[ch->n_procs++] = order[i];
    ch->p = p;
    ch->n_vocab = n_vocab;
    ch->ids = kiln_xmalloc(sizeof(int32_t) * n_vocab);
    ch->s.ids = kiln_xmalloc(sizeof(int32_t) * n_vocab);
    ch->s.prob = kiln_xmalloc(sizeof(float) * n_vocab);
    ch->s.key = kiln_xmalloc(sizeof(float) * n_vocab);
    ch->s.items = kiln_xmalloc(sizeof(decode_item) * n_vocab);
    ch->s.count = kiln_xcalloc(n_vocab, sizeof(int32_t));
    ch->s.mark = kiln_xcalloc(n_vocab, 1);
}

void decode_chain_free(decode_chain *ch) {
    free(ch->ids);
    free(ch->s.ids);
    free(ch->s.prob);
    free(ch->s.key);
    free(ch->s.items);
    free(ch->s.count);
    free(ch->s.mark);
    memset(ch, 0, sizeof *ch);
}

void decode_chain_apply(decode_chain *ch, const decode_history *h, float *logits, decode_cands *c) {
    *c = (decode_cands){logits, ch->n_vocab, ch->ids, ch->n_vocab, &ch->s, 0, 0, -1};
    for (int i = 0; i < ch->n_procs; i++) {
        ch->procs[i]->apply(ch->p, h, c);
        if (!ch->procs[i]->keeps_weights) c->weighted = 0;
    }
    ch->ids = c->ids; /* cands_keep may have traded the two lists */
}

float cands_max(const decode_cands *c) {
    float m = -INFINITY;
    if (c->n < c->n_vocab) {
        for (int i = 0; i < c->n; i++) m = c->logits[c->ids[i]] > m ? c->logits[c->ids[i]] : m;
        return m;
    }
    const float *x = c->logits;
#pragma omp simd reduction(max : m)
    for (int i = 0; i < c->n_vocab; i++) m = x[i] > m ? x[i] : m;
    return m;
}

double cands_exp(decode_cands *c, float max) {
    int list = c->n < c->n_vocab;
    if (c->weighted && c->shift == max) {
        if (c->total < 0) c->total = list ? decode_sum_ids(c->s->prob, c->ids, c->n) : decode_sum(c->s->prob, c->n_vocab);
        return c->total;
    }
    c->weighted = 1;
    c->shift = max;
    c->total = list ? decode_exp_ids(c->s->prob, c->logits, c->ids, c->n, max)
                    : decode_exp(c->s->prob, c->logits, max, c->n_vocab);
    return c->total;
}

void cands_keep(decode_cands *c, int n) {
    int32_t *t = c->ids;
    c->ids = c->s->ids;
    c->s->ids = t;
    c->n = n;
    c->total = -1;
    /* A list of more than a quarter of the vocabulary costs more to follow than the vectorised
     * passes over the whole array cost: mark the others removed instead. */
    if (n > c->n_vocab / 4) cands_dense(c);
}

void cands_dense(decode_cands *c) {
    if (c->n == c->n_vocab) return;
    uint8_t *mark = c->s->mark;
    float *x = c->logits, *w = c->s->prob;
    for (int i = 0; i < c->n; i++) mark[c->ids[i]] = 1;
    if (c->weighted) { /* the removed tokens' weights are stale: dense weights are 0 there */
#pragma omp simd
        for (int i = 0; i < c->n_vocab; i++) w[i] = mark[i] ? w[i] : 0.0f;
    }
#pragma omp simd
    for (int i = 0; i < c->n_vocab; i++) x[i] = mark[i] ? x[i] : -INFINITY;
    for (int i = 0; i < c->n; i++) mark[c->ids[i]] = 0;
    c->n = c->n_vocab;
}

int cands_items(decode_cands *c) {
    decode_item *it = c->s->items;
    const float *x = c->logits, *p = c->s->prob;
    int k = 0;
    if (c->n < c->n_vocab) {
        for (int i = 0; i < c->n; i++) {
            int32_t id = c->ids[i];
            if (x[id] > -INFINITY) it[k++] = (decode_item){x[id], p[id], id};
        }
        return k;
    }
    for (int i = 0; i < c->n_vocab; i++)
        if (x[i] > -INFINITY) it[k++] = (decode_item){x[i], p[i], i};
    return k;
}

int cands_argmax(const decode_cands *c) {
    int best = -1;
    float bv = -INFINITY;
    if (c->n < c->n_vocab) {
        for (int i = 0; i < c->n; i++) {
            int32_t id = c->ids[i];
            float v = c->logits[id];
            if (v > bv || (v == bv && best >= 0 && id < best)) best = id, bv = v;
        }
        return bv > -INFINITY ? best : -1;
    }
    bv = cands_max(c);
    if (bv == -INFINITY) return -1;
    const float *x = c->logits;
    int i = 0;
    for (; i + 16 <= c->n_vocab; i += 16) { /* the first block holding the maximum, then the first in it */
        int any = 0;
        for (int j = 0; j < 16; j++) any |= x[i + j] == bv;
        if (any) break;
    }
    while (x[i] != bv) i++;
    return i;
}

int cands_many_ge(const decode_cands *c, float min, int cap) {
    enum { FIRST = 4096 };
    int first = c->n_vocab < FIRST ? c->n_vocab : FIRST;
    return (double)decode_count_ge(c->logits, first, min, first) * c->n_vocab / first > cap;
}

int cands_collect_ge(const decode_cands *c, float min, int cap, int32_t *out) {
    enum { BLOCK = 4096 }; /* blocks of this many keep the vectorised scan and stop early */
    /* counted before collected when most of the vocabulary looks to be there (flat logits): collecting
     * up to CAP only to find them too many writes CAP ids */
    if (cands_many_ge(c, min, cap) && decode_count_ge(c->logits, c->n_vocab, min, cap) < 0) return -1;
    int k = 0;
    for (int b = 0; b < c->n_vocab && k <= cap; b += BLOCK) {
        int len = c->n_vocab - b < BLOCK ? c->n_vocab - b : BLOCK;
        int got = decode_collect_ge(c->logits + b, NULL, len, min, out + k);
        for (int i = 0; i < got; i++) out[k + i] += b;
        k += got;
    }
    return k <= cap ? k : -1;
}

int cands_select(decode_item *it, int n, double target, int keep_min, int ties) {
    int m = decode_select_mass(it, n, target);
    if (ties && m > 0) {
        float last = it[0].key;
        for (int i = 1; i < m; i++) last = it[i].key < last ? it[i].key : last;
        for (int i = m; i < n; i++)
            if (it[i].key == last) {
                decode_item t = it[i];
                it[i] = it[m];
                it[m++] = t;
            }
    }
    if (m < keep_min) {
        m = keep_min < n ? keep_min : n;
        decode_partition(it, n, m);
    }
    return m;
}

/* ---- cands_cut ---- */

/* Large vocabularies first try bounds from an estimated histogram (decode_hist_sample: one block of 16
 * tokens in CUT_SAMPLE, and every token weighing CUT_HEAVY of the target, which sampling would misjudge),
 * widened by CUT_SLACK of the target: an exact histogram costs a scattered update per token, most of the
 * cut. */
enum { CUT_SAMPLED_FROM = 16384, CUT_SAMPLE = 16 };
#define CUT_HEAVY 2e-5
#define CUT_SLACK 0.002

/* The cut within the bounds from H: 0, changing nothing, when the crossing lies outside them. The
 * distance |CENTER - x| is TOP - x for top-p (CENTER = TOP), so one band serves both; only the items'
 * key differs. */
static int cut_within(decode_cands *c, const decode_hist *h, float max, int typical, float center, double target,
                      int keep_min, double slack) {
    decode_band_bounds b = decode_hist_bounds(h, max, center, target, slack, keep_min);
    int list = b.est <= c->n_vocab / 32; /* collecting more costs more than the passes over dense ones */
    float *x = c->logits, *w = c->s->prob;
    int32_t *ids = c->s->ids;
    double mass_near;
    uint16_t *beyond = list ? NULL : (uint16_t *)(void *)c->s->key; /* scratch of vocabulary size */
    int count_near;
    int n = decode_band(x, w, c->n_vocab, center, b.near, b.far, list, ids, &mass_near, &count_near, beyond);
    decode_item *it = c->s->items;
    if (typical)
        for (int i = 0; i < n; i++) it[i] = (decode_item){-fabsf(center - x[ids[i]]), w[ids[i]], ids[i]};
    else
        for (int i = 0; i < n; i++) it[i] = (decode_item){x[ids[i]], w[ids[i]], ids[i]};
    if (list) { /* every token up to FAR an item: the kept ones become the list */
        if (decode_items_mass(it, n) < target || n < keep_min) return 0;
        int m = cands_select(it, n, target, keep_min, typical);
        for (int i = 0; i < m; i++) ids[i] = it[i].id;
        cands_keep(c, m);
        return 1;
    }
    double rest = target - mass_near; /* what the sliver between NEAR and FAR adds */
    if (rest <= 0 || decode_items_mass(it, n) < rest || count_near + n < keep_min) return 0;
    int m = cands_select(it, n, rest, keep_min - count_near, typical);
    decode_remove_marked(x, w, c->n_vocab, beyond);
    for (int j = m; j < n; j++) x[it[j].id] = -INFINITY, w[it[j].id] = 0;
    c->total = mass_near + decode_items_mass(it, m);
    return 1;
}

void cands_cut(decode_cands *c, float max, int typical, float center, double target, int keep_min) {
    if (!typical) center = max;
    decode_hist h;
    if (c->n_vocab >= CUT_SAMPLED_FROM) {
        /* the weights are exp(logit - max) <= 1: a heavier bound makes none heavy, and the scan for them goes */
        float heavy = (float)(target * CUT_HEAVY);
        decode_hist_sample(&h, c->logits, c->s->prob, max, c->n_vocab, CUT_SAMPLE, heavy > 1 ? INFINITY : heavy);
        if (cut_within(c, &h, max, typical, center, target, keep_min, target * CUT_SLACK)) return;
    }
    decode_hist_build(&h, c->logits, c->s->prob, max, c->n_vocab, keep_min > 1);
    if (cut_within(c, &h, max, typical, center, target, keep_min, 0)) return;
    /* only rounding made the bounds fail, or min_tokens_to_keep reaches beyond them: every candidate an item */
    int n = cands_items(c);
    decode_item *it = c->s->items;
    if (typical)
        for (int i = 0; i < n; i++) it[i].key = -fabsf(center - it[i].key);
    int m = cands_select(it, n, target, keep_min, typical);
    for (int i = 0; i < m; i++) c->s->ids[i] = it[i].id;
    cands_keep(c, m);
}
