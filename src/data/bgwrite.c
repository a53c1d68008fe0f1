#include "data/bgwrite.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"

typedef struct {
    int fd, writeback;
    char *buf;
    size_t len;
} write_job;

struct kiln_bgwrite {
    const char *what;
    int threaded, stop;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t queued, freed; /* a job was queued; a buffer came back to the pool */
    write_job *queue;             /* ring of cap jobs: never more jobs than buffers */
    int head, count;
    char **free_bufs;             /* the pool: n_free ready, up to cap allocated in all */
    int n_free, allocated, cap;
    size_t size;
    int err;                      /* errno of the first failed write, 0 if none */
};

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return k == 0 ? ENOSPC : errno;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Writes one job unless an earlier one failed; returns errno or 0. Called without the lock. */
static int run_job(write_job j, int failed) {
    if (failed) return 0;
    int e = write_all(j.fd, j.buf, j.len);
    if (!e && j.writeback) sync_file_range(j.fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    return e;
}

/* Records the outcome of a job and gives its buffer back. Called with the lock held. */
static void job_done(kiln_bgwrite *w, write_job j, int e) {
    if (e && !w->err) w->err = e;
    w->free_bufs[w->n_free++] = j.buf;
    pthread_cond_broadcast(&w->freed);
}

static void *writer_main(void *arg) {
    kiln_bgwrite *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->count && !w->stop) pthread_cond_wait(&w->queued, &w->mu);
        if (!w->count) break;
        write_job j = w->queue[w->head];
        int failed = w->err != 0;
        pthread_mutex_unlock(&w->mu);
        int e = run_job(j, failed);
        pthread_mutex_lock(&w->mu);
        w->head = (w->head + 1) % w->cap;
        w->count--;
        job_done(w, j, e);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

kiln_bgwrite *kiln_bgwrite_new(int threaded, const char *what) {
    kiln_bgwrite *w = kiln_xcalloc(1, sizeof *w);
    w->what = what;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->queued, NULL);
    pthread_cond_init(&w->freed, NULL);
    if (threaded) {
        /* The thread starts with signals blocked, so that handlers run on the caller's thread. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        w->threaded = pthread_create(&w->thread, NULL, writer_main, w) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    return w;
}

static int fail_if_error(kiln_bgwrite *w) {
    pthread_mutex_lock(&w->mu);
    int e = w->err;
    pthread_mutex_unlock(&w->mu);
    return e ? kiln_fail("%s: %s", w->what, strerror(e)) : 0;
}

int kiln_bgwrite_wait(kiln_bgwrite *w) {
    pthread_mutex_lock(&w->mu);
    while (w->count) pthread_cond_wait(&w->freed, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return fail_if_error(w);
}

static void free_pool(kiln_bgwrite *w) {
    for (int i = 0; i < w->n_free; i++) free(w->free_bufs[i]);
    free(w->free_bufs);
    free(w->queue);
    w->free_bufs = NULL;
    w->queue = NULL;
    w->n_free = w->allocated = w->cap = 0;
}

int kiln_bgwrite_pool(kiln_bgwrite *w, int n, size_t size) {
    int rc = kiln_bgwrite_wait(w);
    pthread_mutex_lock(&w->mu);
    free_pool(w);
    w->cap = n;
    w->size = size;
    w->free_bufs = kiln_xmalloc((size_t)n * sizeof *w->free_bufs);
    w->queue = kiln_xmalloc((size_t)n * sizeof *w->queue);
    w->head = 0;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

char *kiln_bgwrite_get(kiln_bgwrite *w) {
    pthread_mutex_lock(&w->mu);
    while (!w->n_free && w->allocated == w->cap) pthread_cond_wait(&w->freed, &w->mu);
    char *buf = NULL;
    if (w->n_free) buf = w->free_bufs[--w->n_free];
    else w->allocated++; /* allocated outside the lock */
    pthread_mutex_unlock(&w->mu);
    return buf ? buf : kiln_xmalloc(w->size);
}

void kiln_bgwrite_release(kiln_bgwrite *w, char *buf) {
    pthread_mutex_lock(&w->mu);
    w->free_bufs[w->n_free++] = buf;
    pthread_cond_broadcast(&w->freed);
    pthread_mutex_unlock(&w->mu);
}

int kiln_bgwrite_put(kiln_bgwrite *w, int fd, char *buf, size_t len, int writeback) {
    write_job j = {fd, writeback, buf, len};
    if (!w->threaded) {
        job_done(w, j, run_job(j, w->err != 0));
        return fail_if_error(w);
    }
    pthread_mutex_lock(&w->mu);
    int e = w->err;
    if (!e) {
        w->queue[(w->head + w->count) % w->cap] = j;
        w->count++;
        pthread_cond_signal(&w->queued);
    } else w->free_bufs[w->n_free++] = buf;
    pthread_mutex_unlock(&w->mu);
    return e ? kiln_fail("%s: %s", w->what, strerror(e)) : 0;
}

void kiln_bgwrite_free(kiln_bgwrite *w) {
    if (!w) return;
    if (w->threaded) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_signal(&w->queued);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
    }
    free_pool(w);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->queued);
    pthread_cond_destroy(&w->freed);
    free(w);
}
