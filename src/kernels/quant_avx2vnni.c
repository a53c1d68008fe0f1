/* The AVX2 kernels of quant_avx2.c compiled again for CPUs that also have AVX-VNNI (the VEX-encoded
 * vpdpbusd of Intel's Alder Lake and later, and of Zen 5): the table kiln_qkernels_avx2vnni. Built with
 * the ordinary flags; the pragma enables the instruction sets for this file alone, and the dispatcher
 * (quant_gemm.c) picks the table only on a CPU that has them. */
#pragma GCC target("avx2,fma,f16c,avxvnni")
#define KILN_AVX2_VNNI 1
#include "kernels/quant_avx2.c"
