/* Top-k (HF TopKLogitsWarper): keeps the k largest logits, k = max(top_k, min_tokens_to_keep), and
 * every token tied with the k-th. A heap selection, not a sort. */
#include "base/error.h"
#include "decode/processor.h"

static int enabled(const kiln_gen_params *p) { return p->top_k != 0; }

static int check(const kiln_gen_params *p, int n_vocab) {
    if (p->top_k < 0) return kiln_fail("top_k %d must be >= 1 (0 turns it off)", p->top_k);
    return 0;
}

static void apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    int k = p->top_k > p->min_tokens_to_keep ? p->top_k : p->min_tokens_to_keep;
    if (k >= c->n) return;
    const int32_t *ids = c->n < c->n_vocab ? c->ids : NULL;
    int32_t *sel = c->s->ids;
    if (decode_top(c->logits, ids, c->n, k, sel) < k) return; /* fewer than k finite: all stay */
    float kth = c->logits[sel[0]]; /* the heap's root: the k-th largest */
    cands_keep(c, decode_collect_ge(c->logits, ids, c->n, kth, c->s->ids));
}

const decode_processor proc_top_k = {"top_k", 1, enabled, check, apply, 1};
