/* Byte-level BPE (GPT-2, llama 3, Qwen): text is split on added tokens, then by the pre-tokenizer regex
 * (PCRE2, Unicode properties) into words; each word's bytes are merged by rank (the lowest-ranked
 * adjacent pair first, leftmost on ties) into vocabulary tokens.
 *
 * Pieces are kept as Hugging Face and llama.cpp store them: normal tokens in the byte-level alphabet
 * (each byte a printable character: " " is "Ġ", "\n" is "Ċ"), added tokens (control and user-defined)
 * as their literal text. A token's text (what decoding gives) is its bytes. Private to src/tokenizer/. */
#ifndef KILN_TOKENIZER_BPE_H
#define KILN_TOKENIZER_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer/vocab.h"

/* The pre-tokenizer regexes kiln knows by llama.cpp's tokenizer.ggml.pre names. */
extern const char *const BPE_REGEX_GPT2, *const BPE_REGEX_LLAMA3, *const BPE_REGEX_QWEN2;

typedef struct {
    int n_vocab;
    const char *const *pieces;   /* as stored (byte-level alphabet for normal tokens) */
    const uint32_t *lens;
    const uint8_t *types;        /* TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED (NULL: all normal) */
    int n_merges;
    const char *const *merges;   /* "a b": two pieces joined by a space, by rank */
    const uint32_t *merge_lens;
    const char *regex;           /* the pre-tokenizer; NULL: the GPT-2 one */
    const char *pre;             /* llama.cpp's name for it, or NULL (derived from REGEX when known) */
    int ignore_merges;           /* a word that is itself a token is that token (llama 3) */
    int bos, eos, unk, add_bos;
} bpe_spec;

/* Builds a byte-level BPE tokenizer. NULL with an error naming NAME and the token or merge at fault. */
kiln_tokenizer *bpe_build(const char *name, const bpe_spec *s);
void bpe_free(struct bpe_model *b);

/* Encodes as tokenizer_encode does. */
int bpe_encode(const kiln_tokenizer *t, const char *text, size_t len, int add_bos, int32_t *out, int max);

/* The merges of T ("a b" as stored) for writing them elsewhere: *N of them, strings malloc'd in one block
 * (free the returned array and its first string's block with bpe_merges_free). */
char **bpe_merge_strings(const kiln_tokenizer *t, int *n);
void bpe_merges_free(char **m);
const char *bpe_regex(const kiln_tokenizer *t);
const char *bpe_pre(const kiln_tokenizer *t); /* llama.cpp's tokenizer.ggml.pre name ("default" if unknown) */
int bpe_ignore_merges(const kiln_tokenizer *t);

/* The GPT-2 byte-level alphabet: the character of byte B as UTF-8 into OUT (1 or 2 bytes, returns the
 * length); and the byte of the character at P (N bytes available), -1 if not in the alphabet, with its
 * length in *LEN. */
int bpe_byte_char(int b, char out[2]);
int bpe_char_byte(const unsigned char *p, size_t n, int *len);

#endif
