/* net_queue.c - a conc_queue served by a server (.url): the handle, the
 * argument checks every backend shares, and the hand-over to the
 * backend's ops (net_int.h).
 *
 * The handle is an ordinary struct conc_queue (queue_int.h) with every
 * shared-memory field zero and `net` pointing at the backend's queue;
 * queue.c and queue_map.c test `net` first thing in each public function
 * and call the matching conc__netq_* here.  So a queue on a server costs
 * the shared-memory path one load and one compare per call, and nothing
 * else.
 *
 * What the checks here settle, so that no backend repeats them: NULL
 * handles and buffers, timeouts (NaN or negative other than
 * CONC_FOREVER), options that make no sense on a server (capacity_bytes:
 * a server holds what its memory allows), zeroed outputs on every error.
 * The bool and size queries (qsize, empty, full, closed) cannot return an
 * error: on a failed round trip they answer 0 / true / false / false and
 * leave the reason in conc_errdetail().
 */
#include "net_int.h"
#include "queue_int.h"

#include <stdlib.h>
#include <string.h>

static int bad_timeout(double t, const char *fn)
{
    return conc__fail(CONC_EINVAL, "%s: timeout %g is neither >= 0 nor "
                      "CONC_FOREVER", fn, t);
}

static int wrap(conc_queue **out, conc__netq *nq, const char *fn)
{
    conc_queue *q = conc__calloc(1, sizeof *q);
    if (q == NULL) {
        nq->ops->free(nq);
        return conc__fail(CONC_ENOMEM, "%s: no memory for the handle", fn);
    }
    q->net = nq;
    *out = q;
    return 0;
}

static int make(conc_queue **out, const char *url, const char *name,
                const conc_queue_opts *opts, bool create, const char *fn)
{
    const conc__net_backend *b = NULL;
    conc__url u;
    int err = conc__net_resolve(url, CONC__NET_QUEUE, &b, &u, fn);
    if (err != 0) {
        return err;
    }
    conc__netq *nq = NULL;
    err = b->queue(&nq, &u, name, opts, create);
    if (err != 0) {
        return err;
    }
    return wrap(out, nq, fn);
}

int conc__netq_new(conc_queue **out, const conc_queue_opts *opts)
{
    static const char fn[] = "conc_queue_new";
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    *out = NULL;
    if (opts->capacity_bytes != 0) {
        return conc__fail(CONC_EINVAL, "%s: capacity_bytes has no meaning "
                          "for a queue on a server (leave it 0)", fn);
    }
    if (opts->lanes > 1) {
        return conc__fail(CONC_EINVAL, "%s: lanes (%u) are shared-memory "
                          "rings; a queue on a server has none (leave it "
                          "0)", fn, opts->lanes);
    }
    int err = conc__net_opts_check(opts->lease, opts->net_timeout, fn);
    if (err != 0) {
        return err;
    }
    return make(out, opts->url, opts->name, opts, true, fn);
}

int conc__netq_open(conc_queue **out, const char *url)
{
    static const char fn[] = "conc_queue_open";
    if (out == NULL) {
        return conc__fail(CONC_EINVAL, "%s: out is NULL", fn);
    }
    *out = NULL;
    return make(out, url, NULL, NULL, false, fn);
}

int conc__netq_put(conc__netq *q, const void *data, size_t len,
                   double timeout)
{
    static const char fn[] = "conc_queue_put";
    if (data == NULL && len > 0) {
        return conc__fail(CONC_EINVAL, "%s: data is NULL and len is %zu",
                          fn, len);
    }
    if (!conc__timeout_ok(timeout)) {
        return bad_timeout(timeout, fn);
    }
    conc_msg m = { .data = (void *)data, .len = len };
    size_t done = 0;
    return q->ops->put_many(q, &m, 1, &done, timeout, fn);
}

int conc__netq_put_many(conc__netq *q, const conc_msg *msgs, size_t n,
                        size_t *done, double timeout)
{
    static const char fn[] = "conc_queue_put_many";
    size_t scratch = 0;
    if (done == NULL) {
        done = &scratch;
    }
    *done = 0;
    if (msgs == NULL && n > 0) {
        return conc__fail(CONC_EINVAL, "%s: msgs is NULL and n is %zu", fn,
                          n);
    }
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].data == NULL && msgs[i].len > 0) {
            return conc__fail(CONC_EINVAL, "%s: msgs[%zu].data is NULL and "
                              "its len is %zu", fn, i, msgs[i].len);
        }
    }
    if (!conc__timeout_ok(timeout)) {
        return bad_timeout(timeout, fn);
    }
    if (n == 0) {
        return 0;
    }
    return q->ops->put_many(q, msgs, n, done, timeout, fn);
}

int conc__netq_get(conc__netq *q, conc_msg *msg, double timeout)
{
    static const char fn[] = "conc_queue_get";
    if (msg == NULL) {
        return conc__fail(CONC_EINVAL, "%s: msg is NULL", fn);
    }
    msg->data = NULL;
    msg->len = 0;
    if (!conc__timeout_ok(timeout)) {
        return bad_timeout(timeout, fn);
    }
    return q->ops->get(q, msg, NULL, 0, NULL, timeout);
}

int conc__netq_get_into(conc__netq *q, void *buf, size_t cap, size_t *len,
                        double timeout)
{
    static const char fn[] = "conc_queue_get_into";
    if (len == NULL || (buf == NULL && cap > 0)) {
        return conc__fail(CONC_EINVAL, "%s: len is NULL, or buf is NULL "
                          "with cap %zu", fn, cap);
    }
    *len = 0;
    if (!conc__timeout_ok(timeout)) {
        return bad_timeout(timeout, fn);
    }
    return q->ops->get(q, NULL, buf, cap, len, timeout);
}

int conc__netq_get_many(conc__netq *q, conc_msg *msgs, size_t n,
                        size_t *got, double timeout)
{
    static const char fn[] = "conc_queue_get_many";
    size_t ignored;
    if (got == NULL) {
        got = &ignored;
    }
    *got = 0;
    if (msgs != NULL) {
        memset(msgs, 0, n * sizeof *msgs);
    }
    if (msgs == NULL || n == 0) {
        return conc__fail(CONC_EINVAL, "%s: %s", fn,
                          msgs == NULL ? "msgs is NULL" : "n is 0");
    }
    if (!conc__timeout_ok(timeout)) {
        return bad_timeout(timeout, fn);
    }
    return q->ops->get_many(q, msgs, n, got, timeout);
}

size_t conc__netq_qsize(conc__netq *q)
{
    size_t n = 0;
    return q->ops->qsize(q, &n, "conc_queue_qsize") == 0 ? n : 0;
}

bool conc__netq_empty(conc__netq *q)
{
    size_t n = 0;
    return q->ops->qsize(q, &n, "conc_queue_empty") != 0 || n == 0;
}

bool conc__netq_full(conc__netq *q)
{
    size_t n = 0;
    return q->maxsize != 0 && q->ops->qsize(q, &n, "conc_queue_full") == 0 &&
           n >= q->maxsize;
}

int conc__netq_task_done(conc__netq *q)
{
    return q->ops->task_done(q);
}

int conc__netq_join(conc__netq *q, double timeout)
{
    if (!conc__timeout_ok(timeout)) {
        return bad_timeout(timeout, "conc_queue_join");
    }
    return q->ops->join(q, timeout);
}

int conc__netq_close(conc__netq *q)
{
    return q->ops->close(q);
}

bool conc__netq_closed(conc__netq *q)
{
    bool c = false;
    return q->ops->closed(q, &c) == 0 && c;
}

void conc__netq_free(conc_queue *q)
{
    q->net->ops->free(q->net);
    free(q);
}
