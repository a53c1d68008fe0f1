/* kiln plot: the loss curves of a training run (its log.jsonl) as an SVG picture: train and valid
 * bits per byte against step, overall and for the largest channels, with axes, ticks, a legend and
 * units. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "cli/cli.h"

static const char *USAGE =
    "usage: kiln plot RUN -o CURVES.svg [--channels A,B,...] [--top N]\n"
    "  Draws train and valid loss (bits per byte) against step from RUN/log.jsonl: overall, and per\n"
    "  channel for the N channels seen most often in training (default 5) or those named.\n"
    "  Thin lines: train (mean since the previous log line); thick lines with dots: valid.\n";

enum { W = 960, H = 600, LEFT = 80, RIGHT = 230, TOP = 50, BOTTOM = 70, MAX_SERIES = 16 };

typedef struct {
    double *x, *y;
    int n, cap;
} series;

static void add_point(series *s, double x, double y) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->x = kiln_xrealloc(s->x, sizeof(double) * s->cap);
        s->y = kiln_xrealloc(s->y, sizeof(double) * s->cap);
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
}

typedef struct {
    char *name;
    int seen;                /* train lines that mention it */
    series train, valid;
} channel;

typedef struct {
    series train, valid;     /* overall */
    channel *ch;
    int n_ch;
    double max_step;
} run_log;

static channel *find_channel(run_log *r, const char *name) {
    for (int i = 0; i < r->n_ch; i++)
        if (!strcmp(r->ch[i].name, name)) return &r->ch[i];
    r->ch = kiln_xrealloc(r->ch, sizeof(channel) * (r->n_ch + 1));
    channel *c = &r->ch[r->n_ch++];
    memset(c, 0, sizeof *c);
    c->name = kiln_xstrdup(name);
    return c;
}

static int read_log(const char *dir, run_log *r) {
    char path[4200];
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    size_t size;
    char *text = kiln_read_file(path, &size);
    if (!text) return -1;
    int line_no = 0;
    for (char *line = text, *next; line < text + size; line = next) {
        char *nl = memchr(line, '\n', text + size - line);
        next = nl ? nl + 1 : text + size;
        line_no++;
        if (next - line <= 1) continue;
        json_t *j = json_loadb(line, next - line, 0, NULL);
        json_t *step = j ? json_object_get(j, "step") : NULL, *split = j ? json_object_get(j, "split") : NULL;
        json_t *loss = j ? json_object_get(j, "loss") : NULL, *chs = j ? json_object_get(j, "channels") : NULL;
        if (!json_is_integer(step) || !json_is_string(split) || !json_is_number(loss)) {
            json_decref(j);
            free(text);
            return kiln_fail("%s:%d: not a kiln train log line", path, line_no);
        }
        int valid = !strcmp(json_string_value(split), "valid");
        double x = (double)json_integer_value(step);
        if (x > r->max_step) r->max_step = x;
        add_point(valid ? &r->valid : &r->train, x, json_number_value(loss) / M_LN2);
        const char *name;
        json_t *v;
        json_object_foreach(chs, name, v) {
            if (!json_is_number(v)) continue;
            channel *c = find_channel(r, name);
            c->seen += !valid;
            add_point(valid ? &c->valid : &c->train, x, json_number_value(v) / M_LN2);
        }
        json_decref(j);
    }
    free(text);
    if (!r->train.n && !r->valid.n) return kiln_fail("%s: no loss lines yet", path);
    return 0;
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about N ticks over SPAN. */
static double tick_step(double span, int n) {
    double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '&') fputs("&amp;", f);
        else if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

typedef struct {
    double x0, x1, y0, y1;
} frame;

static double px(const frame *fr, double x) { return LEFT + (x - fr->x0) / (fr->x1 - fr->x0) * (W - LEFT - RIGHT); }
static double py(const frame *fr, double y) { return H - BOTTOM - (y - fr->y0) / (fr->y1 - fr->y0) * (H - TOP - BOTTOM); }

static void polyline(FILE *f, const frame *fr, const series *s, const char *color, double width, double opacity,
                     int dots) {
    if (!s->n) return;
    fprintf(f, "<polyline clip-path=\"url(#plot)\" fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" "
               "stroke-opacity=\"%.2f\" points=\"", color, width, opacity);
    for (int i = 0; i < s->n; i++) fprintf(f, "%.1f,%.1f ", px(fr, s->x[i]), py(fr, s->y[i]));
    fputs("\"/>\n", f);
    for (int i = 0; dots && i < s->n; i++)
        fprintf(f, "<circle clip-path=\"url(#plot)\" cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n",
                px(fr, s->x[i]), py(fr, s->y[i]), color);
}

/* The y range: every valid point, and train points after the first tenth of the run (the first
 * steps' losses would squash everything else against the bottom). */
static void y_range(const run_log *r, channel **shown, int n_shown, frame *fr) {
    double lo = INFINITY, hi = -INFINITY, skip = r->max_step / 10;
    const series *all[2 * MAX_SERIES + 2];
    int n = 0;
    all[n++] = &r->train, all[n++] = &r->valid;
    for (int i = 0; i < n_shown; i++) all[n++] = &shown[i]->train, all[n++] = &shown[i]->valid;
    for (int k = 0; k < n; k++)
        for (int i = 0; i < all[k]->n; i++) {
            double y = all[k]->y[i];
            if (y < lo) lo = y;
            if ((k % 2 || all[k]->x[i] >= skip || all[k]->n < 4) && y > hi) hi = y;
        }
    if (!(hi > lo)) hi = lo + 1;
    double pad = (hi - lo) * 0.05;
    fr->y0 = lo - pad > 0 ? lo - pad : 0;
    fr->y1 = hi + pad;
}

static int write_svg(const char *path, const char *title, const run_log *r, channel **shown, int n_shown) {
    static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                         "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
    frame fr = {0, r->max_step > 0 ? r->max_step : 1, 0, 1};
    y_range(r, shown, n_shown, &fr);
    kiln_atomic a;
    if (kiln_atomic_open(&a, path) < 0) return -1;
    FILE *f = a.f;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"13\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<clipPath id=\"plot\"><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\"/></clipPath>\n", LEFT, TOP,
            W - LEFT - RIGHT, H - TOP - BOTTOM);
    fprintf(f, "<text x=\"%d\" y=\"28\" font-size=\"16\" font-weight=\"bold\">Loss of ", LEFT);
    xml_text(f, title);
    fputs("</text>\n", f);
    /* grid, ticks and labels */
    double xs = tick_step(fr.x1 - fr.x0, 8), ys = tick_step(fr.y1 - fr.y0, 6);
    for (double x = 0; x <= fr.x1 + 1e-9; x += xs)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e5e5e5\"/>"
                   "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n",
                px(&fr, x), TOP, px(&fr, x), H - BOTTOM, px(&fr, x), H - BOTTOM + 20, x);
    for (double y = ceil(fr.y0 / ys) * ys; y <= fr.y1 + 1e-9; y += ys)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                LEFT, py(&fr, y), W - RIGHT, py(&fr, y), LEFT - 8, py(&fr, y) + 4, y);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"black\"/>\n", LEFT, TOP,
            W - LEFT - RIGHT, H - TOP - BOTTOM);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step (optimizer updates)</text>\n",
            (LEFT + W - RIGHT) / 2, H - 25);
    fprintf(f, "<text transform=\"translate(24 %d) rotate(-90)\" text-anchor=\"middle\">loss (bits per byte)</text>\n",
            (TOP + H - BOTTOM) / 2);
    /* curves: channels first, overall on top */
    for (int i = 0; i < n_shown; i++) {
        polyline(f, &fr, &shown[i]->train, colors[i % 10], 1.2, 0.45, 0);
        polyline(f, &fr, &shown[i]->valid, colors[i % 10], 2.5, 1, 1);
    }
    polyline(f, &fr, &r->train, "black", 1.2, 0.6, 0);
    polyline(f, &fr, &r->valid, "black", 3, 1, 1);
    /* legend */
    int lx = W - RIGHT + 20, ly = TOP + 10;
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-weight=\"bold\">legend</text>\n", lx, ly);
    ly += 22;
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\" stroke-width=\"1.2\" "
               "stroke-opacity=\"0.6\"/><text x=\"%d\" y=\"%d\">train (all)</text>\n",
            lx, ly - 4, lx + 28, ly - 4, lx + 36, ly);
    ly += 20;
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\" stroke-width=\"3\"/>"
               "<circle cx=\"%d\" cy=\"%d\" r=\"3.5\"/><text x=\"%d\" y=\"%d\">valid (all)</text>\n",
            lx, ly - 4, lx + 28, ly - 4, lx + 14, ly - 4, lx + 36, ly);
    for (int i = 0; i < n_shown; i++) {
        ly += 20;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2.5\"/><text x=\"%d\" "
                   "y=\"%d\">", lx, ly - 4, lx + 28, ly - 4, colors[i % 10], lx + 36, ly);
        xml_text(f, shown[i]->name);
        fputs("</text>\n", f);
    }
    ly += 28;
    fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#555\">thin: train, mean since</text>\n", lx, ly);
    fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#555\">the previous log line</text>\n", lx, ly + 16);
    fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#555\">thick + dots: valid</text>\n", lx, ly + 36);
    fputs("</svg>\n", f);
    return kiln_atomic_commit(&a);
}

static int by_seen(const void *a, const void *b) {
    const channel *x = *(channel *const *)a, *y = *(channel *const *)b;
    return x->seen != y->seen ? y->seen - x->seen : strcmp(x->name, y->name);
}

static int plot(int argc, char **argv) {
    const char *dir = NULL, *out = NULL, *names = NULL, *v;
    long long top = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (a[0] != '-') {
            if (dir) return cli_error("plot: one RUN folder at a time ('%s' and '%s')", dir, a);
            dir = a;
            continue;
        }
        if (!(v = cli_value(argc, argv, &i))) return 1;
        if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--channels")) names = v;
        else if (!strcmp(a, "--top")) { if (cli_int(a, v, 0, MAX_SERIES, &top)) return 1; }
        else return cli_error("plot: unknown flag '%s' (see kiln plot --help)", a);
    }
    if (!dir || !out) return cli_error("plot: RUN and -o CURVES.svg are required (see kiln plot --help)");
    run_log r = {0};
    if (read_log(dir, &r) < 0) return cli_error("plot: %s", kiln_errmsg());
    channel *shown[MAX_SERIES];
    int n_shown = 0, rc = 0;
    if (names) {
        for (const char *p = names; *p && n_shown < MAX_SERIES;) {
            size_t n = strcspn(p, ",");
            int found = 0;
            for (int i = 0; i < r.n_ch && !found; i++)
                if (strlen(r.ch[i].name) == n && !memcmp(r.ch[i].name, p, n)) shown[n_shown++] = &r.ch[i], found = 1;
            if (!found) {
                rc = cli_error("plot: --channels: no channel '%.*s' in %s/log.jsonl", (int)n, p, dir);
                goto done;
            }
            p += n + (p[n] == ',');
        }
    } else {
        channel **all = kiln_xmalloc(sizeof(channel *) * (r.n_ch + 1));
        for (int i = 0; i < r.n_ch; i++) all[i] = &r.ch[i];
        qsort(all, r.n_ch, sizeof *all, by_seen);
        for (int i = 0; i < r.n_ch && n_shown < top; i++) shown[n_shown++] = all[i];
        free(all);
    }
    if (write_svg(out, dir, &r, shown, n_shown) < 0) rc = cli_error("plot: %s", kiln_errmsg());
done:
    for (int i = 0; i < r.n_ch; i++) {
        free(r.ch[i].name);
        free(r.ch[i].train.x), free(r.ch[i].train.y), free(r.ch[i].valid.x), free(r.ch[i].valid.y);
    }
    free(r.ch);
    free(r.train.x), free(r.train.y), free(r.valid.x), free(r.valid.y);
    return rc;
}

KILN_COMMAND("plot", "draw a training run's loss curves per channel (SVG)", plot)
