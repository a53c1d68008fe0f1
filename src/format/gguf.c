#include "format/gguf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

/* ---- ggml tensor types: elements per block and bytes per block (ggml.h / gguf-py GGML_QUANT_SIZES) ---- */

typedef struct {
    const char *name;
    uint32_t blck, size;
} type_info;

static const type_info types[] = {
    [0] = {"F32", 1, 4},          [1] = {"F16", 1, 2},          [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},       [6] = {"Q5_0", 32, 22},       [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},       [9] = {"Q8_1", 32, 36},       [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},    [12] = {"Q4_K", 256, 144},    [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},    [15] = {"Q8_K", 256, 292},    [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},   [18] = {"IQ3_XXS", 256, 98},  [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},    [21] = {"IQ3_S", 256, 110},   [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136},  [24] = {"I8", 1, 1},          [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},         [27] = {"I64", 1, 8},         [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},    [30] = {"BF16", 1, 2},        [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},    [39] = {"MXFP4", 32, 17},     [40] = {"NVFP4", 64, 36},
    [41] = {"Q1_0", 128, 18},     [42] = {"Q2_0", 64, 18},
};

static const type_info *type_lookup(uint32_t type) {
    if (type >= sizeof types / sizeof types[0] || !types[type].name) return NULL;
    return &types[type];
}

size_t gguf_type_nbytes(uint32_t type, uint64_t n) {
    const type_info *t = type_lookup(type);
    if (!t || n % t->blck != 0) return 0;
    uint64_t bytes;
    if (__builtin_mul_overflow(n / t->blck, (uint64_t)t->size, &bytes) || bytes > SIZE_MAX) return 0;
    return (size_t)bytes;
}

const char *gguf_type_name(uint32_t type) {
    const type_info *t = type_lookup(type);
    return t ? t->name : NULL;
}

int gguf_type_supported(uint32_t type) {
    return type == 0 || type == 1 || type == 30 || type == 2 || type == 8 || type == 12 || type == 14;
}

const char *gguf_supported_type_names(void) { return "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K"; }

/* What is wrong with a tensor of N_DIMS dimensions NE and TYPE (written into MSG), or NULL when it is
 * valid, with its size in *NBYTES. Shared by the reader and the writer so that both accept the same. */
static const char *shape_problem(uint32_t type, uint32_t n_dims, const uint64_t *ne, size_t *nbytes, char msg[160]) {
    const type_info *ti = type_lookup(type);
    if (!ti)
        return snprintf(msg, 160, "unknown tensor type id %" PRIu32 " (kiln computes with %s)", type,
                        gguf_supported_type_names()), msg;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return snprintf(msg, 160, "%" PRIu32 " dimensions, expected 1 to %d", n_dims, GGUF_MAX_DIMS), msg;
    uint64_t nelem = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0) return snprintf(msg, 160, "dimension %" PRIu32 " is 0", d), msg;
        if (__builtin_mul_overflow(nelem, ne[d], &nelem) || nelem > INT64_MAX)
            return snprintf(msg, 160, "element count overflows"), msg;
    }
    if (ne[0] % ti->blck != 0)
        return snprintf(msg, 160, "rows of %" PRIu64 " elements are not a multiple of the %s block size %" PRIu32,
                        ne[0], ti->name, ti->blck), msg;
    *nbytes = gguf_type_nbytes(type, nelem);
    return *nbytes ? NULL : (snprintf(msg, 160, "size in bytes overflows"), msg);
}

/* ---- metadata value types ---- */

static const char *const vtype_names[] = {"u8",  "i8",     "u16",   "i16", "u32", "i32", "f32",
                                          "bool", "string", "array", "u64", "i64", "f64"};
/* Bytes of one element of the fixed-size types; 0 for STRING and ARRAY. */
static const uint8_t vtype_sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static const char *vtype_name(uint32_t t) { return t <= GGUF_FLOAT64 ? vtype_names[t] : "unknown"; }

static bool vtype_signed(uint32_t t) { return t == GGUF_INT8 || t == GGUF_INT16 || t == GGUF_INT32 || t == GGUF_INT64; }
static bool vtype_unsigned(uint32_t t) {
    return t == GGUF_UINT8 || t == GGUF_UINT16 || t == GGUF_UINT32 || t == GGUF_UINT64;
}

static uint64_t load_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* A name from the file, cut short and with control bytes replaced, so that errors stay one line. */
static const char *printable(gguf_str s, char buf[72]) {
    size_t n = s.len < 64 ? (size_t)s.len : 64, k = 0;
    for (size_t i = 0; i < n; i++) buf[k++] = (s.ptr[i] >= 0x20 && s.ptr[i] < 0x7f) ? s.ptr[i] : '?';
    if (s.len > n) memcpy(buf + k, "...", 3), k += 3;
    buf[k] = 0;
    return buf;
}

/* ---- reader ---- */

enum { MAX_ARRAY_DEPTH = 32 }; /* nested arrays recurse; a file must not be able to exhaust the stack */

typedef struct {
    const unsigned char *p;
    size_t size, pos;
    const char *name;
    char what[96]; /* the item being read ("key general.name"), prefixed to errors */
} cursor;

__attribute__((format(printf, 3, 4))) static int bad(const cursor *c, size_t at, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return kiln_fail("%s: %s%s%s (at byte offset %zu)", c->name, c->what, c->what[0] ? ": " : "", msg, at);
}

static size_t left(const cursor *c) { return c->size - c->pos; }

static int need(const cursor *c, uint64_t n) {
    if (n > left(c)) return bad(c, c->pos, "truncated file: %" PRIu64 " bytes needed, %zu left", n, left(c));
    return 0;
}

static int read_u32(cursor *c, uint32_t *v) {
    if (need(c, 4)) return -1;
    *v = (uint32_t)load_le(c->p + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int read_u64(cursor *c, uint64_t *v) {
    if (need(c, 8)) return -1;
    *v = load_le(c->p + c->pos, 8);
    c->pos += 8;
    return 0;
}

static int read_str(cursor *c, gguf_str *s) {
    size_t at = c->pos;
    uint64_t len;
    if (read_u64(c, &len)) return -1;
    if (len > left(c)) return bad(c, at, "string length %" PRIu64 " exceeds the %zu bytes left", len, left(c));
    s->ptr = (const char *)c->p + c->pos;
    s->len = len;
    c->pos += len;
    return 0;
}

static int read_scalar(cursor *c, uint32_t type, gguf_value *v) {
    int n = vtype_sizes[type];
    if (need(c, n)) return -1;
    uint64_t raw = load_le(c->p + c->pos, n);
    if (type == GGUF_BOOL && raw > 1) return bad(c, c->pos, "bool value %" PRIu64 " is neither 0 nor 1", raw);
    c->pos += n;
    if (type == GGUF_BOOL) v->b = raw != 0;
    else if (vtype_unsigned(type)) v->u64 = raw;
    else if (vtype_signed(type)) { /* sign-extend from n bytes without implementation-defined conversions */
        uint64_t sign = 1ull << (8 * n - 1);
        v->i64 = n == 8 ? (int64_t)raw : (int64_t)(raw ^ sign) - (int64_t)sign;
    }
    else if (type == GGUF_FLOAT32) {
        uint32_t u = (uint32_t)raw;
        float f;
        memcpy(&f, &u, 4);
        v->f64 = f;
    } else memcpy(&v->f64, &raw, 8);
    return 0;
}

static int read_value(cursor *c, uint32_t type, gguf_value *v, int depth);

/* An array's elements. Counts are checked against the bytes left before anything is allocated: every
 * element takes at least one byte (a string 8, a nested array 12), so a file cannot make us allocate
 * more than a small multiple of its size. */
static int read_array(cursor *c, gguf_value *v, int depth) {
    size_t at = c->pos;
    uint32_t et;
    uint64_t n;
    if (read_u32(c, &et) || read_u64(c, &n)) return -1;
    if (et > GGUF_FLOAT64) return bad(c, at, "unknown array element type %" PRIu32, et);
    v->arr.type = (gguf_vtype)et;
    uint64_t min_size = et == GGUF_STRING ? 8 : et == GGUF_ARRAY ? 12 : vtype_sizes[et];
    if (n > left(c) / min_size)
        return bad(c, at, "array of %" PRIu64 " %s cannot fit in the %zu bytes left", n, vtype_name(et), left(c));
    if (et == GGUF_ARRAY && depth >= MAX_ARRAY_DEPTH)
        return bad(c, at, "arrays nested more than %d deep", MAX_ARRAY_DEPTH);
    if (et == GGUF_STRING || et == GGUF_ARRAY) {
        void *e = kiln_xcalloc(n, et == GGUF_STRING ? sizeof(gguf_str) : sizeof(gguf_value));
        v->arr.data = e;
        v->arr.n = n;
        for (uint64_t i = 0; i < n; i++)
            if (et == GGUF_STRING ? read_str(c, (gguf_str *)e + i) : read_value(c, et, (gguf_value *)e + i, depth + 1))
                return -1;
    } else {
        const unsigned char *p = c->p + c->pos;
        if (et == GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (p[i] > 1) return bad(c, c->pos + i, "bool value %u is neither 0 nor 1", p[i]);
        v->arr.data = p;
        v->arr.n = n;
        c->pos += n * min_size;
    }
    return 0;
}

static int read_value(cursor *c, uint32_t type, gguf_value *v, int depth) {
    memset(v, 0, sizeof *v);
    if (type > GGUF_FLOAT64) return bad(c, c->pos - 4, "unknown value type %" PRIu32, type);
    v->type = (gguf_vtype)type;
    if (type == GGUF_STRING) return read_str(c, &v->str);
    if (type == GGUF_ARRAY) return read_array(c, v, depth);
    return read_scalar(c, type, v);
}

static void free_value(gguf_value *v) {
    if (v->type != GGUF_ARRAY || !v->arr.data) return;
    if (v->arr.type == GGUF_ARRAY)
        for (uint64_t i = 0; i < v->arr.n; i++) free_value((gguf_value *)v->arr.data + i);
    if (v->arr.type == GGUF_ARRAY || v->arr.type == GGUF_STRING) free((void *)v->arr.data);
}

static uint64_t hash_str(gguf_str s) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (uint64_t i = 0; i < s.len; i++) h = (h ^ (unsigned char)s.ptr[i]) * 0x100000001b3ull;
    return h;
}

static bool str_eq(gguf_str a, gguf_str b) { return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0; }

/* Index of the first of N strings (the gguf_str at BASE + i*STRIDE) equal to an earlier one, or -1.
 * A hash set rather than comparing all pairs, which a file with millions of keys would turn into a hang. */
static int64_t find_duplicate(const void *base, size_t stride, uint64_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    uint64_t *slot = kiln_xcalloc(cap, sizeof *slot); /* i + 1, 0 when empty */
    int64_t dup = -1;
    for (uint64_t i = 0; i < n && dup < 0; i++) {
        gguf_str s = *(const gguf_str *)((const char *)base + i * stride);
        size_t h = hash_str(s) & (cap - 1);
        while (slot[h] && !str_eq(*(const gguf_str *)((const char *)base + (slot[h] - 1) * stride), s))
            h = (h + 1) & (cap - 1);
        if (slot[h]) dup = (int64_t)i;
        else slot[h] = i + 1;
    }
    free(slot);
    return dup;
}

static int read_kvs(cursor *c, gguf_file *g, uint64_t n_kv) {
    /* a key/value takes at least 13 bytes: key length, one key byte, value type, a one-byte value */
    if (n_kv > left(c) / 13)
        return bad(c, 16, "truncated or corrupt: %" PRIu64 " key/value pairs cannot fit in the %zu bytes left", n_kv,
                   left(c));
    g->kv = kiln_xcalloc(n_kv, sizeof *g->kv);
    g->n_kv = n_kv;
    char nb[72];
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        snprintf(c->what, sizeof c->what, "key #%" PRIu64, i);
        size_t at = c->pos;
        uint32_t type;
        if (read_str(c, &kv->key)) return -1;
        if (kv->key.len == 0) return bad(c, at, "empty key");
        snprintf(c->what, sizeof c->what, "key %s", printable(kv->key, nb));
        if (read_u32(c, &type) || read_value(c, type, &kv->value, 0)) return -1;
    }
    c->what[0] = 0;
    int64_t dup = find_duplicate(&g->kv[0].key, sizeof *g->kv, n_kv);
    if (dup >= 0) return bad(c, (const unsigned char *)g->kv[dup].key.ptr - c->p - 8, "duplicate key %s",
                             printable(g->kv[dup].key, nb));
    return 0;
}

static int read_alignment(gguf_file *g) {
    g->alignment = 32;
    const gguf_kv *kv = gguf_find_kv(g, "general.alignment");
    if (!kv) return 0;
    if (kv->value.type != GGUF_UINT32)
        return kiln_fail("%s: general.alignment is %s, expected u32", g->path, vtype_name(kv->value.type));
    uint64_t a = kv->value.u64;
    if (a == 0 || (a & (a - 1)) != 0)
        return kiln_fail("%s: general.alignment %" PRIu64 " is not a power of two", g->path, a);
    g->alignment = (size_t)a;
    return 0;
}

static int read_tensor_info(cursor *c, gguf_tensor *t, uint64_t i) {
    char nb[72], msg[160];
    snprintf(c->what, sizeof c->what, "tensor #%" PRIu64, i);
    if (read_str(c, &t->name)) return -1;
    snprintf(c->what, sizeof c->what, "tensor %s", printable(t->name, nb));
    size_t at = c->pos;
    if (read_u32(c, &t->n_dims)) return -1;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return bad(c, at, "%" PRIu32 " dimensions, expected 1 to %d", t->n_dims, GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims && read_u64(c, &t->ne[d])) return -1;
    }
    if (read_u32(c, &t->type)) return -1;
    const char *problem = shape_problem(t->type, t->n_dims, t->ne, &t->nbytes, msg);
    if (problem) return bad(c, at, "%s", problem);
    return read_u64(c, &t->offset);
}

static int cmp_offset(const void *a, const void *b) {
    const gguf_tensor *x = *(gguf_tensor *const *)a, *y = *(gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every tensor's data aligned, inside the file, and disjoint from the others. */
static int place_tensors(gguf_file *g) {
    char nb[72], nb2[72];
    size_t data_size = g->map.size - g->data_offset;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0)
            return kiln_fail("%s: tensor %s: data offset %" PRIu64 " is not a multiple of the alignment %zu",
                             g->path, printable(t->name, nb), t->offset, g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return kiln_fail("%s: tensor %s: %zu bytes of data at byte offset %zu + %" PRIu64
                             " run past the end of the file (%zu bytes)",
                             g->path, printable(t->name, nb), t->nbytes, g->data_offset, t->offset, g->map.size);
        t->data = g->map.data + g->data_offset + t->offset;
    }
    gguf_tensor **by_offset = kiln_xmalloc(g->n_tensors * sizeof *by_offset);
    for (uint64_t i = 0; i < g->n_tensors; i++) by_offset[i] = &g->tensors[i];
    qsort(by_offset, g->n_tensors, sizeof *by_offset, cmp_offset);
    int rc = 0;
    for (uint64_t i = 1; i < g->n_tensors && rc == 0; i++) {
        const gguf_tensor *a = by_offset[i - 1], *b = by_offset[i];
        if (a->offset + a->nbytes > b->offset)
            rc = kiln_fail("%s: tensors %s and %s overlap (data offsets %" PRIu64 " and %" PRIu64 ")", g->path,
                           printable(a->name, nb), printable(b->name, nb2), a->offset, b->offset);
    }
    free(by_offset);
    return rc;
}

static int parse(gguf_file *g) {
    cursor c = {.p = g->map.data, .size = g->map.size, .name = g->path};
    if (c.size == 0) return kiln_fail("%s: empty file, not a GGUF file", g->path);
    if (c.size < 4 || memcmp(c.p, "GGUF", 4) != 0)
        return kiln_fail("%s: not a GGUF file (no \"GGUF\" magic at byte offset 0)", g->path);
    c.pos = 4;
    uint64_t n_tensors, n_kv;
    if (read_u32(&c, &g->version)) return -1;
    if (g->version == 1) return kiln_fail("%s: GGUF version 1 is not supported (only 2 and 3)", g->path);
    if ((g->version & 0xffff) == 0)
        return kiln_fail("%s: GGUF version 0x%08" PRIx32 ": a big-endian file? only little-endian is supported",
                         g->path, g->version);
    if (g->version != 2 && g->version != 3)
        return kiln_fail("%s: unsupported GGUF version %" PRIu32 " (only 2 and 3)", g->path, g->version);
    if (read_u64(&c, &n_tensors) || read_u64(&c, &n_kv) || read_kvs(&c, g, n_kv) || read_alignment(g)) return -1;

    /* a tensor info takes at least 32 bytes: name length, n_dims, one dimension, type, offset */
    if (n_tensors > left(&c) / 32)
        return bad(&c, 8, "truncated or corrupt: %" PRIu64 " tensors cannot fit in the %zu bytes left", n_tensors,
                   left(&c));
    g->tensors = kiln_xcalloc(n_tensors, sizeof *g->tensors);
    g->n_tensors = n_tensors;
    for (uint64_t i = 0; i < n_tensors; i++)
        if (read_tensor_info(&c, &g->tensors[i], i)) return -1;
    c.what[0] = 0;
    int64_t dup = find_duplicate(&g->tensors[0].name, sizeof *g->tensors, n_tensors);
    char nb[72];
    if (dup >= 0) return kiln_fail("%s: duplicate tensor name %s", g->path, printable(g->tensors[dup].name, nb));

    g->data_offset = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (n_tensors > 0 && g->data_offset > c.size)
        return kiln_fail("%s: truncated file: tensor data would start at byte offset %zu, past the end (%zu bytes)",
                         g->path, g->data_offset, c.size);
    return n_tensors > 0 ? place_tensors(g) : 0;
}

gguf_file *gguf_parse(const void *data, size_t size, const char *name) {
    gguf_file *g = kiln_xcalloc(1, sizeof *g);
    g->path = kiln_xstrdup(name);
    g->map.data = data;
    g->map.size = size;
    if (parse(g) != 0) {
        gguf_close(g);
        return NULL;
    }
    return g;
}

gguf_file *gguf_open(const char *path) {
    kiln_map m;
    if (kiln_map_open(&m, path) != 0) return NULL;
    gguf_file *g = gguf_parse(m.data, m.size, path);
    if (!g) {
        kiln_map_close(&m);
        return NULL;
    }
    g->owns_map = true;
    return g;
}

void gguf_close(gguf_file *g) {
    if (!g) return;
    for (uint64_t i = 0; i < g->n_kv; i++) free_value(&g->kv[i].value);
    free(g->kv);
    free(g->tensors);
    if (g->owns_map) kiln_map_close(&g->map);
    free(g->path);
    free(g);
}

/* ---- lookups ---- */

static bool str_is(gguf_str s, const char *z) {
    size_t n = strlen(z);
    return s.len == n && memcmp(s.ptr, z, n) == 0;
}

const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (str_is(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (str_is(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

static int wrong_type(const gguf_file *g, const char *key, const gguf_value *v, const char *expected) {
    if (v->type == GGUF_ARRAY)
        return kiln_fail("%s: key %s is an array of %s, expected %s", g->path, key, vtype_name(v->arr.type), expected);
    return kiln_fail("%s: key %s is %s, expected %s", g->path, key, vtype_name(v->type), expected);
}

/* An integer key's value, found and within [LO, HI]: 1; absent: 0; anything else: -1. */
static int get_int(const gguf_file *g, const char *key, int64_t lo, int64_t hi, const char *tname, int64_t *out) {
    const gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv) return 0;
    const gguf_value *v = &kv->value;
    bool fits;
    if (vtype_unsigned(v->type)) fits = v->u64 <= (uint64_t)hi;
    else if (vtype_signed(v->type)) fits = v->i64 >= lo && v->i64 <= hi;
    else return wrong_type(g, key, v, tname);
    if (!fits) {
        if (vtype_unsigned(v->type))
            return kiln_fail("%s: key %s = %" PRIu64 " does not fit in %s", g->path, key, v->u64, tname);
        return kiln_fail("%s: key %s = %" PRId64 " does not fit in %s", g->path, key, v->i64, tname);
    }
    *out = vtype_unsigned(v->type) ? (int64_t)v->u64 : v->i64;
    return 1;
}

int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out) {
    int64_t v;
    int rc = get_int(g, key, 0, UINT32_MAX, "u32", &v);
    if (rc == 1) *out = (uint32_t)v;
    return rc;
}

int gguf_get_i32(const gguf_file *g, const char *key, int32_t *out) {
    int64_t v;
    int rc = get_int(g, key, INT32_MIN, INT32_MAX, "i32", &v);
    if (rc == 1) *out = (int32_t)v;
    return rc;
}

/* KEY's key/value if its value has type T (or, for an array, element type T): 1; absent: 0; else -1. */
static int find_typed(const gguf_file *g, const char *key, gguf_vtype t, bool array, const gguf_kv **kv) {
    *kv = gguf_find_kv(g, key);
    if (!*kv) return 0;
    const gguf_value *v = &(*kv)->value;
    bool ok = array ? v->type == GGUF_ARRAY && v->arr.type == t
                    : v->type == t || (t == GGUF_FLOAT32 && v->type == GGUF_FLOAT64);
    char expected[32];
    snprintf(expected, sizeof expected, "%s%s", array ? "an array of " : "", vtype_name(t));
    return ok ? 1 : wrong_type(g, key, v, expected);
}

int gguf_get_f32(const gguf_file *g, const char *key, float *out) {
    const gguf_kv *kv;
    int rc = find_typed(g, key, GGUF_FLOAT32, false, &kv);
    if (rc == 1) *out = (float)kv->value.f64;
    return rc;
}

int gguf_get_bool(const gguf_file *g, const char *key, bool *out) {
    const gguf_kv *kv;
    int rc = find_typed(g, key, GGUF_BOOL, false, &kv);
    if (rc == 1) *out = kv->value.b;
    return rc;
}

int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out) {
    const gguf_kv *kv;
    int rc = find_typed(g, key, GGUF_STRING, false, &kv);
    if (rc == 1) *out = kv->value.str;
    return rc;
}

int gguf_get_arr(const gguf_file *g, const char *key, gguf_vtype type, const void **data, uint64_t *n) {
    const gguf_kv *kv;
    int rc = find_typed(g, key, type, true, &kv);
    if (rc == 1) *data = kv->value.arr.data, *n = kv->value.arr.n;
    return rc;
}

/* ---- writer ---- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap) b->cap = b->cap ? 2 * b->cap : 64;
        b->p = kiln_xrealloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_le(buf *b, uint64_t v, int n) {
    unsigned char bytes[8];
    for (int i = 0; i < n; i++) bytes[i] = (unsigned char)(v >> (8 * i));
    put(b, bytes, n);
}

static void put_str(buf *b, const char *s, uint64_t len) {
    put_le(b, len, 8);
    put(b, s, len);
}

typedef struct {
    char *key;
    buf val; /* value type and value, encoded as in the file */
} wkv;

typedef struct {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    const void *data;
    void *copy; /* data when the writer owns it */
    size_t nbytes;
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    char *err; /* the first error of a setter (they return nothing); gguf_write reports it */
};

gguf_writer *gguf_writer_new(void) { return kiln_xcalloc(1, sizeof(gguf_writer)); }

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].copy);
    }
    free(w->kv);
    free(w->t);
    free(w->err);
    free(w);
}

static wkv *writer_kv(gguf_writer *w, const char *key) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) return &w->kv[i];
    return NULL;
}

/* Takes ownership of VAL; replaces the value of an existing KEY in place, keeping its position. */
static void set_kv(gguf_writer *w, const char *key, buf val) {
    wkv *kv = writer_kv(w, key);
    if (kv) {
        free(kv->val.p);
        kv->val = val;
        return;
    }
    if (w->n_kv == w->cap_kv) {
        w->cap_kv = w->cap_kv ? 2 * w->cap_kv : 16;
        w->kv = kiln_xrealloc(w->kv, w->cap_kv * sizeof *w->kv);
    }
    w->kv[w->n_kv++] = (wkv){kiln_xstrdup(key), val};
}

static void set_scalar(gguf_writer *w, const char *key, gguf_vtype type, uint64_t bits) {
    buf b = {0};
    put_le(&b, type, 4);
    put_le(&b, bits, vtype_sizes[type]);
    set_kv(w, key, b);
}

__attribute__((format(printf, 2, 3))) static void writer_error(gguf_writer *w, const char *fmt, ...) {
    if (w->err) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    w->err = kiln_xstrdup(msg);
}

void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v) { set_scalar(w, key, GGUF_UINT32, v); }
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v) { set_scalar(w, key, GGUF_INT32, (uint32_t)v); }
void gguf_set_u64(gguf_writer *w, const char *key, uint64_t v) { set_scalar(w, key, GGUF_UINT64, v); }
void gguf_set_bool(gguf_writer *w, const char *key, bool v) { set_scalar(w, key, GGUF_BOOL, v); }

void gguf_set_f32(gguf_writer *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    set_scalar(w, key, GGUF_FLOAT32, u);
}

void gguf_set_str(gguf_writer *w, const char *key, const char *v) {
    buf b = {0};
    put_le(&b, GGUF_STRING, 4);
    put_str(&b, v, strlen(v));
    set_kv(w, key, b);
}

void gguf_set_arr(gguf_writer *w, const char *key, gguf_vtype type, const void *data, uint64_t n) {
    if ((unsigned)type > GGUF_FLOAT64 || vtype_sizes[type] == 0 || n > SIZE_MAX / 8) {
        writer_error(w, "key %s: cannot make an array of %" PRIu64 " %s (fixed-size elements only)", key, n,
                     vtype_name(type));
        return;
    }
    buf b = {0};
    put_le(&b, GGUF_ARRAY, 4);
    put_le(&b, type, 4);
    put_le(&b, n, 8);
    put(&b, data, n * vtype_sizes[type]);
    set_kv(w, key, b);
}

void gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *strs, const size_t *lens, uint64_t n) {
    buf b = {0};
    put_le(&b, GGUF_ARRAY, 4);
    put_le(&b, GGUF_STRING, 4);
    put_le(&b, n, 8);
    for (uint64_t i = 0; i < n; i++) put_str(&b, strs[i], lens ? lens[i] : strlen(strs[i]));
    set_kv(w, key, b);
}

/* VALUE (without its type) as in the file. Values read from a file are re-encoded exactly: the widened
 * integers and floats narrow back without loss. */
static void encode_value(buf *b, const gguf_value *v) {
    switch (v->type) {
    case GGUF_STRING: put_str(b, v->str.ptr, v->str.len); break;
    case GGUF_BOOL: put_le(b, v->b, 1); break;
    case GGUF_FLOAT32: {
        float f = (float)v->f64;
        uint32_t u;
        memcpy(&u, &f, 4);
        put_le(b, u, 4);
        break;
    }
    case GGUF_FLOAT64: {
        uint64_t u;
        memcpy(&u, &v->f64, 8);
        put_le(b, u, 8);
        break;
    }
    case GGUF_ARRAY:
        put_le(b, v->arr.type, 4);
        put_le(b, v->arr.n, 8);
        if (v->arr.type == GGUF_STRING) {
            const gguf_str *s = v->arr.data;
            for (uint64_t i = 0; i < v->arr.n; i++) put_str(b, s[i].ptr, s[i].len);
        } else if (v->arr.type == GGUF_ARRAY) {
            for (uint64_t i = 0; i < v->arr.n; i++) encode_value(b, (const gguf_value *)v->arr.data + i);
        } else put(b, v->arr.data, v->arr.n * vtype_sizes[v->arr.type]);
        break;
    default: put_le(b, vtype_unsigned(v->type) ? v->u64 : (uint64_t)v->i64, vtype_sizes[v->type]); break;
    }
}

void gguf_copy_kvs(gguf_writer *w, const gguf_file *g) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        char *key = kiln_xmalloc(kv->key.len + 1);
        memcpy(key, kv->key.ptr, kv->key.len);
        key[kv->key.len] = 0;
        if (strlen(key) != kv->key.len) {
            char nb[72];
            writer_error(w, "%s: key %s contains a NUL byte and cannot be copied", g->path, printable(kv->key, nb));
        } else if (!writer_kv(w, key)) {
            buf b = {0};
            put_le(&b, kv->value.type, 4);
            encode_value(&b, &kv->value);
            set_kv(w, key, b);
        }
        free(key);
    }
}

static int add_tensor(gguf_writer *w, const char *name, uint32_t type, int n_dims, const uint64_t *ne,
                      const void *data, bool copy) {
    size_t len = strlen(name), nbytes;
    if (len == 0 || len > 63) return kiln_fail("tensor %s: names must be 1 to 63 bytes (llama.cpp's limit)", name);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) return kiln_fail("tensor %s: duplicate tensor name", name);
    char msg[160];
    const char *problem = shape_problem(type, n_dims < 0 ? 0 : (uint32_t)n_dims, ne, &nbytes, msg);
    if (problem) return kiln_fail("tensor %s: %s", name, problem);
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? 2 * w->cap_t : 16;
        w->t = kiln_xrealloc(w->t, w->cap_t * sizeof *w->t);
    }
    wtensor *t = &w->t[w->n_t++];
    *t = (wtensor){.name = kiln_xstrdup(name), .type = type, .n_dims = (uint32_t)n_dims, .nbytes = nbytes};
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->data = copy ? (t->copy = memcpy(kiln_xmalloc(nbytes), data, nbytes)) : data;
    return 0;
}

int gguf_add_tensor(gguf_writer *w, const char *name, uint32_t type, int n_dims, const uint64_t *ne, const void *data) {
    return add_tensor(w, name, type, n_dims, ne, data, true);
}

int gguf_add_tensor_ref(gguf_writer *w, const char *name, uint32_t type, int n_dims, const uint64_t *ne,
                        const void *data) {
    return add_tensor(w, name, type, n_dims, ne, data, false);
}

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static int write_zeros(FILE *f, size_t n) {
    static const unsigned char zeros[4096];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (fwrite(zeros, 1, k, f) != k) return -1;
        n -= k;
    }
    return 0;
}

/* The alignment to write with: general.alignment if set (a u32 power of two), else 32, which is then
 * added so that readers need not assume the default. */
static int writer_alignment(gguf_writer *w, const char *path, size_t *alignment) {
    const wkv *kv = writer_kv(w, "general.alignment");
    if (!kv) {
        gguf_set_u32(w, "general.alignment", 32);
        *alignment = 32;
        return 0;
    }
    uint64_t type = load_le(kv->val.p, 4), a = kv->val.n == 8 ? load_le(kv->val.p + 4, 4) : 0;
    if (type != GGUF_UINT32 || a == 0 || (a & (a - 1)) != 0)
        return kiln_fail("%s: general.alignment must be a u32 power of two", path);
    *alignment = (size_t)a;
    return 0;
}

int gguf_write(gguf_writer *w, const char *path) {
    if (w->err) return kiln_fail("%s: %s", path, w->err);
    size_t alignment = 32;
    if (writer_alignment(w, path, &alignment)) return -1;

    buf head = {0};
    put(&head, "GGUF", 4);
    put_le(&head, 3, 4);
    put_le(&head, w->n_t, 8);
    put_le(&head, w->n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(&head, w->kv[i].key, strlen(w->kv[i].key));
        put(&head, w->kv[i].val.p, w->kv[i].val.n);
    }
    uint64_t offset = 0; /* tensors follow each other in order, as llama.cpp's reader requires */
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_str(&head, t->name, strlen(t->name));
        put_le(&head, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++) put_le(&head, t->ne[d], 8);
        put_le(&head, t->type, 4);
        put_le(&head, offset, 8);
        offset += align_up(t->nbytes, alignment);
    }

    kiln_atomic a;
    int opened = kiln_atomic_open(&a, path) == 0;
    int bad_write = !opened || fwrite(head.p, 1, head.n, a.f) != head.n ||
                    write_zeros(a.f, align_up(head.n, alignment) - head.n);
    free(head.p);
    if (!opened) return -1;
    for (size_t i = 0; i < w->n_t && !bad_write; i++) {
        const wtensor *t = &w->t[i];
        bad_write = fwrite(t->data, 1, t->nbytes, a.f) != t->nbytes ||
                    write_zeros(a.f, align_up(t->nbytes, alignment) - t->nbytes);
    }
    if (bad_write) {
        kiln_atomic_abort(&a);
        return kiln_fail("%s: write failed", path);
    }
    return kiln_atomic_commit(&a);
}
