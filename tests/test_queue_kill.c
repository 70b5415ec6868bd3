/* test_queue_kill.c - the kill-anywhere stress test (issue 3, item 3).
 *
 * Three producer and three consumer processes share one queue.  For a
 * fixed time the parent SIGKILLs one of them at random every 0-12 ms -
 * halfway through a put, halfway through a get, asleep, anywhere - and
 * starts a replacement in its lane.  Every message carries its producer
 * lane, a per-lane sequence number, its length and a pattern derived from
 * them; consumers check every byte, check that each lane's numbers rise
 * (FIFO), and count each (lane, seq) in shared memory, failing at once on
 * a second delivery.  The ledger says what may be missing:
 *   - a producer lane publishes `attempt` (and how many, `count`) before
 *     each put or put_many and `next` after it; a producer killed between
 *     the two leaves those messages uncertain (each may or may not have
 *     been delivered), and its replacement goes on with the next number;
 *   - a consumer sets `busy` to the most messages it may hold (1 for a
 *     get, n for a get_many) before each get and clears it after
 *     counting them; a consumer killed while busy may have taken that many
 *     messages with it.
 * A third of the puts are batches (put_many of 1-6 messages) and a third
 * of the gets are too (get_many of up to 8), so kills land inside
 * batches too.
 * At the end the producers stop, the parent closes the queue, the
 * consumers drain it and exit, and the parent checks: no message damaged,
 * duplicated or out of order; every message put is delivered except
 * uncertain ones, and the number of missing ones is at most the number of
 * consumers killed while busy.  The whole run is bounded in time: a
 * survivor blocked for ever on a dead process's half-finished work would
 * fail the test's deadline. */
#include "harness.h"

#include "queue_int.h"

#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define NPROD 3
#define NCONS 3
#define MAXSEQ (1u << 20)

typedef struct {
    _Atomic uint32_t next;    /* the next sequence number to put */
    _Atomic uint32_t attempt; /* the number being put; UINT32_MAX: none */
    _Atomic uint32_t count;   /* how many from attempt on (a batch) */
} prod_lane;

typedef struct {
    _Atomic uint32_t busy;
} cons_lane;

typedef struct {
    prod_lane prod[NPROD];
    cons_lane cons[NCONS];
    _Atomic int stop;
    _Atomic int error;
    char errmsg[256];
    _Atomic uint8_t seen[NPROD][MAXSEQ];
} ledger;

static ledger *L;
static conc_queue *Q;
static size_t max_len;

static uint64_t mix(uint64_t x)
{
    x += UINT64_C(0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}

/* The length of message (lane, seq): mostly small, one in four large, so
 * kills often land inside a long copy. */
static size_t msg_len(uint32_t lane, uint32_t seq)
{
    uint64_t r = mix((uint64_t)lane << 32 | seq);
    if (r % 4 == 0) {
        return 16 + (size_t)((r >> 8) % (max_len - 16));
    }
    return 16 + (size_t)((r >> 8) % 200);
}

static void fill(unsigned char *b, uint32_t lane, uint32_t seq, size_t n)
{
    uint32_t hdr[4] = { lane, seq, (uint32_t)n,
                        (uint32_t)mix(lane * 7919u + seq) };
    memcpy(b, hdr, 16);
    uint64_t x = mix(hdr[3]);
    for (size_t i = 16; i < n; i++) {
        if (i % 8 == 0) {
            x = mix(x);
        }
        b[i] = (unsigned char)(x >> (8 * (i % 8)));
    }
}

static _Noreturn void child_fail(const char *fmt, uint32_t a, uint32_t b,
                                 size_t c)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&L->error, &expected, 1)) {
        snprintf(L->errmsg, sizeof L->errmsg, fmt, a, b, c);
    }
    _exit(1);
}

#define PUT_BATCH 6
#define GET_BATCH 8

/* One batch of k messages from seq on: 0, or the error with *done. */
static int put_batch(prod_lane *p, uint32_t lane, uint32_t seq, uint32_t k,
                     unsigned char **bufs, size_t *done)
{
    conc_msg msgs[PUT_BATCH];
    for (uint32_t i = 0; i < k; i++) {
        msgs[i].len = msg_len(lane, seq + i);
        msgs[i].data = bufs[i];
        fill(bufs[i], lane, seq + i, msgs[i].len);
    }
    atomic_store(&p->count, k);
    atomic_store(&p->attempt, seq);
    return conc_queue_put_many(Q, msgs, k, done, 0.5);
}

static int producer(void *arg)
{
    uint32_t lane = (uint32_t)(uintptr_t)arg;
    unsigned char *bufs[PUT_BATCH];
    for (int i = 0; i < PUT_BATCH; i++) {
        bufs[i] = malloc(max_len);
    }
    prod_lane *p = &L->prod[lane];
    for (uint64_t r = mix(lane + (uint64_t)getpid()); !atomic_load(&L->stop);
         r = mix(r)) {
        uint32_t seq = atomic_load(&p->next);
        uint32_t k = r % 3 == 0 ? 1 + (uint32_t)(r >> 8) % PUT_BATCH : 1;
        if (seq + k > MAXSEQ) {
            break;
        }
        size_t done = 0;
        int err;
        if (k > 1) {
            err = put_batch(p, lane, seq, k, bufs, &done);
        } else {
            size_t n = msg_len(lane, seq);
            fill(bufs[0], lane, seq, n);
            atomic_store(&p->count, 1);
            atomic_store(&p->attempt, seq);
            err = conc_queue_put(Q, bufs[0], n, 0.5);
            done = err == 0;
        }
        if (err != 0 && err != CONC_EFULL) {
            child_fail("producer %u: put: %u %zu", lane, 0, (size_t)-err);
        }
        /* What went in is certain; the rest is put again. */
        atomic_store(&p->next, seq + (uint32_t)done);
    }
    for (int i = 0; i < PUT_BATCH; i++) {
        free(bufs[i]);
    }
    return 0;
}

/* Checks one message and counts it (failing the run on damage, a
 * duplicate or disorder). */
static void take(const unsigned char *p, size_t n, unsigned char *want,
                 int64_t *last)
{
    if (n < 16) {
        child_fail("consumer: short message %u %u %zu", 0, 0, n);
    }
    uint32_t hdr[4];
    memcpy(hdr, p, 16);
    if (hdr[0] >= NPROD || hdr[1] >= MAXSEQ ||
        n != msg_len(hdr[0], hdr[1]) || hdr[2] != n) {
        child_fail("consumer: bad header lane %u seq %u len %zu", hdr[0],
                   hdr[1], n);
    }
    fill(want, hdr[0], hdr[1], n);
    if (memcmp(want, p, n) != 0) {
        child_fail("consumer: damaged lane %u seq %u len %zu", hdr[0],
                   hdr[1], n);
    }
    if ((int64_t)hdr[1] <= last[hdr[0]]) {
        child_fail("consumer: out of order lane %u seq %u after %zu",
                   hdr[0], hdr[1], (size_t)last[hdr[0]]);
    }
    last[hdr[0]] = hdr[1];
    if (atomic_fetch_add(&L->seen[hdr[0]][hdr[1]], 1) != 0) {
        child_fail("consumer: duplicate lane %u seq %u (%zu)", hdr[0],
                   hdr[1], 0);
    }
}

static int consumer(void *arg)
{
    uint32_t lane = (uint32_t)(uintptr_t)arg;
    unsigned char *buf = malloc(max_len);
    unsigned char *want = malloc(max_len);
    cons_lane *c = &L->cons[lane];
    int64_t last[NPROD] = { -1, -1, -1 };
    for (uint64_t k = 0, r = mix(lane + (uint64_t)getpid());; k++,
                  r = mix(r)) {
        conc_msg m[GET_BATCH] = { { 0 } };
        size_t n = 0, got = 1;
        int err;
        if (k % 3 == 2) {
            size_t want_n = 1 + (size_t)(r % GET_BATCH);
            atomic_store(&c->busy, (uint32_t)want_n);
            err = conc_queue_get_many(Q, m, want_n, &got, 0.5);
            if (err == 0 && (got < 1 || got > want_n)) {
                child_fail("consumer %u: get_many got %u of %zu", lane,
                           (uint32_t)got, want_n);
            }
        } else if (k % 3 == 1) {
            atomic_store(&c->busy, 1);
            err = conc_queue_get(Q, &m[0], 0.5);
        } else {
            atomic_store(&c->busy, 1);
            err = conc_queue_get_into(Q, buf, max_len, &n, 0.5);
        }
        if (err == CONC_ECLOSED) {
            atomic_store(&c->busy, 0);
            break;
        }
        if (err == CONC_EEMPTY) {
            atomic_store(&c->busy, 0);
            continue;
        }
        if (err != 0) {
            child_fail("consumer %u: get: %u %zu", lane, 0, (size_t)-err);
        }
        if (k % 3 == 0) {
            take(buf, n, want, last);
        } else {
            for (size_t i = 0; i < got; i++) {
                take(m[i].data, m[i].len, want, last);
                conc_msg_free(&m[i]);
            }
        }
        atomic_store(&c->busy, 0);
    }
    free(buf);
    free(want);
    return 0;
}

static void check_no_error(void)
{
    if (atomic_load(&L->error)) {
        th_fail(__FILE__, __LINE__, "%s", L->errmsg);
    }
}

static void stress(const conc_queue_opts *opts, size_t maxlen, double secs)
{
    max_len = maxlen;
    L = mmap(NULL, sizeof *L, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(L != MAP_FAILED);
    for (int i = 0; i < NPROD; i++) {
        atomic_store(&L->prod[i].attempt, UINT32_MAX);
        atomic_store(&L->prod[i].count, 1);
    }
    CHECK_OK(conc_queue_new(&Q, opts));
    static uint8_t uncertain[NPROD][MAXSEQ];
    memset(uncertain, 0, sizeof uncertain);
    pid_t prod[NPROD], cons[NCONS];
    for (int i = 0; i < NPROD; i++) {
        prod[i] = th_fork(producer, (void *)(uintptr_t)i);
    }
    for (int i = 0; i < NCONS; i++) {
        cons[i] = th_fork(consumer, (void *)(uintptr_t)i);
    }
    uint64_t rng = (uint64_t)getpid();
    int pkills = 0, ckills = 0, lost_budget = 0, uncertain_n = 0;
    /* At least secs of killing, and until each kind has been killed ten
     * times and a thousand messages have gone through (a loaded machine
     * or a sanitizer build forks slowly); at most 30 s. */
    double start = th_now();
    for (;;) {
        double now = th_now();
        uint64_t sofar = 0;
        for (int i = 0; i < NPROD; i++) {
            sofar += atomic_load(&L->prod[i].next);
        }
        if ((now - start >= secs && pkills >= 10 && ckills >= 10 &&
             sofar >= 1000) ||
            now - start >= 30) {
            break;
        }
        rng = mix(rng);
        th_sleep((double)(rng % 12000) / 1e6);
        check_no_error();
        int victim = (int)((rng >> 20) % (NPROD + NCONS));
        pid_t *slot = victim < NPROD ? &prod[victim] : &cons[victim - NPROD];
        kill(*slot, SIGKILL);
        int st = th_wait(*slot, 10);
        if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
            check_no_error();
            th_fail(__FILE__, __LINE__, "child exited %d", WEXITSTATUS(st));
        }
        if (victim < NPROD) {
            prod_lane *p = &L->prod[victim];
            uint32_t a = atomic_load(&p->attempt);
            uint32_t k = atomic_load(&p->count);
            if (a == atomic_load(&p->next)) {
                for (uint32_t i = 0; i < k; i++) {
                    uncertain[victim][a + i] = 1;
                }
                uncertain_n += (int)k;
                atomic_store(&p->next, a + k);
            }
            pkills++;
            *slot = th_fork(producer, (void *)(uintptr_t)victim);
        } else {
            cons_lane *c = &L->cons[victim - NPROD];
            uint32_t busy = atomic_load(&c->busy);
            if (busy) {
                lost_budget += (int)busy;
                atomic_store(&c->busy, 0);
            }
            ckills++;
            *slot = th_fork(consumer, (void *)(uintptr_t)(victim - NPROD));
        }
    }
    /* Stop the producers, let the consumers drain, then close. */
    atomic_store(&L->stop, 1);
    for (int i = 0; i < NPROD; i++) {
        CHECK_EQ(th_wait(prod[i], 20), 0);
    }
    check_no_error();
    uint64_t total = 0;
    for (int i = 0; i < NPROD; i++) {
        total += atomic_load(&L->prod[i].next);
    }
    CHECK_OK(conc_queue_close(Q));
    for (int i = 0; i < NCONS; i++) {
        CHECK_EQ(th_wait(cons[i], 20), 0);
    }
    check_no_error();
    CHECK(conc_queue_empty(Q));
    conc_msg m;
    CHECK_ERR(conc_queue_get(Q, &m, 0), CONC_ECLOSED);

    int lost = 0, uncertain_got = 0;
    for (int i = 0; i < NPROD; i++) {
        uint32_t next = atomic_load(&L->prod[i].next);
        for (uint32_t s = 0; s < MAXSEQ; s++) {
            uint8_t seen = atomic_load(&L->seen[i][s]);
            if (s >= next) {
                CHECK_EQ(seen, 0);
                continue;
            }
            CHECK(seen <= 1);
            if (uncertain[i][s]) {
                uncertain_got += seen;
            } else if (seen == 0) {
                lost++;
            }
        }
    }
    /* The counters survived the repairs: everything committed was taken
     * (nget == nput), and what was committed but never counted by a
     * survivor went down with a busy consumer. */
    uint64_t delivered = 0;
    for (int i = 0; i < NPROD; i++) {
        for (uint32_t s = 0; s < MAXSEQ; s++) {
            delivered += atomic_load(&L->seen[i][s]);
        }
    }
    uint64_t nput = atomic_load(&Q->sh->nput);
    CHECK_EQ(atomic_load(&Q->sh->nget), nput);
    CHECK(nput >= delivered);
    CHECK(nput - delivered >= (uint64_t)lost);
    CHECK(nput - delivered <= (uint64_t)lost_budget);
    /* task_done counts exactly the messages the queue holds as put. */
    for (uint64_t i = 0; i < nput; i++) {
        CHECK_OK(conc_queue_task_done(Q));
    }
    CHECK_ERR(conc_queue_task_done(Q), CONC_EINVAL);
    CHECK_OK(conc_queue_join(Q, 0));
    printf("    %llu messages put; killed %d producers (%d mid-put, %d of "
           "those delivered) and %d consumers (%d busy); %d lost\n",
           (unsigned long long)total, pkills, uncertain_n, uncertain_got,
           ckills, lost_budget, lost);
    CHECK(lost <= lost_budget);
    CHECK(pkills >= 10);
    CHECK(ckills >= 10);
    CHECK(total >= 1000);
    conc_queue_free(Q);
    munmap(L, sizeof *L);
}

TEST_T(queue_survives_random_kills_small_ring, 60)
{
    /* A 64 KiB ring: producers often wait for room, records wrap. */
    stress(&(conc_queue_opts){ .capacity_bytes = 64 << 10 }, 30000, 2.0);
}

TEST_T(queue_survives_random_kills_item_bound, 60)
{
    /* The default ring bounded by items: skip records, maxsize waits. */
    stress(&(conc_queue_opts){ .maxsize = 8 }, 100000, 2.0);
}
