/* bench_redis.c - conc_queue, conc_lock and conc_dict on Redis against the
 * ways people move messages through Redis today, all measured in this
 * one run against one throwaway redis-server (loopback TCP), printed as
 * one table with ratios.
 *
 * Throughput, 64-byte messages, 1 producer process -> 1 consumer process,
 * timed from the moment both are connected and ready to the consumer's
 * last message (each figure the median of ROUNDS interleaved rounds):
 *   naive         LPUSH per message, BRPOP per message: the naive client
 *                 (at most once: a consumer killed after the pop loses it)
 *   reliable      LPUSH; BLMOVE into a processing list, then LREM: the
 *                 naive reliable list (two round trips per message)
 *   conc alo      conc_queue on Redis, at least once (the default):
 *                 put / get, one message per call
 *   conc amo      the same with .at_most_once
 *   conc alo x64  put_many / get_many, 64 messages per call
 *   conc amo x64  the same, at most once
 *   redis-benchmark -c 1 -P 64 -t lpush: Redis's own figure for one
 *                 client pipelining 64 LPUSHes (no consumer at all)
 *   Manager       Python's queue.Queue served by a multiprocessing
 *                 BaseManager over TCP (bench/py_manager_queue.py)
 * The naive clients speak RESP over a plain blocking socket (one write,
 * one read per command), as a minimal client library would.
 * Round trips: an uncontended conc_lock acquire+release and an
 * uncontended conc_dict_update, per second and in round trips per call
 * (libconc counts its exchanges; the goal is at most 2 each).
 *
 *   bench_redis            everything, about a minute
 *   bench_redis naive conc only the rows whose names contain a word
 */
#define _GNU_SOURCE

#include <conc.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 3
#define MSG 64
#define BATCH 64

/* Round trips made by libconc (src/net.c): for the round-trip rows. */
uint64_t conc__net_round_trips(void);

static int port;
static char url[128];
static int argc_g;
static char **argv_g;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool wanted(const char *name)
{
    if (argc_g < 2) {
        return true;
    }
    for (int i = 1; i < argc_g; i++) {
        if (strstr(name, argv_g[i]) != NULL) {
            return true;
        }
    }
    return false;
}

/* ---- a minimal RESP client: the naive baselines -------------------------- */

typedef struct rc {
    int fd;
    char buf[65536];
    size_t have, at;
} rc;

static int rc_open(rc *c)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return connect(c->fd, (struct sockaddr *)&a, sizeof a);
}

static int rc_byte(rc *c)
{
    if (c->at == c->have) {
        ssize_t n = read(c->fd, c->buf, sizeof c->buf);
        if (n <= 0) {
            return -1;
        }
        c->have = (size_t)n;
        c->at = 0;
    }
    return (unsigned char)c->buf[c->at++];
}

/* Reads one reply; a bulk string's bytes go to out (cap), *len set.
 * Returns the type byte, or -1. */
static int rc_reply(rc *c, char *out, size_t cap, size_t *len)
{
    char line[64];
    size_t n = 0;
    int ch;
    while ((ch = rc_byte(c)) >= 0 && ch != '\n') {
        if (ch != '\r' && n + 1 < sizeof line) {
            line[n++] = (char)ch;
        }
    }
    if (ch < 0 || n == 0) {
        return -1;
    }
    line[n] = '\0';
    long k = atol(line + 1);
    if (line[0] == '*') {
        int t = -1;
        for (long i = 0; i < k; i++) {
            t = rc_reply(c, out, cap, len);
        }
        return k <= 0 ? '*' : t;
    }
    if (line[0] == '$' && k >= 0) {
        for (long i = 0; i < k + 2; i++) {
            ch = rc_byte(c);
            if (ch < 0) {
                return -1;
            }
            if (i < k && (size_t)i < cap) {
                out[i] = (char)ch;
            }
        }
        *len = (size_t)k;
    }
    return line[0];
}

/* One command (arguments: strings, or a 64-byte message for "%m"). */
static int rc_cmd(rc *c, int argc, const char **argv, const size_t *lens)
{
    char b[1024];
    int o = snprintf(b, sizeof b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        o += snprintf(b + o, sizeof b - (size_t)o, "$%zu\r\n", lens[i]);
        memcpy(b + o, argv[i], lens[i]);
        o += (int)lens[i];
        memcpy(b + o, "\r\n", 2);
        o += 2;
    }
    return write(c->fd, b, (size_t)o) == o ? 0 : -1;
}

static int rc_call(rc *c, char *out, size_t cap, size_t *len, int argc, ...)
{
    const char *argv[8];
    size_t lens[8];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) {
        argv[i] = va_arg(ap, const char *);
        lens[i] = va_arg(ap, size_t);
    }
    va_end(ap);
    if (rc_cmd(c, argc, argv, lens) != 0) {
        return -1;
    }
    return rc_reply(c, out, cap, len);
}
#define S(x) (x), strlen(x)

/* ---- the server -------------------------------------------------------------- */

static pid_t server_pid;
static char server_dir[64];

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        server_pid = 0;
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", server_dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "bench_redis: could not remove %s\n", server_dir);
        }
    }
}

static int start_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &al);
    port = ntohs(a.sin_port);
    close(fd);
    snprintf(server_dir, sizeof server_dir, "/tmp/bench-redis-XXXXXX");
    if (mkdtemp(server_dir) == NULL) {
        return -1;
    }
    char ps[16], log[128];
    snprintf(ps, sizeof ps, "%d", port);
    snprintf(log, sizeof log, "%s/log", server_dir);
    server_pid = fork();
    if (server_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execlp("redis-server", "redis-server", "--bind", "127.0.0.1",
               "--port", ps, "--save", "", "--appendonly", "no", "--dir",
               server_dir, "--logfile", log, "--daemonize", "no",
               (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) {
        rc c;
        if (rc_open(&c) == 0) {
            char out[16];
            size_t len = 0;
            int t = rc_call(&c, out, sizeof out, &len, 1, S("PING"));
            close(c.fd);
            if (t == '+') {
                snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
                return 0;
            }
        } else {
            close(c.fd);
        }
        usleep(10000);
    }
    return -1;
}

static void flushall(void)
{
    rc c;
    if (rc_open(&c) == 0) {
        char out[16];
        size_t len = 0;
        rc_call(&c, out, sizeof out, &len, 1, S("FLUSHALL"));
    }
    close(c.fd);
}

/* ---- one producer process -> one consumer process --------------------------- */

typedef enum {
    K_NAIVE,
    K_RELIABLE,
    K_ALO,
    K_AMO,
    K_ALO_B,
    K_AMO_B,
    K_N
} kind;

static const char *kind_name[K_N] = {
    "naive LPUSH/BRPOP, 1 cmd per msg",
    "naive reliable BLMOVE + LREM",
    "conc alo put/get",
    "conc amo put/get",
    "conc alo put_many/get_many x64",
    "conc amo put_many/get_many x64",
};

typedef struct shared {
    atomic_int ready;
    atomic_int go;
    double t_end;
    long got;
    int failed;
} shared;

static shared *sh;
static char qname[64];

static int open_conc(conc_queue **q, bool amo)
{
    int err = conc_queue_new(q, &(conc_queue_opts){ .url = url,
                                                    .name = qname,
                                                    .at_most_once = amo });
    if (err != 0) {
        fprintf(stderr, "bench_redis: %s (%s)\n", conc_strerror(err),
                conc_errdetail());
    }
    return err;
}

static void wait_go(void)
{
    atomic_fetch_add(&sh->ready, 1);
    while (!atomic_load(&sh->go)) {
        usleep(100);
    }
}

static int produce(kind k, long n)
{
    char msg[MSG];
    memset(msg, 'x', sizeof msg);
    if (k == K_NAIVE || k == K_RELIABLE) {
        rc c;
        if (rc_open(&c) != 0) {
            return 1;
        }
        wait_go();
        for (long i = 0; i <= n; i++) {
            msg[0] = i == n ? 0 : 1; /* 0: the end */
            char out[16];
            size_t len = 0;
            if (rc_call(&c, out, sizeof out, &len, 3, S("LPUSH"), S(qname),
                        msg, sizeof msg) != ':') {
                return 1;
            }
        }
        return 0;
    }
    conc_queue *q = NULL;
    if (open_conc(&q, k == K_AMO || k == K_AMO_B) != 0) {
        return 1;
    }
    wait_go();
    if (k == K_ALO || k == K_AMO) {
        for (long i = 0; i <= n; i++) {
            msg[0] = i == n ? 0 : 1;
            if (conc_queue_put(q, msg, sizeof msg, 10.0) != 0) {
                return 1;
            }
        }
    } else {
        static char bytes[BATCH][MSG];
        conc_msg m[BATCH];
        for (int j = 0; j < BATCH; j++) {
            memset(bytes[j], 1, MSG);
            m[j] = (conc_msg){ bytes[j], MSG };
        }
        for (long i = 0; i < n; i += BATCH) {
            size_t k2 = (size_t)(n - i < BATCH ? n - i : BATCH), done = 0;
            if (conc_queue_put_many(q, m, k2, &done, 10.0) != 0) {
                return 1;
            }
        }
        char end[MSG] = { 0 };
        if (conc_queue_put(q, end, sizeof end, 10.0) != 0) {
            return 1;
        }
    }
    conc_queue_free(q);
    return 0;
}

static int consume(kind k)
{
    long got = 0;
    if (k == K_NAIVE || k == K_RELIABLE) {
        rc c;
        if (rc_open(&c) != 0) {
            return 1;
        }
        char pl[80];
        snprintf(pl, sizeof pl, "%s:p", qname);
        wait_go();
        for (;;) {
            char msg[MSG];
            size_t len = 0;
            int t = k == K_NAIVE
                        ? rc_call(&c, msg, sizeof msg, &len, 3, S("BRPOP"),
                                  S(qname), S("0"))
                        : rc_call(&c, msg, sizeof msg, &len, 6, S("BLMOVE"),
                                  S(qname), S(pl), S("RIGHT"), S("LEFT"),
                                  S("0"));
            if (t != '$' || len != MSG) {
                return 1;
            }
            if (k == K_RELIABLE) {
                char out[16];
                size_t l2 = 0;
                if (rc_call(&c, out, sizeof out, &l2, 4, S("LREM"), S(pl),
                            S("1"), msg, sizeof msg) != ':') {
                    return 1;
                }
            }
            if (msg[0] == 0) {
                break;
            }
            got++;
        }
    } else {
        conc_queue *q = NULL;
        if (open_conc(&q, k == K_AMO || k == K_AMO_B) != 0) {
            return 1;
        }
        wait_go();
        conc_msg m[BATCH];
        size_t want = k == K_ALO_B || k == K_AMO_B ? BATCH : 1;
        bool end = false;
        while (!end) {
            size_t n = 0;
            if (conc_queue_get_many(q, m, want, &n, 10.0) != 0) {
                return 1;
            }
            for (size_t i = 0; i < n; i++) {
                if (m[i].len != MSG) {
                    return 1;
                }
                end = end || ((char *)m[i].data)[0] == 0;
                got += ((char *)m[i].data)[0] != 0;
                conc_msg_free(&m[i]);
            }
        }
        conc_queue_free(q);
    }
    sh->t_end = now();
    sh->got = got;
    return 0;
}

/* msgs/s for one run of kind k with n messages; 0 on failure. */
static double run(kind k, long n)
{
    flushall();
    snprintf(qname, sizeof qname, "bench%d", (int)k);
    memset(sh, 0, sizeof *sh);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        _exit(consume(k));
    }
    pid_t p = fork();
    if (p == 0) {
        _exit(produce(k, n));
    }
    double t0 = 0;
    while (atomic_load(&sh->ready) < 2) {
        usleep(100);
    }
    t0 = now();
    atomic_store(&sh->go, 1);
    int sp = 0, sc = 0;
    waitpid(p, &sp, 0);
    waitpid(c, &sc, 0);
    if (!WIFEXITED(sp) || WEXITSTATUS(sp) != 0 || !WIFEXITED(sc) ||
        WEXITSTATUS(sc) != 0 || sh->got != n) {
        fprintf(stderr, "bench_redis: %s failed (got %ld of %ld)\n",
                kind_name[k], sh->got, n);
        return 0;
    }
    return (double)n / (sh->t_end - t0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- redis-benchmark and Python -------------------------------------------- */

static double redis_benchmark(void)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "redis-benchmark -p %d -c 1 -P 64 -t lpush -n 300000 --csv "
             "2>/dev/null",
             port);
    FILE *f = popen(cmd, "r");
    if (f == NULL) {
        return 0;
    }
    char line[512];
    double v = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "\"LPUSH\"", 7) == 0) {
            v = atof(line + 9);
        }
    }
    pclose(f);
    return v;
}

static double manager_queue(void)
{
    char cmd[2048];
    const char *here = __FILE__;
    const char *slash = strrchr(here, '/');
    if (slash != NULL) {
        snprintf(cmd, sizeof cmd, "python3 '%.*s/py_manager_queue.py'",
                 (int)(slash - here), here);
    } else {
        snprintf(cmd, sizeof cmd, "python3 py_manager_queue.py");
    }
    fflush(stdout);
    FILE *f = popen(cmd, "r");
    if (f == NULL) {
        return 0;
    }
    char line[256];
    double v = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        double x = 0;
        if (sscanf(line, "manager_queue 64 1 1 %lf", &x) == 1) {
            v = x;
        }
    }
    pclose(f);
    return v;
}

/* ---- lock and dict round trips ------------------------------------------------ */

static int incr(const void *old, size_t oldlen, bool found, conc_buf *out,
                void *arg)
{
    (void)arg;
    long v = 0;
    if (found && oldlen < 20) {
        char t[24];
        memcpy(t, old, oldlen);
        t[oldlen] = '\0';
        v = atol(t);
    }
    char t[24];
    int k = snprintf(t, sizeof t, "%ld", v + 1);
    return conc_buf_append(out, t, (size_t)k);
}

/* ops/s and round trips per op, for the lock (which 0) or the dict. */
static void round_trips(int which, double *rate, double *trips)
{
    conc_lock *l = NULL;
    conc_dict *d = NULL;
    int err = which == 0
                  ? conc_lock_new(&l, &(conc_lock_opts){ .url = url,
                                                         .name = "bl" })
                  : conc_dict_new(&d, &(conc_dict_opts){ .url = url,
                                                         .name = "bd" });
    *rate = 0;
    *trips = 0;
    if (err != 0) {
        return;
    }
    long n = 0;
    uint64_t t0rt = 0;
    double t0 = 0;
    for (long i = 0;; i++) {
        if (i == 100) { /* warmed up: the connection is made */
            t0rt = conc__net_round_trips();
            t0 = now();
            n = 0;
        }
        if (which == 0) {
            err = conc_lock_acquire(l, 5.0);
            err = err == 0 ? conc_lock_release(l) : err;
        } else {
            err = conc_dict_update(d, "k", 1, incr, NULL);
        }
        if (err != 0) {
            return;
        }
        n++;
        if (i > 100 && (i & 63) == 0 && now() - t0 > 0.5) {
            break;
        }
    }
    *rate = (double)n / (now() - t0);
    *trips = (double)(conc__net_round_trips() - t0rt) / (double)n;
    conc_lock_free(l);
    conc_dict_free(d);
}

/* One goal line: v / base against want (at least, or at most). */
static void goal(const char *what, double v, double base, double want,
                 bool at_least)
{
    if (v <= 0 || base <= 0) {
        printf("  %-40s    n/a\n", what);
        return;
    }
    double r = v / base;
    bool met = at_least ? r >= want : r <= want;
    printf("  %-40s %7.2f  %s\n", what, r, met ? "met" : "MISSED");
}

/* ---- main ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    argc_g = argc;
    argv_g = argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || start_server() != 0) {
        printf("bench_redis: skipped: could not start redis-server "
               "(scripts/deps.sh installs it)\n");
        stop_server();
        return 0;
    }
    atexit(stop_server);
    conc_queue *probe = NULL;
    if (conc_queue_new(&probe, &(conc_queue_opts){ .url = url,
                                                    .name = "probe" }) != 0) {
        printf("bench_redis: skipped: %s\n", conc_errdetail());
        return 0;
    }
    conc_queue_free(probe);
    static const long sizes[K_N] = { 6000, 5000, 6000, 6000, 150000, 200000 };
    double fig[K_N][ROUNDS] = { { 0 } };
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < K_N; k++) {
            if (wanted(kind_name[k])) {
                fig[k][r] = run((kind)k, sizes[k]);
            }
        }
    }
    double med[K_N];
    for (int k = 0; k < K_N; k++) {
        qsort(fig[k], ROUNDS, sizeof fig[k][0], cmp_double);
        med[k] = fig[k][ROUNDS / 2];
    }
    double p64 = wanted("redis-benchmark") ? redis_benchmark() : 0;
    double mgr = wanted("Manager") ? manager_queue() : 0;
    double lrate = 0, ltrips = 0, drate = 0, dtrips = 0;
    if (wanted("lock")) {
        round_trips(0, &lrate, &ltrips);
    }
    if (wanted("dict")) {
        round_trips(1, &drate, &dtrips);
    }
    double rel = med[K_RELIABLE];
    printf("\n64 B messages, 1 producer process -> 1 consumer process, "
           "loopback TCP; median of %d rounds\n", ROUNDS);
    printf("%-36s %12s %10s %9s %9s\n", "system", "msgs/s", "x reliable",
           "x P64", "x Manager");
    for (int k = 0; k < K_N; k++) {
        printf("%-36s %12.0f %10.2f %9.3f %9.1f\n", kind_name[k], med[k],
               rel > 0 ? med[k] / rel : 0, p64 > 0 ? med[k] / p64 : 0,
               mgr > 0 ? med[k] / mgr : 0);
    }
    printf("%-36s %12.0f %10.2f %9.3f %9.1f\n",
           "redis-benchmark -c 1 -P 64 lpush", p64, rel > 0 ? p64 / rel : 0,
           1.0, mgr > 0 ? p64 / mgr : 0);
    printf("%-36s %12.0f %10.2f %9.3f %9.1f\n", "Python Manager queue (TCP)",
           mgr, rel > 0 ? mgr / rel : 0, p64 > 0 ? mgr / p64 : 0, 1.0);
    printf("\n%-36s %12s %14s\n", "uncontended", "calls/s", "round trips");
    printf("%-36s %12.0f %14.2f\n", "conc_lock acquire+release", lrate,
           ltrips);
    printf("%-36s %12.0f %14.2f\n", "conc_dict_update", drate, dtrips);
    printf("\ngoals (ratios in this run; n/a: a row not measured):\n");
    goal("alo put/get >= 1.5x reliable", med[K_ALO], rel, 1.5, true);
    goal("alo x64 >= 20x reliable", med[K_ALO_B], rel, 20, true);
    goal("alo x64 >= 0.35x redis-benchmark P64", med[K_ALO_B], p64, 0.35,
         true);
    goal("amo x64 >= 0.8x redis-benchmark P64", med[K_AMO_B], p64, 0.8,
         true);
    goal("amo x64 >= 30x Manager queue", med[K_AMO_B], mgr, 30, true);
    goal("lock acquire+release <= 2 round trips", ltrips, 1, 2, false);
    goal("dict_update <= 2 round trips", dtrips, 1, 2, false);
    return 0;
}
