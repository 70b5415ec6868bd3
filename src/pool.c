/* pool.c - the pool engine: Pool, ThreadPoolExecutor and
 * ProcessPoolExecutor in one.  This file holds what both kinds share (the
 * queue of tasks, submit/apply/map/imap, map batches and their iterators,
 * close/join/terminate/shutdown/free) and the CONC_THREADS workers;
 * pool_proc.c holds the CONC_PROCESSES workers.
 *
 * Tasks.  A task is one submit (one item, with a future) or one map chunk
 * (items start..start+count-1 of a batch).  Queued tasks are a FIFO list
 * under pool->lock.  Inputs are copied on submit, so callers may reuse
 * their buffers at once and a map that times out leaves nothing dangling.
 *
 * Batches.  A map/imap copies its inputs into one arena and keeps one
 * result slot per item, filled by whoever completes the item
 * (conc__batch_done) under the batch's own lock; the iterator waits on the
 * batch's condvar.  A batch is reference-counted by its iterator and by
 * each task holding some of its items, so freeing the iterator early, or
 * the pool, is safe.
 *
 * Thread workers.  Each worker thread is detached and holds a reference to
 * the pool, so the pool's memory outlives every thread, even one that is
 * abandoned in a task that never returns.  A worker pops a task under the
 * lock, records it as its current task, runs it without the lock and
 * completes it.  The timer thread (only with .task_timeout) and terminate
 * may "abandon" a worker: under the lock they take note of its current
 * task, fail its items (the first completion of a future or a batch item
 * wins, so the worker's late result is dropped), and start a replacement
 * thread; the abandoned thread still owns and frees its task, stops after
 * its current item, runs the finalizer and exits.  With a timeout, thread
 * map chunks are one item each, so the item that timed out is exactly the
 * task that was running.
 *
 * Wake-ups.  A thread worker with nothing to do first polls npending for
 * up to CONC__POOL_SPIN_NS (yielding between polls), then waits on work_cv
 * after announcing itself in pool->idle under the lock; submit signals
 * work_cv only when idle > 0 (same lock, so no wake-up is lost; a
 * spinning worker sees npending, which submit raises under that lock).
 * join waits on done_cv for pool->live to reach 0.  A map collects its
 * results under one hold of the batch lock and is woken only for the item
 * it waits for (batch->want), not for every item completed.
 *
 * Rejected: a lock-free task queue (the lock is held for a few
 * instructions, and idle workers must sleep somewhere anyway); killing
 * threads (pthread_cancel inside arbitrary user code leaks its locks and
 * memory: abandoning is the honest option).
 */
#include "pool_int.h"

#include <conc/process.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pool_worker {
    conc_pool *pool;
    size_t slot;
    struct task *current;   /* under pool->lock */
    uint64_t started_ns;    /* under pool->lock */
    _Atomic bool abandoned; /* set under pool->lock; read without it */
    size_t ran;
    char name[64];
};

/* ---- tasks ------------------------------------------------------------------ */

void conc__task_free(struct task *t)
{
    /* acq_rel: the last holder sees the other's writes before freeing. */
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    if (t->fut != NULL) {
        conc__future_unref(t->fut);
    }
    if (t->batch != NULL) {
        conc__batch_unref(t->batch);
    }
    free(t->in); /* or a process result's output not taken (rout) */
    free(t->rerr);
    free(t);
}

void conc__task_item_done(struct task *t, size_t k, int code, conc_msg *out,
                          char *err)
{
    if (t->fut != NULL) {
        conc__future_finish(t->fut, FUT_DONE, code, out, err);
    } else {
        conc__batch_done(t->batch, t->start + k, code, out, err);
    }
}

static void task_fail_items(struct task *t, size_t k, int final, int code,
                            const char *msg)
{
    for (size_t i = k; i < t->count; i++) {
        char *err = msg != NULL ? strdup(msg) : NULL;
        if (t->fut != NULL) {
            conc__future_finish(t->fut, final, code, NULL, err);
        } else {
            conc__batch_done(t->batch, t->start + i, code, NULL, err);
        }
    }
}

void conc__task_fail(struct task *t, size_t k, int final, int code,
                     const char *msg)
{
    task_fail_items(t, k, final, code, msg);
    conc__task_free(t);
}

/* Fails and frees a list of queued (never started) tasks. */
static void fail_list(struct task *t, int final, int code, const char *msg)
{
    conc__future_defer_begin();
    while (t != NULL) {
        struct task *n = t->next;
        conc__task_fail(t, 0, final, code, msg);
        t = n;
    }
    conc__future_defer_end();
}

/* ---- batches ---------------------------------------------------------------- */

void conc__batch_unref(struct batch *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        conc_msg_free(&b->items[i].out);
        free(b->items[i].err);
    }
    free(b->items);
    free(b->order);
    free(b->arena);
    free(b->off);
    free(b->len);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    free(b);
}

void conc__batch_done_locked(struct batch *b, size_t i, int code,
                             conc_msg *out, char *err)
{
    struct batch_item *it = &b->items[i];
    if (it->done) {
        if (out != NULL) {
            conc_msg_free(out);
        }
        free(err);
        return;
    }
    it->done = true;
    it->code = code;
    if (out != NULL) {
        it->out = *out;
        out->data = NULL;
        out->len = 0;
    }
    it->err = err;
    b->order[b->ndone++] = i;
    /* An ordered waiter needs one item: wake it for that one only, so a
     * map's collector is not woken for every item of every chunk. */
    if (b->waiters > 0 && (b->want == SIZE_MAX || b->want == i)) {
        pthread_cond_broadcast(&b->cond);
    }
}

void conc__batch_done(struct batch *b, size_t i, int code, conc_msg *out,
                      char *err)
{
    pthread_mutex_lock(&b->lock);
    conc__batch_done_locked(b, i, code, out, err);
    pthread_mutex_unlock(&b->lock);
}

static void cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

static int batch_new(struct batch **out, const conc_msg *inputs, size_t n)
{
    struct batch *b = conc__calloc(1, sizeof *b);
    if (b == NULL) {
        return CONC_ENOMEM;
    }
    size_t m = n ? n : 1, total = 0;
    for (size_t i = 0; i < n; i++) {
        total += inputs[i].len;
    }
    b->items = conc__calloc(m, sizeof *b->items);
    b->order = conc__calloc(m, sizeof *b->order);
    b->off = conc__calloc(m, sizeof *b->off);
    b->len = conc__calloc(m, sizeof *b->len);
    b->arena = conc__malloc(total ? total : 1);
    if (b->items == NULL || b->order == NULL || b->off == NULL ||
        b->len == NULL || b->arena == NULL) {
        free(b->items);
        free(b->order);
        free(b->off);
        free(b->len);
        free(b->arena);
        free(b);
        return CONC_ENOMEM;
    }
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        b->off[i] = pos;
        b->len[i] = inputs[i].len;
        if (inputs[i].len > 0) {
            memcpy(b->arena + pos, inputs[i].data, inputs[i].len);
        }
        pos += inputs[i].len;
    }
    b->n = n;
    pthread_mutex_init(&b->lock, NULL);
    cond_init_mono(&b->cond);
    atomic_init(&b->refs, 1);
    *out = b;
    return 0;
}

/* ---- the queue -------------------------------------------------------------- */

int conc__pool_push(conc_pool *p, struct task *first, struct task *last,
                    size_t n)
{
    pthread_mutex_lock(&p->lock);
    if (p->broken != 0) {
        pthread_mutex_unlock(&p->lock);
        return CONC_EBROKEN;
    }
    if (p->state != POOL_RUN) {
        pthread_mutex_unlock(&p->lock);
        return CONC_ESTATE;
    }
    last->next = NULL;
    if (p->tail != NULL) {
        p->tail->next = first;
    } else {
        p->head = first;
    }
    p->tail = last;
    atomic_fetch_add(&p->npending, n);
    if (p->kind == CONC_THREADS && p->idle > 0) {
        /* idle is counted under the lock by a worker about to wait on
         * work_cv: the signal cannot be lost. */
        if (n == 1) {
            pthread_cond_signal(&p->work_cv);
        } else {
            pthread_cond_broadcast(&p->work_cv);
        }
    }
    pthread_mutex_unlock(&p->lock);
    if (p->kind == CONC_PROCESSES) {
        conc__proc_submitted(p);
    }
    return 0;
}

struct task *conc__pool_pop_locked(conc_pool *p)
{
    struct task *t = p->head;
    if (t != NULL) {
        p->head = t->next;
        if (p->head == NULL) {
            p->tail = NULL;
        }
        t->next = NULL;
        atomic_fetch_sub(&p->npending, 1);
    }
    return t;
}

/* Takes the whole queue; lock held. */
static struct task *take_all_locked(conc_pool *p)
{
    struct task *t = p->head;
    p->head = p->tail = NULL;
    atomic_store(&p->npending, 0);
    return t;
}

static void pool_ref(conc_pool *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void conc__pool_ref(conc_pool *p)
{
    pool_ref(p);
}

void conc__pool_unref(conc_pool *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    if (p->kind == CONC_PROCESSES) {
        /* The process side's memory lives as long as any future that may
         * still help (see "Helpers" in pool_proc.c). */
        conc__proc_destroy(p);
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->timer_cv);
    free(p->threads);
    free(p);
}

/* ---- thread workers ----------------------------------------------------------- */

static void *thread_main(void *arg);

/* Starts a thread for slot; lock held.  0 or CONC_ESYS/CONC_ENOMEM. */
static int spawn_thread_locked(conc_pool *p, size_t slot)
{
    struct pool_worker *w = conc__calloc(1, sizeof *w);
    if (w == NULL) {
        return CONC_ENOMEM;
    }
    w->pool = p;
    w->slot = slot;
    snprintf(w->name, sizeof w->name, "%s-%u", p->prefix, ++p->next_name);
    pool_ref(p);
    p->live++;
    p->threads[slot] = w;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t tid;
    int rc = pthread_create(&tid, &attr, thread_main, w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        p->threads[slot] = NULL;
        p->live--;
        atomic_fetch_sub(&p->refs, 1);
        free(w);
        errno = rc;
        return CONC_ESYS;
    }
    return 0;
}

/* Marks w abandoned and takes it out of the pool's count; lock held.  The
 * caller fails w->current's items (after unlocking). */
static struct task *abandon_locked(conc_pool *p, struct pool_worker *w)
{
    atomic_store(&w->abandoned, true);
    struct task *t = w->current;
    if (t != NULL) {
        /* The worker frees the task when it returns; this reference
         * keeps it for the caller, who fails its items unlocked. */
        atomic_fetch_add(&t->refs, 1);
    }
    if (p->threads[w->slot] == w) {
        p->threads[w->slot] = NULL;
    }
    p->live--;
    pthread_cond_broadcast(&p->done_cv);
    return t;
}

/* The initializer of a thread failed: the pool breaks (see pool.h). */
static void break_threads(conc_pool *p, int code)
{
    char msg[96];
    snprintf(msg, sizeof msg, "a worker's initializer failed with code %d",
             code);
    pthread_mutex_lock(&p->lock);
    if (p->broken == 0) {
        p->broken = code;
    }
    struct task *list = take_all_locked(p);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    fail_list(list, FUT_DONE, CONC_EBROKEN, msg);
}

static void run_item(struct pool_worker *w, struct task *t, size_t k,
                     void *ctx, bool locked_done)
{
    conc_pool *p = w->pool;
    conc_buf out;
    conc__buf_init(&out, 0);
    size_t len;
    const void *in = conc__task_in(t, k, &len);
    int code = t->fn(len ? in : NULL, len, &out, ctx);
    if (code < 0) {
        code = CONC_ETASK;
    }
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
    conc__os_set_name(w->name);
    void *ctx = NULL;
    bool inited = true;
    if (p->init != NULL) {
        int rc = p->init(p->init_arg, &ctx);
        if (rc != 0) {
            inited = false;
            break_threads(p, rc);
        }
    }
    bool timed = p->task_timeout > 0;
    pthread_mutex_lock(&p->lock);
    while (inited) {
        if (p->head == NULL && p->state == POOL_RUN) {
            /* Spin a little before sleeping: a submitter often comes back
             * within microseconds (see CONC__POOL_SPIN_NS). */
            pthread_mutex_unlock(&p->lock);
            uint64_t until = conc__now_ns() + CONC__POOL_SPIN_NS;
            for (unsigned i = 0; atomic_load(&p->npending) == 0; i++) {
                if ((i & 15) == 15 && conc__now_ns() > until) {
                    break;
                }
                conc__pool_spin_pause(i);
            }
            pthread_mutex_lock(&p->lock);
        }
        while (p->head == NULL && p->state == POOL_RUN && p->broken == 0 &&
               !atomic_load(&w->abandoned)) {
            p->idle++;
            pthread_cond_wait(&p->work_cv, &p->lock);
            p->idle--;
        }
        if (atomic_load(&w->abandoned) || p->head == NULL ||
            p->state == POOL_TERM || p->broken != 0) {
            break;
        }
        struct task *t = conc__pool_pop_locked(p);
        if (t->fut != NULL && !t->fut_started) {
            if (!conc__future_start(t->fut)) {
                conc__task_free(t); /* cancelled while queued */
                continue;
            }
            t->fut_started = true;
        }
        w->current = t;
        w->started_ns = conc__now_ns();
        pthread_mutex_unlock(&p->lock);
        size_t k = 0;
        for (; k < t->count && !atomic_load(&w->abandoned); k++) {
            run_item(w, t, k, ctx, timed);
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
        w->ran += k;
        if (p->max_tasks > 0 && w->ran >= p->max_tasks) {
            /* Retire: a fresh thread (and initializer) takes the slot;
             * this one stays counted in live until its finalizer ran. */
            p->threads[w->slot] = NULL;
            if (p->state != POOL_TERM && p->broken == 0) {
                spawn_thread_locked(p, w->slot);
            }
            break;
        }
    }
    /* Abandoned threads were taken out of live by whoever abandoned
     * them; the others leave live only after their finalizer, so that
     * join returns after every finalizer of the pool's workers ran. */
    bool counted = !atomic_load(&w->abandoned);
    if (counted && p->threads[w->slot] == w) {
        p->threads[w->slot] = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    if (inited && p->fini != NULL) {
        p->fini(ctx, p->init_arg);
    }
    pthread_mutex_lock(&p->lock);
    if (counted) {
        p->live--;
    }
    pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->lock);
    free(w);
    conc__pool_unref(p);
    return NULL;
}

/* The timer thread of a THREADS pool with a task_timeout. */
static void *timer_main(void *arg)
{
    conc_pool *p = arg;
    uint64_t limit = (uint64_t)(p->task_timeout * 1e9);
    pthread_mutex_lock(&p->lock);
    while (!p->timer_stop) {
        uint64_t now = conc__now_ns();
        uint64_t next = now + 100000000ull; /* look again in 0.1 s at most */
        struct task *late[64];
        size_t nlate = 0;
        for (size_t i = 0; i < p->nworkers && nlate < 64; i++) {
            struct pool_worker *w = p->threads[i];
            if (w == NULL || w->current == NULL) {
                continue;
            }
            uint64_t due = w->started_ns + limit;
            if (now >= due) {
                late[nlate++] = abandon_locked(p, w);
                if (p->state != POOL_TERM && p->broken == 0) {
                    spawn_thread_locked(p, i);
                }
            } else if (due < next) {
                next = due;
            }
        }
        if (nlate > 0) {
            pthread_mutex_unlock(&p->lock);
            char msg[96];
            snprintf(msg, sizeof msg, "the task ran past its timeout of %g s",
                     p->task_timeout);
            conc__future_defer_begin();
            for (size_t i = 0; i < nlate; i++) {
                task_fail_items(late[i], 0, FUT_DONE, CONC_ETIMEDOUT, msg);
                conc__task_free(late[i]);
            }
            conc__future_defer_end();
            pthread_mutex_lock(&p->lock);
            continue;
        }
        struct timespec ts = { .tv_sec = (time_t)(next / 1000000000ull),
                               .tv_nsec = (long)(next % 1000000000ull) };
        pthread_cond_timedwait(&p->timer_cv, &p->lock, &ts);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------ */

static int threads_wait_locked(conc_pool *p, const conc__deadline *dl)
{
    while (p->live > 0) {
        if (dl->once || conc__deadline_passed(dl)) {
            return CONC_ETIMEDOUT;
        }
        if (dl->forever) {
            pthread_cond_wait(&p->done_cv, &p->lock);
        } else {
            pthread_cond_timedwait(&p->done_cv, &p->lock, &dl->at);
        }
    }
    return 0;
}

static void stop_timer(conc_pool *p)
{
    pthread_mutex_lock(&p->lock);
    bool has = p->has_timer;
    p->has_timer = false;
    p->timer_stop = true;
    pthread_cond_broadcast(&p->timer_cv);
    pthread_mutex_unlock(&p->lock);
    if (has) {
        pthread_join(p->timer, NULL);
    }
}

static void threads_terminate(conc_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->state = POOL_TERM;
    struct task *list = take_all_locked(p);
    struct task *running[4096];
    size_t nrun = 0;
    for (size_t i = 0; i < p->nworkers; i++) {
        struct pool_worker *w = p->threads[i];
        if (w != NULL && w->current != NULL) {
            running[nrun++] = abandon_locked(p, w);
        }
    }
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    /* One batch: a callback that waits for another of these futures
     * finds it failed too (conc__future_defer_begin). */
    conc__future_defer_begin();
    fail_list(list, FUT_CANCELLED, CONC_ECANCELLED,
              "the pool was terminated before the task started");
    for (size_t i = 0; i < nrun; i++) {
        task_fail_items(running[i], 0, FUT_DONE, CONC_ECANCELLED,
                        "the pool was terminated while the task ran");
        conc__task_free(running[i]);
    }
    conc__future_defer_end();
}

int conc_pool_new(conc_pool **out, const conc_pool_opts *opts)
{
    conc_pool_opts o = { 0 };
    if (out == NULL) {
        return CONC_EINVAL;
    }
    *out = NULL;
    if (opts != NULL) {
        o = *opts;
    }
    if ((o.kind != CONC_PROCESSES && o.kind != CONC_THREADS) ||
        o.workers > 4096 || isnan(o.task_timeout) || o.task_timeout < 0 ||
        o.max_message_bytes > ((size_t)1 << 30) ||
        (o.name_prefix != NULL && strlen(o.name_prefix) > 40)) {
        return CONC_EINVAL;
    }
    conc_pool *p = conc__calloc(1, sizeof *p);
    if (p == NULL) {
        return CONC_ENOMEM;
    }
    p->kind = o.kind;
    p->nworkers = o.workers ? o.workers : (size_t)conc__os_cpu_count();
    if (p->nworkers == 0) {
        p->nworkers = 1;
    }
    p->init = o.initializer;
    p->init_arg = o.init_arg;
    p->fini = o.finalizer;
    p->max_tasks = o.max_tasks_per_worker;
    p->task_timeout = isinf(o.task_timeout) ? 0 : o.task_timeout;
    p->max_msg = o.max_message_bytes ? o.max_message_bytes
                                     : CONC_POOL_DEFAULT_MESSAGE;
    snprintf(p->prefix, sizeof p->prefix, "%s",
             o.name_prefix ? o.name_prefix
             : o.kind == CONC_THREADS ? "ThreadPoolWorker"
                                      : "PoolWorker");
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    cond_init_mono(&p->done_cv);
    cond_init_mono(&p->timer_cv);
    atomic_init(&p->refs, 1);
    int err = 0;
    if (p->kind == CONC_THREADS) {
        p->threads = conc__calloc(p->nworkers, sizeof *p->threads);
        if (p->threads == NULL) {
            err = CONC_ENOMEM;
            goto fail;
        }
        pthread_mutex_lock(&p->lock);
        for (size_t i = 0; i < p->nworkers && err == 0; i++) {
            err = spawn_thread_locked(p, i);
        }
        pthread_mutex_unlock(&p->lock);
        if (err == 0 && p->task_timeout > 0) {
            if (pthread_create(&p->timer, NULL, timer_main, p) != 0) {
                err = CONC_ESYS;
            } else {
                p->has_timer = true;
            }
        }
        if (err != 0) {
            threads_terminate(p);
            conc__deadline dl;
            conc__deadline_init(&dl, CONC_FOREVER);
            pthread_mutex_lock(&p->lock);
            threads_wait_locked(p, &dl);
            pthread_mutex_unlock(&p->lock);
            stop_timer(p);
            goto fail;
        }
    } else {
        err = conc__proc_start(p);
        if (err != 0) {
            goto fail;
        }
    }
    *out = p;
    return 0;
fail:
    conc__pool_unref(p);
    return err;
}

size_t conc_pool_workers(const conc_pool *pool)
{
    return pool ? pool->nworkers : 0;
}

static struct task *task_new(conc_task_fn fn)
{
    struct task *t = conc__calloc(1, sizeof *t);
    if (t != NULL) {
        t->fn = fn;
        t->count = 1;
        atomic_init(&t->refs, 1);
    }
    return t;
}

int conc_pool_submit(conc_pool *pool, conc_task_fn fn, const void *in,
                     size_t inlen, conc_future **fut)
{
    if (fut != NULL) {
        *fut = NULL;
    }
    if (pool == NULL || fn == NULL || fut == NULL ||
        (in == NULL && inlen > 0)) {
        return CONC_EINVAL;
    }
    if (pool->kind == CONC_PROCESSES && inlen > pool->max_msg) {
        return CONC_ETOOBIG;
    }
    struct task *t = task_new(fn);
    conc_future *f = NULL;
    int err = CONC_ENOMEM;
    if (t == NULL) {
        goto fail;
    }
    if (inlen > 0) {
        t->in = conc__malloc(inlen);
        if (t->in == NULL) {
            goto fail;
        }
        memcpy(t->in, in, inlen);
        t->inlen = inlen;
    }
    err = conc__future_new(&f);
    if (err != 0) {
        goto fail;
    }
    conc__future_ref(f); /* the task's reference */
    t->fut = f;
    if (pool->kind == CONC_PROCESSES) {
        /* Lets a caller waiting on f collect results itself; dropped with
         * f's last reference (conc__future_unref). */
        conc__pool_ref(pool);
        f->pool = pool;
    }
    err = conc__pool_push(pool, t, t, 1);
    if (err != 0) {
        goto fail;
    }
    *fut = f;
    return 0;
fail:
    if (t != NULL) {
        conc__task_free(t); /* drops the task's reference to f */
    }
    if (f != NULL) {
        conc__future_unref(f);
    }
    return err;
}

int conc_pool_apply(conc_pool *pool, conc_task_fn fn, const void *in,
                    size_t inlen, conc_msg *out, double timeout)
{
    if (out != NULL) {
        out->data = NULL;
        out->len = 0;
    }
    conc__deadline dl;
    if (out == NULL || conc__deadline_init(&dl, timeout) != 0) {
        return CONC_EINVAL;
    }
    conc_future *f;
    int err = conc_pool_submit(pool, fn, in, inlen, &f);
    if (err != 0) {
        return err;
    }
    err = conc_future_result(f, out, timeout);
    conc_future_free(f);
    return err;
}

/* Builds the tasks of a map over batch b and queues them. */
static int map_start(conc_pool *p, conc_task_fn fn, const conc_msg *inputs,
                     size_t n, bool is_map, const conc_map_opts *opts,
                     struct batch **out)
{
    *out = NULL;
    if (p == NULL || fn == NULL || (inputs == NULL && n > 0)) {
        return CONC_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (inputs[i].data == NULL && inputs[i].len > 0) {
            return CONC_EINVAL;
        }
        if (p->kind == CONC_PROCESSES && inputs[i].len > p->max_msg) {
            return CONC_ETOOBIG;
        }
    }
    size_t chunk = opts ? opts->chunksize : 0;
    if (chunk == 0) {
        chunk = is_map ? (n + 4 * p->nworkers - 1) / (4 * p->nworkers) : 1;
    }
    if (chunk == 0) {
        chunk = 1;
    }
    if (p->kind == CONC_THREADS && p->task_timeout > 0) {
        chunk = 1;
    }
    struct batch *b;
    int err = batch_new(&b, inputs, n);
    if (err != 0) {
        return err;
    }
    struct task *first = NULL, *last = NULL;
    size_t ntasks = 0;
    for (size_t i = 0; i < n;) {
        struct task *t = task_new(fn);
        if (t == NULL) {
            err = CONC_ENOMEM;
            break;
        }
        t->batch = b;
        t->start = i;
        /* Processes: a chunk's record must fit a ring (see pool_proc.c):
         * cut it when its bytes pass max_msg; a single item always fits. */
        size_t bytes = 0, c = 0;
        while (i + c < n && c < chunk) {
            size_t add = 8 + ((inputs[i + c].len + 7) & ~(size_t)7);
            if (p->kind == CONC_PROCESSES && c > 0 &&
                bytes + add > p->max_msg) {
                break;
            }
            bytes += add;
            c++;
        }
        t->count = c;
        i += c;
        atomic_fetch_add(&b->refs, 1);
        if (last != NULL) {
            last->next = t;
        } else {
            first = t;
        }
        last = t;
        ntasks++;
    }
    if (err == 0 && ntasks > 0) {
        err = conc__pool_push(p, first, last, ntasks);
    }
    if (err != 0) {
        while (first != NULL) {
            struct task *nx = first->next;
            conc__task_free(first);
            first = nx;
        }
        conc__batch_unref(b);
        return err;
    }
    if (ntasks == 0) {
        /* An empty map still has to respect the pool's state. */
        pthread_mutex_lock(&p->lock);
        err = p->broken ? CONC_EBROKEN
              : p->state != POOL_RUN ? CONC_ESTATE
                                     : 0;
        pthread_mutex_unlock(&p->lock);
        if (err != 0) {
            conc__batch_unref(b);
            return err;
        }
    }
    *out = b;
    return 0;
}

static int iter_new(conc_pool *p, conc_task_fn fn, const conc_msg *inputs,
                    size_t n, conc_iter **it, const conc_map_opts *opts,
                    int kind, bool is_map)
{
    if (it == NULL) {
        return CONC_EINVAL;
    }
    *it = NULL;
    conc_iter *i = conc__calloc(1, sizeof *i);
    if (i == NULL) {
        return CONC_ENOMEM;
    }
    struct batch *b;
    int err = map_start(p, fn, inputs, n, is_map, opts, &b);
    if (err != 0) {
        free(i);
        return err;
    }
    i->kind = kind;
    i->batch = b;
    i->last_index = (size_t)-1;
    *it = i;
    return 0;
}

int conc_pool_imap(conc_pool *pool, conc_task_fn fn, const conc_msg *inputs,
                   size_t n, conc_iter **it, const conc_map_opts *opts)
{
    return iter_new(pool, fn, inputs, n, it, opts, ITER_ORDERED, false);
}

int conc_pool_imap_unordered(conc_pool *pool, conc_task_fn fn,
                             const conc_msg *inputs, size_t n, conc_iter **it,
                             const conc_map_opts *opts)
{
    return iter_new(pool, fn, inputs, n, it, opts, ITER_UNORDERED, false);
}

int conc_iter_next(conc_iter *it, conc_msg *msg, double timeout)
{
    if (msg != NULL) {
        msg->data = NULL;
        msg->len = 0;
    }
    if (it == NULL || msg == NULL || it->kind == ITER_FUTURES) {
        return CONC_EINVAL;
    }
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return CONC_EINVAL;
    }
    struct batch *b = it->batch;
    int err = 0;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        if (it->next == b->n) {
            err = CONC_ECLOSED;
            break;
        }
        size_t i = (size_t)-1;
        if (it->kind == ITER_ORDERED && b->items[it->next].done) {
            i = it->next;
        } else if (it->kind == ITER_UNORDERED && it->next < b->ndone) {
            i = b->order[it->next];
        }
        if (i != (size_t)-1) {
            it->next++;
            struct batch_item *item = &b->items[i];
            *msg = item->out;
            item->out.data = NULL;
            item->out.len = 0;
            free(it->last_err);
            it->last_err = item->err;
            item->err = NULL;
            it->last_index = i;
            err = item->code;
            break;
        }
        if (dl.once || conc__deadline_passed(&dl)) {
            err = CONC_ETIMEDOUT;
            break;
        }
        b->waiters++;
        b->want = it->kind == ITER_ORDERED ? it->next : SIZE_MAX;
        if (dl.forever) {
            pthread_cond_wait(&b->cond, &b->lock);
        } else {
            pthread_cond_timedwait(&b->cond, &b->lock, &dl.at);
        }
        b->waiters--;
    }
    pthread_mutex_unlock(&b->lock);
    return err;
}

size_t conc_iter_index(const conc_iter *it)
{
    return it ? it->last_index : (size_t)-1;
}

const char *conc_iter_error_message(const conc_iter *it)
{
    return it ? it->last_err : NULL;
}

void conc_iter_free(conc_iter *it)
{
    if (it == NULL) {
        return;
    }
    if (it->kind == ITER_FUTURES) {
        conc__iter_ac_free(it->ac);
    } else {
        conc__batch_unref(it->batch);
    }
    free(it->last_err);
    free(it);
}

int conc_pool_map(conc_pool *pool, conc_task_fn fn, const conc_msg *inputs,
                  size_t n, conc_msg *outputs, const conc_map_opts *opts)
{
    if (outputs == NULL && n > 0) {
        return CONC_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        outputs[i].data = NULL;
        outputs[i].len = 0;
    }
    double timeout = opts ? opts->timeout : CONC_FOREVER;
    if (timeout == 0) {
        timeout = CONC_FOREVER;
    }
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return CONC_EINVAL;
    }
    conc_iter *it = NULL;
    int err = iter_new(pool, fn, inputs, n, &it, opts, ITER_ORDERED, true);
    if (err != 0) {
        return err;
    }
    /* Collect in input order under one hold of the batch lock, waiting
     * only when the next item is not done (cheaper than conc_iter_next
     * per item: the manager completes items under the same lock). */
    int first = 0;
    bool late = false;
    struct batch *b = it->batch;
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < n && !late; i++) {
        while (!b->items[i].done) {
            if (conc__deadline_passed(&dl)) {
                late = true;
                break;
            }
            b->waiters++;
            b->want = i;
            if (dl.forever) {
                pthread_cond_wait(&b->cond, &b->lock);
            } else {
                pthread_cond_timedwait(&b->cond, &b->lock, &dl.at);
            }
            b->waiters--;
        }
        if (late) {
            break;
        }
        struct batch_item *item = &b->items[i];
        outputs[i] = item->out;
        item->out.data = NULL;
        item->out.len = 0;
        if (item->code != 0 && first == 0) {
            first = item->code;
        }
    }
    pthread_mutex_unlock(&b->lock);
    conc_iter_free(it);
    return late ? CONC_ETIMEDOUT : first;
}

int conc_pool_close(conc_pool *pool)
{
    if (pool == NULL) {
        return CONC_EINVAL;
    }
    pthread_mutex_lock(&pool->lock);
    if (pool->state == POOL_RUN) {
        pool->state = POOL_CLOSED;
    }
    pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->lock);
    if (pool->kind == CONC_PROCESSES) {
        conc__proc_kick(pool);
    }
    return 0;
}

int conc_pool_join(conc_pool *pool, double timeout)
{
    conc__deadline dl;
    if (pool == NULL || conc__deadline_init(&dl, timeout) != 0) {
        return CONC_EINVAL;
    }
    pthread_mutex_lock(&pool->lock);
    if (pool->state == POOL_RUN) {
        pthread_mutex_unlock(&pool->lock);
        return CONC_ESTATE;
    }
    int err = 0;
    if (pool->kind == CONC_THREADS) {
        err = threads_wait_locked(pool, &dl);
        pthread_mutex_unlock(&pool->lock);
        if (err == 0) {
            stop_timer(pool);
        }
    } else {
        pthread_mutex_unlock(&pool->lock);
        err = conc__proc_join(pool, &dl);
    }
    if (err == 0) {
        pool->joined = true;
    }
    return err;
}

int conc_pool_terminate(conc_pool *pool)
{
    if (pool == NULL) {
        return CONC_EINVAL;
    }
    if (pool->kind == CONC_THREADS) {
        threads_terminate(pool);
    } else {
        conc__proc_terminate(pool);
    }
    return 0;
}

int conc_pool_shutdown(conc_pool *pool, bool wait, bool cancel_futures)
{
    if (pool == NULL) {
        return CONC_EINVAL;
    }
    conc_pool_close(pool);
    if (cancel_futures) {
        pthread_mutex_lock(&pool->lock);
        struct task *list = take_all_locked(pool);
        pthread_mutex_unlock(&pool->lock);
        fail_list(list, FUT_CANCELLED, CONC_ECANCELLED,
                  "cancelled by shutdown(cancel_futures)");
        if (pool->kind == CONC_PROCESSES) {
            conc__proc_kick(pool);
        }
    }
    if (wait) {
        return conc_pool_join(pool, CONC_FOREVER);
    }
    return 0;
}

void conc_pool_free(conc_pool *pool)
{
    if (pool == NULL) {
        return;
    }
    if (!pool->joined) {
        conc_pool_terminate(pool);
        conc_pool_join(pool, CONC_FOREVER);
    }
    if (pool->kind == CONC_THREADS) {
        stop_timer(pool);
    } else {
        conc__proc_free(pool);
    }
    conc__pool_unref(pool);
}
