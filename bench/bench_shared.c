/* bench_shared.c - the shared module against Python, same run, one table:
 *   - conc_dict set+get from a child process vs Manager().dict() (goal:
 *     at least 300x);
 *   - conc_dict_update from 2 processes on one key and on distinct keys
 *     vs the only exact Manager equivalent, d[k] += 1 under an mp.Lock;
 *   - conc_value increments under its lock from 2 processes vs mp.Value
 *     with get_lock().
 * The Python figures come from py_shared.py beside this file, run by
 * python3 at the same time as ours.  Operations per second; ratio =
 * libconc / Python.  argv[1] scales the work (default 1).
 */
#define _GNU_SOURCE

#include <conc.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double scale = 1.0;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Shared between the bench and its children. */
typedef struct board {
    _Atomic int ready;
    _Atomic int go;
    double child_rate;
} board;

static board *bd;
static conc_dict *dict;
static conc_value *value;
static long iters;

typedef int (*work_fn)(int id);

typedef struct job {
    work_fn fn;
    int id;
} job;

static int child_main(void *arg)
{
    job *j = arg;
    atomic_fetch_add(&bd->ready, 1);
    while (!atomic_load(&bd->go)) {
    }
    return j->fn(j->id);
}

/* Starts n processes running fn(id) at the same instant; the seconds from
 * that instant until the last one ended, or -1. */
static double run_procs(int n, work_fn fn)
{
    conc_process *p[4] = { NULL };
    job jobs[4];
    atomic_store(&bd->ready, 0);
    atomic_store(&bd->go, 0);
    for (int i = 0; i < n; i++) {
        jobs[i] = (job){ fn, i };
        if (conc_process_new(&p[i], &(conc_process_opts){ .target = child_main,
                                                          .arg = &jobs[i] }) != 0 ||
            conc_process_start(p[i]) != 0) {
            return -1;
        }
    }
    while (atomic_load(&bd->ready) < n) {
        usleep(100);
    }
    double t0 = now();
    atomic_store(&bd->go, 1);
    bool ok = true;
    for (int i = 0; i < n; i++) {
        int code = 1;
        ok = ok && conc_process_join(p[i], 600) == 0 &&
             conc_process_exitcode(p[i], &code) == 0 && code == 0;
        conc_process_free(p[i]);
    }
    double t = now() - t0;
    return ok ? t : -1;
}

/* set+get of 1024 keys with 64-byte values, timed inside the child (as
 * py_shared.py times the Manager loop inside its child). */
static int setget(int id)
{
    (void)id;
    static char keys[1024][16];
    static size_t klens[1024];
    char v[64];
    memset(v, 'v', sizeof v);
    for (int i = 0; i < 1024; i++) {
        klens[i] = (size_t)snprintf(keys[i], sizeof keys[i], "key-%d", i);
    }
    char out[64];
    size_t len;
    double t0 = now();
    for (long i = 0; i < iters; i++) {
        const char *k = keys[i & 1023];
        size_t kl = klens[i & 1023];
        if (conc_dict_set(dict, k, kl, v, sizeof v) != 0 ||
            conc_dict_get_into(dict, k, kl, out, sizeof out, &len) != 0) {
            return 1;
        }
    }
    bd->child_rate = 2.0 * (double)iters / (now() - t0);
    return 0;
}

static int incr(const void *old, size_t oldlen, bool found, conc_buf *out,
                void *arg)
{
    (void)arg;
    uint64_t v = 0;
    if (found && oldlen == sizeof v) {
        memcpy(&v, old, sizeof v);
    }
    v++;
    return conc_buf_append(out, &v, sizeof v);
}

static int update_same(int id)
{
    (void)id;
    for (long i = 0; i < iters; i++) {
        if (conc_dict_update(dict, "same", 4, incr, NULL) != 0) {
            return 1;
        }
    }
    return 0;
}

static int update_distinct(int id)
{
    char k[8];
    int kl = snprintf(k, sizeof k, "k%d", id);
    for (long i = 0; i < iters; i++) {
        if (conc_dict_update(dict, k, (size_t)kl, incr, NULL) != 0) {
            return 1;
        }
    }
    return 0;
}

static int value_incr(int id)
{
    (void)id;
    long *c = conc_value_ptr(value);
    conc_lock *l = conc_value_lock(value);
    for (long i = 0; i < iters; i++) {
        if (conc_lock_acquire(l, CONC_FOREVER) != 0) {
            return 1;
        }
        (*c)++;
        conc_lock_release(l);
    }
    return 0;
}

static uint64_t read_u64(const char *k)
{
    uint64_t v = 0;
    size_t len = 0;
    conc_dict_get_into(dict, k, strlen(k), &v, sizeof v, &len);
    return v;
}

/* Python's figures, by name, from py_shared.py's output. */
static double py_rate(const char *text, const char *name)
{
    char pat[128];
    snprintf(pat, sizeof pat, "%s ", name);
    const char *p = strstr(text, pat);
    return p ? atof(p + strlen(pat)) : 0;
}

static void row(const char *what, double ours, double py)
{
    if (py > 0) {
        printf("| %-46s | %14.0f | %12.0f | %8.0fx |\n", what, ours, py,
               ours / py);
    } else {
        printf("| %-46s | %14.0f | %12s | %9s |\n", what, ours, "n/a", "n/a");
    }
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        scale = atof(argv[1]);
    }
    bd = mmap(NULL, sizeof *bd, PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (bd == MAP_FAILED) {
        return 1;
    }
    /* Python first, while nothing of ours runs. */
    char dir[4096], cmd[4400];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
    } else {
        snprintf(dir, sizeof dir, ".");
    }
    snprintf(cmd, sizeof cmd, "python3 '%s/py_shared.py' %g 2>&1", dir, scale);
    char py[4096] = "";
    FILE *f = popen(cmd, "r");
    if (f != NULL) {
        size_t n = fread(py, 1, sizeof py - 1, f);
        py[n] = '\0';
        pclose(f);
    }

    if (conc_dict_new(&dict, NULL) != 0 ||
        conc_value_new(&value, &(conc_value_opts){ .size = sizeof(long),
                                                    .lock = true }) != 0) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    printf("| %-46s | %14s | %12s | %9s |\n", "operation (ops/s)", "libconc",
           "Python", "ratio");
    printf("|%s|%s|%s|%s|\n", "------------------------------------------------",
           "----------------", "--------------", "-----------");

    iters = (long)(2000000 * scale);
    if (run_procs(1, setget) < 0) {
        fprintf(stderr, "set+get failed\n");
        return 1;
    }
    row("dict set+get, child process (Manager dict)", bd->child_rate,
        py_rate(py, "manager_dict_setget_child"));

    iters = (long)(1000000 * scale);
    double t = run_procs(2, update_same);
    if (t < 0 || read_u64("same") != 2 * (uint64_t)iters) {
        fprintf(stderr, "update same failed\n");
        return 1;
    }
    row("dict update, 2 procs, same key (d[k]+=1+Lock)", 2.0 * iters / t,
        py_rate(py, "manager_dict_update_same"));
    t = run_procs(2, update_distinct);
    if (t < 0 || read_u64("k0") != (uint64_t)iters ||
        read_u64("k1") != (uint64_t)iters) {
        fprintf(stderr, "update distinct failed\n");
        return 1;
    }
    row("dict update, 2 procs, distinct keys", 2.0 * iters / t,
        py_rate(py, "manager_dict_update_distinct"));

    iters = (long)(2000000 * scale);
    t = run_procs(2, value_incr);
    if (t < 0 || *(long *)conc_value_ptr(value) != 2 * iters) {
        fprintf(stderr, "value increments failed\n");
        return 1;
    }
    row("Value += 1 under its lock, 2 procs (mp.Value)", 2.0 * iters / t,
        py_rate(py, "mp_value_lock_incr"));

    if (py_rate(py, "manager_dict_setget_child") <= 0) {
        printf("(python3 baseline unavailable: %s)\n", py);
    }
    conc_dict_free(dict);
    conc_value_free(value);
    return 0;
}
