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
 */
#include "sync_int.h"

#include <string.h>

struct conc_lock {
    uint32_t magic;
    uint32_t layout;
    conc__olock ol;
};

/* ---- conc_lock ---------------------------------------------------------- */

int conc_lock_new(conc_lock **out, const conc_lock_opts *opts)
{
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
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
    if (l == NULL) {
        return CONC__FAIL_NULL("l");
    }
    if (!conc__timeout_ok(timeout)) {
        return CONC__FAIL_TIMEOUT(timeout);
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
        return CONC__FAIL_NULL("l");
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
