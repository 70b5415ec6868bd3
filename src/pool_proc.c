/* pool_proc.c - the CONC_PROCESSES backend of the pool engine (pool.c):
 * forked daemon children fed through two rings per worker in shared
 * memory, and the manager thread that drives them and survives their
 * deaths.
 *
 * Layout.  One anonymous shared mapping, made before the first fork so
 * every worker (and every replacement, forked later from the same parent)
 * inherits it:
 *
 *   [pool_hdr: 4 KiB][slot 0][slot 1]...   slot = [slot_ctl: 4 KiB]
 *                                                 [task ring: cap bytes]
 *                                                 [result ring: cap bytes]
 *
 * Each ring is single-producer single-consumer: the task ring is written
 * by the parent and read by the worker, the result ring the other way; in
 * the parent, one thread at a time - the holder of the drive lock (see
 * "Helpers") - plays the parent's part.
 * Positions (head, tail) are byte counts that only grow; the offset is
 * pos % cap.  Records are 8-byte aligned and never wrap: one that would
 * cross the end is preceded by a PAD record filling the rest.  A record is
 * at most cap/2 bytes (cap = 2 * max_message_bytes + 4 KiB), so one always
 * fits an empty ring.  Nothing in shared memory is a data pointer; the
 * task record carries the task's function pointer, valid in the worker
 * because it is a fork of the same program image (no exec).
 *
 *   task record:   {u32 len, u32 type, u32 nitems, u32 state, u64 seq,
 *                   u64 fn}
 *                  then per item {u64 len, bytes, padding}
 *   result record: {u32 len, u32 type, u32 item, i32 code, u64 seq,
 *                   u64 outlen, u32 errlen, u32 -} then output, error text
 *
 * The producer writes a record, then publishes the new tail (release /
 * seq_cst); the consumer loads the tail with acquire, reads, and publishes
 * its head with release, which hands the room back.  The worker runs a
 * task's items in place in the ring and moves the task ring's head past
 * the record only when all its results are posted.
 *
 * Sleeping and waking (no pthread condvars in shared memory; a dead
 * sleeper holds nothing).  Three sleeps, one rule: the sleeper reads the
 * bell word, stores its "sleeping" flag (seq_cst), re-checks its
 * condition, and futex-waits on the bell with the value read first; the
 * waker publishes its change (seq_cst), then loads the flag and, if set,
 * bumps the bell and wakes.  Either the sleeper sees the change when it
 * re-checks, or the waker sees the flag; and a bell bumped after the
 * sleeper read it makes its futex wait return at once.  So no wake-up is
 * lost, and a wake costs a syscall only when someone really sleeps.
 *   - a worker waits for tasks on slot_ctl.task_bell (woken by dispatch
 *     and by stop);
 *   - a worker waits for room in a full result ring on room_bell (woken
 *     by the manager after it drains);
 *   - the manager waits on pool_hdr.bell (woken by every posted result
 *     and by submit/close/terminate in the parent), or sleeps "quietly"
 *     (see "Helpers").
 * Before sleeping, each side spins briefly: a round trip through the
 * futex costs ~20 us, a task often less.
 *
 * Crashes.  The manager sleeps at most 2 ms while tasks are out (100 ms
 * when idle) and then reaps (conc_process_is_alive).  A worker that died
 * for any reason (signal, abort, exit(), SIGKILL from outside, or killed
 * by the manager for a task past task_timeout): the manager first drains
 * what the worker had committed to its result ring, then looks at
 * slot_ctl.cur_seq/cur_item, which the worker stores before each item: if
 * they name the first unfinished item of the oldest task sent to it, that
 * item - and only it - fails with CONC_EWORKERDIED (or CONC_ETIMEDOUT);
 * every other item sent to the dead worker had not started and goes back
 * to the front of the queue, in order.  Then the slot's rings are reset
 * (whatever the dead worker half-wrote was never published) and a
 * replacement is forked into the same slot.  A live worker that has gone
 * past every record sent to it while a result is still owed stepped
 * over a task that another task wrote over; it is judged corrupt, like
 * one whose result ring lies, and that task fails instead of waiting
 * for ever.  A worker that retires after
 * max_tasks_per_worker posts a RETIRE record, runs the finalizer and exits
 * 0; the manager never sends a worker more items than it has left, so
 * nothing is stranded, and replaces it once it has exited - looking each
 * round, never waiting for it: a slow finalizer would hold the drive lock
 * (below) and so every caller of the pool.
 *
 * Fork safety.  Replacements are forked by conc_process_start() called
 * from the manager thread (process.c forks daemons from a thread that
 * lives as long as the process and documents what the child may touch).
 * The worker child touches only its own slot, the task functions and the
 * pool's options (copied in its memory image); it never takes the pool's
 * lock or the drive lock, which another parent thread may have held at
 * the fork (the manager itself holds drive while it forks).
 *
 * Dispatch.  Tasks go to the alive worker with the fewest tasks out,
 * bounded by a window that follows the measured task time: 2 tasks for
 * tasks over 1 ms, 8 under 1 ms and 512 under 50 us, where pipelining is
 * what makes throughput.  Even for long tasks one is sent ahead: a worker
 * that finishes a task starts the next from its own ring at once.  With
 * only one out, it would wait for the manager to see the result and send
 * another, and on a machine whose every core runs a worker the manager
 * has no core of its own: the scheduler lets it in only when some worker
 * is preempted, half a millisecond or more later, for each task (a
 * map of 256 CPU-bound items on 2 worker processes and 2 cores took
 * 1.04-1.21x the time of 2 threads with one task out, 0.99-1.09x with
 * one sent ahead).  Queued tasks leave the queue in runs (send_queued:
 * as many as the workers have room for, at most 32, under one hold of
 * the pool lock, which every submit takes too), and what a run could
 * not send goes back to the front in order, so tasks still start in the
 * order submitted; a shutdown(cancel_futures) meanwhile cancels what the
 * run had not started (pool.cancel_epoch).
 *
 * Taking back.  A task sent ahead waits behind the one its worker runs,
 * which may be long, while another worker idles (with short tasks, up to
 * 511 wait so).  So whoever dispatches, once the queue is empty, takes
 * unstarted tasks back from busy workers for idle ones (take_back): half
 * of those waiting behind the busiest worker's running task (at least
 * one, at most 64), again each time a worker idles, until none is left
 * waiting.  A task record's state word goes SENT -> TAKEN by the worker's
 * CAS before it runs the record, and SENT -> REVOKED by the parent's;
 * one of the two wins.  The worker steps over a revoked record; the
 * parent sends the task to the idle worker with a new seq, so a result
 * still posted under the old one (by a task that wrote over its ring)
 * matches nothing and marks the worker corrupt.  The parent's CAS must
 * land on the task's own record: it knows where the record starts
 * (conc__task.pos), and takes a task back only while no record written
 * after it reaches round the ring onto its bytes (may_take_back), which
 * can happen once the worker has run it and moved past it.  A worker
 * still in its initializer does not count as idle: the task would wait
 * for the initializer instead.
 *
 * Full rings.  A task ring may lack room for the next record while its
 * worker has fewer tasks out than its window: records near
 * max_message_bytes, or the bytes of a record taken back, which stay
 * until the worker steps over them.  Then the worker counts as full
 * until its task_head moves (has_room), the task goes to the next worker
 * with room - checked before its future is marked running, so a task
 * that waits for room stays pending and can be cancelled - and the
 * parent raises wants_task_room; a worker that runs
 * out of tasks with the flag up wakes the manager (a fence between its
 * store of task_head and its load of the flag, against the manager's
 * store of the flag and its load of task_head: one sees the other).  So
 * the manager neither spins on a ring it cannot write nor sleeps while
 * an emptied worker waits.
 *
 * Helpers.  Everything the manager does to the rings and to the
 * per-worker bookkeeping (proc_worker: in-flight lists, ring positions,
 * counts) is done under proc_pool.drive, by whoever holds it:
 *   - the manager, each round (trylock; a blocking lock for its 1 ms
 *     check of deaths and timeouts, which stays the manager's alone, as do
 *     replacements, close and terminate; manager_pass).  When a callback
 *     the manager runs waits for another future of the pool, the manager
 *     thread runs whole rounds from that wait (waiter_drive, through the
 *     future's waiter hook), since nobody else would reap, time out or
 *     terminate meanwhile;
 *   - conc_pool_submit, while the manager sleeps: trylock, then the task
 *     goes straight into an idle worker's ring (procs_queued);
 *   - a thread waiting in conc_future_result on a process future, while
 *     it spins: trylock, drain every result ring, dispatch (waiter_help,
 *     the hook every process future gets at submit).  Never blocking on
 *     the lock: its holder is doing the same work.
 * So a lone task goes caller -> worker -> caller, each side spinning
 * briefly, instead of caller -> manager -> worker -> manager -> caller
 * (about 1 us a task against 11 us, measured with bench_pool on 2
 * cores).
 * Futures drained under the lock are completed (callbacks run) only
 * after it is released (drive_unlock), so a callback never runs with a
 * pool lock held, whichever thread runs it.
 * The manager stays off the CPUs while waiters help: when it finds a
 * helper (hdr.helpers) and at most one task out per worker, it sleeps
 * quietly - hdr.sleeping stays 0, so posted results do not wake it - for
 * at most 2 ms (its crash and timeout checks go on).  The last helper to
 * leave wakes it if any work is left (a seq_cst decrement of helpers, then
 * a load of quiet, against the manager's store of quiet, then load of
 * helpers: one of the two sees the other).  A submit that sent its task
 * itself wakes it if it sleeps quietly with no helper, or for the long
 * idle period (hdr.long_sleep; it must watch the task).  With many tasks
 * out (a stream of submits, a map) the manager stays awake and collects
 * beside any helper.
 * A helper only ever drains committed records and sends tasks; the
 * manager alone reaps, and its worker_ended runs under the same lock, so
 * it sees the bookkeeping a helper left.  The parent's memory for the
 * process side (rings, bookkeeping) lives until the pool's last reference
 * goes, and each process future holds one: a helper may still look at it
 * after conc_pool_free, finds "stopped" and leaves.
 *
 * Rejected: one shared MPMC queue all workers pull from (a worker killed
 * between taking a task and announcing it would lose the task silently,
 * and in a reserve-then-commit ring a producer that dies between reserving
 * and committing blocks every later producer for ever); conc_queue for
 * transport (the manager must know exactly which item each worker holds,
 * which a shared queue does not tell); pipes (a syscall per message).
 */
#include "pool_int.h"
#include "pool_proc_int.h"

#include <conc/process.h>

#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { REC_PAD = 1, REC_TASK = 2, REC_RESULT = 3, REC_RETIRE = 4,
       REC_INITFAIL = 5 };

struct pool_hdr {
    alignas(64) _Atomic uint32_t bell;
    _Atomic uint32_t sleeping;
    /* Parent-only words (the workers never read them), kept here for
     * their alignment: the mapping is page-aligned, a malloc'd pool_proc
     * only 16-byte aligned.  Read by every submit, written only when the
     * manager falls asleep or wakes, so on the bell's line. */
    _Atomic uint32_t quiet;      /* asleep, not woken by results */
    _Atomic uint32_t long_sleep; /* asleep for the idle period */
    alignas(64) _Atomic uint32_t helpers; /* threads in conc__proc_helpers */
};

struct slot_ctl {
    alignas(64) _Atomic uint64_t task_tail; /* manager */
    alignas(64) _Atomic uint64_t task_head; /* worker */
    _Atomic uint32_t task_bell;
    _Atomic uint32_t worker_sleeping;
    _Atomic uint32_t stop;
    /* The parent found no room in the task ring for its next record: the
     * worker, once out of tasks, wakes the manager (see "Full rings"). */
    _Atomic uint32_t wants_task_room;
    alignas(64) _Atomic uint64_t res_tail;  /* worker */
    alignas(64) _Atomic uint64_t res_head;  /* manager */
    _Atomic uint32_t room_bell;
    _Atomic uint32_t wants_room;
    alignas(64) _Atomic uint64_t cur_seq;   /* worker: task running, or 0 */
    _Atomic uint64_t cur_item;
    _Atomic uint64_t cur_start_ns;  /* only with task_timeout: the item's */
    _Atomic uint64_t task_start_ns; /* when the task record was begun */
    /* worker, for conc_pool_worker_info (relaxed: read as a snapshot,
     * ordered with nothing) and worker_ended (after the worker's death):
     * its initializer is done; items it finished. */
    _Atomic uint32_t ready;
    _Atomic uint64_t items_done;
};

/* A task record's state (see "Taking back"). */
enum { TASK_SENT = 1, TASK_TAKEN = 2, TASK_REVOKED = 3 };
/* The exit status of a worker that found its task ring written over. */
enum { EXIT_BAD_RING = 120 };
/* conc__task.pos of a task whose worker was seen to have started it. */
#define POS_STARTED UINT64_MAX
/* The most tasks take_back moves at once (a bound for its array). */
enum { TAKE_BACK_MAX = 64 };
/* Lives of one slot in a row that die in their initializer before the
 * pool breaks (worker_ended). */
enum { UNREADY_DEATHS_MAX = 3 };
/* How long a pool may have no worker at all, every fork of a
 * replacement failing (no memory, no process left under RLIMIT_NPROC),
 * before it breaks (check_workers): it can run nothing, and its tasks
 * would wait for as long as forks fail. */
#define STARVE_NS 1000000000ull
/* How long a close lets all the workers take to end (their finalizers),
 * in all, before they are killed; and the slices it waits in, looking
 * for a terminate between them (stop_all). */
#define STOP_GRACE_S 30.0
#define STOP_SLICE_S 0.05

struct task_rec {
    uint32_t len, type, nitems;
    _Atomic uint32_t state; /* TASK_*; not used in a PAD record */
    uint64_t seq, fn;
};

struct res_rec {
    uint32_t len, type, item;
    int32_t code;
    uint64_t seq, outlen;
    uint32_t errlen, unused;
};

struct proc_worker {
    conc_pool *pool;
    struct slot_ctl *ctl;
    unsigned char *tring, *rring;
    size_t cap;
    conc_process *proc; /* NULL while no worker runs in this slot */
    uint64_t ttail;     /* manager's copy of task_tail */
    /* write_task found no room: none until the worker moves task_head
     * past full_head (see "Full rings"). */
    bool full;
    uint64_t full_head;
    uint64_t rhead;     /* manager's copy of res_head */
    conc__task *ifl_head, *ifl_tail; /* sent, not finished, in order */
    size_t nifl;
    size_t life_items;  /* items sent to this worker's current life */
    uint64_t ewma_ns, last_done_ns;
    bool measured, retired, init_failed;
    /* drain met a result record that fails a check: the worker (or a task
     * in it) wrote over its ring.  Nothing after it is read; the manager
     * kills and replaces the worker (check_workers). */
    bool corrupt;
    char corrupt_why[96];
    int init_code;
    /* Lives of this slot in a row that died before they were ready (in
     * their initializer); 0 once one was ready.  Kept by reset_slot. */
    unsigned unready_deaths;
    /* What conc_pool_worker_info shows, under pool->lock (the drive lock
     * may be held for long, by a close that waits for the workers). */
    pid_t info_pid; /* 0: no worker in the slot */
    bool info_exiting;
    char info_name[64];
};

/* The backend's pool: the engine's fields first. */
struct proc_pool {
    conc_pool base;
    pthread_cond_t done_cv; /* the manager ended (CLOCK_MONOTONIC) */
    void *mem;              /* NULL: not started, or start failed */
    size_t memsize;
    struct pool_hdr *hdr;
    size_t cap;
    struct proc_worker *w;
    pthread_t manager;
    bool has_manager;
    bool manager_done; /* under pool->lock */
    /* The drive lock: whoever holds it may drain result rings, write task
     * rings and change any proc_worker field and next_seq (see "Helpers"
     * above).  Taken before pool->lock, never after. */
    pthread_mutex_t drive;
    bool stopped;       /* under drive: the manager ended, rings are off */
    conc__task *done_head, *done_tail; /* under drive: see drive_unlock */
    /* under drive: batches of callbacks deferred by send_queued (futures
     * it cancelled), run by drive_unlock once the lock is let go */
    unsigned deferred;
    uint64_t next_seq;  /* under drive */
    /* Under drive: since when (monotonic ns) no slot has a worker and
     * forking one fails, 0 while one has; and the last such failure's
     * detail (STARVE_NS). */
    uint64_t starving_since_ns;
    char spawn_why[160];
};

static inline struct proc_pool *pp_of(conc_pool *p)
{
    return (struct proc_pool *)p;
}

static inline size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static inline void bell_ring(_Atomic uint32_t *bell, _Atomic uint32_t *flag)
{
    /* seq_cst load after the caller's seq_cst publication: see "Sleeping
     * and waking" above. */
    if (atomic_load(flag) != 0) {
        atomic_fetch_add(bell, 1);
        /* Wakes the sleeper of sleep_on() on this bell. */
        conc__os_futex_wake(bell, INT32_MAX, true);
    }
}

/* The sleeper's half: ready() is re-checked after the flag is up. */
static void sleep_on(_Atomic uint32_t *bell, _Atomic uint32_t *flag,
                     bool (*ready)(void *), void *arg,
                     const conc__deadline *dl)
{
    uint32_t b = atomic_load(bell);
    atomic_store(flag, 1);
    if (!ready(arg)) {
        /* Returns at once if the bell moved since b was read. */
        conc__os_futex_wait(bell, b, dl, true);
    }
    atomic_store(flag, 0);
}

/* ---- the worker process -------------------------------------------------- */

struct wctx {
    struct slot_ctl *c;
    uint64_t head;   /* task ring */
    uint64_t rtail;  /* result ring */
    size_t cap;
    size_t need;     /* bytes wanted in the result ring */
};

static bool task_ready(void *arg)
{
    struct wctx *x = arg;
    return atomic_load(&x->c->task_tail) != x->head ||
           atomic_load(&x->c->stop) != 0;
}

static bool room_ready(void *arg)
{
    struct wctx *x = arg;
    return x->rtail + x->need - atomic_load(&x->c->res_head) <= x->cap;
}

static void post(struct proc_worker *w, struct wctx *x, uint32_t type,
                 uint64_t seq, uint32_t item, int code, const void *out,
                 size_t outlen, const char *err, size_t errlen)
{
    struct slot_ctl *c = x->c;
    size_t cap = x->cap;
    size_t len = sizeof(struct res_rec) + pad8(outlen) + pad8(errlen);
    size_t off = (size_t)(x->rtail % cap);
    size_t pad = off + len > cap ? cap - off : 0;
    x->need = pad + len;
    if (!room_ready(x)) {
        conc__deadline dl;
        conc__deadline_init(&dl, CONC_FOREVER);
        for (int i = 0; i < 1000 && !room_ready(x); i++) {
            conc__cpu_relax();
        }
        while (!room_ready(x)) {
            sleep_on(&c->room_bell, &c->wants_room, room_ready, x, &dl);
        }
    }
    if (pad > 0) {
        struct res_rec *r = (struct res_rec *)(w->rring + off);
        r->len = (uint32_t)pad;
        r->type = REC_PAD;
        off = 0;
    }
    struct res_rec *r = (struct res_rec *)(w->rring + off);
    r->len = (uint32_t)len;
    r->type = type;
    r->item = item;
    r->code = code;
    r->seq = seq;
    r->outlen = outlen;
    r->errlen = (uint32_t)errlen;
    if (outlen > 0) {
        memcpy((unsigned char *)(r + 1), out, outlen);
    }
    if (errlen > 0) {
        memcpy((unsigned char *)(r + 1) + pad8(outlen), err, errlen);
    }
    x->rtail += pad + len;
    /* Publishes the record; pairs with the acquire load of res_tail in
     * drain().  seq_cst so that the load of hdr->sleeping below cannot
     * move before it. */
    atomic_store(&c->res_tail, x->rtail);
    struct pool_hdr *h = pp_of(w->pool)->hdr;
    bell_ring(&h->bell, &h->sleeping);
}

/* In a worker process, its slot (for conc__pool_worker_result_ring and
 * conc__pool_worker_task_ring). */
static struct proc_worker *this_worker;

bool conc__pool_worker_task_ring(unsigned char **ring, size_t *cap,
                                 uint64_t *pos, _Atomic uint64_t **tail)
{
    if (this_worker == NULL) {
        return false;
    }
    *ring = this_worker->tring;
    *cap = this_worker->cap;
    /* While a record runs, task_head is where it starts: the worker
     * stores it once the record before is done. */
    *pos = atomic_load(&this_worker->ctl->task_head);
    *tail = &this_worker->ctl->task_tail;
    return true;
}

bool conc__pool_worker_result_ring(unsigned char **ring, size_t *cap,
                                   _Atomic uint64_t **tail, uint64_t *seq,
                                   uint32_t *item)
{
    if (this_worker == NULL) {
        return false;
    }
    *ring = this_worker->rring;
    *cap = this_worker->cap;
    *tail = &this_worker->ctl->res_tail;
    *seq = atomic_load(&this_worker->ctl->cur_seq);
    *item = (uint32_t)atomic_load(&this_worker->ctl->cur_item);
    return true;
}

static int worker_main(void *arg)
{
    struct proc_worker *w = arg;
    this_worker = w;
    conc_pool *p = w->pool;
    struct slot_ctl *c = w->ctl;
    struct wctx x = { .c = c, .cap = w->cap };
    x.head = atomic_load(&c->task_head);
    x.rtail = atomic_load(&c->res_tail);
    void *ctx = NULL;
    if (p->init != NULL) {
        int rc = p->init(p->init_arg, &ctx);
        if (rc != 0) {
            post(w, &x, REC_INITFAIL, 0, 0, rc, NULL, 0, NULL, 0);
            return 0;
        }
    }
    atomic_store_explicit(&c->ready, 1, memory_order_relaxed);
    conc__deadline forever;
    conc__deadline_init(&forever, CONC_FOREVER);
    size_t ran = 0;
    bool timed = p->task_timeout > 0;
    conc_buf out; /* reused for every task: its memory stays allocated */
    conc__buf_init(&out, p->max_msg);
    struct pool_hdr *h = pp_of(p)->hdr;
    for (;;) {
        if (!task_ready(&x)) {
            /* Out of tasks: if the parent found no room for its next one,
             * there is room now (see "Full rings").  The fence orders the
             * store of task_head before the load of the flag. */
            atomic_thread_fence(memory_order_seq_cst);
            if (atomic_load_explicit(&c->wants_task_room,
                                     memory_order_relaxed) != 0 &&
                atomic_exchange(&c->wants_task_room, 0) != 0) {
                bell_ring(&h->bell, &h->sleeping);
            }
        }
        uint64_t until = conc__now_ns() + CONC__SPIN_NS;
        for (unsigned i = 0; !task_ready(&x); i++) {
            if ((i & 15) == 15 && conc__now_ns() > until) {
                break;
            }
            conc__spin_pause(i);
        }
        while (!task_ready(&x)) {
            sleep_on(&c->task_bell, &c->worker_sleeping, task_ready, &x,
                     &forever);
        }
        if (atomic_load(&c->stop) != 0 &&
            atomic_load(&c->task_tail) == x.head) {
            break;
        }
        /* The acquire in task_ready's load of task_tail (seq_cst) pairs
         * with the manager's publication in write_task(). */
        size_t off = (size_t)(x.head % w->cap);
        struct task_rec *r = (struct task_rec *)(w->tring + off);
        /* The ring is this process's memory, so a task may have written
         * over any record in it, its own too: each length is read once,
         * checked against the ring and the published tail, and only the
         * copy is used.  A ring that fails is never read again: the
         * worker exits and the manager replaces it, and the tasks sent to
         * it that had not started run on the replacement. */
        uint32_t rlen = r->len, rtype = r->type;
        if (rlen < 8 || rlen % 8 != 0 || rlen > w->cap - off ||
            rlen > atomic_load(&c->task_tail) - x.head ||
            (rtype != REC_PAD && rlen < sizeof(struct task_rec))) {
            _exit(EXIT_BAD_RING);
        }
        uint32_t sent = TASK_SENT;
        if (rtype == REC_PAD ||
            (!atomic_compare_exchange_strong(&r->state, &sent, TASK_TAKEN) &&
             sent == TASK_REVOKED)) {
            /* A pad, or a task the parent took back for another worker
             * (see "Taking back"): stepped over. */
            x.head += rlen;
            atomic_store_explicit(&c->task_head, x.head, memory_order_release);
            continue;
        }
        conc_task_fn fn = (conc_task_fn)(uintptr_t)r->fn;
        uint32_t nitems = r->nitems;
        uint64_t seq = r->seq;
        unsigned char *q = (unsigned char *)(r + 1);
        const unsigned char *end = (const unsigned char *)r + rlen;
        /* One clock read a record (a task or a chunk), for
         * conc_pool_worker_info; ordered before the release stores of
         * item and seq below, like cur_start_ns. */
        atomic_store_explicit(&c->task_start_ns, conc__now_ns(),
                              memory_order_relaxed);
        for (uint32_t k = 0; k < nitems; k++) {
            uint64_t len;
            if (end - q < 8) {
                _exit(EXIT_BAD_RING);
            }
            memcpy(&len, q, sizeof len);
            q += 8;
            if (len > (uint64_t)(end - q)) {
                _exit(EXIT_BAD_RING);
            }
            /* Stored start, item, seq, the last two with release: the
             * manager loads seq, item (acquire), then start, so the start
             * it sees belongs to the item it sees or a later one, and a
             * timeout is never judged on an older item's start
             * (check_workers).  After this process died, its death
             * orders all three. */
            if (timed) {
                atomic_store_explicit(&c->cur_start_ns, conc__now_ns(),
                                      memory_order_relaxed);
            }
            atomic_store_explicit(&c->cur_item, k, memory_order_release);
            atomic_store_explicit(&c->cur_seq, seq, memory_order_release);
            conc__buf_reset(&out);
            int code = conc__task_outcome(&out, fn(len ? q : NULL,
                                                   (size_t)len, &out, ctx));
            size_t elen = out.has_error ? strlen(out.error) : 0;
            post(w, &x, REC_RESULT, seq, k, code, out.data, out.len,
                 out.error, elen);
            q += pad8((size_t)len);
            ran++;
            atomic_store_explicit(&c->items_done, ran, memory_order_relaxed);
        }
        atomic_store(&c->cur_seq, 0);
        x.head += rlen;
        /* Hands the record's room back; pairs with the acquire load of
         * task_head in write_task(). */
        atomic_store_explicit(&c->task_head, x.head, memory_order_release);
        if (p->max_tasks > 0 && ran >= p->max_tasks) {
            post(w, &x, REC_RETIRE, 0, 0, 0, NULL, 0, NULL, 0);
            break;
        }
    }
    conc__buf_release(&out);
    if (p->fini != NULL) {
        p->fini(ctx, p->init_arg);
    }
    return 0;
}

/* ---- the manager --------------------------------------------------------- */

static void reset_slot(struct proc_worker *w)
{
    struct slot_ctl *c = w->ctl;
    atomic_store(&c->task_tail, 0);
    atomic_store(&c->task_head, 0);
    atomic_store(&c->res_tail, 0);
    atomic_store(&c->res_head, 0);
    atomic_store(&c->worker_sleeping, 0);
    atomic_store(&c->wants_room, 0);
    atomic_store(&c->wants_task_room, 0);
    atomic_store(&c->stop, 0);
    atomic_store(&c->cur_seq, 0);
    atomic_store(&c->cur_item, 0);
    atomic_store(&c->task_start_ns, 0);
    atomic_store(&c->ready, 0);
    atomic_store(&c->items_done, 0);
    w->ttail = w->rhead = 0;
    w->full = false;
    w->ifl_head = w->ifl_tail = NULL;
    w->nifl = 0;
    w->life_items = 0;
    w->retired = false;
    w->init_failed = false;
    w->corrupt = false;
    w->measured = false;
    w->last_done_ns = 0;
}

/* What conc_pool_worker_info shows for w's slot: its worker (pid 0:
 * none).  Drive held, so every writer holds both locks. */
static void set_info(conc_pool *p, struct proc_worker *w, pid_t pid,
                     const char *name)
{
    pthread_mutex_lock(&p->lock);
    w->info_pid = pid;
    w->info_exiting = false;
    snprintf(w->info_name, sizeof w->info_name, "%s", name);
    pthread_mutex_unlock(&p->lock);
}

static int spawn_once(conc_pool *p, struct proc_worker *w);

/* Starts a worker for w's slot: 0, or an error whose detail is kept in
 * spawn_why for the pool's break (check_workers). */
static int spawn(conc_pool *p, struct proc_worker *w)
{
    int err = spawn_once(p, w);
    if (err != 0) {
        snprintf(pp_of(p)->spawn_why, sizeof pp_of(p)->spawn_why, "%s",
                 conc_errdetail());
    }
    return err;
}

static int spawn_once(conc_pool *p, struct proc_worker *w)
{
    char name[64];
    snprintf(name, sizeof name, "%s-%u", p->prefix, ++p->next_name);
    reset_slot(w);
    int err = conc_process_new(&w->proc, &(conc_process_opts){
                                              .target = worker_main,
                                              .arg = w,
                                              .name = name,
                                              .daemon = true });
    if (err != 0) {
        w->proc = NULL;
        return err;
    }
    err = conc_process_start(w->proc);
    if (err != 0) {
        int e = errno; /* fork's, for the caller's detail */
        conc_process_free(w->proc);
        w->proc = NULL;
        errno = e;
        return err;
    }
    set_info(p, w, conc_process_pid(w->proc), name);
    return 0;
}

static void ifl_pop(struct proc_worker *w)
{
    conc__task *t = w->ifl_head;
    w->ifl_head = t->next;
    if (w->ifl_head == NULL) {
        w->ifl_tail = NULL;
    }
    t->next = NULL;
    w->nifl--;
}

/* Queues a finished submit for drive_unlock; drive held. */
static void done_push(struct proc_pool *pp, conc__task *t)
{
    t->next = NULL;
    if (pp->done_tail != NULL) {
        pp->done_tail->next = t;
    } else {
        pp->done_head = t;
    }
    pp->done_tail = t;
}

/* Releases the drive lock, then runs the callbacks of the futures
 * send_queued cancelled and completes the submits collected under it (in
 * the order their results came), so that no user callback ever runs with
 * the drive lock held: a callback may then call anything a callback may
 * (conc_pool_terminate included) without waiting on this thread. */
static void drive_unlock(conc_pool *p)
{
    struct proc_pool *pp = pp_of(p);
    conc__task *t = pp->done_head;
    pp->done_head = pp->done_tail = NULL;
    unsigned deferred = pp->deferred;
    pp->deferred = 0;
    pthread_mutex_unlock(&pp->drive);
    while (deferred-- > 0) {
        conc__future_defer_end();
    }
    conc__future_defer_begin();
    while (t != NULL) {
        conc__task *n = t->next;
        t->next = NULL;
        char *err = t->rerr;
        t->rerr = NULL;
        conc__task_item_done(t, 0, t->rcode, &t->rout, err);
        conc__task_free(t);
        t = n;
    }
    conc__future_defer_end();
}

/* The result ring is written by the worker process, and so by the tasks
 * it runs: a task that scribbles over memory can leave anything there.
 * Every record is checked against the ring before it is trusted, with
 * compares only (see conc__pool_res_check), and a record that fails makes
 * the worker corrupt: nothing more is read from that ring, and only the
 * item whose result was due fails (check_workers, worker_ended). */
int conc__pool_res_check(const unsigned char *ring, size_t cap, uint64_t pos,
                         uint64_t tail, conc__pool_res_view *v)
{
    /* The producer's tail is at most one ring ahead of our head: a tail
     * behind the head, or more than a ring ahead, was not written by
     * post(). */
    if (tail - pos > cap || cap < 64 || cap % 8 != 0 || pos % 8 != 0) {
        return -1;
    }
    if (pos == tail) {
        return 0;
    }
    size_t off = (size_t)(pos % cap);
    uint32_t len, type;
    memcpy(&len, ring + off, sizeof len);
    memcpy(&type, ring + off + 4, sizeof type);
    /* A record: 8-aligned, inside the ring without wrapping, and
     * published (before the tail). */
    if (len < 8 || len % 8 != 0 || len > cap - off || len > tail - pos) {
        return -2;
    }
    v->len = len;
    v->type = type;
    if (type == REC_PAD) {
        /* A pad fills the rest of the ring, no more, no less. */
        return len == cap - off ? 1 : -3;
    }
    if (type != REC_RESULT && type != REC_RETIRE && type != REC_INITFAIL) {
        return -4;
    }
    if (len < sizeof(struct res_rec)) {
        return -5;
    }
    struct res_rec r;
    memcpy(&r, ring + off, sizeof r);
    /* The output and the error text fill the record exactly, as post()
     * lays them out; each bound first, so no sum can wrap. */
    size_t room = len - sizeof(struct res_rec);
    if (r.outlen > room || r.errlen > room ||
        pad8((size_t)r.outlen) + pad8((size_t)r.errlen) != room) {
        return -6;
    }
    v->item = r.item;
    v->code = r.code;
    v->seq = r.seq;
    v->out = ring + off + sizeof(struct res_rec);
    v->outlen = (size_t)r.outlen;
    v->err = v->out + pad8((size_t)r.outlen);
    v->errlen = r.errlen;
    return 1;
}

static void mark_corrupt(struct proc_worker *w, const char *why, int rc)
{
    if (!w->corrupt) {
        w->corrupt = true;
        snprintf(w->corrupt_why, sizeof w->corrupt_why, "%s (check %d)", why,
                 rc);
    }
}

/* Reads every committed result of w; true if there was any.  Drive held. */
static bool drain(struct proc_worker *w)
{
    struct slot_ctl *c = w->ctl;
    if (w->corrupt) {
        return false;
    }
    /* Pairs with the seq_cst publication in post(). */
    uint64_t tail = atomic_load_explicit(&c->res_tail, memory_order_acquire);
    if (tail == w->rhead) {
        return false;
    }
    uint64_t pos = w->rhead;
    pthread_mutex_t *locked = NULL; /* a batch lock held over records */
    while (pos != tail) {
        conc__pool_res_view v;
        int rc = conc__pool_res_check(w->rring, w->cap, pos, tail, &v);
        if (rc <= 0) {
            mark_corrupt(w, "a result record that does not fit its ring", rc);
            break;
        }
        if (v.type == REC_RESULT) {
            conc__task *t = w->ifl_head;
            if (t == NULL || t->seq != v.seq || v.item != t->ndone ||
                v.item >= t->count) {
                /* Not the result the worker owed next. */
                mark_corrupt(w, "a result for a task it was not running",
                             0);
                break;
            }
            conc_msg m = { NULL, 0 };
            int code = v.code;
            if (t->batch == NULL) {
                /* The input is not needed once the result is back (it is
                 * only re-sent after a crash, before that), and rout takes
                 * its place.  Freed first: the output's allocation just
                 * below then reuses the chunk from this thread's cache
                 * instead of taking the malloc arena's lock against the
                 * submitting thread. */
                free(t->in);
                t->in = NULL;
                t->inlen = 0;
            }
            if (v.outlen > 0) {
                m.data = conc__malloc(v.outlen);
                if (m.data != NULL) {
                    memcpy(m.data, v.out, v.outlen);
                    m.len = v.outlen;
                } else {
                    code = CONC_ENOMEM;
                }
            }
            char *err = NULL;
            if (v.errlen > 0) {
                err = conc__malloc(v.errlen + 1);
                if (err != NULL) {
                    memcpy(err, v.err, v.errlen);
                    err[v.errlen] = '\0';
                }
            }
            if (t->batch != NULL) {
                if (locked != t->batch->mu) {
                    if (locked != NULL) {
                        pthread_mutex_unlock(locked);
                    }
                    locked = t->batch->mu;
                    pthread_mutex_lock(locked);
                }
                conc__batch_done_locked(t->batch, t->start + v.item, code,
                                        &m, err);
            } else {
                /* A submit: its future is completed (and its callbacks
                 * run) by drive_unlock, outside the drive lock. */
                t->rcode = code;
                t->rout = m;
                t->rerr = err;
            }
            t->ndone++;
            if (t->ndone == t->count) {
                if (locked != NULL) {
                    /* freeing t may drop the batch's last reference */
                    pthread_mutex_unlock(locked);
                    locked = NULL;
                }
                uint64_t now = conc__now_ns();
                uint64_t from = w->last_done_ns > t->seq_ns ? w->last_done_ns
                                                            : t->seq_ns;
                uint64_t dt = now - from;
                w->ewma_ns = w->measured ? (w->ewma_ns * 7 + dt) / 8 : dt;
                w->measured = true;
                w->last_done_ns = now;
                ifl_pop(w);
                if (t->batch == NULL) {
                    done_push(pp_of(w->pool), t);
                } else {
                    conc__task_free(t);
                }
            }
        } else if (v.type == REC_RETIRE) {
            w->retired = true;
            pthread_mutex_lock(&w->pool->lock);
            w->info_exiting = true;
            pthread_mutex_unlock(&w->pool->lock);
        } else if (v.type == REC_INITFAIL) {
            w->init_failed = true;
            w->init_code = v.code;
        }
        pos += v.len;
    }
    if (locked != NULL) {
        pthread_mutex_unlock(locked);
    }
    w->rhead = pos;
    /* Hands the room back; pairs with room_ready()'s load in post(). */
    atomic_store(&c->res_head, pos);
    bell_ring(&c->room_bell, &c->wants_room);
    return true;
}

static size_t window(const struct proc_worker *w)
{
    if (!w->measured) {
        return 2;
    }
    if (w->ewma_ns > 1000000) {
        return 2; /* one sent ahead (see "Dispatch") */
    }
    return w->ewma_ns > 50000 ? 8 : 512;
}

/* The bytes of t's task record. */
static size_t task_rec_len(const conc__task *t)
{
    size_t len = sizeof(struct task_rec);
    for (size_t k = 0; k < t->count; k++) {
        size_t n;
        conc__task_in(t, k, &n);
        len += 8 + pad8(n);
    }
    return len;
}

/* Whether a record of len bytes fits w's task ring now, with *pad, the
 * pad it needs before it at the ring's end; if not, w is full (see "Full
 * rings"). */
static bool ring_room(struct proc_worker *w, size_t len, size_t *pad)
{
    size_t off = (size_t)(w->ttail % w->cap);
    *pad = off + len > w->cap ? w->cap - off : 0;
    /* Pairs with the worker's release store of task_head. */
    uint64_t head =
        atomic_load_explicit(&w->ctl->task_head, memory_order_acquire);
    if (w->ttail + *pad + len - head <= w->cap) {
        return true;
    }
    w->full = true;
    w->full_head = head;
    /* seq_cst: before has_room's load of task_head. */
    atomic_store(&w->ctl->wants_task_room, 1);
    return false;
}

/* Writes t into w's task ring; false when there is no room now. */
static bool write_task(struct proc_worker *w, conc__task *t)
{
    size_t len = task_rec_len(t), pad;
    if (!ring_room(w, len, &pad)) {
        return false;
    }
    size_t off = (size_t)(w->ttail % w->cap);
    if (pad > 0) {
        struct task_rec *r = (struct task_rec *)(w->tring + off);
        r->len = (uint32_t)pad;
        r->type = REC_PAD;
        off = 0;
    }
    struct task_rec *r = (struct task_rec *)(w->tring + off);
    r->len = (uint32_t)len;
    r->type = REC_TASK;
    r->nitems = (uint32_t)t->count;
    /* Published by the store of task_tail below. */
    atomic_store_explicit(&r->state, TASK_SENT, memory_order_relaxed);
    r->seq = t->seq;
    r->fn = (uint64_t)(uintptr_t)t->fn;
    unsigned char *q = (unsigned char *)(r + 1);
    for (size_t k = 0; k < t->count; k++) {
        size_t n;
        const void *in = conc__task_in(t, k, &n);
        uint64_t n64 = n;
        memcpy(q, &n64, 8);
        q += 8;
        if (n > 0) {
            memcpy(q, in, n);
        }
        q += pad8(n);
    }
    t->pos = w->ttail + pad;
    w->ttail += pad + len;
    /* Publishes the record; pairs with task_ready()'s load in the worker.
     * seq_cst: the flag load in bell_ring must not move before it. */
    atomic_store(&w->ctl->task_tail, w->ttail);
    bell_ring(&w->ctl->task_bell, &w->ctl->worker_sleeping);
    return true;
}

/* w may be sent a task now: it runs and is sound, has room in its
 * window and below busy_max, items left in its life, and, if its ring
 * was full, has moved on since.  Drive held. */
static bool has_room(conc_pool *p, struct proc_worker *w, size_t busy_max)
{
    if (w->proc == NULL || w->retired || w->corrupt ||
        w->nifl >= window(w) || w->nifl >= busy_max ||
        (p->max_tasks > 0 && w->life_items >= p->max_tasks)) {
        return false;
    }
    if (w->full) {
        /* seq_cst: after the store of wants_task_room (write_task). */
        if (atomic_load(&w->ctl->task_head) == w->full_head) {
            return false;
        }
        w->full = false;
    }
    return true;
}

/* Sends t to w: a new seq, the record, w's in-flight list.  False when
 * w's ring has no room (w is then full).  Drive held. */
static bool send_to(struct proc_pool *pp, struct proc_worker *w,
                    conc__task *t)
{
    t->seq = ++pp->next_seq;
    t->seq_ns = conc__now_ns();
    t->ndone = 0;
    if (!write_task(w, t)) {
        return false;
    }
    t->next = NULL;
    if (w->ifl_tail != NULL) {
        w->ifl_tail->next = t;
    } else {
        w->ifl_head = t;
    }
    w->ifl_tail = t;
    w->nifl++;
    w->life_items += t->count;
    return true;
}

void (*conc__pool_test_run_taken)(conc_pool *p);

/* The most tasks send_queued takes off the queue under one hold of the
 * pool lock. */
enum { SEND_BATCH = 32 };

/* Sends queued tasks to workers with room, skipping workers with
 * busy_max tasks out or more; true if any was sent.  Tasks leave the
 * queue in runs, as many as the workers have room for (at most
 * SEND_BATCH), under one hold of the pool lock: a submitter pushes under
 * the same lock, and on a stream of tiny tasks one hold per task made
 * the two threads trade it, and sleep on it, for every task.  What is
 * not sent goes back to the front of the queue in order, before the
 * drive lock is let go.  Drive held. */
static bool send_queued(conc_pool *p, size_t busy_max)
{
    struct proc_pool *pp = pp_of(p);
    bool progress = false;
    conc__task *run = NULL; /* taken off the queue, not sent yet */
    size_t nrun = 0;
    unsigned epoch = 0; /* p->cancel_epoch when run was taken */
    for (;;) {
        struct proc_worker *best = NULL;
        size_t room = 0;
        for (size_t i = 0; i < p->nworkers; i++) {
            struct proc_worker *w = &pp->w[i];
            if (!has_room(p, w, busy_max)) {
                continue;
            }
            size_t most = window(w) < busy_max ? window(w) : busy_max;
            room += most - w->nifl;
            if (best == NULL || w->nifl < best->nifl) {
                best = w;
            }
        }
        if (best == NULL) {
            break;
        }
        if (run == NULL) {
            if (atomic_load(&p->npending) == 0) {
                break;
            }
            room = room < SEND_BATCH ? room : SEND_BATCH;
            conc__task *last = NULL;
            pthread_mutex_lock(&p->lock);
            epoch = atomic_load(&p->cancel_epoch);
            /* A terminating or broken pool sends nothing more: its queued
             * tasks are cancelled (or failed) by the manager, not
             * started. */
            if (p->state != CONC__POOL_TERM && p->broken == 0) {
                for (conc__task *t; nrun < room &&
                                    (t = conc__pool_pop_locked(p)) != NULL;
                     nrun++) {
                    if (last != NULL) {
                        last->next = t;
                    } else {
                        run = t;
                    }
                    last = t;
                }
            }
            pthread_mutex_unlock(&p->lock);
            if (run == NULL) {
                break;
            }
            if (conc__pool_test_run_taken != NULL) {
                conc__pool_test_run_taken(p);
            }
        }
        if (atomic_load(&p->cancel_epoch) != epoch) {
            break; /* shutdown cancelled the queue: see below */
        }
        conc__task *t = run;
        run = t->next;
        t->next = NULL;
        nrun--;
        size_t pad;
        if (!ring_room(best, task_rec_len(t), &pad)) {
            /* best is full now; the task waits, its future pending (it
             * counts as running once sent), for the next worker with
             * room. */
            t->next = run;
            run = t;
            nrun++;
            continue;
        }
        if (!conc__task_start(t)) {
            continue; /* cancelled while queued */
        }
        if (p->max_tasks > 0 && t->count > p->max_tasks - best->life_items) {
            /* Split: the worker takes what it has left in this life. */
            conc__task *rest =
                conc__task_split(t, p->max_tasks - best->life_items);
            if (rest == NULL) {
                t->next = run;
                run = t;
                nrun++;
                break;
            }
            rest->next = run;
            run = rest;
            nrun++;
        }
        if (!send_to(pp, best, t)) {
            t->next = run; /* checked above */
            run = t;
            nrun++;
            continue;
        }
        progress = true;
    }
    if (run != NULL) {
        conc__task *last = run;
        while (last->next != NULL) {
            last = last->next;
        }
        conc__task *cancel = NULL;
        pthread_mutex_lock(&p->lock);
        if (atomic_load(&p->cancel_epoch) == epoch) {
            conc__pool_requeue_front_locked(p, run, last, nrun);
        } else {
            /* shutdown(cancel_futures) took the queue while run was out
             * of it: run's tasks were queued then, and are cancelled as
             * the rest were (checked under the lock it took the queue
             * under, so each run either went back before and was taken,
             * or is cancelled here). */
            cancel = conc__pool_cancel_locked(p, run);
        }
        pthread_mutex_unlock(&p->lock);
        if (cancel != NULL) {
            /* Cancelled now, so none looks pending once the pool has
             * stopped (a shutdown that waits returns then); their
             * callbacks are deferred to drive_unlock (this thread's
             * batch), since none may run under the drive lock. */
            conc__future_defer_begin();
            conc__pool_cancel_list(cancel);
            pp->deferred++;
        }
    }
    return progress;
}

/* t's record, last in its worker w's ring but for records taken back,
 * may be taken back: not seen started (pos), and no record written
 * after it reaches round the ring onto its bytes - which happens once
 * its worker ran it and moved past it, while its result was not yet
 * drained.  A compare, so that the CAS in take_back always lands on
 * t's own state word. */
static bool may_take_back(const struct proc_worker *w, const conc__task *t)
{
    return t->pos != POS_STARTED && w->ttail - t->pos <= w->cap;
}

/* With the queue empty: when a worker idles while another has tasks
 * waiting behind the one it runs, takes the last half of them back,
 * except those their worker took first (see "Taking back"), and sends
 * them to the idle one (or, what that cannot take now, to the front of
 * the queue); true if it moved any.  Drive held. */
static bool take_back(conc_pool *p, size_t busy_max)
{
    struct proc_pool *pp = pp_of(p);
    struct proc_worker *idle = NULL;
    for (size_t i = 0; i < p->nworkers && idle == NULL; i++) {
        struct proc_worker *w = &pp->w[i];
        /* Not one still in its initializer, which may take long: the
         * task would wait for it rather than for the task ahead of it.
         * Relaxed: a snapshot, as for conc_pool_worker_info. */
        if (w->nifl == 0 && has_room(p, w, busy_max) &&
            atomic_load_explicit(&w->ctl->ready, memory_order_relaxed)) {
            idle = w;
        }
    }
    if (idle == NULL) {
        return false;
    }
    bool checked = false;
    for (;;) {
        struct proc_worker *from = NULL;
        for (size_t i = 0; i < p->nworkers; i++) {
            struct proc_worker *w = &pp->w[i];
            if (w->proc != NULL && !w->corrupt && w->nifl >= 2 &&
                may_take_back(w, w->ifl_tail) &&
                (from == NULL || w->nifl > from->nifl)) {
                from = w;
            }
        }
        if (from == NULL) {
            return false;
        }
        if (!checked) {
            pthread_mutex_lock(&p->lock);
            bool run = p->state != CONC__POOL_TERM && p->broken == 0;
            pthread_mutex_unlock(&p->lock);
            if (!run) {
                return false; /* the manager fails what is out */
            }
            checked = true;
        }
        /* Half of the tasks sent to from after the one it runs (steal
         * half: the two then share them), at least one, and no more than
         * idle may take now. */
        size_t want = (from->nifl - 1) / 2;
        size_t most = window(idle) < busy_max ? window(idle) : busy_max;
        want = want < 1 ? 1 : want > most ? most : want;
        want = want > TAKE_BACK_MAX ? TAKE_BACK_MAX : want;
        conc__task *cut = from->ifl_head; /* the one before them */
        for (size_t k = from->nifl - want - 1; k > 0; k--) {
            cut = cut->next;
        }
        conc__task *c[TAKE_BACK_MAX];
        size_t n = 0;
        for (conc__task *t = cut->next; t != NULL && n < TAKE_BACK_MAX;
             t = t->next) {
            c[n++] = t;
        }
        /* No more items than idle's life has left (one task anyway:
         * send_queued splits it), or the rest would go back to the queue
         * and maybe to from again. */
        size_t lo = 0;
        if (p->max_tasks > 0) {
            size_t left = p->max_tasks - idle->life_items, items = 0;
            for (lo = n; lo > 0 && items + c[lo - 1]->count <= left; lo--) {
                items += c[lo - 1]->count;
            }
            lo = lo == n ? n - 1 : lo;
        }
        /* From the last one back: the worker takes records in order, so
         * once its CAS has won one, it has started every one before. */
        size_t first = n;
        while (first > lo && may_take_back(from, c[first - 1])) {
            conc__task *t = c[first - 1];
            struct task_rec *r =
                (struct task_rec *)(from->tring + t->pos % from->cap);
            uint32_t sent = TASK_SENT;
            /* seq_cst: against the worker's CAS to TAKEN, one of the two
             * wins. */
            if (!atomic_compare_exchange_strong(&r->state, &sent,
                                                TASK_REVOKED)) {
                /* from has none to give until it is sent another */
                t->pos = POS_STARTED;
                break;
            }
            first--;
        }
        if (first == n) {
            continue; /* its last one had started: another worker */
        }
        conc__task *tail = first > 0 ? c[first - 1] : cut;
        tail->next = NULL;
        from->ifl_tail = tail;
        from->nifl -= n - first;
        for (size_t i = first; i < n; i++) {
            from->life_items -= c[i]->count;
        }
        /* Straight to the idle worker, the one they were taken back for,
         * in the order they were sent; to the front of the queue (their
         * futures still running) what that worker cannot take now. */
        for (size_t i = first; i < n; i++) {
            if ((p->max_tasks > 0 &&
                 c[i]->count > p->max_tasks - idle->life_items) ||
                !send_to(pp, idle, c[i])) {
                for (size_t j = i; j + 1 < n; j++) {
                    c[j]->next = c[j + 1];
                }
                c[n - 1]->next = NULL;
                /* send_queued splits one too long for idle's life */
                conc__pool_requeue_front(p, c[i], c[n - 1], n - i);
                break;
            }
        }
        return true;
    }
}

/* Sends queued tasks (send_queued), then moves tasks waiting behind a
 * running one to idle workers (take_back); true if any moved.  Drive
 * held (by the manager, a submitter or a helper). */
static bool dispatch(conc_pool *p, size_t busy_max)
{
    bool progress = send_queued(p, busy_max);
    while (atomic_load(&p->npending) == 0 && take_back(p, busy_max)) {
        progress = true;
    }
    if (atomic_load(&p->npending) > 0 && send_queued(p, busy_max)) {
        progress = true; /* what take_back could not send at once */
    }
    return progress;
}

/* A worker ended (or was killed by us, timed_out).  Settles its tasks
 * and forks a replacement unless the pool is stopping. */
static void worker_ended(conc_pool *p, struct proc_worker *w, bool timed_out,
                         bool respawn)
{
    drain(w);
    int code = 0;
    conc_process_exitcode(w->proc, &code);
    pid_t pid = conc_process_pid(w->proc);
    char msg[256];
    if (w->corrupt) {
        snprintf(msg, sizeof msg,
                 "worker %s (pid %d) wrote %s: the task wrote over the "
                 "pool's memory; the worker was killed",
                 conc_process_name(w->proc), (int)pid, w->corrupt_why);
    } else if (timed_out) {
        snprintf(msg, sizeof msg,
                 "the task ran past its timeout of %g s; worker %s (pid %d) "
                 "was killed",
                 p->task_timeout, conc_process_name(w->proc), (int)pid);
    } else if (code == EXIT_BAD_RING) {
        snprintf(msg, sizeof msg,
                 "worker %s (pid %d) found its task ring written over by a "
                 "task and exited",
                 conc_process_name(w->proc), (int)pid);
    } else if (code < 0) {
        snprintf(msg, sizeof msg,
                 "worker %s (pid %d) died: killed by signal %d",
                 conc_process_name(w->proc), (int)pid, -code);
    } else {
        snprintf(msg, sizeof msg,
                 "worker %s (pid %d) died: exited with code %d",
                 conc_process_name(w->proc), (int)pid, code);
    }
    /* Ordered after the worker's store by its death (waitpid). */
    bool ready = atomic_load_explicit(&w->ctl->ready, memory_order_relaxed);
    if (ready) {
        w->unready_deaths = 0;
    }
    if (w->init_failed) {
        char why[sizeof p->broken_why];
        snprintf(why, sizeof why,
                 "a worker's initializer failed with code %d", w->init_code);
        pthread_mutex_lock(&p->lock);
        conc__pool_break_locked(p, w->init_code ? w->init_code : 1, why);
        pthread_mutex_unlock(&p->lock);
    } else if (!ready && respawn &&
               ++w->unready_deaths >= UNREADY_DEATHS_MAX) {
        /* Died before its initializer returned (a crash, exit(), a
         * signal), its slot's last lives too: an initializer that fails
         * so would do it again in every replacement, a fork a
         * millisecond for ever with every task waiting.  The pool
         * breaks, as for one that returns non-zero.  (Not at the first
         * such death: a worker killed from outside while it starts is
         * only replaced, as a worker killed later is.) */
        char why[sizeof p->broken_why];
        snprintf(why, sizeof why, "%s, before its initializer returned",
                 msg);
        pthread_mutex_lock(&p->lock);
        conc__pool_break_locked(p, 1, why);
        pthread_mutex_unlock(&p->lock);
    } else if (!w->retired && w->ifl_head != NULL) {
        conc__task *t = w->ifl_head;
        /* Written by the worker before it died; its death (seen through
         * waitpid) orders these loads after its stores. */
        uint64_t seq = atomic_load(&w->ctl->cur_seq);
        uint64_t item = atomic_load(&w->ctl->cur_item);
        /* A corrupt ring: the bad record stood where the result of the
         * first unfinished item was due, so that item fails, even when
         * the scribbler wrote over cur_seq too (requeued, it would only
         * scribble again, for ever). */
        if ((seq == t->seq && item == t->ndone) || w->corrupt) {
            char *err = conc__strdup(msg);
            int fail = w->corrupt    ? CONC_ECORRUPT
                       : timed_out ? CONC_ETIMEDOUT
                                   : CONC_EWORKERDIED;
            if (t->batch == NULL) {
                /* completed by drive_unlock, like a drained result; rout
                 * replaces the input (see conc__task) */
                free(t->in);
                t->rcode = fail;
                t->rout = (conc_msg){ NULL, 0 };
                t->rerr = err;
            } else {
                conc__task_item_done(t, t->ndone, fail, NULL, err);
            }
            t->ndone++;
        }
    }
    /* Every unfinished item sent to the dead worker goes back, in order. */
    conc__task *first = NULL, *last = NULL;
    size_t n = 0;
    while (w->ifl_head != NULL) {
        conc__task *t = w->ifl_head;
        ifl_pop(w);
        if (t->ndone == t->count) {
            if (t->batch == NULL) {
                done_push(pp_of(p), t);
            } else {
                conc__task_free(t);
            }
            continue;
        }
        t->start += t->ndone;
        t->count -= t->ndone;
        t->ndone = 0;
        if (last != NULL) {
            last->next = t;
        } else {
            first = t;
        }
        last = t;
        n++;
    }
    conc__pool_requeue_front(p, first, last, n);
    conc_process_free(w->proc);
    w->proc = NULL;
    set_info(p, w, 0, "");
    reset_slot(w);
    if (respawn) {
        (void)spawn(p, w); /* a failure: check_workers tries again */
    }
}

/* Drive held, after the workers were checked: a pool that has had no
 * worker for STARVE_NS, every fork failing, breaks (the pass then fails
 * every task it holds with CONC_EBROKEN and the reason). */
static void starved(conc_pool *p, uint64_t now, bool respawn)
{
    struct proc_pool *pp = pp_of(p);
    bool any = false;
    for (size_t i = 0; i < p->nworkers && !any; i++) {
        any = pp->w[i].proc != NULL;
    }
    if (any || !respawn) {
        pp->starving_since_ns = 0;
        return;
    }
    if (pp->starving_since_ns == 0) {
        pp->starving_since_ns = now;
        return;
    }
    if (now - pp->starving_since_ns < STARVE_NS) {
        return;
    }
    char why[sizeof p->broken_why];
    snprintf(why, sizeof why, "no worker process could be started for "
             "%g s (%s)", (double)STARVE_NS / 1e9, pp->spawn_why);
    pthread_mutex_lock(&p->lock);
    conc__pool_break_locked(p, CONC_EBROKEN, why);
    pthread_mutex_unlock(&p->lock);
}

static void check_workers(conc_pool *p, uint64_t now, bool respawn)
{
    struct proc_pool *pp = pp_of(p);
    uint64_t limit = (uint64_t)(p->task_timeout * 1e9);
    for (size_t i = 0; i < p->nworkers; i++) {
        struct proc_worker *w = &pp->w[i];
        if (w->proc == NULL) {
            if (respawn) {
                (void)spawn(p, w); /* a failure: tried again next time */
            }
            continue;
        }
        /* The worker ran or stepped over every record sent to it, and
         * posted their results first (the acquire pairs with its release
         * store of task_head), yet owes a result after the drain: a task
         * wrote over a record behind its own (its type, state or count
         * of items), and the worker stepped past a task it never ran.
         * Its result would never come. */
        uint64_t head =
            atomic_load_explicit(&w->ctl->task_head, memory_order_acquire);
        if (w->ttail - head > w->cap) {
            /* Never stored by the worker, which stays within one ring
             * behind the tail. */
            mark_corrupt(w, "a task ring position outside its ring", 0);
        } else if (w->nifl > 0 && head == w->ttail) {
            drain(w);
            if (w->nifl > 0) {
                mark_corrupt(w, "no result for a task it went past", 0);
            }
        }
        if (w->corrupt) {
            /* Its ring cannot be trusted: the worker goes, dead or not. */
            conc_process_kill(w->proc);
            conc_process_join(w->proc, 10.0);
            worker_ended(p, w, false, respawn);
            continue;
        }
        if (!conc_process_is_alive(w->proc)) {
            worker_ended(p, w, false, respawn);
            continue;
        }
        if (limit == 0) {
            continue;
        }
        /* Loads in the reverse order of the worker's stores (see
         * worker_main): pairs with its release stores of seq and item. */
        uint64_t seq = atomic_load(&w->ctl->cur_seq);
        (void)atomic_load(&w->ctl->cur_item);
        uint64_t start =
            atomic_load_explicit(&w->ctl->cur_start_ns, memory_order_relaxed);
        if (seq == 0 || now < start || now - start < limit) {
            continue;
        }
        conc_process_kill(w->proc);
        conc_process_join(w->proc, 10.0);
        worker_ended(p, w, true, respawn);
    }
    starved(p, now, respawn);
}

/* At most one task out per worker; drive held. */
static bool few_out(conc_pool *p)
{
    for (size_t i = 0; i < p->nworkers; i++) {
        if (pp_of(p)->w[i].nifl > 1) {
            return false;
        }
    }
    return true;
}

static bool all_idle(conc_pool *p)
{
    for (size_t i = 0; i < p->nworkers; i++) {
        if (pp_of(p)->w[i].nifl > 0) {
            return false;
        }
    }
    return true;
}

static bool manager_ready(void *arg)
{
    conc_pool *p = arg;
    struct proc_pool *pp = pp_of(p);
    bool room = false;
    /* The drive lock: helpers change nifl, rhead and retired meanwhile. */
    pthread_mutex_lock(&pp->drive);
    for (size_t i = 0; i < p->nworkers; i++) {
        struct proc_worker *w = &pp->w[i];
        if (w->proc == NULL) {
            continue;
        }
        if (atomic_load(&w->ctl->res_tail) != w->rhead) {
            pthread_mutex_unlock(&pp->drive);
            return true;
        }
        if (has_room(p, w, SIZE_MAX)) {
            room = true;
        }
    }
    /* About to sleep for the idle period, but a submitter sent a task
     * meanwhile: wake up to watch it at the shorter period. */
    bool sent = atomic_load(&pp->hdr->long_sleep) != 0 && !all_idle(p);
    pthread_mutex_unlock(&pp->drive);
    if (sent || (room && atomic_load(&p->npending) > 0)) {
        return true;
    }
    pthread_mutex_lock(&p->lock);
    bool changed = p->state != CONC__POOL_RUN || p->broken != 0;
    pthread_mutex_unlock(&p->lock);
    if (!changed) {
        return false;
    }
    pthread_mutex_lock(&pp->drive);
    bool idle = all_idle(p);
    pthread_mutex_unlock(&pp->drive);
    return p->state == CONC__POOL_TERM || p->broken != 0 ||
           (atomic_load(&p->npending) == 0 && idle);
}

/* Stops every worker: kill (terminate, broken) or ask (close). */
/* Kills the workers of slots from .. nworkers. */
static void kill_workers(conc_pool *p, size_t from)
{
    struct proc_pool *pp = pp_of(p);
    for (size_t i = from; i < p->nworkers; i++) {
        if (pp->w[i].proc != NULL) {
            conc_process_kill(pp->w[i].proc);
        }
    }
}

static void stop_all(conc_pool *p, bool kill)
{
    struct proc_pool *pp = pp_of(p);
    if (kill) {
        kill_workers(p, 0);
    } else {
        for (size_t i = 0; i < p->nworkers; i++) {
            struct proc_worker *w = &pp->w[i];
            if (w->proc != NULL) {
                atomic_store(&w->ctl->stop, 1);
                bell_ring(&w->ctl->task_bell, &w->ctl->worker_sleeping);
            }
        }
    }
    /* One deadline for all the workers, not one each (a pool of n
     * workers stuck in their finalizers held close n times 30 s); and a
     * graceful stop waits in slices, so that a terminate meanwhile kills
     * the workers left at once instead of waiting them out. */
    conc__deadline dl;
    conc__deadline_init(&dl, kill ? 10.0 : STOP_GRACE_S);
    for (size_t i = 0; i < p->nworkers; i++) {
        struct proc_worker *w = &pp->w[i];
        if (w->proc == NULL) {
            continue;
        }
        while (conc_process_join(w->proc, kill ? conc__deadline_left(&dl)
                                               : STOP_SLICE_S) ==
               CONC_ETIMEDOUT) {
            if (!kill) {
                pthread_mutex_lock(&p->lock);
                kill = p->state == CONC__POOL_TERM;
                pthread_mutex_unlock(&p->lock);
                if (kill) {
                    kill_workers(p, i);
                    conc__deadline_init(&dl, 10.0);
                    continue;
                }
            }
            if (conc__deadline_passed(&dl)) {
                conc_process_kill(w->proc);
                conc_process_join(w->proc, 10.0);
                break;
            }
        }
        drain(w);
    }
}

/* Takes every task still out (drive held) into a list for
 * conc__task_fail_list() after the drive lock is released, and frees the
 * worker handles. */
static conc__task *take_inflight(conc_pool *p)
{
    struct proc_pool *pp = pp_of(p);
    conc__task *first = NULL, *last = NULL;
    for (size_t i = 0; i < p->nworkers; i++) {
        struct proc_worker *w = &pp->w[i];
        while (w->ifl_head != NULL) {
            conc__task *t = w->ifl_head;
            ifl_pop(w);
            if (last != NULL) {
                last->next = t;
            } else {
                first = t;
            }
            last = t;
        }
        if (w->proc != NULL) {
            conc_process_free(w->proc);
            w->proc = NULL;
            set_info(p, w, 0, "");
        }
    }
    return first;
}

/* What a manager round found. */
enum { PASS_SKIPPED, PASS_DONE, PASS_END };

/* One round of the manager's work on the rings: drain, reap retired
 * workers, (check) look for dead and timed-out workers, stop everything
 * on terminate or a broken pool, dispatch.  Takes the drive lock - waiting
 * for it when check, else only if free (PASS_SKIPPED: a helper or a
 * submitter holding it is doing this round's work).  PASS_END once the
 * pool has stopped: the manager ends.  Run by the manager thread only:
 * from manager_main, or from a done-callback it runs that waits for
 * another future of the pool (conc__proc_manager_help). */
static int manager_pass(conc_pool *p, bool check, bool *progress,
                        bool *idle_now, bool *few)
{
    struct proc_pool *pp = pp_of(p);
    bool have = check ? pthread_mutex_lock(&pp->drive) == 0
                      : pthread_mutex_trylock(&pp->drive) == 0;
    if (!have) {
        return PASS_SKIPPED;
    }
    if (pp->stopped) {
        /* A pass run from a callback stopped the pool already. */
        drive_unlock(p);
        return PASS_END;
    }
    bool exiting = false; /* a retired worker has not exited yet */
    for (size_t i = 0; i < p->nworkers; i++) {
        struct proc_worker *w = &pp->w[i];
        if (w->proc == NULL) {
            continue;
        }
        if (drain(w)) {
            *progress = true;
        }
        if (w->retired) {
            /* It posted RETIRE (drained here or by a helper) and is
             * exiting, its finalizer perhaps still running: reap and
             * replace it once it has exited.  Never wait for that here:
             * every caller of the pool would wait on the drive lock. */
            if (conc_process_is_alive(w->proc)) {
                exiting = true;
                continue;
            }
            pthread_mutex_lock(&p->lock);
            bool again = p->state != CONC__POOL_TERM && p->broken == 0;
            pthread_mutex_unlock(&p->lock);
            worker_ended(p, w, false, again);
            *progress = true;
        }
    }
    pthread_mutex_lock(&p->lock);
    int state = p->state;
    int broken = p->broken;
    pthread_mutex_unlock(&p->lock);
    if (check) {
        check_workers(p, conc__now_ns(),
                      state != CONC__POOL_TERM && broken == 0);
        pthread_mutex_lock(&p->lock);
        broken = p->broken;
        pthread_mutex_unlock(&p->lock);
    }
    if (state == CONC__POOL_TERM || broken != 0) {
        stop_all(p, true);
        char why[sizeof p->broken_why];
        pthread_mutex_lock(&p->lock);
        conc__task *queued = conc__pool_take_all_locked(p);
        snprintf(why, sizeof why, "%s", p->broken_why);
        pthread_mutex_unlock(&p->lock);
        conc__task *out = take_inflight(p);
        pp->stopped = true;
        /* One batch with the results drained this round: a callback that
         * waits for any of these futures finds it final, whatever the
         * order they are completed in (a pass it runs would find the pool
         * stopped and these lists out of reach). */
        conc__future_defer_begin();
        drive_unlock(p);
        if (broken != 0) {
            conc__task_fail_list(out, CONC__FUT_DONE, CONC_EBROKEN, why);
            conc__task_fail_list(queued, CONC__FUT_DONE, CONC_EBROKEN, why);
        } else {
            conc__task_fail_list(out, CONC__FUT_DONE, CONC_ECANCELLED,
                      "the pool was terminated while the task ran");
            /* A queued task whose future runs already (it was sent to a
             * worker that died, or taken back from one) is done, not
             * cancelled: conc_future_cancel() has said false for it. */
            conc__task_fail_list(conc__task_take_started(&queued),
                      CONC__FUT_DONE, CONC_ECANCELLED,
                      "the pool was terminated while the task waited to be "
                      "sent to a worker again");
            conc__task_fail_list(queued, CONC__FUT_CANCELLED, CONC_ECANCELLED,
                      "the pool was terminated before the task started");
        }
        conc__future_defer_end();
        return PASS_END;
    }
    if (dispatch(p, SIZE_MAX)) {
        *progress = true;
    }
    /* Not idle while a retired worker exits: the manager watches for its
     * end at the short period, to replace it soon. */
    *idle_now = all_idle(p) && !exiting;
    *few = atomic_load(&p->npending) == 0 && few_out(p);
    /* all_idle, not idle_now: a retired worker still exiting is joined
     * (or killed) by stop_all like the others, not polled for ever. */
    if (state == CONC__POOL_CLOSED && atomic_load(&p->npending) == 0 &&
        all_idle(p)) {
        stop_all(p, false);
        conc__task *out = take_inflight(p);
        pp->stopped = true;
        conc__future_defer_begin(); /* one batch, as above */
        drive_unlock(p);
        conc__task_fail_list(out, CONC__FUT_DONE, CONC_EWORKERDIED,
                             "the worker ended");
        conc__future_defer_end();
        return PASS_END;
    }
    drive_unlock(p);
    return PASS_DONE;
}

static void *manager_main(void *arg)
{
    conc_pool *p = arg;
    struct proc_pool *pp = pp_of(p);
    conc__os_set_name("pool-manager");
    uint64_t last_check = 0, spin_until = 0;
    int idle = 0;
    /* At most one task per worker out and none queued, as the last round
     * that held the drive lock saw it. */
    bool few = true;
    for (;;) {
        bool progress = false, idle_now = false;
        uint64_t now = conc__now_ns();
        bool check = now - last_check > 1000000;
        int pass = manager_pass(p, check, &progress, &idle_now, &few);
        if (pass == PASS_END) {
            break;
        }
        bool have = pass == PASS_DONE;
        if (check && have) {
            last_check = now;
        }
        /* Even after progress: a manager that keeps winning the race for
         * the results would keep three parties spinning on the CPUs. */
        if (few && atomic_load(&pp->hdr->helpers) > 0) {
            /* A caller waiting for a result is collecting results and
             * sending tasks itself, and only a few are out: stay off the
             * CPUs, without being woken by every posted result
             * (hdr->sleeping stays 0).  With many out (a stream of
             * submits), the manager keeps collecting beside the helpers.
             * The helper that leaves last wakes us when work is still out
             * (conc__proc_helpers); the 2 ms limit keeps the crash and
             * timeout checks going meanwhile. */
            idle = 0;
            uint32_t b = atomic_load(&pp->hdr->bell);
            atomic_store(&pp->hdr->quiet, 1);
            conc__deadline dl;
            conc__deadline_init(&dl, 0.002);
            /* seq_cst store of quiet, then load of helpers: pairs with the
             * leaving helper's decrement, then load of quiet. */
            if (atomic_load(&pp->hdr->helpers) > 0) {
                conc__os_futex_wait(&pp->hdr->bell, b, &dl, true);
            }
            atomic_store(&pp->hdr->quiet, 0);
            if (conc__deadline_passed(&dl)) {
                last_check = 0;
            }
            continue;
        }
        if (progress) {
            idle = 0;
            continue;
        }
        if (idle == 0) {
            spin_until = conc__now_ns() + CONC__SPIN_NS;
        }
        if ((++idle & 15) != 0 || conc__now_ns() < spin_until) {
            conc__spin_pause((unsigned)idle);
            continue;
        }
        idle = 0;
        conc__deadline dl;
        conc__deadline_init(&dl, idle_now && have ? 0.1 : 0.002);
        /* Before the re-check in manager_ready: a submitter that sends a
         * task itself reads it after its dispatch (conc__proc_submitted). */
        atomic_store(&pp->hdr->long_sleep, idle_now && have ? 1 : 0);
        sleep_on(&pp->hdr->bell, &pp->hdr->sleeping, manager_ready, p, &dl);
        atomic_store(&pp->hdr->long_sleep, 0);
        if (conc__deadline_passed(&dl)) {
            /* A timed wake-up (to watch the workers): check them now, and
             * go back to sleep without spinning if nothing happened, so a
             * long CPU-bound map loses no CPU to the manager. */
            last_check = 0;
            idle = 1;
            spin_until = 0;
        }
    }
    pthread_mutex_lock(&p->lock);
    pp->manager_done = true;
    pthread_cond_broadcast(&pp->done_cv);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* The detail of a worker process that could not be started (err from
 * conc_process_new/start), for conc_pool_new. */
static void spawn_failed(int err, size_t i, size_t n)
{
    switch (err) {
    case CONC_EDAEMON:
        conc__fail(err, "conc_pool_new: a CONC_PROCESSES pool cannot start "
                   "inside a daemon process (a process pool's worker is "
                   "one); a CONC_THREADS pool can");
        break;
    case CONC_ESYS:
        conc__fail_sys(err, "conc_pool_new: fork of worker process %zu of "
                       "%zu", i + 1, n);
        break;
    default:
        conc__fail(err, "conc_pool_new: starting worker process %zu of %zu: "
                   "%s", i + 1, n, conc_strerror(err));
        break;
    }
}

/* ---- the backend's table ------------------------------------------------- */

static int procs_start(conc_pool *p)
{
    struct proc_pool *pp = pp_of(p);
    conc__cond_init_mono(&pp->done_cv);
    p->msg_limit = p->max_msg;
    pp->cap = (2 * p->max_msg + 4096 + 4095) & ~(size_t)4095;
    size_t slot = 4096 + 2 * pp->cap;
    pp->memsize = 4096 + p->nworkers * slot;
    pp->w = conc__calloc(p->nworkers, sizeof *pp->w);
    if (pp->w == NULL) {
        return conc__fail(CONC_ENOMEM, "conc_pool_new: no memory for %zu "
                          "worker slots", p->nworkers);
    }
    void *mem = conc__os_shared_alloc(pp->memsize);
    if (mem == NULL) {
        return conc__fail_sys(CONC_ENOMEM, "conc_pool_new: mmap of %zu "
                              "bytes for the workers' rings (%zu workers, "
                              "max_message_bytes %zu)",
                              pp->memsize, p->nworkers, p->max_msg);
    }
    int rc = pthread_mutex_init(&pp->drive, NULL);
    if (rc != 0) {
        conc__os_shared_free(mem, pp->memsize);
        errno = rc;
        return conc__fail_sys(CONC_ESYS, "conc_pool_new: "
                              "pthread_mutex_init");
    }
    pp->mem = mem;
    pp->hdr = pp->mem;
    int err = 0;
    for (size_t i = 0; i < p->nworkers; i++) {
        struct proc_worker *w = &pp->w[i];
        unsigned char *base = (unsigned char *)pp->mem + 4096 + i * slot;
        w->pool = p;
        w->ctl = (struct slot_ctl *)base;
        w->tring = base + 4096;
        w->rring = base + 4096 + pp->cap;
        w->cap = pp->cap;
    }
    /* No other thread runs yet; the lock only keeps the rule "rings under
     * drive" true everywhere. */
    pthread_mutex_lock(&pp->drive);
    for (size_t i = 0; i < p->nworkers && err == 0; i++) {
        err = spawn(p, &pp->w[i]);
        if (err != 0) {
            spawn_failed(err, i, p->nworkers);
        }
    }
    if (err != 0) {
        stop_all(p, true);
        (void)take_inflight(p); /* no task was sent yet: an empty list */
    }
    pthread_mutex_unlock(&pp->drive);
    if (err == 0 &&
        (rc = pthread_create(&pp->manager, NULL, manager_main, p)) != 0) {
        errno = rc;
        err = conc__fail_sys(CONC_ESYS, "conc_pool_new: pthread_create for "
                             "the manager thread");
        pthread_mutex_lock(&pp->drive);
        stop_all(p, true);
        (void)take_inflight(p);
        pthread_mutex_unlock(&pp->drive);
    }
    if (err != 0) {
        pthread_mutex_destroy(&pp->drive);
        conc__os_shared_free(pp->mem, pp->memsize);
        pp->mem = NULL;
        return err;
    }
    pp->has_manager = true;
    return 0;
}

/* Wakes the manager from either sleep: the normal one (hdr->sleeping) or
 * the quiet one it takes while helpers work (pp->hdr->quiet). */
static void wake_manager(struct proc_pool *pp)
{
    atomic_fetch_add(&pp->hdr->bell, 1);
    /* Wakes the futex wait on hdr->bell in manager_main / sleep_on. */
    conc__os_futex_wake(&pp->hdr->bell, INT32_MAX, true);
}

/* New work or a new state (close, terminate, shutdown's cancel): wakes a
 * sleeping manager. */
static void procs_kick(conc_pool *p)
{
    struct proc_pool *pp = pp_of(p);
    /* After the caller's seq_cst change (npending, state): see "Sleeping
     * and waking". */
    if (atomic_load(&pp->hdr->sleeping) != 0 ||
        atomic_load(&pp->hdr->quiet) != 0) {
        wake_manager(pp);
    }
}

/* A task was queued by submit or map: sends it to an idle worker from
 * this thread when the manager sleeps and the drive lock is free, else
 * wakes the manager. */
static void procs_queued(conc_pool *p)
{
    struct proc_pool *pp = pp_of(p);
    /* Send it from here only while the manager sleeps: an awake one sends
     * it as soon, and a stream of submits then costs no lock traffic. */
    bool asleep = atomic_load(&pp->hdr->quiet) != 0 ||
                  atomic_load(&pp->hdr->sleeping) != 0;
    if (asleep && pthread_mutex_trylock(&pp->drive) == 0) {
        if (!pp->stopped) {
            /* Only to an idle worker: a lone task skips the manager, a
             * stream of submits is left to the manager's batches. */
            dispatch(p, 1);
        }
        drive_unlock(p);
        if (atomic_load(&p->npending) == 0) {
            /* Sent (or taken by another thread): the manager needs waking
             * only when nobody would collect the result soon, or when it
             * sleeps for the long idle period and must watch the task for
             * a crash or a timeout.  seq_cst loads after the unlock: pairs
             * with the manager's stores of quiet / long_sleep and the
             * leaving helper's decrement (see "Helpers"). */
            if ((atomic_load(&pp->hdr->quiet) != 0 &&
                 atomic_load(&pp->hdr->helpers) == 0) ||
                atomic_load(&pp->hdr->long_sleep) != 0) {
                wake_manager(pp);
            }
            return;
        }
    }
    procs_kick(p);
}

/* True when some task is queued or out, or a result is uncollected. */
static bool outstanding(conc_pool *p)
{
    struct proc_pool *pp = pp_of(p);
    if (pp->stopped) {
        return false;
    }
    if (atomic_load(&p->npending) > 0) {
        return true;
    }
    for (size_t i = 0; i < p->nworkers; i++) {
        struct proc_worker *w = &pp->w[i];
        if (w->nifl > 0 ||
            (w->proc != NULL && atomic_load(&w->ctl->res_tail) != w->rhead)) {
            return true;
        }
    }
    return false;
}

/* The waiter hook of a process future (see "Helpers"); ctx is the pool. */

/* A waiter enters (delta 1) or leaves (-1) the helpers. */
/* Each hook below does nothing in a forked child (pool.h, "Fork"): the
 * rings and counters it would touch are the parent's pool's, shared. */
static void waiter_spin(void *ctx, int delta)
{
    conc_pool *p = ctx;
    struct proc_pool *pp = pp_of(p);
    if (conc__pool_is_foreign(p)) {
        return;
    }
    if (delta > 0) {
        atomic_fetch_add(&pp->hdr->helpers, 1);
        return;
    }
    /* seq_cst decrement, then load of quiet: either the manager sees no
     * helper before its quiet sleep, or we see it sleeping quietly. */
    if (atomic_fetch_sub(&pp->hdr->helpers, 1) != 1 ||
        (atomic_load(&pp->hdr->quiet) == 0 &&
         atomic_load(&pp->hdr->long_sleep) == 0)) {
        return;
    }
    /* The last helper leaves while the manager sleeps without watching the
     * rings: wake it if work is left.  A failed trylock means someone else
     * drives now; wake the manager anyway rather than wait here. */
    bool wake = true;
    if (pthread_mutex_trylock(&pp->drive) == 0) {
        wake = outstanding(p);
        pthread_mutex_unlock(&pp->drive);
    }
    if (wake) {
        wake_manager(pp);
    }
}

/* True in the pool's manager thread (a callback it runs). */
static bool waiter_drives(void *ctx)
{
    conc_pool *p = ctx;
    struct proc_pool *pp = pp_of(p);
    if (conc__pool_is_foreign(p)) {
        return false;
    }
    pthread_mutex_lock(&p->lock); /* has_manager changes under it */
    bool self = pp->has_manager && pthread_equal(pthread_self(), pp->manager);
    pthread_mutex_unlock(&p->lock);
    return self;
}

/* For a callback run by the manager that waits for a future of its pool:
 * one whole round of the manager's work, the checks for dead and
 * timed-out workers and a pending terminate included, which the manager
 * cannot do while it sits in the callback. */
static void waiter_drive(void *ctx)
{
    if (conc__pool_is_foreign(ctx)) {
        return;
    }
    bool progress = false, idle_now = false, few = false;
    (void)manager_pass(ctx, true, &progress, &idle_now, &few);
}

/* One round of help: collect every finished result, dispatch. */
static void waiter_help(void *ctx)
{
    conc_pool *p = ctx;
    struct proc_pool *pp = pp_of(p);
    /* Never waits: whoever holds the lock is doing this work already. */
    if (conc__pool_is_foreign(p) || pthread_mutex_trylock(&pp->drive) != 0) {
        return;
    }
    if (!pp->stopped) {
        for (size_t i = 0; i < p->nworkers; i++) {
            struct proc_worker *w = &pp->w[i];
            if (w->proc != NULL) {
                drain(w);
            }
        }
        dispatch(p, SIZE_MAX);
    }
    drive_unlock(p);
}

static const conc__future_waiter procs_waiter = {
    .help = waiter_help,
    .spin = waiter_spin,
    .drives = waiter_drives,
    .drive = waiter_drive,
    .foreign = conc__pool_waiter_foreign,
    .release = conc__pool_waiter_release,
};

static int procs_join(conc_pool *p, const conc__deadline *dl)
{
    struct proc_pool *pp = pp_of(p);
    pthread_mutex_lock(&p->lock);
    while (!pp->manager_done) {
        if (dl->once || conc__deadline_passed(dl)) {
            pthread_mutex_unlock(&p->lock);
            return conc__fail_lit(CONC_ETIMEDOUT, "conc_pool_join: the "
                                  "workers did not finish in time");
        }
        if (dl->forever) {
            pthread_cond_wait(&pp->done_cv, &p->lock);
        } else {
            pthread_cond_timedwait(&pp->done_cv, &p->lock, &dl->at);
        }
    }
    bool join = pp->has_manager &&
                !pthread_equal(pthread_self(), pp->manager);
    if (join) {
        pp->has_manager = false;
    }
    pthread_mutex_unlock(&p->lock);
    if (join) {
        pthread_join(pp->manager, NULL);
    }
    return 0;
}

/* Kills the workers and fails every task (the manager does, on its next
 * round), then waits for the manager - unless this is the manager, in a
 * callback: its round ends the pool when the callback returns. */
static void procs_terminate(conc_pool *p)
{
    struct proc_pool *pp = pp_of(p);
    pthread_mutex_lock(&p->lock);
    p->state = CONC__POOL_TERM;
    bool self = pp->has_manager && pthread_equal(pthread_self(), pp->manager);
    pthread_mutex_unlock(&p->lock);
    procs_kick(p);
    if (!self) {
        conc__deadline dl;
        conc__deadline_init(&dl, CONC_FOREVER);
        procs_join(p, &dl);
    }
}

/* conc_pool_free: waits for the manager to end. */
static void procs_stop(conc_pool *p)
{
    if (pp_of(p)->mem == NULL) {
        return;
    }
    conc__deadline dl;
    conc__deadline_init(&dl, CONC_FOREVER);
    procs_join(p, &dl);
}

/* The task a busy worker runs, for conc_pool_worker_info: the one of its
 * in-flight list the worker's cur_seq names, when the caller holds the
 * drive (driving; the time needs no list).  Loads seq, then item and
 * start (acquire), against the worker's stores of start, item, then seq
 * (release): the item and start belong to that task or a later one (then
 * the task is not found, and task_item stays SIZE_MAX). */
static void current_task(struct proc_worker *w, conc_worker_info *info,
                         uint64_t now, bool driving)
{
    struct slot_ctl *c = w->ctl;
    uint64_t seq = atomic_load(&c->cur_seq);
    uint64_t item = atomic_load(&c->cur_item);
    uint64_t start =
        atomic_load_explicit(&c->task_start_ns, memory_order_relaxed);
    for (conc__task *t = driving ? w->ifl_head : NULL; t != NULL;
         t = t->next) {
        if (t->seq == seq) {
            if (item < t->count) {
                info->task_item = conc__task_item_index(t, (size_t)item);
            }
            break;
        }
    }
    info->task_seconds = now > start ? (double)(now - start) / 1e9 : 0;
}

static void procs_workers(conc_pool *p, conc_worker_info *out, size_t cap)
{
    struct proc_pool *pp = pp_of(p);
    /* drive: the in-flight lists name the task a busy worker runs (the
     * lock order is drive, then p->lock, as in spawn).  Held for long only
     * by a close that waits for its workers' finalizers: after 20 ms the
     * rest is shown without the items. */
    conc__deadline dl;
    conc__deadline_init(&dl, 0.02);
    bool driving = conc__mutex_lock_until(&pp->drive, &dl) == 0;
    uint64_t now = conc__now_ns();
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < cap; i++) {
        struct proc_worker *w = &pp->w[i];
        if (w->info_pid == 0) {
            continue; /* CONC_WORKER_NONE, zeroed */
        }
        /* Relaxed loads: a snapshot of words the worker keeps for us. */
        struct slot_ctl *c = w->ctl;
        bool ready = atomic_load_explicit(&c->ready, memory_order_relaxed);
        bool busy = atomic_load_explicit(&c->cur_seq, memory_order_relaxed);
        out[i].pid = w->info_pid;
        out[i].tid = w->info_pid;
        out[i].state = w->info_exiting ? CONC_WORKER_EXITING
                       : !ready        ? CONC_WORKER_STARTING
                       : busy          ? CONC_WORKER_BUSY
                                       : CONC_WORKER_IDLE;
        out[i].tasks_done = (size_t)atomic_load_explicit(
            &c->items_done, memory_order_relaxed);
        snprintf(out[i].name, sizeof out[i].name, "%s", w->info_name);
        if (out[i].state == CONC_WORKER_BUSY) {
            current_task(w, &out[i], now, driving);
        }
    }
    pthread_mutex_unlock(&p->lock);
    if (driving) {
        pthread_mutex_unlock(&pp->drive);
    }
}

static void procs_destroy(conc_pool *p)
{
    struct proc_pool *pp = pp_of(p);
    pthread_cond_destroy(&pp->done_cv);
    free(pp->w);
    if (pp->mem == NULL) {
        return;
    }
    /* The user's conc_pool_free joined the manager before its reference
     * went, so no thread drives any more. */
    pthread_mutex_destroy(&pp->drive);
    conc__os_shared_free(pp->mem, pp->memsize);
}

const conc__pool_backend conc__pool_processes = {
    .size = sizeof(struct proc_pool),
    .name_prefix = "PoolWorker",
    .start = procs_start,
    .queued = procs_queued,
    .kick = procs_kick,
    .join = procs_join,
    .terminate = procs_terminate,
    .stop = procs_stop,
    .workers = procs_workers,
    .destroy = procs_destroy,
    .waiter = &procs_waiter,
};
