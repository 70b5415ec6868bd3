/* bench_shared.c - the shared module against Python, same run, one table:
 *   - conc_dict set+get from a child process vs Manager().dict() (goal:
 *     at least 300x);
 *   - conc_dict_update from 2 processes on one key and on distinct keys
 *     vs the only exact Manager equivalent, d[k] += 1 under an mp.Lock;
 *   - conc_value increments under its lock from 2 processes vs mp.Value
 *     with get_lock();
 * then a second table, the dict by size: for each N (1 k, 100 k, 1 M and
 * 5 M keys by default), a dict filled from empty to N keys one set at a
 * time (its growth, and its index's growth, included), then N reads, N
 * conc_dict_update increments and N conc_dict_add increments of keys
 * spread over the whole dict (each repeated up to a million operations
 * for the small sizes), against the Manager dict at the same size
 * (py_shared.py --sizes says how that one is measured), and the longest
 * single set of three more fills timed call by call (so the rates carry
 * no clock reads): the pause a growth step or an index migration step costs
 * a caller (longest_set says how preemption is told apart).
 *
 * The Python figures come from py_shared.py beside this file, run by
 * python3 before ours.  Operations per second; ratio = libconc / Python.
 *
 *   bench_shared [SCALE] [--sizes N,N,...] [--py FILE] [--raw]
 *
 * SCALE (default 1) scales the first table's work and Python's timed
 * operations by size; --sizes replaces the sizes ("" for none); --py
 * reads Python's figures from FILE (py_shared.py's output) instead of
 * running it; --raw prints every figure also as a "name value" line,
 * for bench/bench_dict_compare.sh.
 *
 * Built with -DBENCH_OLD_API it also compiles against the library from
 * before the dict could grow (bench_dict_compare.sh does this to compare
 * the two in one run): there conc_dict_add does not exist, and each
 * dict by size is given a capacity_bytes that holds its N keys, as that
 * fixed-size dict needed (the one here grows from its default).
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
static bool raw;

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
    snprintf(pat, sizeof pat, "\n%s ", name);
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

/* The raw figures, printed after the tables with --raw. */
static char raw_text[8192];

static void fig(const char *name, double v)
{
    size_t n = strlen(raw_text);
    snprintf(raw_text + n, sizeof raw_text - n, "%s %.1f\n", name, v);
}

/* ---- the dict by size ---------------------------------------------------- */

/* Knuth's multiplicative constant, a prime: i * STRIDE % n visits every
 * key of 0..n-1 once (n < STRIDE), spread over the whole dict, so reads
 * and updates do not walk the heap in the order the fill laid it out.
 * py_shared.py uses the same order. */
#define STRIDE 2654435761ull

static size_t key_of(uint64_t i, char *k)
{
    return (size_t)snprintf(k, 16, "k%014llu", (unsigned long long)i);
}

static int size_dict_new(conc_dict **d, uint64_t n)
{
#ifdef BENCH_OLD_API
    /* The fixed dict: a 64-byte block per entry (32-byte header, the
     * 15-byte key rounded to 16, 8 bytes of value), room to spare for the
     * buddy allocator, and its index (capacity / 512 buckets) inside. */
    return conc_dict_new(d, &(conc_dict_opts){
                                .capacity_bytes = (size_t)(n * 160 +
                                                           (16 << 20)) });
#else
    (void)n;
    return conc_dict_new(d, NULL); /* grows from its default */
#endif
}

/* Fills a new dict with keys 0..n-1 (value: the key's number); the fill's
 * rate, or -1.  With lat, every call is timed into lat[i] (us). */
static double fill(conc_dict *d, uint64_t n, float *lat)
{
    char k[16];
    double t0 = now();
    for (uint64_t i = 0; i < n; i++) {
        size_t kl = key_of(i, k);
        int64_t v = (int64_t)i;
        double c0 = lat != NULL ? now() : 0;
        if (conc_dict_set(d, k, kl, &v, sizeof v) != 0) {
            fprintf(stderr, "set %llu of %llu: %s\n", (unsigned long long)i,
                    (unsigned long long)n, conc_errdetail());
            return -1;
        }
        if (lat != NULL) {
            lat[i] = (float)((now() - c0) * 1e6);
        }
    }
    return (double)n / (now() - t0);
}

/* The longest set of a fill to n keys, two ways, from three fills timed
 * call by call: raw, the longest of all (on a loaded machine mostly
 * another process's time slice), and own, the longest of the calls'
 * times taken each as the shortest of its three fills.  A growth step or
 * a migration step falls on the same call of every fill (the same keys
 * in the same order: the dict's shape depends on the count, not on the
 * random hash seed), a preemption on the same call of all three almost
 * never (with p the share of calls preempted, about n p^3 calls are:
 * 1e-3 for 5 M calls and p = 5e-4, which a load of 8 processes per core
 * gives here), so own is the pause the dict itself costs; at_call says
 * which call it was. */
#define FILLS 3

typedef struct worst {
    double raw_us, own_us;
    uint64_t at_call;
} worst;

static int longest_set(uint64_t n, worst *w)
{
    float *lat[FILLS];
    int rc = 0;
    for (int f = 0; f < FILLS; f++) {
        lat[f] = malloc(n * sizeof(float));
        rc = lat[f] == NULL ? -1 : rc;
    }
    for (int f = 0; f < FILLS && rc == 0; f++) {
        conc_dict *d = NULL;
        if (size_dict_new(&d, n) != 0 || fill(d, n, lat[f]) < 0) {
            rc = -1;
        }
        conc_dict_free(d);
    }
    memset(w, 0, sizeof *w);
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        float lo = lat[0][i], hi = lat[0][i];
        for (int f = 1; f < FILLS; f++) {
            lo = lat[f][i] < lo ? lat[f][i] : lo;
            hi = lat[f][i] > hi ? lat[f][i] : hi;
        }
        if (hi > w->raw_us) {
            w->raw_us = hi;
        }
        if (lo > w->own_us) {
            w->own_us = lo;
            w->at_call = i;
        }
    }
    for (int f = 0; f < FILLS; f++) {
        free(lat[f]);
    }
    return rc;
}

/* The rates of the fill, reads, updates and adds (adds 0 without the
 * call), and the longest set. */
typedef struct size_rates {
    double set, get, update, add;
    worst longest;
} size_rates;

/* Each rate is taken over at least this many operations (scaled): a
 * small dict is filled, or read, or updated, again and again, so that
 * no figure rests on a few milliseconds that one preemption could halve. */
#define SIZE_MIN_OPS 1000000.0

/* reps fills of fresh dicts to n keys; the rate of the fills alone
 * (creating and freeing the dicts not counted). */
static double fills(uint64_t n, uint64_t reps)
{
    double busy = 0;
    for (uint64_t r = 0; r < reps; r++) {
        conc_dict *d = NULL;
        if (size_dict_new(&d, n) != 0) {
            fprintf(stderr, "dict of %llu keys: %s\n",
                    (unsigned long long)n, conc_errdetail());
            return -1;
        }
        double t0 = now(), rate = fill(d, n, NULL);
        busy += now() - t0;
        conc_dict_free(d);
        if (rate < 0) {
            return -1;
        }
    }
    return (double)(n * reps) / busy;
}

/* reps passes over keys 0..n-1 in STRIDE order: op 0 reads (each value
 * must be the key's number plus base), 1 updates (+1), 2 adds (+1, the
 * result checked); the rate, or -1.  base counts the increments the key
 * had before this pass. */
static double pass(conc_dict *d, uint64_t n, uint64_t reps, int op,
                   int64_t base)
{
    char k[16];
    double t0 = now();
    for (uint64_t r = 0; r < reps; r++) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t j = i * STRIDE % n;
            size_t kl = key_of(j, k), len = 0;
            int64_t v = 0, want = (int64_t)j + base + (op == 0 ? 0 : 1);
            int err;
            if (op == 0) {
                err = conc_dict_get_into(d, k, kl, &v, sizeof v, &len);
#ifndef BENCH_OLD_API
            } else if (op == 2) {
                err = conc_dict_add(d, k, kl, 1, &v);
#endif
            } else {
                err = conc_dict_update(d, k, kl, incr, NULL);
                v = want;
            }
            if (err != 0 || v != want) {
                fprintf(stderr, "operation %d on key %llu: %s\n", op,
                        (unsigned long long)j,
                        err != 0 ? conc_errdetail() : "wrong value");
                return -1;
            }
        }
        base += op == 0 ? 0 : 1;
    }
    return (double)(n * reps) / (now() - t0);
}

static int by_size(uint64_t n, size_rates *r)
{
    conc_dict *d = NULL;
    double want = SIZE_MIN_OPS * scale;
    uint64_t reps = (double)n >= want ? 1 : (uint64_t)(want / (double)n + 1);
    memset(r, 0, sizeof *r);
    if ((r->set = fills(n, reps)) < 0 || size_dict_new(&d, n) != 0 ||
        fill(d, n, NULL) < 0 ||
        (r->get = pass(d, n, reps, 0, 0)) < 0 ||
        (r->update = pass(d, n, reps, 1, 0)) < 0) {
        conc_dict_free(d);
        return -1;
    }
#ifndef BENCH_OLD_API
    if ((r->add = pass(d, n, reps, 2, (int64_t)reps)) < 0) {
        conc_dict_free(d);
        return -1;
    }
#endif
    if (conc_dict_len(d) != n) {
        fprintf(stderr, "the dict has %zu keys, not %llu\n", conc_dict_len(d),
                (unsigned long long)n);
        conc_dict_free(d);
        return -1;
    }
    conc_dict_free(d);
    return longest_set(n, &r->longest);
}

static void size_label(char *out, size_t cap, uint64_t n)
{
    if (n >= 1000000 && n % 1000000 == 0) {
        snprintf(out, cap, "%llu M", (unsigned long long)(n / 1000000));
    } else if (n >= 1000 && n % 1000 == 0) {
        snprintf(out, cap, "%llu k", (unsigned long long)(n / 1000));
    } else {
        snprintf(out, cap, "%llu", (unsigned long long)n);
    }
}

static int sizes_table(const uint64_t *sizes, int nsizes, const char *py)
{
    printf("\n| %-46s | %14s | %12s | %9s |\n", "dict by size (ops/s)",
           "libconc", "Manager", "ratio");
    printf("|%s|%s|%s|%s|\n", "------------------------------------------------",
           "----------------", "--------------", "-----------");
    for (int s = 0; s < nsizes; s++) {
        uint64_t n = sizes[s];
        size_rates r;
        char label[24], what[96], name[64];
        size_label(label, sizeof label, n);
        if (by_size(n, &r) != 0) {
            return -1;
        }
        snprintf(name, sizeof name, "manager_dict_set_%llu",
                 (unsigned long long)n);
        snprintf(what, sizeof what, "%s keys: set (fill from empty)", label);
        row(what, r.set, py_rate(py, name));
        snprintf(name, sizeof name, "manager_dict_get_%llu",
                 (unsigned long long)n);
        snprintf(what, sizeof what, "%s keys: get", label);
        row(what, r.get, py_rate(py, name));
        snprintf(name, sizeof name, "manager_dict_update_%llu",
                 (unsigned long long)n);
        snprintf(what, sizeof what, "%s keys: update +1 (d[k]+=1 + Lock)",
                 label);
        row(what, r.update, py_rate(py, name));
#ifndef BENCH_OLD_API
        snprintf(what, sizeof what, "%s keys: conc_dict_add +1 (same)", label);
        row(what, r.add, py_rate(py, name));
#endif
        snprintf(what, sizeof what, "%s keys: longest set, us (own)",
                 label);
        printf("| %-46s | %14.0f | %12s | %9s |\n", what,
               r.longest.own_us, "", "");
        snprintf(what, sizeof what, "%s keys: longest set, us (raw)", label);
        printf("| %-46s | %14.0f | %12s | %9s |\n", what,
               r.longest.raw_us, "", "");
        snprintf(name, sizeof name, "dict_set_%llu", (unsigned long long)n);
        fig(name, r.set);
        snprintf(name, sizeof name, "dict_get_%llu", (unsigned long long)n);
        fig(name, r.get);
        snprintf(name, sizeof name, "dict_update_%llu", (unsigned long long)n);
        fig(name, r.update);
        if (r.add > 0) {
            snprintf(name, sizeof name, "dict_add_%llu", (unsigned long long)n);
            fig(name, r.add);
        }
        snprintf(name, sizeof name, "dict_longest_set_own_us_%llu",
                 (unsigned long long)n);
        fig(name, r.longest.own_us);
        snprintf(name, sizeof name, "dict_longest_set_at_call_%llu",
                 (unsigned long long)n);
        fig(name, (double)r.longest.at_call);
        snprintf(name, sizeof name, "dict_longest_set_raw_us_%llu",
                 (unsigned long long)n);
        fig(name, r.longest.raw_us);
    }
    return 0;
}

/* ---- main ---------------------------------------------------------------- */

static int parse_sizes(const char *list, uint64_t *sizes, int cap)
{
    int n = 0;
    for (const char *p = list; *p != '\0' && n < cap;) {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p) {
            return -1;
        }
        if (v > 0) {
            sizes[n++] = v;
        }
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

/* Python's output: from --py FILE, or by running py_shared.py beside
 * this file.  A leading newline lets py_rate match names exactly. */
static void python_figures(const char *file, const char *sizes_arg,
                           char *py, size_t cap)
{
    FILE *f;
    py[0] = '\n';
    if (file != NULL) {
        f = fopen(file, "r");
    } else {
        char dir[4096], cmd[4600];
        snprintf(dir, sizeof dir, "%s", __FILE__);
        char *slash = strrchr(dir, '/');
        if (slash != NULL) {
            *slash = '\0';
        } else {
            snprintf(dir, sizeof dir, ".");
        }
        snprintf(cmd, sizeof cmd, "python3 '%s/py_shared.py' %g --sizes '%s' "
                 "2>&1", dir, scale, sizes_arg);
        f = popen(cmd, "r");
    }
    if (f == NULL) {
        py[1] = '\0';
        return;
    }
    size_t n = fread(py + 1, 1, cap - 2, f);
    py[n + 1] = '\0';
    if (file != NULL) {
        fclose(f);
    } else {
        pclose(f);
    }
}

int main(int argc, char **argv)
{
    const char *py_file = NULL, *sizes_arg = "1000,100000,1000000,5000000";
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--sizes=", 8) == 0) {
            sizes_arg = argv[i] + 8;
        } else if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc) {
            sizes_arg = argv[++i];
        } else if (strncmp(argv[i], "--py=", 5) == 0) {
            py_file = argv[i] + 5;
        } else if (strcmp(argv[i], "--py") == 0 && i + 1 < argc) {
            py_file = argv[++i];
        } else if (strcmp(argv[i], "--raw") == 0) {
            raw = true;
        } else {
            scale = atof(argv[i]);
        }
    }
    uint64_t sizes[16];
    int nsizes = parse_sizes(sizes_arg, sizes, 16);
    if (nsizes < 0 || scale <= 0) {
        fprintf(stderr, "usage: bench_shared [SCALE] [--sizes N,N,...] "
                        "[--py FILE] [--raw]\n");
        return 2;
    }
    bd = mmap(NULL, sizeof *bd, PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (bd == MAP_FAILED) {
        return 1;
    }
    /* Python first, while nothing of ours runs. */
    static char py[8192];
    python_figures(py_file, sizes_arg, py, sizeof py);

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
    fig("dict_setget_child", bd->child_rate);

    iters = (long)(1000000 * scale);
    double t = run_procs(2, update_same);
    if (t < 0 || read_u64("same") != 2 * (uint64_t)iters) {
        fprintf(stderr, "update same failed\n");
        return 1;
    }
    row("dict update, 2 procs, same key (d[k]+=1+Lock)", 2.0 * iters / t,
        py_rate(py, "manager_dict_update_same"));
    fig("dict_update_same", 2.0 * iters / t);
    t = run_procs(2, update_distinct);
    if (t < 0 || read_u64("k0") != (uint64_t)iters ||
        read_u64("k1") != (uint64_t)iters) {
        fprintf(stderr, "update distinct failed\n");
        return 1;
    }
    row("dict update, 2 procs, distinct keys", 2.0 * iters / t,
        py_rate(py, "manager_dict_update_distinct"));
    fig("dict_update_distinct", 2.0 * iters / t);

    iters = (long)(2000000 * scale);
    t = run_procs(2, value_incr);
    if (t < 0 || *(long *)conc_value_ptr(value) != 2 * iters) {
        fprintf(stderr, "value increments failed\n");
        return 1;
    }
    row("Value += 1 under its lock, 2 procs (mp.Value)", 2.0 * iters / t,
        py_rate(py, "mp_value_lock_incr"));
    fig("value_lock_incr", 2.0 * iters / t);
    conc_dict_free(dict);
    conc_value_free(value);

    if (nsizes > 0 && sizes_table(sizes, nsizes, py) != 0) {
        return 1;
    }
    if (py_rate(py, "manager_dict_setget_child") <= 0) {
        printf("(python3 baseline unavailable: %s)\n", py + 1);
    }
    if (raw) {
        printf("\n%s", raw_text);
    }
    return 0;
}
