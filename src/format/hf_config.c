/* Hugging Face config.json <-> kiln_config, and the table of supported architectures. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "format/hf.h"

/* Each architecture in a line: what differs between them is in these columns and in the tensor table
 * of its layout (hf_import.c), nowhere else. */
static const hf_family FAMILIES[] = {
    {"LlamaForCausalLM", "llama", "llama", HF_LAYOUT_LLAMA, HF_PERMUTE_QK},
    {"MistralForCausalLM", "mistral", "llama", HF_LAYOUT_LLAMA, HF_PERMUTE_QK},
    {"Qwen2ForCausalLM", "qwen2", "qwen2", HF_LAYOUT_LLAMA, 0},
    {"GPT2LMHeadModel", "gpt2", "gpt2", HF_LAYOUT_GPT2, 0},
    {"GPT2Model", "gpt2", "gpt2", HF_LAYOUT_GPT2, 0},
    {"BaichuanForCausalLM", "baichuan", "baichuan", HF_LAYOUT_BAICHUAN, HF_PERMUTE_QK | HF_NORM_HEAD},
    {"BaiChuanForCausalLM", "baichuan", "baichuan", HF_LAYOUT_BAICHUAN, HF_PERMUTE_QK},
    {"GemmaForCausalLM", "gemma", "gemma", HF_LAYOUT_LLAMA, HF_NORM_PLUS_ONE},
    {"Phi3ForCausalLM", "phi3", "phi3", HF_LAYOUT_PHI3, 0},
    {"LlamaForSequenceClassification", "llama", "llama", HF_LAYOUT_LLAMA, HF_PERMUTE_QK | HF_SCORE_HEAD},
    {"MistralForSequenceClassification", "mistral", "llama", HF_LAYOUT_LLAMA, HF_PERMUTE_QK | HF_SCORE_HEAD},
    {"Qwen2ForSequenceClassification", "qwen2", "qwen2", HF_LAYOUT_LLAMA, HF_SCORE_HEAD},
};
enum { N_FAMILIES = sizeof FAMILIES / sizeof FAMILIES[0] };

const hf_family *hf_family_find(const char *name) {
    for (int i = 0; i < N_FAMILIES; i++)
        if (!strcmp(name, FAMILIES[i].name)) return &FAMILIES[i];
    char list[640] = "";
    for (int i = 0; i < N_FAMILIES; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), i ? ", %s" : "%s", FAMILIES[i].name);
    kiln_fail("architecture '%s' is not supported (supported: %s)", name, list);
    return NULL;
}

const hf_family *hf_family_for_export(const kiln_config *c) {
    const char *name = NULL;
    if (!strcmp(c->arch, "llama"))
        name = c->n_cls ? (c->sliding_window ? "MistralForSequenceClassification" : "LlamaForSequenceClassification")
                        : (c->sliding_window ? "MistralForCausalLM" : "LlamaForCausalLM");
    else if (!strcmp(c->arch, "qwen2")) name = c->n_cls ? "Qwen2ForSequenceClassification" : "Qwen2ForCausalLM";
    else if (!strcmp(c->arch, "gpt2")) name = "GPT2LMHeadModel";
    else if (!strcmp(c->arch, "gemma")) name = "GemmaForCausalLM";
    else if (!strcmp(c->arch, "phi3")) name = "Phi3ForCausalLM";
    else if (!strcmp(c->arch, "baichuan")) name = "BaichuanForCausalLM";
    if (!name) {
        kiln_fail("architecture '%s' has no Hugging Face export", c->arch);
        return NULL;
    }
    return hf_family_find(name);
}

/* ---- Reading ---- */

typedef struct {
    const char *path;
    json_t *root;
} cfg_json;

/* A positive integer KEY; DEF when absent or null (DEF < 0: required). */
static int get_int(const cfg_json *j, const char *key, long long def, int *out) {
    json_t *v = json_object_get(j->root, key);
    if (!v || json_is_null(v)) {
        if (def < 0) return kiln_fail("%s: missing key '%s'", j->path, key);
        *out = (int)def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 30))
        return kiln_fail("%s: '%s' must be a positive integer", j->path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(const cfg_json *j, json_t *obj, const char *key, double def, float *out) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (isnan(def)) return kiln_fail("%s: missing key '%s'", j->path, key);
        *out = (float)def;
        return 0;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0)
        return kiln_fail("%s: '%s' must be a non-negative number", j->path, key);
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(const cfg_json *j, const char *key, int def, int *out) {
    json_t *v = json_object_get(j->root, key);
    if (!v || json_is_null(v)) *out = def;
    else if (json_is_boolean(v)) *out = json_is_true(v);
    else return kiln_fail("%s: '%s' must be true or false", j->path, key);
    return 0;
}

static const char *get_str(const cfg_json *j, json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The activation must be the one the family's forward pass computes. */
static int check_activation(const cfg_json *j, const hf_family *fam) {
    static const char *const gelu_tanh[] = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast", NULL};
    static const char *const silu[] = {"silu", "swish", NULL};
    /* Gemma runs the tanh GELU whatever hidden_act says (transformers overrides "gelu" for it) */
    static const char *const gemma[] = {"gelu_pytorch_tanh", "gelu", NULL};
    const char *key = fam->layout == HF_LAYOUT_GPT2 ? "activation_function" : "hidden_act";
    const char *const *ok = fam->layout == HF_LAYOUT_GPT2 ? gelu_tanh : !strcmp(fam->arch, "gemma") ? gemma : silu;
    const char *act = get_str(j, j->root, !strcmp(fam->arch, "gemma") && get_str(j, j->root, "hidden_activation")
                                              ? "hidden_activation" : key);
    if (!act) act = ok[0];
    for (int i = 0; ok[i]; i++)
        if (!strcmp(act, ok[i])) return 0;
    return kiln_fail("%s: %s '%s' is not supported for %s (expected %s)", j->path, key, act, fam->name, ok[0]);
}

static int read_rope_scaling(const cfg_json *j, kiln_config *c) {
    json_t *rs = json_object_get(j->root, "rope_scaling");
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs)) return kiln_fail("%s: 'rope_scaling' must be an object", j->path);
    const char *type = get_str(j, rs, "rope_type");
    if (!type) type = get_str(j, rs, "type");
    static const struct {
        const char *name;
        kiln_rope_scaling v;
    } TYPES[] = {{"default", KILN_ROPE_SCALING_NONE}, {"linear", KILN_ROPE_SCALING_LINEAR},
                 {"dynamic", KILN_ROPE_SCALING_DYNAMIC}, {"ntk", KILN_ROPE_SCALING_NTK},
                 {"yarn", KILN_ROPE_SCALING_YARN}, {"llama3", KILN_ROPE_SCALING_LLAMA3}};
    int found = 0;
    for (size_t i = 0; type && i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (!strcmp(type, TYPES[i].name)) {
            c->rope_scaling = TYPES[i].v;
            found = 1;
        }
    if (!found)
        return kiln_fail("%s: rope_scaling type '%s' is not supported (supported: default, linear, dynamic, ntk, "
                         "yarn, llama3)", j->path, type ? type : "(missing)");
    if (c->rope_scaling == KILN_ROPE_SCALING_NONE) return 0;
    json_t *orig = json_object_get(rs, "original_max_position_embeddings");
    if (orig && !json_is_null(orig)) {
        if (!json_is_integer(orig) || json_integer_value(orig) <= 0 || json_integer_value(orig) > (1 << 30))
            return kiln_fail("%s: rope_scaling original_max_position_embeddings must be a positive integer", j->path);
        c->rope_orig_ctx = (int)json_integer_value(orig);
    }
    int llama3 = c->rope_scaling == KILN_ROPE_SCALING_LLAMA3;
    if (get_float(j, rs, "factor", NAN, &c->rope_factor) ||
        get_float(j, rs, "attention_factor", 0, &c->rope_attn_factor) ||
        get_float(j, rs, "beta_fast", 0, &c->yarn_beta_fast) || get_float(j, rs, "beta_slow", 0, &c->yarn_beta_slow) ||
        get_float(j, rs, "low_freq_factor", llama3 ? NAN : 0, &c->rope_low_freq) ||
        get_float(j, rs, "high_freq_factor", llama3 ? NAN : 0, &c->rope_high_freq))
        return kiln_fail("%s (in rope_scaling)", kiln_errmsg());
    if (llama3 && !c->rope_orig_ctx)
        return kiln_fail("%s: llama3 rope_scaling needs original_max_position_embeddings", j->path);
    /* Dynamic NTK's max_position_embeddings is the trained context, which it extends by the factor */
    if (c->rope_scaling == KILN_ROPE_SCALING_DYNAMIC && !c->rope_orig_ctx && c->rope_factor >= 1) {
        c->rope_orig_ctx = c->ctx_len;
        c->ctx_len = (int)fmin(c->ctx_len * (double)c->rope_factor, 1 << 30);
    }
    return 0;
}

/* Sizes, keyed as the family names them. */
static int read_sizes(const cfg_json *j, const hf_family *fam, kiln_config *c) {
    if (fam->layout == HF_LAYOUT_GPT2) {
        if (get_int(j, "n_embd", -1, &c->dim) || get_int(j, "n_layer", -1, &c->n_layers) ||
            get_int(j, "n_head", -1, &c->n_heads) || get_int(j, "n_positions", -1, &c->ctx_len) ||
            get_int(j, "vocab_size", -1, &c->n_vocab) || get_int(j, "n_inner", 4LL * c->dim, &c->ffn_dim) ||
            get_float(j, j->root, "layer_norm_epsilon", 1e-5, &c->norm_eps))
            return -1;
        int scaled, by_layer;
        if (get_bool(j, "scale_attn_weights", 1, &scaled) || get_bool(j, "scale_attn_by_inverse_layer_idx", 0, &by_layer))
            return -1;
        if (!scaled || by_layer)
            return kiln_fail("%s: only scale_attn_weights true and scale_attn_by_inverse_layer_idx false are supported",
                             j->path);
        c->n_kv_heads = c->n_heads;
        c->tied_output = 1;
        c->qkv_bias = c->out_bias = 1;
        if (c->dim % c->n_heads)
            return kiln_fail("%s: n_embd %d is not a multiple of n_head %d", j->path, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
        return 0;
    }
    int ctx_default = fam->layout == HF_LAYOUT_BAICHUAN ? 4096 : -1;
    if (get_int(j, "hidden_size", -1, &c->dim) || get_int(j, "num_hidden_layers", -1, &c->n_layers) ||
        get_int(j, "num_attention_heads", -1, &c->n_heads) || get_int(j, "intermediate_size", -1, &c->ffn_dim) ||
        get_int(j, "vocab_size", -1, &c->n_vocab) ||
        get_int(j, "max_position_embeddings", ctx_default, &c->ctx_len) ||
        get_int(j, "num_key_value_heads", c->n_heads, &c->n_kv_heads) ||
        get_float(j, j->root, "rms_norm_eps", 1e-6, &c->norm_eps) ||
        get_float(j, j->root, "rope_theta", 10000, &c->rope_theta))
        return -1;
    if (!json_object_get(j->root, "head_dim") && c->dim % c->n_heads)
        return kiln_fail("%s: hidden_size %d is not a multiple of num_attention_heads %d (and no head_dim)", j->path,
                         c->dim, c->n_heads);
    if (get_int(j, "head_dim", c->dim / c->n_heads, &c->head_dim)) return -1;
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        return kiln_fail("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", j->path, c->n_heads,
                         c->n_kv_heads);
    float partial;
    if (get_float(j, j->root, "partial_rotary_factor", 1, &partial)) return -1;
    c->rope_dim = (int)(c->head_dim * partial);
    if (fam->layout == HF_LAYOUT_BAICHUAN && c->dim == 5120)
        return kiln_fail("%s: Baichuan 13B uses ALiBi positions, which kiln does not support", j->path);
    return get_bool(j, "tie_word_embeddings", !strcmp(fam->arch, "gemma"), &c->tied_output);
}

/* Sliding windows: Mistral and Phi-3 have one when sliding_window is set; Qwen2 only with
 * use_sliding_window, and then on some layers only, which kiln does not do. */
static int read_sliding_window(const cfg_json *j, const hf_family *fam, kiln_config *c) {
    if (!strcmp(fam->arch, "qwen2")) {
        int use;
        if (get_bool(j, "use_sliding_window", 0, &use)) return -1;
        return use ? kiln_fail("%s: use_sliding_window true (a window on some layers) is not supported", j->path) : 0;
    }
    if (strcmp(fam->model_type, "mistral") && strcmp(fam->arch, "phi3")) return 0;
    return get_int(j, "sliding_window", 0, &c->sliding_window);
}

int hf_config_parse(const char *text, size_t len, const char *path, kiln_config *c, const hf_family **fam) {
    json_error_t err;
    cfg_json j = {path, json_loadb(text, len, JSON_REJECT_DUPLICATES, &err)};
    if (!j.root) return kiln_fail("%s: %s (line %d)", path, err.text, err.line);
    int rc = -1;
    memset(c, 0, sizeof *c);
    json_t *archs = json_object_get(j.root, "architectures");
    const char *name = json_is_array(archs) ? json_string_value(json_array_get(archs, 0)) : NULL;
    if (!json_is_object(j.root)) {
        kiln_fail("%s: not a JSON object", path);
        goto done;
    }
    if (!name) {
        kiln_fail("%s: no 'architectures' list naming the model class", path);
        goto done;
    }
    if (!(*fam = hf_family_find(name))) {
        kiln_fail("%s: %s", path, kiln_errmsg());
        goto done;
    }
    model_file_arch_defaults((*fam)->arch, c);
    if (read_sizes(&j, *fam, c) || check_activation(&j, *fam) || read_sliding_window(&j, *fam, c) ||
        read_rope_scaling(&j, c))
        goto done;
    if (c->pos != KILN_POS_ROPE) c->rope_dim = 0;
    if ((*fam)->quirks & HF_SCORE_HEAD) {
        c->tied_output = 1; /* no lm_head: logits come from the embedding, the score from score.weight */
        json_t *labels = json_object_get(j.root, "id2label");
        if (get_int(&j, "num_labels", json_is_object(labels) ? (long long)json_object_size(labels) : 1, &c->n_cls))
            goto done;
    }
    c->embd_scale = model_file_embd_scale(c->arch, c->dim);
    if (kiln_config_check(c) < 0) {
        kiln_fail("%s: %s", path, kiln_errmsg());
        goto done;
    }
    rc = 0;
done:
    json_decref(j.root);
    return rc;
}

int hf_config_read(const char *dir, kiln_config *c, const hf_family **fam) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t len;
    char *text = kiln_read_file(path, &len);
    if (!text) return -1;
    int rc = hf_config_parse(text, len, path, c, fam);
    free(text);
    return rc;
}

/* ---- Writing ---- */

static void set_int(json_t *o, const char *key, long long v) { json_object_set_new(o, key, json_integer(v)); }
/* An f32 setting as the shortest decimal that reads back as the same float (1e-05, not 9.99999975e-06). */
static void set_real(json_t *o, const char *key, double v) {
    char text[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, v);
        if ((float)strtod(text, NULL) == (float)v) break;
    }
    json_object_set_new(o, key, json_real(strtod(text, NULL)));
}
static void set_str(json_t *o, const char *key, const char *v) { json_object_set_new(o, key, json_string(v)); }

static json_t *rope_scaling_json(const kiln_config *c) {
    static const char *const NAMES[] = {"default", "linear", "dynamic", "ntk", "yarn", "llama3"};
    json_t *rs = json_object();
    set_str(rs, "rope_type", NAMES[c->rope_scaling]);
    set_real(rs, "factor", c->rope_factor);
    if (c->rope_orig_ctx) set_int(rs, "original_max_position_embeddings", c->rope_orig_ctx);
    if (c->rope_attn_factor) set_real(rs, "attention_factor", c->rope_attn_factor);
    if (c->yarn_beta_fast) set_real(rs, "beta_fast", c->yarn_beta_fast);
    if (c->yarn_beta_slow) set_real(rs, "beta_slow", c->yarn_beta_slow);
    if (c->rope_low_freq) set_real(rs, "low_freq_factor", c->rope_low_freq);
    if (c->rope_high_freq) set_real(rs, "high_freq_factor", c->rope_high_freq);
    return rs;
}

json_t *hf_config_json(const kiln_config *c, const hf_family *fam, int bos, int eos, const char *torch_dtype) {
    json_t *o = json_object();
    json_object_set_new(o, "architectures", json_pack("[s]", fam->name));
    set_str(o, "model_type", fam->model_type);
    if (fam->layout == HF_LAYOUT_GPT2) {
        set_int(o, "n_embd", c->dim);
        set_int(o, "n_layer", c->n_layers);
        set_int(o, "n_head", c->n_heads);
        set_int(o, "n_inner", c->ffn_dim);
        set_int(o, "n_positions", c->ctx_len);
        set_real(o, "layer_norm_epsilon", c->norm_eps);
        set_str(o, "activation_function", "gelu_new");
    } else {
        set_int(o, "hidden_size", c->dim);
        set_int(o, "intermediate_size", c->ffn_dim);
        set_int(o, "num_hidden_layers", c->n_layers);
        set_int(o, "num_attention_heads", c->n_heads);
        set_int(o, "num_key_value_heads", c->n_kv_heads);
        set_int(o, "head_dim", c->head_dim);
        set_int(o, "max_position_embeddings", c->ctx_len);
        set_real(o, "rms_norm_eps", c->norm_eps);
        set_real(o, "rope_theta", c->rope_theta);
        set_str(o, "hidden_act", !strcmp(fam->arch, "gemma") ? "gelu_pytorch_tanh" : "silu");
        json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tied_output && !(fam->quirks & HF_SCORE_HEAD)));
        if (c->rope_dim != c->head_dim) set_real(o, "partial_rotary_factor", (double)c->rope_dim / c->head_dim);
        if (c->rope_scaling) json_object_set_new(o, "rope_scaling", rope_scaling_json(c));
        if (c->sliding_window) set_int(o, "sliding_window", c->sliding_window);
        if (!strcmp(fam->arch, "qwen2")) json_object_set_new(o, "use_sliding_window", json_false());
        if (!strcmp(fam->arch, "llama") && (c->qkv_bias || c->out_bias)) json_object_set_new(o, "attention_bias", json_true());
        if (fam->quirks & HF_SCORE_HEAD) set_int(o, "num_labels", c->n_cls);
    }
    set_int(o, "vocab_size", c->n_vocab);
    if (bos >= 0) set_int(o, "bos_token_id", bos);
    if (eos >= 0) set_int(o, "eos_token_id", eos);
    set_str(o, "torch_dtype", torch_dtype);
    return o;
}
