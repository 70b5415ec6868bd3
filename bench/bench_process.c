/* bench_process.c - process start+join, against raw fork()+waitpid() and
 * against Python's multiprocessing.Process().start(); join() (fork start
 * method, bench/py_process.py), all measured in this one run.  Also the
 * daemon-from-a-thread path, which forks through libconc's forker thread.
 *
 *   bench_process [N]     N start+join of each kind (default 400), run
 *                         in batches of 10, the kinds interleaved batch by
 *                         batch, the median batch kept; Python: the best
 *                         of three runs of 50.
 *
 * Goals (issue 2): conc at most 1.5x raw fork+waitpid's time, and at least
 * 10x faster than Python.  One table out; nothing is asserted.
 */
#define _GNU_SOURCE
#include <conc.h>

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int nothing(void *arg)
{
    (void)arg;
    return 0;
}

/* Seconds per fork()+waitpid(). */
static double raw_fork(int n)
{
    double t0 = now();
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            _exit(0);
        }
        if (pid < 0 || waitpid(pid, NULL, 0) != pid) {
            fprintf(stderr, "fork/waitpid failed\n");
            exit(1);
        }
    }
    return (now() - t0) / n;
}

/* Seconds per conc_process new+start+join+free. */
static double conc_fork(int n, bool daemon)
{
    double t0 = now();
    for (int i = 0; i < n; i++) {
        conc_process *p;
        if (conc_process_new(&p, &(conc_process_opts){ .target = nothing,
                                                       .daemon = daemon }) ||
            conc_process_start(p) || conc_process_join(p, CONC_FOREVER)) {
            fprintf(stderr, "conc_process failed\n");
            exit(1);
        }
        conc_process_free(p);
    }
    return (now() - t0) / n;
}

typedef struct {
    int n;
    double per_op;
} thread_job;

static void *daemon_from_thread(void *arg)
{
    thread_job *j = arg;
    j->per_op = conc_fork(j->n, true);
    return NULL;
}

static double conc_fork_from_thread(int n)
{
    thread_job j = { n, 0 };
    conc_thread *t;
    if (conc_thread_new(&t, &(conc_thread_opts){ .target = daemon_from_thread,
                                                 .arg = &j }) ||
        conc_thread_start(t) || conc_thread_join(t, CONC_FOREVER)) {
        fprintf(stderr, "conc_thread failed\n");
        exit(1);
    }
    conc_thread_free(t);
    return j.per_op;
}

/* Seconds per Python start+join, or 0 when python3 cannot be run. */
static double python(int n)
{
    char src[] = __FILE__;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "python3 %s/py_process.py %d", dirname(src), n);
    FILE *f = popen(cmd, "r");
    if (f == NULL) {
        return 0;
    }
    double ms = 0;
    char line[256];
    while (fgets(line, sizeof line, f) != NULL) {
        sscanf(line, "per_op_ms %lf", &ms);
    }
    pclose(f);
    return ms / 1e3;
}

static double min2(double a, double b)
{
    return a < b ? a : b;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Batches of BATCH operations, the four kinds interleaved batch by batch
 * (so all of them see the same load on a shared machine); the median
 * batch of each kind is kept. */
#define BATCH 10
#define KINDS 4

static double batch(int kind)
{
    switch (kind) {
    case 0:
        return raw_fork(BATCH);
    case 1:
        return conc_fork(BATCH, false);
    case 2:
        return conc_fork(BATCH, true);
    default:
        return conc_fork_from_thread(BATCH);
    }
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 400;
    if (n < BATCH) {
        n = 400;
    }
    int batches = n / BATCH;
    double *t[KINDS];
    for (int k = 0; k < KINDS; k++) {
        t[k] = calloc((size_t)batches, sizeof(double));
        if (t[k] == NULL) {
            return 1;
        }
        batch(k); /* warm-up */
    }
    for (int b = 0; b < batches; b++) {
        for (int k = 0; k < KINDS; k++) {
            t[k][b] = batch(k);
        }
    }
    double med[KINDS];
    for (int k = 0; k < KINDS; k++) {
        qsort(t[k], (size_t)batches, sizeof(double), cmp_double);
        med[k] = t[k][batches / 2];
        free(t[k]);
    }
    double raw = med[0], conc = med[1], dmn = med[2], fromth = med[3];
    double py = 1e9;
    for (int r = 0; r < 3; r++) {
        double p = python(50);
        if (p > 0) {
            py = min2(py, p);
        }
    }
    printf("process start+join: %d of each, in batches of %d interleaved, "
           "median batch; Python best of 3 x 50 (%ld CPUs)\n", n, BATCH,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("%-44s %10s %12s\n", "what", "per op", "vs fork");
    printf("%-44s %8.1f us %11.2fx\n", "raw fork()+waitpid()", raw * 1e6, 1.0);
    printf("%-44s %8.1f us %11.2fx\n", "conc_process start+join", conc * 1e6,
           conc / raw);
    printf("%-44s %8.1f us %11.2fx\n", "conc_process daemon start+join",
           dmn * 1e6, dmn / raw);
    printf("%-44s %8.1f us %11.2fx\n",
           "conc_process daemon from a thread (forker)", fromth * 1e6,
           fromth / raw);
    if (py > 0 && py < 1e8) {
        printf("%-44s %8.1f us %11.2fx\n",
               "Python mp.Process().start(); join()", py * 1e6, py / raw);
        printf("\nconc / fork = %.2fx (goal <= 1.5x); Python / conc = %.1fx "
               "(goal >= 10x)\n", conc / raw, py / conc);
    } else {
        printf("\nconc / fork = %.2fx (goal <= 1.5x); python3 not run\n",
               conc / raw);
    }
    return 0;
}
