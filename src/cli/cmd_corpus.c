/* kiln corpus: source files into a training corpus (bytes + file/channel index). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/progress.h"
#include "cli/cli.h"
#include "data/corpus.h"

static const char *USAGE =
    "usage: kiln corpus [DIR...] -o CORPUS [--glob PATTERNS] [--max-file-size SIZE] [--valid FRACTION]\n"
    "                   [--channel-depth N] [--progress|--quiet]\n"
    "  Collects source files under each DIR (default: /usr/include) into CORPUS for kiln train.\n"
    "  -o CORPUS            output file\n"
    "  --glob PATTERNS      comma-separated file name patterns (default: *.c,*.h)\n"
    "  --max-file-size SIZE skip larger files, e.g. 256K (default 256K: generated tables drown real code)\n"
    "  --valid FRACTION     share of files held out for validation, by a hash of the path (default 0.01)\n"
    "  --channel-depth N    directories under DIR that name a file's channel (default 1: the first;\n"
    "                       0: the DIR's own name; files directly in DIR take the DIR's name)\n"
    "  --progress           always show progress on stderr (default: when stderr is a terminal)\n"
    "  --quiet              neither progress nor the summary\n";

static int corpus(int argc, char **argv) {
    const char **dirs = calloc((size_t)argc, sizeof *dirs), *v;
    kiln_corpus_opts o = {.dirs = dirs, .valid_fraction = 0.01, .channel_depth = 1, .progress = KILN_PROGRESS_AUTO};
    int quiet = 0, rc = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            rc = 0;
            goto done;
        }
        if (a[0] != '-' || !a[1]) {
            dirs[o.n_dirs++] = a;
            continue;
        }
        if (!strcmp(a, "--progress")) { o.progress = KILN_PROGRESS_ON; continue; }
        if (!strcmp(a, "--quiet")) { o.progress = KILN_PROGRESS_OFF, quiet = 1; continue; }
        if (!(v = cli_value(argc, argv, &i))) goto done;
        long long n;
        if (!strcmp(a, "-o")) o.output = v;
        else if (!strcmp(a, "--glob")) o.globs = v;
        else if (!strcmp(a, "--max-file-size")) {
            if (cli_size(a, v, &o.max_file_size)) goto done;
            if (!o.max_file_size) { cli_error("corpus: --max-file-size must be positive"); goto done; }
        } else if (!strcmp(a, "--valid")) {
            if (cli_float(a, v, 0, 1, &o.valid_fraction)) goto done;
        } else if (!strcmp(a, "--channel-depth")) {
            if (cli_int(a, v, 0, 64, &n)) goto done;
            o.channel_depth = (int)n;
        } else {
            cli_error("corpus: unknown flag '%s' (see kiln corpus --help)", a);
            goto done;
        }
    }
    if (!o.output) {
        cli_error("corpus: -o CORPUS is required (see kiln corpus --help)");
        goto done;
    }
    kiln_corpus_stats st;
    if (kiln_corpus_build(&o, &st) < 0) {
        cli_error("corpus: %s", kiln_errmsg());
        goto done;
    }
    if (st.kept == 0) {
        remove(o.output);
        cli_error("corpus: no file matched in %s (%llu candidates: %llu binary, %llu too large, %llu duplicates)",
                  o.n_dirs ? "the given directories" : "/usr/include", (unsigned long long)st.seen,
                  (unsigned long long)st.binary, (unsigned long long)st.too_large, (unsigned long long)st.duplicate);
        goto done;
    }
    if (!quiet) {
        char tb[32], vb[32];
        kiln_progress_format(tb, sizeof tb, (double)st.bytes[0], "B");
        kiln_progress_format(vb, sizeof vb, (double)st.bytes[1], "B");
        fprintf(stderr,
                "%s: %llu files in %d channels: train %llu files (%s), valid %llu files (%s); skipped %llu binary, "
                "%llu too large, %llu duplicates, %llu unreadable\n",
                o.output, (unsigned long long)st.kept, st.n_channels, (unsigned long long)st.files[0], tb,
                (unsigned long long)st.files[1], vb, (unsigned long long)st.binary, (unsigned long long)st.too_large,
                (unsigned long long)st.duplicate, (unsigned long long)st.unreadable);
        if (st.files[1] == 0)
            fprintf(stderr, "%s: warning: no file landed in the valid split; kiln train needs one (raise --valid)\n",
                    o.output);
    }
    rc = 0;
done:
    free(dirs);
    return rc;
}

KILN_COMMAND("corpus", "collect source files into a training corpus", corpus)
