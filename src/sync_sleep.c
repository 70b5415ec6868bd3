/* sync_sleep.c - the sliced futex sleep every sync object waits in.
 *
 * A sleep is cut into slices of at most CONC__SYNC_SLICE_NS (50 ms), and
 * never goes past the caller's deadline.  At a slice's end the sleeper
 * rechecks its condition, and a lock waiter checks that the holder still
 * lives, so a wake-up spent on a process killed at that instant, or a
 * holder that died, delays the others by at most one slice and never
 * strands them.  A slice is not what wakes a sleeper normally: every
 * caller changes its word and wakes the sleepers (each caller says where),
 * and the tests measure that a hand-off takes far less than a slice.
 */
#include "sync_int.h"

int conc__sync_sleep(_Atomic uint32_t *word, uint32_t val,
                     const conc__deadline *dl)
{
    conc__deadline slice = { .forever = false, .once = false };
    clock_gettime(CLOCK_MONOTONIC, &slice.at);
    slice.at.tv_nsec += (long)(CONC__SYNC_SLICE_NS % 1000000000ull);
    slice.at.tv_sec += (time_t)(CONC__SYNC_SLICE_NS / 1000000000ull);
    if (slice.at.tv_nsec >= 1000000000L) {
        slice.at.tv_sec++;
        slice.at.tv_nsec -= 1000000000L;
    }
    bool capped = false;
    if (!dl->forever &&
        (dl->at.tv_sec < slice.at.tv_sec ||
         (dl->at.tv_sec == slice.at.tv_sec &&
          dl->at.tv_nsec <= slice.at.tv_nsec))) {
        slice.at = dl->at;
        capped = true;
    }
    /* Every caller pairs this with a store to word followed by a wake in
     * the code that changes its condition; see each caller. */
    int err = conc__os_futex_wait(word, val, &slice, true);
    if (err == CONC_ETIMEDOUT) {
        /* detail: each caller's (a sleep's outcome) */
        return capped ? CONC_ETIMEDOUT : 1;
    }
    return 0;
}
