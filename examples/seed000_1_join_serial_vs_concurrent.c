/* seed000_1_join_serial_vs_concurrent.c - join: together, then in turn.
 * Ports the join programs of seeds 000 (3.4.3) and 001 (join方法): three
 * child processes sleep 0.5 s, 0.3 s and 0.2 s (the seeds: 5, 3, 2 s).
 * First all three are started, then all three joined: join only makes
 * main wait, the children still run side by side, so the total is about
 * the longest sleep (0.5 s), not the sum (1.0 s).  Then each child is
 * started and joined before the next one starts: now join makes them
 * serial and the total is at least the sum.  Watch the two totals.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define N_CHILDREN 3

typedef struct job {
    const char *name;
    double seconds;
} job;

static const job jobs[N_CHILDREN] = {
    { "child 1", 0.5 },
    { "child 2", 0.3 },
    { "child 3", 0.2 },
};

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

/* The child's body: Python's task(name, n). */
static int task(void *arg)
{
    const job *j = arg;
    printf("%s is running (pid %d), sleeping %.1f s\n", j->name, (int)getpid(),
           j->seconds);
    sleep_s(j->seconds);
    printf("%s is done\n", j->name);
    return 0;
}

/* Runs the three jobs, serially (start+join each) or concurrently (start
 * all, then join all), and stores the wall time taken in *total. */
static int run_three(bool serial, double *total)
{
    conc_process *p[N_CHILDREN] = { NULL };
    int err = 0;
    double start = now();
    for (int i = 0; i < N_CHILDREN; i++) {
        err = conc_process_new(&p[i], &(conc_process_opts){
                                          .target = task,
                                          .arg = (void *)&jobs[i] });
        if (err != 0) {
            goto cleanup;
        }
    }
    for (int i = 0; i < N_CHILDREN; i++) {
        err = conc_process_start(p[i]);
        if (err != 0) {
            goto cleanup;
        }
        if (serial) {
            err = conc_process_join(p[i], 10.0);
            if (err != 0) {
                goto cleanup;
            }
        }
    }
    for (int i = 0; i < N_CHILDREN; i++) {
        /* Joining a child that was joined already returns at once. */
        err = conc_process_join(p[i], 10.0);
        if (err != 0) {
            goto cleanup;
        }
    }
    *total = now() - start;
    for (int i = 0; i < N_CHILDREN; i++) {
        int code = -1;
        err = conc_process_exitcode(p[i], &code);
        if (err == 0 && code != 0) {
            printf("main: %s ended with exitcode %d\n", jobs[i].name, code);
            err = CONC_ESTATE;
        }
        if (err != 0) {
            goto cleanup;
        }
    }
cleanup:
    for (int i = 0; i < N_CHILDREN; i++) {
        conc_process_free(p[i]);
    }
    return err;
}

int main(void)
{
    /* Line-buffered even into a pipe: each line is written at once, by
     * whichever process prints it, and nothing is left in a buffer for a
     * forked child to inherit. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    double longest = 0, sum = 0;
    for (int i = 0; i < N_CHILDREN; i++) {
        sum += jobs[i].seconds;
        longest = jobs[i].seconds > longest ? jobs[i].seconds : longest;
    }

    printf("== concurrent: start all three, then join all three\n");
    double concurrent = 0;
    int err = run_three(false, &concurrent);
    if (err != 0) {
        printf("main: concurrent run failed: %s\n", conc_strerror(err));
        return 1;
    }
    printf("main: concurrent total %.6f s (the longest sleep is %.1f s)\n",
           concurrent, longest);

    printf("== serial: start and join each child before the next\n");
    double serial = 0;
    err = run_three(true, &serial);
    if (err != 0) {
        printf("main: serial run failed: %s\n", conc_strerror(err));
        return 1;
    }
    printf("main: serial total %.6f s (the sum of the sleeps is %.1f s)\n",
           serial, sum);

    bool ok = concurrent >= longest && concurrent < sum && serial >= sum;
    printf("%s: concurrent %.3f s is %s the sum %.1f s; serial %.3f s is %s "
           "the sum\n",
           ok ? "OK" : "FAILED", concurrent,
           concurrent < sum ? "below" : "NOT below", sum, serial,
           serial >= sum ? "at least" : "BELOW");
    return ok ? 0 : 1;
}
