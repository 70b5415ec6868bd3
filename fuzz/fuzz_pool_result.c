/* fuzz_pool_result.c - the check a process pool's manager makes of every
 * record in a worker's result ring (conc__pool_res_check): the ring's
 * bytes, its size, the head and the published tail all come from the
 * fuzzer, as a worker whose task scribbled over its ring could leave them.
 * Walking the ring record by record, every record accepted lies inside
 * the ring and before the tail, its output and error text lie inside the
 * record, and the walk ends (each step moves at least 8 bytes). */
#include "fuzz_check.h"
#include "pool_proc_int.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 16) {
        return 0;
    }
    uint32_t capsel, possel;
    uint64_t tailsel;
    memcpy(&capsel, data, 4);
    memcpy(&possel, data + 4, 4);
    memcpy(&tailsel, data + 8, 8);
    data += 16;
    size -= 16;
    /* A ring of 8 to 4096 bytes (the check itself refuses rings too small
     * or unaligned), filled with the rest of the input, zeros after. */
    size_t cap = 8 + capsel % 4089;
    unsigned char *ring = calloc(1, cap);
    if (ring == NULL) {
        return 0;
    }
    memcpy(ring, data, size < cap ? size : cap);
    /* Positions are byte counts that only grow: start anywhere. */
    uint64_t pos = (uint64_t)possel * 8 + ((uint64_t)(possel & 3) << 40);
    uint64_t tail = pos + tailsel % (2 * (uint64_t)cap + 16);
    if (tailsel >> 63) {
        tail = tailsel; /* also tails behind the head, or far ahead */
    }
    size_t steps = 0;
    for (;;) {
        conc__pool_res_view v;
        memset(&v, 0, sizeof v);
        int rc = conc__pool_res_check(ring, cap, pos, tail, &v);
        if (rc <= 0) {
            FUZZ_CHECK(rc < 0 || pos == tail);
            break;
        }
        size_t off = (size_t)(pos % cap);
        FUZZ_CHECK(v.len >= 8 && v.len % 8 == 0);
        FUZZ_CHECK(off + v.len <= cap && v.len <= tail - pos);
        if (v.out != NULL) {
            FUZZ_CHECK(v.out >= ring + off && v.out + v.outlen <= ring + cap);
            FUZZ_CHECK(v.err >= v.out && v.err + v.errlen <= ring + off +
                                                             v.len);
            /* Touch every byte the manager would copy: ASan checks. */
            volatile unsigned char sink = 0;
            for (size_t i = 0; i < v.outlen; i++) {
                sink ^= v.out[i];
            }
            for (size_t i = 0; i < v.errlen; i++) {
                sink ^= v.err[i];
            }
            (void)sink;
        }
        pos += v.len;
        FUZZ_CHECK(++steps <= cap / 8);
    }
    free(ring);
    return 0;
}
