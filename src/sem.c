/* sem.c - conc_sem: Python's Semaphore and BoundedSemaphore, between
 * threads and processes.
 *
 * Layout: one page of anonymous shared memory (the handle is the mapping:
 * a semaphore created before fork() is the same one in the child):
 *
 *     magic, layout | value (futex word) | sleepers | bound | bounded
 *
 * value is the count itself; acquire decrements it with a CAS when it is
 * positive.  sleepers counts acquirers that are about to sleep or asleep,
 * so release pays for FUTEX_WAKE only when someone may sleep.
 *
 * Why no wake-up is lost.  An acquirer increments sleepers, then rereads
 * value, then FUTEX_WAITs on value == 0.  release adds to value, then reads
 * sleepers.  All four are seq_cst, so in their single total order either
 * the acquirer's reread comes after the release's add (it sees value > 0
 * and does not sleep), or the release's read of sleepers comes after the
 * acquirer's increment (it wakes).  FUTEX_WAIT checks value == 0
 * atomically with queueing, so a release between the reread and the
 * sleep makes the wait return at once.  A waiter woken but whose deadline
 * has passed still tries to decrement before giving up, so a wake-up is
 * never spent without the unit being taken or left visible in value.  A
 * wake-up spent on a waiter SIGKILLed at that instant leaves the unit in
 * value: the other sleepers see it at the end of their current slice
 * (CONC__SYNC_SLICE_NS).
 *
 * A process that dies after acquiring never releases its unit (Python's
 * semaphores behave the same: a semaphore has no owner).  A process killed
 * while asleep leaves sleepers one too high, which only costs a needless
 * FUTEX_WAKE per release.
 *
 * The value is limited to INT32_MAX, and a BoundedSemaphore's to its
 * initial value (bound): a larger initial value, or a release that would
 * pass the limit, is CONC_EINVAL with nothing added.  bounded and bound
 * are read once per release, so the limit checked is the limit used even
 * while a peer rewrites them.
 */
#include "sync_int.h"

#include <limits.h>

struct conc_sem {
    uint32_t magic;
    uint32_t layout;
    _Atomic uint32_t value;
    _Atomic uint32_t sleepers;
    uint32_t bound; /* bounded: the initial value */
    uint8_t bounded; /* 0 or 1; not a bool, whose other byte values a
                        peer could write would be undefined to read */
};

int conc_sem_new(conc_sem **out, const conc_sem_opts *opts)
{
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
    }
    *out = NULL;
    long value = opts == NULL ? 1 : opts->value;
    if (value < 0 || value > INT32_MAX) {
        return conc__fail(CONC_EINVAL, "conc_sem_new: value %ld: it must "
                          "be 0 to INT32_MAX", value);
    }
    void *mem;
    int err = conc__sync_region_make(&mem, opts != NULL ? opts->name : NULL,
                                     sizeof(conc_sem), CONC__SYNC_MAGIC_SEM);
    if (err != 0) {
        return err;
    }
    conc_sem *s = mem;
    s->layout = CONC__SYNC_LAYOUT;
    atomic_init(&s->value, (uint32_t)value);
    atomic_init(&s->sleepers, 0);
    s->bound = (uint32_t)value;
    s->bounded = opts != NULL && opts->bounded;
    conc__sync_publish(&s->magic, CONC__SYNC_MAGIC_SEM);
    *out = s;
    return 0;
}

int conc_sem_open(conc_sem **out, const char *name)
{
    void *mem = NULL;
    int err = out == NULL ? CONC__FAIL_NULL("out")
                          : conc__sync_named_open(&mem, NULL, name,
                                                  CONC__SYNC_MAGIC_SEM,
                                                  sizeof(conc_sem));
    if (out != NULL) {
        *out = mem;
    }
    return err;
}

/* One attempt: true when a unit was taken. */
static bool sem_try(conc_sem *s)
{
    uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
    while (v > 0) {
        /* Acquire pairs with the seq_cst add in conc_sem_release(): what
         * the releaser wrote before releasing is visible to us. */
        if (atomic_compare_exchange_weak_explicit(&s->value, &v, v - 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed)) {
            return true;
        }
    }
    return false;
}

int conc_sem_acquire(conc_sem *s, double timeout)
{
    if (s == NULL) {
        return CONC__FAIL_NULL("s");
    }
    if (!conc__timeout_ok(timeout)) {
        return CONC__FAIL_TIMEOUT(timeout);
    }
    if (sem_try(s)) {
        return 0;
    }
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    if (dl.once) {
        return conc__fail_lit(CONC_ETIMEDOUT, "conc_sem_acquire: the "
                                              "semaphore is 0");
    }
    for (;;) {
        /* seq_cst: the Dekker pair with conc_sem_release() (top). */
        atomic_fetch_add(&s->sleepers, 1);
        err = 0;
        if (atomic_load(&s->value) == 0) {
            /* Pairs with the FUTEX_WAKE in conc_sem_release(). */
            err = conc__sync_sleep(&s->value, 0, &dl);
        }
        atomic_fetch_sub_explicit(&s->sleepers, 1, memory_order_relaxed);
        if (sem_try(s)) {
            return 0;
        }
        if (err == CONC_ETIMEDOUT) {
            return conc__fail_lit(CONC_ETIMEDOUT, "conc_sem_acquire: the "
                                                  "semaphore was still 0 "
                                                  "when the timeout "
                                                  "expired");
        }
    }
}

int conc_sem_release(conc_sem *s, unsigned n)
{
    if (s == NULL) {
        return CONC__FAIL_NULL("s");
    }
    if (n == 0) {
        return conc__fail(CONC_EINVAL, "conc_sem_release: n is 0");
    }
    /* The most the value may reach, from the fields read once: a peer
     * rewriting them meanwhile cannot make the checked bound and the one
     * used differ. */
    bool bounded = __atomic_load_n(&s->bounded, __ATOMIC_RELAXED) != 0;
    uint32_t bound = __atomic_load_n(&s->bound, __ATOMIC_RELAXED);
    uint64_t limit = bounded && bound < INT32_MAX ? bound : INT32_MAX;
    uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
    uint64_t nv;
    for (;;) {
        nv = (uint64_t)v + n;
        if (nv > limit) {
            return conc__fail(CONC_EINVAL, "conc_sem_release: %u more "
                              "would take the value from %u past %s %lu",
                              n, (unsigned)v,
                              bounded ? "the bound" : "INT32_MAX",
                              (unsigned long)limit);
        }
        /* seq_cst: the Dekker pair with conc_sem_acquire() (top). */
        if (atomic_compare_exchange_weak(&s->value, &v, (uint32_t)nv)) {
            break;
        }
    }
    /* The count moved up by n, to at most the limit. */
    CONC__ASSERT(nv == (uint64_t)v + n && nv <= limit && limit <= INT32_MAX);
    if (atomic_load(&s->sleepers) > 0) {
        /* Pairs with the FUTEX_WAIT in conc_sem_acquire(). */
        conc__os_futex_wake(&s->value, n > INT32_MAX ? INT32_MAX : (int)n,
                            true);
    }
    return 0;
}

long conc_sem_value(conc_sem *s)
{
    if (s == NULL) {
        return CONC__FAIL_NULL("s");
    }
    return (long)atomic_load_explicit(&s->value, memory_order_relaxed);
}

void conc_sem_free(conc_sem *s)
{
    if (s == NULL) {
        return;
    }
    conc__sync_region_free(s, sizeof *s);
}

uint32_t conc__sem_sleepers(conc_sem *s)
{
    return atomic_load(&s->sleepers);
}
