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

/* Number of threads used by the forward pass (default: all cores). OpenMP keeps this per calling thread:
 * a program that runs models from several threads calls it in each of them. */
void kiln_set_threads(int n);
int kiln_get_threads(void);

/* ---- Model configuration: one transformer, the GPT-2 and llama families as settings ---- */
typedef enum { KILN_NORM_RMS = 0, KILN_NORM_LAYER = 1 } kiln_norm_type;
typedef enum { KILN_POS_ROPE = 0, KILN_POS_LEARNED = 1 } kiln_pos_type;
/* SWIGLU: silu(gate) * up; GELU: gelu(up) (GPT-2, no gate); GEGLU: gelu(gate) * up (Gemma). */
typedef enum { KILN_ACT_SWIGLU = 0, KILN_ACT_GELU = 1, KILN_ACT_GEGLU = 2 } kiln_act_type;
typedef enum { KILN_ROPE_INTERLEAVED = 0, KILN_ROPE_NEOX = 1 } kiln_rope_style;
/* How RoPE frequencies are stretched past the trained context (Hugging Face's rope_scaling types):
 * LINEAR divides every frequency by the factor; DYNAMIC (NTK) raises the base once the context exceeds
 * the original one; NTK raises the base by factor^(d/(d-2)) always; YARN blends interpolated and
 * original frequencies by wavelength and scales attention; LLAMA3 divides low frequencies by the factor
 * and blends the middle band. */
typedef enum {
    KILN_ROPE_SCALING_NONE = 0, KILN_ROPE_SCALING_LINEAR, KILN_ROPE_SCALING_DYNAMIC, KILN_ROPE_SCALING_NTK,
    KILN_ROPE_SCALING_YARN, KILN_ROPE_SCALING_LLAMA3,
} kiln_rope_scaling;

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
    /* Family quirks of imported models; all zero means none. */
    int sliding_window;     /* a query attends to the last N positions only, itself included (Mistral) */
    float embd_scale;       /* token embeddings are multiplied by this (Gemma: sqrt(dim)); 0: by 1 */
    kiln_rope_scaling rope_scaling;
    float rope_factor;      /* the scaling factor (context extension ratio) */
    int rope_orig_ctx;      /* context the model was trained with before scaling (0: ctx_len) */
    float rope_attn_factor; /* YaRN: multiplies cos and sin (0: 0.1 ln(factor) + 1) */
    float yarn_beta_fast, yarn_beta_slow; /* YaRN ramp bounds in rotations (0: 32 and 1) */
    float rope_low_freq, rope_high_freq;  /* llama3: low_freq_factor and high_freq_factor */
    int attn_logn;          /* queries past the trained context (rope_orig_ctx, else ctx_len) are scaled by
                               log(pos+1)/log(trained) (Qwen's logn attention) */
    int n_cls;              /* outputs of a sequence-classification / reward head (0: none) */
} kiln_config;

/* Tensor element types, numbered as in GGUF/ggml: the float types, and the quantized block types kiln
 * reads, writes and computes with (layouts in src/kernels/quant.h). */
typedef enum {
    KILN_TYPE_F32 = 0,
    KILN_TYPE_F16 = 1,
    KILN_TYPE_Q4_0 = 2,
    KILN_TYPE_Q8_0 = 8,
    KILN_TYPE_Q4_K = 12,
    KILN_TYPE_Q6_K = 14,
    KILN_TYPE_BF16 = 30
} kiln_type;

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

/* ---- Decoding: logits processors, searches, speculative decoding, stopping and streaming ----
 *
 *     kiln_gen_params p;
 *     kiln_gen_defaults(&p);                        // greedy, 256 new tokens, every processor off
 *     p.search = KILN_SEARCH_SAMPLE, p.temperature = 0.7f, p.top_p = 0.9f, p.seed = 42;
 *     kiln_gen_result r;
 *     if (kiln_generate(c, toks, n, &p, &r) < 0) fprintf(stderr, "%s\n", kiln_last_error());
 *     printf("%s\n", r.seqs[0].text);
 *     kiln_gen_result_free(&r);
 *
 * Processors follow Hugging Face transformers' LogitsProcessor semantics (llama.cpp's where HF has
 * none; presence/frequency penalties are OpenAI's) and run as a chain in the order of `samplers`.
 * Greedy and beam searches run the constraints and penalties but not the warpers (temperature, top-k,
 * top-p, min-p, typical-p), which only shape distributions that are sampled. Beam searches apply the
 * chain to log-probabilities, as HF does. Sampling draws from a counter-based generator keyed by the
 * seed: the same seed gives the same text whatever the thread count. docs/DECODING.md has the details. */

typedef enum {
    KILN_SEARCH_GREEDY = 0,
    KILN_SEARCH_SAMPLE = 1,
    KILN_SEARCH_BEAM = 2,            /* diverse (group) beam search when num_beam_groups > 1 */
    KILN_SEARCH_STOCHASTIC_BEAM = 3, /* Gumbel-top-k (Kool et al. 2019): num_beams samples without replacement */
} kiln_search;

/* When beam search stops (HF's early_stopping): HEURISTIC (False) once the best running beam, scored at
 * its current length, cannot beat the worst finished one; TRUE as soon as num_beams hypotheses are
 * finished; NEVER only when no running beam can become better (the canonical beam search). */
typedef enum { KILN_EARLY_STOP_HEURISTIC = 0, KILN_EARLY_STOP_TRUE = 1, KILN_EARLY_STOP_NEVER = 2 } kiln_early_stopping;

/* Speculative decoding: REJECTION accepts a drafted token with probability min(1, p/q) and resamples
 * from max(0, p - q) on rejection (the output follows the target's distribution exactly); EXACT is HF's
 * "assisted" check: the draft proposes its most probable tokens and the target keeps those equal to
 * its own choice; NGRAM drafts by prompt lookup (the tokens that followed the latest earlier occurrence
 * of the last n-gram), with no draft model. */
typedef enum { KILN_SPEC_OFF = 0, KILN_SPEC_REJECTION = 1, KILN_SPEC_EXACT = 2, KILN_SPEC_NGRAM = 3 } kiln_spec_mode;

typedef enum {
    KILN_STOP_LENGTH = 0,   /* max_new_tokens reached */
    KILN_STOP_TOKEN = 1,    /* a stop token (EOS) was generated */
    KILN_STOP_STRING = 2,   /* a stop string appeared in the text */
    KILN_STOP_TIME = 3,     /* max_time passed */
    KILN_STOP_CALLBACK = 4, /* the text callback asked to stop */
    KILN_STOP_CONTEXT = 5,  /* the context is full */
} kiln_stop_reason;

typedef struct {
    int32_t token;
    float bias;             /* added to the token's logit; -INFINITY bans it */
} kiln_logit_bias;

/* Receives generated text as it is produced, in pieces that never end inside a UTF-8 character and
 * never contain (a prefix of) a stop string that may still complete. Returns 0 to go on, else stops. */
typedef int (*kiln_text_fn)(void *user, const char *text, size_t len);

typedef struct {
    kiln_search search;
    uint64_t seed;
    /* Stopping */
    int max_new_tokens;             /* >= 1; generation also stops when the context is full */
    double max_time;                /* seconds of decoding; 0: no limit */
    const int32_t *stop_tokens;     /* NULL: the model's EOS and BOS (a BOS would start a new text);
                                       an array with n_stop_tokens 0: none */
    int n_stop_tokens;
    const char *const *stop_strings; /* the text ends before the first occurrence of any of them */
    int n_stop_strings;
    kiln_text_fn on_text;           /* streaming, for single-sequence greedy, sampling and speculative */
    void *user;
    /* Logits processors. `samplers` is the chain's order: names separated by ',' or ';' from
     * logit_bias banned repetition_penalty presence_penalty frequency_penalty no_repeat_ngram
     * min_new_tokens temperature top_k top_p min_p typical_p (that list is the default order). A
     * processor that is set but not named is an error. */
    const char *samplers;
    float temperature;              /* > 0 when sampling; 1: off */
    int top_k;                      /* keep the K largest logits (and ties with the K-th); 0: off */
    float top_p;                    /* (0, 1]: the smallest set reaching P, the crossing token included; 1: off */
    float min_p;                    /* [0, 1]: drop tokens less probable than min_p * the most probable; 0: off */
    float typical_p;                /* (0, 1]: locally typical sampling; 1: off */
    int min_tokens_to_keep;         /* top-k, top-p, min-p and typical-p keep at least this many (>= 1) */
    float repetition_penalty;       /* > 0: tokens of the prompt and output: logit > 0 divided, < 0 multiplied; 1: off */
    float presence_penalty;         /* [-2, 2]: subtracted once from each token already generated */
    float frequency_penalty;        /* [-2, 2]: subtracted per occurrence in the generated tokens */
    int no_repeat_ngram;            /* N > 0: no N-gram (prompt included) occurs twice */
    int min_new_tokens;             /* stop tokens are masked until this many tokens are generated */
    const kiln_logit_bias *logit_bias;
    int n_logit_bias;
    const int32_t *banned_tokens;
    int n_banned_tokens;
    /* Beam searches */
    int num_beams;                  /* >= 1 */
    float length_penalty;           /* a hypothesis scores sum(log p) / generated_length^length_penalty */
    kiln_early_stopping early_stopping;
    int num_beam_groups;            /* diverse beam search: num_beams is split into this many groups */
    float diversity_penalty;        /* >= 0: Hamming diversity, subtracted per use of a token by earlier groups */
    int num_return;                 /* sequences returned (<= num_beams for beam searches; samples when sampling) */
    /* Speculative decoding (greedy or sampling, one sequence) */
    kiln_spec_mode spec;
    kiln_ctx *draft;                /* REJECTION, EXACT: a context of the draft model (same vocabulary) */
    int draft_n;                    /* tokens drafted per round, 1 to 64 */
    int ngram_max;                  /* NGRAM: longest n-gram looked up, 1 to 16 */
} kiln_gen_params;

/* Greedy search, 256 new tokens, seed 0, every processor off (temperature 1, top_p 1, ...), one beam,
 * length penalty 1, heuristic early stopping, one sequence, no speculation (draft_n 4, ngram_max 3). */
void kiln_gen_defaults(kiln_gen_params *p);
/* Checks P for a model of N_VOCAB tokens: -1 with a message naming the parameter and its range. */
int kiln_gen_check(const kiln_gen_params *p, int n_vocab);

typedef struct {
    int32_t *tokens;                /* the generated tokens, a final stop token excluded */
    int n_tokens;
    char *text;                     /* their text, NUL-terminated, cut before a stop string */
    size_t text_len;
    double logprob;                 /* sum of the log-probabilities, under the processed distributions,
                                       of every generated token (a final stop token included) */
    double score;                   /* what the search ranks by: logprob (greedy, sampling), the length-
                                       penalised score (beams), the Gumbel key (stochastic beams) */
    kiln_stop_reason stop;
} kiln_gen_sequence;

typedef struct {
    kiln_gen_sequence *seqs;        /* best first (sampling: in the order drawn) */
    int n_seqs;
    double prefill_s, decode_s;     /* seconds */
    int n_forward;                  /* forward passes of the target model after the prompt */
    int n_drafted, n_accepted;      /* speculative decoding: tokens proposed and accepted */
} kiln_gen_result;

/* Generates from PROMPT (N_PROMPT >= 1 tokens, evaluated at C's position). C's position is restored
 * before returning, so a context can hold a shared prefix. For speculative decoding p->draft is
 * treated the same way. -1 with a message on bad parameters or a failed evaluation. */
int kiln_generate(kiln_ctx *c, const int32_t *prompt, int n_prompt, const kiln_gen_params *p, kiln_gen_result *out);
void kiln_gen_result_free(kiln_gen_result *r);

/* The processor chain of P on one row of LOGITS (N_VOCAB values, in place; removed tokens become
 * -INFINITY). TOKENS holds the sequence so far: N_PROMPT prompt tokens then the generated ones.
 * SAMPLING: whether the warpers run. min_new_tokens masks p->stop_tokens (NULL here: none). */
int kiln_process_logits(const kiln_gen_params *p, int sampling, const int32_t *tokens, int n_tokens, int n_prompt,
                        float *logits, int n_vocab);

/* ---- Token healing ----
 * A prompt that stops inside what would be one token ("import num": ... " num", where text has
 * " numpy") leaves the model a continuation it rarely saw ("py" after " num"). Healing removes the
 * prompt's last tokens (up to 4, never BOS/EOS) while some token's text extends their text, and makes the
 * next tokens' bytes start with the removed ones. A healer indexes a model's vocabulary for this. */
typedef struct kiln_healer kiln_healer;
kiln_healer *kiln_healer_new(const kiln_model *m); /* NULL when the model has no tokenizer */
void kiln_healer_free(kiln_healer *h);
/* The number of PROMPT's N tokens to keep; the bytes of the removed ones (at most CAP) go to PREFIX. */
int kiln_heal_prompt(const kiln_healer *h, const int32_t *prompt, int n, char *prefix, size_t cap, size_t *len);
/* Sets LOGITS of tokens that cannot come next while PREFIX (LEN bytes) is pending to -INFINITY: kept are
 * tokens whose text starts with PREFIX or is a proper prefix of it. Returns how many are kept. */
int kiln_heal_mask(const kiln_healer *h, const char *prefix, size_t len, float *logits);
/* kiln_generate with healing: the removed tail is regenerated first (the most probable allowed token at
 * each step, after P's non-warping processors), then generation goes on from the healed prompt. Returned
 * sequences start with the healed tokens, and their text with the healed bytes past the prompt's text
 * ("py" for "import num" healed to " numpy"), so prompt text + result text is the completion. */
int kiln_generate_healed(kiln_ctx *c, const kiln_healer *h, const int32_t *prompt, int n, const kiln_gen_params *p,
                         kiln_gen_result *out);

/* The model a context runs, and its size in positions. */
const kiln_model *kiln_ctx_model(const kiln_ctx *c);
int kiln_ctx_size(const kiln_ctx *c);

/* ---- Forks: contexts that share a prefix of the KV cache copy-on-write ----
 * kiln_fork_new makes N contexts that start as copies of BASE (its cache up to its position, and its
 * logits). The prefix is copied once into shared memory that every branch maps copy-on-write, so N
 * branches of a long prompt cost one copy of it, plus the pages each branch writes. Branches are
 * ordinary contexts for kiln_eval, kiln_logits and kiln_ctx_truncate, but belong to the fork: free
 * them with kiln_fork_free, never kiln_ctx_free, and do not roll one back before the shared prefix. */
typedef struct kiln_fork kiln_fork;
kiln_fork *kiln_fork_new(kiln_ctx *base, int n);
kiln_ctx *kiln_fork_ctx(kiln_fork *f, int i);
/* Branch DST becomes a copy of branch SRC (position, cache, logits), copying only what follows the
 * shared prefix: how beams reorder. */
int kiln_fork_copy(kiln_fork *f, int dst, int src);
void kiln_fork_free(kiln_fork *f);

/* The score head (sequence classification / reward model, config n_cls > 0) on the last token evaluated
 * in C: n_cls values into OUT. */
int kiln_score(kiln_ctx *c, float *out);

/* Converts a Hugging Face checkpoint directory (config.json, safetensors weights, tokenizer.json when
 * present) to a GGUF model file with llama.cpp's names, atomically. TYPE: storage of the matrices, or -1
 * to keep the checkpoint's. Supported classes are listed in the error for any other. */
int kiln_convert_hf(const char *dir, const char *out_path, int type);
/* Writes a GGUF model as a Hugging Face checkpoint directory: model.safetensors, config.json and, when
 * the model has a tokenizer, its tokenizer files. */
int kiln_export_hf(const char *model_path, const char *dir);
/* Rewrites a GGUF model as architecture ARCH where the math allows: llama <-> qwen2. */
int kiln_convert_arch(const char *model_path, const char *arch, const char *out_path);
/* Splits a GGUF model into TP x PP Megatron-style shards in DIR (src/format/shard.h has the layout), and
 * merges such a folder back into the GGUF model it came from, byte for byte. */
int kiln_shard(const char *model_path, int tp, int pp, const char *dir);
int kiln_merge(const char *dir, const char *out_path);

#ifdef __cplusplus
}
#endif
#endif
