/* test_amqp_queue.c - conc_queue on RabbitMQ (amqp://), on the broker the
 * suite shares (amqp_server.h): FIFO, open by URL (the bound learnt from
 * the broker), batches, maxsize and its timeout, close waking a getter in
 * another process and draining first, at-least-once (the next get and
 * task_done acknowledge; a consumer killed holding a message gives it
 * back, flagged redelivered), at-most-once (and its free losing no put
 * while the broker catches up), the heartbeat rule (a
 * consumer computing past two broker heartbeats keeps its delivery),
 * fork and threads, join refused, and the errors a caller meets: no
 * broker, wrong password, missing vhost, a deleted queue (unroutable
 * put), bad URLs and options.  Freezing, restarting the broker and
 * killing consumers at random: test_amqp_kill.c.
 */
#include "amqp_server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#define NEED_AMQP()                                                          \
    do {                                                                     \
        if (!conc__net_backend_built("amqp")) {                              \
            return;                                                          \
        }                                                                    \
    } while (0)

static conc_queue *mkq(const th_amqp *a, const char *name,
                       const conc_queue_opts *base)
{
    conc_queue_opts o = base != NULL ? *base : (conc_queue_opts){ 0 };
    o.url = a->url;
    o.name = name;
    conc_queue *q = NULL;
    int err = conc_queue_new(&q, &o);
    if (err != 0) {
        th_fail(__FILE__, __LINE__, "conc_queue_new: %s: %s",
                conc_errname(err), conc_errdetail());
    }
    return q;
}

static void put_str(conc_queue *q, const char *s)
{
    int err = conc_queue_put(q, s, strlen(s), 5.0);
    if (err != 0) {
        th_fail(__FILE__, __LINE__, "put: %s: %s", conc_errname(err),
                conc_errdetail());
    }
}

static void get_is(conc_queue *q, const char *s)
{
    conc_msg m;
    int err = conc_queue_get(q, &m, 5.0);
    if (err != 0) {
        th_fail(__FILE__, __LINE__, "get: %s: %s", conc_errname(err),
                conc_errdetail());
    }
    if (m.len != strlen(s) || (m.len > 0 && memcmp(m.data, s, m.len) != 0)) {
        th_fail(__FILE__, __LINE__, "got '%.*s', wanted '%s'", (int)m.len,
                (char *)m.data, s);
    }
    conc_msg_free(&m);
}

static bool has(const char *s)
{
    return strstr(conc_errdetail(), s) != NULL;
}

TEST(amqp_not_built)
{
    if (conc__net_backend_built("amqp")) {
        return;
    }
    conc_queue *q = NULL;
    CHECK_ERR(conc_queue_open(&q, "amqp://127.0.0.1/%2f/x"), CONC_EINVAL);
    CHECK(has("without its RabbitMQ backend"));
}

TEST(amqp_fifo_values)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "fifo");
    conc_queue *q = mkq(&a, name, NULL);
    put_str(q, "one");
    put_str(q, "two");
    CHECK_OK(conc_queue_put(q, NULL, 0, 5.0));
    put_str(q, "three");
    CHECK_EQ(conc_queue_qsize(q), 4);
    CHECK(!conc_queue_empty(q));
    CHECK(!conc_queue_full(q));
    get_is(q, "one");
    CHECK(!conc_queue_redelivered(q));
    get_is(q, "two");
    get_is(q, "");
    char buf[2];
    size_t len = 0;
    CHECK_ERR(conc_queue_get_into(q, buf, sizeof buf, &len, 5.0),
              CONC_ETOOBIG);
    CHECK_EQ(len, 5);
    char big[16];
    CHECK_OK(conc_queue_get_into(q, big, sizeof big, &len, 5.0));
    CHECK_EQ(len, 5);
    CHECK(memcmp(big, "three", 5) == 0);
    conc_msg m;
    double t0 = th_now();
    CHECK_ERR(conc_queue_get(q, &m, 0.3), CONC_EEMPTY);
    CHECK(th_now() - t0 >= 0.29);
    CHECK(has("empty"));
    CHECK(m.data == NULL && m.len == 0);
    CHECK_ERR(conc_queue_get(q, &m, 0), CONC_EEMPTY);
    CHECK_EQ(conc_queue_qsize(q), 0);
    CHECK(conc_queue_empty(q));
    CHECK(!conc_queue_closed(q));
    conc_queue_free(q);
    /* timeout 0 on a queue with messages takes one, even from a handle
     * whose consumer has not started yet. */
    th_amqp_name(name, sizeof name, "nowait");
    q = mkq(&a, name, NULL);
    put_str(q, "x");
    put_str(q, "y");
    CHECK_OK(conc_queue_get(q, &m, 0));
    CHECK(m.len == 1 && memcmp(m.data, "x", 1) == 0);
    conc_msg_free(&m);
    CHECK_OK(conc_queue_get(q, &m, 0));
    CHECK(m.len == 1 && memcmp(m.data, "y", 1) == 0);
    conc_msg_free(&m);
    CHECK_ERR(conc_queue_get(q, &m, 0), CONC_EEMPTY);
    conc_queue_free(q);
}

TEST(amqp_open_by_url)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64], url[512];
    th_amqp_name(name, sizeof name, "open");
    conc_queue *q = mkq(&a, name, &(conc_queue_opts){ .maxsize = 3 });
    th_amqp_qurl(&a, name, url, sizeof url);
    conc_queue *o = NULL;
    CHECK_OK(conc_queue_open(&o, url));
    put_str(o, "a");
    put_str(o, "b");
    CHECK(!conc_queue_full(o));
    put_str(o, "c");
    /* The opener learnt maxsize 3 from the broker. */
    CHECK(conc_queue_full(o));
    CHECK_ERR(conc_queue_put(o, "d", 1, 0), CONC_EFULL);
    get_is(q, "a");
    conc_queue_free(o);
    /* new with the same bound attaches; another bound is refused. */
    conc_queue *q2 = mkq(&a, name, &(conc_queue_opts){ .maxsize = 3 });
    conc_queue_free(q2);
    conc_queue_opts bad = { .url = a.url, .name = name, .maxsize = 4 };
    CHECK_ERR(conc_queue_new(&q2, &bad), CONC_EINVAL);
    CHECK(has("x-max-length"));
    /* No such queue. */
    char missing[64], murl[512];
    th_amqp_name(missing, sizeof missing, "missing");
    th_amqp_qurl(&a, missing, murl, sizeof murl);
    CHECK_ERR(conc_queue_open(&o, murl), CONC_EINVAL);
    CHECK(has("no queue"));
    CHECK(o == NULL);
    conc_queue_free(q);
}

TEST(amqp_batches)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "batch");
    conc_queue *q = mkq(&a, name, NULL);
    enum { N = 1000 };
    static uint32_t v[N];
    static conc_msg in[N];
    for (uint32_t i = 0; i < N; i++) {
        v[i] = i;
        in[i] = (conc_msg){ &v[i], sizeof v[i] };
    }
    size_t done = 0;
    CHECK_OK(conc_queue_put_many(q, in, N, &done, 10.0));
    CHECK_EQ(done, N);
    CHECK_EQ(conc_queue_qsize(q), N);
    uint32_t next = 0;
    while (next < N) {
        conc_msg out[64];
        size_t got = 0;
        int err = conc_queue_get_many(q, out, 64, &got, 5.0);
        if (err != 0) {
            th_fail(__FILE__, __LINE__, "get_many: %s: %s",
                    conc_errname(err), conc_errdetail());
        }
        CHECK(got >= 1 && got <= 64);
        for (size_t i = 0; i < got; i++) {
            CHECK_EQ(out[i].len, 4);
            uint32_t x;
            memcpy(&x, out[i].data, 4);
            CHECK_EQ(x, next);
            next++;
            conc_msg_free(&out[i]);
        }
    }
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0.1), CONC_EEMPTY);
    conc_queue_free(q);
    /* Everything was acknowledged: a new handle finds nothing. */
    q = mkq(&a, name, NULL);
    CHECK_EQ(conc_queue_qsize(q), 0);
    conc_queue_free(q);
}

TEST(amqp_maxsize_waits_then_full)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "max");
    conc_queue *q = mkq(&a, name, &(conc_queue_opts){ .maxsize = 2 });
    put_str(q, "a");
    put_str(q, "b");
    CHECK(conc_queue_full(q));
    double t0 = th_now();
    CHECK_ERR(conc_queue_put(q, "c", 1, 0.4), CONC_EFULL);
    double dt = th_now() - t0;
    CHECK(dt >= 0.39 && dt < 4.0);
    CHECK(has("full"));
    CHECK_ERR(conc_queue_put(q, "c", 1, 0), CONC_EFULL);
    conc_queue_free(q);
    /* A batch: the prefix that fits goes in.  (maxsize bounds what waits
     * on the broker: a consumer's prefetch window is not counted, so no
     * consumer runs here.) */
    th_amqp_name(name, sizeof name, "maxb");
    q = mkq(&a, name, &(conc_queue_opts){ .maxsize = 2 });
    put_str(q, "a");
    conc_msg two[2] = { { "c", 1 }, { "d", 1 } };
    size_t done = 9;
    CHECK_ERR(conc_queue_put_many(q, two, 2, &done, 0.2), CONC_EFULL);
    CHECK_EQ(done, 1);
    CHECK_EQ(conc_queue_qsize(q), 2);
    get_is(q, "a");
    get_is(q, "c");
    conc_queue_free(q);
}

static int close_getter(void *arg)
{
    const char *url = arg;
    conc_queue *q = NULL;
    if (conc_queue_open(&q, url) != 0) {
        return 10;
    }
    conc_msg m;
    int err = conc_queue_get(q, &m, 20.0);
    conc_queue_free(q);
    return err == CONC_ECLOSED ? 0 : 11;
}

TEST(amqp_close_wakes_and_drains)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64], url[512];
    th_amqp_name(name, sizeof name, "close");
    conc_queue *q = mkq(&a, name, NULL);
    th_amqp_qurl(&a, name, url, sizeof url);
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = th_fork(close_getter, url);
    }
    th_sleep(1.0);
    double t0 = th_now();
    CHECK_OK(conc_queue_close(q));
    for (int i = 0; i < 2; i++) {
        int st = th_wait(kids[i], 15);
        CHECK(WIFEXITED(st));
        CHECK_EQ(WEXITSTATUS(st), 0);
    }
    CHECK(th_now() - t0 < 10);
    CHECK(conc_queue_closed(q));
    CHECK_ERR(conc_queue_put(q, "x", 1, 1.0), CONC_ECLOSED);
    CHECK(has("closed"));
    CHECK_OK(conc_queue_close(q));
    conc_queue_free(q);

    /* Messages put before close are drained first. */
    th_amqp_name(name, sizeof name, "drain");
    q = mkq(&a, name, NULL);
    put_str(q, "a");
    put_str(q, "b");
    CHECK_OK(conc_queue_close(q));
    CHECK_EQ(conc_queue_qsize(q), 2);
    get_is(q, "a");
    get_is(q, "b");
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 2.0), CONC_ECLOSED);
    CHECK_ERR(conc_queue_get(q, &m, 2.0), CONC_ECLOSED);
    size_t got = 0;
    conc_msg many[4];
    CHECK_ERR(conc_queue_get_many(q, many, 4, &got, 2.0), CONC_ECLOSED);
    CHECK_EQ(got, 0);
    conc_queue_free(q);
    /* new on a closed queue attaches to it closed. */
    q = mkq(&a, name, NULL);
    CHECK(conc_queue_closed(q));
    CHECK_ERR(conc_queue_put(q, "x", 1, 1.0), CONC_ECLOSED);
    CHECK_ERR(conc_queue_get(q, &m, 2.0), CONC_ECLOSED);
    conc_queue_free(q);
}

/* At most once, a batch that meets the close marker hands over what came
 * before it (0 and the messages), and the next get says CONC_ECLOSED.
 * The marker's connection was once closed before the batch's
 * acknowledgements were proven: the batch was lost, and the get said
 * CONC_ENET. */
TEST(amqp_at_most_once_batch_drains_a_closed_queue)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "amoclose");
    conc_queue *q = mkq(&a, name, &(conc_queue_opts){ .at_most_once = true });
    put_str(q, "a");
    put_str(q, "b");
    put_str(q, "c");
    CHECK_OK(conc_queue_close(q));
    conc_msg m[10];
    size_t got = 0;
    CHECK_OK(conc_queue_get_many(q, m, 10, &got, 5.0));
    CHECK_EQ(got, 3);
    for (size_t i = 0; i < got; i++) {
        CHECK(m[i].len == 1 && ((char *)m[i].data)[0] == (char)('a' + i));
        conc_msg_free(&m[i]);
    }
    CHECK_ERR(conc_queue_get(q, &m[0], 2.0), CONC_ECLOSED);
    CHECK_ERR(conc_queue_get_many(q, m, 10, &got, 2.0), CONC_ECLOSED);
    CHECK_EQ(got, 0);
    conc_queue_free(q);
}

/* At most once, a message too long for get_into's buffer (CONC_ETOOBIG)
 * stays the broker's until a get hands it over: a handle freed before
 * that gives it back to the queue.  It was acknowledged with the
 * deliveries before it, and lost at free. */
TEST(amqp_at_most_once_message_too_long_for_get_into_is_not_lost)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "amotoobig");
    conc_queue_opts amo = { .at_most_once = true };
    conc_queue *q = mkq(&a, name, &amo);
    put_str(q, "a");
    put_str(q, "a long message");
    conc_msg m[2];
    size_t got = 0;
    char buf[4];
    size_t len = 0;
    /* two in one call: "a" handed over, the long one kept */
    conc_queue *c = mkq(&a, name, &amo);
    CHECK_OK(conc_queue_get_into(c, buf, sizeof buf, &len, 5.0));
    CHECK(len == 1 && buf[0] == 'a');
    CHECK_ERR(conc_queue_get_into(c, buf, sizeof buf, &len, 5.0),
              CONC_ETOOBIG);
    CHECK_EQ(len, 14);
    conc_queue_free(c); /* gives it back */
    CHECK_OK(conc_queue_get_many(q, m, 2, &got, 5.0));
    CHECK_EQ(got, 1);
    CHECK(m[0].len == 14 && memcmp(m[0].data, "a long message", 14) == 0);
    conc_msg_free(&m[0]);
    conc_queue_free(q); /* (its consumer would take the next message) */
    /* handed over at the next get: then it is gone from the queue */
    c = mkq(&a, name, &amo);
    put_str(c, "another long one");
    CHECK_ERR(conc_queue_get_into(c, buf, sizeof buf, &len, 5.0),
              CONC_ETOOBIG);
    char big[32];
    CHECK_OK(conc_queue_get_into(c, big, sizeof big, &len, 5.0));
    CHECK(len == 16 && memcmp(big, "another long one", 16) == 0);
    conc_queue_free(c);
    q = mkq(&a, name, &amo);
    CHECK_ERR(conc_queue_get_many(q, m, 2, &got, 0.5), CONC_EEMPTY);
    conc_queue_free(q);
}

/* At least once, too: a message kept after get_into's CONC_ETOOBIG is
 * not acknowledged by a task_done for the message before it (the get
 * that kept it acknowledged that one); free gives it back.  task_done
 * acknowledged the kept one, and it was lost at free. */
TEST(amqp_task_done_leaves_a_message_kept_for_the_next_get)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "keptdone");
    conc_queue *c = mkq(&a, name, NULL);
    put_str(c, "a");
    put_str(c, "a long message");
    char buf[4];
    size_t len = 0;
    CHECK_OK(conc_queue_get_into(c, buf, sizeof buf, &len, 5.0));
    CHECK(len == 1 && buf[0] == 'a');
    CHECK_ERR(conc_queue_get_into(c, buf, sizeof buf, &len, 5.0),
              CONC_ETOOBIG);
    CHECK_OK(conc_queue_task_done(c)); /* for "a" */
    conc_queue_free(c);
    conc_queue *q = mkq(&a, name, NULL);
    conc_msg m;
    CHECK_OK(conc_queue_get(q, &m, 5.0));
    CHECK(m.len == 14 && memcmp(m.data, "a long message", 14) == 0);
    conc_msg_free(&m);
    CHECK_OK(conc_queue_task_done(q));
    conc_queue_free(q);
}

static int take_and_die(void *arg)
{
    const char *url = arg;
    conc_queue *q = NULL;
    if (conc_queue_open(&q, url) != 0) {
        return 10;
    }
    conc_msg m;
    if (conc_queue_get(q, &m, 5.0) != 0) {
        return 11;
    }
    raise(SIGKILL);
    return 12;
}

TEST(amqp_killed_consumer_gives_back)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64], url[512];
    th_amqp_name(name, sizeof name, "kill");
    conc_queue *q = mkq(&a, name, NULL);
    th_amqp_qurl(&a, name, url, sizeof url);
    put_str(q, "job");
    int st = th_wait(th_fork(take_and_die, url), 15);
    CHECK(WIFSIGNALED(st));
    get_is(q, "job");
    CHECK(conc_queue_redelivered(q));
    CHECK_OK(conc_queue_task_done(q));
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0.2), CONC_EEMPTY);
    CHECK(!conc_queue_redelivered(q));
    conc_queue_free(q);
}

TEST(amqp_next_get_and_free_acknowledge)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "ack");
    conc_queue *q = mkq(&a, name, NULL);
    put_str(q, "a");
    put_str(q, "b");
    put_str(q, "c");
    get_is(q, "a");
    get_is(q, "b"); /* acknowledges a */
    CHECK_OK(conc_queue_task_done(q)); /* b: acknowledged */
    /* a's task_done still counts (Python's JoinableQueue: as many as
     * gets), though the get of b acknowledged it already; one more than
     * the gets is refused (it once refused a's) */
    CHECK_OK(conc_queue_task_done(q));
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    CHECK(has("more times than"));
    get_is(q, "c");
    conc_queue_free(q); /* acknowledges c */
    q = mkq(&a, name, NULL);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0.3), CONC_EEMPTY);
    CHECK_ERR(conc_queue_join(q, 1.0), CONC_EINVAL);
    CHECK(has("no count"));
    conc_queue_free(q);
}

static int take_amo_and_die(void *arg)
{
    const char *url = arg;
    conc_queue *q = NULL;
    conc_queue_opts o = { .url = url, .at_most_once = true };
    if (conc_queue_new(&q, &o) != 0) {
        return 10;
    }
    conc_msg m;
    if (conc_queue_get(q, &m, 5.0) != 0) {
        return 11;
    }
    raise(SIGKILL);
    return 12;
}

TEST(amqp_at_most_once)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64], url[512];
    th_amqp_name(name, sizeof name, "amo");
    conc_queue *q = mkq(&a, name, &(conc_queue_opts){ .at_most_once = true });
    th_amqp_qurl(&a, name, url, sizeof url);
    put_str(q, "a");
    put_str(q, "b");
    /* A consumer killed holding a message loses it: that is the mode. */
    int st = th_wait(th_fork(take_amo_and_die, url), 15);
    CHECK(WIFSIGNALED(st));
    get_is(q, "b");
    CHECK_OK(conc_queue_task_done(q));
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0.5), CONC_EEMPTY);
    CHECK_EQ(conc_queue_qsize(q), 0);
    conc_queue_free(q);
}

static int thaw_later(void *arg)
{
    const th_amqp *a = arg;
    th_sleep(3.0);
    return kill(a->beam, SIGCONT) == 0 ? 0 : 1;
}

/* A put that returned 0 is never lost by a normal free, at most once too:
 * free waits for the broker's close-ok, which comes only after it has
 * read every publish before it.  The broker is frozen for 3 s as free
 * starts, three times the producer's net_timeout: a free that gave up at
 * net_timeout dropped its socket with the puts the broker had not read
 * (the bench once lost a whole round that way on a loaded machine). */
TEST_T(amqp_at_most_once_free_loses_nothing, 120)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "amofree");
    enum { N = 20000, B = 500 };
    conc_queue *c = mkq(&a, name, &(conc_queue_opts){ .at_most_once = true });
    conc_queue *p = mkq(&a, name, &(conc_queue_opts){
                                      .at_most_once = true,
                                      .net_timeout = CONC_TIMEOUT(1.0) });
    /* 256-byte messages, 5 MB in all: more than the broker reads at
     * once, so the freeze catches part of it unread. */
    static uint32_t body[B][64];
    conc_msg m[B];
    for (uint32_t i = 0; i < N; i += B) {
        for (uint32_t j = 0; j < B; j++) {
            body[j][0] = i + j;
            m[j] = (conc_msg){ body[j], sizeof body[j] };
        }
        size_t done = 0;
        CHECK_OK(conc_queue_put_many(p, m, B, &done, 10.0));
        CHECK_EQ(done, B);
    }
    th_amqp_stop(&a);
    pid_t thaw = th_fork(thaw_later, &a);
    double t0 = th_now();
    conc_queue_free(p);
    double dt = th_now() - t0;
    char detail[256];
    snprintf(detail, sizeof detail, "%s", conc_errdetail());
    CHECK_EQ(th_wait(thaw, 30), 0);
    uint8_t *seen = calloc(N, 1);
    CHECK(seen != NULL);
    size_t got = 0, dups = 0;
    while (got < N) {
        conc_msg out[64];
        size_t n = 0;
        int err = conc_queue_get_many(c, out, 64, &n, 10.0);
        if (err != 0) {
            th_fail(__FILE__, __LINE__, "got %zu of %d, then %s: %s (the "
                    "producer's free: %.1f s, '%s')", got, (int)N,
                    conc_errname(err), conc_errdetail(), dt, detail);
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t v = 0;
            CHECK_EQ(out[i].len, sizeof body[0]);
            memcpy(&v, out[i].data, sizeof v);
            CHECK(v < N);
            dups += seen[v];
            seen[v] = 1;
            conc_msg_free(&out[i]);
        }
        got += n;
    }
    CHECK_EQ(dups, 0);
    /* It waited for the thaw (3 s after the freeze), past its
     * net_timeout. */
    CHECK(dt > 2.5);
    CHECK(dt < 60.0);
    conc_msg x;
    CHECK_ERR(conc_queue_get(c, &x, 0.5), CONC_EEMPTY);
    free(seen);
    conc_queue_free(c);
}

static int slow_consumer(void *arg)
{
    const char *url = arg;
    conc_queue *q = NULL;
    if (conc_queue_open(&q, url) != 0) {
        return 10;
    }
    conc_msg m;
    if (conc_queue_get(q, &m, 5.0) != 0) {
        return 11;
    }
    conc_msg_free(&m);
    /* Computes for three broker heartbeat intervals without a call. */
    th_sleep(3.5);
    int err = conc_queue_task_done(q);
    conc_queue_free(q);
    return err == 0 ? 0 : 12;
}

TEST_T(amqp_busy_consumer_keeps_its_delivery, 60)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64], url[512];
    th_amqp_name(name, sizeof name, "busy");
    conc_queue *q = mkq(&a, name, NULL);
    th_amqp_qurl(&a, name, url, sizeof url);
    put_str(q, "long job");
    pid_t kid = th_fork(slow_consumer, url);
    /* While it computes nobody else may get its message. */
    th_sleep(0.5);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 4.0), CONC_EEMPTY);
    int st = th_wait(kid, 20);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 0);
    CHECK_ERR(conc_queue_get(q, &m, 0.5), CONC_EEMPTY);
    conc_queue_free(q);
}

static int fork_child_use(void *arg)
{
    conc_queue *q = arg;
    if (conc_queue_put(q, "from child", 10, 5.0) != 0) {
        return 10;
    }
    conc_msg m;
    if (conc_queue_get(q, &m, 5.0) != 0) {
        return 11;
    }
    bool ok = m.len == 6 && memcmp(m.data, "parent", 6) == 0;
    conc_msg_free(&m);
    conc_queue_free(q);
    return ok ? 0 : 12;
}

TEST(amqp_fork_child_has_own_connections)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "fork");
    conc_queue *q = mkq(&a, name, NULL);
    put_str(q, "parent");
    CHECK_EQ(conc_queue_qsize(q), 1); /* the parent's connections exist */
    int st = th_wait(th_fork(fork_child_use, q), 20);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 0);
    get_is(q, "from child");
    CHECK_EQ(conc_queue_qsize(q), 0);
    /* The child's free closed only its own connections. */
    put_str(q, "again");
    get_is(q, "again");
    conc_queue_free(q);
}

typedef struct tharg {
    conc_queue *q;
    int id;
    _Atomic int *seen;
} tharg;

enum { TP = 4, TN = 200 };

static void *producer(void *p)
{
    tharg *t = p;
    for (int i = 0; i < TN; i++) {
        int v = t->id * TN + i;
        if (conc_queue_put(t->q, &v, sizeof v, 10.0) != 0) {
            return (void *)1;
        }
    }
    return NULL;
}

static void *consumer(void *p)
{
    tharg *t = p;
    for (;;) {
        conc_msg m;
        int err = conc_queue_get(t->q, &m, 1.5);
        if (err == CONC_EEMPTY) {
            return NULL;
        }
        if (err != 0 || m.len != sizeof(int)) {
            return (void *)1;
        }
        int v;
        memcpy(&v, m.data, sizeof v);
        conc_msg_free(&m);
        if (v < 0 || v >= TP * TN) {
            return (void *)1;
        }
        atomic_fetch_add(&t->seen[v], 1);
        if (conc_queue_task_done(t->q) != 0) {
            return (void *)1;
        }
    }
}

TEST(amqp_threads_share_a_handle)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "threads");
    conc_queue *q = mkq(&a, name, NULL);
    static _Atomic int seen[TP * TN];
    pthread_t th[TP + 2];
    tharg args[TP + 2];
    for (int i = 0; i < TP + 2; i++) {
        args[i] = (tharg){ q, i, seen };
        CHECK(pthread_create(&th[i], NULL, i < TP ? producer : consumer,
                             &args[i]) == 0);
    }
    for (int i = 0; i < TP + 2; i++) {
        void *r = NULL;
        pthread_join(th[i], &r);
        CHECK(r == NULL);
    }
    for (int i = 0; i < TP * TN; i++) {
        CHECK_EQ(atomic_load(&seen[i]), 1);
    }
    conc_queue_free(q);
}

TEST(amqp_errors)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    conc_queue *q = NULL;
    char url[512];
    /* No broker: a closed port. */
    CHECK_ERR(conc_queue_open(&q, "amqp://127.0.0.1:1/%2f/x"), CONC_ENET);
    CHECK(has("127.0.0.1:1"));
    /* Wrong password: refused, and the password never in the detail. */
    snprintf(url, sizeof url, "amqp://guest:s3cr3tpw@127.0.0.1:%d/%%2f/x",
             a.port);
    CHECK_ERR(conc_queue_open(&q, url), CONC_EAUTH);
    CHECK(!has("s3cr3tpw"));
    CHECK(has("conc_queue_open"));
    /* A vhost that does not exist. */
    snprintf(url, sizeof url, "amqp://127.0.0.1:%d/novhost/x", a.port);
    CHECK_ERR(conc_queue_open(&q, url), CONC_EINVAL);
    CHECK(has("vhost 'novhost'"));
    /* Options and URLs. */
    conc_queue_opts o = { .url = a.url, .name = "x", .lease = CONC_TIMEOUT(5) };
    CHECK_ERR(conc_queue_new(&q, &o), CONC_EINVAL);
    CHECK(has("lease"));
    o = (conc_queue_opts){ .url = a.url };
    CHECK_ERR(conc_queue_new(&q, &o), CONC_EINVAL);
    CHECK(has("no queue name"));
    o = (conc_queue_opts){ .url = a.url, .name = "amq.x" };
    CHECK_ERR(conc_queue_new(&q, &o), CONC_EINVAL);
    /* The closed flag of queue x is conc.closed.x: no queue of that name,
     * or x would look closed. */
    o = (conc_queue_opts){ .url = a.url, .name = "conc.closed.x" };
    CHECK_ERR(conc_queue_new(&q, &o), CONC_EINVAL);
    CHECK(has("'conc.closed.'"));
    snprintf(url, sizeof url, "amqp://127.0.0.1:%d/%%2f/conc.closed.x",
             a.port);
    CHECK_ERR(conc_queue_open(&q, url), CONC_EINVAL);
    CHECK(has("'conc.closed.'"));
    /* prefetch: digits, 1 .. 65535 */
    const char *bad_prefetch[] = { "0", "+5", "%205", "-1", "65536", "5x" };
    for (size_t i = 0; i < sizeof bad_prefetch / sizeof *bad_prefetch;
         i++) {
        snprintf(url, sizeof url, "amqp://127.0.0.1:%d/%%2f/x?prefetch=%s",
                 a.port, bad_prefetch[i]);
        CHECK_ERR(conc_queue_open(&q, url), CONC_EINVAL);
        CHECK(has("prefetch"));
    }
    snprintf(url, sizeof url, "amqp://127.0.0.1:%d/%%2f/x?db=1", a.port);
    CHECK_ERR(conc_queue_open(&q, url), CONC_EINVAL);
    CHECK(has("'db'"));
    CHECK(q == NULL);
}

/* Runs one of amqp-tools' programs (amqp-declare-queue, ...) on queue
 * name of the test broker; CHECKs that it succeeded. */
static void amqp_tool(const th_amqp *a, const char *prog, const char *name)
{
    char port[16];
    snprintf(port, sizeof port, "%d", a->port);
    char *argv[] = { (char *)prog, (char *)"--server", (char *)"127.0.0.1",
                     (char *)"--port", port, (char *)"-q", (char *)name,
                     NULL };
    char *out = NULL;
    int st = th_run(argv, &out, 30);
    free(out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* A queue someone else declared (no x-max-length, not durable): open
 * refuses it, quoting the broker's reason.  The reason was read from the
 * connection's memory after the connection was dropped (a use after
 * free: SIGSEGV here). */
TEST(amqp_open_of_a_queue_libconc_did_not_declare)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64], url[512];
    th_amqp_name(name, sizeof name, "foreign");
    amqp_tool(&a, "/usr/bin/amqp-declare-queue", name);
    th_amqp_qurl(&a, name, url, sizeof url);
    conc_queue *q = NULL;
    CHECK_ERR(conc_queue_open(&q, url), CONC_EINVAL);
    CHECK(has("was not declared by libconc"));
    CHECK(has("PRECONDITION_FAILED"));
    CHECK(q == NULL);
    amqp_tool(&a, "/usr/bin/amqp-delete-queue", name);
}

/* A queue deleted under a consumer, then declared again by a producer:
 * the consumer is told (the broker's basic.cancel, which it is sent only
 * because libconc offers consumer_cancel_notify at login) and its next
 * get consumes from the new queue.  Without the notice every get waited
 * on a consumer the broker no longer had: CONC_EEMPTY for ever. */
TEST(amqp_consumer_of_a_deleted_queue_is_told_and_consumes_anew)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "recreated");
    conc_queue *c = mkq(&a, name, NULL);
    put_str(c, "a");
    get_is(c, "a"); /* c now consumes */
    CHECK_OK(conc_queue_task_done(c));
    amqp_tool(&a, "/usr/bin/amqp-delete-queue", name);
    conc_queue *p = mkq(&a, name, NULL); /* declares it again */
    put_str(p, "b");
    conc_msg m;
    int err = conc_queue_get(c, &m, 5.0);
    if (err == CONC_ENET) {
        CHECK(has("stopped the consumer"));
        err = conc_queue_get(c, &m, 5.0);
    }
    CHECK_OK(err);
    CHECK(m.len == 1 && memcmp(m.data, "b", 1) == 0);
    conc_msg_free(&m);
    CHECK_OK(conc_queue_task_done(c));
    conc_queue_free(p);
    conc_queue_free(c);
}

/* A message over the broker's max_message_size (the test broker's is
 * 128 MiB - 4 KiB, tests/amqp_broker.sh) is CONC_ETOOBIG, in the
 * broker's words, not CONC_ENET, which would have the caller try again
 * for ever; the handle then refuses such a message before sending it,
 * and puts of smaller ones go on. */
TEST_T(amqp_message_over_the_brokers_max_size_is_etoobig, 120)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "maxsize");
    conc_queue *q = mkq(&a, name, NULL);
    size_t big = (size_t)128 << 20; /* libconc's own limit */
    char *buf = calloc(1, big);
    CHECK(buf != NULL);
    CHECK_ERR(conc_queue_put(q, buf, big, 60), CONC_ETOOBIG);
    CHECK(has("max_message_size"));
    CHECK(has("larger than configured max size 134213632"));
    double t0 = th_now();
    CHECK_ERR(conc_queue_put(q, buf, 134213633, 60), CONC_ETOOBIG);
    CHECK(has("134213632, learnt from its refusal"));
    CHECK(th_now() - t0 < 1.0); /* refused before sending */
    put_str(q, "small");
    get_is(q, "small");
    CHECK_OK(conc_queue_task_done(q));
    conc_queue_free(q);
    /* At most once: no confirm, so the big put returns 0 and is lost
     * (queue.h); the put that then reads the broker's refusal puts its
     * own message, which is under the limit (it said CONC_ETOOBIG and
     * dropped it), and the limit is learnt there too. */
    th_amqp_name(name, sizeof name, "maxsize_amo");
    q = mkq(&a, name, &(conc_queue_opts){ .at_most_once = true });
    CHECK_OK(conc_queue_put(q, buf, big, 60));
    /* An "x" put before the refusal came is dropped with the channel
     * (queue.h); the put that reads the refusal returns 0 too and its "x"
     * lands, on a new connection. */
    bool landed = false;
    for (int i = 0; i < 50 && !landed; i++) {
        th_sleep(0.05);
        put_str(q, "x");
        conc_msg out;
        int err = conc_queue_get(q, &out, 1.0);
        if (err == 0) {
            CHECK(out.len == 1 && *(char *)out.data == 'x');
            conc_msg_free(&out);
            landed = true;
        } else {
            CHECK_ERR(err, CONC_EEMPTY);
        }
    }
    CHECK(landed);
    CHECK_ERR(conc_queue_put(q, buf, big, 60), CONC_ETOOBIG);
    CHECK(has("learnt from its refusal"));
    free(buf);
    conc_queue_free(q);
}

/* A net_timeout of CONC_FOREVER, or longer than rabbitmq-c counts in
 * milliseconds (2^31 ms, 24.8 days), is allowed and works: every login
 * failed with "unknown error". */
TEST(amqp_net_timeout_forever_works)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    static const double nt[] = { CONC_FOREVER, 3e6 };
    for (int i = 0; i < 2; i++) {
        char name[64];
        th_amqp_name(name, sizeof name, "ntforever");
        conc_queue *q = NULL;
        int err = conc_queue_new(&q, &(conc_queue_opts){
                                         .url = a.url, .name = name,
                                         .net_timeout = CONC_TIMEOUT(nt[i]) });
        if (err != 0) {
            th_fail(__FILE__, __LINE__, "net_timeout %g: %s: %s", nt[i],
                    conc_errname(err), conc_errdetail());
        }
        put_str(q, "f");
        get_is(q, "f");
        CHECK_OK(conc_queue_task_done(q));
        conc_queue_free(q);
    }
}

TEST(amqp_deleted_queue_put_is_an_error)
{
    NEED_AMQP();
    th_amqp a;
    th_amqp_get(&a);
    char name[64];
    th_amqp_name(name, sizeof name, "deleted");
    conc_queue *q = mkq(&a, name, NULL);
    put_str(q, "a");
    amqp_tool(&a, "/usr/bin/amqp-delete-queue", name);
    /* The exchange is still there and bound to nothing: mandatory makes
     * the broker return the message instead of dropping it. */
    CHECK_ERR(conc_queue_put(q, "b", 1, 5.0), CONC_EINVAL);
    CHECK(has("unroutable"));
    conc_queue_free(q);
}
