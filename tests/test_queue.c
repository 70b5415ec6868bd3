/* test_queue.c - conc_queue: every point of the contract and every error
 * path: FIFO, bounds in items and bytes,
 * timeouts, sizes 0..capacity, get_into, task_done/join, close waking
 * blocked getters and putters in other processes, fork and exec sharing,
 * signals during blocked calls, fault loops in new/open, repair after a
 * process died holding either side's lock, and the memory a long stream
 * touches.  The random kill-anywhere stress test is test_queue_kill.c. */
#include "harness.h"

#include "queue_int.h"
#include "queue_test_util.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* ---- helpers ------------------------------------------------------------ */

static char qname[64];
static const char *unique_name(const char *tag)
{
    snprintf(qname, sizeof qname, "conc-test-q-%s-%d", tag, (int)getpid());
    return qname;
}

/* ---- arguments ------------------------------------------------------------ */

TEST(queue_rejects_bad_arguments)
{
    conc_queue *q;
    conc_msg m;
    size_t len = 99;
    char buf[8];
    CHECK_ERR(conc_queue_new(NULL, NULL), CONC_EINVAL);
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .capacity_bytes =
                                         CONC_QUEUE_MAX_CAPACITY + 1 }),
              CONC_EINVAL);
    CHECK(q == NULL);
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){ .name = "" }),
              CONC_EINVAL);
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){ .name = "a/b" }),
              CONC_EINVAL);
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){ .name = "/" }),
              CONC_EINVAL);
    /* options only a server honours */
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .lease = CONC_TIMEOUT(5) }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), ".lease is for a queue on a server"));
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){ .at_most_once = true }),
              CONC_EINVAL);
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .net_timeout = CONC_TIMEOUT(1) }),
              CONC_EINVAL);
    CHECK(q == NULL);
    CHECK_ERR(conc_queue_open(&q, NULL), CONC_EINVAL);
    CHECK_ERR(conc_queue_open(NULL, "x"), CONC_EINVAL);
    CHECK_ERR(conc_queue_put(NULL, "x", 1, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_get(NULL, &m, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_get_into(NULL, buf, 8, &len, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_task_done(NULL), CONC_EINVAL);
    CHECK_ERR(conc_queue_join(NULL, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_close(NULL), CONC_EINVAL);
    CHECK_EQ(conc_queue_qsize(NULL), 0);
    CHECK(conc_queue_empty(NULL));
    CHECK(!conc_queue_full(NULL));
    CHECK(!conc_queue_closed(NULL));
    conc_queue_free(NULL);

    CHECK_OK(conc_queue_new(&q, NULL));
    CHECK_ERR(conc_queue_put(q, NULL, 1, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_put(q, "x", 1, NAN), CONC_EINVAL);
    CHECK_ERR(conc_queue_put(q, "x", 1, -0.5), CONC_EINVAL);
    CHECK_ERR(conc_queue_put(q, "x", 1, -2), CONC_EINVAL);
    CHECK_ERR(conc_queue_get(q, NULL, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_get(q, &m, NAN), CONC_EINVAL);
    CHECK(m.data == NULL && m.len == 0);
    CHECK_ERR(conc_queue_get(q, &m, -3), CONC_EINVAL);
    CHECK_ERR(conc_queue_get_into(q, buf, 8, NULL, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_get_into(q, NULL, 8, &len, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_get_into(q, buf, 8, &len, NAN), CONC_EINVAL);
    CHECK_ERR(conc_queue_join(q, NAN), CONC_EINVAL);
    CHECK_ERR(conc_queue_join(q, -1.5), CONC_EINVAL);
    /* None of that changed the queue. */
    CHECK_EQ(conc_queue_qsize(q), 0);
    CHECK_ERR(conc_queue_get_into(q, buf, 8, &len, 0), CONC_EEMPTY);
    CHECK_EQ(len, 0);
    conc_queue_free(q);
}

/* ---- seeds 000/001/004: Queue(3) ------------------------------------------- */

TEST(queue_maxsize_three_fifo_full_empty_timeouts)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 3 }));
    CHECK(conc_queue_empty(q));
    CHECK(!conc_queue_full(q));
    put_str(q, "one");
    put_str(q, "two");
    CHECK_EQ(conc_queue_qsize(q), 2);
    put_str(q, "three");
    CHECK(conc_queue_full(q));
    CHECK(!conc_queue_empty(q));
    CHECK_EQ(conc_queue_qsize(q), 3);
    CHECK_ERR(conc_queue_put(q, "four", 4, 0), CONC_EFULL);
    double t0 = th_now();
    CHECK_ERR(conc_queue_put(q, "four", 4, 0.2), CONC_EFULL);
    double took = th_now() - t0;
    CHECK(took >= 0.2);
    CHECK(took < 2.0);
    get_str(q, "one");
    CHECK(!conc_queue_full(q));
    get_str(q, "two");
    get_str(q, "three");
    CHECK(conc_queue_empty(q));
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0), CONC_EEMPTY);
    t0 = th_now();
    CHECK_ERR(conc_queue_get(q, &m, 0.15), CONC_EEMPTY);
    took = th_now() - t0;
    CHECK(took >= 0.15);
    CHECK(took < 1.5);
    CHECK(m.data == NULL && m.len == 0);
    conc_queue_free(q);
}

/* ---- sizes ------------------------------------------------------------------ */

TEST(queue_sizes_from_zero_to_capacity)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .capacity_bytes = 1000 }));
    /* A 0-byte message comes back as NULL data, length 0. */
    CHECK_OK(conc_queue_put(q, NULL, 0, 0));
    CHECK_OK(conc_queue_put(q, "", 0, 0));
    conc_msg m;
    CHECK_OK(conc_queue_get(q, &m, 0));
    CHECK(m.data == NULL);
    CHECK_EQ(m.len, 0);
    size_t len = 7;
    CHECK_OK(conc_queue_get_into(q, NULL, 0, &len, 0));
    CHECK_EQ(len, 0);
    /* Longer than the capacity: at once, even with no time limit. */
    unsigned char big[1001];
    pattern(big, sizeof big, 1);
    double t0 = th_now();
    CHECK_ERR(conc_queue_put(q, big, 1001, CONC_FOREVER), CONC_ETOOBIG);
    CHECK(th_now() - t0 < 1.0);
    /* Exactly the capacity fits into the empty queue, at every ring
     * offset (the record wraps the ring's end). */
    for (int round = 0; round < 40; round++) {
        CHECK_OK(conc_queue_put(q, big, 1000, 0));
        CHECK(conc_queue_full(q));
        CHECK_ERR(conc_queue_put(q, NULL, 0, 0), CONC_EFULL);
        CHECK_OK(conc_queue_get(q, &m, 0));
        CHECK_EQ(m.len, 1000);
        CHECK(pattern_ok(m.data, 1000, 1));
        conc_msg_free(&m);
        /* Shift the ring position by a small record. */
        CHECK_OK(conc_queue_put(q, big, (size_t)round * 7 % 100, 0));
        CHECK_OK(conc_queue_get_into(q, big + 500, 500, &len, 0));
        CHECK_EQ(len, (size_t)round * 7 % 100);
        pattern(big, sizeof big, 1);
    }
    /* The byte bound: records are 16 + round16(len); the ring holds
     * 16 + round16(capacity) = 1024 bytes, so two 496-byte messages fit
     * and a third does not, nor does a 0-byte one. */
    CHECK_OK(conc_queue_put(q, big, 496, 0));
    CHECK_OK(conc_queue_put(q, big, 496, 0));
    CHECK_ERR(conc_queue_put(q, big, 1, 0), CONC_EFULL);
    CHECK_ERR(conc_queue_put(q, NULL, 0, 0), CONC_EFULL);
    CHECK(conc_queue_full(q));
    CHECK_EQ(conc_queue_qsize(q), 2);
    CHECK_OK(conc_queue_get(q, &m, 0));
    conc_msg_free(&m);
    CHECK_OK(conc_queue_put(q, big, 480, 0));
    /* 512 + 496 bytes used: room for one more 0-byte record only. */
    CHECK_OK(conc_queue_put(q, NULL, 0, 0));
    CHECK_ERR(conc_queue_put(q, NULL, 0, 0), CONC_EFULL);
    CHECK_EQ(conc_queue_qsize(q), 3);
    conc_queue_free(q);
}

TEST(queue_get_into_too_small_leaves_message)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, NULL));
    put_str(q, "hello world");
    put_str(q, "next");
    char buf[32];
    size_t len = 0;
    CHECK_ERR(conc_queue_get_into(q, buf, 5, &len, 0), CONC_ETOOBIG);
    CHECK_EQ(len, 11);
    CHECK_ERR(conc_queue_get_into(q, NULL, 0, &len, 1), CONC_ETOOBIG);
    CHECK_EQ(len, 11);
    CHECK_EQ(conc_queue_qsize(q), 2);
    CHECK_OK(conc_queue_get_into(q, buf, 11, &len, 0));
    CHECK_EQ(len, 11);
    CHECK(memcmp(buf, "hello world", 11) == 0);
    get_str(q, "next");
    conc_queue_free(q);
}

TEST(queue_wraps_with_random_sizes)
{
    /* A small ring (every record boundary case) and a large one (the
     * high-water mark and skip records). */
    size_t caps[] = { 4096, 1 << 20 };
    unsigned char *buf = malloc(1 << 20);
    unsigned char *got = malloc(1 << 20);
    for (int c = 0; c < 2; c++) {
        conc_queue *q;
        CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){
                                        .capacity_bytes = caps[c] }));
        uint64_t next_put = 0, next_get = 0;
        uint64_t rng = 42;
        while (next_get < (c == 0 ? 20000u : 3000u)) {
            rng = mix(rng);
            size_t maxlen = c == 0 ? caps[c] : 40000;
            size_t n = (size_t)(rng % (maxlen + 1));
            if (rng % 3 != 0 && next_put - next_get < 8) {
                pattern(buf, n, next_put);
                int err = conc_queue_put(q, buf, n, 0);
                if (err == 0) {
                    /* Record the length in the seed's stream too. */
                    next_put++;
                    continue;
                }
                CHECK_ERR(err, CONC_EFULL);
            }
            if (next_get == next_put) {
                continue;
            }
            size_t len;
            CHECK_OK(conc_queue_get_into(q, got, 1 << 20, &len, 0));
            CHECK(pattern_ok(got, len, next_get));
            next_get++;
        }
        while (next_get < next_put) {
            size_t len;
            CHECK_OK(conc_queue_get_into(q, got, 1 << 20, &len, 0));
            CHECK(pattern_ok(got, len, next_get));
            next_get++;
        }
        CHECK(conc_queue_empty(q));
        conc_msg m;
        CHECK_ERR(conc_queue_get(q, &m, 0), CONC_EEMPTY);
        conc_queue_free(q);
    }
    free(buf);
    free(got);
}

/* Pages of the ring that are resident (mincore). */
static size_t resident_ring_bytes(conc_queue *q)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t n = (size_t)((q->R + pg - 1) / pg);
    unsigned char *vec = malloc(n);
    CHECK(mincore(q->ring, n * pg, vec) == 0);
    size_t res = 0;
    for (size_t i = 0; i < n; i++) {
        res += vec[i] & 1;
    }
    free(vec);
    return res * pg;
}

TEST(queue_stream_touches_little_memory)
{
    /* 96 MiB of 1 KiB messages through a default (64 MiB) queue, up to 16
     * queued at a time: a plain wrapping ring would touch all 64 MiB. */
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, NULL));
    CHECK_EQ(q->capacity, CONC_QUEUE_DEFAULT_CAPACITY);
    CHECK(resident_ring_bytes(q) <= 4096);
    unsigned char buf[1024];
    size_t len;
    for (int i = 0; i < 96 * 1024; i++) {
        buf[0] = (unsigned char)i;
        CHECK_OK(conc_queue_put(q, buf, sizeof buf, 0));
        if (i % 16 == 15) {
            for (int j = 0; j < 16; j++) {
                CHECK_OK(conc_queue_get_into(q, buf, sizeof buf, &len, 0));
                CHECK_EQ(buf[0], (unsigned char)(i - 15 + j));
            }
        }
    }
    size_t res = resident_ring_bytes(q);
    CHECK(res <= 256 * 1024);
    conc_queue_free(q);
}

/* A skip record (white-box: see MEMORY in queue.c) pads the end of a lap
 * when a record would cross the touched window.  Once the messages
 * before it are taken, its padding is free even if no get comes: here a
 * 60 KiB put into a default queue holding one 10 KiB message goes
 * through at once; it would get CONC_EFULL if the padding counted as used
 * until a get passed it. */
TEST(queue_skip_record_never_blocks_a_put_that_fits)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, NULL));
    CHECK_EQ(atomic_load(&q->sh->hw), CONC__QUEUE_HW_STEP);
    static unsigned char big[60 * 1024], out[60 * 1024];
    size_t len;
    /* 1 KiB messages put and taken until the tail is about 50 KiB in. */
    while (atomic_load(&q->sh->tail) < CONC__QUEUE_HW_STEP - 14 * 1024) {
        CHECK_OK(conc_queue_put(q, big, 1024, 0));
        CHECK_OK(conc_queue_get_into(q, out, sizeof out, &len, 0));
    }
    /* A fits before the window's end, B does not: a skip record pads
     * the rest of the lap and B goes to the ring's start. */
    pattern(big, 10 * 1024, 1);
    CHECK_OK(conc_queue_put(q, big, 10 * 1024, 0));
    uint64_t lap = atomic_load(&q->sh->tail);
    pattern(big, 10 * 1024, 2);
    CHECK_OK(conc_queue_put(q, big, 10 * 1024, 0));
    CHECK(atomic_load(&q->sh->tail) > q->R); /* B wrapped to offset 0 */
    CHECK_OK(conc_queue_get_into(q, out, sizeof out, &len, 0));
    CHECK_EQ(len, 10 * 1024u);
    CHECK(pattern_ok(out, len, 1));
    CHECK_EQ(atomic_load(&q->sh->head), lap); /* head sits at the skip */
    pattern(big, sizeof big, 3);
    CHECK_OK(conc_queue_put(q, big, sizeof big, 0));
    CHECK_EQ(conc_queue_qsize(q), 2u);
    CHECK_OK(conc_queue_get_into(q, out, sizeof out, &len, 0));
    CHECK_EQ(len, 10 * 1024u);
    CHECK(pattern_ok(out, len, 2));
    CHECK_OK(conc_queue_get_into(q, out, sizeof out, &len, 0));
    CHECK_EQ(len, sizeof big);
    CHECK(pattern_ok(out, len, 3));
    CHECK_EQ(conc_queue_get_into(q, out, sizeof out, &len, 0), CONC_EEMPTY);
    conc_queue_free(q);
}

/* ---- task_done / join -------------------------------------------------- */

static int child_task_done_later(void *arg)
{
    conc_queue *q = arg;
    th_sleep(0.2);
    conc_msg m;
    for (int i = 0; i < 2; i++) {
        if (conc_queue_get(q, &m, 5) != 0) {
            return 1;
        }
        conc_msg_free(&m);
        if (conc_queue_task_done(q) != 0) {
            return 2;
        }
    }
    return 0;
}

TEST(queue_task_done_and_join)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, NULL));
    CHECK_OK(conc_queue_join(q, 0));
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    put_str(q, "a");
    put_str(q, "b");
    CHECK_ERR(conc_queue_join(q, 0), CONC_ETIMEDOUT);
    double t0 = th_now();
    CHECK_ERR(conc_queue_join(q, 0.1), CONC_ETIMEDOUT);
    CHECK(th_now() - t0 >= 0.1);
    /* As Python: task_done counts puts, with or without gets. */
    CHECK_OK(conc_queue_task_done(q));
    CHECK_OK(conc_queue_task_done(q));
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    CHECK_OK(conc_queue_join(q, 0));
    get_str(q, "a");
    get_str(q, "b");
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);

    /* A join blocked here is woken by task_done in another process. */
    put_str(q, "c");
    put_str(q, "d");
    pid_t pid = th_fork(child_task_done_later, q);
    t0 = th_now();
    CHECK_OK(conc_queue_join(q, 10));
    double took = th_now() - t0;
    CHECK(took >= 0.15);
    CHECK(took < 5);
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    conc_queue_free(q);
}

/* ---- close ---------------------------------------------------------------- */

TEST(queue_close_drains_then_reports_closed)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, NULL));
    put_str(q, "x");
    put_str(q, "y");
    CHECK(!conc_queue_closed(q));
    CHECK_OK(conc_queue_close(q));
    CHECK(conc_queue_closed(q));
    CHECK_OK(conc_queue_close(q));
    CHECK_ERR(conc_queue_put(q, "z", 1, CONC_FOREVER), CONC_ECLOSED);
    CHECK_ERR(conc_queue_put(q, "z", 1, 0), CONC_ECLOSED);
    get_str(q, "x");
    char buf[4];
    size_t len;
    CHECK_OK(conc_queue_get_into(q, buf, sizeof buf, &len, CONC_FOREVER));
    CHECK_EQ(len, 1);
    CHECK_EQ(buf[0], 'y');
    conc_msg m;
    double t0 = th_now();
    CHECK_ERR(conc_queue_get(q, &m, CONC_FOREVER), CONC_ECLOSED);
    CHECK_ERR(conc_queue_get(q, &m, 0), CONC_ECLOSED);
    CHECK_ERR(conc_queue_get_into(q, buf, 4, &len, 3), CONC_ECLOSED);
    CHECK(th_now() - t0 < 1.0);
    /* task_done/join still work on a closed queue. */
    CHECK_OK(conc_queue_task_done(q));
    CHECK_OK(conc_queue_task_done(q));
    CHECK_OK(conc_queue_join(q, 0));
    conc_queue_free(q);
}

/* Shared results of blocked getters: 1 = got "only", 2 = ECLOSED. */
typedef struct {
    conc_queue *q;
    _Atomic int *slot;
} getter_arg;

static int blocked_getter(conc_queue *q)
{
    conc_msg m;
    int err = conc_queue_get(q, &m, 20);
    if (err == 0) {
        int ok = m.len == 4 && memcmp(m.data, "only", 4) == 0;
        conc_msg_free(&m);
        return ok ? 1 : 3;
    }
    return err == CONC_ECLOSED ? 2 : 4;
}

static int getter_proc(void *arg)
{
    getter_arg *a = arg;
    int r = blocked_getter(a->q);
    atomic_store(a->slot, r);
    return 0;
}

static void *getter_thread(void *arg)
{
    getter_arg *a = arg;
    atomic_store(a->slot, blocked_getter(a->q));
    return NULL;
}

TEST(queue_close_wakes_blocked_getters_everywhere)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, NULL));
    _Atomic int *slots = shared_map(4096);
    getter_arg args[5];
    pid_t pids[3];
    pthread_t tids[2];
    for (int i = 0; i < 5; i++) {
        args[i] = (getter_arg){ q, &slots[i] };
    }
    for (int i = 0; i < 3; i++) {
        pids[i] = th_fork(getter_proc, &args[i]);
    }
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_create(&tids[i], NULL, getter_thread, &args[3 + i]) ==
              0);
    }
    th_sleep(0.3);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(atomic_load(&slots[i]), 0);
    }
    put_str(q, "only");
    th_sleep(0.1);
    double t0 = th_now();
    CHECK_OK(conc_queue_close(q));
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(th_wait(pids[i], 10), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(tids[i], NULL);
    }
    CHECK(th_now() - t0 < 5);
    int got = 0, closed = 0;
    for (int i = 0; i < 5; i++) {
        int r = atomic_load(&slots[i]);
        got += r == 1;
        closed += r == 2;
    }
    CHECK_EQ(got, 1);
    CHECK_EQ(closed, 4);
    munmap((void *)slots, 4096);
    conc_queue_free(q);
}

static int blocked_putter_proc(void *arg)
{
    conc_queue *q = arg;
    int err = conc_queue_put(q, "more", 4, 20);
    return err == CONC_ECLOSED ? 0 : 1;
}

TEST(queue_close_wakes_blocked_putters)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 1 }));
    put_str(q, "first");
    pid_t pid = th_fork(blocked_putter_proc, q);
    th_sleep(0.2);
    CHECK_EQ(conc_queue_qsize(q), 1);
    double t0 = th_now();
    CHECK_OK(conc_queue_close(q));
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK(th_now() - t0 < 5);
    get_str(q, "first");
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 1), CONC_ECLOSED);
    conc_queue_free(q);
}

/* ---- fork, cross-process wake-ups ---------------------------------------- */

static int child_puts_one(void *arg)
{
    conc_queue *q = arg;
    return conc_queue_put(q, "2", 1, 5) == 0 ? 0 : 1;
}

TEST(queue_made_before_fork_works_in_child)
{
    /* Seed 002: the parent puts 1, the child puts 2; FIFO gives 1, 2. */
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, NULL));
    put_str(q, "1");
    pid_t pid = th_fork(child_puts_one, q);
    CHECK_EQ(th_wait(pid, 10), 0);
    get_str(q, "1");
    get_str(q, "2");
    conc_queue_free(q);
}

static int child_delayed_put(void *arg)
{
    conc_queue *q = arg;
    th_sleep(0.2);
    return conc_queue_put(q, "late", 4, 5) == 0 ? 0 : 1;
}

static int child_delayed_get(void *arg)
{
    conc_queue *q = arg;
    th_sleep(0.2);
    conc_msg m;
    int err = conc_queue_get(q, &m, 5);
    conc_msg_free(&m);
    return err == 0 ? 0 : 1;
}

typedef struct {
    conc_queue *req, *rep;
    int n;
} pingpong_arg;

static int child_echo(void *arg)
{
    pingpong_arg *a = arg;
    for (int i = 0; i < a->n; i++) {
        conc_msg m;
        if (conc_queue_get(a->req, &m, 10) != 0) {
            return 1;
        }
        int err = conc_queue_put(a->rep, m.data, m.len, 10);
        conc_msg_free(&m);
        if (err != 0) {
            return 2;
        }
    }
    return 0;
}

TEST(queue_wakes_sleepers_across_processes)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 1 }));
    /* A getter asleep here, a putter in the child. */
    pid_t pid = th_fork(child_delayed_put, q);
    double t0 = th_now();
    get_str(q, "late");
    double took = th_now() - t0;
    CHECK(took >= 0.15);
    CHECK(took < 3);
    CHECK_EQ(th_wait(pid, 10), 0);
    /* A putter asleep on the full queue, a getter in the child. */
    put_str(q, "fills");
    pid = th_fork(child_delayed_get, q);
    t0 = th_now();
    CHECK_OK(conc_queue_put(q, "waits", 5, 5));
    took = th_now() - t0;
    CHECK(took >= 0.15);
    CHECK(took < 3);
    CHECK_EQ(th_wait(pid, 10), 0);
    get_str(q, "waits");
    conc_queue_free(q);

    /* Round trips, each side often asleep: every wake-up must arrive. */
    pingpong_arg a = { NULL, NULL, 2000 };
    CHECK_OK(conc_queue_new(&a.req, NULL));
    CHECK_OK(conc_queue_new(&a.rep, NULL));
    pid = th_fork(child_echo, &a);
    for (int i = 0; i < a.n; i++) {
        if (i % 500 == 0) {
            th_sleep(0.01);
        }
        char buf[16];
        size_t len;
        int n = snprintf(buf, sizeof buf, "%d", i);
        CHECK_OK(conc_queue_put(a.req, buf, (size_t)n, 5));
        CHECK_OK(conc_queue_get_into(a.rep, buf, sizeof buf, &len, 5));
        CHECK_EQ(len, (size_t)n);
        CHECK_EQ(atoi(buf), i);
    }
    CHECK_EQ(th_wait(pid, 10), 0);
    conc_queue_free(a.req);
    conc_queue_free(a.rep);
}

/* The waiters' spin budgets (white-box, see WAITING in queue.c): spins
 * that fail (nothing comes) leave a budget at its floor, never below,
 * so a peer that starts answering quickly is caught by spinning again
 * rather than by a futex wake-up each time; spins that pay off raise it,
 * never past the ceiling. */
TEST(queue_spin_budgets_stay_between_floor_and_ceiling)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 1 }));
    CHECK_EQ(atomic_load(&q->spin_get), CONC__QUEUE_SPIN_FLOOR_NS);
    CHECK_EQ(atomic_load(&q->spin_put), CONC__QUEUE_SPIN_FLOOR_NS);
    char b[8];
    size_t len;
    for (int i = 0; i < 20; i++) {
        CHECK_EQ(conc_queue_get_into(q, b, sizeof b, &len, 0.001),
                 CONC_EEMPTY);
        CHECK_EQ(atomic_load(&q->spin_get), CONC__QUEUE_SPIN_FLOOR_NS);
    }
    put_str(q, "x");
    for (int i = 0; i < 20; i++) {
        CHECK_EQ(conc_queue_put(q, "y", 1, 0.001), CONC_EFULL);
        CHECK_EQ(atomic_load(&q->spin_put), CONC__QUEUE_SPIN_FLOOR_NS);
    }
    conc_queue_free(q);

    /* Round trips with a peer process that answers at once: the
     * getter's spins pay off, and its budget rises within its bounds. */
    pingpong_arg a = { NULL, NULL, 2000 };
    CHECK_OK(conc_queue_new(&a.req, NULL));
    CHECK_OK(conc_queue_new(&a.rep, NULL));
    pid_t pid = th_fork(child_echo, &a);
    int most = 0;
    for (int i = 0; i < a.n; i++) {
        CHECK_OK(conc_queue_put(a.req, "ping", 4, 5));
        CHECK_OK(conc_queue_get_into(a.rep, b, sizeof b, &len, 5));
        CHECK_EQ(len, 4u);
        int now = atomic_load(&a.rep->spin_get);
        CHECK(now >= CONC__QUEUE_SPIN_FLOOR_NS);
        CHECK(now <= CONC__QUEUE_SPIN_CEIL_NS);
        most = now > most ? now : most;
    }
    CHECK(most > CONC__QUEUE_SPIN_FLOOR_NS);
    CHECK_EQ(th_wait(pid, 10), 0);
    conc_queue_free(a.req);
    conc_queue_free(a.rep);
}

/* ---- threads racing with timeouts, wraps, bounds and close ---------------- */

#define RT_THREADS 2 /* putters, and as many getters */
#define RT_PER 20000

typedef struct {
    conc_queue *q;
    int id;
    _Atomic uint8_t (*put_ok)[RT_PER]; /* [putter][seq]: put returned 0 */
    _Atomic uint8_t (*got)[RT_PER];
    _Atomic int *errors;
    size_t max_len; /* messages of 8 .. max_len bytes */
} rt_arg;

/* 0, 2 ms or CONC_FOREVER, at random. */
static double rt_timeout(uint64_t *x)
{
    *x = mix(*x);
    return *x % 4 == 0 ? 0 : *x % 2 ? 0.002 : CONC_FOREVER;
}

static void *rt_putter(void *arg)
{
    rt_arg *a = arg;
    uint64_t x = (uint64_t)a->id * 7919;
    unsigned char buf[520];
    for (uint32_t i = 0; i < RT_PER; i++) {
        x = mix(x);
        size_t n = 8 + x % (a->max_len - 7);
        memcpy(buf, &a->id, 4);
        memcpy(buf + 4, &i, 4);
        memset(buf + 8, (int)(i & 0xff), n - 8);
        double to = rt_timeout(&x), t0 = th_now();
        int err = conc_queue_put(a->q, buf, n, to);
        if (err == 0) {
            atomic_store(&a->put_ok[a->id][i], 1);
        } else if (err == CONC_ECLOSED) {
            return NULL;
        } else if (err != CONC_EFULL || (to > 0 && th_now() - t0 < to)) {
            atomic_fetch_add(a->errors, 1); /* other error, or early */
        }
    }
    return NULL;
}

static void *rt_getter(void *arg)
{
    rt_arg *a = arg;
    uint64_t x = (uint64_t)a->id * 104729 + 1;
    unsigned char buf[520];
    for (;;) {
        size_t n;
        double to = rt_timeout(&x), t0 = th_now();
        int err = conc_queue_get_into(a->q, buf, sizeof buf, &n, to);
        if (err == CONC_ECLOSED) {
            return NULL;
        }
        if (err == CONC_EEMPTY) {
            if (to > 0 && th_now() - t0 < to) {
                atomic_fetch_add(a->errors, 1); /* early */
            }
            continue;
        }
        int p;
        uint32_t i;
        memcpy(&p, buf, 4);
        memcpy(&i, buf + 4, 4);
        bool ok = err == 0 && n >= 8 && p >= 0 && p < RT_THREADS &&
                  i < RT_PER && atomic_exchange(&a->got[p][i], 1) == 0;
        for (size_t k = 8; ok && k < n; k++) {
            ok = buf[k] == (unsigned char)(i & 0xff);
        }
        if (!ok) {
            atomic_fetch_add(a->errors, 1);
        }
    }
}

/* Putters and getters in threads, each call with a random timeout (0,
 * 2 ms or none), on a tiny queue (256 bytes), a big one (4 MiB: early
 * wraps and skip records) and one bounded to 7 items; after 0.3 s the
 * queue is closed and the getters drain it.  Every message whose put
 * returned 0 arrives exactly once and intact, no other does, and no
 * timeout expires early.  (Under TSan this is also the race check of the
 * waiting paths.) */
TEST(queue_threads_race_with_timeouts_wraps_and_close)
{
    static _Atomic uint8_t put_ok[RT_THREADS][RT_PER], got[RT_THREADS][RT_PER];
    const conc_queue_opts cfg[3] = {
        { .capacity_bytes = 256 },
        { .capacity_bytes = 4u << 20 },
        { .maxsize = 7 },
    };
    for (int c = 0; c < 3; c++) {
        memset(put_ok, 0, sizeof put_ok);
        memset(got, 0, sizeof got);
        _Atomic int errors = 0;
        conc_queue *q;
        CHECK_OK(conc_queue_new(&q, &cfg[c]));
        rt_arg args[2 * RT_THREADS];
        pthread_t t[2 * RT_THREADS];
        for (int i = 0; i < 2 * RT_THREADS; i++) {
            args[i] = (rt_arg){ q, i % RT_THREADS, put_ok, got, &errors,
                                c == 0 ? 100 : 508 };
            CHECK(pthread_create(&t[i], NULL,
                                 i < RT_THREADS ? rt_putter : rt_getter,
                                 &args[i]) == 0);
        }
        th_sleep(0.3);
        CHECK_OK(conc_queue_close(q));
        for (int i = 0; i < 2 * RT_THREADS; i++) {
            CHECK(pthread_join(t[i], NULL) == 0);
        }
        long delivered = 0;
        for (int p = 0; p < RT_THREADS; p++) {
            for (int i = 0; i < RT_PER; i++) {
                CHECK_EQ(atomic_load(&got[p][i]), atomic_load(&put_ok[p][i]));
                delivered += atomic_load(&got[p][i]);
            }
        }
        CHECK(delivered > 0);
        CHECK_EQ(atomic_load(&errors), 0);
        conc_queue_free(q);
    }
}

/* ---- many producers and consumers, threads and processes ------------------ */

#define MP_PRODUCERS 4 /* 2 processes, 2 threads */
#define MP_CONSUMERS 4
#define MP_PER 3000

typedef struct {
    conc_queue *q;
    int id;
    _Atomic uint8_t *seen;  /* [MP_PRODUCERS][MP_PER] */
    _Atomic int *errors;
} mp_arg;

static int mp_produce(void *arg)
{
    mp_arg *a = arg;
    unsigned char buf[2048];
    for (uint32_t s = 0; s < MP_PER; s++) {
        uint64_t seed = (uint64_t)a->id << 32 | s;
        size_t n = 8 + (size_t)(mix(seed) % 2000);
        memcpy(buf, &seed, 8);
        pattern(buf + 8, n - 8, seed);
        if (conc_queue_put(a->q, buf, n, 20) != 0) {
            atomic_fetch_add(a->errors, 1);
            return 1;
        }
    }
    return 0;
}

static int mp_consume(void *arg)
{
    mp_arg *a = arg;
    unsigned char buf[2048];
    int64_t last[MP_PRODUCERS];
    for (int i = 0; i < MP_PRODUCERS; i++) {
        last[i] = -1;
    }
    for (;;) {
        size_t n;
        conc_msg m = { 0 };
        int err = a->id % 2 ? conc_queue_get(a->q, &m, 20)
                            : conc_queue_get_into(a->q, buf, sizeof buf, &n,
                                                  20);
        if (err == CONC_ECLOSED) {
            return 0;
        }
        if (err != 0) {
            atomic_fetch_add(a->errors, 1);
            return 1;
        }
        const unsigned char *p = buf;
        if (a->id % 2) {
            p = m.data;
            n = m.len;
        }
        uint64_t seed;
        memcpy(&seed, p, 8);
        int prod = (int)(seed >> 32);
        int64_t s = (int64_t)(uint32_t)seed;
        bool ok = n == 8 + mix(seed) % 2000 && prod < MP_PRODUCERS &&
                  s < MP_PER && pattern_ok(p + 8, n - 8, seed) &&
                  s > last[prod];
        if (ok) {
            last[prod] = s;
            ok = atomic_fetch_add(&a->seen[prod * MP_PER + s], 1) == 0;
        }
        conc_msg_free(&m);
        if (!ok) {
            atomic_fetch_add(a->errors, 1);
            return 1;
        }
    }
}

static void *mp_produce_thread(void *arg)
{
    mp_produce(arg);
    return NULL;
}

static void *mp_consume_thread(void *arg)
{
    mp_consume(arg);
    return NULL;
}

TEST(queue_many_producers_and_consumers_mixed)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 50,
                                                     .capacity_bytes =
                                                         16384 }));
    size_t sz = MP_PRODUCERS * MP_PER + 64;
    _Atomic uint8_t *seen = shared_map(sz);
    _Atomic int *errors = (_Atomic int *)(void *)((char *)seen + sz - 64);
    mp_arg pa[MP_PRODUCERS], ca[MP_CONSUMERS];
    pid_t pp[2], cp[2];
    pthread_t pt[2], ct[2];
    pid_t ct_pid[2];
    /* ThreadSanitizer sees synchronisation between threads but not what
     * passes through another process: a consumer thread's read and a
     * producer thread's later write of the same ring bytes, ordered by a
     * consumer process in between, look like a race to it.  Under TSan
     * the consumers are all processes (producer threads still share the
     * queue with producer processes). */
#if defined(__SANITIZE_THREAD__)
    const bool consumer_threads_ok = false;
#else
    const bool consumer_threads_ok = true;
#endif
    for (int i = 0; i < MP_CONSUMERS; i++) {
        ca[i] = (mp_arg){ q, i, seen, errors };
    }
    for (int i = 0; i < MP_PRODUCERS; i++) {
        pa[i] = (mp_arg){ q, i, seen, errors };
    }
    /* Processes first: forking while our own threads run is the process
     * module's business, not this test's. */
    for (int i = 0; i < 2; i++) {
        cp[i] = th_fork(mp_consume, &ca[i]);
        pp[i] = th_fork(mp_produce, &pa[i]);
        if (!consumer_threads_ok) {
            ct_pid[i] = th_fork(mp_consume, &ca[2 + i]);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (consumer_threads_ok) {
            CHECK(pthread_create(&ct[i], NULL, mp_consume_thread,
                                 &ca[2 + i]) == 0);
        }
        CHECK(pthread_create(&pt[i], NULL, mp_produce_thread, &pa[2 + i]) ==
              0);
    }
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(th_wait(pp[i], 50), 0);
        pthread_join(pt[i], NULL);
    }
    CHECK_OK(conc_queue_close(q));
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(th_wait(cp[i], 50), 0);
        if (consumer_threads_ok) {
            pthread_join(ct[i], NULL);
        } else {
            CHECK_EQ(th_wait(ct_pid[i], 50), 0);
        }
    }
    CHECK_EQ(atomic_load(errors), 0);
    for (size_t i = 0; i < MP_PRODUCERS * MP_PER; i++) {
        if (atomic_load(&seen[i]) != 1) {
            th_fail(__FILE__, __LINE__, "message %zu seen %d times", i,
                    (int)atomic_load(&seen[i]));
        }
    }
    CHECK(conc_queue_empty(q));
    munmap((void *)seen, sz);
    conc_queue_free(q);
}

/* ---- named queues --------------------------------------------------------- */

static int child_frees_inherited(void *arg)
{
    conc_queue_free(arg);
    return 0;
}

static int child_puts_late(void *arg)
{
    conc_queue *q = arg;
    th_sleep(0.3);
    return conc_queue_put(q, "late news", 9, 5) == 0 ? 0 : 1;
}

static _Noreturn int put_for_ever(void *arg)
{
    for (;;) {
        conc_queue_put(arg, "abcdefgh", 8, CONC_FOREVER);
    }
}

static _Noreturn int get_for_ever(void *arg)
{
    for (;;) {
        conc_msg m;
        if (conc_queue_get(arg, &m, CONC_FOREVER) == 0) {
            conc_msg_free(&m);
        }
    }
}

/* qsize never says more than maxsize while producers and consumers
 * stream.  It read nget, then nput, so a caller preempted between the two
 * loads subtracted an old nget from a new nput: values in the thousands
 * for a queue of maxsize 2, a few hundred times a second here. */
TEST(queue_qsize_stays_within_maxsize_under_streaming)
{
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 2 }));
    pid_t kids[8];
    for (int i = 0; i < 8; i++) {
        kids[i] = th_fork(i < 4 ? put_for_ever : get_for_ever, q);
    }
    size_t most = 0;
    long samples = 0;
    double end = th_now() + 1.5;
    while (th_now() < end) {
        for (int k = 0; k < 1000; k++) {
            size_t n = conc_queue_qsize(q);
            most = n > most ? n : most;
        }
        samples += 1000;
    }
    for (int i = 0; i < 8; i++) {
        kill(kids[i], SIGKILL);
        th_wait(kids[i], 10);
    }
    CHECK(samples > 0);
    if (most > 2) {
        th_fail(__FILE__, __LINE__, "qsize said %zu of a queue of maxsize 2",
                most);
    }
    conc_queue_free(q);
}

TEST(queue_named_opened_by_exec_process)
{
    const char *name = unique_name("exec");
    conc_queue *q, *q2;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .name = name,
                                                     .capacity_bytes =
                                                         1 << 16 }));
    CHECK(th_shm_exists(name));
    CHECK_ERR(conc_queue_new(&q2, &(conc_queue_opts){ .name = name }),
              CONC_ESYS);
    CHECK_EQ(errno, EEXIST);
    echo_through_peer(q, name);
    char *out = NULL;
    int st;

    /* The exec'd process sleeps in get until a process of ours puts. */
    pid_t pid = th_fork(child_puts_late, q);
    char *argv2[] = { (char *)th_prog("prog_queue_peer"), (char *)name,
                      "get1", NULL };
    double t0 = th_now();
    st = th_run(argv2, &out, 20);
    CHECK(th_now() - t0 >= 0.25);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_STR(out, "late news\n");
    free(out);
    CHECK_EQ(th_wait(pid, 10), 0);

    /* An opener's handle and a forked child's copy never unlink. */
    int oerr = conc_queue_open(&q2, name);
    if (oerr != 0) {
        th_fail(__FILE__, __LINE__, "open: %s errno %d exists %d",
                conc_errname(oerr), errno, th_shm_exists(name));
    }
    put_str(q2, "via open");
    conc_queue_free(q2);
    pid = th_fork(child_frees_inherited, q);
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK(th_shm_exists(name));
    get_str(q, "via open");
    /* The creator does. */
    conc_queue_free(q);
    CHECK(!th_shm_exists(name));
    CHECK_ERR(conc_queue_open(&q2, name), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    char *argv3[] = { (char *)th_prog("prog_queue_peer"), (char *)name,
                      "missing", NULL };
    st = th_run(argv3, &out, 20);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char want[64];
    snprintf(want, sizeof want, "CONC_ESYS %d\n", ENOENT);
    CHECK_STR(out, want);
    free(out);
}

TEST(queue_open_rejects_what_is_not_a_queue)
{
    const char *name = unique_name("junk");
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, 1 << 16) == 0);
    unsigned char junk[512];
    pattern(junk, sizeof junk, 9);
    CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
    close(fd);
    conc_queue *q = NULL;
    CHECK_ERR(conc_queue_open(&q, name), CONC_EINVAL);
    CHECK(q == NULL);
    shm_unlink(path);
}

/* A creates a queue, someone unlinks the name, B creates a new queue
 * under it, A frees: B's queue must still be there (A's free unlinks only
 * a name that still names its own segment). */
TEST(queue_free_never_unlinks_a_name_that_is_no_longer_its_own)
{
    const char *name = unique_name("reuse");
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    conc_queue *a, *b, *o;
    CHECK_OK(conc_queue_new(&a, &(conc_queue_opts){ .name = name,
                                                     .capacity_bytes =
                                                         4096 }));
    CHECK_EQ(shm_unlink(path), 0);
    CHECK_OK(conc_queue_new(&b, &(conc_queue_opts){ .name = name,
                                                     .capacity_bytes =
                                                         4096 }));
    put_str(b, "bee");
    conc_queue_free(a);
    CHECK(th_shm_exists(name));
    CHECK_OK(conc_queue_open(&o, name));
    get_str(o, "bee");
    conc_queue_free(o);
    conc_queue_free(b);
    CHECK(!th_shm_exists(name));
}

/* A creator that exits without freeing its named queue unlinks it at
 * exit, as every named object's creator does. */
TEST(queue_creator_exit_unlinks)
{
    const char *name = unique_name("atexit");
    char *argv[] = { (char *)th_prog("prog_queue_peer"), (char *)name,
                     "create", NULL };
    char *out = NULL;
    int st = th_run(argv, &out, 20);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_STR(out, "create: CONC_OK\n");
    free(out);
    CHECK(!th_shm_exists(name));
}

/* ---- fault loops ----------------------------------------------------------- */

TEST(queue_new_and_open_fault_loops)
{
    const char *name = unique_name("fault");
    for (int kind = 0; kind < 3; kind++) {
        int failures = 0;
        for (long n = 1;; n++) {
            conc_queue *q = (conc_queue *)1, *creator = NULL;
            if (kind == 2) {
                CHECK_OK(conc_queue_new(&creator,
                                        &(conc_queue_opts){ .name = name }));
            }
            conc__fault_arm(n);
            int err;
            if (kind == 0) {
                err = conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 2 });
            } else if (kind == 1) {
                err = conc_queue_new(&q, &(conc_queue_opts){ .name = name });
            } else {
                err = conc_queue_open(&q, name);
            }
            bool fired = conc__fault_fired();
            conc__fault_arm(0);
            if (!fired) {
                CHECK_OK(err);
                put_str(q, "works");
                get_str(q, "works");
                conc_queue_free(q);
                conc_queue_free(creator);
                CHECK(!th_shm_exists(name));
                break;
            }
            failures++;
            CHECK(err == CONC_ENOMEM || err == CONC_ESYS);
            CHECK(q == NULL);
            if (kind == 1) {
                /* A failed create leaves no name behind. */
                CHECK(!th_shm_exists(name));
            }
            conc_queue_free(creator);
            CHECK(!th_shm_exists(name));
            CHECK(n < 50);
        }
        CHECK(failures >= (kind == 0 ? 2 : 3));
    }
}

/* ---- batches: put_many / get_many ------------------------------------------ */

static void msgs_of(conc_msg *m, char bufs[][32], int n, int from)
{
    for (int i = 0; i < n; i++) {
        snprintf(bufs[i], 32, "msg %d", from + i);
        m[i].data = bufs[i];
        m[i].len = strlen(bufs[i]);
    }
}

TEST(queue_put_many_and_get_many_keep_order)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .capacity_bytes =
                                                        4096 }));
    char bufs[10][32];
    conc_msg in[10], out[10];
    msgs_of(in, bufs, 10, 0);
    in[4].len = 0; /* an empty message in the middle */
    in[4].data = NULL;
    size_t done = 99, got = 99;
    CHECK_OK(conc_queue_put_many(q, in, 10, &done, 0));
    CHECK_EQ(done, 10);
    CHECK_EQ(conc_queue_qsize(q), 10);
    CHECK_OK(conc_queue_get_many(q, out, 4, &got, 0));
    CHECK_EQ(got, 4);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(out[i].len, in[i].len);
        CHECK(memcmp(out[i].data, in[i].data, in[i].len) == 0);
        conc_msg_free(&out[i]);
    }
    /* Up to n: takes what is there, the rest of out zeroed. */
    memset(out, 0x55, sizeof out);
    CHECK_OK(conc_queue_get_many(q, out, 10, &got, 1));
    CHECK_EQ(got, 6);
    for (int i = 0; i < 6; i++) {
        CHECK_EQ(out[i].len, in[4 + i].len);
        CHECK(in[4 + i].len == 0 ? out[i].data == NULL
                                 : memcmp(out[i].data, in[4 + i].data,
                                          in[4 + i].len) == 0);
        conc_msg_free(&out[i]);
    }
    for (int i = 6; i < 10; i++) {
        CHECK(out[i].data == NULL && out[i].len == 0);
    }
    /* Empty: EEMPTY with got 0, after the timeout. */
    double t0 = th_now();
    CHECK_ERR(conc_queue_get_many(q, out, 10, &got, 0.1), CONC_EEMPTY);
    CHECK(th_now() - t0 >= 0.1);
    CHECK_EQ(got, 0);
    CHECK(strstr(conc_errdetail(), "conc_queue_get_many") != NULL);
    CHECK_ERR(conc_queue_get_many(q, out, 1, NULL, 0), CONC_EEMPTY);
    /* n 0 puts nothing and is fine; done may be NULL. */
    CHECK_OK(conc_queue_put_many(q, NULL, 0, &done, 0));
    CHECK_EQ(done, 0);
    CHECK_OK(conc_queue_put_many(q, in, 1, NULL, 0));
    get_str(q, "msg 0");
    /* Mixed with single puts and gets, in one FIFO. */
    put_str(q, "single");
    CHECK_OK(conc_queue_put_many(q, in + 1, 2, &done, 0));
    CHECK_OK(conc_queue_get_many(q, out, 2, &got, 0));
    CHECK_EQ(got, 2);
    CHECK(out[0].len == 6 && memcmp(out[0].data, "single", 6) == 0);
    CHECK(out[1].len == 5 && memcmp(out[1].data, "msg 1", 5) == 0);
    conc_msg_free(&out[0]);
    conc_msg_free(&out[1]);
    get_str(q, "msg 2");
    /* task_done counts batch messages one by one. */
    for (int i = 0; i < 14; i++) {
        CHECK_OK(conc_queue_task_done(q));
    }
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    conc_queue_free(q);
}

TEST(queue_put_many_checks_the_whole_batch_first)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .capacity_bytes = 64 }));
    char bufs[4][32];
    conc_msg in[4];
    msgs_of(in, bufs, 4, 0);
    static char big[65];
    in[3].data = big;
    in[3].len = sizeof big;
    size_t done = 99;
    CHECK_ERR(conc_queue_put_many(q, in, 4, &done, 0), CONC_ETOOBIG);
    CHECK_EQ(done, 0);
    CHECK(strstr(conc_errdetail(), "message 3 is 65 bytes") != NULL);
    CHECK_EQ(conc_queue_qsize(q), 0);
    in[3].data = NULL;
    in[3].len = 1;
    CHECK_ERR(conc_queue_put_many(q, in, 4, &done, 0), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "message 3 has NULL data") != NULL);
    CHECK_EQ(conc_queue_qsize(q), 0);
    CHECK_ERR(conc_queue_put_many(NULL, in, 1, &done, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_put_many(q, NULL, 1, &done, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_put_many(q, in, 1, &done, NAN), CONC_EINVAL);
    conc_msg out[2];
    size_t got = 5;
    CHECK_ERR(conc_queue_get_many(NULL, out, 2, &got, 0), CONC_EINVAL);
    CHECK_EQ(got, 0);
    CHECK_ERR(conc_queue_get_many(q, NULL, 2, &got, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_get_many(q, out, 0, &got, 0), CONC_EINVAL);
    CHECK_ERR(conc_queue_get_many(q, out, 2, &got, -2), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "timeout") != NULL);
    conc_queue_free(q);
}

static int child_gets_three_slowly(void *arg)
{
    conc_queue *q = arg;
    for (int i = 0; i < 3; i++) {
        th_sleep(0.1);
        conc_msg m;
        if (conc_queue_get(q, &m, 5) != 0) {
            return 1;
        }
        conc_msg_free(&m);
    }
    return 0;
}

/* A batch that does not fit stops, when its timeout expires, with what
 * fit, in order; waiting, it goes on as room appears. */
TEST(queue_put_many_stops_at_its_timeout_with_what_fit)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 3 }));
    char bufs[6][32];
    conc_msg in[6], out[6];
    msgs_of(in, bufs, 6, 0);
    size_t done = 99, got;
    CHECK_ERR(conc_queue_put_many(q, in, 5, &done, 0), CONC_EFULL);
    CHECK_EQ(done, 3);
    CHECK(strstr(conc_errdetail(), "conc_queue_put_many") != NULL);
    double t0 = th_now();
    CHECK_ERR(conc_queue_put_many(q, in + 3, 2, &done, 0.2), CONC_EFULL);
    CHECK(th_now() - t0 >= 0.2);
    CHECK_EQ(done, 0);
    CHECK_OK(conc_queue_get_many(q, out, 6, &got, 0));
    CHECK_EQ(got, 3);
    for (int i = 0; i < 3; i++) {
        CHECK(out[i].len == 5 && memcmp(out[i].data, bufs[i], 5) == 0);
        conc_msg_free(&out[i]);
    }
    /* Room comes from a slow consumer in another process: the batch of 6
     * goes in whole, in order. */
    pid_t pid = th_fork(child_gets_three_slowly, q);
    CHECK_OK(conc_queue_put_many(q, in, 6, &done, 10));
    CHECK_EQ(done, 6);
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK_OK(conc_queue_get_many(q, out, 6, &got, 0));
    CHECK_EQ(got, 3);
    for (int i = 0; i < 3; i++) {
        CHECK(memcmp(out[i].data, bufs[3 + i], 5) == 0);
        conc_msg_free(&out[i]);
    }
    conc_queue_free(q);
}

static int child_puts_a_batch_late(void *arg)
{
    conc_queue *q = arg;
    th_sleep(0.2);
    char bufs[5][32];
    conc_msg in[5];
    msgs_of(in, bufs, 5, 100);
    size_t done;
    return conc_queue_put_many(q, in, 5, &done, 5) == 0 && done == 5 ? 0 : 1;
}

static int child_closes_late(void *arg)
{
    th_sleep(0.2);
    return conc_queue_close(arg) == 0 ? 0 : 1;
}

/* get_many sleeps for the first message, then takes what is there; a
 * close wakes a blocked put_many with what went in. */
TEST(queue_get_many_waits_for_the_first_and_close_ends_batches)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 2 }));
    pid_t pid = th_fork(child_puts_a_batch_late, q);
    conc_msg out[8];
    size_t got = 0, done = 0;
    double t0 = th_now();
    CHECK_OK(conc_queue_get_many(q, out, 8, &got, 5));
    CHECK(th_now() - t0 >= 0.15);
    CHECK(got >= 1 && got <= 2);
    CHECK(out[0].len == 7 && memcmp(out[0].data, "msg 100", 7) == 0);
    int next = 100;
    for (;;) {
        for (size_t i = 0; i < got; i++) {
            char want[16];
            snprintf(want, sizeof want, "msg %d", next++);
            CHECK(out[i].len == strlen(want) &&
                  memcmp(out[i].data, want, out[i].len) == 0);
            conc_msg_free(&out[i]);
        }
        if (next == 105) {
            break;
        }
        CHECK_OK(conc_queue_get_many(q, out, 8, &got, 5));
    }
    CHECK_EQ(th_wait(pid, 10), 0);
    /* A put_many blocked on a full queue wakes at close with ECLOSED and
     * says what went in. */
    char bufs[4][32];
    conc_msg in[4];
    msgs_of(in, bufs, 4, 0);
    pid = th_fork(child_closes_late, q);
    CHECK_ERR(conc_queue_put_many(q, in, 4, &done, 10), CONC_ECLOSED);
    CHECK_EQ(done, 2);
    CHECK(strstr(conc_errdetail(), "closed") != NULL);
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK_ERR(conc_queue_put_many(q, in, 1, &done, 0), CONC_ECLOSED);
    CHECK_EQ(done, 0);
    CHECK_OK(conc_queue_get_many(q, out, 8, &got, 0));
    CHECK_EQ(got, 2);
    conc_msg_free(&out[0]);
    conc_msg_free(&out[1]);
    CHECK_ERR(conc_queue_get_many(q, out, 8, &got, 1), CONC_ECLOSED);
    CHECK_EQ(got, 0);
    conc_queue_free(q);
}

/* An allocation that fails after the first message ends the batch: the
 * messages taken are returned, the one not copied stays queued. */
TEST(queue_get_many_out_of_memory_keeps_the_rest)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, NULL));
    put_str(q, "one");
    put_str(q, "two");
    put_str(q, "three");
    conc_msg out[3];
    size_t got = 0;
    conc__fault_arm(2);
    int err = conc_queue_get_many(q, out, 3, &got, 0);
    bool fired = conc__fault_fired();
    conc__fault_arm(0);
    CHECK(fired);
    CHECK_OK(err);
    CHECK_EQ(got, 1);
    CHECK(out[0].len == 3 && memcmp(out[0].data, "one", 3) == 0);
    CHECK(out[1].data == NULL);
    conc_msg_free(&out[0]);
    conc__fault_arm(1);
    err = conc_queue_get_many(q, out, 3, &got, 0);
    conc__fault_arm(0);
    CHECK_ERR(err, CONC_ENOMEM);
    CHECK_EQ(got, 0);
    CHECK(strstr(conc_errdetail(), "conc_queue_get_many: out of memory") !=
          NULL);
    get_str(q, "two");
    get_str(q, "three");
    conc_queue_free(q);
}

/* ---- signals --------------------------------------------------------------- */

static volatile sig_atomic_t signals_seen;
static void on_usr1(int sig)
{
    (void)sig;
    signals_seen++;
}

static int child_signaller(void *arg)
{
    pid_t target = *(pid_t *)arg;
    for (int i = 0; i < 60; i++) {
        kill(target, SIGUSR1);
        th_sleep(0.01);
    }
    return 0;
}

TEST(queue_blocked_calls_survive_signals_with_remaining_time)
{
    struct sigaction sa = { 0 };
    sa.sa_handler = on_usr1; /* no SA_RESTART: futex waits see EINTR */
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 1 }));
    pid_t me = getpid();
    pid_t sig = th_fork(child_signaller, &me);
    conc_msg m;
    double t0 = th_now();
    CHECK_ERR(conc_queue_get(q, &m, 0.3), CONC_EEMPTY);
    double took = th_now() - t0;
    CHECK(took >= 0.3);
    CHECK(took < 3);
    put_str(q, "fill");
    t0 = th_now();
    CHECK_ERR(conc_queue_put(q, "x", 1, 0.2), CONC_EFULL);
    took = th_now() - t0;
    CHECK(took >= 0.2);
    CHECK(took < 2);
    CHECK_EQ(th_wait(sig, 10), 0);
    CHECK(signals_seen > 10);
    /* A blocked get interrupted by signals still gets the late put. */
    get_str(q, "fill");
    signals_seen = 0;
    sig = th_fork(child_signaller, &me);
    pid_t put = th_fork(child_delayed_put, q);
    get_str(q, "late");
    CHECK(signals_seen > 0);
    CHECK_EQ(th_wait(put, 10), 0);
    CHECK_EQ(th_wait(sig, 10), 0);
    conc_queue_free(q);
}

/* ---- dead lock holders (white box) ------------------------------------------ */

enum { DIE_HALF_PUT, DIE_COMMITTED_PUT, DIE_MID_REWIND, DIE_IN_GET,
       DIE_AFTER_NGET };

typedef struct {
    conc_queue *q;
    int how;
} die_arg;

/* Plays a producer or consumer that dies holding its side's lock at a
 * chosen point, by doing by hand what put/get do. */
static int child_dies_holding_lock(void *arg)
{
    die_arg *a = arg;
    conc_queue *q = a->q;
    conc__qshm *sh = q->sh;
    conc__deadline forever;
    conc__deadline_init(&forever, CONC_FOREVER);
    if (a->how == DIE_HALF_PUT || a->how == DIE_COMMITTED_PUT) {
        CHECK_OK(conc__olock_acquire(&sh->pmu, &forever));
        uint64_t t = atomic_load(&sh->tail);
        uint64_t n = atomic_load(&sh->nput);
        conc__qrec *r = (conc__qrec *)(void *)(q->ring + t % q->R);
        memcpy(q->ring + (t + 16) % q->R, "dead", 4);
        atomic_store(&r->len, 4);
        atomic_store(&r->item, (uint32_t)n);
        if (a->how == DIE_COMMITTED_PUT) {
            atomic_store(&r->stamp, t ^ q->key);
        }
    } else if (a->how == DIE_MID_REWIND) {
        /* A producer rewinding the empty queue to the next lap's start
         * (wrap_early) holds both locks and has moved head, not tail. */
        CHECK_OK(conc__olock_acquire(&sh->pmu, &forever));
        CHECK_OK(conc__olock_acquire(&sh->cmu, &forever));
        uint64_t t = atomic_load(&sh->tail);
        CHECK_EQ(atomic_load(&sh->head), t);
        atomic_store(&sh->head_off, 0);
        atomic_store(&sh->head, t + q->R - t % q->R);
    } else {
        CHECK_OK(conc__olock_acquire(&sh->cmu, &forever));
        if (a->how == DIE_AFTER_NGET) {
            atomic_fetch_add(&sh->nget, 1);
        }
    }
    _exit(0); /* the lock word still names this dead thread */
}

TEST(queue_repairs_after_a_dead_lock_holder)
{
    for (int how = DIE_HALF_PUT; how <= DIE_AFTER_NGET; how++) {
        conc_queue *q;
        CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){
                                        .capacity_bytes = 256 }));
        /* Move off ring offset 0 so repairs meet a used ring. */
        for (int i = 0; i < 5; i++) {
            put_str(q, "warm-up message");
            get_str(q, "warm-up message");
            CHECK_OK(conc_queue_task_done(q));
        }
        if (how >= DIE_IN_GET) {
            put_str(q, "taken?");
        }
        die_arg a = { q, how };
        pid_t pid = th_fork(child_dies_holding_lock, &a);
        CHECK_EQ(th_wait(pid, 10), 0);
        double t0 = th_now();
        put_str(q, "after");
        if (how == DIE_COMMITTED_PUT) {
            get_str(q, "dead");
        }
        if (how >= DIE_IN_GET) {
            /* The dead consumer never returned it: delivered again. */
            get_str(q, "taken?");
        }
        get_str(q, "after");
        CHECK(th_now() - t0 < 2);
        conc_msg m;
        CHECK_ERR(conc_queue_get(q, &m, 0), CONC_EEMPTY);
        CHECK_EQ(conc_queue_qsize(q), 0);
        /* The counts agree: one task_done per message put, no more. */
        int puts = how == DIE_COMMITTED_PUT || how >= DIE_IN_GET ? 2 : 1;
        for (int i = 0; i < puts; i++) {
            CHECK_OK(conc_queue_task_done(q));
        }
        CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
        CHECK_OK(conc_queue_join(q, 0));
        /* And it goes on working, wrapping the small ring. */
        for (int i = 0; i < 50; i++) {
            put_str(q, "still fine, thanks");
            get_str(q, "still fine, thanks");
        }
        conc_queue_free(q);
    }
}

static int child_sleeps_in_get(void *arg)
{
    conc_msg m;
    conc_queue_get(arg, &m, 30);
    return 1;
}

TEST(queue_killed_sleeping_getter_costs_nothing)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, NULL));
    pid_t pid = th_fork(child_sleeps_in_get, q);
    double until = th_now() + 10; /* a loaded machine may start it late */
    while (!(atomic_load(&q->sh->data_seq) & 1u) && th_now() < until) {
        th_sleep(0.01);
    }
    th_sleep(0.05);
    CHECK(atomic_load(&q->sh->data_seq) & 1u);
    kill(pid, SIGKILL);
    int st = th_wait(pid, 10);
    CHECK(WIFSIGNALED(st));
    /* The next put clears the sleeper bit; later puts pay no wake. */
    put_str(q, "a");
    CHECK(!(atomic_load(&q->sh->data_seq) & 1u));
    get_str(q, "a");
    pid = th_fork(child_delayed_put, q);
    get_str(q, "late");
    CHECK_EQ(th_wait(pid, 10), 0);
    conc_queue_free(q);
}

TEST(queue_get_out_of_memory_leaves_message)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, NULL));
    put_str(q, "precious");
    conc_msg m = { (void *)1, 5 };
    conc__fault_arm(1);
    int err = conc_queue_get(q, &m, 0);
    bool fired = conc__fault_fired();
    conc__fault_arm(0);
    CHECK(fired);
    CHECK_ERR(err, CONC_ENOMEM);
    CHECK(m.data == NULL && m.len == 0);
    CHECK_EQ(conc_queue_qsize(q), 1);
    get_str(q, "precious");
    /* A 0-byte message needs no allocation. */
    CHECK_OK(conc_queue_put(q, NULL, 0, 0));
    conc__fault_arm(1);
    err = conc_queue_get(q, &m, 0);
    conc__fault_arm(0);
    CHECK_OK(err);
    CHECK(m.data == NULL && m.len == 0);
    conc_queue_free(q);
}

/* ---- fork while threads hammer the queue ----------------------------------
 * Only the forking thread survives in a child.  A side lock another parent
 * thread held at that instant is the same word in the shared mapping: it
 * names that thread, which runs on in the parent and releases it, and the
 * child sees the release. */

/* ThreadSanitizer sees synchronisation between threads but not what
 * passes through another process: a hammer thread's read of ring bytes
 * and the other's later write of them, ordered only by the child's get
 * and put in between (its store of head, or the head_cache it left under
 * pmu), look like a race to it.  So under TSan the fork still happens
 * while the threads hammer, but the child uses the queue only while the
 * threads wait at a pause point (an ordering TSan sees: everything the
 * threads did before the pause happens before what they do after it). */
#if defined(__SANITIZE_THREAD__)
#define CHILD_ALONE true
#else
#define CHILD_ALONE false
#endif

typedef struct {
    conc_queue *q;
    _Atomic int *stop;
    int bad;
    _Atomic int *pause;  /* CHILD_ALONE: set while the child runs */
    _Atomic int *paused; /* threads waiting at the pause point, or gone */
} hammer_arg;

static void hammer_pause_point(hammer_arg *a)
{
    if (!atomic_load(a->pause)) {
        return;
    }
    atomic_fetch_add(a->paused, 1);
    while (atomic_load(a->pause)) {
        sched_yield();
    }
    atomic_fetch_sub(a->paused, 1);
}

typedef struct {
    conc_queue *q;
    _Atomic int *go; /* shared: the child may use the queue */
} fork_child_arg;

static bool token_ok(const unsigned char *p, size_t n)
{
    /* "T" + 63 pattern bytes from a thread, "C" + 31 from a child. */
    return (n == 64 && p[0] == 'T' && pattern_ok(p + 1, 63, 'T')) ||
           (n == 32 && p[0] == 'C' && pattern_ok(p + 1, 31, 'C'));
}

static void *hammer_thread(void *arg)
{
    hammer_arg *a = arg;
    unsigned char msg[64], got[64];
    msg[0] = 'T';
    pattern(msg + 1, 63, 'T');
    while (!atomic_load(a->stop)) {
        size_t n;
        if (conc_queue_put(a->q, msg, sizeof msg, 5) != 0 ||
            conc_queue_get_into(a->q, got, sizeof got, &n, 5) != 0 ||
            !token_ok(got, n)) {
            a->bad++;
            atomic_fetch_add(a->paused, 1); /* never pauses again */
            return NULL;
        }
        /* malloc traffic too: glibc's fork must leave its locks usable. */
        free(malloc(n * 16));
        hammer_pause_point(a);
    }
    atomic_fetch_add(a->paused, 1);
    return NULL;
}

static int fork_child_uses_queue(void *arg)
{
    fork_child_arg *c = arg;
    conc_queue *q = c->q;
    while (!atomic_load(c->go)) {
        sched_yield();
    }
    unsigned char msg[32], got[64];
    msg[0] = 'C';
    pattern(msg + 1, 31, 'C');
    for (int i = 0; i < 200; i++) {
        size_t n;
        if (conc_queue_put(q, msg, sizeof msg, 5) != 0) {
            return 1;
        }
        if (conc_queue_get_into(q, got, sizeof got, &n, 5) != 0 ||
            !token_ok(got, n)) {
            return 2;
        }
        free(malloc(100));
    }
    return 0;
}

TEST(queue_fork_while_threads_hammer_it)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .capacity_bytes =
                                                         4096 }));
    _Atomic int stop = 0, pause = 0, paused = 0;
    _Atomic int *go = shared_map(sizeof *go);
    hammer_arg a[2] = { { q, &stop, 0, &pause, &paused },
                        { q, &stop, 0, &pause, &paused } };
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_create(&t[i], NULL, hammer_thread, &a[i]) == 0);
    }
    fork_child_arg c = { q, go };
    for (int i = 0; i < 20; i++) {
        th_sleep(0.005);
        atomic_store(go, !CHILD_ALONE);
        pid_t pid = th_fork(fork_child_uses_queue, &c);
        if (CHILD_ALONE) {
            atomic_store(&pause, 1);
            while (atomic_load(&paused) < 2) {
                sched_yield();
            }
            atomic_store(go, 1);
        }
        CHECK_EQ(th_wait(pid, 20), 0);
        atomic_store(&pause, 0);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(a[i].bad, 0);
    }
    /* Every put was matched by a get: nothing left, nothing missing. */
    CHECK_EQ(conc_queue_qsize(q), 0);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0), CONC_EEMPTY);
    conc_queue_free(q);
    munmap((void *)go, sizeof *go);
}

/* ---- guards that a slice would otherwise hide ---------------------------- */

/* A consumer died holding cmu after counting its get in nget but before
 * moving head: the message is still there.  The repair restores nget, so
 * before any get takes a message, qsize, full and a put all see the
 * queue as full.  (A get right after the repair would rewrite nget and
 * hide a repair that forgot it; the too-small get_into below takes the
 * lock, and so runs the repair, without taking anything.) */
TEST(queue_consumer_repair_restores_counts_before_any_get)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 3 }));
    put_str(q, "one");
    put_str(q, "two");
    put_str(q, "three");
    die_arg a = { q, DIE_AFTER_NGET };
    pid_t pid = th_fork(child_dies_holding_lock, &a);
    CHECK_EQ(th_wait(pid, 10), 0);
    char small[1];
    size_t len = 0;
    CHECK_ERR(conc_queue_get_into(q, small, 0, &len, 5), CONC_ETOOBIG);
    CHECK_EQ(len, 3);
    CHECK_EQ(conc_queue_qsize(q), 3);
    CHECK(conc_queue_full(q));
    CHECK(!conc_queue_empty(q));
    CHECK_ERR(conc_queue_put(q, "four", 4, 0), CONC_EFULL);
    get_str(q, "one");
    get_str(q, "two");
    get_str(q, "three");
    CHECK_EQ(conc_queue_qsize(q), 0);
    conc_queue_free(q);
}

typedef struct {
    conc_queue *q;
    _Atomic int result;     /* 0 running, 1 ECLOSED, 2 anything else */
    _Atomic double returned;
} close_waiter;

static void *close_waiter_thread(void *arg)
{
    close_waiter *w = arg;
    conc_msg m;
    int err = conc_queue_get(w->q, &m, 20);
    atomic_store(&w->returned, th_now());
    atomic_store(&w->result, err == CONC_ECLOSED ? 1 : 2);
    return NULL;
}

/* close() wakes a getter asleep on an empty queue at once, not at the end
 * of its 100 ms sleep slice.  40 rounds, each closing at a varied phase of
 * the slice (2..98 ms after the getter fell asleep): the getters' total
 * delay must stay far below the ~2 s that slice ends would cost. */
TEST(queue_close_wakes_a_sleeping_getter_at_once)
{
    double total = 0;
    unsigned seed = (unsigned)getpid();
    for (int r = 0; r < 40; r++) {
        close_waiter w = { 0 };
        CHECK_OK(conc_queue_new(&w.q, &(conc_queue_opts){
                                          .capacity_bytes = 4096 }));
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, close_waiter_thread, &w), 0);
        double end = th_now() + 10;
        /* Bit 0 of data_seq: a getter is about to sleep or asleep. */
        while ((atomic_load(&w.q->sh->data_seq) & 1) == 0) {
            CHECK(th_now() < end);
            th_sleep(0.0002);
        }
        th_sleep(0.002 + (double)(rand_r(&seed) % 96) / 1000);
        double closed = th_now();
        CHECK_OK(conc_queue_close(w.q));
        CHECK_EQ(pthread_join(t, NULL), 0);
        CHECK_EQ(atomic_load(&w.result), 1);
        total += atomic_load(&w.returned) - closed;
        conc_queue_free(w.q);
    }
    CHECK(total < 0.5);
}

/* ---- a full queue whose readers have all exited ---------------------------- */

static int reader_takes_one_and_exits(void *arg)
{
    conc_msg m;
    int err = conc_queue_get(arg, &m, 10);
    conc_msg_free(&m);
    return err == 0 ? 0 : 1;
}

static int reader_waits_then_takes_one(void *arg)
{
    th_sleep(0.4);
    return reader_takes_one_and_exits(arg);
}

/* A queue of maxsize 2, full ("second", "third"), whose one reader
 * took "first" and exited. */
static conc_queue *full_queue_whose_reader_left(void)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 2 }));
    put_str(q, "first");
    pid_t pid = th_fork(reader_takes_one_and_exits, q);
    CHECK_EQ(th_wait(pid, 10), 0);
    put_str(q, "second");
    put_str(q, "third");
    return q;
}

/* A supervisor that restarts a dead consumer: a put blocked while no
 * reader is alive waits a grace of a second for a new one, so a
 * replacement whose first get comes 0.4 s after the last reader died
 * makes room, and the put goes in (it must not give up at the first
 * sleep slice that finds the readers gone). */
TEST(queue_put_blocked_waits_for_a_restarted_reader)
{
    conc_queue *q = full_queue_whose_reader_left();
    pid_t pid = th_fork(reader_waits_then_takes_one, q);
    CHECK_OK(conc_queue_put(q, "fourth", 6, 30));
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK_EQ(conc_queue_qsize(q), 2);
    conc_queue_free(q);
}

/* Python's producers block for ever when every consumer died; here a put
 * blocked on a full queue gives up with CONC_ECLOSED once every process
 * that read from the queue has exited, and says why. */
TEST(queue_put_blocked_ends_when_every_reader_has_exited)
{
    conc_queue *q = full_queue_whose_reader_left();
    CHECK(conc_queue_full(q));
    double t0 = th_now();
    CHECK_ERR(conc_queue_put(q, "fourth", 6, CONC_FOREVER), CONC_ECLOSED);
    CHECK(th_now() - t0 < 5);
    CHECK(strstr(conc_errdetail(), "every process that read from it has "
                                   "exited") != NULL);
    /* Nothing went in, nothing was lost; a batch says how much went in. */
    CHECK_EQ(conc_queue_qsize(q), 2);
    const conc_msg two[2] = { { "a", 1 }, { "b", 1 } };
    size_t done = 99;
    CHECK_ERR(conc_queue_put_many(q, two, 2, &done, 10), CONC_ECLOSED);
    CHECK_EQ(done, 0);
    /* A new reader (this process) makes room and puts work again. */
    get_str(q, "second");
    put_str(q, "fourth");
    get_str(q, "third");
    get_str(q, "fourth");
    conc_queue_free(q);
}

static int reader_sleeps_then_takes(void *arg)
{
    conc_msg m;
    size_t len;
    /* Registers with a get that takes nothing (no room for the message),
     * then stays alive. */
    if (conc_queue_get_into(arg, NULL, 0, &len, 0) != CONC_ETOOBIG) {
        return 1;
    }
    th_sleep(1.0);
    int err = conc_queue_get(arg, &m, 10);
    conc_msg_free(&m);
    return err == 0 ? 0 : 2;
}

/* Without a reader that ever read, or with one alive, a full queue's put
 * waits as Python's does: CONC_EFULL at its timeout, or room when the
 * reader takes. */
TEST(queue_put_blocked_waits_while_a_reader_lives_or_none_ever_read)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 1 }));
    put_str(q, "one");
    CHECK_ERR(conc_queue_put(q, "two", 3, 0.3), CONC_EFULL);
    pid_t pid = th_fork(reader_sleeps_then_takes, q);
    th_sleep(0.2);
    CHECK_ERR(conc_queue_put(q, "two", 3, 0.3), CONC_EFULL);
    CHECK_OK(conc_queue_put(q, "two", 3, 10)); /* the reader took "one" */
    CHECK_EQ(th_wait(pid, 10), 0);
    get_str(q, "two");
    conc_queue_free(q);
}
