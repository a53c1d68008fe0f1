/* The kernels' worker pool (src/base/pool.h): every item once, ranges on the grain, thread ids within
 * the thread count, nested loops and loops after fork(). */
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/pool.h"
#include "kiln.h"
#include "test.h"

typedef struct {
    _Atomic int *seen;
    int grain, threads;
    _Atomic int bad_start, bad_tid;
} visit_job;

static void visit(void *p, int i0, int i1, int tid) {
    visit_job *j = p;
    if (i0 % j->grain) atomic_store(&j->bad_start, 1);
    if (tid < 0 || tid >= j->threads) atomic_store(&j->bad_tid, 1);
    for (int i = i0; i < i1; i++) atomic_fetch_add(&j->seen[i], 1);
}

/* Runs a loop of N items by GRAIN and checks what it visited. */
static void check_loop(int n, int grain) {
    visit_job j = {calloc(n > 0 ? n : 1, sizeof(_Atomic int)), grain, kiln_pool_threads(), 0, 0};
    kiln_pool_for(n, grain, visit, &j);
    for (int i = 0; i < n; i++) CHECKF(j.seen[i] == 1, "n %d grain %d: item %d ran %d times", n, grain, i, j.seen[i]);
    CHECKF(!j.bad_start, "n %d grain %d: a range did not start on a multiple of the grain", n, grain);
    CHECKF(!j.bad_tid, "n %d grain %d: a thread id outside 0..%d", n, grain, j.threads - 1);
    free(j.seen);
}

TEST(pool_runs_every_item_once_whatever_the_thread_count) {
    int sizes[] = {0, 1, 2, 7, 64, 1000, 100003};
    for (int threads = 1; threads <= 4; threads++) {
        kiln_set_threads(threads);
        for (int s = 0; s < 7; s++)
            for (int grain = 1; grain <= 5; grain += 2)
                for (int rep = 0; rep < 20; rep++) check_loop(sizes[s], grain);
    }
}

typedef struct {
    _Atomic int *seen;
    _Atomic int bad_start;
} rows_visit;

static void visit_rows(void *p, int r0, int r1, int tid) {
    rows_visit *j = p;
    if (r0 % 16) atomic_store(&j->bad_start, 1);
    for (int r = r0; r < r1; r++) atomic_fetch_add(&j->seen[r], 1);
}

TEST(pool_rows_runs_every_row_once_in_chunks_on_16_rows) {
    int rows[] = {1, 15, 16, 17, 100, 768, 2304, 32000, 100003};
    size_t bytes[] = {0, 4, 432, 3072, 1 << 20};
    for (int threads = 1; threads <= 4; threads++) {
        kiln_set_threads(threads);
        for (int r = 0; r < 9; r++)
            for (int b = 0; b < 5; b++) {
                rows_visit j = {calloc(rows[r], sizeof(_Atomic int)), 0};
                kiln_pool_rows(rows[r], bytes[b], visit_rows, &j);
                for (int i = 0; i < rows[r]; i++)
                    CHECKF(j.seen[i] == 1, "%d rows of %zu bytes: row %d ran %d times", rows[r], bytes[b], i, j.seen[i]);
                CHECKF(!j.bad_start, "%d rows of %zu bytes: a chunk did not start on a multiple of 16", rows[r],
                       bytes[b]);
                free(j.seen);
            }
    }
}

static void nested(void *p, int i0, int i1, int tid) {
    for (int i = i0; i < i1; i++) check_loop(33, 2);
}

TEST(pool_loop_inside_a_loop_runs_on_the_calling_thread) {
    kiln_set_threads(2);
    kiln_pool_for(8, 1, nested, NULL);
}

TEST(pool_works_in_a_child_process_after_fork) {
    kiln_set_threads(2);
    check_loop(1000, 1); /* the parent's workers are running */
    pid_t pid = fork();
    if (pid == 0) {
        check_loop(1000, 1);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
