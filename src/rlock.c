/* rlock.c - conc_rlock, Python's RLock, between threads and processes.
 *
 * Layout: one page of anonymous shared memory (the handle is the mapping,
 * so an RLock created before fork() is the same one in the child): a
 * magic number, the layout version, the owner-stamped lock word of lock.c
 * (holder tid + start-time stamp, WAITERS) and the recursion level.
 *
 * Ownership is the lock word itself: the caller owns the RLock when the
 * word, less WAITERS, equals its own identity (tid + stamp).  Only that
 * thread writes the word while it holds it, so this test needs no
 * ordering.  The level is read and written only by the owner while it
 * holds the word (or by whoever takes the word over from a dead owner);
 * the acquire CAS / release exchange on the word order those accesses
 * between successive owners.  It is atomic (relaxed) only so that a
 * takeover from a dead owner, which has no release to pair with, is not
 * a data race.
 *
 * Only the owner may release (CONC_EPERM otherwise, Python's RuntimeError).
 * If the owner dies holding it, the next acquire returns CONC_EOWNERDEAD
 * holding it at level 1 (lock.c explains the detection).
 *
 * Fork: the child's thread has a new identity, so an RLock owned by a
 * parent thread at fork is not owned by the child: the child's acquire
 * waits for the parent's owner to release it, as with any other thread.
 */
#include "sync_int.h"

struct conc_rlock {
    uint32_t magic;
    uint32_t layout;
    conc__olock ol;
    _Atomic uint64_t level;
};

static void rlock_init(conc_rlock *r)
{
    r->layout = CONC__SYNC_LAYOUT;
    atomic_init(&r->ol.state, 0);
    atomic_init(&r->level, 0);
    conc__sync_publish(&r->magic, CONC__SYNC_MAGIC_RLOCK);
}

int conc_rlock_new(conc_rlock **out, const conc_rlock_opts *opts)
{
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
    }
    *out = NULL;
    void *mem;
    int err = conc__sync_region_make(&mem, opts != NULL ? opts->name : NULL,
                                     sizeof(conc_rlock),
                                     CONC__SYNC_MAGIC_RLOCK);
    if (err != 0) {
        return err;
    }
    rlock_init(mem);
    *out = mem;
    return 0;
}

int conc_rlock_open(conc_rlock **out, const char *name)
{
    void *mem = NULL;
    int err = out == NULL ? CONC__FAIL_NULL("out")
                          : conc__sync_named_open(&mem, NULL, name,
                                                  CONC__SYNC_MAGIC_RLOCK,
                                                  sizeof(conc_rlock));
    if (out != NULL) {
        *out = mem;
    }
    return err;
}

size_t conc__rlock_embed_size(void)
{
    return sizeof(conc_rlock);
}

conc_rlock *conc__rlock_embed(void *mem, bool init)
{
    conc_rlock *r = mem;
    if (init) {
        rlock_init(r);
        return r;
    }
    if (r->magic != CONC__SYNC_MAGIC_RLOCK || r->layout != CONC__SYNC_LAYOUT) {
        return NULL;
    }
    return r;
}

/* Acquires at one more level, or at `levels` when taking it fresh. */
static int rlock_acquire_dl(conc_rlock *r, const conc__deadline *dl,
                            uint64_t levels)
{
    uint64_t me = conc__sync_self_id();
    uint64_t s = atomic_load_explicit(&r->ol.state, memory_order_relaxed);
    if ((s & ~CONC__OL_WAITERS) == me) {
        /* Ours already: only this thread touches the level now. */
        uint64_t lv = atomic_load_explicit(&r->level, memory_order_relaxed);
        atomic_store_explicit(&r->level, lv + levels, memory_order_relaxed);
        return 0;
    }
    int err = 0;
    if (!conc__olock_try(&r->ol, me)) {
        err = conc__olock_acquire_slow(&r->ol, me, dl);
        if (err != 0 && err != CONC_EOWNERDEAD) {
            return err;
        }
    }
    /* A dead owner's level is meaningless: start afresh. */
    atomic_store_explicit(&r->level, levels, memory_order_relaxed);
    return err;
}

int conc_rlock_acquire(conc_rlock *r, double timeout)
{
    if (r == NULL) {
        return CONC__FAIL_NULL("r");
    }
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    return rlock_acquire_dl(r, &dl, 1);
}

int conc_rlock_release(conc_rlock *r)
{
    if (r == NULL) {
        return CONC__FAIL_NULL("r");
    }
    if (!conc__olock_mine(&r->ol)) {
        return conc__fail_lit(CONC_EPERM, "conc_rlock_release: the calling "
                                          "thread does not own the RLock");
    }
    uint64_t lv = atomic_load_explicit(&r->level, memory_order_relaxed);
    if (lv > 1) {
        atomic_store_explicit(&r->level, lv - 1, memory_order_relaxed);
        return 0;
    }
    atomic_store_explicit(&r->level, 0, memory_order_relaxed);
    return conc__olock_release(&r->ol);
}

bool conc_rlock_locked(conc_rlock *r)
{
    if (r == NULL) {
        return false;
    }
    return (atomic_load_explicit(&r->ol.state, memory_order_relaxed) &
            CONC__OL_TID_MASK) != 0;
}

void conc_rlock_free(conc_rlock *r)
{
    if (r == NULL) {
        return;
    }
    conc__sync_region_free(r, sizeof *r);
}

bool conc__rlock_mine(conc_rlock *r)
{
    return conc__olock_mine(&r->ol);
}

int conc__rlock_save(conc_rlock *r, uint64_t *levels)
{
    if (!conc__olock_mine(&r->ol)) {
        return conc__fail_lit(CONC_EPERM, "the condition's RLock is not "
                                          "owned by the calling thread");
    }
    *levels = atomic_load_explicit(&r->level, memory_order_relaxed);
    atomic_store_explicit(&r->level, 0, memory_order_relaxed);
    return conc__olock_release(&r->ol);
}

int conc__rlock_restore(conc_rlock *r, uint64_t levels)
{
    conc__deadline dl = { .forever = true, .once = false };
    return rlock_acquire_dl(r, &dl, levels);
}
