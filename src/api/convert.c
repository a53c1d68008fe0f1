/* Conversions of other formats into kiln's GGUF model files. */
#include "base/error.h"
#include "format/gguf.h"
#include "format/llama2c.h"
#include "kiln.h"
#include "tokenizer/tokenizer.h"

int kiln_convert_llama2c(const char *ckpt_path, const char *tokenizer_path, const char *out_path, kiln_type type) {
    if (type != KILN_TYPE_F32 && type != KILN_TYPE_F16 && type != KILN_TYPE_BF16)
        return kiln_fail("unsupported output type %d (supported: f32, f16, bf16)", (int)type);
    gguf_writer *w = gguf_writer_new();
    kiln_map map;
    kiln_config c;
    kiln_tokenizer *tok = NULL;
    int rc = llama2c_to_gguf(ckpt_path, &map, type, &c, w);
    if (rc == 0) {
        gguf_set_str(w, "general.name", "llama2.c import");
        if (tokenizer_path) {
            tok = tokenizer_load_llama2c(tokenizer_path, c.n_vocab);
            if (tok) tokenizer_to_gguf(tok, w);
            else rc = -1;
        }
        if (rc == 0) rc = gguf_write(w, out_path);
        kiln_map_close(&map);
    }
    tokenizer_free(tok);
    gguf_writer_free(w);
    return rc;
}
