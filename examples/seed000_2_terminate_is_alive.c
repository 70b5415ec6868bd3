/* seed000_2_terminate_is_alive.c - terminate, then is_alive.
 * Ports the terminate/is_alive programs of seeds 000 (3.4.2) and 001
 * (is_alive()、terminate()、name属性): a child named "sub-process" is
 * started and terminated at once.  terminate only sends SIGTERM; the
 * kernel needs a moment to end the child, so is_alive asked right after
 * usually still says True (the seed: "may still be alive" - now and then
 * the child is gone first, and it says False).  After main waits for it
 * (join), is_alive says False, and the exitcode is -15: minus the number
 * of the signal that ended it, as in Python.  The child's "is done" line
 * never appears.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int task(void *arg)
{
    (void)arg;
    printf("%d is running, parent id is %d\n", (int)getpid(), (int)getppid());
    sleep_s(3.0);
    printf("%d is done, parent id is %d\n", (int)getpid(), (int)getppid());
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_process *p = NULL;
    int err = conc_process_new(&p, &(conc_process_opts){
                                       .target = task,
                                       .name = "sub-process" });
    if (err != 0) {
        printf("main: conc_process_new: %s\n", conc_strerror(err));
        return 1;
    }
    err = conc_process_start(p);
    if (err != 0) {
        printf("main: conc_process_start: %s\n", conc_strerror(err));
        conc_process_free(p);
        return 1;
    }
    printf("main: started %s, pid %d\n", conc_process_name(p),
           (int)conc_process_pid(p));

    err = conc_process_terminate(p);
    bool alive_after_terminate = conc_process_is_alive(p);
    printf("main: terminate() returned %s\n", conc_errname(err));
    printf("is_alive right after terminate: %s\n",
           alive_after_terminate ? "True" : "False");
    if (!alive_after_terminate) {
        printf("  (the child died before main asked: terminate is "
               "asynchronous, and this time it was quick)\n");
    }

    int join_err = conc_process_join(p, 5.0);
    bool alive_after_join = conc_process_is_alive(p);
    printf("main: join() returned %s\n", conc_errname(join_err));
    printf("is_alive after join: %s\n", alive_after_join ? "True" : "False");

    int code = 0;
    int code_err = conc_process_exitcode(p, &code);
    if (code_err == 0) {
        printf("exitcode: %d (minus SIGTERM's number, 15)\n", code);
    } else {
        printf("exitcode: unavailable (%s)\n", conc_errname(code_err));
    }
    printf("name: %s\n", conc_process_name(p));
    if (join_err == CONC_ETIMEDOUT) {
        conc_process_kill(p);
        conc_process_join(p, 5.0);
    }
    conc_process_free(p);

    /* Only what terminate guarantees: right after it either answer is
     * possible; after join the child is gone, ended by SIGTERM. */
    bool ok = err == 0 && join_err == 0 && !alive_after_join &&
              code_err == 0 && code == -15;
    printf("%s: after join is_alive is False and the exitcode is -15\n",
           ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
