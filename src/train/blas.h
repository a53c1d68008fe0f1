/* Choosing OpenBLAS's kernels. OpenBLAS picks them when it loads, from the CPU's model or from
 * OPENBLAS_CORETYPE in the environment: on an AVX-512 machine whose environment says "Haswell" (as
 * this project's machines do) it runs AVX2 kernels, at half the speed of its AVX-512 "SkylakeX" ones.
 * Only the environment can change the choice, and only before the library loads: so kiln train and
 * kiln eval re-execute themselves once with OPENBLAS_CORETYPE set to the kernels kiln wants.
 * KILN_BLAS_CORE=NAME asks for OpenBLAS core NAME instead; KILN_BLAS_CORE= (empty) leaves OpenBLAS's
 * choice alone. */
#ifndef KILN_TRAIN_BLAS_H
#define KILN_TRAIN_BLAS_H

/* When the CPU has AVX-512 and OpenBLAS runs kernels without it (or KILN_BLAS_CORE names other
 * kernels), sets OPENBLAS_CORETYPE and re-executes the program with ARGV: it does not return then.
 * Otherwise (or if the re-execution fails) returns and changes nothing. */
void blas_prefer_avx512(char **argv);

/* OpenBLAS's name for the kernels in use ("SkylakeX", "Haswell", ...). */
const char *blas_core_name(void);

#endif
