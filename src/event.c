/* event.c - conc_event, Python's Event, between threads and processes.
 *
 * Layout: one page of anonymous shared memory (the handle is the mapping:
 * an event created before fork() is the same one in the child):
 *
 *     magic, layout | word = generation << 1 | flag | sleepers
 *
 * set() turns the flag on and bumps the generation in one CAS; clear()
 * turns the flag off.  A waiter returns 0 when it sees the flag on, or
 * when the generation moved since it started waiting: that means a set()
 * happened meanwhile, even if a clear() already followed it.  This is
 * Python's behaviour (its waiters are notified by set() and return True
 * whatever the flag says by the time they run).
 *
 * Wake-ups.  A waiter increments sleepers, rereads word, and FUTEX_WAITs
 * on that value; set() CASes word, then reads sleepers, and wakes all when
 * it is non-zero.  Both pairs are seq_cst, so either the waiter's reread
 * sees the new word, or set() sees the sleeper and wakes it; FUTEX_WAIT
 * compares word atomically with queueing, closing the window between the
 * reread and the sleep.  The generation has 31 bits: a sleeper would have
 * to miss 2^31 set()s exactly for its futex value to come round again.
 *
 * Nothing is owned, so a process dying while it waits or sets leaves
 * nothing behind but a sleepers count one too high (a needless wake).
 */
#include "sync_int.h"

struct conc_event {
    uint32_t magic;
    uint32_t layout;
    _Atomic uint32_t word;
    _Atomic uint32_t sleepers;
};

int conc_event_new(conc_event **out, const conc_event_opts *opts)
{
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
    }
    *out = NULL;
    void *mem;
    int err = conc__sync_region_make(&mem, opts != NULL ? opts->name : NULL,
                                     sizeof(conc_event),
                                     CONC__SYNC_MAGIC_EVENT);
    if (err != 0) {
        return err;
    }
    conc_event *e = mem;
    e->layout = CONC__SYNC_LAYOUT;
    atomic_init(&e->word, 0);
    atomic_init(&e->sleepers, 0);
    conc__sync_publish(&e->magic, CONC__SYNC_MAGIC_EVENT);
    *out = e;
    return 0;
}

int conc_event_open(conc_event **out, const char *name)
{
    void *mem = NULL;
    int err = out == NULL ? CONC__FAIL_NULL("out")
                          : conc__sync_named_open(&mem, NULL, name,
                                                  CONC__SYNC_MAGIC_EVENT,
                                                  sizeof(conc_event));
    if (out != NULL) {
        *out = mem;
    }
    return err;
}

int conc_event_set(conc_event *e)
{
    if (e == NULL) {
        return CONC__FAIL_NULL("e");
    }
    uint32_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
    for (;;) {
        if (w & 1u) {
            return 0;
        }
        /* (gen + 1) << 1 | 1.  seq_cst: the Dekker pair with the waiter's
         * sleepers increment (top); also a release for what the setter
         * wrote before set(). */
        if (atomic_compare_exchange_weak(&e->word, &w, w + 3u)) {
            break;
        }
    }
    if (atomic_load(&e->sleepers) > 0) {
        /* Pairs with the FUTEX_WAIT in conc_event_wait(). */
        conc__os_futex_wake(&e->word, INT32_MAX, true);
    }
    return 0;
}

int conc_event_clear(conc_event *e)
{
    if (e == NULL) {
        return CONC__FAIL_NULL("e");
    }
    /* Relaxed is enough: clear() orders nothing; a waiter judges by the
     * generation, which clear() leaves alone. */
    atomic_fetch_and_explicit(&e->word, ~1u, memory_order_relaxed);
    return 0;
}

bool conc_event_is_set(conc_event *e)
{
    if (e == NULL) {
        return false;
    }
    /* Acquire pairs with set()'s CAS, as wait() does. */
    return (atomic_load_explicit(&e->word, memory_order_acquire) & 1u) != 0;
}

int conc_event_wait(conc_event *e, double timeout)
{
    if (e == NULL) {
        return CONC__FAIL_NULL("e");
    }
    if (!conc__timeout_ok(timeout)) {
        return CONC__FAIL_TIMEOUT(timeout);
    }
    /* Acquire pairs with set()'s CAS. */
    uint32_t w0 = atomic_load_explicit(&e->word, memory_order_acquire);
    if (w0 & 1u) {
        return 0;
    }
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    if (dl.once) {
        return conc__fail_lit(CONC_ETIMEDOUT, "conc_event_wait: the event "
                                              "is not set");
    }
    /* seq_cst: the Dekker pair with set() (top). */
    atomic_fetch_add(&e->sleepers, 1);
    for (;;) {
        uint32_t w = atomic_load(&e->word);
        if ((w & 1u) || (w >> 1) != (w0 >> 1)) {
            err = 0;
            break;
        }
        if (err == CONC_ETIMEDOUT) {
            break;
        }
        /* Pairs with the FUTEX_WAKE in conc_event_set(). */
        err = conc__sync_sleep(&e->word, w, &dl);
    }
    atomic_fetch_sub_explicit(&e->sleepers, 1, memory_order_relaxed);
    if (err == CONC_ETIMEDOUT) {
        return conc__fail_lit(CONC_ETIMEDOUT, "conc_event_wait: the event "
                                              "was still not set when the "
                                              "timeout expired");
    }
    return err;
}

void conc_event_free(conc_event *e)
{
    if (e == NULL) {
        return;
    }
    conc__sync_region_free(e, sizeof *e);
}

uint32_t conc__event_sleepers(conc_event *e)
{
    return atomic_load(&e->sleepers);
}
