/* Hugging Face checkpoints: a directory with config.json and safetensors weights (model.safetensors, or
 * shards listed by model.safetensors.index.json). Each supported architecture is one row of a table
 * (hf_config.c) that names its GGUF architecture, its tensor layout and its quirks; import and export
 * (hf_import.c, hf_export.c) walk one tensor table per layout in either direction. */
#ifndef KILN_FORMAT_HF_H
#define KILN_FORMAT_HF_H

#include <jansson.h>

#include "format/gguf.h"
#include "format/model_file.h"
#include "format/safetensors.h"
#include "model/transformer.h"

/* How the checkpoint names and packs its tensors. */
typedef enum {
    HF_LAYOUT_LLAMA,    /* model.layers.N.self_attn.q_proj, mlp.gate_proj, ... */
    HF_LAYOUT_PHI3,     /* fused self_attn.qkv_proj and mlp.gate_up_proj */
    HF_LAYOUT_BAICHUAN, /* fused self_attn.W_pack (q, k, v) */
    HF_LAYOUT_GPT2,     /* h.N.attn.c_attn, Conv1D weights stored [in, out] */
} hf_layout;

/* Quirks, as flags of a family. */
enum {
    HF_PERMUTE_QK = 1,    /* HF rotates halves, the GGUF architecture pairs: q/k rows are permuted as
                             llama.cpp's convert_hf_to_gguf does */
    HF_NORM_PLUS_ONE = 2, /* RMSNorm multiplies by 1 + w (Gemma): stored as 1 + w, as llama.cpp does */
    HF_NORM_HEAD = 4,     /* lm_head rows are L2-normalized before use (Baichuan 2): stored normalized */
    HF_SCORE_HEAD = 8,    /* a sequence-classification / reward model: score.weight, no lm_head */
};

typedef struct {
    const char *name;       /* config.json architectures[0] */
    const char *model_type; /* config.json model_type written on export */
    const char *arch;       /* GGUF general.architecture */
    hf_layout layout;
    unsigned quirks;
} hf_family;

/* The family of architecture NAME, or NULL with an error listing the supported ones. */
const hf_family *hf_family_find(const char *name);
/* The family a GGUF model exports as: by its architecture, a score head and a sliding window. */
const hf_family *hf_family_for_export(const kiln_config *c);

/* config.json of DIR into C and *FAM. -1 with an error naming the file and the key at fault. */
int hf_config_read(const char *dir, kiln_config *c, const hf_family **fam);
/* The same from the LEN bytes of TEXT; PATH is used in errors. */
int hf_config_parse(const char *text, size_t len, const char *path, kiln_config *c, const hf_family **fam);
/* The config.json of C for family FAM (a new reference); BOS/EOS ids are added when >= 0. TORCH_DTYPE
 * names the stored type ("float32", "bfloat16", "float16"). */
json_t *hf_config_json(const kiln_config *c, const hf_family *fam, int bos, int eos, const char *torch_dtype);

/* The weights of a checkpoint: every safetensors file of it, and which tensor lives where. */
typedef struct {
    char *dir;
    int n_files;
    st_file **files;
} hf_weights;

/* Opens DIR/model.safetensors, or every shard DIR/model.safetensors.index.json lists (each must exist,
 * and every tensor the index names must be in its shard). */
int hf_weights_open(hf_weights *hw, const char *dir);
void hf_weights_close(hf_weights *hw);
/* The tensor NAME in any file, or NULL. */
const st_tensor *hf_weights_find(const hf_weights *hw, const char *name);

/* Imports the model of DIR (config C and family FAM, from hf_config_read) into W: configuration keys and
 * tensors under llama.cpp's names, matrices stored as TYPE (-1: as in the checkpoint), vectors as F32.
 * Tensors may reference HW's maps: HW must stay open until W is written. */
int hf_import(const hf_weights *hw, const kiln_config *c, const hf_family *fam, int type, gguf_writer *w);

/* Writes the weights of G (configuration C) as DIR/model.safetensors and DIR/config.json. */
int hf_export(const gguf_file *g, const kiln_config *c, int bos, int eos, const char *dir);

#endif
