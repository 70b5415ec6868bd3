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

/* ---- Lock ------------------------------------------------------------
 *
 * On a server (.url).  A Lock that processes on different hosts share,
 * served by Redis (URLs as conc/queue.h describes them):
 *   conc_lock_new(&l, &(conc_lock_opts){ .url = "redis://10.0.0.5:6379/0",
 *                                         .name = "tickets" });
 *   conc_lock_open(&l, "redis://10.0.0.5:6379/0/tickets");  // any host
 * conc_lock_new makes it or attaches to it (CONC_EINVAL when the name
 * holds keys of another kind); conc_lock_open attaches (CONC_EINVAL when
 * there is no such lock).  It lives on the server under keys
 * "conc:{l:<name>}..." until they are deleted.
 *   A grant is leased: the server frees the lock when the holder's lease
 * (.lease, 30 s) runs out.  The holder's process renews it every lease/3
 * from background threads while it lives (conc/queue.h, "On a server",
 * says what they cost), so a holder may keep the lock as long as
 * it likes; a holder killed (SIGKILL, a lost host) frees it within a
 * lease, and the next acquire returns CONC_EOWNERDEAD holding the lock,
 * as for a shared-memory lock.  What no lease lock can promise: a holder
 * stopped (SIGSTOP, swap, a frozen VM) or cut off from the server for
 * longer than its lease loses the lock while it still believes it holds
 * it, and another process acquires it; its release then returns
 * CONC_EPERM, after the fact.  The protected resource can refuse the late
 * holder's writes by their fencing number (conc_lock_fence).  Without
 * persistence on the server a restart frees every lock.
 *   Per function: acquire is one round trip when the lock is free (a
 * script: SET NX PX, the fence, the owner record); a waiter blocks on
 * the server until a release or the holder's lease end, in slices of at
 * most 2 s, and its timeout counts connecting and the round trips
 * (giving it at most 1 s past its timeout when the server does not
 * answer: CONC_ETIMEDOUT).  release is one round trip.  The handle that
 * acquired (any of its threads, or a child forked while it held the
 * lock) releases its own grant, CONC_EPERM when its lease ran out
 * meanwhile; any other handle, as any process may release Python's Lock,
 * releases whoever holds it (CONC_EPERM only when the lock is free), and
 * that holder then finds its grant gone (its own release says
 * CONC_EPERM, as after a lost lease).  locked is one round trip.  free does not release a held lock: its lease then
 * runs out and the next acquirer gets CONC_EOWNERDEAD.  Errors beyond
 * the shared-memory ones: CONC_ENET, CONC_EAUTH, CONC_ETIMEDOUT,
 * CONC_ECORRUPT, as for queues; locked() is false on such an error
 * (conc_errdetail() says why).  A lock on a server may serve a Condition
 * (.lock): its waits and notifies stay on this host. */
typedef struct conc_lock conc_lock;
typedef struct conc_lock_opts {
    const char *name; /* NULL: anonymous; else named (see "Names"); with
                         .url, the lock's name on the server */
    /* A lock on a server ("On a server" below): the server's URL.
     * NULL: shared memory, which has no use for .lease and .net_timeout
     * and refuses them (CONC_EINVAL). */
    const char *url;
    /* On a server: the holder's lease, CONC_TIMEOUT(seconds) from 0.1 s
     * to 1e6 s, renewed every lease/3 while the holder's process lives.
     * Left out: 30 s, or, for conc_lock_open, the lease the lock's maker
     * gave (the server keeps it with the lock).  CONC_TIMEOUT(0) or
     * CONC_FOREVER: CONC_EINVAL (a lease must end, or a dead holder
     * would keep the lock). */
    conc_timeout lease;
    /* On a server: the bound on calls that take no timeout (new, open,
     * release, locked) and on each round trip of an acquire given
     * timeout 0 or CONC_FOREVER.  Left out: 10 s. */
    conc_timeout net_timeout;
} conc_lock_opts;

/* conc_lock_new - an unlocked lock.  CONC_EINVAL, CONC_ENOMEM, CONC_ESYS
 * (named).  While the process that made an anonymous lock has one thread
 * and has not forked since, acquire and release take it with plain
 * loads and stores (as glibc does its private mutexes), about 3x faster;
 * so the processes that share it must come from fork() (conc_process_start
 * or the pool, or your own fork()), not a raw clone(), and threads from
 * pthread_create() or anything built on it.
 * On a server (.url): makes the lock there or attaches to it, one round
 * trip bounded by .net_timeout; CONC_EINVAL also for a bad URL or name,
 * a lease out of range, keys of another kind under the name, a backend
 * not built; CONC_ENET, CONC_EAUTH, CONC_ETIMEDOUT. */
CONC_API int conc_lock_new(conc_lock **out, const conc_lock_opts *opts);
/* conc_lock_open - a handle on the named lock another process made.
 * name may be a URL naming a lock on a server
 * ("redis://host:6379/0/tickets"): CONC_EINVAL when there is no such lock
 * there; otherwise as conc_lock_new. */
CONC_API int conc_lock_open(conc_lock **out, const char *name);

/* conc_lock_acquire - 0 when acquired; CONC_ETIMEDOUT; CONC_EOWNERDEAD
 * when acquired but the thread or process that held it died holding it
 * (the data it guards may be half-updated; the lock works on).  A dead
 * holder is noticed within about 50 ms by a blocked acquire, at once by a
 * try (timeout 0).  Not re-entrant: a second acquire by the holder waits
 * (and times out), as Python's Lock.
 * On a server: one round trip when the lock is free; a waiter wakes one
 * round trip after a release, or when the holder's lease ends (then with
 * CONC_EOWNERDEAD); the timeout covers connecting and every round trip,
 * and a frozen server gives CONC_ETIMEDOUT at most 1 s past it.  An
 * acquire that failed after its request may have reached the server
 * (CONC_ENET: the connection broke; CONC_ECORRUPT: an answer that could
 * not be read) gives back the grant it may have got, within 1 s more, so
 * that no lock stays granted to nobody; after CONC_ETIMEDOUT it cannot
 * (the server did not answer), and a grant made meanwhile, which nobody
 * renews, lapses within a lease: the next acquirer gets
 * CONC_EOWNERDEAD. */
CONC_API int conc_lock_acquire(conc_lock *l, double timeout);

/* conc_lock_release - any thread or process may release a held lock.
 * CONC_EPERM when it is not locked.
 * On a server: one round trip.  Only the handle that acquired (any of
 * its threads, or a child forked while it held the lock) may release;
 * CONC_EPERM for another handle, and for the holder once its lease ran
 * out (the lock may have had another holder since: the detail says so)
 * - nothing changes then. */
CONC_API int conc_lock_release(conc_lock *l);
/* conc_lock_locked - whether someone holds it (a snapshot).  On a
 * server: one round trip; false when the server cannot be asked
 * (conc_errdetail() says why). */
CONC_API bool conc_lock_locked(conc_lock *l);
/* conc_lock_free - frees the handle (NULL is nothing).  On a server: a
 * grant this handle still holds is not released but no longer renewed,
 * as if its holder had died (the next acquire, within a lease, returns
 * CONC_EOWNERDEAD); the lock stays on the server. */
CONC_API void conc_lock_free(conc_lock *l);

/* conc_lock_fence - the fencing number of the grant this handle holds: a
 * number the server raises at every grant of the lock (and that goes on
 * rising after the server lost the lock's keys to a FLUSHALL, an
 * eviction or a restart without persistence: a lost counter starts again
 * from the server's clock in microseconds), so that a
 * resource the lock protects can refuse a write that carries a lower
 * number than one it has already seen (a holder stopped past its lease
 * cannot then overwrite the work of the next).  No round trip.  0 with
 * *token set; CONC_EPERM when this handle does not hold the lock;
 * CONC_EINVAL for NULL arguments or a shared-memory lock (which needs no
 * fence: its holder cannot outlive its hold). */
CONC_API int conc_lock_fence(conc_lock *l, uint64_t *token);

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
 * n = 0 does nothing.  Never blocks.  CONC_EPERM unless held.
 * Which waiters: roughly the oldest first, not in order.  Waiters are
 * counted in shared memory, not listed, in groups (a notify that finds
 * the oldest group all woken makes every waiter since the next one):
 * groups are served oldest first, a group's members in no set order.
 * So notify(1) with threads that began to wait one after another may
 * wake a later one before an earlier one, where Python's Condition wakes
 * the oldest first.  Python promises no order either; code that needs
 * one hands work over through a queue (FIFO), not through who wakes
 * first. */
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
 * barrier's own timeout, if any, applies.  The timeout bounds the whole
 * call: a party that arrives while the previous round still drains (a
 * released party has not left yet) or a reset completes waits for that
 * first, and if its time runs out there it gets CONC_ETIMEDOUT and the
 * barrier is left as it was, since it joined no round (Python waits for
 * the drain without a limit and starts the timeout after it).  The same
 * when the barrier's internal lock stays held by a live thread past the
 * timeout (a party stopped - SIGSTOP, a debugger - inside the action, or
 * a peer that wrote into a named barrier's segment): CONC_ETIMEDOUT (a
 * wait given 0 waits 10 ms for the lock).  A party that gives up so while
 * waiting in a round has left it, as a party that died has: once the
 * lock is free, a round still filling breaks (past the first 1024
 * parties, such a party waits for the lock instead).  A party that dies
 * in wait() (SIGKILL included, in the action too; the first 1024 parties
 * are watched) breaks the round: the others get CONC_EBROKEN within
 * about 0.1 s, and reset() makes the barrier usable again (Python's
 * parties would hang for ever).  CONC_ECORRUPT, *index untouched, when
 * a named barrier's segment holds a count of waiting parties or a state
 * that no barrier can (a peer scribbled on it): the wait breaks the
 * barrier, and reset() mends it.  Indexes, parties() and n_waiting()
 * keep to the parties the handle was made or opened with, whatever the
 * segment says later. */
CONC_API int conc_barrier_wait(conc_barrier *b, double timeout, int *index);
/* conc_barrier_abort, conc_barrier_reset - 0; CONC_ETIMEDOUT, nothing
 * changed, when the barrier's internal lock stays held by a live thread
 * for 1 s (a party stopped inside the action, say). */
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
