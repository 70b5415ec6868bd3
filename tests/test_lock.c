/* test_lock.c - conc_lock: Python's Lock semantics (ported from CPython's
 * Lib/test/lock_tests.py: BaseLockTests and LockTests), across threads
 * and processes, and recovery from a holder that dies (thread exit,
 * SIGKILL). */
#include "sync_test_util.h"

#include "sync_int.h"

#include <math.h>
#include <grp.h>
#include <sched.h>
#include <sys/mount.h>
#if defined(__has_include)
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#define HAVE_SINGLE_THREADED 1
#endif
#endif

TEST(lock_bad_arguments)
{
    conc_lock *l = NULL;
    CHECK_ERR(conc_lock_new(NULL, NULL), CONC_EINVAL);
    /* options only a server honours */
    CHECK_ERR(conc_lock_new(&l, &(conc_lock_opts){ .lease = CONC_TIMEOUT(5) }),
              CONC_EINVAL);
    CHECK_ERR(conc_lock_new(&l, &(conc_lock_opts){
                                    .net_timeout = CONC_TIMEOUT(1) }),
              CONC_EINVAL);
    CHECK(l == NULL);
    CHECK_ERR(conc_lock_acquire(NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_lock_release(NULL), CONC_EINVAL);
    CHECK(!conc_lock_locked(NULL));
    conc_lock_free(NULL);
    CHECK_OK(conc_lock_new(&l, NULL));
    CHECK_ERR(conc_lock_acquire(l, NAN), CONC_EINVAL);
    CHECK_ERR(conc_lock_acquire(l, -0.5), CONC_EINVAL);
    CHECK_ERR(conc_lock_acquire(l, -2), CONC_EINVAL);
    CHECK(!conc_lock_locked(l));
    CHECK_OK(conc_lock_acquire(l, 0));
    CHECK_ERR(conc_lock_acquire(l, NAN), CONC_EINVAL);
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
}

TEST(lock_acquire_release_locked)
{
    conc_lock *l;
    CHECK_OK(conc_lock_new(&l, &(conc_lock_opts){ 0 }));
    CHECK(!conc_lock_locked(l));
    CHECK_OK(conc_lock_acquire(l, CONC_FOREVER));
    CHECK(conc_lock_locked(l));
    /* Not re-entrant: a second acquire by the same thread times out. */
    CHECK_ERR(conc_lock_acquire(l, 0), CONC_ETIMEDOUT);
    CHECK_ERR(conc_lock_acquire(l, 0.01), CONC_ETIMEDOUT);
    CHECK_OK(conc_lock_release(l));
    CHECK(!conc_lock_locked(l));
    /* Python: RuntimeError("release unlocked lock"). */
    CHECK_ERR(conc_lock_release(l), CONC_EPERM);
    CHECK(!conc_lock_locked(l));
    CHECK_OK(conc_lock_acquire(l, 0));
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
}

TEST(lock_fault_on_new)
{
    conc_lock *l = (conc_lock *)1;
    conc__fault_arm(1);
    CHECK_ERR(conc_lock_new(&l, NULL), CONC_ENOMEM);
    CHECK(l == NULL);
    conc__fault_arm(0);
    CHECK_OK(conc_lock_new(&l, NULL));
    CHECK(l != NULL);
    conc_lock_free(l);
}

TEST(lock_timeout_lower_bound)
{
    conc_lock *l;
    CHECK_OK(conc_lock_new(&l, NULL));
    CHECK_OK(conc_lock_acquire(l, 0));
    double t0 = th_now();
    CHECK_ERR(conc_lock_acquire(l, 0.1), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.1);
    CHECK(took < 1.0);
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
}

struct lk {
    conc_lock *l;
    atomic_int step;
    long counter;
    int err;
};

static void *release_other(void *arg)
{
    struct lk *a = arg;
    a->err = conc_lock_release(a->l);
    return NULL;
}

/* lock_tests.py: test_different_thread - a Lock may be released by a
 * thread that did not acquire it. */
TEST(lock_release_by_another_thread)
{
    struct lk a = { 0 };
    CHECK_OK(conc_lock_new(&a.l, NULL));
    CHECK_OK(conc_lock_acquire(a.l, CONC_FOREVER));
    st_join(st_thread(release_other, &a));
    CHECK_OK(a.err);
    CHECK(!conc_lock_locked(a.l));
    conc_lock_free(a.l);
}

static void *acquire_forever(void *arg)
{
    struct lk *a = arg;
    atomic_store(&a->step, 1);
    a->err = conc_lock_acquire(a->l, CONC_FOREVER);
    atomic_store(&a->step, 2);
    return NULL;
}

/* lock_tests.py: test_acquire_contended - a blocked acquire returns once
 * the lock is released, and not before. */
TEST(lock_blocked_acquire_waits_for_release)
{
    struct lk a = { 0 };
    CHECK_OK(conc_lock_new(&a.l, NULL));
    CHECK_OK(conc_lock_acquire(a.l, CONC_FOREVER));
    pthread_t t = st_thread(acquire_forever, &a);
    st_wait_for_int(&a.step, 1, 5);
    th_sleep(0.05);
    CHECK_EQ(atomic_load(&a.step), 1);
    CHECK_OK(conc_lock_release(a.l));
    st_join(t);
    CHECK_EQ(atomic_load(&a.step), 2);
    CHECK_OK(a.err);
    CHECK(conc_lock_locked(a.l));
    CHECK_OK(conc_lock_release(a.l));
    conc_lock_free(a.l);
}

#define N_THREADS 4
#define N_INCR 20000

static void *incr_thread(void *arg)
{
    struct lk *a = arg;
    for (int i = 0; i < N_INCR; i++) {
        double timeout = (i % 3 == 0) ? CONC_FOREVER : 5.0;
        if (conc_lock_acquire(a->l, timeout) != 0) {
            a->err = -1;
            return NULL;
        }
        long v = a->counter;
        a->counter = v + 1;
        if (conc_lock_release(a->l) != 0) {
            a->err = -2;
        }
    }
    return NULL;
}

/* Mutual exclusion between threads: no increment is lost. */
TEST(lock_threads_exclude_each_other)
{
    struct lk a = { 0 };
    CHECK_OK(conc_lock_new(&a.l, NULL));
    pthread_t t[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        t[i] = st_thread(incr_thread, &a);
    }
    for (int i = 0; i < N_THREADS; i++) {
        st_join(t[i]);
    }
    CHECK_OK(a.err);
    CHECK_EQ(a.counter, (long)N_THREADS * N_INCR);
    CHECK(!conc_lock_locked(a.l));
    conc_lock_free(a.l);
}

/* Waiters with short timeouts mixed with waiters without: the ones that
 * give up must not strand the others (the thief / consumed-wake case). */
static void *short_timeouts(void *arg)
{
    struct lk *a = arg;
    for (int i = 0; i < 300; i++) {
        int err = conc_lock_acquire(a->l, 0.0002);
        if (err == 0) {
            a->counter++;
            th_sleep(0.0001);
            conc_lock_release(a->l);
        } else if (err != CONC_ETIMEDOUT) {
            a->err = err;
        }
    }
    return NULL;
}

static void *long_waits(void *arg)
{
    struct lk *a = arg;
    for (int i = 0; i < 300; i++) {
        /* A stranded sleeper would wait a 50 ms slice each time; 10 s is
         * far beyond any honest wait here. */
        int err = conc_lock_acquire(a->l, 10.0);
        if (err != 0) {
            a->err = err;
            return NULL;
        }
        a->counter++;
        conc_lock_release(a->l);
    }
    return NULL;
}

TEST(lock_timed_out_waiters_strand_nobody)
{
    struct lk a = { 0 };
    CHECK_OK(conc_lock_new(&a.l, NULL));
    pthread_t t[4];
    t[0] = st_thread(short_timeouts, &a);
    t[1] = st_thread(short_timeouts, &a);
    t[2] = st_thread(long_waits, &a);
    t[3] = st_thread(long_waits, &a);
    for (int i = 0; i < 4; i++) {
        st_join(t[i]);
    }
    CHECK_OK(a.err);
    CHECK(!conc_lock_locked(a.l));
    conc_lock_free(a.l);
}

/* ---- across processes ---------------------------------------------------- */

struct xp {
    conc_lock *l;
    atomic_int step;
    long counter;
    int child_err;
};

static int child_incr(void *arg)
{
    struct xp *x = arg;
    for (int i = 0; i < N_INCR; i++) {
        if (conc_lock_acquire(x->l, 10) != 0) {
            return 1;
        }
        x->counter++;
        conc_lock_release(x->l);
    }
    return 0;
}

/* A lock created before fork() is the same lock in the child. */
TEST(lock_processes_exclude_each_other)
{
    struct xp *x = st_shared(sizeof *x);
    CHECK_OK(conc_lock_new(&x->l, NULL));
    pid_t p1 = th_fork(child_incr, x);
    pid_t p2 = th_fork(child_incr, x);
    CHECK_EQ(child_incr(x), 0);
    CHECK_EQ(st_code(th_wait(p1, 30)), 0);
    CHECK_EQ(st_code(th_wait(p2, 30)), 0);
    CHECK_EQ(x->counter, 3L * N_INCR);
    conc_lock_free(x->l);
    st_unshare(x, sizeof *x);
}

static int child_sees_held(void *arg)
{
    struct xp *x = arg;
    if (!conc_lock_locked(x->l)) {
        return 1;
    }
    if (conc_lock_acquire(x->l, 0.05) != CONC_ETIMEDOUT) {
        return 2;
    }
    /* Python's Lock: any process may release it. */
    if (conc_lock_release(x->l) != 0) {
        return 3;
    }
    if (conc_lock_release(x->l) != CONC_EPERM) {
        return 4;
    }
    return 0;
}

TEST(lock_child_sees_and_releases_parents_lock)
{
    struct xp *x = st_shared(sizeof *x);
    CHECK_OK(conc_lock_new(&x->l, NULL));
    CHECK_OK(conc_lock_acquire(x->l, 0));
    pid_t p = th_fork(child_sees_held, x);
    CHECK_EQ(st_code(th_wait(p, 10)), 0);
    CHECK(!conc_lock_locked(x->l));
    CHECK_OK(conc_lock_acquire(x->l, 0));
    CHECK_OK(conc_lock_release(x->l));
    conc_lock_free(x->l);
    st_unshare(x, sizeof *x);
}

static int child_hold_forever(void *arg)
{
    struct xp *x = arg;
    if (conc_lock_acquire(x->l, 5) != 0) {
        return 1;
    }
    atomic_store(&x->step, 1);
    for (;;) {
        pause();
    }
}

static void *parent_waits(void *arg)
{
    struct xp *x = arg;
    atomic_store(&x->step, 2);
    x->child_err = conc_lock_acquire(x->l, 10);
    atomic_store(&x->step, 3);
    return NULL;
}

/* The holder is SIGKILLed while another waits: the waiter gets
 * CONC_EOWNERDEAD holding the lock, and the lock works on. */
TEST(lock_sigkilled_holder_gives_ownerdead)
{
    struct xp *x = st_shared(sizeof *x);
    CHECK_OK(conc_lock_new(&x->l, NULL));
    pid_t p = th_fork(child_hold_forever, x);
    st_wait_for_int(&x->step, 1, 5);
    pthread_t t = st_thread(parent_waits, x);
    st_wait_for_int(&x->step, 2, 5);
    th_sleep(0.1);
    CHECK_EQ(atomic_load(&x->step), 2); /* still blocked */
    double t0 = th_now();
    kill(p, SIGKILL);
    CHECK_EQ(st_code(th_wait(p, 5)), 100 + SIGKILL);
    st_join(t);
    CHECK(th_now() - t0 < 2.0);
    CHECK_ERR(x->child_err, CONC_EOWNERDEAD);
    CHECK(conc_lock_locked(x->l));
    CHECK_OK(conc_lock_release(x->l));
    CHECK_ERR(conc_lock_release(x->l), CONC_EPERM);
    CHECK_OK(conc_lock_acquire(x->l, 0));
    CHECK_ERR(conc_lock_acquire(x->l, 0.01), CONC_ETIMEDOUT);
    CHECK_OK(conc_lock_release(x->l));
    conc_lock_free(x->l);
    st_unshare(x, sizeof *x);
}

/* The holder is dead (and reaped) before anyone asks: even a try
 * (timeout 0) gets CONC_EOWNERDEAD, exactly once. */
TEST(lock_dead_holder_found_by_try)
{
    struct xp *x = st_shared(sizeof *x);
    CHECK_OK(conc_lock_new(&x->l, NULL));
    pid_t p = th_fork(child_hold_forever, x);
    st_wait_for_int(&x->step, 1, 5);
    kill(p, SIGKILL);
    th_wait(p, 5);
    CHECK_ERR(conc_lock_acquire(x->l, 0), CONC_EOWNERDEAD);
    CHECK_ERR(conc_lock_acquire(x->l, 0), CONC_ETIMEDOUT);
    CHECK_OK(conc_lock_release(x->l));
    CHECK_OK(conc_lock_acquire(x->l, 0));
    CHECK_OK(conc_lock_release(x->l));
    conc_lock_free(x->l);
    st_unshare(x, sizeof *x);
}

static void *exit_holding(void *arg)
{
    struct lk *a = arg;
    a->err = conc_lock_acquire(a->l, 0);
    return NULL;
}

/* A thread that ends holding the lock is a dead holder too. */
TEST(lock_thread_exiting_holding_it)
{
    struct lk a = { 0 };
    CHECK_OK(conc_lock_new(&a.l, NULL));
    st_join(st_thread(exit_holding, &a));
    CHECK_OK(a.err);
    CHECK(conc_lock_locked(a.l));
    double t0 = th_now();
    CHECK_ERR(conc_lock_acquire(a.l, 5), CONC_EOWNERDEAD);
    CHECK(th_now() - t0 < 2.0);
    CHECK_OK(conc_lock_release(a.l));
    CHECK_OK(conc_lock_acquire(a.l, 0));
    CHECK_OK(conc_lock_release(a.l));
    conc_lock_free(a.l);
}

static int child_exit_holding(void *arg)
{
    struct xp *x = arg;
    /* The parent cached its own identity before fork; the child must not
     * reuse it, or the parent would think itself the holder and wait. */
    return conc_lock_acquire(x->l, 0) == 0 ? 0 : 1;
}

/* The per-thread identity is reset in a forked child. */
TEST(lock_child_identity_is_its_own)
{
    struct xp *x = st_shared(sizeof *x);
    conc_lock *mine;
    CHECK_OK(conc_lock_new(&mine, NULL));
    CHECK_OK(conc_lock_acquire(mine, 0)); /* caches our identity */
    CHECK_OK(conc_lock_release(mine));
    CHECK_OK(conc_lock_new(&x->l, NULL));
    pid_t p = th_fork(child_exit_holding, x);
    CHECK_EQ(st_code(th_wait(p, 5)), 0);
    CHECK(conc_lock_locked(x->l));
    CHECK_ERR(conc_lock_acquire(x->l, 5), CONC_EOWNERDEAD);
    CHECK_OK(conc_lock_release(x->l));
    conc_lock_free(x->l);
    conc_lock_free(mine);
    st_unshare(x, sizeof *x);
}

/* Signals do not end a wait early, nor restart its clock. */
TEST(lock_wait_survives_signals)
{
    conc_lock *l;
    CHECK_OK(conc_lock_new(&l, NULL));
    CHECK_OK(conc_lock_acquire(l, 0));
    atomic_store(&st_alarms, 0);
    st_alarm_storm(true);
    double t0 = th_now();
    int err = conc_lock_acquire(l, 0.3);
    double took = th_now() - t0;
    st_alarm_storm(false);
    CHECK_ERR(err, CONC_ETIMEDOUT);
    CHECK(took >= 0.3);
    CHECK(took < 3.0);
    CHECK(atomic_load(&st_alarms) >= 2);
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
}

static void *identity_of_thread(void *arg)
{
    *(uint64_t *)arg = conc__sync_self_id();
    return NULL;
}

/* The identity that goes into a held lock is the thread id plus a start
 * stamp read from /proc, per thread (the main thread's and another
 * thread's differ in tid; both carry a stamp). */
TEST(lock_identity_is_tid_and_stamp)
{
    uint64_t mine = conc__sync_self_id();
    uint64_t other = 0;
    st_join(st_thread(identity_of_thread, &other));
    CHECK_EQ(mine & CONC__OL_TID_MASK, (uint64_t)conc__os_gettid());
    CHECK((mine >> 32) != 0);
    CHECK((other >> 32) != 0);
    CHECK((other & CONC__OL_TID_MASK) != (mine & CONC__OL_TID_MASK));
    CHECK_EQ(conc__sync_self_id(), mine); /* cached */
}

static void *acquire_twice(void *arg)
{
    struct lk *a = arg;
    if (conc_lock_acquire(a->l, CONC_FOREVER) != 0) {
        a->err = -1;
        return NULL;
    }
    atomic_store(&a->step, 1);
    /* Blocks on itself until another thread releases the lock. */
    a->err = conc_lock_acquire(a->l, 10);
    atomic_store(&a->step, 2);
    return NULL;
}

/* lock_tests.py: LockTests.test_reacquire - a Lock must be released
 * before it can be acquired again, even by its holder; another thread's
 * release lets the blocked holder through. */
TEST(lock_holder_reacquires_after_foreign_release)
{
    struct lk a = { 0 };
    CHECK_OK(conc_lock_new(&a.l, NULL));
    pthread_t t = st_thread(acquire_twice, &a);
    st_wait_for_int(&a.step, 1, 5);
    th_sleep(0.05);
    CHECK_EQ(atomic_load(&a.step), 1);
    CHECK_OK(conc_lock_release(a.l));
    st_join(t);
    CHECK_OK(a.err);
    CHECK(conc_lock_locked(a.l));
    CHECK_OK(conc_lock_release(a.l));
    conc_lock_free(a.l);
}

struct hammer {
    conc_lock *l;
    atomic_int stop;
    long counter;      /* guarded by l */
    long by_threads[3];
};

struct hammer_arg {
    struct hammer *h;
    int i;
};

static void *hammer_thread(void *arg)
{
    struct hammer_arg *a = arg;
    while (!atomic_load(&a->h->stop)) {
        if (conc_lock_acquire(a->h->l, 10) != 0) {
            return NULL;
        }
        a->h->counter++;
        a->h->by_threads[a->i]++;
        conc_lock_release(a->h->l);
    }
    return NULL;
}

static int child_uses_hammered_lock(void *arg)
{
    struct hammer *h = arg;
    /* The lock may be held by a parent thread frozen mid-section at fork:
     * that thread lives on in the parent and releases it; the child must
     * wait for it, not take it over. */
    for (int i = 0; i < 100; i++) {
        int err = conc_lock_acquire(h->l, 10);
        if (err != 0) {
            return 10 + (err == CONC_EOWNERDEAD);
        }
        h->counter++;
        conc_lock_release(h->l);
    }
    return 0;
}

/* fork() while other threads hammer a lock: only the forking thread
 * survives in the child, so a lock another thread held at that instant
 * is still held by that thread, which runs on in the parent and releases
 * it there.  Every child gets the lock normally, nothing is lost or taken
 * over. */
TEST(lock_fork_while_threads_hammer_it)
{
    struct hammer *h = st_shared(sizeof *h);
    CHECK_OK(conc_lock_new(&h->l, NULL));
    pthread_t t[3];
    struct hammer_arg a[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (struct hammer_arg){ h, i };
        t[i] = st_thread(hammer_thread, &a[i]);
    }
    for (int k = 0; k < 10; k++) {
        pid_t p = th_fork(child_uses_hammered_lock, h);
        CHECK_EQ(st_code(th_wait(p, 20)), 0);
    }
    atomic_store(&h->stop, 1);
    for (int i = 0; i < 3; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(h->counter,
             h->by_threads[0] + h->by_threads[1] + h->by_threads[2] + 1000);
    CHECK(!conc_lock_locked(h->l));
    conc_lock_free(h->l);
    st_unshare(h, sizeof *h);
}

/* ---- the single-thread path (lock.c) ------------------------------------- */

/* Whether this process has one thread as glibc counts them (a sanitizer's
 * runtime may have started one of its own). */
static bool one_thread(void)
{
#ifdef HAVE_SINGLE_THREADED
    return __libc_single_threaded;
#else
    return false;
#endif
}

static int child_finds_it_shared(void *arg)
{
    struct xp *x = arg;
    if (conc__lock_solo(x->l)) {
        return 1;
    }
    /* Held by the parent, taken on its plain-store path. */
    if (conc_lock_acquire(x->l, 0.02) != CONC_ETIMEDOUT) {
        return 2;
    }
    conc_lock *mine;
    if (conc_lock_new(&mine, NULL) != 0) {
        return 3;
    }
    /* A lock the child makes is the child's alone, until it forks. */
    bool solo = conc__lock_solo(mine);
    conc_lock_free(mine);
    return solo ? 0 : 4;
}

static void *check_not_solo(void *arg)
{
    struct xp *x = arg;
    x->child_err = conc__lock_solo(x->l) ? 1 : 0;
    return NULL;
}

/* Where the plain-store path applies: an anonymous lock made in a process
 * with one thread, until that process forks or starts a thread; never a
 * named lock.  The lock behaves as Python's Lock on it. */
TEST(lock_single_thread_path_applies_only_while_alone)
{
    if (!one_thread()) {
        printf("     (skipped: this build's runtime started a thread)\n");
        return;
    }
    struct xp *x = st_shared(sizeof *x);
    CHECK_OK(conc_lock_new(&x->l, NULL));
    CHECK(conc__lock_solo(x->l));
    CHECK_OK(conc_lock_acquire(x->l, CONC_FOREVER));
    CHECK(conc_lock_locked(x->l));
    CHECK_ERR(conc_lock_acquire(x->l, 0), CONC_ETIMEDOUT);
    CHECK_ERR(conc_lock_acquire(x->l, 0.01), CONC_ETIMEDOUT);
    CHECK_OK(conc_lock_release(x->l));
    CHECK(!conc_lock_locked(x->l));
    CHECK_ERR(conc_lock_release(x->l), CONC_EPERM);
    CHECK(strstr(conc_errdetail(), "not held") != NULL);

    conc_lock *named;
    char name[64];
    snprintf(name, sizeof name, "/conc-test-solo-%d", (int)getpid());
    CHECK_OK(conc_lock_new(&named, &(conc_lock_opts){ .name = name }));
    CHECK(!conc__lock_solo(named));
    conc_lock_free(named);

    /* Held across a fork: the child sees it held, and neither side takes
     * the plain path on it any more. */
    CHECK_OK(conc_lock_acquire(x->l, 0));
    pid_t p = th_fork(child_finds_it_shared, x);
    CHECK_EQ(st_code(th_wait(p, 10)), 0);
    CHECK(!conc__lock_solo(x->l));
    CHECK_OK(conc_lock_release(x->l));

    /* A thread ends it too, for every lock. */
    conc_lock *late;
    CHECK_OK(conc_lock_new(&late, NULL));
    CHECK(conc__lock_solo(late));
    struct xp y = { .l = late, .child_err = -1 };
    st_join(st_thread(check_not_solo, &y));
    CHECK_EQ(y.child_err, 0);
    CHECK(!conc__lock_solo(late));
    conc_lock_free(late);
    conc_lock_free(x->l);
    st_unshare(x, sizeof *x);
}

/* ---- wake latency: a release wakes its sleeper at once ------------------ */

typedef struct {
    conc_lock *l;
    _Atomic int round;      /* the round the waiter may start */
    _Atomic bool stop;
    _Atomic int done;       /* rounds the waiter finished */
    _Atomic double acquired; /* when the waiter got the lock, this round */
} handoff;

static void *handoff_waiter(void *arg)
{
    handoff *h = arg;
    for (int r = 1;; r++) {
        while (atomic_load(&h->round) < r) {
            if (atomic_load(&h->stop)) {
                return NULL;
            }
            th_sleep(0.0002);
        }
        CHECK_OK(conc_lock_acquire(h->l, 10));
        atomic_store(&h->acquired, th_now());
        CHECK_OK(conc_lock_release(h->l));
        atomic_store(&h->done, r);
    }
}

/* The release's FUTEX_WAKE is what wakes a sleeping acquirer: without it
 * the sleeper would still get the lock, at the end of its 50 ms sleep
 * slice.  40 hand-offs to a waiter that is surely asleep, released at
 * varied phases of its slice, must take well under the ~1 s that slice
 * ends would cost in all (25 ms each on average). */
TEST(lock_release_wakes_a_sleeping_acquirer_at_once)
{
    handoff *h = st_shared(sizeof *h);
    CHECK_OK(conc_lock_new(&h->l, NULL));
    pthread_t t = st_thread(handoff_waiter, h);
    double total = 0;
    unsigned seed = (unsigned)getpid();
    const int rounds = 40;
    for (int r = 1; r <= rounds; r++) {
        CHECK_OK(conc_lock_acquire(h->l, 1));
        atomic_store(&h->round, r);
        /* WAITERS set: the waiter is past its fast path; 2..50 ms later
         * it is asleep in the kernel, at a varied phase of its slice. */
        double end = th_now() + 10;
        while (!conc__lock_has_waiters(h->l)) {
            CHECK(th_now() < end);
            th_sleep(0.0002);
        }
        th_sleep(0.002 + (double)(rand_r(&seed) % 48) / 1000);
        double released = th_now();
        CHECK_OK(conc_lock_release(h->l));
        while (atomic_load(&h->done) < r) {
            CHECK(th_now() < end);
            th_sleep(0.0002);
        }
        total += atomic_load(&h->acquired) - released;
    }
    atomic_store(&h->stop, true);
    st_join(t);
    CHECK(total < 0.3);
    conc_lock_free(h->l);
    st_unshare(h, sizeof *h);
}

/* ---- a holder /proc does not show ---------------------------------------- */

typedef struct {
    conc_lock *l;
    atomic_int held;
} hidden_arg;

/* Becomes an unprivileged user with no root group: hidepid lets members
 * of /proc's gid (0 by default) see everything. */
static bool become(uid_t id)
{
    return setgroups(0, NULL) == 0 && setgid(id) == 0 && setuid(id) == 0;
}

static int hidden_holder(void *arg)
{
    hidden_arg *a = arg;
    if (!become(65533)) {
        return 2;
    }
    if (conc_lock_acquire(a->l, 5) != 0) {
        return 3;
    }
    atomic_store(&a->held, 1);
    for (;;) {
        pause();
    }
}

static int hidden_waiter(void *arg)
{
    hidden_arg *a = arg;
    if (!become(65534)) {
        return 2;
    }
    /* The holder runs, but under hidepid=2 this user cannot see it. */
    int err = conc_lock_acquire(a->l, 0.3);
    return err == CONC_ETIMEDOUT ? 0 : 10 - err;
}

static int hidden_taker(void *arg)
{
    hidden_arg *a = arg;
    if (!become(65534)) {
        return 2;
    }
    int err = conc_lock_acquire(a->l, 5);
    if (err == CONC_EOWNERDEAD) {
        conc_lock_release(a->l);
        return 0;
    }
    return 10 - err;
}

/* In its own mount namespace with /proc mounted hidepid=2, a user cannot
 * see another user's processes in /proc.  A live holder it cannot see is
 * not dead: its lock stays exclusive.  Once the holder is gone (reaped),
 * the next acquirer still finds out and takes the lock over. */
static int hidden_proc_scene(void *arg)
{
    (void)arg;
    if (unshare(CLONE_NEWNS) != 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("proc", "/proc", "proc", 0, "hidepid=2") != 0) {
        return 77;
    }
    hidden_arg *a = st_shared(sizeof *a);
    if (conc_lock_new(&a->l, NULL) != 0) {
        return 4;
    }
    pid_t holder = th_fork(hidden_holder, a);
    double end = th_now() + 10;
    while (!atomic_load(&a->held)) {
        if (th_now() > end) {
            return 5;
        }
        th_sleep(0.001);
    }
    pid_t waiter = th_fork(hidden_waiter, a);
    int rc = WEXITSTATUS(th_wait(waiter, 10));
    kill(holder, SIGKILL);
    th_wait(holder, 10);
    if (rc != 0) {
        return 20 + rc;
    }
    pid_t taker = th_fork(hidden_taker, a);
    rc = WEXITSTATUS(th_wait(taker, 10));
    return rc == 0 ? 0 : 40 + rc;
}

TEST(lock_holder_hidden_by_hidepid_is_not_judged_dead)
{
    if (geteuid() != 0) {
        printf("     (skipped: needs root for a mount namespace)\n");
        return;
    }
    pid_t pid = th_fork(hidden_proc_scene, NULL);
    int rc = WEXITSTATUS(th_wait(pid, 30));
    if (rc == 77) {
        printf("     (skipped: cannot mount /proc with hidepid=2 here)\n");
        return;
    }
    CHECK_EQ(rc, 0);
}
