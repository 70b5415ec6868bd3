/* seed003_2_event_workers.c - an Event releases every waiter at once.
 * Ports seed 003's Event example (event对象协调线程运行): three identical
 * worker threads start and block in event.wait(); until main calls
 * event.set() none of them gets past it.  set() wakes all waiting
 * threads at once - the Event's defining trait (to wake only one, the
 * seed says, use a Semaphore or a Condition: see the next examples).
 * Watch "0 of 3" before the set and all three released right after it.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define N_WORKERS 3

static conc_event *event;
static atomic_int waiting;  /* workers about to wait */
static atomic_int released; /* workers past the wait */

/* Written by main before event_set(); read by workers after their wait
 * returned: the event's set/wait orders the two. */
static double set_at;

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

static void *worker(void *arg)
{
    const char *name = arg;
    printf("%s started, waiting for the event\n", name);
    atomic_fetch_add(&waiting, 1);
    int err = conc_event_wait(event, 10.0);
    double t = now();
    if (err != 0) {
        printf("%s: wait returned %s\n", name, conc_errname(err));
        return (void *)(intptr_t)err;
    }
    atomic_fetch_add(&released, 1);
    printf("%s got the signal, %.1f ms after set\n", name,
           (t - set_at) * 1e3);
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    static const char *names[N_WORKERS] = { "worker-1", "worker-2",
                                            "worker-3" };
    conc_thread *t[N_WORKERS] = { NULL };
    int err = conc_event_new(&event, NULL);
    int started = 0;
    for (int i = 0; err == 0 && i < N_WORKERS; i++) {
        err = conc_thread_new(&t[i], &(conc_thread_opts){
                                         .target = worker,
                                         .arg = (void *)names[i],
                                         .name = names[i] });
        if (err == 0) {
            err = conc_thread_start(t[i]);
        }
        started += err == 0;
    }
    int before = -1;
    if (err == 0) {
        double give_up = now() + 10.0;
        while (atomic_load(&waiting) < N_WORKERS && now() < give_up) {
            sleep_s(0.001);
        }
        sleep_s(0.1); /* the seed's time.sleep: let them block in wait */
        before = atomic_load(&released);
        printf("main: before set: %d of %d workers released\n", before,
               N_WORKERS);
        printf("main: event.set() - everyone may go\n");
        set_at = now();
        err = conc_event_set(event);
    }
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
        /* Let any started worker go, so the joins below end. */
        conc_event_set(event);
    }
    int failed = 0;
    for (int i = 0; i < started; i++) {
        void *res = NULL;
        int join_err = conc_thread_join(t[i], 10.0);
        if (join_err == 0) {
            join_err = conc_thread_result(t[i], &res);
        }
        failed += join_err != 0 || res != NULL;
    }
    for (int i = 0; i < N_WORKERS; i++) {
        conc_thread_free(t[i]);
    }
    conc_event_free(event);
    int after = atomic_load(&released);
    printf("main: after set: %d of %d workers released\n", after, N_WORKERS);
    bool ok = err == 0 && failed == 0 && before == 0 && after == N_WORKERS;
    printf("%s: none passed before set, all three after it\n",
           ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
