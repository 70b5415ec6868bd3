/* buf.c - conc_msg and conc_buf: the byte carriers every module shares.
 * A conc_buf grows by doubling; it is private to one thread at a time (the
 * callback that fills it), so it has no lock. */
#include "conc_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void conc_msg_free(conc_msg *msg)
{
    if (msg == NULL) {
        return;
    }
    free(msg->data);
    msg->data = NULL;
    msg->len = 0;
}

void conc__buf_init(conc_buf *buf, size_t limit)
{
    memset(buf, 0, sizeof *buf);
    buf->limit = limit;
}

void conc__buf_release(conc_buf *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

void conc__buf_take(conc_buf *buf, conc_msg *msg)
{
    msg->data = buf->data;
    msg->len = buf->len;
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

int conc_buf_append(conc_buf *buf, const void *data, size_t len)
{
    if (buf == NULL || (data == NULL && len > 0)) {
        return CONC__FAIL_NULL(buf == NULL ? "buf" : "data");
    }
    if (len == 0) {
        return 0;
    }
    if (len > SIZE_MAX - buf->len ||
        (buf->limit != 0 && buf->len + len > buf->limit)) {
        return conc__fail(CONC_ENOMEM, "conc_buf_append: %zu more bytes "
                          "would pass the limit of %zu", len, buf->limit);
    }
    size_t need = buf->len + len;
    if (need > buf->cap) {
        size_t cap = buf->cap ? buf->cap : 64;
        while (cap < need) {
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        }
        unsigned char *p = conc__realloc(buf->data, cap);
        if (p == NULL) {
            return conc__fail(CONC_ENOMEM, "conc_buf_append: out of memory "
                              "for %zu bytes", cap);
        }
        buf->data = p;
        buf->cap = cap;
    }
    memcpy(buf->data + buf->len, data, len);
    buf->len = need;
    return 0;
}

int conc_buf_error(conc_buf *buf, const char *fmt, ...)
{
    if (buf == NULL || fmt == NULL) {
        return CONC__FAIL_NULL(buf == NULL ? "buf" : "fmt");
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf->error, sizeof buf->error, fmt, ap);
    va_end(ap);
    buf->has_error = true;
    return 0;
}

size_t conc_buf_len(const conc_buf *buf)
{
    return buf == NULL ? 0 : buf->len;
}
