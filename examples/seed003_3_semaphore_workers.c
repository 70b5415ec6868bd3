/* seed003_3_semaphore_workers.c - Semaphore(0) releases one at a time.
 * Ports seed 003's Semaphore example (信号量): ten worker threads each
 * call sema.acquire() on a Semaphore(0) and block, then print "Working
 * n".  Unlike an Event, each release() lets exactly one worker through:
 * main releases ten times, 0.02 s apart, and after each release exactly
 * one more worker is working - never more.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define N_WORKERS 10

static conc_sem *sema;
static atomic_int passed;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Python's worker(n, sema). */
static void *worker(void *arg)
{
    long n = (long)(intptr_t)arg;
    int err = conc_sem_acquire(sema, 20.0);
    if (err != 0) {
        printf("worker %ld: acquire returned %s\n", n, conc_errname(err));
        return (void *)(intptr_t)err;
    }
    printf("Working %ld\n", n);
    atomic_fetch_add(&passed, 1);
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_thread *t[N_WORKERS] = { NULL };
    int started = 0;
    int err = conc_sem_new(&sema, &(conc_sem_opts){ .value = 0 });
    for (int i = 0; err == 0 && i < N_WORKERS; i++) {
        err = conc_thread_new(&t[i], &(conc_thread_opts){
                                         .target = worker,
                                         .arg = (void *)(intptr_t)i });
        if (err == 0) {
            err = conc_thread_start(t[i]);
        }
        started += err == 0;
    }
    int bad_steps = 0;
    if (err == 0) {
        sleep_s(0.1);
        printf("main: %d workers blocked on Semaphore(0); %d working\n",
               N_WORKERS, atomic_load(&passed));
        bad_steps += atomic_load(&passed) != 0;
        for (int i = 1; err == 0 && i <= N_WORKERS; i++) {
            printf("main: release #%d\n", i);
            err = conc_sem_release(sema, 1);
            double give_up = now() + 10.0;
            while (atomic_load(&passed) < i && now() < give_up) {
                sleep_s(0.001);
            }
            sleep_s(0.02); /* would a second worker slip through? */
            int p = atomic_load(&passed);
            if (p != i) {
                printf("main: after %d releases %d workers are working\n", i,
                       p);
                bad_steps++;
            }
        }
    }
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
        /* Let any started worker go, so the joins below end. */
        conc_sem_release(sema, N_WORKERS);
    }
    int failed = 0;
    for (int i = 0; i < started; i++) {
        void *res = NULL;
        int join_err = conc_thread_join(t[i], 30.0);
        if (join_err == 0) {
            join_err = conc_thread_result(t[i], &res);
        }
        failed += join_err != 0 || res != NULL;
    }
    for (int i = 0; i < N_WORKERS; i++) {
        conc_thread_free(t[i]);
    }
    long left = conc_sem_value(sema);
    conc_sem_free(sema);
    bool ok = err == 0 && failed == 0 && bad_steps == 0 &&
              atomic_load(&passed) == N_WORKERS && left == 0;
    printf("%s: ten releases, ten workers, each released once; "
           "value left %ld\n",
           ok ? "OK" : "FAILED", left);
    return ok ? 0 : 1;
}
