/* The test runner: `kiln-test [-v] [SUBSTRING...]` runs every registered test whose name contains one
 * of the substrings (all tests when none), each in its own process with a time limit, prints one line
 * per failing test with the reason, and ends with "N passed, N failed". */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

typedef struct {
    const char *name, *file;
    test_fn fn;
} test_case;

static test_case *cases;
static int n_cases, cap_cases;
static char *fail_msg; /* shared with the child: the failure reason */
enum { FAIL_MSG_SIZE = 4096, TEST_TIME_LIMIT_S = 300 };

void test_register(const char *name, test_fn fn, const char *file) {
    if (n_cases == cap_cases) {
        cap_cases = cap_cases ? 2 * cap_cases : 256;
        cases = realloc(cases, cap_cases * sizeof *cases);
    }
    cases[n_cases++] = (test_case){name, file, fn};
}

void test_fail(const char *file, int line, const char *fmt, ...) {
    int n = snprintf(fail_msg, FAIL_MSG_SIZE, "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fail_msg + n, FAIL_MSG_SIZE - n, fmt, ap);
    va_end(ap);
    fflush(stdout);
    _exit(1);
}

void check_close(const char *file, int line, const float *a, const float *b, size_t n, float rtol, float atol,
                 const char *what) {
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= atol + rtol * fabsf(b[i])))
            test_fail(file, line, "%s: index %zu: got %.9g, expected %.9g (|diff| %.3g > %.3g + %.3g*|expected|)",
                      what, i, a[i], b[i], d, atol, rtol);
    }
}

const char *test_data(const char *rel) {
    static char buf[8][4096];
    static int k;
    const char *root = getenv("KILN_TESTDATA");
    char *b = buf[k++ % 8];
    snprintf(b, 4096, "%s/%s", root ? root : "../shared/testdata", rel);
    return b;
}

static const char *current_test = "none";

const char *test_tmp(const char *name) {
    static char buf[8][4096];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 4096, "build/tmp/%s", current_test);
    mkdir("build", 0755);
    mkdir("build/tmp", 0755);
    mkdir(b, 0755);
    snprintf(b, 4096, "build/tmp/%s/%s", current_test, name);
    return b;
}

const char *test_kiln_bin(void) { return "build/kiln"; }

static char *slurp(FILE *f) {
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    size_t got;
    while ((got = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 >= cap) s = realloc(s, cap *= 2);
    }
    s[n] = 0;
    return s;
}

int test_run(const char *cmd, char **out, char **err) {
    char errpath[4096], full[16384];
    snprintf(errpath, sizeof errpath, "%s", test_tmp("stderr.txt"));
    snprintf(full, sizeof full, "(%s) 2>%s", cmd, errpath);
    FILE *p = popen(full, "r");
    if (!p) test_fail(__FILE__, __LINE__, "popen failed: %s", cmd);
    char *o = slurp(p);
    int st = pclose(p);
    if (out) *out = o; else free(o);
    if (err) {
        FILE *f = fopen(errpath, "r");
        *err = f ? slurp(f) : strdup("");
        if (f) fclose(f);
    }
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Each test starts with an empty scratch directory: leftovers of an earlier run must not change it. */
static void clear_scratch(const char *name) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf 'build/tmp/%s'", name);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not clear build/tmp/%s\n", name);
}

static int matches(const char *name, int argc, char **argv) {
    int any = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') continue;
        any = 1;
        if (strstr(name, argv[i])) return 1;
    }
    return !any;
}

static int by_file_then_order(const void *a, const void *b) {
    const test_case *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : (x < y ? -1 : x > y);
}

int main(int argc, char **argv) {
    int verbose = 0;
    for (int i = 1; i < argc; i++) if (!strcmp(argv[i], "-v")) verbose = 1;
    qsort(cases, n_cases, sizeof *cases, by_file_then_order);
    fail_msg = mmap(NULL, FAIL_MSG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int passed = 0, failed = 0;
    for (int i = 0; i < n_cases; i++) {
        if (!matches(cases[i].name, argc, argv)) continue;
        fail_msg[0] = 0;
        fflush(stdout);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pid_t pid = fork();
        if (pid == 0) {
            current_test = cases[i].name;
            clear_scratch(current_test);
            alarm(TEST_TIME_LIMIT_S);
            cases[i].fn();
            fflush(stdout);
            _exit(0);
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            passed++;
            if (verbose) printf("ok   %s (%.0f ms)\n", cases[i].name, ms);
        } else {
            failed++;
            if (WIFSIGNALED(st))
                printf("FAIL %s: %s\n", cases[i].name,
                       WTERMSIG(st) == SIGALRM ? "timed out" : strsignal(WTERMSIG(st)));
            else
                printf("FAIL %s: %s\n", cases[i].name, fail_msg[0] ? fail_msg : "exited non-zero");
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
