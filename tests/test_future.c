/* test_future.c - conc_future (result with timeouts, cancel, states,
 * done-callbacks and the thread that runs them), conc_wait with each
 * return condition, and conc_as_completed's order and deadline. */
#include "pool_tasks.h"

#include <math.h>
#include <stdatomic.h>
#include <sys/time.h>

static conc_pool *mk(conc_pool_kind kind, size_t workers)
{
    conc_pool *p = NULL;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .kind = kind,
                                                  .workers = workers }));
    return p;
}

static conc_future *go(conc_pool *p, conc_task_fn fn, int x)
{
    conc_future *f = NULL;
    CHECK_OK(conc_pool_submit(p, fn, &x, sizeof x, &f));
    return f;
}

static void wait_running(conc_future *f)
{
    double t0 = th_now();
    while (!conc_future_running(f)) {
        CHECK(th_now() - t0 < 10);
        CHECK(!conc_future_done(f));
        th_sleep(0.001);
    }
}

struct cbrec {
    _Atomic int calls;
    _Atomic int tid;
    _Atomic int order;
    conc_future *seen;
};

static void on_done(conc_future *f, void *arg)
{
    struct cbrec *r = arg;
    r->seen = f;
    atomic_store(&r->tid, (int)syscall(SYS_gettid));
    static _Atomic int seq;
    atomic_store(&r->order, atomic_fetch_add(&seq, 1));
    atomic_fetch_add(&r->calls, 1);
}

static void cancel_and_states(conc_pool_kind kind)
{
    conc_pool *p = mk(kind, 1);
    conc_future *busy = go(p, t_sleep, 200);
    wait_running(busy);
    CHECK(!conc_future_done(busy));
    CHECK(!conc_future_cancel(busy)); /* running: cannot */
    CHECK(!conc_future_cancelled(busy));
    conc_future *q = go(p, t_square, 5);
    if (kind == CONC_THREADS) {
        /* (processes: a task sent ahead into a busy worker's ring counts
         * as running already, as in ProcessPoolExecutor) */
        CHECK(!conc_future_running(q));
    }
    CHECK(!conc_future_done(q));
    struct cbrec r = { 0 };
    CHECK_OK(conc_future_add_done_callback(q, on_done, &r));
    CHECK_EQ(atomic_load(&r.calls), 0);
    bool c = conc_future_cancel(q);
    if (kind == CONC_THREADS) {
        CHECK(c);
    }
    if (c) {
        /* the callback ran at once, in this thread */
        CHECK_EQ(atomic_load(&r.calls), 1);
        CHECK_EQ(atomic_load(&r.tid), (int)syscall(SYS_gettid));
        CHECK(r.seen == q);
        CHECK(conc_future_cancelled(q));
        CHECK(conc_future_done(q));
        CHECK(!conc_future_running(q));
        CHECK(conc_future_cancel(q)); /* again: still cancelled */
        conc_msg m;
        CHECK_ERR(conc_future_result(q, &m, 1), CONC_ECANCELLED);
        CHECK(strstr(conc_errdetail(), "conc_future_result: the future was "
                                       "cancelled"));
        CHECK(m.data == NULL && m.len == 0);
        CHECK(conc_future_error_message(q) == NULL);
    }
    CHECK_OK(conc_future_result(busy, NULL, 30));
    CHECK(conc_future_done(busy) && !conc_future_running(busy));
    CHECK(!conc_future_cancel(busy)); /* done: cannot */
    conc_future_free(busy);
    conc_future_free(q);
    CHECK_OK(conc_pool_shutdown(p, true, false));
    CHECK_EQ(atomic_load(&r.calls), 1);
    conc_pool_free(p);
}

TEST(cancel_threads) { cancel_and_states(CONC_THREADS); }
TEST(cancel_processes) { cancel_and_states(CONC_PROCESSES); }

TEST(result_timeouts)
{
    conc_pool *p = mk(CONC_THREADS, 1);
    conc_future *f = go(p, t_sleep, 300);
    conc_msg m;
    CHECK_ERR(conc_future_result(f, &m, 0), CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "conc_future_result: the task is not "
                                   "done (timeout 0: no wait)"));
    double t0 = th_now();
    CHECK_ERR(conc_future_result(f, &m, 0.1), CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "conc_future_result: the task was not "
                                   "done within 0.1 s"));
    double took = th_now() - t0;
    CHECK(took >= 0.1);
    CHECK(took < 1.0 + 0.1 * 10);
    CHECK_ERR(conc_future_result(f, &m, NAN), CONC_EINVAL);
    CHECK_ERR(conc_future_result(f, &m, -0.5), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "conc_future_result: timeout -0.5: it "
                                   "must be >= 0 (0: do not wait) or "
                                   "CONC_FOREVER"));
    CHECK_ERR(conc_future_result(NULL, &m, 1), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "conc_future_result: f is NULL"));
    CHECK_OK(conc_future_result(f, &m, CONC_FOREVER));
    CHECK_EQ(int_out(&m), 300);
    conc_msg_free(&m);
    CHECK_OK(conc_future_result(f, NULL, 0)); /* out may be NULL */
    conc_future_free(f);
    conc_pool_free(p);
}

static void on_alarm(int sig)
{
    (void)sig;
}

TEST(result_resumes_after_signal)
{
    struct sigaction sa = { 0 };
    sa.sa_handler = on_alarm; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    conc_pool *p = mk(CONC_THREADS, 1);
    conc_future *f = go(p, t_sleep, 1000);
    struct itimerval it = { .it_interval = { 0, 20000 },
                            .it_value = { 0, 20000 } };
    setitimer(ITIMER_REAL, &it, NULL);
    double t0 = th_now();
    CHECK_ERR(conc_future_result(f, NULL, 0.3), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &off, NULL);
    CHECK(took >= 0.3);
    CHECK(took < 3.0);
    conc_future_free(f);
    conc_pool_free(p);
}

static void callbacks(conc_pool_kind kind)
{
    conc_pool *p = mk(kind, 1);
    conc_future *f = go(p, t_sleep, 100);
    struct cbrec a = { 0 }, b = { 0 }, c = { 0 };
    CHECK_OK(conc_future_add_done_callback(f, on_done, &a));
    CHECK_OK(conc_future_add_done_callback(f, on_done, &b));
    CHECK_ERR(conc_future_add_done_callback(f, NULL, &b), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "conc_future_add_done_callback: cb is "
                                   "NULL"));
    CHECK_ERR(conc_future_add_done_callback(NULL, on_done, &b), CONC_EINVAL);
    CHECK_OK(conc_future_result(f, NULL, 30));
    /* a callback may run just after result() returns: wait for it */
    double t0 = th_now();
    while (atomic_load(&b.calls) == 0) {
        CHECK(th_now() - t0 < 10);
        th_sleep(0.001);
    }
    CHECK_EQ(atomic_load(&a.calls), 1);
    CHECK_EQ(atomic_load(&b.calls), 1);
    CHECK(atomic_load(&a.order) < atomic_load(&b.order)); /* in order */
    int me = (int)syscall(SYS_gettid);
    /* run by the worker thread (threads) or the manager (processes: a
     * waiter collects results itself only while it spins, some tens of
     * microseconds, and this task takes 100 ms) */
    CHECK(atomic_load(&a.tid) != me);
    CHECK(atomic_load(&a.tid) == atomic_load(&b.tid));
    /* already done: at once, in this thread */
    CHECK_OK(conc_future_add_done_callback(f, on_done, &c));
    CHECK_EQ(atomic_load(&c.calls), 1);
    CHECK_EQ(atomic_load(&c.tid), me);
    conc_future_free(f);
    /* a future freed by its owner before it completes still calls back */
    struct cbrec d = { 0 };
    f = go(p, t_sleep, 50);
    CHECK_OK(conc_future_add_done_callback(f, on_done, &d));
    conc_future_free(f);
    CHECK_OK(conc_pool_shutdown(p, true, false));
    CHECK_EQ(atomic_load(&d.calls), 1);
    conc_pool_free(p);
}

TEST(callbacks_threads) { callbacks(CONC_THREADS); }
TEST(callbacks_processes) { callbacks(CONC_PROCESSES); }

/* Processes: a future is completed either by a caller waiting in
 * conc_future_result, which collects results from the rings itself, or by
 * the pool's manager thread when nobody waits.  Both paths run each
 * callback exactly once; the caller path runs it in the caller's thread,
 * before conc_future_result returns. */
TEST(callbacks_caller_and_manager_paths)
{
    conc_pool *p = mk(CONC_PROCESSES, 2);
    int me = (int)syscall(SYS_gettid);
    enum { N = 400 };
    struct cbrec *r = calloc(N, sizeof *r);
    CHECK(r != NULL);
    int by_caller = 0, n = 0;
    double t0 = th_now();
    /* waited for: mostly the caller path (the manager stays asleep while
     * a waiter helps); a few may go the manager's way */
    for (; n < N && (by_caller < 20 || n < 50) && th_now() - t0 < 5; n++) {
        conc_future *f = go(p, t_square, n);
        CHECK_OK(conc_future_add_done_callback(f, on_done, &r[n]));
        /* A callback that ran at once (the task was already done) does
         * not count for the caller path. */
        bool pending = atomic_load(&r[n].calls) == 0;
        conc_msg m;
        CHECK_OK(conc_future_result(f, &m, 30));
        CHECK_EQ(int_out(&m), n * n);
        conc_msg_free(&m);
        if (pending && atomic_load(&r[n].calls) == 1 &&
            atomic_load(&r[n].tid) == me) {
            by_caller++;
        }
        conc_future_free(f);
    }
    CHECK(by_caller > 0);
    /* not waited for: only the manager can complete it (the task takes
     * 20 ms so that the callback is added before; one added after runs at
     * once in this thread and is tried again) */
    struct cbrec q[5] = { 0 };
    for (int i = 0, tries = 0; i < 5; i++) {
        CHECK(++tries < 50);
        conc_future *f = go(p, t_sleep, 20);
        CHECK_OK(conc_future_add_done_callback(f, on_done, &q[i]));
        if (atomic_load(&q[i].calls) != 0) {
            conc_future_free(f);
            q[i] = (struct cbrec){ 0 };
            i--;
            continue;
        }
        double t1 = th_now();
        while (!conc_future_done(f)) { /* done() never helps */
            CHECK(th_now() - t1 < 10);
            th_sleep(0.0005);
        }
        conc_future_free(f);
    }
    CHECK_OK(conc_pool_shutdown(p, true, false));
    for (int i = 0; i < n; i++) {
        CHECK_EQ(atomic_load(&r[i].calls), 1);
    }
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(atomic_load(&q[i].calls), 1);
        CHECK(atomic_load(&q[i].tid) != me);
    }
    free(r);
    conc_pool_free(p);
}

/* A callback (run by whichever thread completed the future) waits for
 * another future of the same pool: no lock of the pool is held while
 * callbacks run, so that waiter can collect its result itself. */
static conc_pool *nest_pool;
static _Atomic int nest_got;
static _Atomic int nest_tid; /* the thread that ran wait_other */
static void wait_other(conc_future *f, void *arg)
{
    (void)f;
    int x = *(int *)arg;
    conc_future *g = NULL;
    if (conc_pool_submit(nest_pool, t_square, &x, sizeof x, &g) != 0) {
        atomic_store(&nest_got, -1);
        return;
    }
    conc_msg m;
    int err = conc_future_result(g, &m, 10);
    atomic_store(&nest_tid, (int)syscall(SYS_gettid));
    atomic_store(&nest_got, err == 0 ? int_out(&m) : -2);
    conc_msg_free(&m);
    conc_future_free(g);
}

TEST(callback_waits_for_another_future_processes)
{
    nest_pool = mk(CONC_PROCESSES, 2);
    for (int round = 0; round < 20; round++) {
        atomic_store(&nest_got, 0);
        int x = round + 2;
        /* round even: the caller waits (and may complete it); odd: only
         * the manager completes it (the task takes 20 ms, so the callback
         * is added before it is done and cannot run here at once) */
        conc_future *f = round % 2 == 0 ? go(nest_pool, t_square, 3)
                                        : go(nest_pool, t_sleep, 20);
        CHECK_OK(conc_future_add_done_callback(f, wait_other, &x));
        /* Already done at the add (a very slow machine): it ran here. */
        bool ran_here = atomic_load(&nest_got) != 0;
        if (round % 2 == 0) {
            CHECK_OK(conc_future_result(f, NULL, 30));
        }
        double t0 = th_now();
        while (atomic_load(&nest_got) == 0) {
            CHECK(th_now() - t0 < 20);
            th_sleep(0.0005);
        }
        CHECK_EQ(atomic_load(&nest_got), x * x);
        if (round % 2 == 1 && !ran_here) {
            CHECK(atomic_load(&nest_tid) != (int)syscall(SYS_gettid));
        }
        conc_future_free(f);
    }
    conc_pool_free(nest_pool);
}

/* A callback that submits more work from the completing thread. */
static conc_pool *chain_pool;
static conc_future *chained;
static void resubmit(conc_future *f, void *arg)
{
    (void)f;
    (void)arg;
    int x = 12;
    conc_future *g = NULL;
    conc_pool_submit(chain_pool, t_square, &x, sizeof x, &g);
    __atomic_store_n(&chained, g, __ATOMIC_SEQ_CST);
}

static void callback_submits(conc_pool_kind kind)
{
    chain_pool = mk(kind, 2);
    chained = NULL;
    conc_future *f = go(chain_pool, t_square, 2);
    CHECK_OK(conc_future_add_done_callback(f, resubmit, NULL));
    CHECK_OK(conc_future_result(f, NULL, 30));
    double t0 = th_now();
    while (__atomic_load_n(&chained, __ATOMIC_SEQ_CST) == NULL) {
        CHECK(th_now() - t0 < 10);
        th_sleep(0.001);
    }
    conc_msg m;
    CHECK_OK(conc_future_result(chained, &m, 30));
    CHECK_EQ(int_out(&m), 144);
    conc_msg_free(&m);
    conc_future_free(chained);
    conc_future_free(f);
    conc_pool_free(chain_pool);
}

TEST(callback_submits_threads) { callback_submits(CONC_THREADS); }
TEST(callback_submits_processes) { callback_submits(CONC_PROCESSES); }

static void waits(conc_pool_kind kind)
{
    conc_pool *p = mk(kind, 2);
    conc_future *fs[2];
    double t0 = th_now();
    fs[0] = go(p, t_sleep, 300);
    fs[1] = go(p, t_sleep, 20);
    CHECK_OK(conc_wait(fs, 2, 10, CONC_FIRST_COMPLETED));
    CHECK(conc_future_done(fs[1]));
    CHECK(!conc_future_done(fs[0]));
    CHECK_ERR(conc_wait(fs, 2, 0, CONC_ALL_COMPLETED), CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "conc_wait: the condition does not hold "
                                   "(timeout 0: no wait)"));
    double t1 = th_now();
    CHECK_ERR(conc_wait(fs, 2, 0.05, CONC_ALL_COMPLETED), CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "conc_wait: the condition did not hold "
                                   "within 0.05 s"));
    CHECK(th_now() - t1 >= 0.05);
    CHECK_OK(conc_wait(fs, 2, 10, CONC_ALL_COMPLETED));
    CHECK(conc_future_done(fs[0]));
    CHECK(th_now() - t0 >= 0.3);
    conc_future_free(fs[0]);
    conc_future_free(fs[1]);

    /* FIRST_EXCEPTION: returns at the first failure ... */
    fs[0] = go(p, t_sleep, 400);
    fs[1] = go(p, t_fail, 3);
    t0 = th_now();
    CHECK_OK(conc_wait(fs, 2, 10, CONC_FIRST_EXCEPTION));
    CHECK(!conc_future_done(fs[0]));
    CHECK_OK(conc_wait(fs, 2, 10, CONC_ALL_COMPLETED));
    conc_future_free(fs[0]);
    conc_future_free(fs[1]);
    /* ... or when all are done without one */
    t0 = th_now();
    fs[0] = go(p, t_sleep, 100);
    fs[1] = go(p, t_square, 3);
    CHECK_OK(conc_wait(fs, 2, 10, CONC_FIRST_EXCEPTION));
    CHECK(th_now() - t0 >= 0.1);
    CHECK(conc_future_done(fs[0]) && conc_future_done(fs[1]));

    CHECK_ERR(conc_wait(fs, 2, 1, 0), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "conc_wait: return_when 0 is not one of "
                                   "CONC_FIRST_COMPLETED, "
                                   "CONC_FIRST_EXCEPTION, "
                                   "CONC_ALL_COMPLETED"));
    CHECK_ERR(conc_wait(fs, 2, 1, 3), CONC_EINVAL);
    CHECK_ERR(conc_wait(fs, 2, 1, 8), CONC_EINVAL);
    CHECK_ERR(conc_wait(fs, 2, NAN, CONC_ALL_COMPLETED), CONC_EINVAL);
    CHECK_ERR(conc_wait(NULL, 2, 1, CONC_ALL_COMPLETED), CONC_EINVAL);
    conc_future *withnull[2] = { fs[0], NULL };
    CHECK_ERR(conc_wait(withnull, 2, 1, CONC_ALL_COMPLETED), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "conc_wait: futs[1] is NULL"));
    CHECK_OK(conc_wait(NULL, 0, 1, CONC_FIRST_COMPLETED));
    conc_future_free(fs[0]);
    conc_future_free(fs[1]);
    conc_pool_free(p);
}

TEST(wait_threads) { waits(CONC_THREADS); }
TEST(wait_processes) { waits(CONC_PROCESSES); }

/* conc_iter_next on an as_completed iterator gives the results of the
 * futures in the order they complete, conc_iter_index their places:
 * api.md's "conc_as_completed(...) → conc_iter" read with its
 * conc_iter_next (it once refused with CONC_EINVAL). */
static void as_completed_results(conc_pool_kind kind)
{
    conc_pool *p = mk(kind, 2);
    conc_future *fs[3];
    fs[0] = go(p, t_sleep, 200);
    fs[1] = go(p, t_square, 7);
    CHECK_OK(conc_future_result(fs[1], NULL, 30));
    fs[2] = go(p, t_fail, 3); /* fails with its own code 3 */
    CHECK_OK(conc_future_result(fs[0], NULL, 30));
    CHECK_EQ(conc_future_result(fs[2], NULL, 30), 3);
    conc_iter *it;
    CHECK_OK(conc_as_completed(fs, 3, 30, &it));
    bool seen[3] = { false };
    for (int k = 0; k < 3; k++) {
        conc_msg m;
        int err = conc_iter_next(it, &m, 30);
        size_t i = conc_iter_index(it);
        CHECK(i < 3 && !seen[i]);
        seen[i] = true;
        if (i == 1) {
            CHECK_OK(err);
            CHECK_EQ(int_out(&m), 49);
        } else if (i == 0) {
            CHECK_OK(err);
        } else {
            CHECK_EQ(err, 3); /* t_fail's own code */
        }
        conc_msg_free(&m);
    }
    conc_msg m;
    CHECK_ERR(conc_iter_next(it, &m, 0), CONC_ECLOSED);
    conc_iter_free(it);
    for (int i = 0; i < 3; i++) {
        conc_future_free(fs[i]);
    }
    conc_pool_free(p);
}

TEST(as_completed_results_threads) { as_completed_results(CONC_THREADS); }
TEST(as_completed_results_processes)
{
    as_completed_results(CONC_PROCESSES);
}

static void as_completed(conc_pool_kind kind)
{
    conc_pool *p = mk(kind, 3);
    conc_future *done = go(p, t_square, 4);
    CHECK_OK(conc_future_result(done, NULL, 30));
    conc_future *fs[4];
    fs[0] = go(p, t_sleep, 300);
    fs[1] = go(p, t_sleep, 30);
    fs[2] = go(p, t_sleep, 150);
    fs[3] = done;
    conc_iter *it;
    CHECK_OK(conc_as_completed(fs, 4, 30, &it));
    /* the caller may drop its references: the iterator holds its own */
    conc_future_free(fs[0]);
    int want[4] = { 3, 1, 2, 0 };
    for (int i = 0; i < 4; i++) {
        conc_future *f;
        CHECK_OK(conc_iter_next_future(it, &f, 30));
        CHECK(f == fs[want[i]] || (want[i] == 0 && f != NULL));
        CHECK(conc_future_done(f));
    }
    conc_future *f;
    CHECK_ERR(conc_iter_next_future(it, &f, 1), CONC_ECLOSED);
    CHECK(strstr(conc_errdetail(), "conc_iter_next_future: all 4 futures "
                                   "were handed out"));
    CHECK(f == NULL);
    conc_msg m;
    CHECK_ERR(conc_iter_next(it, &m, 0), CONC_ECLOSED);
    CHECK_ERR(conc_iter_next_future(NULL, &f, 0), CONC_EINVAL);
    CHECK_ERR(conc_iter_next_future(it, NULL, 0), CONC_EINVAL);
    conc_iter_free(it);
    for (int i = 1; i < 4; i++) {
        conc_future_free(fs[i]);
    }

    /* the iterator's own deadline, from the call (fs[1] done first, and
     * fs[0] far from done, so a loaded machine cannot move either past
     * the 0.1 s) */
    fs[0] = go(p, t_sleep, 2000);
    fs[1] = go(p, t_square, 2);
    CHECK_OK(conc_future_result(fs[1], NULL, 30));
    CHECK_OK(conc_as_completed(fs, 2, 0.1, &it));
    CHECK_OK(conc_iter_next_future(it, &f, CONC_FOREVER));
    CHECK(f == fs[1]);
    CHECK_ERR(conc_iter_next_future(it, &f, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "conc_iter_next_future: 1 of 2 futures "
                                   "unfinished at the iterator's deadline"));
    conc_iter_free(it);
    /* and the call's own */
    CHECK_OK(conc_as_completed(fs, 2, CONC_FOREVER, &it));
    CHECK_OK(conc_iter_next_future(it, &f, 0));
    CHECK_ERR(conc_iter_next_future(it, &f, 0), CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "conc_iter_next_future: no further "
                                   "future is done (timeout 0: no wait)"));
    CHECK_ERR(conc_iter_next_future(it, &f, 0.05), CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "conc_iter_next_future: 1 of 2 futures "
                                   "unfinished after 0.05 s"));
    CHECK_OK(conc_iter_next_future(it, &f, 30));
    CHECK(f == fs[0]);
    conc_iter_free(it);
    CHECK_OK(conc_as_completed(NULL, 0, 1, &it));
    CHECK_ERR(conc_iter_next_future(it, &f, 1), CONC_ECLOSED);
    conc_iter_free(it);
    CHECK_ERR(conc_as_completed(fs, 2, NAN, &it), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "conc_as_completed: timeout nan"));
    CHECK_ERR(conc_as_completed(fs, 2, 1, NULL), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "conc_as_completed: it is NULL"));

    /* A future given twice is handed out once, at its first place
     * (Python's as_completed takes a set): done ones, and one pending. */
    conc_future *twice[6] = { fs[1], fs[0], fs[1], fs[0], fs[1], NULL };
    twice[5] = go(p, t_sleep, 50);
    conc_future *pend[2] = { twice[5], twice[5] };
    CHECK_OK(conc_as_completed(twice, 5, 30, &it));
    conc_progress pr;
    CHECK_OK(conc_iter_progress(it, &pr));
    CHECK_EQ(pr.total, 2);
    for (size_t i = 0; i < 2; i++) {
        CHECK_OK(conc_iter_next_future(it, &f, 30));
        CHECK(f == fs[1 - i]);
        CHECK_EQ(conc_iter_index(it), i);
    }
    CHECK_ERR(conc_iter_next_future(it, &f, 1), CONC_ECLOSED);
    CHECK(strstr(conc_errdetail(), "all 2 futures were handed out"));
    conc_iter_free(it);
    CHECK_OK(conc_as_completed(pend, 2, 30, &it));
    CHECK_OK(conc_iter_next_future(it, &f, 30));
    CHECK(f == twice[5]);
    CHECK_ERR(conc_iter_next_future(it, &f, 1), CONC_ECLOSED);
    conc_iter_free(it);
    conc_future_free(twice[5]);
    conc_future_free(fs[0]);
    conc_future_free(fs[1]);
    conc_pool_free(p);
}

TEST(as_completed_threads) { as_completed(CONC_THREADS); }
TEST(as_completed_processes) { as_completed(CONC_PROCESSES); }

/* An iterator freed before its futures complete, then the futures. */
TEST(as_completed_freed_early)
{
    conc_pool *p = mk(CONC_THREADS, 2);
    conc_future *fs[2] = { go(p, t_sleep, 50), go(p, t_sleep, 60) };
    conc_iter *it;
    CHECK_OK(conc_as_completed(fs, 2, CONC_FOREVER, &it));
    conc_iter_free(it);
    CHECK_OK(conc_wait(fs, 2, 30, CONC_ALL_COMPLETED));
    conc_future_free(fs[0]);
    conc_future_free(fs[1]);
    conc_pool_free(p);
}

TEST(null_futures)
{
    CHECK(!conc_future_cancel(NULL));
    CHECK(!conc_future_cancelled(NULL));
    CHECK(!conc_future_running(NULL));
    CHECK(!conc_future_done(NULL));
    CHECK(conc_future_error_message(NULL) == NULL);
    conc_future_free(NULL);
    CHECK_EQ(conc_iter_index(NULL), (size_t)-1);
    CHECK(conc_iter_error_message(NULL) == NULL);
}

/* Many threads wait on many futures at once: every waiter wakes. */
static conc_future *shared_futs[8];
static void *waiter_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 8; i++) {
        conc_msg m;
        if (conc_future_result(shared_futs[i], &m, 30) != 0) {
            return (void *)1;
        }
        conc_msg_free(&m);
    }
    if (conc_wait(shared_futs, 8, 30, CONC_ALL_COMPLETED) != 0) {
        return (void *)1;
    }
    return NULL;
}

TEST(many_waiters)
{
    conc_pool *p = mk(CONC_PROCESSES, 2);
    for (int i = 0; i < 8; i++) {
        shared_futs[i] = go(p, t_sleep, 10 * i);
    }
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        pthread_create(&t[i], NULL, waiter_main, NULL);
    }
    for (int i = 0; i < 6; i++) {
        void *r;
        pthread_join(t[i], &r);
        CHECK(r == NULL);
    }
    for (int i = 0; i < 8; i++) {
        conc_future_free(shared_futs[i]);
    }
    conc_pool_free(p);
}
