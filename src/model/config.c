/* Consistency checks of a model configuration. */
#include "base/error.h"
#include "model/transformer.h"

int kiln_config_check(const kiln_config *c) {
    if (c->n_vocab <= 0) return kiln_fail("vocabulary size %d must be positive", c->n_vocab);
    if (c->dim <= 0 || c->n_layers <= 0 || c->ffn_dim <= 0 || c->head_dim <= 0)
        return kiln_fail("dim %d, layers %d, ffn %d and head_dim %d must all be positive", c->dim, c->n_layers,
                         c->ffn_dim, c->head_dim);
    if (c->n_heads <= 0 || c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
        return kiln_fail("%d heads cannot share %d kv heads (must divide)", c->n_heads, c->n_kv_heads);
    if (c->ctx_len <= 0) return kiln_fail("context length %d must be positive", c->ctx_len);
    if (c->pos == KILN_POS_ROPE && (c->rope_dim <= 0 || c->rope_dim > c->head_dim || c->rope_dim % 2))
        return kiln_fail("rope dimension %d must be even and at most head_dim %d", c->rope_dim, c->head_dim);
    if (c->pos == KILN_POS_ROPE && !(c->rope_theta > 0)) return kiln_fail("rope theta %g must be positive", c->rope_theta);
    if (!(c->norm_eps >= 0)) return kiln_fail("norm epsilon %g must not be negative", c->norm_eps);
    return 0;
}

size_t kiln_config_kv_bytes(const kiln_config *c) {
    return (size_t)2 * c->n_layers * c->n_kv_heads * c->head_dim * sizeof(float);
}
