/* test_redis_kill.c - the Redis queue under failure, each test bounded in
 * time: consumers SIGKILLed at random mid-stream (nothing lost,
 * duplicates never more than kills); the server stopped (SIGSTOP: every
 * call ends in time, none hangs, and CONC_FOREVER notices), killed (calls
 * fail with CONC_ENET at once) and restarted with its append-only file
 * (the next call reconnects; every put that returned 0 is still there);
 * and the rule that a client never gives up before the server-side block
 * it started, which at-most-once delivery needs not to lose messages.
 */
#include "harness.h"
#include "redis_server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#define NEED_REDIS()                                                         \
    do {                                                                     \
        if (!conc__net_backend_built("redis")) {                             \
            return;                                                          \
        }                                                                    \
    } while (0)

static void *shared(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    memset(p, 0, size);
    return p;
}

/* ---- consumers killed at random ---------------------------------------------- */

enum { NMSG = 1500, NCONS = 3, KILLS = 8 };

typedef struct stream {
    char url[256];
    atomic_int seen[NMSG];   /* how many times each message was processed */
} stream;

static int consumer(void *arg)
{
    stream *st = arg;
    conc_queue *q = NULL;
    if (conc_queue_new(&q, &(conc_queue_opts){ .url = st->url,
                                                .name = "stream",
                                                .lease = CONC_TIMEOUT(0.5) }) != 0) {
        return 10;
    }
    for (;;) {
        int id = -1;
        size_t len = 0;
        int err = conc_queue_get_into(q, &id, sizeof id, &len, CONC_FOREVER);
        if (err == CONC_ECLOSED) {
            break;
        }
        if (err != 0 || len != sizeof id || id < 0 || id >= NMSG) {
            return 11;
        }
        /* "Process" it (2 ms), then record the effect, which the next
         * get acknowledges: a kill while processing loses the effect, so
         * the message must come back from the dead consumer's lease; a
         * kill between the record and the next get duplicates it. */
        th_sleep(0.002);
        atomic_fetch_add(&st->seen[id], 1);
    }
    conc_queue_free(q);
    return 0;
}

static int all_seen(stream *st)
{
    int n = 0;
    for (int i = 0; i < NMSG; i++) {
        n += atomic_load(&st->seen[i]) > 0;
    }
    return n;
}

TEST_T(redis_kill_consumers_at_random_nothing_lost, 90)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    stream *st = shared(sizeof *st);
    snprintf(st->url, sizeof st->url, "%s", r.url);
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .url = r.url,
                                                     .name = "stream",
                                                     .lease = CONC_TIMEOUT(0.5) }));
    pid_t cons[NCONS];
    for (int i = 0; i < NCONS; i++) {
        cons[i] = th_fork(consumer, st);
    }
    unsigned seed = (unsigned)getpid();
    int kills = 0;
    for (int id = 0; id < NMSG; id++) {
        CHECK_OK(conc_queue_put(q, &id, sizeof id, 5.0));
        if (id % (NMSG / (KILLS + 1)) == NMSG / (KILLS + 1) - 1 &&
            kills < KILLS) {
            /* Kill one consumer at a random moment, start another. */
            th_sleep((double)(rand_r(&seed) % 20) / 1000.0);
            int v = rand_r(&seed) % NCONS;
            kill(cons[v], SIGKILL);
            th_wait(cons[v], 5.0);
            kills++;
            cons[v] = th_fork(consumer, st);
        }
    }
    double t0 = th_now();
    while (all_seen(st) < NMSG && th_now() - t0 < 30) {
        th_sleep(0.05);
    }
    CHECK_EQ(all_seen(st), NMSG);
    CHECK_OK(conc_queue_close(q));
    for (int i = 0; i < NCONS; i++) {
        CHECK_EQ(WEXITSTATUS(th_wait(cons[i], 10.0)), 0);
    }
    int dups = 0;
    for (int i = 0; i < NMSG; i++) {
        dups += atomic_load(&st->seen[i]) - 1;
    }
    CHECK_EQ(kills, KILLS);
    CHECK(dups <= kills);
    printf("    %d messages, %d consumers killed, %d duplicates\n", NMSG,
           kills, dups);
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* ---- the server stopped ------------------------------------------------------- */

static int bump(const void *old, size_t oldlen, bool found, conc_buf *out,
                void *arg)
{
    (void)arg;
    unsigned char v = found && oldlen == 1 ? *(const unsigned char *)old
                                           : 0;
    v++;
    return conc_buf_append(out, &v, 1);
}

TEST_T(redis_kill_server_stopped_calls_end_in_time, 60)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){
                                    .url = r.url, .name = "frozen",
                                    .net_timeout = CONC_TIMEOUT(2.0) }));
    CHECK_OK(conc_queue_put(q, "before", 6, 1.0));
    conc_lock *l = NULL;
    CHECK_OK(conc_lock_new(&l, &(conc_lock_opts){
                                   .url = r.url, .name = "frozen",
                                   .lease = CONC_TIMEOUT(1.0),
                                   .net_timeout = CONC_TIMEOUT(2.0) }));
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){
                                   .url = r.url, .name = "frozen",
                                   .net_timeout = CONC_TIMEOUT(2.0) }));
    th_redis_signal(&r, SIGSTOP);
    double t0 = th_now();
    CHECK_ERR(conc_queue_put(q, "lost?", 5, 0.3), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.3 && took < 3.0);
    CHECK(strstr(conc_errdetail(), "no answer") != NULL);
    conc_msg m;
    t0 = th_now();
    CHECK_ERR(conc_queue_get(q, &m, 0.3), CONC_ETIMEDOUT);
    took = th_now() - t0;
    CHECK(took >= 0.3 && took < 4.0); /* the block and its grace */
    t0 = th_now();
    int err = conc_queue_get(q, &m, CONC_FOREVER);
    took = th_now() - t0;
    CHECK(err == CONC_ETIMEDOUT || err == CONC_ENET);
    CHECK(took < 8.0); /* a slice (2 s) and its grace, or net_timeout */
    /* timeout 0: one round trip, bounded by net_timeout */
    t0 = th_now();
    CHECK_ERR(conc_queue_get(q, &m, 0), CONC_ETIMEDOUT);
    took = th_now() - t0;
    CHECK(took >= 1.9 && took < 8.0);
    /* The lock and the dict on the frozen server end in time too. */
    t0 = th_now();
    CHECK_ERR(conc_lock_acquire(l, 0.3), CONC_ETIMEDOUT);
    took = th_now() - t0;
    CHECK(took >= 0.3 && took < 4.0);
    t0 = th_now();
    err = conc_dict_set(d, "k", 1, "v", 1);
    took = th_now() - t0;
    CHECK(err == CONC_ETIMEDOUT || err == CONC_ENET);
    CHECK(took < 4.0); /* net_timeout 2 s */
    t0 = th_now();
    err = conc_dict_update(d, "n", 1, bump, NULL);
    took = th_now() - t0;
    CHECK(err == CONC_ETIMEDOUT || err == CONC_ENET);
    CHECK(took < 4.0);
    th_redis_signal(&r, SIGCONT);
    /* The server is back: the next calls reconnect. */
    CHECK_OK(conc_queue_put(q, "after", 5, 2.0));
    CHECK_OK(conc_queue_get(q, &m, 2.0));
    CHECK(m.len == 6 && memcmp(m.data, "before", 6) == 0);
    conc_msg_free(&m);
    /* The put that timed out had reached the server's socket: it may have
     * landed (the header says so); "after" is there either way. */
    size_t n = conc_queue_qsize(q);
    CHECK(n == 1 || n == 2);
    /* The acquire that timed out reached the server, which granted it on
     * resuming; nobody renews that grant, so it lapses within its lease
     * (1 s) and this acquire reports the lapsed holder (the header says
     * so). */
    err = conc_lock_acquire(l, 3.0);
    CHECK(err == 0 || err == CONC_EOWNERDEAD);
    CHECK_OK(conc_lock_release(l));
    CHECK_OK(conc_dict_set(d, "k", 1, "v", 1));
    conc_dict_free(d);
    conc_lock_free(l);
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* Stops the server (SIGSTOP) after a delay, from a thread of its own. */
struct stop_later {
    th_redis *r;
    double after;
};

static void *stop_later_main(void *arg)
{
    struct stop_later *s = arg;
    th_sleep(s->after);
    th_redis_signal(s->r, SIGSTOP);
    return NULL;
}

/* A call that tries again (a put on a full queue, a join waiting for
 * task_done) shares its timeout among its tries: the server stopped
 * during the call makes it return by its timeout (and a try's brief
 * floor), where each try used to get a whole timeout of its own (1.5 s
 * here, returning near 2.3 s). */
TEST_T(redis_kill_server_stopped_mid_retries_ends_at_the_timeout, 60)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){
                                    .url = r.url, .name = "retries",
                                    .maxsize = 1,
                                    .net_timeout = CONC_TIMEOUT(5.0) }));
    CHECK_OK(conc_queue_put(q, "full", 4, 1.0)); /* full; a task undone */
    for (int join = 0; join < 2; join++) {
        struct stop_later s = { &r, 0.8 };
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, stop_later_main, &s), 0);
        double t0 = th_now();
        int err = join ? conc_queue_join(q, 1.5)
                       : conc_queue_put(q, "more", 4, 1.5);
        double took = th_now() - t0;
        pthread_join(t, NULL);
        th_redis_signal(&r, SIGCONT);
        CHECK(err == CONC_ETIMEDOUT || err == (join ? 0 : CONC_EFULL));
        CHECK(err != 0);
        CHECK(took >= 1.4 && took < 2.0);
    }
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* ---- a get whose answer was lost ----------------------------------------------- */

/* The server is stopped while a get is on its way: the client gives up
 * (CONC_ETIMEDOUT), the server, resumed, runs the get anyway - it
 * acknowledges the two messages the previous get_many took and moves m3
 * into this consumer's processing list, unknown to the client.  Nothing
 * is lost and nothing acknowledged comes back: the next get returns m3,
 * and then the queue is empty. */
TEST_T(redis_kill_lost_answer_loses_nothing_and_acks_once, 60)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .url = r.url,
                                                     .name = "once" }));
    CHECK_OK(conc_queue_put(q, "m1", 2, 1.0));
    CHECK_OK(conc_queue_put(q, "m2", 2, 1.0));
    CHECK_OK(conc_queue_put(q, "m3", 2, 1.0));
    conc_msg ms[2];
    size_t got = 0;
    CHECK_OK(conc_queue_get_many(q, ms, 2, &got, 1.0));
    CHECK_EQ(got, 2);
    conc_msg_free(&ms[0]);
    conc_msg_free(&ms[1]);
    th_redis_signal(&r, SIGSTOP);
    conc_msg m;
    int err = conc_queue_get(q, &m, 0.2);
    CHECK(err == CONC_ETIMEDOUT || err == CONC_ENET);
    th_redis_signal(&r, SIGCONT);
    th_sleep(0.1);
    /* The server ran that get: nothing is left in the queue's list. */
    CHECK_EQ(th_redis_num(&r, "LLEN", "conc:{q:once}", NULL), 0);
    CHECK_OK(conc_queue_get(q, &m, 2.0));
    CHECK(m.len == 2 && memcmp(m.data, "m3", 2) == 0);
    conc_msg_free(&m);
    CHECK_ERR(conc_queue_get(q, &m, 0.2), CONC_EEMPTY);
    conc_queue_free(q);
    /* free acknowledged m3: no processing list holds anything. */
    conc_queue *o = NULL;
    CHECK_OK(conc_queue_open(&o, th_redis_url_of(&r, "once")));
    CHECK_EQ(conc_queue_qsize(o), 0);
    CHECK_ERR(conc_queue_get(o, &m, 0.2), CONC_EEMPTY);
    conc_queue_free(o);
    th_redis_stop(&r);
}

/* ---- the server killed and restarted with its AOF ----------------------------- */

typedef struct restart_box {
    char url[256];
    atomic_int acked;         /* puts that returned 0 */
    atomic_int failed;        /* puts that failed (ENET / ETIMEDOUT) */
    atomic_int done;
} restart_box;

static int restart_producer(void *arg)
{
    restart_box *b = arg;
    conc_queue *q = NULL;
    if (conc_queue_new(&q, &(conc_queue_opts){ .url = b->url,
                                                .name = "aof" }) != 0) {
        return 10;
    }
    for (int id = 0; id < 400; id++) {
        int err = conc_queue_put(q, &id, sizeof id, 1.0);
        if (err == 0) {
            atomic_fetch_add(&b->acked, 1);
        } else if (err == CONC_ENET || err == CONC_ETIMEDOUT) {
            atomic_fetch_add(&b->failed, 1);
            id--; /* try this one again */
            th_sleep(0.02);
        } else {
            return 11;
        }
        th_sleep(0.002);
    }
    atomic_store(&b->done, 1);
    conc_queue_free(q);
    return 0;
}

TEST_T(redis_kill_server_restart_keeps_acknowledged_puts, 90)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, "aof");
    restart_box *b = shared(sizeof *b);
    snprintf(b->url, sizeof b->url, "%s", r.url);
    pid_t prod = th_fork(restart_producer, b);
    while (atomic_load(&b->acked) < 100) {
        th_sleep(0.01);
    }
    th_redis_kill(&r);   /* kill -9 mid-stream */
    th_sleep(0.3);
    CHECK(atomic_load(&b->failed) > 0); /* it noticed */
    th_redis_restart(&r);
    CHECK_EQ(WEXITSTATUS(th_wait(prod, 60.0)), 0);
    CHECK(atomic_load(&b->done));
    /* Every put that returned 0 is there, at least once. */
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_open(&q, th_redis_url_of(&r, "aof")));
    char *have = calloc(400, 1);
    int total = 0;
    for (;;) {
        int id = -1;
        size_t len = 0;
        int err = conc_queue_get_into(q, &id, sizeof id, &len, 0);
        if (err == CONC_EEMPTY) {
            break;
        }
        CHECK_OK(err);
        CHECK(id >= 0 && id < 400);
        have[id] = 1;
        total++;
    }
    for (int i = 0; i < 400; i++) {
        CHECK(have[i]);
    }
    CHECK(total >= 400);
    CHECK_EQ(atomic_load(&b->acked), 400);
    printf("    %d puts failed while the server was down, %d duplicates\n",
           atomic_load(&b->failed), total - 400);
    free(have);
    conc_queue_free(q);
    th_redis_stop(&r);
}

TEST(redis_kill_server_gone_is_enet_at_once)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .url = r.url,
                                                     .name = "gone" }));
    th_redis_kill(&r);
    double t0 = th_now();
    CHECK_ERR(conc_queue_put(q, "x", 1, 5.0), CONC_ENET);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, CONC_FOREVER), CONC_ENET);
    CHECK(th_now() - t0 < 2.0);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", r.port);
    CHECK(strstr(conc_errdetail(), where) != NULL);
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* ---- never give up before the server-side block ------------------------------- */

typedef struct late_box {
    char url[320];
    atomic_int go;
    double at;       /* seconds after go to put */
} late_box;

static int late_putter(void *arg)
{
    late_box *b = arg;
    conc_queue *q = NULL;
    if (conc_queue_open(&q, b->url) != 0) {
        return 10;
    }
    while (!atomic_load(&b->go)) {
        th_sleep(0.0005);
    }
    th_sleep(b->at);
    int err = conc_queue_put(q, "late", 4, 2.0);
    conc_queue_free(q);
    return err == 0 ? 0 : 11;
}

/* At most once: a get with timeout t blocks on the server (BRPOP) for t;
 * a put landing just before the block ends is handed to this get's
 * connection.  A client that stopped reading earlier would lose it.  Each
 * round: either the get returns it, or it is still queued. */
TEST_T(redis_kill_get_outwaits_its_server_block, 60)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .url = r.url,
                                                     .name = "late",
                                                     .at_most_once = true }));
    late_box *b = shared(sizeof *b);
    snprintf(b->url, sizeof b->url, "%s", th_redis_url_of(&r, "late"));
    int got = 0, queued = 0;
    for (int round = 0; round < 12; round++) {
        atomic_store(&b->go, 0);
        b->at = 0.17 + 0.0025 * round; /* around the end of a 0.2 s block */
        pid_t kid = th_fork(late_putter, b);
        th_sleep(0.05);
        atomic_store(&b->go, 1);
        conc_msg m;
        int err = conc_queue_get(q, &m, 0.2);
        CHECK_EQ(WEXITSTATUS(th_wait(kid, 10.0)), 0);
        if (err == 0) {
            conc_msg_free(&m);
            got++;
        } else {
            CHECK_ERR(err, CONC_EEMPTY);
            CHECK_OK(conc_queue_get(q, &m, 1.0)); /* still queued */
            conc_msg_free(&m);
            queued++;
        }
    }
    CHECK_EQ(got + queued, 12);
    conc_queue_free(q);
    th_redis_stop(&r);
}
