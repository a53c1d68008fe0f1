/* Background writes: full buffers are queued and written in order by one thread, so that the copy into
 * the page cache overlaps the work that fills the next buffer. Buffers come from a bounded pool, which
 * bounds the memory. Unthreaded, each write happens at once, in the same order: what the files hold
 * never depends on the thread. */
#ifndef KILN_DATA_BGWRITE_H
#define KILN_DATA_BGWRITE_H

#include <stddef.h>

typedef struct kiln_bgwrite kiln_bgwrite;

/* WHAT prefixes error messages ("out.txt: write failed"); it must outlive the writer. */
kiln_bgwrite *kiln_bgwrite_new(int threaded, const char *what);
/* Waits for the queued writes, then frees everything. */
void kiln_bgwrite_free(kiln_bgwrite *w);

/* Waits for the queued writes, then makes the pool N buffers of SIZE bytes (all must be back). */
int kiln_bgwrite_pool(kiln_bgwrite *w, int n, size_t size);

/* A free buffer of the pool (waits until one is). */
char *kiln_bgwrite_get(kiln_bgwrite *w);
/* Gives back a buffer that is not to be written. */
void kiln_bgwrite_release(kiln_bgwrite *w, char *buf);
/* Queues LEN bytes of BUF (from get) for FD; BUF returns to the pool once written. WRITEBACK: then also
 * start writing FD's dirty pages to disk. Returns -1 (and releases BUF) if a write has failed. */
int kiln_bgwrite_put(kiln_bgwrite *w, int fd, char *buf, size_t len, int writeback);
/* Waits until every queued write is done. Returns -1 with the message if one failed. */
int kiln_bgwrite_wait(kiln_bgwrite *w);

#endif
