/* kiln shuffle: an exact uniform shuffle of the lines of files larger than memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/progress.h"
#include "cli/cli.h"
#include "data/shuffle.h"

static const char *USAGE =
    "usage: kiln shuffle IN... -o OUT [--mem SIZE] [--seed S] [--tmp DIR] [--sep BYTE] [--progress|--quiet]\n"
    "  Puts the records (lines) of all inputs together in a uniformly random order; inputs may be far\n"
    "  larger than memory (- is stdin). Each input's last line gets a newline if it lacks one; empty\n"
    "  lines are kept.\n"
    "  -o OUT        output file (written under a temporary name and renamed at the end; may be an input;\n"
    "                - for stdout)\n"
    "  --mem SIZE    memory to stay under, e.g. 512M, 4G (default: half of the machine's memory)\n"
    "  --seed S      random seed: the same seed, inputs and --mem give the same output (default: random)\n"
    "  --tmp DIR     where temporary files go (default: $TMPDIR, else OUT's directory; . for stdout);\n"
    "                up to the inputs' size is needed there when they do not fit in --mem\n"
    "  --sep BYTE    record separator: a character, \\n \\t \\r \\0, or 0xHH (default \\n)\n"
    "  --progress    always show progress on stderr (default: when stderr is a terminal)\n"
    "  --quiet       never show progress\n";

/* A separator byte: one character, a C escape, or 0xHH. */
static int parse_sep(const char *v, unsigned char *out) {
    static const char escapes[][2] = {{'n', '\n'}, {'t', '\t'}, {'r', '\r'}, {'0', '\0'}, {'\\', '\\'}};
    if (v[0] && !v[1]) return *out = (unsigned char)v[0], 0;
    if (v[0] == '\\' && v[1] && !v[2])
        for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++)
            if (v[1] == escapes[i][0]) return *out = (unsigned char)escapes[i][1], 0;
    if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X') && v[2]) {
        char *end;
        unsigned long b = strtoul(v + 2, &end, 16);
        if (!*end && b < 256) return *out = (unsigned char)b, 0;
    }
    return cli_error("shuffle: --sep: '%s' is not a byte (a character, \\n \\t \\r \\0, or 0xHH)", v), -1;
}

static int takes_value(const char *flag) {
    static const char *const flags[] = {"-o", "--output", "--tmp", "--mem", "--sep", "--seed"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!strcmp(flag, flags[i])) return 1;
    return 0;
}

static uint64_t default_mem(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    uint64_t half = pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size / 2 : 1ull << 30;
    return half < KILN_SHUFFLE_MIN_MEM ? KILN_SHUFFLE_MIN_MEM : half;
}

static uint64_t random_seed(void) {
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, 0) == sizeof seed) return seed;
    return (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
}

static int shuffle(int argc, char **argv) {
    const char **inputs = calloc((size_t)argc, sizeof *inputs), *v;
    kiln_shuffle_opts o = {.inputs = inputs, .sep = '\n', .progress = KILN_PROGRESS_AUTO};
    int have_seed = 0, rc = 1;
    o.mem = default_mem();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            rc = 0;
            goto done;
        }
        if (a[0] != '-' || !a[1]) {
            inputs[o.n_inputs++] = strcmp(a, "-") ? a : "/dev/stdin";
            continue;
        }
        if (!strcmp(a, "--progress")) { o.progress = KILN_PROGRESS_ON; continue; }
        if (!strcmp(a, "--quiet")) { o.progress = KILN_PROGRESS_OFF; continue; }
        if (!takes_value(a)) {
            cli_error("shuffle: unknown flag '%s' (see kiln shuffle --help)", a);
            goto done;
        }
        if (!(v = cli_value(argc, argv, &i))) goto done;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) o.output = v;
        else if (!strcmp(a, "--tmp")) o.tmp_dir = v;
        else if (!strcmp(a, "--mem")) { if (cli_size("--mem", v, &o.mem)) goto done; }
        else if (!strcmp(a, "--sep")) { if (parse_sep(v, &o.sep)) goto done; }
        else if (!strcmp(a, "--seed")) {
            long long seed;
            if (cli_int("--seed", v, 0, INT64_MAX, &seed)) goto done;
            o.seed = (uint64_t)seed;
            have_seed = 1;
        }
    }
    if (!o.n_inputs || !o.output) {
        cli_error("shuffle: need IN... and -o OUT (see kiln shuffle --help)");
        goto done;
    }
    if (!have_seed) o.seed = random_seed();
    rc = kiln_shuffle(&o) < 0 ? cli_error("shuffle: %s", kiln_errmsg()) : 0;
done:
    free(inputs);
    return rc;
}

KILN_COMMAND("shuffle", "shuffle the lines of files larger than memory, exactly uniformly", shuffle)
