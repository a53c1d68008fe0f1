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
    *c = (decode_cands){logits, ch->n_vocab, ch->ids, ch->n_vocab, &ch->s};
    for (int i = 0; i < ch->n_procs; i++) ch->procs[i]->apply(ch->p, h, c);
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
    if (c->n < c->n_vocab) return decode_exp_ids(c->s->prob, c->logits, c->ids, c->n, max);
    return decode_exp(c->s->prob, c->logits, max, c->n_vocab);
}

void cands_keep(decode_cands *c, int n) {
    int32_t *t = c->ids;
    c->ids = c->s->ids;
    c->s->ids = t;
    c->n = n;
    /* A list of more than a quarter of the vocabulary costs more to follow than the vectorised
     * passes over the whole array cost: mark the others removed instead. */
    if (n > c->n_vocab / 4) cands_dense(c);
}

void cands_dense(decode_cands *c) {
    if (c->n == c->n_vocab) return;
    uint8_t *mark = c->s->mark;
    float *x = c->logits;
    for (int i = 0; i < c->n; i++) mark[c->ids[i]] = 1;
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

enum { CUT_BUCKETS = 1024 };
#define CUT_PER_NAT 64.0f

static int cut_bucket(float key) {
    float b = -key * CUT_PER_NAT;
    return b < CUT_BUCKETS - 1 ? (int)b : CUT_BUCKETS - 1; /* -inf keys and far tokens: the last bucket */
}

int cands_cut(decode_cands *c, const float *key, double target, int keep_min, int ties) {
    double mass[4][CUT_BUCKETS] = {{0}}, before = 0; /* four histograms: no chain of updates to one bucket */
    int count[4][CUT_BUCKETS] = {{0}}, n_before = 0, crossing = 0, n = c->n_vocab;
    float *x = c->logits;
    const float *p = c->s->prob;
    for (int i = 0; i < n; i++) {
        int b = cut_bucket(key[i]);
        mass[i & 3][b] += p[i];
        count[i & 3][b]++;
    }
    for (; crossing < CUT_BUCKETS - 1; crossing++) {
        double m = mass[0][crossing] + mass[1][crossing] + mass[2][crossing] + mass[3][crossing];
        if (before + m >= target) break;
        before += m;
        n_before += count[0][crossing] + count[1][crossing] + count[2][crossing] + count[3][crossing];
    }
    int n_crossing = count[0][crossing] + count[1][crossing] + count[2][crossing] + count[3][crossing];
    if (n_before + n_crossing < keep_min) return 0;
    decode_item *it = c->s->items;
    int n_items = 0;
    for (int i = 0; i < n; i++) { /* branch-free: kept and crossing tokens interleave at random */
        int b = cut_bucket(key[i]);
        it[n_items] = (decode_item){key[i], p[i], i};
        n_items += b == crossing && x[i] > -INFINITY;
        x[i] = b > crossing ? -INFINITY : x[i];
    }
    int m = decode_select_mass(it, n_items, target - before);
    if (ties && m > 0) {
        float last = it[0].key;
        for (int i = 1; i < m; i++) last = it[i].key < last ? it[i].key : last;
        for (int i = m; i < n_items; i++)
            if (it[i].key == last) {
                decode_item t = it[i];
                it[i] = it[m];
                it[m++] = t;
            }
    }
    if (n_before + m < keep_min) {
        m = keep_min - n_before;
        decode_partition(it, n_items, m);
    }
    for (int i = m; i < n_items; i++) x[it[i].id] = -INFINITY;
    return 1;
}
