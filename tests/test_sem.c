/* test_sem.c - conc_sem: Python's Semaphore and BoundedSemaphore (ported
 * from CPython's Lib/test/lock_tests.py: BaseSemaphoreTests,
 * SemaphoreTests, BoundedSemaphoreTests), across threads and processes. */
#include "sync_test_util.h"

#include "conc_int.h"
#include "sync_int.h"

#include <limits.h>
#include <math.h>

TEST(sem_bad_arguments)
{
    conc_sem *s = (conc_sem *)1;
    CHECK_ERR(conc_sem_new(NULL, NULL), CONC_EINVAL);
    /* Python: ValueError("semaphore initial value must be >= 0"). */
    CHECK_ERR(conc_sem_new(&s, &(conc_sem_opts){ .value = -1 }), CONC_EINVAL);
    CHECK(s == NULL);
    CHECK_ERR(conc_sem_new(&s, &(conc_sem_opts){ .value = LONG_MAX }),
              CONC_EINVAL);
    CHECK_ERR(conc_sem_acquire(NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_sem_release(NULL, 1), CONC_EINVAL);
    CHECK_EQ(conc_sem_value(NULL), CONC_EINVAL);
    conc_sem_free(NULL);
    conc__fault_arm(1);
    CHECK_ERR(conc_sem_new(&s, NULL), CONC_ENOMEM);
    CHECK(s == NULL);
    conc__fault_arm(0);
    CHECK_OK(conc_sem_new(&s, NULL));
    CHECK_ERR(conc_sem_acquire(s, NAN), CONC_EINVAL);
    CHECK_ERR(conc_sem_acquire(s, -0.1), CONC_EINVAL);
    CHECK_EQ(conc_sem_value(s), 1); /* the bad calls took nothing */
    CHECK_ERR(conc_sem_release(s, 0), CONC_EINVAL);
    CHECK_EQ(conc_sem_value(s), 1);
    CHECK_ERR(conc_sem_release(s, UINT_MAX), CONC_EINVAL);
    CHECK_EQ(conc_sem_value(s), 1);
    conc_sem_free(s);
}

TEST(sem_initial_values)
{
    conc_sem *s;
    CHECK_OK(conc_sem_new(&s, NULL)); /* Python's default: 1 */
    CHECK_EQ(conc_sem_value(s), 1);
    conc_sem_free(s);
    CHECK_OK(conc_sem_new(&s, &(conc_sem_opts){ .value = 0 }));
    CHECK_EQ(conc_sem_value(s), 0);
    CHECK_ERR(conc_sem_acquire(s, 0), CONC_ETIMEDOUT);
    conc_sem_free(s);
    CHECK_OK(conc_sem_new(&s, &(conc_sem_opts){ .value = 3 }));
    CHECK_OK(conc_sem_acquire(s, 0));
    CHECK_OK(conc_sem_acquire(s, CONC_FOREVER));
    CHECK_OK(conc_sem_acquire(s, 1));
    CHECK_EQ(conc_sem_value(s), 0);
    CHECK_ERR(conc_sem_acquire(s, 0), CONC_ETIMEDOUT);
    CHECK_OK(conc_sem_release(s, 5)); /* unbounded: past the initial 3 */
    CHECK_EQ(conc_sem_value(s), 5);
    conc_sem_free(s);
}

/* lock_tests.py: BoundedSemaphoreTests.test_release_unacquired. */
TEST(sem_bounded_over_release_adds_nothing)
{
    conc_sem *s;
    CHECK_OK(conc_sem_new(&s, &(conc_sem_opts){ .value = 2, .bounded = true }));
    CHECK_ERR(conc_sem_release(s, 1), CONC_EINVAL);
    CHECK_EQ(conc_sem_value(s), 2);
    CHECK_OK(conc_sem_acquire(s, 0));
    CHECK_ERR(conc_sem_release(s, 2), CONC_EINVAL);
    CHECK_EQ(conc_sem_value(s), 1);
    CHECK_OK(conc_sem_release(s, 1));
    CHECK_EQ(conc_sem_value(s), 2);
    CHECK_OK(conc_sem_acquire(s, 0));
    CHECK_OK(conc_sem_acquire(s, 0));
    CHECK_OK(conc_sem_release(s, 2));
    CHECK_EQ(conc_sem_value(s), 2);
    conc_sem_free(s);
    CHECK_OK(conc_sem_new(&s, &(conc_sem_opts){ .value = 0, .bounded = true }));
    CHECK_ERR(conc_sem_release(s, 1), CONC_EINVAL);
    CHECK_EQ(conc_sem_value(s), 0);
    conc_sem_free(s);
}

/* A named semaphore's bound is the segment's: a peer may rewrite it
 * while a release checks it.  The release reads it once, so the limit it
 * checks is the one it uses, and no rewrite lets the value past
 * INT32_MAX (the release used to read it twice: a bound of 1 checked and
 * 0xffffffff used let a release of a value at INT32_MAX through, and the
 * sanitizer builds' invariant check aborted the process). */
struct sem_peer {
    conc_sem *s;
    atomic_int stop;
};

static void *sem_bound_flipper(void *arg)
{
    struct sem_peer *pr = arg;
    /* the region's words: magic, layout, value, sleepers, bound, ... */
    uint32_t *w = (uint32_t *)pr->s;
    while (!atomic_load(&pr->stop)) {
        __atomic_store_n(&w[2], (uint32_t)INT32_MAX, __ATOMIC_RELAXED);
        __atomic_store_n(&w[4], 1u, __ATOMIC_RELAXED);
        __atomic_store_n(&w[4], UINT32_MAX, __ATOMIC_RELAXED);
    }
    return NULL;
}

TEST(sem_bound_rewritten_by_a_peer_never_passes_int32_max)
{
    struct sem_peer pr = { 0 };
    CHECK_OK(conc_sem_new(&pr.s, &(conc_sem_opts){ .value = 1,
                                                   .bounded = true }));
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, sem_bound_flipper, &pr), 0);
    long passed = 0, seen = 0;
    /* The two reads of the bug are a few ns apart, and the peer thread
     * must run beside this one to land between them: the loop goes on
     * until this thread has seen the bound change 200000 times (the
     * peer ran beside it that often), or 10 s on a machine too busy to
     * run them side by side. */
    const uint32_t *bound = (const uint32_t *)pr.s + 4;
    uint32_t last = 0;
    double end = th_now() + 10.0;
    while (seen < 200000 && th_now() < end) {
        for (int k = 0; k < 256; k++) {
            uint32_t b = __atomic_load_n(bound, __ATOMIC_RELAXED);
            seen += b != last;
            last = b;
            int err = conc_sem_release(pr.s, 1);
            passed += err == 0;
            if (err != 0 && err != CONC_EINVAL) {
                CHECK_ERR(err, CONC_EINVAL);
            }
        }
    }
    atomic_store(&pr.stop, 1);
    pthread_join(t, NULL);
    /* every value was INT32_MAX or (at the start) the bound itself */
    CHECK_EQ(passed, 0);
    conc_sem_free(pr.s);
}

TEST(sem_timeout_lower_bound)
{
    conc_sem *s;
    CHECK_OK(conc_sem_new(&s, &(conc_sem_opts){ .value = 0 }));
    double t0 = th_now();
    CHECK_ERR(conc_sem_acquire(s, 0.1), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.1);
    CHECK(took < 1.0);
    conc_sem_free(s);
}

struct sw {
    conc_sem *s;
    atomic_int started;
    atomic_int passed;
    atomic_int inside, max_inside;
    int err;
};

static void *acquirer(void *arg)
{
    struct sw *w = arg;
    atomic_fetch_add(&w->started, 1);
    int err = conc_sem_acquire(w->s, 10);
    if (err != 0) {
        w->err = err;
        return NULL;
    }
    atomic_fetch_add(&w->passed, 1);
    return NULL;
}

/* lock_tests.py: test_acquire_contended / test_multirelease - release(n)
 * lets exactly n of the waiters through. */
TEST(sem_release_n_wakes_n)
{
    struct sw w = { 0 };
    CHECK_OK(conc_sem_new(&w.s, &(conc_sem_opts){ .value = 0 }));
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        t[i] = st_thread(acquirer, &w);
    }
    st_wait_for_int(&w.started, 6, 5);
    th_sleep(0.05);
    CHECK_EQ(atomic_load(&w.passed), 0);
    CHECK_OK(conc_sem_release(w.s, 2));
    st_wait_for_int(&w.passed, 2, 5);
    th_sleep(0.1);
    CHECK_EQ(atomic_load(&w.passed), 2);
    CHECK_OK(conc_sem_release(w.s, 1));
    st_wait_for_int(&w.passed, 3, 5);
    th_sleep(0.1);
    CHECK_EQ(atomic_load(&w.passed), 3);
    CHECK_OK(conc_sem_release(w.s, 4)); /* one more than the waiters */
    for (int i = 0; i < 6; i++) {
        st_join(t[i]);
    }
    CHECK_OK(w.err);
    CHECK_EQ(atomic_load(&w.passed), 6);
    CHECK_EQ(conc_sem_value(w.s), 1);
    conc_sem_free(w.s);
}

static void *bounded_user(void *arg)
{
    struct sw *w = arg;
    for (int i = 0; i < 2000; i++) {
        int err = conc_sem_acquire(w->s, 10);
        if (err != 0) {
            w->err = err;
            return NULL;
        }
        int in = atomic_fetch_add(&w->inside, 1) + 1;
        int m = atomic_load(&w->max_inside);
        while (in > m && !atomic_compare_exchange_weak(&w->max_inside, &m,
                                                       in)) {
        }
        atomic_fetch_sub(&w->inside, 1);
        err = conc_sem_release(w->s, 1);
        if (err != 0) {
            w->err = err;
            return NULL;
        }
    }
    return NULL;
}

/* At most `value` holders at once; a BoundedSemaphore never over-releases
 * when every acquire is paired with a release. */
TEST(sem_limits_concurrency)
{
    struct sw w = { 0 };
    CHECK_OK(conc_sem_new(&w.s,
                          &(conc_sem_opts){ .value = 2, .bounded = true }));
    pthread_t t[5];
    for (int i = 0; i < 5; i++) {
        t[i] = st_thread(bounded_user, &w);
    }
    for (int i = 0; i < 5; i++) {
        st_join(t[i]);
    }
    CHECK_OK(w.err);
    CHECK(atomic_load(&w.max_inside) <= 2);
    CHECK(atomic_load(&w.max_inside) >= 1);
    CHECK_EQ(conc_sem_value(w.s), 2);
    conc_sem_free(w.s);
}

struct xs {
    conc_sem *s;
    conc_sem *back;
    long counter;
};

static int child_ping(void *arg)
{
    struct xs *x = arg;
    for (int i = 0; i < 200; i++) {
        if (conc_sem_acquire(x->s, 10) != 0) {
            return 1;
        }
        x->counter++;
        if (conc_sem_release(x->back, 1) != 0) {
            return 2;
        }
    }
    return 0;
}

/* Semaphore(0) created before fork: parent and child hand a token back
 * and forth 200 times. */
TEST(sem_across_processes)
{
    struct xs *x = st_shared(sizeof *x);
    CHECK_OK(conc_sem_new(&x->s, &(conc_sem_opts){ .value = 0 }));
    CHECK_OK(conc_sem_new(&x->back, &(conc_sem_opts){ .value = 0 }));
    pid_t p = th_fork(child_ping, x);
    for (int i = 0; i < 200; i++) {
        CHECK_EQ(x->counter, i);
        CHECK_OK(conc_sem_release(x->s, 1));
        CHECK_OK(conc_sem_acquire(x->back, 10));
    }
    CHECK_EQ(st_code(th_wait(p, 10)), 0);
    CHECK_EQ(x->counter, 200);
    conc_sem_free(x->s);
    conc_sem_free(x->back);
    st_unshare(x, sizeof *x);
}

static int child_sleeps_on_sem(void *arg)
{
    struct xs *x = arg;
    conc_sem_acquire(x->s, CONC_FOREVER);
    return 0;
}

/* A sleeper killed while waiting does not keep a release from the
 * others. */
TEST(sem_killed_sleeper_does_not_eat_releases)
{
    struct xs *x = st_shared(sizeof *x);
    CHECK_OK(conc_sem_new(&x->s, &(conc_sem_opts){ .value = 0 }));
    pid_t p = th_fork(child_sleeps_on_sem, x);
    th_sleep(0.05);
    kill(p, SIGKILL);
    th_wait(p, 5);
    CHECK_OK(conc_sem_release(x->s, 1));
    CHECK_OK(conc_sem_acquire(x->s, 1));
    CHECK_EQ(conc_sem_value(x->s), 0);
    conc_sem_free(x->s);
    st_unshare(x, sizeof *x);
}

static int child_under_signals(void *arg)
{
    struct xs *x = arg;
    atomic_store(&st_alarms, 0);
    st_alarm_storm(true);
    double t0 = th_now();
    int err = conc_sem_acquire(x->s, 0.3);
    double took = th_now() - t0;
    st_alarm_storm(false);
    return st_signal_verdict(err, CONC_ETIMEDOUT, took, 0.3);
}

TEST(sem_wait_survives_signals)
{
    struct xs *x = st_shared(sizeof *x);
    CHECK_OK(conc_sem_new(&x->s, &(conc_sem_opts){ .value = 0 }));
    pid_t p = th_fork(child_under_signals, x);
    CHECK_EQ(st_code(th_wait(p, 10)), 0);
    conc_sem_free(x->s);
    st_unshare(x, sizeof *x);
}

/* ---- a release wakes a sleeping acquirer at once ----------------------------- */

static bool sem_asleep(void *arg)
{
    return conc__sem_sleepers(arg) > 0;
}

static void sem_wait_one(void *arg)
{
    CHECK_OK(conc_sem_acquire(arg, 10));
}

static void sem_wake_one(void *arg)
{
    CHECK_OK(conc_sem_release(arg, 1));
}

/* 40 releases at varied phases of the acquirer's sleep slice: far below
 * the ~1 s that slice ends alone would cost. */
TEST(sem_release_wakes_a_sleeping_acquirer_at_once)
{
    conc_sem *s;
    CHECK_OK(conc_sem_new(&s, &(conc_sem_opts){ .value = 0 }));
    st_waker w = { .asleep = sem_asleep, .wait = sem_wait_one,
                   .wake = sem_wake_one, .arg = s };
    CHECK(st_wake_latency(&w, 40) < 0.3);
    conc_sem_free(s);
}
