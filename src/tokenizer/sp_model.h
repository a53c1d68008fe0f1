/* sentencepiece model files (tokenizer.model, a protobuf) for BPE vocabularies such as Llama 2's. */
#ifndef KILN_TOKENIZER_SP_MODEL_H
#define KILN_TOKENIZER_SP_MODEL_H

#include "tokenizer/tokenizer.h"

/* Loads PATH. NULL with an error naming it: malformed protobuf, a unigram model, or a normalizer kiln does
 * not reproduce (remove_extra_whitespaces). */
kiln_tokenizer *sp_model_load(const char *path);
/* Writes a sentencepiece-style vocabulary (not BPE byte-level or bytes) as a tokenizer.model, atomically. */
int sp_model_write(const kiln_tokenizer *t, const char *path);

#endif
