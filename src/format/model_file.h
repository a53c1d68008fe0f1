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

/* Writes general.architecture and the ARCH.* hyperparameter keys of C. */
void model_file_write_config(gguf_writer *w, const kiln_config *c);

/* Fills the family settings (norm, positions, activation, rope style) of architecture ARCH into C.
 * -1 if ARCH is unknown. */
int model_file_arch_defaults(const char *arch, kiln_config *c);

#endif
