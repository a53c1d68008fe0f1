/* Temperature (HF TemperatureLogitsWarper): logits divided by T; below 1 sharpens, above 1 flattens. */
#include <math.h>

#include "base/error.h"
#include "decode/processor.h"

static int enabled(const kiln_gen_params *p) { return p->temperature != 1.0f; }

/* Zero is allowed here because greedy searches ignore the temperature; kiln_gen_check rejects it
 * when sampling. */
static int check(const kiln_gen_params *p, int n_vocab) {
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return kiln_fail("temperature %g must be > 0", p->temperature);
    return 0;
}

static void apply(const kiln_gen_params *p, const decode_history *h, decode_cands *c) {
    float t = p->temperature, *x = c->logits;
    if (c->n < c->n_vocab) {
        for (int i = 0; i < c->n; i++) x[c->ids[i]] /= t;
        return;
    }
#pragma omp simd
    for (int i = 0; i < c->n_vocab; i++) x[i] /= t;
}

const decode_processor proc_temperature = {"temperature", 1, enabled, check, apply, 0};
