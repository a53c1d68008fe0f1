/* The worker pool of pool.h.
 *
 * One loop at a time. Its chunks are claimed through one 64-bit ticket, (generation << 32) |
 * (chunks << 16) | next chunk, by compare-and-swap: a worker that read the ticket of a loop that has
 * since ended fails its swap, so it never claims a chunk of a loop it has not seen published, and the
 * loop's function and argument, read after a successful claim, are those of the loop it claimed from
 * (that loop cannot end before the claimed chunk is done). The caller counts its own chunks and waits
 * for the workers' count to make up the rest. */
#include "base/pool.h"

#include <limits.h>
#include <linux/futex.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { MAX_THREADS = 64, MAX_CHUNKS = 0xffff };

/* How long an idle worker spins for the next loop before it sleeps: longer than the gaps between the
 * loops of one token (norms, rope: a few microseconds), short beside a scheduler time slice (ms), so a
 * worker that is not needed soon gives its core back. Measured on the 110M model beside two busy
 * processes: 5 to 50 us decode alike, 200 us ~25% slower; on a quiet machine 5, 20 and 50 us alike. */
static const int64_t WORKER_SPIN_NS = 20000;
/* How long the caller spins for the workers' last chunks before it yields its core at each check
 * (a worker descheduled in the middle of a chunk needs a core to finish it). */
static const int64_t JOIN_SPIN_NS = 20000;

static struct {
    alignas(64) _Atomic uint64_t ticket;
    _Atomic(kiln_range_fn) fn; /* the running loop, stored before its ticket */
    _Atomic(void *) arg;
    _Atomic int n, grain, nth;
    alignas(64) _Atomic int done; /* chunks the workers have finished */
    alignas(64) _Atomic uint32_t wake; /* futex word: bumped with each loop */
    _Atomic int sleepers;
    alignas(64) atomic_flag busy;
    uint32_t gen;    /* generation of the last loop: under busy */
    int workers;     /* started: under busy */
} pool = {.busy = ATOMIC_FLAG_INIT};

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint32_t ticket_gen(uint64_t t) { return (uint32_t)(t >> 32); }

/* Claims and runs chunks of loop GEN until none is left; returns how many this thread ran. */
static int run_chunks(uint32_t gen, int tid) {
    int ran = 0;
    uint64_t t = atomic_load_explicit(&pool.ticket, memory_order_acquire);
    for (;;) {
        unsigned chunks = (unsigned)(t >> 16) & 0xffff, next = (unsigned)t & 0xffff;
        if (ticket_gen(t) != gen || next >= chunks) return ran;
        if (!atomic_compare_exchange_weak_explicit(&pool.ticket, &t, t + 1, memory_order_acquire,
                                                   memory_order_acquire))
            continue;
        kiln_range_fn fn = atomic_load_explicit(&pool.fn, memory_order_relaxed);
        int n = atomic_load_explicit(&pool.n, memory_order_relaxed);
        int grain = atomic_load_explicit(&pool.grain, memory_order_relaxed);
        int i0 = (int)next * grain, i1 = n - i0 < grain ? n : i0 + grain;
        fn(atomic_load_explicit(&pool.arg, memory_order_relaxed), i0, i1, tid);
        ran++;
        t = atomic_load_explicit(&pool.ticket, memory_order_acquire);
    }
}

/* Waits for a loop newer than GEN: spins, then sleeps until the next loop is published. */
static uint64_t wait_for_loop(uint32_t gen) {
    int64_t start = now_ns();
    for (unsigned spin = 1;; spin++) {
        uint64_t t = atomic_load_explicit(&pool.ticket, memory_order_acquire);
        if (ticket_gen(t) != gen) return t;
        cpu_relax();
        if (spin % 64 || now_ns() - start < WORKER_SPIN_NS) continue;
        /* The caller bumps wake after the ticket and then reads sleepers; this thread counts itself in
         * sleepers before it reads the ticket again, so one of the two sees the other. */
        uint32_t w = atomic_load(&pool.wake);
        atomic_fetch_add(&pool.sleepers, 1);
        if (ticket_gen(atomic_load(&pool.ticket)) == gen)
            syscall(SYS_futex, &pool.wake, FUTEX_WAIT_PRIVATE, w, NULL, NULL, 0);
        atomic_fetch_sub(&pool.sleepers, 1);
        start = now_ns();
    }
}

static void *worker_main(void *p) {
    int id = (int)(intptr_t)p;
    uint32_t gen = ticket_gen(atomic_load(&pool.ticket));
    for (;;) {
        uint64_t t = wait_for_loop(gen);
        gen = ticket_gen(t);
        if (id >= atomic_load_explicit(&pool.nth, memory_order_relaxed)) continue; /* not needed this time */
        int ran = run_chunks(gen, id);
        if (ran) atomic_fetch_add_explicit(&pool.done, ran, memory_order_release);
    }
    return NULL;
}

/* A child of fork() has none of the parent's workers. */
static void forget_workers(void) {
    pool.workers = 0;
    atomic_store(&pool.sleepers, 0);
    atomic_flag_clear(&pool.busy);
}

static void pool_init(void) { pthread_atfork(NULL, NULL, forget_workers); }

/* Starts workers 1..NTH-1 that are not running yet (a failed start leaves the work to the others). */
static void start_workers(int nth) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int id = pool.workers + 1; id < nth; id++) {
        pthread_t th;
        if (pthread_create(&th, &attr, worker_main, (void *)(intptr_t)id) != 0) break;
        pool.workers = id;
    }
    pthread_attr_destroy(&attr);
}

int kiln_pool_threads(void) {
    int nth = omp_get_max_threads();
    return nth < MAX_THREADS ? nth : MAX_THREADS;
}

void kiln_pool_for(int n, int grain, kiln_range_fn fn, void *arg) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if ((n + grain - 1) / grain > MAX_CHUNKS) grain = (n + MAX_CHUNKS - 1) / MAX_CHUNKS;
    int chunks = (n + grain - 1) / grain, nth = kiln_pool_threads();
    if (nth < 2 || chunks < 2 || atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
        fn(arg, 0, n, 0);
        return;
    }
    pthread_once(&pool_once, pool_init);
    if (pool.workers < nth - 1) start_workers(nth);
    atomic_store_explicit(&pool.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&pool.arg, arg, memory_order_relaxed);
    atomic_store_explicit(&pool.n, n, memory_order_relaxed);
    atomic_store_explicit(&pool.grain, grain, memory_order_relaxed);
    atomic_store_explicit(&pool.nth, nth, memory_order_relaxed);
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    uint32_t gen = ++pool.gen;
    atomic_store(&pool.ticket, (uint64_t)gen << 32 | (uint64_t)chunks << 16);
    atomic_fetch_add(&pool.wake, 1);
    if (atomic_load(&pool.sleepers) > 0) syscall(SYS_futex, &pool.wake, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    int rest = chunks - run_chunks(gen, 0);
    int64_t start = 0;
    for (unsigned spin = 1; atomic_load_explicit(&pool.done, memory_order_acquire) != rest; spin++) {
        cpu_relax();
        if (spin % 64) continue;
        if (!start) start = now_ns();
        else if (now_ns() - start > JOIN_SPIN_NS) sched_yield();
    }
    atomic_flag_clear_explicit(&pool.busy, memory_order_release);
}

/* Chunks of kiln_pool_rows, guided: each takes 1 / (GUIDE * threads) of the rows left, so the first are
 * large (few restarts of a thread's memory stream: at each, a one-token kernel's three runs start cold,
 * ~1 us of a 2 us chunk of 32 KiB) and the last ones small, down to ROW_CHUNK_MIN_BYTES: the threads
 * finish within a small chunk of each other. With equal chunks (2 per thread) the caller of a 110M Q4_0
 * decode spent 18% of its time at the joins, waiting for the worker's last chunk. GUIDE 1 rather than 2
 * (5 chunks of a 768x768 Q4_0 matrix instead of 7): its one-token product from memory, 2 threads, 9.6-10.1
 * -> 7.5 us, 2048x768 21.6-24.2 -> 17.2-17.9 us (p10 of 1000). A chunk starts on a multiple of 16 rows,
 * so no two threads write one cache line of a float output. */
enum { GUIDE = 1, ROW_CHUNK_MIN_BYTES = 32 << 10, ROW_GROUP = 16, MAX_ROW_CHUNKS = 128 };

typedef struct {
    kiln_range_fn fn;
    void *arg;
    int first[MAX_ROW_CHUNKS + 1]; /* chunk c: rows first[c]..first[c + 1]-1 */
} rows_job;

static void row_chunks(void *p, int c0, int c1, int tid) {
    const rows_job *j = p;
    for (int c = c0; c < c1; c++) j->fn(j->arg, j->first[c], j->first[c + 1], tid);
}

void kiln_pool_rows(int n_rows, size_t row_bytes, kiln_range_fn fn, void *arg) {
    if (n_rows <= 0) return;
    int nth = kiln_pool_threads();
    size_t min_rows = row_bytes ? ROW_CHUNK_MIN_BYTES / row_bytes : (size_t)n_rows;
    int least = min_rows > (size_t)n_rows ? n_rows : min_rows < ROW_GROUP ? ROW_GROUP : (int)min_rows;
    least = (least + ROW_GROUP - 1) / ROW_GROUP * ROW_GROUP;
    rows_job j = {fn, arg, {0}};
    int n = 0;
    for (int done = 0; done < n_rows; n++) {
        int left = n_rows - done, size = left / (GUIDE * nth);
        size = (size + ROW_GROUP - 1) / ROW_GROUP * ROW_GROUP;
        if (size < least) size = least;
        if (size > left || n == MAX_ROW_CHUNKS - 1) size = left;
        j.first[n] = done;
        done += size;
    }
    j.first[n] = n_rows;
    kiln_pool_for(n, 1, row_chunks, &j);
}
