/* test_barrier.c - conc_barrier: Python's threading.Barrier (ported from
 * CPython's Lib/test/lock_tests.py: BarrierTests), with threads and with
 * processes, and a party that dies inside the action. */
#include "sync_test_util.h"

#include "barrier_int.h"
#include "conc_int.h"

#include <math.h>

TEST(barrier_bad_arguments)
{
    conc_barrier *b = (conc_barrier *)1;
    CHECK_ERR(conc_barrier_new(NULL, &(conc_barrier_opts){ .parties = 2 }),
              CONC_EINVAL);
    CHECK_ERR(conc_barrier_new(&b, NULL), CONC_EINVAL);
    CHECK(b == NULL);
    CHECK_ERR(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 0 }),
              CONC_EINVAL);
    CHECK_ERR(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 2,
                                                         .timeout = CONC_TIMEOUT(-2) }),
              CONC_EINVAL);
    CHECK_ERR(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 2,
                                                         .timeout = CONC_TIMEOUT(NAN) }),
              CONC_EINVAL);
    CHECK_ERR(conc_barrier_wait(NULL, 1, NULL), CONC_EINVAL);
    CHECK_ERR(conc_barrier_abort(NULL), CONC_EINVAL);
    CHECK_ERR(conc_barrier_reset(NULL), CONC_EINVAL);
    CHECK_EQ(conc_barrier_parties(NULL), 0);
    CHECK_EQ(conc_barrier_n_waiting(NULL), 0);
    CHECK(!conc_barrier_broken(NULL));
    conc_barrier_free(NULL);
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 3 }));
    CHECK_EQ(conc_barrier_parties(b), 3);
    CHECK_EQ(conc_barrier_n_waiting(b), 0);
    CHECK(!conc_barrier_broken(b));
    CHECK_ERR(conc_barrier_wait(b, NAN, NULL), CONC_EINVAL);
    CHECK_ERR(conc_barrier_wait(b, -0.5, NULL), CONC_EINVAL);
    CHECK_EQ(conc_barrier_n_waiting(b), 0);
    CHECK(!conc_barrier_broken(b));
    conc_barrier_free(b);
}

TEST(barrier_new_fault_loop)
{
    int n;
    for (n = 1; n < 10; n++) {
        conc_barrier *b = (conc_barrier *)1;
        conc__fault_arm(n);
        int err = conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 2 });
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (!fired) {
            CHECK_OK(err);
            conc_barrier_free(b);
            break;
        }
        CHECK_ERR(err, CONC_ENOMEM);
        CHECK(b == NULL);
    }
    CHECK_EQ(n, 3);
}

TEST(barrier_single_party)
{
    conc_barrier *b;
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 1 }));
    for (int i = 0; i < 3; i++) {
        int idx = -1;
        CHECK_OK(conc_barrier_wait(b, 0, &idx));
        CHECK_EQ(idx, 0);
    }
    CHECK_OK(conc_barrier_wait(b, CONC_FOREVER, NULL));
    conc_barrier_free(b);
}

#define PARTIES 4
#define ROUNDS 5

struct bw {
    conc_barrier *b;
    atomic_int actions;
    atomic_int seen[ROUNDS][PARTIES];
    atomic_int bad;
    atomic_int arrived[ROUNDS];
    atomic_int broken;
    atomic_int started;
    double timeout;
    int fail_action;
    int parties;
};

static int count_action(void *arg)
{
    struct bw *w = arg;
    atomic_fetch_add(&w->actions, 1);
    return w->fail_action;
}

static void *party(void *arg)
{
    struct bw *w = arg;
    for (int r = 0; r < ROUNDS; r++) {
        atomic_fetch_add(&w->arrived[r], 1);
        int idx = -1;
        int err = conc_barrier_wait(w->b, 10, &idx);
        if (err != 0 || idx < 0 || idx >= w->parties) {
            atomic_fetch_add(&w->bad, 1);
            return NULL;
        }
        /* Everyone of this round arrived before anyone left. */
        if (atomic_load(&w->arrived[r]) != w->parties) {
            atomic_fetch_add(&w->bad, 1);
        }
        atomic_fetch_add(&w->seen[r][idx], 1);
    }
    return NULL;
}

/* lock_tests.py: test_barrier, test_wait_return, test_action - distinct
 * indexes each round, the action once per round, nobody passes early. */
TEST(barrier_threads_rounds)
{
    struct bw *w = calloc(1, sizeof *w);
    w->parties = PARTIES;
    CHECK_OK(conc_barrier_new(&w->b, &(conc_barrier_opts){
                                         .parties = PARTIES,
                                         .action = count_action,
                                         .action_arg = w }));
    pthread_t t[PARTIES];
    for (int i = 0; i < PARTIES; i++) {
        t[i] = st_thread(party, w);
    }
    for (int i = 0; i < PARTIES; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(atomic_load(&w->bad), 0);
    CHECK_EQ(atomic_load(&w->actions), ROUNDS);
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < PARTIES; i++) {
            CHECK_EQ(atomic_load(&w->seen[r][i]), 1);
        }
    }
    CHECK_EQ(conc_barrier_n_waiting(w->b), 0);
    CHECK(!conc_barrier_broken(w->b));
    conc_barrier_free(w->b);
    free(w);
}

static int party_process(void *arg)
{
    struct bw *w = arg;
    party(w);
    return atomic_load(&w->bad) == 0 ? 0 : 1;
}

/* The same, with three processes and the parent (created before fork). */
TEST(barrier_processes_rounds)
{
    struct bw *w = st_shared(sizeof *w);
    w->parties = PARTIES;
    CHECK_OK(conc_barrier_new(&w->b, &(conc_barrier_opts){
                                         .parties = PARTIES,
                                         .action = count_action,
                                         .action_arg = w }));
    pid_t p[PARTIES - 1];
    for (int i = 0; i < PARTIES - 1; i++) {
        p[i] = th_fork(party_process, w);
    }
    party(w);
    for (int i = 0; i < PARTIES - 1; i++) {
        CHECK_EQ(st_code(th_wait(p[i], 20)), 0);
    }
    CHECK_EQ(atomic_load(&w->bad), 0);
    CHECK_EQ(atomic_load(&w->actions), ROUNDS);
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < PARTIES; i++) {
            CHECK_EQ(atomic_load(&w->seen[r][i]), 1);
        }
    }
    conc_barrier_free(w->b);
    st_unshare(w, sizeof *w);
}

static void *one_wait(void *arg)
{
    struct bw *w = arg;
    atomic_fetch_add(&w->started, 1);
    int err = conc_barrier_wait(w->b, w->timeout, NULL);
    if (err == CONC_EBROKEN) {
        atomic_fetch_add(&w->broken, 1);
    } else {
        atomic_fetch_add(&w->bad, 1);
    }
    return NULL;
}

/* lock_tests.py: test_action (failing) - a non-zero action breaks the
 * barrier: every party gets CONC_EBROKEN; reset makes it usable again. */
TEST(barrier_failing_action_breaks_it)
{
    struct bw *w = calloc(1, sizeof *w);
    w->fail_action = 7;
    w->timeout = 10;
    CHECK_OK(conc_barrier_new(&w->b, &(conc_barrier_opts){
                                         .parties = 3,
                                         .action = count_action,
                                         .action_arg = w }));
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = st_thread(one_wait, w);
    }
    for (int i = 0; i < 3; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(atomic_load(&w->broken), 3);
    CHECK_EQ(atomic_load(&w->bad), 0);
    CHECK_EQ(atomic_load(&w->actions), 1);
    CHECK(conc_barrier_broken(w->b));
    CHECK_ERR(conc_barrier_wait(w->b, 1, NULL), CONC_EBROKEN);
    CHECK_OK(conc_barrier_reset(w->b));
    CHECK(!conc_barrier_broken(w->b));
    w->fail_action = 0;
    w->parties = 3;
    atomic_store(&w->actions, 0);
    for (int i = 0; i < 3; i++) {
        t[i] = st_thread(party, w);
    }
    for (int i = 0; i < 3; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(atomic_load(&w->bad), 0);
    CHECK_EQ(atomic_load(&w->actions), ROUNDS);
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < 3; i++) {
            CHECK_EQ(atomic_load(&w->seen[r][i]), 1);
        }
    }
    conc_barrier_free(w->b);
    free(w);
}

/* lock_tests.py: test_timeout - a wait that times out breaks the barrier
 * for everyone, the timing-out party included. */
TEST(barrier_timeout_breaks_it)
{
    struct bw *w = calloc(1, sizeof *w);
    w->timeout = 10;
    CHECK_OK(conc_barrier_new(&w->b, &(conc_barrier_opts){ .parties = 3 }));
    pthread_t t = st_thread(one_wait, w);
    st_wait_for_int(&w->started, 1, 5);
    double t0 = th_now();
    CHECK_ERR(conc_barrier_wait(w->b, 0.1, NULL), CONC_EBROKEN);
    double took = th_now() - t0;
    CHECK(took >= 0.1);
    CHECK(took < 1.0);
    st_join(t);
    CHECK_EQ(atomic_load(&w->broken), 1);
    CHECK(conc_barrier_broken(w->b));
    CHECK_EQ(conc_barrier_n_waiting(w->b), 0);
    conc_barrier_free(w->b);
    free(w);
}

/* lock_tests.py: test_default_timeout - CONC_FOREVER uses the barrier's
 * own timeout. */
TEST(barrier_default_timeout)
{
    conc_barrier *b;
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 2,
                                                        .timeout = CONC_TIMEOUT(0.1) }));
    double t0 = th_now();
    CHECK_ERR(conc_barrier_wait(b, CONC_FOREVER, NULL), CONC_EBROKEN);
    double took = th_now() - t0;
    CHECK(took >= 0.1);
    CHECK(took < 1.0);
    CHECK(conc_barrier_broken(b));
    conc_barrier_free(b);
}

/* One meaning of 0: CONC_TIMEOUT(0) as the barrier's default makes a
 * wait given CONC_FOREVER not wait at all (it breaks the barrier), while
 * CONC_TIMEOUT(CONC_FOREVER), like leaving it out, means no limit. */
TEST(barrier_default_timeout_zero_means_do_not_wait)
{
    conc_barrier *b;
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){
                                      .parties = 2,
                                      .timeout = CONC_TIMEOUT(0) }));
    double t0 = th_now();
    CHECK_ERR(conc_barrier_wait(b, CONC_FOREVER, NULL), CONC_EBROKEN);
    CHECK(th_now() - t0 < 0.05);
    conc_barrier_free(b);
    struct bw *w = calloc(1, sizeof *w);
    w->timeout = CONC_FOREVER;
    CHECK_OK(conc_barrier_new(&w->b, &(conc_barrier_opts){
                                         .parties = 2,
                                         .timeout = CONC_TIMEOUT(
                                             CONC_FOREVER) }));
    pthread_t t = st_thread(one_wait, w);
    th_sleep(0.2);
    CHECK(!conc_barrier_broken(w->b));
    CHECK_EQ(conc_barrier_n_waiting(w->b), 1);
    CHECK_OK(conc_barrier_wait(w->b, CONC_FOREVER, NULL));
    st_join(t);
    /* one_wait counts a wait that did not break as "bad": here it is the
     * one expected outcome. */
    CHECK_EQ(atomic_load(&w->bad), 1);
    CHECK_EQ(atomic_load(&w->broken), 0);
    conc_barrier_free(w->b);
    free(w);
    CHECK_ERR(conc_barrier_new(&b, &(conc_barrier_opts){
                                       .parties = 2,
                                       .timeout = CONC_TIMEOUT(-0.5) }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "timeout") != NULL);
}

/* lock_tests.py: test_abort - waiters get CONC_EBROKEN, later waits too,
 * until reset. */
TEST(barrier_abort_and_reset)
{
    struct bw *w = calloc(1, sizeof *w);
    w->timeout = 10;
    CHECK_OK(conc_barrier_new(&w->b, &(conc_barrier_opts){ .parties = 3 }));
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        t[i] = st_thread(one_wait, w);
    }
    st_wait_for_int(&w->started, 2, 5);
    double end = th_now() + 5;
    while (conc_barrier_n_waiting(w->b) < 2 && th_now() < end) {
        th_sleep(0.001);
    }
    CHECK_EQ(conc_barrier_n_waiting(w->b), 2);
    CHECK_OK(conc_barrier_abort(w->b));
    for (int i = 0; i < 2; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(atomic_load(&w->broken), 2);
    CHECK(conc_barrier_broken(w->b));
    CHECK_ERR(conc_barrier_wait(w->b, 0, NULL), CONC_EBROKEN);
    CHECK_OK(conc_barrier_reset(w->b));
    CHECK(!conc_barrier_broken(w->b));
    CHECK_EQ(conc_barrier_n_waiting(w->b), 0);
    conc_barrier_free(w->b);
    free(w);
}

/* lock_tests.py: test_reset - reset while parties wait: they get
 * CONC_EBROKEN, and the barrier then works for a full round. */
TEST(barrier_reset_while_waiting)
{
    struct bw *w = calloc(1, sizeof *w);
    w->timeout = 10;
    CHECK_OK(conc_barrier_new(&w->b, &(conc_barrier_opts){ .parties = 3 }));
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        t[i] = st_thread(one_wait, w);
    }
    double end = th_now() + 5;
    while (conc_barrier_n_waiting(w->b) < 2 && th_now() < end) {
        th_sleep(0.001);
    }
    CHECK_OK(conc_barrier_reset(w->b));
    for (int i = 0; i < 2; i++) {
        st_join(t[i]);
    }
    CHECK_EQ(atomic_load(&w->broken), 2);
    CHECK(!conc_barrier_broken(w->b));
    /* Full rounds now pass. */
    struct bw *v = calloc(1, sizeof *v);
    v->b = w->b;
    v->parties = 3;
    pthread_t u[3];
    for (int i = 0; i < 3; i++) {
        u[i] = st_thread(party, v);
    }
    for (int i = 0; i < 3; i++) {
        st_join(u[i]);
    }
    CHECK_EQ(atomic_load(&v->bad), 0);
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < 3; i++) {
            CHECK_EQ(atomic_load(&v->seen[r][i]), 1);
        }
    }
    conc_barrier_free(w->b);
    free(v);
    free(w);
}

static int action_dies(void *arg)
{
    (void)arg;
    raise(SIGKILL);
    return 0;
}

/* Arrives once another party waits, so that this process is the last of
 * two and runs the action: 0 if its wait succeeds. */
static int child_arrives_last(void *arg)
{
    conc_barrier *b = arg;
    double end = th_now() + 5;
    while (conc_barrier_n_waiting(b) < 1 && th_now() < end) {
        th_sleep(0.001);
    }
    return conc_barrier_wait(b, 10, NULL) == 0 ? 0 : 1;
}

/* The party running the action is SIGKILLed there, holding the barrier's
 * lock: the others are not left hanging, they get CONC_EBROKEN. */
TEST(barrier_party_killed_in_action)
{
    conc_barrier *b;
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){
                                      .parties = 2, .action = action_dies }));
    pid_t p = th_fork(child_arrives_last, b);
    double t0 = th_now();
    int err = conc_barrier_wait(b, 10, NULL);
    CHECK_ERR(err, CONC_EBROKEN);
    CHECK(th_now() - t0 < 5.0);
    CHECK_EQ(st_code(th_wait(p, 5)), 100 + SIGKILL);
    CHECK(conc_barrier_broken(b));
    CHECK_OK(conc_barrier_reset(b));
    conc_barrier_free(b);
}

static int child_under_signals(void *arg)
{
    conc_barrier *b = arg;
    atomic_store(&st_alarms, 0);
    st_alarm_storm(true);
    double t0 = th_now();
    int err = conc_barrier_wait(b, 0.3, NULL);
    double took = th_now() - t0;
    st_alarm_storm(false);
    return st_signal_verdict(err, CONC_EBROKEN, took, 0.3);
}

TEST(barrier_wait_survives_signals)
{
    conc_barrier *b;
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 2 }));
    pid_t p = th_fork(child_under_signals, b);
    CHECK_EQ(st_code(th_wait(p, 10)), 0);
    conc_barrier_free(b);
}

static int child_waits_forever(void *arg)
{
    struct bw *w = arg;
    atomic_fetch_add(&w->started, 1);
    conc_barrier_wait(w->b, CONC_FOREVER, NULL);
    return 1;
}

/* parties threads pass ROUNDS full rounds of b, each index once a round
 * (a barrier brought back by reset() works as a new one). */
static void full_rounds_pass(conc_barrier *b, int parties)
{
    struct bw *v = calloc(1, sizeof *v);
    CHECK(v != NULL);
    v->b = b;
    v->parties = parties;
    pthread_t u[3];
    CHECK(parties <= 3);
    for (int i = 0; i < parties; i++) {
        u[i] = st_thread(party, v);
    }
    for (int i = 0; i < parties; i++) {
        st_join(u[i]);
    }
    CHECK_EQ(atomic_load(&v->bad), 0);
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < parties; i++) {
            CHECK_EQ(atomic_load(&v->seen[r][i]), 1);
        }
    }
    free(v);
}

/* A party SIGKILLed while it waits: Python's others would hang for ever.
 * Here the round is broken (it can never complete), the survivors waiting
 * without a timeout get CONC_EBROKEN, and after reset() full rounds pass
 * again. */
/* scribbled: a peer first wrote a look far in the future into the
 * barrier's next_reap_ns (as into a named one); the death is still seen
 * within a slice or two. */
static void party_killed_while_waiting(bool scribbled)
{
    struct bw *w = st_shared(sizeof *w);
    w->timeout = CONC_FOREVER;
    CHECK_OK(conc_barrier_new(&w->b, &(conc_barrier_opts){ .parties = 3 }));
    if (scribbled) {
        atomic_store(&w->b->sh->next_reap_ns, UINT64_MAX);
    }
    pid_t p = th_fork(child_waits_forever, w);
    st_wait_for_int(&w->started, 1, 5);
    pthread_t t = st_thread(one_wait, w);
    st_wait_for_int(&w->started, 2, 5);
    double end = th_now() + 5;
    while (conc_barrier_n_waiting(w->b) < 2 && th_now() < end) {
        th_sleep(0.001);
    }
    CHECK_EQ(conc_barrier_n_waiting(w->b), 2);
    kill(p, SIGKILL);
    CHECK_EQ(st_code(th_wait(p, 5)), 100 + SIGKILL);
    double t0 = th_now();
    st_join(t);
    CHECK(th_now() - t0 < 3.0);
    CHECK_EQ(atomic_load(&w->broken), 1);
    CHECK_EQ(atomic_load(&w->bad), 0);
    CHECK(conc_barrier_broken(w->b));
    CHECK_OK(conc_barrier_reset(w->b));
    CHECK(!conc_barrier_broken(w->b));
    full_rounds_pass(w->b, 3);
    conc_barrier_free(w->b);
    st_unshare(w, sizeof *w);
}

TEST(barrier_party_killed_while_waiting)
{
    party_killed_while_waiting(false);
}

TEST(barrier_party_killed_while_waiting_reap_time_scribbled)
{
    party_killed_while_waiting(true);
}

/* Dies holding the barrier's lock right after counting itself in and
 * before writing its slot: the one window bar_reap_dead() cannot see. */
static int child_dies_between_count_and_slot(void *arg)
{
    struct conc__barrier_shared *sh = ((conc_barrier *)arg)->sh;
    conc__deadline forever = { .forever = true, .once = false };
    if (conc__olock_acquire(&sh->mu, &forever) != 0) {
        return 1;
    }
    atomic_fetch_add(&sh->count, 1);
    _exit(0);
}

/* After that death, the next to take the lock rebuilds count from the
 * slots: the barrier is broken (the round cannot complete) but reset()
 * brings it back at once and full rounds pass; nothing waits for the
 * party that never wrote its slot. */
TEST(barrier_party_dead_between_count_and_slot_does_not_block_reset)
{
    conc_barrier *b;
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 2 }));
    pid_t p = th_fork(child_dies_between_count_and_slot, b);
    CHECK_EQ(st_code(th_wait(p, 5)), 0);
    CHECK_EQ(atomic_load(&b->sh->count), 1u);
    double t0 = th_now();
    CHECK_OK(conc_barrier_reset(b));
    CHECK(th_now() - t0 < 3.0);
    CHECK(!conc_barrier_broken(b));
    CHECK_EQ(atomic_load(&b->sh->count), 0u);
    full_rounds_pass(b, 2);
    conc_barrier_free(b);
}

static int child_leaves_late(void *arg)
{
    struct bw *w = arg;
    atomic_fetch_add(&w->started, 1);
    int err = conc_barrier_wait(w->b, 10, NULL);
    if (err != 0) {
        return 1;
    }
    /* Released: now die before the next round, after having left. */
    return 0;
}

/* Many processes pass rounds of a barrier together (index distinct per
 * round, as with threads). */
TEST(barrier_processes_single_round_each)
{
    struct bw *w = st_shared(sizeof *w);
    CHECK_OK(conc_barrier_new(&w->b, &(conc_barrier_opts){ .parties = 4 }));
    pid_t p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = th_fork(child_leaves_late, w);
    }
    int idx = -1;
    CHECK_OK(conc_barrier_wait(w->b, 10, &idx));
    CHECK(idx >= 0 && idx < 4);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(st_code(th_wait(p[i], 10)), 0);
    }
    CHECK_EQ(conc_barrier_n_waiting(w->b), 0);
    CHECK(!conc_barrier_broken(w->b));
    conc_barrier_free(w->b);
    st_unshare(w, sizeof *w);
}

static int child_waits_once(void *arg)
{
    struct bw *w = arg;
    atomic_fetch_add(&w->started, 1);
    return conc_barrier_wait(w->b, 10, NULL) == 0 ? 0 : 1;
}

/* A released party stopped (SIGSTOP) before it leaves keeps the round
 * draining.  A later arrival waits for the drain only until its own
 * deadline: CONC_ETIMEDOUT, the barrier not broken (that party joined no
 * round), and a timeout of 0 does not wait at all.  Once the stopped
 * party goes on and leaves, full rounds pass. */
TEST_T(barrier_timeout_bounds_the_wait_for_a_drain, 20)
{
    struct bw *w = st_shared(sizeof *w);
    CHECK_OK(conc_barrier_new(&w->b, &(conc_barrier_opts){ .parties = 2 }));
    pid_t p = th_fork(child_waits_once, w);
    st_wait_for_int(&w->started, 1, 5);
    double end = th_now() + 5;
    while (conc_barrier_n_waiting(w->b) < 1 && th_now() < end) {
        th_sleep(0.001);
    }
    th_sleep(0.02); /* asleep in the futex, not about to take the lock */
    CHECK_EQ(kill(p, SIGSTOP), 0);
    int idx = -1;
    CHECK_OK(conc_barrier_wait(w->b, 5, &idx));
    CHECK_EQ(idx, 1);
    double t0 = th_now();
    CHECK_ERR(conc_barrier_wait(w->b, 0.2, NULL), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.2);
    CHECK(took < 2.0);
    CHECK(strstr(conc_errdetail(), "draining") != NULL);
    t0 = th_now();
    CHECK_ERR(conc_barrier_wait(w->b, 0, NULL), CONC_ETIMEDOUT);
    CHECK(th_now() - t0 < 0.5);
    CHECK(!conc_barrier_broken(w->b));
    CHECK_EQ(kill(p, SIGCONT), 0);
    CHECK_EQ(st_code(th_wait(p, 5)), 0);
    full_rounds_pass(w->b, 2);
    conc_barrier_free(w->b);
    st_unshare(w, sizeof *w);
}

static int child_waits_briefly(void *arg)
{
    return conc_barrier_wait(arg, 0.1, NULL);
}

/* A peer left a named barrier draining (or resetting) with nobody
 * inside, which no barrier ever is: a wait takes it as drained, instead
 * of waiting for a party that does not exist, with or without a
 * timeout. */
TEST(barrier_scribbled_drain_with_nobody_inside_is_drained)
{
    char name[64];
    snprintf(name, sizeof name, "conc-test-barrier-drain-%d", (int)getpid());
    int32_t states[] = { 1, -1 }; /* DRAINING, RESETTING (barrier.c) */
    for (int i = 0; i < 2; i++) {
        conc_barrier *b, *o;
        CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 1,
                                                            .name = name }));
        CHECK_OK(conc_barrier_open(&o, name));
        atomic_store(&b->sh->state, states[i]);
        CHECK_EQ(atomic_load(&b->sh->count), 0u);
        pid_t p = th_fork(child_waits_briefly, o);
        CHECK_EQ(st_code(th_wait(p, 5)), 0);
        int idx = -1;
        CHECK_OK(conc_barrier_wait(o, CONC_FOREVER, &idx));
        CHECK_EQ(idx, 0);
        CHECK(!conc_barrier_broken(b));
        conc_barrier_free(o);
        conc_barrier_free(b);
    }
}

/* A named barrier of two parties, made (*b) and opened (*o): the tests
 * play a peer scribbling on its segment through (*b)->sh. */
static void named_pair(const char *tag, conc_barrier **b, conc_barrier **o)
{
    char name[64];
    snprintf(name, sizeof name, "conc-test-barrier-%s-%d", tag,
             (int)getpid());
    CHECK_OK(conc_barrier_new(b, &(conc_barrier_opts){ .parties = 2,
                                                       .name = name }));
    CHECK_OK(conc_barrier_open(o, name));
}

/* A peer wrote a live tid (1) into a named barrier's lock word: every
 * call that takes the lock returns CONC_ETIMEDOUT in time instead of
 * waiting for ever: a wait by its timeout (0 included), reset and abort,
 * which have none, after a grace of 1 s.  Once the word is free again
 * the barrier works. */
TEST_T(barrier_lock_held_by_a_live_stranger_times_out, 30)
{
    conc_barrier *b, *o;
    named_pair("mu", &b, &o);
    atomic_store(&b->sh->mu.state, 1);
    double t0 = th_now();
    CHECK_ERR(conc_barrier_wait(o, 0.1, NULL), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.1);
    CHECK(took < 1.0);
    CHECK(strstr(conc_errdetail(), "lock") != NULL);
    t0 = th_now();
    CHECK_ERR(conc_barrier_wait(o, 0, NULL), CONC_ETIMEDOUT);
    CHECK(th_now() - t0 < 0.5);
    t0 = th_now();
    CHECK_ERR(conc_barrier_reset(o), CONC_ETIMEDOUT);
    took = th_now() - t0;
    CHECK(took >= 1.0);
    CHECK(took < 10.0);
    CHECK(strstr(conc_errdetail(), "conc_barrier_reset") != NULL);
    CHECK_ERR(conc_barrier_abort(o), CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "conc_barrier_abort") != NULL);
    CHECK_EQ(conc_barrier_n_waiting(o), 0);
    CHECK(!conc_barrier_broken(o));
    atomic_store(&b->sh->mu.state, 0);
    CHECK_ERR(conc_barrier_wait(o, 0.1, NULL), CONC_EBROKEN);
    CHECK_OK(conc_barrier_reset(o));
    full_rounds_pass(o, 2);
    conc_barrier_free(o);
    conc_barrier_free(b);
}

/* Stops the calling process (SIGSTOP) unless it is the one *arg names. */
static int action_stops(void *arg)
{
    if (getpid() != *(pid_t *)arg) {
        raise(SIGSTOP);
    }
    return 0;
}

struct timed_wait {
    conc_barrier *b;
    double timeout;
    int err;
    atomic_int done;
    atomic_int go; /* the thread ends once set: alive till then */
};

static void *timed_wait(void *arg)
{
    struct timed_wait *tw = arg;
    tw->err = conc_barrier_wait(tw->b, tw->timeout, NULL);
    atomic_store(&tw->done, 1);
    while (atomic_load(&tw->go) == 0) {
        th_sleep(0.001);
    }
    return NULL;
}

/* Starts tw's party in *t, waits until the barrier holds `waiting`
 * parties (it among them), makes raw's lock word a live stranger's (1),
 * and waits until the party's wait returned (tw->err). */
static void party_times_out_on_a_held_lock(conc_barrier *raw,
                                           struct timed_wait *tw,
                                           unsigned waiting, pthread_t *t)
{
    CHECK_EQ(pthread_create(t, NULL, timed_wait, tw), 0);
    for (double end = th_now() + 10;
         conc_barrier_n_waiting(tw->b) < waiting;) {
        CHECK(th_now() < end);
        th_sleep(0.001);
    }
    atomic_store(&raw->sh->mu.state, 1); /* a live stranger holds it */
    for (double end = th_now() + 10; !atomic_load(&tw->done);) {
        CHECK(th_now() < end);
        th_sleep(0.001);
    }
}

/* A party that gave up while a peer held the barrier's lock left a mark
 * in its slot, still counted: the next arrival takes it out before it
 * counts itself, so it cannot complete the round alone (the round lost a
 * party to a timeout: broken), nor count the same thread twice. */
TEST_T(barrier_party_that_left_without_the_lock_is_not_counted, 30)
{
    conc_barrier *b, *o;
    named_pair("left", &b, &o);
    struct timed_wait tw = { .b = o, .timeout = 0.3 };
    pthread_t t;
    party_times_out_on_a_held_lock(b, &tw, 1, &t);
    atomic_store(&b->sh->mu.state, 0);
    CHECK_ERR(tw.err, CONC_ETIMEDOUT);
    int idx = -1;
    CHECK_ERR(conc_barrier_wait(o, 5, &idx), CONC_EBROKEN);
    CHECK_EQ(idx, -1);
    CHECK_EQ(conc_barrier_n_waiting(o), 0);
    atomic_store(&tw.go, 1);
    pthread_join(t, NULL);
    CHECK_OK(conc_barrier_reset(o));
    full_rounds_pass(o, 2);
    conc_barrier_free(o);
    conc_barrier_free(b);
}

/* The same past the parties whose identities have slots (the first
 * 1024): such a party, waiting while a live stranger holds the lock, has
 * no slot to leave a mark in; it counts itself in gone and returns at
 * its timeout (it used to wait for the lock without one), and the next
 * arrival takes it out of the count and finds the round broken. */
TEST_T(barrier_party_past_the_slots_leaves_without_the_lock, 30)
{
    enum { MANY = 1100, INSIDE = 1030 };
    conc_barrier *b;
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = MANY }));
    CHECK(b->nslots < INSIDE);
    /* INSIDE parties already in (white box: their slots are past the
     * last one, so none is looked for) */
    atomic_store(&b->sh->count, INSIDE);
    struct timed_wait tw = { .b = b, .timeout = 0.3 };
    pthread_t t;
    party_times_out_on_a_held_lock(b, &tw, INSIDE + 1, &t);
    CHECK_ERR(tw.err, CONC_ETIMEDOUT);
    CHECK_EQ(atomic_load(&b->sh->gone), 1);
    atomic_store(&b->sh->mu.state, 0);
    int idx = -1;
    CHECK_ERR(conc_barrier_wait(b, 5, &idx), CONC_EBROKEN);
    CHECK_EQ(idx, -1);
    CHECK_EQ(atomic_load(&b->sh->gone), 0);
    CHECK_EQ(atomic_load(&b->sh->count), INSIDE); /* broken: n_waiting 0 */
    atomic_store(&tw.go, 1);
    pthread_join(t, NULL);
    atomic_store(&b->sh->count, 0); /* the INSIDE parties leave */
    CHECK_OK(conc_barrier_reset(b));
    CHECK(!conc_barrier_broken(b));
    conc_barrier_free(b);
}

/* The party running the action is stopped there (SIGSTOP), holding the
 * barrier's lock.  The party waiting in the round gives up at its
 * timeout (CONC_ETIMEDOUT), as do later arrivals, reset and abort; once
 * the stopped party goes on, it releases the round and leaves, the party
 * that gave up (its thread still alive) is taken out of the count for
 * it, and full rounds pass. */
TEST_T(barrier_party_stopped_in_action_holds_nobody_past_a_timeout, 30)
{
    conc_barrier *b;
    pid_t me = getpid();
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){
                                      .parties = 2, .action = action_stops,
                                      .action_arg = &me }));
    struct timed_wait tw = { .b = b, .timeout = 2.0, .err = 1 };
    atomic_init(&tw.done, 0);
    atomic_init(&tw.go, 0);
    double t0 = th_now();
    pthread_t t = st_thread(timed_wait, &tw);
    pid_t p = th_fork(child_arrives_last, b);
    int status = 0;
    CHECK_EQ(waitpid(p, &status, WUNTRACED), p);
    CHECK(WIFSTOPPED(status));
    double t1 = th_now();
    CHECK_ERR(conc_barrier_wait(b, 0.1, NULL), CONC_ETIMEDOUT);
    CHECK(th_now() - t1 >= 0.1);
    CHECK(th_now() - t1 < 1.0);
    CHECK_ERR(conc_barrier_reset(b), CONC_ETIMEDOUT);
    CHECK_ERR(conc_barrier_abort(b), CONC_ETIMEDOUT);
    st_wait_for_int(&tw.done, 1, 10);
    double took = th_now() - t0;
    CHECK_ERR(tw.err, CONC_ETIMEDOUT);
    CHECK(took >= 2.0);
    CHECK(took < 10.0);
    CHECK_EQ(kill(p, SIGCONT), 0);
    CHECK_EQ(st_code(th_wait(p, 5)), 0);
    CHECK(!conc_barrier_broken(b));
    full_rounds_pass(b, 2);
    CHECK_EQ(atomic_load(&b->sh->count), 0u);
    atomic_store(&tw.go, 1);
    st_join(t);
    conc_barrier_free(b);
}

/* A peer scribbles a named barrier's count, parties and state: a wait
 * never returns an index outside 0..parties-1 (the parties checked at
 * open), it returns CONC_ECORRUPT, leaving *index alone, and breaks the
 * barrier with count rebuilt, so that reset() mends it.  parties() and
 * n_waiting() keep to the checked parties too. */
TEST_T(barrier_scribbled_count_is_corrupt_never_an_index, 30)
{
    conc_barrier *b, *o;
    named_pair("idx", &b, &o);
    struct conc__barrier_shared *sh = b->sh;
    struct {
        int32_t state;
        uint32_t count, parties;
    } lies[] = {
        { 0, 0xfffffffeu, 0xffffffffu }, /* the index would be -2 */
        { 0, 6, 7 },                     /* 6, for a barrier of 2 */
        { 0, 2, 2 },                     /* one too many to be filling */
        { 1, 9, 2 },                     /* draining more than all */
        { 7, 0, 2 },                     /* no such state */
    };
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        atomic_store(&sh->state, lies[i].state);
        atomic_store(&sh->count, lies[i].count);
        sh->parties = lies[i].parties;
        CHECK_EQ(conc_barrier_parties(o), 2u);
        CHECK(conc_barrier_n_waiting(o) <= 2u);
        int idx = 12345;
        CHECK_ERR(conc_barrier_wait(o, 1, &idx), CONC_ECORRUPT);
        CHECK_EQ(idx, 12345);
        CHECK(strstr(conc_errdetail(), "scribbled") != NULL);
        CHECK(conc_barrier_broken(o));
        CHECK_EQ(atomic_load(&sh->count), 0u);
        CHECK_OK(conc_barrier_reset(o));
        CHECK(!conc_barrier_broken(o));
    }
    full_rounds_pass(o, 2);
    sh->parties = 2;
    full_rounds_pass(b, 2);
    conc_barrier_free(o);
    conc_barrier_free(b);
}
