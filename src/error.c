/* error.c - names and sentences for the CONC_E* codes, made from the one
 * X-macro table in conc/common.h so the three can never disagree. */
#include "conc_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The detail of this thread's last failure.  Plain (global-dynamic) TLS:
 * only error paths touch it, and 512 bytes of initial-exec TLS in a
 * shared library would eat the surplus glibc keeps for dlopen. */
#define DETAIL_MAX 512
static _Thread_local char detail[DETAIL_MAX];
/* Or a constant sentence (conc__fail_lit), when it is set: the cheap way,
 * for outcomes a polling loop meets on every call (empty, full, timed
 * out), where formatting would cost more than the call itself. */
static _Thread_local const char *detail_lit;

const char *conc_errdetail(void)
{
    const char *lit = detail_lit;
    return lit != NULL ? lit : detail;
}

int conc__fail_lit(int err, const char *sentence)
{
    detail_lit = sentence;
    return err;
}

static int fail_v(int err, bool with_errno, const char *fmt, va_list ap)
{
    int saved = errno;
    detail_lit = NULL;
    int n = vsnprintf(detail, sizeof detail, fmt, ap);
    if (n < 0) {
        n = 0;
        detail[0] = '\0';
    }
    if (with_errno && (size_t)n < sizeof detail) {
        char buf[128];
        /* strerror_r (GNU) returns the text, in buf or static. */
        const char *text = strerror_r(saved, buf, sizeof buf);
        snprintf(detail + n, sizeof detail - (size_t)n, ": %s", text);
    }
    errno = saved;
    return err;
}

int conc__fail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fail_v(err, false, fmt, ap);
    va_end(ap);
    return err;
}

int conc__fail_sys(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fail_v(err, true, fmt, ap);
    va_end(ap);
    return err;
}

void conc__detail_keep(conc__detail_kept *k)
{
    _Static_assert(sizeof k->text == DETAIL_MAX, "one size");
    memcpy(k->text, detail, sizeof k->text);
    k->lit = detail_lit;
}

void conc__detail_put_back(const conc__detail_kept *k)
{
    memcpy(detail, k->text, sizeof detail);
    detail_lit = k->lit;
}

const char *conc_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define CONC__ERR_TEXT(name, value, text)                                    \
    case CONC_##name:                                                        \
        return text;
        CONC_ERRORS(CONC__ERR_TEXT)
#undef CONC__ERR_TEXT
    default:
        return "unknown error";
    }
}

const char *conc_errname(int err)
{
    switch (err) {
    case 0:
        return "CONC_OK";
#define CONC__ERR_NAME(name, value, text)                                    \
    case CONC_##name:                                                        \
        return "CONC_" #name;
        CONC_ERRORS(CONC__ERR_NAME)
#undef CONC__ERR_NAME
    default:
        return "CONC_E?";
    }
}

_Noreturn void conc__assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "libconc: invariant broken at %s:%d: %s\n", file, line,
            what);
    abort();
}
