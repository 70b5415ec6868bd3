/* test_rlock.c - conc_rlock: Python's RLock (ported from CPython's
 * Lib/test/lock_tests.py: RLockTests), across threads and processes, and
 * owner death. */
#include "sync_test_util.h"

#include "conc_int.h"

#include <math.h>

TEST(rlock_bad_arguments)
{
    conc_rlock *r = (conc_rlock *)1;
    CHECK_ERR(conc_rlock_new(NULL, NULL), CONC_EINVAL);
    CHECK_ERR(conc_rlock_acquire(NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_rlock_release(NULL), CONC_EINVAL);
    CHECK(!conc_rlock_locked(NULL));
    conc_rlock_free(NULL);
    conc__fault_arm(1);
    CHECK_ERR(conc_rlock_new(&r, NULL), CONC_ENOMEM);
    CHECK(r == NULL);
    conc__fault_arm(0);
    CHECK_OK(conc_rlock_new(&r, &(conc_rlock_opts){ 0 }));
    CHECK_ERR(conc_rlock_acquire(r, NAN), CONC_EINVAL);
    CHECK_ERR(conc_rlock_acquire(r, -3), CONC_EINVAL);
    CHECK(!conc_rlock_locked(r));
    conc_rlock_free(r);
}

/* lock_tests.py: test_reacquire, test_release_unacquired. */
TEST(rlock_reenters_and_counts_levels)
{
    conc_rlock *r;
    CHECK_OK(conc_rlock_new(&r, NULL));
    CHECK_ERR(conc_rlock_release(r), CONC_EPERM);
    CHECK_OK(conc_rlock_acquire(r, CONC_FOREVER));
    CHECK_OK(conc_rlock_acquire(r, 0));
    CHECK_OK(conc_rlock_acquire(r, 1));
    CHECK(conc_rlock_locked(r));
    CHECK_OK(conc_rlock_release(r));
    CHECK_OK(conc_rlock_release(r));
    CHECK(conc_rlock_locked(r));
    CHECK_OK(conc_rlock_release(r));
    CHECK(!conc_rlock_locked(r));
    CHECK_ERR(conc_rlock_release(r), CONC_EPERM);
    conc_rlock_free(r);
}

struct rk {
    conc_rlock *r;
    atomic_int step;
    int err1, err2;
    long counter;
};

static void *other_thread_tries(void *arg)
{
    struct rk *a = arg;
    a->err1 = conc_rlock_release(a->r);
    a->err2 = conc_rlock_acquire(a->r, 0.02);
    return NULL;
}

/* lock_tests.py: test_different_thread - only the owner may release. */
TEST(rlock_only_owner_releases)
{
    struct rk a = { 0 };
    CHECK_OK(conc_rlock_new(&a.r, NULL));
    CHECK_OK(conc_rlock_acquire(a.r, 0));
    st_join(st_thread(other_thread_tries, &a));
    CHECK_ERR(a.err1, CONC_EPERM);
    CHECK_ERR(a.err2, CONC_ETIMEDOUT);
    CHECK(conc_rlock_locked(a.r));
    CHECK_OK(conc_rlock_release(a.r));
    conc_rlock_free(a.r);
}

static void *incr(void *arg)
{
    struct rk *a = arg;
    for (int i = 0; i < 10000; i++) {
        if (conc_rlock_acquire(a->r, 10) != 0 ||
            conc_rlock_acquire(a->r, 0) != 0) {
            a->err1 = -1;
            return NULL;
        }
        a->counter++;
        conc_rlock_release(a->r);
        conc_rlock_release(a->r);
    }
    return NULL;
}

TEST(rlock_threads_exclude_each_other)
{
    struct rk a = { 0 };
    CHECK_OK(conc_rlock_new(&a.r, NULL));
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = st_thread(incr, &a);
    }
    for (int i = 0; i < 3; i++) {
        st_join(t[i]);
    }
    CHECK_OK(a.err1);
    CHECK_EQ(a.counter, 30000);
    CHECK(!conc_rlock_locked(a.r));
    conc_rlock_free(a.r);
}

static int child_not_owner(void *arg)
{
    struct rk *a = arg;
    if (conc_rlock_release(a->r) != CONC_EPERM) {
        return 1;
    }
    if (conc_rlock_acquire(a->r, 0.02) != CONC_ETIMEDOUT) {
        return 2;
    }
    return 0;
}

static int child_incr(void *arg)
{
    struct rk *a = arg;
    for (int i = 0; i < 10000; i++) {
        if (conc_rlock_acquire(a->r, 10) != 0) {
            return 1;
        }
        a->counter++;
        conc_rlock_release(a->r);
    }
    return 0;
}

/* The child of a process holding an RLock is another thread: it neither
 * owns nor may release it; and the RLock excludes processes. */
TEST(rlock_across_processes)
{
    struct rk *a = st_shared(sizeof *a);
    CHECK_OK(conc_rlock_new(&a->r, NULL));
    CHECK_OK(conc_rlock_acquire(a->r, 0));
    pid_t p = th_fork(child_not_owner, a);
    CHECK_EQ(st_code(th_wait(p, 5)), 0);
    CHECK_OK(conc_rlock_release(a->r));
    p = th_fork(child_incr, a);
    CHECK_EQ(child_incr(a), 0);
    CHECK_EQ(st_code(th_wait(p, 30)), 0);
    CHECK_EQ(a->counter, 20000);
    conc_rlock_free(a->r);
    st_unshare(a, sizeof *a);
}

static int child_hold_two_levels(void *arg)
{
    struct rk *a = arg;
    if (conc_rlock_acquire(a->r, 5) != 0 || conc_rlock_acquire(a->r, 5)) {
        return 1;
    }
    atomic_store(&a->step, 1);
    for (;;) {
        pause();
    }
}

/* The owner is SIGKILLed at level 2: the next acquire gets
 * CONC_EOWNERDEAD at level 1. */
TEST(rlock_sigkilled_owner_gives_ownerdead)
{
    struct rk *a = st_shared(sizeof *a);
    CHECK_OK(conc_rlock_new(&a->r, NULL));
    pid_t p = th_fork(child_hold_two_levels, a);
    st_wait_for_int(&a->step, 1, 5);
    CHECK_ERR(conc_rlock_acquire(a->r, 0), CONC_ETIMEDOUT);
    kill(p, SIGKILL);
    th_wait(p, 5);
    CHECK_ERR(conc_rlock_acquire(a->r, 5), CONC_EOWNERDEAD);
    CHECK_OK(conc_rlock_acquire(a->r, 0)); /* level 2 */
    CHECK_OK(conc_rlock_release(a->r));
    CHECK_OK(conc_rlock_release(a->r));
    CHECK(!conc_rlock_locked(a->r));
    CHECK_ERR(conc_rlock_release(a->r), CONC_EPERM);
    conc_rlock_free(a->r);
    st_unshare(a, sizeof *a);
}

static void *exit_holding(void *arg)
{
    struct rk *a = arg;
    a->err1 = conc_rlock_acquire(a->r, 0);
    a->err2 = conc_rlock_acquire(a->r, 0);
    return NULL;
}

TEST(rlock_thread_exiting_holding_it)
{
    struct rk a = { 0 };
    CHECK_OK(conc_rlock_new(&a.r, NULL));
    st_join(st_thread(exit_holding, &a));
    CHECK_OK(a.err1);
    CHECK_OK(a.err2);
    CHECK_ERR(conc_rlock_release(a.r), CONC_EPERM);
    CHECK_ERR(conc_rlock_acquire(a.r, 5), CONC_EOWNERDEAD);
    CHECK_OK(conc_rlock_release(a.r));
    CHECK(!conc_rlock_locked(a.r));
    conc_rlock_free(a.r);
}

TEST(rlock_timeout_lower_bound_under_signals)
{
    struct rk a = { 0 };
    CHECK_OK(conc_rlock_new(&a.r, NULL));
    st_join(st_thread(exit_holding, &a)); /* held by a dead thread... */
    CHECK_ERR(conc_rlock_acquire(a.r, 5), CONC_EOWNERDEAD);
    /* ...now by us; a child process waits for it under signals. */
    pid_t p = fork();
    if (p == 0) {
        atomic_store(&st_alarms, 0);
        st_alarm_storm(true);
        double t0 = th_now();
        int err = conc_rlock_acquire(a.r, 0.3);
        double took = th_now() - t0;
        st_alarm_storm(false);
        _exit(st_signal_verdict(err, CONC_ETIMEDOUT, took, 0.3));
    }
    CHECK_EQ(st_code(th_wait(p, 10)), 0);
    CHECK_OK(conc_rlock_release(a.r));
    conc_rlock_free(a.r);
}
