/* Quantizing a GGUF model: a file with float matrices into one with quantized ones, tensor by tensor as
 * llama.cpp's llama-quantize chooses for the same scheme (without an importance matrix), so the files
 * kiln writes look like the ones people download:
 *   - 1-D tensors, norms, position embeddings and anything not named *weight stay as they are;
 *   - q8_0: every other matrix Q8_0;
 *   - q4_0: every other matrix Q4_0, except the output head (the token embedding when the head is tied),
 *     which is Q6_K;
 *   - q4_k_m: Q4_K, the output head Q6_K, and attn_v / attn_qkv and ffn_down of the first and last
 *     eighth of the layers and every third layer between them Q6_K (llama.cpp's use_more_bits).
 * A matrix whose rows do not split into the chosen type's blocks falls back to Q8_0 (llama.cpp takes
 * Q5_0 for Q4_K, a type kiln does not have; Q8_0 is the more precise neighbour), and stays as it is when
 * its rows are not a multiple of 32 either. */
#ifndef KILN_FORMAT_QUANTIZE_H
#define KILN_FORMAT_QUANTIZE_H

#include <stdint.h>

#include "format/gguf.h"

typedef enum { KILN_QUANT_Q8_0, KILN_QUANT_Q4_0, KILN_QUANT_Q4_K_M } kiln_quant_scheme;

/* "q8_0", "q4_0", "q4_k_m" (any case). -1 with an error listing the schemes. */
int quantize_scheme_parse(const char *name, kiln_quant_scheme *out);
const char *quantize_scheme_name(kiln_quant_scheme s);

/* The ggml type tensor T of G gets under SCHEME. */
uint32_t quantize_tensor_type(const gguf_file *g, const gguf_tensor *t, kiln_quant_scheme scheme);

/* Writes IN quantized under SCHEME to OUT (atomically: a temp file renamed over OUT). PROGRESS is a
 * KILN_PROGRESS_* mode. Fails (naming the file and tensor) on a matrix that is already quantized. */
int quantize_gguf(const char *in, const char *out, kiln_quant_scheme scheme, int progress);

#endif
