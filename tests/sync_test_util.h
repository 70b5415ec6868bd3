/* sync_test_util.h - small helpers shared by the sync module's tests
 * (test_lock.c test_rlock.c test_sem.c test_event.c test_cond.c
 * test_barrier.c): shared memory for cross-process counters, a thread
 * launcher, and a SIGALRM storm that interrupts blocking calls. */
#ifndef CONC_SYNC_TEST_UTIL_H
#define CONC_SYNC_TEST_UTIL_H

#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>

/* Zeroed memory shared with children forked later. */
static inline void *st_shared(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    return p;
}

static inline void st_unshare(void *p, size_t size)
{
    munmap(p, size);
}

static inline pthread_t st_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

static inline void st_join(pthread_t t)
{
    CHECK_EQ(pthread_join(t, NULL), 0);
}

/* Spins (sleeping 1 ms a round) until *v reaches want, failing after
 * timeout seconds. */
static inline void st_wait_for_int(atomic_int *v, int want, double timeout)
{
    double end = th_now() + timeout;
    while (atomic_load(v) < want) {
        if (th_now() > end) {
            th_fail(__FILE__, __LINE__, "value %d never reached %d",
                    atomic_load(v), want);
        }
        th_sleep(0.001);
    }
}

/* A SIGALRM every 10 ms, from a handler installed without SA_RESTART, so
 * every blocking call of the process is interrupted again and again. */
static atomic_int st_alarms;
static void st_on_alarm(int sig)
{
    (void)sig;
    atomic_fetch_add(&st_alarms, 1);
}

static inline void st_alarm_storm(bool on)
{
    struct itimerval it = { { 0, 0 }, { 0, 0 } };
    if (on) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = st_on_alarm;
        sa.sa_flags = 0; /* no SA_RESTART */
        sigemptyset(&sa.sa_mask);
        CHECK_EQ(sigaction(SIGALRM, &sa, NULL), 0);
        it.it_interval.tv_usec = 10000;
        it.it_value.tv_usec = 10000;
    }
    CHECK_EQ(setitimer(ITIMER_REAL, &it, NULL), 0);
    if (!on) {
        signal(SIGALRM, SIG_IGN);
    }
}

/* The verdict of a child that waited under st_alarm_storm(): 0, or a
 * code after saying on stderr what was wrong.  At least 2 signals must
 * have arrived (30 are sent; a loaded machine coalesces them). */
static inline int st_signal_verdict(int err, int want, double took,
                                    double lo)
{
    if (err != want) {
        fprintf(stderr, "    child: %s, wanted %s\n", conc_errname(err),
                conc_errname(want));
        return 1;
    }
    if (took < lo || took > 10 * lo) {
        fprintf(stderr, "    child: took %.3f s for %.3f s\n", took, lo);
        return 2;
    }
    if (atomic_load(&st_alarms) < 2) {
        fprintf(stderr, "    child: only %d signals\n",
                atomic_load(&st_alarms));
        return 3;
    }
    return 0;
}

/* A child exit status helper: the exit code, or 100 + signal. */
static inline int st_code(int status)
{
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
        return 100 + WTERMSIG(status);
    }
    return -1;
}

/* ---- wake latency ---------------------------------------------------------
 * A wake-up must reach a sleeper at once: every sleep in libconc is cut
 * into slices (50 or 100 ms) that would also end it, so a missing wake
 * only shows as latency.  st_wake_latency runs `rounds` hand-offs: a
 * thread calls w->wait(w->arg), which must block until w->wake runs; the
 * main thread waits until w->asleep(w->arg) says the waiter is past its
 * fast path, sleeps 2..49 ms more (so the waiter is in the kernel, at a
 * varied phase of its slice), then calls w->wake(w->arg).  Returns the
 * summed time from each wake to the waiter's return: a few ms in all
 * when wakes work, about 25 ms per round when only slices end sleeps. */
typedef struct st_waker {
    void (*reset)(void *arg); /* before each round; may be NULL */
    bool (*asleep)(void *arg);
    void (*wait)(void *arg);
    void (*wake)(void *arg);
    void *arg;
    _Atomic int round;
    _Atomic int done;
    _Atomic bool stop;
    _Atomic double returned;
} st_waker;

static void *st_waker_thread(void *p)
{
    st_waker *w = p;
    for (int r = 1;; r++) {
        while (atomic_load(&w->round) < r) {
            if (atomic_load(&w->stop)) {
                return NULL;
            }
            th_sleep(0.0002);
        }
        w->wait(w->arg);
        atomic_store(&w->returned, th_now());
        atomic_store(&w->done, r);
    }
}

static inline double st_wake_latency(st_waker *w, int rounds)
{
    unsigned seed = (unsigned)getpid();
    double total = 0;
    pthread_t t = st_thread(st_waker_thread, w);
    for (int r = 1; r <= rounds; r++) {
        if (w->reset != NULL) {
            w->reset(w->arg);
        }
        atomic_store(&w->round, r);
        double end = th_now() + 10;
        while (!w->asleep(w->arg)) {
            CHECK(th_now() < end);
            th_sleep(0.0002);
        }
        th_sleep(0.002 + (double)(rand_r(&seed) % 48) / 1000);
        double woke = th_now();
        w->wake(w->arg);
        while (atomic_load(&w->done) < r) {
            CHECK(th_now() < end);
            th_sleep(0.0002);
        }
        total += atomic_load(&w->returned) - woke;
    }
    atomic_store(&w->stop, true);
    st_join(t);
    return total;
}

#endif
