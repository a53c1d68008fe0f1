/* Inline code suggestions for `kiln complete`: the rest of the line after the cursor, as ghost text.
 *
 * The suggestion is the greedy continuation scored as in the seed demo: among its prefixes, the one with
 * the largest length x probability (length in bytes, probability the product of the greedy tokens'
 * probabilities); the search stops at a newline, at MAX_LEN bytes, or when no longer prefix can win
 * (even MAX_LEN bytes at the current probability would score less than the best so far).
 *
 * It is incremental: the KV cache holds the text and the greedy path after it. When the new text is the
 * old one plus the first bytes of the path (the user typed what was suggested) nothing is evaluated
 * and the path is reused; otherwise the cache is rolled back to the longest common prefix of tokens and
 * only what follows is fed (a backspace costs one token). Byte-level models without a tokenizer
 * (n_vocab 256) read each byte as its token, after a 0 as in the seed. */
#ifndef KILN_API_SUGGEST_H
#define KILN_API_SUGGEST_H

#include <stddef.h>

#include "kiln.h"

typedef struct kiln_suggester kiln_suggester;

/* Suggestions of at most MAX_LEN bytes from model M (its whole context window; the text before the
 * cursor is cut to fit). NULL with a message when M has neither a tokenizer nor 256 tokens. */
kiln_suggester *kiln_suggester_new(const kiln_model *m, int max_len);
void kiln_suggester_free(kiln_suggester *s);
/* The suggestion after TEXT (LEN bytes, the text before the cursor), NUL-terminated, valid until the
 * next call; NULL with a message on failure. */
const char *kiln_suggest(kiln_suggester *s, const char *text, size_t len);
/* Tokens evaluated by the last kiln_suggest call (the cost of the keystroke). */
int kiln_suggest_evaluated(const kiln_suggester *s);

#endif
