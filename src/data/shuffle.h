/* Exact uniform shuffle of the records of files far larger than memory (docs/SHUFFLE.md).
 *
 * Records end with a separator byte (newline by default) and may hold any other bytes; each input's
 * last record needs no separator (the output gives it one) and empty records are kept. When the inputs
 * fit in MEM they are shuffled in memory (Fisher–Yates); otherwise every record goes to a uniformly
 * random temporary bucket, and each bucket is shuffled in memory (or split again) and appended to the
 * output. The order is a pure function of (inputs, seed, mem): thread count never changes it. */
#ifndef KILN_DATA_SHUFFLE_H
#define KILN_DATA_SHUFFLE_H

#include <stdint.h>

typedef struct {
    const char *const *inputs;
    int n_inputs;
    const char *output;  /* written to a temporary name beside it and renamed at the end */
    uint64_t mem;        /* bytes of memory to stay under, at least KILN_SHUFFLE_MIN_MEM */
    uint64_t seed;
    const char *tmp_dir; /* NULL: $TMPDIR, else the output's directory */
    unsigned char sep;
    int progress;        /* KILN_PROGRESS_AUTO, _ON or _OFF (base/progress.h) */
} kiln_shuffle_opts;

enum { KILN_SHUFFLE_MIN_MEM = 64 << 10 };

/* Shuffles. Temporary files live in a private directory under tmp_dir and are removed on success,
 * on error and on SIGINT, SIGTERM or SIGHUP (the handlers are installed for the duration of the call;
 * the signal then ends the process as it would have). Returns 0, or -1 with kiln_errmsg() naming the
 * file or value at fault; the output is then left as it was. */
int kiln_shuffle(const kiln_shuffle_opts *o);

#endif
