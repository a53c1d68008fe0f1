/* A transformer in a GGUF file, named as llama.cpp names it: general.architecture ("llama", "qwen2",
 * "gpt2"), ARCH.embedding_length and friends, tensors token_embd.weight, blk.N.attn_q.weight, ...
 * (gpt2 uses a fused blk.N.attn_qkv). Each architecture's settings are one row of a table. */
#ifndef KILN_FORMAT_MODEL_FILE_H
#define KILN_FORMAT_MODEL_FILE_H

#include "format/gguf.h"
#include "model/transformer.h"

/* Reads the configuration of G. -1 with an error naming the file and key. */
int model_file_read_config(const gguf_file *g, kiln_config *c);

/* Weights of a model file: pointers into G's map, and the vectors that had to be converted to f32. */
typedef struct {
    kiln_weights w;
    float **owned;
    int n_owned;
} model_file_weights;

/* Finds every tensor C needs, checking names, shapes and types; -1 with an error naming the tensor. */
int model_file_read_weights(const gguf_file *g, const kiln_config *c, model_file_weights *mw);
void model_file_weights_free(model_file_weights *mw, const kiln_config *c);

/* Writes general.architecture and the ARCH.* hyperparameter keys of C (and kiln.* for what llama.cpp
 * has no key for: dynamic NTK and llama3 RoPE scaling, log-n attention). */
void model_file_write_config(gguf_writer *w, const kiln_config *c);

/* The rope.freq_base written for C: fixed NTK scaling is stored as the base it amounts to. */
float model_file_rope_base(const kiln_config *c);
/* llama 3 RoPE scaling as llama.cpp reads it: the tensor rope_freqs.weight of per-pair divisors. */
void model_file_write_rope_freqs(gguf_writer *w, const kiln_config *c);

/* Fills the family settings (norm, positions, activation, rope style) of architecture ARCH into C.
 * -1 if ARCH is unknown. */
int model_file_arch_defaults(const char *arch, kiln_config *c);
/* The factor on token embeddings that architecture ARCH implies for width DIM (gemma: sqrt(DIM)), 0 for
 * none. */
float model_file_embd_scale(const char *arch, int dim);

/* Rows of N_HEADS heads of HEAD_DIM, COLS floats each, between RoPE's two pairings: Hugging Face's and
 * NEOX halves (i, i + HEAD_DIM/2) and llama.cpp's interleaved neighbours (2i, 2i+1). TO_INTERLEAVED picks
 * the direction. */
void model_file_permute_heads(float *dst, const float *src, int n_heads, int head_dim, int cols, int to_interleaved);

/* Writes the model of G (configuration C) into W as architecture ARCH: llama <-> qwen2 only, where the math
 * is the same (no output bias, sliding window or partial rotation going to qwen2). Tensors that do not
 * change reference G's map: G must stay open until W is written. */
int model_file_retarget(const gguf_file *g, const kiln_config *c, const char *arch, gguf_writer *w);

#endif
