/* conc/queue.h - multiprocessing.Queue, SimpleQueue and JoinableQueue, and
 * queue.Queue: a FIFO of byte messages between any mix of threads and
 * processes, living in shared memory (a ring of variable-size records).
 *
 *   conc_queue *q;
 *   conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 3 });   // Queue(3)
 *   conc_queue_put(q, "spam", 4, CONC_FOREVER);               // q.put(b"spam")
 *   conc_msg m;
 *   conc_queue_get(q, &m, 1.5);                               // q.get(timeout=1.5)
 *   conc_msg_free(&m);
 *
 * Sharing.  A queue created before fork() (conc_process_start()) is the
 * same queue in the child.  A queue given .name lives in POSIX shared
 * memory, /dev/shm/<name>, and an unrelated process reaches it with
 * conc_queue_open().  Every handle is safe from any number of threads.
 *
 * Who unlinks a named queue.  The creating process does: conc_queue_free()
 * called by the process that called conc_queue_new() removes the
 * /dev/shm/<name> entry (handles already open keep working; later
 * conc_queue_open() calls fail with CONC_ESYS/ENOENT), unless the name was
 * unlinked already and now names another segment, which it leaves alone;
 * a creator that exits without freeing unlinks at exit.  Handles obtained
 * by conc_queue_open(), and copies inherited by forked children, never
 * unlink.  A creator killed by SIGKILL leaves the entry behind (as every
 * POSIX shared memory object does); unlink it with shm_unlink(3).
 *
 * Trust.  A named queue is created mode 0600, and conc_queue_open()
 * refuses (CONC_EPERM) a segment of another user or one that others may
 * access, unless conc_shm_share() (conc/shared.h) allows it.  A process
 * that can write the segment can garble or drop the messages in this
 * queue, but not make a call on it crash, loop, or read or write outside
 * the queue's mapping: open checks the header completely, and every
 * offset, length and counter read from the ring is checked before use (a
 * failed check is CONC_ECORRUPT, with a detail); truncating the segment
 * is the one harm it can do beyond the queue (see conc/shared.h).
 *
 * Waiting.  A put or get that cannot go on at once spins first (reading
 * shared memory only, yielding the CPU now and then), for 4 to 64 us,
 * adapted per handle to how soon its peers have answered, and never past
 * its timeout; then it sleeps on a futex until woken.  A put or get that
 * goes on at once makes no system call, and wakes a sleeper only when
 * one is asleep.  So a consumer that keeps up with its producers costs
 * no sleep or wake-up per message, and an idle one costs at most 4 us of
 * spinning per message before it sleeps.
 *
 * Readers that all died.  A queue remembers the processes that have read
 * from it (up to 32 at once; a process registers at its first get, a
 * forked child at its own first).  A put blocked on a full queue whose
 * registered readers have all exited gives up with CONC_ECLOSED instead
 * of waiting for ever (Python's producers would hang); with no reader
 * ever registered, or more than 32 at once, it waits as before.
 *
 * Dying peers.  A producer or consumer killed at any instant (SIGKILL
 * halfway through a put or a get included) leaves the queue consistent;
 * at most the one message in the dead process's hands is lost, and nobody
 * waits for the dead process.  A lost message is never task_done()'d, so
 * conc_queue_join() then waits until its timeout.
 */
#ifndef CONC_QUEUE_H
#define CONC_QUEUE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_queue conc_queue;

typedef struct conc_queue_opts {
    /* At most this many messages queued; a put on a full queue blocks
     * (Python's maxsize).  0: no bound in items. */
    size_t maxsize;
    /* Room for message bytes: the queue holds at most this many bytes of
     * messages plus 16 bytes of header per message (each rounded up to
     * 16); one message of exactly capacity_bytes always fits into an empty
     * queue, a longer one is CONC_ETOOBIG.  0: CONC_QUEUE_DEFAULT_CAPACITY.
     * The memory is reserved, not touched: pages are used as the messages
     * in flight need them; a queue of at most 1 MiB may
     * touch all of its ring under streaming traffic (it is faster so).
     * At most CONC_QUEUE_MAX_CAPACITY. */
    size_t capacity_bytes;
    /* NULL: an anonymous queue, shared with forked children.  Otherwise
     * the name of a new POSIX shared memory object ("jobs" or "/jobs",
     * at most 250 bytes after the '/', no other '/', not "." or "..");
     * CONC_ESYS with errno EEXIST if it already exists. */
    const char *name;
} conc_queue_opts;

#define CONC_QUEUE_DEFAULT_CAPACITY ((size_t)64 << 20) /* 64 MiB */
#define CONC_QUEUE_MAX_CAPACITY ((size_t)0xFFFFFF00u)  /* just under 4 GiB */

/* conc_queue_new - a new, empty queue.  opts may be NULL (unbounded in
 * items, default capacity, anonymous).  0; CONC_EINVAL (NULL out,
 * capacity over the maximum, bad name); CONC_ENOMEM; CONC_ESYS (a shared
 * memory call failed, errno kept: EEXIST for a name in use). */
CONC_API int conc_queue_new(conc_queue **out, const conc_queue_opts *opts);

/* conc_queue_open - a handle on the named queue another process created;
 * waits (up to a second in all) for a creator still making it.  0;
 * CONC_EINVAL (NULL argument, bad name, not a libconc queue - a segment
 * too small, another magic - or another layout version); CONC_ECORRUPT
 * (a queue header whose fields are out of range or inconsistent with
 * each other or with the segment's size: scribbled or crafted); CONC_EPERM
 * (another user's segment, or one others may access: see Trust);
 * CONC_ENOMEM; CONC_ESYS (errno ENOENT: no such queue).  Free the handle
 * with conc_queue_free(); it never unlinks. */
CONC_API int conc_queue_open(conc_queue **out, const char *name);

/* conc_queue_put - appends a copy of len bytes at data (NULL is allowed
 * when len is 0).  Blocks while the queue is full (maxsize items, or not
 * enough free bytes) up to timeout.  0; CONC_EFULL (still full when the
 * timeout expired; timeout 0 never waits for room; also when another
 * live process kept the producers' lock past the timeout - one that is
 * stopped, or hostile; with timeout 0 the lock is waited for up to a
 * second, since a holder only copies); CONC_ECLOSED (the
 * queue is closed, also for putters blocked when it was closed; or, for
 * a put blocked on a full queue, every process that ever read from the
 * queue has exited, so nothing would make room - noticed within 0.1 s, at
 * the end of a sleep slice; the queue stays open, and a put after a new
 * reader came works); CONC_ETOOBIG (len > capacity_bytes, at once); CONC_ECORRUPT (the
 * queue's shared memory failed a check: see Trust); CONC_EINVAL (NULL q,
 * NULL data with len > 0, bad timeout).  No allocation.  Every error has
 * a detail (conc_errdetail). */
CONC_API int conc_queue_put(conc_queue *q, const void *data, size_t len,
                            double timeout);

/* conc_queue_get - removes the oldest message into *msg (heap bytes the
 * caller frees with conc_msg_free(); data NULL for a 0-byte message).
 * Blocks while empty up to timeout.  0; CONC_EEMPTY (still empty when the
 * timeout expired; timeout 0 never waits; also when another live process
 * kept the consumers' lock past the timeout, at least a second);
 * CONC_ECLOSED (closed and drained); CONC_ENOMEM (message left in place);
 * CONC_ECORRUPT (the queue's shared memory failed a check: see Trust);
 * CONC_EINVAL (NULL q or msg, bad timeout).  *msg is zeroed on every
 * error; every error has a detail. */
CONC_API int conc_queue_get(conc_queue *q, conc_msg *msg, double timeout);

/* conc_queue_get_into - as conc_queue_get, into buf (cap bytes); *len gets
 * the message's length.  CONC_ETOOBIG when cap is smaller than the
 * message: the message stays at the head of the queue and *len says how
 * much room it needs.  CONC_EINVAL also for NULL len, or NULL buf with
 * cap > 0.  No allocation. */
CONC_API int conc_queue_get_into(conc_queue *q, void *buf, size_t cap,
                                 size_t *len, double timeout);

/* conc_queue_put_many - appends copies of msgs[0..n), in order, as one
 * batch: each lock hold writes as many as fit and publishes them at once
 * (one wake-up of sleeping getters per hold, not per message).  Waits for
 * room as conc_queue_put does, up to timeout for the whole batch; when
 * the timeout expires (or at once, with timeout 0) it stops with what fit.
 * *done (done may be NULL) is how many went in: always msgs[0..*done), in
 * order, never a later one before an earlier one.  0 (*done == n);
 * CONC_EFULL (the timeout expired with *done < n); CONC_ECLOSED (closed
 * before or during the batch: *done went in before); CONC_ECORRUPT; the
 * batch is checked before anything goes in: CONC_ETOOBIG (a message over
 * capacity_bytes) and CONC_EINVAL (NULL q, NULL msgs with n > 0, NULL
 * data with a length, bad timeout) put nothing.  n 0 is 0.  Getters may
 * take the first messages of a batch before its last ones are written.
 * No allocation. */
CONC_API int conc_queue_put_many(conc_queue *q, const conc_msg *msgs,
                                 size_t n, size_t *done, double timeout);

/* conc_queue_get_many - waits (up to timeout) for the first message as
 * conc_queue_get does, then takes the messages that are queued, up to n,
 * in one lock hold: msgs[0..*got) (got may be NULL) in queue order, each
 * heap bytes the caller frees with conc_msg_free(); msgs[*got..n) are
 * zeroed.  0 (*got >= 1); CONC_EEMPTY, CONC_ECLOSED, CONC_ENOMEM,
 * CONC_ECORRUPT as conc_queue_get, with *got 0 (an error after the first
 * message ends the batch early, returns 0, and is met again by the next
 * call; a message whose copy could not be allocated stays queued);
 * CONC_EINVAL (NULL q or msgs, n 0, bad timeout). */
CONC_API int conc_queue_get_many(conc_queue *q, conc_msg *msgs, size_t n,
                                 size_t *got, double timeout);

/* conc_queue_qsize - messages queued now (approximate while others put
 * and get, as in Python; never more than one per 16 bytes of capacity,
 * whatever a peer wrote); 0 for NULL. */
CONC_API size_t conc_queue_qsize(conc_queue *q);
/* conc_queue_empty - qsize() == 0; true for NULL. */
CONC_API bool conc_queue_empty(conc_queue *q);
/* conc_queue_full - true when maxsize > 0 and qsize() >= maxsize, or when
 * not even a 0-byte message has room; false for NULL. */
CONC_API bool conc_queue_full(conc_queue *q);

/* conc_queue_task_done - one put message has been processed (Python's
 * JoinableQueue.task_done; every queue has it).  0; CONC_EINVAL when
 * called more times than messages were put, or NULL q. */
CONC_API int conc_queue_task_done(conc_queue *q);

/* conc_queue_join - blocks until every message put has been task_done()'d.
 * 0; CONC_ETIMEDOUT; CONC_EINVAL (NULL q, bad timeout). */
CONC_API int conc_queue_join(conc_queue *q, double timeout);

/* conc_queue_close - closes the queue for every handle in every process
 * (Python 3.13's shutdown(), not mp.Queue.close): puts fail with
 * CONC_ECLOSED at once, blocked putters wake with CONC_ECLOSED, gets
 * drain what is queued and then return CONC_ECLOSED, and blocked getters
 * wake.  Closing twice is harmless.  0; CONC_EINVAL for NULL;
 * CONC_ETIMEDOUT, closing nothing, when another live process kept the
 * producers' lock for a whole second (a stopped or hostile one). */
CONC_API int conc_queue_close(conc_queue *q);

/* conc_queue_closed - whether conc_queue_close() was called; false for
 * NULL. */
CONC_API bool conc_queue_closed(conc_queue *q);

/* conc_queue_free - releases this handle (unmaps this process's view; the
 * creating process also unlinks the name, see above).  Other handles and
 * processes are unaffected.  NULL is a no-op.  Must not race with calls
 * on the same handle. */
CONC_API void conc_queue_free(conc_queue *q);

#ifdef __cplusplus
}
#endif
#endif
