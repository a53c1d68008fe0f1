/* Errors: a failing function sets a one-line message and returns -1 (or NULL).
 * The message names the file, flag or value that is wrong; callers add context with kiln_fail again. */
#ifndef KILN_BASE_ERROR_H
#define KILN_BASE_ERROR_H

/* Sets the calling thread's error message (printf-style) and returns -1. */
int kiln_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The calling thread's last error message ("" when none). */
const char *kiln_errmsg(void);

/* Allocation that never returns NULL: out of memory is fatal (prints and aborts). */
void *kiln_xmalloc(unsigned long n);
void *kiln_xcalloc(unsigned long n, unsigned long size);
void *kiln_xrealloc(void *p, unsigned long n);
char *kiln_xstrdup(const char *s);

#endif
