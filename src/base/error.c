#include "base/error.h"

#include "kiln.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char errmsg[1024];

int kiln_fail(const char *fmt, ...) {
    char buf[sizeof errmsg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap); /* fmt may refer to errmsg itself */
    va_end(ap);
    memcpy(errmsg, buf, sizeof errmsg);
    return -1;
}

const char *kiln_errmsg(void) { return errmsg; }

static void out_of_memory(unsigned long n) {
    fprintf(stderr, "kiln: out of memory allocating %lu bytes\n", n);
    abort();
}

void *kiln_xmalloc(unsigned long n) {
    void *p = malloc(n ? n : 1);
    if (!p) out_of_memory(n);
    return p;
}

void *kiln_xcalloc(unsigned long n, unsigned long size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) out_of_memory(n * size);
    return p;
}

void *kiln_xrealloc(void *p, unsigned long n) {
    p = realloc(p, n ? n : 1);
    if (!p) out_of_memory(n);
    return p;
}

char *kiln_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(kiln_xmalloc(n), s, n);
}

const char *kiln_last_error(void) { return errmsg; }
