/* prog_process_exit.c - what happens to children when main returns, run
 * by test_process.c:
 *   main      a daemon (catches SIGTERM and says so), a non-daemon child
 *             and a non-daemon child whose handle was freed; main returns
 *             at once: the daemon is terminated, both children joined.
 *   nested    a child starts a non-daemon grandchild and a daemon
 *             grandchild, then returns 4: its exit joins the one and
 *             terminates the other before main's join returns.
 *   stubborn  a daemon that ignores SIGTERM: exit gives it its grace
 *             period, then SIGKILL; main's exit does not hang.
 *   flush     stdout fully buffered (a pipe): what main printed before
 *             start appears once, not once more from the child.
 */
#include <conc.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static _Atomic int *ready;

static void nap(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int daemon_body(void *arg)
{
    if (arg != NULL) {
        signal(SIGTERM, SIG_IGN);
        atomic_fetch_add(ready, 1);
        for (int i = 0; i < 600; i++) {
            nap(0.1);
        }
        return 1;
    }
    /* Taken with sigtimedwait, not a handler: under ThreadSanitizer a
     * handler in a forked child is run late by the runtime, and now and
     * then never (see test_process.c, exits_3_on_sigterm). */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    atomic_fetch_add(ready, 1);
    struct timespec limit = { .tv_sec = 60 };
    if (sigtimedwait(&term, NULL, &limit) == SIGTERM) {
        static const char msg[] = "daemon got SIGTERM\n";
        ssize_t w = write(1, msg, sizeof msg - 1);
        (void)w;
        _exit(0);
    }
    return 1;
}

static int child_body(void *arg)
{
    nap(0.3);
    printf("%s\n", (const char *)arg);
    return 0;
}

static atomic_int at_fork_armed;

static void print_at_fork(void)
{
    if (atomic_load(&at_fork_armed)) {
        printf("written at a fork\n");
    }
}

static void *start_from_a_thread(void *arg)
{
    return conc_process_start(arg) == 0 ? NULL : arg;
}

static int prints(void *arg)
{
    printf("%s\n", (const char *)arg);
    return 0;
}

static int nested_child(void *arg)
{
    (void)arg;
    conc_process *b, *c;
    if (conc_process_new(&b, &(conc_process_opts){ .target = child_body,
                                                   .arg = "grandchild done" }) ||
        conc_process_new(&c, &(conc_process_opts){ .target = daemon_body,
                                                   .daemon = true }) ||
        conc_process_start(b) || conc_process_start(c)) {
        return 1;
    }
    printf("grand daemon pid %d\n", (int)conc_process_pid(c));
    while (atomic_load(ready) < 1) {
        nap(0.001);
    }
    printf("child returns\n");
    conc_process_free(b);
    conc_process_free(c);
    return 4;
}

static void wait_ready(int n)
{
    for (int i = 0; i < 10000 && atomic_load(ready) < n; i++) {
        nap(0.001);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "flush_race") == 0) {
        /* A write into stdout's buffer at each fork, after the flush of
         * conc_process_start: another thread's printf in that instant. */
        pthread_atfork(print_at_fork, NULL, NULL);
        conc_process *p, *d;
        pthread_t th;
        if (conc_process_new(&p, &(conc_process_opts){ .target = prints,
                                                       .arg = "child prints" }) ||
            conc_process_new(&d, &(conc_process_opts){ .target = prints,
                                                       .arg = "daemon prints",
                                                       .daemon = true })) {
            return 6;
        }
        atomic_store(&at_fork_armed, 1);
        /* the daemon through the forker thread, from a thread not main */
        if (conc_process_start(p) ||
            pthread_create(&th, NULL, start_from_a_thread, d) != 0 ||
            pthread_join(th, NULL) != 0 || conc_process_join(p, 10) ||
            conc_process_join(d, 10)) {
            return 7;
        }
        atomic_store(&at_fork_armed, 0);
        conc_process_free(p);
        conc_process_free(d);
        printf("main returns\n");
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "flush") == 0) {
        conc_process *p;
        printf("printed before start\n"); /* still in the buffer */
        if (conc_process_new(&p, &(conc_process_opts){ .target = prints,
                                                       .arg = "child prints" }) ||
            conc_process_start(p) || conc_process_join(p, 10)) {
            return 6;
        }
        conc_process_free(p);
        printf("main returns\n");
        return 0;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    ready = mmap(NULL, sizeof *ready, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ready == MAP_FAILED || argc < 2) {
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "main") == 0 || strcmp(mode, "stubborn") == 0) {
        bool stubborn = mode[0] == 's';
        /* static: still reachable at exit.  Four stubborn daemons, which
         * share one grace: exit takes it once, not once each. */
        static conc_process *d, *more[3], *c;
        conc_process *f;
        if (conc_process_new(&d, &(conc_process_opts){
                                     .target = daemon_body,
                                     .arg = stubborn ? "x" : NULL,
                                     .daemon = true }) ||
            conc_process_start(d)) {
            return 3;
        }
        for (int i = 0; stubborn && i < 3; i++) {
            if (conc_process_new(&more[i], &(conc_process_opts){
                                               .target = daemon_body,
                                               .arg = "x",
                                               .daemon = true }) ||
                conc_process_start(more[i])) {
                return 3;
            }
        }
        wait_ready(stubborn ? 4 : 1);
        printf("daemon pid %d\n", (int)conc_process_pid(d));
        for (int i = 0; stubborn && i < 3; i++) {
            printf("daemon pid %d\n", (int)conc_process_pid(more[i]));
        }
        if (!stubborn) {
            if (conc_process_new(&c, &(conc_process_opts){ .target = child_body,
                                                           .arg = "child done" }) ||
                conc_process_new(&f, &(conc_process_opts){ .target = child_body,
                                                           .arg = "freed child done" }) ||
                conc_process_start(c) || conc_process_start(f)) {
                return 4;
            }
            conc_process_free(f);
            /* c is left for exit to join, as Python leaves it to atexit. */
        }
        printf("main returns\n");
        return 0;
    }
    if (strcmp(mode, "nested") == 0) {
        conc_process *a;
        int code = -1;
        if (conc_process_new(&a, &(conc_process_opts){ .target = nested_child }) ||
            conc_process_start(a) || conc_process_join(a, CONC_FOREVER) ||
            conc_process_exitcode(a, &code)) {
            return 5;
        }
        printf("child joined, exitcode %d\n", code);
        conc_process_free(a);
        return 0;
    }
    return 2;
}
