/* Hugging Face tokenizer files: sentencepiece's tokenizer.model (Llama 2, Gemma), tokenizer.json (the
 * tokenizers library's format: byte-level BPE such as GPT-2, llama 3, Qwen) or GPT-2's vocab.json +
 * merges.txt (also named encoder.json + vocab.bpe), with tokenizer_config.json for the special tokens. */
#ifndef KILN_TOKENIZER_HF_TOKENIZER_H
#define KILN_TOKENIZER_HF_TOKENIZER_H

#include <stddef.h>

#include "tokenizer/tokenizer.h"

/* Loads PATH: a tokenizer.json file, or a directory holding tokenizer.model (preferred), tokenizer.json or
 * vocab.json + merges.txt.
 * NULL with an error naming the file and what is wrong; in a directory with none of them, NULL with the
 * error "no tokenizer files" (hf_tokenizer_absent then says so). */
kiln_tokenizer *hf_tokenizer_load(const char *path);
int hf_tokenizer_absent(const char *dir);
/* Parses the LEN bytes of a tokenizer.json (NAME in errors); CONFIG: tokenizer_config.json text or NULL. */
kiln_tokenizer *hf_tokenizer_parse(const char *json, size_t len, const char *config, const char *name);
/* Writes DIR/tokenizer_config.json and DIR/tokenizer.json (byte-level BPE) or DIR/tokenizer.model
 * (sentencepiece-style vocabularies). */
int hf_tokenizer_write(const kiln_tokenizer *t, const char *dir);

#endif
