/* Files: read-only memory maps, whole-file reads, and atomic writes (temp file, fsync, rename). */
#ifndef KILN_BASE_FILE_H
#define KILN_BASE_FILE_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    const unsigned char *data; /* NULL for an empty file */
    size_t size;
} kiln_map;

/* Maps PATH read-only. Returns 0, or -1 with an error naming PATH. */
int kiln_map_open(kiln_map *m, const char *path);
void kiln_map_close(kiln_map *m);

/* Reads all of PATH into a malloc'd buffer (NUL-terminated). Returns NULL with an error. */
char *kiln_read_file(const char *path, size_t *size);

/* Atomic write: kiln_atomic_open creates PATH.tmp.PID; kiln_atomic_commit flushes, fsyncs and renames
 * it over PATH (and fsyncs the directory); kiln_atomic_abort removes it. */
typedef struct {
    FILE *f;
    char *path, *tmp;
} kiln_atomic;
int kiln_atomic_open(kiln_atomic *a, const char *path);
int kiln_atomic_commit(kiln_atomic *a);
void kiln_atomic_abort(kiln_atomic *a);

/* Seconds since an arbitrary epoch, monotonic. */
double kiln_now(void);

#endif
