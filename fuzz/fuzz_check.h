/* fuzz_check.h - the fuzz targets' assertion: always evaluated and always
 * checked, in every build (CONC__ASSERT is compiled out of release builds,
 * and the targets' setup code and property checks must run in the plain
 * flavour's replay tests too).  A failed check prints where and aborts,
 * which libFuzzer and the replay tests report as a failure. */
#ifndef CONC_FUZZ_CHECK_H
#define CONC_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(x)                                                        \
    do {                                                                     \
        if (!(x)) {                                                          \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__,      \
                    __LINE__, #x);                                           \
            abort();                                                         \
        }                                                                    \
    } while (0)

#endif
