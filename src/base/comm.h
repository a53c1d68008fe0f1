/* Communication between the processes of a run started by OpenMPI's mpirun (data-parallel training,
 * sharded batch inference): one process otherwise. kiln detects mpirun from the environment and then
 * joins through libmpi loaded at run time (so kiln builds and runs without MPI installed). Every
 * process calls the same functions in the same order; sums are in place, and a sum is also the point
 * where every process waits for the others. */
#ifndef KILN_BASE_COMM_H
#define KILN_BASE_COMM_H

#include <stddef.h>

/* Joins the run: 0, or -1 with a message when mpirun started us but libmpi cannot be used. */
int comm_init(void);
void comm_finalize(void);
int comm_rank(void);
int comm_size(void);
/* Element-wise sums over all processes, result on every process. */
void comm_sum_f32(float *x, size_t n);
void comm_sum_f64(double *x, size_t n);

#endif
