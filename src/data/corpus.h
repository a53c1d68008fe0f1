/* A training corpus of source files: their bytes in one file, with an index of files and channels.
 *
 * Building walks directories (sorted, so the result depends only on the files), keeps files whose
 * name matches the globs, skips binary files (a NUL byte), files over a size limit and exact
 * duplicates (the first in walk order is kept), and puts each file in the train or valid split by a
 * hash of its path (so a file never straddles the splits, and a file keeps its split when others
 * come and go). Every file is tagged with a channel: by default the first directory under the DIR it
 * was found in, or the DIR's own name for files directly in it.
 *
 * File layout (little-endian):
 *   header (80 bytes): "KILNCORP", u32 version (1), u32 n_channels, u64 n_files, u64 n_train_files,
 *                      u64 data_offset, u64 train_bytes, u64 valid_bytes, u64 index_offset, u64 index_size,
 *                      u64 reserved
 *   data:  the train stream, then the valid stream; each is its files' bytes, each file followed by one
 *          NUL byte (binary files are skipped, so NUL marks the end of a file and nothing else)
 *   index: n_channels x (u32 length, name), then n_files x (u64 offset in its stream, u64 size without the
 *          NUL, u32 channel, u32 path length, path), train files first, in stream order. */
#ifndef KILN_DATA_CORPUS_H
#define KILN_DATA_CORPUS_H

#include <stdint.h>

#include "base/file.h"

typedef struct {
    const char *const *dirs; /* NULL or none: /usr/include */
    int n_dirs;
    const char *output;
    const char *globs;       /* comma-separated fnmatch patterns on the file name; NULL: "*.c,*.h" */
    uint64_t max_file_size;  /* bytes; 0: 256 KiB */
    double valid_fraction;   /* share of files in the valid split, 0 to 1 */
    int channel_depth;       /* path components under DIR that name the channel; 0: the DIR's name */
    int progress;            /* KILN_PROGRESS_AUTO, _ON or _OFF */
} kiln_corpus_opts;

typedef struct {
    uint64_t seen, kept, binary, too_large, duplicate, unreadable;
    uint64_t files[2], bytes[2]; /* per split: 0 train, 1 valid (bytes without separators) */
    int n_channels;
} kiln_corpus_stats;

/* Builds the corpus (written atomically). -1 with a message naming the directory or file at fault. */
int kiln_corpus_build(const kiln_corpus_opts *o, kiln_corpus_stats *stats);

enum { CORPUS_TRAIN = 0, CORPUS_VALID = 1 };

typedef struct {
    uint64_t offset, size; /* in its split's stream; the separator follows at offset + size */
    uint32_t channel;
    const char *path;      /* not NUL-terminated: path_len bytes */
    uint32_t path_len;
} corpus_file;

typedef struct {
    kiln_map map;
    char *path;
    int n_channels;
    char **channels;
    uint64_t n_files;
    corpus_file *files;
    const unsigned char *stream[2]; /* the train and valid streams */
    uint64_t stream_size[2];
    const corpus_file *split_files[2];
    uint64_t split_n_files[2];
    unsigned char *owned;           /* a sample's own bytes (corpus_sample), else NULL */
} kiln_corpus;

/* Opens and validates a corpus file. NULL with a message naming PATH and what is wrong. */
kiln_corpus *kiln_corpus_open(const char *path);
void kiln_corpus_close(kiln_corpus *c);
/* A corpus whose SPLIT holds whole files of C's SPLIT, spread evenly over it, about MAX_BYTES in all
 * (0: every file; at least the first file), and whose other split is empty: a sample for a quick but
 * representative evaluation. The sample lives in memory (its file paths point into C, which must
 * outlive it); close it with kiln_corpus_close. */
kiln_corpus *corpus_sample(const kiln_corpus *c, int split, uint64_t max_bytes);

/* The index (into split_files[split]) of the file holding stream byte POS (separators belong to the
 * file before them). */
uint64_t corpus_file_at(const kiln_corpus *c, int split, uint64_t pos);

#endif
