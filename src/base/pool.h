/* Kiln's worker threads: the parallel loops of the inference kernels (matvec, GEMM, attention) run on
 * this pool rather than in OpenMP parallel regions.
 *
 * Why not OpenMP: a libgomp thread that waits (at a join, or for the next region) spins ~300K pause
 * instructions (its default GOMP_SPINCOUNT) before it sleeps, and a region splits its work statically,
 * so a join waits for the slowest thread's whole share. With other processes on the cores a
 * descheduled worker holds up every join while the threads that wait burn the time slices it needs:
 * beside two busy processes the 110M model's decode (~100 regions a token) fell to 5-24 tok/s (Q8_0:
 * 150-180 quiet), and runs at 41-97 tok/s with this pool (bench/bench_threads.sh). Here a loop is a
 * list of chunks that the threads claim one at a time: the calling thread does them all if no worker
 * comes, and it waits only for chunks a worker has claimed. Idle workers spin briefly, then sleep on a
 * futex. */
#ifndef KILN_BASE_POOL_H
#define KILN_BASE_POOL_H

#include <stddef.h>

/* The body of a loop: items I0..I1-1, run by thread TID (0 = the caller, TID < kiln_pool_threads()). */
typedef void (*kiln_range_fn)(void *arg, int i0, int i1, int tid);

/* Runs FN over items 0..N-1 in ranges that start on multiples of GRAIN (a range may span several
 * grains) and together cover each item once, and returns when all are done. Threads: the caller's
 * omp_get_max_threads() (OMP_NUM_THREADS, kiln_set_threads). A loop started while another one runs (from
 * another application thread, or from inside a loop) runs on the calling thread alone. */
void kiln_pool_for(int n, int grain, kiln_range_fn fn, void *arg);

/* Runs FN over the rows 0..N_ROWS-1 of a matrix of ROW_BYTES per row (FN gets row ranges) in chunks
 * that start on multiples of 16 rows, so no two threads write one cache line of a float output: large
 * ones first, then smaller ones down to 32 KiB, so the threads finish close together. */
void kiln_pool_rows(int n_rows, size_t row_bytes, kiln_range_fn fn, void *arg);

/* Threads a loop started now by the calling thread may use: TIDs are below this (per-thread scratch). */
int kiln_pool_threads(void);

#endif
