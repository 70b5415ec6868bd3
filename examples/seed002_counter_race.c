/* seed002_counter_race.c - a shared counter, without and with a lock.
 * Ports the thread programs of seed 002 (线程间通信): one thread adds 1
 * to a shared counter ten million times while another subtracts 1 ten
 * million times.  Without a lock, "a += 1" is a read and a separate
 * write: when the two threads interleave between them, updates are lost
 * and the total is wrong (the seed saw -288397, -122765, -1761997).  With
 * a conc_lock around each update (Python's "with lock:") the total is
 * exactly 0 - and slower.  argv[1] may give another count.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long n = 10000000;

/* The lockless counter: an atomic only so that C itself has no data race
 * (undefined behaviour, and a ThreadSanitizer report); every update is a
 * relaxed load and a separate relaxed store, exactly Python's read, add,
 * write, so the race left is the logic race the seed shows. */
static _Atomic long racy;

/* The guarded counter: a plain long, touched only while holding lock. */
static long guarded;
static conc_lock *lock;

/* Both threads wait here, so they run their loops at the same time. */
static conc_barrier *gate;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Python's "a += 1" runs several bytecodes between reading a and writing
 * it back; a bare C load and store are a nanosecond apart, and a thread
 * finishes ten million of them within one scheduler time slice, before
 * the other thread even gets a core on a busy machine.  So the update
 * does a little work between its read and its write, as the interpreter
 * does: the window the seed's race lives in. */
#define WORK_BETWEEN 16

static void racy_add(long delta)
{
    /* Relaxed: no other data is published through this counter; the
     * point is the window between this load and the store below. */
    long v = atomic_load_explicit(&racy, memory_order_relaxed);
    volatile int work = 0;
    for (int i = 0; i < WORK_BETWEEN; i++) {
        work = work + 1;
    }
    atomic_store_explicit(&racy, v + delta, memory_order_relaxed);
}

static void *incr_racy(void *arg)
{
    (void)arg;
    int err = conc_barrier_wait(gate, 10.0, NULL);
    for (long i = 0; err == 0 && i < n; i++) {
        racy_add(1);
    }
    return (void *)(intptr_t)err;
}

static void *decr_racy(void *arg)
{
    (void)arg;
    int err = conc_barrier_wait(gate, 10.0, NULL);
    for (long i = 0; err == 0 && i < n; i++) {
        racy_add(-1);
    }
    return (void *)(intptr_t)err;
}

static int guarded_loop(long delta)
{
    int err = conc_barrier_wait(gate, 10.0, NULL);
    for (long i = 0; err == 0 && i < n; i++) {
        err = conc_lock_acquire(lock, 10.0);
        if (err != 0) {
            break;
        }
        guarded += delta;
        err = conc_lock_release(lock);
    }
    return err;
}

static void *incr_locked(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)guarded_loop(1);
}

static void *decr_locked(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)guarded_loop(-1);
}

/* Starts t1 and t2 on the two bodies, joins both; 0 or the first error. */
static int run_pair(conc_thread_fn incr, conc_thread_fn decr, double *took)
{
    conc_thread *t[2] = { NULL, NULL };
    conc_thread_fn body[2] = { incr, decr };
    const char *names[2] = { "incr", "decr" };
    bool started[2] = { false, false };
    int err = 0;
    double start = now();
    for (int i = 0; i < 2; i++) {
        err = conc_thread_new(&t[i], &(conc_thread_opts){ .target = body[i],
                                                          .name = names[i] });
        if (err == 0) {
            err = conc_thread_start(t[i]);
            started[i] = err == 0;
        }
        if (err != 0) {
            /* The barrier would keep a started partner waiting. */
            conc_barrier_abort(gate);
            break;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (!started[i]) {
            continue;
        }
        int join_err = conc_thread_join(t[i], 600.0);
        void *res = NULL;
        if (join_err == 0) {
            join_err = conc_thread_result(t[i], &res);
        }
        if (join_err == 0) {
            join_err = (int)(intptr_t)res;
        }
        if (err == 0) {
            err = join_err;
        }
    }
    *took = now() - start;
    conc_thread_free(t[0]);
    conc_thread_free(t[1]);
    return err;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1) {
        n = strtol(argv[1], NULL, 10);
        if (n <= 0) {
            printf("usage: %s [updates per thread]\n", argv[0]);
            return 2;
        }
    }
    int err = conc_lock_new(&lock, NULL);
    if (err == 0) {
        err = conc_barrier_new(&gate, &(conc_barrier_opts){ .parties = 2 });
    }
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
        conc_lock_free(lock);
        return 1;
    }

    printf("two threads: one adds 1, one subtracts 1, %ld times each\n", n);
    double took = 0;
    err = run_pair(incr_racy, decr_racy, &took);
    long total = atomic_load(&racy);
    if (err == 0) {
        printf("without a lock: a = %ld (%.3f s)\n", total, took);
        if (total != 0) {
            printf("  wrong: updates were lost between a read and a write\n");
        } else {
            printf("  right by luck this time: the threads did not "
                   "interleave; run it again\n");
        }
        err = run_pair(incr_locked, decr_locked, &took);
    }
    if (err == 0) {
        printf("with a conc_lock: a = %ld (%.3f s)\n", guarded, took);
    }
    conc_barrier_free(gate);
    conc_lock_free(lock);
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
        return 1;
    }
    bool ok = guarded == 0;
    printf("%s: with the lock the total is exactly 0\n",
           ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
