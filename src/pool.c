/* pool.c - the pool engine: Pool, ThreadPoolExecutor and
 * ProcessPoolExecutor in one.  This file holds what both kinds share: the
 * queue of tasks, submit/apply/map/imap, map batches and their iterators,
 * close/join/terminate/shutdown/free.  The workers are a backend's
 * (pool_int.h): pool_thread.c runs them as threads, pool_proc.c as
 * forked processes; this file knows a backend only by its table, picked
 * once in conc_pool_new.
 *
 * Tasks.  A task is one submit (one item, with a future) or one map chunk
 * (items start..start+count-1 of a batch).  Queued tasks are a FIFO list
 * under pool->lock (npending counts them, for lock-free peeks).  Inputs
 * are copied on submit, so callers may reuse their buffers at once and a
 * map that times out leaves nothing dangling.  A backend takes tasks off
 * the queue (conc__pool_pop_locked), completes their items
 * (conc__task_item_done) and frees them; the first completion of an item
 * wins, a later one is dropped.
 *
 * Batches.  A map/imap copies its inputs into one arena and keeps one
 * result slot per item, filled by whoever completes the item
 * (conc__batch_done) under the batch's own lock; the iterator waits on the
 * batch's condvar.  A batch is reference-counted by its iterator and by
 * each task holding some of its items, so freeing the iterator early, or
 * the pool, is safe.  A map collects its results under one hold of the
 * batch lock and is woken only for the item it waits for (batch->want),
 * not for every item completed.
 *
 * Lifetime.  The pool is reference-counted: the user's reference, each
 * thread of a backend that may outlive conc_pool_free (an abandoned worker
 * thread), and each future whose backend has a waiter hook (a process
 * pool's future may still help collect results after the pool is freed:
 * it finds the backend stopped).  The last reference frees the backend's
 * memory and then the pool.
 *
 * Rejected: a lock-free task queue (the lock is held for a few
 * instructions, and idle workers must sleep somewhere anyway); a switch
 * on the kind in each function (each kind's logic would be spread over
 * every function of the engine; a table keeps it in its own file).
 */
#include "pool_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tasks --------------------------------------------------------------- */

void conc__task_free(conc__task *t)
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

bool conc__task_start(conc__task *t)
{
    if (t->fut != NULL && !t->fut_started) {
        if (!conc__future_start(t->fut)) {
            conc__task_free(t); /* cancelled while queued */
            return false;
        }
        t->fut_started = true;
    }
    return true;
}

void conc__task_item_done(conc__task *t, size_t k, int code, conc_msg *out,
                          char *err)
{
    if (t->fut != NULL) {
        conc__future_finish(t->fut, CONC__FUT_DONE, code, out, err);
    } else {
        conc__batch_done(t->batch, t->start + k, code, out, err);
    }
}

void conc__task_fail_items(conc__task *t, size_t k, conc__fut_final final,
                           int code, const char *msg)
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

void conc__task_fail_list(conc__task *t, conc__fut_final final, int code,
                          const char *msg)
{
    conc__future_defer_begin();
    while (t != NULL) {
        conc__task *n = t->next;
        t->next = NULL;
        conc__task_fail_items(t, t->ndone, final, code, msg);
        conc__task_free(t);
        t = n;
    }
    conc__future_defer_end();
}

conc__task *conc__task_take_started(conc__task **list)
{
    conc__task *started = NULL, **tail = &started;
    while (*list != NULL) {
        conc__task *t = *list;
        if (t->fut != NULL && t->fut_started) {
            *list = t->next;
            t->next = NULL;
            *tail = t;
            tail = &t->next;
        } else {
            list = &t->next;
        }
    }
    return started;
}

static conc__task *task_new(conc_task_fn fn)
{
    conc__task *t = conc__calloc(1, sizeof *t);
    if (t != NULL) {
        t->fn = fn;
        t->count = 1;
        atomic_init(&t->refs, 1);
    }
    return t;
}

/* ---- batches ------------------------------------------------------------- */

static void feed_unref(struct conc__feed *fs);
static void feed_done_locked(conc__batch *b, size_t i);

void conc__batch_unref(conc__batch *b)
{
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        conc_msg_free(&b->items[i].out);
        free(b->items[i].err);
    }
    if (b->feed != NULL) {
        /* One block; the lock is the feed's. */
        struct conc__feed *fs = b->feed;
        free(b);
        feed_unref(fs);
        return;
    }
    free(b->items);
    free(b->order);
    free(b->arena);
    free(b->off);
    free(b->len);
    pthread_mutex_destroy(&b->own_mu);
    pthread_cond_destroy(&b->own_cv);
    free(b);
}

void conc__batch_done_locked(conc__batch *b, size_t i, int code,
                             conc_msg *out, char *err)
{
    conc__batch_item *it = &b->items[i];
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
    if (b->feed != NULL) {
        feed_done_locked(b, i);
        return;
    }
    b->order[b->ndone++] = i;
    /* An ordered waiter needs one item: wake it for that one only, so a
     * map's collector is not woken for every item of every chunk. */
    if (b->waiters > 0 && (b->want == SIZE_MAX || b->want == i)) {
        pthread_cond_broadcast(b->cv);
    }
}

void conc__batch_done(conc__batch *b, size_t i, int code, conc_msg *out,
                      char *err)
{
    pthread_mutex_lock(b->mu);
    conc__batch_done_locked(b, i, code, out, err);
    pthread_mutex_unlock(b->mu);
}

static int batch_new(conc__batch **out, const conc_msg *inputs, size_t n)
{
    conc__batch *b = conc__calloc(1, sizeof *b);
    if (b == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_pool: no memory for a batch "
                          "of %zu items", n);
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
        return conc__fail(CONC_ENOMEM, "conc_pool: no memory for a batch "
                          "of %zu items (%zu bytes of input)", n, total);
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
    pthread_mutex_init(&b->own_mu, NULL);
    conc__cond_init_mono(&b->own_cv);
    b->mu = &b->own_mu;
    b->cv = &b->own_cv;
    atomic_init(&b->refs, 1);
    *out = b;
    return 0;
}

static int push(conc_pool *p, conc__task *first, conc__task *last, size_t n,
                const char *who);

/* Makes the tasks over every item of b, at most chunk items each and cut
 * where a chunk's inputs, as the process backend frames them (8 bytes of
 * length, the bytes padded to 8), would pass p->msg_limit (a single item
 * always fits), and queues them: 0, or a conc__pool_push error or
 * CONC_ENOMEM with nothing queued. */
static int queue_tasks(conc_pool *p, conc_task_fn fn, conc__batch *b,
                       size_t chunk, const char *who)
{
    int err = 0;
    conc__task *first = NULL, *last = NULL;
    size_t ntasks = 0;
    for (size_t i = 0; i < b->n;) {
        conc__task *t = task_new(fn);
        if (t == NULL) {
            err = conc__fail(CONC_ENOMEM, "%s: no memory for the tasks of "
                             "%zu items", who, b->n);
            break;
        }
        t->batch = b;
        t->start = i;
        size_t bytes = 0, c = 0;
        while (i + c < b->n && c < chunk) {
            size_t add = 8 + ((b->len[i + c] + 7) & ~(size_t)7);
            if (c > 0 && bytes + add > p->msg_limit) {
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
        err = push(p, first, last, ntasks, who);
    }
    if (err != 0) {
        while (first != NULL) {
            conc__task *nx = first->next;
            conc__task_free(first);
            first = nx;
        }
    }
    return err;
}

/* ---- the queue ----------------------------------------------------------- */

/* Why the pool takes no tasks: CONC_EBROKEN or CONC_ESTATE with a
 * detail naming who, or 0; lock held. */
static int refusal_locked(conc_pool *p, const char *who)
{
    if (p->broken != 0) {
        return conc__fail(CONC_EBROKEN, "%s: the pool is broken: %s", who,
                          p->broken_why);
    }
    if (p->state != CONC__POOL_RUN) {
        return conc__fail(CONC_ESTATE,
                          "%s: the pool takes no more tasks (it was %s)", who,
                          p->state == CONC__POOL_CLOSED
                              ? "closed or shut down"
                              : "terminated or freed");
    }
    return 0;
}

/* Queues a list of tasks (first..last, n of them) at the back, for who;
 * the pool lock must NOT be held.  0, or refusal_locked's error, or
 * CONC_ESTATE in a forked child (every task of every kind of call comes
 * through here, an iterator's refills included). */
static int push(conc_pool *p, conc__task *first, conc__task *last, size_t n,
                const char *who)
{
    int foreign = conc__pool_foreign(p, who);
    if (foreign != 0) {
        return foreign;
    }
    pthread_mutex_lock(&p->lock);
    int err = refusal_locked(p, who);
    if (err != 0) {
        pthread_mutex_unlock(&p->lock);
        return err;
    }
    last->next = NULL;
    if (p->tail != NULL) {
        p->tail->next = first;
    } else {
        p->head = first;
    }
    p->tail = last;
    atomic_fetch_add(&p->npending, n);
    if (p->be->queued_locked != NULL) {
        p->be->queued_locked(p, n);
    }
    pthread_mutex_unlock(&p->lock);
    if (p->be->queued != NULL) {
        p->be->queued(p);
    }
    return 0;
}

void conc__pool_requeue_front_locked(conc_pool *p, conc__task *first,
                                     conc__task *last, size_t n)
{
    if (n == 0) {
        return;
    }
    last->next = p->head;
    p->head = first;
    if (p->tail == NULL) {
        p->tail = last;
    }
    atomic_fetch_add(&p->npending, n);
}

void conc__pool_requeue_front(conc_pool *p, conc__task *first,
                              conc__task *last, size_t n)
{
    pthread_mutex_lock(&p->lock);
    conc__pool_requeue_front_locked(p, first, last, n);
    pthread_mutex_unlock(&p->lock);
}

conc__task *conc__task_split(conc__task *t, size_t take)
{
    CONC__ASSERT(t->batch != NULL && take > 0 && take < t->count);
    conc__task *rest = conc__calloc(1, sizeof *rest);
    if (rest == NULL) {
        return NULL;
    }
    *rest = *t;
    rest->start = t->start + take;
    rest->count = t->count - take;
    rest->next = NULL;
    atomic_init(&rest->refs, 1);
    atomic_fetch_add(&t->batch->refs, 1);
    t->count = take;
    return rest;
}

conc__task *conc__pool_pop_locked(conc_pool *p)
{
    conc__task *t = p->head;
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

int conc__pool_foreign(const conc_pool *p, const char *who)
{
    if (!conc__pool_is_foreign(p)) {
        return 0;
    }
    return conc__fail(CONC_ESTATE, "%s: the pool belongs to the process "
                      "that made it, and this one was forked from it (its "
                      "workers are not here)", who);
}

bool conc__pool_waiter_foreign(void *ctx)
{
    return conc__pool_is_foreign(ctx);
}

/* The waiter of a future whose pool has no hook of its own (threads):
 * ctx is the pool's fork epoch itself. */
static bool epoch_foreign(void *ctx)
{
    return (uintptr_t)ctx != (uintptr_t)conc__sync_fork_epoch;
}

static const conc__future_waiter epoch_waiter = {
    .foreign = epoch_foreign,
};

void conc__pool_waiter_release(void *ctx)
{
    conc__pool_unref(ctx);
}

void conc__pool_break_locked(conc_pool *p, int code, const char *why)
{
    CONC__ASSERT(code != 0);
    if (p->broken == 0) {
        p->broken = code;
        snprintf(p->broken_why, sizeof p->broken_why, "%s", why);
    }
}

conc__task *conc__pool_take_all_locked(conc_pool *p)
{
    conc__task *t = p->head;
    p->head = p->tail = NULL;
    atomic_store(&p->npending, 0);
    return t;
}

conc__task *conc__pool_cancel_locked(conc_pool *p, conc__task *list)
{
    conc__task *run = conc__task_take_started(&list);
    if (run != NULL) {
        conc__task *last = run;
        size_t n = 1;
        while (last->next != NULL) {
            last = last->next;
            n++;
        }
        conc__pool_requeue_front_locked(p, run, last, n);
    }
    return list;
}

void conc__pool_cancel_list(conc__task *list)
{
    conc__task_fail_list(list, CONC__FUT_CANCELLED, CONC_ECANCELLED,
                         "cancelled by shutdown(cancel_futures)");
}

void conc__pool_ref(conc_pool *p)
{
    /* Relaxed: a new reference is made from an existing one. */
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void conc__pool_unref(conc_pool *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    p->be->destroy(p);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* ---- the pool ------------------------------------------------------------ */

int conc_pool_new(conc_pool **out, const conc_pool_opts *opts)
{
    conc_pool_opts o = { 0 };
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
    }
    *out = NULL;
    if (opts != NULL) {
        o = *opts;
    }
    if (o.kind != CONC_PROCESSES && o.kind != CONC_THREADS) {
        return conc__fail(CONC_EINVAL,
                          "conc_pool_new: kind %d is neither CONC_PROCESSES "
                          "nor CONC_THREADS",
                          (int)o.kind);
    }
    if (o.workers > 4096) {
        return conc__fail(CONC_EINVAL,
                          "conc_pool_new: workers %zu is over the limit of "
                          "4096",
                          o.workers);
    }
    double task_timeout = conc__timeout_opt(o.task_timeout, CONC_FOREVER);
    if (!conc__timeout_ok(task_timeout) || task_timeout == 0) {
        return conc__fail(CONC_EINVAL,
                          "conc_pool_new: task_timeout %g: it must be > 0 "
                          "or CONC_FOREVER (left out: no limit)",
                          task_timeout);
    }
    if (o.max_message_bytes > ((size_t)1 << 30)) {
        return conc__fail(CONC_EINVAL,
                          "conc_pool_new: max_message_bytes %zu is over the "
                          "limit of 1 GiB",
                          o.max_message_bytes);
    }
    if (o.name_prefix != NULL && strlen(o.name_prefix) > 40) {
        return conc__fail(CONC_EINVAL,
                          "conc_pool_new: name_prefix '%.48s...' is over 40 "
                          "bytes",
                          o.name_prefix);
    }
    const conc__pool_backend *be =
        o.kind == CONC_THREADS ? &conc__pool_threads : &conc__pool_processes;
    conc_pool *p = conc__calloc(1, be->size);
    if (p == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_pool_new: no memory for the "
                          "pool");
    }
    p->be = be;
    p->fork_epoch = conc__sync_fork_epoch;
    p->nworkers = o.workers ? o.workers : (size_t)conc__os_cpu_count();
    if (p->nworkers == 0) {
        p->nworkers = 1;
    }
    p->init = o.initializer;
    p->init_arg = o.init_arg;
    p->fini = o.finalizer;
    p->max_tasks = o.max_tasks_per_worker;
    /* 0 inside: no limit (CONC_FOREVER, +inf, or beyond 30 years). */
    p->task_timeout =
        task_timeout < 0 || task_timeout > 1e9 ? 0 : task_timeout;
    p->max_msg = o.max_message_bytes ? o.max_message_bytes
                                     : CONC_POOL_DEFAULT_MESSAGE;
    p->msg_limit = SIZE_MAX;
    p->chunk_max = SIZE_MAX;
    snprintf(p->prefix, sizeof p->prefix, "%s",
             o.name_prefix ? o.name_prefix : be->name_prefix);
    pthread_mutex_init(&p->lock, NULL);
    atomic_init(&p->refs, 1);
    int err = be->start(p);
    if (err != 0) {
        conc__pool_unref(p);
        return err;
    }
    *out = p;
    return 0;
}

size_t conc_pool_workers(const conc_pool *pool)
{
    return pool ? pool->nworkers : 0;
}

int conc_pool_worker_info(conc_pool *pool, conc_worker_info *out, size_t cap,
                          size_t *n)
{
    if (pool == NULL || n == NULL || (out == NULL && cap > 0)) {
        return conc__fail(CONC_EINVAL, "conc_pool_worker_info: %s is NULL",
                          pool == NULL ? "pool"
                          : n == NULL  ? "n"
                                       : "out (with cap > 0)");
    }
    int foreign = conc__pool_foreign(pool, "conc_pool_worker_info");
    if (foreign != 0) {
        return foreign;
    }
    *n = pool->nworkers;
    if (cap > pool->nworkers) {
        cap = pool->nworkers;
    }
    if (cap > 0) {
        memset(out, 0, cap * sizeof *out);
        for (size_t i = 0; i < cap; i++) {
            out[i].task_item = SIZE_MAX;
        }
        pool->be->workers(pool, out, cap);
    }
    return 0;
}

/* conc_pool_submit, for who (it or conc_pool_apply). */
static int submit_as(conc_pool *pool, conc_task_fn fn, const void *in,
                     size_t inlen, conc_future **fut, const char *who)
{
    if (fut != NULL) {
        *fut = NULL;
    }
    if (pool == NULL || fn == NULL || fut == NULL ||
        (in == NULL && inlen > 0)) {
        return conc__fail(CONC_EINVAL, "%s: %s", who,
                          pool == NULL ? "pool is NULL"
                          : fn == NULL ? "fn is NULL"
                          : fut == NULL
                              ? "fut is NULL"
                              : "in is NULL with inlen > 0");
    }
    if (inlen > pool->msg_limit) {
        return conc__fail(CONC_ETOOBIG,
                          "%s: the input is %zu bytes, over the pool's "
                          "max_message_bytes (%zu)",
                          who, inlen, pool->msg_limit);
    }
    conc__task *t = task_new(fn);
    conc_future *f = NULL;
    int err = 0;
    if (t == NULL || (inlen > 0 && (t->in = conc__malloc(inlen)) == NULL) ||
        conc__future_new(&f) != 0) {
        err = conc__fail(CONC_ENOMEM, "%s: no memory for the task (input "
                         "of %zu bytes)", who, inlen);
        goto fail;
    }
    if (inlen > 0) {
        memcpy(t->in, in, inlen);
        t->inlen = inlen;
    }
    conc__future_ref(f); /* the task's reference */
    t->fut = f;
    if (pool->be->waiter != NULL) {
        /* The pool lives as long as f may help: the hook's release drops
         * this reference with f's last one. */
        conc__pool_ref(pool);
        conc__future_set_waiter(f, pool->be->waiter, pool);
    } else {
        /* Only the fork check: the pool's fork epoch is the context, so
         * the future holds no reference (a thread pool's submit costs no
         * more). */
        conc__future_set_waiter(f, &epoch_waiter,
                                (void *)(uintptr_t)pool->fork_epoch);
    }
    err = push(pool, t, t, 1, who);
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

int conc_pool_submit(conc_pool *pool, conc_task_fn fn, const void *in,
                     size_t inlen, conc_future **fut)
{
    return submit_as(pool, fn, in, inlen, fut, "conc_pool_submit");
}

int conc_pool_apply(conc_pool *pool, conc_task_fn fn, const void *in,
                    size_t inlen, conc_msg *out, double timeout)
{
    if (out != NULL) {
        out->data = NULL;
        out->len = 0;
    }
    conc__deadline dl;
    if (out == NULL) {
        return CONC__FAIL_NULL("out");
    }
    if (conc__deadline_init(&dl, timeout) != 0) {
        return CONC__FAIL_TIMEOUT(timeout);
    }
    conc_future *f;
    int err = submit_as(pool, fn, in, inlen, &f, "conc_pool_apply");
    if (err != 0) {
        return err;
    }
    err = conc__future_result_as(f, out, timeout, "conc_pool_apply");
    conc_future_free(f);
    return err;
}

/* ---- maps ---------------------------------------------------------------- */

/* Builds the tasks of a map over batch b and queues them. */
static int map_start(conc_pool *p, conc_task_fn fn, const conc_msg *inputs,
                     size_t n, bool is_map, const conc_map_opts *opts,
                     conc__batch **out, const char *who)
{
    *out = NULL;
    if (p == NULL || fn == NULL || (inputs == NULL && n > 0)) {
        return conc__fail(CONC_EINVAL, "%s: %s", who,
                          p == NULL    ? "pool is NULL"
                          : fn == NULL ? "fn is NULL"
                                       : "inputs is NULL with n > 0");
    }
    for (size_t i = 0; i < n; i++) {
        if (inputs[i].data == NULL && inputs[i].len > 0) {
            return conc__fail(CONC_EINVAL,
                              "%s: inputs[%zu] has NULL data and len %zu",
                              who, i, inputs[i].len);
        }
        if (inputs[i].len > p->msg_limit) {
            return conc__fail(CONC_ETOOBIG,
                              "%s: inputs[%zu] is %zu bytes, over the "
                              "pool's max_message_bytes (%zu)",
                              who, i, inputs[i].len, p->msg_limit);
        }
    }
    size_t chunk = opts ? opts->chunksize : 0;
    if (chunk == 0) {
        chunk = is_map ? (n + 4 * p->nworkers - 1) / (4 * p->nworkers) : 1;
    }
    if (chunk == 0) {
        chunk = 1;
    }
    if (chunk > p->chunk_max) {
        chunk = p->chunk_max;
    }
    conc__batch *b = NULL;
    int err = batch_new(&b, inputs, n);
    if (err != 0) {
        return conc__fail(err, "%s: no memory for the copies of %zu inputs",
                          who, n);
    }
    err = queue_tasks(p, fn, b, chunk, who);
    if (err != 0) {
        conc__batch_unref(b);
        return err;
    }
    if (n == 0) {
        /* An empty map still has to respect the pool's state. */
        pthread_mutex_lock(&p->lock);
        err = refusal_locked(p, who);
        pthread_mutex_unlock(&p->lock);
        if (err != 0) {
            conc__batch_unref(b);
            return err;
        }
    }
    *out = b;
    return 0;
}

/* A map's iterator over its batch's results. */
struct map_iter {
    conc_iter base;
    bool ordered;
    unsigned long fork_epoch; /* its pool's (conc__pool_is_foreign) */
    conc__batch *batch;
    size_t next; /* ordered: next index; unordered: next in order[] */
};

/* Moves a done item's output to *msg and its error text to the
 * iterator (index: its input's); returns its code.  Its lock held. */
static int hand_out(conc_iter *base, conc__batch_item *item, size_t index,
                    conc_msg *msg)
{
    *msg = item->out;
    item->out.data = NULL;
    item->out.len = 0;
    free(base->last_err);
    base->last_err = item->err;
    item->err = NULL;
    base->last_index = index;
    if (item->code != 0) {
        char what[48];
        snprintf(what, sizeof what, "item %zu", index);
        return conc__result_fail(item->code, "conc_iter_next", what,
                                 base->last_err);
    }
    return 0;
}

/* The detail of a wait for the next result that ran out of time. */
static int next_timed_out(const conc__deadline *dl, double timeout)
{
    return dl->once ? conc__fail_lit(CONC_ETIMEDOUT,
                                     "conc_iter_next: the next result is "
                                     "not in (timeout 0: no wait)")
                    : conc__fail(CONC_ETIMEDOUT,
                                 "conc_iter_next: the next result did not "
                                 "come within %g s",
                                 timeout);
}

static int map_iter_next(conc_iter *base, conc_msg *msg,
                         const conc__deadline *dl, double timeout)
{
    struct map_iter *it = (struct map_iter *)base;
    conc__batch *b = it->batch;
    int err = 0;
    pthread_mutex_lock(b->mu);
    for (;;) {
        if (it->next == b->n) {
            err = conc__fail(CONC_ECLOSED,
                             "conc_iter_next: all %zu results were returned",
                             b->n);
            break;
        }
        size_t i = (size_t)-1;
        if (it->ordered && b->items[it->next].done) {
            i = it->next;
        } else if (!it->ordered && it->next < b->ndone) {
            i = b->order[it->next];
        }
        if (i != (size_t)-1) {
            it->next++;
            err = hand_out(base, &b->items[i], i, msg);
            break;
        }
        if (it->fork_epoch != conc__sync_fork_epoch) {
            /* A forked child: the results still to come go to the
             * parent (pool.h, "Fork"); those in already were handed out
             * above. */
            err = conc__fail_lit(CONC_ESTATE, "conc_iter_next: the "
                                 "iterator's pool belongs to the process "
                                 "that made it, and this one was forked "
                                 "from it: the next result cannot come "
                                 "here");
            break;
        }
        if (dl->once || conc__deadline_passed(dl)) {
            err = next_timed_out(dl, timeout);
            break;
        }
        b->waiters++;
        b->want = it->ordered ? it->next : SIZE_MAX;
        if (dl->forever) {
            pthread_cond_wait(b->cv, b->mu);
        } else {
            pthread_cond_timedwait(b->cv, b->mu, &dl->at);
        }
        b->waiters--;
    }
    pthread_mutex_unlock(b->mu);
    return err;
}

static void map_iter_free(conc_iter *base)
{
    struct map_iter *it = (struct map_iter *)base;
    conc__batch_unref(it->batch);
    free(it);
}

static void map_iter_progress(const conc_iter *base, conc_progress *out)
{
    const struct map_iter *it = (const struct map_iter *)base;
    conc__batch *b = it->batch;
    pthread_mutex_lock(b->mu);
    out->total = b->n;
    out->done = b->ndone;
    out->returned = it->next;
    pthread_mutex_unlock(b->mu);
    out->total_known = true;
}

static const conc__iter_ops map_iter_ops = {
    .next = map_iter_next,
    .progress = map_iter_progress,
    .free = map_iter_free,
};

static int iter_new(conc_pool *p, conc_task_fn fn, const conc_msg *inputs,
                    size_t n, conc_iter **out, const conc_map_opts *opts,
                    bool ordered, bool is_map, const char *who)
{
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: it is NULL", who);
    }
    *out = NULL;
    struct map_iter *it = conc__calloc(1, sizeof *it);
    if (it == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: no memory for the iterator",
                          who);
    }
    conc__batch *b;
    int err = map_start(p, fn, inputs, n, is_map, opts, &b, who);
    if (err != 0) {
        free(it);
        return err;
    }
    it->base.ops = &map_iter_ops;
    it->base.last_index = (size_t)-1;
    it->ordered = ordered;
    it->fork_epoch = p->fork_epoch;
    it->batch = b;
    *out = &it->base;
    return 0;
}

int conc_pool_imap(conc_pool *pool, conc_task_fn fn, const conc_msg *inputs,
                   size_t n, conc_iter **it, const conc_map_opts *opts)
{
    return iter_new(pool, fn, inputs, n, it, opts, true, false,
                    "conc_pool_imap");
}

int conc_pool_imap_unordered(conc_pool *pool, conc_task_fn fn,
                             const conc_msg *inputs, size_t n, conc_iter **it,
                             const conc_map_opts *opts)
{
    return iter_new(pool, fn, inputs, n, it, opts, false, false,
                    "conc_pool_imap_unordered");
}

/* ---- fed imaps ----------------------------------------------------------- */

/* A fed imap takes its inputs from a conc_feed_fn a chunk at a time, in
 * the threads that call conc_pool_imap_feed and conc_iter_next, while it
 * holds fewer than nch chunks (buffersize / chunk inputs each).  Each
 * chunk is a batch of its own, in one allocation (inputs, result slots),
 * so a task that outlives its iteration (an abandoned thread) keeps only
 * its own chunk alive, and a chunk's memory goes as soon as its last
 * result was returned.  The chunks of one imap share its lock and its
 * condvar, and report their completions to it (feed_done_locked): the
 * count of done items, and for imap_unordered the completion order.
 * That shared state (struct conc__feed) is reference-counted by the
 * iterator and by each chunk, since tasks may still finish chunks after
 * the iterator was freed. */

/* A completed item not yet returned (imap_unordered). */
struct feed_ref {
    conc__batch *b;
    size_t i;
};

struct conc__feed {
    _Atomic long refs;  /* the iterator + each chunk */
    pthread_mutex_t mu; /* guards what follows, and every chunk's items */
    pthread_cond_t cv;  /* CLOCK_MONOTONIC: an awaited result came in */
    unsigned waiters;
    conc__batch *want_b; /* an ordered waiter's chunk and item; NULL: any */
    size_t want_i;
    size_t done;         /* items completed */
    struct feed_ref *order; /* unordered: a ring of cap; NULL: ordered */
    size_t cap, ohead, olen;
};

struct feed_iter {
    conc_iter base;
    struct conc__feed *fs;
    bool ordered;
    conc_pool *pool; /* referenced */
    conc_task_fn fn;
    conc_feed_fn feed;
    void *feed_arg;
    size_t chunk; /* inputs per chunk (the last may have fewer) */
    size_t nch;   /* chunks held at most */
    /* Taken by the thread that feeds (it calls feed without fs->mu). */
    pthread_mutex_t feed_mu;
    unsigned char *scratch; /* a chunk's inputs while they are taken */
    size_t scratch_cap;
    size_t *slen;           /* their lengths (chunk of them) */
    /* Under fs->mu: */
    conc__batch **chunks; /* nch places; ordered chunk q sits at q % nch */
    size_t live;          /* chunks in places */
    size_t taken;         /* inputs taken from the feed and queued */
    size_t returned;      /* results handed out */
    int end;              /* 0: feeding; 1: the feed ended; else its error */
    bool end_told;        /* that error was returned */
    char end_detail[300]; /* what went wrong, for the detail of the call
                           * that returns the error (it names itself) */
    const char *who;      /* the public call that made the iterator */
};

static void feed_unref(struct conc__feed *fs)
{
    if (atomic_fetch_sub_explicit(&fs->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    free(fs->order);
    pthread_mutex_destroy(&fs->mu);
    pthread_cond_destroy(&fs->cv);
    free(fs);
}

/* Item i of fed chunk b completed; fs->mu held. */
static void feed_done_locked(conc__batch *b, size_t i)
{
    struct conc__feed *fs = b->feed;
    fs->done++;
    if (fs->order != NULL && fs->olen < fs->cap) {
        /* At most cap items are held, so the ring cannot overflow while
         * the iterator lives; afterwards nobody reads it. */
        fs->order[(fs->ohead + fs->olen) % fs->cap] =
            (struct feed_ref){ b, i };
        fs->olen++;
    }
    if (fs->waiters > 0 &&
        (fs->want_b == NULL || (fs->want_b == b && fs->want_i == i))) {
        pthread_cond_broadcast(&fs->cv);
    }
}

/* The feed stops with end (1: it ended; else an error, said by the
 * detail); fs->mu not held. */
static void feed_stop(struct feed_iter *it, int end, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void feed_stop(struct feed_iter *it, int end, const char *fmt, ...)
{
    pthread_mutex_lock(&it->fs->mu);
    if (it->end == 0) {
        it->end = end;
        if (fmt != NULL) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(it->end_detail, sizeof it->end_detail, fmt, ap);
            va_end(ap);
        }
    }
    pthread_mutex_unlock(&it->fs->mu);
}

/* Makes a chunk of the count inputs in scratch (the feed's inputs first
 * .. first+count-1), places it and queues its tasks.  0, or an error with
 * nothing queued (the inputs are dropped). */
static int feed_submit(struct feed_iter *it, size_t first, size_t count,
                       size_t bytes)
{
    struct conc__feed *fs = it->fs;
    conc__batch *b = conc__calloc(1, sizeof *b + count * (sizeof *b->items +
                                                          2 * sizeof(size_t)) +
                                         bytes);
    if (b == NULL) {
        return conc__fail(CONC_ENOMEM, "%s: no memory for a chunk of %zu "
                          "inputs (%zu bytes)", it->who, count, bytes);
    }
    b->items = (conc__batch_item *)(b + 1);
    b->off = (size_t *)(b->items + count);
    b->len = b->off + count;
    b->arena = (unsigned char *)(b->len + count);
    memcpy(b->arena, it->scratch, bytes);
    for (size_t k = 0, pos = 0; k < count; k++) {
        b->off[k] = pos;
        b->len[k] = it->slen[k];
        pos += it->slen[k];
    }
    b->n = count;
    b->mu = &fs->mu;
    b->feed = fs;
    b->first = first;
    atomic_init(&b->refs, 1); /* its place */
    atomic_fetch_add_explicit(&fs->refs, 1, memory_order_relaxed);
    /* Placed before its tasks run, so their completions find it. */
    pthread_mutex_lock(&fs->mu);
    size_t place = (first / it->chunk) % it->nch;
    if (!it->ordered) {
        for (place = 0; it->chunks[place] != NULL; place++) {
        }
    }
    b->place = place;
    it->chunks[place] = b;
    it->live++;
    it->taken += count;
    pthread_mutex_unlock(&fs->mu);
    int err = queue_tasks(it->pool, it->fn, b, it->chunk, it->who);
    if (err != 0) {
        pthread_mutex_lock(&fs->mu);
        it->chunks[place] = NULL;
        it->live--;
        it->taken -= count;
        pthread_mutex_unlock(&fs->mu);
        conc__batch_unref(b);
    }
    return err;
}

/* Takes one chunk's inputs from the feed and queues them; false once the
 * feed stopped (ended or failed).  feed_mu held. */
static bool feed_chunk(struct feed_iter *it, size_t first)
{
    size_t count = 0, bytes = 0;
    while (count < it->chunk) {
        const void *data = NULL;
        size_t len = 0;
        int rc = it->feed(it->feed_arg, &data, &len);
        if (rc == 0) {
            feed_stop(it, 1, NULL);
            break;
        }
        size_t at = first + count;
        if (rc != 1) {
            feed_stop(it, rc,
                      "the feed returned %d for input %zu (1: an input, "
                      "0: the end)",
                      rc, at);
            break;
        }
        if (data == NULL && len > 0) {
            feed_stop(it, CONC_EINVAL,
                      "the feed gave input %zu as NULL data of %zu bytes",
                      at, len);
            break;
        }
        if (len > it->pool->msg_limit) {
            feed_stop(it, CONC_ETOOBIG,
                      "input %zu of the feed is %zu bytes, over the "
                      "pool's max_message_bytes (%zu)",
                      at, len, it->pool->msg_limit);
            break;
        }
        if (bytes + len > it->scratch_cap) {
            size_t cap = it->scratch_cap ? it->scratch_cap : 256;
            while (cap < bytes + len) {
                cap *= 2;
            }
            unsigned char *nb = conc__realloc(it->scratch, cap);
            if (nb == NULL) {
                feed_stop(it, CONC_ENOMEM,
                          "no memory for input %zu of the feed (%zu "
                          "bytes)",
                          at, len);
                break;
            }
            it->scratch = nb;
            it->scratch_cap = cap;
        }
        if (len > 0) {
            memcpy(it->scratch + bytes, data, len);
        }
        it->slen[count++] = len;
        bytes += len;
    }
    if (count > 0) {
        int err = feed_submit(it, first, count, bytes);
        if (err != 0) {
            /* These inputs are lost: this error says so, even when the
             * feed had just ended after them.  feed_submit's detail is
             * "who: why"; the why is kept. */
            const char *why = strstr(conc_errdetail(), ": ");
            why = why != NULL ? why + 2 : conc_strerror(err);
            pthread_mutex_lock(&it->fs->mu);
            if (it->end == 0 || it->end == 1) {
                it->end = err;
                snprintf(it->end_detail, sizeof it->end_detail,
                         "inputs %zu to %zu of the feed could not be "
                         "queued (%s); the feed stopped",
                         first, first + count - 1, why);
            }
            pthread_mutex_unlock(&it->fs->mu);
        }
    }
    pthread_mutex_lock(&it->fs->mu);
    bool more = it->end == 0;
    pthread_mutex_unlock(&it->fs->mu);
    return more;
}

/* Takes inputs while the iterator holds fewer than nch chunks. */
static void feed_fill(struct feed_iter *it)
{
    pthread_mutex_lock(&it->feed_mu);
    for (;;) {
        pthread_mutex_lock(&it->fs->mu);
        bool room = it->end == 0 && it->live < it->nch;
        size_t first = it->taken;
        pthread_mutex_unlock(&it->fs->mu);
        if (!room || !feed_chunk(it, first)) {
            break;
        }
    }
    pthread_mutex_unlock(&it->feed_mu);
}

static int feed_next(conc_iter *base, conc_msg *msg, const conc__deadline *dl,
                     double timeout)
{
    struct feed_iter *it = (struct feed_iter *)base;
    struct conc__feed *fs = it->fs;
    conc__batch *drop = NULL;
    bool got = false;
    int err = 0;
    /* A forked child (pool.h, "Fork") takes the results in already, and
     * never asks the feed for more: those would go to the parent's
     * workers. */
    bool foreign = conc__pool_is_foreign(it->pool);
    pthread_mutex_lock(&fs->mu);
    for (;;) {
        conc__batch *b = NULL;
        size_t i = 0;
        if (it->ordered && it->returned < it->taken) {
            b = it->chunks[(it->returned / it->chunk) % it->nch];
            i = it->returned - b->first;
            if (!b->items[i].done) {
                fs->want_b = b;
                fs->want_i = i;
                b = NULL;
            }
        } else if (!it->ordered && fs->olen > 0) {
            b = fs->order[fs->ohead].b;
            i = fs->order[fs->ohead].i;
            fs->ohead = (fs->ohead + 1) % fs->cap;
            fs->olen--;
        } else {
            fs->want_b = NULL;
        }
        if (b != NULL) {
            err = hand_out(base, &b->items[i], b->first + i, msg);
            it->returned++;
            if (++b->nret == b->n) {
                /* Its last result is out: the chunk leaves its place (its
                 * memory goes once no task holds it). */
                it->chunks[b->place] = NULL;
                it->live--;
                drop = b;
            }
            got = true;
            break;
        }
        if (it->returned == it->taken) {
            if (it->end != 0) {
                if (it->end != 1 && !it->end_told) {
                    it->end_told = true;
                    err = conc__fail(it->end, "conc_iter_next: %s",
                                     it->end_detail);
                } else {
                    err = conc__fail(CONC_ECLOSED,
                                     "conc_iter_next: the feed ended and "
                                     "all %zu results were returned",
                                     it->returned);
                }
                break;
            }
            if (foreign) {
                err = conc__pool_foreign(it->pool, "conc_iter_next");
                break;
            }
            /* Every result fed so far was returned: take more. */
            pthread_mutex_unlock(&fs->mu);
            feed_fill(it);
            pthread_mutex_lock(&fs->mu);
            continue;
        }
        if (foreign) {
            err = conc__pool_foreign(it->pool, "conc_iter_next");
            break;
        }
        if (dl->once || conc__deadline_passed(dl)) {
            err = next_timed_out(dl, timeout);
            break;
        }
        fs->waiters++;
        if (dl->forever) {
            pthread_cond_wait(&fs->cv, &fs->mu);
        } else {
            pthread_cond_timedwait(&fs->cv, &fs->mu, &dl->at);
        }
        fs->waiters--;
    }
    pthread_mutex_unlock(&fs->mu);
    if (drop != NULL) {
        conc__batch_unref(drop);
    }
    if (got && !foreign) {
        /* Room was made: keep the pool busy while the caller works on
         * this result (Python 3.14's buffersize does the same). */
        feed_fill(it);
    }
    return err;
}

static void feed_progress(const conc_iter *base, conc_progress *out)
{
    const struct feed_iter *it = (const struct feed_iter *)base;
    pthread_mutex_lock(&it->fs->mu);
    out->total = it->taken;
    out->done = it->fs->done;
    out->returned = it->returned;
    out->total_known = it->end != 0;
    pthread_mutex_unlock(&it->fs->mu);
}

static void feed_free(conc_iter *base)
{
    struct feed_iter *it = (struct feed_iter *)base;
    struct conc__feed *fs = it->fs;
    for (size_t k = 0; k < it->nch; k++) {
        pthread_mutex_lock(&fs->mu);
        conc__batch *b = it->chunks[k];
        it->chunks[k] = NULL;
        pthread_mutex_unlock(&fs->mu);
        if (b != NULL) {
            conc__batch_unref(b);
        }
    }
    free(it->chunks);
    free(it->scratch);
    free(it->slen);
    pthread_mutex_destroy(&it->feed_mu);
    conc__pool_unref(it->pool);
    feed_unref(fs);
    free(it);
}

static const conc__iter_ops feed_iter_ops = {
    .next = feed_next,
    .progress = feed_progress,
    .free = feed_free,
};

/* The most inputs a fed imap may hold (buffersize). */
#define FEED_MAX ((size_t)1 << 24)

static int feed_new(conc_pool *p, conc_task_fn fn, conc_feed_fn feed,
                    void *feed_arg, conc_iter **out,
                    const conc_map_opts *opts, bool ordered)
{
    const char *who =
        ordered ? "conc_pool_imap_feed" : "conc_pool_imap_unordered_feed";
    if (out != NULL) {
        *out = NULL;
    }
    if (p == NULL || fn == NULL || feed == NULL || out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: %s is NULL", who,
                          p == NULL    ? "pool"
                          : fn == NULL ? "fn"
                          : feed == NULL ? "feed"
                                         : "it");
    }
    int foreign = conc__pool_foreign(p, who);
    if (foreign != 0) {
        return foreign;
    }
    size_t chunk = opts && opts->chunksize ? opts->chunksize : 1;
    if (chunk > p->chunk_max) {
        chunk = p->chunk_max;
    }
    size_t want = opts && opts->buffersize ? opts->buffersize
                                           : 2 * p->nworkers * chunk;
    if (want > FEED_MAX || chunk > FEED_MAX) {
        return conc__fail(CONC_EINVAL,
                          "%s: buffersize %zu (chunksize %zu) is over the "
                          "limit of %zu inputs held",
                          who, want, chunk, FEED_MAX);
    }
    size_t nch = (want + chunk - 1) / chunk;
    struct feed_iter *it = conc__calloc(1, sizeof *it);
    struct conc__feed *fs = conc__calloc(1, sizeof *fs);
    if (it == NULL || fs == NULL) {
        free(it);
        free(fs);
        return conc__fail(CONC_ENOMEM, "%s: no memory for the iterator", who);
    }
    it->chunks = conc__calloc(nch, sizeof *it->chunks);
    it->slen = conc__calloc(chunk, sizeof *it->slen);
    if (!ordered) {
        fs->cap = nch * chunk;
        fs->order = conc__calloc(fs->cap, sizeof *fs->order);
    }
    if (it->chunks == NULL || it->slen == NULL ||
        (!ordered && fs->order == NULL)) {
        free(it->chunks);
        free(it->slen);
        free(fs->order);
        free(it);
        free(fs);
        return conc__fail(CONC_ENOMEM,
                          "%s: no memory for %zu chunks of %zu inputs", who,
                          nch, chunk);
    }
    pthread_mutex_init(&fs->mu, NULL);
    conc__cond_init_mono(&fs->cv);
    atomic_init(&fs->refs, 1);
    pthread_mutex_init(&it->feed_mu, NULL);
    it->base.ops = &feed_iter_ops;
    it->base.last_index = (size_t)-1;
    it->fs = fs;
    it->ordered = ordered;
    conc__pool_ref(p);
    it->pool = p;
    it->fn = fn;
    it->feed = feed;
    it->feed_arg = feed_arg;
    it->chunk = chunk;
    it->nch = nch;
    it->who = who;
    feed_fill(it);
    /* Nothing taken and the feed failed: the call fails. */
    if (it->taken == 0 && it->end != 0 && it->end != 1) {
        int err = conc__fail(it->end, "%s: %s", who, it->end_detail);
        feed_free(&it->base);
        return err;
    }
    *out = &it->base;
    return 0;
}

int conc_pool_imap_feed(conc_pool *pool, conc_task_fn fn, conc_feed_fn feed,
                        void *feed_arg, conc_iter **it,
                        const conc_map_opts *opts)
{
    return feed_new(pool, fn, feed, feed_arg, it, opts, true);
}

int conc_pool_imap_unordered_feed(conc_pool *pool, conc_task_fn fn,
                                  conc_feed_fn feed, void *feed_arg,
                                  conc_iter **it, const conc_map_opts *opts)
{
    return feed_new(pool, fn, feed, feed_arg, it, opts, false);
}

int conc_pool_map(conc_pool *pool, conc_task_fn fn, const conc_msg *inputs,
                  size_t n, conc_msg *outputs, const conc_map_opts *opts)
{
    if (outputs == NULL && n > 0) {
        return conc__fail(CONC_EINVAL,
                          "conc_pool_map: outputs is NULL with n %zu", n);
    }
    for (size_t i = 0; i < n; i++) {
        outputs[i].data = NULL;
        outputs[i].len = 0;
    }
    double timeout =
        opts ? conc__timeout_opt(opts->timeout, CONC_FOREVER) : CONC_FOREVER;
    conc__deadline dl;
    if (conc__deadline_init(&dl, timeout) != 0) {
        return CONC__FAIL_TIMEOUT(timeout);
    }
    conc_iter *base = NULL;
    int err = iter_new(pool, fn, inputs, n, &base, opts, true, true,
                       "conc_pool_map");
    if (err != 0) {
        return err;
    }
    /* Collect in input order under one hold of the batch lock, waiting
     * only when the next item is not done (cheaper than conc_iter_next
     * per item: the process backend completes items under the same
     * lock). */
    int first = 0;
    size_t i = 0;
    bool late = false;
    conc__batch *b = ((struct map_iter *)base)->batch;
    pthread_mutex_lock(b->mu);
    for (; i < n && !late; i++) {
        while (!b->items[i].done) {
            if (conc__deadline_passed(&dl)) {
                late = true;
                err = conc__fail(CONC_ETIMEDOUT,
                                 "conc_pool_map: %zu of %zu items not done "
                                 "within %g s",
                                 n - b->ndone, n, timeout);
                break;
            }
            b->waiters++;
            b->want = i;
            if (dl.forever) {
                pthread_cond_wait(b->cv, b->mu);
            } else {
                pthread_cond_timedwait(b->cv, b->mu, &dl.at);
            }
            b->waiters--;
        }
        if (late) {
            break;
        }
        conc__batch_item *item = &b->items[i];
        outputs[i] = item->out;
        item->out.data = NULL;
        item->out.len = 0;
        if (item->code != 0 && first == 0) {
            char what[48];
            snprintf(what, sizeof what, "item %zu", i);
            first = conc__result_fail(item->code, "conc_pool_map", what,
                                      item->err);
        }
    }
    pthread_mutex_unlock(b->mu);
    conc_iter_free(base);
    return late ? err : first;
}

/* ---- lifecycle ----------------------------------------------------------- */

int conc_pool_close(conc_pool *pool)
{
    if (pool == NULL) {
        return CONC__FAIL_NULL("pool");
    }
    int foreign = conc__pool_foreign(pool, "conc_pool_close");
    if (foreign != 0) {
        return foreign;
    }
    pthread_mutex_lock(&pool->lock);
    if (pool->state == CONC__POOL_RUN) {
        pool->state = CONC__POOL_CLOSED;
    }
    pthread_mutex_unlock(&pool->lock);
    if (pool->be->kick != NULL) {
        pool->be->kick(pool);
    }
    return 0;
}

int conc_pool_join(conc_pool *pool, double timeout)
{
    conc__deadline dl;
    if (pool == NULL) {
        return CONC__FAIL_NULL("pool");
    }
    int foreign = conc__pool_foreign(pool, "conc_pool_join");
    if (foreign != 0) {
        return foreign;
    }
    if (conc__deadline_init(&dl, timeout) != 0) {
        return CONC__FAIL_TIMEOUT(timeout);
    }
    pthread_mutex_lock(&pool->lock);
    bool running = pool->state == CONC__POOL_RUN;
    pthread_mutex_unlock(&pool->lock);
    if (running) {
        return conc__fail(CONC_ESTATE,
                          "conc_pool_join: the pool is still running: "
                          "close, shut down or terminate it first");
    }
    int err = pool->be->join(pool, &dl);
    if (err == CONC_ETIMEDOUT) {
        return conc__fail(err, "conc_pool_join: the workers did not end "
                          "within %g s", timeout);
    }
    if (err == 0) {
        /* Under the lock: several threads may join at once. */
        pthread_mutex_lock(&pool->lock);
        pool->joined = true;
        pthread_mutex_unlock(&pool->lock);
    }
    return err;
}

int conc_pool_terminate(conc_pool *pool)
{
    if (pool == NULL) {
        return CONC__FAIL_NULL("pool");
    }
    int foreign = conc__pool_foreign(pool, "conc_pool_terminate");
    if (foreign != 0) {
        return foreign;
    }
    pool->be->terminate(pool);
    return 0;
}

int conc_pool_shutdown(conc_pool *pool, bool wait, bool cancel_futures)
{
    if (pool == NULL) {
        return CONC__FAIL_NULL("pool");
    }
    int foreign = conc__pool_foreign(pool, "conc_pool_shutdown");
    if (foreign != 0) {
        return foreign;
    }
    conc_pool_close(pool);
    if (cancel_futures) {
        pthread_mutex_lock(&pool->lock);
        atomic_fetch_add(&pool->cancel_epoch, 1);
        conc__task *list =
            conc__pool_cancel_locked(pool, conc__pool_take_all_locked(pool));
        pthread_mutex_unlock(&pool->lock);
        conc__pool_cancel_list(list);
        if (pool->be->kick != NULL) {
            pool->be->kick(pool);
        }
    }
    if (wait) {
        return conc_pool_join(pool, CONC_FOREVER);
    }
    return 0;
}

void conc_pool_free(conc_pool *pool)
{
    if (pool == NULL || conc__pool_foreign(pool, "conc_pool_free") != 0) {
        /* In a forked child nothing of the pool is this process's to
         * stop: the copy goes with the child. */
        return;
    }
    pthread_mutex_lock(&pool->lock);
    bool joined = pool->joined;
    pthread_mutex_unlock(&pool->lock);
    if (!joined) {
        conc_pool_terminate(pool);
        conc_pool_join(pool, CONC_FOREVER);
    }
    if (pool->be->stop != NULL) {
        pool->be->stop(pool);
    }
    conc__pool_unref(pool);
}
