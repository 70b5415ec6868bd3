/* bench_amqp.c - conc_queue on RabbitMQ against rabbitmq-c used directly,
 * all measured in this one run against one throwaway broker (loopback
 * TCP, tests/amqp_broker.sh), printed as one table with ratios.
 *
 * 64-byte messages, 1 producer process -> 1 consumer process, timed from
 * the moment both are connected and ready to the consumer's last message;
 * each figure the median of ROUNDS interleaved rounds:
 *   rmq plain        rabbitmq-c: publish without confirms to a transient
 *                    queue, consume with autoack (the fastest, unsafe)
 *   rmq confirm 1    durable queue, persistent messages, wait for the
 *                    confirm of each publish; manual ack of each
 *                    delivery, prefetch 64
 *   rmq confirm 64   the same, waiting for confirms every 64 publishes
 *                    and acking every 64th delivery with multiple
 *   conc alo         conc_queue on RabbitMQ, at least once (the default):
 *                    put / get, one message per call
 *   conc alo x64     put_many / get_many, 64 messages per call
 *   conc amo         .at_most_once: put / get
 *   conc amo x64     .at_most_once, put_many / get_many x64
 *
 *   bench_amqp              everything, about a minute (plus the boot)
 *   bench_amqp conc rmq     only the rows whose names contain a word
 * $CONC_AMQP_URL (amqp://.../vhost) uses a running broker instead.
 */
#define _GNU_SOURCE

#include <conc.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 3
#define MSG 64
#define BATCH 64

static char url[300];
static int port;
static char broker_dir[64];
static int argc_g;
static char **argv_g;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
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

/* ---- the broker --------------------------------------------------------------- */

static char script[1024];

static void stop_broker(void)
{
    if (broker_dir[0] == '\0') {
        return;
    }
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "bash '%s' stop '%s' >/dev/null 2>&1", script,
             broker_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_amqp: stopping the broker failed\n");
    }
    broker_dir[0] = '\0';
}

static int start_broker(void)
{
    const char *env = getenv("CONC_AMQP_URL");
    if (env != NULL) {
        snprintf(url, sizeof url, "%s", env);
    } else {
        char src[1024];
        snprintf(src, sizeof src, "%s", __FILE__);
        snprintf(script, sizeof script, "%s/../tests/amqp_broker.sh",
                 dirname(src));
        snprintf(broker_dir, sizeof broker_dir, "/tmp/conc-bench-amqp-XXXXXX");
        if (mkdtemp(broker_dir) == NULL) {
            broker_dir[0] = '\0';
            return -1;
        }
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "bash '%s' start '%s' 60", script,
                 broker_dir);
        FILE *p = popen(cmd, "r");
        if (p == NULL || fgets(url, sizeof url, p) == NULL) {
            if (p != NULL) {
                pclose(p);
            }
            return -1;
        }
        if (pclose(p) != 0) {
            return -1;
        }
        url[strcspn(url, "\n")] = '\0';
    }
    const char *c = strrchr(url, ':');
    port = c != NULL ? atoi(c + 1) : 0;
    return port > 0 ? 0 : -1;
}

/* ---- rabbitmq-c directly ------------------------------------------------------------ */

static amqp_connection_state_t rmq_open(void)
{
    amqp_connection_state_t st = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(st);
    if (s == NULL || amqp_socket_open(s, "127.0.0.1", port) != 0) {
        return NULL;
    }
    amqp_rpc_reply_t r = amqp_login(st, "/", 0, 131072, 0,
                                    AMQP_SASL_METHOD_PLAIN, "guest",
                                    "guest");
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        return NULL;
    }
    amqp_channel_open(st, 1);
    if (amqp_get_rpc_reply(st).reply_type != AMQP_RESPONSE_NORMAL) {
        return NULL;
    }
    return st;
}

typedef enum {
    K_PLAIN,
    K_CONF1,
    K_CONF64,
    K_ALO,
    K_ALO_B,
    K_AMO,
    K_AMO_B,
    K_N
} kind;

static const char *kind_name[K_N] = {
    "rmq plain (no confirms, autoack)",
    "rmq confirm 1 + ack each",
    "rmq confirm 64 + ack 64",
    "conc alo put/get",
    "conc alo put_many/get_many x64",
    "conc amo put/get",
    "conc amo put_many/get_many x64",
};

typedef struct shared {
    atomic_int ready;
    atomic_int go;
    double t_end;
    long got;
} shared;

static shared *sh;
static char qname[64];

static void wait_go(void)
{
    atomic_fetch_add(&sh->ready, 1);
    while (!atomic_load(&sh->go)) {
        usleep(100);
    }
}

static int rmq_declare(amqp_connection_state_t st, kind k)
{
    bool durable = k != K_PLAIN;
    amqp_queue_declare(st, 1, amqp_cstring_bytes(qname), 0, durable, 0, 0,
                       amqp_empty_table);
    return amqp_get_rpc_reply(st).reply_type == AMQP_RESPONSE_NORMAL ? 0
                                                                      : -1;
}

/* Waits for confirms up to seq. */
static int wait_confirms(amqp_connection_state_t st, uint64_t seq)
{
    for (;;) {
        amqp_frame_t f;
        if (amqp_simple_wait_frame(st, &f) != AMQP_STATUS_OK) {
            return -1;
        }
        if (f.frame_type == AMQP_FRAME_METHOD &&
            f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            if (a->delivery_tag >= seq) {
                return 0;
            }
        } else if (f.frame_type == AMQP_FRAME_METHOD) {
            return -1;
        }
    }
}

static int rmq_produce(kind k, long n)
{
    amqp_connection_state_t st = rmq_open();
    if (st == NULL || rmq_declare(st, k) != 0) {
        return 1;
    }
    if (k != K_PLAIN) {
        amqp_confirm_select(st, 1);
        if (amqp_get_rpc_reply(st).reply_type != AMQP_RESPONSE_NORMAL) {
            return 1;
        }
    }
    char msg[MSG];
    memset(msg, 'x', sizeof msg);
    amqp_basic_properties_t p = { 0 };
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.delivery_mode = k == K_PLAIN ? 1 : 2;
    wait_go();
    long every = k == K_CONF1 ? 1 : BATCH;
    for (long i = 0; i <= n; i++) {
        msg[0] = i == n ? 0 : 1;
        if (amqp_basic_publish(st, 1, amqp_empty_bytes,
                               amqp_cstring_bytes(qname), 0, 0, &p,
                               (amqp_bytes_t){ MSG, msg }) != 0) {
            return 1;
        }
        if (k != K_PLAIN && ((i + 1) % every == 0 || i == n)) {
            if (wait_confirms(st, (uint64_t)i + 1) != 0) {
                return 1;
            }
        }
    }
    amqp_connection_close(st, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(st);
    return 0;
}

static int rmq_consume(kind k)
{
    amqp_connection_state_t st = rmq_open();
    if (st == NULL || rmq_declare(st, k) != 0) {
        return 1;
    }
    bool autoack = k == K_PLAIN;
    if (!autoack) {
        amqp_basic_qos(st, 1, 0, BATCH, 0);
    }
    amqp_basic_consume(st, 1, amqp_cstring_bytes(qname), amqp_empty_bytes,
                       0, autoack, 0, amqp_empty_table);
    if (amqp_get_rpc_reply(st).reply_type != AMQP_RESPONSE_NORMAL) {
        return 1;
    }
    wait_go();
    long got = 0;
    for (;;) {
        amqp_envelope_t e;
        amqp_maybe_release_buffers(st);
        amqp_rpc_reply_t r = amqp_consume_message(st, &e, NULL, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL ||
            e.message.body.len != MSG) {
            return 1;
        }
        bool end = ((char *)e.message.body.bytes)[0] == 0;
        if (!autoack && (k == K_CONF1 || end || (got + 1) % BATCH == 0)) {
            amqp_basic_ack(st, 1, e.delivery_tag, k != K_CONF1);
        }
        amqp_destroy_envelope(&e);
        if (end) {
            break;
        }
        got++;
        sh->got = got;
    }
    sh->t_end = now();
    sh->got = got;
    amqp_connection_close(st, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(st);
    return 0;
}

/* ---- conc ---------------------------------------------------------------------- */

static int open_conc(conc_queue **q, bool amo)
{
    int err = conc_queue_new(q, &(conc_queue_opts){ .url = url,
                                                    .name = qname,
                                                    .at_most_once = amo });
    if (err != 0) {
        fprintf(stderr, "bench_amqp: %s (%s)\n", conc_strerror(err),
                conc_errdetail());
    }
    return err;
}

static int conc_produce(kind k, long n)
{
    conc_queue *q = NULL;
    if (open_conc(&q, k == K_AMO || k == K_AMO_B) != 0) {
        return 1;
    }
    wait_go();
    char msg[MSG];
    memset(msg, 1, sizeof msg);
    if (k == K_ALO || k == K_AMO) {
        for (long i = 0; i < n; i++) {
            if (conc_queue_put(q, msg, sizeof msg, 10.0) != 0) {
                return 1;
            }
        }
    } else {
        conc_msg m[BATCH];
        for (int j = 0; j < BATCH; j++) {
            m[j] = (conc_msg){ msg, MSG };
        }
        for (long i = 0; i < n; i += BATCH) {
            size_t k2 = (size_t)(n - i < BATCH ? n - i : BATCH), done = 0;
            if (conc_queue_put_many(q, m, k2, &done, 10.0) != 0) {
                return 1;
            }
        }
    }
    char end[MSG] = { 0 };
    if (conc_queue_put(q, end, sizeof end, 10.0) != 0) {
        return 1;
    }
    conc_queue_free(q);
    return 0;
}

static int conc_consume(kind k)
{
    conc_queue *q = NULL;
    if (open_conc(&q, k == K_AMO || k == K_AMO_B) != 0) {
        return 1;
    }
    wait_go();
    long got = 0;
    conc_msg m[BATCH];
    size_t want = k == K_ALO_B || k == K_AMO_B ? BATCH : 1;
    bool end = false;
    while (!end) {
        size_t n = 0;
        if (conc_queue_get_many(q, m, want, &n, 10.0) != 0) {
            fprintf(stderr, "bench_amqp: get: %s\n", conc_errdetail());
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
        sh->got = got; /* so a failed round reports how far it came */
    }
    sh->t_end = now();
    sh->got = got;
    conc_queue_free(q);
    return 0;
}

static double run(kind k, long n, int round)
{
    snprintf(qname, sizeof qname, "bench-%d-%d-%d", (int)getpid(), (int)k,
             round);
    memset(sh, 0, sizeof *sh);
    fflush(stdout);
    bool rmq = k <= K_CONF64;
    pid_t c = fork();
    if (c == 0) {
        _exit(rmq ? rmq_consume(k) : conc_consume(k));
    }
    /* The consumer declares first (the baselines publish to the default
     * exchange, which drops what no queue takes). */
    while (atomic_load(&sh->ready) < 1) {
        usleep(100);
    }
    pid_t p = fork();
    if (p == 0) {
        _exit(rmq ? rmq_produce(k, n) : conc_produce(k, n));
    }
    while (atomic_load(&sh->ready) < 2) {
        usleep(100);
    }
    double t0 = now();
    atomic_store(&sh->go, 1);
    int sp = 0, sc = 0;
    waitpid(p, &sp, 0);
    waitpid(c, &sc, 0);
    if (!WIFEXITED(sp) || WEXITSTATUS(sp) != 0 || !WIFEXITED(sc) ||
        WEXITSTATUS(sc) != 0 || sh->got != n) {
        fprintf(stderr, "bench_amqp: %s failed (the consumer got %ld of "
                "%ld; producer exit %d, consumer exit %d)\n", kind_name[k],
                sh->got, n, WIFEXITED(sp) ? WEXITSTATUS(sp) : -1,
                WIFEXITED(sc) ? WEXITSTATUS(sc) : -1);
        return 0;
    }
    return (double)n / (sh->t_end - t0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void goal(const char *what, double v, double base, double want)
{
    if (v <= 0 || base <= 0) {
        printf("  %-46s    n/a\n", what);
        return;
    }
    double r = v / base;
    printf("  %-46s %7.2f  %s\n", what, r, r >= want ? "met" : "MISSED");
}

int main(int argc, char **argv)
{
    argc_g = argc;
    argv_g = argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || start_broker() != 0) {
        printf("bench_amqp: skipped: could not start a RabbitMQ broker "
               "(scripts/deps.sh installs rabbitmq-server and amqp-tools)\n");
        stop_broker();
        return 0;
    }
    atexit(stop_broker);
    static const long sizes[K_N] = { 200000, 2000, 40000, 2000,
                                     60000,  60000, 200000 };
    double fig[K_N][ROUNDS] = { { 0 } };
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < K_N; k++) {
            if (wanted(kind_name[k])) {
                fig[k][r] = run((kind)k, sizes[k], r);
            }
        }
    }
    double med[K_N];
    for (int k = 0; k < K_N; k++) {
        qsort(fig[k], ROUNDS, sizeof fig[k][0], cmp_double);
        med[k] = fig[k][ROUNDS / 2];
    }
    double plain = med[K_PLAIN], c1 = med[K_CONF1], c64 = med[K_CONF64];
    printf("\n64 B messages, 1 producer process -> 1 consumer process, "
           "loopback TCP; median of %d interleaved rounds\n", ROUNDS);
    printf("%-36s %12s %9s %9s %10s\n", "system", "msgs/s", "x plain",
           "x conf 1", "x conf 64");
    for (int k = 0; k < K_N; k++) {
        printf("%-36s %12.0f %9.3f %9.2f %10.2f\n", kind_name[k], med[k],
               plain > 0 ? med[k] / plain : 0, c1 > 0 ? med[k] / c1 : 0,
               c64 > 0 ? med[k] / c64 : 0);
    }
    printf("\ngoals (ratios in this run; n/a: a row not measured):\n");
    goal("alo x64 >= 10x rmq confirm 1", med[K_ALO_B], c1, 10);
    goal("amo x64 >= 0.8x rmq plain", med[K_AMO_B], plain, 0.8);
    return 0;
}
