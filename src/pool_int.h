/* pool_int.h - what the pool engine (pool.c) shares with its two worker
 * backends, pool_thread.c (CONC_THREADS) and pool_proc.c
 * (CONC_PROCESSES): tasks, map batches, the pool's common fields and its
 * queue, and the backend table through which the engine drives the
 * workers.  Each backend's own state is a struct private to its file
 * that starts with struct conc_pool.  Dependencies run one way: backends
 * -> engine -> futures (future_int.h); the engine knows a backend only by
 * its table.  Private memory of one process: nothing here lives in shared
 * memory.
 */
#ifndef CONC_POOL_INT_H
#define CONC_POOL_INT_H

#include "future_int.h"
#include "sync_int.h"

#include <pthread.h>

/* ---- map batches (pool.c) ------------------------------------------------ */

typedef struct conc__batch_item {
    int code;
    bool done;
    conc_msg out;
    char *err;
} conc__batch_item;

struct conc__feed;

/* One map/imap: its copied inputs and one result slot per item; or one
 * chunk of a fed imap (feed != NULL), whose lock is the fed iterator's,
 * shared by all its chunks. */
typedef struct conc__batch {
    _Atomic long refs; /* the iterator + each task that holds items */
    pthread_mutex_t *mu;  /* &own_mu, or the fed iterator's */
    pthread_cond_t *cv;   /* &own_cv (CLOCK_MONOTONIC); NULL: fed chunk */
    unsigned waiters;
    size_t want;         /* the item an ordered waiter needs; SIZE_MAX: any */
    size_t n;
    unsigned char *arena; /* the copied inputs, back to back */
    size_t *off, *len;
    conc__batch_item *items;
    size_t *order; /* indices in completion order (not for a fed chunk) */
    size_t ndone;
    /* A fed chunk: its iterator's shared state, the input index of its
     * item 0, its place among the iterator's chunks, and how many of its
     * items were returned (under *mu).  One allocation holds it all. */
    struct conc__feed *feed;
    size_t first, place, nret;
    pthread_mutex_t own_mu;
    pthread_cond_t own_cv;
} conc__batch;

void conc__batch_unref(conc__batch *b);
/* Stores item i's result (taking out/err); a second result is dropped. */
void conc__batch_done(conc__batch *b, size_t i, int code, conc_msg *out,
                      char *err);
/* The same with *b->mu held (the process backend completes runs of
 * items of batches that share a lock under one hold of it). */
void conc__batch_done_locked(conc__batch *b, size_t i, int code,
                             conc_msg *out, char *err);

/* ---- tasks (pool.c) ------------------------------------------------------ */

/* A task is one submit (one item, with a future) or one map chunk (items
 * start .. start+count-1 of a batch).  Kept at 120 bytes or less: glibc
 * frees chunks that small without its arena lock (fastbins), and tasks
 * are freed by another thread than the one that made them, at a high rate
 * (measured: 13 more bytes cost the pipelined process benchmark about a
 * fifth, in lock waits). */
typedef struct conc__task {
    struct conc__task *next;
    _Atomic int refs;     /* threads: the worker, + whoever abandons it */
    int rcode;            /* processes, a submit: its result code */
    conc_task_fn fn;
    conc_future *fut;     /* a submit: one item */
    conc__batch *batch;   /* a map chunk */
    size_t start, count;
    union {
        /* A submit's copied input; processes: once its result is back,
         * rout holds the output (the input is not needed any more) until
         * the future takes it outside the drive lock (pool_proc.c). */
        struct {
            unsigned char *in;
            size_t inlen;
        };
        conc_msg rout;
    };
    char *rerr;           /* processes, a submit: its error text */
    uint64_t seq;         /* processes: the record's number */
    uint64_t seq_ns;      /* processes: when it was sent */
    /* processes: where its record starts in its worker's task ring, or
     * UINT64_MAX once the worker was seen to have started it */
    uint64_t pos;
    /* processes: items whose result came back (a record holds at most
     * UINT32_MAX items) */
    uint32_t ndone;
    bool fut_started;     /* fut moved to RUNNING already */
} conc__task;
_Static_assert(sizeof(conc__task) <= 120, "conc__task outgrew a fastbin");

/* Input of item k (0-based within the task). */
static inline const void *conc__task_in(const conc__task *t, size_t k,
                                        size_t *len)
{
    if (t->batch == NULL) {
        *len = t->inlen;
        return t->in;
    }
    *len = t->batch->len[t->start + k];
    return t->batch->arena + t->batch->off[t->start + k];
}

/* The input index of item k of t in its map (a fed imap: among the
 * feed's inputs), as conc_worker_info.task_item; SIZE_MAX for a submit. */
static inline size_t conc__task_item_index(const conc__task *t, size_t k)
{
    if (t->batch == NULL) {
        return SIZE_MAX;
    }
    return (t->batch->feed != NULL ? t->batch->first : 0) + t->start + k;
}

/* A worker is about to run t (just taken off the queue): moves a
 * submit's future to RUNNING.  False when it was cancelled while queued:
 * then t is freed and must be dropped. */
bool conc__task_start(conc__task *t);
/* Splits map chunk t (batch set) after its first take items (0 < take <
 * count): t keeps those, a new task returned holds the rest (next NULL);
 * NULL when out of memory, t unchanged.  A worker whose life
 * (max_tasks_per_worker) ends inside a chunk runs the first part. */
conc__task *conc__task_split(conc__task *t, size_t take);
/* Completes item k of t (frees nothing of t). */
void conc__task_item_done(conc__task *t, size_t k, int code, conc_msg *out,
                          char *err);
/* Frees a task and drops its references. */
void conc__task_free(conc__task *t);
/* Fails every item of t from item k on with code (and a copy of msg);
 * final CONC__FUT_CANCELLED cancels a submit's future.  Frees nothing. */
void conc__task_fail_items(conc__task *t, size_t k, conc__fut_final final,
                           int code, const char *msg);
/* Fails each task of a list (linked by next) from its first unfinished
 * item (t->ndone) on, and frees it, all in one batch of completions
 * (conc__future_defer_begin). */
void conc__task_fail_list(conc__task *t, conc__fut_final final, int code,
                          const char *msg);
/* Takes the tasks whose future has started (a process task back in the
 * queue after it was sent to a worker) out of a list, in order; returns
 * them as a list. */
conc__task *conc__task_take_started(conc__task **list);

/* ---- the pool ------------------------------------------------------------ */

enum { CONC__POOL_RUN, CONC__POOL_CLOSED, CONC__POOL_TERM };

/* A backend: the workers of one kind.  The engine calls these; each may
 * take p->lock itself, none is called with it held unless its name says
 * so.  start, join, terminate, workers and destroy are required, the
 * rest may be NULL. */
typedef struct conc__pool_backend {
    size_t size;             /* of its struct, which starts with conc_pool */
    const char *name_prefix; /* the workers' default name prefix */
    /* Starts the workers, and may lower p->msg_limit and p->chunk_max.
     * On error nothing of the backend runs any more (threads it started
     * may still hold references to p, which they drop as they end). */
    int (*start)(conc_pool *p);
    /* n tasks were queued: with p->lock held, then after it was released
     * (a submit or a map; never a requeue). */
    void (*queued_locked)(conc_pool *p, size_t n);
    void (*queued)(conc_pool *p);
    /* The pool's state or queue changed (close, shutdown's cancel): the
     * workers look again. */
    void (*kick)(conc_pool *p);
    /* After close or terminate: waits for the workers to end. */
    int (*join)(conc_pool *p, const conc__deadline *dl);
    /* conc_pool_terminate: sets CONC__POOL_TERM, fails what runs and what
     * is queued, stops the workers. */
    void (*terminate)(conc_pool *p);
    /* conc_pool_free, after the pool was joined: stops what is left. */
    void (*stop)(conc_pool *p);
    /* The pool's last reference went (whether or not start succeeded):
     * frees the backend's memory (the engine frees p itself). */
    void (*destroy)(conc_pool *p);
    /* conc_pool_worker_info: fills out[0 .. min(cap, nworkers)-1]. */
    void (*workers)(conc_pool *p, conc_worker_info *out, size_t cap);
    /* The waiter hook every future of this pool gets (its context is the
     * pool, with a reference that the hook's release drops), or NULL. */
    const conc__future_waiter *waiter;
} conc__pool_backend;

extern const conc__pool_backend conc__pool_threads;
extern const conc__pool_backend conc__pool_processes;

struct conc_pool {
    const conc__pool_backend *be;
    pthread_mutex_t lock;
    _Atomic long refs;      /* the user + each future, thread... holding it */
    size_t nworkers;
    conc_pool_init_fn init;
    void *init_arg;
    conc_pool_fini_fn fini;
    size_t max_tasks;
    double task_timeout;    /* seconds; 0: none */
    char prefix[48];
    size_t max_msg;         /* the max_message_bytes option */
    /* Set by the backend's start: the largest input a task may have
     * (CONC_ETOOBIG past it) and the most items in one map chunk;
     * SIZE_MAX: no limit. */
    size_t msg_limit;
    size_t chunk_max;
    unsigned next_name;     /* under lock */
    /* conc__sync_fork_epoch when the pool was made: a forked child has
     * another, and must not use the pool (conc__pool_foreign). */
    unsigned long fork_epoch;

    int state;              /* CONC__POOL_*, under lock */
    int broken;             /* 0, or why the pool broke: an initializer's
                             * code, or 1 (under lock) */
    char broken_why[320];   /* set with broken, never changed after */
    bool joined;            /* conc_pool_join returned 0; under lock */
    conc__task *head, *tail; /* queued tasks, under lock */
    _Atomic size_t npending;
    /* Bumped under lock by shutdown(cancel_futures) as it takes the
     * queue.  A backend that took tasks off the queue and has not started
     * them yet (the process backend's send_queued) compares it before
     * starting each and before putting the rest back, and cancels them
     * itself if it moved: they were queued when the queue was cancelled. */
    _Atomic unsigned cancel_epoch;
};

/* Puts a list back at the front of the queue, in order (tasks a dead
 * worker had not started); lock not held, or held (_locked). */
void conc__pool_requeue_front_locked(conc_pool *p, conc__task *first,
                                     conc__task *last, size_t n);
void conc__pool_requeue_front(conc_pool *p, conc__task *first,
                              conc__task *last, size_t n);
/* Takes the first task, or NULL; lock held. */
conc__task *conc__pool_pop_locked(conc_pool *p);
/* Takes the whole queue; lock held. */
conc__task *conc__pool_take_all_locked(conc_pool *p);
/* True in a process forked after the pool was made (pool.h, "Fork"): its
 * workers and threads are not there, and its locks may have been copied
 * held.  A compare of a number the child's fork handler bumps: no system
 * call. */
static inline bool conc__pool_is_foreign(const conc_pool *p)
{
    return p->fork_epoch != conc__sync_fork_epoch;
}
/* CONC_ESTATE, with a detail naming who, when conc__pool_is_foreign; else
 * 0. */
int conc__pool_foreign(const conc_pool *p, const char *who);
/* Waiter hooks both backends' futures share (ctx: the pool, referenced):
 * conc__pool_is_foreign, and the release of that reference. */
bool conc__pool_waiter_foreign(void *ctx);
void conc__pool_waiter_release(void *ctx);
/* Breaks the pool (pool.h, "Initializer") unless it is broken already:
 * code (non-zero) and why, which every task failed from now on and every
 * refused call names.  Lock held. */
void conc__pool_break_locked(conc_pool *p, int code, const char *why);
/* shutdown(cancel_futures) for list, tasks taken off the queue: those
 * whose future runs already (sent to a worker that died, or taken back
 * from one) go back to the front of the queue and run, as
 * Executor.shutdown leaves running futures alone; the rest is returned,
 * for conc__pool_cancel_list once the lock is let go.  Lock held. */
conc__task *conc__pool_cancel_locked(conc_pool *p, conc__task *list);
/* Fails list, returned by conc__pool_cancel_locked, as cancelled by
 * shutdown; lock not held (callbacks run). */
void conc__pool_cancel_list(conc__task *list);
void conc__pool_ref(conc_pool *p);
void conc__pool_unref(conc_pool *p);

#endif
