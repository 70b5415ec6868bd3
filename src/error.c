/* error.c - names and sentences for the CONC_E* codes, made from the one
 * X-macro table in conc/common.h so the three can never disagree. */
#include "conc_int.h"

#include <stdio.h>
#include <stdlib.h>

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
