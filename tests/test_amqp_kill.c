/* test_amqp_kill.c - conc_queue on RabbitMQ when things die: consumers
 * SIGKILLed at random instants lose nothing (duplicates at most one per
 * kill); a frozen broker (SIGSTOP) makes every call return in time with
 * CONC_ETIMEDOUT (CONC_EEMPTY for a get: nothing came), and the calls
 * after SIGCONT work; a broker restarted mid-stream is reconnected to by
 * the next call, and every put that returned 0 is still there.
 */
#include "amqp_server.h"

#include <stdatomic.h>
#include <sys/mman.h>

#define NEED_AMQP()                                                          \
    do {                                                                     \
        if (!conc__net_backend_built("amqp")) {                              \
            return;                                                          \
        }                                                                    \
    } while (0)

enum { KN = 1200, KCONS = 3 };

typedef struct shared {
    _Atomic int seen[KN];
    _Atomic int done;
} shared;

typedef struct cons_arg {
    const char *url;
    shared *sh;
} cons_arg;

static int kill_consumer(void *p)
{
    cons_arg *c = p;
    conc_queue *q = NULL;
    if (conc_queue_open(&q, c->url) != 0) {
        return 10;
    }
    for (;;) {
        conc_msg m;
        int err = conc_queue_get(q, &m, 0.5);
        if (err == CONC_EEMPTY) {
            if (atomic_load(&c->sh->done)) {
                conc_queue_free(q);
                return 0;
            }
            continue;
        }
        if (err != 0 || m.len != sizeof(int)) {
            return 11;
        }
        int v;
        memcpy(&v, m.data, sizeof v);
        conc_msg_free(&m);
        if (v < 0 || v >= KN) {
            return 12;
        }
        /* Some work, during which a kill may land. */
        th_sleep(0.003);
        atomic_fetch_add(&c->sh->seen[v], 1);
        if (conc_queue_task_done(q) != 0) {
            return 13;
        }
    }
}

static uint32_t rnd(void)
{
    uint32_t r = 0;
    FILE *f = fopen("/dev/urandom", "r");
    if (f == NULL || fread(&r, sizeof r, 1, f) != 1) {
        th_fail(__FILE__, __LINE__, "/dev/urandom");
    }
    fclose(f);
    return r;
}

TEST_T(amqp_consumers_killed_at_random, 120)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64], url[512];
    th_amqp_name(name, sizeof name, "rkill");
    th_amqp_qurl(&a, name, url, sizeof url);
    conc_queue *q = NULL;
    conc_queue_opts o = { .url = a.url, .name = name };
    CHECK_OK(conc_queue_new(&q, &o));
    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    cons_arg ca = { url, sh };
    pid_t kids[KCONS];
    for (int i = 0; i < KCONS; i++) {
        kids[i] = th_fork(kill_consumer, &ca);
    }
    static int v[KN];
    static conc_msg in[KN];
    for (int i = 0; i < KN; i++) {
        v[i] = i;
        in[i] = (conc_msg){ &v[i], sizeof v[i] };
    }
    size_t done = 0;
    CHECK_OK(conc_queue_put_many(q, in, KN, &done, 20.0));
    int kills = 0;
    double end = th_now() + 60;
    for (;;) {
        int total = 0;
        for (int i = 0; i < KN; i++) {
            total += atomic_load(&sh->seen[i]) > 0;
        }
        if (total == KN || th_now() > end) {
            break;
        }
        th_sleep((rnd() % 150) / 1000.0 + 0.02);
        if (kills < 12) {
            int k = (int)(rnd() % KCONS);
            kill(kids[k], SIGKILL);
            int st = th_wait(kids[k], 10);
            CHECK(WIFSIGNALED(st) || (WIFEXITED(st) &&
                                      WEXITSTATUS(st) == 0));
            kills++;
            kids[k] = th_fork(kill_consumer, &ca);
        }
    }
    atomic_store(&sh->done, 1);
    for (int i = 0; i < KCONS; i++) {
        int st = th_wait(kids[i], 20);
        CHECK(WIFEXITED(st));
        CHECK_EQ(WEXITSTATUS(st), 0);
    }
    int dups = 0;
    for (int i = 0; i < KN; i++) {
        int s = atomic_load(&sh->seen[i]);
        if (s == 0) {
            th_fail(__FILE__, __LINE__, "message %d lost (%d kills)", i,
                    kills);
        }
        dups += s - 1;
    }
    CHECK(kills >= 3);
    CHECK(dups <= kills);
    CHECK_EQ(conc_queue_qsize(q), 0);
    munmap(sh, sizeof *sh);
    conc_queue_free(q);
}

TEST_T(amqp_frozen_broker_bounded, 150)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64], url[512];
    th_amqp_name(name, sizeof name, "frozen");
    th_amqp_qurl(&a, name, url, sizeof url);
    conc_queue *q = NULL;
    conc_queue_opts o = { .url = a.url, .name = name,
                          .net_timeout = CONC_TIMEOUT(1.0) };
    CHECK_OK(conc_queue_new(&q, &o));
    CHECK_OK(conc_queue_put(q, "before", 6, 5.0));
    /* Everything measured while frozen, checked after the thaw: a failed
     * check must never leave the shared broker stopped. */
    int err[4];
    double dt[4];
    size_t n = 99;
    conc_queue *q2 = NULL;
    conc_msg m;
    th_amqp_stop(&a);
    double t0 = th_now();
    err[0] = conc_queue_put(q, "x", 1, 1.0);
    dt[0] = th_now() - t0;
    t0 = th_now();
    err[1] = conc_queue_get(q, &m, 1.0);
    dt[1] = th_now() - t0;
    t0 = th_now();
    n = conc_queue_qsize(q);
    dt[2] = th_now() - t0;
    t0 = th_now();
    err[3] = conc_queue_open(&q2, url);
    dt[3] = th_now() - t0;
    char detail[256];
    snprintf(detail, sizeof detail, "%s", conc_errdetail());
    th_amqp_cont(&a);
    CHECK(err[0] == CONC_ETIMEDOUT || err[0] == CONC_ENET);
    CHECK(dt[0] < 4.0);
    CHECK(err[1] == CONC_EEMPTY || err[1] == CONC_ETIMEDOUT);
    CHECK(dt[1] < 4.0);
    CHECK_EQ(n, 0);
    CHECK(dt[2] < 4.0);
    CHECK_ERR(err[3], CONC_ETIMEDOUT);
    CHECK(q2 == NULL);
    CHECK(strstr(detail, "conc_queue_open") != NULL);
    /* open takes no options: bounded by the default net_timeout, 10 s. */
    CHECK(dt[3] > 9.0 && dt[3] < 14.0);
    /* Thawed: the next calls reconnect and go on; "before" was never
     * lost, "x" may have landed (a put that failed may have).  A broker
     * just thawed on a loaded machine may take seconds to answer. */
    int got_before = 0;
    for (int i = 0; i < 3; i++) {
        int e = conc_queue_get(q, &m, 20.0);
        if (e != 0) {
            break;
        }
        got_before += m.len == 6 && memcmp(m.data, "before", 6) == 0;
        conc_msg_free(&m);
        if (got_before > 0) {
            break;
        }
    }
    CHECK(got_before >= 1);
    CHECK_OK(conc_queue_put(q, "after", 5, 20.0));
    conc_queue_free(q);
}

TEST_T(amqp_broker_restart_mid_stream, 180)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "restart");
    conc_queue *q = NULL;
    conc_queue_opts o = { .url = a.url, .name = name };
    CHECK_OK(conc_queue_new(&q, &o));
    enum { RN = 50 };
    for (int i = 0; i < RN; i++) {
        CHECK_OK(conc_queue_put(q, &i, sizeof i, 5.0));
    }
    /* A consumer mid-stream: it holds deliveries when the broker goes. */
    conc_msg m;
    CHECK_OK(conc_queue_get(q, &m, 5.0));
    conc_msg_free(&m);
    th_amqp_script(&a, "restart");
    /* The first call after may meet the dead connection (CONC_ENET);
     * the next reconnects and re-declares. */
    int err = conc_queue_put(q, &(int){ RN }, sizeof(int), 5.0);
    if (err != 0) {
        CHECK(err == CONC_ENET);
        CHECK_OK(conc_queue_put(q, &(int){ RN }, sizeof(int), 5.0));
    }
    static int seen[RN + 1];
    memset(seen, 0, sizeof seen);
    for (;;) {
        err = conc_queue_get(q, &m, 1.0);
        if (err == CONC_ENET) {
            continue;
        }
        if (err == CONC_EEMPTY) {
            break;
        }
        CHECK_OK(err);
        int v;
        CHECK_EQ(m.len, sizeof v);
        memcpy(&v, m.data, sizeof v);
        conc_msg_free(&m);
        CHECK(v >= 0 && v <= RN);
        seen[v]++;
    }
    for (int i = 0; i <= RN; i++) {
        if (seen[i] == 0) {
            th_fail(__FILE__, __LINE__, "message %d lost in the restart",
                    i);
        }
    }
    conc_queue_free(q);
}
