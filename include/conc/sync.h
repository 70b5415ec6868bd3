/* conc/sync.h - Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition
 * and Barrier, with Python's semantics, between threads and processes
 * alike.  Every object lives in shared memory of its own: one created
 * before conc_process_start() is the same object in the child.  None is
 * built on pthread condvars, which a waiter killed inside a wait can
 * leave wedged for every later waiter; they are futex words instead.
 *
 * Common rules: a NULL handle is CONC_EINVAL (false / 0 for the queries);
 * timeouts follow common.h (CONC_FOREVER, 0 = try once, NaN or another
 * negative = CONC_EINVAL); a wait interrupted by a signal goes on with
 * the time left.  conc_X_free() unmaps the object in the calling process
 * only (each process that inherited it frees its own copy); nobody may be
 * using it there.
 *
 * Names.  An object given .name ("name" or "/name", as conc_shm) lives in
 * POSIX shared memory, /dev/shm/<name>, and an unrelated process reaches
 * it with conc_X_open(&x, name); it is then the same object there, dead
 * holders and waiters included.  The creating process owns the name: its
 * conc_X_free() unlinks it (unless the name now names another segment),
 * and an atexit handler does if it never frees (as for every named
 * object: conc_shm, values, queues, dicts).  Handles from conc_X_open()
 * and copies inherited by forked children never unlink.  conc_X_new with
 * a name: CONC_ESYS with errno EEXIST when the name is taken, CONC_EINVAL
 * for a bad name.  conc_X_open: 0; CONC_EINVAL (NULL argument, bad name,
 * or the name is not a libconc object of that kind - a lock opened as an
 * event, say - or of another layout version); CONC_ECORRUPT (a barrier
 * whose parties and slots, or a condition whose RLock, do not fit the
 * segment: it was scribbled on); CONC_EPERM (a segment of another user,
 * or one others may access: conc/shared.h's Trust and conc_shm_share);
 * CONC_ESYS (errno ENOENT: no such name); CONC_ENOMEM.
 * conc_errdetail() says which.  An open that races the creation waits
 * (up to a second) for the object to be made.
 * Free an opened handle with conc_X_free().  Each named handle holds one
 * file descriptor (close-on-exec) until it is freed.
 */
#ifndef CONC_SYNC_H
#define CONC_SYNC_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Lock ------------------------------------------------------------ */
typedef struct conc_lock conc_lock;
typedef struct conc_lock_opts {
    const char *name; /* NULL: anonymous; else named (see "Names") */
} conc_lock_opts;

/* conc_lock_new - an unlocked lock.  CONC_EINVAL, CONC_ENOMEM, CONC_ESYS
 * (named).  While the process that made an anonymous lock has one thread
 * and has not forked since, acquire and release take it with plain
 * loads and stores (as glibc does its private mutexes), about 3x faster;
 * so the processes that share it must come from fork() (conc_process_start
 * or the pool, or your own fork()), not a raw clone(), and threads from
 * pthread_create() or anything built on it. */
CONC_API int conc_lock_new(conc_lock **out, const conc_lock_opts *opts);
CONC_API int conc_lock_open(conc_lock **out, const char *name);

/* conc_lock_acquire - 0 when acquired; CONC_ETIMEDOUT; CONC_EOWNERDEAD
 * when acquired but the thread or process that held it died holding it
 * (the data it guards may be half-updated; the lock works on).  A dead
 * holder is noticed within about 50 ms by a blocked acquire, at once by a
 * try (timeout 0).  Not re-entrant: a second acquire by the holder waits
 * (and times out), as Python's Lock. */
CONC_API int conc_lock_acquire(conc_lock *l, double timeout);

/* conc_lock_release - any thread or process may release a held lock.
 * CONC_EPERM when it is not locked. */
CONC_API int conc_lock_release(conc_lock *l);
/* conc_lock_locked - whether someone holds it (a snapshot). */
CONC_API bool conc_lock_locked(conc_lock *l);
CONC_API void conc_lock_free(conc_lock *l);

/* ---- RLock ----------------------------------------------------------- */
typedef struct conc_rlock conc_rlock;
typedef struct conc_rlock_opts {
    const char *name; /* NULL: anonymous; else named (see "Names") */
} conc_rlock_opts;

CONC_API int conc_rlock_new(conc_rlock **out, const conc_rlock_opts *opts);
CONC_API int conc_rlock_open(conc_rlock **out, const char *name);
/* conc_rlock_acquire - re-entrant for the owning thread; otherwise as
 * conc_lock_acquire, CONC_EOWNERDEAD included (the dead owner's levels
 * are dropped: the caller then holds it at level 1).  A forked child is a
 * different thread: it does not own its parent's RLock. */
CONC_API int conc_rlock_acquire(conc_rlock *r, double timeout);
/* conc_rlock_release - drops one level; CONC_EPERM unless the caller's
 * thread owns it. */
CONC_API int conc_rlock_release(conc_rlock *r);
CONC_API bool conc_rlock_locked(conc_rlock *r);
CONC_API void conc_rlock_free(conc_rlock *r);

/* ---- Semaphore / BoundedSemaphore ------------------------------------ */
typedef struct conc_sem conc_sem;
typedef struct conc_sem_opts {
    long value;   /* the initial value as given (0 is Semaphore(0));
                     NULL opts: 1.  Negative: CONC_EINVAL */
    bool bounded; /* BoundedSemaphore: release past the initial value is
                     CONC_EINVAL */
    const char *name; /* NULL: anonymous; else named (see "Names") */
} conc_sem_opts;

/* conc_sem_new - CONC_EINVAL for a value below 0 or above INT32_MAX;
 * CONC_ENOMEM; CONC_ESYS (named). */
CONC_API int conc_sem_new(conc_sem **out, const conc_sem_opts *opts);
/* conc_sem_open - the named semaphore, bound and all. */
CONC_API int conc_sem_open(conc_sem **out, const char *name);
/* conc_sem_acquire - 0 when decremented, CONC_ETIMEDOUT. */
CONC_API int conc_sem_acquire(conc_sem *s, double timeout);
/* conc_sem_release - adds n (n = 0 is CONC_EINVAL), waking up to n
 * waiters.  Bounded: CONC_EINVAL, and nothing added, if it would pass the
 * initial value; unbounded: the same past INT32_MAX.  Never blocks. */
CONC_API int conc_sem_release(conc_sem *s, unsigned n);
/* conc_sem_value - the current value (a snapshot); CONC_EINVAL for NULL. */
CONC_API long conc_sem_value(conc_sem *s);
CONC_API void conc_sem_free(conc_sem *s);

/* ---- Event ----------------------------------------------------------- */
typedef struct conc_event conc_event;
typedef struct conc_event_opts {
    const char *name; /* NULL: anonymous; else named (see "Names") */
} conc_event_opts;

CONC_API int conc_event_new(conc_event **out, const conc_event_opts *opts);
CONC_API int conc_event_open(conc_event **out, const char *name);
/* conc_event_set - sets the flag and wakes every waiter; a waiter woken by
 * a set() returns 0 even if clear() follows at once (Python's rule). */
CONC_API int conc_event_set(conc_event *e);
CONC_API int conc_event_clear(conc_event *e);
/* conc_event_wait - 0 once the flag is set (at once if it is), else
 * CONC_ETIMEDOUT. */
CONC_API int conc_event_wait(conc_event *e, double timeout);
CONC_API bool conc_event_is_set(conc_event *e);
CONC_API void conc_event_free(conc_event *e);

/* ---- Condition ------------------------------------------------------- */
typedef struct conc_cond conc_cond;
typedef struct conc_cond_opts {
    conc_lock *lock;   /* at most one of lock and rlock; */
    conc_rlock *rlock; /* neither: a new RLock of its own */
    const char *name;  /* NULL: anonymous; else named (see "Names"), with
                          an RLock of its own in the same segment (so an
                          opener finds it): lock or rlock with a name is
                          CONC_EINVAL */
} conc_cond_opts;

typedef bool (*conc_pred_fn)(void *arg);

CONC_API int conc_cond_new(conc_cond **out, const conc_cond_opts *opts);
/* conc_cond_open - the named condition and its own RLock. */
CONC_API int conc_cond_open(conc_cond **out, const char *name);
CONC_API int conc_cond_acquire(conc_cond *c, double timeout);
CONC_API int conc_cond_release(conc_cond *c);
/* conc_cond_wait - releases the lock fully, waits for a notify, restores
 * the lock (at every level, without a deadline, as Python), then returns:
 * 0 when notified (never spuriously), CONC_ETIMEDOUT, CONC_EPERM when the
 * lock is not held, CONC_EOWNERDEAD when re-acquiring found the lock's
 * holder dead (the lock is held; this code wins over the other two).  A
 * waiter whose time runs out as a notify arrives either takes it (0) or
 * leaves it to another waiter: a notify is never swallowed by a timeout.
 * A waiter that waits after a notify cannot take it. */
CONC_API int conc_cond_wait(conc_cond *c, double timeout);
/* conc_cond_wait_for - waits until pred(arg) holds: 0, or CONC_ETIMEDOUT
 * with pred still false; pred is called holding the lock.  CONC_EPERM and
 * CONC_EOWNERDEAD as conc_cond_wait (returned at once). */
CONC_API int conc_cond_wait_for(conc_cond *c, conc_pred_fn pred, void *arg,
                                double timeout);
/* conc_cond_notify - wakes at most n waiters (exactly min(n, waiting)
 * unless some waiter was killed while waiting: it may absorb one notify).
 * n = 0 does nothing.  Never blocks.  CONC_EPERM unless held. */
CONC_API int conc_cond_notify(conc_cond *c, unsigned n);
CONC_API int conc_cond_notify_all(conc_cond *c);
CONC_API void conc_cond_free(conc_cond *c);

/* ---- Barrier --------------------------------------------------------- */
typedef struct conc_barrier conc_barrier;
typedef int (*conc_barrier_action_fn)(void *action_arg);
typedef struct conc_barrier_opts {
    unsigned parties;              /* required, > 0 */
    conc_barrier_action_fn action; /* run by one party before release,
                                      holding the barrier's lock: it must
                                      not call wait/abort/reset on the
                                      same barrier */
    void *action_arg;
    conc_timeout timeout;          /* what a wait given CONC_FOREVER
                                      waits at most (Python's
                                      Barrier(timeout=)); not given: no
                                      limit.  CONC_TIMEOUT(0) breaks the
                                      barrier on any wait but the last */
    const char *name;              /* NULL: anonymous; else named (see
                                      "Names"), without an action: an
                                      opener could not run the creator's
                                      function, so name with action is
                                      CONC_EINVAL */
} conc_barrier_opts;

/* conc_barrier_new - CONC_EINVAL for NULL opts, parties 0 or above
 * INT_MAX, a timeout that is NaN or negative other than CONC_FOREVER;
 * CONC_ENOMEM; CONC_ESYS (named). */
CONC_API int conc_barrier_new(conc_barrier **out, const conc_barrier_opts *opts);
/* conc_barrier_open - the named barrier: its parties and timeout are the
 * creator's. */
CONC_API int conc_barrier_open(conc_barrier **out, const char *name);
/* conc_barrier_wait - 0 and a distinct *index in 0..parties-1 once all
 * parties arrived; CONC_EBROKEN when the barrier is or becomes broken
 * (abort, reset while waiting, a wait that timed out, an action returning
 * non-zero): as Python, the party whose wait ran out gets CONC_EBROKEN
 * too.  CONC_EINVAL for a bad timeout.  CONC_FOREVER means the
 * barrier's own timeout, if any, applies.  A party that dies in wait()
 * (SIGKILL included, in the action too; the first 1024 parties are
 * watched) breaks the round: the others get CONC_EBROKEN within about
 * 0.1 s, and reset() makes the barrier usable again (Python's parties
 * would hang for ever). */
CONC_API int conc_barrier_wait(conc_barrier *b, double timeout, int *index);
CONC_API int conc_barrier_abort(conc_barrier *b);
CONC_API int conc_barrier_reset(conc_barrier *b);
CONC_API unsigned conc_barrier_parties(conc_barrier *b);
CONC_API unsigned conc_barrier_n_waiting(conc_barrier *b);
CONC_API bool conc_barrier_broken(conc_barrier *b);
CONC_API void conc_barrier_free(conc_barrier *b);

#ifdef __cplusplus
}
#endif
#endif
