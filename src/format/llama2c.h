/* llama2.c checkpoints (karpathy/llama2.c run.c format): a header of 7 int32 (dim, hidden_dim,
 * n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means a separate output
 * head), then f32 weights: token embedding, attention norms, wq, wk, wv, wo, ffn norms, w1 (gate),
 * w2 (down), w3 (up) — each for all layers in turn — final norm, two unused RoPE tables, and the output
 * head when separate. Matrices are row-major [out][in], as in GGUF. */
#ifndef KILN_FORMAT_LLAMA2C_H
#define KILN_FORMAT_LLAMA2C_H

#include "base/file.h"
#include "format/gguf.h"
#include "model/transformer.h"

/* Maps PATH into MAP, validates its size against its header, fills C (architecture "llama") and adds
 * the configuration and the tensors, in llama.cpp's names, to W as TYPE (F32, F16 or BF16; norms stay
 * F32). F32 tensors refer to MAP, which must stay open until W is written. */
int llama2c_to_gguf(const char *path, kiln_map *map, int type, kiln_config *c, gguf_writer *w);

#endif
