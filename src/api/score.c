/* The score head of sequence-classification and reward models. */
#include "api/api.h"
#include "base/error.h"

int kiln_score(kiln_ctx *c, float *out) {
    const kiln_config *cfg = &c->m->cfg;
    if (cfg->n_cls <= 0) return kiln_fail("%s: the model has no score head (cls.weight)", c->m->file->path);
    if (c->pos == 0) return kiln_fail("nothing evaluated yet: the score is of the last token");
    kiln_forward_score(cfg, &c->m->weights.w, c->state, out);
    return 0;
}
