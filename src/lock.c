/* lock.c - conc_lock, Python's Lock: one owner-stamped lock word (olock.c)
 * in a page of its own.
 *
 * Layout.  A conc_lock is one page of anonymous shared memory
 * (sync_region.c) holding a magic number, a layout version and one olock
 * word.  The handle is the mapping itself, so a lock created before fork()
 * is the same lock in the child: parent and child see one word.  It holds
 * no pointers.  A named lock's page is a conc_shm segment instead, which
 * an unrelated process maps with conc_lock_open (sync_named.c; the same
 * for every sync object).
 *
 * Semantics.  Python's Lock, across threads and processes: anyone may
 * release a held lock; releasing a free one is CONC_EPERM.  If the holder
 * dies (a thread that exits holding it, a process killed by SIGKILL), the
 * next acquirer gets it within one sleep slice with CONC_EOWNERDEAD, and
 * the lock works on normally (olock.c says how).
 *
 * Fork.  A lock held by a parent thread at fork stays held by that
 * thread, which still lives: the child waits for it like anyone else, or
 * may release it (Python allows that).
 *
 * On a server (.url).  conc_lock_new with .url, and conc_lock_open with a
 * URL, make a handle of another kind (net_lock.c: a lock served by
 * Redis); each public function first asks conc__netl_is() - one compare
 * of the first word, which the shared-memory path reads anyway, and a
 * check word no other process can forge - and hands such a handle to
 * net_lock.c.
 *
 * Cost, uncontended.  The olock's fast path is one CAS to acquire and
 * one exchange to release: two locked instructions, about 5-6 ns each on
 * a 2020s x86 core, 12-14 ns each on this project's 2-vCPU VM, and
 * nearly the whole of an uncontended acquire+release (the rest is a TLS
 * load of the identity, two argument checks and a compare: a handful of
 * instructions, no call but the public one).  glibc's private
 * pthread_mutex_lock costs less only because, since glibc 2.34, a process
 * with one thread takes and drops it with plain loads and stores: with a
 * second thread alive it pays the same two locked instructions (measured
 * in bench_sync, both ways).  A process-shared pthread mutex always pays
 * them.
 *
 * The single-thread path does what glibc does, where that is sound for a
 * lock in shared memory: acquire and release with a plain load and store
 * of the same word, same values, when no other thread and no other
 * process can touch it.  That holds when both
 *   - the process has one thread: glibc's __libc_single_threaded, which
 *     pthread_create (and so every thread libconc starts) clears before
 *     the new thread exists; and
 *   - the lock is anonymous and made by this process since its last
 *     fork: solo holds conc__sync_forks as it was at conc_lock_new, and
 *     the count is bumped before every fork (sync_int.h), so it matches
 *     only in the maker and only until its first fork; every other
 *     process that maps the lock (a child forked later, and theirs)
 *     counts more.  A named or embedded lock has solo 0, which no count
 *     is, since an unrelated process may open it at any time.
 * Both conditions are the caller's own state, so only this thread can
 * end them, by pthread_create or fork, and each of those orders all
 * that came before it (the new thread or process then sees the word as
 * left by the plain stores and uses the atomic path).  The word's format
 * is the olock's either way, so a holder that took the lock on one path
 * may be released on the other, and a dead holder is recovered as ever.
 * What this relies on beyond the olock: threads made through
 * pthread_create and processes made through fork() (a raw clone would
 * fool both checks; the identity already relies on fork(), sync_self.c).
 */
#include "sync_int.h"
#include "net_int.h"

#include <string.h>
#if defined(__has_include)
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#define HAVE_SINGLE_THREADED 1
#endif
#endif

struct conc_lock {
    uint32_t magic;
    uint32_t layout;
    conc__olock ol;
    /* conc__sync_forks when an anonymous lock was made; 0 if named or
     * embedded.  Written once, before the lock is handed out. */
    uint64_t solo;
};

/* Whether this thread is the only one that can touch l (see the
 * single-thread path above).  The thread count first: in a process with
 * threads no shared word but this global byte is read. */
static inline bool lock_solo(const conc_lock *l)
{
#ifdef HAVE_SINGLE_THREADED
    /* Relaxed: this process's own count (see conc__sync_forks). */
    return __libc_single_threaded &&
           l->solo == atomic_load_explicit(&conc__sync_forks,
                                           memory_order_relaxed);
#else
    (void)l;
    return false;
#endif
}

/* ---- conc_lock ---------------------------------------------------------- */

int conc_lock_new(conc_lock **out, const conc_lock_opts *opts)
{
    if (opts != NULL && opts->url != NULL) {
        return conc__netl_new(out, opts);
    }
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
    }
    *out = NULL;
    if (opts != NULL && (conc__timeout_given(opts->lease) ||
                         conc__timeout_given(opts->net_timeout))) {
        /* only a server honours them */
        return conc__fail(CONC_EINVAL, "conc_lock_new: .%s is for a lock "
                          "on a server (.url)",
                          conc__timeout_given(opts->lease) ? "lease"
                                                           : "net_timeout");
    }
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
    /* Relaxed: this thread's own count (see lock_solo). */
    l->solo = opts != NULL && opts->name != NULL
                  ? 0
                  : atomic_load_explicit(&conc__sync_forks,
                                         memory_order_relaxed);
    conc__sync_publish(&l->magic, CONC__SYNC_MAGIC_LOCK);
    *out = l;
    return 0;
}

int conc_lock_open(conc_lock **out, const char *name)
{
    if (conc__url_is(name)) {
        return conc__netl_open(out, name);
    }
    void *mem = NULL;
    int err = out == NULL ? CONC__FAIL_NULL("out")
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
    if (l != NULL && conc__netl_is(l)) {
        return conc__netl_acquire(l, timeout);
    }
    if (l == NULL) {
        return CONC__FAIL_NULL("l");
    }
    if (!conc__timeout_ok(timeout)) {
        return CONC__FAIL_TIMEOUT(timeout);
    }
    uint64_t me = conc__sync_self_id();
    if (lock_solo(l)) {
        /* Relaxed load and store: nothing else can touch the word (see
         * the single-thread path at the top). */
        if (atomic_load_explicit(&l->ol.state, memory_order_relaxed) == 0) {
            /* free -> held by us: the word names this thread, no WAITERS. */
            CONC__ASSERT((me & CONC__OL_TID_MASK) != 0 &&
                         (me & CONC__OL_WAITERS) == 0);
            atomic_store_explicit(&l->ol.state, me, memory_order_relaxed);
            return 0;
        }
    } else if (conc__olock_try(&l->ol, me)) {
        return 0;
    }
    return lock_contended(l, me, timeout);
}

int conc_lock_release(conc_lock *l)
{
    if (l != NULL && conc__netl_is(l)) {
        return conc__netl_release(l);
    }
    if (l == NULL) {
        return CONC__FAIL_NULL("l");
    }
    if (lock_solo(l)) {
        /* Relaxed, as in conc_lock_acquire.  WAITERS can be set here by a
         * wait of this thread's that timed out (olock.c leaves it set);
         * no one sleeps, but the release stays the olock's: it wakes. */
        uint64_t old = atomic_load_explicit(&l->ol.state,
                                            memory_order_relaxed);
        if ((old & CONC__OL_TID_MASK) != 0) {
            atomic_store_explicit(&l->ol.state, 0, memory_order_relaxed);
            if (old & CONC__OL_WAITERS) {
                /* Pairs with the FUTEX_WAIT in conc__olock_acquire_slow();
                 * none can be asleep, so it wakes nobody. */
                conc__os_futex_wake(conc__olock_word(&l->ol), 1, true);
            }
            return 0;
        }
    }
    if (conc__olock_release(&l->ol) != 0) {
        /* Python's RuntimeError("release unlocked lock") */
        return conc__fail_lit(CONC_EPERM, "conc_lock_release: the lock is "
                                          "not held");
    }
    return 0;
}

bool conc__lock_solo(conc_lock *l)
{
    return lock_solo(l);
}

bool conc_lock_locked(conc_lock *l)
{
    if (l != NULL && conc__netl_is(l)) {
        return conc__netl_locked(l);
    }
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
        l->solo = 0; /* in a segment others may open */
        return l;
    }
    if (l->magic != CONC__SYNC_MAGIC_LOCK || l->layout != CONC__SYNC_LAYOUT) {
        return NULL;
    }
    return l;
}

void conc_lock_free(conc_lock *l)
{
    if (l != NULL && conc__netl_is(l)) {
        conc__netl_free(l);
        return;
    }
    if (l == NULL) {
        return;
    }
    conc__sync_region_free(l, sizeof *l);
}
