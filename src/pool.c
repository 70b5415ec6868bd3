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
 * instructions, and idle workers must sleep somewhere anyway); a kind
 * switch in each function (the engine branched on the kind twenty times;
 * a table keeps each kind's logic in its file).
 */
#include "pool_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tasks ------------------------------------------------------------------ */

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

/* ---- batches ---------------------------------------------------------------- */

void conc__batch_unref(conc__batch *b)
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
    b->order[b->ndone++] = i;
    /* An ordered waiter needs one item: wake it for that one only, so a
     * map's collector is not woken for every item of every chunk. */
    if (b->waiters > 0 && (b->want == SIZE_MAX || b->want == i)) {
        pthread_cond_broadcast(&b->cond);
    }
}

void conc__batch_done(conc__batch *b, size_t i, int code, conc_msg *out,
                      char *err)
{
    pthread_mutex_lock(&b->lock);
    conc__batch_done_locked(b, i, code, out, err);
    pthread_mutex_unlock(&b->lock);
}

static int batch_new(conc__batch **out, const conc_msg *inputs, size_t n)
{
    conc__batch *b = conc__calloc(1, sizeof *b);
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
    conc__cond_init_mono(&b->cond);
    atomic_init(&b->refs, 1);
    *out = b;
    return 0;
}

/* ---- the queue -------------------------------------------------------------- */

int conc__pool_push(conc_pool *p, conc__task *first, conc__task *last,
                    size_t n)
{
    pthread_mutex_lock(&p->lock);
    if (p->broken != 0) {
        pthread_mutex_unlock(&p->lock);
        return CONC_EBROKEN;
    }
    if (p->state != CONC__POOL_RUN) {
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
    if (p->be->queued_locked != NULL) {
        p->be->queued_locked(p, n);
    }
    pthread_mutex_unlock(&p->lock);
    if (p->be->queued != NULL) {
        p->be->queued(p);
    }
    return 0;
}

void conc__pool_requeue_front(conc_pool *p, conc__task *first,
                              conc__task *last, size_t n)
{
    if (n == 0) {
        return;
    }
    pthread_mutex_lock(&p->lock);
    last->next = p->head;
    p->head = first;
    if (p->tail == NULL) {
        p->tail = last;
    }
    atomic_fetch_add(&p->npending, n);
    pthread_mutex_unlock(&p->lock);
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

conc__task *conc__pool_take_all_locked(conc_pool *p)
{
    conc__task *t = p->head;
    p->head = p->tail = NULL;
    atomic_store(&p->npending, 0);
    return t;
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

/* ---- the pool ------------------------------------------------------------------ */

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
    const conc__pool_backend *be =
        o.kind == CONC_THREADS ? &conc__pool_threads : &conc__pool_processes;
    conc_pool *p = conc__calloc(1, be->size);
    if (p == NULL) {
        return CONC_ENOMEM;
    }
    p->be = be;
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
    if (inlen > pool->msg_limit) {
        return CONC_ETOOBIG;
    }
    conc__task *t = task_new(fn);
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
    if (pool->be->waiter != NULL) {
        /* The pool lives as long as f may help: the hook's release drops
         * this reference with f's last one. */
        conc__pool_ref(pool);
        conc__future_set_waiter(f, pool->be->waiter, pool);
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

/* ---- maps ---------------------------------------------------------------------- */

/* Builds the tasks of a map over batch b and queues them. */
static int map_start(conc_pool *p, conc_task_fn fn, const conc_msg *inputs,
                     size_t n, bool is_map, const conc_map_opts *opts,
                     conc__batch **out)
{
    *out = NULL;
    if (p == NULL || fn == NULL || (inputs == NULL && n > 0)) {
        return CONC_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (inputs[i].data == NULL && inputs[i].len > 0) {
            return CONC_EINVAL;
        }
        if (inputs[i].len > p->msg_limit) {
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
    if (chunk > p->chunk_max) {
        chunk = p->chunk_max;
    }
    conc__batch *b;
    int err = batch_new(&b, inputs, n);
    if (err != 0) {
        return err;
    }
    conc__task *first = NULL, *last = NULL;
    size_t ntasks = 0;
    for (size_t i = 0; i < n;) {
        conc__task *t = task_new(fn);
        if (t == NULL) {
            err = CONC_ENOMEM;
            break;
        }
        t->batch = b;
        t->start = i;
        /* A chunk's inputs, as the process backend frames them (8 bytes
         * of length, the bytes padded to 8), stay within msg_limit: cut it
         * there; a single item always fits. */
        size_t bytes = 0, c = 0;
        while (i + c < n && c < chunk) {
            size_t add = 8 + ((inputs[i + c].len + 7) & ~(size_t)7);
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
        err = conc__pool_push(p, first, last, ntasks);
    }
    if (err != 0) {
        while (first != NULL) {
            conc__task *nx = first->next;
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
              : p->state != CONC__POOL_RUN ? CONC_ESTATE
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

/* A map's iterator over its batch's results. */
struct map_iter {
    conc_iter base;
    bool ordered;
    conc__batch *batch;
    size_t next; /* ordered: next index; unordered: next in order[] */
};

static int map_iter_next(conc_iter *base, conc_msg *msg,
                         const conc__deadline *dl)
{
    struct map_iter *it = (struct map_iter *)base;
    conc__batch *b = it->batch;
    int err = 0;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        if (it->next == b->n) {
            err = CONC_ECLOSED;
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
            conc__batch_item *item = &b->items[i];
            *msg = item->out;
            item->out.data = NULL;
            item->out.len = 0;
            free(base->last_err);
            base->last_err = item->err;
            item->err = NULL;
            base->last_index = i;
            err = item->code;
            break;
        }
        if (dl->once || conc__deadline_passed(dl)) {
            err = CONC_ETIMEDOUT;
            break;
        }
        b->waiters++;
        b->want = it->ordered ? it->next : SIZE_MAX;
        if (dl->forever) {
            pthread_cond_wait(&b->cond, &b->lock);
        } else {
            pthread_cond_timedwait(&b->cond, &b->lock, &dl->at);
        }
        b->waiters--;
    }
    pthread_mutex_unlock(&b->lock);
    return err;
}

static void map_iter_free(conc_iter *base)
{
    struct map_iter *it = (struct map_iter *)base;
    conc__batch_unref(it->batch);
    free(it);
}

static const conc__iter_ops map_iter_ops = {
    .next = map_iter_next,
    .free = map_iter_free,
};

static int iter_new(conc_pool *p, conc_task_fn fn, const conc_msg *inputs,
                    size_t n, conc_iter **out, const conc_map_opts *opts,
                    bool ordered, bool is_map)
{
    if (out == NULL) {
        return CONC_EINVAL;
    }
    *out = NULL;
    struct map_iter *it = conc__calloc(1, sizeof *it);
    if (it == NULL) {
        return CONC_ENOMEM;
    }
    conc__batch *b;
    int err = map_start(p, fn, inputs, n, is_map, opts, &b);
    if (err != 0) {
        free(it);
        return err;
    }
    it->base.ops = &map_iter_ops;
    it->base.last_index = (size_t)-1;
    it->ordered = ordered;
    it->batch = b;
    *out = &it->base;
    return 0;
}

int conc_pool_imap(conc_pool *pool, conc_task_fn fn, const conc_msg *inputs,
                   size_t n, conc_iter **it, const conc_map_opts *opts)
{
    return iter_new(pool, fn, inputs, n, it, opts, true, false);
}

int conc_pool_imap_unordered(conc_pool *pool, conc_task_fn fn,
                             const conc_msg *inputs, size_t n, conc_iter **it,
                             const conc_map_opts *opts)
{
    return iter_new(pool, fn, inputs, n, it, opts, false, false);
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
    conc_iter *base = NULL;
    int err = iter_new(pool, fn, inputs, n, &base, opts, true, true);
    if (err != 0) {
        return err;
    }
    /* Collect in input order under one hold of the batch lock, waiting
     * only when the next item is not done (cheaper than conc_iter_next
     * per item: the process backend completes items under the same
     * lock). */
    int first = 0;
    bool late = false;
    conc__batch *b = ((struct map_iter *)base)->batch;
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
        conc__batch_item *item = &b->items[i];
        outputs[i] = item->out;
        item->out.data = NULL;
        item->out.len = 0;
        if (item->code != 0 && first == 0) {
            first = item->code;
        }
    }
    pthread_mutex_unlock(&b->lock);
    conc_iter_free(base);
    return late ? CONC_ETIMEDOUT : first;
}

/* ---- lifecycle ------------------------------------------------------------------ */

int conc_pool_close(conc_pool *pool)
{
    if (pool == NULL) {
        return CONC_EINVAL;
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
    if (pool == NULL || conc__deadline_init(&dl, timeout) != 0) {
        return CONC_EINVAL;
    }
    pthread_mutex_lock(&pool->lock);
    bool running = pool->state == CONC__POOL_RUN;
    pthread_mutex_unlock(&pool->lock);
    if (running) {
        return CONC_ESTATE;
    }
    int err = pool->be->join(pool, &dl);
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
    pool->be->terminate(pool);
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
        conc__task *list = conc__pool_take_all_locked(pool);
        pthread_mutex_unlock(&pool->lock);
        conc__task_fail_list(list, CONC__FUT_CANCELLED, CONC_ECANCELLED,
                             "cancelled by shutdown(cancel_futures)");
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
    if (pool == NULL) {
        return;
    }
    if (!pool->joined) {
        conc_pool_terminate(pool);
        conc_pool_join(pool, CONC_FOREVER);
    }
    if (pool->be->stop != NULL) {
        pool->be->stop(pool);
    }
    conc__pool_unref(pool);
}
