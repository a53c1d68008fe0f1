/* safetensors reading (validated, mapped) and writing (atomic). */
#include "format/safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kiln.h"

enum { MAX_HEADER = 100000000 }; /* the reference implementation's limit */

static const struct {
    const char *name;
    size_t size;
    int type;
} DTYPES[] = {
    {"F64", 8, -1}, {"F32", 4, KILN_TYPE_F32}, {"F16", 2, KILN_TYPE_F16}, {"BF16", 2, KILN_TYPE_BF16},
    {"I64", 8, -1}, {"I32", 4, -1}, {"I16", 2, -1}, {"I8", 1, -1}, {"U64", 8, -1}, {"U32", 4, -1},
    {"U16", 2, -1}, {"U8", 1, -1}, {"BOOL", 1, -1}, {"F8_E4M3", 1, -1}, {"F8_E5M2", 1, -1},
};
enum { N_DTYPES = sizeof DTYPES / sizeof DTYPES[0] };

size_t safetensors_dtype_size(const char *dtype) {
    for (int i = 0; i < N_DTYPES; i++)
        if (!strcmp(dtype, DTYPES[i].name)) return DTYPES[i].size;
    return 0;
}

static int dtype_type(const char *dtype) {
    for (int i = 0; i < N_DTYPES; i++)
        if (!strcmp(dtype, DTYPES[i].name)) return DTYPES[i].type;
    return -1;
}

const char *safetensors_dtype_name(int type) {
    for (int i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].type == type && type >= 0) return DTYPES[i].name;
    return NULL;
}

void safetensors_close(st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    if (f->owns_map) kiln_map_close(&f->map);
    free(f->path);
    free(f);
}

/* A non-negative JSON integer, or -1. */
static long long json_count(const json_t *v) {
    if (!json_is_integer(v)) return -1;
    long long n = json_integer_value(v);
    return n < 0 ? -1 : n;
}

static int read_metadata(st_file *f, const json_t *meta) {
    if (!json_is_object(meta)) return kiln_fail("%s: __metadata__ is not an object", f->path);
    size_t n = json_object_size(meta);
    f->meta_keys = kiln_xcalloc(n ? n : 1, sizeof(char *));
    f->meta_values = kiln_xcalloc(n ? n : 1, sizeof(char *));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)meta, key, v) {
        if (!json_is_string(v)) return kiln_fail("%s: __metadata__ value of '%s' is not a string", f->path, key);
        f->meta_keys[f->n_meta] = kiln_xstrdup(key);
        f->meta_values[f->n_meta++] = kiln_xstrdup(json_string_value(v));
    }
    return 0;
}

static int read_tensor(st_file *f, const char *name, const json_t *v, st_tensor *t, size_t data_size) {
    if (!json_is_object(v)) return kiln_fail("%s: tensor '%s' is not an object", f->path, name);
    const json_t *dtype = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
                 *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offs) || json_array_size(offs) != 2)
        return kiln_fail("%s: tensor '%s' needs a dtype string, a shape array and two data_offsets", f->path, name);
    size_t esize = safetensors_dtype_size(json_string_value(dtype));
    if (!esize) return kiln_fail("%s: tensor '%s' has unknown dtype '%.16s'", f->path, name, json_string_value(dtype));
    snprintf(t->dtype, sizeof t->dtype, "%s", json_string_value(dtype));
    t->type = dtype_type(t->dtype);
    if (json_array_size(shape) > ST_MAX_DIMS)
        return kiln_fail("%s: tensor '%s' has %zu dimensions (at most %d)", f->path, name, json_array_size(shape),
                         ST_MAX_DIMS);
    t->n_dims = (int)json_array_size(shape);
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) {
        long long s = json_count(json_array_get(shape, d));
        if (s < 0) return kiln_fail("%s: tensor '%s' has a shape entry that is not a count", f->path, name);
        t->shape[d] = s;
        if (s && n > UINT64_MAX / (uint64_t)s / esize)
            return kiln_fail("%s: tensor '%s' has an overflowing shape", f->path, name);
        n *= (uint64_t)s;
    }
    t->n_elems = n;
    long long begin = json_count(json_array_get(offs, 0)), end = json_count(json_array_get(offs, 1));
    if (begin < 0 || end < begin)
        return kiln_fail("%s: tensor '%s' has data_offsets [%lld, %lld]", f->path, name, begin, end);
    if ((unsigned long long)end > data_size)
        return kiln_fail("%s: tensor '%s' ends at %lld, past the %zu bytes of data", f->path, name, end, data_size);
    if ((uint64_t)(end - begin) != n * esize)
        return kiln_fail("%s: tensor '%s' is %lld bytes but its shape and dtype %s make %llu", f->path, name,
                         end - begin, t->dtype, (unsigned long long)(n * esize));
    t->data = (const char *)f->map.data + (f->map.size - data_size) + begin;
    t->nbytes = (size_t)(end - begin);
    t->name = kiln_xstrdup(name);
    return 0;
}

static int by_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Sorted by offset, the tensors must follow one another with no gap or overlap up to the end. */
static int check_tiling(st_file *f, size_t data_size) {
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, by_offset);
    const char *data = (const char *)f->map.data + (f->map.size - data_size), *at = data;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if ((const char *)t->data < at)
            return kiln_fail("%s: tensor '%s' overlaps tensor '%s'", f->path, t->name, f->tensors[i - 1].name);
        if ((const char *)t->data > at)
            return kiln_fail("%s: %zu unused bytes before tensor '%s'", f->path, (size_t)((const char *)t->data - at),
                             t->name);
        at += t->nbytes;
    }
    if (at != data + data_size)
        return kiln_fail("%s: %zu bytes after the last tensor belong to none", f->path, (size_t)(data + data_size - at));
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, by_name);
    return 0;
}

static int parse_header(st_file *f) {
    const unsigned char *p = f->map.data;
    if (f->map.size < 8) return kiln_fail("%s: %zu bytes: too short for a safetensors file", f->path, f->map.size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | p[i];
    if (n > MAX_HEADER) return kiln_fail("%s: header length %llu is over the 100 MB limit", f->path, (unsigned long long)n);
    if (n > f->map.size - 8)
        return kiln_fail("%s: header length %llu runs past the end of the file (%zu bytes)", f->path,
                         (unsigned long long)n, f->map.size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root) return kiln_fail("%s: header is not valid JSON: %s (offset %d)", f->path, jerr.text, jerr.position);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = kiln_fail("%s: header is not a JSON object", f->path);
        goto done;
    }
    size_t data_size = f->map.size - 8 - (size_t)n;
    f->tensors = kiln_xcalloc(json_object_size(root) + 1, sizeof *f->tensors);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) rc = read_metadata(f, v);
        else if ((rc = read_tensor(f, key, v, &f->tensors[f->n_tensors], data_size)) == 0) f->n_tensors++;
        if (rc) goto done;
    }
    rc = check_tiling(f, data_size);
done:
    json_decref(root);
    return rc;
}

st_file *safetensors_parse(const void *data, size_t size, const char *name) {
    st_file *f = kiln_xcalloc(1, sizeof *f);
    f->map.data = data;
    f->map.size = size;
    f->path = kiln_xstrdup(name);
    if (parse_header(f) < 0) {
        safetensors_close(f);
        return NULL;
    }
    return f;
}

st_file *safetensors_open(const char *path) {
    kiln_map map;
    if (kiln_map_open(&map, path) < 0) return NULL;
    st_file *f = safetensors_parse(map.data, map.size, path);
    if (!f) {
        kiln_map_close(&map);
        return NULL;
    }
    f->owns_map = 1;
    return f;
}

const st_tensor *safetensors_find(const st_file *f, const char *name) {
    st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, f->n_tensors, sizeof key, by_name);
}

const char *safetensors_meta(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

/* ---- Writer ---- */

typedef struct {
    char *name;
    int type, n_dims;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    void *owned;
    size_t nbytes;
} wtensor;

struct st_writer {
    wtensor *t;
    int n, cap;
    json_t *meta;
};

st_writer *safetensors_writer_new(void) { return kiln_xcalloc(1, sizeof(st_writer)); }

void safetensors_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].owned);
    }
    free(w->t);
    json_decref(w->meta);
    free(w);
}

int safetensors_add(st_writer *w, const char *name, int type, int n_dims, const int64_t *shape, const void *data) {
    const char *dtype = safetensors_dtype_name(type);
    if (!dtype) return kiln_fail("safetensors: tensor '%s' has unsupported type %d", name, type);
    if (n_dims < 0 || n_dims > ST_MAX_DIMS) return kiln_fail("safetensors: tensor '%s' has %d dims", name, n_dims);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return kiln_fail("safetensors: duplicate tensor '%s'", name);
    if (w->n == w->cap) w->t = kiln_xrealloc(w->t, sizeof *w->t * (w->cap = w->cap ? 2 * w->cap : 64));
    wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = kiln_xstrdup(name);
    t->type = type;
    t->n_dims = n_dims;
    t->nbytes = safetensors_dtype_size(dtype);
    for (int d = 0; d < n_dims; d++) {
        t->shape[d] = shape[d];
        t->nbytes *= (size_t)shape[d];
    }
    t->data = data;
    return 0;
}

int safetensors_add_owned(st_writer *w, const char *name, int type, int n_dims, const int64_t *shape, void *data) {
    if (safetensors_add(w, name, type, n_dims, shape, data) < 0) {
        free(data);
        return -1;
    }
    w->t[w->n - 1].owned = data;
    return 0;
}

void safetensors_set_meta(st_writer *w, const char *key, const char *value) {
    if (!w->meta) w->meta = json_object();
    json_object_set_new(w->meta, key, json_string(value));
}

static char *header_json(const st_writer *w) {
    json_t *root = json_object();
    if (w->meta) json_object_set(root, "__metadata__", w->meta);
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const wtensor *t = &w->t[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *o = json_pack("{s:s, s:o, s:[I, I]}", "dtype", safetensors_dtype_name(t->type), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + t->nbytes));
        json_object_set_new(root, t->name, o);
        off += t->nbytes;
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
}

int safetensors_write(st_writer *w, const char *path) {
    char *json = header_json(w);
    size_t n = strlen(json), padded = (n + 7) & ~(size_t)7; /* data starts 8-byte aligned, as HF pads it */
    kiln_atomic a;
    if (kiln_atomic_open(&a, path) < 0) {
        free(json);
        return -1;
    }
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(padded >> (8 * i));
    fwrite(len, 1, 8, a.f);
    fwrite(json, 1, n, a.f);
    for (size_t i = n; i < padded; i++) fputc(' ', a.f);
    free(json);
    for (int i = 0; i < w->n; i++)
        if (w->t[i].nbytes && fwrite(w->t[i].data, 1, w->t[i].nbytes, a.f) != w->t[i].nbytes) break;
    return kiln_atomic_commit(&a);
}
