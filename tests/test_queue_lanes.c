/* test_queue_lanes.c - conc_queue made of lanes (opts.lanes > 1; see
 * LANES in src/queue.c): the options refused (too many lanes, a maxsize,
 * a server); FIFO per producer thread across producer processes and
 * threads and consumer processes, with a lane per producer or lanes
 * shared; which lane a thread's puts go to (white-box: the lanes'
 * counters and the lane counter), also after hundreds of threads came
 * and went, from a thread-exit destructor, and in a child of a threaded
 * parent; no lost wake-up of a getter asleep when a put lands in a
 * lane other than the one it last read, nor of a putter asleep on a full
 * lane; close (every lane drained before CONC_ECLOSED, blocked getters
 * in other processes and putters on every lane woken, puts racing it,
 * every lane's producers' lock taken); qsize and empty over every lane,
 * full() about the caller's own lane; task_done/join over every lane;
 * batches; a named queue opened by forked and exec'd processes, and lane
 * headers a peer scribbled; a consumer or a producer killed holding one
 * lane's lock (white-box, as test_queue.c's repair test), a consumer
 * stuck holding one, a dead one's lane while the others stay busy, a
 * lane that never runs dry; and a put blocked on a full lane once every
 * reader has exited.  The one-ring queue is test_queue.c's.
 *
 * A thread puts into the lane it claimed at its first put (or full())
 * through a handle, the next in turn from the counter in lane 0's header,
 * and a get that finds no lane remembered starts at its thread id modulo
 * lanes: a test that needs a put in a given lane, or a getter that starts
 * there, runs it on a thread started until one's tid maps there, which
 * claims that lane by setting the counter first (lane_thread()). */
#include "harness.h"

#include "queue_int.h"
#include "queue_test_util.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* ---- helpers ------------------------------------------------------------ */

static char qname[64];
static const char *unique_name(const char *tag)
{
    snprintf(qname, sizeof qname, "conc-test-ql-%s-%d", tag, (int)getpid());
    return qname;
}

/* A new anonymous queue of L lanes of cap bytes each. */
static conc_queue *lanes_queue(unsigned L, size_t cap)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .lanes = L,
                                                     .capacity_bytes = cap }));
    return q;
}

static unsigned my_tid(void)
{
    return (unsigned)syscall(SYS_gettid);
}

static uint64_t lane_nput(conc_queue *q, unsigned lane)
{
    return atomic_load(&q->lane[lane].sh->nput);
}

static void sem_take(sem_t *s)
{
    while (sem_wait(s) != 0) {
        CHECK_EQ(errno, EINTR);
    }
}

/* Waits (bounded) until bit 0 of a queue's futex word is set: a getter
 * (data_seq) or putter (space_seq) has armed it and sleeps or is about
 * to, after its last re-check.  The handshake the wake-up tests use. */
static void wait_armed(_Atomic uint32_t *word)
{
    double end = th_now() + 10;
    while (!(atomic_load(word) & 1u)) {
        if (th_now() > end) {
            th_fail(__FILE__, __LINE__, "nobody went to sleep in 10 s");
        }
        sched_yield();
    }
}

/* The scheduler state of thread tid of process pid, from /proc: 'S'
 * while it sleeps (in FUTEX_WAIT, for the tests here). */
static char task_state(pid_t pid, unsigned tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%u/stat", (int)pid, tid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return '?';
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' ? p[2] : '?';
}

/* Waits (bounded) until bit 0 of a queue's futex word is set and each of
 * the n threads tids of process pid sleeps: the getters (data_seq) or
 * putters (space_seq) armed it and went to sleep after their re-check.
 * The handshake of the wake-up tests: the bit alone may be left set by a
 * waiter whose re-check found what it waited for (nobody clears it
 * then), and a waiter still spinning would catch a put or get without
 * any wake-up. */
static void wait_asleep(_Atomic uint32_t *word, pid_t pid,
                        const unsigned *tids, int n)
{
    double end = th_now() + 10;
    for (;;) {
        bool all = (atomic_load(word) & 1u) != 0;
        for (int i = 0; all && i < n; i++) {
            all = task_state(pid, tids[i]) == 'S';
        }
        if (all) {
            return;
        }
        if (th_now() > end) {
            th_fail(__FILE__, __LINE__, "the waiters did not all go to "
                    "sleep in 10 s");
        }
        sched_yield();
    }
}

/* ---- threads on a lane of one's choice ------------------------------------ */

typedef struct lt_boot {
    conc_queue *q;
    unsigned lane;
    bool claim; /* claim lane for the thread's puts before fn */
    void *(*fn)(void *);
    void *arg;
    _Atomic int verdict; /* 0 not yet, 1 runs fn, -1 another lane */
} lt_boot;

static void *lt_main(void *p)
{
    lt_boot *b = p;
    if (my_tid() % b->q->nlanes != b->lane) {
        atomic_store(&b->verdict, -1);
        return NULL;
    }
    if (b->claim) {
        /* Claims lane b->lane for this thread's puts: the counter names
         * the lane the next claim takes, and full() claims (nobody else
         * claims meanwhile: tid_thread starts one thread at a time). */
        atomic_store(&b->q->top->next_lane, b->lane);
        (void)conc_queue_full(b->q);
        CHECK_EQ(atomic_load(&b->q->top->next_lane), b->lane + 1);
    }
    void *(*fn)(void *) = b->fn;
    void *arg = b->arg;
    atomic_store(&b->verdict, 1); /* b is the starter's: not touched again */
    return fn(arg);
}

/* Starts fn(arg) on a new thread whose tid is lane modulo q's lanes, so
 * that its gets start there (and, with claim, its puts go there): threads
 * are started (and let go at once) until one's tid maps there.  Tids are
 * handed out in turn, so this takes about L tries. */
static pthread_t tid_thread(conc_queue *q, unsigned lane, bool claim,
                            void *(*fn)(void *), void *arg)
{
    CHECK(lane < q->nlanes);
    for (int tries = 0; tries < 20000; tries++) {
        lt_boot b = { q, lane, claim, fn, arg, 0 };
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, lt_main, &b), 0);
        int v;
        while ((v = atomic_load(&b.verdict)) == 0) {
            sched_yield();
        }
        if (v == 1) {
            return t;
        }
        CHECK_EQ(pthread_join(t, NULL), 0);
    }
    th_fail(__FILE__, __LINE__, "no thread of lane %u of %u", lane,
            q->nlanes);
}

/* A thread of lane `lane` of q, for its puts and its gets alike. */
static pthread_t lane_thread(conc_queue *q, unsigned lane,
                             void *(*fn)(void *), void *arg)
{
    return tid_thread(q, lane, true, fn, arg);
}

/* Runs fn(arg) on a thread of lane `lane` of q and waits for it. */
static void *on_lane(conc_queue *q, unsigned lane, void *(*fn)(void *),
                     void *arg)
{
    pthread_t t = lane_thread(q, lane, fn, arg);
    void *ret = NULL;
    CHECK_EQ(pthread_join(t, &ret), 0);
    return ret;
}

/* Tagged messages: "<tag>-<n>", n = 0, 1, 2... per tag (a letter). */
typedef struct puts_arg {
    conc_queue *q;
    char tag;
    int from, n;
    double timeout;
    int done, err;
} puts_arg;

static void *puts_main(void *p)
{
    puts_arg *a = p;
    for (int i = a->from; i < a->from + a->n; i++) {
        char buf[32];
        int len = snprintf(buf, sizeof buf, "%c-%d", a->tag, i);
        a->err = conc_queue_put(a->q, buf, (size_t)len, a->timeout);
        if (a->err != 0) {
            break;
        }
        a->done++;
    }
    return NULL;
}

/* Puts tag-from .. tag-(from+n-1) from a thread of lane `lane`, and
 * checks that they went into that lane. */
static void put_tagged_from(conc_queue *q, unsigned lane, char tag, int from,
                            int n)
{
    uint64_t before = lane_nput(q, lane);
    puts_arg a = { q, tag, from, n, 5, 0, 0 };
    on_lane(q, lane, puts_main, &a);
    if (a.err != 0) {
        th_fail(__FILE__, __LINE__, "put into lane %u: %s, \"%s\"", lane,
                conc_errname(a.err), conc_errdetail());
    }
    CHECK_EQ(a.done, n);
    CHECK_EQ(lane_nput(q, lane) - before, (uint64_t)n);
}

static void put_tagged(conc_queue *q, unsigned lane, char tag, int n)
{
    put_tagged_from(q, lane, tag, 0, n);
}

/* Takes what q holds (gets with timeout 0 until CONC_EEMPTY, or
 * CONC_ECLOSED on a closed queue), checking
 * that each tag's messages come in order and without a gap: counts[tag -
 * 'a'] is the next number expected (and, after, how many came).
 * Returns how many it took. */
static int drain_tagged(conc_queue *q, int counts[26])
{
    int total = 0;
    for (;;) {
        char buf[32];
        size_t len;
        int err = conc_queue_get_into(q, buf, sizeof buf - 1, &len, 0);
        if (err == CONC_EEMPTY || err == CONC_ECLOSED) {
            CHECK(err == CONC_ECLOSED || !conc_queue_closed(q));
            return total;
        }
        CHECK_OK(err);
        buf[len] = 0;
        CHECK(len >= 3 && buf[0] >= 'a' && buf[0] <= 'z' && buf[1] == '-');
        int want = counts[buf[0] - 'a'];
        if (atoi(buf + 2) != want) {
            th_fail(__FILE__, __LINE__, "got \"%s\", wanted %c-%d", buf,
                    buf[0], want);
        }
        counts[buf[0] - 'a']++;
        total++;
    }
}

/* Fills the calling thread's lane: messages of 16 bytes, then of 0 (the
 * last bytes), each put with timeout 0 until CONC_EFULL, so that not
 * even an empty message fits.  Returns how many went in. */
static int fill_my_lane(conc_queue *q)
{
    int filled = 0;
    for (size_t len = 16;; len = 0) {
        int err;
        while ((err = conc_queue_put(q, "sixteen bytes!!!", len, 0)) == 0) {
            filled++;
            CHECK(filled < 1000);
        }
        CHECK_ERR(err, CONC_EFULL);
        if (len == 0) {
            return filled;
        }
    }
}

/* ---- options ---------------------------------------------------------------- */

TEST(lanes_bad_options_are_refused_and_0_or_1_is_one_ring)
{
    conc_queue *q = (conc_queue *)1;
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .lanes = CONC_QUEUE_MAX_LANES + 1,
                                     .capacity_bytes = 4096 }),
              CONC_EINVAL);
    CHECK(q == NULL);
    CHECK(strstr(conc_errdetail(), "conc_queue_new") != NULL);
    CHECK(strstr(conc_errdetail(), "CONC_QUEUE_MAX_LANES") != NULL);
    /* Far over: refused before any size is computed from it. */
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){ .lanes = UINT_MAX }),
              CONC_EINVAL);
    CHECK(q == NULL);
    /* A named one leaves no segment behind. */
    const char *name = unique_name("opts");
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .name = name, .lanes = 65,
                                     .capacity_bytes = 4096 }),
              CONC_EINVAL);
    CHECK(!th_shm_exists(name));
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){ .lanes = 2,
                                                      .maxsize = 1 }),
              CONC_EINVAL);
    CHECK(q == NULL);
    CHECK(strstr(conc_errdetail(), "maxsize") != NULL);
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .lanes = CONC_QUEUE_MAX_LANES,
                                     .maxsize = 100, .name = name }),
              CONC_EINVAL);
    CHECK(!th_shm_exists(name));

    /* Not on a server: refused before any connection is tried (port 1
     * would answer CONC_ENET, a backend not built CONC_EINVAL with
     * another detail). */
    double t0 = th_now();
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .url = "redis://127.0.0.1:1/0",
                                     .name = "x", .lanes = 2 }),
              CONC_EINVAL);
    CHECK(q == NULL);
    CHECK(strstr(conc_errdetail(), "lanes") != NULL);
    CHECK_ERR(conc_queue_new(&q, &(conc_queue_opts){
                                     .url = "amqp://127.0.0.1:1/%2f",
                                     .name = "x", .lanes = 8 }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "lanes") != NULL);
    CHECK(th_now() - t0 < 1.0);

    /* 0 and 1: one ring, as without the option. */
    for (unsigned lanes = 0; lanes <= 1; lanes++) {
        CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){
                                        .lanes = lanes, .maxsize = 3,
                                        .capacity_bytes = 4096 }));
        CHECK(q->lane == NULL);
        CHECK_EQ(q->nlanes, 1);
        CHECK(q->top == q->sh);
        CHECK_EQ(q->sh->lanes, 1);
        CHECK_EQ(q->map_size, conc__queue_map_size(4096, 1));
        put_str(q, "one");
        put_str(q, "two");
        put_str(q, "three");
        CHECK(conc_queue_full(q)); /* maxsize still binds */
        get_str(q, "one");
        get_str(q, "two");
        get_str(q, "three");
        conc_queue_free(q);
    }

    /* 2 and the maximum: that many rings, each numbered, each with a key
     * of its own; the queue works. */
    unsigned counts[] = { 2, CONC_QUEUE_MAX_LANES };
    for (int c = 0; c < 2; c++) {
        unsigned L = counts[c];
        CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){
                                        .lanes = L, .capacity_bytes = 4096 }));
        CHECK(q->lane != NULL);
        CHECK_EQ(q->nlanes, L);
        CHECK_EQ(q->map_size, conc__queue_lane_size(4096) * L);
        for (unsigned i = 0; i < L; i++) {
            CHECK_EQ(q->lane[i].sh->lane, i);
            CHECK_EQ(q->lane[i].sh->lanes, L);
            CHECK(q->lane[i].top == q->sh);
            CHECK(q->lane[i].key >> 63);
            for (unsigned j = 0; j < i; j++) {
                CHECK(q->lane[i].key != q->lane[j].key);
            }
        }
        put_str(q, "one");
        put_str(q, "two");
        CHECK_EQ(conc_queue_qsize(q), 2);
        get_str(q, "one");
        get_str(q, "two");
        CHECK(conc_queue_empty(q));
        conc_queue_free(q);
    }
}

/* ---- FIFO per producer ------------------------------------------------------ */

#define FIFO_MAXPROD 16

/* One run: producers are threads numbered 0..nprod-1 (in processes of
 * `threads` each), each putting `per` messages: its number and sequence
 * number (8 bytes), then a pattern, 8 to maxlen bytes in all. */
typedef struct fifo_run {
    conc_queue *q;
    int nprod, threads, per;
    size_t maxlen;
    _Atomic uint8_t *seen; /* [nprod * per], shared */
    _Atomic int *errors;   /* [0] count, [1] first reason, shared */
} fifo_run;

typedef struct fifo_who {
    const fifo_run *r;
    int id;
} fifo_who;

enum { WHY_PUT = 1, WHY_GET, WHY_BYTES, WHY_ORDER, WHY_TWICE };

static void fifo_error(const fifo_run *r, int why)
{
    int zero = 0;
    atomic_compare_exchange_strong(&r->errors[1], &zero, why);
    atomic_fetch_add(&r->errors[0], 1);
}

static size_t fifo_len(const fifo_run *r, uint64_t seed)
{
    return 8 + (size_t)(mix(seed ^ 0x5eed) % (r->maxlen - 7));
}

static void *fifo_produce(void *p)
{
    const fifo_who *w = p;
    const fifo_run *r = w->r;
    unsigned char *buf = malloc(r->maxlen);
    CHECK(buf != NULL);
    for (int s = 0; s < r->per; s++) {
        uint64_t seed = (uint64_t)w->id << 32 | (uint32_t)s;
        size_t n = fifo_len(r, seed);
        memcpy(buf, &seed, 8);
        pattern(buf + 8, n - 8, seed);
        if (conc_queue_put(r->q, buf, n, 20) != 0) {
            fifo_error(r, WHY_PUT);
            break;
        }
    }
    free(buf);
    return NULL;
}

/* A producer process: `threads` producer threads, numbered from w->id. */
static int fifo_producer_proc(void *p)
{
    const fifo_who *w = p;
    pthread_t t[FIFO_MAXPROD];
    fifo_who who[FIFO_MAXPROD];
    for (int i = 0; i < w->r->threads; i++) {
        who[i] = (fifo_who){ w->r, w->id + i };
        CHECK_EQ(pthread_create(&t[i], NULL, fifo_produce, &who[i]), 0);
    }
    for (int i = 0; i < w->r->threads; i++) {
        CHECK_EQ(pthread_join(t[i], NULL), 0);
    }
    return 0;
}

/* One message as a consumer took it: right bytes, never seen before, and
 * after every earlier message of its producer this consumer took. */
static bool fifo_check(const fifo_run *r, int64_t *last,
                       const unsigned char *p, size_t n)
{
    uint64_t seed;
    if (n < 8) {
        fifo_error(r, WHY_BYTES);
        return false;
    }
    memcpy(&seed, p, 8);
    int prod = (int)(seed >> 32);
    int64_t s = (int64_t)(uint32_t)seed;
    if (prod >= r->nprod || s >= r->per || n != fifo_len(r, seed) ||
        !pattern_ok(p + 8, n - 8, seed)) {
        fifo_error(r, WHY_BYTES);
        return false;
    }
    if (s <= last[prod]) {
        fifo_error(r, WHY_ORDER);
        return false;
    }
    last[prod] = s;
    if (atomic_fetch_add(&r->seen[prod * r->per + s], 1) != 0) {
        fifo_error(r, WHY_TWICE);
        return false;
    }
    return true;
}

/* Takes messages until CONC_ECLOSED, by get, get_into or get_many (by
 * id), checking each. */
static int fifo_consume(const fifo_run *r, int id)
{
    int64_t last[FIFO_MAXPROD];
    for (int i = 0; i < FIFO_MAXPROD; i++) {
        last[i] = -1;
    }
    unsigned char *buf = malloc(r->maxlen);
    CHECK(buf != NULL);
    int bad = 0;
    while (bad == 0) {
        conc_msg m[8];
        size_t got = 0, len = 0;
        int err;
        switch (id % 3) {
        case 0:
            err = conc_queue_get(r->q, &m[0], 20);
            got = err == 0;
            break;
        case 1:
            err = conc_queue_get_into(r->q, buf, r->maxlen, &len, 20);
            break;
        default:
            err = conc_queue_get_many(r->q, m, 8, &got, 20);
            break;
        }
        if (err == CONC_ECLOSED) {
            break;
        }
        if (err != 0) {
            fifo_error(r, WHY_GET);
            bad = 1;
            break;
        }
        if (id % 3 == 1) {
            bad = !fifo_check(r, last, buf, len);
        }
        for (size_t i = 0; i < got; i++) {
            if (bad == 0 && !fifo_check(r, last, m[i].data, m[i].len)) {
                bad = 1;
            }
            conc_msg_free(&m[i]);
        }
    }
    free(buf);
    return bad;
}

static int fifo_consumer_proc(void *p)
{
    const fifo_who *w = p;
    return fifo_consume(w->r, w->id);
}

/* procs producer processes of `threads` threads each, `consumers`
 * consumer processes (0: this process drains, alone); prefill: every
 * message is put, and the queue closed, before any consumer starts. */
static void fifo_case(unsigned lanes, int procs, int threads, int consumers,
                      int per, size_t maxlen, size_t cap, bool prefill)
{
    fifo_run r = { NULL, procs * threads, threads, per, maxlen, NULL, NULL };
    CHECK(r.nprod <= FIFO_MAXPROD && consumers <= 8);
    CHECK_OK(conc_queue_new(&r.q, &(conc_queue_opts){ .lanes = lanes,
                                                       .capacity_bytes =
                                                           cap }));
    size_t sz = (size_t)r.nprod * (size_t)per + 64;
    r.seen = shared_map(sz);
    r.errors = (_Atomic int *)(void *)((char *)r.seen + sz - 64);
    fifo_who pw[FIFO_MAXPROD], cw[8];
    pid_t pp[FIFO_MAXPROD], cp[8];
    for (int i = 0; i < consumers; i++) {
        cw[i] = (fifo_who){ &r, i };
        if (!prefill) {
            cp[i] = th_fork(fifo_consumer_proc, &cw[i]);
        }
    }
    for (int i = 0; i < procs; i++) {
        pw[i] = (fifo_who){ &r, i * threads };
        pp[i] = th_fork(fifo_producer_proc, &pw[i]);
    }
    for (int i = 0; i < procs; i++) {
        CHECK_EQ(th_wait(pp[i], 60), 0);
    }
    if (prefill) {
        /* Everything is in, spread over the lanes by producer. */
        uint64_t sum = 0;
        for (unsigned j = 0; j < lanes; j++) {
            sum += lane_nput(r.q, j);
        }
        CHECK_EQ(atomic_load(&r.errors[0]), 0);
        CHECK_EQ(sum, (uint64_t)r.nprod * (uint64_t)per);
        CHECK_EQ(conc_queue_qsize(r.q), (size_t)sum);
    }
    CHECK_OK(conc_queue_close(r.q));
    if (prefill) {
        for (int i = 0; i < consumers; i++) {
            cp[i] = th_fork(fifo_consumer_proc, &cw[i]);
        }
        if (consumers == 0) {
            CHECK_EQ(fifo_consume(&r, 0), 0);
            CHECK_EQ(fifo_consume(&r, 1), 0); /* closed and drained */
        }
    }
    for (int i = 0; i < consumers; i++) {
        CHECK_EQ(th_wait(cp[i], 60), 0);
    }
    if (atomic_load(&r.errors[0]) != 0) {
        th_fail(__FILE__, __LINE__, "%d errors, the first of kind %d "
                "(1 put, 2 get, 3 bytes, 4 order, 5 twice)",
                atomic_load(&r.errors[0]), atomic_load(&r.errors[1]));
    }
    for (int i = 0; i < r.nprod * per; i++) {
        if (atomic_load(&r.seen[i]) != 1) {
            th_fail(__FILE__, __LINE__, "message %d of producer %d seen %d "
                    "times", i % per, i / per, (int)atomic_load(&r.seen[i]));
        }
    }
    CHECK_EQ(conc_queue_qsize(r.q), 0);
    CHECK(conc_queue_empty(r.q));
    munmap((void *)r.seen, sz);
    conc_queue_free(r.q);
}

/* 8 lanes, 4 producer processes of 2 threads, 3 consumer processes (by
 * get, get_into and get_many): small lanes that fill, so producers wait
 * for room while consumers sweep; then the same with every message in
 * before the consumers start. */
TEST(lanes_fifo_per_producer_many_processes_and_threads)
{
    fifo_case(8, 4, 2, 3, 600, 700, 8192, false);
    fifo_case(8, 4, 2, 3, 300, 400, 1 << 20, true);
}

/* More producer threads than lanes: 6 threads on 2 lanes share them.  A
 * lone consumer draining a full queue sees every producer's whole order;
 * then producers and 2 consumer processes at once. */
TEST(lanes_fifo_per_producer_with_lanes_shared)
{
    fifo_case(2, 3, 2, 0, 400, 300, 1 << 20, true);
    fifo_case(2, 3, 2, 2, 600, 500, 4096, false);
}

/* ---- which lane ----------------------------------------------------------- */

typedef struct tid_puts {
    conc_queue *q;
    char tag;
    int n;
    unsigned tid;
} tid_puts;

static void *tid_puts_main(void *p)
{
    tid_puts *a = p;
    a->tid = my_tid();
    for (int i = 0; i < a->n; i++) {
        char buf[32];
        int len = snprintf(buf, sizeof buf, "%c-%d", a->tag, i);
        CHECK_OK(conc_queue_put(a->q, buf, (size_t)len, 1));
    }
    return NULL;
}

static int child_puts_seven(void *arg)
{
    tid_puts a = { arg, 'z', 7, 0 };
    tid_puts_main(&a);
    return 0;
}

/* before[] made the lanes' counts now. */
static void lanes_mark(conc_queue *q, uint64_t *before)
{
    for (unsigned j = 0; j < q->nlanes; j++) {
        before[j] = lane_nput(q, j);
    }
}

/* The lanes that gained puts since before[] (a mask; each gained n), and
 * before[] made the lanes' counts now. */
static unsigned lanes_grown(conc_queue *q, uint64_t *before, uint64_t n)
{
    unsigned mask = 0;
    for (unsigned j = 0; j < q->nlanes; j++) {
        uint64_t now = lane_nput(q, j);
        if (now != before[j]) {
            CHECK_EQ(now - before[j], n);
            mask |= 1u << j;
        }
        before[j] = now;
    }
    return mask;
}

/* Runs tid_puts_main(a) on a new thread and returns the lanes its puts
 * went to (a mask). */
static unsigned thread_puts(conc_queue *q, tid_puts *a, uint64_t *before,
                            bool same_tids)
{
    pthread_t t;
    if (same_tids) {
        /* A thread whose tid is 0 modulo lanes, which claims nothing
         * before it puts. */
        t = tid_thread(q, 0, false, tid_puts_main, a);
    } else {
        CHECK_EQ(pthread_create(&t, NULL, tid_puts_main, a), 0);
    }
    CHECK_EQ(pthread_join(t, NULL), 0);
    return lanes_grown(q, before, (uint64_t)a->n);
}

/* White-box: a producer thread's first put through a handle claims the
 * queue's next lane (the counter in lane 0's header) and every later put
 * goes there, so its messages stay in order whoever takes them.  Threads
 * one after another take the lanes in turn; so do threads whose ids are
 * equal modulo lanes (a lane from the id would put them all in one); a
 * thread's lane in a second queue is that queue's next; a forked child
 * claims a lane of its own, and its parent keeps its lane; a counter a
 * peer set to anything still names a lane. */
TEST(lanes_producers_claim_lanes_in_turn)
{
    const unsigned L = 4;
    conc_queue *q = lanes_queue(L, 1 << 16);
    uint64_t before[4] = { 0 };
    int counts[26] = { 0 };
    for (int i = 0; i < 6; i++) {
        tid_puts a = { q, (char)('a' + i), 3 + i, 0 };
        CHECK_EQ(thread_puts(q, &a, before, false), 1u << (i % 4));
    }
    for (int i = 6; i < 10; i++) {
        tid_puts a = { q, (char)('a' + i), 3 + i, 0 };
        CHECK_EQ(thread_puts(q, &a, before, true), 1u << (i % 4));
        CHECK_EQ(a.tid % L, 0);
    }
    /* This thread (lane 2), a child it forks (lane 3), this thread again
     * (still lane 2). */
    tid_puts y = { q, 'y', 5, 0 };
    tid_puts_main(&y);
    CHECK_EQ(lanes_grown(q, before, 5), 1u << 2);
    pid_t pid = th_fork(child_puts_seven, q);
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK_EQ(lanes_grown(q, before, 7), 1u << 3);
    tid_puts v = { q, 'v', 4, 0 };
    tid_puts_main(&v);
    CHECK_EQ(lanes_grown(q, before, 4), 1u << 2);
    /* A second queue, its counter at 1: this thread's lane there is 1. */
    conc_queue *q2 = lanes_queue(L, 1 << 16);
    atomic_store(&q2->top->next_lane, 1);
    put_str(q2, "lane 1");
    CHECK_EQ(lane_nput(q2, 1), 1);
    CHECK_EQ(conc_queue_qsize(q2), 1);
    conc_queue_free(q2);
    /* A counter a peer scribbled on: taken modulo lanes (3, then 0). */
    atomic_store(&q->top->next_lane, UINT32_MAX);
    tid_puts x = { q, 'x', 2, 0 };
    CHECK_EQ(thread_puts(q, &x, before, false), 1u << 3);
    tid_puts w = { q, 'w', 2, 0 };
    CHECK_EQ(thread_puts(q, &w, before, false), 1u << 0);

    int total = 0;
    for (int i = 0; i < 10; i++) {
        total += 3 + i;
    }
    CHECK_EQ(drain_tagged(q, counts), total + 5 + 7 + 4 + 2 + 2);
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(counts[i], 3 + i);
    }
    CHECK_EQ(counts['y' - 'a'], 5);
    CHECK_EQ(counts['z' - 'a'], 7);
    CHECK_EQ(counts['v' - 'a'], 4);
    CHECK_EQ(counts['x' - 'a'] + counts['w' - 'a'], 4);
    conc_queue_free(q);
}

/* A producer thread that stays alive while others come and go: puts
 * tag-0 .. tag-(first-1), posts `put`, waits for `go`, then puts the next
 * `then` messages of its tag. */
typedef struct put_hold {
    conc_queue *q;
    char tag;
    int first, then;
    sem_t put, go;
} put_hold;

static void put_hold_init(put_hold *h, conc_queue *q, char tag, int first,
                          int then)
{
    *h = (put_hold){ .q = q, .tag = tag, .first = first, .then = then };
    CHECK_EQ(sem_init(&h->put, 0, 0), 0);
    CHECK_EQ(sem_init(&h->go, 0, 0), 0);
}

static void *put_hold_main(void *p)
{
    put_hold *h = p;
    puts_arg a = { h->q, h->tag, 0, h->first, 5, 0, 0 };
    puts_main(&a);
    CHECK_EQ(a.done, h->first);
    sem_post(&h->put);
    sem_take(&h->go);
    puts_arg b = { h->q, h->tag, h->first, h->then, 5, 0, 0 };
    puts_main(&b);
    CHECK_EQ(b.done, h->then);
    return NULL;
}

/* A process's producer threads share CONC__QUEUE_PUT_THREADS indexes for
 * the lanes they claim, and a thread that finds none free takes over one
 * whose holder has exited: after 300 threads one after another (each puts
 * one message and exits), four threads whose ids are equal modulo lanes
 * still take four lanes in turn (with the indexes used up, they would all
 * put into lane tid % 4); and a producer that lived through it all, and
 * this thread, kept their lanes (a live holder's index is never taken). */
TEST(lanes_threads_claim_lanes_in_turn_after_hundreds_have_exited)
{
    const unsigned L = 4;
    conc_queue *q = lanes_queue(L, 1 << 16);
    uint64_t before[4] = { 0 };
    put_str(q, "main");                            /* lane 0 */
    CHECK_EQ(lanes_grown(q, before, 1), 1u << 0);
    put_hold st;
    put_hold_init(&st, q, 'p', 10, 10);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, put_hold_main, &st), 0);
    sem_take(&st.put);                             /* lane 1 */
    CHECK_EQ(lanes_grown(q, before, 10), 1u << 1);
    CHECK(300 > CONC__QUEUE_PUT_THREADS);
    for (int i = 0; i < 300; i++) {
        tid_puts a = { q, 'u', 1, 0 };
        CHECK_EQ(thread_puts(q, &a, before, false), 1u << ((i + 2) % 4));
    }
    for (int i = 0; i < 4; i++) {
        tid_puts a = { q, 'e', 2, 0 };
        CHECK_EQ(thread_puts(q, &a, before, true), 1u << ((i + 2) % 4));
    }
    sem_post(&st.go);
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK_EQ(lanes_grown(q, before, 10), 1u << 1);
    put_str(q, "main again");
    CHECK_EQ(lanes_grown(q, before, 1), 1u << 0);
    CHECK_EQ(conc_queue_qsize(q), 1 + 20 + 300 + 8 + 1);
    conc_queue_free(q);
}

/* A thread-exit destructor of the test's own (made after this process's
 * first put into a queue of lanes, so it runs after anything libconc
 * could have registered) that puts the thread's last message. */
static pthread_key_t last_put_key;

static void last_put(void *q)
{
    put_str(q, "d-last");
}

static void *puts_then_exits_main(void *p)
{
    puts_arg *a = p;
    puts_main(a);
    CHECK_EQ(pthread_setspecific(last_put_key, a->q), 0);
    return NULL;
}

/* A thread's puts from its last moments (a thread-exit destructor) go to
 * the lane its earlier puts went to, after them.  The threads' ids are
 * all 0 modulo lanes while their lanes go round, so a put that fell back
 * to a lane from the id would land elsewhere in 3 rounds of 4. */
TEST(lanes_a_put_from_a_thread_exit_destructor_keeps_the_threads_lane)
{
    const unsigned L = 4;
    conc_queue *q = lanes_queue(L, 1 << 16);
    put_str(q, "first");
    get_str(q, "first");
    CHECK_EQ(pthread_key_create(&last_put_key, last_put), 0);
    uint64_t before[4] = { 0 };
    lanes_mark(q, before);
    for (int round = 0; round < 20; round++) {
        puts_arg a = { q, 'd', 0, 50, 5, 0, 0 };
        pthread_t t;
        t = tid_thread(q, 0, false, puts_then_exits_main, &a);
        CHECK_EQ(pthread_join(t, NULL), 0);
        CHECK_EQ(a.done, 50);
        unsigned lane = (unsigned)(1 + round) % L;
        CHECK_EQ(lanes_grown(q, before, 51), 1u << lane);
        for (int i = 0; i < 50; i++) {
            char want[16];
            snprintf(want, sizeof want, "d-%d", i);
            get_str(q, want);
        }
        get_str(q, "d-last");
    }
    CHECK_EQ(pthread_key_delete(last_put_key), 0);
    conc_queue_free(q);
}

static int child_threads_claim_in_turn(void *arg)
{
    enum { K = 12 };
    conc_queue *q = arg;
    uint64_t before[4];
    lanes_mark(q, before);
    unsigned next = atomic_load(&q->top->next_lane);
    put_hold h[K];
    pthread_t t[K];
    int bad = 0;
    for (unsigned i = 0; i < K; i++) {
        put_hold_init(&h[i], q, 'c', 1, 0);
        t[i] = tid_thread(q, 0, false, put_hold_main, &h[i]);
        sem_take(&h[i].put);
        bad += lanes_grown(q, before, 1) != 1u << ((next + i) % 4);
    }
    for (unsigned i = 0; i < K; i++) {
        sem_post(&h[i].go);
    }
    for (unsigned i = 0; i < K; i++) {
        CHECK_EQ(pthread_join(t[i], NULL), 0);
    }
    return bad;
}

/* A child forked while 250 producer threads of its parent live holds
 * none of their indexes: 12 threads alive at once there, whose ids are
 * equal modulo lanes, take lanes in turn (with the parent's indexes held,
 * all but 5 would put into lane tid % 4). */
TEST(lanes_a_child_of_a_threaded_parent_has_every_index)
{
    enum { N = 250 };
    conc_queue *q = lanes_queue(4, 1 << 16);
    static put_hold h[N];
    static pthread_t t[N];
    pthread_attr_t at;
    CHECK_EQ(pthread_attr_init(&at), 0);
    CHECK_EQ(pthread_attr_setstacksize(&at, 1 << 17), 0);
    for (int i = 0; i < N; i++) {
        put_hold_init(&h[i], q, 'h', 1, 0);
        CHECK_EQ(pthread_create(&t[i], &at, put_hold_main, &h[i]), 0);
        sem_take(&h[i].put);
    }
    put_str(q, "main");
    pid_t pid = th_fork(child_threads_claim_in_turn, q);
    CHECK_EQ(th_wait(pid, 30), 0);
    for (int i = 0; i < N; i++) {
        sem_post(&h[i].go);
        CHECK_EQ(pthread_join(t[i], NULL), 0);
    }
    pthread_attr_destroy(&at);
    conc_queue_free(q);
}

/* ---- wake-ups across lanes -------------------------------------------------- */

/* A producer thread of a chosen lane that puts on command. */
typedef struct worker {
    conc_queue *q;
    sem_t go, done;
    char msg[32]; /* what to put next; "" ends the worker */
    int err;
} worker;

static void *worker_main(void *p)
{
    worker *w = p;
    for (;;) {
        sem_take(&w->go);
        if (w->msg[0] == 0) {
            return NULL;
        }
        w->err = conc_queue_put(w->q, w->msg, strlen(w->msg), 5);
        sem_post(&w->done);
    }
}

static void workers_start(worker *w, pthread_t *t, conc_queue *q, unsigned L)
{
    for (unsigned i = 0; i < L; i++) {
        w[i].q = q;
        w[i].err = 0;
        CHECK_EQ(sem_init(&w[i].go, 0, 0), 0);
        CHECK_EQ(sem_init(&w[i].done, 0, 0), 0);
        t[i] = lane_thread(q, i, worker_main, &w[i]);
    }
}

static void workers_put(worker *w, const char *msg)
{
    snprintf(w->msg, sizeof w->msg, "%s", msg);
    sem_post(&w->go);
    sem_take(&w->done);
    CHECK_OK(w->err);
}

static void workers_stop(worker *w, pthread_t *t, unsigned L)
{
    for (unsigned i = 0; i < L; i++) {
        w[i].msg[0] = 0;
        sem_post(&w[i].go);
        CHECK_EQ(pthread_join(t[i], NULL), 0);
        sem_destroy(&w[i].go);
        sem_destroy(&w[i].done);
    }
}

typedef struct echo_arg {
    conc_queue *req, *rep;
    double timeout;
    int result;
    _Atomic unsigned tid; /* a getter thread's, once it runs */
} echo_arg;

/* Echoes every message of req into rep, until "stop". */
static int echo_loop(echo_arg *a)
{
    for (;;) {
        conc_msg m;
        int err = conc_queue_get(a->req, &m, a->timeout);
        if (err != 0) {
            return 1;
        }
        bool stop = m.len == 4 && memcmp(m.data, "stop", 4) == 0;
        if (!stop) {
            err = conc_queue_put(a->rep, m.data, m.len, 10);
        }
        conc_msg_free(&m);
        if (stop) {
            return 0;
        }
        if (err != 0) {
            return 2;
        }
    }
}

static int echo_proc(void *p)
{
    return echo_loop(p);
}

static void *echo_thread(void *p)
{
    echo_arg *a = p;
    atomic_store(&a->tid, my_tid());
    a->result = echo_loop(a);
    return NULL;
}

/* rounds round trips: each waits until the getters of req (threads tids
 * of process pid) sleep, has the worker of lane r % L put one message (so
 * never in the lane they last read) and waits for its echo.  Returns the
 * seconds they took. */
static double round_trips(conc_queue *req, conc_queue *rep, worker *w,
                          unsigned L, int rounds, pid_t pid,
                          const unsigned *tids, int ntids)
{
    double total = 0;
    for (int r = 0; r < rounds; r++) {
        wait_asleep(&req->top->data_seq, pid, tids, ntids);
        char want[32], buf[32];
        size_t len;
        snprintf(want, sizeof want, "round %d", r);
        double t0 = th_now();
        workers_put(&w[r % L], want);
        CHECK_OK(conc_queue_get_into(rep, buf, sizeof buf, &len, 10));
        total += th_now() - t0;
        CHECK_EQ(len, strlen(want));
        CHECK(memcmp(buf, want, len) == 0);
    }
    return total;
}

/* A getter asleep on a queue of lanes sleeps on the queue's one data_seq:
 * a put into any lane wakes it at once.  200 round trips, each put into
 * a lane other than the one the getters last read, each only once a
 * getter has gone to sleep: a lost wake-up costs a whole 100 ms sleep
 * slice, 200 of them 20 s, so the total must stay far below.  Getters: a
 * process (CONC_FOREVER), then two threads (a 30 s timeout). */
TEST(lanes_put_in_another_lane_wakes_a_sleeping_getter)
{
    const unsigned L = 4;
    const int rounds = 200;
    worker w[4];
    pthread_t wt[4];
    conc_queue *req, *rep;
    CHECK_OK(conc_queue_new(&req, &(conc_queue_opts){ .lanes = L,
                                                       .capacity_bytes =
                                                           1 << 16 }));
    CHECK_OK(conc_queue_new(&rep, &(conc_queue_opts){ .capacity_bytes =
                                                          1 << 16 }));
    echo_arg ea = { req, rep, CONC_FOREVER, 0, 0 };
    pid_t pid = th_fork(echo_proc, &ea);
    workers_start(w, wt, req, L);
    unsigned tids[2] = { (unsigned)pid, 0 };
    double took = round_trips(req, rep, w, L, rounds, pid, tids, 1);
    workers_put(&w[1], "stop");
    CHECK_EQ(th_wait(pid, 10), 0);
    if (took > 3.0) {
        th_fail(__FILE__, __LINE__, "%d round trips to a sleeping getter "
                "process took %.2f s: wake-ups were lost", rounds, took);
    }

    echo_arg ta[2] = { { req, rep, 30, -1, 0 }, { req, rep, 30, -1, 0 } };
    pthread_t et[2];
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(pthread_create(&et[i], NULL, echo_thread, &ta[i]), 0);
        while ((tids[i] = atomic_load(&ta[i].tid)) == 0) {
            sched_yield();
        }
    }
    took = round_trips(req, rep, w, L, rounds, getpid(), tids, 2);
    workers_put(&w[2], "stop");
    workers_put(&w[3], "stop");
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(pthread_join(et[i], NULL), 0);
        CHECK_EQ(ta[i].result, 0);
    }
    if (took > 3.0) {
        th_fail(__FILE__, __LINE__, "%d round trips to sleeping getter "
                "threads took %.2f s: wake-ups were lost", rounds, took);
    }
    workers_stop(w, wt, L);
    CHECK(conc_queue_empty(req));
    conc_queue_free(req);
    conc_queue_free(rep);
}

typedef struct blocked_puts {
    conc_queue *q;
    int n;
    int err;
    _Atomic unsigned tid;
} blocked_puts;

static void *blocked_puts_main(void *p)
{
    blocked_puts *a = p;
    atomic_store(&a->tid, my_tid());
    for (int i = 0; i < a->n && a->err == 0; i++) {
        char buf[16];
        int len = snprintf(buf, sizeof buf, "p-%d", i);
        a->err = conc_queue_put(a->q, buf, (size_t)len, 10);
    }
    return NULL;
}

/* A putter asleep on a full lane (not lane 0; white-box: it sleeps on
 * its lane's space_seq) is woken at once by a get from its lane: 60
 * rounds, each getting one message only once the putter sleeps; a lost
 * wake-up costs a 100 ms slice. */
TEST(lanes_get_wakes_a_putter_asleep_on_a_full_lane)
{
    const unsigned L = 4;
    const int rounds = 60;
    conc_queue *q;
    /* Two records of up to 16 bytes fill a lane of 64 (R = 80). */
    q = lanes_queue(L, 64);
    blocked_puts a = { q, rounds + 2, 0, 0 };
    pthread_t t = lane_thread(q, 2, blocked_puts_main, &a);
    unsigned tid;
    while ((tid = atomic_load(&a.tid)) == 0) {
        sched_yield();
    }
    double end = th_now() + 10, total = 0;
    int counts[26] = { 0 };
    for (int r = 0; r < rounds; r++) {
        /* Full: 2 queued, the putter asleep on the third. */
        while (conc_queue_qsize(q) < 2) {
            CHECK(th_now() < end);
            sched_yield();
        }
        wait_asleep(&q->lane[2].sh->space_seq, getpid(), &tid, 1);
        double t0 = th_now();
        char buf[16];
        size_t len;
        CHECK_OK(conc_queue_get_into(q, buf, sizeof buf - 1, &len, 1));
        buf[len] = 0;
        CHECK_EQ(atoi(buf + 2), counts['p' - 'a']++);
        while (conc_queue_qsize(q) < 2) {
            CHECK(th_now() < end);
            sched_yield();
        }
        total += th_now() - t0;
    }
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK_OK(a.err);
    CHECK_EQ(lane_nput(q, 2), (uint64_t)rounds + 2);
    CHECK_EQ(drain_tagged(q, counts), 2);
    if (total > 1.5) {
        th_fail(__FILE__, __LINE__, "%d wake-ups of a putter took %.2f s: "
                "wake-ups were lost", rounds, total);
    }
    conc_queue_free(q);
}

/* ---- close ------------------------------------------------------------------ */

typedef struct drain_slot {
    _Atomic int taken;     /* messages this getter took */
    _Atomic int last;      /* its last result */
    _Atomic int left;      /* qsize when it got CONC_ECLOSED */
    _Atomic int order_bad; /* a lane's messages out of order */
} drain_slot;

/* Gets (timeout 20 s) until CONC_ECLOSED, checking tagged messages stay
 * in order per tag. */
static int getter_until_closed(void *p)
{
    conc_queue *q = ((void **)p)[0];
    drain_slot *s = ((void **)p)[1];
    int last[26];
    for (int i = 0; i < 26; i++) {
        last[i] = -1;
    }
    for (;;) {
        char buf[32];
        size_t len;
        int err = conc_queue_get_into(q, buf, sizeof buf - 1, &len, 20);
        atomic_store(&s->last, err);
        if (err != 0) {
            atomic_store(&s->left, (int)conc_queue_qsize(q));
            return err == CONC_ECLOSED ? 0 : 1;
        }
        buf[len] = 0;
        int tag = buf[0] - 'a', n = atoi(buf + 2);
        if (tag < 0 || tag >= 26 || n <= last[tag]) {
            atomic_store(&s->order_bad, 1);
        } else {
            last[tag] = n;
        }
        atomic_fetch_add(&s->taken, 1);
    }
}

/* Messages queued in several lanes are all delivered before any getter
 * is told CONC_ECLOSED: three getter processes drain a closed queue of 4
 * lanes, each ends with CONC_ECLOSED and found nothing left then; puts
 * after the close fail in every lane; then getters blocked on an empty
 * queue of lanes are woken by puts into lanes they did not read, and by
 * the close. */
TEST(lanes_close_delivers_every_lane_first_and_wakes_getters)
{
    const unsigned L = 4;
    conc_queue *q = lanes_queue(L, 1 << 16);
    for (unsigned k = 0; k < L; k++) {
        put_tagged(q, k, (char)('a' + k), 40);
    }
    CHECK_EQ(conc_queue_qsize(q), 160);
    CHECK_OK(conc_queue_close(q));
    CHECK(conc_queue_closed(q));
    for (unsigned k = 0; k < L; k++) {
        puts_arg a = { q, 'x', 0, 1, CONC_FOREVER, 0, 0 };
        double t0 = th_now();
        on_lane(q, k, puts_main, &a);
        CHECK_ERR(a.err, CONC_ECLOSED);
        CHECK(th_now() - t0 < 1.0);
    }
    drain_slot *slots = shared_map(4096);
    void *args[3][2];
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        args[i][0] = q;
        args[i][1] = &slots[i];
        pids[i] = th_fork(getter_until_closed, args[i]);
    }
    int total = 0;
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(th_wait(pids[i], 20), 0);
        CHECK_ERR(atomic_load(&slots[i].last), CONC_ECLOSED);
        CHECK_EQ(atomic_load(&slots[i].left), 0);
        CHECK_EQ(atomic_load(&slots[i].order_bad), 0);
        total += atomic_load(&slots[i].taken);
    }
    CHECK_EQ(total, 160);
    conc_msg m;
    double t0 = th_now();
    CHECK_ERR(conc_queue_get(q, &m, CONC_FOREVER), CONC_ECLOSED);
    CHECK(th_now() - t0 < 1.0);
    conc_queue_free(q);

    /* Getters asleep in other processes. */
    q = lanes_queue(L, 1 << 16);
    memset(slots, 0, 4096);
    for (int i = 0; i < 3; i++) {
        args[i][0] = q;
        pids[i] = th_fork(getter_until_closed, args[i]);
    }
    wait_armed(&q->top->data_seq);
    for (unsigned k = 1; k < L; k++) {
        put_tagged(q, k, (char)('a' + k), 5);
    }
    /* Each message taken (the getters woke for puts in any lane)... */
    double end = th_now() + 10;
    for (;;) {
        int taken = 0;
        for (int i = 0; i < 3; i++) {
            taken += atomic_load(&slots[i].taken);
        }
        if (taken == 15) {
            break;
        }
        CHECK(th_now() < end);
        sched_yield();
    }
    /* ... and the close wakes every getter with CONC_ECLOSED at once. */
    wait_armed(&q->top->data_seq);
    t0 = th_now();
    CHECK_OK(conc_queue_close(q));
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(th_wait(pids[i], 20), 0);
        CHECK_ERR(atomic_load(&slots[i].last), CONC_ECLOSED);
        CHECK_EQ(atomic_load(&slots[i].order_bad), 0);
    }
    CHECK(th_now() - t0 < 2.0);
    munmap(slots, 4096);
    conc_queue_free(q);
}

typedef struct close_putter {
    conc_queue *q;
    _Atomic unsigned tid;
    _Atomic int result;     /* INT_MIN while it runs */
    _Atomic double returned;
} close_putter;

/* Fills its lane, then blocks in a put until the close. */
static void *close_putter_main(void *p)
{
    close_putter *a = p;
    fill_my_lane(a->q);
    atomic_store(&a->tid, my_tid());
    int err = conc_queue_put(a->q, "blocked", 7, 20);
    atomic_store(&a->returned, th_now());
    atomic_store(&a->result, err);
    return NULL;
}

/* close wakes putters asleep on full lanes, in every lane, at once (not
 * at the end of their 100 ms sleep slice), with CONC_ECLOSED: 15 rounds
 * of three putters on lanes 1 to 3, closed once all three sleep. */
TEST(lanes_close_wakes_putters_asleep_on_full_lanes)
{
    const unsigned L = 4;
    double total = 0;
    for (int round = 0; round < 15; round++) {
        conc_queue *q = lanes_queue(L, 64);
        close_putter a[3];
        pthread_t t[3];
        unsigned tids[3];
        for (int i = 0; i < 3; i++) {
            a[i] = (close_putter){ q, 0, INT_MIN, 0 };
            t[i] = lane_thread(q, 1 + (unsigned)i, close_putter_main, &a[i]);
        }
        for (int i = 0; i < 3; i++) {
            while ((tids[i] = atomic_load(&a[i].tid)) == 0) {
                sched_yield();
            }
            wait_asleep(&q->lane[1 + i].sh->space_seq, getpid(), &tids[i], 1);
        }
        double closed = th_now();
        CHECK_OK(conc_queue_close(q));
        double last = closed;
        for (int i = 0; i < 3; i++) {
            CHECK_EQ(pthread_join(t[i], NULL), 0);
            CHECK_ERR(atomic_load(&a[i].result), CONC_ECLOSED);
            double r = atomic_load(&a[i].returned);
            last = r > last ? r : last;
        }
        total += last - closed;
        conc_queue_free(q);
    }
    if (total > 0.6) {
        th_fail(__FILE__, __LINE__, "15 closes took %.2f s to wake the "
                "putters: wake-ups were lost", total);
    }
}

/* A live thread holding one lane's pmu or cmu until let go. */
typedef struct lock_holder {
    conc_queue *q;
    unsigned lane;
    sem_t held, let_go;
} lock_holder;

/* Holds one of lane h->lane's locks (l) until told to let go. */
static void hold_lock(lock_holder *h, conc__olock *l)
{
    conc__deadline forever;
    conc__deadline_init(&forever, CONC_FOREVER);
    CHECK_OK(conc__olock_acquire(l, &forever));
    sem_post(&h->held);
    sem_take(&h->let_go);
    CHECK_OK(conc__olock_release(l));
}

/* Plays a producer inside its copy in lane h->lane: holds that lane's
 * pmu until told to let go. */
static void *pmu_holder_main(void *p)
{
    lock_holder *h = p;
    hold_lock(h, &h->q->lane[h->lane].sh->pmu);
    return NULL;
}

typedef struct closer {
    conc_queue *q;
    _Atomic int result; /* INT_MIN while close runs */
    _Atomic double returned;
} closer;

static void *closer_main(void *p)
{
    closer *c = p;
    int err = conc_queue_close(c->q);
    atomic_store(&c->returned, th_now());
    atomic_store(&c->result, err);
    return NULL;
}

/* close takes every lane's producers' lock (white-box): while a producer
 * is inside a put in lane 2 (its pmu held), the queue is not closed yet,
 * so that put completes before the close or fails; a holder that never
 * lets go (a stopped process) makes close give up after its grace with
 * CONC_ETIMEDOUT, leaving the queue open and every lane usable. */
TEST(lanes_close_waits_for_a_put_in_any_lane)
{
    const unsigned L = 4;
    conc_queue *q = lanes_queue(L, 1 << 16);
    lock_holder h;
    h.q = q;
    h.lane = 2;
    CHECK_EQ(sem_init(&h.held, 0, 0), 0);
    CHECK_EQ(sem_init(&h.let_go, 0, 0), 0);
    pthread_t ht, ct;
    CHECK_EQ(pthread_create(&ht, NULL, pmu_holder_main, &h), 0);
    sem_take(&h.held);
    closer c = { q, INT_MIN, 0 };
    CHECK_EQ(pthread_create(&ct, NULL, closer_main, &c), 0);
    /* Watch for 0.3 s: the close must not get past lane 2's lock. */
    double t0 = th_now();
    while (th_now() - t0 < 0.3) {
        CHECK(!conc_queue_closed(q));
        CHECK_EQ(atomic_load(&c.result), INT_MIN);
        th_sleep(0.005);
    }
    double let = th_now();
    sem_post(&h.let_go);
    CHECK_EQ(pthread_join(ht, NULL), 0);
    CHECK_EQ(pthread_join(ct, NULL), 0);
    CHECK_OK(atomic_load(&c.result));
    CHECK(atomic_load(&c.returned) >= let);
    CHECK(conc_queue_closed(q));
    conc_queue_free(q);

    /* A holder that stays: CONC_ETIMEDOUT after the grace (1 s), the
     * queue still open, the locks close took all let go. */
    q = lanes_queue(L, 1 << 16);
    h.q = q;
    h.lane = 3;
    CHECK_EQ(pthread_create(&ht, NULL, pmu_holder_main, &h), 0);
    sem_take(&h.held);
    t0 = th_now();
    CHECK_ERR(conc_queue_close(q), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.9 && took < 5);
    CHECK(strstr(conc_errdetail(), "conc_queue_close") != NULL);
    CHECK(!conc_queue_closed(q));
    for (unsigned k = 0; k < 3; k++) {
        CHECK_EQ(atomic_load(&q->lane[k].sh->pmu.state), 0);
        put_tagged(q, k, (char)('a' + k), 1);
    }
    sem_post(&h.let_go);
    CHECK_EQ(pthread_join(ht, NULL), 0);
    put_tagged(q, 3, 'd', 1);
    CHECK_OK(conc_queue_close(q));
    int counts[26] = { 0 };
    CHECK_EQ(drain_tagged(q, counts), 4);
    sem_destroy(&h.held);
    sem_destroy(&h.let_go);
    conc_queue_free(q);
}

/* The threads of the race below, kept from round to round: each runs a
 * round when told (go), and says when it is done. */
typedef struct race_thread {
    conc_queue *q;
    uint32_t id;
    _Atomic int *puts; /* puts that returned 0, every producer */
    bool quit;
    int ok, err;       /* producer: puts that returned 0; any other end */
    int next[3];       /* getter: each producer's next number */
    sem_t go, done;
} race_thread;

/* A producer: puts {id, 0}, {id, 1}... until CONC_ECLOSED. */
static void *race_put_main(void *p)
{
    race_thread *a = p;
    for (;;) {
        sem_take(&a->go);
        if (a->quit) {
            return NULL;
        }
        a->ok = a->err = 0;
        for (uint32_t s = 0;; s++) {
            uint32_t m[2] = { a->id, s };
            int err = conc_queue_put(a->q, m, sizeof m, 5);
            if (err != 0) {
                a->err = err == CONC_ECLOSED ? 0 : err;
                break;
            }
            a->ok++;
            atomic_fetch_add(a->puts, 1);
        }
        sem_post(&a->done);
    }
}

/* The getter: takes until CONC_ECLOSED, each producer's in order. */
static void *race_get_main(void *p)
{
    race_thread *a = p;
    for (;;) {
        sem_take(&a->go);
        if (a->quit) {
            return NULL;
        }
        memset(a->next, 0, sizeof a->next);
        a->err = 0;
        for (;;) {
            uint32_t m[2];
            size_t len;
            int err = conc_queue_get_into(a->q, m, sizeof m, &len, 5);
            if (err != 0) {
                a->err = err == CONC_ECLOSED ? 0 : err;
                break;
            }
            if (len != sizeof m || m[0] >= 3 ||
                m[1] != (uint32_t)a->next[m[0]]) {
                a->err = -1;
                break;
            }
            a->next[m[0]]++;
        }
        sem_post(&a->done);
    }
}

/* A put racing close either goes in, and is delivered, or fails with
 * CONC_ECLOSED: 200 rounds of three producer threads (lanes 1 to 3) and
 * a getter thread, closed after a varying number of puts; the getter
 * ends with CONC_ECLOSED having taken exactly the puts that returned 0,
 * each producer's in order. */
TEST(lanes_put_racing_close_is_delivered_or_refused)
{
    const unsigned L = 4;
    _Atomic int puts = 0;
    race_thread th[4]; /* 0..2 producers, 3 the getter */
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        th[i] = (race_thread){ .id = (uint32_t)i, .puts = &puts };
        CHECK_EQ(sem_init(&th[i].go, 0, 0), 0);
        CHECK_EQ(sem_init(&th[i].done, 0, 0), 0);
        CHECK_EQ(pthread_create(&t[i], NULL,
                                i < 3 ? race_put_main : race_get_main,
                                &th[i]),
                 0);
    }
    for (int round = 0; round < 200; round++) {
        conc_queue *q = lanes_queue(L, 4096);
        /* The producers' first puts claim lanes 1, 2 and 3, in any
         * order. */
        atomic_store(&q->top->next_lane, 1);
        atomic_store(&puts, 0);
        for (int i = 0; i < 4; i++) {
            th[i].q = q;
            sem_post(&th[i].go);
        }
        double end = th_now() + 10;
        while (atomic_load(&puts) < 1 + round % 40) {
            CHECK(th_now() < end);
            sched_yield();
        }
        CHECK_OK(conc_queue_close(q));
        for (int i = 0; i < 4; i++) {
            sem_take(&th[i].done);
        }
        for (int i = 0; i < 4; i++) {
            if (th[i].err != 0) {
                th_fail(__FILE__, __LINE__, "round %d: thread %d: %d", round,
                        i, th[i].err);
            }
        }
        for (int i = 0; i < 3; i++) {
            if (th[3].next[i] != th[i].ok) {
                th_fail(__FILE__, __LINE__, "round %d: producer %d put %d, "
                        "%d delivered", round, i, th[i].ok, th[3].next[i]);
            }
        }
        conc_msg m;
        CHECK_ERR(conc_queue_get(q, &m, 0), CONC_ECLOSED);
        conc_queue_free(q);
    }
    for (int i = 0; i < 4; i++) {
        th[i].quit = true;
        sem_post(&th[i].go);
        CHECK_EQ(pthread_join(t[i], NULL), 0);
        sem_destroy(&th[i].go);
        sem_destroy(&th[i].done);
    }
}

/* ---- sizes ------------------------------------------------------------------ */

typedef struct fill_arg {
    conc_queue *q;
    int filled;
} fill_arg;

/* Fills this thread's lane, then finds it full. */
static void *fill_main(void *p)
{
    fill_arg *a = p;
    CHECK(!conc_queue_full(a->q));
    a->filled = fill_my_lane(a->q);
    CHECK(conc_queue_full(a->q));
    double t0 = th_now();
    CHECK_ERR(conc_queue_put(a->q, "x", 1, 0.05), CONC_EFULL);
    CHECK(th_now() - t0 >= 0.05);
    return NULL;
}

static void *not_full_main(void *p)
{
    conc_queue *q = p;
    CHECK(!conc_queue_full(q));
    CHECK_OK(conc_queue_put(q, "z-0", 3, 0));
    return NULL;
}

/* qsize and empty count every lane; full() is about the calling thread's
 * own lane: a thread whose lane is full sees full() and CONC_EFULL, one
 * on another lane neither. */
TEST(lanes_qsize_sums_every_lane_and_full_is_the_callers_lane)
{
    const unsigned L = 4;
    conc_queue *q = lanes_queue(L, 256);
    CHECK_EQ(conc_queue_qsize(q), 0);
    CHECK(conc_queue_empty(q));
    put_tagged(q, 1, 'b', 1);
    CHECK_EQ(conc_queue_qsize(q), 1);
    CHECK(!conc_queue_empty(q));
    put_tagged(q, 3, 'd', 3);
    CHECK_EQ(conc_queue_qsize(q), 4);
    fill_arg f = { q, 0 };
    on_lane(q, 2, fill_main, &f);
    CHECK(f.filled >= 2);
    CHECK_EQ(lane_nput(q, 2), (uint64_t)f.filled);
    CHECK_EQ(conc_queue_qsize(q), 4 + (size_t)f.filled);
    on_lane(q, 0, not_full_main, q);
    CHECK_EQ(conc_queue_qsize(q), 5 + (size_t)f.filled);
    /* Each get, whichever lane it takes from, takes one off the sum. */
    int counts[26] = { 0 };
    for (int i = 0; i < 5 + f.filled; i++) {
        char buf[32];
        size_t len;
        CHECK_OK(conc_queue_get_into(q, buf, sizeof buf - 1, &len, 0));
        CHECK_EQ(conc_queue_qsize(q), (size_t)(4 + f.filled - i));
    }
    CHECK(conc_queue_empty(q));
    CHECK_EQ(drain_tagged(q, counts), 0);
    conc_queue_free(q);
}

/* ---- task_done / join ---------------------------------------------------- */

static int child_joins(void *arg)
{
    conc_queue *q = arg;
    return conc_queue_join(q, 10) == 0 ? 0 : 1;
}

/* join waits until every message of every lane is task_done'd (none is
 * in lane 0, whose counters are the queue-wide ones), and task_done
 * beyond the messages put is CONC_EINVAL. */
TEST(lanes_task_done_and_join_count_every_lane)
{
    const unsigned L = 4;
    conc_queue *q = lanes_queue(L, 1 << 16);
    CHECK_OK(conc_queue_join(q, 0));
    put_tagged(q, 1, 'b', 2);
    put_tagged(q, 2, 'c', 3);
    put_tagged(q, 3, 'd', 4);
    CHECK_ERR(conc_queue_join(q, 0), CONC_ETIMEDOUT);
    CHECK_ERR(conc_queue_join(q, 0.05), CONC_ETIMEDOUT);
    int counts[26] = { 0 };
    CHECK_EQ(drain_tagged(q, counts), 9);
    for (int i = 0; i < 8; i++) {
        CHECK_OK(conc_queue_task_done(q));
    }
    CHECK_ERR(conc_queue_join(q, 0), CONC_ETIMEDOUT);
    pid_t pid = th_fork(child_joins, q);
    wait_armed(&q->top->join_seq);
    CHECK_OK(conc_queue_task_done(q));
    double t0 = th_now();
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK(th_now() - t0 < 2);
    CHECK_OK(conc_queue_join(q, 0));
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "more times than messages were put") !=
          NULL);
    /* Counted before they are taken, too. */
    put_tagged_from(q, 2, 'c', 3, 1);
    CHECK_OK(conc_queue_task_done(q));
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    CHECK_EQ(drain_tagged(q, counts), 1);
    CHECK_OK(conc_queue_join(q, 0));
    conc_queue_free(q);
}

/* ---- batches ---------------------------------------------------------------- */

typedef struct batch_arg {
    conc_queue *q;
    char tag;
    int from, n;
    double timeout;
    size_t done;
    int err;
} batch_arg;

/* put_many of tag-from .. tag-(from+n-1), n at most 256. */
static int put_tagged_batch(conc_queue *q, char tag, int from, int n,
                            double timeout, size_t *done)
{
    char bufs[256][16];
    conc_msg m[256];
    CHECK(n >= 0 && n <= 256);
    for (int i = 0; i < n; i++) {
        int len = snprintf(bufs[i], sizeof bufs[i], "%c-%d", tag, from + i);
        m[i] = (conc_msg){ bufs[i], (size_t)len };
    }
    return conc_queue_put_many(q, m, (size_t)n, done, timeout);
}

static void *put_many_main(void *p)
{
    batch_arg *a = p;
    a->err = put_tagged_batch(a->q, a->tag, a->from, a->n, a->timeout,
                              &a->done);
    return NULL;
}

/* put_many puts a batch into the thread's one lane, in order; get_many
 * takes up to n (exactly n when one lane holds more); a batch meeting a
 * full lane stops at its timeout with what fit, in order. */
TEST(lanes_put_many_and_get_many)
{
    const unsigned L = 4;
    conc_queue *q = lanes_queue(L, 1 << 16);
    batch_arg a = { q, 'a', 0, 150, 5, 0, 0 };
    on_lane(q, 1, put_many_main, &a);
    CHECK_OK(a.err);
    CHECK_EQ(a.done, 150);
    CHECK_EQ(lane_nput(q, 1), 150);
    batch_arg b = { q, 'b', 0, 90, 5, 0, 0 };
    on_lane(q, 3, put_many_main, &b);
    CHECK_OK(b.err);
    CHECK_EQ(lane_nput(q, 3), 90);
    CHECK_EQ(lane_nput(q, 0) + lane_nput(q, 2), 0);
    int next[2] = { 0, 0 }, total = 0;
    while (total < 240) {
        conc_msg m[16];
        size_t got = 99;
        CHECK_OK(conc_queue_get_many(q, m, 16, &got, 0));
        CHECK(got >= 1 && got <= 16);
        for (size_t i = 0; i < got; i++) {
            char buf[16];
            CHECK(m[i].len < sizeof buf);
            memcpy(buf, m[i].data, m[i].len);
            buf[m[i].len] = 0;
            int t = buf[0] - 'a';
            CHECK(t == 0 || t == 1);
            CHECK_EQ(atoi(buf + 2), next[t]++);
            conc_msg_free(&m[i]);
        }
        total += (int)got;
    }
    CHECK_EQ(next[0], 150);
    CHECK_EQ(next[1], 90);
    conc_msg m[4];
    size_t got = 99;
    CHECK_ERR(conc_queue_get_many(q, m, 4, &got, 0), CONC_EEMPTY);
    CHECK_EQ(got, 0);
    /* One lane of 10: a batch of 3 takes exactly 3. */
    put_tagged(q, 2, 'c', 10);
    CHECK_OK(conc_queue_get_many(q, m, 3, &got, 0));
    CHECK_EQ(got, 3);
    for (int i = 0; i < 3; i++) {
        char want[8];
        snprintf(want, sizeof want, "c-%d", i);
        CHECK(m[i].len == strlen(want) && memcmp(m[i].data, want, 3) == 0);
        conc_msg_free(&m[i]);
    }
    CHECK_EQ(conc_queue_qsize(q), 7);
    conc_queue_free(q);

    /* A lane of 256 bytes holds 8 records of 16: a batch of 20 with
     * timeout 0 puts 8, the rest after room is made. */
    q = lanes_queue(2, 256);
    batch_arg c = { q, 'd', 0, 20, 0, 0, 0 };
    on_lane(q, 1, put_many_main, &c);
    CHECK_ERR(c.err, CONC_EFULL);
    CHECK(c.done >= 1 && c.done < 20);
    int counts[26] = { 0 };
    CHECK_EQ(drain_tagged(q, counts), (int)c.done);
    /* The rest: with a timeout, still more than the lane holds. */
    batch_arg d = { q, 'd', (int)c.done, 20 - (int)c.done, 0.1, 0, 0 };
    on_lane(q, 1, put_many_main, &d);
    CHECK_ERR(d.err, CONC_EFULL);
    CHECK_EQ(d.done, c.done);
    CHECK_EQ(drain_tagged(q, counts), (int)d.done);
    batch_arg e = { q, 'd', (int)(c.done + d.done),
                    20 - (int)(c.done + d.done), 0, 0, 0 };
    on_lane(q, 1, put_many_main, &e);
    CHECK_OK(e.err);
    CHECK_EQ(drain_tagged(q, counts), e.n);
    CHECK_EQ(counts['d' - 'a'], 20);
    conc_queue_free(q);
}

/* ---- named queues ----------------------------------------------------------- */

static int child_opens_and_puts_in_every_lane(void *arg)
{
    conc_queue *q;
    CHECK_OK(conc_queue_open(&q, arg));
    CHECK_EQ(q->nlanes, 4);
    CHECK(q->lane != NULL);
    get_str(q, "for the child");
    for (unsigned k = 0; k < 4; k++) {
        put_tagged(q, k, (char)('a' + k), 5);
    }
    conc_queue_free(q);
    return 0;
}

static int child_puts_once_a_getter_sleeps(void *arg)
{
    conc_queue *q = arg;
    wait_armed(&q->top->data_seq);
    return conc_queue_put(q, "late news", 9, 5) == 0 ? 0 : 1;
}

/* A named queue of lanes: an exec'd process (prog_queue_peer) and a
 * forked one that open it by name see the lanes and use them: FIFO per
 * producer both ways, a put into every lane, a sleeping getter woken. */
TEST(lanes_named_queue_opened_by_forked_and_exec_processes)
{
    const char *name = unique_name("named");
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .name = name, .lanes = 4,
                                                     .capacity_bytes =
                                                         1 << 16 }));
    echo_through_peer(q, name);
    char *out = NULL;
    int st;

    put_str(q, "for the child");
    pid_t pid = th_fork(child_opens_and_puts_in_every_lane, (void *)name);
    CHECK_EQ(th_wait(pid, 20), 0);
    for (unsigned k = 0; k < 4; k++) {
        CHECK(lane_nput(q, k) >= 5);
    }
    int counts[26] = { 0 };
    CHECK_EQ(drain_tagged(q, counts), 20);

    /* The exec'd process sleeps in get until a put of ours. */
    pid = th_fork(child_puts_once_a_getter_sleeps, q);
    char *argv2[] = { (char *)th_prog("prog_queue_peer"), (char *)name,
                      "get1", NULL };
    st = th_run(argv2, &out, 20);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_STR(out, "late news\n");
    free(out);
    CHECK_EQ(th_wait(pid, 10), 0);
    conc_queue_free(q);
    CHECK(!th_shm_exists(name));
}

typedef struct lane_case {
    const char *what;
    unsigned lane;  /* whose header */
    size_t off;     /* offsetof(conc__qshm, field) */
    int width;      /* 4 or 8 */
    uint64_t val;
    int err;
    const char *key; /* in the detail */
} lane_case;

/* conc_queue_open checks every lane's header before trusting any: a
 * lane whose sizes, count or number differ from lane 0's, whose key
 * lacks its top bit or whose magic is gone is CONC_ECORRUPT with a
 * detail naming the lane; a lane count the segment has no room for is
 * caught on lane 0.  Restored, the queue opens and works. */
TEST(lanes_open_checks_every_lane_header)
{
    const char *name = unique_name("hdr");
    const uint64_t cap = 4096;
    conc_queue *c, *q;
    CHECK_OK(conc_queue_new(&c, &(conc_queue_opts){ .name = name, .lanes = 3,
                                                     .capacity_bytes =
                                                         cap }));
    conc_shm *m;
    CHECK_OK(conc_shm_open(&m, name));
    unsigned char *base = conc_shm_ptr(m);
    size_t stride = conc__queue_lane_size(cap);
    CHECK_EQ(conc_shm_size(m), 3 * stride);
    uint64_t key1;
    memcpy(&key1, base + stride + offsetof(conc__qshm, key), 8);
#define F(f) offsetof(conc__qshm, f)
    const lane_case cases[] = {
        { "capacity", 1, F(capacity), 8, cap + 16, CONC_ECORRUPT,
          "header of lane is 1" },
        { "capacity 0", 2, F(capacity), 8, 0, CONC_ECORRUPT,
          "header of lane is 2" },
        { "ring size", 1, F(ring_bytes), 8, 16 + cap + 16, CONC_ECORRUPT,
          "header of lane is 1" },
        { "ring offset", 1, F(ring_off), 4, 0, CONC_ECORRUPT,
          "header of lane is 1" },
        { "maxsize", 1, F(maxsize), 8, 5, CONC_ECORRUPT,
          "header of lane is 1" },
        { "mapping size", 1, F(map_size), 8, 2 * stride, CONC_ECORRUPT,
          "header of lane is 1" },
        { "lane count 2", 1, F(lanes), 4, 2, CONC_ECORRUPT,
          "header of lane is 1" },
        { "lane count 64", 2, F(lanes), 4, 64, CONC_ECORRUPT,
          "header of lane is 2" },
        { "lane number 2 in lane 1", 1, F(lane), 4, 2, CONC_ECORRUPT,
          "header of lane is 1" },
        { "lane number 0 in lane 1", 1, F(lane), 4, 0, CONC_ECORRUPT,
          "header of lane is 1" },
        { "lane number 1 in lane 2", 2, F(lane), 4, 1, CONC_ECORRUPT,
          "header of lane is 2" },
        { "key top bit", 1, F(key), 8, key1 & ~(UINT64_C(1) << 63),
          CONC_ECORRUPT, "key of lane is 1" },
        { "key 0", 2, F(key), 8, 0, CONC_ECORRUPT, "key of lane is 2" },
        { "magic", 1, F(magic), 8, 0, CONC_ECORRUPT,
          "magic or version of a lane is 1" },
        { "version", 2, F(version), 4, 4, CONC_ECORRUPT,
          "magic or version of a lane is 2" },
        /* Lane 0 claiming fewer or more lanes than the segment holds. */
        { "lanes 2 on lane 0", 0, F(lanes), 4, 2, CONC_ECORRUPT,
          "times its lanes" },
        { "lanes 4 on lane 0", 0, F(lanes), 4, 4, CONC_ECORRUPT,
          "times its lanes" },
    };
#undef F
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const lane_case *k = &cases[i];
        unsigned char *hdr = base + k->lane * stride;
        unsigned char saved[sizeof(conc__qshm)];
        memcpy(saved, hdr, sizeof saved);
        poke(hdr, k->off, k->width, k->val);
        CHECK_OPEN_REFUSED(name, k->err, k->key, k->what);
        memcpy(hdr, saved, sizeof saved);
    }
    /* Restored, it opens and works, every lane. */
    CHECK_OK(conc_queue_open(&q, name));
    CHECK_EQ(q->nlanes, 3);
    for (unsigned k = 0; k < 3; k++) {
        put_tagged(q, k, (char)('a' + k), 2);
    }
    int counts[26] = { 0 };
    CHECK_EQ(drain_tagged(c, counts), 6);
    conc_queue_free(q);
    conc_shm_free(m);
    conc_queue_free(c);
}

/* ---- dying peers ------------------------------------------------------------ */

enum { DIE_CMU, DIE_PMU, DIE_PMU_COMMITTED };

typedef struct die_lane {
    conc_queue *q;
    unsigned lane;
    int how;
} die_lane;

/* Plays a consumer or producer of one lane killed holding that lane's
 * lock: taken, and for DIE_PMU_COMMITTED a record "dead" written and
 * committed at the lane's tail, tail and nput not yet advanced. */
static int child_dies_holding_lane_lock(void *arg)
{
    die_lane *a = arg;
    conc_queue *l = &a->q->lane[a->lane];
    conc__qshm *sh = l->sh;
    conc__deadline forever;
    conc__deadline_init(&forever, CONC_FOREVER);
    if (a->how == DIE_CMU) {
        CHECK_OK(conc__olock_acquire(&sh->cmu, &forever));
    } else {
        CHECK_OK(conc__olock_acquire(&sh->pmu, &forever));
        if (a->how == DIE_PMU_COMMITTED) {
            uint64_t t = atomic_load(&sh->tail);
            uint64_t n = atomic_load(&sh->nput);
            conc__qrec *r = (conc__qrec *)(void *)(l->ring + t % l->R);
            memcpy(l->ring + (t + 16) % l->R, "dead", 4);
            atomic_store(&r->len, 4);
            atomic_store(&r->item, (uint32_t)n);
            atomic_store(&r->stamp, t ^ l->key);
        }
    }
    _exit(0); /* the lock word still names this dead thread */
}

static void die_in_lane(conc_queue *q, unsigned lane, int how)
{
    die_lane a = { q, lane, how };
    pid_t pid = th_fork(child_dies_holding_lane_lock, &a);
    CHECK_EQ(th_wait(pid, 10), 0);
}

static void *drains_k3_j3(void *arg)
{
    int counts[26] = { 0 };
    CHECK_EQ(drain_tagged(arg, counts), 6);
    CHECK_EQ(counts['k' - 'a'], 3);
    CHECK_EQ(counts['j' - 'a'], 3);
    return NULL;
}

/* A consumer killed holding lane 2's cmu: a getter whose sweep starts at
 * lane 2 takes all six messages at once, each lane's in order (timeout
 * 0 throughout): the first pass over the held lane asks whether its
 * holder lives and takes the lane over, and lane 3's are not held up;
 * the counts agree, and the lane goes on working. */
TEST(lanes_dead_consumer_holds_up_only_its_lane)
{
    const unsigned L = 4, k = 2, j = 3;
    conc_queue *q = lanes_queue(L, 1 << 16);
    put_tagged(q, k, 'k', 3);
    put_tagged(q, j, 'j', 3);
    die_in_lane(q, k, DIE_CMU);
    CHECK(atomic_load(&q->lane[k].sh->cmu.state) != 0);
    /* A getter whose sweep starts at the dead lane (its own). */
    double t0 = th_now();
    on_lane(q, k, drains_k3_j3, q);
    CHECK(th_now() - t0 < 1.0);
    CHECK_EQ(atomic_load(&q->lane[k].sh->cmu.state), 0);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0), CONC_EEMPTY);
    CHECK_EQ(conc_queue_qsize(q), 0);
    for (int i = 0; i < 6; i++) {
        CHECK_OK(conc_queue_task_done(q));
    }
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    CHECK_OK(conc_queue_join(q, 0));
    /* The lane goes on working. */
    put_tagged(q, k, 'm', 30);
    int counts[26] = { 0 };
    CHECK_EQ(drain_tagged(q, counts), 30);
    conc_queue_free(q);
}

/* A producer killed holding lane 2's pmu: producers on the other lanes
 * put at once, without waiting for that lock (its word is untouched
 * after them); a producer on lane 2 takes it over; nothing is lost. */
TEST(lanes_dead_producer_holds_up_only_its_lane)
{
    const unsigned L = 4, k = 2;
    conc_queue *q = lanes_queue(L, 1 << 16);
    put_tagged(q, k, 'k', 2);
    die_in_lane(q, k, DIE_PMU);
    uint64_t word = atomic_load(&q->lane[k].sh->pmu.state);
    CHECK(word != 0);
    double t0 = th_now();
    put_tagged(q, 0, 'a', 3);
    put_tagged(q, 1, 'b', 3);
    put_tagged(q, 3, 'd', 3);
    CHECK(th_now() - t0 < 1.0);
    CHECK_EQ(atomic_load(&q->lane[k].sh->pmu.state), word);
    int counts[26] = { 0 };
    CHECK_EQ(drain_tagged(q, counts), 11);
    put_tagged_from(q, k, 'k', 2, 3); /* takes the lock over */
    CHECK(atomic_load(&q->lane[k].sh->pmu.state) != word);
    CHECK_EQ(drain_tagged(q, counts), 3);
    CHECK_EQ(counts['k' - 'a'], 5);
    for (int i = 0; i < 14; i++) {
        CHECK_OK(conc_queue_task_done(q));
    }
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    conc_queue_free(q);
}

typedef struct blocked_get {
    conc_queue *q;
    int err;
    char got[32];
    double took, returned;
} blocked_get;

static void get_for(blocked_get *a, double timeout)
{
    size_t len = 0;
    double t0 = th_now();
    a->err = conc_queue_get_into(a->q, a->got, sizeof a->got - 1, &len,
                                 timeout);
    a->returned = th_now();
    a->took = a->returned - t0;
    a->got[len] = 0;
}

static void *blocked_get_main(void *p)
{
    get_for(p, 3);
    return NULL;
}

static void *nowait_get_main(void *p)
{
    get_for(p, 0);
    return NULL;
}

/* A producer killed after committing a record in lane 2 (tail and nput
 * not advanced: no counter shows it): a getter asleep whose own lane is
 * another still gets it (the locked re-check after arming reads every
 * lane's head), without any producer coming to lane 2; then a producer
 * on lane 2 takes over and its message follows; the counts agree. */
TEST(lanes_dead_producers_committed_record_reaches_a_sleeping_getter)
{
    const unsigned L = 4, k = 2;
    conc_queue *q = lanes_queue(L, 1 << 16);
    /* Move lane 2 off ring offset 0. */
    put_tagged(q, k, 'w', 3);
    int counts[26] = { 0 };
    CHECK_EQ(drain_tagged(q, counts), 3);
    blocked_get g = { q, -1, "", 0, 0 };
    pthread_t t = lane_thread(q, 0, blocked_get_main, &g);
    wait_armed(&q->top->data_seq);
    die_in_lane(q, k, DIE_PMU_COMMITTED);
    CHECK_EQ(pthread_join(t, NULL), 0);
    if (g.err != 0) {
        th_fail(__FILE__, __LINE__, "get: %s after %.2f s: the dead "
                "producer's record was never seen", conc_errname(g.err),
                g.took);
    }
    CHECK_STR(g.got, "dead");
    CHECK_EQ(conc_queue_qsize(q), 0);
    /* A producer of lane 2 takes the lock over: its repair counts the
     * dead one's message (nput 3 + 1), then its own two. */
    puts_arg a = { q, 'w', 3, 2, 5, 0, 0 };
    on_lane(q, k, puts_main, &a);
    CHECK_OK(a.err);
    CHECK_EQ(lane_nput(q, k), 6);
    CHECK_EQ(drain_tagged(q, counts), 2);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0), CONC_EEMPTY);
    for (int i = 0; i < 6; i++) {
        CHECK_OK(conc_queue_task_done(q));
    }
    CHECK_ERR(conc_queue_task_done(q), CONC_EINVAL);
    conc_queue_free(q);
}

/* Plays a consumer stopped (SIGSTOP, a debugger) inside its copy in
 * lane h->lane: a live thread holding that lane's cmu until let go. */
static void *cmu_holder_main(void *p)
{
    lock_holder *h = p;
    hold_lock(h, &h->q->lane[h->lane].sh->cmu);
    return NULL;
}

/* Starts a thread (fn: pmu_holder_main or cmu_holder_main) that takes
 * lane's lock and holds it; returns once it holds it. */
static pthread_t start_holder(lock_holder *h, conc_queue *q, unsigned lane,
                              void *(*fn)(void *))
{
    h->q = q;
    h->lane = lane;
    CHECK_EQ(sem_init(&h->held, 0, 0), 0);
    CHECK_EQ(sem_init(&h->let_go, 0, 0), 0);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, fn, h), 0);
    sem_take(&h->held);
    return t;
}

/* Lets the holder go and joins it. */
static void stop_holder(lock_holder *h, pthread_t t)
{
    sem_post(&h->let_go);
    CHECK_EQ(pthread_join(t, NULL), 0);
    sem_destroy(&h->held);
    sem_destroy(&h->let_go);
}

/* A consumer that keeps one lane's cmu (stopped, not dead) holds up that
 * lane only: a getter waiting on the queue, whose sweep starts at that
 * lane, gets a message put into another lane at once, not at its
 * deadline; the held lane's messages keep a closed queue from saying
 * CONC_ECLOSED; once let go, they are delivered. */
TEST(lanes_a_stuck_consumer_holds_up_only_its_lane)
{
    const unsigned L = 4, k = 1, j = 3;
    conc_queue *q = lanes_queue(L, 1 << 16);
    put_tagged(q, k, 'k', 2);
    lock_holder h;
    pthread_t ht = start_holder(&h, q, k, cmu_holder_main);
    blocked_get g = { q, -1, "", 0, 0 };
    pthread_t gt = lane_thread(q, k, blocked_get_main, &g);
    wait_armed(&q->top->data_seq); /* the getter waits */
    double put = th_now();
    put_tagged(q, j, 'j', 1);
    CHECK_EQ(pthread_join(gt, NULL), 0);
    if (g.err != 0) {
        th_fail(__FILE__, __LINE__, "get: %s after %.2f s: held up by the "
                "stuck lane", conc_errname(g.err), g.took);
    }
    CHECK_STR(g.got, "j-0");
    CHECK(g.returned - put < 1.0);
    /* A get with timeout 0 whose sweep starts at the held lane takes
     * another lane's message at once: the held lane is passed over, not
     * waited for (as a one-ring queue's lock is, a second at least). */
    put_tagged_from(q, j, 'j', 1, 1);
    blocked_get g0 = { q, -1, "", 0, 0 };
    pthread_t nt = lane_thread(q, k, nowait_get_main, &g0);
    CHECK_EQ(pthread_join(nt, NULL), 0);
    if (g0.err != 0 || g0.took > 0.5) {
        th_fail(__FILE__, __LINE__, "get, timeout 0: %s after %.2f s",
                conc_errname(g0.err), g0.took);
    }
    CHECK_STR(g0.got, "j-1");
    /* Closed, with messages only in the held lane: not drained. */
    CHECK_OK(conc_queue_close(q));
    conc_msg m;
    double t0 = th_now();
    CHECK_ERR(conc_queue_get(q, &m, 0.2), CONC_EEMPTY);
    CHECK(th_now() - t0 >= 0.2 && th_now() - t0 < 2);
    stop_holder(&h, ht);
    get_str(q, "k-0");
    get_str(q, "k-1");
    CHECK_ERR(conc_queue_get(q, &m, 1), CONC_ECLOSED);
    conc_queue_free(q);
}

typedef struct prefill_arg {
    conc_queue *q;
    char tag;
    int n;
} prefill_arg;

/* Puts tag-0 .. tag-(n-1) in batches: a lane that takes long to drain. */
static void *prefill_main(void *p)
{
    prefill_arg *a = p;
    for (int i = 0; i < a->n; i += 256) {
        int b = a->n - i < 256 ? a->n - i : 256;
        CHECK_OK(put_tagged_batch(a->q, a->tag, i, b, 5, NULL));
    }
    return NULL;
}

/* Takes one tagged message; counts[] as drain_tagged(). */
static char take_tagged(conc_queue *q, int counts[26])
{
    char buf[32];
    size_t len;
    CHECK_OK(conc_queue_get_into(q, buf, sizeof buf - 1, &len, 5));
    buf[len] = 0;
    CHECK(len >= 3 && buf[0] >= 'a' && buf[0] <= 'z' && buf[1] == '-');
    if (atoi(buf + 2) != counts[buf[0] - 'a']) {
        th_fail(__FILE__, __LINE__, "got \"%s\", wanted %c-%d", buf, buf[0],
                counts[buf[0] - 'a']);
    }
    counts[buf[0] - 'a']++;
    return buf[0];
}

#define BUSY_LANE 20000

/* A consumer killed holding lane 1's cmu, while lane 0 holds so many
 * messages that no getter ever finds every other lane empty (the case in
 * which a getter waits for a held lane and so takes a dead holder's lane
 * over): the dead lane's messages still come, in order, before lane 0
 * runs dry. */
TEST(lanes_dead_consumers_lane_is_taken_over_while_others_have_messages)
{
    const unsigned L = 2, j = 0, k = 1;
    conc_queue *q = lanes_queue(L, 2 << 20);
    put_tagged(q, k, 'k', 3);
    prefill_arg pa = { q, 'j', BUSY_LANE };
    on_lane(q, j, prefill_main, &pa);
    CHECK_EQ(lane_nput(q, j), BUSY_LANE);
    die_in_lane(q, k, DIE_CMU);
    int counts[26] = { 0 };
    while (counts['k' - 'a'] < 3 && counts['j' - 'a'] < BUSY_LANE) {
        take_tagged(q, counts);
    }
    if (counts['k' - 'a'] < 3) {
        th_fail(__FILE__, __LINE__, "the dead consumer's lane gave %d of "
                "its 3 messages before the busy lane ran dry",
                counts['k' - 'a']);
    }
    conc_queue_free(q);
}

/* Gets from lane 0's flood until the dead holder's lane (2) gave its 3:
 * they must come before lane 0 is drained. */
static void *dead_behind_stuck_main(void *p)
{
    conc_queue *q = p;
    int counts[26] = { 0 };
    while (counts['k' - 'a'] < 3 && counts['j' - 'a'] < BUSY_LANE) {
        take_tagged(q, counts);
    }
    if (counts['k' - 'a'] < 3) {
        th_fail(__FILE__, __LINE__, "the dead consumer's lane gave %d of "
                "its 3 messages before the busy lane ran dry: a stopped "
                "holder's lane, met first, took every look",
                counts['k' - 'a']);
    }
    return NULL;
}

/* A dead consumer's lane is looked at even when a stopped consumer's
 * lane, with messages too, comes before it in every sweep: the looks at
 * a held lane's holder are paced per lane, so the live holder of lane 1
 * does not use up the look lane 2's dead holder needs. */
TEST(lanes_a_stopped_holders_lane_does_not_hide_a_dead_holders)
{
    const unsigned L = 3, j = 0, s = 1, k = 2;
    conc_queue *q = lanes_queue(L, 2 << 20);
    put_tagged(q, s, 's', 2);
    put_tagged(q, k, 'k', 3);
    prefill_arg pa = { q, 'j', BUSY_LANE };
    on_lane(q, j, prefill_main, &pa);
    die_in_lane(q, k, DIE_CMU);
    lock_holder h;
    pthread_t ht = start_holder(&h, q, s, cmu_holder_main);
    /* Its sweeps start at lane 0; each rotated one meets lane 1 first. */
    on_lane(q, j, dead_behind_stuck_main, q);
    stop_holder(&h, ht);
    conc_queue_free(q);
}

/* Gets from a queue whose lane 0 holds 20000 messages and lane 1 one,
 * until lane 1's comes: it must come before lane 0 is drained. */
static void *starved_main(void *p)
{
    conc_queue *q = p;
    int counts[26] = { 0 };
    while (counts['b' - 'a'] == 0 && counts[0] < 20000) {
        take_tagged(q, counts);
    }
    if (counts['b' - 'a'] == 0) {
        th_fail(__FILE__, __LINE__, "lane 1's message waited for all 20000 "
                "of lane 0");
    }
    return NULL;
}

/* A lane that never runs dry does not starve the others: with 20000
 * messages in lane 0 and one in lane 1, a getter whose sweep starts at
 * lane 0 gets lane 1's long before lane 0 is drained. */
TEST(lanes_a_lane_that_never_runs_dry_starves_no_other)
{
    const unsigned L = 2;
    conc_queue *q = lanes_queue(L, 2 << 20);
    prefill_arg pa = { q, 'a', 20000 };
    on_lane(q, 0, prefill_main, &pa);
    put_tagged(q, 1, 'b', 1);
    on_lane(q, 0, starved_main, q);
    conc_queue_free(q);
}

#define MANY_QUEUES 5

/* Gets from MANY_QUEUES queues in turn (more than a thread remembers),
 * each with 2000 messages in lane 0 and one in lane 1, until every lane
 * 1 message came: each must come before its lane 0 is drained. */
static void *many_queues_main(void *p)
{
    conc_queue **qs = p;
    int counts[MANY_QUEUES][26] = { { 0 } };
    int left = MANY_QUEUES;
    for (int round = 0; left > 0 && round < 2000; round++) {
        for (int i = 0; i < MANY_QUEUES; i++) {
            if (counts[i]['b' - 'a'] == 0 &&
                take_tagged(qs[i], counts[i]) == 'b') {
                left--;
            }
        }
    }
    if (left > 0) {
        th_fail(__FILE__, __LINE__, "%d queues' lane 1 message waited for "
                "all 2000 of their lane 0", left);
    }
    return NULL;
}

/* A thread that reads more queues than it remembers (each get then
 * starts afresh) does not always start at its own lane: with a lane that
 * never runs dry in each queue, the other lane's message still comes. */
TEST(lanes_a_thread_reading_many_queues_starves_no_lane)
{
    conc_queue *qs[MANY_QUEUES];
    for (int i = 0; i < MANY_QUEUES; i++) {
        qs[i] = lanes_queue(2, 1 << 20);
        prefill_arg pa = { qs[i], 'a', 2000 };
        on_lane(qs[i], 0, prefill_main, &pa);
        put_tagged(qs[i], 1, 'b', 1);
    }
    on_lane(qs[0], 0, many_queues_main, qs);
    for (int i = 0; i < MANY_QUEUES; i++) {
        conc_queue_free(qs[i]);
    }
}

/* ---- readers gone ---------------------------------------------------------- */

static int reader_takes_one_and_exits(void *arg)
{
    conc_msg m;
    int err = conc_queue_get(arg, &m, 10);
    conc_msg_free(&m);
    return err == 0 ? 0 : 1;
}

typedef struct gone_arg {
    conc_queue *q;
    int filled, err;
    double took;
    char detail[256];
} gone_arg;

static void *fill_then_block_main(void *p)
{
    gone_arg *a = p;
    a->filled = fill_my_lane(a->q);
    CHECK(conc_queue_full(a->q));
    double t0 = th_now();
    a->err = conc_queue_put(a->q, "blocked", 7, 10);
    a->took = th_now() - t0;
    snprintf(a->detail, sizeof a->detail, "%s", conc_errdetail());
    return NULL;
}

/* A put blocked on a full lane (lane 1; the readers are the queue's, in
 * lane 0's header) gives up with CONC_ECLOSED once every process that
 * read from the queue has exited; a new reader makes room again. */
TEST(lanes_put_blocked_on_a_full_lane_ends_when_every_reader_has_exited)
{
    const unsigned L = 2;
    conc_queue *q = lanes_queue(L, 256);
    put_tagged(q, 1, 'a', 1);
    pid_t pid = th_fork(reader_takes_one_and_exits, q);
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK_EQ(conc_queue_qsize(q), 0);
    gone_arg a = { q, 0, -1, 0, "" };
    on_lane(q, 1, fill_then_block_main, &a);
    if (a.err != CONC_ECLOSED) {
        th_fail(__FILE__, __LINE__, "blocked put: %s after %.2f s",
                conc_errname(a.err), a.took);
    }
    CHECK(a.took < 5);
    CHECK(strstr(a.detail, "every process that read from it has exited") !=
          NULL);
    CHECK_EQ(conc_queue_qsize(q), (size_t)a.filled);
    /* Lane 0 was never full. */
    puts_arg b = { q, 'b', 0, 1, 0, 0, 0 };
    on_lane(q, 0, puts_main, &b);
    CHECK_OK(b.err);
    /* A new reader (this process) takes both lanes' first; lane 1 has
     * room again. */
    char buf[32];
    size_t len;
    CHECK_OK(conc_queue_get_into(q, buf, sizeof buf, &len, 0));
    CHECK_OK(conc_queue_get_into(q, buf, sizeof buf, &len, 0));
    puts_arg c = { q, 'c', 0, 1, 5, 0, 0 };
    on_lane(q, 1, puts_main, &c);
    CHECK_OK(c.err);
    conc_queue_free(q);
}
