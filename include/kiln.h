/* kiln.h — the public C API of libkiln.
 *
 * A model is opened from a GGUF file (memory-mapped: weights are used in place), a context holds the
 * KV cache and logits of one sequence, and a sampler turns logits into a token.
 *
 *     kiln_model *m = kiln_model_open("stories260K.gguf");
 *     if (!m) { fprintf(stderr, "%s\n", kiln_last_error()); exit(1); }
 *     kiln_ctx *c = kiln_ctx_new(m, 0);                     // 0: the model's context length
 *     int32_t toks[256];
 *     int n = kiln_tokenize(m, "Once upon", 9, 1, toks, 256); // 1: prepend BOS
 *     kiln_eval(c, toks, n, NULL);                           // prefill: one matrix-matrix pass
 *     int next = kiln_sample(kiln_logits(c), kiln_model_config(m)->n_vocab, &params, &rng_state);
 *
 * Errors: functions returning int return -1 on error (>= 0 on success); functions returning pointers
 * return NULL. kiln_last_error() then holds a one-line message naming the file, flag or value at fault.
 * The message is per thread. */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The message of the last failed call on this thread. */
const char *kiln_last_error(void);

/* Number of threads used by the forward pass (default: all cores). */
void kiln_set_threads(int n);
int kiln_get_threads(void);

/* ---- Model configuration: one transformer, the GPT-2 and llama families as settings ---- */
typedef enum { KILN_NORM_RMS = 0, KILN_NORM_LAYER = 1 } kiln_norm_type;
typedef enum { KILN_POS_ROPE = 0, KILN_POS_LEARNED = 1 } kiln_pos_type;
typedef enum { KILN_ACT_SWIGLU = 0, KILN_ACT_GELU = 1 } kiln_act_type;
typedef enum { KILN_ROPE_INTERLEAVED = 0, KILN_ROPE_NEOX = 1 } kiln_rope_style;

typedef struct {
    char arch[32];          /* GGUF general.architecture: "llama", "qwen2", "gpt2" */
    int n_vocab;
    int dim;                /* embedding width */
    int n_layers;
    int n_heads;
    int n_kv_heads;         /* == n_heads: MHA; 1: MQA; between: GQA */
    int head_dim;           /* need not be dim / n_heads */
    int ffn_dim;            /* hidden width of the MLP */
    int ctx_len;            /* trained context length */
    kiln_norm_type norm;
    kiln_pos_type pos;
    kiln_act_type act;
    kiln_rope_style rope_style;
    int rope_dim;           /* dimensions of each head that are rotated (== head_dim for llama) */
    float rope_theta;
    float norm_eps;
    int qkv_bias;           /* q/k/v projections have biases */
    int out_bias;           /* attention output and MLP projections have biases (GPT-2) */
    int tied_output;        /* the output head is the token embedding */
} kiln_config;

/* Tensor element types, numbered as in GGUF/ggml. */
typedef enum { KILN_TYPE_F32 = 0, KILN_TYPE_F16 = 1, KILN_TYPE_BF16 = 30 } kiln_type;

/* ---- Models ---- */
typedef struct kiln_model kiln_model;

/* Opens a GGUF model file (mmap). The tokenizer, if the file has one, comes with it. */
kiln_model *kiln_model_open(const char *path);
void kiln_model_close(kiln_model *m);
const kiln_config *kiln_model_config(const kiln_model *m);
/* Bytes of the KV cache per token of context (f32 keys and values, all layers). */
size_t kiln_model_kv_bytes_per_token(const kiln_model *m);
/* Bytes of weights read to decode one token (every matrix once, embeddings one row). */
size_t kiln_model_weight_bytes(const kiln_model *m);

/* The tensors of the model file, for inspection. */
typedef struct {
    const char *name;       /* not NUL-terminated: NAME_LEN bytes */
    size_t name_len;
    const char *type;       /* "F32", "F16", "BF16", ... */
    int n_dims;
    int64_t ne[4];          /* GGUF order: ne[0] varies fastest */
    size_t nbytes;
} kiln_tensor_info;
int kiln_model_n_tensors(const kiln_model *m);
int kiln_model_tensor(const kiln_model *m, int i, kiln_tensor_info *out);
/* Size of the model file in bytes. */
size_t kiln_model_file_size(const kiln_model *m);

/* ---- Tokenizer of a model ---- */
/* Encodes TEXT (LEN bytes) into at most MAX ids; ADD_BOS prepends the BOS id when the vocabulary has
 * one. Returns the number of ids, or -1 (also when MAX is too small). */
int kiln_tokenize(const kiln_model *m, const char *text, size_t len, int add_bos, int32_t *out, int max);
/* The bytes that token TOK adds to the text after token PREV (-1 at the start): sentencepiece drops the
 * leading space after BOS, byte tokens give their byte. Sets *LEN; the pointer stays valid with the model. */
const char *kiln_token_text(const kiln_model *m, int prev, int tok, size_t *len);
int kiln_token_bos(const kiln_model *m); /* -1 when none */
int kiln_token_eos(const kiln_model *m); /* -1 when none */

/* ---- Contexts: a sequence's KV cache and logits ---- */
typedef struct kiln_ctx kiln_ctx;

/* A context of N_CTX positions (0: the model's ctx_len). */
kiln_ctx *kiln_ctx_new(const kiln_model *m, int n_ctx);
void kiln_ctx_free(kiln_ctx *c);
/* Runs the N tokens at positions pos..pos+N-1 (one matrix-matrix pass when N > 1) and advances pos.
 * Afterwards kiln_logits gives the logits after the last token. If ALL_LOGITS is not NULL it receives
 * N * n_vocab floats: the logits after each of the N tokens. Fails if the context would overflow. */
int kiln_eval(kiln_ctx *c, const int32_t *tokens, int n, float *all_logits);
float *kiln_logits(kiln_ctx *c);
int kiln_ctx_pos(const kiln_ctx *c);
/* Forgets positions >= POS (rolls the KV cache back). */
int kiln_ctx_truncate(kiln_ctx *c, int pos);

/* ---- Sampling ---- */
typedef struct {
    float temperature;      /* 0: greedy (argmax) */
    int top_k;              /* 0: off */
    float top_p;            /* 1: off */
    uint64_t seed;
} kiln_sampling;

/* Checks the parameters; -1 with a message naming the bad one. */
int kiln_sampling_check(const kiln_sampling *s);
/* Picks a token from LOGITS (N values; they may be modified). *STATE advances: start it at s->seed. */
int kiln_sample(float *logits, int n, const kiln_sampling *s, uint64_t *state);

/* ---- Files ---- */
/* Converts a llama2.c checkpoint (+ its tokenizer.bin, or NULL) to a GGUF model file, atomically, with
 * matrices stored as TYPE (norms stay F32). */
int kiln_convert_llama2c(const char *ckpt_path, const char *tokenizer_path, const char *out_path, kiln_type type);

#ifdef __cplusplus
}
#endif
#endif
