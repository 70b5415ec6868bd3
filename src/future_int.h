/* future_int.h - what the pool (pool.c and its backends) uses of futures
 * and iterators (future.c).  future.c knows nothing of pools: whoever
 * makes a future hands it a waiter hook (conc__future_waiter), and each
 * kind of iterator brings its own operations (conc__iter_ops).  Private
 * memory of one process; nothing here lives in shared memory.
 */
#ifndef CONC_FUTURE_INT_H
#define CONC_FUTURE_INT_H

#include "conc_int.h"

#include <pthread.h>
#include <sched.h>

/* Spin-then-sleep: a thread about to sleep first polls its condition for
 * up to CONC__SPIN_NS, because a futex round trip costs about 20 us on
 * these machines and many tasks take less.  Between polls it pauses with
 * conc__spin_pause(i), which after the first few microseconds yields the
 * CPU every eighth round: with more threads than cores (2 here) a
 * spinner that never yields keeps the thread it waits for off a CPU, and
 * throughput collapses. */
#define CONC__SPIN_NS 40000u
static inline void conc__spin_pause(unsigned i)
{
    if (i >= 64 && (i & 7) == 0) {
        sched_yield();
    } else {
        conc__cpu_relax();
    }
}

/* A condvar whose timed waits take CLOCK_MONOTONIC deadlines (the clock
 * of conc__deadline), as every condvar of futures, iterators and pools. */
static inline void conc__cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

/* ---- futures ------------------------------------------------------------ */

/* How a future ends: done (with a code, maybe an output and an error
 * text), or cancelled before it started. */
typedef enum { CONC__FUT_DONE, CONC__FUT_CANCELLED } conc__fut_final;

/* A fresh PENDING future with one reference (the caller's). */
int conc__future_new(conc_future **out);
void conc__future_ref(conc_future *f);
void conc__future_unref(conc_future *f);
/* PENDING -> RUNNING; false when it was cancelled (drop the task). */
bool conc__future_start(conc_future *f);
/* Completes f with code (out and err are taken over, err may be NULL);
 * the first completion wins, a later one is dropped (its out/err freed).
 * Runs the callbacks in this thread (or at the end of the batch, below). */
void conc__future_finish(conc_future *f, conc__fut_final final, int code,
                         conc_msg *out, char *err);
/* A batch of completions: between begin and end (they nest), futures this
 * thread completes become final at once but their callbacks wait for the
 * outermost end, which runs them in completion order.  So a callback that
 * waits for another future of the same batch finds it final, instead of
 * waiting for a completion queued behind itself in this very thread. */
void conc__future_defer_begin(void);
void conc__future_defer_end(void);

/* conc__future_waiter - how a thread waiting in conc_future_result helps
 * whatever will complete the future, set by the maker of the future
 * (conc__future_set_waiter) before anyone else sees it.  ctx is the
 * maker's.  Every function may be NULL.
 *   help     one round of work that may complete futures (collect
 *            finished results); never blocks.  Called once before a
 *            waiter spins, and between its spins.
 *   spin     a waiter starts (+1) or stops (-1) spinning with help.
 *   drives   called once before a waiter sleeps: true when the calling
 *            thread is the only one that can complete the future (it runs
 *            a callback for the completer); then the waiter runs drive
 *            between sleeps of at most 1 ms instead of sleeping until
 *            woken.
 *   drive    one whole round of the completer's work.
 *   foreign  true when no one in this process can complete the future
 *            (a child forked from the maker's): a wait for one not yet
 *            final returns CONC_ESTATE instead of waiting for ever.
 *   release  the future's last reference went; drops what ctx holds. */
typedef struct conc__future_waiter {
    void (*help)(void *ctx);
    void (*spin)(void *ctx, int delta);
    bool (*drives)(void *ctx);
    void (*drive)(void *ctx);
    bool (*foreign)(void *ctx);
    void (*release)(void *ctx);
} conc__future_waiter;
void conc__future_set_waiter(conc_future *f, const conc__future_waiter *w,
                             void *ctx);
/* conc_future_result, its errors' details naming who (conc_pool_apply). */
int conc__future_result_as(conc_future *f, conc_msg *out, double timeout,
                           const char *who);
/* The detail of a result that is a failure, code != 0 (a task's own code
 * > 0, or the pool's CONC_E* code), and returns code: "who: what failed
 * with CONC_EWORKERDIED: text" (what: "the task", "item 7"; text: its
 * error message, or NULL). */
int conc__result_fail(int code, const char *who, const char *what,
                      const char *text);

/* ---- iterators ---------------------------------------------------------- */

/* An iterator's kind: the public conc_iter_* functions check the
 * arguments, turn the timeout into a deadline and call these, which give
 * every error they return its detail (timeout: the seconds asked, for
 * it).  next (map
 * results) or next_future (as_completed) is NULL where the kind has none
 * (then the public call returns CONC_EINVAL).  progress fills the counts
 * (conc_iter_progress); free releases the whole iterator except
 * last_err. */
typedef struct conc__iter_ops {
    int (*next)(conc_iter *it, conc_msg *msg, const conc__deadline *dl,
                double timeout);
    int (*next_future)(conc_iter *it, conc_future **fut,
                       const conc__deadline *dl, double timeout);
    void (*progress)(const conc_iter *it, conc_progress *out);
    void (*free)(conc_iter *it);
} conc__iter_ops;

/* The head of every iterator (each kind's struct starts with it). */
struct conc_iter {
    const conc__iter_ops *ops;
    size_t last_index; /* input index of the item returned last, or -1 */
    char *last_err;    /* that item's error text (owned), or NULL */
};

#endif
