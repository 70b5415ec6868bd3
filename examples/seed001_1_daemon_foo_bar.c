/* seed001_1_daemon_foo_bar.c - foo is a daemon, bar is not.
 * Ports the exercise of seed 001 (守护进程, 练习): foo (a daemon) prints
 * 123, sleeps 0.2 s, prints end123; bar (not a daemon) prints 456, sleeps
 * 0.5 s, prints end456 (the seed: 1 s and 3 s).  main starts both, prints
 * "main-------" and returns.  As in Python, when main finishes its daemon
 * foo is terminated at once - end123 never appears - while bar, not a
 * daemon, is waited for and prints end456 after main's line.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdio.h>
#include <time.h>

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int foo(void *arg)
{
    (void)arg;
    printf("123\n");
    sleep_s(0.2);
    printf("end123\n");
    return 0;
}

static int bar(void *arg)
{
    (void)arg;
    printf("456\n");
    sleep_s(0.5);
    printf("end456\n");
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_process *p1 = NULL, *p2 = NULL;
    int err = conc_process_new(&p1, &(conc_process_opts){ .target = foo,
                                                           .daemon = true });
    if (err == 0) {
        err = conc_process_new(&p2, &(conc_process_opts){ .target = bar });
    }
    if (err == 0) {
        err = conc_process_start(p1);
    }
    if (err == 0) {
        err = conc_process_start(p2);
    }
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
    } else {
        printf("main-------\n");
    }
    /* The handles go; the children do not: returning from main terminates
     * the daemon foo and waits for bar, as Python's exit does. */
    conc_process_free(p1);
    conc_process_free(p2);
    return err == 0 ? 0 : 1;
}
