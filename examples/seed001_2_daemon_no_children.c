/* seed001_2_daemon_no_children.c - a daemon may not have children.
 * Ports the second daemon program of seed 001 (and the rule stated in
 * seeds 000 and 004): a daemon child tries to start a child of its own.
 * Python raises "AssertionError: daemonic processes are not allowed to
 * have children" inside the daemon, which then ends with exitcode 1.
 * libconc returns CONC_EDAEMON from conc_process_start instead; the
 * daemon prints conc_strerror's sentence and ends with exitcode 1, and
 * main, which joined it, reports that exitcode.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdio.h>
#include <time.h>

/* The daemon's exit codes: refused is what Python does (exitcode 1). */
enum { REFUSED = 1, WRONGLY_STARTED = 3, OTHER_ERROR = 4 };

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Python's Process(target=time.sleep, args=(3,)). */
static int sleeper(void *arg)
{
    (void)arg;
    sleep_s(0.3);
    return 0;
}

static int task(void *arg)
{
    const char *name = arg;
    printf("%s is running (%s, a daemon)\n", name, conc_current_name());
    sleep_s(0.1);
    conc_process *p = NULL;
    int err = conc_process_new(&p, &(conc_process_opts){ .target = sleeper });
    if (err != 0) {
        printf("%s: conc_process_new: %s\n", name, conc_strerror(err));
        return OTHER_ERROR;
    }
    err = conc_process_start(p);
    int code;
    if (err == CONC_EDAEMON) {
        printf("Process %s: conc_process_start returned %s: %s\n",
               conc_current_name(), conc_errname(err), conc_strerror(err));
        code = REFUSED;
    } else if (err == 0) {
        printf("%s: a daemon was allowed a child - that is wrong\n", name);
        conc_process_join(p, 5.0);
        code = WRONGLY_STARTED;
    } else {
        printf("%s: conc_process_start: %s\n", name, conc_strerror(err));
        code = OTHER_ERROR;
    }
    conc_process_free(p);
    return code;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_process *p = NULL;
    int err = conc_process_new(&p, &(conc_process_opts){
                                       .target = task,
                                       .arg = "child 1",
                                       .daemon = true });
    if (err == 0) {
        err = conc_process_start(p);
    }
    if (err == 0) {
        /* As in the seed: join makes sure the daemon really ran. */
        err = conc_process_join(p, 5.0);
    }
    int code = -1;
    if (err == 0) {
        err = conc_process_exitcode(p, &code);
    }
    conc_process_free(p);
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
        return 1;
    }
    printf("main: the daemon's exitcode is %d\n", code);
    printf("main\n");
    bool ok = code == REFUSED;
    printf("%s: the daemon was refused a child\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
