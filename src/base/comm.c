/* Communication between processes (comm.h). Under mpirun, OpenMPI's library is opened with dlopen and
 * its handful of functions looked up by name. In OpenMPI's ABI the predefined handles MPI_COMM_WORLD,
 * MPI_FLOAT, MPI_DOUBLE and MPI_SUM are the addresses of the exported objects ompi_mpi_comm_world,
 * ompi_mpi_float, ompi_mpi_double and ompi_mpi_op_sum, and MPI_IN_PLACE is (void *)1. */
#include "base/comm.h"

#include <dlfcn.h>
#include <stdlib.h>

#include "base/error.h"

typedef int (*mpi_init_fn)(int *, char ***);
typedef int (*mpi_finalize_fn)(void);
typedef int (*mpi_comm_int_fn)(void *, int *);
typedef int (*mpi_allreduce_fn)(const void *, void *, int, void *, void *, void *);

static struct {
    int on, rank, size;
    void *lib, *world, *f32, *f64, *sum;
    mpi_finalize_fn finalize;
    mpi_allreduce_fn allreduce;
} mpi = {.size = 1};

enum { MPI_OK = 0, CHUNK = 1 << 28 }; /* MPI counts are ints: reduce in chunks */
#define MPI_IN_PLACE_ ((void *)1)

int comm_init(void) {
    if (!getenv("OMPI_COMM_WORLD_SIZE")) return 0;
    static const char *const names[] = {"libmpi.so.40", "libmpi.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !mpi.lib; i++)
        mpi.lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL); /* GLOBAL: OpenMPI's plugins resolve against it */
    if (!mpi.lib)
        return kiln_fail("started by mpirun, but OpenMPI's libmpi cannot be loaded (%s); install openmpi-bin", dlerror());
    mpi_init_fn init = (mpi_init_fn)dlsym(mpi.lib, "MPI_Init");
    mpi_comm_int_fn rank = (mpi_comm_int_fn)dlsym(mpi.lib, "MPI_Comm_rank");
    mpi_comm_int_fn size = (mpi_comm_int_fn)dlsym(mpi.lib, "MPI_Comm_size");
    mpi.finalize = (mpi_finalize_fn)dlsym(mpi.lib, "MPI_Finalize");
    mpi.allreduce = (mpi_allreduce_fn)dlsym(mpi.lib, "MPI_Allreduce");
    mpi.world = dlsym(mpi.lib, "ompi_mpi_comm_world");
    mpi.f32 = dlsym(mpi.lib, "ompi_mpi_float");
    mpi.f64 = dlsym(mpi.lib, "ompi_mpi_double");
    mpi.sum = dlsym(mpi.lib, "ompi_mpi_op_sum");
    if (!init || !rank || !size || !mpi.finalize || !mpi.allreduce || !mpi.world || !mpi.f32 || !mpi.f64 || !mpi.sum)
        return kiln_fail("the MPI library loaded is not OpenMPI's (missing symbols); kiln supports OpenMPI");
    if (init(NULL, NULL) != MPI_OK || rank(mpi.world, &mpi.rank) != MPI_OK || size(mpi.world, &mpi.size) != MPI_OK)
        return kiln_fail("MPI_Init failed");
    mpi.on = 1;
    return 0;
}

void comm_finalize(void) {
    if (mpi.on) mpi.finalize();
    mpi.on = 0;
}

int comm_rank(void) { return mpi.rank; }
int comm_size(void) { return mpi.size; }

void comm_sum_f32(float *x, size_t n) {
    for (size_t i = 0; mpi.on && i < n; i += CHUNK)
        mpi.allreduce(MPI_IN_PLACE_, x + i, (int)(n - i < CHUNK ? n - i : CHUNK), mpi.f32, mpi.sum, mpi.world);
}

void comm_sum_f64(double *x, size_t n) {
    for (size_t i = 0; mpi.on && i < n; i += CHUNK)
        mpi.allreduce(MPI_IN_PLACE_, x + i, (int)(n - i < CHUNK ? n - i : CHUNK), mpi.f64, mpi.sum, mpi.world);
}
