/* fuzz_value_header.c - the check conc_value_open makes of a named
 * value's header (magic, version, flags, size, the lock slot) written by
 * another process.
 *
 * Input: byte 0 picks the value's size and whether it has a lock; the
 * rest is XORed over the first 128 bytes of a segment that conc_value_new
 * made (the header and the lock slot), through a second mapping, so an
 * all-zero input is a good value.  Then conc_value_open reads it through
 * the real named-segment path (shm.c).  Inputs that would clear the
 * magic are skipped: an opener then waits a second for a creator, which
 * test_value.c covers.
 *
 * Properties: 0, CONC_EINVAL or CONC_ECORRUPT, the errors with a detail
 * naming conc_value_open; on 0 the value lies inside the segment, past
 * its header and lock slot, and its lock (if any) can be tried and
 * released. */
#include "fuzz_check.h"
#include "shm_int.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t sizes[] = { 1, 8, 64, 4000, 4033, 10000 };
#define NSIZES (sizeof sizes / sizeof sizes[0])

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    uint64_t magic_flip = 0;
    for (size_t i = 1; i < size && i <= 8; i++) {
        magic_flip |= (uint64_t)data[i] << (8 * (i - 1));
    }
    if (magic_flip == UINT64_C(0x434f4e4356414c31)) {
        return 0; /* the magic would read 0: a creator still at work */
    }
    char name[64];
    snprintf(name, sizeof name, "/conc_fuzz_value_%d", (int)getpid());
    size_t vsize = sizes[data[0] % NSIZES];
    bool lock = (data[0] / NSIZES) & 1;
    conc_value *v = NULL, *o = NULL;
    int err = conc_value_new(&v, &(conc_value_opts){ .size = vsize,
                                                      .lock = lock,
                                                      .name = name });
    if (err != 0) {
        return 0; /* a name left by a killed run, say */
    }
    conc_shm *m = NULL;
    FUZZ_CHECK(conc_shm_open(&m, name) == 0);
    unsigned char *seg = conc_shm_ptr(m);
    size_t seg_size = conc_shm_size(m);
    for (size_t i = 1; i < size && i <= 128 && i - 1 < seg_size; i++) {
        seg[i - 1] ^= data[i];
    }
    err = conc_value_open(&o, name);
    if (err != 0) {
        FUZZ_CHECK(err == CONC_EINVAL || err == CONC_ECORRUPT);
        FUZZ_CHECK(strncmp(conc_errdetail(), "conc_value_open: ", 17) == 0);
        FUZZ_CHECK(o == NULL);
    } else {
        /* The value's bytes lie inside the segment, past the header and
         * the lock slot: its last byte, written through the opener's
         * mapping, is that byte of the segment. */
        unsigned char *p = conc_value_ptr(o);
        size_t n = conc_value_size(o);
        conc_lock *l = conc_value_lock(o);
        size_t at = 64 + (l != NULL ? 64 : 0);
        FUZZ_CHECK(n > 0 && at <= seg_size && n <= seg_size - at);
        p[n - 1] = 0xa7;
        FUZZ_CHECK(seg[at + n - 1] == 0xa7);
        if (l != NULL) {
            FUZZ_CHECK((unsigned char *)l + 64 == p);
            int lerr = conc_lock_acquire(l, 0);
            FUZZ_CHECK(lerr == 0 || lerr == CONC_EOWNERDEAD ||
                         lerr == CONC_ETIMEDOUT);
            if (lerr != CONC_ETIMEDOUT) {
                lerr = conc_lock_release(l);
                FUZZ_CHECK(lerr == 0 || lerr == CONC_EPERM);
            }
        }
        conc_value_free(o);
    }
    conc_shm_free(m);
    conc_value_free(v);
    return 0;
}
