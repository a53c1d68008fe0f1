/* kiln complete: a small terminal editor with inline suggestions, after the seed demo. The rest of
 * the line appears as grey ghost text; Tab accepts it, any other key keeps typing, Backspace deletes,
 * Enter starts a new line indented like the suggestion for it, and Esc or Ctrl-D quits and writes the
 * text to FILE (or stdout). The cursor stays at the end of the text: it is a typing demo, not vi.
 * The bottom row is a status line with the latency of the last suggestion. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "api/suggest.h"
#include "base/error.h"
#include "base/file.h"
#include "cli/cli.h"
#include "kiln.h"

static const char *USAGE =
    "usage: kiln complete -m MODEL [FILE] [--max-len N] [--threads N]\n"
    "  -m MODEL        GGUF model (a code model; byte-level models without a tokenizer work too)\n"
    "  FILE            where the text is written on quitting (its content, if any, is loaded first);\n"
    "                  without it the text goes to stdout\n"
    "  --max-len N     longest suggestion in bytes (default 32)\n"
    "  --threads N     threads (default: all cores)\n"
    "keys: Tab accepts the suggestion, Backspace deletes, Enter starts a new line, Esc or Ctrl-D quits\n";

enum { TAB_WIDTH = 4 };

typedef struct {
    kiln_suggester *sg;
    char *buf;
    size_t len, cap;
    const char *ghost;
    double ms;
    int fed, rows;
} editor;

static void append(editor *e, const char *s, size_t n) {
    if (e->len + n + 1 > e->cap) {
        e->cap = (e->len + n + 1) * 2;
        e->buf = kiln_xrealloc(e->buf, e->cap);
    }
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    e->buf[e->len] = 0;
}

static void suggest(editor *e) {
    double t0 = kiln_now();
    e->ghost = kiln_suggest(e->sg, e->buf, e->len);
    e->ms = (kiln_now() - t0) * 1000;
    e->fed = kiln_suggest_evaluated(e->sg);
    if (!e->ghost) e->ghost = "";
}

/* Writes S (N bytes) expanding tabs from column *COL; returns the columns it took. */
static int put_expanded(const char *s, size_t n, int *col) {
    int start = *col;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\t') {
            do putchar(' ');
            while (++*col % TAB_WIDTH);
        } else {
            putchar(s[i]);
            if (((unsigned char)s[i] & 0xC0) != 0x80) ++*col; /* UTF-8 continuation bytes take no column */
        }
    }
    return *col - start;
}

static const char *line_start(const editor *e) {
    const char *nl = e->len ? memrchr(e->buf, '\n', e->len) : NULL;
    return nl ? nl + 1 : e->buf;
}

/* Redraws the current line with its ghost text, and the status line. */
static void draw(editor *e, int with_ghost) {
    const char *ls = line_start(e);
    int col = 0;
    fputs("\r\033[K", stdout);
    put_expanded(ls, (size_t)(e->buf + e->len - ls), &col);
    int ghost = 0;
    if (with_ghost && *e->ghost) {
        fputs("\033[90m", stdout);
        ghost = put_expanded(e->ghost, strlen(e->ghost), &col);
        fputs("\033[0m", stdout);
        if (ghost) printf("\033[%dD", ghost);
    }
    printf("\0337\033[%d;1H\033[2K\033[7m kiln complete | Tab accept | Esc/Ctrl-D save+quit | suggestion %.1f ms, "
           "%d token%s fed \033[0m\0338",
           e->rows, e->ms, e->fed, e->fed == 1 ? "" : "s");
    fflush(stdout);
}

/* Enter: the new line takes the indentation of the suggestion made for it. */
static void newline(editor *e) {
    draw(e, 0);
    append(e, "\n", 1);
    fputs("\r\n", stdout);
    suggest(e);
    size_t ind = strspn(e->ghost, " \t");
    if (ind) {
        append(e, e->ghost, ind);
        suggest(e);
    }
}

static void backspace(editor *e) {
    if (!e->len) return;
    if (e->buf[e->len - 1] == '\n') {
        draw(e, 0);
        fputs("\r\033[K\033[A", stdout);
    } else {
        /* a whole UTF-8 character */
        while (e->len > 1 && ((unsigned char)e->buf[e->len - 1] & 0xC0) == 0x80) e->len--;
    }
    e->buf[--e->len] = 0;
    suggest(e);
}

/* Reads one key; an escape sequence (arrow keys and the like) is read whole and reported as 0. */
static int read_key(void) {
    unsigned char c;
    ssize_t n = read(0, &c, 1);
    if (n <= 0) return n < 0 && errno == EINTR ? 0 : -1;
    if (c != 27) return c;
    struct pollfd p = {0, POLLIN, 0};
    if (poll(&p, 1, 30) <= 0) return 27;
    unsigned char seq[16];
    while (poll(&p, 1, 5) > 0 && read(0, seq, sizeof seq) > 0) {}
    return 0;
}

static int run_editor(editor *e) {
    struct termios old, raw;
    if (!isatty(0) || tcgetattr(0, &old) < 0) return cli_error("complete: stdin is not a terminal");
    struct winsize ws;
    e->rows = ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 2 ? ws.ws_row : 24;
    raw = old;
    raw.c_lflag &= ~(ICANON | ECHO | ISIG | IEXTEN);
    raw.c_iflag &= ~(IXON | ICRNL);
    raw.c_cc[VMIN] = 1, raw.c_cc[VTIME] = 0;
    tcsetattr(0, TCSANOW, &raw);
    printf("\033[2J\033[1;%dr\033[1;1H", e->rows - 1); /* the last row stays for the status line */
    for (const char *p = e->buf; p < line_start(e); p = strchr(p, '\n') + 1) {
        int col = 0;
        put_expanded(p, (size_t)(strchr(p, '\n') - p), &col);
        fputs("\r\n", stdout);
    }
    suggest(e);
    draw(e, 1);
    for (;;) {
        int c = read_key();
        if (c < 0 || c == 27 || c == 4 || c == 3) break;
        if (c == 127 || c == 8) backspace(e);
        else if (c == '\r' || c == '\n') newline(e);
        else if (c == '\t') {
            if (*e->ghost) append(e, e->ghost, strlen(e->ghost));
            else append(e, "\t", 1);
            suggest(e);
        } else if (c >= 32) {
            char ch = (char)c;
            append(e, &ch, 1);
            suggest(e);
        } else {
            continue;
        }
        draw(e, 1);
    }
    draw(e, 0);
    printf("\033[r\0337\033[%d;1H\033[2K\0338\r\n", e->rows);
    fflush(stdout);
    tcsetattr(0, TCSANOW, &old);
    return 0;
}

static int save(const editor *e, const char *path) {
    if (!path) {
        fwrite(e->buf, 1, e->len, stdout);
        if (e->len && e->buf[e->len - 1] != '\n') putchar('\n');
        return 0;
    }
    kiln_atomic a;
    if (kiln_atomic_open(&a, path) < 0) return cli_error("%s", kiln_last_error());
    fwrite(e->buf, 1, e->len, a.f);
    if (kiln_atomic_commit(&a) < 0) return cli_error("%s", kiln_last_error());
    fprintf(stderr, "kiln complete: wrote %zu bytes to %s\n", e->len, path);
    return 0;
}

static int cmd_complete(int argc, char **argv) {
    const char *model = NULL, *file = NULL;
    long long max_len = 32, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(USAGE, stdout), 0;
        if (a[0] != '-') {
            if (file) return cli_error("complete: one FILE only ('%s' and '%s')", file, a);
            file = a;
            continue;
        }
        if (!(v = cli_value(argc, argv, &i))) return 1;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--max-len")) { if (cli_int(a, v, 1, 256, &max_len)) return 1; }
        else if (!strcmp(a, "--threads")) { if (cli_int(a, v, 1, 1024, &threads)) return 1; }
        else return cli_error("complete: unknown flag '%s'\n%s", a, USAGE);
    }
    if (!model) return cli_error("complete: -m MODEL is required\n%s", USAGE);
    if (threads) kiln_set_threads((int)threads);
    kiln_model *m = kiln_model_open(model);
    if (!m) return cli_error("%s", kiln_last_error());
    editor e = {0};
    e.sg = kiln_suggester_new(m, (int)max_len);
    if (!e.sg) {
        kiln_model_close(m);
        return cli_error("complete: %s", kiln_last_error());
    }
    append(&e, "", 0);
    size_t size;
    char *old = file && access(file, F_OK) == 0 ? kiln_read_file(file, &size) : NULL;
    if (old) append(&e, old, size);
    free(old);
    int rc = run_editor(&e);
    if (rc == 0) rc = save(&e, file);
    free(e.buf);
    kiln_suggester_free(e.sg);
    kiln_model_close(m);
    return rc;
}

KILN_COMMAND("complete", "a terminal editor with inline suggestions from a code model (Tab accepts)", cmd_complete)
