/* bench_scaling.c - how the queue, the lock and the pools behave as
 * processes are added, against their baselines, in one run and one table:
 *
 *   queue   conc_queue (1 MiB ring), 64 B and 1 KiB messages, total
 *           messages per second for n producers -> n consumers, 1 -> n
 *           and n -> 1 processes; ratio to the same size's 1 -> 1 row;
 *           mp.Queue n -> n beside it (bench/py_scaling.py); then
 *           the ceiling per-producer lanes could reach: n separate
 *           queues, each 1 -> 1, all at once ("n x 1->1"), and n
 *           producers each on a queue of its own -> 1 consumer taking
 *           from them in turn with timeout 0 ("n->1 own"); then the
 *           same shapes on one queue made with lanes (opts.lanes, one
 *           1 MiB ring per lane): "n->n lanes", "1->n lanes" and "n->1
 *           lanes", with as many lanes as a program on n workers would
 *           make, one per producer: lanes = n (at least 2, at most
 *           CONC_QUEUE_MAX_LANES), so 1->n is that queue fed by one
 *           producer, with n - 1 lanes empty; ratio to the same run's
 *           one-ring 1 -> 1 row, like the others.  A queue of lanes
 *           keeps order per producer only, so its runs end by a close
 *           (the last producer out closes, consumers drain to
 *           CONC_ECLOSED) instead of end markers.  Each producer
 *           claims the queue's next lane at its first put, so n
 *           producers have a lane each.  Last, "1->n batch": one ring,
 *           one producer, n consumers each taking up to GET_BATCH
 *           messages a call (conc_queue_get_many), what queue.h advises
 *           for that shape;
 *   lock    uncontended acquire+release in one process, conc_lock against
 *           a private pthread mutex (ns of CPU time; alone, and with a
 *           second thread alive); then n processes each incrementing one
 *           shared counter under the lock: conc_lock, a process-shared
 *           pthread mutex and Python's multiprocessing.Lock, increments
 *           per second;
 *   pool    a CPU-bound map of 256 equal items (counting primes) on w
 *           workers: speed-up over 1 worker, processes and threads,
 *           beside Python's Pool and ProcessPoolExecutor; and 200 k empty
 *           tasks pipelined (submit all, then collect) on w workers,
 *           tasks per second, beside Pool.map(chunksize=1) and
 *           ProcessPoolExecutor.  Beside each process-pool figure, the
 *           parent's CPU (its manager thread and the caller, in cores:
 *           CPU seconds over wall seconds), the part of the machine the
 *           manager and the result path take from the workers.
 *
 * n and w run over 1, 2, 4, ... up to the CPUs online (and the count of
 * CPUs itself when it is no power of two); n -> n stops where 2n passes
 * the CPUs.  Rows past the CPUs are never measured, except that every
 * axis reaches 2 even on fewer CPUs, marked '*' (oversubscribed: the
 * figure then shows time-slicing, not contention).  So it is quick on 2
 * cores and grows with the machine.  Each conc figure is the best of 3
 * runs sized to about 0.25 s; Python's are one run each (they are 2 to 3
 * orders of magnitude slower).
 *
 *   bench_scaling [queue] [lock] [pool] [--no-python] [--max N]
 *
 * Nothing is asserted: speed belongs here, not in the tests.
 */
#define _GNU_SOURCE
#include <conc.h>

#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TARGET_S 0.25
#define RUNS 3
#define RING_CAP ((size_t)1 << 20)
#define MAX_PROCS 512

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds used so far by every thread of this process (not its
 * children): for a process pool, its manager thread and the caller. */
static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "bench_scaling: %s: %s (%s)\n", what, conc_strerror(err),
            conc_errdetail());
    exit(1);
}

/* Zeroed memory of this process, or the bench ends (a bench that cannot
 * allocate measures nothing). */
static void *zalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL) {
        die("calloc", CONC_ENOMEM);
    }
    return p;
}

static void *shared_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static long ncpu;
static long max_n;
static bool with_python = true;
static char py_dir[4096];

/* 1, 2, 4, ... up to limit, plus limit itself when it is no power of 2;
 * always reaching at least 2.  Returns the count written to out. */
static int axis(long limit, long *out)
{
    int k = 0;
    if (limit < 2) {
        limit = 2;
    }
    for (long n = 1; n <= limit; n *= 2) {
        out[k++] = n;
    }
    if (out[k - 1] != limit) {
        out[k++] = limit;
    }
    return k;
}

/* A child process running fn(arg, index); the parent waits for all. */
static pid_t spawn(void (*fn)(void *, int), void *arg, int index)
{
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        fn(arg, index);
        _exit(0);
    }
    return pid;
}

static void wait_all(pid_t *pids, int n)
{
    for (int i = 0; i < n; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) ||
            WEXITSTATUS(st) != 0) {
            fprintf(stderr, "bench_scaling: a child failed\n");
            exit(1);
        }
    }
}

/* ---- python ----------------------------------------------------------- */

/* Runs py_scaling.py with args; returns the first number it prints, or
 * -1 when Python is not wanted or failed. */
static double python(const char *args)
{
    if (!with_python) {
        return -1;
    }
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "python3 '%s/py_scaling.py' %s", py_dir, args);
    FILE *f = popen(cmd, "r");
    if (f == NULL) {
        return -1;
    }
    double v = -1;
    if (fscanf(f, "%lf", &v) != 1) {
        v = -1;
    }
    if (pclose(f) != 0) {
        v = -1;
    }
    return v;
}

static void cell(char *buf, size_t cap, double v, const char *fmt)
{
    if (v < 0) {
        snprintf(buf, cap, "%s", "-");
    } else {
        snprintf(buf, cap, fmt, v);
    }
}

static const char *si(double v, char *buf, size_t cap)
{
    if (v >= 1e6) {
        snprintf(buf, cap, "%.2f M", v / 1e6);
    } else if (v >= 1e3) {
        snprintf(buf, cap, "%.1f k", v / 1e3);
    } else {
        snprintf(buf, cap, "%.1f", v);
    }
    return buf;
}

/* ---- queue --------------------------------------------------------------- */

#define MAX_QUEUES 64
/* Messages a consumer takes per conc_queue_get_many in the "batch" rows. */
#define GET_BATCH 32

/* One run.  Producer i puts into qs[i % nq].  With one queue, the last
 * producer out sends an end marker per consumer; with a queue per
 * producer, each producer ends its own queue with one marker, and the
 * consumers are either one per queue (consumer i takes from qs[i]) or a
 * single one that takes from every queue in turn (poll). */
typedef struct {
    conc_queue *qs[MAX_QUEUES];
    int nq;
    bool poll;
    size_t size;
    long per_producer;
    int producers;
    int consumers;
    _Atomic int ready;
    _Atomic int go;
    _Atomic int producers_done;
    _Atomic long received;
    _Atomic double last; /* when the last consumer took its last message */
    unsigned lanes;      /* > 1: qs[0] is a queue of that many lanes */
    int batch;           /* > 0: consumers take up to this many a call */
} qrun;

static void q_producer(void *arg, int index)
{
    qrun *r = arg;
    (void)index;
    unsigned char *buf = zalloc(1, r->size);
    memset(buf, 'x', r->size);
    buf[0] = 1;
    atomic_fetch_add(&r->ready, 1);
    while (!atomic_load(&r->go)) {
        /* spin: the start must be sharp */
    }
    conc_queue *q = r->qs[index % r->nq];
    for (long i = 0; i < r->per_producer; i++) {
        int err = conc_queue_put(q, buf, r->size, CONC_FOREVER);
        if (err != 0) {
            die("conc_queue_put", err);
        }
    }
    if (r->lanes > 1) {
        /* Lanes keep order per producer only: a marker could pass another
         * producer's messages, so the last producer out closes the queue
         * and the consumers drain it. */
        if (atomic_fetch_add(&r->producers_done, 1) + 1 == r->producers) {
            int err = conc_queue_close(q);
            if (err != 0) {
                die("conc_queue_close", err);
            }
        }
        free(buf);
        return;
    }
    int ends = r->nq > 1 ? 1 : 0;
    /* One queue: the last producer out sends one marker per consumer. */
    if (r->nq == 1 &&
        atomic_fetch_add(&r->producers_done, 1) + 1 == r->producers) {
        ends = r->consumers;
    }
    buf[0] = 0;
    for (int c = 0; c < ends; c++) {
        int err = conc_queue_put(q, buf, 1, CONC_FOREVER);
        if (err != 0) {
            die("conc_queue_put end", err);
        }
    }
    free(buf);
}

static void q_consumer(void *arg, int index)
{
    qrun *r = arg;
    (void)index;
    unsigned char *buf = zalloc(1, r->size);
    long got = 0;
    atomic_fetch_add(&r->ready, 1);
    while (!atomic_load(&r->go)) {
    }
    /* Polling: every queue in turn, until each has sent its marker. */
    int ends = r->poll ? r->nq : 1;
    if (r->batch > 0) {
        conc_msg *m = zalloc((size_t)r->batch, sizeof *m);
        while (ends > 0) {
            size_t n = 0;
            int err = conc_queue_get_many(r->qs[0], m, (size_t)r->batch, &n,
                                          CONC_FOREVER);
            if (err != 0) {
                die("conc_queue_get_many", err);
            }
            int extra = 0;
            for (size_t i = 0; i < n; i++) {
                if (((unsigned char *)m[i].data)[0] != 0) {
                    got++;
                } else if (ends > 0) {
                    ends--;
                } else {
                    extra++; /* another consumer's end marker */
                }
                conc_msg_free(&m[i]);
            }
            unsigned char end = 0;
            for (int i = 0; i < extra; i++) {
                int e = conc_queue_put(r->qs[0], &end, 1, CONC_FOREVER);
                if (e != 0) {
                    die("conc_queue_put end", e);
                }
            }
        }
        free(m);
    }
    for (int at = index % r->nq; ends > 0;) {
        size_t len;
        int err = conc_queue_get_into(r->qs[at], buf, r->size, &len,
                                      r->poll ? 0 : CONC_FOREVER);
        if (err == CONC_EEMPTY && r->poll) {
            at = (at + 1) % r->nq;
            continue;
        }
        if (err == CONC_ECLOSED && r->lanes > 1) {
            break; /* closed and drained */
        }
        if (err != 0) {
            die("conc_queue_get_into", err);
        }
        if (buf[0] == 0) {
            ends--;
            continue;
        }
        got++;
    }
    double t = now();
    atomic_fetch_add(&r->received, got);
    double old = atomic_load(&r->last);
    while (t > old && !atomic_compare_exchange_weak(&r->last, &old, t)) {
    }
    free(buf);
}

/* How a run spreads over queues. */
typedef enum { ONE_QUEUE, QUEUE_PER_PAIR, QUEUE_PER_PRODUCER } qshape;

/* Messages per second, one run of producers -> consumers; lanes > 1
 * (ONE_QUEUE only): the queue is made with that many lanes. */
static double queue_once(qshape shape, unsigned lanes, int batch,
                         int producers, int consumers, size_t size,
                         long per_producer)
{
    qrun *r = shared_map(sizeof *r);
    memset(r, 0, sizeof *r);
    r->batch = batch;
    r->nq = shape == ONE_QUEUE ? 1 : producers;
    r->poll = shape == QUEUE_PER_PRODUCER;
    r->lanes = shape == ONE_QUEUE && lanes > 1 ? lanes : 0;
    for (int i = 0; i < r->nq; i++) {
        int err = conc_queue_new(&r->qs[i], &(conc_queue_opts){
                                                .capacity_bytes = RING_CAP,
                                                .lanes = r->lanes });
        if (err != 0) {
            die("conc_queue_new", err);
        }
    }
    r->size = size;
    r->per_producer = per_producer;
    r->producers = producers;
    r->consumers = consumers;
    pid_t pids[MAX_PROCS];
    int n = 0;
    for (int i = 0; i < consumers; i++) {
        pids[n++] = spawn(q_consumer, r, i);
    }
    for (int i = 0; i < producers; i++) {
        pids[n++] = spawn(q_producer, r, i);
    }
    while (atomic_load(&r->ready) < n) {
        usleep(100);
    }
    double t0 = now();
    atomic_store(&r->go, 1);
    wait_all(pids, n);
    long want = per_producer * producers;
    if (atomic_load(&r->received) != want) {
        fprintf(stderr, "bench_scaling: %ld of %ld messages arrived\n",
                atomic_load(&r->received), want);
        exit(1);
    }
    double rate = (double)want / (atomic_load(&r->last) - t0);
    for (int i = 0; i < r->nq; i++) {
        conc_queue_free(r->qs[i]);
    }
    munmap(r, sizeof *r);
    return rate;
}

/* The best of RUNS runs; batch > 0 (one queue, one ring): the consumers
 * take up to batch messages a call with conc_queue_get_many. */
static double queue_best_laned(qshape shape, unsigned lanes, int batch,
                               int producers, int consumers, size_t size)
{
    /* Calibrate on a short run, then size each run to TARGET_S. */
    long per = 20000 / producers + 1;
    double rate = queue_once(shape, lanes, batch, producers, consumers, size,
                             per);
    per = (long)(rate * TARGET_S / producers) + 1;
    double best = 0;
    for (int i = 0; i < RUNS; i++) {
        double v = queue_once(shape, lanes, batch, producers, consumers, size,
                              per);
        if (v > best) {
            best = v;
        }
    }
    return best;
}

static double queue_best_shaped(qshape shape, int producers, int consumers,
                                size_t size)
{
    return queue_best_laned(shape, 0, 0, producers, consumers, size);
}

static double queue_best(int producers, int consumers, size_t size)
{
    return queue_best_shaped(ONE_QUEUE, producers, consumers, size);
}

/* The lanes a program on n workers would give its queue: one per
 * producer, n, at least 2 (fewer is one ring) and at most the most a
 * queue takes. */
static unsigned lanes_for(long n)
{
    return n < 2 ? 2u
           : n > (long)CONC_QUEUE_MAX_LANES ? CONC_QUEUE_MAX_LANES
                                            : (unsigned)n;
}

static void bench_queue_rows(void)
{
    long ax[64];
    size_t sizes[] = { 64, 1024 };
    printf("\nconc_queue, total messages/s (best of %d); ratio to its 1->1 "
           "row; mp.Queue n->n beside it; 'lanes': one queue of n lanes\n",
           RUNS);
    printf("%-6s %-13s %12s %8s %12s %10s\n", "size", "shape", "conc_queue",
           "vs 1->1", "mp.Queue", "conc/py");
    for (size_t s = 0; s < 2; s++) {
        size_t size = sizes[s];
        double base = queue_best(1, 1, size);
        char a[32], b[32], shape[64];
        double py = -1;
        if (s == 0) {
            char args[64];
            snprintf(args, sizeof args, "queue 1 %zu", size);
            py = python(args);
        }
        cell(b, sizeof b, py, "%.0f");
        printf("%-6zu %-13s %12s %8.2f %12s %10s\n", size, "1->1",
               si(base, a, sizeof a), 1.0, py < 0 ? "-" : si(py, b, sizeof b),
               py < 0 ? "-" : (snprintf(shape, sizeof shape, "%.0fx",
                                        base / py), shape));
        int k = axis(max_n / 2, ax);
        for (int i = 1; i < k; i++) {
            long n = ax[i];
            double v = queue_best((int)n, (int)n, size);
            py = -1;
            if (s == 0) {
                char args[64];
                snprintf(args, sizeof args, "queue %ld %zu", n, size);
                py = python(args);
            }
            char ratio[32] = "-";
            if (py > 0) {
                snprintf(ratio, sizeof ratio, "%.0fx", v / py);
            }
            snprintf(shape, sizeof shape, "%ld->%ld%s", n, n,
                     2 * n > ncpu ? "*" : "");
            printf("%-6zu %-13s %12s %8.2f %12s %10s\n", size, shape,
                   si(v, a, sizeof a), v / base,
                   py < 0 ? "-" : si(py, b, sizeof b), ratio);
        }
        k = axis(max_n - 1, ax);
        for (int i = 1; i < k; i++) {
            long n = ax[i];
            for (int dir = 0; dir < 2; dir++) {
                int p = dir == 0 ? 1 : (int)n, c = dir == 0 ? (int)n : 1;
                double v = queue_best(p, c, size);
                snprintf(shape, sizeof shape, "%d->%d%s", p, c,
                         n + 1 > ncpu ? "*" : "");
                printf("%-6zu %-13s %12s %8.2f %12s %10s\n", size, shape,
                       si(v, a, sizeof a), v / base, "", "");
            }
        }
        /* The ceiling of per-producer lanes: no line shared between the
         * pairs, or between the producers. */
        k = axis(max_n / 2, ax);
        for (int i = 1; i < k && ax[i] <= MAX_QUEUES; i++) {
            long n = ax[i];
            double v = queue_best_shaped(QUEUE_PER_PAIR, (int)n, (int)n,
                                         size);
            snprintf(shape, sizeof shape, "%ld x 1->1%s", n,
                     2 * n > ncpu ? "*" : "");
            printf("%-6zu %-13s %12s %8.2f %12s %10s\n", size, shape,
                   si(v, a, sizeof a), v / base, "", "");
        }
        k = axis(max_n - 1, ax);
        for (int i = 1; i < k && ax[i] <= MAX_QUEUES; i++) {
            long n = ax[i];
            double v = queue_best_shaped(QUEUE_PER_PRODUCER, (int)n, 1, size);
            snprintf(shape, sizeof shape, "%ld->1 own%s", n,
                     n + 1 > ncpu ? "*" : "");
            printf("%-6zu %-13s %12s %8.2f %12s %10s\n", size, shape,
                   si(v, a, sizeof a), v / base, "", "");
        }
        /* The same shapes on one queue of lanes, one lane per producer
         * (lanes_for()). */
        k = axis(max_n / 2, ax);
        for (int i = 1; i < k; i++) {
            long n = ax[i];
            double v = queue_best_laned(ONE_QUEUE, lanes_for(n), 0, (int)n,
                                        (int)n, size);
            snprintf(shape, sizeof shape, "%ld->%ld lanes%s", n, n,
                     2 * n > ncpu ? "*" : "");
            printf("%-6zu %-13s %12s %8.2f %12s %10s\n", size, shape,
                   si(v, a, sizeof a), v / base, "", "");
        }
        k = axis(max_n - 1, ax);
        for (int i = 1; i < k; i++) {
            long n = ax[i];
            for (int dir = 0; dir < 2; dir++) {
                int p = dir == 0 ? 1 : (int)n, c = dir == 0 ? (int)n : 1;
                double v = queue_best_laned(ONE_QUEUE, lanes_for(n), 0, p,
                                            c, size);
                snprintf(shape, sizeof shape, "%d->%d lanes%s", p, c,
                         n + 1 > ncpu ? "*" : "");
                printf("%-6zu %-13s %12s %8.2f %12s %10s\n", size, shape,
                       si(v, a, sizeof a), v / base, "", "");
            }
        }
        /* One producer feeding many consumers, as queue.h advises: one
         * ring, each consumer taking up to GET_BATCH a call. */
        for (int i = 1; i < k; i++) {
            long n = ax[i];
            double v = queue_best_laned(ONE_QUEUE, 0, GET_BATCH, 1, (int)n,
                                        size);
            snprintf(shape, sizeof shape, "1->%ld batch%s", n,
                     n + 1 > ncpu ? "*" : "");
            printf("%-6zu %-13s %12s %8.2f %12s %10s\n", size, shape,
                   si(v, a, sizeof a), v / base, "", "");
        }
    }
}

/* ---- lock ------------------------------------------------------------------- */

typedef struct {
    conc_lock *l;
    pthread_mutex_t mu;
    bool use_pthread;
    long per_proc;
    _Atomic int ready;
    _Atomic int go;
    long counter;
} lrun;

static void l_worker(void *arg, int index)
{
    lrun *r = arg;
    (void)index;
    atomic_fetch_add(&r->ready, 1);
    while (!atomic_load(&r->go)) {
    }
    for (long i = 0; i < r->per_proc; i++) {
        if (r->use_pthread) {
            pthread_mutex_lock(&r->mu);
            r->counter++;
            pthread_mutex_unlock(&r->mu);
        } else {
            int err = conc_lock_acquire(r->l, CONC_FOREVER);
            if (err != 0) {
                die("conc_lock_acquire", err);
            }
            r->counter++;
            conc_lock_release(r->l);
        }
    }
}

static double lock_once(int procs, bool use_pthread, long per_proc)
{
    lrun *r = shared_map(sizeof *r);
    memset(r, 0, sizeof *r);
    r->use_pthread = use_pthread;
    r->per_proc = per_proc;
    if (use_pthread) {
        pthread_mutexattr_t at;
        pthread_mutexattr_init(&at);
        pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
        pthread_mutex_init(&r->mu, &at);
        pthread_mutexattr_destroy(&at);
    } else {
        int err = conc_lock_new(&r->l, NULL);
        if (err != 0) {
            die("conc_lock_new", err);
        }
    }
    pid_t pids[MAX_PROCS];
    for (int i = 0; i < procs; i++) {
        pids[i] = spawn(l_worker, r, i);
    }
    while (atomic_load(&r->ready) < procs) {
        usleep(100);
    }
    double t0 = now();
    atomic_store(&r->go, 1);
    wait_all(pids, procs);
    double dt = now() - t0;
    if (r->counter != per_proc * procs) {
        fprintf(stderr, "bench_scaling: lost increments\n");
        exit(1);
    }
    if (use_pthread) {
        pthread_mutex_destroy(&r->mu);
    } else {
        conc_lock_free(r->l);
    }
    munmap(r, sizeof *r);
    return (double)(per_proc * procs) / dt;
}

static double lock_best(int procs, bool use_pthread)
{
    long per = 200000 / procs + 1;
    double rate = lock_once(procs, use_pthread, per);
    per = (long)(rate * TARGET_S / procs) + 1;
    double best = 0;
    for (int i = 0; i < RUNS; i++) {
        double v = lock_once(procs, use_pthread, per);
        best = v > best ? v : best;
    }
    return best;
}

/* ---- lock, uncontended ------------------------------------------------------- */

/* Nanoseconds of this thread's CPU time per acquire+release of conc_lock
 * (use_pthread false) or of a private pthread mutex, one process, best
 * of RUNS runs of 5 M pairs.  CPU time: the wall clock of a shared
 * machine also counts others' time slices. */
static double uncontended_ns(bool use_pthread)
{
    enum { PAIRS = 5000000 };
    conc_lock *l = NULL;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int err = use_pthread ? 0 : conc_lock_new(&l, NULL);
    if (err != 0) {
        die("conc_lock_new", err);
    }
    double best = 1e30;
    for (int r = 0; r < RUNS; r++) {
        struct timespec a, b;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        for (int i = 0; i < PAIRS; i++) {
            if (use_pthread) {
                pthread_mutex_lock(&mu);
                pthread_mutex_unlock(&mu);
            } else {
                conc_lock_acquire(l, CONC_FOREVER);
                conc_lock_release(l);
            }
        }
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        double ns = ((double)(b.tv_sec - a.tv_sec) * 1e9 +
                     (double)(b.tv_nsec - a.tv_nsec)) / PAIRS;
        best = ns < best ? ns : best;
    }
    conc_lock_free(l);
    return best;
}

static void *idle_thread(void *arg)
{
    int fd = *(int *)arg;
    char c;
    while (read(fd, &c, 1) < 0) {
    }
    return NULL;
}

/* conc_lock against a private pthread mutex, uncontended, with the
 * process alone and with a second (sleeping) thread alive: glibc and
 * conc_lock take plain stores only in a process with one thread.  In a
 * child process, so that the thread does not stay in this one. */
static void bench_lock_uncontended(void)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid > 0) {
        wait_all(&pid, 1);
        return;
    }
    double c1 = uncontended_ns(false), p1 = uncontended_ns(true);
    int fds[2];
    pthread_t t;
    if (pipe(fds) != 0 || pthread_create(&t, NULL, idle_thread, &fds[0])) {
        perror("pipe/pthread_create");
        _exit(1);
    }
    double c2 = uncontended_ns(false), p2 = uncontended_ns(true);
    if (write(fds[1], "x", 1) != 1) {
        _exit(1);
    }
    pthread_join(t, NULL);
    printf("\nlock, uncontended acquire+release in one process, ns (CPU "
           "time, best of %d)\n", RUNS);
    printf("%-22s %12s %12s %10s\n", "", "conc_lock", "pthread", "conc/pt");
    printf("%-22s %12.2f %12.2f %10.2f\n", "one thread", c1, p1, c1 / p1);
    printf("%-22s %12.2f %12.2f %10.2f\n", "a second thread alive", c2, p2,
           c2 / p2);
    fflush(stdout);
    _exit(0);
}

static void bench_lock_rows(void)
{
    long ax[64];
    int k = axis(max_n, ax);
    bench_lock_uncontended();
    printf("\nlock: n processes x counter++, increments/s (best of %d)\n",
           RUNS);
    printf("%-6s %12s %12s %10s %12s %10s\n", "procs", "conc_lock",
           "pthread(ps)", "conc/pt", "mp.Lock", "conc/py");
    for (int i = 0; i < k; i++) {
        long n = ax[i];
        /* Alternate the two, so a noisy moment hits both alike. */
        double c = lock_best((int)n, false);
        double p = lock_best((int)n, true);
        char args[64], a[32], b[32], d[32], ratio[32] = "-";
        snprintf(args, sizeof args, "lock %ld", n);
        double py = python(args);
        if (py > 0) {
            snprintf(ratio, sizeof ratio, "%.0fx", c / py);
        }
        char label[32];
        snprintf(label, sizeof label, "%ld%s", n, n > ncpu ? "*" : "");
        printf("%-6s %12s %12s %10.2f %12s %10s\n", label,
               si(c, a, sizeof a), si(p, b, sizeof b), c / p,
               py < 0 ? "-" : si(py, d, sizeof d), ratio);
    }
}

/* ---- pool --------------------------------------------------------------------- */

static int empty_task(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)in;
    (void)len;
    (void)out;
    (void)ctx;
    return 0;
}

/* One item of the CPU-bound map: count the primes below 60000 by trial
 * division (about 4 ms on a 2020s core); every item is the same. */
static int cpu_item(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)in;
    (void)len;
    (void)ctx;
    uint64_t c = 0;
    for (uint64_t n = 2; n < 60000; n++) {
        uint64_t d = 2;
        while (d * d <= n && n % d != 0) {
            d++;
        }
        c += d * d > n;
    }
    return conc_buf_append(out, &c, sizeof c);
}

static conc_pool *pool_mk(conc_pool_kind kind, size_t workers)
{
    conc_pool *p;
    int err = conc_pool_new(&p, &(conc_pool_opts){ .kind = kind,
                                                   .workers = workers });
    if (err != 0) {
        die("conc_pool_new", err);
    }
    return p;
}

/* Seconds of the best of two maps; *parent: the parent's CPU in cores
 * during that map. */
static double cpu_map_seconds(conc_pool_kind kind, size_t workers,
                              double *parent)
{
    enum { ITEMS = 256 };
    conc_msg in[ITEMS], out[ITEMS];
    for (int i = 0; i < ITEMS; i++) {
        in[i] = (conc_msg){ NULL, 0 };
    }
    conc_pool *p = pool_mk(kind, workers);
    double best = 1e9;
    for (int r = 0; r < 2; r++) {
        double c0 = self_cpu(), t0 = now();
        int err = conc_pool_map(p, cpu_item, in, ITEMS, out,
                                &(conc_map_opts){ .chunksize = 1 });
        double dt = now() - t0, dc = self_cpu() - c0;
        if (err != 0) {
            die("conc_pool_map", err);
        }
        for (int i = 0; i < ITEMS; i++) {
            conc_msg_free(&out[i]);
        }
        if (dt < best) {
            best = dt;
            *parent = dc / dt;
        }
    }
    conc_pool_free(p);
    return best;
}

/* Tasks per second, best of RUNS; *parent as in cpu_map_seconds(). */
static double empty_rate(size_t workers, int n, double *parent)
{
    conc_pool *p = pool_mk(CONC_PROCESSES, workers);
    conc_future **f = zalloc((size_t)n, sizeof *f);
    double best = 0;
    for (int r = 0; r < RUNS; r++) {
        double c0 = self_cpu(), t0 = now();
        for (int i = 0; i < n; i++) {
            int err = conc_pool_submit(p, empty_task, NULL, 0, &f[i]);
            if (err != 0) {
                die("conc_pool_submit", err);
            }
        }
        for (int i = 0; i < n; i++) {
            conc_msg m;
            int err = conc_future_result(f[i], &m, CONC_FOREVER);
            if (err != 0) {
                die("conc_future_result", err);
            }
            conc_msg_free(&m);
            conc_future_free(f[i]);
        }
        double dt = now() - t0, v = n / dt;
        if (v > best) {
            best = v;
            *parent = (self_cpu() - c0) / dt;
        }
    }
    free(f);
    conc_pool_free(p);
    return best;
}

static void bench_pool_rows(void)
{
    long ax[64];
    int k = axis(max_n, ax);
    printf("\npool: CPU-bound map of 256 equal items, speed-up over 1 "
           "worker; Python's Pool and ProcessPoolExecutor beside\n");
    printf("%-8s %10s %8s %10s %10s %10s\n", "workers", "processes",
           "parent", "threads", "mp.Pool", "PPE");
    double par1 = 0, par = 0, unused = 0;
    double p1 = cpu_map_seconds(CONC_PROCESSES, 1, &par1);
    double t1 = cpu_map_seconds(CONC_THREADS, 1, &unused);
    double py_pool1 = python("cpu pool 1");
    double py_ppe1 = python("cpu ppe 1");
    for (int i = 0; i < k; i++) {
        long w = ax[i];
        par = par1;
        double p = i == 0 ? p1
                          : cpu_map_seconds(CONC_PROCESSES, (size_t)w, &par);
        double t = i == 0 ? t1
                          : cpu_map_seconds(CONC_THREADS, (size_t)w, &unused);
        char args[64], c[32], d[32];
        snprintf(args, sizeof args, "cpu pool %ld", w);
        double pp = i == 0 ? py_pool1 : python(args);
        snprintf(args, sizeof args, "cpu ppe %ld", w);
        double pe = i == 0 ? py_ppe1 : python(args);
        cell(c, sizeof c, pp > 0 && py_pool1 > 0 ? py_pool1 / pp : -1,
             "%.2f");
        cell(d, sizeof d, pe > 0 && py_ppe1 > 0 ? py_ppe1 / pe : -1, "%.2f");
        char label[32];
        snprintf(label, sizeof label, "%ld%s", w, w > ncpu ? "*" : "");
        printf("%-8s %10.2f %8.2f %10.2f %10s %10s\n", label, p1 / p, par,
               t1 / t, c, d);
    }
    enum { EMPTY = 200000 };
    printf("\npool: %d empty tasks pipelined (submit all, then collect), "
           "tasks/s by worker processes\n", EMPTY);
    printf("%-8s %12s %8s %8s %12s %12s %10s\n", "workers", "conc",
           "vs w=1", "parent",
           "mp.Pool c=1", "PPE", "conc/PPE");
    double e1 = 0;
    for (int i = 0; i < k; i++) {
        long w = ax[i];
        double epar = 0;
        double v = empty_rate((size_t)w, EMPTY, &epar);
        if (i == 0) {
            e1 = v;
        }
        char args[64], a[32], b[32], c[32], ratio[32] = "-";
        snprintf(args, sizeof args, "empty pool %ld", w);
        double pp = python(args);
        snprintf(args, sizeof args, "empty ppe %ld", w);
        double pe = python(args);
        if (pe > 0) {
            snprintf(ratio, sizeof ratio, "%.0fx", v / pe);
        }
        char label[32];
        snprintf(label, sizeof label, "%ld%s", w, w > ncpu ? "*" : "");
        printf("%-8s %12s %8.2f %8.2f %12s %12s %10s\n", label,
               si(v, a, sizeof a), v / e1, epar, pp < 0 ? "-" : si(pp, b, sizeof b),
               pe < 0 ? "-" : si(pe, c, sizeof c), ratio);
    }
}

int main(int argc, char **argv)
{
    bool q = false, l = false, p = false;
    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1) {
        ncpu = 1;
    }
    max_n = ncpu;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "queue") == 0) {
            q = true;
        } else if (strcmp(argv[i], "lock") == 0) {
            l = true;
        } else if (strcmp(argv[i], "pool") == 0) {
            p = true;
        } else if (strcmp(argv[i], "--no-python") == 0) {
            with_python = false;
        } else if (strcmp(argv[i], "--max") == 0 && i + 1 < argc) {
            max_n = atol(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_scaling [queue] [lock] [pool] "
                            "[--no-python] [--max N]\n");
            return 2;
        }
    }
    if (!q && !l && !p) {
        q = l = p = true;
    }
    if (max_n < 1 || max_n > MAX_PROCS / 2) {
        fprintf(stderr, "bench_scaling: --max must be 1..%d\n",
                MAX_PROCS / 2);
        return 2;
    }
    /* py_scaling.py sits beside this program's source: bench/ when run
     * from the build tree by scripts/bench.sh (cd bench), else cwd. */
    snprintf(py_dir, sizeof py_dir, "%s",
             access("py_scaling.py", R_OK) == 0 ? "." : "bench");
    printf("bench_scaling: %ld CPUs online; axes up to %ld ('*': more "
           "processes than CPUs)\n", ncpu, max_n);
    if (q) {
        bench_queue_rows();
    }
    if (l) {
        bench_lock_rows();
    }
    if (p) {
        bench_pool_rows();
    }
    return 0;
}
