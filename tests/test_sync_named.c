/* test_sync_named.c - named sync objects (sync.h, "Names"): a Lock,
 * RLock, Semaphore, Event, Condition and Barrier given .name are reached
 * by an unrelated process (tests/prog_sync_peer.c, started by exec) with
 * conc_X_open, and are the same object there: held, dead holders, values,
 * wake-ups.  Who unlinks the name, what open refuses, and the failure
 * paths of new and open. */
#include "sync_test_util.h"

#include "barrier_int.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char nbuf[96];

static const char *unique_name(const char *tag)
{
    snprintf(nbuf, sizeof nbuf, "conc-test-sync-%s-%d", tag, (int)getpid());
    return nbuf;
}

/* ---- the peer program, run to the end or in a thread ------------------- */

struct peer {
    char *argv[6];
    char *out;
    int status;
    pthread_t th;
};

static void peer_args(struct peer *p, const char *kind, const char *name,
                      const char *act, const char *n)
{
    memset(p, 0, sizeof *p);
    p->argv[0] = (char *)th_prog("prog_sync_peer");
    p->argv[1] = (char *)kind;
    p->argv[2] = (char *)name;
    p->argv[3] = (char *)act;
    p->argv[4] = (char *)n;
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    p->status = th_run(p->argv, &p->out, 30);
    return NULL;
}

static void peer_start(struct peer *p, const char *kind, const char *name,
                       const char *act, const char *n)
{
    peer_args(p, kind, name, act, n);
    p->th = st_thread(peer_main, p);
}

/* Joins a started peer; its output if it exited 0 (the caller frees). */
static char *peer_join(struct peer *p)
{
    st_join(p->th);
    if (!WIFEXITED(p->status) || WEXITSTATUS(p->status) != 0) {
        th_fail(__FILE__, __LINE__, "peer %s %s: status %#x, output: %s",
                p->argv[1], p->argv[3], p->status, p->out);
    }
    return p->out;
}

static char *peer_run(const char *kind, const char *name, const char *act,
                      const char *n)
{
    struct peer p;
    peer_start(&p, kind, name, act, n);
    return peer_join(&p);
}

/* Polls cond (an expression) every ms until it holds, failing after
 * 10 s: a peer started by exec is slow to arrive, above all under TSan. */
#define AWAIT(cond)                                                          \
    do {                                                                     \
        double end_ = th_now() + 10;                                         \
        while (!(cond)) {                                                    \
            if (th_now() > end_) {                                           \
                th_fail(__FILE__, __LINE__, "never true: %s", #cond);        \
            }                                                                \
            th_sleep(0.001);                                                 \
        }                                                                    \
    } while (0)

#define CHECK_PEER(kind, name, act, n, want)                                 \
    do {                                                                     \
        char *out_ = peer_run(kind, name, act, n);                           \
        CHECK_STR(out_, want);                                               \
        free(out_);                                                          \
    } while (0)

/* ---- arguments and refusals ---------------------------------------------- */

TEST(sync_named_bad_arguments)
{
    conc_lock *l = (conc_lock *)1;
    conc_rlock *r = (conc_rlock *)1;
    conc_sem *s = (conc_sem *)1;
    conc_event *e = (conc_event *)1;
    conc_cond *c = (conc_cond *)1;
    conc_barrier *b = (conc_barrier *)1;
    const char *bad[] = { NULL, "", "/", "a/b", "..", NULL };
    for (int i = 0; i < 5; i++) {
        const char *n = bad[i];
        CHECK_ERR(conc_lock_open(&l, n), CONC_EINVAL);
        CHECK(l == NULL);
        CHECK_ERR(conc_rlock_open(&r, n), CONC_EINVAL);
        CHECK(r == NULL);
        CHECK_ERR(conc_sem_open(&s, n), CONC_EINVAL);
        CHECK(s == NULL);
        CHECK_ERR(conc_event_open(&e, n), CONC_EINVAL);
        CHECK(e == NULL);
        CHECK_ERR(conc_cond_open(&c, n), CONC_EINVAL);
        CHECK(c == NULL);
        CHECK_ERR(conc_barrier_open(&b, n), CONC_EINVAL);
        CHECK(b == NULL);
        if (n != NULL) {
            CHECK_ERR(conc_lock_new(&l, &(conc_lock_opts){ .name = n }),
                      CONC_EINVAL);
            CHECK_ERR(conc_rlock_new(&r, &(conc_rlock_opts){ .name = n }),
                      CONC_EINVAL);
            CHECK_ERR(conc_event_new(&e, &(conc_event_opts){ .name = n }),
                      CONC_EINVAL);
            CHECK_ERR(conc_cond_new(&c, &(conc_cond_opts){ .name = n }),
                      CONC_EINVAL);
            CHECK_ERR(conc_sem_new(&s, &(conc_sem_opts){ .name = n }),
                      CONC_EINVAL);
            CHECK_ERR(conc_barrier_new(&b, &(conc_barrier_opts){
                                               .parties = 2, .name = n }),
                      CONC_EINVAL);
        }
    }
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_ERR(conc_event_new(&e, &(conc_event_opts){ .name = longname }),
              CONC_EINVAL);
    CHECK_ERR(conc_lock_open(NULL, "x"), CONC_EINVAL);
    CHECK_ERR(conc_rlock_open(NULL, "x"), CONC_EINVAL);
    CHECK_ERR(conc_sem_open(NULL, "x"), CONC_EINVAL);
    CHECK_ERR(conc_event_open(NULL, "x"), CONC_EINVAL);
    CHECK_ERR(conc_cond_open(NULL, "x"), CONC_EINVAL);
    CHECK_ERR(conc_barrier_open(NULL, "x"), CONC_EINVAL);

    /* A named condition brings its own lock; a named barrier no action. */
    const char *name = unique_name("args");
    conc_lock *plain;
    CHECK_OK(conc_lock_new(&plain, NULL));
    CHECK_ERR(conc_cond_new(&c, &(conc_cond_opts){ .lock = plain,
                                                   .name = name }),
              CONC_EINVAL);
    CHECK(c == NULL);
    CHECK(!th_shm_exists(name));
    CHECK_ERR(conc_barrier_new(&b, &(conc_barrier_opts){
                                       .parties = 2, .name = name,
                                       .action = (conc_barrier_action_fn)1 }),
              CONC_EINVAL);
    CHECK(b == NULL);
    CHECK(!th_shm_exists(name));
    conc_lock_free(plain);
}

TEST(sync_named_open_of_a_missing_name_is_enoent)
{
    const char *name = unique_name("missing");
    conc_lock *l = (conc_lock *)1;
    CHECK_ERR(conc_lock_open(&l, name), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    CHECK(l == NULL);
    conc_cond *c = (conc_cond *)1;
    CHECK_ERR(conc_cond_open(&c, name), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    CHECK(c == NULL);
    char want[64];
    snprintf(want, sizeof want, "CONC_ESYS %d\n", ENOENT);
    const char *kinds[] = { "lock", "rlock", "sem", "event", "cond",
                            "barrier" };
    for (int i = 0; i < 6; i++) {
        CHECK_PEER(kinds[i], name, "missing", NULL, want);
    }
}

TEST(sync_named_open_refuses_another_kind_and_junk)
{
    const char *name = unique_name("kind");
    conc_lock *l;
    CHECK_OK(conc_lock_new(&l, &(conc_lock_opts){ .name = name }));
    /* Taken: a second create fails, the first object is untouched. */
    conc_event *e = (conc_event *)1;
    CHECK_ERR(conc_event_new(&e, &(conc_event_opts){ .name = name }),
              CONC_ESYS);
    CHECK_EQ(errno, EEXIST);
    CHECK(e == NULL);
    CHECK_ERR(conc_event_open(&e, name), CONC_EINVAL);
    CHECK(e == NULL);
    conc_rlock *r = (conc_rlock *)1;
    CHECK_ERR(conc_rlock_open(&r, name), CONC_EINVAL);
    conc_cond *c = (conc_cond *)1;
    CHECK_ERR(conc_cond_open(&c, name), CONC_EINVAL);
    CHECK(c == NULL);
    conc_barrier *b = (conc_barrier *)1;
    CHECK_ERR(conc_barrier_open(&b, name), CONC_EINVAL);
    CHECK(b == NULL);
    char *out = peer_run("sem", name, "missing", NULL);
    CHECK_STR(out, "CONC_EINVAL 0\n");
    free(out);
    conc_lock *l2;
    CHECK_OK(conc_lock_open(&l2, name));
    conc_lock_free(l2);
    conc_lock_free(l);

    /* A named queue is not a lock. */
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .name = name }));
    CHECK_ERR(conc_lock_open(&l, name), CONC_EINVAL);
    conc_queue_free(q);

    /* Nor is a segment nobody ever published (all zero: the opener waits
     * its second for a magic, then refuses), or one too small. */
    conc_shm *m;
    CHECK_OK(conc_shm_create(&m, name, 4096));
    double t0 = th_now();
    conc_sem *s = (conc_sem *)1;
    CHECK_ERR(conc_sem_open(&s, name), CONC_EINVAL);
    CHECK(s == NULL);
    CHECK(th_now() - t0 >= 0.9);
    conc_shm_free(m);
    CHECK_OK(conc_shm_create(&m, name, 4));
    CHECK_ERR(conc_lock_open(&l, name), CONC_EINVAL);
    conc_shm_free(m);
    CHECK(!th_shm_exists(name));
}

TEST(sync_named_barrier_open_checks_its_slot_count)
{
    const char *name = unique_name("barslots");
    conc_barrier *b, *o = (conc_barrier *)1;
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 3,
                                                        .name = name }));
    /* Lie in the segment: three parties but 2000 slots.  An opener must
     * not believe it (it would read past the mapping). */
    conc_shm *m;
    CHECK_OK(conc_shm_open(&m, name));
    struct barrier_shared *sh = conc_shm_ptr(m);
    CHECK_EQ(sh->parties, 3u);
    sh->nslots = 2000;
    CHECK_ERR(conc_barrier_open(&o, name), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "conc_barrier_open") != NULL &&
          strstr(conc_errdetail(), "slots (2000)") != NULL);
    CHECK(o == NULL);
    sh->nslots = 3;
    CHECK_OK(conc_barrier_open(&o, name));
    CHECK_EQ(conc_barrier_parties(o), 3u);
    conc_barrier_free(o);
    conc_shm_free(m);
    conc_barrier_free(b);
    CHECK(!th_shm_exists(name));
}

/* ---- the same object in an unrelated process ------------------------------ */

TEST(sync_named_lock_is_shared_with_an_unrelated_process)
{
    const char *name = unique_name("lock");
    conc_lock *l, *l2;
    CHECK_OK(conc_lock_new(&l, &(conc_lock_opts){ .name = name }));
    CHECK(th_shm_exists(name));
    /* A second handle in this process is another mapping of one word. */
    CHECK_OK(conc_lock_open(&l2, name));
    CHECK(l2 != l);
    CHECK_OK(conc_lock_acquire(l, 0));
    CHECK(conc_lock_locked(l2));
    CHECK_ERR(conc_lock_acquire(l2, 0), CONC_ETIMEDOUT);
    CHECK_PEER("lock", name, "try", NULL, "try CONC_ETIMEDOUT\n");
    /* The peer sleeps until we let go: our release must wake it. */
    struct peer p;
    peer_start(&p, "lock", name, "take", NULL);
    AWAIT(conc__lock_has_waiters(l));
    CHECK_OK(conc_lock_release(l2));
    char *out = peer_join(&p);
    CHECK_STR(out, "take CONC_OK\n");
    free(out);
    CHECK(!conc_lock_locked(l));
    /* A peer that dies holding it: the next acquire here says so. */
    peer_start(&p, "lock", name, "die", NULL);
    st_join(p.th);
    CHECK(WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGKILL);
    CHECK_STR(p.out, "held\n");
    free(p.out);
    CHECK(conc_lock_locked(l));
    CHECK_ERR(conc_lock_acquire(l, 5), CONC_EOWNERDEAD);
    CHECK_OK(conc_lock_release(l));
    CHECK_OK(conc_lock_acquire(l2, 0));
    CHECK_OK(conc_lock_release(l2));
    conc_lock_free(l2);
    CHECK(th_shm_exists(name));
    conc_lock_free(l);
    CHECK(!th_shm_exists(name));
}

TEST(sync_named_rlock_owner_is_a_thread_of_one_process)
{
    const char *name = unique_name("rlock");
    conc_rlock *r;
    CHECK_OK(conc_rlock_new(&r, &(conc_rlock_opts){ .name = name }));
    CHECK_OK(conc_rlock_acquire(r, 0));
    CHECK_OK(conc_rlock_acquire(r, 0));
    CHECK_PEER("rlock", name, "try", NULL, "try CONC_ETIMEDOUT\n");
    CHECK_PEER("rlock", name, "release", NULL, "release CONC_EPERM\n");
    CHECK_OK(conc_rlock_release(r));
    CHECK(conc_rlock_locked(r));
    CHECK_OK(conc_rlock_release(r));
    CHECK(!conc_rlock_locked(r));
    CHECK_PEER("rlock", name, "try", NULL, "try CONC_OK\n");
    conc_rlock_free(r);
    CHECK(!th_shm_exists(name));
}

TEST(sync_named_semaphore_value_and_bound_travel)
{
    const char *name = unique_name("sem");
    conc_sem *s;
    CHECK_OK(conc_sem_new(&s, &(conc_sem_opts){ .value = 2, .bounded = true,
                                                .name = name }));
    CHECK_PEER("sem", name, "acquire", "2", "value 0\n");
    CHECK_EQ(conc_sem_value(s), 0);
    CHECK_ERR(conc_sem_acquire(s, 0), CONC_ETIMEDOUT);
    /* The bound is the creator's: 3 would pass it, 2 does not. */
    CHECK_PEER("sem", name, "release", "3", "release CONC_EINVAL value 0\n");
    CHECK_PEER("sem", name, "release", "2", "release CONC_OK value 2\n");
    CHECK_EQ(conc_sem_value(s), 2);
    /* A peer blocked in acquire is woken by our release. */
    CHECK_OK(conc_sem_acquire(s, 0));
    CHECK_OK(conc_sem_acquire(s, 0));
    struct peer p;
    peer_start(&p, "sem", name, "acquire", "1");
    AWAIT(conc__sem_sleepers(s) > 0);
    CHECK_OK(conc_sem_release(s, 1));
    char *out = peer_join(&p);
    CHECK_STR(out, "value 0\n");
    free(out);
    conc_sem_free(s);
    CHECK(!th_shm_exists(name));
}

TEST(sync_named_event_wakes_an_unrelated_waiter)
{
    const char *name = unique_name("event");
    conc_event *e;
    CHECK_OK(conc_event_new(&e, &(conc_event_opts){ .name = name }));
    struct peer p;
    peer_start(&p, "event", name, "wait", NULL);
    AWAIT(conc__event_sleepers(e) > 0);
    CHECK_OK(conc_event_set(e));
    char *out = peer_join(&p);
    CHECK_STR(out, "wait CONC_OK\n");
    free(out);
    CHECK_OK(conc_event_clear(e));
    CHECK_PEER("event", name, "set", NULL, "");
    CHECK(conc_event_is_set(e));
    conc_event_free(e);
    CHECK(!th_shm_exists(name));
}

TEST(sync_named_condition_notified_by_an_unrelated_process)
{
    const char *name = unique_name("cond");
    conc_cond *c;
    CHECK_OK(conc_cond_new(&c, &(conc_cond_opts){ .name = name }));
    /* We hold the lock until we wait, so the peer's notify (made holding
     * it) cannot come before our wait: it must wake us. */
    CHECK_OK(conc_cond_acquire(c, 0));
    CHECK_OK(conc_cond_acquire(c, 0)); /* its own RLock: re-entrant */
    struct peer p;
    peer_start(&p, "cond", name, "notify", NULL);
    CHECK_OK(conc_cond_wait(c, 20));
    CHECK_OK(conc_cond_release(c));
    CHECK_OK(conc_cond_release(c));
    CHECK_ERR(conc_cond_release(c), CONC_EPERM);
    char *out = peer_join(&p);
    CHECK_STR(out, "");
    free(out);
    /* With nobody waiting, a notify is lost, as in Python. */
    CHECK_PEER("cond", name, "notify", NULL, "");
    CHECK_OK(conc_cond_acquire(c, 0));
    CHECK_ERR(conc_cond_wait(c, 0.05), CONC_ETIMEDOUT);
    CHECK_OK(conc_cond_release(c));
    conc_cond_free(c);
    CHECK(!th_shm_exists(name));
}

TEST(sync_named_barrier_releases_parties_of_two_programs)
{
    const char *name = unique_name("barrier");
    conc_barrier *b;
    CHECK_OK(conc_barrier_new(&b, &(conc_barrier_opts){ .parties = 2,
                                                        .name = name }));
    struct peer p;
    peer_start(&p, "barrier", name, "wait", NULL);
    int index = -1;
    CHECK_OK(conc_barrier_wait(b, 20, &index));
    char *out = peer_join(&p);
    char want[64];
    snprintf(want, sizeof want, "parties 2\nwait CONC_OK index %d\n",
             1 - index);
    CHECK(index == 0 || index == 1);
    CHECK_STR(out, want);
    free(out);
    /* Broken here, broken there. */
    CHECK_OK(conc_barrier_abort(b));
    CHECK_PEER("barrier", name, "wait", NULL,
               "parties 2\nwait CONC_EBROKEN index -1\n");
    conc_barrier_free(b);
    CHECK(!th_shm_exists(name));
}

TEST(sync_named_open_waits_for_a_creator_still_making_it)
{
    /* Play a creator caught between shm_open and ftruncate: the opener
     * finds an empty segment (ENODATA) and must wait, not fail. */
    const char *name = unique_name("making");
    char path[128];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    /* Before the fork: the object cannot be published sooner than 0.3 s
     * after this, however the two processes are scheduled. */
    double t0 = th_now();
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        th_sleep(0.2);
        if (ftruncate(fd, 4096) != 0) {
            _exit(1);
        }
        th_sleep(0.1);
        uint32_t *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
                           fd, 0);
        if (w == MAP_FAILED) {
            _exit(2);
        }
        w[1] = CONC__SYNC_LAYOUT;
        __atomic_store_n(&w[0], CONC__SYNC_MAGIC_LOCK, __ATOMIC_RELEASE);
        _exit(0);
    }
    conc_lock *l = NULL;
    CHECK_OK(conc_lock_open(&l, name));
    CHECK(th_now() - t0 >= 0.3);
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK_OK(conc_lock_acquire(l, 0));
    CHECK_OK(conc_lock_release(l));
    conc_lock_free(l);
    close(fd);
    shm_unlink(path);
}

TEST(sync_named_cond_open_checks_its_lock)
{
    const char *name = unique_name("condlock");
    conc_cond *c, *o = (conc_cond *)1;
    CHECK_OK(conc_cond_new(&c, &(conc_cond_opts){ .name = name }));
    conc_shm *m;
    CHECK_OK(conc_shm_open(&m, name));
    /* The RLock follows the cond's 64-byte shared part (cond.c). */
    uint32_t *rl = (uint32_t *)((char *)conc_shm_ptr(m) + 64);
    CHECK_EQ(rl[0], CONC__SYNC_MAGIC_RLOCK);
    rl[0] = 0x12345678;
    CHECK_ERR(conc_cond_open(&o, name), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "conc_cond_open") != NULL &&
          strstr(conc_errdetail(), "RLock slot") != NULL);
    CHECK(o == NULL);
    rl[0] = CONC__SYNC_MAGIC_RLOCK;
    CHECK_OK(conc_cond_open(&o, name));
    conc_cond_free(o);
    conc_shm_free(m);
    conc_cond_free(c);
    CHECK(!th_shm_exists(name));
}

/* ---- error details and trust ---------------------------------------------- */

static void check_detail(const char *a, const char *b)
{
    if (strstr(conc_errdetail(), a) == NULL ||
        strstr(conc_errdetail(), b) == NULL) {
        th_fail(__FILE__, __LINE__, "detail \"%s\" lacks \"%s\" or \"%s\"",
                conc_errdetail(), a, b);
    }
}

TEST(sync_named_errors_say_what_and_where)
{
    const char *name = unique_name("detail");
    conc_lock *l = NULL, *o = NULL;
    conc_event *e = NULL;
    conc_sem *s = NULL;
    CHECK_ERR(conc_lock_new(&l, &(conc_lock_opts){ .name = "a/b" }),
              CONC_EINVAL);
    check_detail("conc_lock_new: ", "name 'a/b'");
    CHECK_ERR(conc_event_open(&e, name), CONC_ESYS);
    check_detail("conc_event_open: shm_open('", "No such file");
    CHECK_OK(conc_lock_new(&l, &(conc_lock_opts){ .name = name }));
    CHECK_ERR(conc_sem_new(&s, &(conc_sem_opts){ .value = 1, .name = name }),
              CONC_ESYS);
    check_detail("conc_sem_new: shm_open('", "File exists");
    CHECK_ERR(conc_event_open(&e, name), CONC_EINVAL);
    check_detail("conc_event_open: ", "is not a libconc event");
    /* Another layout version. */
    conc_shm *m;
    CHECK_OK(conc_shm_open(&m, name));
    uint32_t *hdr = conc_shm_ptr(m);
    hdr[1] = 9;
    CHECK_ERR(conc_lock_open(&o, name), CONC_EINVAL);
    check_detail("conc_lock_open: ", "layout version 9");
    hdr[1] = CONC__SYNC_LAYOUT;
    conc_shm_free(m);
    /* Another user's segment, then the opt-in. */
    if (geteuid() == 0) {
        char path[128];
        snprintf(path, sizeof path, "/%s", name);
        int fd = shm_open(path, O_RDWR, 0);
        CHECK(fd >= 0);
        CHECK_EQ(fchown(fd, 65534, (gid_t)-1), 0);
        CHECK_ERR(conc_lock_open(&o, name), CONC_EPERM);
        check_detail("conc_lock_open: ", "belongs to uid 65534");
        CHECK_OK(conc_shm_share(0600, 65534));
        CHECK_OK(conc_lock_open(&o, name));
        conc_lock_free(o);
        CHECK_OK(conc_shm_share(0600, (uid_t)-1));
        CHECK_EQ(fchown(fd, 0, (gid_t)-1), 0);
        CHECK_EQ(fchmod(fd, 0666), 0);
        CHECK_ERR(conc_lock_open(&o, name), CONC_EPERM);
        check_detail("conc_lock_open: ", "has mode 0666");
        close(fd);
    }
    conc_lock_free(l);
    CHECK(!th_shm_exists(name));
}

/* ---- fork ------------------------------------------------------------------- */

static void *hold_the_list(void *arg)
{
    atomic_int *held = arg;
    conc__sync_named_guard(true);
    atomic_store(held, 1);
    th_sleep(0.5);
    conc__sync_named_guard(false);
    atomic_store(held, 2);
    return NULL;
}

static int child_makes_and_frees(void *arg)
{
    const char *name = arg;
    conc_lock *a, *n;
    if (conc_lock_new(&a, NULL) != 0 ||
        conc_lock_new(&n, &(conc_lock_opts){ .name = name }) != 0) {
        return 1;
    }
    conc_lock_free(a);
    conc_lock_free(n);
    return 0;
}

TEST(sync_named_fork_while_another_thread_is_in_the_list)
{
    /* Every free - anonymous ones too - looks in the list of named
     * regions under its lock.  A fork while another thread holds that
     * lock must not hand the child a lock held for ever: the fork waits
     * for it (pthread_atfork, registered at load). */
    const char *name = unique_name("forklist");
    static atomic_int held;
    atomic_store(&held, 0);
    /* Detached: the child is forked while it runs, and TSan would call a
     * joinable thread the child never joins a leak. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, &attr, hold_the_list, &held), 0);
    pthread_attr_destroy(&attr);
    AWAIT(atomic_load(&held) == 1);
    /* Forked while the lock is held (unless this thread was held up for
     * the whole half second): the fork waits for the holder, and the
     * child's frees find the lock free.  Without that, the child spins
     * for ever and th_wait fails. */
    pid_t pid = th_fork(child_makes_and_frees, (void *)name);
    CHECK_EQ(th_wait(pid, 10), 0);
    AWAIT(atomic_load(&held) == 2);
    CHECK(!th_shm_exists(name));
}

/* ---- who unlinks ------------------------------------------------------------ */

static int child_uses_and_frees(void *arg)
{
    conc_sem *s = arg;
    if (conc_sem_release(s, 1) != 0) {
        return 1;
    }
    conc_sem_free(s);
    return 0;
}

TEST(sync_named_only_the_creator_unlinks)
{
    const char *name = unique_name("owner");
    conc_sem *s, *o;
    CHECK_OK(conc_sem_new(&s, &(conc_sem_opts){ .value = 0, .name = name }));
    /* An opener's free and a forked child's free leave the name. */
    CHECK_OK(conc_sem_open(&o, name));
    conc_sem_free(o);
    CHECK(th_shm_exists(name));
    pid_t pid = th_fork(child_uses_and_frees, s);
    CHECK_EQ(th_wait(pid, 10), 0);
    CHECK(th_shm_exists(name));
    CHECK_EQ(conc_sem_value(s), 1);
    /* An opener keeps working after the creator freed and unlinked. */
    CHECK_OK(conc_sem_open(&o, name));
    conc_sem_free(s);
    CHECK(!th_shm_exists(name));
    CHECK_OK(conc_sem_acquire(o, 0));
    CHECK_ERR(conc_sem_open(&s, name), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    /* The name is free again. */
    conc_sem *fresh;
    CHECK_OK(conc_sem_new(&fresh, &(conc_sem_opts){ .value = 5,
                                                    .name = name }));
    CHECK_EQ(conc_sem_value(fresh), 5);
    CHECK_EQ(conc_sem_value(o), 0);
    conc_sem_free(o);
    CHECK(th_shm_exists(name));
    conc_sem_free(fresh);
    CHECK(!th_shm_exists(name));
}

TEST(sync_named_creator_that_exits_without_free_unlinks)
{
    const char *name = unique_name("atexit");
    CHECK_PEER("lock", name, "create-exit", NULL, "made\n");
    CHECK(!th_shm_exists(name));
}

/* ---- failure paths ------------------------------------------------------------ */

static int new_kind(int kind, const char *name, void **out)
{
    int err = CONC_EINVAL;
    switch (kind) {
    case 0: {
        conc_lock *x = NULL;
        err = conc_lock_new(&x, &(conc_lock_opts){ .name = name });
        *out = x;
        break;
    }
    case 1: {
        conc_rlock *x = NULL;
        err = conc_rlock_new(&x, &(conc_rlock_opts){ .name = name });
        *out = x;
        break;
    }
    case 2: {
        conc_sem *x = NULL;
        err = conc_sem_new(&x, &(conc_sem_opts){ .value = 1, .name = name });
        *out = x;
        break;
    }
    case 3: {
        conc_event *x = NULL;
        err = conc_event_new(&x, &(conc_event_opts){ .name = name });
        *out = x;
        break;
    }
    case 4: {
        conc_cond *x = NULL;
        err = conc_cond_new(&x, &(conc_cond_opts){ .name = name });
        *out = x;
        break;
    }
    default: {
        conc_barrier *x = NULL;
        err = conc_barrier_new(&x, &(conc_barrier_opts){ .parties = 2,
                                                         .name = name });
        *out = x;
        break;
    }
    }
    return err;
}

static int open_kind(int kind, const char *name, void **out)
{
    int err = CONC_EINVAL;
    switch (kind) {
    case 0: {
        conc_lock *x = NULL;
        err = conc_lock_open(&x, name);
        *out = x;
        break;
    }
    case 1: {
        conc_rlock *x = NULL;
        err = conc_rlock_open(&x, name);
        *out = x;
        break;
    }
    case 2: {
        conc_sem *x = NULL;
        err = conc_sem_open(&x, name);
        *out = x;
        break;
    }
    case 3: {
        conc_event *x = NULL;
        err = conc_event_open(&x, name);
        *out = x;
        break;
    }
    case 4: {
        conc_cond *x = NULL;
        err = conc_cond_open(&x, name);
        *out = x;
        break;
    }
    default: {
        conc_barrier *x = NULL;
        err = conc_barrier_open(&x, name);
        *out = x;
        break;
    }
    }
    return err;
}

static void free_kind(int kind, void *x)
{
    switch (kind) {
    case 0: conc_lock_free(x); break;
    case 1: conc_rlock_free(x); break;
    case 2: conc_sem_free(x); break;
    case 3: conc_event_free(x); break;
    case 4: conc_cond_free(x); break;
    default: conc_barrier_free(x); break;
    }
}

/* Each object works after the loop: one acquire/wait that must succeed. */
static void use_kind(int kind, void *x)
{
    switch (kind) {
    case 0:
        CHECK_OK(conc_lock_acquire(x, 0));
        CHECK_OK(conc_lock_release(x));
        break;
    case 1:
        CHECK_OK(conc_rlock_acquire(x, 0));
        CHECK_OK(conc_rlock_release(x));
        break;
    case 2:
        CHECK_OK(conc_sem_acquire(x, 0));
        CHECK_OK(conc_sem_release(x, 1));
        break;
    case 3:
        CHECK_OK(conc_event_set(x));
        CHECK_OK(conc_event_wait(x, 0));
        break;
    case 4:
        CHECK_OK(conc_cond_acquire(x, 0));
        CHECK_OK(conc_cond_notify(x, 1));
        CHECK_OK(conc_cond_release(x));
        break;
    default:
        CHECK_EQ(conc_barrier_parties(x), 2u);
        break;
    }
}

TEST(sync_named_new_and_open_fault_loops)
{
    const char *name = unique_name("fault");
    for (int kind = 0; kind < 6; kind++) {
        for (int opening = 0; opening < 2; opening++) {
            int failures = 0;
            for (long n = 1;; n++) {
                void *creator = NULL, *x = (void *)1;
                if (opening) {
                    CHECK_OK(new_kind(kind, name, &creator));
                }
                conc__fault_arm(n);
                int err = opening ? open_kind(kind, name, &x)
                                  : new_kind(kind, name, &x);
                bool fired = conc__fault_fired();
                conc__fault_arm(0);
                if (!fired) {
                    CHECK_OK(err);
                    use_kind(kind, x);
                    free_kind(kind, x);
                    free_kind(kind, creator);
                    CHECK(!th_shm_exists(name));
                    break;
                }
                failures++;
                CHECK(err == CONC_ENOMEM || err == CONC_ESYS);
                CHECK(x == NULL);
                /* A failed create leaves no name behind. */
                CHECK_EQ(th_shm_exists(name), opening);
                free_kind(kind, creator);
                CHECK(!th_shm_exists(name));
                CHECK(n < 50);
            }
            /* new: calloc (cond, barrier), shm_open, ftruncate, mmap, the
             * list entry; open: the same less ftruncate. */
            CHECK(failures >= 3);
        }
    }
}
