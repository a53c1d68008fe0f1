/* A progress line on stderr for long jobs: label, done/total, percent, rate and time left.
 *
 *     kiln_progress p;
 *     kiln_progress_begin(&p, "shuffle", total_bytes, "B", KILN_PROGRESS_AUTO);
 *     while (...) kiln_progress_update(&p, bytes_so_far);
 *     kiln_progress_end(&p);
 *
 * Updates are cheap: the line is redrawn at most 10 times a second on a terminal (once a second, one
 * line each, when forced onto a file or pipe), so callers may update after every block of work.
 * Only the thread that began the progress may update it. */
#ifndef KILN_BASE_PROGRESS_H
#define KILN_BASE_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

enum {
    KILN_PROGRESS_AUTO = 0, /* shown when stderr is a terminal */
    KILN_PROGRESS_ON = 1,   /* always shown */
    KILN_PROGRESS_OFF = 2
};

typedef struct {
    char label[48];
    char unit[16];    /* "B": counts are bytes, shown in KiB/MiB/GiB; else a word after the count ("tok") */
    uint64_t total;   /* 0: unknown (no percent or ETA) */
    uint64_t done;
    double start, last_draw;
    int on, tty, drawn;
    /* Optional: appends a few words after the figures (e.g. "read 1.2 GiB"); called only when drawing. */
    void (*detail)(void *ctx, char *buf, size_t size);
    void *detail_ctx;
} kiln_progress;

void kiln_progress_begin(kiln_progress *p, const char *label, uint64_t total, const char *unit, int mode);
/* Sets the amount done (clamped to the total) and redraws when due. */
void kiln_progress_update(kiln_progress *p, uint64_t done);
/* Draws the final line (elapsed time and average rate) and ends it with a newline. */
void kiln_progress_end(kiln_progress *p);
/* Ends the line without a summary, so that an error message starts on a line of its own. */
void kiln_progress_abort(kiln_progress *p);

/* Formats N as a count in UNIT ("B": "1.50 GiB"; else "1.50M tok") into BUF. */
void kiln_progress_format(char *buf, size_t size, double n, const char *unit);

#endif
