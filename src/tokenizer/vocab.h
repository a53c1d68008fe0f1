/* The tokenizer's vocabulary as its files share it: the struct behind kiln_tokenizer, and building one
 * from pieces, scores and token types. Private to src/tokenizer/. */
#ifndef KILN_TOKENIZER_VOCAB_H
#define KILN_TOKENIZER_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

/* Token types, numbered as llama.cpp's tokenizer.ggml.token_type (and sentencepiece's piece types). */
enum {
    TOKEN_NORMAL = 1,
    TOKEN_UNKNOWN = 2,
    TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4,
    TOKEN_UNUSED = 5,
    TOKEN_BYTE = 6,
};

/* "▁" (U+2581), sentencepiece's stand-in for a space inside pieces. */
#define SPM_SPACE "\xe2\x96\x81"
#define SPM_SPACE_LEN 3

struct kiln_tokenizer {
    int n_vocab;
    int is_bytes;          /* the 256-id byte vocabulary: encoding copies bytes to ids */
    int bos, eos, unk;     /* -1 when none */
    int add_bos;           /* tokenizer.ggml.add_bos_token: whether callers should prepend BOS */
    int add_space_prefix;  /* sentencepiece's dummy prefix: encode " " + text */
    char *pieces;          /* every piece back to back, sentencepiece form ("▁" for space) */
    size_t *piece_off;
    uint32_t *piece_len;
    float *scores;
    uint8_t *types;
    char *texts;           /* what each token decodes to ("▁" -> " ", byte -> the byte, control -> "") */
    size_t *text_off;
    uint32_t *text_len;
    int32_t byte_id[256];  /* the "<0xXX>" token of each byte, -1 when the vocabulary lacks it */
    int32_t *slots;        /* open-addressing hash of the mergeable pieces: an id, or -1 when empty */
    uint64_t slot_mask;
    uint32_t max_piece_len; /* longest mergeable piece: longer spans need no lookup */
    int split_words;       /* no mergeable piece has a "▁" after another character, so a text can be
                              encoded word by word (split before such a "▁") with the same result */
    struct bpe_model *bpe; /* byte-level BPE (bpe.c): merges and pre-tokenizer; NULL for other vocabularies */
};

/* The piece N_VOCAB tokens are given as: PIECES[i] of LENS[i] bytes (sentencepiece form), SCORES (NULL:
 * all 0), TYPES (NULL: inferred as llama.cpp does for llama2.c files). NAME is used in errors. Byte tokens
 * must read "<0xXX>". Returns NULL with an error naming NAME and the token at fault. */
kiln_tokenizer *vocab_build(const char *name, int n_vocab, const char *const *pieces, const uint32_t *lens,
                            const float *scores, const uint8_t *types, int bos, int eos, int unk);

/* The byte a "<0xXX>" piece stands for, or -1 when P is not one. */
int vocab_piece_byte(const char *p, size_t len);

/* The id of the mergeable piece P (LEN bytes), or -1. */
int vocab_lookup(const kiln_tokenizer *t, const char *p, size_t len);

/* Sentencepiece BPE encoding of TEXT (the dummy prefix and BOS included), as tokenizer_encode. */
int spm_encode(const kiln_tokenizer *t, const char *text, size_t len, int add_bos, int32_t *out, int max);

#endif
