/* lock.c - conc_lock (Python's Lock), and the owner-stamped lock word
 * ("olock") that RLock, Condition and Barrier are built on.
 *
 * Layout.  A conc_lock is one page of anonymous shared memory
 * (conc__os_shared_alloc) holding a magic number, a layout version and one
 * 64-bit word (sync_int.h):
 *
 *     bits 0..30 tid of the holder, 0 = free | bit 31 WAITERS | 32..63 stamp
 *
 * The handle is the mapping itself, so a lock created before fork() is the
 * same lock in the child: parent and child see one word.  It holds no
 * pointers.  A named lock's page is a conc_shm segment instead, which an
 * unrelated process maps with conc_lock_open (sync_named.c; the same for
 * every sync object).
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
 * time slice a preempted holder needs.
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
 * holders).  The stamp is the low 32 bits of the start time in clock
 * ticks (10 ms; wraps after ~497 days): fooling it takes a new thread
 * with the dead holder's tid started in the same tick, i.e. pid_max
 * threads created within 10 ms.  Identities are only meaningful within
 * one PID namespace: processes sharing a lock must share it too.  Each
 * check reads /proc (~10 us), paid only by waiters and failed tries.
 *
 * Fork.  The per-thread identity cache would hold the parent's tid in the
 * child; a pthread_atfork child handler clears it (registered when the
 * library is loaded, before any thread).  A lock held by a parent
 * thread at fork stays held by that thread, which still lives: the child
 * waits for it like anyone else, or may release it (Python allows that).
 * A process forked without glibc's fork() (raw clone, _Fork) skips the
 * handler: libconc's process module uses fork().
 *
 * Rejected: a robust pthread mutex (owner-only unlock, and one robust
 * list per thread owned by glibc, so a lock of our own cannot join it); a
 * pidfd per holder (an fd per acquire is far too slow for the fast path);
 * a spin-only lock, or a spin before sleeping (see above).
 */
#include "sync_int.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

struct conc_lock {
    uint32_t magic;
    uint32_t layout;
    conc__olock ol;
};

/* ---- identity ----------------------------------------------------------- */

_Thread_local uint64_t conc__sync_self
    __attribute__((tls_model("initial-exec")));

/* Whether /proc answers for us; when it does not, no holder can be judged
 * dead.  Written once by sync_init, before main; read-only afterwards. */
static bool proc_usable;

/* The child's only thread got a new tid: forget the parent's. */
static void atfork_child(void)
{
    conc__sync_self = 0;
}

/* Runs when the library is loaded, before any thread of the program can
 * exist.  Not a pthread_once on first use: a thread forking while another
 * is inside that once would leave the child's once-control "in progress"
 * for ever, and the child's first lock call would hang. */
__attribute__((constructor)) static void sync_init(void)
{
    proc_usable = conc__os_proc_starttime(getpid()) != 0;
    pthread_atfork(NULL, NULL, atfork_child);
}

uint64_t conc__sync_self_slow(void)
{
    pid_t tid = conc__os_gettid();
    uint64_t st = conc__os_proc_starttime(tid);
    uint64_t id = ((uint64_t)(uint32_t)st << 32) |
                  ((uint64_t)(uint32_t)tid & CONC__OL_TID_MASK);
    conc__sync_self = id;
    return id;
}

/* Whether the holder named by word s still runs.  Reads /proc: slow path
 * only. */
static bool holder_alive(uint64_t s)
{
    if (!proc_usable) {
        return true;
    }
    pid_t tid = (pid_t)(s & CONC__OL_TID_MASK);
    uint32_t stamp = (uint32_t)(s >> 32);
    if (!conc__os_thread_alive(tid, 0)) {
        return false;
    }
    if (stamp == 0) {
        return true;
    }
    uint64_t st = conc__os_proc_starttime(tid);
    return st != 0 && (uint32_t)st == stamp;
}

bool conc__sync_alive(uint64_t id)
{
    return holder_alive(id);
}

/* ---- shared regions and sliced sleeps ----------------------------------- */

static size_t page_round(size_t size)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t p = pg > 0 ? (size_t)pg : 4096;
    return (size + p - 1) / p * p;
}

void *conc__sync_region_new(size_t size)
{
    return conc__os_shared_alloc(page_round(size));
}

int conc__sync_region_make(void **region, const char *name, size_t size,
                           uint32_t magic)
{
    if (name != NULL) {
        return conc__sync_named_new(region, name, size, magic);
    }
    *region = conc__sync_region_new(size);
    return *region != NULL ? 0 : CONC_ENOMEM;
}

void conc__sync_region_free(void *p, size_t size)
{
    if (conc__sync_named_release(p)) {
        return;
    }
    conc__os_shared_free(p, page_round(size));
}

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
        return capped ? CONC_ETIMEDOUT : 1;
    }
    return 0;
}

/* ---- the olock engine ---------------------------------------------------- */

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
            if (!holder_alive(s)) {
                /* Take over with a CAS on exactly the word judged: if it
                 * changed (released, WAITERS added, taken over by another
                 * waiter) we judge again.  WAITERS stays set: others may
                 * sleep.  Acquire pairs with nothing the dead holder will
                 * ever release; it orders our later reads after the CAS. */
                if (atomic_compare_exchange_strong_explicit(
                        &l->state, &s, me | CONC__OL_WAITERS,
                        memory_order_acquire, memory_order_relaxed)) {
                    return CONC_EOWNERDEAD;
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
            return CONC_ETIMEDOUT;
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
        return CONC_EPERM;
    }
    if (old & CONC__OL_WAITERS) {
        /* Pairs with the FUTEX_WAIT in conc__olock_acquire_slow(). */
        conc__os_futex_wake(conc__olock_word(l), 1, true);
    }
    return 0;
}

/* ---- conc_lock ---------------------------------------------------------- */

int conc_lock_new(conc_lock **out, const conc_lock_opts *opts)
{
    if (out == NULL) {
        return CONC_EINVAL;
    }
    *out = NULL;
    void *mem;
    int err = conc__sync_region_make(&mem, opts != NULL ? opts->name : NULL,
                                     sizeof(conc_lock),
                                     CONC__SYNC_MAGIC_LOCK);
    if (err != 0) {
        return err;
    }
    conc_lock *l = mem;
    l->layout = CONC__SYNC_LAYOUT;
    atomic_init(&l->ol.state, 0);
    conc__sync_publish(&l->magic, CONC__SYNC_MAGIC_LOCK);
    *out = l;
    return 0;
}

int conc_lock_open(conc_lock **out, const char *name)
{
    void *mem = NULL;
    int err = out == NULL ? CONC_EINVAL
                          : conc__sync_named_open(&mem, NULL, name,
                                                  CONC__SYNC_MAGIC_LOCK,
                                                  sizeof(conc_lock));
    if (out != NULL) {
        *out = mem;
    }
    return err;
}

/* Out of line, so the uncontended path needs no stack frame. */
__attribute__((noinline)) static int lock_contended(conc_lock *l,
                                                    uint64_t me,
                                                    double timeout)
{
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    return conc__olock_acquire_slow(&l->ol, me, &dl);
}

int conc_lock_acquire(conc_lock *l, double timeout)
{
    if (l == NULL || !conc__sync_timeout_ok(timeout)) {
        return CONC_EINVAL;
    }
    uint64_t me = conc__sync_self_id();
    if (conc__olock_try(&l->ol, me)) {
        return 0;
    }
    return lock_contended(l, me, timeout);
}

int conc_lock_release(conc_lock *l)
{
    if (l == NULL) {
        return CONC_EINVAL;
    }
    return conc__olock_release(&l->ol);
}

bool conc_lock_locked(conc_lock *l)
{
    if (l == NULL) {
        return false;
    }
    return (atomic_load_explicit(&l->ol.state, memory_order_relaxed) &
            CONC__OL_TID_MASK) != 0;
}

bool conc__lock_has_waiters(conc_lock *l)
{
    return (atomic_load_explicit(&l->ol.state, memory_order_relaxed) &
            CONC__OL_WAITERS) != 0;
}

size_t conc__lock_embed_size(void)
{
    return sizeof(struct conc_lock);
}

conc_lock *conc__lock_embed(void *mem, bool init)
{
    conc_lock *l = mem;
    if (init) {
        l->magic = CONC__SYNC_MAGIC_LOCK;
        l->layout = CONC__SYNC_LAYOUT;
        atomic_init(&l->ol.state, 0);
        return l;
    }
    if (l->magic != CONC__SYNC_MAGIC_LOCK || l->layout != CONC__SYNC_LAYOUT) {
        return NULL;
    }
    return l;
}

void conc_lock_free(conc_lock *l)
{
    if (l == NULL) {
        return;
    }
    conc__sync_region_free(l, sizeof *l);
}
