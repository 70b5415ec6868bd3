/* test_cond.c - conc_cond: Python's Condition (ported from CPython's
 * Lib/test/lock_tests.py: ConditionTests), over a Lock, an RLock and its
 * own RLock; across threads and processes; waiters that time out or die
 * must not swallow or block notifies. */
#include "sync_test_util.h"

#include "conc_int.h"

#include <math.h>

TEST(cond_bad_arguments)
{
    conc_cond *c = (conc_cond *)1;
    conc_lock *l;
    conc_rlock *r;
    CHECK_OK(conc_lock_new(&l, NULL));
    CHECK_OK(conc_rlock_new(&r, NULL));
    CHECK_ERR(conc_cond_new(NULL, NULL), CONC_EINVAL);
    CHECK_ERR(conc_cond_new(&c, &(conc_cond_opts){ .lock = l, .rlock = r }),
              CONC_EINVAL);
    CHECK(c == NULL);
    CHECK_ERR(conc_cond_acquire(NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_cond_release(NULL), CONC_EINVAL);
    CHECK_ERR(conc_cond_wait(NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_cond_wait_for(NULL, NULL, NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_cond_notify(NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_cond_notify_all(NULL), CONC_EINVAL);
    conc_cond_free(NULL);
    CHECK_OK(conc_cond_new(&c, NULL));
    CHECK_ERR(conc_cond_wait_for(c, NULL, NULL, 1), CONC_EINVAL);
    CHECK_OK(conc_cond_acquire(c, 0));
    CHECK_ERR(conc_cond_wait(c, NAN), CONC_EINVAL);
    CHECK_ERR(conc_cond_wait(c, -0.5), CONC_EINVAL);
    CHECK_OK(conc_cond_release(c));
    CHECK_ERR(conc_cond_release(c), CONC_EPERM);
    conc_cond_free(c);
    conc_lock_free(l);
    conc_rlock_free(r);
}

/* Every allocation of conc_cond_new fails in turn, then it succeeds. */
TEST(cond_new_fault_loop)
{
    conc_lock *l;
    CHECK_OK(conc_lock_new(&l, NULL));
    for (int with_lock = 0; with_lock < 2; with_lock++) {
        conc_cond_opts o = { .lock = with_lock ? l : NULL };
        int n;
        for (n = 1; n < 10; n++) {
            conc_cond *c = (conc_cond *)1;
            conc__fault_arm(n);
            int err = conc_cond_new(&c, &o);
            bool fired = conc__fault_fired();
            conc__fault_arm(0);
            if (!fired) {
                CHECK_OK(err);
                conc_cond_free(c);
                break;
            }
            CHECK_ERR(err, CONC_ENOMEM);
            CHECK(c == NULL);
        }
        CHECK_EQ(n, with_lock ? 3 : 4); /* handle, region (, rlock) */
    }
    conc_lock_free(l);
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

/* Python: RuntimeError("cannot wait on un-acquired lock") and
 * ("cannot notify on un-acquired lock"). */
TEST(cond_unheld_is_eperm)
{
    conc_lock *l;
    conc_rlock *r;
    CHECK_OK(conc_lock_new(&l, NULL));
    CHECK_OK(conc_rlock_new(&r, NULL));
    conc_cond *c[3];
    CHECK_OK(conc_cond_new(&c[0], &(conc_cond_opts){ .lock = l }));
    CHECK_OK(conc_cond_new(&c[1], &(conc_cond_opts){ .rlock = r }));
    CHECK_OK(conc_cond_new(&c[2], NULL));
    for (int i = 0; i < 3; i++) {
        CHECK_ERR(conc_cond_wait(c[i], 0.01), CONC_EPERM);
        CHECK_ERR(conc_cond_wait_for(c[i], never, NULL, 0.01), CONC_EPERM);
        CHECK_ERR(conc_cond_notify(c[i], 1), CONC_EPERM);
        CHECK_ERR(conc_cond_notify_all(c[i]), CONC_EPERM);
    }
    /* The condition's lock is the one given. */
    CHECK_OK(conc_lock_acquire(l, 0));
    CHECK_OK(conc_cond_notify(c[0], 1));
    CHECK_ERR(conc_cond_acquire(c[0], 0), CONC_ETIMEDOUT);
    CHECK_OK(conc_cond_release(c[0]));
    CHECK(!conc_lock_locked(l));
    CHECK_OK(conc_cond_acquire(c[1], 0));
    CHECK(conc_rlock_locked(r));
    CHECK_OK(conc_rlock_release(r));
    for (int i = 0; i < 3; i++) {
        conc_cond_free(c[i]);
    }
    conc_lock_free(l);
    conc_rlock_free(r);
}

TEST(cond_wait_times_out_holding_the_lock)
{
    conc_lock *l;
    CHECK_OK(conc_lock_new(&l, NULL));
    conc_cond *c;
    CHECK_OK(conc_cond_new(&c, &(conc_cond_opts){ .lock = l }));
    CHECK_OK(conc_cond_acquire(c, 0));
    double t0 = th_now();
    CHECK_ERR(conc_cond_wait(c, 0.1), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.1);
    CHECK(took < 1.0);
    CHECK(conc_lock_locked(l));
    CHECK_ERR(conc_cond_wait(c, 0), CONC_ETIMEDOUT);
    CHECK(conc_lock_locked(l));
    /* A notify with nobody waiting is lost, as in Python. */
    CHECK_OK(conc_cond_notify(c, 5));
    CHECK_OK(conc_cond_notify_all(c));
    CHECK_ERR(conc_cond_wait(c, 0.02), CONC_ETIMEDOUT);
    CHECK_OK(conc_cond_release(c));
    conc_cond_free(c);
    conc_lock_free(l);
}

struct cw {
    conc_cond *c;
    atomic_int started;
    atomic_int woke;
    atomic_int bad;
    double timeout;
    int state;
};

static void *waiter(void *arg)
{
    struct cw *w = arg;
    if (conc_cond_acquire(w->c, 10) != 0) {
        atomic_fetch_add(&w->bad, 1);
        return NULL;
    }
    atomic_fetch_add(&w->started, 1);
    int err = conc_cond_wait(w->c, w->timeout);
    if (err == 0) {
        atomic_fetch_add(&w->woke, 1);
    } else if (err != CONC_ETIMEDOUT) {
        atomic_fetch_add(&w->bad, 1);
    }
    if (conc_cond_release(w->c) != 0) {
        atomic_fetch_add(&w->bad, 1);
    }
    return NULL;
}

/* lock_tests.py: test_notify - notify(n) wakes exactly n of m waiters,
 * then notify_all the rest. */
static void notify_n_of_m(conc_cond *c)
{
    struct cw w = { .c = c, .timeout = 20 };
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        t[i] = st_thread(waiter, &w);
    }
    st_wait_for_int(&w.started, 6, 5);
    /* Every waiter registered under the lock before releasing it. */
    CHECK_OK(conc_cond_acquire(c, 5));
    CHECK_OK(conc_cond_notify(c, 2));
    CHECK_OK(conc_cond_release(c));
    st_wait_for_int(&w.woke, 2, 5);
    th_sleep(0.1);
    CHECK_EQ(atomic_load(&w.woke), 2);
    CHECK_OK(conc_cond_acquire(c, 5));
    CHECK_OK(conc_cond_notify(c, 1));
    CHECK_OK(conc_cond_release(c));
    st_wait_for_int(&w.woke, 3, 5);
    th_sleep(0.1);
    CHECK_EQ(atomic_load(&w.woke), 3);
    CHECK_OK(conc_cond_acquire(c, 5));
    CHECK_OK(conc_cond_notify_all(c));
    CHECK_OK(conc_cond_release(c));
    for (int i = 0; i < 6; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(atomic_load(&w.woke), 6);
    CHECK_EQ(atomic_load(&w.bad), 0);
}

TEST(cond_notify_n_wakes_exactly_n_own_rlock)
{
    conc_cond *c;
    CHECK_OK(conc_cond_new(&c, NULL));
    notify_n_of_m(c);
    conc_cond_free(c);
}

TEST(cond_notify_n_wakes_exactly_n_lock)
{
    conc_lock *l;
    CHECK_OK(conc_lock_new(&l, NULL));
    conc_cond *c;
    CHECK_OK(conc_cond_new(&c, &(conc_cond_opts){ .lock = l }));
    notify_n_of_m(c);
    conc_cond_free(c);
    conc_lock_free(l);
}

struct deep {
    conc_rlock *r;
    conc_cond *c;
    atomic_int step;
    int err;
    int levels_ok;
};

static void *deep_waiter(void *arg)
{
    struct deep *d = arg;
    for (int i = 0; i < 3; i++) {
        if (conc_rlock_acquire(d->r, 5) != 0) {
            d->err = -1;
            return NULL;
        }
    }
    atomic_store(&d->step, 1);
    d->err = conc_cond_wait(d->c, 10);
    /* Held at 3 levels again: three releases, the fourth is EPERM. */
    int ok = conc_rlock_release(d->r) == 0 && conc_rlock_release(d->r) == 0 &&
             conc_rlock_locked(d->r) && conc_rlock_release(d->r) == 0 &&
             conc_rlock_release(d->r) == CONC_EPERM;
    d->levels_ok = ok;
    return NULL;
}

/* wait() releases an RLock held 3 levels deep (another thread can take
 * it) and restores all three levels. */
TEST(cond_over_rlock_three_levels_deep)
{
    struct deep d = { 0 };
    CHECK_OK(conc_rlock_new(&d.r, NULL));
    CHECK_OK(conc_cond_new(&d.c, &(conc_cond_opts){ .rlock = d.r }));
    pthread_t t = st_thread(deep_waiter, &d);
    st_wait_for_int(&d.step, 1, 5);
    CHECK_OK(conc_rlock_acquire(d.r, 5)); /* free while it waits */
    CHECK_OK(conc_rlock_acquire(d.r, 0));
    CHECK_OK(conc_cond_notify(d.c, 1));
    CHECK_OK(conc_rlock_release(d.r));
    CHECK_OK(conc_cond_notify(d.c, 1)); /* still held at level 1 */
    CHECK_OK(conc_rlock_release(d.r));
    st_join(t);
    CHECK_OK(d.err);
    CHECK(d.levels_ok);
    CHECK(!conc_rlock_locked(d.r));
    conc_cond_free(d.c);
    conc_rlock_free(d.r);
}

/* A waiter that timed out has withdrawn: the next notify(1) goes to the
 * waiter still there, not to the one that left. */
TEST(cond_timed_out_waiter_does_not_swallow_notify)
{
    conc_cond *c;
    CHECK_OK(conc_cond_new(&c, NULL));
    struct cw quick = { .c = c, .timeout = 0.05 };
    struct cw slow = { .c = c, .timeout = 10 };
    pthread_t a = st_thread(waiter, &quick);
    st_wait_for_int(&quick.started, 1, 5);
    pthread_t b = st_thread(waiter, &slow);
    st_wait_for_int(&slow.started, 1, 5);
    st_join(a); /* timed out */
    CHECK_EQ(atomic_load(&quick.woke), 0);
    CHECK_OK(conc_cond_acquire(c, 5));
    CHECK_OK(conc_cond_notify(c, 1));
    CHECK_OK(conc_cond_release(c));
    double t0 = th_now();
    st_join(b);
    CHECK(th_now() - t0 < 2.0);
    CHECK_EQ(atomic_load(&slow.woke), 1);
    CHECK_EQ(atomic_load(&slow.bad) + atomic_load(&quick.bad), 0);
    conc_cond_free(c);
}

static void *late_waiter(void *arg)
{
    struct cw *w = arg;
    atomic_fetch_add(&w->started, 1);
    waiter(w);
    return NULL;
}

/* A waiter that starts waiting after a notify cannot take it: the notify
 * belongs to the one that was waiting. */
TEST(cond_late_waiter_cannot_take_earlier_notify)
{
    conc_cond *c;
    CHECK_OK(conc_cond_new(&c, NULL));
    struct cw early = { .c = c, .timeout = 10 };
    struct cw late = { .c = c, .timeout = 0.3 };
    pthread_t a = st_thread(waiter, &early);
    st_wait_for_int(&early.started, 1, 5);
    CHECK_OK(conc_cond_acquire(c, 5));
    CHECK_OK(conc_cond_notify(c, 1));
    /* The late one blocks on the lock, so it waits only after notify. */
    pthread_t b = st_thread(late_waiter, &late);
    st_wait_for_int(&late.started, 1, 5);
    th_sleep(0.02);
    CHECK_OK(conc_cond_release(c));
    st_join(a);
    st_join(b);
    CHECK_EQ(atomic_load(&early.woke), 1);
    CHECK_EQ(atomic_load(&late.woke), 0); /* timed out */
    CHECK_EQ(atomic_load(&early.bad) + atomic_load(&late.bad), 0);
    conc_cond_free(c);
}

struct pred_arg {
    conc_cond *c;
    int value;
    atomic_int calls;
};

static bool value_is_3(void *arg)
{
    struct pred_arg *p = arg;
    atomic_fetch_add(&p->calls, 1);
    return p->value == 3;
}

static void *bumper(void *arg)
{
    struct pred_arg *p = arg;
    for (int i = 0; i < 3; i++) {
        th_sleep(0.02);
        conc_cond_acquire(p->c, 5);
        p->value++;
        conc_cond_notify(p->c, 1);
        conc_cond_release(p->c);
    }
    return NULL;
}

/* lock_tests.py: test_waitfor, test_waitfor_timeout. */
TEST(cond_wait_for)
{
    struct pred_arg p = { 0 };
    CHECK_OK(conc_cond_new(&p.c, NULL));
    CHECK_OK(conc_cond_acquire(p.c, 5));
    pthread_t t = st_thread(bumper, &p);
    CHECK_OK(conc_cond_wait_for(p.c, value_is_3, &p, 10));
    CHECK_EQ(p.value, 3);
    CHECK(atomic_load(&p.calls) >= 2);
    CHECK_OK(conc_cond_release(p.c));
    st_join(t);
    /* Already true: no wait at all. */
    CHECK_OK(conc_cond_acquire(p.c, 5));
    atomic_store(&p.calls, 0);
    CHECK_OK(conc_cond_wait_for(p.c, value_is_3, &p, 0));
    CHECK_EQ(atomic_load(&p.calls), 1);
    /* Never true: CONC_ETIMEDOUT after the timeout, lock held. */
    p.value = 0;
    double t0 = th_now();
    CHECK_ERR(conc_cond_wait_for(p.c, value_is_3, &p, 0.1), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.1);
    CHECK(took < 1.0);
    CHECK_ERR(conc_cond_wait_for(p.c, value_is_3, &p, 0), CONC_ETIMEDOUT);
    CHECK_OK(conc_cond_release(p.c));
    conc_cond_free(p.c);
}

struct xc {
    conc_cond *c;
    conc_lock *l;
    atomic_int registered;
    atomic_int woke;
    int value;
};

static int child_waits(void *arg)
{
    struct xc *x = arg;
    if (conc_cond_acquire(x->c, 10) != 0) {
        return 1;
    }
    atomic_fetch_add(&x->registered, 1);
    int err = conc_cond_wait(x->c, 10);
    if (err == 0) {
        atomic_fetch_add(&x->woke, 1);
    }
    conc_cond_release(x->c);
    return err == 0 ? 0 : 2;
}

/* A condition created before fork works across processes: notify(1)
 * wakes exactly one of three waiting processes. */
TEST(cond_across_processes)
{
    struct xc *x = st_shared(sizeof *x);
    CHECK_OK(conc_cond_new(&x->c, NULL));
    pid_t p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = th_fork(child_waits, x);
    }
    st_wait_for_int(&x->registered, 3, 5);
    CHECK_OK(conc_cond_acquire(x->c, 5));
    CHECK_OK(conc_cond_notify(x->c, 1));
    CHECK_OK(conc_cond_release(x->c));
    st_wait_for_int(&x->woke, 1, 5);
    th_sleep(0.1);
    CHECK_EQ(atomic_load(&x->woke), 1);
    CHECK_OK(conc_cond_acquire(x->c, 5));
    CHECK_OK(conc_cond_notify_all(x->c));
    CHECK_OK(conc_cond_release(x->c));
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(st_code(th_wait(p[i], 10)), 0);
    }
    CHECK_EQ(atomic_load(&x->woke), 3);
    conc_cond_free(x->c);
    st_unshare(x, sizeof *x);
}

static int child_waits_forever(void *arg)
{
    struct xc *x = arg;
    conc_cond_acquire(x->c, 10);
    atomic_fetch_add(&x->registered, 1);
    conc_cond_wait(x->c, CONC_FOREVER);
    return 0;
}

/* A waiter SIGKILLed mid-wait: notify never hangs, a live waiter of the
 * same group still gets the notify, and later waiters work. */
TEST(cond_killed_waiter_blocks_nothing)
{
    struct xc *x = st_shared(sizeof *x);
    CHECK_OK(conc_cond_new(&x->c, NULL));
    pid_t p = th_fork(child_waits_forever, x);
    st_wait_for_int(&x->registered, 1, 5);
    struct cw w = { .c = x->c, .timeout = 10 };
    pthread_t t = st_thread(waiter, &w);
    st_wait_for_int(&w.started, 1, 5);
    kill(p, SIGKILL);
    th_wait(p, 5);
    CHECK_OK(conc_cond_acquire(x->c, 5));
    CHECK_OK(conc_cond_notify(x->c, 1));
    CHECK_OK(conc_cond_release(x->c));
    double t0 = th_now();
    st_join(t);
    CHECK(th_now() - t0 < 2.0);
    CHECK_EQ(atomic_load(&w.woke), 1);
    /* The dead waiter may absorb one notify; after that a new waiter is
     * notified as usual. */
    CHECK_OK(conc_cond_acquire(x->c, 5));
    CHECK_OK(conc_cond_notify(x->c, 1));
    CHECK_OK(conc_cond_release(x->c));
    struct cw w2 = { .c = x->c, .timeout = 10 };
    t = st_thread(waiter, &w2);
    st_wait_for_int(&w2.started, 1, 5);
    CHECK_OK(conc_cond_acquire(x->c, 5));
    CHECK_OK(conc_cond_notify(x->c, 1));
    CHECK_OK(conc_cond_release(x->c));
    st_join(t);
    CHECK_EQ(atomic_load(&w2.woke), 1);
    CHECK_EQ(atomic_load(&w.bad) + atomic_load(&w2.bad), 0);
    conc_cond_free(x->c);
    st_unshare(x, sizeof *x);
}

static int child_notifies_and_dies(void *arg)
{
    struct xc *x = arg;
    if (conc_lock_acquire(x->l, 10) != 0) {
        return 1;
    }
    conc_cond_notify(x->c, 1);
    raise(SIGKILL);
    return 2;
}

/* The waiter's lock is held by a process that dies: wait() returns
 * CONC_EOWNERDEAD, holding the lock. */
TEST(cond_wait_restores_lock_from_dead_holder)
{
    struct xc *x = st_shared(sizeof *x);
    CHECK_OK(conc_lock_new(&x->l, NULL));
    CHECK_OK(conc_cond_new(&x->c, &(conc_cond_opts){ .lock = x->l }));
    CHECK_OK(conc_cond_acquire(x->c, 5));
    pid_t p = th_fork(child_notifies_and_dies, x);
    CHECK_ERR(conc_cond_wait(x->c, 10), CONC_EOWNERDEAD);
    CHECK(conc_lock_locked(x->l));
    CHECK_EQ(st_code(th_wait(p, 5)), 100 + SIGKILL);
    CHECK_OK(conc_cond_release(x->c));
    conc_cond_free(x->c);
    conc_lock_free(x->l);
    st_unshare(x, sizeof *x);
}

struct pc {
    conc_cond *c;
    int count;
    int violations;
    int produced, consumed;
};

static void *producer(void *arg)
{
    struct pc *m = arg;
    for (int i = 0; i < 300; i++) {
        conc_cond_acquire(m->c, CONC_FOREVER);
        while (m->count >= 5) {
            if (conc_cond_wait(m->c, 10) != 0) {
                m->violations++;
            }
        }
        m->count++;
        m->produced++;
        conc_cond_notify_all(m->c);
        conc_cond_release(m->c);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    struct pc *m = arg;
    for (int i = 0; i < 300; i++) {
        conc_cond_acquire(m->c, CONC_FOREVER);
        while (m->count <= 0) {
            if (conc_cond_wait(m->c, 10) != 0) {
                m->violations++;
            }
        }
        if (m->count > 5) {
            m->violations++;
        }
        m->count--;
        m->consumed++;
        conc_cond_notify(m->c, 1);
        conc_cond_release(m->c);
    }
    return NULL;
}

/* A bounded buffer: two producers, two consumers, waits and notifies in
 * every interleaving; nothing hangs, the count stays within bounds. */
TEST(cond_bounded_buffer_stress)
{
    struct pc m = { 0 };
    CHECK_OK(conc_cond_new(&m.c, NULL));
    pthread_t t[4];
    t[0] = st_thread(producer, &m);
    t[1] = st_thread(consumer, &m);
    t[2] = st_thread(producer, &m);
    t[3] = st_thread(consumer, &m);
    for (int i = 0; i < 4; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(m.violations, 0);
    CHECK_EQ(m.produced, 600);
    CHECK_EQ(m.consumed, 600);
    CHECK_EQ(m.count, 0);
    conc_cond_free(m.c);
}

static int child_under_signals(void *arg)
{
    struct xc *x = arg;
    conc_cond_acquire(x->c, 5);
    atomic_store(&st_alarms, 0);
    st_alarm_storm(true);
    double t0 = th_now();
    int err = conc_cond_wait(x->c, 0.3);
    double took = th_now() - t0;
    st_alarm_storm(false);
    bool held = conc_cond_release(x->c) == 0;
    if (!held) {
        return 4;
    }
    return st_signal_verdict(err, CONC_ETIMEDOUT, took, 0.3);
}

TEST(cond_wait_survives_signals)
{
    struct xc *x = st_shared(sizeof *x);
    CHECK_OK(conc_cond_new(&x->c, NULL));
    pid_t p = th_fork(child_under_signals, x);
    CHECK_EQ(st_code(th_wait(p, 10)), 0);
    conc_cond_free(x->c);
    st_unshare(x, sizeof *x);
}

static void *timed_waiter(void *arg)
{
    struct cw *w = arg;
    if (conc_cond_acquire(w->c, 10) != 0) {
        atomic_fetch_add(&w->bad, 1);
        return NULL;
    }
    atomic_fetch_add(&w->started, 1);
    double t0 = th_now();
    int err = conc_cond_wait(w->c, 0.2);
    double took = th_now() - t0;
    if (err != CONC_ETIMEDOUT || took < 0.2 || took > 2.0) {
        atomic_fetch_add(&w->bad, 1);
    }
    conc_cond_release(w->c);
    return NULL;
}

/* lock_tests.py: ConditionTests.test_timeout - five waiters all time
 * out, none early; then they are all gone: a new waiter gets the next
 * notify(1) and notify_all wakes nobody else. */
TEST(cond_many_waiters_time_out)
{
    struct cw w = { 0 };
    CHECK_OK(conc_cond_new(&w.c, NULL));
    pthread_t t[5];
    for (int i = 0; i < 5; i++) {
        t[i] = st_thread(timed_waiter, &w);
    }
    for (int i = 0; i < 5; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(atomic_load(&w.started), 5);
    CHECK_EQ(atomic_load(&w.bad), 0);
    struct cw n = { .c = w.c, .timeout = 10 };
    pthread_t u = st_thread(waiter, &n);
    st_wait_for_int(&n.started, 1, 5);
    CHECK_OK(conc_cond_acquire(w.c, 5));
    CHECK_OK(conc_cond_notify(w.c, 1));
    CHECK_OK(conc_cond_release(w.c));
    st_join(u);
    CHECK_EQ(atomic_load(&n.woke), 1);
    conc_cond_free(w.c);
}

/* ---- a notify wakes a sleeping waiter at once --------------------------------- */

typedef struct {
    conc_cond *c;
    _Atomic bool waiting; /* the waiter is about to wait, holding the lock */
} cw_arg;

static void cw_reset(void *arg)
{
    cw_arg *a = arg;
    atomic_store(&a->waiting, false);
}

/* The waiter flags, then waits (which releases the lock): once this
 * thread gets the lock after the flag, the waiter is in its wait. */
static bool cw_asleep(void *arg)
{
    cw_arg *a = arg;
    if (!atomic_load(&a->waiting)) {
        return false;
    }
    CHECK_OK(conc_cond_acquire(a->c, 10));
    CHECK_OK(conc_cond_release(a->c));
    return true;
}

static void cw_wait(void *arg)
{
    cw_arg *a = arg;
    CHECK_OK(conc_cond_acquire(a->c, 10));
    atomic_store(&a->waiting, true);
    CHECK_OK(conc_cond_wait(a->c, 10));
    CHECK_OK(conc_cond_release(a->c));
}

static void cw_wake(void *arg)
{
    cw_arg *a = arg;
    CHECK_OK(conc_cond_acquire(a->c, 10));
    CHECK_OK(conc_cond_notify(a->c, 1));
    CHECK_OK(conc_cond_release(a->c));
}

/* 40 notifies at varied phases of the waiter's sleep slice: far below
 * the ~1 s that slice ends alone would cost. */
TEST(cond_notify_wakes_a_sleeping_waiter_at_once)
{
    cw_arg a = { 0 };
    CHECK_OK(conc_cond_new(&a.c, NULL));
    st_waker w = { .reset = cw_reset, .asleep = cw_asleep, .wait = cw_wait,
                   .wake = cw_wake, .arg = &a };
    CHECK(st_wake_latency(&w, 40) < 0.3);
    conc_cond_free(a.c);
}
