/* queue_batch.c - conc_queue_put_many and conc_queue_get_many.
 *
 * A queue on a server (q->net) hands the whole batch to its backend,
 * which sends it in one round trip (net_queue.c).  In shared memory the
 * batch is, for now, a loop over conc_queue_put / conc_queue_get under
 * one deadline: put_many puts each message with what is left of the
 * timeout (so it waits for room only when the queue is full); get_many
 * waits for the first message and then takes, without waiting, what is
 * queued up to n.  The loop keeps every guarantee of the single calls
 * (FIFO, the bounds, close, dying peers) because it is made of them.
 * (A version that reserves ring space for the whole batch and publishes
 * it once is the shared-memory queue's to provide; it replaces the two
 * shm_* functions below and nothing else.)
 */
#include "queue_int.h"
#include "net_int.h"

/* ---- shared memory: a loop over the single calls -------------------------- */

static double left_of(const conc__deadline *dl, double timeout)
{
    if (timeout == 0 || timeout == CONC_FOREVER || dl->forever) {
        return timeout;
    }
    return conc__deadline_left(dl);
}

static int shm_put_many(conc_queue *q, const conc_msg *msgs, size_t n,
                        size_t *done, double timeout)
{
    conc__deadline dl;
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return conc__fail(err, "conc_queue_put_many: timeout %g is neither "
                          ">= 0 nor CONC_FOREVER", timeout);
    }
    for (size_t i = 0; i < n; i++) {
        err = conc_queue_put(q, msgs[i].data, msgs[i].len,
                             left_of(&dl, timeout));
        if (err != 0) {
            return err;
        }
        *done = i + 1;
    }
    return 0;
}

static int shm_get_many(conc_queue *q, conc_msg *msgs, size_t n,
                        size_t *got, double timeout)
{
    int err = conc_queue_get(q, &msgs[0], timeout);
    if (err != 0) {
        return err;
    }
    *got = 1;
    while (*got < n && conc_queue_get(q, &msgs[*got], 0) == 0) {
        (*got)++;
    }
    return 0;
}

/* ---- the public calls ----------------------------------------------------- */

CONC_API int conc_queue_put_many(conc_queue *q, const conc_msg *msgs,
                                 size_t n, size_t *done, double timeout)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_put_many(q->net, msgs, n, done, timeout);
    }
    size_t scratch = 0;
    if (done == NULL) {
        done = &scratch;
    }
    *done = 0;
    if (q == NULL || (msgs == NULL && n > 0)) {
        return conc__fail(CONC_EINVAL, "conc_queue_put_many: q is NULL, or "
                          "msgs is NULL with n %zu", n);
    }
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].data == NULL && msgs[i].len > 0) {
            return conc__fail(CONC_EINVAL, "conc_queue_put_many: msgs[%zu]"
                              ".data is NULL and its len is %zu", i,
                              msgs[i].len);
        }
    }
    return shm_put_many(q, msgs, n, done, timeout);
}

CONC_API int conc_queue_get_many(conc_queue *q, conc_msg *msgs, size_t n,
                                 size_t *got, double timeout)
{
    if (q != NULL && q->net != NULL) {
        return conc__netq_get_many(q->net, msgs, n, got, timeout);
    }
    if (q == NULL || got == NULL || (msgs == NULL && n > 0)) {
        return conc__fail(CONC_EINVAL, "conc_queue_get_many: q or got is "
                          "NULL, or msgs is NULL with n %zu", n);
    }
    *got = 0;
    for (size_t i = 0; i < n; i++) {
        msgs[i].data = NULL;
        msgs[i].len = 0;
    }
    if (!conc__timeout_ok(timeout)) {
        return conc__fail(CONC_EINVAL, "conc_queue_get_many: timeout %g is "
                          "neither >= 0 nor CONC_FOREVER", timeout);
    }
    if (n == 0) {
        return 0;
    }
    return shm_get_many(q, msgs, n, got, timeout);
}
