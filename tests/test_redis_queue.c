/* test_redis_queue.c - conc_queue on Redis (.url): the queue's contract
 * on a real redis-server each test starts (redis_server.h): FIFO, the
 * bounds and their timeouts, open by URL, batches, close waking getters
 * in other processes, task_done/join, at-least-once delivery (a killed
 * consumer's message comes back after its lease; the next get
 * acknowledges; a live consumer's lease is renewed without its help),
 * at-most-once, fork and threads, and every error a caller can meet:
 * no server, wrong or missing password, a key of another type, bad URLs.
 * The failure tests (servers stopped, killed, restarted; consumers killed
 * at random) are in test_redis_kill.c.
 */
#include "harness.h"
#include "redis_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>

/* Skips (passes) a test when libconc has no Redis backend: then the one
 * thing to check is the error every URL gets (test redis_not_built). */
#define NEED_REDIS()                                                         \
    do {                                                                     \
        if (!conc__net_backend_built("redis")) {                             \
            return;                                                          \
        }                                                                    \
    } while (0)

static conc_queue *mkq(const th_redis *r, const char *name,
                       const conc_queue_opts *base)
{
    conc_queue_opts o = base != NULL ? *base : (conc_queue_opts){ 0 };
    o.url = r->url;
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
    CHECK_OK(conc_queue_put(q, s, strlen(s), 5.0));
}

/* Gets a message and checks it is s. */
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

TEST(redis_not_built)
{
    if (conc__net_backend_built("redis")) {
        return;
    }
    conc_queue *q = NULL;
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .url = "redis://127.0.0.1:1/0",
                                     .name = "x" }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "built without") != NULL);
    CHECK(q == NULL);
}

TEST(redis_queue_fifo_sizes_and_timeouts)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "jobs", &(conc_queue_opts){ .maxsize = 3 });
    CHECK(conc_queue_empty(q));
    CHECK(!conc_queue_full(q));
    put_str(q, "a");
    put_str(q, "");
    put_str(q, "ccc");
    CHECK_EQ(conc_queue_qsize(q), 3);
    CHECK(conc_queue_full(q));
    /* Full: timeout 0 fails at once, a timeout waits it out. */
    CHECK_ERR(conc_queue_put(q, "d", 1, 0), CONC_EFULL);
    double t0 = th_now();
    CHECK_ERR(conc_queue_put(q, "d", 1, 0.3), CONC_EFULL);
    double took = th_now() - t0;
    CHECK(took >= 0.3 && took < 3.0);
    CHECK(strstr(conc_errdetail(), "full") != NULL);
    get_is(q, "a");
    get_is(q, "");
    get_is(q, "ccc");
    CHECK(conc_queue_empty(q));
    /* Empty: timeout 0 at once, a timeout waits it out. */
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0), CONC_EEMPTY);
    t0 = th_now();
    CHECK_ERR(conc_queue_get(q, &m, 0.3), CONC_EEMPTY);
    took = th_now() - t0;
    CHECK(took >= 0.3 && took < 3.0);
    CHECK(m.data == NULL && m.len == 0);
    conc_queue_free(q);
    th_redis_stop(&r);
}

TEST(redis_queue_open_by_url_and_declare)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *a = mkq(&r, "jobs", &(conc_queue_opts){ .maxsize = 5 });
    conc_queue *b = NULL;
    CHECK_OK(conc_queue_open(&b, th_redis_url_of(&r, "jobs")));
    put_str(a, "one");
    get_is(b, "one");
    CHECK(conc_queue_full(b) == false);
    for (int i = 0; i < 5; i++) {
        put_str(b, "x");
    }
    CHECK(conc_queue_full(a)); /* b knows maxsize 5 from the server */
    /* new on an existing queue attaches when it agrees, refuses when not */
    conc_queue *c = mkq(&r, "jobs", &(conc_queue_opts){ .maxsize = 5 });
    CHECK_EQ(conc_queue_qsize(c), 5);
    conc_queue *d = NULL;
    CHECK_ERR(conc_queue_new(&d, &(conc_queue_opts){ .url = r.url,
                                                      .name = "jobs",
                                                      .maxsize = 6 }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "maxsize 5") != NULL);
    CHECK(d == NULL);
    /* open of a queue nobody made */
    CHECK_ERR(conc_queue_open(&d, th_redis_url_of(&r, "nope")), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "no queue 'nope'") != NULL);
    /* the unix socket reaches the same queue */
    char u[300];
    snprintf(u, sizeof u, "unix://%s?db=0&name=jobs", r.sock);
    if (conc_queue_open(&d, u) != 0) {
        th_fail(__FILE__, __LINE__, "open %s: %s", u, conc_errdetail());
    }
    CHECK_EQ(conc_queue_qsize(d), 5);
    conc_queue_free(d);
    conc_queue_free(c);
    conc_queue_free(b);
    conc_queue_free(a);
    th_redis_stop(&r);
}

TEST(redis_queue_get_into_too_small_keeps_message)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "q", NULL);
    put_str(q, "hello world");
    put_str(q, "second");
    char buf[64];
    size_t len = 0;
    CHECK_ERR(conc_queue_get_into(q, buf, 4, &len, 1.0), CONC_ETOOBIG);
    CHECK_EQ(len, 11);
    CHECK_OK(conc_queue_get_into(q, buf, sizeof buf, &len, 1.0));
    CHECK_EQ(len, 11);
    CHECK(memcmp(buf, "hello world", 11) == 0);
    get_is(q, "second");
    conc_queue_free(q);
    th_redis_stop(&r);
}

TEST(redis_queue_batches)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "b", NULL);
    enum { N = 3000 };
    conc_msg *in = calloc(N, sizeof *in);
    char (*txt)[16] = calloc(N, 16);
    for (int i = 0; i < N; i++) {
        in[i].len = (size_t)snprintf(txt[i], 16, "m%d", i);
        in[i].data = txt[i];
    }
    size_t done = 0;
    CHECK_OK(conc_queue_put_many(q, in, N, &done, 5.0));
    CHECK_EQ(done, N);
    CHECK_EQ(conc_queue_qsize(q), N);
    conc_msg out[100];
    int next = 0;
    while (next < N) {
        size_t got = 0;
        CHECK_OK(conc_queue_get_many(q, out, 100, &got, 1.0));
        CHECK(got >= 1 && got <= 100);
        for (size_t i = 0; i < got; i++) {
            CHECK_EQ(out[i].len, in[next].len);
            CHECK(memcmp(out[i].data, in[next].data, out[i].len) == 0);
            conc_msg_free(&out[i]);
            next++;
        }
    }
    size_t got = 7;
    CHECK_ERR(conc_queue_get_many(q, out, 100, &got, 0.1), CONC_EEMPTY);
    CHECK_EQ(got, 0);
    /* A bounded queue takes what fits, in order, and waits for the rest */
    conc_queue *b = mkq(&r, "bounded", &(conc_queue_opts){ .maxsize = 10 });
    CHECK_ERR(conc_queue_put_many(b, in, 25, &done, 0.2), CONC_EFULL);
    CHECK_EQ(done, 10);
    CHECK_OK(conc_queue_get_many(b, out, 100, &got, 1.0));
    CHECK_EQ(got, 10);
    for (size_t i = 0; i < got; i++) {
        CHECK(memcmp(out[i].data, in[i].data, out[i].len) == 0);
        conc_msg_free(&out[i]);
    }
    conc_queue_free(b);
    free(txt);
    free(in);
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* ---- close wakes getters in other processes -------------------------------- */

typedef struct getter_arg {
    const char *url;
} getter_arg;

static int blocked_getter(void *arg)
{
    const getter_arg *a = arg;
    conc_queue *q = NULL;
    if (conc_queue_open(&q, a->url) != 0) {
        return 10;
    }
    conc_msg m;
    int err = conc_queue_get(q, &m, 30.0);
    int rc = err == CONC_ECLOSED ? 0 : err == 0 ? 11 : 12;
    conc_queue_free(q);
    return rc;
}

TEST(redis_queue_close_wakes_getters_in_other_processes)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "c", NULL);
    put_str(q, "before");
    getter_arg a = { th_redis_url_of(&r, "c") };
    char url[320];
    snprintf(url, sizeof url, "%s", a.url);
    a.url = url;
    /* Take "before" first, so the getters find the queue empty. */
    get_is(q, "before");
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        kids[i] = th_fork(blocked_getter, &a);
    }
    th_sleep(0.5); /* let them block in BLMOVE */
    double t0 = th_now();
    CHECK_OK(conc_queue_close(q));
    CHECK(conc_queue_closed(q));
    for (int i = 0; i < 4; i++) {
        int st = th_wait(kids[i], 10.0);
        CHECK(WIFEXITED(st));
        CHECK_EQ(WEXITSTATUS(st), 0);
    }
    CHECK(th_now() - t0 < 3.0);
    CHECK_ERR(conc_queue_put(q, "x", 1, 1.0), CONC_ECLOSED);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 1.0), CONC_ECLOSED);
    CHECK_OK(conc_queue_close(q)); /* twice is harmless */
    CHECK_EQ(conc_queue_qsize(q), 0);
    conc_queue_free(q);
    th_redis_stop(&r);
}

TEST(redis_queue_close_drains_first)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "d", NULL);
    put_str(q, "1");
    put_str(q, "2");
    CHECK_OK(conc_queue_close(q));
    CHECK_EQ(conc_queue_qsize(q), 2);
    conc_queue *o = NULL;
    CHECK_OK(conc_queue_open(&o, th_redis_url_of(&r, "d")));
    get_is(o, "1");
    conc_msg m[4];
    size_t got = 0;
    CHECK_OK(conc_queue_get_many(q, m, 4, &got, 1.0));
    CHECK_EQ(got, 1);
    CHECK(m[0].len == 1 && ((char *)m[0].data)[0] == '2');
    conc_msg_free(&m[0]);
    CHECK_ERR(conc_queue_get_many(q, m, 4, &got, 1.0), CONC_ECLOSED);
    CHECK_ERR(conc_queue_get(o, &m[0], 1.0), CONC_ECLOSED);
    CHECK(strstr(conc_errdetail(), "closed") != NULL);
    conc_queue_free(o);
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* ---- task_done / join -------------------------------------------------------- */

static int worker_done(void *arg)
{
    const char *url = arg;
    conc_queue *q = NULL;
    if (conc_queue_open(&q, url) != 0) {
        return 10;
    }
    for (int i = 0; i < 5; i++) {
        conc_msg m;
        if (conc_queue_get(q, &m, 10.0) != 0) {
            return 11;
        }
        conc_msg_free(&m);
        th_sleep(0.02);
        if (conc_queue_task_done(q) != 0) {
            return 12;
        }
    }
    conc_queue_free(q);
    return 0;
}

TEST(redis_queue_task_done_join)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "j", NULL);
    CHECK_OK(conc_queue_join(q, 0)); /* nothing put */
    for (int i = 0; i < 10; i++) {
        put_str(q, "t");
    }
    CHECK_ERR(conc_queue_join(q, 0.1), CONC_ETIMEDOUT);
    char url[320];
    snprintf(url, sizeof url, "%s", th_redis_url_of(&r, "j"));
    pid_t a = th_fork(worker_done, url), b = th_fork(worker_done, url);
    double t0 = th_now();
    CHECK_OK(conc_queue_join(q, 20.0));
    CHECK(th_now() - t0 >= 0.04);
    CHECK_EQ(WEXITSTATUS(th_wait(a, 10)), 0);
    CHECK_EQ(WEXITSTATUS(th_wait(b, 10)), 0);
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "more times") != NULL);
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* ---- at least once ------------------------------------------------------------ */

typedef struct take_arg {
    char url[320];
    int gets;        /* how many gets before waiting to be killed */
    double lease;
} take_arg;

/* In a child: opens the queue url names (its last part) with the given
 * lease as *q and takes `gets` messages.  0, or the child's exit code
 * for what failed (10 the open, 11 a get). */
static int open_and_take(const char *url, double lease, int gets,
                         conc_queue **q)
{
    char base[320];
    snprintf(base, sizeof base, "%s", url);
    char *name = strrchr(base, '/');
    *name++ = '\0';
    if (conc_queue_new(q, &(conc_queue_opts){ .url = base, .name = name,
                                               .lease = CONC_TIMEOUT(lease) }) != 0) {
        return 10;
    }
    for (int i = 0; i < gets; i++) {
        conc_msg m;
        if (conc_queue_get(*q, &m, 10.0) != 0) {
            return 11;
        }
        conc_msg_free(&m);
    }
    return 0;
}

/* Opens the queue with a short lease, takes `gets` messages, then waits
 * to be killed. */
static int taker(void *arg)
{
    const take_arg *a = arg;
    conc_queue *q = NULL;
    int err = open_and_take(a->url, a->lease, a->gets, &q);
    if (err != 0) {
        return err;
    }
    for (;;) {
        pause();
    }
}

TEST(redis_queue_killed_consumer_gives_back_after_its_lease)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "alo", &(conc_queue_opts){ .lease = CONC_TIMEOUT(0.6) });
    put_str(q, "m1");
    put_str(q, "m2");
    put_str(q, "m3");
    take_arg a = { .gets = 2, .lease = 0.6 };
    snprintf(a.url, sizeof a.url, "%s", th_redis_url_of(&r, "alo"));
    pid_t kid = th_fork(taker, &a);
    /* The taker got m1, then m2 (which acknowledged m1). */
    double t0 = th_now();
    while (conc_queue_qsize(q) != 1 && th_now() - t0 < 10) {
        th_sleep(0.01);
    }
    CHECK_EQ(conc_queue_qsize(q), 1);
    th_sleep(0.1);
    kill(kid, SIGKILL);
    th_wait(kid, 5.0);
    double killed = th_now();
    /* m3 first (it was queued), then m2 once the dead taker's lease ran
     * out; m1 was acknowledged by the taker's second get: never again. */
    get_is(q, "m3");
    get_is(q, "m2");
    double back = th_now() - killed;
    CHECK(back < 5.0);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 1.5), CONC_EEMPTY);
    conc_queue_free(q);
    th_redis_stop(&r);
}

static int slow_consumer(void *arg)
{
    conc_queue *q = NULL;
    int fail = open_and_take(arg, 0.4, 1, &q);
    if (fail != 0) {
        return fail;
    }
    th_sleep(2.0); /* five leases, no call: the lease thread renews */
    int err = conc_queue_task_done(q);
    conc_queue_free(q);
    return err == 0 ? 0 : 12;
}

TEST(redis_queue_lease_renewed_while_consumer_lives)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "slow", &(conc_queue_opts){ .lease = CONC_TIMEOUT(0.4) });
    put_str(q, "long job");
    char url[320];
    snprintf(url, sizeof url, "%s", th_redis_url_of(&r, "slow"));
    pid_t kid = th_fork(slow_consumer, url);
    /* Nobody else may get it while the slow consumer lives. */
    th_sleep(0.2);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 2.5), CONC_EEMPTY);
    CHECK_EQ(WEXITSTATUS(th_wait(kid, 10.0)), 0);
    CHECK_OK(conc_queue_join(q, 1.0)); /* its task_done counted */
    CHECK_ERR(conc_queue_get(q, &m, 1.0), CONC_EEMPTY);
    conc_queue_free(q);
    th_redis_stop(&r);
}

typedef struct stale_arg {
    char url[320];
    int go[2]; /* a pipe: the parent writes when the child may go on */
} stale_arg;

/* Takes the one message, then, once told, calls task_done for it: exit
 * 0 when that returned 0, 20 + its code's distance from CONC_EINVAL. */
static int stale_taker(void *arg)
{
    stale_arg *a = arg;
    close(a->go[1]);
    conc_queue *q = NULL;
    int fail = open_and_take(a->url, 0.4, 1, &q);
    if (fail != 0) {
        return fail;
    }
    char c;
    if (read(a->go[0], &c, 1) != 1) {
        return 12;
    }
    int err = conc_queue_task_done(q);
    conc_queue_free(q);
    return err == 0 ? 0 : err == CONC_EINVAL ? 13 : 14;
}

/* A consumer stopped past its lease loses its delivery to another, which
 * finishes it first; the stopped one's task_done, once it runs on, counts
 * nothing and is no error (queue.h).  It said CONC_EINVAL "called more
 * times than messages were put": the script looked at the count, 0 by
 * then, before it found the delivery reclaimed. */
TEST(redis_queue_task_done_of_a_reclaimed_delivery_counts_nothing)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "stale", &(conc_queue_opts){ .lease = CONC_TIMEOUT(0.4) });
    put_str(q, "job");
    stale_arg a;
    snprintf(a.url, sizeof a.url, "%s", th_redis_url_of(&r, "stale"));
    CHECK_EQ(pipe(a.go), 0);
    pid_t kid = th_fork(stale_taker, &a);
    close(a.go[0]);
    double t0 = th_now();
    while (conc_queue_qsize(q) != 0 && th_now() - t0 < 10) {
        th_sleep(0.01);
    }
    kill(kid, SIGSTOP); /* past its lease: it cannot renew */
    get_is(q, "job");   /* the redelivered copy */
    CHECK_OK(conc_queue_task_done(q));
    CHECK_OK(conc_queue_join(q, 1.0));
    kill(kid, SIGCONT);
    CHECK_EQ(write(a.go[1], "g", 1), 1);
    close(a.go[1]);
    CHECK_EQ(WEXITSTATUS(th_wait(kid, 10.0)), 0);
    /* nothing was counted twice: one put, one task more */
    put_str(q, "next");
    get_is(q, "next");
    CHECK_OK(conc_queue_task_done(q));
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    CHECK_OK(conc_queue_join(q, 1.0));
    conc_queue_free(q);
    th_redis_stop(&r);
}

TEST(redis_queue_free_acknowledges_and_consumer_set_is_clean)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "f", &(conc_queue_opts){ .lease = CONC_TIMEOUT(0.3) });
    conc_queue *c = mkq(&r, "f", &(conc_queue_opts){ .lease = CONC_TIMEOUT(0.3) });
    put_str(q, "x");
    get_is(c, "x");
    CHECK_EQ(th_redis_num(&r, "ZCARD", "conc:{q:f}:cons", NULL), 1);
    conc_queue_free(c);
    CHECK_EQ(th_redis_num(&r, "ZCARD", "conc:{q:f}:cons", NULL), 0);
    th_sleep(0.8);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0.5), CONC_EEMPTY);
    conc_queue_free(q);
    th_redis_stop(&r);
}

TEST(redis_queue_at_most_once)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "amo", &(conc_queue_opts){ .at_most_once = true,
                                                        .maxsize = 4 });
    put_str(q, "a");
    put_str(q, "b");
    put_str(q, "c");
    get_is(q, "a");
    conc_msg m[4];
    size_t got = 0;
    CHECK_OK(conc_queue_get_many(q, m, 4, &got, 1.0));
    CHECK_EQ(got, 2);
    CHECK(m[0].len == 1 && *(char *)m[0].data == 'b');
    CHECK(m[1].len == 1 && *(char *)m[1].data == 'c');
    conc_msg_free(&m[0]);
    conc_msg_free(&m[1]);
    /* Nothing is kept for a consumer: no processing list, no lease. */
    CHECK_EQ(th_redis_num(&r, "EXISTS", "conc:{q:amo}:cons", NULL), 0);
    char buf[2];
    size_t len = 0;
    put_str(q, "long");
    CHECK_ERR(conc_queue_get_into(q, buf, 2, &len, 1.0), CONC_ETOOBIG);
    CHECK_EQ(len, 4);
    get_is(q, "long"); /* put back at the head */
    CHECK_OK(conc_queue_close(q));
    CHECK_ERR(conc_queue_get(q, &m[0], 1.0), CONC_ECLOSED);
    CHECK_ERR(conc_queue_get(q, &m[0], 1.0), CONC_ECLOSED);
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* ---- fork and threads ------------------------------------------------------------ */

typedef struct fork_box {
    conc_queue *q;
    atomic_int got[2];    /* messages each side took */
    atomic_int bad;       /* replies that were not a message of ours */
    atomic_int first;     /* the child made its first call */
    atomic_int go;        /* the parent saw it: both hammer */
} fork_box;

/* 150 puts and gets through one handle, from the parent and a child at
 * the same time: any byte of one going down the other's socket would
 * hand one side the other's replies. */
static int hammer(fork_box *b, int side)
{
    for (int i = 0; i < 150; i++) {
        int v = side * 1000 + i;
        if (conc_queue_put(b->q, &v, sizeof v, 5.0) != 0) {
            return 1;
        }
        int w = -1;
        size_t len = 0;
        int err = conc_queue_get_into(b->q, &w, sizeof w, &len, 5.0);
        if (err != 0 || len != sizeof w || (w / 1000 != 0 && w / 1000 != 1)) {
            atomic_fetch_add(&b->bad, 1);
            return 2;
        }
        atomic_fetch_add(&b->got[side], 1);
    }
    return 0;
}

static int child_uses_inherited(void *arg)
{
    fork_box *b = arg;
    /* One call while the parent is idle: its inherited connection sits
     * in the pool, readable by nothing, so only a child that knows it
     * forked leaves it alone and opens its own. */
    (void)conc_queue_qsize(b->q);
    atomic_store(&b->first, 1);
    while (!atomic_load(&b->go)) {
        th_sleep(0.001);
    }
    int rc = hammer(b, 1);
    /* Keep the connection open a moment so the parent can see it. */
    th_sleep(0.5);
    conc_queue_free(b->q);
    return rc;
}

TEST(redis_queue_forked_child_gets_its_own_connection)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    fork_box *b = mmap(NULL, sizeof *b, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(b, 0, sizeof *b);
    b->q = mkq(&r, "fk", NULL);
    put_str(b->q, "p1");
    get_is(b->q, "p1"); /* the parent holds p1 and a pooled connection */
    pid_t kid = th_fork(child_uses_inherited, b);
    double until = th_now() + 10.0;
    while (!atomic_load(&b->first) && th_now() < until) {
        th_sleep(0.001);
    }
    CHECK(atomic_load(&b->first));
    /* The child's first call went over a connection of its own. */
    char *list = th_redis_cmd(&r, "CLIENT", "LIST", NULL);
    char mine[32], its[32];
    snprintf(mine, sizeof mine, "name=conc-%d ", (int)getpid());
    snprintf(its, sizeof its, "name=conc-%d ", (int)kid);
    CHECK(list != NULL && strstr(list, mine) != NULL);
    bool own = list != NULL && strstr(list, its) != NULL;
    free(list);
    atomic_store(&b->go, 1);
    CHECK(own);
    CHECK_EQ(hammer(b, 0), 0);
    CHECK_EQ(WEXITSTATUS(th_wait(kid, 20.0)), 0);
    CHECK_EQ(atomic_load(&b->bad), 0);
    CHECK_EQ(atomic_load(&b->got[0]) + atomic_load(&b->got[1]), 300);
    /* The child's deliveries were its own (acknowledged by its free); the
     * parent's handle still works and p1 was never handed out again. */
    conc_msg m;
    CHECK_ERR(conc_queue_get(b->q, &m, 0.2), CONC_EEMPTY);
    conc_queue_free(b->q);
    munmap(b, sizeof *b);
    th_redis_stop(&r);
}

typedef struct thr_arg {
    conc_queue *q;
    int id;
    atomic_int *seen; /* [4 * 500] */
} thr_arg;

static void *thr_producer(void *p)
{
    thr_arg *a = p;
    for (int i = 0; i < 500; i++) {
        int v = a->id * 500 + i;
        if (conc_queue_put(a->q, &v, sizeof v, 5.0) != 0) {
            return (void *)1;
        }
    }
    return NULL;
}

static void *thr_consumer(void *p)
{
    thr_arg *a = p;
    for (;;) {
        int v = 0;
        size_t len = 0;
        int err = conc_queue_get_into(a->q, &v, sizeof v, &len, 2.0);
        if (err == CONC_EEMPTY) {
            return NULL;
        }
        if (err != 0 || len != sizeof v || v < 0 || v >= 2000) {
            return (void *)1;
        }
        atomic_fetch_add(&a->seen[v], 1);
    }
}

TEST(redis_queue_threads_share_a_handle)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "thr", NULL);
    atomic_int *seen = calloc(2000, sizeof *seen);
    pthread_t t[8];
    thr_arg a[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (thr_arg){ q, i % 4, seen };
        pthread_create(&t[i], NULL, i < 4 ? thr_producer : thr_consumer,
                       &a[i]);
    }
    for (int i = 0; i < 8; i++) {
        void *rv = NULL;
        pthread_join(t[i], &rv);
        CHECK(rv == NULL);
    }
    for (int v = 0; v < 2000; v++) {
        CHECK_EQ(atomic_load(&seen[v]), 1);
    }
    free(seen);
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* ---- errors --------------------------------------------------------------------- */

TEST(redis_queue_no_server)
{
    NEED_REDIS();
    int port = th_redis_free_port();
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    conc_queue *q = NULL;
    double t0 = th_now();
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){ .url = url,
                                                      .name = "x" }),
              CONC_ENET);
    CHECK(th_now() - t0 < 2.0);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    CHECK(strstr(conc_errdetail(), where) != NULL);
    CHECK(strstr(conc_errdetail(), "refused") != NULL);
    CHECK(q == NULL);
}

/* A server that lies: it answers the handshake with the header of an
 * array of 2^31 - 1 elements, then nothing. */
struct liar {
    int lfd;
    _Atomic int stop;
};

static void *liar_main(void *arg)
{
    struct liar *l = arg;
    struct pollfd pfd = { .fd = l->lfd, .events = POLLIN };
    if (poll(&pfd, 1, 10000) != 1) {
        return NULL; /* the client never came */
    }
    int fd = accept(l->lfd, NULL, NULL);
    if (fd < 0) {
        return NULL;
    }
    char buf[512];
    pfd.fd = fd;
    if (poll(&pfd, 1, 10000) == 1 && read(fd, buf, sizeof buf) > 0) {
        static const char lie[] = "*2147483647\r\n";
        if (write(fd, lie, sizeof lie - 1) < 0) {
            /* the client went: nothing more to do */
        }
    }
    while (!atomic_load(&l->stop)) { /* hold the connection open */
        th_sleep(0.005);
    }
    close(fd);
    return NULL;
}

/* An array header that announces more elements than libconc ever asks
 * for is a lie, refused as it is read (CONC_ECORRUPT): hiredis would
 * otherwise reserve memory for all of them at once (16 GiB here) and the
 * call would wait out its net_timeout for elements that never come. */
TEST(redis_queue_reply_announcing_a_huge_array_is_corrupt)
{
    NEED_REDIS();
    struct liar l = { .lfd = socket(AF_INET, SOCK_STREAM, 0) };
    CHECK(l.lfd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    CHECK_EQ(bind(l.lfd, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_EQ(listen(l.lfd, 1), 0);
    CHECK_EQ(getsockname(l.lfd, (struct sockaddr *)&a, &alen), 0);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, liar_main, &l), 0);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", ntohs(a.sin_port));
    conc_queue *q = NULL;
    int err = conc_queue_new(&q, &(conc_queue_opts){
                                     .url = url,
                                     .name = "x",
                                     .net_timeout = CONC_TIMEOUT(30) });
    atomic_store(&l.stop, 1);
    pthread_join(th, NULL);
    close(l.lfd);
    CHECK_ERR(err, CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "an array longer than libconc ever asks "
                                   "for") != NULL);
    CHECK(q == NULL);
}

/* A server that answers a batch get with more messages than were asked
 * for (64 for a get_many of 2): CONC_ECORRUPT, and nothing written past
 * the caller's array (the reply was once copied into msgs[2..64]: a heap
 * overflow from bytes off the network).  Both get paths: the
 * at-least-once batch script, and the at-most-once RPOP with a count. */
TEST(redis_queue_get_many_refuses_more_messages_than_asked_for)
{
    NEED_REDIS();
    for (int amo = 0; amo < 2; amo++) {
        pid_t pid;
        int port = th_py_server("py_redis_liar.py", amo ? "rpop" : "more",
                                NULL, &pid);
        if (port == 0) {
            th_py_server_stop(pid);
            printf("    (no python3: skipped)\n");
            return;
        }
        char url[64];
        snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
        conc_queue *q = NULL;
        CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){
                                        .url = url,
                                        .name = "liar",
                                        .at_most_once = amo == 1,
                                        .net_timeout = CONC_TIMEOUT(10) }));
        /* the caller's array of 2, then guards the lie would overwrite */
        conc_msg msgs[2 + 64];
        for (int i = 0; i < 2 + 64; i++) {
            msgs[i] = (conc_msg){ (void *)&msgs[i], 12345 };
        }
        size_t got = 99;
        CHECK_ERR(conc_queue_get_many(q, msgs, 2, &got, 5), CONC_ECORRUPT);
        CHECK(strstr(conc_errdetail(), "more messages than were asked "
                                       "for") != NULL);
        CHECK_EQ(got, 0);
        for (int i = 2; i < 2 + 64; i++) {
            CHECK(msgs[i].data == (void *)&msgs[i] && msgs[i].len == 12345);
        }
        conc_queue_free(q);
        th_py_server_stop(pid);
    }
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#include <sys/resource.h>

/* In a child whose address space ends 48 MiB above what it uses: the
 * reply of a million messages (about 70 MB of hiredis's objects) cannot
 * be read, which is CONC_ENOMEM, not a lie of the server's. */
static int reply_past_the_address_space(void *arg)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", *(int *)arg);
    conc_queue *q = NULL;
    if (conc_queue_new(&q, &(conc_queue_opts){
                               .url = url,
                               .name = "many",
                               .net_timeout = CONC_TIMEOUT(20) }) != 0) {
        return 2;
    }
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%ld", &pages) != 1) {
        return 3;
    }
    fclose(f);
    rlim_t lim = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (48u << 20);
    struct rlimit rl = { lim, lim };
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        return 4;
    }
    conc_msg msgs[2];
    size_t got = 99;
    int err = conc_queue_get_many(q, msgs, 2, &got, 10);
    if (err != CONC_ENOMEM || got != 0 ||
        strstr(conc_errdetail(), "no memory for the reply") == NULL) {
        fprintf(stderr, "get_many: %d, %zu, %s\n", err, got,
                conc_errdetail());
        return 5;
    }
    conc_queue_free(q);
    return 0;
}

TEST(redis_queue_reply_past_the_memory_there_is_is_enomem)
{
    NEED_REDIS();
    pid_t pid;
    int port = th_py_server("py_redis_liar.py", "many", NULL, &pid);
    if (port == 0) {
        th_py_server_stop(pid);
        printf("    (no python3: skipped)\n");
        return;
    }
    int status = th_wait(th_fork(reply_past_the_address_space, &port), 60);
    th_py_server_stop(pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}
#endif

TEST(redis_queue_password)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, "pass=s3cr3tPW");
    conc_queue *q = mkq(&r, "pw", NULL);
    put_str(q, "ok");
    get_is(q, "ok");
    conc_queue_free(q);
    char url[128];
    snprintf(url, sizeof url, "redis://:wrongPW99@127.0.0.1:%d/0", r.port);
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){ .url = url,
                                                      .name = "pw" }),
              CONC_EAUTH);
    CHECK(strstr(conc_errdetail(), "password") != NULL);
    CHECK(strstr(conc_errdetail(), "wrongPW99") == NULL);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0/pw", r.port);
    CHECK_ERR(conc_queue_open(&q, url), CONC_EAUTH);
    CHECK(strstr(conc_errdetail(), "requires a password") != NULL);
    snprintf(url, sizeof url, "redis://bob:s3cr3tPW@127.0.0.1:%d/0/pw",
             r.port);
    CHECK_ERR(conc_queue_open(&q, url), CONC_EAUTH);
    CHECK(strstr(conc_errdetail(), "s3cr3tPW") == NULL);
    th_redis_stop(&r);
}

/* A server that lost its scripts (restarted, or SCRIPT FLUSH) answers
 * NOSCRIPT: each kind of object loads its scripts again within the call
 * and the call succeeds. */
static int plus_one(const void *old, size_t oldlen, bool found,
                    conc_buf *out, void *arg)
{
    (void)arg;
    char v = found && oldlen == 1 ? *(const char *)old : '0';
    v++;
    return conc_buf_append(out, &v, 1);
}

/* An ACL user without a command libconc runs (EVALSHA), or without
 * its keys: CONC_EAUTH, what the URL's credentials allow, not CONC_ENET,
 * a connection worth trying again. */
TEST(redis_acl_refusal_is_eauth)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    free(th_redis_cmd(&r, "ACL", "SETUSER", "noeval", "on", ">pw1", "~*",
                      "+@all", "-evalsha", NULL));
    free(th_redis_cmd(&r, "ACL", "SETUSER", "nokeys", "on", ">pw2",
                      "~other:*", "+@all", NULL));
    static const char *const users[] = { "noeval:pw1", "nokeys:pw2" };
    for (int i = 0; i < 2; i++) {
        char url[256];
        snprintf(url, sizeof url, "redis://%s@127.0.0.1:%d/0", users[i],
                 r.port);
        conc_queue *q = NULL;
        CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){ .url = url,
                                                          .name = "acl" }),
                  CONC_EAUTH);
        CHECK(strstr(conc_errdetail(), "(ACL): NOPERM") != NULL);
        CHECK(q == NULL);
        conc_lock *l = NULL;
        CHECK_ERR(conc_lock_new(&l, &(conc_lock_opts){ .url = url,
                                                        .name = "acl" }),
                  CONC_EAUTH);
        conc_dict *d = NULL;
        CHECK_ERR(conc_dict_new(&d, &(conc_dict_opts){ .url = url,
                                                        .name = "acl" }),
                  CONC_EAUTH);
    }
    th_redis_stop(&r);
}

TEST(redis_scripts_reloaded_after_flush)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "flush", NULL);
    conc_lock *l = NULL;
    CHECK_OK(conc_lock_new(&l, &(conc_lock_opts){ .url = r.url,
                                                   .name = "flush" }));
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .url = r.url,
                                                   .name = "flush" }));
    for (int round = 0; round < 2; round++) {
        free(th_redis_cmd(&r, "SCRIPT", "FLUSH", NULL));
        CHECK_OK(conc_queue_put(q, "s", 1, 1.0));
        free(th_redis_cmd(&r, "SCRIPT", "FLUSH", NULL));
        get_is(q, "s");
        free(th_redis_cmd(&r, "SCRIPT", "FLUSH", NULL));
        CHECK_OK(conc_lock_acquire(l, 1.0));
        free(th_redis_cmd(&r, "SCRIPT", "FLUSH", NULL));
        CHECK_OK(conc_lock_release(l));
        free(th_redis_cmd(&r, "SCRIPT", "FLUSH", NULL));
        CHECK_OK(conc_dict_update(d, "n", 1, plus_one, NULL));
    }
    conc_msg m;
    CHECK_OK(conc_dict_get(d, "n", 1, &m));
    CHECK(m.len == 1 && ((const char *)m.data)[0] == '2');
    conc_msg_free(&m);
    conc_dict_free(d);
    conc_lock_free(l);
    conc_queue_free(q);
    th_redis_stop(&r);
}

TEST(redis_queue_key_of_another_type)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    free(th_redis_cmd(&r, "SET", "conc:{q:taken}", "a string", NULL));
    conc_queue *q = NULL;
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){ .url = r.url,
                                                      .name = "taken" }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "holds a string") != NULL);
    /* Replaced under a live handle: CONC_ECORRUPT, never a crash. */
    q = mkq(&r, "live", NULL);
    put_str(q, "x");
    free(th_redis_cmd(&r, "DEL", "conc:{q:live}", NULL));
    free(th_redis_cmd(&r, "SET", "conc:{q:live}", "oops", NULL));
    CHECK_ERR(conc_queue_put(q, "y", 1, 1.0), CONC_ECORRUPT);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 1.0), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "another kind") != NULL);
    /* An element nobody of ours wrote: dropped, with CONC_ECORRUPT. */
    free(th_redis_cmd(&r, "DEL", "conc:{q:live}", NULL));
    free(th_redis_cmd(&r, "RPUSH", "conc:{q:live}", "zzz", NULL));
    put_str(q, "after");
    CHECK_ERR(conc_queue_get(q, &m, 1.0), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "did not write") != NULL);
    get_is(q, "after");
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* At most once, the same: the list replaced by a string under a live
 * handle makes get, get_into and get_many (BRPOP, RPOP, RPOP with a
 * count) say CONC_ECORRUPT, as the at-least-once get does above. */
TEST(redis_queue_at_most_once_key_of_another_type)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "amolive",
                        &(conc_queue_opts){ .at_most_once = true });
    put_str(q, "x");
    free(th_redis_cmd(&r, "DEL", "conc:{q:amolive}", NULL));
    free(th_redis_cmd(&r, "SET", "conc:{q:amolive}", "oops", NULL));
    conc_msg m[4];
    CHECK_ERR(conc_queue_get(q, &m[0], 1.0), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "another kind") != NULL);
    CHECK_ERR(conc_queue_get(q, &m[0], 0), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "another kind") != NULL);
    char buf[8];
    size_t len = 0;
    CHECK_ERR(conc_queue_get_into(q, buf, sizeof buf, &len, 0),
              CONC_ECORRUPT);
    size_t got = 99;
    CHECK_ERR(conc_queue_get_many(q, m, 4, &got, 1.0), CONC_ECORRUPT);
    CHECK_EQ(got, 0);
    CHECK(strstr(conc_errdetail(), "another kind") != NULL);
    CHECK_ERR(conc_queue_get_many(q, m, 4, &got, 0), CONC_ECORRUPT);
    /* The key given back: the handle goes on. */
    free(th_redis_cmd(&r, "DEL", "conc:{q:amolive}", NULL));
    put_str(q, "after");
    get_is(q, "after");
    conc_queue_free(q);
    th_redis_stop(&r);
}

/* A number under the queue's keys that does not fit a long long (19
 * digits may not) is not libconc's: CONC_ECORRUPT, never a wrapped value
 * taken as true (nor an overflow).  The largest that fits is read. */
TEST(redis_queue_number_out_of_range_is_corrupt)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "big", NULL);
    free(th_redis_cmd(&r, "HSET", "conc:{q:big}:meta", "tasks",
                      "9223372036854775807", NULL));
    CHECK_ERR(conc_queue_join(q, 0), CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "9223372036854775807 tasks") != NULL);
    static const char *const too_big[] = { "9223372036854775808",
                                           "9999999999999999999" };
    for (size_t i = 0; i < 2; i++) {
        free(th_redis_cmd(&r, "HSET", "conc:{q:big}:meta", "tasks",
                          too_big[i], NULL));
        CHECK_ERR(conc_queue_join(q, 0), CONC_ECORRUPT);
        CHECK(strstr(conc_errdetail(), "not a number") != NULL);
    }
    free(th_redis_cmd(&r, "HSET", "conc:{q:big}:meta", "tasks", "0", NULL));
    CHECK_OK(conc_queue_join(q, 0));
    free(th_redis_cmd(&r, "HSET", "conc:{q:big}:meta", "closed",
                      "9999999999999999999", NULL));
    conc_queue *q2 = NULL;
    CHECK_ERR(conc_queue_open(&q2, th_redis_url_of(&r, "big")),
              CONC_ECORRUPT);
    CHECK(q2 == NULL);
    CHECK(strstr(conc_errdetail(), "is not libconc's") != NULL);
    conc_queue_free(q);
    th_redis_stop(&r);
}

TEST(redis_queue_bad_urls_and_options)
{
    NEED_REDIS();
    static const char *bad[] = {
        "redis://",                    /* no host */
        "redis://h:0/0",               /* port 0 */
        "redis://h:99999/0",           /* port too big */
        "redis://h:6379/x/q",          /* db not a number */
        "redis://h:6379/0/q/extra",    /* too many segments */
        "redis://h:6379/0?x=1",        /* unknown query key */
        "redis://h:6379/0#frag",       /* fragment */
        "redis://h:6379/%zz",          /* bad escape */
        "redis://h:6379/0/a%00b",      /* NUL */
        "rediss://h:6379/0",           /* TLS */
        "amqp://h/vhost/q/extra",      /* too many segments for AMQP (or
                                          its backend not built) */
        "ftp://h/x",                   /* unknown scheme */
        "unix://host/path",            /* a host where a path goes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        conc_queue *q = NULL;
        int err = conc_queue_new(&q, &(conc_queue_opts){ .url = bad[i],
                                                          .name = "q" });
        if (err != CONC_EINVAL) {
            th_fail(__FILE__, __LINE__, "%s: %s (%s)", bad[i],
                    conc_errname(err), conc_errdetail());
        }
        CHECK(conc_errdetail()[0] != '\0');
        CHECK(q == NULL);
    }
    conc_queue *q = NULL;
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .url = "redis://127.0.0.1:1/0",
                                     .name = "bad name" }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "0x20") != NULL);
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .url = "redis://127.0.0.1:1/0",
                                     .name = "q", .capacity_bytes = 100 }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "capacity_bytes") != NULL);
    /* A lease too short, none (0) or endless is refused: a lease must
     * end for a dead consumer's messages to come back. */
    static const double bad_lease[] = { 0.01, 0, CONC_FOREVER, -2 };
    for (size_t i = 0; i < sizeof bad_lease / sizeof bad_lease[0]; i++) {
        CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                         .url = "redis://127.0.0.1:1/0",
                                         .name = "q",
                                         .lease = CONC_TIMEOUT(
                                             bad_lease[i]) }),
                  CONC_EINVAL);
        CHECK(strstr(conc_errdetail(), "lease") != NULL);
    }
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .url = "redis://127.0.0.1:1/0/a",
                                     .name = "b" }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "differ") != NULL);
    /* A URL password is never printed, even in URL errors. */
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .url = "redis://:hunter2@h:0/0",
                                     .name = "q" }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "hunter2") == NULL);
}

TEST(redis_queue_one_round_trip_per_call)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = mkq(&r, "rt", NULL);
    put_str(q, "warm");
    get_is(q, "warm"); /* connection made, consumer registered */
    uint64_t t0 = conc__net_round_trips();
    put_str(q, "a");
    CHECK_EQ(conc__net_round_trips() - t0, 1);
    t0 = conc__net_round_trips();
    get_is(q, "a"); /* acknowledges "warm" in the same round trip */
    CHECK_EQ(conc__net_round_trips() - t0, 1);
    conc_msg in[10];
    for (int i = 0; i < 10; i++) {
        in[i] = (conc_msg){ "bb", 2 };
    }
    size_t done = 0, got = 0;
    t0 = conc__net_round_trips();
    CHECK_OK(conc_queue_put_many(q, in, 10, &done, 1.0));
    CHECK_EQ(conc__net_round_trips() - t0, 1);
    conc_msg out[10];
    t0 = conc__net_round_trips();
    CHECK_OK(conc_queue_get_many(q, out, 10, &got, 1.0));
    CHECK_EQ(conc__net_round_trips() - t0, 1);
    CHECK_EQ(got, 10);
    for (size_t i = 0; i < got; i++) {
        conc_msg_free(&out[i]);
    }
    /* A batch stops at the close marker: what was put before close. */
    put_str(q, "1");
    put_str(q, "2");
    put_str(q, "3");
    CHECK_OK(conc_queue_close(q));
    CHECK_OK(conc_queue_get_many(q, out, 10, &got, 1.0));
    CHECK_EQ(got, 3);
    for (size_t i = 0; i < got; i++) {
        CHECK(out[i].len == 1 && *(char *)out[i].data == (char)('1' + i));
        conc_msg_free(&out[i]);
    }
    CHECK_ERR(conc_queue_get_many(q, out, 10, &got, 1.0), CONC_ECLOSED);
    CHECK_EQ(got, 0);
    conc_queue_free(q);
    th_redis_stop(&r);
}
