/* Communication between the processes of a data-parallel run: one process unless started by
 * OpenMPI's mpirun, which kiln detects from the environment and then joins through libmpi loaded at
 * run time (so kiln builds and runs without MPI installed). Every process calls the same functions
 * in the same order; sums are in place. */
#ifndef KILN_TRAIN_COMM_H
#define KILN_TRAIN_COMM_H

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
