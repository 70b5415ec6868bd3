/* test_core.c - error table, timeouts/deadlines, conc_buf and conc_msg,
 * the fault seam. */
#include "harness.h"

#include "conc_int.h"

#include <math.h>
#include <pthread.h>

TEST(strerror_names_every_code)
{
    CHECK_STR(conc_strerror(0), "success");
    CHECK_STR(conc_errname(CONC_ETIMEDOUT), "CONC_ETIMEDOUT");
    CHECK_STR(conc_errname(CONC_EOWNERDEAD), "CONC_EOWNERDEAD");
    CHECK_STR(conc_errname(12345), "CONC_E?");
    CHECK_STR(conc_strerror(12345), "unknown error");
    int codes[] = {
#define X(name, value, text) CONC_##name,
        CONC_ERRORS(X)
#undef X
    };
    size_t n = sizeof codes / sizeof codes[0];
    CHECK_EQ(n, 19);
    for (size_t i = 0; i < n; i++) {
        CHECK(codes[i] < 0);
        CHECK(strcmp(conc_strerror(codes[i]), "unknown error") != 0);
        for (size_t j = 0; j < i; j++) {
            CHECK(codes[i] != codes[j]);
        }
    }
}

TEST(errdetail_is_per_thread_and_keeps_errno)
{
    CHECK_STR(conc_errdetail(), "");
    errno = ENOENT;
    CHECK_ERR(conc__fail_sys(CONC_ESYS, "conc_x: shm_open('%s')", "/jobs"),
              CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    CHECK_STR(conc_errdetail(), "conc_x: shm_open('/jobs'): "
                                "No such file or directory");
    CHECK_ERR(conc__fail(CONC_EINVAL, "conc_y: %d is bad", 5), CONC_EINVAL);
    CHECK_STR(conc_errdetail(), "conc_y: 5 is bad");
    /* A long text is cut, never overrun. */
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK_ERR(conc__fail_sys(CONC_ESYS, "%s", big), CONC_ESYS);
    CHECK(strlen(conc_errdetail()) < 600);
    CHECK(strncmp(conc_errdetail(), "aaaa", 4) == 0);
}

static void *other_thread_detail(void *arg)
{
    (void)arg;
    /* A new thread starts with no detail, and its failure stays its own. */
    bool empty = conc_errdetail()[0] == '\0';
    conc__fail(CONC_ETIMEDOUT, "conc_z: other thread");
    return (void *)(uintptr_t)empty;
}

TEST(errdetail_literal_and_formatted_replace_each_other)
{
    CHECK_ERR(conc__fail_lit(CONC_EEMPTY, "conc_q: empty"), CONC_EEMPTY);
    CHECK_STR(conc_errdetail(), "conc_q: empty");
    CHECK_ERR(conc__fail(CONC_EINVAL, "conc_r: %d", 3), CONC_EINVAL);
    CHECK_STR(conc_errdetail(), "conc_r: 3");
    CHECK_ERR(conc__fail_lit(CONC_ETIMEDOUT, "conc_s: late"), CONC_ETIMEDOUT);
    CHECK_STR(conc_errdetail(), "conc_s: late");
}

TEST(errdetail_of_another_thread_is_not_seen)
{
    conc__fail(CONC_EINVAL, "mine");
    pthread_t t;
    void *res = NULL;
    CHECK_EQ(pthread_create(&t, NULL, other_thread_detail, NULL), 0);
    CHECK_EQ(pthread_join(t, &res), 0);
    CHECK(res == (void *)1);
    CHECK_STR(conc_errdetail(), "mine");
}

TEST(errdetail_names_the_os_call_of_a_failed_open)
{
    conc_shm *m = NULL;
    CHECK_ERR(conc_shm_open(&m, "/conc_no_such_segment_here"), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    CHECK_STR(conc_errdetail(), "conc_shm_open: shm_open('/conc_no_such_"
                                "segment_here'): No such file or directory");
    CHECK_ERR(conc_shm_create(&m, "a/b", 10), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "'a/b'") != NULL);
    CHECK_ERR(conc_shm_create(&m, "x", 0), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "size") != NULL);
}

TEST(deadline_rejects_bad_timeouts)
{
    conc__deadline dl;
    CHECK_ERR(conc__deadline_init(&dl, NAN), CONC_EINVAL);
    CHECK_ERR(conc__deadline_init(&dl, -0.5), CONC_EINVAL);
    CHECK_ERR(conc__deadline_init(&dl, -2), CONC_EINVAL);
    CHECK_OK(conc__deadline_init(&dl, CONC_FOREVER));
    CHECK(dl.forever && !conc__deadline_passed(&dl));
    CHECK_OK(conc__deadline_init(&dl, INFINITY));
    CHECK(dl.forever);
    CHECK_OK(conc__deadline_init(&dl, 0));
    CHECK(conc__deadline_passed(&dl));
    CHECK_OK(conc__deadline_init(&dl, 0.05));
    CHECK(!conc__deadline_passed(&dl));
    CHECK(conc__deadline_left(&dl) <= 0.05);
}

TEST(futex_wait_times_out_no_earlier_than_asked)
{
    _Atomic uint32_t word = 0;
    conc__deadline dl;
    CHECK_OK(conc__deadline_init(&dl, 0.1));
    double t0 = th_now();
    int err;
    do {
        err = conc__os_futex_wait(&word, 0, &dl, false);
    } while (err == 0);
    double took = th_now() - t0;
    CHECK_ERR(err, CONC_ETIMEDOUT);
    CHECK(took >= 0.1);
    CHECK(took < 1.0);
    /* A word that already differs returns at once. */
    CHECK_OK(conc__deadline_init(&dl, 5));
    CHECK_OK(conc__os_futex_wait(&word, 1, &dl, false));
}

TEST(buf_appends_and_hands_over)
{
    conc_buf b;
    conc__buf_init(&b, 0);
    CHECK_ERR(conc_buf_append(NULL, "x", 1), CONC_EINVAL);
    CHECK_ERR(conc_buf_append(&b, NULL, 1), CONC_EINVAL);
    CHECK_OK(conc_buf_append(&b, NULL, 0));
    for (int i = 0; i < 1000; i++) {
        CHECK_OK(conc_buf_append(&b, "abcd", 4));
    }
    CHECK_EQ(conc_buf_len(&b), 4000);
    CHECK_OK(conc_buf_error(&b, "bad %d", 7));
    CHECK_STR(b.error, "bad 7");
    conc_msg m;
    conc__buf_take(&b, &m);
    CHECK_EQ(m.len, 4000);
    CHECK(memcmp((char *)m.data + 3996, "abcd", 4) == 0);
    conc_msg_free(&m);
    CHECK(m.data == NULL && m.len == 0);
    conc_msg_free(&m);
    conc_msg_free(NULL);
    conc__buf_release(&b);
}

TEST(buf_limit_refuses_whole_append)
{
    conc_buf b;
    conc__buf_init(&b, 10);
    CHECK_OK(conc_buf_append(&b, "12345678", 8));
    CHECK_ERR(conc_buf_append(&b, "abc", 3), CONC_ENOMEM);
    CHECK_EQ(conc_buf_len(&b), 8);
    CHECK_OK(conc_buf_append(&b, "ab", 2));
    conc__buf_release(&b);
}

TEST(buf_allocation_failure_keeps_contents)
{
    conc_buf b;
    conc__buf_init(&b, 0);
    CHECK_OK(conc_buf_append(&b, "hello", 5));
    conc__fault_arm(1);
    char big[200] = { 0 };
    CHECK_ERR(conc_buf_append(&b, big, sizeof big), CONC_ENOMEM);
    CHECK(conc__fault_fired());
    CHECK_EQ(conc_buf_len(&b), 5);
    CHECK(memcmp(b.data, "hello", 5) == 0);
    conc__fault_arm(0);
    conc__buf_release(&b);
}

TEST(proc_liveness_sees_pid_reuse_and_zombies)
{
    uint64_t st = conc__os_proc_starttime(getpid());
    CHECK(st != 0);
    CHECK(conc__os_proc_alive(getpid(), st));
    CHECK(!conc__os_proc_alive(getpid(), st + 1));
    pid_t pid = fork();
    if (pid == 0) {
        _exit(0);
    }
    th_sleep(0.05);
    CHECK(!conc__os_proc_alive(pid, 0)); /* a zombie is not alive */
    th_wait(pid, 5);
    CHECK(!conc__os_proc_alive(pid, 0));
    CHECK(conc__os_thread_alive(conc__os_gettid(), 0));
}

TEST(version_of_the_library_is_the_header_s)
{
    CHECK_STR(conc_version(), CONC_VERSION_STRING);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", CONC_VERSION_MAJOR,
             CONC_VERSION_MINOR, CONC_VERSION_PATCH);
    CHECK_STR(conc_version(), want);
    CHECK_EQ(CONC_VERSION_NUMBER, CONC_VERSION_MAJOR * 10000 +
                                      CONC_VERSION_MINOR * 100 +
                                      CONC_VERSION_PATCH);
}
