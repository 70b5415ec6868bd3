/* conc/pool.h - worker pools and futures: Python's multiprocessing.Pool,
 * concurrent.futures.ThreadPoolExecutor and ProcessPoolExecutor, Future,
 * wait() and as_completed(), in one engine with two kinds of worker.
 *
 *   static int square(const void *in, size_t len, conc_buf *out, void *ctx)
 *   {
 *       int x;
 *       memcpy(&x, in, sizeof x);
 *       x *= x;
 *       return conc_buf_append(out, &x, sizeof x);
 *   }
 *   conc_pool *pool;
 *   conc_pool_new(&pool, &(conc_pool_opts){ .workers = 5 });   // Pool(5)
 *   conc_future *f;
 *   conc_pool_submit(pool, square, &x, sizeof x, &f);           // submit
 *   conc_msg m;
 *   int err = conc_future_result(f, &m, CONC_FOREVER);         // .result()
 *   ...                                   // m.data: x * x, m.len: 4
 *   conc_msg_free(&m);
 *   conc_future_free(f);
 *   conc_pool_shutdown(pool, true, false);  // Executor.__exit__
 *   conc_pool_free(pool);
 *
 * Tasks.  A task is a conc_task_fn: bytes in, bytes out through
 * conc_buf_append(out, ...); it returns 0 for success or its own positive
 * failure code, and may describe a failure with conc_buf_error(out, ...)
 * (Python's exception text, read back with conc_future_error_message()).
 * A result code is therefore 0 (success), > 0 (the task's own failure
 * code, its output kept) or < 0, a CONC_E* code from the pool:
 *   CONC_EWORKERDIED  the process running the task died (segfault, abort,
 *                     exit(), SIGKILL from outside); only that task fails,
 *                     the worker is replaced and queued tasks run on;
 *   CONC_ETIMEDOUT    the task ran longer than .task_timeout;
 *   CONC_ECANCELLED   cancelled, or stopped by terminate/shutdown;
 *   CONC_EBROKEN      a worker's initializer failed (see below);
 *   CONC_ETOOBIG      the output passed .max_message_bytes (processes);
 *   CONC_ENOMEM       no memory for the result (parent side), or for the
 *                     output in the worker (conc_buf_append).
 *
 * A worker that dies in a map chunk.  A map, imap or fed imap sends its
 * items in chunks (conc_map_opts.chunksize).  When a process worker dies
 * in the middle of one - crash, kill, or killed past .task_timeout - the
 * chunk's items it finished keep their results, the one item it was
 * running fails alone (CONC_EWORKERDIED, or CONC_ETIMEDOUT with its
 * message), and the items after it, which it had not started, go back to
 * the front of the queue in order and run on another worker or the
 * replacement: a death costs one item, never the rest of the chunk, and
 * no item runs twice after it finished.  The same holds for every task
 * sent ahead to that worker.  With CONC_THREADS and .task_timeout, chunks
 * are one item, so only the item that timed out fails.
 *
 * Kinds.  CONC_PROCESSES (the default, Python's Pool and
 * ProcessPoolExecutor): workers are forked daemon children (conc_process),
 * so the task function, its worker_ctx and everything created before the
 * pool exist in each worker; they die with the pool's process, even when
 * it is SIGKILLed.  Inputs and outputs travel through a ring per worker in
 * shared memory; one message (an input, or an output plus its error text)
 * is at most .max_message_bytes (CONC_ETOOBIG on submit for a longer
 * input; for a longer output conc_buf_append returns CONC_ENOMEM in the
 * task, and the task fails with CONC_ETOOBIG and an error message naming
 * the limit, never with its output cut short).  A task in a process worker may not start processes
 * (CONC_EDAEMON, as in Python).  CONC_THREADS (ThreadPoolExecutor,
 * multiprocessing.pool.ThreadPool): workers are threads of this process;
 * inputs are not limited in size.  A thread cannot be killed: a task that
 * crashes a thread crashes the process, and a task past .task_timeout is
 * failed with CONC_ETIMEDOUT at once while its thread is abandoned (it runs
 * the task to its end, its output is dropped, it then runs the finalizer
 * and exits) and a fresh thread takes its place.
 *
 * Initializer.  .initializer(init_arg, &worker_ctx) runs once in each new
 * worker before its first task; worker_ctx is passed to every task that
 * worker runs and to .finalizer(worker_ctx, init_arg) when the worker ends
 * normally (a killed process runs no finalizer).  An initializer that
 * returns non-zero breaks the pool, and so does one in whose run a worker
 * process dies (a crash, exit(), a signal) three times in a row in one
 * worker slot (a single such death is only replaced, as a worker killed
 * later is).  As ThreadPoolExecutor's BrokenThreadPool, and unlike Pool,
 * which respawns failing workers forever: every queued task and every
 * task running in a process fails with CONC_EBROKEN (its error message
 * names the initializer's code, or how the worker died), process workers
 * are stopped, and later submit/map calls return CONC_EBROKEN.  Tasks
 * already running on threads finish normally.
 *
 * Replacements that cannot start.  A replacement worker that cannot be
 * started (no memory; no thread or process left, RLIMIT_NPROC) leaves its
 * slot empty, and the pool tries again: a thread pool at its next submit
 * and when its last worker ends, a process pool at each look at its
 * workers (every few milliseconds, 0.1 s when idle).  A pool left with no worker at all breaks
 * as above, its tasks failing with CONC_EBROKEN and a message saying why
 * ("no worker thread could be started (...)"): a thread pool once its
 * last try failed, a process pool after a second of failed forks.
 *
 * Threads of the pool.  A CONC_THREADS pool runs its worker threads and,
 * when .task_timeout is set, one timer thread.  A CONC_PROCESSES pool runs
 * one manager thread that feeds the rings, collects results, watches the
 * workers (death, timeouts) and forks replacements; forking from it is
 * safe because it touches nothing another thread may hold at that moment
 * and the child only touches its own ring.  To save a thread hop per
 * task, conc_pool_submit also sends a task straight to an idle worker
 * while the manager sleeps, and a thread waiting in conc_future_result
 * (or conc_pool_apply) on a process pool's future collects finished
 * results from the rings itself while it spins.  A process worker is
 * sent its next task ahead, behind the one it runs (up to 7 ahead when
 * its tasks take under 1 ms, 511 under 50 us), so it starts the next at
 * once, even when every core runs a worker and the manager waits for one.
 * When the queue runs dry while a worker idles, the tasks sent ahead
 * that have not started are taken back (half of a busy worker's at a
 * time) and run on the idle workers: a long task never holds another up
 * while a worker is free.
 *
 * Callbacks.  A done-callback runs exactly once: at once in the calling
 * thread when the future is already done; otherwise in the thread that
 * completes it - the worker thread (CONC_THREADS); with CONC_PROCESSES
 * the pool's manager thread, or any thread waiting in conc_future_result
 * or conc_pool_apply on a future of the same pool (a waiter collects
 * every finished result it finds, its own and others'); the timer thread
 * (a THREADS task timeout), or the thread calling conc_future_cancel,
 * conc_pool_terminate, conc_pool_shutdown(cancel_futures) or
 * conc_pool_free.  No lock of the pool is held while a callback runs.  A
 * callback may call any future function and conc_pool_submit, but must
 * not block for long (it delays other results) and must not join or free
 * the pool that runs it (that would wait for the callback's own thread).
 * Futures completed together (the results one round collects, the tasks
 * a terminate or a timeout fails) are all final before the first of their
 * callbacks runs, so a callback may wait for another of them.
 * A callback run by a process pool's manager that waits for another
 * future of that pool gets its result, or its worker's death, timeout or
 * the pool's terminate, like any waiter: the waiting manager goes on with
 * its whole round.  It may then fork a replacement worker from inside the
 * callback, so such a callback must not wait holding a lock that a task
 * takes (the new worker would inherit it held).
 *
 * Fork.  A pool belongs to the process that made it: a child forked later
 * (conc_process_start) does not inherit its workers or threads, so it
 * must not use the parent's pool, futures or iterators; every pool call
 * there returns CONC_ESTATE, as does every wait for what the parent's
 * pool had not finished when the child was forked (conc_future_result,
 * conc_wait and an as_completed iterator for a future not yet done, a
 * map iterator for a result not yet in: those already done are handed
 * out), and conc_pool_free does nothing.  The child may make pools of
 * its own, safely even while the parent's pool threads were busy.
 *
 * Lifetimes.  Futures and iterators are reference-counted apart from the
 * pool: free them in any order, before or after the pool.  Freeing or
 * terminating a pool fails every task it still holds, so no future and no
 * iterator ever waits forever.  conc_pool_free is Pool.__exit__
 * (terminate), not Executor.__exit__: to have every task submitted run
 * first, call conc_pool_shutdown(pool, true, false) before it.  The same
 * holds at exit: a program that returns from main (or calls exit()) with
 * a pool it never shut down loses the tasks still queued or running
 * there, as multiprocessing.Pool's do (its workers are terminated), where
 * Python's executors join their workers at exit and run them all: a
 * program that submits work and returns must shut its pool down first.  A CONC_PROCESSES future keeps the pool's
 * memory (its rings: about 4 x max_message_bytes per worker) until the
 * future is freed; the workers and the manager end with the pool.
 */
#ifndef CONC_POOL_H
#define CONC_POOL_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_pool conc_pool;
typedef struct conc_future conc_future;
typedef struct conc_iter conc_iter;

/* conc_task_fn - a task: in/inlen are its input bytes (in is NULL only
 * when inlen is 0), out collects its output, worker_ctx is what the
 * initializer set (NULL without one).  Returns 0 or a positive failure
 * code; a negative return is turned into CONC_ETASK. */
typedef int (*conc_task_fn)(const void *in, size_t inlen, conc_buf *out,
                            void *worker_ctx);

/* conc_pool_init_fn - runs once in each new worker; sets *worker_ctx.
 * Non-zero breaks the pool (see the top of this file). */
typedef int (*conc_pool_init_fn)(void *init_arg, void **worker_ctx);

/* conc_pool_fini_fn - runs when a worker ends normally (not when killed). */
typedef void (*conc_pool_fini_fn)(void *worker_ctx, void *init_arg);

typedef enum conc_pool_kind {
    CONC_PROCESSES = 0, /* forked worker processes (the default) */
    CONC_THREADS = 1    /* worker threads */
} conc_pool_kind;

typedef struct conc_pool_opts {
    conc_pool_kind kind;
    /* Number of workers; 0: conc_cpu_count().  At most 4096. */
    size_t workers;
    conc_pool_init_fn initializer; /* NULL: none, worker_ctx is NULL */
    void *init_arg;
    conc_pool_fini_fn finalizer;   /* NULL: none */
    /* A worker is replaced after running this many tasks (a map chunk's
     * items each count); 0: never (Python's maxtasksperchild). */
    size_t max_tasks_per_worker;
    /* How long a task may run: CONC_TIMEOUT(seconds); past it the task
     * fails with CONC_ETIMEDOUT and its worker is killed (processes) or
     * abandoned (threads) and replaced.  Left out, or
     * CONC_TIMEOUT(CONC_FOREVER): no limit.  CONC_TIMEOUT(0) is refused
     * (CONC_EINVAL): a task cannot run in no time, and "do not wait" has
     * no meaning for a limit on running.  With threads and a limit, map
     * chunks are 1 item. */
    conc_timeout task_timeout;
    /* Workers are named "<prefix>-N" (ps -o comm shows the first 15
     * bytes); NULL: "PoolWorker" / "ThreadPoolWorker". */
    const char *name_prefix;
    /* CONC_PROCESSES: the largest input or output of one task, in bytes;
     * 0: CONC_POOL_DEFAULT_MESSAGE (4 MiB).  At most 1 GiB.  Two rings of
     * about twice this size per worker are reserved (pages are touched
     * only as messages need them). */
    size_t max_message_bytes;
} conc_pool_opts;

#define CONC_POOL_DEFAULT_MESSAGE ((size_t)4 << 20)

/* conc_pool_new - starts a pool and its workers.  opts may be NULL
 * (processes, one per CPU).  0; CONC_EINVAL (NULL out, bad kind, more
 * than 4096 workers, a task_timeout of 0, negative (other than
 * CONC_FOREVER) or NaN, max_message_bytes over 1 GiB, a name_prefix over
 * 40 bytes); CONC_ENOMEM; CONC_ESYS (a thread, fork or mmap failed);
 * CONC_EDAEMON (a CONC_PROCESSES pool inside a pool's process worker or
 * any daemon process).  conc_errdetail() says which. */
CONC_API int conc_pool_new(conc_pool **out, const conc_pool_opts *opts);

/* conc_pool_submit - queues fn(in) and returns its future in *fut (the
 * caller frees it with conc_future_free).  The input is copied: in may be
 * reused at once.  Never blocks.  Tasks leave the queue in the order
 * they were submitted: one worker runs them in that order, several run
 * them side by side, so they may start and finish out of order.  0;
 * CONC_EINVAL (NULL pool, fn or fut, NULL in with inlen > 0);
 * CONC_ESTATE (after close, shutdown or terminate); CONC_EBROKEN;
 * CONC_ETOOBIG (input over max_message_bytes, processes); CONC_ENOMEM.
 * *fut is NULL on error. */
CONC_API int conc_pool_submit(conc_pool *pool, conc_task_fn fn,
                              const void *in, size_t inlen,
                              conc_future **fut);

/* conc_pool_apply - submit, then wait at most timeout seconds for the
 * result (Python's apply).  Returns the task's result code (see the top)
 * with its output in *out (always set; empty on errors), CONC_ETIMEDOUT
 * (the task stays queued or running; its output is dropped), or any
 * conc_pool_submit error. */
CONC_API int conc_pool_apply(conc_pool *pool, conc_task_fn fn,
                             const void *in, size_t inlen, conc_msg *out,
                             double timeout);

typedef struct conc_map_opts {
    /* Items per task; 0: automatic, ceil(n / (4 * workers)) as Python's
     * Pool.map (1 for imap/imap_unordered and the fed imaps when 0, as
     * Python). */
    size_t chunksize;
    /* The fed imaps only (conc_pool_imap_feed): at most this many inputs
     * taken from the feed and held by the iterator (queued, running, or
     * done but not yet returned by conc_iter_next), rounded up to a
     * multiple of chunksize; 0: 2 * workers * chunksize.  This bounds the
     * memory a long or endless feed uses (Python 3.14's buffersize). */
    size_t buffersize;
    /* conc_pool_map only: how long the whole map may take,
     * CONC_TIMEOUT(seconds), measured from the call.  Left out, or
     * CONC_TIMEOUT(CONC_FOREVER): no limit.  CONC_TIMEOUT(0): do not
     * wait - the results already in are collected and the map returns
     * CONC_ETIMEDOUT unless every item was done (only an empty map is). */
    conc_timeout timeout;
} conc_map_opts;

/* conc_pool_map - runs fn on each of inputs[0..n-1] and stores each
 * output in outputs[i], in input order (Python's Pool.map).  Blocks until
 * every item is done or the timeout passed.  Every outputs[i] is set on
 * return: the item's output, also for its own failure code > 0 (as
 * conc_future_result), empty for an item that failed with an error (a
 * negative code: CONC_ETASK, its worker died, ...) or did not finish;
 * the caller frees each with conc_msg_free, also on error.  Returns 0 when every item succeeded,
 * else the first failing item's code in input order (as map raises the
 * first exception), CONC_ETIMEDOUT (the items not collected still run;
 * their results are dropped), CONC_EINVAL (a bad timeout), or a submit
 * error.  The inputs are copied.  opts may be NULL. */
CONC_API int conc_pool_map(conc_pool *pool, conc_task_fn fn,
                           const conc_msg *inputs, size_t n,
                           conc_msg *outputs, const conc_map_opts *opts);

/* conc_pool_imap / conc_pool_imap_unordered - queue every item now and
 * return an iterator over the results, in input order (imap) or in
 * completion order (imap_unordered).  The inputs are copied.  Errors as
 * conc_pool_submit; *it is NULL on error. */
CONC_API int conc_pool_imap(conc_pool *pool, conc_task_fn fn,
                            const conc_msg *inputs, size_t n, conc_iter **it,
                            const conc_map_opts *opts);
CONC_API int conc_pool_imap_unordered(conc_pool *pool, conc_task_fn fn,
                                      const conc_msg *inputs, size_t n,
                                      conc_iter **it,
                                      const conc_map_opts *opts);

/* conc_feed_fn - gives a fed imap its next input: sets *data and *len
 * and returns 1 (the bytes are copied before the function is called
 * again, so it may reuse one buffer; *data may be NULL when *len is 0);
 * returns 0 when there are no more inputs (Python's StopIteration); any
 * other value stops the feed with that value as its error (see below).
 * arg is the feed_arg given to conc_pool_imap_feed. */
typedef int (*conc_feed_fn)(void *arg, const void **data, size_t *len);

/* conc_pool_imap_feed / conc_pool_imap_unordered_feed - imap and
 * imap_unordered over inputs produced as they are needed, like Python's
 * imap over a generator, in bounded memory: the iterator takes inputs
 * from feed(feed_arg, ...) a chunk at a time while it holds fewer than
 * opts->buffersize of them, first here and then in conc_iter_next (right
 * after an item is handed out, and whenever the next result has not been
 * fed yet), always in the thread calling these and never in two threads
 * at once.  So an endless feed is fine: it is read as fast as results are
 * consumed.  conc_iter_next returns each result as for imap, with
 * conc_iter_index the input's position in the feed; once the feed ended
 * and every result was returned, CONC_ECLOSED.  A feed that fails - feed
 * returned something other than 0 or 1, an input over max_message_bytes
 * (processes, CONC_ETOOBIG), the pool stopped taking tasks (CONC_ESTATE,
 * CONC_EBROKEN), no memory (CONC_ENOMEM) - stops taking inputs: the
 * inputs taken before still run and are returned, then conc_iter_next
 * returns that error once (conc_errdetail() says what happened), then
 * CONC_ECLOSED.  conc_iter_progress tells how many inputs were taken and
 * whether the feed has ended.  The iterator holds a reference to the pool:
 * it may outlive conc_pool_free (its feed then fails with CONC_ESTATE).
 * 0; CONC_EINVAL (NULL pool, fn, feed or it); a failure of the first
 * chunk's feed or submission (then *it is NULL). */
CONC_API int conc_pool_imap_feed(conc_pool *pool, conc_task_fn fn,
                                 conc_feed_fn feed, void *feed_arg,
                                 conc_iter **it, const conc_map_opts *opts);
CONC_API int conc_pool_imap_unordered_feed(conc_pool *pool, conc_task_fn fn,
                                           conc_feed_fn feed, void *feed_arg,
                                           conc_iter **it,
                                           const conc_map_opts *opts);

/* conc_pool_close - no more tasks (submit: CONC_ESTATE); the queued ones
 * still run; workers exit when they are done.  0; CONC_EINVAL for NULL. */
CONC_API int conc_pool_close(conc_pool *pool);

/* conc_pool_join - waits at most timeout seconds for the workers to finish
 * every task and exit, after close or terminate.  0; CONC_ETIMEDOUT;
 * CONC_ESTATE while the pool still takes tasks (Python: "Pool is still
 * running"); CONC_EINVAL (NULL, bad timeout). */
CONC_API int conc_pool_join(conc_pool *pool, double timeout);

/* conc_pool_terminate - stops at once: process workers are killed, every
 * queued task's future is cancelled (CONC_ECANCELLED, cancelled() true)
 * and every running task fails with CONC_ECANCELLED (its future is done,
 * not cancelled: it had started).  Then join returns promptly: worker
 * threads still in a task or in their initializer are abandoned and end
 * it (and their finalizer) on their own, so init_arg must outlive them;
 * idle ones run their finalizers, which join and free wait for.  0;
 * CONC_EINVAL. */
CONC_API int conc_pool_terminate(conc_pool *pool);

/* conc_pool_shutdown - Executor.shutdown(wait, cancel_futures): closes
 * the pool; cancel_futures cancels every queued task that has not started
 * (CONC_ECANCELLED); wait joins the workers (without a time limit).  0;
 * CONC_EINVAL. */
CONC_API int conc_pool_shutdown(conc_pool *pool, bool wait,
                                bool cancel_futures);

/* conc_pool_workers - the number of workers the pool keeps (0 for NULL). */
CONC_API size_t conc_pool_workers(const conc_pool *pool);

/* What a worker is doing (conc_worker_info.state). */
typedef enum conc_worker_state {
    CONC_WORKER_NONE = 0,     /* no worker in this slot: between a death and
                                 its replacement, or the pool has stopped */
    CONC_WORKER_STARTING = 1, /* started, its initializer still running */
    CONC_WORKER_IDLE = 2,     /* waiting for a task */
    CONC_WORKER_BUSY = 3,     /* running a task */
    CONC_WORKER_EXITING = 4   /* a process worker retiring after
                                 max_tasks_per_worker (its finalizer may
                                 still run); a thread worker that retires
                                 leaves its slot to its successor at once */
} conc_worker_state;

/* One worker of a pool (Python's pool._pool), as conc_pool_worker_info
 * saw it. */
typedef struct conc_worker_info {
    pid_t pid;   /* the worker's process (the pool's own for threads); 0
                    for CONC_WORKER_NONE */
    pid_t tid;   /* its kernel thread id (gettid(), ps -L); for a process
                    worker its pid; 0 for NONE and while a thread starts */
    conc_worker_state state;
    size_t tasks_done; /* items it finished in its life so far (each item
                          of a map chunk counts) */
    char name[64];     /* "<prefix>-N" (ps -o comm shows 15 bytes); empty
                          for NONE */
    /* Its current task, while BUSY (else SIZE_MAX and 0):
     * task_item: the item of a map, imap or imap_unordered it runs, as
     * its input's index (conc_iter_index's number; a fed imap counts
     * the feed's inputs from 0); SIZE_MAX for a submitted task (submit,
     * apply).
     * task_seconds: how long it has been on its current task - a
     * submitted task, or a map chunk, whose items run one after another
     * (chunksize 1: the item). */
    size_t task_item;
    double task_seconds;
} conc_worker_info;

/* conc_pool_worker_info - a snapshot of the pool's workers, one per slot
 * (a replacement takes its predecessor's slot): fills out[0 .. cap-1]
 * (fewer when the pool has fewer workers) and sets *n to the number of
 * slots, conc_pool_workers(pool), so cap 0 asks only for the count.
 * Each entry is consistent on its own; workers change state meanwhile.
 * Never blocks for long: takes the pool's locks briefly (a process pool's
 * bookkeeping lock may be held while its manager forks a replacement
 * worker), and waits at most 20 ms for a process pool's manager, which a
 * close holds while it waits for its workers' finalizers; past that, a
 * busy process worker's task_item reads SIZE_MAX.  0; CONC_EINVAL (NULL
 * pool or n, NULL out with cap > 0). */
CONC_API int conc_pool_worker_info(conc_pool *pool, conc_worker_info *out,
                                   size_t cap, size_t *n);

/* conc_pool_free - terminates the pool if it was not joined, and releases
 * it.  Never waits for a running task (an abandoned thread finishes on its
 * own).  Futures and iterators stay valid.  NULL is a no-op. */
CONC_API void conc_pool_free(conc_pool *pool);

/* ---- futures ------------------------------------------------------------ */

/* conc_future_result - waits at most timeout seconds for the task and
 * returns its result code (see the top), with a copy of its output in
 * *out when out is not NULL (also for a task's own failure code > 0; empty
 * on errors).  CONC_ETIMEDOUT when not done in time (the future is
 * unchanged), CONC_ECANCELLED when cancelled, CONC_EINVAL (NULL f, bad
 * timeout), CONC_ESTATE in a child forked while it was not done (see
 * "Fork").  May be called any number of times, from any thread. */
CONC_API int conc_future_result(conc_future *f, conc_msg *out,
                                double timeout);

/* conc_future_error_message - the task's conc_buf_error text, or for a
 * pool error a sentence saying what happened ("worker PoolWorker-2 (pid
 * 123) died: killed by signal 11"); NULL while not done or when there is
 * none.  Owned by f. */
CONC_API const char *conc_future_error_message(conc_future *f);

/* conc_future_cancel - cancels a task that has not started: true when it
 * is cancelled now or was already; false once it runs or is done.  Its
 * callbacks run in the calling thread.  With processes a task counts as
 * running once it was sent to a worker, before it starts (as in
 * ProcessPoolExecutor, whose call queue runs ahead by one task in all):
 * each worker is sent up to 8 tasks ahead, up to 511 while its tasks take
 * under 50 us each, so that many may count as running, and not be
 * cancelled (by this or by conc_pool_shutdown's cancel_futures), while
 * they wait behind a long task of their worker; another worker that
 * idles takes them back and runs them, but while every worker stays busy
 * they wait there.  Tasks still queued in the pool, the rest, cancel. */
CONC_API bool conc_future_cancel(conc_future *f);

CONC_API bool conc_future_cancelled(conc_future *f);
/* running: started and not yet done. */
CONC_API bool conc_future_running(conc_future *f);
/* done: finished, failed or cancelled. */
CONC_API bool conc_future_done(conc_future *f);

typedef void (*conc_future_cb)(conc_future *f, void *arg);

/* conc_future_add_done_callback - cb(f, arg) runs exactly once when f is
 * done; at once in this thread if it already is (which thread runs it
 * otherwise: see the top of this file).  0; CONC_EINVAL; CONC_ENOMEM. */
CONC_API int conc_future_add_done_callback(conc_future *f, conc_future_cb cb,
                                           void *arg);

/* conc_future_free - drops the caller's reference; the task itself is not
 * affected (it still runs, its result is dropped).  NULL is a no-op. */
CONC_API void conc_future_free(conc_future *f);

/* Flags for conc_wait (Python's return_when). */
#define CONC_FIRST_COMPLETED 1
#define CONC_FIRST_EXCEPTION 2
#define CONC_ALL_COMPLETED 4

/* conc_wait - waits at most timeout seconds until: one of futs is done
 * (FIRST_COMPLETED); one is done with a non-zero code or cancelled, or all
 * are done (FIRST_EXCEPTION); all are done (ALL_COMPLETED).  0 when the
 * condition holds, CONC_ETIMEDOUT when not in time; CONC_EINVAL for a bad
 * flag (exactly one of the three), NULL futs with n > 0, a NULL entry, a
 * bad timeout.  n == 0 holds at once.  Which futures are done: ask
 * conc_future_done. */
CONC_API int conc_wait(conc_future *const *futs, size_t n, double timeout,
                       int return_when);

/* conc_as_completed - an iterator handing out futs in the order they
 * complete (those already done first, in array order), through
 * conc_iter_next_future; or their results in that order through
 * conc_iter_next (each future's code and output, as conc_future_result
 * gives them; conc_iter_index: its place in futs).  A future given more than once is handed out
 * once, for its first place (Python's as_completed takes a set).  timeout
 * bounds the whole iteration, measured from this call (Python's
 * as_completed(fs, timeout)); CONC_FOREVER for none.  The iterator holds
 * its own references: the caller may free its futures before it.  0;
 * CONC_EINVAL; CONC_ENOMEM. */
CONC_API int conc_as_completed(conc_future *const *futs, size_t n,
                               double timeout, conc_iter **it);

/* ---- iterators ---------------------------------------------------------- */

/* conc_iter_next - the next result of an imap/imap_unordered iterator
 * (or of an as_completed one: its next future's): waits at most timeout
 * seconds and returns its result code (0, a task's code > 0, or a CONC_E*
 * code for that item) with its output in *msg (always set; the caller
 * frees it).  CONC_ECLOSED once every item was returned; CONC_ETIMEDOUT
 * (nothing consumed); CONC_EINVAL (NULL argument, bad timeout). */
CONC_API int conc_iter_next(conc_iter *it, conc_msg *msg, double timeout);

/* conc_iter_next_future - the next future of an as_completed iterator,
 * borrowed (valid until conc_iter_free).  0; CONC_ECLOSED when all were
 * handed out; CONC_ETIMEDOUT when this call's timeout or the iterator's
 * own deadline passed first; CONC_EINVAL (NULL argument, or a map
 * iterator). */
CONC_API int conc_iter_next_future(conc_iter *it, conc_future **fut,
                                   double timeout);

/* conc_iter_index - the input index of the item conc_iter_next returned
 * last (for imap_unordered); (size_t)-1 before the first. */
CONC_API size_t conc_iter_index(const conc_iter *it);

/* conc_iter_error_message - the error text of that item, or NULL. Owned
 * by it, valid until the next call. */
CONC_API const char *conc_iter_error_message(const conc_iter *it);

/* How far an iterator is (conc_iter_progress). */
typedef struct conc_progress {
    size_t total;     /* its items: n for imap, imap_unordered and
                         as_completed; for a fed imap, the inputs taken
                         from the feed so far */
    size_t done;      /* items whose result is in (returned or not) */
    size_t remaining; /* total - done: items queued or running */
    size_t returned;  /* items conc_iter_next / conc_iter_next_future
                         handed out */
    bool total_known; /* false while a fed imap's feed may give more */
} conc_progress;

/* conc_iter_progress - fills *out with the iterator's counts at this moment
 * (for a live progress line: done / total, and the rate of done).  Never
 * blocks for long; callable from any thread while another iterates.  0;
 * CONC_EINVAL (NULL argument). */
CONC_API int conc_iter_progress(const conc_iter *it, conc_progress *out);

/* conc_iter_free - releases the iterator; items still running finish and
 * are dropped.  NULL is a no-op. */
CONC_API void conc_iter_free(conc_iter *it);

#ifdef __cplusplus
}
#endif
#endif
