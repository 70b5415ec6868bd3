/* test_event.c - conc_event: Python's Event (ported from CPython's
 * Lib/test/lock_tests.py: EventTests), across threads and processes. */
#include "sync_test_util.h"

#include "conc_int.h"
#include "sync_int.h"

#include <math.h>

TEST(event_bad_arguments)
{
    conc_event *e = (conc_event *)1;
    CHECK_ERR(conc_event_new(NULL, NULL), CONC_EINVAL);
    CHECK_ERR(conc_event_set(NULL), CONC_EINVAL);
    CHECK_ERR(conc_event_clear(NULL), CONC_EINVAL);
    CHECK_ERR(conc_event_wait(NULL, 1), CONC_EINVAL);
    CHECK(!conc_event_is_set(NULL));
    conc_event_free(NULL);
    conc__fault_arm(1);
    CHECK_ERR(conc_event_new(&e, NULL), CONC_ENOMEM);
    CHECK(e == NULL);
    conc__fault_arm(0);
    CHECK_OK(conc_event_new(&e, &(conc_event_opts){ 0 }));
    CHECK_ERR(conc_event_wait(e, NAN), CONC_EINVAL);
    CHECK_ERR(conc_event_wait(e, -1.5), CONC_EINVAL);
    CHECK_OK(conc_event_set(e));
    CHECK_ERR(conc_event_wait(e, NAN), CONC_EINVAL);
    conc_event_free(e);
}

/* lock_tests.py: test_is_set. */
TEST(event_set_clear_is_set)
{
    conc_event *e;
    CHECK_OK(conc_event_new(&e, NULL));
    CHECK(!conc_event_is_set(e));
    CHECK_ERR(conc_event_wait(e, 0), CONC_ETIMEDOUT);
    CHECK_OK(conc_event_set(e));
    CHECK(conc_event_is_set(e));
    CHECK_OK(conc_event_set(e));
    CHECK(conc_event_is_set(e));
    CHECK_OK(conc_event_wait(e, 0));
    CHECK_OK(conc_event_wait(e, CONC_FOREVER));
    CHECK_OK(conc_event_clear(e));
    CHECK(!conc_event_is_set(e));
    CHECK_OK(conc_event_clear(e));
    CHECK(!conc_event_is_set(e));
    CHECK_ERR(conc_event_wait(e, 0.01), CONC_ETIMEDOUT);
    conc_event_free(e);
}

TEST(event_timeout_lower_bound)
{
    conc_event *e;
    CHECK_OK(conc_event_new(&e, NULL));
    double t0 = th_now();
    CHECK_ERR(conc_event_wait(e, 0.1), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.1);
    CHECK(took < 1.0);
    conc_event_free(e);
}

struct ew {
    conc_event *e;
    atomic_int started;
    atomic_int ok;
    atomic_int bad;
};

static void *waiter(void *arg)
{
    struct ew *w = arg;
    atomic_fetch_add(&w->started, 1);
    int err = conc_event_wait(w->e, 10);
    atomic_fetch_add(err == 0 ? &w->ok : &w->bad, 1);
    return NULL;
}

/* lock_tests.py: test_notify - set() releases every waiter at once. */
TEST(event_set_releases_all_waiters)
{
    struct ew w = { 0 };
    CHECK_OK(conc_event_new(&w.e, NULL));
    pthread_t t[5];
    for (int i = 0; i < 5; i++) {
        t[i] = st_thread(waiter, &w);
    }
    st_wait_for_int(&w.started, 5, 5);
    th_sleep(0.05);
    CHECK_EQ(atomic_load(&w.ok) + atomic_load(&w.bad), 0);
    CHECK_OK(conc_event_set(w.e));
    for (int i = 0; i < 5; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(atomic_load(&w.ok), 5);
    CHECK_EQ(atomic_load(&w.bad), 0);
    conc_event_free(w.e);
}

/* lock_tests.py: test_set_and_clear - a set() at once undone by clear()
 * still releases the threads that were waiting (Python's behaviour). */
TEST(event_set_then_clear_still_releases_waiters)
{
    struct ew w = { 0 };
    CHECK_OK(conc_event_new(&w.e, NULL));
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = st_thread(waiter, &w);
    }
    st_wait_for_int(&w.started, 4, 5);
    th_sleep(0.05);
    CHECK_OK(conc_event_set(w.e));
    CHECK_OK(conc_event_clear(w.e));
    for (int i = 0; i < 4; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(atomic_load(&w.ok), 4);
    CHECK(!conc_event_is_set(w.e));
    conc_event_free(w.e);
}

struct xe {
    conc_event *go;
    conc_event *done;
};

static int child_waits(void *arg)
{
    struct xe *x = arg;
    if (conc_event_wait(x->go, 10) != 0) {
        return 1;
    }
    if (!conc_event_is_set(x->go)) {
        return 2;
    }
    return conc_event_set(x->done) == 0 ? 0 : 3;
}

TEST(event_across_processes)
{
    struct xe *x = st_shared(sizeof *x);
    CHECK_OK(conc_event_new(&x->go, NULL));
    CHECK_OK(conc_event_new(&x->done, NULL));
    pid_t p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = th_fork(child_waits, x);
    }
    th_sleep(0.05);
    CHECK(!conc_event_is_set(x->done));
    CHECK_OK(conc_event_set(x->go));
    CHECK_OK(conc_event_wait(x->done, 10));
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(st_code(th_wait(p[i], 10)), 0);
    }
    conc_event_free(x->go);
    conc_event_free(x->done);
    st_unshare(x, sizeof *x);
}

static int child_under_signals(void *arg)
{
    struct xe *x = arg;
    atomic_store(&st_alarms, 0);
    st_alarm_storm(true);
    double t0 = th_now();
    int err = conc_event_wait(x->go, 0.3);
    double took = th_now() - t0;
    st_alarm_storm(false);
    return st_signal_verdict(err, CONC_ETIMEDOUT, took, 0.3);
}

TEST(event_wait_survives_signals)
{
    struct xe *x = st_shared(sizeof *x);
    CHECK_OK(conc_event_new(&x->go, NULL));
    pid_t p = th_fork(child_under_signals, x);
    CHECK_EQ(st_code(th_wait(p, 10)), 0);
    conc_event_free(x->go);
    st_unshare(x, sizeof *x);
}

/* ---- a set wakes a sleeping waiter at once ---------------------------------- */

static void ev_reset(void *arg)
{
    conc_event_clear(arg);
}

static bool ev_asleep(void *arg)
{
    return conc__event_sleepers(arg) > 0;
}

static void ev_wait(void *arg)
{
    CHECK_OK(conc_event_wait(arg, 10));
}

static void ev_wake(void *arg)
{
    CHECK_OK(conc_event_set(arg));
}

/* 40 sets, each at a varied phase of the waiter's 50 ms sleep slice: the
 * waiters' total delay stays far below what slice ends alone would cost
 * (about 25 ms a round). */
TEST(event_set_wakes_a_sleeping_waiter_at_once)
{
    conc_event *e;
    CHECK_OK(conc_event_new(&e, NULL));
    st_waker w = { .reset = ev_reset, .asleep = ev_asleep, .wait = ev_wait,
                   .wake = ev_wake, .arg = e };
    CHECK(st_wake_latency(&w, 40) < 0.3);
    conc_event_free(e);
}
