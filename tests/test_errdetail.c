/* test_errdetail.c - conc_errdetail() after the failures of the core
 * modules (process, thread, the sync objects, conc_buf): each says which
 * function failed and what was wrong.  The queue, the named segments, the
 * pool, the dict and the connections test theirs beside their other
 * tests. */
#include "harness.h"

#include "conc_int.h"

#include <math.h>
#include <pthread.h>

static void has(const char *needle)
{
    const char *d = conc_errdetail();
    if (strstr(d, needle) == NULL) {
        th_fail(__FILE__, __LINE__, "detail \"%s\" lacks \"%s\"", d, needle);
    }
}

TEST(detail_lock_and_rlock)
{
    conc_lock *l;
    CHECK_ERR(conc_lock_new(NULL, NULL), CONC_EINVAL);
    has("conc_lock_new: out is NULL");
    CHECK_OK(conc_lock_new(&l, NULL));
    CHECK_ERR(conc_lock_acquire(l, -3), CONC_EINVAL);
    has("conc_lock_acquire: timeout -3");
    CHECK_ERR(conc_lock_acquire(l, NAN), CONC_EINVAL);
    has("timeout nan");
    CHECK_ERR(conc_lock_release(l), CONC_EPERM);
    has("conc_lock_release: the lock is not held");
    CHECK_OK(conc_lock_acquire(l, 0));
    CHECK_ERR(conc_lock_acquire(l, 0.01), CONC_ETIMEDOUT);
    has("still held");
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
    conc_rlock *r;
    CHECK_OK(conc_rlock_new(&r, NULL));
    CHECK_ERR(conc_rlock_release(r), CONC_EPERM);
    has("conc_rlock_release: the calling thread does not own");
    conc_rlock_free(r);
}

static void *hold_and_exit(void *arg)
{
    conc_lock_acquire(arg, CONC_FOREVER);
    return NULL; /* exits holding it */
}

TEST(detail_lock_of_a_dead_holder_names_it)
{
    conc_lock *l;
    CHECK_OK(conc_lock_new(&l, NULL));
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, hold_and_exit, l), 0);
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK_ERR(conc_lock_acquire(l, 5), CONC_EOWNERDEAD);
    has("died holding it");
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
}

TEST(detail_sem_event_cond_barrier)
{
    conc_sem *s;
    CHECK_ERR(conc_sem_new(&s, &(conc_sem_opts){ .value = -1 }), CONC_EINVAL);
    has("conc_sem_new: value -1");
    CHECK_OK(conc_sem_new(&s, &(conc_sem_opts){ .value = 1,
                                                .bounded = true }));
    CHECK_ERR(conc_sem_release(s, 0), CONC_EINVAL);
    has("n is 0");
    CHECK_ERR(conc_sem_release(s, 1), CONC_EINVAL);
    has("past the bound 1");
    CHECK_OK(conc_sem_acquire(s, 0));
    CHECK_ERR(conc_sem_acquire(s, 0), CONC_ETIMEDOUT);
    has("conc_sem_acquire: the semaphore is 0");
    CHECK_ERR(conc_sem_acquire(s, 0.01), CONC_ETIMEDOUT);
    has("still 0");
    conc_sem_free(s);

    conc_event *e;
    CHECK_OK(conc_event_new(&e, NULL));
    CHECK_ERR(conc_event_wait(e, 0), CONC_ETIMEDOUT);
    has("conc_event_wait: the event is not set");
    CHECK_ERR(conc_event_wait(e, 0.01), CONC_ETIMEDOUT);
    has("still not set");
    conc_event_free(e);

    conc_lock *l;
    conc_rlock *r;
    conc_cond *c;
    CHECK_OK(conc_lock_new(&l, NULL));
    CHECK_OK(conc_rlock_new(&r, NULL));
    CHECK_ERR(conc_cond_new(&c, &(conc_cond_opts){ .lock = l, .rlock = r }),
              CONC_EINVAL);
    has("both .lock and .rlock");
    CHECK_OK(conc_cond_new(&c, NULL));
    CHECK_ERR(conc_cond_wait(c, 0), CONC_EPERM);
    has("conc_cond_wait: the condition's lock is not held");
    CHECK_ERR(conc_cond_notify(c, 1), CONC_EPERM);
    has("conc_cond_notify: the condition's lock is not held");
    CHECK_ERR(conc_cond_notify_all(c), CONC_EPERM);
    has("conc_cond_notify_all: ");
    CHECK_OK(conc_cond_acquire(c, 1));
    CHECK_ERR(conc_cond_wait(c, 0.01), CONC_ETIMEDOUT);
    has("conc_cond_wait: no notify came");
    CHECK_OK(conc_cond_release(c));
    conc_cond_free(c);
    conc_rlock_free(r);
    conc_lock_free(l);

    conc_barrier *b;
    CHECK_ERR(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 0 }),
              CONC_EINVAL);
    has("parties 0");
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 2 }));
    CHECK_ERR(conc_barrier_wait(b, 0.01, NULL), CONC_EBROKEN);
    has("broke during this wait");
    CHECK_ERR(conc_barrier_wait(b, 0.01, NULL), CONC_EBROKEN);
    has("the barrier is broken");
    conc_barrier_free(b);
}

static int child_sleeps(void *arg)
{
    (void)arg;
    th_sleep(0.5);
    return 0;
}

static int daemon_tries_a_child(void *arg)
{
    (void)arg;
    conc_process *p;
    if (conc_process_new(&p, &(conc_process_opts){ .target = child_sleeps })
        != 0) {
        return 2;
    }
    int err = conc_process_start(p);
    bool ok = err == CONC_EDAEMON &&
              strstr(conc_errdetail(), "daemonic processes") != NULL;
    conc_process_free(p);
    return ok ? 0 : 1;
}

TEST(detail_process)
{
    conc_process *p;
    CHECK_ERR(conc_process_new(&p, &(conc_process_opts){ 0 }), CONC_EINVAL);
    has("conc_process_new: opts->target is NULL");
    CHECK_OK(conc_process_new(&p, &(conc_process_opts){
                                      .target = child_sleeps }));
    CHECK_ERR(conc_process_join(p, 0), CONC_ESTATE);
    has("conc_process_join: the process was not started");
    int unset;
    CHECK_ERR(conc_process_exitcode(p, &unset), CONC_ESTATE);
    has("conc_process_exitcode: the process was not started");
    CHECK_ERR(conc_process_terminate(p), CONC_ESTATE);
    has("conc_process_terminate: the process was not started");
    CHECK_OK(conc_process_start(p));
    CHECK_ERR(conc_process_start(p), CONC_ESTATE);
    has("only be started once");
    int code;
    CHECK_ERR(conc_process_exitcode(p, &code), CONC_ESTATE);
    has("still running");
    CHECK_ERR(conc_process_join(p, 0.01), CONC_ETIMEDOUT);
    has("conc_process_join: the child was still running");
    CHECK_OK(conc_process_join(p, 10));
    conc_process_free(p);
    CHECK_OK(conc_process_new(&p, &(conc_process_opts){
                                      .target = daemon_tries_a_child,
                                      .daemon = true }));
    CHECK_OK(conc_process_start(p));
    CHECK_OK(conc_process_join(p, 10));
    CHECK_OK(conc_process_exitcode(p, &code));
    CHECK_EQ(code, 0);
    conc_process_free(p);
}

static void *sleeper(void *arg)
{
    (void)arg;
    th_sleep(0.3);
    return NULL;
}

static conc_thread *_Atomic me_thread;
static _Atomic int self_join_err;

static void *joins_itself(void *arg)
{
    (void)arg;
    while (me_thread == NULL) {
        th_sleep(0.001);
    }
    int err = conc_thread_join(me_thread, 1);
    if (err == CONC_ESTATE &&
        strstr(conc_errdetail(), "cannot join the current thread")) {
        atomic_store(&self_join_err, 1);
    }
    return NULL;
}

TEST(detail_thread_and_buf)
{
    conc_thread *t;
    CHECK_ERR(conc_thread_new(&t, NULL), CONC_EINVAL);
    has("conc_thread_new: opts is NULL");
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = sleeper }));
    void *res;
    CHECK_ERR(conc_thread_result(t, &res), CONC_ESTATE);
    has("was not started");
    CHECK_OK(conc_thread_start(t));
    CHECK_ERR(conc_thread_start(t), CONC_ESTATE);
    has("only be started once");
    CHECK_ERR(conc_thread_join(t, 0.01), CONC_ETIMEDOUT);
    has("conc_thread_join: the thread was still running");
    CHECK_ERR(conc_thread_result(t, &res), CONC_ESTATE);
    has("has not been joined");
    CHECK_OK(conc_thread_join(t, 10));
    conc_thread_free(t);
    conc_thread *s;
    CHECK_OK(conc_thread_new(&s, &(conc_thread_opts){ .target = joins_itself }));
    CHECK_OK(conc_thread_start(s));
    me_thread = s;
    CHECK_OK(conc_thread_join(s, 10));
    CHECK_EQ(atomic_load(&self_join_err), 1);
    conc_thread_free(s);

    conc_buf b;
    conc__buf_init(&b, 4);
    CHECK_ERR(conc_buf_append(&b, "12345", 5), CONC_ENOMEM);
    has("would pass the output's limit of 4 bytes");
    CHECK_ERR(conc_buf_append(&b, NULL, 1), CONC_EINVAL);
    has("data is NULL");
    conc__buf_release(&b);
}
