/* olock.c - the owner-stamped lock word ("olock") that Lock, RLock,
 * Condition, Barrier, the queue's two side locks and the dict are made
 * of: one 64-bit atomic in shared memory (layout in sync_int.h),
 *
 *     bits 0..30 tid of the holder, 0 = free | bit 31 WAITERS | 32..63 stamp
 *
 * Acquire.  Fast path: one CAS 0 -> me (me = stamp << 32 | tid of the
 * calling thread, cached per thread).  Slow path: set WAITERS with a CAS
 * on the exact value seen and FUTEX_WAIT on the low 32 bits, expecting
 * that value with WAITERS.  A waiter that has slept once acquires with
 * WAITERS already set (it cannot know whether other sleepers remain), as
 * in Drepper's "Futexes are tricky", mutex type 2.
 *
 * No spinning before the sleep.  Measured with bench_sync (two processes
 * incrementing one counter, 2 cores): spinning 10..1000 rounds of pause
 * made throughput swing between 0.7x and 1.8x of a process-shared pthread
 * mutex from run to run, because a spinner steals the lock in the instant
 * between the holder's release and its next acquire and the two then
 * ping-pong the cache line; without a spin the loser sleeps, the holder
 * runs uncontended, and the rate is a steady 1.2-1.3x of the pthread
 * mutex (which does not spin either).  On 2 cores a spinner also burns the
 * time slice a preempted holder needs.  More cores do not change the
 * argument, they sharpen it: a holder that takes the lock again within
 * tens of nanoseconds of letting it go (n processes looping on a counter,
 * the case in bench_scaling) is stolen from by any spinner in that gap,
 * and then the lock's line and the data it guards cross cores on every
 * acquire (about 100 ns each on a 16-core Xeon against a few for a
 * holder that keeps them), where a sleeping loser leaves the holder
 * runs of uncontended acquires and costs it one FUTEX_WAKE per wake-up.
 * A spin pays only when the loser arrives inside a long critical section
 * that the holder then leaves for good: it sleeps one wake-up (a few
 * microseconds) where a spin would have waited the section out.  (The
 * queue's side
 * locks spin for as long as the side makes no progress, which they can
 * see in the ring's positions; a bare lock has no such sign: the word
 * reads the same whether its holder is inside one critical section or
 * its hundredth.)
 *
 * Release.  Anyone may release (Python's Lock): exchange the word with 0;
 * an old value of 0 means it was not held (CONC_EPERM, nothing changed:
 * 0 was written over 0).  FUTEX_WAKE(1) only when the old value had
 * WAITERS.
 *
 * Why skipping the wake loses no wake-up.  A sleeper only sleeps after its
 * CAS put WAITERS into the word, and FUTEX_WAIT sleeps only if the low
 * half still equals that value, checked atomically with the enqueue under
 * the futex bucket lock.  So either (a) the release's exchange came before
 * the CAS: the CAS fails and the waiter rereads a free lock; (b) it came
 * between the CAS and the kernel's check: the word differs, FUTEX_WAIT
 * returns at once; or (c) it came after the enqueue: the exchange returned
 * WAITERS and the release wakes one.  A woken sleeper sets WAITERS again,
 * on acquiring or before sleeping again, so while anyone sleeps the bit
 * is set or about to be.  Two holes remain and are closed explicitly:
 *   - a woken waiter whose deadline passes while a fast-path thief holds
 *     the lock (thief's word has no WAITERS) would leave the others
 *     asleep through the thief's release: a giving-up waiter that ever
 *     slept therefore makes sure WAITERS is set on the word it leaves;
 *   - a wake-up spent on a waiter being SIGKILLed at that instant: every
 *     sleep is cut into slices (CONC__SYNC_SLICE_NS), after which sleepers
 *     recheck the word, so the loss costs at most one slice.
 *
 * Dead holders.  The kernel's robust list belongs to glibc and only
 * covers pthread mutexes, and a robust mutex cannot be released by a
 * non-owner, which Python's Lock allows; so the holder's identity is in
 * the word instead.  When a waiter's slice ends, or its deadline passes,
 * or a try (timeout 0) fails, it checks the holder: gone from /proc, a
 * zombie, or a different start time under the same tid (tid reused) means
 * dead, and the waiter takes the lock over with a CAS on the exact word
 * it judged (so only one waiter wins, and a word changed meanwhile is
 * judged again) and returns CONC_EOWNERDEAD holding it.  The lock works on
 * normally after that.  This covers a thread that exits holding the lock
 * and a process killed by SIGKILL; recovery takes at most one slice.  If
 * /proc cannot be read at all, holders are assumed alive (never two
 * holders).  The identity and the liveness check are in sync_self.c.
 *
 * Rejected: a robust pthread mutex (owner-only unlock; and the kernel's
 * robust list has one head per thread, owned by glibc, so a lock of our
 * own cannot join it); a pidfd per holder (an fd per acquire is far too
 * slow for the fast path); a spin-only lock, or a spin before sleeping
 * (see above).
 */
#include "sync_int.h"

int conc__olock_acquire_slow(conc__olock *l, uint64_t me,
                             const conc__deadline *dl)
{
    _Atomic uint32_t *word = conc__olock_word(l);
    uint64_t waitbit = 0; /* CONC__OL_WAITERS once we have slept */
    bool timed_out = dl->once;
    bool check_holder = dl->once;
    for (;;) {
        uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
        if ((s & CONC__OL_TID_MASK) == 0) {
            /* Free.  Acquire pairs with the release exchange of the last
             * holder. */
            if (atomic_compare_exchange_weak_explicit(
                    &l->state, &s, me | waitbit, memory_order_acquire,
                    memory_order_relaxed)) {
                return 0;
            }
            continue;
        }
        if (check_holder) {
            check_holder = false;
            if (!conc__sync_alive(s)) {
                /* Take over with a CAS on exactly the word judged: if it
                 * changed (released, WAITERS added, taken over by another
                 * waiter) we judge again.  WAITERS stays set: others may
                 * sleep.  Acquire pairs with nothing the dead holder will
                 * ever release; it orders our later reads after the CAS. */
                if (atomic_compare_exchange_strong_explicit(
                        &l->state, &s, me | CONC__OL_WAITERS,
                        memory_order_acquire, memory_order_relaxed)) {
                    return conc__fail(CONC_EOWNERDEAD,
                                      "acquired; its previous holder, "
                                      "thread %u, died holding it",
                                      (unsigned)(s & CONC__OL_TID_MASK));
                }
                check_holder = true;
                continue;
            }
        }
        if (timed_out) {
            /* Giving up.  If we slept we may have consumed the wake-up of
             * the release just before a fast-path thief took the lock;
             * leave WAITERS on the word so the thief's release wakes the
             * next sleeper. */
            if (waitbit != 0 && (s & CONC__OL_WAITERS) == 0) {
                if (!atomic_compare_exchange_strong_explicit(
                        &l->state, &s, s | CONC__OL_WAITERS,
                        memory_order_relaxed, memory_order_relaxed)) {
                    continue;
                }
            }
            return conc__fail_lit(CONC_ETIMEDOUT,
                                  "the lock was still held by another "
                                  "thread or process when the timeout "
                                  "expired");
        }
        if ((s & CONC__OL_WAITERS) == 0) {
            /* Relaxed: the futex wait below, and the holder's exchange,
             * are what order things; this CAS only publishes the bit. */
            if (!atomic_compare_exchange_weak_explicit(
                    &l->state, &s, s | CONC__OL_WAITERS,
                    memory_order_relaxed, memory_order_relaxed)) {
                continue;
            }
            s |= CONC__OL_WAITERS;
        }
        waitbit = CONC__OL_WAITERS;
        /* Pairs with the FUTEX_WAKE in conc__olock_release(), issued when
         * its exchange saw WAITERS (the argument at the top). */
        int err = conc__sync_sleep(word, (uint32_t)(s & CONC__OL_LOW_MASK),
                                   dl);
        if (err == 1) {
            check_holder = true;
        } else if (err == CONC_ETIMEDOUT) {
            timed_out = true;
            check_holder = true;
        }
    }
}

int conc__olock_acquire(conc__olock *l, const conc__deadline *dl)
{
    uint64_t me = conc__sync_self_id();
    if (conc__olock_try(l, me)) {
        return 0;
    }
    return conc__olock_acquire_slow(l, me, dl);
}

int conc__olock_release(conc__olock *l)
{
    /* Release pairs with the acquire CAS of the next holder. */
    uint64_t old = atomic_exchange_explicit(&l->state, 0,
                                            memory_order_release);
    if ((old & CONC__OL_TID_MASK) == 0) {
        return conc__fail_lit(CONC_EPERM, "release of a lock that is not "
                                          "held");
    }
    if (old & CONC__OL_WAITERS) {
        /* Pairs with the FUTEX_WAIT in conc__olock_acquire_slow(). */
        conc__os_futex_wake(conc__olock_word(l), 1, true);
    }
    return 0;
}
