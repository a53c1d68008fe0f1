/* GGUF: kiln's model file, the same format llama.cpp reads and writes.
 * Layout (little-endian): magic "GGUF", u32 version (2 or 3), u64 n_tensors, u64 n_kv, then n_kv
 * key/value pairs (string key, u32 value type, value), then n_tensors tensor infos (string name,
 * u32 n_dims, u64 ne[n_dims], u32 type, u64 offset), padding to general.alignment (default 32), and
 * the tensor data; each offset is relative to the start of the data and aligned.
 * Strings are u64 length + bytes (no NUL). Arrays are u32 element type, u64 count, elements.
 *
 * The reader maps the file and validates everything before returning: every length, count and offset
 * in bounds, tensor types known, tensor data inside the file and aligned. Tensor data is used in place. */
#ifndef KILN_FORMAT_GGUF_H
#define KILN_FORMAT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/file.h"

typedef enum {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3, GGUF_UINT32 = 4, GGUF_INT32 = 5,
    GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_UINT64 = 10, GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
} gguf_vtype;

typedef struct {
    const char *ptr; /* not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_value {
    gguf_vtype type;
    union {
        uint64_t u64;   /* UINT8..UINT64 widened */
        int64_t i64;    /* INT8..INT64 widened */
        double f64;     /* FLOAT32, FLOAT64 widened */
        bool b;
        gguf_str str;
        struct {
            gguf_vtype type;             /* element type */
            uint64_t n;
            const void *data;            /* scalars: packed little-endian elements in the file;
                                            STRING: a gguf_str[n]; ARRAY: a struct gguf_value[n] */
        } arr;
    };
} gguf_value;

typedef struct {
    gguf_str key;
    gguf_value value;
} gguf_kv;

#define GGUF_MAX_DIMS 4
typedef struct {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the fastest-varying dimension; unused dims are 1 */
    uint32_t type;              /* ggml type id */
    uint64_t offset;            /* relative to the data section */
    const void *data;           /* in the map */
    size_t nbytes;
} gguf_tensor;

typedef struct {
    kiln_map map;
    char *path;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    size_t alignment;
    size_t data_offset;
    bool owns_map; /* map came from gguf_open: gguf_close unmaps it */
} gguf_file;

/* Opens and validates PATH. NULL with an error naming PATH and what is wrong. */
gguf_file *gguf_open(const char *path);
/* Parses a GGUF image in memory (not copied; must outlive the result). NAME is used in errors. */
gguf_file *gguf_parse(const void *data, size_t size, const char *name);
void gguf_close(gguf_file *g);

/* Element size info of ggml tensor types. Returns the bytes of N elements of TYPE, or 0 if TYPE is
 * unknown or N is not a whole number of blocks. */
size_t gguf_type_nbytes(uint32_t type, uint64_t n);
const char *gguf_type_name(uint32_t type); /* "F32", "F16", "BF16", ..., or NULL */
int gguf_type_supported(uint32_t type);      /* types kiln computes with: gguf_supported_type_names() */
const char *gguf_supported_type_names(void); /* "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K" */

const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);

/* Typed getters. Return 1 if found (value stored in *out), 0 if the key is absent (*out untouched),
 * -1 if present with an incompatible type (error names the file and key). Integer getters accept any
 * integer type whose value fits. */
int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out);
int gguf_get_i32(const gguf_file *g, const char *key, int32_t *out);
int gguf_get_f32(const gguf_file *g, const char *key, float *out);
int gguf_get_bool(const gguf_file *g, const char *key, bool *out);
int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out);
/* An array of element type TYPE: *data and *n as in gguf_value.arr. */
int gguf_get_arr(const gguf_file *g, const char *key, gguf_vtype type, const void **data, uint64_t *n);

/* Writer: collect key/values and tensors, then write atomically. Values and tensor data are copied
 * into the writer when set/added, except gguf_add_tensor_ref, whose data must outlive the write. */
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_set_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_set_f32(gguf_writer *w, const char *key, float v);
void gguf_set_bool(gguf_writer *w, const char *key, bool v);
void gguf_set_str(gguf_writer *w, const char *key, const char *v);
/* Array of fixed-size elements (not STRING/ARRAY), N of them, packed little-endian in DATA. */
void gguf_set_arr(gguf_writer *w, const char *key, gguf_vtype type, const void *data, uint64_t n);
/* LENS may be NULL when the strings are NUL-terminated. */
void gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *strs, const size_t *lens, uint64_t n);
/* Copies every key/value of G (e.g. to carry a tokenizer over) except those the writer already has. */
void gguf_copy_kvs(gguf_writer *w, const gguf_file *g);
/* A tensor of N_DIMS dims NE (ggml order) and TYPE. Returns -1 on a duplicate name or unknown type. */
int gguf_add_tensor(gguf_writer *w, const char *name, uint32_t type, int n_dims, const uint64_t *ne, const void *data);
int gguf_add_tensor_ref(gguf_writer *w, const char *name, uint32_t type, int n_dims, const uint64_t *ne,
                        const void *data);
/* Writes version 3 with general.alignment (default 32) to PATH via a temp file, fsync and rename. */
int gguf_write(gguf_writer *w, const char *path);

#endif
