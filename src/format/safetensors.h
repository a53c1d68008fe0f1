/* safetensors: Hugging Face's tensor file. Layout: u64 little-endian N, N bytes of a JSON object (the
 * header), then the data. The header maps each tensor name to {"dtype", "shape", "data_offsets":
 * [begin, end]} (offsets relative to the start of the data) and may hold "__metadata__", an object of
 * strings. Shapes list the slowest-varying dimension first (numpy/PyTorch order).
 *
 * The reader maps the file and validates the whole header before returning, as the reference Rust
 * implementation does: a header of at most 100 MB that is one JSON object, known dtypes, shapes whose
 * element count times the dtype's size is the tensor's byte length, and tensors that tile the data
 * exactly (sorted by offset, each begins where the previous ends, the last ends at the end of the file):
 * so no offset points outside the file and no two tensors overlap. Tensor data is used in place. */
#ifndef KILN_FORMAT_SAFETENSORS_H
#define KILN_FORMAT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/file.h"

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    char dtype[12];             /* as written: "F32", "BF16", "I64", ... */
    int type;                   /* kiln_type for F32/F16/BF16, -1 for any other dtype */
    int n_dims;
    int64_t shape[ST_MAX_DIMS]; /* slowest first */
    uint64_t n_elems;
    const void *data;           /* in the map; not necessarily aligned */
    size_t nbytes;
} st_tensor;

typedef struct {
    kiln_map map;
    char *path;
    int n_tensors;
    st_tensor *tensors;         /* sorted by name */
    int n_meta;
    char **meta_keys, **meta_values;
    int owns_map;
} st_file;

/* Opens and validates PATH. NULL with an error naming PATH and what is wrong. */
st_file *safetensors_open(const char *path);
/* Parses an image in memory (not copied; must outlive the result). NAME is used in errors. */
st_file *safetensors_parse(const void *data, size_t size, const char *name);
void safetensors_close(st_file *f);
const st_tensor *safetensors_find(const st_file *f, const char *name);
/* The value of a "__metadata__" key, or NULL. */
const char *safetensors_meta(const st_file *f, const char *key);
/* Bytes per element of a dtype name, 0 when unknown. */
size_t safetensors_dtype_size(const char *dtype);
/* The dtype name of a kiln_type (F32, F16, BF16), NULL for others. */
const char *safetensors_dtype_name(int type);

/* Writer: tensors are referenced (their data must outlive safetensors_write) and written in the order
 * added; the file is written atomically. */
typedef struct st_writer st_writer;
st_writer *safetensors_writer_new(void);
void safetensors_writer_free(st_writer *w);
/* A tensor of TYPE (F32, F16, BF16) and N_DIMS dims SHAPE (slowest first). -1 on a duplicate name. */
int safetensors_add(st_writer *w, const char *name, int type, int n_dims, const int64_t *shape, const void *data);
/* Takes ownership of DATA (malloc'd), freed with the writer. */
int safetensors_add_owned(st_writer *w, const char *name, int type, int n_dims, const int64_t *shape, void *data);
void safetensors_set_meta(st_writer *w, const char *key, const char *value);
int safetensors_write(st_writer *w, const char *path);

#endif
