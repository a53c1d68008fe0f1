#include "base/progress.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/file.h"

enum { BAR_WIDTH = 20 };

void kiln_progress_format(char *buf, size_t size, double n, const char *unit) {
    if (!strcmp(unit, "B")) {
        static const char *const names[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
        int k = 0;
        while (n >= 1024 && k < 5) n /= 1024, k++;
        snprintf(buf, size, k ? "%.2f %s" : "%.0f %s", n, names[k]);
    } else {
        static const char *const suffix[] = {"", "k", "M", "G", "T", "P"};
        int k = 0;
        while (n >= 1000 && k < 5) n /= 1000, k++;
        snprintf(buf, size, k ? "%.2f%s %s" : "%.0f%s %s", n, suffix[k], unit);
    }
}

static void format_duration(char *buf, size_t size, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(buf, size, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

void kiln_progress_begin(kiln_progress *p, const char *label, uint64_t total, const char *unit, int mode) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
    p->total = total;
    p->tty = isatty(STDERR_FILENO);
    p->on = mode == KILN_PROGRESS_ON || (mode == KILN_PROGRESS_AUTO && p->tty);
    p->start = p->last_draw = kiln_now();
}

/* One line: "label  done / total  pct [bar]  rate  ETA" (or "in TIME" when FINAL), then the detail. */
static void draw(kiln_progress *p, double now, int final) {
    char done[32], total[32], rate[40], when[32], detail[160] = "", bar[BAR_WIDTH + 1];
    double elapsed = now - p->start, per_s = elapsed > 0 ? p->done / elapsed : 0;
    kiln_progress_format(done, sizeof done, (double)p->done, p->unit);
    kiln_progress_format(rate, sizeof rate, per_s, p->unit);
    if (p->detail) p->detail(p->detail_ctx, detail, sizeof detail);
    char line[512];
    int n;
    if (final) {
        format_duration(when, sizeof when, elapsed);
        n = snprintf(line, sizeof line, "%s  %s in %s (%.1f s)  %s/s", p->label, done, when, elapsed, rate);
    } else if (p->total) {
        double frac = (double)p->done / (double)p->total;
        int fill = (int)(frac * BAR_WIDTH);
        for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < fill ? '#' : '.';
        bar[BAR_WIDTH] = 0;
        kiln_progress_format(total, sizeof total, (double)p->total, p->unit);
        format_duration(when, sizeof when, per_s > 0 ? (double)(p->total - p->done) / per_s : -1);
        n = snprintf(line, sizeof line, "%s  %s / %s  %3.0f%% [%s]  %s/s  ETA %s", p->label, done, total,
                     100 * frac, bar, rate, when);
    } else {
        format_duration(when, sizeof when, elapsed);
        n = snprintf(line, sizeof line, "%s  %s  %s/s  %s", p->label, done, rate, when);
    }
    if (detail[0] && n > 0 && (size_t)n < sizeof line) snprintf(line + n, sizeof line - n, "  %s", detail);
    /* On a terminal the line is redrawn in place; elsewhere each draw is a line of its own. */
    if (p->tty) fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
    else fprintf(stderr, "%s\n", line);
    fflush(stderr);
    p->drawn = !final && p->tty;
    p->last_draw = now;
}

void kiln_progress_update(kiln_progress *p, uint64_t done) {
    p->done = p->total && done > p->total ? p->total : done;
    if (!p->on) return;
    double now = kiln_now();
    if (now - p->last_draw >= (p->tty ? 0.1 : 1.0)) draw(p, now, 0);
}

void kiln_progress_end(kiln_progress *p) {
    if (p->on) draw(p, kiln_now(), 1);
    p->on = 0;
}

void kiln_progress_abort(kiln_progress *p) {
    if (p->on && p->drawn) fputc('\n', stderr);
    p->on = 0;
    p->drawn = 0;
}
