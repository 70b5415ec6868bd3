/* test_pool_progress.c - what a pool tells about its progress and its
 * workers: conc_iter_progress on imap, imap_unordered and as_completed
 * iterators; the fed imaps (inputs taken from a conc_feed_fn as results
 * are consumed, in bounded memory, with the feed's failures reported
 * after the results before them); conc_pool_worker_info (pids, thread
 * ids, states, counts, names) for both kinds of worker. */
#include "pool_tasks.h"

#include "os.h"

#include <stdatomic.h>
#include <sys/mman.h>

static conc_pool *mk(conc_pool_kind kind, size_t workers)
{
    conc_pool *p = NULL;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .kind = kind,
                                                  .workers = workers }));
    return p;
}

/* A gate the tasks wait at, in memory the process workers share. */
static _Atomic int *gate;

static void gate_make(void)
{
    gate = mmap(NULL, sizeof *gate, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(gate != MAP_FAILED);
    atomic_store(gate, 0);
}

static void gate_free(void)
{
    munmap((void *)gate, sizeof *gate);
}

/* waits at the gate (at most 20 s), then squares its input */
static int t_gated(const void *in, size_t len, conc_buf *out, void *ctx)
{
    for (double end = th_now() + 20; atomic_load(gate) == 0;) {
        if (th_now() > end) {
            return 77;
        }
        th_sleep(0.001);
    }
    return t_square(in, len, out, ctx);
}

static conc_progress progress(const conc_iter *it)
{
    conc_progress pr;
    CHECK_OK(conc_iter_progress(it, &pr));
    CHECK_EQ(pr.remaining, pr.total - pr.done);
    CHECK(pr.done <= pr.total && pr.returned <= pr.done);
    return pr;
}

/* Polls until the iterator counts want items done (at most 20 s). */
static conc_progress progress_until_done(const conc_iter *it, size_t want)
{
    for (double end = th_now() + 20;;) {
        conc_progress pr = progress(it);
        if (pr.done >= want) {
            return pr;
        }
        CHECK(th_now() < end);
        th_sleep(0.001);
    }
}

/* ---- progress counts ----------------------------------------------------- */

/* imap, imap_unordered: done counts results that are in, returned those
 * handed out, remaining the rest; nothing is done while the gate holds
 * every task. */
static void map_progress(conc_pool_kind kind, bool ordered)
{
    gate_make();
    conc_pool *p = mk(kind, 2);
    enum { N = 20 };
    int v[N];
    conc_msg in[N];
    for (int i = 0; i < N; i++) {
        v[i] = i;
        in[i] = (conc_msg){ &v[i], sizeof v[i] };
    }
    conc_iter *it;
    if (ordered) {
        CHECK_OK(conc_pool_imap(p, t_gated, in, N, &it, NULL));
    } else {
        CHECK_OK(conc_pool_imap_unordered(p, t_gated, in, N, &it, NULL));
    }
    conc_progress pr = progress(it);
    CHECK_EQ(pr.total, N);
    CHECK_EQ(pr.done, 0);
    CHECK_EQ(pr.remaining, N);
    CHECK_EQ(pr.returned, 0);
    CHECK(pr.total_known);
    atomic_store(gate, 1);
    pr = progress_until_done(it, N);
    CHECK_EQ(pr.done, N);
    CHECK_EQ(pr.remaining, 0);
    CHECK_EQ(pr.returned, 0);
    conc_msg m;
    for (int i = 0; i < N; i++) {
        CHECK_OK(conc_iter_next(it, &m, 30));
        conc_msg_free(&m);
        pr = progress(it);
        CHECK_EQ(pr.returned, i + 1);
        CHECK_EQ(pr.done, N);
    }
    CHECK_ERR(conc_iter_next(it, &m, 0), CONC_ECLOSED);
    CHECK_EQ(progress(it).returned, N);
    conc_iter_free(it);
    conc_pool_free(p);
    gate_free();
}

TEST(imap_progress_threads) { map_progress(CONC_THREADS, true); }
TEST(imap_progress_processes) { map_progress(CONC_PROCESSES, true); }
TEST(imap_unordered_progress_threads) { map_progress(CONC_THREADS, false); }
TEST(imap_unordered_progress_processes)
{
    map_progress(CONC_PROCESSES, false);
}

TEST(as_completed_progress)
{
    gate_make();
    conc_pool *p = mk(CONC_PROCESSES, 2);
    conc_future *f[4];
    for (int i = 0; i < 4; i++) {
        CHECK_OK(conc_pool_submit(p, t_gated, &i, sizeof i, &f[i]));
    }
    conc_iter *it;
    CHECK_OK(conc_as_completed(f, 4, CONC_FOREVER, &it));
    conc_progress pr = progress(it);
    CHECK_EQ(pr.total, 4);
    CHECK_EQ(pr.done, 0);
    CHECK_EQ(pr.returned, 0);
    CHECK(pr.total_known);
    atomic_store(gate, 1);
    /* as_completed's counts move as futures complete: wait on them */
    CHECK_OK(conc_wait(f, 4, 30, CONC_ALL_COMPLETED));
    pr = progress_until_done(it, 4);
    CHECK_EQ(pr.remaining, 0);
    conc_future *g;
    CHECK_OK(conc_iter_next_future(it, &g, 30));
    CHECK_OK(conc_iter_next_future(it, &g, 30));
    CHECK_EQ(progress(it).returned, 2);
    conc_iter_free(it);
    for (int i = 0; i < 4; i++) {
        conc_future_free(f[i]);
    }
    conc_pool_free(p);
    gate_free();
}

TEST(progress_bad_arguments)
{
    conc_progress pr;
    CHECK_ERR(conc_iter_progress(NULL, &pr), CONC_EINVAL);
    conc_pool *p = mk(CONC_THREADS, 1);
    conc_iter *it;
    CHECK_OK(conc_pool_imap(p, t_square, NULL, 0, &it, NULL));
    CHECK_ERR(conc_iter_progress(it, NULL), CONC_EINVAL);
    pr = progress(it);
    CHECK_EQ(pr.total, 0);
    CHECK(pr.total_known);
    conc_iter_free(it);
    conc_pool_free(p);
}

/* ---- fed imaps ----------------------------------------------------------- */

/* A feed of ints 0, 1, ... (limit < 0: endless) that checks it is never
 * asked for an input while the iterator holds bound of them already:
 * returned is kept by the consumer (the feed runs in its thread). */
struct counter {
    int next, limit;
    size_t returned, bound, max_held;
    int fail_at, fail_code; /* at input fail_at, return fail_code */
    size_t big_at, big_len; /* input big_at is big_len bytes */
    unsigned char *big;
};

static int feed_counter(void *arg, const void **data, size_t *len)
{
    struct counter *c = arg;
    size_t held = (size_t)c->next - c->returned;
    if (held > c->max_held) {
        c->max_held = held;
    }
    if (c->limit >= 0 && c->next >= c->limit) {
        return 0;
    }
    if (c->fail_code != 0 && c->next == c->fail_at) {
        return c->fail_code;
    }
    if (c->big != NULL && (size_t)c->next == c->big_at) {
        c->next++;
        *data = c->big;
        *len = c->big_len;
        return 1;
    }
    static _Thread_local int buf; /* reused: the pool copies it */
    buf = c->next++;
    *data = &buf;
    *len = sizeof buf;
    return 1;
}

/* In order, lazily: exactly buffersize inputs are taken before the first
 * result is asked for, never more are held, and every result comes with
 * its input's index. */
static void feed_ordered(conc_pool_kind kind)
{
    conc_pool *p = mk(kind, 2);
    struct counter c = { .limit = 300 };
    conc_iter *it;
    CHECK_OK(conc_pool_imap_feed(p, t_square, feed_counter, &c, &it,
                                 &(conc_map_opts){ .buffersize = 8 }));
    CHECK_EQ(c.next, 8);
    conc_progress pr = progress(it);
    CHECK_EQ(pr.total, 8);
    CHECK(!pr.total_known);
    conc_msg m;
    for (int i = 0; i < 300; i++) {
        CHECK_OK(conc_iter_next(it, &m, 30));
        CHECK_EQ(int_out(&m), i * i);
        CHECK_EQ(conc_iter_index(it), i);
        conc_msg_free(&m);
        c.returned++;
        CHECK(c.next - (int)c.returned <= 8);
    }
    CHECK_ERR(conc_iter_next(it, &m, 1), CONC_ECLOSED);
    CHECK_ERR(conc_iter_next(it, &m, 0), CONC_ECLOSED);
    CHECK(c.max_held <= 8);
    pr = progress(it);
    CHECK_EQ(pr.total, 300);
    CHECK_EQ(pr.done, 300);
    CHECK_EQ(pr.returned, 300);
    CHECK(pr.total_known);
    conc_iter_free(it);
    conc_pool_free(p);
}

TEST(imap_feed_in_order_bounded_threads) { feed_ordered(CONC_THREADS); }
TEST(imap_feed_in_order_bounded_processes) { feed_ordered(CONC_PROCESSES); }

/* Completion order, chunks of 3 with buffersize 7 rounded up to 9; the
 * last chunk is short. */
static void feed_unordered(conc_pool_kind kind)
{
    conc_pool *p = mk(kind, 2);
    struct counter c = { .limit = 100 };
    conc_iter *it;
    CHECK_OK(conc_pool_imap_unordered_feed(
        p, t_square, feed_counter, &c, &it,
        &(conc_map_opts){ .chunksize = 3, .buffersize = 7 }));
    CHECK_EQ(c.next, 9);
    bool seen[100] = { false };
    conc_msg m;
    for (int i = 0; i < 100; i++) {
        CHECK_OK(conc_iter_next(it, &m, 30));
        size_t k = conc_iter_index(it);
        CHECK(k < 100 && !seen[k]);
        seen[k] = true;
        CHECK_EQ(int_out(&m), (int)(k * k));
        conc_msg_free(&m);
        c.returned++;
    }
    CHECK_ERR(conc_iter_next(it, &m, 0), CONC_ECLOSED);
    CHECK(c.max_held <= 9);
    CHECK_EQ(progress(it).total, 100);
    conc_iter_free(it);
    conc_pool_free(p);
}

TEST(imap_unordered_feed_threads) { feed_unordered(CONC_THREADS); }
TEST(imap_unordered_feed_processes) { feed_unordered(CONC_PROCESSES); }

/* An endless feed: read only as fast as results are consumed; freeing
 * the iterator with tasks out leaks nothing. */
TEST(imap_feed_endless)
{
    conc_pool *p = mk(CONC_PROCESSES, 2);
    for (int ordered = 0; ordered < 2; ordered++) {
        struct counter c = { .limit = -1 };
        conc_iter *it;
        conc_map_opts o = { .chunksize = 2, .buffersize = 10 };
        CHECK_OK(ordered ? conc_pool_imap_feed(p, t_square, feed_counter, &c,
                                               &it, &o)
                         : conc_pool_imap_unordered_feed(p, t_square,
                                                         feed_counter, &c,
                                                         &it, &o));
        conc_msg m;
        for (int i = 0; i < 200; i++) {
            CHECK_OK(conc_iter_next(it, &m, 30));
            conc_msg_free(&m);
            c.returned++;
        }
        CHECK(c.next <= 200 + 10);
        CHECK(c.max_held <= 10);
        conc_progress pr = progress(it);
        CHECK(!pr.total_known);
        CHECK_EQ(pr.total, (size_t)c.next);
        conc_iter_free(it);
    }
    conc_pool_free(p);
}

/* A feed that fails: the inputs before still run and are returned, then
 * the feed's code once, with a detail, then CONC_ECLOSED.  A feed that
 * fails at once fails the call. */
static void feed_fails(conc_pool_kind kind)
{
    conc_pool *p = mk(kind, 2);
    struct counter c = { .limit = 100, .fail_at = 10, .fail_code = -7 };
    conc_iter *it;
    CHECK_OK(conc_pool_imap_feed(p, t_square, feed_counter, &c, &it,
                                 &(conc_map_opts){ .chunksize = 4,
                                                   .buffersize = 8 }));
    conc_msg m;
    for (int i = 0; i < 10; i++) {
        CHECK_OK(conc_iter_next(it, &m, 30));
        CHECK_EQ(int_out(&m), i * i);
        conc_msg_free(&m);
        c.returned++;
    }
    CHECK_ERR(conc_iter_next(it, &m, 30), -7);
    CHECK(strstr(conc_errdetail(), "conc_iter_next: the feed returned -7 "
                                   "for input 10") != NULL);
    CHECK_ERR(conc_iter_next(it, &m, 30), CONC_ECLOSED);
    conc_progress pr = progress(it);
    CHECK_EQ(pr.total, 10);
    CHECK(pr.total_known);
    conc_iter_free(it);
    /* at once: the call fails, no iterator */
    c = (struct counter){ .limit = 100, .fail_at = 0, .fail_code = 3 };
    it = (conc_iter *)&c;
    CHECK_ERR(conc_pool_imap_unordered_feed(p, t_square, feed_counter, &c,
                                            &it, NULL),
              3);
    CHECK(it == NULL);
    CHECK(strstr(conc_errdetail(), "conc_pool_imap_unordered_feed: the feed "
                                   "returned 3 for input 0") != NULL);
    /* an empty feed: an iterator that is done at once */
    c = (struct counter){ .limit = 0 };
    CHECK_OK(conc_pool_imap_feed(p, t_square, feed_counter, &c, &it, NULL));
    CHECK_ERR(conc_iter_next(it, &m, 1), CONC_ECLOSED);
    pr = progress(it);
    CHECK_EQ(pr.total, 0);
    CHECK(pr.total_known);
    conc_iter_free(it);
    conc_pool_free(p);
}

TEST(imap_feed_fails_threads) { feed_fails(CONC_THREADS); }
TEST(imap_feed_fails_processes) { feed_fails(CONC_PROCESSES); }

/* An input over max_message_bytes stops the feed with CONC_ETOOBIG. */
TEST(imap_feed_input_too_big)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 1,
                                                  .max_message_bytes = 4096 }));
    static unsigned char big[5000];
    struct counter c = { .limit = 10, .big = big, .big_at = 3,
                         .big_len = sizeof big };
    conc_iter *it;
    CHECK_OK(conc_pool_imap_feed(p, t_square, feed_counter, &c, &it, NULL));
    conc_msg m;
    for (int i = 0; i < 3; i++) {
        CHECK_OK(conc_iter_next(it, &m, 30));
        CHECK_EQ(int_out(&m), i * i);
        conc_msg_free(&m);
        c.returned++;
    }
    CHECK_ERR(conc_iter_next(it, &m, 30), CONC_ETOOBIG);
    CHECK(strstr(conc_errdetail(), "input 3 of the feed is 5000 bytes, over "
                                   "the pool's max_message_bytes (4096)"));
    CHECK_ERR(conc_iter_next(it, &m, 30), CONC_ECLOSED);
    conc_iter_free(it);
    conc_pool_free(p);
}

/* The pool stops under a feed: the queued items are cancelled, the feed
 * then fails with CONC_ESTATE once, the iterator ends; the iterator
 * outlives the pool. */
TEST(imap_feed_pool_terminated)
{
    gate_make();
    conc_pool *p = mk(CONC_PROCESSES, 2);
    struct counter c = { .limit = -1 };
    conc_iter *it;
    CHECK_OK(conc_pool_imap_feed(p, t_gated, feed_counter, &c, &it,
                                 &(conc_map_opts){ .buffersize = 6 }));
    CHECK_OK(conc_pool_terminate(p));
    conc_pool_free(p);
    atomic_store(gate, 1);
    int cancelled = 0, estate = 0, closed = 0;
    conc_msg m;
    for (int i = 0; i < 20 && closed == 0; i++) {
        int err = conc_iter_next(it, &m, 30);
        conc_msg_free(&m);
        if (err == CONC_ECANCELLED) {
            cancelled++;
        } else if (err == CONC_ESTATE) {
            estate++;
            CHECK(strstr(conc_errdetail(), "could not be queued"));
        } else {
            CHECK_ERR(err, CONC_ECLOSED);
            closed++;
        }
    }
    CHECK_EQ(cancelled, 6);
    CHECK_EQ(estate, 1);
    CHECK_EQ(closed, 1);
    conc_iter_free(it);
    gate_free();
}

TEST(imap_feed_bad_arguments)
{
    conc_pool *p = mk(CONC_THREADS, 1);
    struct counter c = { .limit = 1 };
    conc_iter *it;
    CHECK_ERR(conc_pool_imap_feed(NULL, t_square, feed_counter, &c, &it,
                                  NULL),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "conc_pool_imap_feed: pool is NULL"));
    CHECK_ERR(conc_pool_imap_feed(p, NULL, feed_counter, &c, &it, NULL),
              CONC_EINVAL);
    CHECK_ERR(conc_pool_imap_unordered_feed(p, t_square, NULL, &c, &it,
                                            NULL),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(),
                 "conc_pool_imap_unordered_feed: feed is NULL"));
    CHECK_ERR(conc_pool_imap_feed(p, t_square, feed_counter, &c, NULL, NULL),
              CONC_EINVAL);
    CHECK_ERR(conc_pool_imap_feed(p, t_square, feed_counter, &c, &it,
                                  &(conc_map_opts){ .buffersize =
                                                        (size_t)1 << 25 }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "buffersize 33554432"));
    CHECK(it == NULL);
    CHECK_EQ(c.next, 0);
    conc_pool_free(p);
}

/* Allocation failures in a fed imap, at its start and in its feed: each
 * is CONC_ENOMEM with a detail, once, after the results before it;
 * nothing leaks (the ASan flavour and the harness watch). */
TEST(imap_feed_fault_injection)
{
    conc_pool *p = mk(CONC_THREADS, 2);
    long n;
    for (n = 1; n < 200; n++) {
        struct counter c = { .limit = 20 };
        conc_iter *it = NULL;
        CHECK_ERR(conc_pool_close(NULL), CONC_EINVAL); /* a stale detail */
        conc__fault_arm(n);
        int err = conc_pool_imap_feed(p, t_square, feed_counter, &c, &it,
                                      &(conc_map_opts){ .chunksize = 2,
                                                        .buffersize = 4 });
        bool hit = conc__fault_fired();
        if (err != 0) {
            conc__fault_arm(0);
            CHECK(hit);
            CHECK_ERR(err, CONC_ENOMEM);
            CHECK(strncmp(conc_errdetail(), "conc_pool_imap_feed: ", 21) ==
                  0);
            CHECK(it == NULL);
            continue;
        }
        /* the seam stays armed while results are consumed */
        int failures = 0, got = 0;
        for (;;) {
            conc_msg m;
            CHECK_ERR(conc_pool_close(NULL), CONC_EINVAL);
            err = conc_iter_next(it, &m, 30);
            conc_msg_free(&m);
            if (err == CONC_ECLOSED) {
                break;
            }
            c.returned++;
            if (err == 0) {
                got++;
            } else {
                /* the feed's failure, or a result that failed for want of
                 * memory (a worker thread shares the seam) */
                CHECK(err == CONC_ENOMEM || err == CONC_ETASK);
                if (strncmp(conc_errdetail(), "conc_iter_next: ", 16) != 0) {
                    th_fail(__FILE__, __LINE__, "err %d detail '%s'", err,
                            conc_errdetail());
                }
                failures++;
            }
        }
        hit = hit || conc__fault_fired();
        conc__fault_arm(0);
        conc_iter_free(it);
        if (!hit) {
            CHECK_EQ(got, 20);
            CHECK_EQ(failures, 0);
            break;
        }
    }
    CHECK(n > 5);
    conc_pool_free(p);
}

/* ---- worker info --------------------------------------------------------- */

static int init_slow(void *arg, void **ctx)
{
    (void)arg;
    *ctx = NULL;
    th_sleep(0.3);
    return 0;
}

static size_t count_state(conc_pool *p, conc_worker_state st,
                          conc_worker_info *w, size_t n)
{
    size_t got = 0;
    CHECK_OK(conc_pool_worker_info(p, w, n, &got));
    CHECK_EQ(got, n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        k += w[i].state == st;
    }
    return k;
}

/* Polls until want workers of n are in state st (at most 20 s). */
static void until_state(conc_pool *p, conc_worker_state st, size_t want,
                        conc_worker_info *w, size_t n)
{
    for (double end = th_now() + 20;
         count_state(p, st, w, n) != want;) {
        CHECK(th_now() < end);
        th_sleep(0.002);
    }
}

static void worker_info(conc_pool_kind kind)
{
    gate_make();
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .kind = kind,
                                                  .workers = 3,
                                                  .initializer = init_slow,
                                                  .name_prefix = "w" }));
    conc_worker_info w[4];
    size_t n = 0;
    /* the initializers take 0.3 s: starting */
    CHECK_EQ(count_state(p, CONC_WORKER_STARTING, w, 3), 3);
    until_state(p, CONC_WORKER_IDLE, 3, w, 3);
    for (size_t i = 0; i < 3; i++) {
        if (kind == CONC_THREADS) {
            CHECK_EQ(w[i].pid, getpid());
            CHECK(w[i].tid > 0 && w[i].tid != getpid());
        } else {
            CHECK(w[i].pid > 0 && w[i].pid != getpid());
            CHECK_EQ(w[i].tid, w[i].pid);
            CHECK_EQ(kill(w[i].pid, 0), 0);
        }
        CHECK_EQ(w[i].tasks_done, 0);
        CHECK(strncmp(w[i].name, "w-", 2) == 0);
        for (size_t j = 0; j < i; j++) {
            CHECK(w[i].tid != w[j].tid);
            CHECK(strcmp(w[i].name, w[j].name) != 0);
        }
    }
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ(w[i].task_item, SIZE_MAX); /* idle: no current task */
        CHECK(w[i].task_seconds == 0);
    }
    /* one task held at the gate: one worker busy, on a submitted task
     * (no item), for a time that grows */
    conc_future *f;
    int x = 6;
    CHECK_OK(conc_pool_submit(p, t_gated, &x, sizeof x, &f));
    until_state(p, CONC_WORKER_BUSY, 1, w, 3);
    th_sleep(0.1);
    CHECK_EQ(count_state(p, CONC_WORKER_BUSY, w, 3), 1);
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ(w[i].task_item, SIZE_MAX);
        if (w[i].state == CONC_WORKER_BUSY) {
            CHECK(w[i].task_seconds >= 0.1 && w[i].task_seconds < 30);
        } else {
            CHECK(w[i].task_seconds == 0);
        }
    }
    atomic_store(gate, 1);
    conc_msg m;
    CHECK_OK(conc_future_result(f, &m, 30));
    conc_msg_free(&m);
    conc_future_free(f);
    /* an imap of 4 items held at the gate: the 3 workers busy, each on
     * an item of its own (which 3 of the 4: the process backend may send
     * a worker two) */
    atomic_store(gate, 0);
    int v[4] = { 10, 11, 12, 13 };
    conc_msg in[4];
    for (int i = 0; i < 4; i++) {
        in[i] = (conc_msg){ &v[i], sizeof v[i] };
    }
    conc_iter *it;
    CHECK_OK(conc_pool_imap(p, t_gated, in, 4, &it,
                            &(conc_map_opts){ .chunksize = 1 }));
    until_state(p, CONC_WORKER_BUSY, 3, w, 3);
    bool on[4] = { false };
    for (size_t i = 0; i < 3; i++) {
        CHECK(w[i].task_item < 4);
        CHECK(!on[w[i].task_item]); /* each item on one worker */
        on[w[i].task_item] = true;
        CHECK(w[i].task_seconds >= 0 && w[i].task_seconds < 30);
    }
    atomic_store(gate, 1);
    for (int i = 0; i < 4; i++) {
        CHECK_OK(conc_iter_next(it, &m, 30));
        CHECK_EQ(int_out(&m), v[i] * v[i]);
        conc_msg_free(&m);
    }
    conc_iter_free(it);
    CHECK_OK(conc_pool_apply(p, t_whoami, NULL, 0, &m, 30));
    pid_t ran_it = (pid_t)int_out(&m);
    conc_msg_free(&m);
    size_t total = 0;
    for (double end = th_now() + 20; total != 6;) {
        CHECK(th_now() < end);
        until_state(p, CONC_WORKER_IDLE, 3, w, 3);
        total = 0;
        for (size_t i = 0; i < 3; i++) {
            total += w[i].tasks_done;
        }
    }
    bool found = false;
    for (size_t i = 0; i < 3; i++) {
        found = found || (w[i].tid == ran_it && w[i].tasks_done >= 1);
    }
    CHECK(found);
    /* fewer places than workers; only the count */
    w[1].pid = -5;
    CHECK_OK(conc_pool_worker_info(p, w, 1, &n));
    CHECK_EQ(n, 3);
    CHECK_EQ(w[1].pid, -5);
    n = 0;
    CHECK_OK(conc_pool_worker_info(p, NULL, 0, &n));
    CHECK_EQ(n, 3);
    CHECK_OK(conc_pool_worker_info(p, w, 4, &n));
    CHECK_EQ(n, 3);
    CHECK_ERR(conc_pool_worker_info(NULL, w, 4, &n), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "conc_pool_worker_info: pool is NULL"));
    CHECK_ERR(conc_pool_worker_info(p, w, 4, NULL), CONC_EINVAL);
    CHECK_ERR(conc_pool_worker_info(p, NULL, 1, &n), CONC_EINVAL);
    /* once the pool has stopped, no worker is left */
    CHECK_OK(conc_pool_shutdown(p, true, false));
    CHECK_EQ(count_state(p, CONC_WORKER_NONE, w, 3), 3);
    CHECK_EQ(w[0].pid, 0);
    CHECK_EQ(w[0].name[0], '\0');
    conc_pool_free(p);
    gate_free();
}

/* squares its input; inputs from 5 on wait at the gate first */
static int t_gated_from5(const void *in, size_t len, conc_buf *out,
                         void *ctx)
{
    int x;
    memcpy(&x, in, sizeof x);
    return x >= 5 ? t_gated(in, len, out, ctx) : t_square(in, len, out, ctx);
}

/* A fed imap's item is named by its input's number in the feed: after
 * five results, the one worker runs input 5, in the feed's third chunk
 * (chunks of 2 inputs, 4 held). */
static void worker_info_fed(conc_pool_kind kind)
{
    gate_make();
    conc_pool *p = mk(kind, 1);
    struct counter c = { .limit = 8 };
    conc_iter *it;
    CHECK_OK(conc_pool_imap_feed(p, t_gated_from5, feed_counter, &c, &it,
                                 &(conc_map_opts){ .chunksize = 2,
                                                   .buffersize = 4 }));
    conc_msg m;
    for (int i = 0; i < 5; i++) {
        CHECK_OK(conc_iter_next(it, &m, 30));
        CHECK_EQ(int_out(&m), i * i);
        conc_msg_free(&m);
        c.returned++;
    }
    /* (a worker may still be finishing item 4 after its result came: a
     * snapshot; it then stays on 5, held at the gate) */
    conc_worker_info w[1];
    size_t n;
    for (double end = th_now() + 20;;) {
        CHECK_OK(conc_pool_worker_info(p, w, 1, &n));
        if (w[0].task_item == 5) {
            break;
        }
        CHECK(th_now() < end);
        th_sleep(0.001);
    }
    th_sleep(0.05);
    CHECK_OK(conc_pool_worker_info(p, w, 1, &n));
    CHECK_EQ(w[0].state, CONC_WORKER_BUSY);
    CHECK_EQ(w[0].task_item, 5);
    CHECK_EQ(w[0].tasks_done, 5);
    atomic_store(gate, 1);
    for (int i = 5; i < 8; i++) {
        CHECK_OK(conc_iter_next(it, &m, 30));
        CHECK_EQ(int_out(&m), i * i);
        conc_msg_free(&m);
        c.returned++;
    }
    conc_iter_free(it);
    conc_pool_free(p);
    gate_free();
}

TEST(worker_info_fed_threads) { worker_info_fed(CONC_THREADS); }
TEST(worker_info_fed_processes) { worker_info_fed(CONC_PROCESSES); }

TEST(worker_info_threads) { worker_info(CONC_THREADS); }
TEST(worker_info_processes) { worker_info(CONC_PROCESSES); }

/* [0] the gate, [1] the finalizer began, [2] it ended; shared with the
 * process workers. */
static _Atomic int *fini_flags;

static void fini_gated(void *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    atomic_store(&fini_flags[1], 1);
    for (double end = th_now() + 20;
         !atomic_load(&fini_flags[0]) && th_now() < end;) {
        th_sleep(0.001);
    }
    atomic_store(&fini_flags[2], 1);
}

/* A process pool's close holds its manager while it waits for the
 * workers' finalizers; conc_pool_worker_info answers meanwhile, where it
 * waited for the finalizer before. */
TEST(worker_info_answers_while_a_close_waits_for_finalizers)
{
    fini_flags = mmap(NULL, 3 * sizeof *fini_flags, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(fini_flags != MAP_FAILED);
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 1,
                                                  .finalizer = fini_gated }));
    conc_worker_info w[1];
    until_state(p, CONC_WORKER_IDLE, 1, w, 1);
    CHECK_OK(conc_pool_close(p));
    for (double end = th_now() + 20; !atomic_load(&fini_flags[1]);) {
        CHECK(th_now() < end);
        th_sleep(0.001);
    }
    th_sleep(0.05); /* the manager is waiting for the worker by now */
    size_t n = 0;
    CHECK_OK(conc_pool_worker_info(p, w, 1, &n));
    CHECK_EQ(n, 1);
    CHECK(!atomic_load(&fini_flags[2]));
    atomic_store(&fini_flags[0], 1);
    CHECK_OK(conc_pool_join(p, 30));
    CHECK(atomic_load(&fini_flags[2]));
    conc_pool_free(p);
    munmap((void *)fini_flags, 3 * sizeof *fini_flags);
}

static void fini_slow(void *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    th_sleep(1.5);
}

/* A process worker killed from outside is replaced in its slot (a new
 * pid); one that retires shows EXITING while its finalizer runs. */
TEST(worker_info_replacements)
{
    conc_pool *p;
    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 1 }));
    conc_worker_info w[1];
    until_state(p, CONC_WORKER_IDLE, 1, w, 1);
    pid_t old = w[0].pid;
    CHECK_EQ(kill(old, SIGKILL), 0);
    for (double end = th_now() + 20;;) {
        count_state(p, CONC_WORKER_IDLE, w, 1);
        if (w[0].state == CONC_WORKER_IDLE && w[0].pid != old) {
            break;
        }
        CHECK(th_now() < end);
        th_sleep(0.002);
    }
    CHECK_EQ(kill(w[0].pid, 0), 0);
    conc_pool_free(p);

    CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){ .workers = 1,
                                                  .max_tasks_per_worker = 1,
                                                  .finalizer = fini_slow }));
    conc_msg m;
    CHECK_OK(conc_pool_apply(p, t_whoami, NULL, 0, &m, 30));
    pid_t first = (pid_t)int_out(&m);
    conc_msg_free(&m);
    until_state(p, CONC_WORKER_EXITING, 1, w, 1);
    CHECK_EQ(w[0].pid, first);
    CHECK_EQ(w[0].tasks_done, 1);
    /* then its successor */
    until_state(p, CONC_WORKER_IDLE, 1, w, 1);
    CHECK(w[0].pid != first);
    CHECK_EQ(w[0].tasks_done, 0);
    conc_pool_free(p);
}
