/* seed000_3_daemon_ends_with_parent.c - a daemon ends with its parent.
 * Ports the daemon program of seeds 000 (3.5) and 001 (守护进程): main
 * starts "egon" with daemon=true, then finishes.  In Python the terminal
 * shows main's line and nothing of egon's end: a daemon is terminated as
 * soon as its parent's code is done.  Here main first waits (an Event)
 * until egon says it is running, so you see it start; egon's second line,
 * due 0.3 s later, never appears, because main returns first and libconc
 * terminates a parent's daemon children when it finishes.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdio.h>
#include <time.h>

/* Created before the child starts, so it is the same event in both. */
static conc_event *running;

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int task(void *arg)
{
    const char *name = arg;
    printf("%s is piaoing (%s)\n", name, conc_current_name());
    conc_event_set(running);
    sleep_s(0.3);
    printf("%s is piao end - a daemon outliving main would print this\n",
           name);
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_process *p = NULL;
    int err = conc_event_new(&running, NULL);
    if (err != 0) {
        printf("main: conc_event_new: %s\n", conc_strerror(err));
        return 1;
    }
    err = conc_process_new(&p, &(conc_process_opts){
                                   .target = task,
                                   .arg = "egon",
                                   .daemon = true });
    if (err == 0) {
        err = conc_process_start(p);
    }
    if (err == 0) {
        err = conc_event_wait(running, 5.0);
    }
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
        conc_process_free(p);
        conc_event_free(running);
        return 1;
    }
    printf("main: done, returning; my daemon child ends with me\n");
    /* Freeing the handle does not stop the child; main's return does. */
    conc_process_free(p);
    conc_event_free(running);
    return 0;
}
