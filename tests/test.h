/* kiln's test framework: TEST(name) { ... } registers a test; the runner (tests/main.c) forks one
 * process per test, so a crash or a hang fails that test only. CHECK* record the first failure with
 * file:line and a reason, and end the test. */
#ifndef KILN_TEST_H
#define KILN_TEST_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn, const char *file);
void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));

#define TEST(name)                                                                          \
    static void test_##name(void);                                                          \
    __attribute__((constructor)) static void test_register_##name(void) {                  \
        test_register(#name, test_##name, __FILE__);                                        \
    }                                                                                       \
    static void test_##name(void)

#define CHECK(cond) \
    do { if (!(cond)) test_fail(__FILE__, __LINE__, "%s", #cond); } while (0)
#define CHECKF(cond, ...) \
    do { if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define CHECK_EQ_INT(a, b)                                                                         \
    do { long long a_ = (long long)(a), b_ = (long long)(b);                                       \
         if (a_ != b_) test_fail(__FILE__, __LINE__, "%s == %lld, expected %lld", #a, a_, b_); } while (0)
#define CHECK_STR(a, b)                                                                            \
    do { const char *a_ = (a), *b_ = (b);                                                          \
         if (!a_ || strcmp(a_, b_) != 0)                                                           \
             test_fail(__FILE__, __LINE__, "%s == \"%s\", expected \"%s\"", #a, a_ ? a_ : "(null)", b_); } while (0)

/* Relative-plus-absolute closeness of two float arrays: |a-b| <= atol + rtol*|b|. Fails naming the
 * first index that differs. */
void check_close(const char *file, int line, const float *a, const float *b, size_t n, float rtol, float atol,
                 const char *what);
#define CHECK_CLOSE(a, b, n, rtol, atol, what) check_close(__FILE__, __LINE__, a, b, n, rtol, atol, what)

/* Paths: the repository's test data (../shared/testdata unless KILN_TESTDATA is set) and a fresh
 * scratch directory for this test (under build/tmp). Returned strings are static per call site use. */
const char *test_data(const char *rel);
const char *test_tmp(const char *name);
const char *test_kiln_bin(void);

/* Runs a shell command, capturing stdout and stderr (malloc'd, NUL-terminated; may be NULL if not
 * wanted). Returns the exit status, or 128+signal. */
int test_run(const char *cmd, char **out, char **err);

#endif
