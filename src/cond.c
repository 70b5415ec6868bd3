/* cond.c - conc_cond, Python's Condition, between threads and processes.
 *
 * A condition works over a conc_lock, a conc_rlock, or an RLock of its own
 * (opts NULL).  The handle is a small heap object naming the lock and the
 * shared part; the shared part is one page of anonymous shared memory, so
 * a condition created before fork() is the same one in the child (the
 * heap handle is copied by fork, and the mappings it points at are
 * shared).  The shared part holds no pointers:
 *
 *     magic, layout
 *     gen_new      id of the group new waiters join ("G2")
 *     g2_waiting   members of G2
 *     g1_waiting   members of G1 not yet granted a notify
 *     g1           G1's id << 32 | tokens: notifies granted to G1 and not
 *                  yet claimed
 *     word[2]      futex words, word[id & 1] for group id
 *
 * A named condition (sync_named.c) brings its own RLock, embedded in the
 * same segment at COND_RLOCK_OFF (conc__rlock_embed) and made before the
 * magic is published, so an opener finds the lock with the condition.
 *
 * Groups.  Waiters are counted, not listed (a list in shared memory would
 * need a fixed capacity).  A waiter joins G2 (gen_new).  notify(n) grants
 * up to n tokens to G1's ungranted members; when G1 has none left and n is
 * not used up, G2 becomes G1 (g1 = gen_new, gen_new + 1) and granting goes
 * on.  Every member of a group older than G1 is granted; a member of G1 is
 * granted when it claims one of G1's tokens (a CAS on g1, which holds the
 * id and the tokens in one word, so a claim can never take a token from a
 * newer group).  Since G2 becomes G1 only inside a notify, every member of
 * G1 was already waiting when any notify granted G1 a token: a waiter
 * never takes a notify issued before it started waiting.  Tokens are not
 * addressed to a member, so notify(n) wakes n of G1, not necessarily the
 * n oldest (Python's docs promise "at most n", not an order).
 *
 * Every counter except the claims changes only under the condition's
 * lock: registration, notify and withdrawal all run holding it, so those
 * accesses are relaxed (the lock orders them; they are atomic because a
 * plain Lock may be released by another thread, and for the lock-free
 * claims on g1).  wait()
 * returns 0 only after claiming a grant: never spuriously; each grant is
 * claimed by at most one waiter, so notify(n) wakes at most n.
 *
 * Timeout without swallowing.  A waiter whose time runs out first restores
 * the lock (as Python, without a deadline), then, under the lock, tries to
 * claim once more: if a token came meanwhile it takes it and returns 0 (it
 * was notified, and the grant is not wasted).  Otherwise it withdraws:
 * g2_waiting-- or g1_waiting--, so later notifies are not counted against
 * it.  Withdrawing under the lock means notify never sees half a
 * withdrawal.
 *
 * Wake-ups.  notify adds tokens (relaxed), then bumps word[id & 1] with
 * release and FUTEX_WAKEs k sleepers there; a waiter reads word (acquire),
 * then tries to claim, then FUTEX_WAITs on the value read.  If the waiter
 * reads the bumped word it sees the tokens; if not, the futex compare
 * fails or the waiter is queued before the wake.  Only G1's members sleep
 * on word[G1 & 1] when a notify grants (G2 is on the other word; the group
 * before G1, on the same word, is all granted and was woken when G1
 * formed).
 *
 * A waiter SIGKILLed while waiting stays counted in its group.  A notify
 * may grant it a token: another live member of the same group can claim
 * that token (tokens are anonymous), so a dead waiter costs nothing while
 * its group has live members; if none is left, that one notify is spent
 * on the dead waiter, like a notify of a thread that just gave up.  It
 * never blocks notify (which never waits) or later waiters (a new group
 * forms as soon as G1 has no ungranted members).  A wake-up spent on a
 * process dying at that instant leaves its token for another member, who
 * finds it at the end of its current sleep slice (CONC__SYNC_SLICE_NS).
 *
 * Rejected: a pthread condvar in shared memory (on glibc 2.36 a waiter
 * SIGKILLed inside pthread_cond_wait leaves the condvar's group state
 * behind: a later waiter misses its signal and a later signal or
 * broadcast can block for ever); one broadcast word with anonymous tokens
 * and no groups (a late waiter could take a notify issued before it
 * waited).
 */
#include "sync_int.h"

#include <stdlib.h>

struct cond_shared {
    uint32_t magic;
    uint32_t layout;
    _Atomic uint32_t gen_new;
    _Atomic uint32_t g2_waiting;
    _Atomic uint32_t g1_waiting;
    uint32_t pad;
    _Atomic uint64_t g1;
    _Atomic uint32_t word[2];
};

struct conc_cond {
    struct cond_shared *sh;
    conc_lock *lock;   /* exactly one of lock and rlock */
    conc_rlock *rlock;
    bool own_rlock;    /* a separate region, freed with the cond */
};

/* A named condition's segment: its shared part, then its own RLock, so an
 * opener finds both in one place. */
#define COND_RLOCK_OFF ((sizeof(struct cond_shared) + 63) / 64 * 64)

static void cond_init(struct cond_shared *sh)
{
    sh->layout = CONC__SYNC_LAYOUT;
    atomic_init(&sh->gen_new, 1);
    atomic_init(&sh->g2_waiting, 0);
    atomic_init(&sh->g1_waiting, 0);
    atomic_init(&sh->g1, 0);
    atomic_init(&sh->word[0], 0);
    atomic_init(&sh->word[1], 0);
    conc__sync_publish(&sh->magic, CONC__SYNC_MAGIC_COND);
}

int conc_cond_new(conc_cond **out, const conc_cond_opts *opts)
{
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
    }
    *out = NULL;
    const char *name = opts != NULL ? opts->name : NULL;
    if (opts != NULL && opts->lock != NULL && opts->rlock != NULL) {
        return conc__fail(CONC_EINVAL, "conc_cond_new: both .lock and "
                          ".rlock are given: at most one");
    }
    if (name != NULL && (opts->lock != NULL || opts->rlock != NULL)) {
        return conc__fail(CONC_EINVAL, "conc_cond_new: a named condition "
                          "brings its own RLock: .lock and .rlock must be "
                          "left out");
    }
    conc_cond *c = conc__calloc(1, sizeof *c);
    if (c == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_cond_new: out of memory");
    }
    void *mem;
    int err;
    if (name != NULL) {
        err = conc__sync_named_new(&mem, name,
                                   COND_RLOCK_OFF + conc__rlock_embed_size(),
                                   CONC__SYNC_MAGIC_COND);
        if (err != 0) {
            goto fail_handle;
        }
        /* The RLock first: an opener that sees the cond's magic sees it. */
        c->rlock = conc__rlock_embed((char *)mem + COND_RLOCK_OFF, true);
    } else {
        mem = conc__sync_region_new(sizeof(struct cond_shared));
        if (mem == NULL) {
            err = conc__fail_sys(CONC_ENOMEM, "conc_cond_new: no memory "
                                 "for its shared page: mmap");
            goto fail_handle;
        }
        if (opts != NULL && opts->lock != NULL) {
            c->lock = opts->lock;
        } else if (opts != NULL && opts->rlock != NULL) {
            c->rlock = opts->rlock;
        } else {
            err = conc_rlock_new(&c->rlock, NULL);
            if (err != 0) {
                goto fail_region;
            }
            c->own_rlock = true;
        }
    }
    c->sh = mem;
    cond_init(c->sh);
    *out = c;
    return 0;

fail_region:
    conc__sync_region_free(mem, sizeof(struct cond_shared));
fail_handle:
    free(c);
    return err;
}

int conc_cond_open(conc_cond **out, const char *name)
{
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
    }
    *out = NULL;
    conc_cond *c = conc__calloc(1, sizeof *c);
    if (c == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_cond_open: out of memory");
    }
    void *mem;
    int err = conc__sync_named_open(&mem, NULL, name, CONC__SYNC_MAGIC_COND,
                                    COND_RLOCK_OFF + conc__rlock_embed_size());
    if (err != 0) {
        free(c);
        return err;
    }
    c->sh = mem;
    c->rlock = conc__rlock_embed((char *)mem + COND_RLOCK_OFF, false);
    if (c->rlock == NULL) {
        err = conc__fail(CONC_ECORRUPT, "conc_cond_open: '%s': the "
                         "condition's RLock slot holds no RLock", name);
        conc__sync_region_free(mem, sizeof(struct cond_shared));
        free(c);
        return err;
    }
    *out = c;
    return 0;
}

void conc_cond_free(conc_cond *c)
{
    if (c == NULL) {
        return;
    }
    if (c->own_rlock) {
        conc_rlock_free(c->rlock);
    }
    /* A named cond's RLock goes with the segment. */
    conc__sync_region_free(c->sh, sizeof *c->sh);
    free(c);
}

int conc_cond_acquire(conc_cond *c, double timeout)
{
    if (c == NULL) {
        return CONC__FAIL_NULL("c");
    }
    return c->lock != NULL ? conc_lock_acquire(c->lock, timeout)
                           : conc_rlock_acquire(c->rlock, timeout);
}

int conc_cond_release(conc_cond *c)
{
    if (c == NULL) {
        return CONC__FAIL_NULL("c");
    }
    return c->lock != NULL ? conc_lock_release(c->lock)
                           : conc_rlock_release(c->rlock);
}

/* Python's rule: a plain lock is "held" when it is locked; an RLock when
 * the caller's thread owns it. */
static bool cond_held(conc_cond *c)
{
    return c->lock != NULL ? conc_lock_locked(c->lock)
                           : conc__rlock_mine(c->rlock);
}

/* True when the waiter of group my is granted; claims a token if needed. */
static bool cond_claim(struct cond_shared *sh, uint32_t my)
{
    /* Acquire pairs with the exchange in cond_grant()'s group switch. */
    uint64_t p = atomic_load_explicit(&sh->g1, memory_order_acquire);
    for (;;) {
        uint32_t id = (uint32_t)(p >> 32);
        if ((int32_t)(my - id) < 0) {
            return true; /* an older group: all of it is granted */
        }
        if (my != id || (uint32_t)p == 0) {
            return false;
        }
        /* Relaxed is enough: the token's data (whatever the notifier
         * wrote) is ordered by the lock the waiter takes before
         * returning. */
        if (atomic_compare_exchange_weak_explicit(&sh->g1, &p, p - 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed)) {
            return true;
        }
    }
}

/* Grants up to n notifies (under the lock). */
static void cond_grant(struct cond_shared *sh, uint64_t n)
{
    while (n > 0) {
        uint32_t w1 = atomic_load_explicit(&sh->g1_waiting,
                                           memory_order_relaxed);
        if (w1 > 0) {
            uint32_t k = n < w1 ? (uint32_t)n : w1;
            /* Grants are never more than asked for nor than wait. */
            CONC__ASSERT(k >= 1 && k <= w1 && k <= n);
            atomic_store_explicit(&sh->g1_waiting, w1 - k,
                                  memory_order_relaxed);
            uint64_t p = atomic_fetch_add_explicit(&sh->g1, k,
                                                   memory_order_relaxed);
            _Atomic uint32_t *w = &sh->word[(p >> 32) & 1];
            /* Release: a waiter that reads the new word (acquire, in
             * cond_wait_dl()) sees the tokens added above. */
            atomic_fetch_add_explicit(w, 1, memory_order_release);
            /* Pairs with the FUTEX_WAIT in cond_wait_dl(). */
            conc__os_futex_wake(w, (int)(k > INT32_MAX ? INT32_MAX : k),
                                true);
            n -= k;
            continue;
        }
        uint32_t w2 = atomic_load_explicit(&sh->g2_waiting,
                                           memory_order_relaxed);
        if (w2 == 0) {
            break;
        }
        /* G1 is all granted: G2 becomes G1.  One exchange replaces id and
         * tokens together, so no claim can mix the two groups. */
        uint32_t id = atomic_load_explicit(&sh->gen_new,
                                           memory_order_relaxed);
        uint64_t old = atomic_exchange_explicit(
            &sh->g1, (uint64_t)id << 32, memory_order_acq_rel);
        if ((uint32_t)old != 0) {
            /* Members of the old G1 holding unclaimed tokens are granted
             * by the id change; make sure none sleeps through it. */
            _Atomic uint32_t *w = &sh->word[(old >> 32) & 1];
            atomic_fetch_add_explicit(w, 1, memory_order_release);
            /* Pairs with the FUTEX_WAIT in cond_wait_dl(). */
            conc__os_futex_wake(w, INT32_MAX, true);
        }
        atomic_store_explicit(&sh->g1_waiting, w2, memory_order_relaxed);
        atomic_store_explicit(&sh->g2_waiting, 0, memory_order_relaxed);
        atomic_store_explicit(&sh->gen_new, id + 1, memory_order_relaxed);
    }
}

/* The lock is held; the waiter of group my gives up (under the lock). */
static void cond_withdraw(struct cond_shared *sh, uint32_t my)
{
    if (my == atomic_load_explicit(&sh->gen_new, memory_order_relaxed)) {
        uint32_t w = atomic_load_explicit(&sh->g2_waiting,
                                          memory_order_relaxed);
        if (w > 0) {
            atomic_store_explicit(&sh->g2_waiting, w - 1,
                                  memory_order_relaxed);
        }
        return;
    }
    uint64_t p = atomic_load_explicit(&sh->g1, memory_order_relaxed);
    if ((uint32_t)(p >> 32) == my) {
        uint32_t w = atomic_load_explicit(&sh->g1_waiting,
                                          memory_order_relaxed);
        if (w > 0) {
            atomic_store_explicit(&sh->g1_waiting, w - 1,
                                  memory_order_relaxed);
        }
    }
}

/* The detail of a call made without the condition's lock (Python's
 * RuntimeError("cannot wait on un-acquired lock")). */
static int not_held(const char *who)
{
    return conc__fail(CONC_EPERM, "%s: the condition's lock is not held "
                      "(acquire it before waiting or notifying)", who);
}

static int cond_wait_dl(conc_cond *c, const conc__deadline *dl,
                        const char *who)
{
    struct cond_shared *sh = c->sh;
    if (!cond_held(c)) {
        return not_held(who);
    }
    uint32_t my = atomic_load_explicit(&sh->gen_new, memory_order_relaxed);
    atomic_fetch_add_explicit(&sh->g2_waiting, 1, memory_order_relaxed);
    uint64_t levels = 1;
    int err = c->lock != NULL ? conc_lock_release(c->lock)
                              : conc__rlock_save(c->rlock, &levels);
    if (err != 0) {
        /* Released by someone else between the check and here. */
        cond_withdraw(sh, my);
        return conc__fail(CONC_EPERM, "%s: the condition's lock was "
                          "released by another thread while this one "
                          "began to wait", who);
    }
    bool notified = false;
    for (;;) {
        _Atomic uint32_t *w = &sh->word[my & 1];
        /* Acquire pairs with the release bump in cond_grant(). */
        uint32_t seen = atomic_load_explicit(w, memory_order_acquire);
        if (cond_claim(sh, my)) {
            notified = true;
            break;
        }
        if (err == CONC_ETIMEDOUT) {
            break;
        }
        /* Pairs with the FUTEX_WAKEs in cond_grant(). */
        err = conc__sync_sleep(w, seen, dl);
    }
    int lerr = c->lock != NULL ? conc_lock_acquire(c->lock, CONC_FOREVER)
                               : conc__rlock_restore(c->rlock, levels);
    if (!notified) {
        if (cond_claim(sh, my)) {
            notified = true;
        } else {
            cond_withdraw(sh, my);
        }
    }
    if (lerr != 0) {
        return lerr; /* CONC_EOWNERDEAD: held, but the data may be torn */
    }
    return notified ? 0
                    : conc__fail_lit(CONC_ETIMEDOUT, "conc_cond_wait: no "
                                                     "notify came before "
                                                     "the timeout");
}

int conc_cond_wait(conc_cond *c, double timeout)
{
    if (c == NULL) {
        return CONC__FAIL_NULL("c");
    }
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    return cond_wait_dl(c, &dl, "conc_cond_wait");
}

int conc_cond_wait_for(conc_cond *c, conc_pred_fn pred, void *arg,
                       double timeout)
{
    if (c == NULL || pred == NULL) {
        return CONC__FAIL_NULL(c == NULL ? "c" : "pred");
    }
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    if (!cond_held(c)) {
        return not_held("conc_cond_wait_for");
    }
    /* As Python: at least one wait, then until pred holds or time is up;
     * pred is asked once more after the last wait. */
    bool waited = false;
    while (!pred(arg)) {
        if (waited && conc__deadline_passed(&dl)) {
            return conc__fail_lit(CONC_ETIMEDOUT, "conc_cond_wait_for: the "
                                                  "predicate was still "
                                                  "false at the timeout");
        }
        err = cond_wait_dl(c, &dl, "conc_cond_wait_for");
        waited = true;
        if (err == CONC_EOWNERDEAD || err == CONC_EPERM) {
            return err;
        }
    }
    return 0;
}

int conc_cond_notify(conc_cond *c, unsigned n)
{
    if (c == NULL) {
        return CONC__FAIL_NULL("c");
    }
    if (!cond_held(c)) {
        return not_held("conc_cond_notify");
    }
    cond_grant(c->sh, n);
    return 0;
}

int conc_cond_notify_all(conc_cond *c)
{
    if (c == NULL) {
        return CONC__FAIL_NULL("c");
    }
    if (!cond_held(c)) {
        return not_held("conc_cond_notify_all");
    }
    cond_grant(c->sh, UINT64_MAX);
    return 0;
}
