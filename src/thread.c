/* thread.c - threads: Python's threading.Thread on POSIX threads.
 *
 * Design
 * ------
 * A conc_thread handle owns one thread_rec once started.  The record is
 * shared by the handle and the running thread and counted (refs: one for
 * the handle, one for the thread, one per pin by the exit joiner); the
 * last to let go frees it, so a handle freed while its thread runs
 * (detached, as the contract says) leaves a record the thread can still
 * finish into, and a non-daemon detached thread can still be waited for
 * at exit.
 *
 * Every record of this process is on one list guarded by treg_lock (a
 * process-private pthread mutex); refs, joined, detached, join_ok, th and
 * the list links are guarded by it.  done, started and tid are atomics.
 *
 * join(timeout) waits on the record's private futex word `done`, with one
 * absolute CLOCK_MONOTONIC deadline (conc__os_futex_wait), not
 * pthread_timedjoin_np, whose timeout is on the realtime clock: a clock
 * step would stretch or cut the wait.  A signal only makes the futex wait
 * return early; the loop rechecks `done` and waits again for what is left.
 * The thread stores its result, then `done` with release order, then wakes
 * every sleeper: a joiner that loaded 0 and went to sleep on 0 is either
 * woken or finds the word already 1 (FUTEX_WAIT compares atomically), so
 * no wake-up is lost.  Once `done` is seen, exactly one caller (claimed
 * under the lock: join, free, or the exit joiner) calls pthread_join to
 * release the thread's resources; that join is short, the thread has only
 * its epilogue left.  The epilogue runs as a pthread cleanup handler, so
 * a target that calls pthread_exit() still sets `done` (result NULL).
 *
 * start() waits until the new thread has stored its kernel tid and set its
 * kernel name (Python's start() waits for the `started` event), so ident
 * is valid as soon as start returns and the handle's name may be freed.
 *
 * Exit: non-daemon threads that were started and have not finished are
 * joined by join_all, the threads stage of exit.c's handler, which runs
 * before daemon children are terminated - Python's order.  The exit
 * joiner pins each record while it waits.  Daemon threads are not waited
 * for.
 *
 * Fork: the list lock is taken in a pthread_atfork prepare handler and
 * released in the parent and child handlers.  In the child only the
 * forking thread exists: every other record is marked done and
 * "forked away" (join returns 0 at once, result NULL: Python marks them
 * stopped too), and is never pthread_join()ed there.  The forking thread's
 * own record stays alive in the child, with its new tid.
 */
#include "conc_int.h"
#include "process_int.h"

static void join_all(void);

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { T_NEW, T_STARTING, T_STARTED };

typedef struct thread_rec {
    struct thread_rec *next, *prev; /* on treg while listed */
    pthread_t th;
    conc_thread_fn target;
    void *arg;
    const char *name;       /* the handle's; read only before `started` */
    void *result;           /* written before the release store of done */
    _Atomic uint32_t started;
    _Atomic uint32_t done;
    _Atomic pid_t tid;
    unsigned refs;
    bool daemon;
    bool listed;
    bool joined;            /* pthread_join claimed (or must never run) */
    bool detached;
    bool join_ok;           /* a join returned 0: the result is readable */
    bool forked_away;       /* the thread did not survive a fork */
    void *stack;            /* our own stack (TSan in a forked child only) */
} thread_rec;

struct conc_thread {
    conc_thread_fn target;
    void *arg;
    char *name;
    bool daemon;
    _Atomic int state; /* T_NEW -> T_STARTING -> T_STARTED */
    thread_rec *rec;   /* written before the release store of T_STARTED */
};

static pthread_mutex_t treg_lock = PTHREAD_MUTEX_INITIALIZER;
static thread_rec *treg_head;
/* Hands out the N of "Thread-N"; relaxed: only distinctness matters. */
static _Atomic unsigned long thread_counter;
static pthread_once_t tfork_once = PTHREAD_ONCE_INIT;

/* ThreadSanitizer in GCC 12 keeps the parent's threads registered in a
 * child forked from a multi-threaded process, while glibc hands the
 * child's new threads the cached stacks - and so the pthread_t - of those
 * very threads: TSan stops with "dup thread with used id".  So under TSan,
 * threads created in a forked child get a stack of our own, at an address
 * no parent thread had (the parent's stacks stay mapped in glibc's cache).
 * It is unmapped after pthread_join; a detached thread's is left mapped. */
#if defined(__SANITIZE_THREAD__)
#define OWN_STACK_SIZE ((size_t)8 << 20)
static bool in_forked_child;
#endif

int conc__thread_spawn(pthread_t *th, bool detached, void *(*fn)(void *),
                       void *arg, void **stack)
{
    pthread_attr_t attr;
    *stack = NULL;
    int r = pthread_attr_init(&attr);
    if (r != 0) {
        return r;
    }
    if (detached) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    }
#if defined(__SANITIZE_THREAD__)
    if (in_forked_child) {
        void *st = conc__os_private_alloc(OWN_STACK_SIZE);
        if (st == NULL) {
            pthread_attr_destroy(&attr);
            return errno;
        }
        pthread_attr_setstack(&attr, st, OWN_STACK_SIZE);
        *stack = st;
    }
#endif
    r = pthread_create(th, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (r != 0 && *stack != NULL) {
#if defined(__SANITIZE_THREAD__)
        conc__os_private_free(*stack, OWN_STACK_SIZE);
#endif
        *stack = NULL;
    }
    return r;
}

/* pthread_join, then our own stack goes (if it had one). */
static void rec_pthread_join(thread_rec *rec)
{
    pthread_join(rec->th, NULL);
#if defined(__SANITIZE_THREAD__)
    if (rec->stack != NULL) {
        conc__os_private_free(rec->stack, OWN_STACK_SIZE);
        rec->stack = NULL;
    }
#endif
}

static void treg_unlink_locked(thread_rec *rec)
{
    if (!rec->listed) {
        return;
    }
    if (rec->prev != NULL) {
        rec->prev->next = rec->next;
    } else {
        treg_head = rec->next;
    }
    if (rec->next != NULL) {
        rec->next->prev = rec->prev;
    }
    rec->next = rec->prev = NULL;
    rec->listed = false;
}

/* Drops one reference; frees the record with the last.  Holds the lock. */
static void rec_unref_locked(thread_rec *rec)
{
    CONC__ASSERT(rec->refs > 0); /* the handle, the thread, pins */
    if (--rec->refs == 0) {
        treg_unlink_locked(rec);
        free(rec);
    }
}

static void tfork_prepare(void)
{
    pthread_mutex_lock(&treg_lock);
}

static void tfork_parent(void)
{
    pthread_mutex_unlock(&treg_lock);
}

static void tfork_child(void)
{
#if defined(__SANITIZE_THREAD__)
    in_forked_child = true;
#endif
    pthread_t self = pthread_self();
    thread_rec *rec = treg_head;
    while (rec != NULL) {
        thread_rec *next = rec->next;
        /* Relaxed loads and stores: only this thread exists now. */
        bool done = atomic_load_explicit(&rec->done, memory_order_relaxed);
        if (!done && pthread_equal(rec->th, self)) {
            /* The forking thread: it runs on in the child. */
            atomic_store_explicit(&rec->tid, conc__os_gettid(),
                                  memory_order_relaxed);
            rec->joined = true;
        } else {
            rec->joined = true; /* no pthread_join of a thread not here */
            if (!done) {
                rec->forked_away = true;
                atomic_store_explicit(&rec->done, 1, memory_order_relaxed);
                rec_unref_locked(rec); /* the thread's own reference */
            }
        }
        rec = next;
    }
    pthread_mutex_unlock(&treg_lock);
}

static void tfork_register(void)
{
    pthread_atfork(tfork_prepare, tfork_parent, tfork_child);
}

/* At load time as well, so the handlers are in place before any fork of a
 * program that links libconc, whatever it calls first. */
__attribute__((constructor)) static void tfork_at_load(void)
{
    pthread_once(&tfork_once, tfork_register);
}

/* The epilogue, also run if the target calls pthread_exit(). */
static void thread_finish(void *arg)
{
    thread_rec *rec = arg;
    pthread_mutex_lock(&treg_lock);
    /* Running -> done happens once, here (or in a forked child's copy,
     * for a thread that did not come along, which never runs this). */
    CONC__ASSERT(atomic_load_explicit(&rec->done, memory_order_relaxed) == 0);
    /* Release: publishes result; pairs with the acquire loads of done in
     * join and join_all. */
    atomic_store_explicit(&rec->done, 1, memory_order_release);
    /* Wakes joiners sleeping in conc__os_futex_wait(&rec->done, 0) in
     * thread_wait_done; the lock keeps the record alive until here. */
    conc__os_futex_wake(&rec->done, INT32_MAX, false);
    rec_unref_locked(rec);
    pthread_mutex_unlock(&treg_lock);
}

/* The calling thread's name, for conc_current_thread_name: its
 * conc_thread's or its pool worker's (which outlive the thread's run);
 * NULL in a thread libconc did not start.  A child forked from a thread
 * keeps it, as Python's current_thread() does after os.fork(). */
static _Thread_local const char *self_name;

void conc__thread_name_set(const char *name)
{
    self_name = name;
}

const char *conc_current_thread_name(void)
{
    if (self_name != NULL) {
        return self_name;
    }
    pid_t tid = conc__os_gettid();
    if (tid == getpid()) {
        return "MainThread";
    }
    /* Python's _DummyThread: a thread started outside (pthread_create
     * by the program), named once for its life. */
    static _Thread_local char dummy[32];
    if (dummy[0] == '\0') {
        snprintf(dummy, sizeof dummy, "Dummy-%d", (int)tid);
    }
    return dummy;
}

static void *thread_main(void *arg)
{
    thread_rec *rec = arg;
    conc__os_set_name(rec->name);
    conc__thread_name_set(rec->name);
    /* Relaxed: the release store of started below publishes it. */
    atomic_store_explicit(&rec->tid, conc__os_gettid(), memory_order_relaxed);
    /* Release: publishes tid; pairs with the acquire load in start. */
    atomic_store_explicit(&rec->started, 1, memory_order_release);
    /* Wakes the starter sleeping on started == 0 in conc_thread_start. */
    conc__os_futex_wake(&rec->started, 1, false);
    pthread_cleanup_push(thread_finish, rec);
    rec->result = rec->target(rec->arg);
    pthread_cleanup_pop(1);
    return NULL;
}

/* Waits for done; 0 or CONC_ETIMEDOUT. */
static int thread_wait_done(thread_rec *rec, const conc__deadline *dl)
{
    /* Acquire: pairs with the release store in thread_finish. */
    while (atomic_load_explicit(&rec->done, memory_order_acquire) == 0) {
        /* Sleeps only while done is still 0; thread_finish's wake pairs
         * with it. */
        if (conc__os_futex_wait(&rec->done, 0, dl, false) == CONC_ETIMEDOUT) {
            if (atomic_load_explicit(&rec->done, memory_order_acquire)) {
                return 0;
            }
            return conc__fail_lit(CONC_ETIMEDOUT, "conc_thread_join: the "
                                                  "thread was still running "
                                                  "at the timeout");
        }
    }
    return 0;
}

/* After done: the one caller that claims it reaps the pthread. */
static void thread_reap(thread_rec *rec)
{
    pthread_mutex_lock(&treg_lock);
    bool claim = !rec->joined && !rec->detached;
    rec->joined = true;
    pthread_mutex_unlock(&treg_lock);
    if (claim) {
        rec_pthread_join(rec);
    }
}

int conc_thread_new(conc_thread **out, const conc_thread_opts *opts)
{
    int err;
    if (out == NULL || opts == NULL || opts->target == NULL) {
        return CONC__FAIL_NULL(out == NULL    ? "out"
                               : opts == NULL ? "opts"
                                              : "opts->target");
    }
    *out = NULL;
    pthread_once(&tfork_once, tfork_register);
    conc_thread *t = conc__calloc(1, sizeof *t);
    if (t == NULL) {
        err = conc__fail(CONC_ENOMEM, "conc_thread_new: out of memory");
        goto fail;
    }
    if (opts->name != NULL) {
        t->name = conc__strdup(opts->name);
    } else {
        char buf[40];
        /* Relaxed: only distinct numbers are needed. */
        unsigned long n = atomic_fetch_add_explicit(&thread_counter, 1,
                                                    memory_order_relaxed);
        snprintf(buf, sizeof buf, "Thread-%lu", n + 1);
        t->name = conc__strdup(buf);
    }
    if (t->name == NULL) {
        err = conc__fail(CONC_ENOMEM, "conc_thread_new: out of memory");
        goto fail_t;
    }
    t->target = opts->target;
    t->arg = opts->arg;
    t->daemon = opts->daemon;
    atomic_init(&t->state, T_NEW);
    *out = t;
    return 0;
fail_t:
    free(t);
fail:
    return err;
}

int conc_thread_start(conc_thread *t)
{
    int err;
    if (t == NULL) {
        return CONC__FAIL_NULL("t");
    }
    int expect = T_NEW;
    /* acq_rel: pairs with the release store of T_NEW by a failed start. */
    if (!atomic_compare_exchange_strong_explicit(&t->state, &expect,
                                                 T_STARTING,
                                                 memory_order_acq_rel,
                                                 memory_order_acquire)) {
        return conc__fail_lit(CONC_ESTATE, "conc_thread_start: threads can "
                                           "only be started once");
    }
    thread_rec *rec = conc__calloc(1, sizeof *rec);
    if (rec == NULL) {
        err = conc__fail(CONC_ENOMEM, "conc_thread_start: out of memory");
        goto fail_state;
    }
    rec->target = t->target;
    rec->arg = t->arg;
    rec->name = t->name;
    rec->daemon = t->daemon;
    rec->refs = 2; /* the handle and the thread */
    pthread_once(&tfork_once, tfork_register);
    conc__exit_hook(CONC__EXIT_THREADS, join_all);
    pthread_t th;
    int r = conc__thread_spawn(&th, false, thread_main, rec, &rec->stack);
    if (r != 0) {
        free(rec);
        errno = r;
        err = conc__fail_sys(r == ENOMEM ? CONC_ENOMEM : CONC_ESYS,
                             "conc_thread_start: pthread_create");
        goto fail_state;
    }
    pthread_mutex_lock(&treg_lock);
    rec->th = th;
    rec->prev = NULL;
    rec->next = treg_head;
    if (treg_head != NULL) {
        treg_head->prev = rec;
    }
    treg_head = rec;
    rec->listed = true;
    pthread_mutex_unlock(&treg_lock);
    /* Acquire: pairs with the release store in thread_main. */
    while (atomic_load_explicit(&rec->started, memory_order_acquire) == 0) {
        /* Woken by thread_main's wake after it stores started = 1. */
        conc__os_futex_wait(&rec->started, 0, NULL, false);
    }
    t->rec = rec;
    /* Only this call moves the handle out of T_STARTING (its CAS won). */
    CONC__ASSERT(atomic_load_explicit(&t->state, memory_order_relaxed) ==
                 T_STARTING);
    /* Release: publishes t->rec; pairs with the acquire loads of state. */
    atomic_store_explicit(&t->state, T_STARTED, memory_order_release);
    return 0;
fail_state:
    CONC__ASSERT(atomic_load_explicit(&t->state, memory_order_relaxed) ==
                 T_STARTING);
    /* Release: pairs with the acquire CAS of the next start. */
    atomic_store_explicit(&t->state, T_NEW, memory_order_release);
    return err;
}

static thread_rec *started_rec(const conc_thread *t)
{
    /* Acquire: pairs with the release store of T_STARTED in start. */
    if (atomic_load_explicit(&t->state, memory_order_acquire) != T_STARTED) {
        return NULL;
    }
    CONC__ASSERT(t->rec != NULL); /* stored before T_STARTED */
    return t->rec;
}

int conc_thread_join(conc_thread *t, double timeout)
{
    conc__deadline dl;
    if (t == NULL) {
        return CONC__FAIL_NULL("t");
    }
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    thread_rec *rec = started_rec(t);
    if (rec == NULL) {
        return conc__fail_lit(CONC_ESTATE, "conc_thread_join: cannot join "
                                           "a thread before it is started");
    }
    pthread_mutex_lock(&treg_lock);
    /* Relaxed: done is stored under treg_lock, which orders it here. */
    bool self = !rec->forked_away &&
                atomic_load_explicit(&rec->done, memory_order_relaxed) == 0 &&
                pthread_equal(rec->th, pthread_self());
    pthread_mutex_unlock(&treg_lock);
    if (self) {
        return conc__fail_lit(CONC_ESTATE, "conc_thread_join: cannot join "
                                           "the current thread");
    }
    err = thread_wait_done(rec, &dl);
    if (err != 0) {
        return err;
    }
    thread_reap(rec);
    pthread_mutex_lock(&treg_lock);
    rec->join_ok = true;
    pthread_mutex_unlock(&treg_lock);
    return 0;
}

int conc_thread_result(conc_thread *t, void **result)
{
    if (t == NULL || result == NULL) {
        return CONC__FAIL_NULL(t == NULL ? "t" : "result");
    }
    thread_rec *rec = started_rec(t);
    if (rec == NULL) {
        return conc__fail_lit(CONC_ESTATE, "conc_thread_result: the thread "
                                           "was not started");
    }
    pthread_mutex_lock(&treg_lock);
    bool ok = rec->join_ok;
    bool away = rec->forked_away;
    pthread_mutex_unlock(&treg_lock);
    if (!ok) {
        return conc__fail_lit(CONC_ESTATE, "conc_thread_result: the thread "
                                           "has not been joined");
    }
    *result = away ? NULL : rec->result;
    return 0;
}

bool conc_thread_is_alive(conc_thread *t)
{
    if (t == NULL) {
        return false;
    }
    thread_rec *rec = started_rec(t);
    /* Acquire: pairs with the release store in thread_finish. */
    return rec != NULL &&
           atomic_load_explicit(&rec->done, memory_order_acquire) == 0;
}

const char *conc_thread_name(const conc_thread *t)
{
    return t == NULL ? NULL : t->name;
}

pid_t conc_thread_ident(const conc_thread *t)
{
    if (t == NULL) {
        return 0;
    }
    thread_rec *rec = started_rec(t);
    /* Relaxed: start's acquire of `started` already ordered it. */
    return rec == NULL ? 0
                       : atomic_load_explicit(&rec->tid, memory_order_relaxed);
}

void conc_thread_free(conc_thread *t)
{
    if (t == NULL) {
        return;
    }
    thread_rec *rec = started_rec(t);
    if (rec != NULL) {
        bool claim = false;
        pthread_mutex_lock(&treg_lock);
        if (!rec->joined && !rec->detached) {
            /* Acquire: pairs with the release store in thread_finish. */
            if (atomic_load_explicit(&rec->done, memory_order_acquire)) {
                rec->joined = true; /* finished: a short join frees it */
                claim = true;
            } else {
                pthread_detach(rec->th);
                rec->detached = true;
            }
        }
        pthread_mutex_unlock(&treg_lock);
        if (claim) {
            rec_pthread_join(rec);
        }
        pthread_mutex_lock(&treg_lock);
        rec_unref_locked(rec);
        pthread_mutex_unlock(&treg_lock);
    }
    free(t->name);
    free(t);
}

/* Joins every started, not yet finished, non-daemon conc_thread of this
 * process other than the caller (Python's threading._shutdown), and
 * reaps finished ones nobody joined.  Blocks without limit, as Python. */
static void join_all(void)
{
    pthread_t self = pthread_self();
    conc__deadline forever;
    conc__deadline_init(&forever, CONC_FOREVER);
    for (;;) {
        pthread_mutex_lock(&treg_lock);
        thread_rec *rec = treg_head;
        /* Unfinished non-daemon threads are waited for; finished threads
         * nobody joined are reaped too (cheap, and no thread leaks). */
        while (rec != NULL) {
            /* Acquire: pairs with the release store in thread_finish. */
            bool done = atomic_load_explicit(&rec->done, memory_order_acquire);
            bool unreaped = !rec->joined && !rec->detached;
            if (!pthread_equal(rec->th, self) &&
                ((!rec->daemon && !done) || (done && unreaped))) {
                break;
            }
            rec = rec->next;
        }
        if (rec == NULL) {
            pthread_mutex_unlock(&treg_lock);
            return;
        }
        rec->refs++; /* pinned while we wait */
        pthread_mutex_unlock(&treg_lock);
        thread_wait_done(rec, &forever);
        thread_reap(rec);
        pthread_mutex_lock(&treg_lock);
        rec_unref_locked(rec);
        pthread_mutex_unlock(&treg_lock);
    }
}
