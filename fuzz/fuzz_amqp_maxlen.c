/* fuzz_amqp_maxlen.c - the reader of RabbitMQ's PRECONDITION_FAILED text
 * that conc_queue_open learns a queue's maxsize from
 * (conc__amqp_parse_maxlen, src/amqp/amqp_parse.c): any bytes in, exactly
 * that many (no NUL after them, so a read past the end is an ASan error).
 * Properties: 1 only with a bound in 1..2^62 whose decimal digits, quoted,
 * follow "current is the value '" in the input; 0 only when the input
 * says "current is none"; -1 otherwise, and *max untouched unless 1. */
#include "fuzz_check.h"
#include "amqp/amqp_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool contains(const char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++) {
        if (memcmp(hay + i, needle, k) == 0) {
            return true;
        }
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size > 0 ? size : 1);
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    uint64_t max = 12345;
    int r = conc__amqp_parse_maxlen(text, size, &max);
    FUZZ_CHECK(r == -1 || r == 0 || r == 1);
    if (r == 1) {
        FUZZ_CHECK(max >= 1 && max <= ((uint64_t)1 << 62));
        char want[64];
        snprintf(want, sizeof want, "current is the value '%llu'",
                 (unsigned long long)max);
        FUZZ_CHECK(contains(text, size, want));
        FUZZ_CHECK(contains(text, size, "'x-max-length'"));
    } else {
        FUZZ_CHECK(max == 12345);
    }
    if (r == 0) {
        FUZZ_CHECK(contains(text, size, "current is none"));
    }
    free(text);
    return 0;
}
