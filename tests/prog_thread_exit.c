/* prog_thread_exit.c - what happens to threads when main returns, run by
 * test_thread.c: a non-daemon thread and a non-daemon thread whose handle
 * was freed (detached) are joined at exit, a daemon thread is not waited
 * for, and a child process's own non-daemon thread is joined before the
 * child exits (its exitcode is still the target's). */
#include <conc.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

static void nap(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Set by main just before it returns: the threads that say "done"
 * print only after that, however slow the child process was to run. */
static atomic_bool main_returning;

static void *says_after(void *arg)
{
    while (!atomic_load(&main_returning)) {
        nap(0.01);
    }
    nap(0.5);
    printf("%s\n", (const char *)arg);
    return NULL;
}

static void *daemon_thread(void *arg)
{
    nap(60);
    printf("%s\n", (const char *)arg);
    return NULL;
}

static void *childs_thread(void *arg)
{
    nap(0.2);
    printf("%s\n", (const char *)arg);
    return NULL;
}

static conc_thread *keep[3]; /* static: still reachable at exit */

static int child(void *arg)
{
    (void)arg;
    static conc_thread *t;
    if (conc_thread_new(&t, &(conc_thread_opts){ .target = childs_thread,
                                                 .arg = "child's thread done" }) ||
        conc_thread_start(t)) {
        return 1;
    }
    return 6;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_thread *freed;
    if (conc_thread_new(&keep[0], &(conc_thread_opts){ .target = says_after,
                                                       .arg = "thread done" }) ||
        conc_thread_new(&freed, &(conc_thread_opts){ .target = says_after,
                                                     .arg = "detached thread done" }) ||
        conc_thread_new(&keep[1], &(conc_thread_opts){ .target = daemon_thread,
                                                       .arg = "daemon thread done",
                                                       .daemon = true }) ||
        conc_thread_start(keep[0]) || conc_thread_start(freed) ||
        conc_thread_start(keep[1])) {
        return 2;
    }
    conc_thread_free(freed);
    conc_process *p;
    int code = -1;
    if (conc_process_new(&p, &(conc_process_opts){ .target = child }) ||
        conc_process_start(p) || conc_process_join(p, 10) ||
        conc_process_exitcode(p, &code)) {
        return 3;
    }
    printf("child joined, exitcode %d\n", code);
    conc_process_free(p);
    printf("main returns\n");
    atomic_store(&main_returning, true);
    return 0;
}
