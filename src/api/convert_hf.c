/* Hugging Face checkpoints in and out of kiln's GGUF model files. */
#include <string.h>

#include "base/error.h"
#include "format/hf.h"
#include "kiln.h"
#include "tokenizer/hf_tokenizer.h"

int kiln_convert_hf(const char *dir, const char *out_path, int type) {
    if (type != -1 && type != KILN_TYPE_F32 && type != KILN_TYPE_F16 && type != KILN_TYPE_BF16)
        return kiln_fail("unsupported output type %d (supported: f32, f16, bf16, or as stored)", type);
    kiln_config c;
    const hf_family *fam;
    hf_weights hw;
    if (hf_config_read(dir, &c, &fam) < 0 || hf_weights_open(&hw, dir) < 0) return -1;
    kiln_tokenizer *tok = NULL;
    if (!hf_tokenizer_absent(dir) && !(tok = hf_tokenizer_load(dir))) {
        hf_weights_close(&hw);
        return -1;
    }
    if (tok && tokenizer_n_vocab(tok) > c.n_vocab) {
        kiln_fail("%s: the tokenizer has %d tokens but the model only %d", dir, tokenizer_n_vocab(tok), c.n_vocab);
        tokenizer_free(tok);
        hf_weights_close(&hw);
        return -1;
    }
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.name", strrchr(dir, '/') && strrchr(dir, '/')[1] ? strrchr(dir, '/') + 1 : dir);
    int rc = hf_import(&hw, &c, fam, type, w);
    if (tok) tokenizer_to_gguf(tok, w);
    if (rc == 0) rc = gguf_write(w, out_path);
    gguf_writer_free(w);
    tokenizer_free(tok);
    hf_weights_close(&hw);
    return rc;
}

int kiln_export_hf(const char *model_path, const char *dir) {
    gguf_file *g = gguf_open(model_path);
    if (!g) return -1;
    kiln_config c;
    kiln_tokenizer *tok = NULL;
    int rc = model_file_read_config(g, &c);
    if (rc == 0 && !(tok = tokenizer_from_gguf(g)) && gguf_find_kv(g, "tokenizer.ggml.model")) rc = -1;
    if (rc == 0) rc = hf_export(g, &c, tok ? tokenizer_bos(tok) : -1, tok ? tokenizer_eos(tok) : -1, dir);
    if (rc == 0 && tok) rc = hf_tokenizer_write(tok, dir);
    tokenizer_free(tok);
    gguf_close(g);
    return rc;
}

int kiln_convert_arch(const char *model_path, const char *arch, const char *out_path) {
    gguf_file *g = gguf_open(model_path);
    if (!g) return -1;
    kiln_config c;
    kiln_tokenizer *tok = NULL;
    gguf_writer *w = gguf_writer_new();
    int rc = model_file_read_config(g, &c);
    if (rc == 0 && !(tok = tokenizer_from_gguf(g)) && gguf_find_kv(g, "tokenizer.ggml.model")) rc = -1;
    if (rc == 0) rc = model_file_retarget(g, &c, arch, w);
    if (rc == 0 && tok) tokenizer_to_gguf(tok, w);
    if (rc == 0) rc = gguf_write(w, out_path);
    gguf_writer_free(w);
    tokenizer_free(tok);
    gguf_close(g);
    return rc;
}
