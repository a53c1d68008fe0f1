/* kiln shuffle: an exact uniform shuffle of the records of files larger than memory (docs/SHUFFLE.md).
 *
 * A node is a set of records to put in uniformly random order onto the output. If its records fit in
 * the memory budget they are loaded and shuffled by Fisher–Yates; otherwise each record is written to
 * one of B temporary bucket files chosen uniformly at random, and the buckets become nodes themselves,
 * emitted one after the other. All randomness comes from counter-based hashes of (seed, node key,
 * record number), so the output depends on the inputs, the seed and --mem only.
 *
 * Records longer than a threshold ("big" records) are never held in memory: a bucket load keeps only
 * their place in the bucket file and the output copies them from there in blocks. */
#include "data/shuffle.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/file.h"
#include "base/progress.h"
#include "base/rng.h"
#include "data/bgwrite.h"
#include "data/tmpfiles.h"

enum {
    MIN_BUCKET_BUF = 4 << 10,  /* smallest write buffer of one bucket during a scatter */
    MAX_DEPTH = 12,            /* splits of splits: each level divides a bucket by at least 2 */
    PREFETCH = 16,             /* records (or swaps) looked ahead to hide memory latency */
    UNKNOWN_SIZE_BUCKETS = 1024, /* first split of inputs of unknown size (pipes) */
    MAX_IO = 256 << 10,        /* largest read block, output or bucket buffer (see plan_memory) */
    HUGE_PAGES_FROM = 32 << 20, /* arrays this large get transparent huge pages */
    OUT_BUFS = 4,              /* output buffers: one being filled, the others being written */
};
static const uint64_t BIG_FLAG = 1ull << 63; /* index entry: a big record, not an arena offset */
static const uint64_t SYNC_EVERY = 64ull << 20; /* output bytes between writeback requests */

typedef struct {
    int fd;
    uint64_t bytes, records;         /* every record ends with the separator in a bucket file */
    uint64_t big_bytes, big_records; /* of which big */
} bucket;

typedef struct {
    uint64_t offset, len; /* in the bucket file, separator included */
} big_record;

/* The records of one node, loaded for an in-memory shuffle. */
typedef struct {
    char *data;            /* the small records, each ending with the separator */
    uint64_t fill, cap;
    uint64_t *idx;         /* arena offset, or BIG_FLAG | index into bigs */
    uint64_t n, idx_cap;
    uint64_t idx_limit;    /* the index may grow to this many entries */
    big_record *bigs;
    uint64_t n_big, big_cap;
    uint64_t big_limit;    /* records longer than this become big records */
    uint64_t rec_start;    /* arena offset of the record being read */
    uint64_t rec_file;     /* its offset in the file being read */
    int in_big;            /* the record being read is big: its bytes are skipped */
} loaded;

/* A scatter pass in progress: records go to n buckets through write buffers. */
typedef struct {
    bucket *b;
    char **buf;         /* each bucket's buffer being filled (from the bucket writer's pool) */
    size_t *fill, buf_size;
    int n, shift;
    uint64_t key, next; /* next: number of the next record */
    int cur;            /* bucket of the record being copied, -1 between records */
    uint64_t cur_len;
} scatter;

typedef struct {
    const kiln_shuffle_opts *o;
    unsigned char sep;
    uint64_t avail;   /* bytes for the data and index of one in-memory shuffle */
    uint64_t big;     /* longer records are copied through, not loaded */
    size_t io;        /* read block and output buffer size */
    char *rbuf, *obuf;
    size_t ofill;
    kiln_bgwrite *outw, *bucketw; /* writers of the output and of bucket files */
    char *out_what, *tmp_what;    /* their error message prefixes */
    loaded L;         /* kept from one bucket to the next: its pages are then not cleared again */
    kiln_atomic out;
    int out_fd;
    int out_direct;   /* OUT is "-" (stdout), a pipe or a device: written in place, not renamed */
    char *out_path;   /* OUT with a link to a regular file followed (see resolve_output) */
    uint64_t out_bytes, out_synced;
    const char *tmp;  /* the private temporary directory (kiln_tmp_dir) */
    int free_fds;     /* bucket files that may still be opened */
    uint64_t read_bytes, written_bytes;
    kiln_progress bar;
} shuffler;

/* ---- Plain I/O ---- */
static ssize_t read_some(int fd, char *p, size_t n) {
    ssize_t k;
    do k = read(fd, p, n);
    while (k < 0 && errno == EINTR);
    return k;
}

static void progress_detail(void *ctx, char *buf, size_t size) {
    const shuffler *s = ctx;
    char r[32], w[32];
    kiln_progress_format(r, sizeof r, (double)s->read_bytes, "B");
    kiln_progress_format(w, sizeof w, (double)s->written_bytes, "B");
    snprintf(buf, size, "read %s, written %s", r, w);
}

static void count_read(shuffler *s, uint64_t n) {
    s->read_bytes += n;
    kiln_progress_update(&s->bar, s->read_bytes + s->written_bytes);
}

static void count_written(shuffler *s, uint64_t n) {
    s->written_bytes += n;
    kiln_progress_update(&s->bar, s->read_bytes + s->written_bytes);
}

/* Arrays sized by --mem are mapped directly: freeing gives them back to the system at once, growing
 * never copies, and NULL means the machine does not have the memory. Large ones get huge pages (they
 * are touched at random: fewer TLB misses); small ones not, as a huge page can overshoot a small --mem. */
static void *map_grow(void *old, size_t old_size, size_t n) {
    void *p = old ? mremap(old, old_size, n, MREMAP_MAYMOVE)
                  : mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (n >= HUGE_PAGES_FROM) madvise(p, n, MADV_HUGEPAGE);
    return p;
}

static void map_free(void *p, size_t n) {
    if (p) munmap(p, n);
}

/* ---- Output ---- */
static int out_flush(shuffler *s) {
    if (!s->ofill) return 0;
    s->out_bytes += s->ofill;
    count_written(s, s->ofill);
    /* Start writing back early so that the final fsync has little left to wait for. */
    int writeback = s->out_bytes - s->out_synced >= SYNC_EVERY;
    if (writeback) s->out_synced = s->out_bytes;
    int rc = kiln_bgwrite_put(s->outw, s->out_fd, s->obuf, s->ofill, writeback);
    s->obuf = kiln_bgwrite_get(s->outw);
    s->ofill = 0;
    return rc;
}

static int out_put(shuffler *s, const char *p, size_t n) {
    while (n) {
        if (s->ofill == s->io && out_flush(s) < 0) return -1;
        size_t k = s->io - s->ofill < n ? s->io - s->ofill : n;
        memcpy(s->obuf + s->ofill, p, k);
        s->ofill += k;
        p += k;
        n -= k;
    }
    return 0;
}

/* Copies a big record from FD to the output, a block at a time. */
static int out_copy(shuffler *s, int fd, big_record r) {
    while (r.len) {
        if (s->ofill == s->io && out_flush(s) < 0) return -1;
        size_t room = s->io - s->ofill, want = r.len < room ? (size_t)r.len : room;
        ssize_t k = pread(fd, s->obuf + s->ofill, want, (off_t)r.offset);
        if (k <= 0) return kiln_fail("%s: cannot read temporary file: %s", s->tmp, k ? strerror(errno) : "truncated");
        count_read(s, (uint64_t)k);
        s->ofill += (size_t)k;
        r.offset += (uint64_t)k;
        r.len -= (uint64_t)k;
    }
    return 0;
}

/* ---- Scatter: records to uniformly random buckets ---- */
static int bucket_file(shuffler *s) {
    if (s->free_fds <= 0) return kiln_fail("%s: too many temporary files open", s->tmp);
    int fd = kiln_tmp_file();
    if (fd >= 0) s->free_fds--;
    return fd;
}

static void bucket_close(shuffler *s, bucket *b) {
    if (b->fd >= 0) {
        close(b->fd);
        s->free_fds++;
    }
    b->fd = -1;
}

/* The number of buckets for a node needing NEED bytes in memory: a power of two (so the bucket of a
 * record is exactly uniform: the top bits of a hash) giving buckets of about half the budget. */
static int bucket_count(const shuffler *s, uint64_t need) {
    uint64_t want = need / (s->avail / 2) + 1, cap_mem = s->o->mem / 2 / MIN_BUCKET_BUF;
    int n = 2;
    while ((uint64_t)n < want && (uint64_t)n * 2 <= cap_mem && n * 2 <= s->free_fds) n *= 2;
    return n;
}

static int scatter_begin(shuffler *s, scatter *sc, int n, uint64_t key) {
    memset(sc, 0, sizeof *sc);
    sc->b = kiln_xcalloc((size_t)n, sizeof *sc->b);
    for (int j = 0; j < n; j++) sc->b[j].fd = -1;
    sc->n = n;
    for (int j = 0; j < n; j++)
        if ((sc->b[j].fd = bucket_file(s)) < 0) return -1;
    sc->shift = 64;
    for (int m = n; m > 1; m /= 2) sc->shift--;
    /* A few spare buffers let the scan go on while full ones are being written. */
    int n_bufs = n + n / 4 + 2;
    sc->buf_size = s->o->mem / 2 / (size_t)n_bufs;
    if (sc->buf_size > MAX_IO) sc->buf_size = MAX_IO;
    if (kiln_bgwrite_pool(s->bucketw, n_bufs, sc->buf_size) < 0) return -1;
    sc->buf = kiln_xcalloc((size_t)n, sizeof *sc->buf);
    sc->fill = kiln_xcalloc((size_t)n, sizeof *sc->fill);
    for (int j = 0; j < n; j++) sc->buf[j] = kiln_bgwrite_get(s->bucketw);
    sc->key = key;
    sc->cur = -1;
    return 0;
}

static int scatter_flush(shuffler *s, scatter *sc, int j) {
    count_written(s, sc->fill[j]);
    int rc = kiln_bgwrite_put(s->bucketw, sc->b[j].fd, sc->buf[j], sc->fill[j], 0);
    sc->buf[j] = kiln_bgwrite_get(s->bucketw);
    sc->fill[j] = 0;
    return rc;
}

static int scatter_put(shuffler *s, scatter *sc, const char *p, size_t n) {
    int j = sc->cur;
    sc->b[j].bytes += n;
    sc->cur_len += n;
    while (n) {
        size_t room = sc->buf_size - sc->fill[j], k = n < room ? n : room;
        memcpy(sc->buf[j] + sc->fill[j], p, k);
        sc->fill[j] += k;
        p += k;
        n -= k;
        if (sc->fill[j] == sc->buf_size && scatter_flush(s, sc, j) < 0) return -1;
    }
    return 0;
}

static void scatter_end_record(shuffler *s, scatter *sc) {
    if (sc->cur_len > s->big) {
        sc->b[sc->cur].big_bytes += sc->cur_len;
        sc->b[sc->cur].big_records++;
    }
    sc->cur = -1;
}

/* Sends a block of the stream to the buckets; a record may continue from the previous block. */
static int scatter_block(shuffler *s, scatter *sc, const char *p, size_t n) {
    while (n) {
        if (sc->cur < 0) {
            sc->cur = (int)(kiln_hash3(s->o->seed, sc->key, sc->next++) >> sc->shift);
            sc->cur_len = 0;
            sc->b[sc->cur].records++;
        }
        const char *e = memchr(p, s->sep, n);
        size_t k = e ? (size_t)(e - p) + 1 : n;
        if (scatter_put(s, sc, p, k) < 0) return -1;
        if (e) scatter_end_record(s, sc);
        p += k;
        n -= k;
    }
    return 0;
}

/* Scatters all of FD (NAME in messages). TERMINATE: its last record may lack the separator. */
static int scatter_fd(shuffler *s, scatter *sc, int fd, const char *name, int terminate) {
    for (;;) {
        ssize_t k = read_some(fd, s->rbuf, s->io);
        if (k < 0) return kiln_fail("%s: read error: %s", name, strerror(errno));
        if (k == 0) break;
        count_read(s, (uint64_t)k);
        if (scatter_block(s, sc, s->rbuf, (size_t)k) < 0) return -1;
    }
    if (terminate && sc->cur >= 0) {
        if (scatter_put(s, sc, (const char *)&s->sep, 1) < 0) return -1;
        scatter_end_record(s, sc);
    }
    return 0;
}

/* Gives the write buffers back (queuing the partly filled ones when WRITE) and frees them once written. */
static int scatter_drain(shuffler *s, scatter *sc, int write) {
    int rc = 0;
    for (int j = 0; sc->buf && j < sc->n; j++) {
        if (write && rc == 0 && sc->fill[j]) {
            count_written(s, sc->fill[j]);
            rc = kiln_bgwrite_put(s->bucketw, sc->b[j].fd, sc->buf[j], sc->fill[j], 0);
        } else kiln_bgwrite_release(s->bucketw, sc->buf[j]);
    }
    free(sc->buf);
    free(sc->fill);
    sc->buf = NULL;
    sc->fill = NULL;
    int wrc = kiln_bgwrite_pool(s->bucketw, 0, 0);
    return rc < 0 ? rc : wrc;
}

static void scatter_free(shuffler *s, scatter *sc) {
    scatter_drain(s, sc, 0);
    for (int j = 0; j < sc->n; j++) bucket_close(s, &sc->b[j]);
    free(sc->b);
}

/* ---- Loading a node into memory ---- */
static void loaded_free(loaded *L) {
    map_free(L->data, L->cap);
    map_free(L->idx, L->idx_cap * sizeof *L->idx);
    map_free(L->bigs, L->big_cap * sizeof *L->bigs);
    memset(L, 0, sizeof *L);
}

/* Empties L, with room for CAP bytes, IDX_CAP records (growing to IDX_LIMIT) and BIG_CAP big ones; the
 * arrays of the previous node are kept when they are large enough. */
static int loaded_reset(const shuffler *s, loaded *L, uint64_t cap, uint64_t idx_cap, uint64_t idx_limit,
                        uint64_t big_cap, uint64_t big_limit) {
    if (L->cap < cap || L->idx_cap < idx_cap || L->big_cap < big_cap) {
        loaded_free(L);
        cap = cap ? cap : 1; /* mmap takes no empty mappings */
        idx_cap = idx_cap ? idx_cap : 1;
        big_cap = big_cap ? big_cap : 1;
        L->data = map_grow(NULL, 0, cap);
        L->idx = map_grow(NULL, 0, idx_cap * sizeof *L->idx);
        L->bigs = map_grow(NULL, 0, big_cap * sizeof *L->bigs);
        L->cap = cap;
        L->idx_cap = idx_cap;
        L->big_cap = big_cap;
        if (!L->data || !L->idx || !L->bigs) {
            loaded_free(L);
            return kiln_fail("--mem: cannot allocate %llu bytes of the %llu asked for: more than is free?",
                             (unsigned long long)(cap + idx_cap * sizeof(uint64_t)), (unsigned long long)s->o->mem);
        }
    }
    L->idx_limit = idx_limit > L->idx_cap ? idx_limit : L->idx_cap;
    L->fill = L->n = L->n_big = 0;
    L->in_big = 0;
    L->big_limit = big_limit;
    return 0;
}

/* Makes room for one more index entry, growing the index up to its limit. Returns 0, or 1 when the
 * index is full (the records do not fit). */
static int index_room(loaded *L) {
    if (L->n < L->idx_cap) return 0;
    if (L->idx_cap >= L->idx_limit) return 1;
    uint64_t cap = L->idx_cap * 2 < L->idx_limit ? L->idx_cap * 2 : L->idx_limit;
    uint64_t *p = map_grow(L->idx, L->idx_cap * sizeof *p, cap * sizeof *p);
    if (!p) return 1;
    L->idx = p;
    L->idx_cap = cap;
    return 0;
}

/* Returns 0, or 1 when the index is full. */
static int push_big(loaded *L, uint64_t offset, uint64_t len) {
    if (index_room(L) || L->n_big == L->big_cap) return 1;
    L->bigs[L->n_big] = (big_record){offset, len};
    L->idx[L->n++] = BIG_FLAG | L->n_big++;
    return 0;
}

/* Indexes the LEN bytes just read into data[fill..] from file offset POS: complete records are
 * indexed, big ones are dropped from the arena and kept as a place in the file. Returns 0, or 1 when
 * the index is full. */
static int index_block(loaded *L, unsigned char sep, uint64_t len, uint64_t pos) {
    uint64_t x = L->fill, end = L->fill + len;
    if (L->in_big) {
        char *e = memchr(L->data + x, sep, len);
        uint64_t k = e ? (uint64_t)(e - (L->data + x)) + 1 : len;
        L->bigs[L->n_big - 1].len += k;
        if (!e) return 0; /* the whole block belongs to the big record: nothing kept */
        L->in_big = 0;
        memmove(L->data + x, e + 1, len - k);
        end -= k;
        L->rec_start = x;
        L->rec_file = pos + k;
    }
    char *e;
    while (x < end && (e = memchr(L->data + x, sep, end - x))) {
        uint64_t stop = (uint64_t)(e - L->data) + 1, rlen = stop - L->rec_start;
        if (rlen > L->big_limit) {
            if (push_big(L, L->rec_file, rlen)) return 1;
            memmove(L->data + L->rec_start, L->data + stop, end - stop);
            end -= rlen;
            x = L->rec_start;
        } else {
            if (index_room(L)) return 1;
            L->idx[L->n++] = L->rec_start;
            x = L->rec_start = stop;
        }
        L->rec_file += rlen;
    }
    L->fill = end;
    if (end - L->rec_start > L->big_limit) {
        if (push_big(L, L->rec_file, end - L->rec_start)) return 1;
        L->in_big = 1;
        L->fill = L->rec_start;
    }
    return 0;
}

/* Appends the records of FD to L. TERMINATE: the last record may lack its separator. Returns 0, 1 when
 * they do not fit, or -1 on a read error. */
static int load_fd(shuffler *s, loaded *L, int fd, const char *name, int terminate) {
    uint64_t pos = 0;
    L->rec_start = L->fill;
    L->rec_file = 0;
    for (;;) {
        uint64_t room = L->cap - L->fill - (terminate ? 1 : 0);
        size_t want = room < s->io ? (size_t)room : s->io;
        char probe;
        ssize_t k = read_some(fd, want ? L->data + L->fill : &probe, want ? want : 1);
        if (k < 0) return kiln_fail("%s: read error: %s", name, strerror(errno));
        if (k == 0) break;
        if (!want) return 1; /* more data than the arena holds */
        count_read(s, (uint64_t)k);
        if (index_block(L, s->sep, (uint64_t)k, pos)) return 1;
        pos += (uint64_t)k;
    }
    if (terminate && L->fill > L->rec_start) {
        L->data[L->fill++] = (char)s->sep;
        if (index_room(L)) return 1;
        L->idx[L->n++] = L->rec_start;
    }
    return 0;
}

/* ---- Shuffling a loaded node ---- */
/* Fisher–Yates, drawing each swap partner PREFETCH steps ahead so its cache line is already on its
 * way: the same sequence of draws as the plain loop. */
static void fisher_yates(uint64_t *a, uint64_t n, uint64_t seed) {
    if (n < 2) return;
    kiln_rng r;
    kiln_rng_seed(&r, seed);
    uint64_t ahead[PREFETCH];
    uint64_t i = n - 1, next = n - 1; /* next: the step whose partner is drawn next */
    for (int k = 0; k < PREFETCH && next >= 1; k++, next--) ahead[next % PREFETCH] = kiln_rng_below(&r, next + 1);
    for (; i >= 1; i--) {
        uint64_t j = ahead[i % PREFETCH];
        if (next >= 1) {
            uint64_t jn = kiln_rng_below(&r, next + 1);
            ahead[next % PREFETCH] = jn;
            __builtin_prefetch(&a[jn], 1);
            next--;
        }
        uint64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* Writes the records of L in index order; big records come from BIG_FD. */
static int emit(shuffler *s, const loaded *L, int big_fd) {
    for (uint64_t i = 0; i < L->n; i++) {
        if (i + PREFETCH < L->n && !(L->idx[i + PREFETCH] & BIG_FLAG)) {
            __builtin_prefetch(L->data + L->idx[i + PREFETCH]);
            __builtin_prefetch(L->data + L->idx[i + PREFETCH] + 64);
        }
        uint64_t v = L->idx[i];
        if (v & BIG_FLAG) {
            if (out_copy(s, big_fd, L->bigs[v & ~BIG_FLAG]) < 0) return -1;
            continue;
        }
        const char *p = L->data + v, *e = rawmemchr(p, s->sep);
        if (out_put(s, p, (size_t)(e - p) + 1) < 0) return -1;
    }
    return 0;
}

static uint64_t shuffle_seed(const shuffler *s, uint64_t key) { return kiln_hash3(s->o->seed, key, UINT64_MAX); }
static uint64_t child_key(const shuffler *s, uint64_t key, int j) {
    return kiln_hash3(s->o->seed ^ 0x6b696c6e62756b74ull, key, (uint64_t)j);
}

/* ---- Nodes ---- */
static int shuffle_bucket(shuffler *s, bucket *b, uint64_t key, int depth);

/* What loading bucket B takes: arena bytes (the small records, plus room for one big record in the
 * making and one read block), and all of it with the index. */
static uint64_t bucket_arena(const shuffler *s, const bucket *b) { return b->bytes - b->big_bytes + s->big + s->io + 1; }
static uint64_t bucket_need(const shuffler *s, const bucket *b) {
    return bucket_arena(s, b) + b->records * sizeof(uint64_t) + b->big_records * sizeof(big_record);
}

/* Shuffles the buckets of SC in turn. The arena is sized once for the largest that will be loaded
 * (when all together stay in the budget), so that its pages are cleared by the kernel only once. */
static int shuffle_buckets(shuffler *s, scatter *sc, uint64_t key, int depth) {
    uint64_t cap = 0, idx = 0, big = 0;
    for (int j = 0; j < sc->n; j++) {
        const bucket *b = &sc->b[j];
        if (bucket_need(s, b) > s->avail) continue;
        if (bucket_arena(s, b) > cap) cap = bucket_arena(s, b);
        if (b->records > idx) idx = b->records;
        if (b->big_records > big) big = b->big_records;
    }
    int rc = 0;
    if (cap + idx * sizeof(uint64_t) + big * sizeof(big_record) <= s->avail)
        rc = loaded_reset(s, &s->L, cap, idx, idx, big, s->big);
    for (int j = 0; j < sc->n && rc == 0; j++) {
        rc = shuffle_bucket(s, &sc->b[j], child_key(s, key, j), depth);
        bucket_close(s, &sc->b[j]);
    }
    return rc;
}

/* Scatters bucket B into children and shuffles each in turn. */
static int split_bucket(shuffler *s, bucket *b, uint64_t need, uint64_t key, int depth) {
    if (depth >= MAX_DEPTH)
        return kiln_fail("%s: a bucket of %llu records still does not fit in --mem after %d splits", s->tmp,
                         (unsigned long long)b->records, depth);
    loaded_free(&s->L); /* the scatter's buffers take its place in the budget */
    scatter sc;
    int rc = scatter_begin(s, &sc, bucket_count(s, need), key);
    if (rc == 0 && lseek(b->fd, 0, SEEK_SET) < 0) rc = kiln_fail("%s: seek: %s", s->tmp, strerror(errno));
    if (rc == 0) rc = scatter_fd(s, &sc, b->fd, s->tmp, 0);
    if (rc == 0) rc = scatter_drain(s, &sc, 1);
    bucket_close(s, b);
    if (rc == 0) rc = shuffle_buckets(s, &sc, key, depth + 1);
    scatter_free(s, &sc);
    return rc;
}

/* Puts the records of bucket B in uniformly random order onto the output. */
static int shuffle_bucket(shuffler *s, bucket *b, uint64_t key, int depth) {
    if (b->records == 0) return 0;
    uint64_t need = bucket_need(s, b);
    if (need > s->avail) return split_bucket(s, b, need, key, depth);
    loaded *L = &s->L;
    if (loaded_reset(s, L, bucket_arena(s, b), b->records, b->records, b->big_records, s->big) < 0) return -1;
    int rc = lseek(b->fd, 0, SEEK_SET) < 0 ? kiln_fail("%s: seek: %s", s->tmp, strerror(errno)) : 0;
    if (rc == 0) rc = load_fd(s, L, b->fd, s->tmp, 0);
    if (rc == 1) rc = kiln_fail("%s: a temporary file changed under us", s->tmp);
    if (rc == 0) {
        fisher_yates(L->idx, L->n, shuffle_seed(s, key));
        rc = emit(s, L, b->fd);
    }
    return rc;
}

/* ---- Inputs ---- */
static int open_input(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kiln_fail("%s: cannot open: %s", path, strerror(errno));
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return fd;
}

/* The inputs' total size, or UINT64_MAX when one of them is not a regular file (a pipe). Fails naming
 * an input that cannot be read, before any work. (Inputs are not opened here: opening a named pipe
 * waits for a writer, and closing it again could cut the writer off.) */
static int inputs_size(const kiln_shuffle_opts *o, uint64_t *total) {
    *total = 0;
    for (int i = 0; i < o->n_inputs; i++) {
        const char *path = o->inputs[i];
        struct stat st;
        if (stat(path, &st) != 0 || access(path, R_OK) != 0)
            return kiln_fail("%s: cannot open: %s", path, strerror(errno));
        if (S_ISDIR(st.st_mode)) return kiln_fail("%s: is a directory", path);
        if (!S_ISREG(st.st_mode)) *total = UINT64_MAX;
        else if (*total != UINT64_MAX) *total += (uint64_t)st.st_size;
    }
    return 0;
}

/* Mean bytes per record over the first read block of the first input (for choosing bucket counts). */
static uint64_t sample_record_length(const shuffler *s) {
    int fd = open(s->o->inputs[0], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 64;
    ssize_t k = read_some(fd, s->rbuf, s->io);
    close(fd);
    uint64_t seps = 0;
    for (ssize_t i = 0; i < k; i++) seps += (unsigned char)s->rbuf[i] == s->sep;
    return k > 0 ? (uint64_t)k / (seps + 1) + 1 : 64;
}

/* All inputs in memory at once. Returns 0 when done, 1 when they do not fit, -1 on error. */
static int shuffle_in_memory(shuffler *s, uint64_t total) {
    const kiln_shuffle_opts *o = s->o;
    uint64_t cap = total + (uint64_t)o->n_inputs;
    loaded *L = &s->L;
    uint64_t idx_limit = (s->avail - cap) / sizeof(uint64_t), idx_cap = total / 16 + 1024;
    /* Short of memory for it all: the external path needs less. */
    if (loaded_reset(s, L, cap, idx_cap < idx_limit ? idx_cap : idx_limit, idx_limit, 0, UINT64_MAX) < 0) return 1;
    int rc = 0;
    for (int i = 0; i < o->n_inputs && rc == 0; i++) {
        int fd = open_input(o->inputs[i]);
        if (fd < 0) rc = -1;
        else {
            rc = load_fd(s, L, fd, o->inputs[i], 1);
            close(fd);
        }
    }
    if (rc == 0) {
        fisher_yates(L->idx, L->n, shuffle_seed(s, 0));
        rc = emit(s, L, -1);
    }
    loaded_free(L);
    if (rc == 1) s->read_bytes = 0;
    return rc;
}

/* Inputs larger than memory: scatter them to buckets, then shuffle each bucket. */
static int shuffle_external(shuffler *s, uint64_t total) {
    const kiln_shuffle_opts *o = s->o;
    uint64_t need = UNKNOWN_SIZE_BUCKETS * (s->avail / 2); /* a pipe: enough buckets for a big stream */
    if (total != UINT64_MAX) {
        uint64_t mean = sample_record_length(s);
        need = total + total / mean * (sizeof(uint64_t) + 1);
    }
    scatter sc;
    int rc = scatter_begin(s, &sc, bucket_count(s, need), 0);
    for (int i = 0; i < o->n_inputs && rc == 0; i++) {
        int fd = open_input(o->inputs[i]);
        if (fd < 0) rc = -1;
        else {
            rc = scatter_fd(s, &sc, fd, o->inputs[i], 1);
            close(fd);
        }
    }
    if (rc == 0) rc = scatter_drain(s, &sc, 1);
    if (rc == 0) rc = shuffle_buckets(s, &sc, 0, 1);
    scatter_free(s, &sc);
    return rc;
}

/* ---- Setup ---- */
static int check_opts(const kiln_shuffle_opts *o) {
    if (o->n_inputs < 1) return kiln_fail("shuffle: no input");
    if (!o->output || !o->output[0]) return kiln_fail("shuffle: no output");
    struct stat st;
    if (stat(o->output, &st) == 0 && S_ISDIR(st.st_mode)) return kiln_fail("%s: is a directory", o->output);
    if (o->mem < KILN_SHUFFLE_MIN_MEM)
        return kiln_fail("--mem: %llu bytes is too small to work in (at least 64K)", (unsigned long long)o->mem);
    return 0;
}

/* Where the output goes. "-" is stdout, and an existing output that is not a regular file (a pipe,
 * /dev/null) is written in place. A link to a regular file (/dev/stdout redirected to a file, too) is
 * followed, so that the temporary file replaces the file, not the link. */
static int resolve_output(shuffler *s) {
    const char *path = s->o->output;
    struct stat st;
    s->out_direct = !strcmp(path, "-") || (stat(path, &st) == 0 && !S_ISREG(st.st_mode));
    if (!s->out_direct && lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        char *real = realpath(path, NULL);
        if (!real) return kiln_fail("%s: cannot follow the link: %s", path, strerror(errno));
        s->out_path = kiln_xstrdup(real);
        free(real);
    } else s->out_path = kiln_xstrdup(path);
    return 0;
}

static char *temp_dir_parent(const shuffler *s) {
    if (s->o->tmp_dir) return kiln_xstrdup(s->o->tmp_dir);
    const char *env = getenv("TMPDIR");
    if (env && env[0]) return kiln_xstrdup(env);
    if (s->out_direct) return kiln_xstrdup(".");
    char *copy = kiln_xstrdup(s->out_path), *dir = kiln_xstrdup(dirname(copy));
    free(copy);
    return dir;
}

static int make_temp_dir(shuffler *s) {
    char *parent = temp_dir_parent(s);
    int rc = kiln_tmp_begin(parent, "shuffle");
    free(parent);
    if (rc == 0) s->tmp = kiln_tmp_dir();
    return rc;
}

static int open_output(shuffler *s) {
    const char *path = s->o->output;
    if (s->out_direct) {
        s->out_fd = strcmp(path, "-") ? open(path, O_WRONLY | O_CLOEXEC) : STDOUT_FILENO;
        return s->out_fd < 0 ? kiln_fail("%s: cannot open: %s", path, strerror(errno)) : 0;
    }
    int rc = kiln_tmp_atomic_open(&s->out, s->out_path);
    if (rc == 0) s->out_fd = fileno(s->out.f);
    return rc;
}

/* Bucket files are file descriptors: raise the soft limit to the hard one. */
static int usable_fds(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 64;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur > 65536 ? 65536 - 64 : (int)rl.rlim_cur - 64;
}

/* Memory plan, for M = --mem: a read block and OUT_BUFS output buffers of M/32 each, M/16 of slack for
 * the allocator and small tables, and the rest for one in-memory shuffle (data + 8 bytes of index per
 * record) or, during a scatter, at most M/2 of bucket buffers. Records longer than 1/32 of that are
 * copied through instead of loaded. Buffers stay at most MAX_IO: the kernel's copy into the page cache
 * then reads from the CPU cache, and ran 3-4x faster here than from 8 MiB buffers. */
static void plan_memory(shuffler *s) {
    uint64_t m = s->o->mem, io = m / 32;
    if (io > MAX_IO) io = MAX_IO;
    s->io = (size_t)io;
    s->avail = m - (1 + OUT_BUFS) * io - m / 16;
    s->big = s->avail / 32;
}

/* The writers, with a thread each unless OpenMP is held to one thread (OMP_NUM_THREADS=1). */
static void start_writers(shuffler *s) {
    int threaded = omp_get_max_threads() > 1;
    size_t n = strlen(s->o->output) + strlen(s->tmp) + 64;
    s->out_what = kiln_xmalloc(n);
    s->tmp_what = kiln_xmalloc(n);
    snprintf(s->out_what, n, "%s: write failed", strcmp(s->o->output, "-") ? s->o->output : "stdout");
    snprintf(s->tmp_what, n, "%s: cannot write temporary file", s->tmp);
    s->outw = kiln_bgwrite_new(threaded, s->out_what);
    s->bucketw = kiln_bgwrite_new(threaded, s->tmp_what);
    kiln_bgwrite_pool(s->outw, OUT_BUFS, s->io);
    s->obuf = kiln_bgwrite_get(s->outw);
}

/* Writes what is left of the output and waits for it; then renames it into place, or removes it. */
static int finish_output(shuffler *s, int rc) {
    if (rc == 0) rc = out_flush(s);
    kiln_bgwrite_release(s->outw, s->obuf);
    s->obuf = NULL;
    int wrc = kiln_bgwrite_wait(s->outw);
    if (rc == 0) rc = wrc;
    if (s->out_direct) {
        if (s->out_fd != STDOUT_FILENO) close(s->out_fd);
        return rc;
    }
    if (rc == 0) return kiln_atomic_commit(&s->out);
    kiln_atomic_abort(&s->out);
    return rc;
}

static void teardown(shuffler *s) {
    kiln_bgwrite_free(s->outw);
    kiln_bgwrite_free(s->bucketw);
    loaded_free(&s->L);
    free(s->out_what);
    free(s->tmp_what);
    free(s->out_path);
    free(s->rbuf);
    if (s->tmp) kiln_tmp_end();
}

int kiln_shuffle(const kiln_shuffle_opts *o) {
    uint64_t total;
    if (check_opts(o) < 0 || inputs_size(o, &total) < 0) return -1;
    shuffler s;
    memset(&s, 0, sizeof s);
    s.o = o;
    s.sep = o->sep;
    s.out_fd = -1;
    s.free_fds = usable_fds();
    plan_memory(&s);
    int rc = resolve_output(&s);
    if (rc == 0) rc = make_temp_dir(&s);
    if (rc == 0) rc = open_output(&s);
    if (rc == 0) {
        start_writers(&s);
        s.rbuf = kiln_xmalloc(s.io);
        int fits = total != UINT64_MAX && total + (uint64_t)o->n_inputs < s.avail;
        kiln_progress_begin(&s.bar, "shuffle", total == UINT64_MAX ? 0 : (fits ? 2 : 4) * total, "B", o->progress);
        s.bar.detail = progress_detail;
        s.bar.detail_ctx = &s;
        rc = fits ? shuffle_in_memory(&s, total) : 1;
        if (rc == 1) {
            if (fits) s.bar.total = 4 * total;
            rc = shuffle_external(&s, total);
        }
        rc = finish_output(&s, rc);
        if (rc == 0) kiln_progress_end(&s.bar);
        else kiln_progress_abort(&s.bar);
    }
    teardown(&s);
    return rc;
}
