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

void conc__buf_reset(conc_buf *buf)
{
    buf->len = 0;
    buf->has_error = false;
    buf->lost = 0;
}

int conc__buf_outcome(const conc_buf *buf, int code)
{
    return buf->lost != 0 && code <= 0 ? buf->lost : code;
}

int conc__task_outcome(conc_buf *buf, int ret)
{
    int code = conc__buf_outcome(buf, ret);
    if (code < 0 && buf->lost == 0) {
        code = CONC_ETASK;
    }
    if (buf->lost != 0 || code < 0) {
        buf->len = 0; /* cut short, or an error: none of it goes on */
    }
    return code;
}

/* Remembers the first refused append, and says why beside the output
 * unless the callback described a failure already (its words first). */
static int buf_refuse(conc_buf *buf, int code, const char *why)
{
    if (buf->lost == 0) {
        buf->lost = code;
        if (!buf->has_error) {
            snprintf(buf->error, sizeof buf->error, "%s", why);
            buf->has_error = true;
        }
    }
    return conc__fail(code == CONC_ETOOBIG ? CONC_ENOMEM : code, "%s", why);
}

void conc__buf_release(conc_buf *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

void conc__buf_take(conc_buf *buf, conc_msg *msg)
{
    if (buf->len == 0) {
        free(buf->data); /* an empty message is NULL, 0 */
        buf->data = NULL;
    }
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
    char why[160];
    if (len > SIZE_MAX - buf->len ||
        (buf->limit != 0 && buf->len + len > buf->limit)) {
        snprintf(why, sizeof why, "conc_buf_append: %zu more bytes after "
                 "%zu would pass the output's limit of %zu bytes",
                 len, buf->len, buf->limit != 0 ? buf->limit : SIZE_MAX);
        return buf_refuse(buf, CONC_ETOOBIG, why);
    }
    size_t need = buf->len + len;
    if (need > buf->cap) {
        size_t cap = buf->cap ? buf->cap : 64;
        while (cap < need) {
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        }
        unsigned char *p = conc__realloc(buf->data, cap);
        if (p == NULL) {
            snprintf(why, sizeof why, "conc_buf_append: out of memory for "
                     "%zu bytes of output", cap);
            return buf_refuse(buf, CONC_ENOMEM, why);
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
