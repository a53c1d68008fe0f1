/* Tokenizers: byte-level (256 ids, one per byte: kiln's own models), the sentencepiece-style scored
 * vocabulary (llama/llama2.c: pieces with scores, merged greedily by best score, "<0xXX>" byte-fallback
 * pieces, "▁" for space, a dummy-prefix space), and byte-level BPE (GPT-2, llama 3, Qwen: bpe.c).
 * All travel in GGUF as tokenizer.ggml.* metadata (llama.cpp's keys: model "llama" or "gpt2"). */
#ifndef KILN_TOKENIZER_H
#define KILN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "format/gguf.h"

typedef struct kiln_tokenizer kiln_tokenizer;

/* The 256-id byte-level vocabulary: id b is byte b; no BOS/EOS. */
kiln_tokenizer *tokenizer_new_bytes(void);
/* llama2.c tokenizer.bin (u32 max_token_length; per token: f32 score, i32 len, bytes) of N_VOCAB
 * tokens; ids 0,1,2 are <unk>,<s>,</s>. NULL with an error naming PATH. */
kiln_tokenizer *tokenizer_load_llama2c(const char *path, int n_vocab);
/* From tokenizer.ggml.* of G. NULL (no error) when G has no tokenizer.ggml.model; NULL with an error
 * when it has a malformed or unsupported one. A "llama" vocabulary of exactly the 256 byte tokens
 * "<0x00>".."<0xFF>" in order is the byte-level one. */
kiln_tokenizer *tokenizer_from_gguf(const gguf_file *g);
/* Writes tokenizer.ggml.* (model, tokens, token_type, bos/eos/unk ids, add_bos_token; scores and
 * add_space_prefix for "llama", merges and pre for "gpt2") so llama.cpp reads them too. */
void tokenizer_to_gguf(const kiln_tokenizer *t, gguf_writer *w);
void tokenizer_free(kiln_tokenizer *t);

int tokenizer_n_vocab(const kiln_tokenizer *t);
int tokenizer_bos(const kiln_tokenizer *t); /* -1 when none */
int tokenizer_eos(const kiln_tokenizer *t);
/* Whether the vocabulary asks for BOS at the start of a text (tokenizer.ggml.add_bos_token). */
int tokenizer_add_bos(const kiln_tokenizer *t);

/* Encodes LEN bytes of TEXT; ADD_BOS prepends BOS where the vocabulary has one. Returns the number of
 * ids written to OUT, or -1 if more than MAX would be needed (error says so). */
int tokenizer_encode(const kiln_tokenizer *t, const char *text, size_t len, int add_bos, int32_t *out, int max);
/* The bytes token TOK contributes after PREV (-1 at start): byte tokens give their byte, "▁" becomes a
 * space, and the leading space of the first piece after BOS is dropped (sentencepiece's dummy prefix).
 * Control tokens (BOS, EOS, UNK) give "". The pointer lives as long as T. */
const char *tokenizer_decode(const kiln_tokenizer *t, int prev, int tok, size_t *len);

#endif
