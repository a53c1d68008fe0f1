#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "base/error.h"
#include "base/file.h"
#include "base/half.h"
#include "format/gguf.h"
#include "test.h"

#define SAMPLE "tests/golden/gguf_py_sample.gguf"

static bool str_equals(gguf_str s, const char *z) { return s.len == strlen(z) && memcmp(s.ptr, z, s.len) == 0; }

static gguf_file *open_ok(const char *path) {
    gguf_file *g = gguf_open(path);
    CHECKF(g, "%s", kiln_errmsg());
    return g;
}

static void check_error_has(const char *needle) {
    CHECKF(strstr(kiln_errmsg(), needle), "error \"%s\" lacks \"%s\"", kiln_errmsg(), needle);
    CHECKF(!strchr(kiln_errmsg(), '\n'), "error is not one line: %s", kiln_errmsg());
}

/* A small file with two 32-byte tensors, so that nothing follows the last tensor's data: every proper
 * prefix of it lacks something the reader needs. */
static const char *write_small(const char *name) {
    const char *path = test_tmp(name);
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "llama");
    gguf_set_u32(w, "a.u32", 7);
    gguf_set_bool(w, "a.flag", true);
    int32_t arr[3] = {1, -2, 3};
    gguf_set_arr(w, "a.arr", GGUF_INT32, arr, 3);
    float w1[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint16_t w2[16] = {0};
    uint64_t ne1[2] = {4, 2}, ne2[1] = {16};
    CHECKF(gguf_add_tensor(w, "w1", 0, 2, ne1, w1) == 0, "%s", kiln_errmsg());
    CHECKF(gguf_add_tensor(w, "w2", 1, 1, ne2, w2) == 0, "%s", kiln_errmsg());
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    return path;
}

/* The bytes of a file, to patch and parse. */
typedef struct {
    unsigned char *p;
    size_t n;
} image;

static image load(const char *path) {
    image im;
    im.p = (unsigned char *)kiln_read_file(path, &im.n);
    CHECKF(im.p, "%s", kiln_errmsg());
    return im;
}

static void poke(image im, size_t at, uint64_t v, int nbytes) {
    CHECK(at + nbytes <= im.n);
    for (int i = 0; i < nbytes; i++) im.p[at + i] = (unsigned char)(v >> (8 * i));
}

/* Byte offsets of a tensor's info fields in the image of G (G parsed from that image). */
static size_t tensor_field(const gguf_file *g, const char *name, const char *field) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    CHECK(t);
    size_t at = (size_t)((const unsigned char *)t->name.ptr - g->map.data) + t->name.len;
    if (!strcmp(field, "n_dims")) return at;
    if (!strcmp(field, "ne0")) return at + 4;
    if (!strcmp(field, "type")) return at + 4 + 8 * t->n_dims;
    return at + 4 + 8 * t->n_dims + 4; /* offset */
}

static size_t key_field(const gguf_file *g, const char *key) {
    const gguf_kv *kv = gguf_find_kv(g, key);
    CHECK(kv);
    return (size_t)((const unsigned char *)kv->key.ptr - g->map.data) - 8; /* the key's length */
}

/* Parses IM after patching the field FIELD of tensor or key NAME (located in the unpatched image). */
static gguf_file *parse_patched(image im, bool tensor, const char *name, const char *field, uint64_t v, int nbytes) {
    gguf_file *g = gguf_parse(im.p, im.n, "patched.gguf");
    CHECKF(g, "%s", kiln_errmsg());
    size_t at = tensor ? tensor_field(g, name, field) : key_field(g, name);
    gguf_close(g);
    poke(im, at, v, nbytes);
    return gguf_parse(im.p, im.n, "patched.gguf");
}

TEST(gguf_reads_every_scalar_type_written_by_gguf_py) {
    gguf_file *g = open_ok(SAMPLE);
    CHECK_EQ_INT(g->version, 3);
    const gguf_kv *kv;
    CHECK((kv = gguf_find_kv(g, "t.u8")) && kv->value.type == GGUF_UINT8 && kv->value.u64 == 200);
    CHECK((kv = gguf_find_kv(g, "t.i8")) && kv->value.type == GGUF_INT8 && kv->value.i64 == -100);
    CHECK((kv = gguf_find_kv(g, "t.u16")) && kv->value.type == GGUF_UINT16 && kv->value.u64 == 60000);
    CHECK((kv = gguf_find_kv(g, "t.i16")) && kv->value.type == GGUF_INT16 && kv->value.i64 == -30000);
    CHECK((kv = gguf_find_kv(g, "t.u32")) && kv->value.type == GGUF_UINT32 && kv->value.u64 == 4000000000u);
    CHECK((kv = gguf_find_kv(g, "t.i32")) && kv->value.type == GGUF_INT32 && kv->value.i64 == -2000000000);
    CHECK((kv = gguf_find_kv(g, "t.f32")) && kv->value.type == GGUF_FLOAT32 && kv->value.f64 == 0.15625);
    CHECK((kv = gguf_find_kv(g, "t.bool_true")) && kv->value.type == GGUF_BOOL && kv->value.b);
    CHECK((kv = gguf_find_kv(g, "t.bool_false")) && kv->value.type == GGUF_BOOL && !kv->value.b);
    CHECK((kv = gguf_find_kv(g, "t.str")) && kv->value.type == GGUF_STRING &&
          str_equals(kv->value.str, "h\xc3\xa9llo, gguf"));
    CHECK((kv = gguf_find_kv(g, "t.str_empty")) && kv->value.type == GGUF_STRING && kv->value.str.len == 0);
    CHECK((kv = gguf_find_kv(g, "t.u64")) && kv->value.type == GGUF_UINT64 && kv->value.u64 == 18000000000000000000ull);
    CHECK((kv = gguf_find_kv(g, "t.i64")) && kv->value.type == GGUF_INT64 && kv->value.i64 == -9000000000000000000ll);
    CHECK((kv = gguf_find_kv(g, "t.f64")) && kv->value.type == GGUF_FLOAT64 && kv->value.f64 == -2.718281828459045);
    CHECK((kv = gguf_find_kv(g, "general.architecture")) && str_equals(kv->value.str, "kilntest"));
    CHECK_EQ_INT(g->n_kv, 25);
    gguf_close(g);
}

TEST(gguf_reads_every_array_type_written_by_gguf_py) {
    gguf_file *g = open_ok(SAMPLE);
    const void *d;
    uint64_t n;
    CHECK(gguf_get_arr(g, "t.arr_u8", GGUF_UINT8, &d, &n) == 1 && n == 3 && !memcmp(d, "\x01\x02\xff", 3));
    int16_t i16[3], i16_want[3] = {-1, 2, -32768};
    CHECK(gguf_get_arr(g, "t.arr_i16", GGUF_INT16, &d, &n) == 1 && n == 3);
    memcpy(i16, d, sizeof i16);
    CHECK(!memcmp(i16, i16_want, sizeof i16));
    int32_t i32[4], i32_want[4] = {7, -8, 9, -10};
    CHECK(gguf_get_arr(g, "t.arr_i32", GGUF_INT32, &d, &n) == 1 && n == 4);
    memcpy(i32, d, sizeof i32);
    CHECK(!memcmp(i32, i32_want, sizeof i32));
    uint64_t u64[2];
    CHECK(gguf_get_arr(g, "t.arr_u64", GGUF_UINT64, &d, &n) == 1 && n == 2);
    memcpy(u64, d, sizeof u64);
    CHECK(u64[0] == 0 && u64[1] == 1ull << 63);
    float f32[3];
    CHECK(gguf_get_arr(g, "t.arr_f32", GGUF_FLOAT32, &d, &n) == 1 && n == 3);
    memcpy(f32, d, sizeof f32);
    CHECK(f32[0] == 0.5f && f32[1] == -1.25f && f32[2] == 3.0f);
    double f64[2];
    CHECK(gguf_get_arr(g, "t.arr_f64", GGUF_FLOAT64, &d, &n) == 1 && n == 2);
    memcpy(f64, d, sizeof f64);
    CHECK(f64[0] == 1e-300 && f64[1] == -0.1);
    CHECK(gguf_get_arr(g, "t.arr_bool", GGUF_BOOL, &d, &n) == 1 && n == 3 && !memcmp(d, "\x01\x00\x01", 3));
    CHECK(gguf_get_arr(g, "t.arr_str", GGUF_STRING, &d, &n) == 1 && n == 3);
    const gguf_str *s = d;
    CHECK(str_equals(s[0], "alpha") && str_equals(s[1], "") && str_equals(s[2], "gamma"));
    gguf_close(g);
}

TEST(gguf_reads_nested_arrays_written_by_gguf_py) {
    gguf_file *g = open_ok(SAMPLE);
    const void *d;
    uint64_t n;
    CHECK(gguf_get_arr(g, "t.arr_arr", GGUF_ARRAY, &d, &n) == 1 && n == 3);
    const gguf_value *inner = d;
    int32_t want[6] = {1, 2, 3, 4, 5, 6}, got[6];
    uint64_t lens[3] = {2, 1, 3}, k = 0;
    for (int i = 0; i < 3; i++) {
        CHECK(inner[i].type == GGUF_ARRAY && inner[i].arr.type == GGUF_INT32 && inner[i].arr.n == lens[i]);
        memcpy(got + k, inner[i].arr.data, 4 * lens[i]);
        k += lens[i];
    }
    CHECK(!memcmp(got, want, sizeof want));
    gguf_close(g);
}

TEST(gguf_reads_f32_f16_bf16_tensors_written_by_gguf_py) {
    gguf_file *g = open_ok(SAMPLE);
    CHECK_EQ_INT(g->n_tensors, 3);
    const gguf_tensor *t = gguf_find_tensor(g, "t.f32");
    CHECK(t && t->type == 0 && t->n_dims == 2 && t->ne[0] == 3 && t->ne[1] == 2 && t->ne[2] == 1 && t->nbytes == 24);
    float f[6], want[6] = {-1, -0.5f, 0, 0.5f, 1, 1.5f};
    memcpy(f, t->data, sizeof f);
    CHECK_CLOSE(f, want, 6, 0, 0, "t.f32");
    t = gguf_find_tensor(g, "t.f16");
    CHECK(t && t->type == 1 && t->n_dims == 1 && t->ne[0] == 4 && t->nbytes == 8);
    uint16_t h[4];
    memcpy(h, t->data, sizeof h);
    float hf[4] = {kiln_f16_to_f32(h[0]), kiln_f16_to_f32(h[1]), kiln_f16_to_f32(h[2]), kiln_f16_to_f32(h[3])};
    float hwant[4] = {1, -2, 0.5f, 65504};
    CHECK_CLOSE(hf, hwant, 4, 0, 0, "t.f16");
    t = gguf_find_tensor(g, "t.bf16");
    CHECK(t && t->type == 30 && t->ne[0] == 2 && t->ne[1] == 2 && t->nbytes == 8);
    memcpy(h, t->data, sizeof h);
    float bf[4] = {kiln_bf16_to_f32(h[0]), kiln_bf16_to_f32(h[1]), kiln_bf16_to_f32(h[2]), kiln_bf16_to_f32(h[3])};
    float bwant[4] = {1, -2.5f, 3.140625f, 0};
    CHECK_CLOSE(bf, bwant, 4, 0, 0, "t.bf16");
    CHECK(gguf_find_tensor(g, "t.f33") == NULL);
    gguf_close(g);
}

TEST(gguf_honours_general_alignment_of_gguf_py_file) {
    gguf_file *g = open_ok(SAMPLE);
    CHECK_EQ_INT(g->alignment, 64);
    CHECK_EQ_INT(g->data_offset % 64, 0);
    for (uint64_t i = 0; i < g->n_tensors; i++) CHECK_EQ_INT(g->tensors[i].offset % 64, 0);
    gguf_close(g);
}

TEST(gguf_writer_round_trips_every_value_type_and_tensors) {
    const char *path = test_tmp("rt.gguf");
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "k.u32", 4000000000u);
    gguf_set_i32(w, "k.i32", -5);
    gguf_set_u64(w, "k.u64", 1ull << 40);
    gguf_set_f32(w, "k.f32", -0.75f);
    gguf_set_bool(w, "k.bool", true);
    gguf_set_str(w, "k.str", "text");
    uint8_t u8[2] = {9, 250};
    double f64[2] = {1.5, -2.25};
    gguf_set_arr(w, "k.u8s", GGUF_UINT8, u8, 2);
    gguf_set_arr(w, "k.f64s", GGUF_FLOAT64, f64, 2);
    const char *strs[2] = {"a", "bc"};
    gguf_set_arr_str(w, "k.strs", strs, NULL, 2);
    float t1[6] = {1, 2, 3, 4, 5, 6};
    uint16_t t2[3] = {0x3c00, 0xc000, 0x3800}, t3[2] = {0x3f80, 0x4040};
    uint64_t ne1[3] = {3, 1, 2}, ne2[1] = {3}, ne3[1] = {2};
    CHECK(gguf_add_tensor(w, "t1", 0, 3, ne1, t1) == 0);
    CHECK(gguf_add_tensor(w, "t2", 1, 1, ne2, t2) == 0);
    CHECK(gguf_add_tensor_ref(w, "t3", 30, 1, ne3, t3) == 0);
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);

    gguf_file *g = open_ok(path);
    uint32_t u;
    int32_t i;
    float f;
    bool b;
    gguf_str s;
    const void *d;
    uint64_t n;
    CHECK(gguf_get_u32(g, "k.u32", &u) == 1 && u == 4000000000u);
    CHECK(gguf_get_i32(g, "k.i32", &i) == 1 && i == -5);
    CHECK(gguf_find_kv(g, "k.u64")->value.type == GGUF_UINT64 && gguf_find_kv(g, "k.u64")->value.u64 == 1ull << 40);
    CHECK(gguf_get_f32(g, "k.f32", &f) == 1 && f == -0.75f);
    CHECK(gguf_get_bool(g, "k.bool", &b) == 1 && b);
    CHECK(gguf_get_str(g, "k.str", &s) == 1 && str_equals(s, "text"));
    CHECK(gguf_get_arr(g, "k.u8s", GGUF_UINT8, &d, &n) == 1 && n == 2 && !memcmp(d, u8, 2));
    CHECK(gguf_get_arr(g, "k.f64s", GGUF_FLOAT64, &d, &n) == 1 && n == 2 && !memcmp(d, f64, 16));
    CHECK(gguf_get_arr(g, "k.strs", GGUF_STRING, &d, &n) == 1 && n == 2);
    CHECK(str_equals(((const gguf_str *)d)[0], "a") && str_equals(((const gguf_str *)d)[1], "bc"));
    const gguf_tensor *t = gguf_find_tensor(g, "t1");
    CHECK(t && t->n_dims == 3 && t->ne[0] == 3 && t->ne[1] == 1 && t->ne[2] == 2 && t->ne[3] == 1);
    CHECK(!memcmp(t->data, t1, sizeof t1));
    CHECK((t = gguf_find_tensor(g, "t2")) && t->type == 1 && !memcmp(t->data, t2, sizeof t2));
    CHECK((t = gguf_find_tensor(g, "t3")) && t->type == 30 && !memcmp(t->data, t3, sizeof t3));
    gguf_close(g);
}

TEST(gguf_writer_writes_keys_in_order_with_alignment_32_and_zero_padding) {
    const char *path = write_small("small.gguf");
    gguf_file *g = open_ok(path);
    const char *keys[] = {"general.architecture", "a.u32", "a.flag", "a.arr", "general.alignment"};
    CHECK_EQ_INT(g->n_kv, 5);
    for (int i = 0; i < 5; i++) CHECKF(str_equals(g->kv[i].key, keys[i]), "key %d", i);
    CHECK(g->kv[4].value.type == GGUF_UINT32 && g->kv[4].value.u64 == 32);
    CHECK_EQ_INT(g->data_offset % 32, 0);
    const unsigned char *end_of_infos = (const unsigned char *)g->tensors[1].name.ptr + 2 + 4 + 8 + 4 + 8;
    for (const unsigned char *p = end_of_infos; p < g->map.data + g->data_offset; p++) CHECK(*p == 0);
    CHECK_EQ_INT(g->tensors[1].offset, 32);
    gguf_close(g);
}

TEST(gguf_copy_kvs_reproduces_every_gguf_py_value_byte_for_byte) {
    gguf_file *src = open_ok(SAMPLE);
    gguf_writer *w = gguf_writer_new();
    gguf_copy_kvs(w, src);
    const char *path = test_tmp("copy.gguf");
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    gguf_file *g = open_ok(path);
    CHECK_EQ_INT(g->n_kv, src->n_kv);
    /* the encoded key/values are contiguous in both files: from the first key to the end of the last value */
    const unsigned char *a0 = (const unsigned char *)src->kv[0].key.ptr, *b0 = (const unsigned char *)g->kv[0].key.ptr;
    size_t n = (size_t)((const unsigned char *)src->tensors[0].name.ptr - 8 - a0);
    CHECK(!memcmp(a0, b0, n));
    gguf_close(g);
    gguf_close(src);
}

TEST(gguf_copy_kvs_keeps_values_the_writer_already_has) {
    gguf_file *src = open_ok(SAMPLE);
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "mine");
    gguf_copy_kvs(w, src);
    const char *path = test_tmp("copy.gguf");
    CHECKF(gguf_write(w, path) == 0, "%s", kiln_errmsg());
    gguf_writer_free(w);
    gguf_file *g = open_ok(path);
    gguf_str s;
    CHECK(gguf_get_str(g, "general.architecture", &s) == 1 && str_equals(s, "mine"));
    CHECK_EQ_INT(g->n_kv, src->n_kv);
    gguf_close(g);
    gguf_close(src);
}

TEST(gguf_setting_an_existing_key_replaces_its_value_in_place) {
    const char *path = test_tmp("replace.gguf");
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "a", 1);
    gguf_set_str(w, "b", "x");
    gguf_set_str(w, "a", "now a string");
    CHECK(gguf_write(w, path) == 0);
    gguf_writer_free(w);
    gguf_file *g = open_ok(path);
    CHECK_EQ_INT(g->n_kv, 3);
    CHECK(str_equals(g->kv[0].key, "a") && g->kv[0].value.type == GGUF_STRING);
    CHECK(str_equals(g->kv[0].value.str, "now a string"));
    gguf_close(g);
}

TEST(gguf_writer_honours_a_custom_alignment) {
    const char *path = test_tmp("align.gguf");
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "general.alignment", 256);
    float x[3] = {1, 2, 3};
    uint64_t ne[1] = {3};
    CHECK(gguf_add_tensor(w, "a", 0, 1, ne, x) == 0 && gguf_add_tensor(w, "b", 0, 1, ne, x) == 0);
    CHECK(gguf_write(w, path) == 0);
    gguf_writer_free(w);
    gguf_file *g = open_ok(path);
    CHECK(g->alignment == 256 && g->data_offset == 256 && g->tensors[1].offset == 256);
    gguf_close(g);
}

TEST(gguf_writer_rejects_an_alignment_that_is_not_a_power_of_two) {
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "general.alignment", 48);
    CHECK(gguf_write(w, test_tmp("x.gguf")) == -1);
    check_error_has("power of two");
    gguf_writer_free(w);
}

TEST(gguf_writer_rejects_duplicate_tensor_and_unknown_type) {
    gguf_writer *w = gguf_writer_new();
    float x[32] = {0};
    uint64_t ne[1] = {32}, ne16[1] = {16};
    CHECK(gguf_add_tensor(w, "x", 0, 1, ne, x) == 0);
    CHECK(gguf_add_tensor(w, "x", 0, 1, ne, x) == -1);
    check_error_has("duplicate");
    CHECK(gguf_add_tensor(w, "y", 4, 1, ne, x) == -1);
    check_error_has("unknown tensor type id 4");
    CHECK(gguf_add_tensor(w, "z", 2, 1, ne16, x) == -1); /* Q4_0 rows are whole 32-element blocks */
    check_error_has("block size 32");
    gguf_writer_free(w);
}

TEST(gguf_type_sizes_match_ggml) {
    CHECK_EQ_INT(gguf_type_nbytes(0, 10), 40);
    CHECK_EQ_INT(gguf_type_nbytes(30, 10), 20);
    CHECK_EQ_INT(gguf_type_nbytes(2, 64), 36);
    CHECK_EQ_INT(gguf_type_nbytes(8, 32), 34);
    CHECK_EQ_INT(gguf_type_nbytes(10, 256), 84);
    CHECK_EQ_INT(gguf_type_nbytes(12, 512), 288);
    CHECK_EQ_INT(gguf_type_nbytes(14, 256), 210);
    CHECK_EQ_INT(gguf_type_nbytes(15, 256), 292);
    CHECK_EQ_INT(gguf_type_nbytes(28, 3), 24);
    CHECK_EQ_INT(gguf_type_nbytes(2, 31), 0);  /* not whole blocks */
    CHECK_EQ_INT(gguf_type_nbytes(5, 32), 0);  /* removed type Q4_3 */
    CHECK_STR(gguf_type_name(13), "Q5_K");
    CHECK(gguf_type_supported(30) && gguf_type_supported(1) && gguf_type_supported(8) && !gguf_type_supported(13));
}

TEST(gguf_integer_getters_convert_fitting_values_and_reject_others) {
    gguf_file *g = open_ok(SAMPLE);
    uint32_t u = 0;
    int32_t i = 0;
    CHECK(gguf_get_u32(g, "t.u8", &u) == 1 && u == 200);
    CHECK(gguf_get_i32(g, "t.i16", &i) == 1 && i == -30000);
    CHECK(gguf_get_u32(g, "t.i8", &u) == -1);
    check_error_has("t.i8 = -100 does not fit in u32");
    CHECK(gguf_get_i32(g, "t.u32", &i) == -1);
    CHECK(gguf_get_u32(g, "t.str", &u) == -1);
    check_error_has(SAMPLE ": key t.str is string, expected u32");
    CHECK(gguf_get_u32(g, "absent", &u) == 0 && u == 200);
    gguf_close(g);
}

TEST(gguf_rejects_an_empty_file) {
    const char *path = test_tmp("empty.gguf");
    fclose(fopen(path, "wb"));
    CHECK(gguf_open(path) == NULL);
    check_error_has("empty.gguf: empty file");
}

static void check_rejects_bytes(const char *name, const void *bytes, size_t n) {
    const char *path = test_tmp(name);
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
    CHECK(gguf_open(path) == NULL);
    check_error_has("not a GGUF file");
    CHECK(!strncmp(kiln_errmsg(), path, strlen(path)));
}

TEST(gguf_rejects_a_png) {
    check_rejects_bytes("image.png", "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0", 29);
}

TEST(gguf_rejects_a_text_file) { check_rejects_bytes("notes.txt", "hello, this is text\n", 20); }

TEST(gguf_rejects_every_truncation_without_crashing) {
    image im = load(write_small("small.gguf"));
    for (size_t len = 0; len < im.n; len++) {
        unsigned char *copy = kiln_xmalloc(len); /* exactly LEN bytes, so that the sanitizers see overreads */
        memcpy(copy, im.p, len);
        gguf_file *g = gguf_parse(copy, len, "cut.gguf");
        CHECKF(!g, "a prefix of %zu of %zu bytes parsed", len, im.n);
        CHECKF(!strncmp(kiln_errmsg(), "cut.gguf: ", 10) && !strchr(kiln_errmsg(), '\n'), "%s", kiln_errmsg());
        free(copy);
    }
    gguf_file *g = gguf_parse(im.p, im.n, "whole.gguf");
    CHECKF(g, "%s", kiln_errmsg());
    gguf_close(g);
    free(im.p);
}

TEST(gguf_rejects_tensor_data_past_the_end) {
    image im = load(write_small("small.gguf"));
    CHECK(parse_patched(im, true, "w2", "offset", 64, 8) == NULL);
    check_error_has("w2: 32 bytes of data at byte offset");
    check_error_has("run past the end of the file");
    free(im.p);
}

TEST(gguf_rejects_a_misaligned_tensor_offset) {
    image im = load(write_small("small.gguf"));
    CHECK(parse_patched(im, true, "w2", "offset", 36, 8) == NULL);
    check_error_has("tensor w2: data offset 36 is not a multiple of the alignment 32");
    free(im.p);
}

TEST(gguf_rejects_overlapping_tensors) {
    image im = load(write_small("small.gguf"));
    CHECK(parse_patched(im, true, "w2", "offset", 0, 8) == NULL);
    check_error_has("overlap");
    free(im.p);
}

TEST(gguf_rejects_an_unknown_tensor_type_naming_it) {
    image im = load(write_small("small.gguf"));
    CHECK(parse_patched(im, true, "w2", "type", 99, 4) == NULL);
    check_error_has("tensor w2: unknown tensor type id 99");
    free(im.p);
}

TEST(gguf_rejects_zero_or_five_dimensions) {
    image im = load(write_small("small.gguf"));
    CHECK(parse_patched(im, true, "w1", "n_dims", 5, 4) == NULL);
    check_error_has("tensor w1: 5 dimensions");
    free(im.p);
    im = load(write_small("small.gguf"));
    CHECK(parse_patched(im, true, "w1", "n_dims", 0, 4) == NULL);
    check_error_has("tensor w1: 0 dimensions");
    free(im.p);
}

TEST(gguf_rejects_a_zero_dimension) {
    image im = load(write_small("small.gguf"));
    CHECK(parse_patched(im, true, "w1", "ne0", 0, 8) == NULL);
    check_error_has("tensor w1: dimension 0 is 0");
    free(im.p);
}

TEST(gguf_rejects_an_element_count_that_overflows) {
    image im = load(write_small("small.gguf"));
    CHECK(parse_patched(im, true, "w1", "ne0", 1ull << 62, 8) == NULL);
    check_error_has("tensor w1: element count overflows");
    free(im.p);
}

TEST(gguf_rejects_a_row_that_is_not_whole_blocks) {
    image im = load(write_small("small.gguf"));
    CHECK(parse_patched(im, true, "w2", "type", 8, 4) == NULL); /* Q8_0: 16 elements are half a block */
    check_error_has("tensor w2: rows of 16 elements are not a multiple of the Q8_0 block size 32");
    free(im.p);
}

TEST(gguf_rejects_a_huge_string_length) {
    image im = load(write_small("small.gguf"));
    CHECK(parse_patched(im, false, "a.u32", NULL, UINT64_MAX, 8) == NULL);
    check_error_has("string length 18446744073709551615 exceeds the");
    free(im.p);
}

TEST(gguf_rejects_huge_counts_before_allocating) {
    image im = load(write_small("small.gguf"));
    poke(im, 16, 1ull << 60, 8); /* n_kv */
    CHECK(gguf_parse(im.p, im.n, "n.gguf") == NULL);
    check_error_has("key/value pairs cannot fit");
    poke(im, 16, 5, 8);
    poke(im, 8, 1ull << 60, 8); /* n_tensors */
    CHECK(gguf_parse(im.p, im.n, "n.gguf") == NULL);
    check_error_has("tensors cannot fit");
    free(im.p);
}

TEST(gguf_rejects_a_huge_array_count_before_allocating) {
    image im = load(write_small("small.gguf"));
    gguf_file *g = gguf_parse(im.p, im.n, "a.gguf");
    CHECK(g);
    size_t at = key_field(g, "a.arr") + 8 + 5 + 4 + 4; /* key length, "a.arr", ARRAY, element type */
    gguf_close(g);
    poke(im, at - 4, GGUF_STRING, 4);
    poke(im, at, 1ull << 61, 8);
    CHECK(gguf_parse(im.p, im.n, "a.gguf") == NULL);
    check_error_has("key a.arr: array of 2305843009213693952 string cannot fit");
    free(im.p);
}

TEST(gguf_rejects_version_1_and_unknown_versions) {
    image im = load(write_small("small.gguf"));
    poke(im, 4, 1, 4);
    CHECK(gguf_parse(im.p, im.n, "v1.gguf") == NULL);
    check_error_has("v1.gguf: GGUF version 1 is not supported");
    poke(im, 4, 4, 4);
    CHECK(gguf_parse(im.p, im.n, "v4.gguf") == NULL);
    check_error_has("unsupported GGUF version 4");
    poke(im, 4, 2, 4);
    gguf_file *g = gguf_parse(im.p, im.n, "v2.gguf"); /* v2 has the same layout */
    CHECKF(g, "%s", kiln_errmsg());
    gguf_close(g);
    free(im.p);
}

TEST(gguf_rejects_duplicate_keys) {
    image im = load(write_small("small.gguf"));
    gguf_file *g = gguf_parse(im.p, im.n, "d.gguf");
    size_t at = key_field(g, "a.arr") + 8;
    gguf_close(g);
    memcpy(im.p + at, "a.u32", 5);
    CHECK(gguf_parse(im.p, im.n, "d.gguf") == NULL);
    check_error_has("duplicate key a.u32");
    free(im.p);
}

TEST(gguf_rejects_duplicate_tensor_names) {
    image im = load(write_small("small.gguf"));
    gguf_file *g = gguf_parse(im.p, im.n, "d.gguf");
    size_t at = (size_t)((const unsigned char *)gguf_find_tensor(g, "w2")->name.ptr - im.p);
    gguf_close(g);
    im.p[at + 1] = '1';
    CHECK(gguf_parse(im.p, im.n, "d.gguf") == NULL);
    check_error_has("duplicate tensor name w1");
    free(im.p);
}

TEST(gguf_rejects_an_alignment_that_is_not_a_power_of_two) {
    image im = load(write_small("small.gguf"));
    gguf_file *g = gguf_parse(im.p, im.n, "al.gguf");
    size_t at = key_field(g, "general.alignment") + 8 + 17 + 4;
    gguf_close(g);
    poke(im, at, 48, 4);
    CHECK(gguf_parse(im.p, im.n, "al.gguf") == NULL);
    check_error_has("general.alignment 48 is not a power of two");
    free(im.p);
}

TEST(gguf_rejects_a_bool_that_is_not_0_or_1) {
    image im = load(write_small("small.gguf"));
    gguf_file *g = gguf_parse(im.p, im.n, "b.gguf");
    size_t at = key_field(g, "a.flag") + 8 + 6 + 4;
    gguf_close(g);
    poke(im, at, 2, 1);
    CHECK(gguf_parse(im.p, im.n, "b.gguf") == NULL);
    check_error_has("key a.flag: bool value 2 is neither 0 nor 1");
    free(im.p);
}

TEST(gguf_rejects_arrays_nested_too_deep) {
    /* one key holding arrays nested 100 deep, each of one element */
    unsigned char b[24 + 8 + 1 + 4 + 100 * 12];
    size_t n = 0;
    memcpy(b, "GGUF\x03\0\0\0", 8), n = 8;
    memset(b + n, 0, 8), n += 8;
    memcpy(b + n, "\x01\0\0\0\0\0\0\0", 8), n += 8;
    memcpy(b + n, "\x01\0\0\0\0\0\0\0k\x09\0\0\0", 13), n += 13;
    for (int d = 0; d < 100; d++) {
        memcpy(b + n, d < 99 ? "\x09\0\0\0\x01\0\0\0\0\0\0\0" : "\x00\0\0\0\0\0\0\0\0\0\0\0", 12);
        n += 12;
    }
    CHECK(gguf_parse(b, n, "deep.gguf") == NULL);
    check_error_has("key k: arrays nested more than");
}

TEST(gguf_atomic_write_into_a_missing_directory_names_the_path) {
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "a", 1);
    CHECK(gguf_write(w, "build/tmp/no/such/dir/x.gguf") == -1);
    check_error_has("build/tmp/no/such/dir/x.gguf");
    gguf_writer_free(w);
}

TEST(gguf_writer_reports_a_setter_error_when_writing) {
    gguf_writer *w = gguf_writer_new();
    gguf_set_arr(w, "bad", GGUF_STRING, NULL, 0); /* strings are not fixed-size */
    CHECK(gguf_write(w, test_tmp("bad.gguf")) == -1);
    check_error_has("bad.gguf: key bad: cannot make an array of 0 string");
    gguf_writer_free(w);
}

TEST(gguf_failed_write_keeps_the_earlier_file_and_leaves_no_temp_file) {
    const char *path = write_small("keep.gguf");
    image before = load(path);
    gguf_writer *w = gguf_writer_new();
    size_t n = 1 << 20;
    float *big = kiln_xcalloc(n, sizeof *big);
    uint64_t ne[1] = {n};
    CHECK(gguf_add_tensor_ref(w, "big", 0, 1, ne, big) == 0);
    /* files may grow to 64 KiB only: writing the 4 MiB tensor fails half way */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {65536, 65536};
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    CHECK(gguf_write(w, path) == -1);
    check_error_has("keep.gguf: write failed");
    gguf_writer_free(w);
    free(big);
    image after = load(path);
    CHECK(before.n == after.n && !memcmp(before.p, after.p, before.n));
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d))) CHECKF(!strstr(e->d_name, ".tmp."), "temp file %s left", e->d_name);
    closedir(d);
    free(before.p);
    free(after.p);
}
