/* Stop strings and UTF-8-complete streaming over the text of a sequence. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "decode/text.h"

void text_init(decode_text *t, const char *const *stop, int n_stop, kiln_text_fn fn, void *user) {
    memset(t, 0, sizeof *t);
    t->stop = stop, t->n_stop = n_stop, t->fn = fn, t->user = user;
    t->cap = 64;
    t->buf = kiln_xmalloc(t->cap);
    t->buf[0] = 0;
}

void text_free(decode_text *t) {
    free(t->buf);
    t->buf = NULL;
}

void text_copy(decode_text *dst, const decode_text *src) {
    char *buf = dst->buf;
    size_t cap = dst->cap;
    *dst = *src;
    dst->fn = NULL;
    if (cap < src->len + 1) {
        cap = src->cap;
        buf = kiln_xrealloc(buf, cap);
    }
    memcpy(buf, src->buf, src->len + 1);
    dst->buf = buf, dst->cap = cap;
}

/* The earliest start of a stop string in BUF[0..LEN) that ends after byte FROM; -1 when none. */
static long find_stop(const decode_text *t, const char *buf, size_t len, size_t from) {
    long best = -1;
    for (int i = 0; i < t->n_stop; i++) {
        size_t n = strlen(t->stop[i]);
        if (!n || n > len) continue;
        size_t start = from + 1 > n ? from + 1 - n : 0;
        const char *hit = memmem(buf + start, len - start, t->stop[i], n);
        if (hit && (best < 0 || hit - buf < best)) best = hit - buf;
    }
    return best;
}

/* Bytes at the end of the text that may still become a stop string: the longest proper prefix of a
 * stop string that the text ends with. */
static size_t stop_holdback(const decode_text *t) {
    size_t hold = 0;
    for (int i = 0; i < t->n_stop; i++) {
        size_t n = strlen(t->stop[i]);
        for (size_t k = n ? n - 1 : 0; k > hold; k--)
            if (k <= t->len && memcmp(t->buf + t->len - k, t->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

/* Moves END back to the start of a UTF-8 character that is cut off at END. Bytes that are not valid
 * UTF-8 lead bytes count as complete, so that nothing is held forever. */
static size_t utf8_boundary(const char *s, size_t start, size_t end) {
    for (size_t i = end, back = 0; i > start && back < 4; i--, back++) {
        unsigned char b = (unsigned char)s[i - 1];
        if ((b & 0xC0) == 0x80) continue; /* continuation byte */
        size_t need = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 1;
        return end - (i - 1) < need ? i - 1 : end;
    }
    return end;
}

static void deliver(decode_text *t, size_t upto) {
    if (upto <= t->sent) return;
    if (t->fn && !t->cancelled && t->fn(t->user, t->buf + t->sent, upto - t->sent) != 0) t->cancelled = 1;
    t->sent = upto;
}

int text_append(decode_text *t, const char *piece, size_t len) {
    if (t->stopped || t->cancelled) return 1;
    if (t->len + len + 1 > t->cap) {
        while (t->len + len + 1 > t->cap) t->cap *= 2;
        t->buf = kiln_xrealloc(t->buf, t->cap);
    }
    size_t old = t->len;
    memcpy(t->buf + t->len, piece, len);
    t->len += len;
    t->buf[t->len] = 0;
    long at = find_stop(t, t->buf, t->len, old);
    if (at >= 0) {
        t->stopped = 1;
        t->end = (size_t)at;
        deliver(t, t->end);
        return 1;
    }
    deliver(t, utf8_boundary(t->buf, t->sent, t->len - stop_holdback(t)));
    return t->cancelled;
}

int text_would_stop(const decode_text *t, const char *piece, size_t len) {
    if (!t->n_stop || t->stopped) return t->stopped;
    size_t keep = 0; /* the tail of the text a stop string ending in PIECE can reach */
    for (int i = 0; i < t->n_stop; i++) {
        size_t n = strlen(t->stop[i]);
        keep = n > keep ? n : keep;
    }
    keep = keep < t->len ? keep : t->len;
    char small[512], *tmp = keep + len <= sizeof small ? small : kiln_xmalloc(keep + len);
    memcpy(tmp, t->buf + t->len - keep, keep);
    memcpy(tmp + keep, piece, len);
    int hit = find_stop(t, tmp, keep + len, keep) >= 0;
    if (tmp != small) free(tmp);
    return hit;
}

void text_finish(decode_text *t) { deliver(t, text_length(t)); }

size_t text_length(const decode_text *t) { return t->stopped ? t->end : t->len; }
