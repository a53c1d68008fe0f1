/* Building and opening corpora (corpus.h). The walk lists every candidate file first (sorted, with
 * sizes, so the progress bar knows the total), then reads them in order: train files stream straight
 * into the output, valid files (a small share) gather in memory and follow the train stream. */
#include "data/corpus.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "base/error.h"
#include "base/progress.h"

enum { HEADER_SIZE = 80, VERSION = 1, MAX_PATH_LEN = 4096 };
static const char MAGIC[8] = {'K', 'I', 'L', 'N', 'C', 'O', 'R', 'P'};

typedef struct {
    char *path;      /* as opened */
    char *rel;       /* under its DIR, prefixed with the DIR's name: hashed for the split */
    char *channel;
    uint64_t size;
} candidate;

typedef struct {
    candidate *v;
    size_t n, cap;
    const char *globs;
    uint64_t max_size;
    kiln_corpus_stats *st;
} walk;

static int matches(const char *globs, const char *name) {
    char pat[256];
    for (const char *p = globs; *p;) {
        size_t n = strcspn(p, ",");
        if (n > 0 && n < sizeof pat) {
            memcpy(pat, p, n);
            pat[n] = 0;
            if (fnmatch(pat, name, 0) == 0) return 1;
        }
        p += n + (p[n] == ',');
    }
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

/* The channel of a file at REL (components under DIR, file name last). */
static char *channel_of(const char *dir_name, const char *rel, int depth) {
    const char *end = rel;
    int n = 0;
    for (const char *p = rel; *p && n < depth; p++)
        if (*p == '/') end = p, n++;
    if (end == rel) return kiln_xstrdup(dir_name);
    char *s = kiln_xmalloc(end - rel + 1);
    memcpy(s, rel, end - rel);
    s[end - rel] = 0;
    return s;
}

/* Lists matching regular files under PATH (REL: its path under the DIR, "" for the DIR itself).
 * Symbolic links to files are followed, to directories not (no cycles). */
static int walk_dir(walk *w, const char *path, const char *rel, const char *dir_name, int depth) {
    struct dirent **ents;
    int n = scandir(path, &ents, NULL, by_name);
    if (n < 0) return kiln_fail("%s: cannot read directory: %s", path, strerror(errno));
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const char *name = ents[i]->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
        char full[MAX_PATH_LEN], sub[MAX_PATH_LEN];
        if (snprintf(full, sizeof full, "%s/%s", path, name) >= (int)sizeof full ||
            snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", name) >= (int)sizeof sub)
            continue;
        struct stat lst, st;
        if (lstat(full, &lst) != 0) continue;
        if (S_ISDIR(lst.st_mode)) {
            rc = walk_dir(w, full, sub, dir_name, depth);
            continue;
        }
        if (!matches(w->globs, name) || stat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        w->st->seen++;
        if ((uint64_t)st.st_size > w->max_size) {
            w->st->too_large++;
            continue;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? 2 * w->cap : 1024;
            w->v = kiln_xrealloc(w->v, w->cap * sizeof *w->v);
        }
        char keyed[MAX_PATH_LEN + 256];
        snprintf(keyed, sizeof keyed, "%s/%s", dir_name, sub);
        w->v[w->n++] = (candidate){kiln_xstrdup(full), kiln_xstrdup(keyed), channel_of(dir_name, sub, depth),
                                   (uint64_t)st.st_size};
    }
    for (int i = 0; i < n; i++) free(ents[i]);
    free(ents);
    return rc;
}

/* The last path component of DIR, ignoring trailing slashes ("/" for the root). */
static char *dir_basename(const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t s = n;
    while (s > 0 && dir[s - 1] != '/') s--;
    if (s == n) return kiln_xstrdup("/");
    char *b = kiln_xmalloc(n - s + 1);
    memcpy(b, dir + s, n - s);
    b[n - s] = 0;
    return b;
}

/* A set of 128-bit content hashes (open addressing), for exact duplicates. */
typedef struct {
    XXH128_hash_t *slots;
    uint8_t *used;
    size_t cap, n;
} hash_set;

static int hash_set_add(hash_set *h, XXH128_hash_t x) {
    if (2 * (h->n + 1) > h->cap) {
        hash_set old = *h;
        h->cap = old.cap ? 2 * old.cap : 4096;
        h->slots = kiln_xmalloc(h->cap * sizeof *h->slots);
        h->used = kiln_xcalloc(h->cap, 1);
        h->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.used[i]) hash_set_add(h, old.slots[i]);
        free(old.slots);
        free(old.used);
    }
    for (size_t i = x.low64 & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
        if (!h->used[i]) {
            h->used[i] = 1;
            h->slots[i] = x;
            h->n++;
            return 1;
        }
        if (XXH128_isEqual(h->slots[i], x)) return 0;
    }
}

typedef struct {
    uint64_t offset, size;
    uint32_t channel;
    char *rel;
} kept_file;

static uint32_t channel_id(char ***names, int *n, const char *name) {
    for (int i = 0; i < *n; i++)
        if (!strcmp((*names)[i], name)) return (uint32_t)i;
    *names = kiln_xrealloc(*names, sizeof(char *) * (*n + 1));
    (*names)[*n] = kiln_xstrdup(name);
    return (uint32_t)(*n)++;
}

static void put_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void put_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }

static void progress_files(void *ctx, char *buf, size_t size) {
    const kiln_corpus_stats *st = ctx;
    snprintf(buf, size, "%llu files kept", (unsigned long long)st->kept);
}

int kiln_corpus_build(const kiln_corpus_opts *o, kiln_corpus_stats *stats) {
    static const char *const default_dirs[] = {"/usr/include"};
    const char *const *dirs = o->n_dirs ? o->dirs : default_dirs;
    int n_dirs = o->n_dirs ? o->n_dirs : 1;
    if (!(o->valid_fraction >= 0 && o->valid_fraction <= 1))
        return kiln_fail("valid fraction %g must be between 0 and 1", o->valid_fraction);
    memset(stats, 0, sizeof *stats);
    walk w = {.globs = o->globs ? o->globs : "*.c,*.h", .max_size = o->max_file_size ? o->max_file_size : 256 << 10,
              .st = stats};
    for (int d = 0; d < n_dirs; d++) {
        struct stat st;
        if (stat(dirs[d], &st) != 0) return kiln_fail("%s: %s", dirs[d], strerror(errno));
        if (!S_ISDIR(st.st_mode)) return kiln_fail("%s: not a directory", dirs[d]);
        char *name = dir_basename(dirs[d]);
        int rc = walk_dir(&w, dirs[d], "", name, o->channel_depth);
        free(name);
        if (rc < 0) return -1;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < w.n; i++) total += w.v[i].size;

    kiln_atomic out;
    if (kiln_atomic_open(&out, o->output) < 0) return -1;
    char zeros[HEADER_SIZE] = {0};
    fwrite(zeros, 1, HEADER_SIZE, out.f);
    kiln_progress bar;
    kiln_progress_begin(&bar, "corpus", total, "B", o->progress);
    bar.detail = progress_files;
    bar.detail_ctx = stats;
    hash_set seen = {0};
    char **channels = NULL;
    int n_channels = 0;
    kept_file *kept[2] = {kiln_xmalloc(sizeof(kept_file) * (w.n + 1)), kiln_xmalloc(sizeof(kept_file) * (w.n + 1))};
    unsigned char *valid = NULL;
    uint64_t valid_cap = 0, done = 0;
    for (size_t i = 0; i < w.n; i++) {
        candidate *c = &w.v[i];
        size_t size;
        char *buf = kiln_read_file(c->path, &size);
        done += c->size;
        kiln_progress_update(&bar, done);
        if (!buf) {
            stats->unreadable++;
            continue;
        }
        int skip = 0;
        if (size > w.max_size) skip = 1, stats->too_large++;
        else if (memchr(buf, 0, size)) skip = 1, stats->binary++;
        else if (!hash_set_add(&seen, XXH3_128bits(buf, size))) skip = 1, stats->duplicate++;
        if (!skip) {
            double u = (double)(XXH3_64bits(c->rel, strlen(c->rel)) >> 11) * (1.0 / 9007199254740992.0);
            int s = u < o->valid_fraction ? CORPUS_VALID : CORPUS_TRAIN;
            kept_file *k = &kept[s][stats->files[s]++];
            *k = (kept_file){stats->bytes[s] + stats->files[s] - 1, size,
                             channel_id(&channels, &n_channels, c->channel), c->rel};
            c->rel = NULL;
            if (s == CORPUS_TRAIN) {
                fwrite(buf, 1, size, out.f);
                fputc(0, out.f);
            } else {
                if (k->offset + size + 1 > valid_cap) {
                    valid_cap = 2 * (k->offset + size + 1);
                    valid = kiln_xrealloc(valid, valid_cap);
                }
                memcpy(valid + k->offset, buf, size);
                valid[k->offset + size] = 0;
            }
            stats->bytes[s] += size;
            stats->kept++;
        }
        free(buf);
    }
    kiln_progress_end(&bar);
    uint64_t stream[2] = {stats->bytes[0] + stats->files[0], stats->bytes[1] + stats->files[1]};
    if (stream[1]) fwrite(valid, 1, stream[1], out.f);
    uint64_t index_offset = HEADER_SIZE + stream[0] + stream[1];
    for (int i = 0; i < n_channels; i++) {
        put_u32(out.f, (uint32_t)strlen(channels[i]));
        fputs(channels[i], out.f);
    }
    for (int s = 0; s < 2; s++)
        for (uint64_t i = 0; i < stats->files[s]; i++) {
            kept_file *k = &kept[s][i];
            put_u64(out.f, k->offset);
            put_u64(out.f, k->size);
            put_u32(out.f, k->channel);
            put_u32(out.f, (uint32_t)strlen(k->rel));
            fputs(k->rel, out.f);
        }
    long end = ftell(out.f);
    fseek(out.f, 0, SEEK_SET);
    fwrite(MAGIC, 1, 8, out.f);
    put_u32(out.f, VERSION);
    put_u32(out.f, (uint32_t)n_channels);
    put_u64(out.f, stats->files[0] + stats->files[1]);
    put_u64(out.f, stats->files[0]);
    put_u64(out.f, HEADER_SIZE);
    put_u64(out.f, stream[0]);
    put_u64(out.f, stream[1]);
    put_u64(out.f, index_offset);
    put_u64(out.f, (uint64_t)end - index_offset);
    put_u64(out.f, 0);
    int rc = kiln_atomic_commit(&out);
    stats->n_channels = n_channels;
    for (size_t i = 0; i < w.n; i++) free(w.v[i].path), free(w.v[i].rel), free(w.v[i].channel);
    free(w.v);
    for (int s = 0; s < 2; s++) {
        for (uint64_t i = 0; i < stats->files[s]; i++) free(kept[s][i].rel);
        free(kept[s]);
    }
    for (int i = 0; i < n_channels; i++) free(channels[i]);
    free(channels);
    free(seen.slots);
    free(seen.used);
    free(valid);
    return rc;
}

/* ---- reading ---- */

typedef struct {
    const unsigned char *p, *end;
} cursor;

static int take(cursor *c, void *out, size_t n) {
    if ((size_t)(c->end - c->p) < n) return -1;
    memcpy(out, c->p, n);
    c->p += n;
    return 0;
}

void kiln_corpus_close(kiln_corpus *c) {
    if (!c) return;
    kiln_map_close(&c->map);
    free(c->owned);
    for (int i = 0; i < c->n_channels; i++) free(c->channels[i]);
    free(c->channels);
    free(c->files);
    free(c->path);
    free(c);
}

static kiln_corpus *corrupt(kiln_corpus *c, const char *what) {
    kiln_fail("%s: not a valid corpus file (%s); rebuild it with kiln corpus", c->path, what);
    kiln_corpus_close(c);
    return NULL;
}

kiln_corpus *kiln_corpus_open(const char *path) {
    kiln_corpus *c = kiln_xcalloc(1, sizeof *c);
    c->path = kiln_xstrdup(path);
    if (kiln_map_open(&c->map, path) < 0) {
        free(c->path);
        free(c);
        return NULL;
    }
    cursor cur = {c->map.data, c->map.data + c->map.size};
    char magic[8];
    uint32_t version, n_channels;
    uint64_t n_files, n_train, data_off, train_bytes, valid_bytes, index_off, index_size, reserved;
    if (take(&cur, magic, 8) || memcmp(magic, MAGIC, 8)) return corrupt(c, "bad magic");
    if (take(&cur, &version, 4) || take(&cur, &n_channels, 4) || take(&cur, &n_files, 8) || take(&cur, &n_train, 8) ||
        take(&cur, &data_off, 8) || take(&cur, &train_bytes, 8) || take(&cur, &valid_bytes, 8) ||
        take(&cur, &index_off, 8) || take(&cur, &index_size, 8) || take(&cur, &reserved, 8))
        return corrupt(c, "truncated header");
    if (version != VERSION) return corrupt(c, "unknown version");
    uint64_t size = c->map.size;
    if (data_off != HEADER_SIZE || train_bytes > size || valid_bytes > size || data_off + train_bytes + valid_bytes != index_off ||
        index_off > size || index_size != size - index_off || n_train > n_files || n_files > size || n_channels > size)
        return corrupt(c, "sizes do not add up");
    cur = (cursor){c->map.data + index_off, c->map.data + size};
    c->channels = kiln_xcalloc(n_channels + 1, sizeof(char *));
    for (uint32_t i = 0; i < n_channels; i++) {
        uint32_t len;
        if (take(&cur, &len, 4) || len > (uint64_t)(cur.end - cur.p)) return corrupt(c, "truncated channel names");
        c->channels[i] = kiln_xmalloc(len + 1);
        take(&cur, c->channels[i], len);
        c->channels[i][len] = 0;
        c->n_channels++;
    }
    c->files = kiln_xcalloc(n_files + 1, sizeof *c->files);
    c->n_files = n_files;
    uint64_t next[2] = {0, 0}, stream_size[2] = {train_bytes, valid_bytes};
    for (uint64_t i = 0; i < n_files; i++) {
        corpus_file *f = &c->files[i];
        int s = i < n_train ? CORPUS_TRAIN : CORPUS_VALID;
        if (take(&cur, &f->offset, 8) || take(&cur, &f->size, 8) || take(&cur, &f->channel, 4) ||
            take(&cur, &f->path_len, 4) || f->path_len > (uint64_t)(cur.end - cur.p))
            return corrupt(c, "truncated file index");
        f->path = (const char *)cur.p;
        cur.p += f->path_len;
        if (f->channel >= n_channels) return corrupt(c, "file with an unknown channel");
        if (f->offset != next[s] || f->size >= stream_size[s] - f->offset) return corrupt(c, "file outside its stream");
        next[s] = f->offset + f->size + 1;
    }
    if (next[0] != train_bytes || next[1] != valid_bytes) return corrupt(c, "streams do not match the file index");
    c->stream[0] = c->map.data + data_off;
    c->stream[1] = c->stream[0] + train_bytes;
    c->stream_size[0] = train_bytes;
    c->stream_size[1] = valid_bytes;
    c->split_files[0] = c->files;
    c->split_n_files[0] = n_train;
    c->split_files[1] = c->files + n_train;
    c->split_n_files[1] = n_files - n_train;
    return c;
}

kiln_corpus *corpus_sample(const kiln_corpus *c, int split, uint64_t max_bytes) {
    const corpus_file *files = c->split_files[split];
    uint64_t n = c->split_n_files[split], size = c->stream_size[split];
    double share = max_bytes && size > max_bytes ? (double)max_bytes / size : 1;
    kiln_corpus *s = kiln_xcalloc(1, sizeof *s);
    s->path = kiln_xstrdup(c->path);
    s->n_channels = c->n_channels;
    s->channels = kiln_xcalloc(c->n_channels + 1, sizeof(char *));
    for (int i = 0; i < c->n_channels; i++) s->channels[i] = kiln_xstrdup(c->channels[i]);
    s->files = kiln_xcalloc(n + 1, sizeof *s->files);
    s->owned = kiln_xmalloc(size + 1);
    /* a file joins while the sample is behind SHARE of the bytes walked so far: whole files, spread
     * evenly, about MAX_BYTES in all */
    uint64_t fill = 0, walked = 0;
    for (uint64_t i = 0; i < n; i++) {
        const corpus_file *f = &files[i];
        walked += f->size + 1;
        if (fill >= walked * share) continue;
        corpus_file *g = &s->files[s->n_files++];
        *g = *f;
        g->offset = fill;
        memcpy(s->owned + fill, c->stream[split] + f->offset, f->size + 1);
        fill += f->size + 1;
    }
    s->stream[split] = s->owned;
    s->stream[!split] = s->owned + fill;
    s->stream_size[split] = fill;
    s->split_files[split] = s->files;
    s->split_n_files[split] = s->n_files;
    s->split_files[!split] = s->files + s->n_files;
    return s;
}

uint64_t corpus_file_at(const kiln_corpus *c, int split, uint64_t pos) {
    const corpus_file *f = c->split_files[split];
    uint64_t lo = 0, hi = c->split_n_files[split];
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (f[mid].offset <= pos) lo = mid;
        else hi = mid;
    }
    return lo;
}
