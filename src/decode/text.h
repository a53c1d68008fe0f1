/* The text of a sequence as it is generated: stop strings that may span token boundaries, and
 * streaming in pieces that end on UTF-8 character boundaries. Text is held back only while it could
 * still be the start of a stop string or is an incomplete UTF-8 character; a stop string is never
 * delivered. */
#ifndef KILN_DECODE_TEXT_H
#define KILN_DECODE_TEXT_H

#include <stddef.h>

#include "kiln.h"

typedef struct {
    const char *const *stop;     /* the stop strings (not owned) */
    int n_stop;
    kiln_text_fn fn;             /* NULL: nothing is streamed */
    void *user;
    char *buf;                   /* the text so far, NUL-terminated */
    size_t len, cap;
    size_t sent;                 /* bytes delivered to fn */
    size_t end;                  /* when stopped: where the stop string starts */
    int stopped;                 /* a stop string appeared */
    int cancelled;               /* fn asked to stop */
} decode_text;

void text_init(decode_text *t, const char *const *stop, int n_stop, kiln_text_fn fn, void *user);
void text_free(decode_text *t);
/* DST becomes a copy of SRC (without the callback): beams keep a text each. */
void text_copy(decode_text *dst, const decode_text *src);
/* Appends a token's bytes; streams what became safe. Returns 1 when the text must end (a stop string
 * completed, or the callback asked to stop), else 0. */
int text_append(decode_text *t, const char *piece, size_t len);
/* Whether appending PIECE would complete a stop string (T unchanged). */
int text_would_stop(const decode_text *t, const char *piece, size_t len);
/* Delivers everything not yet delivered, up to a stop string. */
void text_finish(decode_text *t);
/* The final text: up to the stop string when one appeared. */
size_t text_length(const decode_text *t);

#endif
