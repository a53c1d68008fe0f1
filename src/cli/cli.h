/* The kiln command: each subcommand lives in its own src/cli/cmd_*.c and registers itself with
 * KILN_COMMAND, so adding one touches no shared file. Subcommands use only include/kiln.h and the
 * library's layer headers, never each other. */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include <stdint.h>

typedef struct {
    const char *name;
    const char *summary; /* one line for `kiln help` */
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name; returns the exit status */
} kiln_command;

void cli_register(const kiln_command *c);

#define KILN_COMMAND(NAME, SUMMARY, FN)                                                      \
    static const kiln_command cli_command_##FN = {NAME, SUMMARY, FN};                        \
    __attribute__((constructor)) static void cli_register_##FN(void) { cli_register(&cli_command_##FN); }

/* Prints "kiln: MESSAGE" (printf-style) to stderr and returns 1: `return cli_error(...)`. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Flag value parsers: on a malformed or out-of-range value they print an error naming FLAG and the
 * value (e.g. "kiln: -n: -5 is out of range (must be 1 to 1000000)") and return -1. */
int cli_int(const char *flag, const char *s, long long min, long long max, long long *out);
int cli_float(const char *flag, const char *s, double min, double max, double *out);
int cli_size(const char *flag, const char *s, uint64_t *out); /* 512, 64K, 1M, 2G, 1T (binary units) */
/* For "FLAG VALUE" parsing: the value after argv[*i], or NULL with an error when it is missing. */
const char *cli_value(int argc, char **argv, int *i);

#endif
