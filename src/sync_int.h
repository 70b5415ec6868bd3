/* sync_int.h - what the sync module's files (olock.c, sync_self.c,
 * sync_sleep.c, sync_region.c, sync_named.c and the objects lock.c
 * rlock.c sem.c event.c cond.c barrier.c) share: the owner-stamped lock
 * word every lock is made of, the caller's identity, and the sliced
 * futex wait.
 *
 * The owner-stamped lock word ("olock") is one 64-bit atomic in shared
 * memory:
 *
 *     bits  0..30  tid of the holder (Linux tids stay below 2^22), 0 = free
 *     bit   31     WAITERS: someone may be asleep on the low half
 *     bits 32..63  stamp: the low 32 bits of the holder thread's kernel
 *                  start time, so a reused tid is not taken for the holder
 *
 * Sleepers FUTEX_WAIT on the low 32 bits (the tid and WAITERS), which is
 * where a release changes the word.  olock.c holds the algorithm and its
 * wake-up argument; sync_self.c the identity and the liveness check;
 * sync_sleep.c the sliced sleep; sync_region.c and sync_named.c the page
 * each object lives in.
 */
#ifndef CONC_SYNC_INT_H
#define CONC_SYNC_INT_H

#include "conc_int.h"

#include <stdatomic.h>
#include <stdint.h>

/* Every sleep in sync is cut into slices of at most this long.  At a
 * slice's end the sleeper rechecks its condition (and a lock waiter checks
 * that the holder still lives), so a wake-up spent on a process that was
 * killed at that instant, or a holder that died, delays the others by at
 * most one slice and never strands them. */
#define CONC__SYNC_SLICE_NS 50000000ull

#define CONC__OL_TID_MASK 0x7fffffffull
#define CONC__OL_WAITERS 0x80000000ull
#define CONC__OL_LOW_MASK 0xffffffffull

typedef struct conc__olock {
    _Atomic uint64_t state;
} conc__olock;

/* The caller's identity as it goes into an olock: stamp << 32 | tid.
 * Cached per thread; the cache is reset in the child by a pthread_atfork
 * handler (the child's thread has a new tid).  initial-exec: the shared
 * library reads it without a __tls_get_addr call on the fast path. */
extern _Thread_local uint64_t conc__sync_self
    __attribute__((tls_model("initial-exec")));
uint64_t conc__sync_self_slow(void);

/* Counts the forks this process descends from, starting at 1: a per-
 * process value that costs one load to compare (getpid() is a system
 * call).  A forked child's is its parent's plus one (pthread_atfork). */
extern unsigned long conc__sync_fork_epoch;

/* Counts the fork() calls made by this process and its ancestors,
 * starting at 1: bumped in the parent just before each fork (a
 * pthread_atfork prepare handler), so the child inherits the new count
 * and the parent keeps it.  A lock that records the count at its
 * creation therefore sees it again only in the process that made it, and
 * only until that process forks: every process that can map the lock
 * afterwards (the creator, or a descendant forked later) counts more.
 * conc_lock's single-thread path rests on this (lock.c). */
extern _Atomic uint64_t conc__sync_forks;

static inline uint64_t conc__sync_self_id(void)
{
    uint64_t id = conc__sync_self;
    if (__builtin_expect(id == 0, 0)) {
        id = conc__sync_self_slow();
    }
    return id;
}

/* The futex word inside an olock: its low 32 bits. */
static inline _Atomic uint32_t *conc__olock_word(conc__olock *l)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (_Atomic uint32_t *)((char *)&l->state + 4);
#else
    return (_Atomic uint32_t *)&l->state;
#endif
}

/* Whether the thread named by an identity (conc__sync_self_id() of some
 * thread, any process) still runs: /proc, so slow paths only.  True when
 * /proc cannot be read (never judge a live thread dead). */
bool conc__sync_alive(uint64_t id);

/* One uncontended attempt: 0 → me.  Acquire pairs with the release
 * exchange in conc__olock_release() of the previous holder. */
static inline bool conc__olock_try(conc__olock *l, uint64_t me)
{
    uint64_t expect = 0;
    return atomic_compare_exchange_strong_explicit(
        &l->state, &expect, me, memory_order_acquire, memory_order_relaxed);
}

/* The contended path: 0, CONC_ETIMEDOUT, or CONC_EOWNERDEAD (acquired from
 * a holder that died). */
int conc__olock_acquire_slow(conc__olock *l, uint64_t me,
                             const conc__deadline *dl);
/* Acquire with a deadline, fast path first. */
int conc__olock_acquire(conc__olock *l, const conc__deadline *dl);
/* Release by anyone: 0, or CONC_EPERM when it was not held. */
int conc__olock_release(conc__olock *l);
/* True when the caller's thread holds it. */
static inline bool conc__olock_mine(conc__olock *l)
{
    uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
    return (s & ~CONC__OL_WAITERS) == conc__sync_self_id();
}

/* Sleeps on word while it holds val, for at most one slice and never past
 * dl.  0: woken or the word changed (recheck); 1: the slice ended with
 * time left (recheck, and look for dead holders); CONC_ETIMEDOUT: dl
 * passed.  Signals are absorbed (0 is returned; the caller rechecks and
 * sleeps again with the same deadline). */
int conc__sync_sleep(_Atomic uint32_t *word, uint32_t val,
                     const conc__deadline *dl);

/* Shared region of an object: one anonymous shared mapping rounded to a
 * page; NULL on failure (fault seam included). */
void *conc__sync_region_new(size_t size);
void conc__sync_region_free(void *p, size_t size);

/* Named regions (sync_named.c, on shm.c's segments).
 * conc__sync_named_new: a new zero-filled segment /dev/shm/<name> of size
 * bytes for an object of kind magic (CONC__SYNC_MAGIC_*; it names the
 * public function in error details), mapped at *region; 0, CONC_EINVAL
 * (bad name), CONC_ENOMEM, CONC_ESYS (errno kept: EEXIST when the name is
 * taken).  The caller initialises the object, then conc__sync_publish()es
 * its magic.  conc__sync_named_open: maps the segment another process
 * made for an object of kind magic, once published (waits up to a second);
 * CONC_EINVAL when it is not such an object (another magic or layout) or
 * smaller than min_size, CONC_EPERM (another user's segment), CONC_ESYS
 * (ENOENT: no such name); *size (size may be NULL) is its mapped size.
 * Every error has its detail (conc_errdetail).
 * conc__sync_named_release: unmaps (and, in the creating process,
 * unlinks) a named region; false when region is not one, for
 * conc__sync_region_free, which calls it first. */
int conc__sync_named_new(void **region, const char *name, size_t size,
                         uint32_t magic);
/* Either: named when name is not NULL, else anonymous (CONC_ENOMEM). */
int conc__sync_region_make(void **region, const char *name, size_t size,
                           uint32_t magic);
int conc__sync_named_open(void **region, size_t *size, const char *name,
                          uint32_t magic, size_t min_size);
bool conc__sync_named_release(void *region);
/* For tests: takes (hold) or lets go of the list's lock, to show that a
 * fork while another thread holds it gives the child a free lock. */
void conc__sync_named_guard(bool hold);

/* For tests: whether an acquirer of l is past its fast path (WAITERS
 * set); how many acquirers of s, waiters of e, are about to sleep or
 * asleep.  A release or set after these turned true must wake them. */
bool conc__lock_has_waiters(conc_lock *l);
/* For tests: whether conc_lock's single-thread path applies to l now
 * (lock.c). */
bool conc__lock_solo(conc_lock *l);
uint32_t conc__sem_sleepers(conc_sem *s);
uint32_t conc__event_sleepers(conc_event *e);

/* Stores an initialised object's magic (its first field) last, with
 * release: an opener that sees it (acquire) sees the whole object. */
static inline void conc__sync_publish(uint32_t *magic_field, uint32_t magic)
{
    __atomic_store_n(magic_field, magic, __ATOMIC_RELEASE);
}

/* For cond.c: an RLock released at every level and restored. */
int conc__rlock_save(conc_rlock *r, uint64_t *levels);
int conc__rlock_restore(conc_rlock *r, uint64_t levels);
bool conc__rlock_mine(conc_rlock *r);
/* For a named condition: an RLock made in place in its segment (init) or
 * found there (NULL unless it is one); conc__rlock_embed_size() bytes,
 * 8-aligned.  Freed with the segment, never by conc_rlock_free. */
size_t conc__rlock_embed_size(void);
conc_rlock *conc__rlock_embed(void *mem, bool init);

#define CONC__SYNC_MAGIC_LOCK 0x4c4f434bu   /* "LOCK" */
#define CONC__SYNC_MAGIC_RLOCK 0x524c434bu  /* "RLCK" */
#define CONC__SYNC_MAGIC_SEM 0x53454d41u    /* "SEMA" */
#define CONC__SYNC_MAGIC_EVENT 0x45564e54u  /* "EVNT" */
#define CONC__SYNC_MAGIC_COND 0x434f4e44u   /* "COND" */
#define CONC__SYNC_MAGIC_BARRIER 0x42415252u /* "BARR" */
/* Every sync region's layout version, checked at open: one more at each
 * change of any region's fields (2: the barrier's gone count), so that a
 * segment made by an older build is refused, never misread. */
#define CONC__SYNC_LAYOUT 2u

#endif
