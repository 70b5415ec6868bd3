/* future.c - concurrent.futures.Future, wait() and as_completed(), and
 * the public face of every iterator (conc_iter_*).
 *
 * A future is private memory of the submitting process, reference-counted
 * (the caller's reference, the task's while it exists, one per
 * as_completed iterator that watches it), so the pool, the futures and
 * the iterators may be freed in any order.  This file knows nothing of
 * pools: the maker of a future completes it (conc__future_finish) and may
 * hand it a waiter hook (conc__future_waiter in future_int.h) through
 * which conc_future_result helps the completer while it waits - a
 * process pool's waiter collects results from the workers' rings itself.
 * The hook's context is released with the future's last reference.
 *
 * State word.  PENDING -> RUNNING is a CAS by whoever starts the task;
 * PENDING -> CANCELLED a CAS by conc_future_cancel; exactly one of the two
 * wins.  The final store (DONE or CANCELLED) is made under f->lock after
 * code/out/err are written, so a reader that loads a final state with
 * acquire order sees them; the lock also makes "register a callback" and
 * "complete" mutually exclusive, so every callback runs exactly once.
 * The first completion wins; a later one (a thread task that finishes
 * after its timeout already failed it) is dropped.
 *
 * Waking.  conc_future_result sleeps on the state word itself (a private
 * futex) after announcing itself in waiters; the completer stores the
 * state (seq_cst) and then reads waiters (seq_cst): either the waiter
 * sees the final state before sleeping, or the completer sees waiters > 0
 * and wakes it, and a futex wait on a state that already changed returns
 * at once.  conc_wait has to watch many futures, so every completion also
 * bumps one process-wide sequence word (done_seq) and wakes its sleepers
 * when any are announced, by the same argument.  as_completed registers
 * an internal done-callback on each future, which appends to the
 * iterator's completion list: that gives the order.
 *
 * Rejected: one condvar per future (a mutex round and a condvar per
 * completion, slower than a futex on the state word for the common "done
 * before asked" case); a global condvar for everything (every completion
 * would wake every waiter of every pool).
 */
#include "future_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The state word.  PENDING -> RUNNING (conc__future_start) races with
 * PENDING -> CANCELLED (conc_future_cancel), both by CAS: exactly one
 * wins.  The final states are stored under lock, after code/out/err. */
enum { FUT_PENDING = 0, FUT_RUNNING = 1, FUT_DONE = 2, FUT_CANCELLED = 3 };

struct fut_cb {
    struct fut_cb *next;
    conc_future_cb cb;
    void *arg;
    bool borrowed; /* part of an as_completed block: not freed alone */
};

struct conc_future {
    _Atomic uint32_t state;   /* FUT_* */
    _Atomic uint32_t waiters; /* threads asleep on state */
    _Atomic long refs;
    pthread_mutex_t lock;     /* guards cbs and the move to a final state */
    struct fut_cb *cbs, *cbs_tail;
    int code;
    conc_msg out;
    char *err;
    /* The maker's waiter hook (NULL: none) and its context, released
     * with the last reference. */
    const conc__future_waiter *wt;
    void *wctx;
};

/* Bumped on every completion; conc_wait sleeps on it. */
static _Atomic uint32_t done_seq;
static _Atomic uint32_t done_waiters;

int conc__future_new(conc_future **out)
{
    conc_future *f = conc__calloc(1, sizeof *f);
    if (f == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_pool: no memory for a future");
    }
    pthread_mutex_init(&f->lock, NULL);
    atomic_init(&f->state, FUT_PENDING);
    atomic_init(&f->refs, 1);
    *out = f;
    return 0;
}

void conc__future_ref(conc_future *f)
{
    /* Relaxed: a new reference is made from an existing one, which keeps
     * the object alive meanwhile. */
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

void conc__future_unref(conc_future *f)
{
    /* acq_rel: the last owner must see every write made by the others
     * before it frees. */
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    struct fut_cb *c = f->cbs;
    while (c != NULL) {
        struct fut_cb *n = c->next;
        if (!c->borrowed) {
            free(c);
        }
        c = n;
    }
    conc_msg_free(&f->out);
    free(f->err);
    pthread_mutex_destroy(&f->lock);
    const conc__future_waiter *wt = f->wt;
    void *wctx = f->wctx;
    free(f);
    if (wt != NULL && wt->release != NULL) {
        wt->release(wctx);
    }
}

void conc__future_set_waiter(conc_future *f, const conc__future_waiter *w,
                             void *ctx)
{
    f->wt = w;
    f->wctx = ctx;
}

bool conc__future_start(conc_future *f)
{
    uint32_t want = FUT_PENDING;
    return atomic_compare_exchange_strong(&f->state, &want, FUT_RUNNING);
}

static void wake_all(conc_future *f)
{
    /* seq_cst loads after the seq_cst store of the final state: see the
     * wake-up argument at the top of the file. */
    if (atomic_load(&f->waiters) > 0) {
        /* Wakes conc_future_result's futex wait on f->state. */
        conc__os_futex_wake(&f->state, INT32_MAX, false);
    }
    atomic_fetch_add(&done_seq, 1);
    if (atomic_load(&done_waiters) > 0) {
        /* Wakes conc_wait's sleep on done_seq. */
        conc__os_futex_wake(&done_seq, INT32_MAX, false);
    }
}

/* Runs the callbacks taken off a future that has just become final,
 * without its lock, in the order they were added; frees the nodes the
 * future allocated. */
static void run_callbacks(conc_future *f, struct fut_cb *cbs)
{
    while (cbs != NULL) {
        struct fut_cb *n = cbs->next;
        bool borrowed = cbs->borrowed;
        cbs->cb(f, cbs->arg);
        if (!borrowed) {
            free(cbs);
        }
        cbs = n;
    }
}

/* Callbacks held back while this thread completes a batch of futures
 * (conc__future_defer_begin/end): each future with its callbacks and a
 * reference, in completion order. */
struct deferred {
    conc_future *f;
    struct fut_cb *cbs;
    struct deferred *next;
};
static _Thread_local struct {
    unsigned depth;
    struct deferred *head, *tail;
} defer;

void conc__future_defer_begin(void)
{
    defer.depth++;
}

void conc__future_defer_end(void)
{
    if (--defer.depth > 0) {
        return;
    }
    /* Taken off first: a callback that completes futures in turn (a
     * nested batch) defers and runs its own. */
    struct deferred *d = defer.head;
    defer.head = defer.tail = NULL;
    while (d != NULL) {
        struct deferred *n = d->next;
        run_callbacks(d->f, d->cbs);
        conc__future_unref(d->f);
        free(d);
        d = n;
    }
}

/* Holds cbs back until the batch ends; false when none is open (or no
 * memory for the note: then they run at once, as outside a batch). */
static bool defer_callbacks(conc_future *f, struct fut_cb *cbs)
{
    if (defer.depth == 0) {
        return false;
    }
    /* Plain malloc, not a fault point of the tests: failing here only
     * runs the callbacks at once. */
    struct deferred *d = malloc(sizeof *d);
    if (d == NULL) {
        return false;
    }
    conc__future_ref(f);
    d->f = f;
    d->cbs = cbs;
    d->next = NULL;
    if (defer.tail != NULL) {
        defer.tail->next = d;
    } else {
        defer.head = d;
    }
    defer.tail = d;
    return true;
}

void conc__future_finish(conc_future *f, conc__fut_final final, int code,
                         conc_msg *out, char *err)
{
    pthread_mutex_lock(&f->lock);
    uint32_t st = atomic_load_explicit(&f->state, memory_order_relaxed);
    if (st == FUT_DONE || st == FUT_CANCELLED) {
        pthread_mutex_unlock(&f->lock);
        if (out != NULL) {
            conc_msg_free(out);
        }
        free(err);
        return;
    }
    f->code = code;
    if (out != NULL) {
        f->out = *out;
        out->data = NULL;
        out->len = 0;
    }
    f->err = err;
    atomic_store(&f->state,
                 final == CONC__FUT_CANCELLED ? FUT_CANCELLED : FUT_DONE);
    struct fut_cb *cbs = f->cbs;
    f->cbs = f->cbs_tail = NULL;
    pthread_mutex_unlock(&f->lock);
    wake_all(f);
    if (cbs != NULL && !defer_callbacks(f, cbs)) {
        run_callbacks(f, cbs);
    }
}

static bool is_final(uint32_t st)
{
    return st == FUT_DONE || st == FUT_CANCELLED;
}

/* Whether f's result can never come to this process: f is not done, and
 * its pool belongs to the process this one was forked from (pool.h,
 * "Fork"), whose workers and threads are not here. */
static bool stranded(const conc_future *f)
{
    const conc__future_waiter *wt = f->wt;
    return !is_final(atomic_load(&f->state)) && wt != NULL &&
           wt->foreign != NULL && wt->foreign(f->wctx);
}

/* The detail of a wait refused because a future is stranded. */
#define STRANDED_WHY                                                       \
    "pool belongs to the process that made it, and this one was forked "  \
    "from it: its result cannot come here"

int conc__result_fail(int code, const char *who, const char *what,
                      const char *text)
{
    if (code > 0) {
        return conc__fail(code, "%s: %s returned its failure code %d%s%s",
                          who, what, code, text ? ": " : "",
                          text ? text : "");
    }
    return conc__fail(code, "%s: %s failed with %s%s%s", who, what,
                      conc_errname(code), text ? ": " : "", text ? text : "");
}

int conc_future_result(conc_future *f, conc_msg *out, double timeout)
{
    return conc__future_result_as(f, out, timeout, "conc_future_result");
}

int conc__future_result_as(conc_future *f, conc_msg *out, double timeout,
                           const char *who)
{
    if (out != NULL) {
        out->data = NULL;
        out->len = 0;
    }
    if (f == NULL) {
        return conc__fail(CONC_EINVAL, "%s: f is NULL", who);
    }
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return conc__fail(CONC_EINVAL,
                          "%s: timeout %g: it must be >= 0 (0: do not wait) or "
                          "CONC_FOREVER",
                          who, timeout);
    }
    if (stranded(f)) {
        return conc__fail(CONC_ESTATE, "%s: the future's " STRANDED_WHY,
                          who);
    }
    uint32_t st = atomic_load(&f->state);
    const conc__future_waiter *wt = f->wt;
    if (!is_final(st) && wt != NULL && wt->help != NULL) {
        /* The completer may be helped from here (a process pool's waiter
         * collects its result from the worker's ring rather than wait for
         * the pool's manager thread to pass it on: one party less). */
        wt->help(f->wctx);
        st = atomic_load(&f->state);
    }
    /* A short spin first: a task of a few microseconds is often done
     * before a futex round trip (about 20 us here) could report it.  A
     * waiter with a hook helps while it spins, and only then. */
    if (!is_final(st) && !dl.once) {
        if (wt != NULL && wt->spin != NULL) {
            wt->spin(f->wctx, 1);
        }
        uint64_t until = conc__now_ns() + CONC__SPIN_NS;
        for (unsigned i = 0; !is_final(st); i++) {
            if ((i & 15) == 15 && conc__now_ns() > until) {
                break;
            }
            conc__spin_pause(i);
            if (wt != NULL && wt->help != NULL) {
                wt->help(f->wctx);
            }
            st = atomic_load(&f->state);
        }
        if (wt != NULL && wt->spin != NULL) {
            wt->spin(f->wctx, -1);
        }
    }
    if (!is_final(st)) {
        if (dl.once) {
            /* A constant sentence for conc_future_result: a poll meets
             * this on every call. */
            return strcmp(who, "conc_future_result") == 0
                       ? conc__fail_lit(CONC_ETIMEDOUT,
                                        "conc_future_result: the task is "
                                        "not done (timeout 0: no wait)")
                       : conc__fail(CONC_ETIMEDOUT, "%s: the task is not "
                                    "done (timeout 0: no wait)", who);
        }
        /* This thread alone can complete the future (a done-callback run
         * by a process pool's manager waits for another future of its
         * pool: nobody else may collect the result, reap a dead worker or
         * carry out a terminate): it does the completer's whole round,
         * between sleeps of 1 ms. */
        bool drive = wt != NULL && wt->drives != NULL && wt->drive != NULL &&
                     wt->drives(f->wctx);
        atomic_fetch_add(&f->waiters, 1);
        for (;;) {
            st = atomic_load(&f->state);
            if (is_final(st)) {
                break;
            }
            conc__deadline slice = dl;
            if (drive) {
                wt->drive(f->wctx);
                st = atomic_load(&f->state);
                if (is_final(st)) {
                    break;
                }
                if (conc__deadline_left(&dl) > 0.001) {
                    conc__deadline_init(&slice, 0.001);
                }
            }
            /* Sleeps only while the state is still st; the completer's
             * store changes it before its wake (wake_all). */
            if (conc__os_futex_wait(&f->state, st, &slice, false) ==
                    CONC_ETIMEDOUT &&
                conc__deadline_passed(&dl)) {
                st = atomic_load(&f->state);
                if (!is_final(st)) {
                    atomic_fetch_sub(&f->waiters, 1);
                    return conc__fail(CONC_ETIMEDOUT,
                                      "%s: the task was not done within "
                                      "%g s",
                                      who, timeout);
                }
            }
        }
        atomic_fetch_sub(&f->waiters, 1);
    }
    if (st == FUT_CANCELLED) {
        return conc__fail(CONC_ECANCELLED, "%s: the future was cancelled%s%s",
                          who, f->err ? ": " : "", f->err ? f->err : "");
    }
    if (out != NULL && f->out.len > 0) {
        out->data = conc__malloc(f->out.len);
        if (out->data == NULL) {
            return conc__fail(CONC_ENOMEM,
                              "%s: no memory for a copy of the task's "
                              "output (%zu bytes)",
                              who, f->out.len);
        }
        memcpy(out->data, f->out.data, f->out.len);
        out->len = f->out.len;
    }
    if (f->code != 0) {
        return conc__result_fail(f->code, who, "the task", f->err);
    }
    return 0;
}

const char *conc_future_error_message(conc_future *f)
{
    if (f == NULL || !is_final(atomic_load(&f->state))) {
        return NULL;
    }
    return f->err;
}

bool conc_future_cancel(conc_future *f)
{
    if (f == NULL) {
        return false;
    }
    pthread_mutex_lock(&f->lock);
    uint32_t want = FUT_PENDING;
    /* Races with conc__future_start's CAS to RUNNING: one of the two
     * wins.  Under the lock so that no callback is added meanwhile. */
    if (!atomic_compare_exchange_strong(&f->state, &want, FUT_CANCELLED)) {
        pthread_mutex_unlock(&f->lock);
        return want == FUT_CANCELLED;
    }
    f->code = CONC_ECANCELLED;
    struct fut_cb *cbs = f->cbs;
    f->cbs = f->cbs_tail = NULL;
    pthread_mutex_unlock(&f->lock);
    wake_all(f);
    run_callbacks(f, cbs);
    return true;
}

bool conc_future_cancelled(conc_future *f)
{
    return f != NULL && atomic_load(&f->state) == FUT_CANCELLED;
}

bool conc_future_running(conc_future *f)
{
    return f != NULL && atomic_load(&f->state) == FUT_RUNNING;
}

bool conc_future_done(conc_future *f)
{
    return f != NULL && is_final(atomic_load(&f->state));
}

int conc_future_add_done_callback(conc_future *f, conc_future_cb cb,
                                  void *arg)
{
    if (f == NULL || cb == NULL) {
        return conc__fail(CONC_EINVAL, "conc_future_add_done_callback: %s "
                          "is NULL", f == NULL ? "f" : "cb");
    }
    struct fut_cb *c = conc__malloc(sizeof *c);
    if (c == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_future_add_done_callback: no "
                          "memory for the callback");
    }
    c->cb = cb;
    c->arg = arg;
    c->next = NULL;
    c->borrowed = false;
    pthread_mutex_lock(&f->lock);
    if (!is_final(atomic_load(&f->state))) {
        if (f->cbs_tail != NULL) {
            f->cbs_tail->next = c;
        } else {
            f->cbs = c;
        }
        f->cbs_tail = c;
        pthread_mutex_unlock(&f->lock);
        return 0;
    }
    pthread_mutex_unlock(&f->lock);
    free(c);
    cb(f, arg);
    return 0;
}

void conc_future_free(conc_future *f)
{
    if (f != NULL) {
        conc__future_unref(f);
    }
}

/* ---- wait ---------------------------------------------------------------- */

static bool failed(conc_future *f)
{
    uint32_t st = atomic_load(&f->state);
    return st == FUT_CANCELLED || (st == FUT_DONE && f->code != 0);
}

static bool wait_holds(conc_future *const *futs, size_t n, int when)
{
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_final(atomic_load(&futs[i]->state))) {
            done++;
            if (when == CONC_FIRST_COMPLETED) {
                return true;
            }
            if (when == CONC_FIRST_EXCEPTION && failed(futs[i])) {
                return true;
            }
        }
    }
    return done == n;
}

int conc_wait(conc_future *const *futs, size_t n, double timeout,
              int return_when)
{
    if (return_when != CONC_FIRST_COMPLETED &&
        return_when != CONC_FIRST_EXCEPTION &&
        return_when != CONC_ALL_COMPLETED) {
        return conc__fail(CONC_EINVAL,
                          "conc_wait: return_when %d is not one of "
                          "CONC_FIRST_COMPLETED, CONC_FIRST_EXCEPTION, "
                          "CONC_ALL_COMPLETED",
                          return_when);
    }
    if (futs == NULL && n > 0) {
        return conc__fail(CONC_EINVAL, "conc_wait: futs is NULL with n %zu",
                          n);
    }
    for (size_t i = 0; i < n; i++) {
        if (futs[i] == NULL) {
            return conc__fail(CONC_EINVAL, "conc_wait: futs[%zu] is NULL",
                              i);
        }
    }
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return CONC__FAIL_TIMEOUT(timeout);
    }
    if (n == 0) {
        return 0;
    }
    atomic_fetch_add(&done_waiters, 1);
    int err = 0;
    for (;;) {
        uint32_t seq = atomic_load(&done_seq);
        if (wait_holds(futs, n, return_when)) {
            break;
        }
        /* Before each wait: a condition that can no longer hold would
         * make it run out its time (or never end).  All completed cannot
         * with one future stranded; the first to complete (or fail)
         * cannot once every future not done is stranded. */
        size_t open = 0, cut = 0, at = 0;
        for (size_t i = 0; i < n; i++) {
            if (!is_final(atomic_load(&futs[i]->state))) {
                open++;
                if (stranded(futs[i])) {
                    at = cut++ == 0 ? i : at;
                }
            }
        }
        if (cut > 0 && (return_when == CONC_ALL_COMPLETED || cut == open)) {
            /* One of this process's may have completed since the first
             * look: it counts (futures only ever become final). */
            if (wait_holds(futs, n, return_when)) {
                break;
            }
            err = conc__fail(CONC_ESTATE, "conc_wait: futs[%zu]'s "
                             STRANDED_WHY, at);
            break;
        }
        if (dl.once) {
            err = conc__fail_lit(CONC_ETIMEDOUT, "conc_wait: the condition "
                                 "does not hold (timeout 0: no wait)");
            break;
        }
        if (conc__deadline_passed(&dl)) {
            err = conc__fail(CONC_ETIMEDOUT,
                             "conc_wait: the condition did not hold within "
                             "%g s",
                             timeout);
            break;
        }
        /* Sleeps while no completion happened since seq was read; a
         * completer bumps done_seq before it checks done_waiters
         * (wake_all). */
        conc__os_futex_wait(&done_seq, seq, &dl, false);
    }
    atomic_fetch_sub(&done_waiters, 1);
    return err;
}

/* ---- as_completed -------------------------------------------------------- */

struct ac_state {
    _Atomic long refs; /* the iterator + each callback not yet run */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    size_t n;            /* futures to hand out: futs's distinct ones */
    size_t nslots;       /* entries of futs, order, args and cbs */
    conc_future **futs;  /* referenced; NULL where it repeats an earlier */
    size_t *order;       /* indices in completion order */
    size_t ndone;
    size_t pos;          /* order[pos..ndone): counted, perhaps not out */
    size_t next;         /* futures handed out */
    bool *handed;        /* per entry of futs: handed out already */
    conc__deadline dl;
    struct ac_cb_arg *args; /* n callback arguments, one block */
    struct fut_cb *cbs;     /* n callback nodes, one block */
};

/* An as_completed iterator: its state outlives it while callbacks that
 * were registered on unfinished futures have not run. */
struct ac_iter {
    conc_iter base;
    struct ac_state *ac;
};

static void ac_unref(struct ac_state *ac)
{
    if (atomic_fetch_sub_explicit(&ac->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (size_t i = 0; i < ac->nslots; i++) {
        if (ac->futs[i] != NULL) {
            conc__future_unref(ac->futs[i]);
        }
    }
    free(ac->futs);
    free(ac->order);
    free(ac->handed);
    free(ac->args);
    free(ac->cbs);
    pthread_mutex_destroy(&ac->lock);
    pthread_cond_destroy(&ac->cond);
    free(ac);
}

struct ac_cb_arg {
    struct ac_state *ac;
    size_t index;
};

static void ac_on_done(conc_future *f, void *arg)
{
    (void)f;
    struct ac_cb_arg *a = arg;
    struct ac_state *ac = a->ac;
    pthread_mutex_lock(&ac->lock);
    ac->order[ac->ndone++] = a->index;
    pthread_cond_broadcast(&ac->cond);
    pthread_mutex_unlock(&ac->lock);
    ac_unref(ac);
}

static int ac_next(conc_iter *it, conc_future **fut, const conc__deadline *dl,
                   double timeout)
{
    struct ac_state *ac = ((struct ac_iter *)it)->ac;
    /* The earlier of this call's deadline and the iterator's own. */
    const conc__deadline *use = dl;
    if (!ac->dl.forever &&
        (dl->forever ||
         (!dl->once && (ac->dl.at.tv_sec < dl->at.tv_sec ||
                        (ac->dl.at.tv_sec == dl->at.tv_sec &&
                         ac->dl.at.tv_nsec < dl->at.tv_nsec))))) {
        use = &ac->dl;
    }
    int err = 0;
    pthread_mutex_lock(&ac->lock);
    for (;;) {
        if (ac->next == ac->n) {
            err = conc__fail(CONC_ECLOSED,
                             "conc_iter_next_future: all %zu futures were "
                             "handed out",
                             ac->n);
            break;
        }
        /* The next in completion order not handed out yet... */
        while (ac->pos < ac->ndone && ac->handed[ac->order[ac->pos]]) {
            ac->pos++;
        }
        size_t take = ac->pos < ac->ndone ? ac->order[ac->pos++] : SIZE_MAX;
        /* ...or one done whose callback has not come: it is on its way,
         * or, in a child forked between the two, never comes. */
        size_t coming = 0, at = SIZE_MAX;
        for (size_t i = 0; i < ac->nslots && take == SIZE_MAX; i++) {
            if (ac->futs[i] == NULL || ac->handed[i]) {
                continue;
            }
            if (is_final(atomic_load(&ac->futs[i]->state))) {
                take = i;
            } else if (!stranded(ac->futs[i])) {
                coming++;
            } else if (at == SIZE_MAX) {
                at = i;
            }
        }
        if (take != SIZE_MAX) {
            ac->handed[take] = true;
            ac->next++;
            *fut = ac->futs[take];
            it->last_index = take;
            break;
        }
        /* Before each wait, as conc_wait() does: nothing can come when
         * every future still out is stranded. */
        if (coming == 0 && at != SIZE_MAX) {
            err = conc__fail(CONC_ESTATE, "conc_iter_next_future: "
                             "futs[%zu]'s " STRANDED_WHY, at);
            break;
        }
        if (use->once || conc__deadline_passed(use) ||
            conc__deadline_passed(&ac->dl)) {
            err = !conc__deadline_passed(&ac->dl) && use->once
                      ? conc__fail_lit(CONC_ETIMEDOUT,
                                       "conc_iter_next_future: no further "
                                       "future is done (timeout 0: no "
                                       "wait)")
                  : conc__deadline_passed(&ac->dl)
                      ? conc__fail(CONC_ETIMEDOUT,
                                   "conc_iter_next_future: %zu of %zu "
                                   "futures unfinished at the iterator's "
                                   "deadline",
                                   ac->n - ac->ndone, ac->n)
                      : conc__fail(CONC_ETIMEDOUT,
                                   "conc_iter_next_future: %zu of %zu "
                                   "futures unfinished after %g s",
                                   ac->n - ac->ndone, ac->n, timeout);
            break;
        }
        if (use->forever) {
            pthread_cond_wait(&ac->cond, &ac->lock);
        } else {
            pthread_cond_timedwait(&ac->cond, &ac->lock, &use->at);
        }
    }
    pthread_mutex_unlock(&ac->lock);
    return err;
}

static void ac_free(conc_iter *it)
{
    ac_unref(((struct ac_iter *)it)->ac);
    free(it);
}

static void ac_progress(const conc_iter *it, conc_progress *out)
{
    struct ac_state *ac = ((const struct ac_iter *)it)->ac;
    pthread_mutex_lock(&ac->lock);
    out->total = ac->n;
    /* one handed out before its callback came is done too */
    out->done = ac->ndone > ac->next ? ac->ndone : ac->next;
    out->returned = ac->next;
    pthread_mutex_unlock(&ac->lock);
    out->total_known = true;
}

struct fut_at {
    const conc_future *f;
    size_t i;
};

static int fut_at_cmp(const void *a, const void *b)
{
    const struct fut_at *x = a, *y = b;
    if (x->f != y->f) {
        return (uintptr_t)x->f < (uintptr_t)y->f ? -1 : 1;
    }
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Sets out[i] to futs[i], or to NULL where futs[i] repeats an earlier
 * entry (Python's as_completed takes a set of futures: each is handed out
 * once).  Returns how many are kept, or 0 with no memory (n > 0). */
static size_t first_places(conc_future *const *futs, size_t n,
                           conc_future **out)
{
    if (n < 2) {
        if (n == 1) {
            out[0] = futs[0];
        }
        return n;
    }
    memcpy(out, futs, n * sizeof *out);
    struct fut_at *by = conc__calloc(n, sizeof *by);
    if (by == NULL) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        by[i] = (struct fut_at){ futs[i], i };
    }
    qsort(by, n, sizeof *by, fut_at_cmp);
    size_t kept = n;
    for (size_t k = 1; k < n; k++) {
        if (by[k].f == by[k - 1].f) {
            out[by[k].i] = NULL; /* a later place of the same future */
            kept--;
        }
    }
    free(by);
    return kept;
}

/* conc_iter_next on an as_completed iterator: the next future's result
 * (its code, its output in *msg), as conc_future_result gives it; the
 * future's index in futs by conc_iter_index. */
static int ac_next_result(conc_iter *it, conc_msg *msg,
                          const conc__deadline *dl, double timeout)
{
    conc_future *f = NULL;
    int err = ac_next(it, &f, dl, timeout);
    if (err != 0) {
        /* its detail names conc_iter_next_future: the same iterator */
        return err;
    }
    return conc__future_result_as(f, msg, 0, "conc_iter_next");
}

static const conc__iter_ops ac_ops = {
    .next = ac_next_result,
    .next_future = ac_next,
    .progress = ac_progress,
    .free = ac_free,
};

int conc_as_completed(conc_future *const *futs, size_t n, double timeout,
                      conc_iter **it)
{
    if (it != NULL) {
        *it = NULL;
    }
    if (it == NULL || (futs == NULL && n > 0)) {
        return conc__fail(CONC_EINVAL, "conc_as_completed: %s",
                          it == NULL ? "it is NULL"
                                     : "futs is NULL with n > 0");
    }
    for (size_t i = 0; i < n; i++) {
        if (futs[i] == NULL) {
            return conc__fail(CONC_EINVAL,
                              "conc_as_completed: futs[%zu] is NULL", i);
        }
    }
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return CONC__FAIL_TIMEOUT(timeout);
    }
    struct ac_cb_arg *args = NULL;
    struct fut_cb *cbs = NULL;
    struct ac_iter *iter = conc__calloc(1, sizeof *iter);
    struct ac_state *ac = conc__calloc(1, sizeof *ac);
    if (iter == NULL || ac == NULL) {
        goto fail;
    }
    size_t m = n ? n : 1;
    ac->futs = conc__calloc(m, sizeof *ac->futs);
    ac->order = conc__calloc(m, sizeof *ac->order);
    ac->handed = conc__calloc(m, sizeof *ac->handed);
    args = conc__calloc(m, sizeof *args);
    cbs = conc__calloc(m, sizeof *cbs);
    if (ac->futs == NULL || ac->order == NULL || ac->handed == NULL ||
        args == NULL ||
        cbs == NULL) {
        goto fail;
    }
    size_t kept = first_places(futs, n, ac->futs);
    if (kept == 0 && n > 0) {
        goto fail;
    }
    pthread_mutex_init(&ac->lock, NULL);
    conc__cond_init_mono(&ac->cond);
    ac->n = kept;
    ac->nslots = n;
    ac->dl = dl;
    ac->args = args;
    ac->cbs = cbs;
    atomic_init(&ac->refs, 1 + (long)kept);
    for (size_t i = 0; i < n; i++) {
        if (ac->futs[i] != NULL) {
            conc__future_ref(ac->futs[i]);
        }
    }
    /* Already-done futures come first, in array order: their callbacks
     * run at once, in this loop.  The callback nodes are ac's own (one
     * block), so registering cannot fail halfway. */
    for (size_t i = 0; i < n; i++) {
        if (ac->futs[i] == NULL) {
            continue; /* handed out at its first place */
        }
        args[i].ac = ac;
        args[i].index = i;
        struct fut_cb *c = &cbs[i];
        c->cb = ac_on_done;
        c->arg = &args[i];
        c->next = NULL;
        c->borrowed = true;
        conc_future *f = futs[i];
        pthread_mutex_lock(&f->lock);
        if (!is_final(atomic_load(&f->state))) {
            if (f->cbs_tail != NULL) {
                f->cbs_tail->next = c;
            } else {
                f->cbs = c;
            }
            f->cbs_tail = c;
            pthread_mutex_unlock(&f->lock);
        } else {
            pthread_mutex_unlock(&f->lock);
            ac_on_done(f, &args[i]);
        }
    }
    iter->base.ops = &ac_ops;
    iter->base.last_index = (size_t)-1;
    iter->ac = ac;
    *it = &iter->base;
    return 0;
fail:
    free(args);
    free(cbs);
    if (ac != NULL) {
        free(ac->futs);
        free(ac->order);
        free(ac->handed);
        free(ac);
    }
    free(iter);
    return conc__fail(CONC_ENOMEM, "conc_as_completed: no memory for an "
                      "iterator over %zu futures", n);
}

/* ---- iterators ----------------------------------------------------------- */

int conc_iter_next(conc_iter *it, conc_msg *msg, double timeout)
{
    if (msg != NULL) {
        msg->data = NULL;
        msg->len = 0;
    }
    if (it == NULL || msg == NULL) {
        return conc__fail(CONC_EINVAL, "conc_iter_next: %s",
                          it == NULL ? "it is NULL" : "msg is NULL");
    }
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return CONC__FAIL_TIMEOUT(timeout);
    }
    return it->ops->next(it, msg, &dl, timeout);
}

int conc_iter_next_future(conc_iter *it, conc_future **fut, double timeout)
{
    if (fut != NULL) {
        *fut = NULL;
    }
    if (it == NULL || fut == NULL || it->ops->next_future == NULL) {
        return conc__fail(CONC_EINVAL, "conc_iter_next_future: %s",
                          it == NULL    ? "it is NULL"
                          : fut == NULL ? "fut is NULL"
                                        : "a map iterator gives results: "
                                          "conc_iter_next");
    }
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return CONC__FAIL_TIMEOUT(timeout);
    }
    return it->ops->next_future(it, fut, &dl, timeout);
}

size_t conc_iter_index(const conc_iter *it)
{
    return it ? it->last_index : (size_t)-1;
}

const char *conc_iter_error_message(const conc_iter *it)
{
    return it ? it->last_err : NULL;
}

int conc_iter_progress(const conc_iter *it, conc_progress *out)
{
    if (out != NULL) {
        *out = (conc_progress){ 0 };
    }
    if (it == NULL || out == NULL) {
        return conc__fail(CONC_EINVAL, "conc_iter_progress: %s is NULL",
                          it == NULL ? "it" : "out");
    }
    it->ops->progress(it, out);
    out->remaining = out->total - out->done;
    return 0;
}

void conc_iter_free(conc_iter *it)
{
    if (it == NULL) {
        return;
    }
    free(it->last_err);
    it->ops->free(it);
}
