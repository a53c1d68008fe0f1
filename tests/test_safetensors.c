/* safetensors: what the writer writes the reader reads back, a real file written by transformers, and
 * malformed headers rejected with one-line errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "format/safetensors.h"
#include "kiln.h"
#include "test.h"

static void check_error_has(const char *needle) {
    CHECKF(strstr(kiln_errmsg(), needle), "error \"%s\" lacks \"%s\"", kiln_errmsg(), needle);
    CHECKF(!strchr(kiln_errmsg(), '\n'), "error is not one line: %s", kiln_errmsg());
}

/* An image of HEADER (JSON) followed by DATA_LEN bytes of data. */
static unsigned char *image(const char *header, size_t data_len, size_t *size) {
    size_t n = strlen(header);
    *size = 8 + n + data_len;
    unsigned char *p = kiln_xcalloc(*size, 1);
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(p + 8, header, n);
    return p;
}

static void check_rejected(const char *header, size_t data_len, const char *needle) {
    size_t size;
    unsigned char *p = image(header, data_len, &size);
    st_file *f = safetensors_parse(p, size, "bad.safetensors");
    CHECKF(!f, "accepted: %s", header);
    check_error_has(needle);
    check_error_has("bad.safetensors");
    free(p);
}

TEST(safetensors_written_file_reads_back_with_names_shapes_dtypes_and_metadata) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {0x3f80, 0x4000, 0xc040};
    st_writer *w = safetensors_writer_new();
    safetensors_set_meta(w, "format", "pt");
    CHECK(safetensors_add(w, "layer.a", KILN_TYPE_F32, 2, (int64_t[]){2, 3}, a) == 0);
    CHECK(safetensors_add(w, "b", KILN_TYPE_BF16, 1, (int64_t[]){3}, b) == 0);
    CHECK(safetensors_add(w, "b", KILN_TYPE_BF16, 1, (int64_t[]){3}, b) == -1);
    const char *path = test_tmp("x.safetensors");
    CHECKF(safetensors_write(w, path) == 0, "%s", kiln_errmsg());
    safetensors_writer_free(w);
    st_file *f = safetensors_open(path);
    CHECKF(f, "%s", kiln_errmsg());
    CHECK_EQ_INT(f->n_tensors, 2);
    const st_tensor *t = safetensors_find(f, "layer.a");
    CHECK(t && t->type == KILN_TYPE_F32 && t->n_dims == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    CHECK(memcmp(t->data, a, sizeof a) == 0);
    t = safetensors_find(f, "b");
    CHECK(t && !strcmp(t->dtype, "BF16") && t->nbytes == 6 && memcmp(t->data, b, 6) == 0);
    CHECK(!safetensors_find(f, "c"));
    CHECK_STR(safetensors_meta(f, "format"), "pt");
    safetensors_close(f);
}

TEST(safetensors_reads_the_real_tiny_gpt2_written_by_transformers) {
    st_file *f = safetensors_open(test_data("tiny-gpt2/model.safetensors"));
    CHECKF(f, "%s", kiln_errmsg());
    CHECK_EQ_INT(f->n_tensors, 16);
    const st_tensor *t = safetensors_find(f, "h.0.attn.c_attn.weight");
    CHECK(t && t->type == KILN_TYPE_F32 && t->shape[0] == 2 && t->shape[1] == 6);
    t = safetensors_find(f, "wte.weight");
    CHECK(t && t->shape[0] == 21 && t->shape[1] == 2);
    safetensors_close(f);
}

TEST(safetensors_rejects_offsets_past_the_end_of_the_file) {
    check_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "past the 8 bytes");
}

TEST(safetensors_rejects_overlapping_tensors) {
    check_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                   12, "overlaps");
}

TEST(safetensors_rejects_a_byte_length_that_disagrees_with_dtype_and_shape) {
    check_rejected("{\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, "shape and dtype F16");
}

TEST(safetensors_rejects_unknown_dtypes_gaps_and_trailing_bytes) {
    check_rejected("{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'F31'");
    check_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "unused bytes");
    check_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9, "belong to none");
}

TEST(safetensors_rejects_a_huge_header_length_without_allocating_it) {
    size_t size;
    unsigned char *p = image("{}", 0, &size);
    p[7] = 0x7f; /* 2^62-ish */
    CHECK(!safetensors_parse(p, size, "bad.safetensors"));
    check_error_has("100 MB limit");
    memset(p, 0, 8);
    p[0] = 200; /* within the limit, past the end */
    CHECK(!safetensors_parse(p, size, "bad.safetensors"));
    check_error_has("runs past the end");
    free(p);
}

TEST(safetensors_rejects_malformed_json_and_shapes) {
    check_rejected("{\"a\":", 0, "not valid JSON");
    check_rejected("[1,2]", 0, "not a JSON object");
    check_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "not a count");
    check_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "two data_offsets");
    check_rejected("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                   "overflowing shape");
    check_rejected("{\"__metadata__\":{\"k\":1}}", 0, "not a string");
}

TEST(safetensors_every_truncation_of_a_valid_file_is_rejected) {
    size_t size;
    unsigned char *full = (unsigned char *)kiln_read_file(test_data("tiny-gpt2/model.safetensors"), &size);
    CHECK(full);
    for (size_t n = 0; n < size; n += n < 200 ? 1 : 97) {
        unsigned char *p = kiln_xmalloc(n + 1);
        memcpy(p, full, n);
        st_file *f = safetensors_parse(p, n, "cut.safetensors");
        CHECKF(!f, "a file cut to %zu of %zu bytes was accepted", n, size);
        free(p);
    }
    free(full);
}
