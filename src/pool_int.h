/* pool_int.h - what pool.c (the engine and the thread workers),
 * pool_proc.c (the process workers) and future.c (futures and iterators)
 * share.  Nothing here lives in shared memory except struct pool_slot and
 * struct pool_hdr (pool_proc.c).
 */
#ifndef CONC_POOL_INT_H
#define CONC_POOL_INT_H

#include "conc_int.h"

#include <pthread.h>

/* Spin-then-sleep: a caller about to sleep first polls its condition for
 * up to CONC__POOL_SPIN_NS (a futex round trip costs ~20 us here, many
 * tasks less), yielding the CPU between polls after the first few
 * microseconds so that on a 2-core machine a spinner never keeps the
 * thread it waits for off a CPU for long (ipc-notes lever 3). */
#define CONC__POOL_SPIN_NS 40000u
#include <sched.h>
static inline void conc__pool_spin_pause(unsigned i)
{
    if (i >= 64 && (i & 7) == 0) {
        sched_yield();
    } else {
        conc__cpu_relax();
    }
}

/* ---- futures (future.c) -------------------------------------------------- */

enum { FUT_PENDING = 0, FUT_RUNNING = 1, FUT_DONE = 2, FUT_CANCELLED = 3 };

struct fut_cb {
    struct fut_cb *next;
    conc_future_cb cb;
    void *arg;
    bool borrowed; /* part of an as_completed block: not freed alone */
};

struct conc_future {
    /* FUT_*.  PENDING -> RUNNING by CAS (conc__future_start) races with
     * PENDING -> CANCELLED by CAS (cancel): exactly one wins.  The final
     * states are stored under lock, after code/out/err. */
    _Atomic uint32_t state;
    _Atomic uint32_t waiters; /* threads asleep on state */
    _Atomic long refs;
    pthread_mutex_t lock;     /* guards cbs and the move to a final state */
    struct fut_cb *cbs, *cbs_tail;
    int code;
    conc_msg out;
    char *err;
    /* A CONC_PROCESSES submit: the pool (one reference, dropped with the
     * future's last one), so a caller waiting in conc_future_result can
     * collect results itself (conc__proc_help); NULL otherwise. */
    struct conc_pool *pool;
};

int conc__future_new(conc_future **out);
void conc__future_ref(conc_future *f);
void conc__future_unref(conc_future *f);
/* PENDING -> RUNNING; false when it was cancelled (drop the task). */
bool conc__future_start(conc_future *f);
/* Completes f with code (out and err are taken over, err may be NULL);
 * the first completion wins, a later one is dropped (its out/err freed).
 * final is FUT_DONE or FUT_CANCELLED.  Runs the callbacks in this thread. */
void conc__future_finish(conc_future *f, int final, int code, conc_msg *out,
                         char *err);
/* A batch of completions: between begin and end (they nest), futures this
 * thread completes become final at once but their callbacks wait for the
 * outermost end, which runs them in completion order.  So a callback that
 * waits for another future of the same batch finds it final, instead of
 * waiting for a completion queued behind itself in this very thread. */
void conc__future_defer_begin(void);
void conc__future_defer_end(void);

/* ---- map batches (pool.c) ------------------------------------------------ */

struct batch_item {
    int code;
    bool done;
    conc_msg out;
    char *err;
};

struct batch {
    _Atomic long refs; /* the iterator + each task that holds items */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    unsigned waiters;
    size_t want;         /* the item an ordered waiter needs; SIZE_MAX: any */
    size_t n;
    unsigned char *arena; /* the copied inputs, back to back */
    size_t *off, *len;
    struct batch_item *items;
    size_t *order; /* indices in completion order */
    size_t ndone;
};

void conc__batch_unref(struct batch *b);
/* Stores item i's result (taking out/err); a second result is dropped. */
void conc__batch_done(struct batch *b, size_t i, int code, conc_msg *out,
                      char *err);
/* The same with b->lock held (the manager completes runs of items of one
 * batch under one lock). */
void conc__batch_done_locked(struct batch *b, size_t i, int code,
                             conc_msg *out, char *err);

/* ---- iterators ----------------------------------------------------------- */

enum { ITER_ORDERED, ITER_UNORDERED, ITER_FUTURES };

struct conc_iter {
    int kind;
    /* map iterators */
    struct batch *batch;
    size_t next;       /* ordered: next index; unordered: next in order[] */
    size_t last_index;
    char *last_err;
    /* as_completed (future.c) */
    struct ac_state *ac;
};

void conc__iter_ac_free(struct ac_state *ac);

/* ---- tasks and the pool (pool.c) ------------------------------------------ */

/* Kept at 120 bytes or less: glibc frees chunks that small without its
 * arena lock (fastbins), and tasks are freed by another thread than the
 * one that made them, at a high rate (measured: 13 more bytes cost the
 * pipelined process benchmark about a fifth, in lock waits). */
struct task {
    struct task *next;
    _Atomic int refs;     /* threads: the worker, + whoever abandons it */
    int rcode;            /* processes, a submit: its result code */
    conc_task_fn fn;
    conc_future *fut;     /* a submit: one item */
    struct batch *batch;  /* a map chunk: items start .. start+count-1 */
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
    size_t ndone;         /* processes: items whose result came back */
    bool fut_started;     /* fut moved to RUNNING already */
};
_Static_assert(sizeof(struct task) <= 120, "struct task outgrew a fastbin");

/* Input of item k (0-based within the task). */
static inline const void *conc__task_in(const struct task *t, size_t k,
                                        size_t *len)
{
    if (t->batch == NULL) {
        *len = t->inlen;
        return t->in;
    }
    *len = t->batch->len[t->start + k];
    return t->batch->arena + t->batch->off[t->start + k];
}

/* Completes item k of t (frees nothing of t). */
void conc__task_item_done(struct task *t, size_t k, int code, conc_msg *out,
                          char *err);
/* Frees a task and drops its references. */
void conc__task_free(struct task *t);
/* Fails every item of t from item k on with code (and a copy of msg),
 * then frees t.  final FUT_CANCELLED cancels a submit's future. */
void conc__task_fail(struct task *t, size_t k, int final, int code,
                     const char *msg);

enum { POOL_RUN, POOL_CLOSED, POOL_TERM };

struct pool_worker; /* pool.c (threads) or pool_proc.c (processes) */
struct pool_proc;   /* pool_proc.c */

struct conc_pool {
    pthread_mutex_t lock;
    pthread_cond_t work_cv; /* threads: a task was queued, or stop */
    pthread_cond_t done_cv; /* a worker or the manager ended */
    _Atomic long refs;      /* the user + each detached thread */
    conc_pool_kind kind;
    size_t nworkers;
    conc_pool_init_fn init;
    void *init_arg;
    conc_pool_fini_fn fini;
    size_t max_tasks;
    double task_timeout;
    char prefix[48];
    size_t max_msg;
    unsigned next_name;

    int state;              /* POOL_*, under lock */
    int broken;             /* the failed initializer's code, or 0 */
    bool joined;
    struct task *head, *tail; /* queued tasks, under lock */
    _Atomic size_t npending;

    /* threads */
    struct pool_worker **threads; /* nworkers slots, under lock */
    size_t live;                  /* attached threads still running */
    size_t idle;                  /* threads waiting on work_cv */
    pthread_t timer;
    bool has_timer;
    bool timer_stop;
    pthread_cond_t timer_cv;

    /* processes */
    struct pool_proc *proc;
};

/* Queue a list of tasks (first..last, n of them) at the back, or at the
 * front; the pool lock must NOT be held.  conc__pool_push returns
 * CONC_ESTATE / CONC_EBROKEN when the pool takes no tasks. */
int conc__pool_push(conc_pool *p, struct task *first, struct task *last,
                    size_t n);
/* Takes the first task, or NULL; lock held. */
struct task *conc__pool_pop_locked(conc_pool *p);
void conc__pool_unref(conc_pool *p);
void conc__pool_ref(conc_pool *p);

/* pool_proc.c */

/* A result record a worker wrote in its result ring, once checked. */
typedef struct conc__pool_res_view {
    uint32_t len, type, item;
    int32_t code;
    uint64_t seq;
    const unsigned char *out, *err; /* inside the ring */
    size_t outlen, errlen;
} conc__pool_res_view;
/* Checks the record at position pos of a result ring (cap bytes, pos and
 * tail byte counts that only grow) before anything of it is trusted, and
 * fills *v: 1 for a whole record that lies inside the ring and before
 * tail, with an output and an error text that fill it exactly; 0 when
 * pos == tail (nothing there); a negative number naming the check that
 * failed otherwise.  Compares only; reads nothing outside ring[0, cap). */
int conc__pool_res_check(const unsigned char *ring, size_t cap, uint64_t pos,
                         uint64_t tail, conc__pool_res_view *v);

/* For tests: inside a task run by a process worker, that worker's result
 * ring, the word that publishes its end, and the task's record number and
 * item (what a task that scribbles on memory it does not own could
 * overwrite or forge); false elsewhere. */
bool conc__pool_worker_result_ring(unsigned char **ring, size_t *cap,
                                   _Atomic uint64_t **tail, uint64_t *seq,
                                   uint32_t *item);

int conc__proc_start(conc_pool *p);
void conc__proc_kick(conc_pool *p);     /* new work or state: wake manager */
/* A task was queued by submit/map: sends it to a worker from this thread
 * when the drive lock is free, else wakes the manager. */
void conc__proc_submitted(conc_pool *p);
/* A thread waiting for a future of p: enter (delta 1) / leave (-1) the
 * helpers, and one round of help (collect results, dispatch); see
 * "Helpers" in pool_proc.c. */
void conc__proc_helpers(conc_pool *p, int delta);
void conc__proc_help(conc_pool *p);
/* True in the pool's manager thread (a callback it runs). */
bool conc__proc_on_manager(conc_pool *p);
/* For a callback run by the manager that waits for a future of its pool:
 * one whole round of the manager's work, the checks for dead and
 * timed-out workers and a pending terminate included, which the manager
 * cannot do while it sits in the callback. */
void conc__proc_manager_help(conc_pool *p);
int conc__proc_join(conc_pool *p, const conc__deadline *dl);
void conc__proc_terminate(conc_pool *p); /* kill, fail, wait for manager */
void conc__proc_free(conc_pool *p);    /* waits for the manager to end */
void conc__proc_destroy(conc_pool *p); /* the pool's last reference went */

#endif
