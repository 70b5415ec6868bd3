/* test_redis_lock.c - conc_lock on Redis (.url), on a real redis-server
 * each test starts: mutual exclusion across processes, the lease renewed
 * while the holder lives, CONC_EOWNERDEAD after a killed holder, the
 * fencing number growing with each grant, CONC_EPERM for a release after
 * the lease was lost (holder stopped past it) and for a handle that does
 * not hold it, two round trips for an uncontended acquire and release
 * (counted by the server), and the errors of a bad name.
 */
#include "harness.h"
#include "redis_server.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <unistd.h>

#define NEED_REDIS()                                                         \
    do {                                                                     \
        if (!conc__net_backend_built("redis")) {                             \
            return;                                                          \
        }                                                                    \
    } while (0)

/* lease 0: left out (the default, 30 s). */
static conc_lock *mkl(const char *url, const char *name, double lease)
{
    conc_lock *l = NULL;
    conc_lock_opts o = { .url = url, .name = name };
    if (lease != 0) {
        o.lease = CONC_TIMEOUT(lease);
    }
    int err = conc_lock_new(&l, &o);
    if (err != 0) {
        th_fail(__FILE__, __LINE__, "conc_lock_new: %s: %s",
                conc_errname(err), conc_errdetail());
    }
    return l;
}

TEST(redis_lock_basics_and_fence)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_lock *l = mkl(r.url, "L", 0);
    uint64_t f1 = 0, f2 = 0;
    CHECK(!conc_lock_locked(l));
    CHECK_ERR(conc_lock_fence(l, &f1), CONC_EPERM);
    CHECK_ERR(conc_lock_release(l), CONC_EPERM);
    CHECK(strstr(conc_errdetail(), "not held") != NULL);
    CHECK_OK(conc_lock_acquire(l, 1.0));
    CHECK(conc_lock_locked(l));
    CHECK_OK(conc_lock_fence(l, &f1));
    /* Not re-entrant, as Python's Lock: a second acquire waits it out. */
    double t0 = th_now();
    CHECK_ERR(conc_lock_acquire(l, 0.3), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.3 && took < 3.0);
    CHECK_ERR(conc_lock_acquire(l, 0), CONC_ETIMEDOUT);
    CHECK_OK(conc_lock_release(l));
    CHECK(!conc_lock_locked(l));
    CHECK_OK(conc_lock_acquire(l, 0));
    CHECK_OK(conc_lock_fence(l, &f2));
    CHECK(f2 > f1);
    /* Another handle (as another host's would be) may release it, as
     * any thread or process may release Python's Lock; the holder finds
     * its grant gone (CONC_EPERM, as after a lost lease), and a release
     * of the free lock is CONC_EPERM too. */
    conc_lock *o = NULL;
    CHECK_OK(conc_lock_open(&o, th_redis_url_of(&r, "L")));
    CHECK(conc_lock_locked(o));
    CHECK_OK(conc_lock_release(o));
    CHECK(!conc_lock_locked(l));
    CHECK_ERR(conc_lock_release(o), CONC_EPERM);
    CHECK(strstr(conc_errdetail(), "not held") != NULL);
    CHECK_ERR(conc_lock_release(l), CONC_EPERM);
    /* the detail names both ways a grant goes, not only a lost lease */
    CHECK(strstr(conc_errdetail(), "another handle or a forked child "
                                   "released it") != NULL);
    CHECK_OK(conc_lock_acquire(o, 1.0));
    CHECK_OK(conc_lock_release(l)); /* this one, not its own old grant */
    CHECK(!conc_lock_locked(o));
    CHECK_OK(conc_lock_acquire(o, 1.0));
    CHECK_OK(conc_lock_release(o));
    conc_lock_free(o);
    conc_lock_free(l);
    th_redis_stop(&r);
}

/* ---- mutual exclusion --------------------------------------------------------- */

typedef struct excl {
    char url[256];
    int counter;       /* non-atomic on purpose: the lock protects it */
    atomic_int inside; /* how many hold it now */
    atomic_int overlap;
} excl;

static int excl_worker(void *arg)
{
    excl *e = arg;
    conc_lock *l = NULL;
    if (conc_lock_new(&l, &(conc_lock_opts){ .url = e->url,
                                              .name = "mx" }) != 0) {
        return 10;
    }
    for (int i = 0; i < 100; i++) {
        if (conc_lock_acquire(l, 20.0) != 0) {
            return 11;
        }
        if (atomic_fetch_add(&e->inside, 1) != 0) {
            atomic_fetch_add(&e->overlap, 1);
        }
        int v = e->counter;
        if (i % 10 == 0) {
            th_sleep(0.001);
        }
        e->counter = v + 1;
        atomic_fetch_sub(&e->inside, 1);
        if (conc_lock_release(l) != 0) {
            return 12;
        }
    }
    conc_lock_free(l);
    return 0;
}

/* The fencing number goes on rising when the server lost the lock's
 * keys (FLUSHALL here; an eviction or a restart without persistence
 * alike): it restarted at 1, and a resource that remembered the last
 * number refused every holder after. */
TEST(redis_lock_fence_rises_across_a_flush)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_lock *l = mkl(r.url, "F", 5.0);
    uint64_t f1 = 0, f2 = 0, f3 = 0;
    CHECK_OK(conc_lock_acquire(l, 1.0));
    CHECK_OK(conc_lock_fence(l, &f1));
    CHECK_OK(conc_lock_release(l));
    free(th_redis_cmd(&r, "FLUSHALL", NULL));
    CHECK_OK(conc_lock_acquire(l, 1.0));
    CHECK_OK(conc_lock_fence(l, &f2));
    CHECK(f2 > f1);
    CHECK_OK(conc_lock_release(l));
    CHECK_OK(conc_lock_acquire(l, 1.0));
    CHECK_OK(conc_lock_fence(l, &f3));
    CHECK_EQ(f3, f2 + 1); /* one a grant, as before */
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
    th_redis_stop(&r);
}

TEST(redis_lock_mutual_exclusion_across_processes)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    excl *e = mmap(NULL, sizeof *e, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(e, 0, sizeof *e);
    snprintf(e->url, sizeof e->url, "%s", r.url);
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = th_fork(excl_worker, e);
    }
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(WEXITSTATUS(th_wait(kids[i], 60.0)), 0);
    }
    CHECK_EQ(e->counter, 300);
    CHECK_EQ(atomic_load(&e->overlap), 0);
    munmap(e, sizeof *e);
    th_redis_stop(&r);
}

/* ---- dead holder, renewed lease, lost lease --------------------------------- */

typedef struct holder_box {
    char url[256];
    double lease;
    double hold;          /* seconds to hold before releasing */
    atomic_int held;
    atomic_int release_rc;
    unsigned long long fence;
} holder_box;

static int holder(void *arg)
{
    holder_box *b = arg;
    conc_lock *l = NULL;
    if (conc_lock_new(&l, &(conc_lock_opts){ .url = b->url, .name = "h",
                                              .lease = CONC_TIMEOUT(b->lease) }) != 0) {
        return 10;
    }
    if (conc_lock_acquire(l, 10.0) != 0) {
        return 11;
    }
    uint64_t f = 0;
    conc_lock_fence(l, &f);
    b->fence = f;
    atomic_store(&b->held, 1);
    th_sleep(b->hold);
    atomic_store(&b->release_rc, conc_lock_release(l));
    conc_lock_free(l);
    return 0;
}

/* The same through conc_lock_open (b->url names the lock), with no
 * .lease of its own. */
static int holder_opened(void *arg)
{
    holder_box *b = arg;
    conc_lock *l = NULL;
    if (conc_lock_open(&l, b->url) != 0) {
        return 10;
    }
    if (conc_lock_acquire(l, 10.0) != 0) {
        return 11;
    }
    atomic_store(&b->held, 1);
    th_sleep(b->hold);
    conc_lock_free(l);
    return 0;
}

static holder_box *box(const th_redis *r, double lease, double hold)
{
    holder_box *b = mmap(NULL, sizeof *b, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(b, 0, sizeof *b);
    snprintf(b->url, sizeof b->url, "%s", r->url);
    b->lease = lease;
    b->hold = hold;
    return b;
}

static void wait_held(holder_box *b)
{
    double t0 = th_now();
    while (!atomic_load(&b->held) && th_now() - t0 < 10) {
        th_sleep(0.005);
    }
    CHECK(atomic_load(&b->held));
}

/* A lock opened by URL without a .lease of its own takes the lease its
 * maker gave (0.5 s here), as a queue's opener does: a holder through
 * it that dies frees the lock as soon, where it kept it for the default
 * 30 s. */
TEST(redis_lock_opened_keeps_its_makers_lease)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_lock *l = mkl(r.url, "h", 0.5);
    holder_box *b = box(&r, 0, 60.0);
    const char *url = th_redis_url_of(&r, "h");
    CHECK(strlen(url) < sizeof b->url);
    memcpy(b->url, url, strlen(url) + 1);
    pid_t kid = th_fork(holder_opened, b);
    wait_held(b);
    kill(kid, SIGKILL);
    th_wait(kid, 5.0);
    double t0 = th_now();
    CHECK_ERR(conc_lock_acquire(l, 5.0), CONC_EOWNERDEAD);
    CHECK(th_now() - t0 < 2.0);
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
    munmap(b, sizeof *b);
    th_redis_stop(&r);
}

TEST(redis_lock_dead_holder_gives_ownerdead)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    holder_box *b = box(&r, 0.5, 60.0);
    pid_t kid = th_fork(holder, b);
    wait_held(b);
    conc_lock *l = mkl(r.url, "h", 0.5);
    CHECK_ERR(conc_lock_acquire(l, 0), CONC_ETIMEDOUT);
    kill(kid, SIGKILL);
    th_wait(kid, 5.0);
    double t0 = th_now();
    CHECK_ERR(conc_lock_acquire(l, 5.0), CONC_EOWNERDEAD);
    CHECK(th_now() - t0 < 2.0); /* within about one lease */
    CHECK(strstr(conc_errdetail(), "previous holder") != NULL);
    uint64_t f = 0;
    CHECK_OK(conc_lock_fence(l, &f));
    CHECK(f > b->fence);
    /* The lock works on, and the dead holder is reported once. */
    CHECK_OK(conc_lock_release(l));
    CHECK_OK(conc_lock_acquire(l, 1.0));
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
    th_redis_stop(&r);
}

TEST(redis_lock_lease_renewed_while_holder_lives)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    holder_box *b = box(&r, 0.3, 1.5); /* five leases, no call */
    pid_t kid = th_fork(holder, b);
    wait_held(b);
    conc_lock *l = mkl(r.url, "h", 0.3);
    CHECK_ERR(conc_lock_acquire(l, 0.8), CONC_ETIMEDOUT);
    /* The holder releases at 1.5 s: the waiter gets it then, cleanly. */
    CHECK_OK(conc_lock_acquire(l, 10.0));
    CHECK_EQ(WEXITSTATUS(th_wait(kid, 10.0)), 0);
    CHECK_OK(atomic_load(&b->release_rc));
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
    th_redis_stop(&r);
}

TEST(redis_lock_release_after_lost_lease_is_eperm)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    holder_box *b = box(&r, 0.4, 1.0);
    pid_t kid = th_fork(holder, b);
    wait_held(b);
    kill(kid, SIGSTOP); /* paused past its lease: it cannot renew */
    conc_lock *l = mkl(r.url, "h", 0.4);
    CHECK_ERR(conc_lock_acquire(l, 5.0), CONC_EOWNERDEAD);
    uint64_t f = 0;
    CHECK_OK(conc_lock_fence(l, &f));
    CHECK(f > b->fence); /* the resource can tell the late writer */
    kill(kid, SIGCONT);
    CHECK_EQ(WEXITSTATUS(th_wait(kid, 10.0)), 0);
    CHECK_ERR(atomic_load(&b->release_rc), CONC_EPERM);
    /* The late release did not take the lock from its new holder. */
    CHECK(conc_lock_locked(l));
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
    th_redis_stop(&r);
}

/* The tids of this process's lease renewers (threads named conc-lease);
 * returns how many, at most cap. */
static int lease_threads(pid_t *tids, int cap)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    CHECK(d != NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char path[300], comm[32] = { 0 };
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            continue; /* exited meanwhile */
        }
        if (fgets(comm, sizeof comm, f) != NULL &&
            strncmp(comm, "conc-lease", 10) == 0 && n < cap) {
            tids[n++] = (pid_t)atoi(e->d_name);
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

/* Renewals reuse the renewer threads: a lease of 0.3 s is renewed about
 * 15 times in 1.5 s, by the same two threads (one renews while the other
 * watches the clock).  A renewer that left whenever another watched made
 * a thread for every renewal. */
TEST(redis_lease_renewers_are_reused)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_lock *l = mkl(r.url, "reuse", 0.3);
    CHECK_OK(conc_lock_acquire(l, 5.0));
    pid_t seen[64];
    int nseen = 0;
    double t0 = th_now();
    while (th_now() < t0 + 1.5) {
        pid_t t[8];
        int n = lease_threads(t, 8);
        for (int i = 0; i < n; i++) {
            int j = 0;
            while (j < nseen && seen[j] != t[i]) {
                j++;
            }
            if (j == nseen && nseen < 64) {
                seen[nseen++] = t[i];
            }
        }
        th_sleep(0.01);
    }
    CHECK(nseen >= 1 && nseen <= 2);
    CHECK_OK(conc_lock_release(l)); /* the grant outlived 5 leases */
    conc_lock_free(l);
    th_redis_stop(&r);
}

/* A server that froze holds only the renewals of its own handles.  Lock
 * a's server is stopped; its renewal, due 6 s after the acquire, waits
 * out its bound (a third of its 18 s lease) until 12 s.  Lock b, on a
 * healthy server with a lease of 2.4 s, must go on being renewed
 * meanwhile: another handle still finds it held at 10 s.  With one
 * renewer doing the renewals in turn, b's lease ran out at about 8.4 s
 * and the other handle took the lock from a holder that lived.  Once the
 * server runs again, the extra renewer goes: two are left. */
TEST(redis_frozen_server_does_not_hold_other_handles_leases)
{
    NEED_REDIS();
    th_redis r1, r2;
    th_redis_start(&r1, NULL);
    th_redis_start(&r2, NULL);
    conc_lock *a = NULL, *other = NULL;
    CHECK_OK(conc_lock_new(&a, &(conc_lock_opts){
                                   .url = r2.url, .name = "a",
                                   .lease = CONC_TIMEOUT(18),
                                   .net_timeout = CONC_TIMEOUT(10) }));
    conc_lock *b = mkl(r1.url, "b", 2.4);
    CHECK_OK(conc_lock_open(&other, th_redis_url_of(&r1, "b")));
    CHECK_OK(conc_lock_acquire(a, 5.0));
    CHECK_OK(conc_lock_acquire(b, 5.0));
    double t0 = th_now();
    th_redis_signal(&r2, SIGSTOP);
    th_sleep(10.0);
    CHECK(th_now() - t0 < 12.0); /* a's renewal is still waiting */
    CHECK_ERR(conc_lock_acquire(other, 0), CONC_ETIMEDOUT);
    CHECK_OK(conc_lock_release(b)); /* b's grant is still b's */
    CHECK_OK(conc_lock_acquire(other, 1.0));
    CHECK_OK(conc_lock_release(other));
    th_redis_signal(&r2, SIGCONT);
    CHECK_OK(conc_lock_release(a));
    pid_t t[8];
    int n = lease_threads(t, 8);
    for (int i = 0; n != 2 && i < 100; i++) {
        th_sleep(0.05);
        n = lease_threads(t, 8);
    }
    CHECK_EQ(n, 2);
    conc_lock_free(other);
    conc_lock_free(b);
    conc_lock_free(a);
    th_redis_stop(&r2);
    th_redis_stop(&r1);
}

/* ---- round trips, errors -------------------------------------------------------- */

TEST(redis_lock_uncontended_is_two_round_trips)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_lock *l = mkl(r.url, "rt", 0);
    CHECK_OK(conc_lock_acquire(l, 1.0)); /* the connection is made */
    CHECK_OK(conc_lock_release(l));
    long long calls = th_redis_calls(&r, "evalsha");
    uint64_t trips = conc__net_round_trips();
    CHECK_OK(conc_lock_acquire(l, 1.0));
    CHECK_OK(conc_lock_release(l));
    /* Two exchanges on the wire, each one script on the server. */
    CHECK_EQ(conc__net_round_trips() - trips, 2);
    CHECK_EQ(th_redis_calls(&r, "evalsha") - calls, 2);
    conc_lock_free(l);
    th_redis_stop(&r);
}

/* The answer to an acquire lost after the server granted it, through
 * tests/py_redis_proxy.py in front of the server (MODE drop: the first
 * answer to the acquire script is lost with its connection: CONC_ENET;
 * MODE corrupt: every answer is replaced by one no acquire gives:
 * CONC_ECORRUPT).  The acquire that fails so gives the grant back: no
 * process holds the lock, and the next acquire, anyone's, is granted at
 * once, without a dead holder.  It used to stay granted to nobody for a
 * whole lease (30 s here), and this handle's own next acquire waited for
 * it.  A grant given back that had found the previous holder dead keeps
 * that death told: the next acquire returns CONC_EOWNERDEAD. */
TEST(redis_lock_grant_whose_answer_was_lost_is_not_left_to_nobody)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_lock *direct = mkl(r.url, "lost", 30);
    char port[16];
    snprintf(port, sizeof port, "%d", r.port);
    for (int round = 0; round < 3; round++) {
        bool corrupt = round == 1, after_death = round == 2;
        if (after_death) {
            /* a holder that dies (freed holding the lock, lease 0.3 s) */
            conc_lock *dies = mkl(r.url, "lost", 0.3);
            CHECK_OK(conc_lock_acquire(dies, 5));
            conc_lock_free(dies);
            th_sleep(0.5);
        }
        pid_t pid;
        int pp = th_py_server("py_redis_proxy.py", port,
                              corrupt ? "corrupt" : "drop", &pid);
        if (pp == 0) {
            th_py_server_stop(pid);
            printf("    (no python3: skipped)\n");
            break;
        }
        char url[64];
        snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", pp);
        conc_lock *l = mkl(url, "lost", 30);
        int err = conc_lock_acquire(l, 5);
        CHECK_ERR(err, corrupt ? CONC_ECORRUPT : CONC_ENET);
        CHECK(!conc_lock_locked(direct));
        CHECK_ERR(conc_lock_acquire(direct, 0),
                  after_death ? CONC_EOWNERDEAD : 0);
        CHECK_OK(conc_lock_release(direct));
        conc_lock_free(l);
        th_py_server_stop(pid);
    }
    conc_lock_free(direct);
    th_redis_stop(&r);
}

TEST(redis_lock_errors)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_lock *l = NULL;
    CHECK_ERR(conc_lock_open(&l, th_redis_url_of(&r, "nobody")), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "no lock 'nobody'") != NULL);
    free(th_redis_cmd(&r, "HSET", "conc:{l:x}", "a", "b", NULL));
    CHECK_ERR(conc_lock_new(&l, &(conc_lock_opts){ .url = r.url,
                                                    .name = "x" }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "holds a hash") != NULL);
    CHECK(l == NULL);
    /* A lease must end: 0 and CONC_FOREVER are refused. */
    CHECK_ERR(conc_lock_new(&l, &(conc_lock_opts){
                                    .url = r.url, .name = "y",
                                    .lease = CONC_TIMEOUT(0) }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "lease") != NULL);
    CHECK_ERR(conc_lock_new(&l, &(conc_lock_opts){
                                    .url = r.url, .name = "y",
                                    .lease = CONC_TIMEOUT(CONC_FOREVER) }),
              CONC_EINVAL);
    conc_lock *s = NULL;
    CHECK_OK(conc_lock_new(&s, NULL));
    uint64_t f = 7;
    CHECK_ERR(conc_lock_fence(s, &f), CONC_EINVAL);
    CHECK_EQ(f, 0);
    conc_lock_free(s);
    th_redis_stop(&r);
}

/* A server on a Unix socket whose queue of connections is full (stopped,
 * or overloaded) did not answer: CONC_ETIMEDOUT at net_timeout, as the
 * same server with room in its queue gives.  The connect's EAGAIN was
 * once final: CONC_ENET at once, "Resource temporarily unavailable". */
TEST(redis_unix_socket_with_a_full_queue_times_out)
{
    char dir[] = "/tmp/conc-test-redis-full-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128], url[192];
    snprintf(path, sizeof path, "%s/r.sock", dir);
    snprintf(url, sizeof url, "unix://%s", path);
    int filler = -1;
    int lfd = th_unix_listener_full(path, &filler);
    conc_lock *l = NULL;
    double t0 = th_now();
    int err = conc_lock_new(&l, &(conc_lock_opts){
                                    .url = url, .name = "x",
                                    .net_timeout = CONC_TIMEOUT(0.5) });
    double dt = th_now() - t0;
    CHECK_ERR(err, CONC_ETIMEDOUT);
    CHECK(dt >= 0.49 && dt < 5.0);
    CHECK(l == NULL);
    close(filler);
    close(lfd);
    unlink(path);
    CHECK_EQ(rmdir(dir), 0);
}

/* ---- a Condition over a lock on a server ------------------------------------ */

typedef struct cond_arg {
    conc_cond *c;
    atomic_int ready; /* set under the lock by the notifier */
    int wait_err;
    bool saw_ready;
    bool held_after;
} cond_arg;

static void *cond_waiter(void *p)
{
    cond_arg *a = p;
    if (conc_cond_acquire(a->c, 5.0) != 0) {
        a->wait_err = -1;
        return NULL;
    }
    a->wait_err = conc_cond_wait(a->c, 10.0);
    a->saw_ready = atomic_load(&a->ready) == 1;
    a->held_after = conc_cond_release(a->c) == 0;
    return NULL;
}

TEST(redis_lock_serves_a_condition)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_lock *l = mkl(r.url, "cv", 0);
    conc_cond *c = NULL;
    CHECK_OK(conc_cond_new(&c, &(conc_cond_opts){ .lock = l }));
    /* A wait that times out gives the lock back to its caller. */
    CHECK_OK(conc_cond_acquire(c, 2.0));
    CHECK_ERR(conc_cond_wait(c, 0.2), CONC_ETIMEDOUT);
    CHECK(conc_lock_locked(l));
    CHECK_OK(conc_cond_release(c));
    CHECK(!conc_lock_locked(l));
    /* A waiter releases the server's lock while it waits (else the
     * notifier could not acquire it) and holds it again when woken. */
    cond_arg a = { .c = c };
    pthread_t t;
    CHECK(pthread_create(&t, NULL, cond_waiter, &a) == 0);
    th_sleep(0.3);
    CHECK_OK(conc_cond_acquire(c, 5.0));
    atomic_store(&a.ready, 1);
    CHECK_OK(conc_cond_notify(c, 1));
    CHECK_OK(conc_cond_release(c));
    pthread_join(t, NULL);
    CHECK_EQ(a.wait_err, 0);
    CHECK(a.saw_ready);
    CHECK(a.held_after);
    CHECK(!conc_lock_locked(l));
    conc_cond_free(c);
    conc_lock_free(l);
    th_redis_stop(&r);
}

/* ---- fork: the lock and a dict used through inherited handles --------------- */

typedef struct fork_box {
    conc_lock *l;
    conc_dict *d;
    atomic_int bad;
} fork_box;

static int fork_incr(const void *old, size_t oldlen, bool found,
                     conc_buf *out, void *arg)
{
    (void)arg;
    unsigned v = 0;
    if (found && oldlen == sizeof v) {
        memcpy(&v, old, sizeof v);
    }
    v++;
    return conc_buf_append(out, &v, sizeof v);
}

/* 100 rounds: the lock around a read-modify-write of key "plain" (get,
 * then set: only the lock makes it exact), and an update of "cas". */
static int fork_hammer(void *arg)
{
    fork_box *b = arg;
    for (int i = 0; i < 100; i++) {
        if (conc_lock_acquire(b->l, 10.0) != 0) {
            atomic_fetch_add(&b->bad, 1);
            return 1;
        }
        unsigned v = 0;
        size_t len = 0;
        int err = conc_dict_get_into(b->d, "plain", 5, &v, sizeof v, &len);
        if (err != 0) {
            atomic_fetch_add(&b->bad, 1);
        }
        v++;
        if (conc_dict_set(b->d, "plain", 5, &v, sizeof v) != 0 ||
            conc_lock_release(b->l) != 0 ||
            conc_dict_update(b->d, "cas", 3, fork_incr, NULL) != 0) {
            atomic_fetch_add(&b->bad, 1);
            return 1;
        }
    }
    return 0;
}

/* A child forked after the parent's handles made their connections uses
 * the inherited handles at the same time as the parent: each process
 * talks on connections of its own (the server sees both names), and the
 * lock excludes across them (the count is exact). */
TEST(redis_fork_child_uses_inherited_lock_and_dict)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    fork_box *b = mmap(NULL, sizeof *b, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(b != MAP_FAILED);
    memset(b, 0, sizeof *b);
    b->l = mkl(r.url, "fk", 0);
    CHECK_OK(conc_dict_new(&b->d, &(conc_dict_opts){ .url = r.url,
                                                      .name = "fk" }));
    CHECK_OK(conc_lock_acquire(b->l, 1.0)); /* connections made */
    CHECK_OK(conc_lock_release(b->l));
    CHECK_OK(conc_dict_set(b->d, "plain", 5, "\0\0\0\0", 4));
    pid_t kid = th_fork(fork_hammer, b);
    CHECK_EQ(fork_hammer(b), 0);
    CHECK_EQ(WEXITSTATUS(th_wait(kid, 60.0)), 0);
    CHECK_EQ(atomic_load(&b->bad), 0);
    unsigned v = 0;
    size_t len = 0;
    CHECK_OK(conc_dict_get_into(b->d, "plain", 5, &v, sizeof v, &len));
    CHECK_EQ(v, 200);
    CHECK_OK(conc_dict_get_into(b->d, "cas", 3, &v, sizeof v, &len));
    CHECK_EQ(v, 200);
    conc_dict_free(b->d);
    conc_lock_free(b->l);
    munmap(b, sizeof *b);
    th_redis_stop(&r);
}
