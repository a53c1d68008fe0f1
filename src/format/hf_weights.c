/* The safetensors files of a Hugging Face checkpoint: one model.safetensors, or the shards that
 * model.safetensors.index.json maps each tensor to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "format/hf.h"

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = kiln_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int add_file(hf_weights *hw, const char *name) {
    for (int i = 0; i < hw->n_files; i++)
        if (!strcmp(strrchr(hw->files[i]->path, '/') + 1, name)) return i;
    if (strchr(name, '/') || !strcmp(name, "..") || !*name)
        return kiln_fail("%s: shard name '%s' is not a file name in the checkpoint directory", hw->dir, name);
    char *path = join(hw->dir, name);
    st_file *f = safetensors_open(path);
    free(path);
    if (!f) return -1;
    hw->files = kiln_xrealloc(hw->files, sizeof *hw->files * (hw->n_files + 1));
    hw->files[hw->n_files] = f;
    return hw->n_files++;
}

/* Every shard the index names is opened and must hold the tensors mapped to it. */
static int open_index(hf_weights *hw, const char *index) {
    json_error_t err;
    json_t *root = json_load_file(index, JSON_REJECT_DUPLICATES, &err);
    if (!root) return kiln_fail("%s: %s (line %d)", index, err.text, err.line);
    int rc = 0;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        rc = kiln_fail("%s: no 'weight_map' object", index);
        goto done;
    }
    const char *name;
    json_t *file;
    json_object_foreach(map, name, file) {
        if (!json_is_string(file)) {
            rc = kiln_fail("%s: weight_map entry '%s' is not a file name", index, name);
            goto done;
        }
        int i = add_file(hw, json_string_value(file));
        if (i < 0) {
            rc = -1;
            goto done;
        }
        if (!safetensors_find(hw->files[i], name)) {
            rc = kiln_fail("%s: tensor '%s' is not in %s, where the index puts it", index, name, json_string_value(file));
            goto done;
        }
    }
done:
    json_decref(root);
    return rc;
}

int hf_weights_open(hf_weights *hw, const char *dir) {
    memset(hw, 0, sizeof *hw);
    hw->dir = kiln_xstrdup(dir);
    char *index = join(dir, "model.safetensors.index.json");
    int rc;
    if (access(index, F_OK) == 0) rc = open_index(hw, index);
    else {
        char *single = join(dir, "model.safetensors");
        rc = access(single, F_OK) == 0 ? add_file(hw, "model.safetensors")
                                       : kiln_fail("%s: no model.safetensors or model.safetensors.index.json (only "
                                                   "safetensors checkpoints are read)", dir);
        free(single);
    }
    free(index);
    if (rc < 0) hf_weights_close(hw);
    return rc < 0 ? -1 : 0;
}

void hf_weights_close(hf_weights *hw) {
    for (int i = 0; i < hw->n_files; i++) safetensors_close(hw->files[i]);
    free(hw->files);
    free(hw->dir);
    memset(hw, 0, sizeof *hw);
}

const st_tensor *hf_weights_find(const hf_weights *hw, const char *name) {
    for (int i = 0; i < hw->n_files; i++) {
        const st_tensor *t = safetensors_find(hw->files[i], name);
        if (t) return t;
    }
    return NULL;
}
