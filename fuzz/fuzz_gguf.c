/* libFuzzer target for the GGUF reader: parses the input and, when it is accepted, reads every byte the
 * reader claims is valid (every key, value, array element and the ends of every tensor's data), looks each
 * key and tensor up, and copies the metadata into a writer. Built by scripts/check-long.sh with
 * -fsanitize=fuzzer,address,undefined, so an out-of-bounds read, a leak or undefined behaviour is a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "format/gguf.h"

static volatile unsigned sink;

static void touch_str(gguf_str s) {
    if (s.len) sink += (unsigned char)s.ptr[0] + (unsigned char)s.ptr[s.len - 1];
}

static void touch_value(const gguf_value *v) {
    if (v->type == GGUF_STRING) touch_str(v->str);
    if (v->type != GGUF_ARRAY || v->arr.n == 0) return;
    if (v->arr.type == GGUF_STRING)
        for (uint64_t i = 0; i < v->arr.n; i++) touch_str(((const gguf_str *)v->arr.data)[i]);
    else if (v->arr.type == GGUF_ARRAY)
        for (uint64_t i = 0; i < v->arr.n; i++) touch_value((const gguf_value *)v->arr.data + i);
    else { /* the first and last byte of the packed elements */
        static const uint8_t size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        const unsigned char *p = v->arr.data;
        sink += p[0] + p[v->arr.n * size[v->arr.type] - 1];
    }
}

/* A NUL-terminated copy of S, or NULL when S holds a NUL (the lookups take C strings). */
static char *cstr(gguf_str s) {
    if (memchr(s.ptr, 0, s.len)) return NULL;
    char *z = malloc(s.len + 1);
    memcpy(z, s.ptr, s.len);
    z[s.len] = 0;
    return z;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *g = gguf_parse(data, size, "fuzz.gguf");
    if (!g) {
        sink += (unsigned)strlen(kiln_errmsg());
        return 0;
    }
    for (uint64_t i = 0; i < g->n_kv; i++) {
        touch_str(g->kv[i].key);
        touch_value(&g->kv[i].value);
        char *key = cstr(g->kv[i].key);
        if (!key) continue;
        uint32_t u;
        int32_t s;
        float f;
        bool b;
        gguf_str str;
        const void *arr;
        uint64_t n;
        sink += gguf_find_kv(g, key) != NULL;
        sink += gguf_get_u32(g, key, &u) + gguf_get_i32(g, key, &s) + gguf_get_f32(g, key, &f) +
                gguf_get_bool(g, key, &b) + gguf_get_str(g, key, &str) + gguf_get_arr(g, key, GGUF_STRING, &arr, &n);
        free(key);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        touch_str(t->name);
        sink += ((const unsigned char *)t->data)[0] + ((const unsigned char *)t->data)[t->nbytes - 1];
        char *name = cstr(t->name);
        if (name) sink += gguf_find_tensor(g, name) != NULL;
        free(name);
    }
    gguf_writer *w = gguf_writer_new();
    gguf_copy_kvs(w, g);
    gguf_writer_free(w);
    gguf_close(g);
    return 0;
}
