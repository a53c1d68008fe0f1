/* OpenBLAS kernel choice (blas.h). */
#include "train/blas.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

const char *blas_core_name(void) { return openblas_get_corename(); }

static int has_avx512(const char *core) {
    static const char *const cores[] = {"Skylake", "Cooperlake", "SapphireRapids"}; /* "SkylakeX" too */
    for (size_t i = 0; i < sizeof cores / sizeof cores[0]; i++)
        if (core && strstr(core, cores[i])) return 1;
    return 0;
}

void blas_prefer_avx512(char **argv) {
    const char *want = getenv("KILN_BLAS_CORE");
    if (getenv("KILN_BLAS_REEXEC")) { /* the second run: take what it got, under the program's own name */
        const char *slash = strrchr(argv[0], '/');
        prctl(PR_SET_NAME, slash ? slash + 1 : argv[0]);
        return;
    }
    if (want && !*want) return;             /* KILN_BLAS_CORE= (empty): leave OpenBLAS alone */
    if (!want) {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
            !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl") ||
            has_avx512(openblas_get_corename()))
            return;
        want = "SkylakeX";
    } else if (!strcmp(want, openblas_get_corename())) return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("KILN_BLAS_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    unsetenv("KILN_BLAS_REEXEC"); /* could not re-execute: carry on with the kernels we have */
}
