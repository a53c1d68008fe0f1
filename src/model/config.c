/* Consistency checks of a model configuration. */
#include <math.h>

#include "base/error.h"
#include "model/transformer.h"

static int rope_scaling_check(const kiln_config *c) {
    if (c->rope_scaling == KILN_ROPE_SCALING_NONE) return 0;
    if (c->rope_scaling < KILN_ROPE_SCALING_NONE || c->rope_scaling > KILN_ROPE_SCALING_LLAMA3)
        return kiln_fail("unknown rope scaling type %d", (int)c->rope_scaling);
    if (!(c->rope_factor >= 1) || !isfinite(c->rope_factor))
        return kiln_fail("rope scaling factor %g must be at least 1", c->rope_factor);
    if (c->rope_orig_ctx < 0) return kiln_fail("rope original context %d must not be negative", c->rope_orig_ctx);
    if (c->rope_dim <= 2 && (c->rope_scaling == KILN_ROPE_SCALING_NTK || c->rope_scaling == KILN_ROPE_SCALING_DYNAMIC))
        return kiln_fail("NTK rope scaling needs more than 2 rotated dimensions (have %d)", c->rope_dim);
    if (!isfinite(c->rope_attn_factor) || c->rope_attn_factor < 0 || !(c->yarn_beta_fast >= 0) ||
        !(c->yarn_beta_slow >= 0) || !isfinite(c->yarn_beta_fast) || !isfinite(c->yarn_beta_slow))
        return kiln_fail("YaRN attention factor %g and betas %g, %g must be non-negative numbers", c->rope_attn_factor,
                         c->yarn_beta_fast, c->yarn_beta_slow);
    if (c->rope_scaling == KILN_ROPE_SCALING_LLAMA3 &&
        !(c->rope_low_freq > 0 && c->rope_high_freq > c->rope_low_freq && isfinite(c->rope_high_freq)))
        return kiln_fail("llama3 rope scaling needs 0 < low_freq_factor %g < high_freq_factor %g", c->rope_low_freq,
                         c->rope_high_freq);
    return 0;
}

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
    if (c->act < KILN_ACT_SWIGLU || c->act > KILN_ACT_GEGLU) return kiln_fail("unknown activation %d", (int)c->act);
    if (c->sliding_window < 0) return kiln_fail("sliding window %d must not be negative", c->sliding_window);
    if (!isfinite(c->embd_scale) || c->embd_scale < 0)
        return kiln_fail("embedding scale %g must be a non-negative number", c->embd_scale);
    if (c->n_cls < 0) return kiln_fail("score head size %d must not be negative", c->n_cls);
    return rope_scaling_check(c);
}

size_t kiln_config_kv_bytes(const kiln_config *c) {
    return (size_t)2 * c->n_layers * c->n_kv_heads * c->head_dim * sizeof(float);
}
