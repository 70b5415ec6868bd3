/* test_thread.c - conc_thread_*: lifecycle and every error path, result,
 * ident (kernel tid) and names (Thread-N, kernel comm), join timeouts,
 * signals during join, joining self, several joiners, freeing a running
 * thread (detached, still joined at exit), pthread_exit in a target,
 * handles copied into a forked child, the fault loop, and the exit
 * behaviour of a whole program (tests/prog_thread_exit.c). */
#include "harness.h"

#include "conc_int.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <sys/wait.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

typedef struct {
    _Atomic int go;
    _Atomic int ran;
    _Atomic pid_t tid;
    char comm[32];
} ctl_t;

static void *echo(void *arg)
{
    return arg;
}

/* Waits for ctl->go (at most 20 s), records its tid and kernel name. */
static void *waits_for_go(void *arg)
{
    ctl_t *c = arg;
    atomic_store(&c->tid, conc__os_gettid());
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/comm",
             (int)conc__os_gettid());
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        if (fgets(c->comm, sizeof c->comm, f) == NULL) {
            c->comm[0] = '\0';
        }
        fclose(f);
        c->comm[strcspn(c->comm, "\n")] = '\0';
    }
    atomic_fetch_add(&c->ran, 1);
    for (int i = 0; i < 20000 && !atomic_load(&c->go); i++) {
        th_sleep(0.001);
    }
    return (void *)0x1234;
}

TEST(thread_rejects_bad_arguments)
{
    conc_thread *t = NULL;
    void *r;
    CHECK_ERR(conc_thread_new(NULL, &(conc_thread_opts){ .target = echo }),
              CONC_EINVAL);
    CHECK_ERR(conc_thread_new(&t, NULL), CONC_EINVAL);
    CHECK_ERR(conc_thread_new(&t, &(conc_thread_opts){ .target = NULL }),
              CONC_EINVAL);
    CHECK(t == NULL);
    CHECK_ERR(conc_thread_start(NULL), CONC_EINVAL);
    CHECK_ERR(conc_thread_join(NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_thread_result(NULL, &r), CONC_EINVAL);
    CHECK(!conc_thread_is_alive(NULL));
    CHECK(conc_thread_name(NULL) == NULL);
    CHECK_EQ(conc_thread_ident(NULL), 0);
    conc_thread_free(NULL);

    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = echo }));
    CHECK_ERR(conc_thread_result(t, NULL), CONC_EINVAL);
    CHECK_ERR(conc_thread_join(t, NAN), CONC_EINVAL);
    CHECK_ERR(conc_thread_join(t, -0.5), CONC_EINVAL);
    CHECK_ERR(conc_thread_join(t, 1), CONC_ESTATE);
    CHECK_ERR(conc_thread_result(t, &r), CONC_ESTATE);
    CHECK(!conc_thread_is_alive(t));
    CHECK_EQ(conc_thread_ident(t), 0);
    conc_thread_free(t); /* never started */
}

TEST(thread_lifecycle_result_ident_and_names)
{
    ctl_t c = { 0 };
    conc_thread *t, *u, *v;
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = waits_for_go,
                                                      .arg = &c }));
    CHECK_OK(conc_thread_new(&u, &(conc_thread_opts){ .target = echo,
                                                      .arg = &c,
                                                      .name = "a-rather-long-thread-name" }));
    CHECK_OK(conc_thread_new(&v, &(conc_thread_opts){ .target = echo }));
    CHECK_STR(conc_thread_name(t), "Thread-1");
    CHECK_STR(conc_thread_name(u), "a-rather-long-thread-name");
    CHECK_STR(conc_thread_name(v), "Thread-2");
    CHECK_OK(conc_thread_start(t));
    CHECK_ERR(conc_thread_start(t), CONC_ESTATE);
    CHECK(conc_thread_ident(t) > 0); /* valid as soon as start returns */
    CHECK(conc_thread_ident(t) != conc__os_gettid());
    CHECK(conc_thread_is_alive(t));
    void *r = NULL;
    CHECK_ERR(conc_thread_result(t, &r), CONC_ESTATE);
    CHECK_ERR(conc_thread_join(t, 0), CONC_ETIMEDOUT);
    atomic_store(&c.go, 1);
    CHECK_OK(conc_thread_join(t, 10));
    CHECK(!conc_thread_is_alive(t));
    CHECK_OK(conc_thread_result(t, &r));
    CHECK(r == (void *)0x1234);
    CHECK_EQ(conc_thread_ident(t), atomic_load(&c.tid));
    CHECK_STR(c.comm, "Thread-1");
    CHECK_OK(conc_thread_join(t, 0)); /* again: fine */
    CHECK_ERR(conc_thread_start(t), CONC_ESTATE);

    CHECK_OK(conc_thread_start(u));
    CHECK_OK(conc_thread_join(u, CONC_FOREVER));
    CHECK_OK(conc_thread_result(u, &r));
    CHECK(r == &c);
    conc_thread_free(t);
    conc_thread_free(u);
    conc_thread_free(v);
}

/* Python's threading.current_thread().name, in each kind of thread. */
static void *says_its_name(void *arg)
{
    snprintf(arg, 64, "%s", conc_current_thread_name());
    return NULL;
}

static int task_says_its_name(const void *in, size_t len, conc_buf *out,
                              void *ctx)
{
    (void)in, (void)len, (void)ctx;
    const char *n = conc_current_thread_name();
    return conc_buf_append(out, n, strlen(n) + 1);
}

TEST(thread_current_name_in_every_kind_of_thread)
{
    CHECK_STR(conc_current_thread_name(), "MainThread");
    char got[64] = "";
    conc_thread *t;
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = says_its_name,
                                                     .arg = got,
                                                     .name = "reader-7" }));
    CHECK_OK(conc_thread_start(t));
    CHECK_OK(conc_thread_join(t, 30));
    CHECK_STR(got, "reader-7");
    conc_thread_free(t);
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = says_its_name,
                                                     .arg = got }));
    CHECK_OK(conc_thread_start(t));
    CHECK_OK(conc_thread_join(t, 30));
    CHECK_STR(got, conc_thread_name(t)); /* Thread-N */
    CHECK(strncmp(got, "Thread-", 7) == 0);
    conc_thread_free(t);
    /* a thread libconc did not start */
    pthread_t raw;
    CHECK_EQ(pthread_create(&raw, NULL, says_its_name, got), 0);
    pthread_join(raw, NULL);
    CHECK(strncmp(got, "Dummy-", 6) == 0);
    /* pool workers: threads by their worker name, processes are each
     * a process's first thread */
    for (int k = 0; k < 2; k++) {
        conc_pool *p;
        CHECK_OK(conc_pool_new(&p, &(conc_pool_opts){
                                       .kind = k ? CONC_PROCESSES
                                                 : CONC_THREADS,
                                       .workers = 1,
                                       .name_prefix = "Crew" }));
        conc_msg m;
        CHECK_OK(conc_pool_apply(p, task_says_its_name, NULL, 0, &m, 30));
        CHECK_STR((const char *)m.data, k ? "MainThread" : "Crew-1");
        conc_msg_free(&m);
        conc_pool_free(p);
    }
}

TEST(thread_kernel_name_is_cut_to_15_bytes)
{
    ctl_t c = { .go = 1 };
    conc_thread *t;
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = waits_for_go,
                                                      .arg = &c,
                                                      .name = "a-rather-long-thread-name" }));
    CHECK_OK(conc_thread_start(t));
    CHECK_OK(conc_thread_join(t, 10));
    CHECK_STR(c.comm, "a-rather-long-t");
    conc_thread_free(t);
}

TEST(thread_join_times_out_no_earlier_than_asked)
{
    ctl_t c = { 0 };
    conc_thread *t;
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = waits_for_go,
                                                      .arg = &c }));
    CHECK_OK(conc_thread_start(t));
    double t0 = th_now();
    CHECK_ERR(conc_thread_join(t, 0.2), CONC_ETIMEDOUT);
    double took = th_now() - t0;
    CHECK(took >= 0.2);
    CHECK(took < 2.0);
    CHECK(conc_thread_is_alive(t));
    atomic_store(&c.go, 1);
    CHECK_OK(conc_thread_join(t, 10));
    conc_thread_free(t);
}

static _Atomic int alarms;
static void on_alarm(int sig)
{
    (void)sig;
    atomic_fetch_add(&alarms, 1);
}

static void *sleeps_04(void *arg)
{
    th_sleep(0.4);
    return arg;
}

TEST(thread_join_resumes_after_signals_with_the_time_left)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART */
    CHECK_EQ(sigaction(SIGALRM, &sa, NULL), 0);
    conc_thread *t;
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = sleeps_04,
                                                      .arg = &sa }));
    /* Only this thread takes the alarms: the sleeper inherits a mask
     * that blocks them. */
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &m, NULL);
    double t0 = th_now();
    CHECK_OK(conc_thread_start(t));
    pthread_sigmask(SIG_UNBLOCK, &m, NULL);
    struct itimerval it = { { 0, 5000 }, { 0, 5000 } };
    CHECK_EQ(setitimer(ITIMER_REAL, &it, NULL), 0);
    double t1 = th_now();
    CHECK_ERR(conc_thread_join(t, 0.15), CONC_ETIMEDOUT);
    double took = th_now() - t1;
    CHECK(took >= 0.15);
    CHECK(took < 1.5);
    CHECK_OK(conc_thread_join(t, CONC_FOREVER));
    CHECK(th_now() - t0 >= 0.4);
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &off, NULL);
    CHECK(atomic_load(&alarms) >= 5);
    void *r;
    CHECK_OK(conc_thread_result(t, &r));
    CHECK(r == &sa);
    conc_thread_free(t);
}

static conc_thread *self_handle;
static _Atomic int self_err = 1;

static void *joins_itself(void *arg)
{
    (void)arg;
    conc_thread *me;
    while ((me = __atomic_load_n(&self_handle, __ATOMIC_ACQUIRE)) == NULL) {
        th_sleep(0.001);
    }
    atomic_store(&self_err, conc_thread_join(me, 1));
    return NULL;
}

TEST(thread_join_self_is_refused)
{
    conc_thread *t;
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = joins_itself }));
    CHECK_OK(conc_thread_start(t));
    __atomic_store_n(&self_handle, t, __ATOMIC_RELEASE);
    CHECK_OK(conc_thread_join(t, 10));
    CHECK_ERR(atomic_load(&self_err), CONC_ESTATE);
    conc_thread_free(t);
}

typedef struct {
    conc_thread *t;
    int err;
    void *r;
} joiner_arg;

static void *joiner(void *arg)
{
    joiner_arg *j = arg;
    j->err = conc_thread_join(j->t, 10);
    if (j->err == 0) {
        j->err = conc_thread_result(j->t, &j->r);
    }
    return NULL;
}

TEST(thread_join_from_several_threads_at_once)
{
    ctl_t c = { 0 };
    conc_thread *t;
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = waits_for_go,
                                                      .arg = &c }));
    CHECK_OK(conc_thread_start(t));
    enum { N = 5 };
    conc_thread *j[N];
    joiner_arg ja[N];
    for (int i = 0; i < N; i++) {
        ja[i] = (joiner_arg){ .t = t, .err = -1 };
        CHECK_OK(conc_thread_new(&j[i], &(conc_thread_opts){ .target = joiner,
                                                             .arg = &ja[i] }));
        CHECK_OK(conc_thread_start(j[i]));
    }
    th_sleep(0.05);
    atomic_store(&c.go, 1);
    for (int i = 0; i < N; i++) {
        CHECK_OK(conc_thread_join(j[i], 10));
        CHECK_OK(ja[i].err);
        CHECK(ja[i].r == (void *)0x1234);
        conc_thread_free(j[i]);
    }
    conc_thread_free(t);
}

TEST(thread_free_of_a_running_thread_detaches_it)
{
    ctl_t c = { 0 };
    conc_thread *t;
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = waits_for_go,
                                                      .arg = &c }));
    CHECK_OK(conc_thread_start(t));
    pid_t tid = conc_thread_ident(t);
    conc_thread_free(t);
    CHECK(conc__os_thread_alive(tid, 0));
    atomic_store(&c.go, 1);
    double end = th_now() + 10;
    while (conc__os_thread_alive(tid, 0)) {
        CHECK(th_now() < end);
        th_sleep(0.001);
    }
    /* A finished, unjoined thread is freed too. */
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = echo }));
    CHECK_OK(conc_thread_start(t));
    th_sleep(0.02);
    conc_thread_free(t);
}

static void *calls_pthread_exit(void *arg)
{
    (void)arg;
    pthread_exit((void *)7);
}

TEST(thread_target_that_calls_pthread_exit_still_joins)
{
    conc_thread *t;
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = calls_pthread_exit }));
    CHECK_OK(conc_thread_start(t));
    CHECK_OK(conc_thread_join(t, 10));
    void *r = (void *)1;
    CHECK_OK(conc_thread_result(t, &r));
    CHECK(r == NULL);
    conc_thread_free(t);
}

/* In a forked child the parent's threads are gone: join returns at once,
 * is_alive is false. */
static int child_sees_handle(void *arg)
{
    conc_thread *t = arg;
    int bad = 0;
    bad += conc_thread_is_alive(t);
    bad += conc_thread_join(t, 5) != 0;
    void *r = (void *)1;
    bad += conc_thread_result(t, &r) != 0 || r != NULL;
    conc_thread_free(t);
    /* Threads still work in the child. */
    conc_thread *u;
    void *r2 = NULL;
    if (conc_thread_new(&u, &(conc_thread_opts){ .target = echo, .arg = arg }) ||
        conc_thread_start(u) || conc_thread_join(u, 5) ||
        conc_thread_result(u, &r2) || r2 != arg) {
        bad += 10;
    }
    conc_thread_free(u);
    return bad;
}

TEST(thread_handle_copied_into_a_forked_child)
{
    ctl_t c = { 0 };
    conc_thread *t;
    CHECK_OK(conc_thread_new(&t, &(conc_thread_opts){ .target = waits_for_go,
                                                      .arg = &c }));
    CHECK_OK(conc_thread_start(t));
    conc_process *p;
    CHECK_OK(conc_process_new(&p, &(conc_process_opts){ .target = child_sees_handle,
                                                        .arg = t }));
    CHECK_OK(conc_process_start(p));
    CHECK_OK(conc_process_join(p, 10));
    int code = -1;
    CHECK_OK(conc_process_exitcode(p, &code));
    CHECK_EQ(code, 0);
    conc_process_free(p);
    CHECK(conc_thread_is_alive(t));
    atomic_store(&c.go, 1);
    CHECK_OK(conc_thread_join(t, 10));
    conc_thread_free(t);
}

TEST(thread_fault_loop_fails_cleanly_then_succeeds)
{
    int failures = 0;
    for (long n = 1;; n++) {
        CHECK(n < 20);
        conc_thread *t = NULL;
        conc__fault_arm(n);
        int err = conc_thread_new(&t, &(conc_thread_opts){ .target = echo,
                                                           .arg = &n });
        if (err == 0) {
            err = conc_thread_start(t);
        }
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (!fired) {
            CHECK_OK(err);
            CHECK_OK(conc_thread_join(t, 10));
            conc_thread_free(t);
            break;
        }
        failures++;
        CHECK_ERR(err, CONC_ENOMEM);
        if (t != NULL) {
            CHECK(!conc_thread_is_alive(t));
            CHECK_EQ(conc_thread_ident(t), 0);
            CHECK_OK(conc_thread_start(t)); /* back to new: starts now */
            CHECK_OK(conc_thread_join(t, 10));
            conc_thread_free(t);
        }
    }
#if defined(__SANITIZE_THREAD__)
    /* The harness runs each test in a forked child, where a TSan build
     * gives a new thread a stack of its own (thread.c): one more OS call
     * on the seam. */
    CHECK_EQ(failures, 4); /* handle, name, record, stack */
#else
    CHECK_EQ(failures, 3); /* handle, name, record */
#endif
#if defined(__SANITIZE_ADDRESS__)
    CHECK_EQ(__lsan_do_recoverable_leak_check(), 0);
#endif
}

TEST(thread_many_short_threads)
{
    enum { N = 200 };
    static conc_thread *t[N];
    for (int i = 0; i < N; i++) {
        CHECK_OK(conc_thread_new(&t[i], &(conc_thread_opts){ .target = echo,
                                                             .arg = &t[i],
                                                             .daemon = i & 1 }));
        CHECK_OK(conc_thread_start(t[i]));
        if (i % 3 == 0) {
            conc_thread_free(t[i]); /* detached or joined, both fine */
            t[i] = NULL;
        }
    }
    for (int i = 0; i < N; i++) {
        if (t[i] == NULL) {
            continue;
        }
        void *r;
        CHECK_OK(conc_thread_join(t[i], 10));
        CHECK_OK(conc_thread_result(t[i], &r));
        CHECK(r == &t[i]);
        conc_thread_free(t[i]);
    }
}

static void check_order(const char *out, const char *a, const char *b)
{
    const char *pa = strstr(out, a), *pb = strstr(out, b);
    if (pa == NULL || pb == NULL || pa > pb) {
        fprintf(stderr, "    --- output ---\n%s    --- end ---\n", out);
        th_fail(__FILE__, __LINE__, "wanted \"%s\" before \"%s\"", a, b);
    }
}

TEST(thread_exit_joins_non_daemon_threads_only)
{
    char path[1024];
    snprintf(path, sizeof path, "%s", th_prog("prog_thread_exit"));
    char *argv[] = { path, NULL };
    char *out = NULL;
    double t0 = th_now();
    int st = th_run(argv, &out, 30);
    double took = th_now() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "    --- output ---\n%s    --- end ---\n", out);
        th_fail(__FILE__, __LINE__, "status %#x", (unsigned)st);
    }
    check_order(out, "main returns", "\nthread done");
    check_order(out, "main returns", "detached thread done");
    check_order(out, "child's thread done", "child joined, exitcode 6");
    CHECK(strstr(out, "daemon thread done") == NULL);
    CHECK(took >= 0.5);
    CHECK(took < 10); /* the daemon thread's 60 s were not waited for */
    free(out);
}
