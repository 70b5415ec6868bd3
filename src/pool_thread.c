/* pool_thread.c - the CONC_THREADS backend of the pool engine (pool.c):
 * worker threads of this process, and a timer thread for task_timeout.
 *
 * Workers.  Each worker thread is detached and holds a reference to the
 * pool, so the pool's memory outlives every thread, even one that is
 * abandoned in a task that never returns.  A worker pops a task under
 * pool->lock, records it as its current task, runs it without the lock
 * and completes it.  tp->threads[slot] names the thread serving each slot
 * (NULL while none does), tp->live counts the threads that join waits
 * for: attached ones, until their finalizer ran.
 *
 * Abandoning.  A thread cannot be killed.  The timer thread (only with
 * .task_timeout) and terminate may "abandon" a worker: under the lock
 * they take note of its current task, fail its items (the first
 * completion of a future or a batch item wins, so the worker's late
 * result is dropped) and take it out of live; the timer then starts a
 * replacement thread in its slot.  The abandoned thread still owns and
 * frees its task, stops after its current item, runs the finalizer and
 * exits.  Terminate abandons the workers in a task and those still in
 * their initializer, so that a join after it returns at once; idle ones
 * leave and run their finalizers, which the join waits for, as after a
 * close.  With a timeout, map chunks are one item each (p->chunk_max), so
 * the item that timed out is exactly the task that was running.
 *
 * Wake-ups.  A worker with nothing to do first polls npending for up to
 * CONC__SPIN_NS (yielding between polls), counted in tp->spinning
 * meanwhile, then waits on work_cv after announcing itself in tp->idle
 * under the lock.  A push signals work_cv only when idle > 0 and more
 * tasks are queued than workers spin: each spinner takes one, since it
 * looks at the queue under the lock before it sleeps (it leaves the
 * count before it takes the lock, so a push that found it counted comes
 * before that look, and one that did not signals; no wake-up is lost).
 * Signalling on every push woke a sleeper for nothing whenever a worker
 * spun already - on each task of a submit-then-result caller with 2
 * workers - and the woken thread then spun beside the other two on 2
 * cores: such a caller settled at some 22 k tasks/s against 350 k once
 * it did (bench_pool's thread "one at a time", for whole runs).
 * join waits on done_cv for tp->live to reach 0.  Close and shutdown
 * broadcast work_cv after changing the state under the lock: a worker
 * either saw the new state before it waited, or is waiting and gets the
 * broadcast.
 *
 * Fork.  A child forked while these threads run has none of them; it
 * must not use the pool (pool.h).
 *
 * Rejected: killing threads (pthread_cancel inside arbitrary user code
 * leaks its locks and memory: abandoning is the honest option).
 */
#include "pool_int.h"
#include "process_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pool_worker {
    conc_pool *pool;
    size_t slot;
    conc__task *current;    /* under pool->lock */
    uint64_t started_ns;    /* under pool->lock */
    /* The item of current it runs: 0 under pool->lock with current, then
     * each item's by the worker (relaxed: a snapshot for
     * conc_pool_worker_info, which clamps it to current's items). */
    _Atomic size_t item;
    _Atomic bool abandoned; /* set under pool->lock; read without it */
    pid_t tid;              /* under pool->lock; 0 until the thread runs */
    bool ready;             /* under pool->lock: its initializer is done */
    /* Items it finished: written by the worker alone, read by
     * conc_pool_worker_info (relaxed: a count, ordered with nothing). */
    _Atomic size_t ran;
    char name[64];
};

/* The backend's pool: the engine's fields first. */
struct thread_pool {
    conc_pool base;
    pthread_cond_t work_cv;  /* a task was queued, or stop */
    pthread_cond_t done_cv;  /* a worker ended (CLOCK_MONOTONIC) */
    pthread_cond_t timer_cv; /* CLOCK_MONOTONIC */
    struct pool_worker **threads; /* nworkers slots, under lock */
    size_t live;                  /* attached threads still running */
    size_t idle;                  /* threads waiting on work_cv */
    _Atomic size_t spinning;      /* threads polling npending */
    pthread_t timer;
    bool has_timer;
    bool timer_stop;
    /* When the timer thread will wake next (CLOCK_MONOTONIC ns), while it
     * sleeps; 0 while it is awake (it looks at every task before it
     * sleeps again).  Under lock.  A task that starts and is due before
     * this wakes the timer, which would otherwise look at it only then,
     * up to 0.1 s late. */
    uint64_t timer_next;
    /* Slots left empty because a replacement could not be started (no
     * memory, no thread): refilled by the next push, and when the last
     * worker ends, which breaks the pool if it still cannot start one
     * (starved_locked()).  Under lock. */
    size_t unfilled;
};

static inline struct thread_pool *tp_of(conc_pool *p)
{
    return (struct thread_pool *)p;
}

static void *thread_main(void *arg);
static void threads_queued_locked(conc_pool *p, size_t n);

/* Starts a thread for slot, for who (conc_pool_new, or a replacement);
 * lock held.  0 or CONC_ESYS/CONC_ENOMEM with a detail. */
static int spawn_thread_locked(conc_pool *p, size_t slot, const char *who)
{
    struct thread_pool *tp = tp_of(p);
    struct pool_worker *w = conc__calloc(1, sizeof *w);
    if (w == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: no memory for worker thread %zu "
                          "of %zu", who, slot + 1, p->nworkers);
    }
    w->pool = p;
    w->slot = slot;
    snprintf(w->name, sizeof w->name, "%s-%u", p->prefix, ++p->next_name);
    conc__pool_ref(p);
    tp->live++;
    tp->threads[slot] = w;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t tid;
    int rc = pthread_create(&tid, &attr, thread_main, w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        tp->threads[slot] = NULL;
        tp->live--;
        atomic_fetch_sub(&p->refs, 1);
        free(w);
        errno = rc;
        return conc__fail_sys(CONC_ESYS, "%s: pthread_create for worker "
                              "thread %zu of %zu", who, slot + 1,
                              p->nworkers);
    }
    return 0;
}

static const char replacing[] = "replacing a worker";

/* Starts a replacement for slot; lock held.  A failure leaves the slot
 * empty, counted in unfilled. */
static void replace_locked(conc_pool *p, size_t slot)
{
    if (spawn_thread_locked(p, slot, replacing) != 0) {
        tp_of(p)->unfilled++;
    }
}

/* Starts threads for the slots left unfilled, while that works; lock
 * held. */
static void refill_locked(conc_pool *p)
{
    struct thread_pool *tp = tp_of(p);
    if (p->state == CONC__POOL_TERM || p->broken != 0) {
        return;
    }
    for (size_t i = 0; i < p->nworkers && tp->unfilled > 0; i++) {
        if (tp->threads[i] != NULL) {
            continue;
        }
        if (spawn_thread_locked(p, i, replacing) != 0) {
            return;
        }
        tp->unfilled--;
    }
}

/* Breaks the pool (pool.h, "Initializer"): code and why, unless it broke
 * already; lock held.  Returns its queued tasks for the caller to fail
 * after unlocking, with CONC_EBROKEN and the first break's reason, which
 * it copies into msg (sizeof p->broken_why bytes). */
static conc__task *break_locked(conc_pool *p, int code, const char *why,
                                char *msg)
{
    conc__pool_break_locked(p, code, why);
    snprintf(msg, sizeof p->broken_why, "%s", p->broken_why);
    conc__task *list = conc__pool_take_all_locked(p);
    pthread_cond_broadcast(&tp_of(p)->work_cv);
    pthread_cond_broadcast(&tp_of(p)->done_cv);
    return list;
}

/* Called when the pool may have lost its last worker; lock held.  A pool
 * with no worker and slots a replacement could not fill tries once more,
 * and if it still has none it can run nothing: it breaks (CONC_EBROKEN,
 * as for an initializer that failed), and its queued tasks are returned
 * for the caller to fail after unlocking (conc__task_fail_list with
 * CONC_EBROKEN and msg, which break_locked() filled).  Else NULL. */
static conc__task *starved_locked(conc_pool *p, char *msg)
{
    struct thread_pool *tp = tp_of(p);
    if (tp->live > 0 || tp->unfilled == 0 || p->state == CONC__POOL_TERM ||
        p->broken != 0 ||
        (p->state == CONC__POOL_CLOSED && p->head == NULL)) {
        return NULL; /* (a closed pool with nothing queued needs none) */
    }
    refill_locked(p);
    if (tp->live > 0) {
        return NULL;
    }
    char why[sizeof p->broken_why];
    snprintf(why, sizeof why, "no worker thread could be started (%s)",
             conc_errdetail());
    return break_locked(p, CONC_EBROKEN, why, msg);
}

/* Marks w abandoned and takes it out of the pool's count; lock held.  The
 * caller fails w->current's items (after unlocking). */
static conc__task *abandon_locked(conc_pool *p, struct pool_worker *w)
{
    struct thread_pool *tp = tp_of(p);
    atomic_store(&w->abandoned, true);
    conc__task *t = w->current;
    if (t != NULL) {
        /* The worker frees the task when it returns; this reference
         * keeps it for the caller, who fails its items unlocked. */
        atomic_fetch_add(&t->refs, 1);
    }
    if (tp->threads[w->slot] == w) {
        tp->threads[w->slot] = NULL;
    }
    tp->live--;
    pthread_cond_broadcast(&tp->done_cv);
    return t;
}

/* The initializer of a thread failed: the pool breaks (see pool.h). */
static void break_threads(conc_pool *p, int code)
{
    char msg[sizeof p->broken_why];
    snprintf(msg, sizeof msg, "a worker's initializer failed with code %d",
             code);
    pthread_mutex_lock(&p->lock);
    conc__task *list = break_locked(p, code, msg, msg);
    pthread_mutex_unlock(&p->lock);
    conc__task_fail_list(list, CONC__FUT_DONE, CONC_EBROKEN, msg);
}

static void run_item(struct pool_worker *w, conc__task *t, size_t k,
                     void *ctx, bool locked_done)
{
    conc_pool *p = w->pool;
    conc_buf out;
    conc__buf_init(&out, 0);
    size_t len;
    const void *in = conc__task_in(t, k, &len);
    int code = conc__task_outcome(&out, t->fn(len ? in : NULL, len, &out,
                                              ctx));
    conc_msg m;
    conc__buf_take(&out, &m);
    char *err = out.has_error ? strdup(out.error) : NULL;
    if (locked_done) {
        /* A timer may fail this task meanwhile; the lock orders us with
         * it, and the first completion wins anyway. */
        pthread_mutex_lock(&p->lock);
        bool gone = atomic_load(&w->abandoned);
        pthread_mutex_unlock(&p->lock);
        if (gone) {
            conc_msg_free(&m);
            free(err);
            return;
        }
    }
    conc__task_item_done(t, k, code, &m, err);
}

static void *thread_main(void *arg)
{
    struct pool_worker *w = arg;
    conc_pool *p = w->pool;
    struct thread_pool *tp = tp_of(p);
    conc__os_set_name(w->name);
    conc__thread_name_set(w->name);
    pthread_mutex_lock(&p->lock);
    w->tid = conc__os_gettid();
    pthread_mutex_unlock(&p->lock);
    void *ctx = NULL;
    bool inited = true;
    if (p->init != NULL) {
        int rc = p->init(p->init_arg, &ctx);
        if (rc != 0) {
            inited = false;
            if (!atomic_load(&w->abandoned)) {
                /* (abandoned: terminated meanwhile, nothing to break) */
                break_threads(p, rc);
            }
        }
    }
    bool timed = p->task_timeout > 0;
    size_t ran = 0;
    pthread_mutex_lock(&p->lock);
    w->ready = true;
    while (inited) {
        if (p->head == NULL && p->state == CONC__POOL_RUN) {
            /* Spin a little before sleeping: a submitter often comes back
             * within microseconds (see CONC__SPIN_NS). */
            atomic_fetch_add(&tp->spinning, 1);
            pthread_mutex_unlock(&p->lock);
            uint64_t until = conc__now_ns() + CONC__SPIN_NS;
            for (unsigned i = 0; atomic_load(&p->npending) == 0; i++) {
                if ((i & 15) == 15 && conc__now_ns() > until) {
                    break;
                }
                conc__spin_pause(i);
            }
            atomic_fetch_sub(&tp->spinning, 1);
            pthread_mutex_lock(&p->lock);
        }
        while (p->head == NULL && p->state == CONC__POOL_RUN &&
               p->broken == 0 && !atomic_load(&w->abandoned)) {
            tp->idle++;
            pthread_cond_wait(&tp->work_cv, &p->lock);
            tp->idle--;
        }
        if (atomic_load(&w->abandoned) || p->head == NULL ||
            p->state == CONC__POOL_TERM || p->broken != 0) {
            break;
        }
        conc__task *t = conc__pool_pop_locked(p);
        if (!conc__task_start(t)) {
            continue; /* cancelled while queued */
        }
        if (p->max_tasks > 0 && t->count > p->max_tasks - ran) {
            /* This life ends inside the chunk: the rest goes back to the
             * front of the queue for another worker (without memory for
             * the split, this one runs it all). */
            conc__task *rest = conc__task_split(t, p->max_tasks - ran);
            if (rest != NULL) {
                conc__pool_requeue_front_locked(p, rest, rest, 1);
                threads_queued_locked(p, 1);
            }
        }
        w->current = t;
        w->started_ns = conc__now_ns();
        atomic_store_explicit(&w->item, 0, memory_order_relaxed);
        if (timed) {
            uint64_t due =
                w->started_ns + (uint64_t)(p->task_timeout * 1e9);
            if (due < tp->timer_next) {
                tp->timer_next = due; /* one signal for tasks due later */
                pthread_cond_signal(&tp->timer_cv);
            }
        }
        pthread_mutex_unlock(&p->lock);
        for (size_t k = 0; k < t->count && !atomic_load(&w->abandoned);
             k++) {
            atomic_store_explicit(&w->item, k, memory_order_relaxed);
            run_item(w, t, k, ctx, timed);
            atomic_store_explicit(&w->ran, ++ran, memory_order_relaxed);
        }
        pthread_mutex_lock(&p->lock);
        w->current = NULL;
        if (atomic_load(&w->abandoned)) {
            /* Whoever abandoned us failed the items we did not run. */
            pthread_mutex_unlock(&p->lock);
            conc__task_free(t);
            pthread_mutex_lock(&p->lock);
            break;
        }
        pthread_mutex_unlock(&p->lock);
        conc__task_free(t);
        pthread_mutex_lock(&p->lock);
        if (p->max_tasks > 0 && ran >= p->max_tasks) {
            /* Retire: a fresh thread (and initializer) takes the slot;
             * this one stays counted in live until its finalizer ran. */
            tp->threads[w->slot] = NULL;
            if (p->state != CONC__POOL_TERM && p->broken == 0) {
                replace_locked(p, w->slot);
            }
            break;
        }
    }
    /* Abandoned threads were taken out of live by whoever abandoned
     * them; the others leave live only after their finalizer, so that
     * join returns after every finalizer of the pool's workers ran. */
    bool counted = !atomic_load(&w->abandoned);
    if (counted && tp->threads[w->slot] == w) {
        tp->threads[w->slot] = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    if (inited && p->fini != NULL) {
        p->fini(ctx, p->init_arg);
    }
    pthread_mutex_lock(&p->lock);
    conc__task *starved = NULL;
    char why[sizeof p->broken_why];
    if (counted) {
        tp->live--;
        starved = starved_locked(p, why);
    }
    pthread_cond_broadcast(&tp->done_cv);
    pthread_mutex_unlock(&p->lock);
    if (starved != NULL) {
        conc__task_fail_list(starved, CONC__FUT_DONE, CONC_EBROKEN, why);
    }
    free(w);
    conc__pool_unref(p);
    return NULL;
}

/* The timer thread of a pool with a task_timeout. */
static void *timer_main(void *arg)
{
    conc_pool *p = arg;
    struct thread_pool *tp = tp_of(p);
    uint64_t limit = (uint64_t)(p->task_timeout * 1e9);
    pthread_mutex_lock(&p->lock);
    while (!tp->timer_stop) {
        uint64_t now = conc__now_ns();
        uint64_t next = now + 100000000ull; /* look again in 0.1 s at most */
        conc__task *late[64];
        size_t nlate = 0;
        for (size_t i = 0; i < p->nworkers && nlate < 64; i++) {
            struct pool_worker *w = tp->threads[i];
            if (w == NULL || w->current == NULL) {
                continue;
            }
            uint64_t due = w->started_ns + limit;
            if (now >= due) {
                late[nlate++] = abandon_locked(p, w);
                if (p->state != CONC__POOL_TERM && p->broken == 0) {
                    replace_locked(p, i);
                }
            } else if (due < next) {
                next = due;
            }
        }
        if (nlate > 0) {
            /* the abandoned are out of live: it may be 0 now */
            char why[sizeof p->broken_why];
            conc__task *starved = starved_locked(p, why);
            pthread_mutex_unlock(&p->lock);
            if (starved != NULL) {
                conc__task_fail_list(starved, CONC__FUT_DONE, CONC_EBROKEN,
                                     why);
            }
            char msg[96];
            snprintf(msg, sizeof msg, "the task ran past its timeout of %g s",
                     p->task_timeout);
            conc__future_defer_begin();
            for (size_t i = 0; i < nlate; i++) {
                conc__task_fail_items(late[i], 0, CONC__FUT_DONE,
                                      CONC_ETIMEDOUT, msg);
                conc__task_free(late[i]);
            }
            conc__future_defer_end();
            pthread_mutex_lock(&p->lock);
            continue;
        }
        struct timespec ts = { .tv_sec = (time_t)(next / 1000000000ull),
                               .tv_nsec = (long)(next % 1000000000ull) };
        tp->timer_next = next;
        pthread_cond_timedwait(&tp->timer_cv, &p->lock, &ts);
        tp->timer_next = 0;
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Waits for the attached workers to end, finalizers run (terminate
 * detached those in a task or their initializer). */
static int threads_wait_locked(conc_pool *p, const conc__deadline *dl)
{
    struct thread_pool *tp = tp_of(p);
    while (tp->live > 0) {
        if (dl->once || conc__deadline_passed(dl)) {
            return conc__fail_lit(CONC_ETIMEDOUT, "conc_pool_join: the "
                                  "workers did not finish in time");
        }
        if (dl->forever) {
            pthread_cond_wait(&tp->done_cv, &p->lock);
        } else {
            pthread_cond_timedwait(&tp->done_cv, &p->lock, &dl->at);
        }
    }
    return 0;
}

static void stop_timer(conc_pool *p)
{
    struct thread_pool *tp = tp_of(p);
    pthread_mutex_lock(&p->lock);
    bool has = tp->has_timer;
    tp->has_timer = false;
    tp->timer_stop = true;
    pthread_cond_broadcast(&tp->timer_cv);
    pthread_mutex_unlock(&p->lock);
    if (has) {
        pthread_join(tp->timer, NULL);
    }
}

/* ---- the backend's table ------------------------------------------------- */

static void threads_terminate(conc_pool *p)
{
    struct thread_pool *tp = tp_of(p);
    pthread_mutex_lock(&p->lock);
    p->state = CONC__POOL_TERM;
    conc__task *list = conc__pool_take_all_locked(p);
    conc__task *running[4096];
    size_t nrun = 0;
    for (size_t i = 0; i < p->nworkers; i++) {
        /* A worker in a task, or still in its initializer (which may take
         * as long as a task), is abandoned: a join waits for neither.  An
         * idle one leaves at the broadcast below and runs its finalizer,
         * which join and free wait for, as after close. */
        struct pool_worker *w = tp->threads[i];
        if (w != NULL && (w->current != NULL || !w->ready)) {
            conc__task *t = abandon_locked(p, w);
            if (t != NULL) {
                running[nrun++] = t;
            }
        }
    }
    pthread_cond_broadcast(&tp->work_cv);
    pthread_mutex_unlock(&p->lock);
    /* One batch: a callback that waits for another of these futures
     * finds it failed too (conc__future_defer_begin). */
    conc__future_defer_begin();
    conc__task_fail_list(list, CONC__FUT_CANCELLED, CONC_ECANCELLED,
                         "the pool was terminated before the task started");
    for (size_t i = 0; i < nrun; i++) {
        conc__task_fail_items(running[i], 0, CONC__FUT_DONE,
                              CONC_ECANCELLED,
                              "the pool was terminated while the task ran");
        conc__task_free(running[i]);
    }
    conc__future_defer_end();
}

static int threads_start(conc_pool *p)
{
    struct thread_pool *tp = tp_of(p);
    conc__cond_init_mono(&tp->done_cv);
    conc__cond_init_mono(&tp->timer_cv);
    pthread_cond_init(&tp->work_cv, NULL);
    if (p->task_timeout > 0) {
        p->chunk_max = 1; /* the item that timed out is the whole task */
    }
    tp->threads = conc__calloc(p->nworkers, sizeof *tp->threads);
    if (tp->threads == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_pool_new: no memory for %zu "
                          "worker slots", p->nworkers);
    }
    int err = 0;
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->nworkers && err == 0; i++) {
        err = spawn_thread_locked(p, i, "conc_pool_new");
    }
    pthread_mutex_unlock(&p->lock);
    if (err == 0 && p->task_timeout > 0) {
        int rc = pthread_create(&tp->timer, NULL, timer_main, p);
        if (rc != 0) {
            errno = rc;
            err = conc__fail_sys(CONC_ESYS, "conc_pool_new: pthread_create "
                                 "for the task_timeout timer");
        } else {
            tp->has_timer = true;
        }
    }
    if (err != 0) {
        /* The threads made so far end before conc_pool_new returns, their
         * initializers and finalizers run (the caller may free init_arg
         * then): no task is queued, so none is abandoned. */
        conc__deadline dl;
        conc__deadline_init(&dl, CONC_FOREVER);
        pthread_mutex_lock(&p->lock);
        p->state = CONC__POOL_TERM;
        pthread_cond_broadcast(&tp->work_cv);
        threads_wait_locked(p, &dl);
        pthread_mutex_unlock(&p->lock);
        stop_timer(p);
    }
    return err;
}

static void threads_queued_locked(conc_pool *p, size_t n)
{
    struct thread_pool *tp = tp_of(p);
    if (tp->unfilled > 0) {
        refill_locked(p); /* a failure keeps the slot for the next try */
    }
    if (tp->idle > 0 &&
        atomic_load(&p->npending) > atomic_load(&tp->spinning)) {
        /* idle is counted under the lock by a worker about to wait on
         * work_cv: the signal cannot be lost. */
        if (n == 1) {
            pthread_cond_signal(&tp->work_cv);
        } else {
            pthread_cond_broadcast(&tp->work_cv);
        }
    }
}

static void threads_kick(conc_pool *p)
{
    /* After the state changed under the lock (see "Wake-ups"). */
    pthread_cond_broadcast(&tp_of(p)->work_cv);
}

static int threads_join(conc_pool *p, const conc__deadline *dl)
{
    pthread_mutex_lock(&p->lock);
    int err = threads_wait_locked(p, dl);
    pthread_mutex_unlock(&p->lock);
    if (err == 0) {
        stop_timer(p);
    }
    return err;
}

static void threads_workers(conc_pool *p, conc_worker_info *out, size_t cap)
{
    struct thread_pool *tp = tp_of(p);
    pid_t pid = getpid();
    pthread_mutex_lock(&p->lock);
    /* Read under the lock: a worker that starts a task sets started_ns
     * under it, so now is never before a start this loop sees (a clock
     * read before the lock made now - started_ns wrap to ~584 years). */
    uint64_t now = conc__now_ns();
    for (size_t i = 0; i < cap; i++) {
        struct pool_worker *w = tp->threads[i];
        if (w == NULL) {
            continue; /* CONC_WORKER_NONE, zeroed */
        }
        out[i].pid = pid;
        out[i].tid = w->tid;
        out[i].state = !w->ready            ? CONC_WORKER_STARTING
                       : w->current != NULL ? CONC_WORKER_BUSY
                                            : CONC_WORKER_IDLE;
        out[i].tasks_done = atomic_load_explicit(&w->ran,
                                                 memory_order_relaxed);
        if (w->current != NULL) {
            /* (An abandoned worker's slot holds its replacement, so
             * current is this worker's own.) */
            size_t k = atomic_load_explicit(&w->item, memory_order_relaxed);
            if (k >= w->current->count) {
                k = w->current->count - 1;
            }
            out[i].task_item = conc__task_item_index(w->current, k);
            out[i].task_seconds =
                (double)(now - w->started_ns) / 1e9;
        }
        snprintf(out[i].name, sizeof out[i].name, "%s", w->name);
    }
    pthread_mutex_unlock(&p->lock);
}

static void threads_destroy(conc_pool *p)
{
    struct thread_pool *tp = tp_of(p);
    pthread_cond_destroy(&tp->work_cv);
    pthread_cond_destroy(&tp->done_cv);
    pthread_cond_destroy(&tp->timer_cv);
    free(tp->threads);
}

const conc__pool_backend conc__pool_threads = {
    .size = sizeof(struct thread_pool),
    .name_prefix = "ThreadPoolWorker",
    .start = threads_start,
    .queued_locked = threads_queued_locked,
    .kick = threads_kick,
    .join = threads_join,
    .terminate = threads_terminate,
    .stop = stop_timer,
    .workers = threads_workers,
    .destroy = threads_destroy,
};
