/* Small accessors of a context for the decoding layer and other callers of the public API. */
#include "api/api.h"

const kiln_model *kiln_ctx_model(const kiln_ctx *c) { return c->m; }

int kiln_ctx_size(const kiln_ctx *c) { return c->state->n_ctx; }
