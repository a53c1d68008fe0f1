/* Internals of the public API objects, shared by the files of src/api/ (and by later layers that
 * extend the API in their own files). Not part of include/kiln.h. */
#ifndef KILN_API_API_H
#define KILN_API_API_H

#include "format/gguf.h"
#include "format/model_file.h"
#include "kiln.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

struct kiln_model {
    kiln_config cfg;
    gguf_file *file;
    model_file_weights weights;
    kiln_tokenizer *tok; /* NULL when the file has none */
};

struct kiln_ctx {
    const kiln_model *m;
    kiln_state *state;
    int pos;
    float *logits;
};

#endif
