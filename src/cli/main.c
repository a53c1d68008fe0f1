/* kiln: a thin command line over libkiln. `kiln help` lists the subcommands. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

enum { MAX_COMMANDS = 64 };
static const kiln_command *commands[MAX_COMMANDS];
static int n_commands;

void cli_register(const kiln_command *c) {
    if (n_commands < MAX_COMMANDS) commands[n_commands++] = c;
}

int cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("kiln: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_int(const char *flag, const char *s, long long min, long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno) return cli_error("%s: '%s' is not an integer", flag, s), -1;
    if (v < min || v > max) return cli_error("%s: %lld is out of range (must be %lld to %lld)", flag, v, min, max), -1;
    *out = v;
    return 0;
}

int cli_float(const char *flag, const char *s, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v)) return cli_error("%s: '%s' is not a number", flag, s), -1;
    if (v < min || v > max) return cli_error("%s: %g is out of range (must be %g to %g)", flag, v, min, max), -1;
    *out = v;
    return 0;
}

int cli_size(const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    uint64_t mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1ull << 10; end++; break;
    case 'm': case 'M': mult = 1ull << 20; end++; break;
    case 'g': case 'G': mult = 1ull << 30; end++; break;
    case 't': case 'T': mult = 1ull << 40; end++; break;
    }
    if (*end == 'B' || *end == 'b') end++;
    if (!*s || *end || errno || !(v >= 0) || v * mult > 1.8e19)
        return cli_error("%s: '%s' is not a size (e.g. 512M, 2G)", flag, s), -1;
    *out = (uint64_t)(v * mult);
    return 0;
}

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        cli_error("%s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(const kiln_command *const *)a)->name, (*(const kiln_command *const *)b)->name);
}

static void usage(FILE *f) {
    fprintf(f, "usage: kiln COMMAND [ARGS]   (kiln COMMAND --help for its flags)\n\ncommands:\n");
    for (int i = 0; i < n_commands; i++) fprintf(f, "  %-12s %s\n", commands[i]->name, commands[i]->summary);
}

int main(int argc, char **argv) {
    qsort(commands, n_commands, sizeof commands[0], by_name);
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return argc < 2 ? 1 : 0;
    }
    for (int i = 0; i < n_commands; i++)
        if (!strcmp(argv[1], commands[i]->name)) return commands[i]->run(argc - 1, argv + 1);
    cli_error("unknown command '%s'", argv[1]);
    usage(stderr);
    return 1;
}
