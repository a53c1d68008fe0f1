/* Forks of a context whose branches share the prefix of the KV cache copy-on-write.
 *
 * The prefix is copied once into a memfd; each branch maps that file MAP_PRIVATE as its key and value
 * caches, so the kernel shares every page a branch only reads and copies a page (4 KiB) the first time
 * a branch writes to it. Branches only write positions after the prefix, so N beams over a long prompt
 * hold one copy of the prompt's cache, not N, and nothing is copied per step. The cache layout is the
 * forward pass's own ([layer][position][kv dim], model/transformer.h), so branches are ordinary
 * contexts to kiln_eval.
 *
 * Mapping and unmapping are not free (an unmap flushes every thread's TLB), so a prefix smaller than
 * SHARE_MIN_BYTES is simply copied into each branch's own cache. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "api/api.h"
#include "base/error.h"

enum { SHARE_MIN_BYTES = 1 << 20 };

struct kiln_fork {
    kiln_ctx **ctx;
    int n;
    int prefix;       /* positions shared by every branch */
    int shared;       /* the caches map a memfd (else each branch owns a copy) */
    size_t region;    /* bytes of the key cache (and of the value cache), page-rounded */
};

static size_t layer_bytes(const kiln_ctx *c) {
    const kiln_config *cfg = &c->m->cfg;
    return (size_t)c->state->n_ctx * cfg->n_kv_heads * cfg->head_dim * sizeof(float);
}

/* Copies positions [FROM, TO) of every layer's keys and values from S to D (same shape). */
static void copy_rows(float *dk, float *dv, const float *sk, const float *sv, const kiln_ctx *c, int from, int to) {
    const kiln_config *cfg = &c->m->cfg;
    size_t row = (size_t)cfg->n_kv_heads * cfg->head_dim, layer = row * c->state->n_ctx;
    for (int l = 0; l < cfg->n_layers; l++) {
        size_t o = l * layer + from * row, n = sizeof(float) * row * (to - from);
        memcpy(dk + o, sk + o, n);
        memcpy(dv + o, sv + o, n);
    }
}

static void branch_free(kiln_fork *f, kiln_ctx *c) {
    if (f->shared) {
        munmap(c->state->k_cache, 2 * f->region);
        c->state->k_cache = c->state->v_cache = NULL; /* kiln_ctx_free must not free() them */
    }
    kiln_ctx_free(c);
}

void kiln_fork_free(kiln_fork *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) branch_free(f, f->ctx[i]);
    free(f->ctx);
    free(f);
}

/* A branch: a context of BASE's model and size whose caches map FD privately, or (FD < 0) hold a copy
 * of BASE's prefix. */
static kiln_ctx *branch_new(kiln_fork *f, const kiln_ctx *base, int fd) {
    char *map = NULL;
    if (fd >= 0 && (map = mmap(NULL, 2 * f->region, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0)) == MAP_FAILED)
        return kiln_fail("fork: cannot map the shared cache: %s", strerror(errno)), NULL;
    kiln_ctx *c = kiln_ctx_new(base->m, base->state->n_ctx);
    if (map) {
        free(c->state->k_cache); /* never touched: the allocation was only address space */
        free(c->state->v_cache);
        c->state->k_cache = (float *)map;
        c->state->v_cache = (float *)(map + f->region);
    } else {
        copy_rows(c->state->k_cache, c->state->v_cache, base->state->k_cache, base->state->v_cache, base, 0, f->prefix);
    }
    c->pos = base->pos;
    memcpy(c->logits, base->logits, sizeof(float) * base->m->cfg.n_vocab);
    return c;
}

kiln_fork *kiln_fork_new(kiln_ctx *base, int n) {
    if (n < 1) return kiln_fail("fork: %d branches (must be >= 1)", n), NULL;
    long page = sysconf(_SC_PAGESIZE);
    kiln_fork *f = kiln_xcalloc(1, sizeof *f);
    f->prefix = base->pos;
    f->region = (layer_bytes(base) * base->m->cfg.n_layers + page - 1) / page * page;
    f->ctx = kiln_xcalloc(n, sizeof *f->ctx);
    size_t prefix_bytes = 2 * layer_bytes(base) / base->state->n_ctx * base->m->cfg.n_layers * f->prefix;
    if (prefix_bytes < SHARE_MIN_BYTES) {
        for (; f->n < n; f->n++) f->ctx[f->n] = branch_new(f, base, -1);
        return f;
    }
    f->shared = 1;
    int fd = memfd_create("kiln-kv-prefix", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, 2 * f->region) < 0) {
        kiln_fail("fork: cannot create the shared cache: %s", strerror(errno));
        if (fd >= 0) close(fd);
        kiln_fork_free(f);
        return NULL;
    }
    char *shared = mmap(NULL, 2 * f->region, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (shared == MAP_FAILED) {
        kiln_fail("fork: cannot map the shared cache: %s", strerror(errno));
        close(fd);
        kiln_fork_free(f);
        return NULL;
    }
    copy_rows((float *)shared, (float *)(shared + f->region), base->state->k_cache, base->state->v_cache, base, 0,
              f->prefix);
    munmap(shared, 2 * f->region);
    for (; f->n < n; f->n++)
        if (!(f->ctx[f->n] = branch_new(f, base, fd))) break;
    close(fd); /* the mappings keep the file alive */
    if (f->n < n) {
        kiln_fork_free(f);
        return NULL;
    }
    return f;
}

kiln_ctx *kiln_fork_ctx(kiln_fork *f, int i) {
    if (i < 0 || i >= f->n) return kiln_fail("fork: branch %d out of range (0 to %d)", i, f->n - 1), NULL;
    return f->ctx[i];
}

int kiln_fork_copy(kiln_fork *f, int dst, int src) {
    if (dst < 0 || dst >= f->n || src < 0 || src >= f->n)
        return kiln_fail("fork: branch %d or %d out of range (0 to %d)", dst, src, f->n - 1);
    if (dst == src) return 0;
    kiln_ctx *d = f->ctx[dst], *s = f->ctx[src];
    if (s->pos < f->prefix)
        return kiln_fail("fork: branch %d is at position %d, before the shared prefix of %d", src, s->pos, f->prefix);
    copy_rows(d->state->k_cache, d->state->v_cache, s->state->k_cache, s->state->v_cache, s, f->prefix, s->pos);
    d->pos = s->pos;
    memcpy(d->logits, s->logits, sizeof(float) * s->m->cfg.n_vocab);
    return 0;
}
