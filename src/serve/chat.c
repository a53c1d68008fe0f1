/* Chat templates. GGUF files carry theirs as Jinja source (tokenizer.chat_template); rather than run
 * Jinja, kiln recognises the families by their markers and writes the same text: ChatML (Qwen, many
 * fine-tunes) and Llama 2's [INST]. A model without a template, or with an unrecognised one, gets the
 * plain fallback documented in docs/SERVING.md:
 *
 *     System: ...\n\nUser: ...\n\nAssistant: ...\n\nUser: ...\n\nAssistant:
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/error.h"
#include "serve/serve.h"

typedef enum { TEMPLATE_PLAIN, TEMPLATE_CHATML, TEMPLATE_LLAMA2 } chat_template;

static chat_template template_of(const kiln_model *m) {
    gguf_str s;
    if (!m->file || gguf_get_str(m->file, "tokenizer.chat_template", &s) != 1) return TEMPLATE_PLAIN;
    if (memmem(s.ptr, s.len, "<|im_start|>", 12)) return TEMPLATE_CHATML;
    if (memmem(s.ptr, s.len, "[INST]", 6)) return TEMPLATE_LLAMA2;
    return TEMPLATE_PLAIN;
}

typedef struct {
    char *buf;
    size_t len, cap;
} strbuf;

static void put(strbuf *b, const char *s) {
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->buf = kiln_xrealloc(b->buf, b->cap);
    }
    memcpy(b->buf + b->len, s, n + 1);
    b->len += n;
}

static const char *plain_role(const char *role) {
    if (!strcmp(role, "system") || !strcmp(role, "developer")) return "System";
    if (!strcmp(role, "assistant")) return "Assistant";
    return "User";
}

char *chat_render(const kiln_model *m, const void *messages) {
    const json_t *msgs = messages;
    chat_template t = template_of(m);
    strbuf b = {kiln_xmalloc(64), 0, 64};
    b.buf[0] = 0;
    int in_inst = 0;
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *msg = json_array_get(msgs, i);
        json_t *role = json_object_get(msg, "role"), *content = json_object_get(msg, "content");
        if (!json_is_string(role) || !json_is_string(content)) {
            free(b.buf);
            return kiln_fail("'messages'[%zu] must be an object with string 'role' and 'content'", i), NULL;
        }
        const char *r = json_string_value(role), *c = json_string_value(content);
        if (strcmp(r, "system") && strcmp(r, "developer") && strcmp(r, "user") && strcmp(r, "assistant")) {
            free(b.buf);
            return kiln_fail("'messages'[%zu]: role '%s' must be system, developer, user or assistant", i, r), NULL;
        }
        if (t == TEMPLATE_CHATML) {
            put(&b, "<|im_start|>");
            put(&b, !strcmp(r, "developer") ? "system" : r);
            put(&b, "\n");
            put(&b, c);
            put(&b, "<|im_end|>\n");
        } else if (t == TEMPLATE_LLAMA2) {
            /* [INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant */
            if (!strcmp(r, "assistant")) {
                put(&b, " ");
                put(&b, c);
                put(&b, " ");
                in_inst = 0;
            } else if (!in_inst) {
                put(&b, "[INST] ");
                in_inst = 1;
            }
            if (!strcmp(r, "system") || !strcmp(r, "developer")) {
                put(&b, "<<SYS>>\n");
                put(&b, c);
                put(&b, "\n<</SYS>>\n\n");
            } else if (!strcmp(r, "user")) {
                put(&b, c);
                put(&b, " [/INST]");
                in_inst = 0;
            }
        } else {
            put(&b, plain_role(r));
            put(&b, ": ");
            put(&b, c);
            put(&b, "\n\n");
        }
    }
    put(&b, t == TEMPLATE_CHATML ? "<|im_start|>assistant\n" : t == TEMPLATE_LLAMA2 ? "" : "Assistant:");
    return b.buf;
}
