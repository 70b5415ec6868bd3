/* test_pool_crash.c - a pool outlives its workers.  A process worker that
 * segfaults, aborts, calls exit() or is SIGKILLed from outside fails only
 * the task it held (CONC_EWORKERDIED), is replaced, and every queued task
 * still completes correctly; a task past task_timeout fails with
 * CONC_ETIMEDOUT and its worker is replaced (processes: killed; threads:
 * abandoned); terminate with pending futures leaves none waiting; and
 * workers killed at random while a map runs never make a result wrong or
 * a call hang. */
#include "pool_tasks.h"

#include <dirent.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Submits, for each round, one crashing task between ordinary ones and
 * checks that exactly the crashing ones failed. */
static void crash_kind(int kind)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 2 }));
    enum { ROUNDS = 5, PER = 20 };
    conc_future *f[ROUNDS * PER];
    int vals[ROUNDS * PER];
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < PER; i++) {
            int k = r * PER + i;
            vals[k] = i == 7 ? -kind : k;
            CHECK_OK(conc_pool_submit(p, t_crash, &vals[k], sizeof vals[k],
                                      &f[k]));
        }
    }
    for (int k = 0; k < ROUNDS * PER; k++) {
        conc_msg m;
        int err = conc_future_result(f[k], &m, 30);
        if (vals[k] < 0) {
            CHECK_ERR(err, CONC_EWORKERDIED);
            const char *msg = conc_future_error_message(f[k]);
            CHECK(msg != NULL && strstr(msg, "PoolWorker-") != NULL);
            CHECK(strstr(msg, "died: ") != NULL);
            /* the error's detail says the same */
            CHECK(strstr(conc_errdetail(), "conc_future_result: the task "
                                           "failed with CONC_EWORKERDIED: "
                                           "worker PoolWorker-") != NULL);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
            /* (sanitizers turn a segfault, and their leak check at exit,
             * into an exit status of their own) */
            CHECK(strstr(msg, kind == 3   ? "exited with code 3"
                              : kind == 4 ? "killed by signal 9"
                              : kind == 1 ? "killed by signal 11"
                                          : "killed by signal 6") != NULL);
#endif
        } else {
            CHECK_OK(err);
            CHECK_EQ(int_out(&m), vals[k] * vals[k]);
        }
        conc_msg_free(&m);
        conc_future_free(f[k]);
    }
    /* the pool still has its two workers and works */
    int x = 9;
    conc_msg m;
    CHECK_OK(conc_pool_apply(p, t_square, &x, sizeof x, &m, 30));
    CHECK_EQ(int_out(&m), 81);
    conc_msg_free(&m);
    CHECK_OK(conc_pool_shutdown(p, true, false));
    conc_pool_free(p);
}

TEST(worker_segfaults) { crash_kind(1); }
TEST(worker_aborts) { crash_kind(2); }
TEST(worker_calls_exit) { crash_kind(3); }
TEST(worker_kills_itself) { crash_kind(4); }

/* Where a worker writes its pid before it sleeps: shared memory made
 * before the pool, so every worker inherits it. */
static _Atomic int *shared_pid;

static int t_pid_sleep(const void *in, size_t len, conc_buf *out, void *ctx)
{
    atomic_store(shared_pid, (int)getpid());
    return t_sleep(in, len, out, ctx);
}

/* SIGKILL from outside, with a map of chunks queued: the killed task
 * fails, the queue runs on. */
TEST(worker_killed_from_outside)
{
    shared_pid = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shared_pid != MAP_FAILED);
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 2 }));
    for (int round = 0; round < 3; round++) {
        int ms = 2000;
        atomic_store(shared_pid, 0);
        conc_future *victim;
        CHECK_OK(conc_pool_submit(p, t_pid_sleep, &ms, sizeof ms, &victim));
        enum { N = 40 };
        int vals[N];
        conc_msg in[N];
        for (int i = 0; i < N; i++) {
            vals[i] = i;
            in[i].data = &vals[i];
            in[i].len = sizeof vals[i];
        }
        conc_iter *it;
        CHECK_OK(conc_pool_imap(p, t_square, in, N, &it,
                                &(conc_map_opts){ .chunksize = 4 }));
        double t0 = th_now();
        while (atomic_load(shared_pid) == 0) {
            CHECK(th_now() - t0 < 10);
            th_sleep(0.001);
        }
        CHECK(conc_future_running(victim));
        CHECK_OK(kill(atomic_load(shared_pid), SIGKILL));
        CHECK_ERR(conc_future_result(victim, NULL, 30), CONC_EWORKERDIED);
        CHECK(strstr(conc_future_error_message(victim), "signal 9") != NULL);
        conc_future_free(victim);
        conc_msg m;
        for (int i = 0; i < N; i++) {
            CHECK_OK(conc_iter_next(it, &m, 30));
            CHECK_EQ(int_out(&m), i * i);
            conc_msg_free(&m);
        }
        conc_iter_free(it);
    }
    conc_pool_free(p);
    munmap(shared_pid, 4096);
}

/* A map whose chunks hold crashing items: only those items fail. */
TEST(crash_inside_chunks)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 2 }));
    enum { N = 100 };
    int vals[N];
    conc_msg in[N], out[N];
    for (int i = 0; i < N; i++) {
        vals[i] = i % 10 == 3 ? -(1 + i % 4) : i;
        in[i].data = &vals[i];
        in[i].len = sizeof vals[i];
    }
    for (size_t chunk = 1; chunk <= 16; chunk *= 4) {
        int err = conc_pool_map(p, t_crash, in, N, out,
                                &(conc_map_opts){ .chunksize = chunk });
        CHECK_ERR(err, CONC_EWORKERDIED);
        conc_iter *it;
        CHECK_OK(conc_pool_imap_unordered(p, t_crash, in, N, &it,
                                          &(conc_map_opts){ .chunksize =
                                                                chunk }));
        int died = 0;
        for (int i = 0; i < N; i++) {
            CHECK_EQ(out[i].len, vals[i] < 0 ? 0 : 4);
            if (vals[i] >= 0) {
                CHECK_EQ(int_out(&out[i]), vals[i] * vals[i]);
            }
            conc_msg_free(&out[i]);
            conc_msg m;
            int e = conc_iter_next(it, &m, 30);
            size_t k = conc_iter_index(it);
            if (vals[k] < 0) {
                CHECK_ERR(e, CONC_EWORKERDIED);
                died++;
            } else {
                CHECK_OK(e);
                CHECK_EQ(int_out(&m), vals[k] * vals[k]);
            }
            conc_msg_free(&m);
        }
        CHECK_EQ(died, N / 10);
        conc_iter_free(it);
    }
    conc_pool_free(p);
}

static int t_hang(const void *in, size_t len, conc_buf *out, void *ctx)
{
    int x = int_in(in, len);
    if (x < 0) {
        th_sleep(-x / 1000.0);
    }
    return t_square(in, len, out, ctx);
}

static void timeouts(conc_pool_kind kind)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){
                                   .kind = kind,
                                   .workers = 2,
                                   .task_timeout = CONC_TIMEOUT(0.2) }));
    enum { N = 30 };
    conc_future *f[N];
    int vals[N];
    double t0 = th_now();
    for (int i = 0; i < N; i++) {
        vals[i] = i % 10 == 4 ? -3000 : i;
        CHECK_OK(conc_pool_submit(p, t_hang, &vals[i], sizeof vals[i], &f[i]));
    }
    for (int i = 0; i < N; i++) {
        conc_msg m;
        int err = conc_future_result(f[i], &m, 30);
        if (vals[i] < 0) {
            CHECK_ERR(err, CONC_ETIMEDOUT);
            CHECK(strstr(conc_future_error_message(f[i]), "timeout") != NULL);
            /* the detail tells a task's timeout from the wait's */
            CHECK(strstr(conc_errdetail(), "conc_future_result: the task "
                                           "failed with CONC_ETIMEDOUT: ") !=
                  NULL);
        } else {
            CHECK_OK(err);
            CHECK_EQ(int_out(&m), vals[i] * vals[i]);
        }
        conc_msg_free(&m);
        conc_future_free(f[i]);
    }
    CHECK(th_now() - t0 >= 0.2);
    /* a map with a timed-out item */
    conc_msg in[6], out[6];
    int mv[6] = { 1, 2, -3000, 4, 5, 6 };
    for (int i = 0; i < 6; i++) {
        in[i].data = &mv[i];
        in[i].len = sizeof mv[i];
    }
    CHECK_ERR(conc_pool_map(p, t_hang, in, 6, out,
                            &(conc_map_opts){ .chunksize = 3 }),
              CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "conc_pool_map: item 2 failed with "
                                   "CONC_ETIMEDOUT") != NULL);
    for (int i = 0; i < 6; i++) {
        if (mv[i] > 0) {
            CHECK_EQ(int_out(&out[i]), mv[i] * mv[i]);
        }
        conc_msg_free(&out[i]);
    }
    conc_pool_free(p);
}

/* One task at a time, the way conc_pool_apply runs: submit sends a lone
 * task straight to an idle worker and the caller waiting in
 * conc_future_result collects the result from the ring itself.  Every
 * tenth task kills its worker while the caller is draining that ring:
 * exactly those fail, with CONC_EWORKERDIED, and the next task runs on a
 * replacement.  The second half polls with a zero timeout (the single
 * help of a poll) instead of waiting. */
TEST(crash_one_at_a_time)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 2 }));
    int died = 0;
    for (int i = 0; i < 80; i++) {
        int v = i % 10 == 3 ? -4 : i;
        conc_future *f;
        CHECK_OK(conc_pool_submit(p, t_crash, &v, sizeof v, &f));
        conc_msg m;
        int err;
        if (i < 40) {
            err = conc_future_result(f, &m, 30);
        } else {
            double t0 = th_now();
            while ((err = conc_future_result(f, &m, 0)) == CONC_ETIMEDOUT) {
                CHECK(th_now() - t0 < 30);
            }
        }
        if (v < 0) {
            CHECK_ERR(err, CONC_EWORKERDIED);
            CHECK(m.data == NULL);
            CHECK(strstr(conc_future_error_message(f), "died: ") != NULL);
            died++;
        } else {
            CHECK_OK(err);
            CHECK_EQ(int_out(&m), v * v);
            conc_msg_free(&m);
        }
        conc_future_free(f);
    }
    CHECK_EQ(died, 8);
    /* and a stream after it: every result right, in order */
    enum { N = 300 };
    conc_future *fs[N];
    for (int i = 0; i < N; i++) {
        CHECK_OK(conc_pool_submit(p, t_square, &i, sizeof i, &fs[i]));
    }
    for (int i = 0; i < N; i++) {
        conc_msg m;
        CHECK_OK(conc_future_result(fs[i], &m, 30));
        CHECK_EQ(int_out(&m), i * i);
        conc_msg_free(&m);
        conc_future_free(fs[i]);
    }
    conc_pool_free(p);
}

/* Several threads run tasks one at a time on one pool (so waiters take
 * turns collecting each other's results) while some tasks kill their
 * workers: each thread gets exactly its own results and failures. */
struct lone_arg {
    conc_pool *p;
    int base;
    _Atomic int *bad;
};

static void *lone_thread(void *arg)
{
    struct lone_arg *a = arg;
    for (int i = 0; i < 60; i++) {
        int v = i % 20 == 11 ? -4 : a->base + i;
        conc_msg m;
        int err = conc_pool_apply(a->p, t_crash, &v, sizeof v, &m, 30);
        bool ok = v < 0 ? err == CONC_EWORKERDIED
                        : err == 0 && int_out(&m) == v * v;
        if (!ok) {
            atomic_fetch_add(a->bad, 1);
        }
        conc_msg_free(&m);
    }
    return NULL;
}

TEST(crash_one_at_a_time_many_waiters)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 2 }));
    _Atomic int bad = 0;
    enum { T = 3 };
    pthread_t th[T];
    struct lone_arg a[T];
    for (int t = 0; t < T; t++) {
        a[t] = (struct lone_arg){ p, 1000 * (t + 1), &bad };
        CHECK_EQ(pthread_create(&th[t], NULL, lone_thread, &a[t]), 0);
    }
    for (int t = 0; t < T; t++) {
        CHECK_EQ(pthread_join(th[t], NULL), 0);
    }
    CHECK_EQ(atomic_load(&bad), 0);
    conc_pool_free(p);
}

/* A task past its timeout while its caller waits (and helps): it fails
 * with CONC_ETIMEDOUT in about the timeout, not at some idle period. */
TEST(timeout_one_at_a_time)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){
                                   .workers = 1,
                                   .task_timeout = CONC_TIMEOUT(0.2) }));
    for (int r = 0; r < 3; r++) {
        int x = 7;
        conc_msg m;
        CHECK_OK(conc_pool_apply(p, t_square, &x, sizeof x, &m, 30));
        CHECK_EQ(int_out(&m), 49);
        conc_msg_free(&m);
        int ms = 5000;
        double t0 = th_now();
        CHECK_ERR(conc_pool_apply(p, t_sleep, &ms, sizeof ms, &m, 30),
                  CONC_ETIMEDOUT);
        double took = th_now() - t0;
        CHECK(took >= 0.19);
        CHECK(took < 3.0);
    }
    conc_pool_free(p);
}

TEST(task_timeout_processes) { timeouts(CONC_PROCESSES); }
TEST(task_timeout_threads) { timeouts(CONC_THREADS); }

/* CONC_TIMEOUT(CONC_FOREVER), and an infinite one, set no limit: a task
 * of 0.3 s runs to its end. */
static void timeout_forever(conc_pool_kind kind)
{
    double limits[2] = { CONC_FOREVER, 1.0 / 0.0 };
    for (int i = 0; i < 2; i++) {
        conc_pool *p;
        CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){
                                       .kind = kind,
                                       .workers = 1,
                                       .task_timeout =
                                           CONC_TIMEOUT(limits[i]) }));
        int x = 300;
        conc_msg m;
        CHECK_OK(conc_pool_apply(p, t_sleep, &x, sizeof x, &m, 30));
        CHECK_EQ(int_out(&m), 300);
        conc_msg_free(&m);
        conc_pool_free(p);
    }
}

TEST(task_timeout_forever_processes) { timeout_forever(CONC_PROCESSES); }
TEST(task_timeout_forever_threads) { timeout_forever(CONC_THREADS); }

static void terminate_hang(conc_pool_kind kind)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .kind = kind,
                                                  .workers = 2 }));
    enum { N = 30 };
    conc_future *f[N];
    int ms = kind == CONC_THREADS ? 300 : 60000;
    for (int i = 0; i < N; i++) {
        CHECK_OK(conc_pool_submit(p, t_sleep, &ms, sizeof ms, &f[i]));
    }
    conc_msg in = { &ms, sizeof ms };
    conc_iter *it;
    CHECK_OK(conc_pool_imap(p, t_sleep, &in, 1, &it, NULL));
    th_sleep(0.05);
    double t0 = th_now();
    CHECK_OK(conc_pool_terminate(p));
    CHECK_OK(conc_pool_join(p, 10));
    CHECK(th_now() - t0 < 5);
    for (int i = 0; i < N; i++) {
        CHECK(conc_future_done(f[i]));
        CHECK_ERR(conc_future_result(f[i], NULL, 0), CONC_ECANCELLED);
        conc_future_free(f[i]);
    }
    conc_msg m;
    CHECK_ERR(conc_iter_next(it, &m, 1), CONC_ECANCELLED);
    CHECK(strstr(conc_errdetail(), "conc_iter_next: item 0 failed with "
                                   "CONC_ECANCELLED: the pool was "
                                   "terminated") != NULL);
    CHECK_ERR(conc_iter_next(it, &m, 1), CONC_ECLOSED);
    conc_iter_free(it);
    conc_pool_free(p);
    if (kind == CONC_THREADS) {
        th_sleep(0.4); /* let the abandoned threads end before the check */
    }
}

TEST(terminate_hanging_processes) { terminate_hang(CONC_PROCESSES); }
TEST(terminate_hanging_threads) { terminate_hang(CONC_THREADS); }

/* A done-callback run by the pool's manager thread (nobody waits for its
 * future) waits with no limit for a second future of the same pool.  The
 * manager sits in that callback, yet the second task's fate must still
 * be settled: a crashed worker reaped (CONC_EWORKERDIED), a task past
 * task_timeout killed (CONC_ETIMEDOUT), a terminate from another thread
 * carried out (CONC_ECANCELLED, and terminate returns). */
struct cbwait {
    int main_tid; /* the test's thread: a callback run there waits not */
    conc_pool *p;
    int (*fn)(const void *, size_t, conc_buf *, void *);
    int val;
    int err;
    _Atomic int tid;
    _Atomic int started;
    _Atomic int done;
};

static void cb_waits_forever(conc_future *f, void *arg)
{
    (void)f;
    struct cbwait *w = arg;
    int me = (int)syscall(SYS_gettid);
    atomic_store(&w->tid, me);
    if (me == w->main_tid) {
        /* Run at once by the add (the first task was done already): not
         * the case under test, and a wait here could be long. */
        w->err = 2000;
        atomic_store(&w->done, 1);
        return;
    }
    conc_future *g = NULL;
    int err = conc_pool_submit(w->p, w->fn, &w->val, sizeof w->val, &g);
    atomic_store(&w->started, 1);
    if (err == 0) {
        err = conc_future_result(g, NULL, CONC_FOREVER);
        conc_future_free(g);
    } else {
        err = 1000; /* not a CONC_E* code: the submit itself failed */
    }
    w->err = err;
    atomic_store(&w->done, 1);
}

/* Runs cb_waits_forever from the manager; terminate: terminate the pool
 * once the callback waits.  Returns the code its wait ended with. */
static int manager_callback_wait(conc_pool *p, struct cbwait *w, bool terminate)
{
    w->p = p;
    w->main_tid = (int)syscall(SYS_gettid);
    atomic_store(&w->done, 0);
    atomic_store(&w->started, 0);
    for (int tries = 0;; tries++) {
        CHECK(tries < 50);
        int ms = 20;
        conc_future *f;
        CHECK_OK(conc_pool_submit(p, t_sleep, &ms, sizeof ms, &f));
        CHECK_OK(conc_future_add_done_callback(f, cb_waits_forever, w));
        conc_future_free(f);
        if (atomic_load(&w->tid) != (int)syscall(SYS_gettid)) {
            break; /* not run here at once: the manager will run it */
        }
        /* done already at the add (a slow machine): it ran here; again */
        CHECK_EQ(atomic_load(&w->done), 1);
        CHECK_EQ(w->err, 2000);
        atomic_store(&w->done, 0);
        atomic_store(&w->started, 0);
        atomic_store(&w->tid, 0);
    }
    double t0 = th_now();
    if (terminate) {
        while (atomic_load(&w->started) == 0) {
            CHECK(th_now() - t0 < 20);
            th_sleep(0.001);
        }
        th_sleep(0.1);
        double t1 = th_now();
        CHECK_OK(conc_pool_terminate(p));
        CHECK(th_now() - t1 < 10);
    }
    while (atomic_load(&w->done) == 0) {
        CHECK(th_now() - t0 < 20);
        th_sleep(0.001);
    }
    CHECK(atomic_load(&w->tid) != (int)syscall(SYS_gettid));
    return w->err;
}

TEST(manager_callback_waiting_on_a_crash)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 2 }));
    struct cbwait w = { .fn = t_crash, .val = -4 };
    CHECK_ERR(manager_callback_wait(p, &w, false), CONC_EWORKERDIED);
    int x = 9;
    conc_msg m;
    CHECK_OK(conc_pool_apply(p, t_square, &x, sizeof x, &m, 30));
    CHECK_EQ(int_out(&m), 81);
    conc_msg_free(&m);
    conc_pool_free(p);
}

TEST(manager_callback_waiting_on_a_timeout)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){
                                   .workers = 2,
                                   .task_timeout = CONC_TIMEOUT(0.3) }));
    struct cbwait w = { .fn = t_hang, .val = -60000 };
    CHECK_ERR(manager_callback_wait(p, &w, false), CONC_ETIMEDOUT);
    conc_pool_free(p);
}

TEST(manager_callback_waiting_when_terminated)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 2 }));
    struct cbwait w = { .fn = t_hang, .val = -60000 };
    CHECK_ERR(manager_callback_wait(p, &w, true), CONC_ECANCELLED);
    CHECK_OK(conc_pool_join(p, 10));
    conc_pool_free(p);
}

/* Terminate fails the running task and the queued one in one batch: a
 * callback of one that waits for the other finds it failed already.
 * (The thread that fails them runs the callbacks - the manager, or the
 * caller of terminate for a thread pool - so a callback run before the
 * other future was failed would wait for work queued behind itself.)
 * Processes: the running task has the callback; threads: the queued one
 * (a thread pool fails the queued tasks first). */
struct cbother {
    conc_future *other;
    _Atomic int err;
};

static void cb_waits_for_other(conc_future *f, void *arg)
{
    (void)f;
    struct cbother *c = arg;
    conc_future *g = __atomic_load_n(&c->other, __ATOMIC_SEQ_CST);
    atomic_store(&c->err, conc_future_result(g, NULL, 10));
}

static void terminate_one_batch(conc_pool_kind kind)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .kind = kind,
                                                  .workers = 1 }));
    int ms = kind == CONC_THREADS ? 1500 : 60000, x = 4;
    conc_future *run, *queued;
    CHECK_OK(conc_pool_submit(p, t_sleep, &ms, sizeof ms, &run));
    CHECK_OK(conc_pool_submit(p, t_square, &x, sizeof x, &queued));
    struct cbother c = { .err = 1000 };
    conc_future *with_cb = kind == CONC_THREADS ? queued : run;
    __atomic_store_n(&c.other, kind == CONC_THREADS ? run : queued,
                     __ATOMIC_SEQ_CST);
    CHECK_OK(conc_future_add_done_callback(with_cb, cb_waits_for_other, &c));
    th_sleep(0.1);
    CHECK(!conc_future_done(run) && !conc_future_done(queued));
    double t0 = th_now();
    CHECK_OK(conc_pool_terminate(p));
    CHECK(th_now() - t0 < 5);
    double t1 = th_now();
    while (atomic_load(&c.err) == 1000) {
        CHECK(th_now() - t1 < 20);
        th_sleep(0.001);
    }
    CHECK_ERR(atomic_load(&c.err), CONC_ECANCELLED);
    CHECK_ERR(conc_future_result(run, NULL, 0), CONC_ECANCELLED);
    /* (a process pool may have sent "queued" to the worker's ring
     * already: then it fails as a task that ran, not as a cancelled one) */
    CHECK_ERR(conc_future_result(queued, NULL, 0), CONC_ECANCELLED);
    conc_future_free(run);
    conc_future_free(queued);
    conc_pool_free(p);
    if (kind == CONC_THREADS) {
        th_sleep(1.6); /* let the abandoned thread end before the check */
    }
}

TEST(terminate_fails_running_and_queued_in_one_batch_processes)
{
    terminate_one_batch(CONC_PROCESSES);
}
TEST(terminate_fails_running_and_queued_in_one_batch_threads)
{
    terminate_one_batch(CONC_THREADS);
}

/* Results drained in one round are completed as one batch: a callback of
 * the first that waits for the second finds it done (no limit given). */
TEST(callback_waits_for_a_future_completed_in_the_same_round)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 2 }));
    for (int round = 0; round < 10; round++) {
        int ms = 100;
        conc_future *a, *b;
        CHECK_OK(conc_pool_submit(p, t_sleep, &ms, sizeof ms, &a));
        CHECK_OK(conc_pool_submit(p, t_sleep, &ms, sizeof ms, &b));
        struct cbother c = { .err = 1000 };
        __atomic_store_n(&c.other, b, __ATOMIC_SEQ_CST);
        CHECK_OK(conc_future_add_done_callback(a, cb_waits_for_other, &c));
        double t0 = th_now();
        while (atomic_load(&c.err) == 1000) {
            CHECK(th_now() - t0 < 20);
            th_sleep(0.001);
        }
        CHECK_OK(atomic_load(&c.err));
        conc_future_free(a);
        conc_future_free(b);
    }
    conc_pool_free(p);
}

/* Kills random workers while maps run: every result is right or
 * CONC_EWORKERDIED, nothing hangs. */
struct killer {
    _Atomic bool stop;
    _Atomic int kills;
};

static void *killer_main(void *arg)
{
    struct killer *k = arg;
    unsigned seed = 12345;
    while (!atomic_load(&k->stop)) {
        th_sleep(0.003 + (rand_r(&seed) % 10) / 1000.0);
        /* our children named PoolWorker-* */
        pid_t pids[64];
        int n = 0;
        char path[300];
        DIR *d = opendir("/proc");
        struct dirent *de;
        while (d != NULL && (de = readdir(d)) != NULL && n < 64) {
            int pid = atoi(de->d_name);
            if (pid <= 0) {
                continue;
            }
            snprintf(path, sizeof path, "/proc/%d/stat", pid);
            FILE *fp = fopen(path, "r");
            if (fp == NULL) {
                continue;
            }
            char buf[256] = { 0 };
            if (fgets(buf, sizeof buf, fp) == NULL) {
                buf[0] = '\0';
            }
            fclose(fp);
            char *c = strchr(buf, '(');
            char *e = strrchr(buf, ')');
            int ppid = 0;
            char st;
            if (c && e && strncmp(c + 1, "PoolWorker-", 11) == 0 &&
                sscanf(e + 2, "%c %d", &st, &ppid) == 2 && ppid == getpid()) {
                pids[n++] = pid;
            }
        }
        if (d != NULL) {
            closedir(d);
        }
        if (n > 0) {
            kill(pids[rand_r(&seed) % (unsigned)n], SIGKILL);
            atomic_fetch_add(&k->kills, 1);
        }
    }
    return NULL;
}

static int t_work(const void *in, size_t len, conc_buf *out, void *ctx)
{
    volatile long s = 0;
    for (int i = 0; i < 20000; i++) {
        s += i;
    }
    (void)s;
    return t_square(in, len, out, ctx);
}

TEST_T(random_kills_during_map, 120)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 2 }));
    struct killer k = { false, 0 };
    pthread_t th;
    pthread_create(&th, NULL, killer_main, &k);
    enum { N = 2000 };
    static int vals[N];
    static conc_msg in[N], out[N];
    for (int i = 0; i < N; i++) {
        vals[i] = i;
        in[i].data = &vals[i];
        in[i].len = sizeof vals[i];
    }
    int died = 0;
    for (int round = 0; round < 6; round++) {
        int err = conc_pool_map(p, t_work, in, N, out,
                                &(conc_map_opts){ .chunksize =
                                                      (size_t)(round * 7) });
        CHECK(err == 0 || err == CONC_EWORKERDIED);
        for (int i = 0; i < N; i++) {
            if (out[i].len == 0) {
                died++;
            } else {
                CHECK_EQ(int_out(&out[i]), i * i);
            }
            conc_msg_free(&out[i]);
        }
    }
    atomic_store(&k.stop, true);
    pthread_join(th, NULL);
    CHECK(atomic_load(&k.kills) > 0);
    /* a death fails at most the item running, so never more than kills */
    CHECK(died <= atomic_load(&k.kills));
    int x = 5;
    conc_msg m;
    CHECK_OK(conc_pool_apply(p, t_square, &x, sizeof x, &m, 30));
    CHECK_EQ(int_out(&m), 25);
    conc_msg_free(&m);
    conc_pool_free(p);
}

/* ---- guards a loose bound would hide ------------------------------------- */

/* A task past task_timeout is failed close to the time asked: 0.2 s asked,
 * each of four hanging tasks fails after at least 0.2 s and the four take
 * well under the 8 s a timeout enforced at 10x would cost (each round also
 * replaces a process worker or a thread). */
static void timeout_margin(conc_pool_kind kind)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){
                                   .kind = kind,
                                   .workers = 1,
                                   .task_timeout = CONC_TIMEOUT(0.2) }));
    double total = 0;
    for (int r = 0; r < 4; r++) {
        int v = -10000; /* hangs 10 s */
        conc_future *f;
        double t0 = th_now();
        CHECK_OK(conc_pool_submit(p, t_hang, &v, sizeof v, &f));
        conc_msg m;
        CHECK_ERR(conc_future_result(f, &m, 30), CONC_ETIMEDOUT);
        double took = th_now() - t0;
        CHECK(took >= 0.2);
        total += took;
        conc_future_free(f);
    }
    CHECK(total < 4 * 0.6);
    /* and the pool works on */
    int x = 7;
    conc_msg m;
    CHECK_OK(conc_pool_apply(p, t_square, &x, sizeof x, &m, 30));
    CHECK_EQ(int_out(&m), 49);
    conc_msg_free(&m);
    conc_pool_free(p);
}

TEST(task_timeout_honoured_within_a_margin_processes)
{
    timeout_margin(CONC_PROCESSES);
}

TEST(task_timeout_honoured_within_a_margin_threads)
{
    timeout_margin(CONC_THREADS);
}

/* A task that starts while nothing else runs, and so while the pool's
 * timer sleeps its longest (0.1 s for threads), is still failed at its
 * timeout: 80 ms of work against a timeout of 20 ms.  Each round starts
 * 5 ms after the last timeout, early in that sleep. */
static void timeout_of_a_task_started_while_idle(conc_pool_kind kind)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){
                                   .kind = kind,
                                   .workers = 1,
                                   .task_timeout = CONC_TIMEOUT(0.02) }));
    for (int r = 0; r < 3; r++) {
        th_sleep(0.005);
        int v = -80;
        conc_msg m;
        CHECK_ERR(conc_pool_apply(p, t_hang, &v, sizeof v, &m, 30),
                  CONC_ETIMEDOUT);
    }
    conc_pool_free(p);
}

TEST(task_timeout_of_a_task_started_while_idle_processes)
{
    timeout_of_a_task_started_while_idle(CONC_PROCESSES);
}

TEST(task_timeout_of_a_task_started_while_idle_threads)
{
    timeout_of_a_task_started_while_idle(CONC_THREADS);
}

/* A worker killed while tasks wait in its ring that it never started:
 * none of them fails.  The single worker is stopped (SIGSTOP) between
 * tasks, five tasks are queued to it, and it is killed; its replacement
 * runs all five.  Only a task that was running when its worker died may
 * fail, and none was.  Five rounds. */
TEST(killed_worker_fails_no_task_it_had_not_started)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 1 }));
    for (int r = 0; r < 5; r++) {
        conc_msg m;
        CHECK_OK(conc_pool_apply(p, t_whoami, NULL, 0, &m, 30));
        pid_t pid = (pid_t)int_out(&m);
        conc_msg_free(&m);
        CHECK_EQ(kill(pid, SIGSTOP), 0);
        /* Stopped for sure before anything is queued. */
        for (double end = th_now() + 10;;) {
            char path[64], st[512] = { 0 };
            snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
            FILE *fp = fopen(path, "r");
            CHECK(fp != NULL);
            CHECK(fgets(st, sizeof st, fp) != NULL);
            fclose(fp);
            char *rp = strrchr(st, ')');
            if (rp != NULL && rp[2] == 'T') {
                break;
            }
            CHECK(th_now() < end);
            th_sleep(0.001);
        }
        conc_future *f[5];
        int v[5];
        for (int i = 0; i < 5; i++) {
            v[i] = r * 10 + i;
            CHECK_OK(conc_pool_submit(p, t_square, &v[i], sizeof v[i], &f[i]));
        }
        th_sleep(0.05); /* let the manager write them into the ring */
        CHECK_EQ(kill(pid, SIGKILL), 0);
        for (int i = 0; i < 5; i++) {
            CHECK_OK(conc_future_result(f[i], &m, 30));
            CHECK_EQ(int_out(&m), v[i] * v[i]);
            conc_msg_free(&m);
            conc_future_free(f[i]);
        }
    }
    conc_pool_free(p);
}

/* ---- a task that scribbles on its worker's result ring ------------------- */

#include "pool_proc_int.h"

/* Writes a record that lies into the worker's result ring and publishes
 * it, as a task with a wild pointer could; how it lies is x % 8 / 2, and
 * odd ones would then crash the worker while even ones would return
 * normally, were they not killed first. */
static int t_scribble(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    int x = int_in(in, len);
    unsigned char *ring;
    size_t cap;
    _Atomic uint64_t *tailp;
    uint64_t seq;
    uint32_t item;
    if (!conc__pool_worker_result_ring(&ring, &cap, &tailp, &seq, &item)) {
        return 99;
    }
    uint64_t tail = atomic_load(tailp);
    /* A forged result for this very task (its record number and item,
     * type 3), so only the check named below stands between the lie and
     * the manager's copy: {len, type, item, code, seq, outlen, errlen}. */
    uint32_t *w32 = (uint32_t *)(void *)(ring + tail % cap);
    uint64_t *w64 = (uint64_t *)(void *)(ring + tail % cap);
    w32[1] = 3;
    w32[2] = item;
    w32[3] = 0;
    w64[2] = seq;
    w64[4] = 0;
    uint64_t publish = tail + 48;
    switch (x % 8 / 2) {
    case 0: /* a record longer than the ring, its output filling it */
        w32[0] = (uint32_t)cap * 2;
        w64[3] = (uint64_t)cap * 2 - 40;
        publish = tail + cap;
        break;
    case 1: /* a 48-byte record whose output is 2^40 bytes long */
        w32[0] = 48;
        w64[3] = (uint64_t)1 << 40;
        break;
    case 2: /* a tail far past anything written */
        w32[0] = 48;
        w64[3] = 8;
        publish = tail + ((uint64_t)1 << 62);
        break;
    default: /* garbage: all ones */
        memset(w64, 0xff, 48);
        break;
    }
    atomic_store(tailp, publish);
    /* The manager reads rings every few ms while tasks are out: give it
     * time to meet the lie before this worker's own result could cover
     * it (the manager kills the worker meanwhile). */
    th_sleep(2.0);
    if (x % 2 == 1) {
        abort();
    }
    return conc_buf_append(out, &x, sizeof x);
}

/* The task that wrote over its ring fails, alone, with CONC_ECORRUPT and
 * a message naming the worker; the parent survives; the tasks queued
 * behind it succeed on a replacement.  Every kind of lie, returning and
 * crashing. */
TEST(task_scribbling_on_its_ring_fails_only_itself)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 1 }));
    for (int x = 0; x < 8; x++) {
        conc_future *bad, *good[3];
        int v[3] = { x, x + 100, x + 200 };
        CHECK_OK(conc_pool_submit(p, t_scribble, &x, sizeof x, &bad));
        for (int i = 0; i < 3; i++) {
            CHECK_OK(conc_pool_submit(p, t_square, &v[i], sizeof v[i],
                                      &good[i]));
        }
        conc_msg m;
        int err = conc_future_result(bad, &m, 30);
        CHECK_ERR(err, CONC_ECORRUPT);
        const char *msg = conc_future_error_message(bad);
        CHECK(msg != NULL && strstr(msg, "wrote over the pool's memory"));
        CHECK(strstr(conc_errdetail(), "conc_future_result: the task failed "
                                       "with CONC_ECORRUPT: ") != NULL);
        conc_future_free(bad);
        for (int i = 0; i < 3; i++) {
            CHECK_OK(conc_future_result(good[i], &m, 30));
            CHECK_EQ(int_out(&m), v[i] * v[i]);
            conc_msg_free(&m);
            conc_future_free(good[i]);
        }
    }
    conc_pool_free(p);
}

/* Inside a task run by a process worker: its own task record (NULL
 * elsewhere), and *next, the record queued behind it, once published
 * (NULL if none is within 5 s).  A task record: u32 len, type, nitems,
 * state; u64 seq, fn; then each input as a u64 length and its bytes. */
static uint32_t *task_records(uint32_t **next)
{
    unsigned char *ring;
    size_t cap;
    uint64_t pos;
    _Atomic uint64_t *tailp;
    *next = NULL;
    if (!conc__pool_worker_task_ring(&ring, &cap, &pos, &tailp)) {
        return NULL;
    }
    uint32_t *own = (uint32_t *)(ring + pos % cap);
    uint64_t at = pos + own[0];
    for (int i = 0; i < 5000; i++) {
        if (atomic_load(tailp) > at) {
            uint32_t *r = (uint32_t *)(ring + at % cap);
            if (r[1] != 1) {
                *next = r;
                break;
            }
            at += r[0]; /* a pad at the ring's end: the record follows */
            continue;
        }
        th_sleep(0.001);
    }
    return own;
}

/* Writes over the task record queued behind its own in the worker's task
 * ring, as a task with a wild pointer could: its state (taken back), its
 * type (a pad) or its count of items (none), by x % 3.  The worker then
 * steps past that task without running it. */
static int t_skip_next(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    int x = int_in(in, len);
    uint32_t *r;
    if (task_records(&r) == NULL || r == NULL) {
        return 99;
    }
    switch (x % 3) {
    case 0:
        r[3] = 3;
        break;
    case 1:
        r[1] = 1;
        break;
    default:
        r[2] = 0;
        break;
    }
    return conc_buf_append(out, &x, sizeof x);
}

/* Writes over a length its worker reads from its task ring, by x % 5:
 * the next record's (0, then past the ring), its own record's (which
 * the worker reads again once the task returns), the next record's
 * first input's (past the record), or both of the next record's. */
static int t_bad_len(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    int x = int_in(in, len);
    uint32_t *r, *own = task_records(&r);
    if (own == NULL || r == NULL) {
        return 99;
    }
    uint64_t huge = (uint64_t)1 << 40;
    if (x % 5 == 0) {
        r[0] = 0;
    } else if (x % 5 == 1) {
        r[0] = 0xfffffff8u;
    } else if (x % 5 == 2) {
        own[0] += 4096;
    } else {
        if (x % 5 == 4) {
            r[0] = 0xfffffff8u; /* and an input inside that */
            huge = 0xc0000000u;
        }
        /* the first input's length follows the 32-byte head */
        memcpy((unsigned char *)r + 32, &huge, sizeof huge);
    }
    return conc_buf_append(out, &x, sizeof x);
}

/* How often t_input_len ran (shared with the workers). */
static _Atomic int *len_runs;

/* Counts its run and returns the length of its input, as a uint64_t. */
static int t_input_len(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)in;
    (void)ctx;
    atomic_fetch_add(len_runs, 1);
    uint64_t n = len;
    return conc_buf_append(out, &n, sizeof n);
}

/* The scribbling task bad itself succeeded with its own input x, and
 * bad is freed. */
static void scribbler_returned(conc_future *bad, int x)
{
    conc_msg m;
    CHECK_OK(conc_future_result(bad, &m, 30));
    CHECK_EQ(int_out(&m), x);
    conc_msg_free(&m);
    conc_future_free(bad);
}

/* A worker never trusts a length in its task ring: it reads each once,
 * checks it against the ring, and uses its copy.  A task that wrote over
 * one makes its worker exit (or changes nothing, for its own record);
 * the task behind it, not started, runs on the replacement, and nothing
 * is lost or hangs. */
TEST(task_scribbling_on_ring_lengths_loses_no_task)
{
    len_runs = mmap(NULL, sizeof *len_runs, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(len_runs != MAP_FAILED);
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 1 }));
    for (int x = 0; x < 5; x++) {
        conc_future *bad, *next;
        int v = x + 100;
        atomic_store(len_runs, 0);
        CHECK_OK(conc_pool_submit(p, t_bad_len, &x, sizeof x, &bad));
        CHECK_OK(conc_pool_submit(p, t_input_len, &v, sizeof v, &next));
        scribbler_returned(bad, x);
        /* The task behind ran once, with its own input. */
        conc_msg m;
        CHECK_OK(conc_future_result(next, &m, 10));
        uint64_t n = 0;
        CHECK_EQ(m.len, sizeof n);
        memcpy(&n, m.data, sizeof n);
        CHECK_EQ(n, sizeof v);
        conc_msg_free(&m);
        conc_future_free(next);
        CHECK_EQ(atomic_load(len_runs), 1);
    }
    conc_pool_free(p);
    munmap((void *)len_runs, sizeof *len_runs);
}

/* A task that writes over the record behind its own makes its worker step
 * past a task it never runs.  That task's result would never come: the
 * manager sees the worker with every record behind it and a result still
 * owed, and the task fails with CONC_ECORRUPT instead of waiting for
 * ever.  The worker is replaced; the next task succeeds. */
TEST(task_scribbling_on_the_record_behind_it_fails_that_task_not_hangs)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 1 }));
    for (int x = 0; x < 3; x++) {
        conc_future *bad, *victim, *after;
        int v = x + 100, u = x + 200;
        CHECK_OK(conc_pool_submit(p, t_skip_next, &x, sizeof x, &bad));
        CHECK_OK(conc_pool_submit(p, t_square, &v, sizeof v, &victim));
        scribbler_returned(bad, x);
        conc_msg m;
        CHECK_ERR(conc_future_result(victim, &m, 10), CONC_ECORRUPT);
        const char *msg = conc_future_error_message(victim);
        CHECK(msg != NULL && strstr(msg, "wrote over the pool's memory") &&
              strstr(msg, "no result for a task it went past"));
        conc_future_free(victim);
        CHECK_OK(conc_pool_submit(p, t_square, &u, sizeof u, &after));
        CHECK_OK(conc_future_result(after, &m, 30));
        CHECK_EQ(int_out(&m), u * u);
        conc_msg_free(&m);
        conc_future_free(after);
    }
    conc_pool_free(p);
}
