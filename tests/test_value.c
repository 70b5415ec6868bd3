/* test_value.c - conc_value: Value/Array (with a conc_lock) and
 * RawValue/RawArray (without), anonymous and named: sizes, zero fill,
 * alignment, sharing with forked children, exact totals under the lock
 * from several processes, conc_value_open from an unrelated process,
 * every bad argument, crafted headers, another user's segment, the error
 * details, and fault loops. */
#include "harness.h"

#include <sched.h>

#include "shared_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>

TEST(value_raw_and_locked_basics)
{
    conc_value *raw = NULL, *val = NULL;
    CHECK_OK(conc_value_new(&raw, &(conc_value_opts){ .size = sizeof(int) }));
    CHECK(conc_value_lock(raw) == NULL); /* RawValue */
    CHECK_EQ(conc_value_size(raw), sizeof(int));
    int *ip = conc_value_ptr(raw);
    CHECK(ip != NULL);
    CHECK_EQ((uintptr_t)ip % 64, 0);
    CHECK_EQ(*ip, 0);
    *ip = 42;
    CHECK_EQ(*(int *)conc_value_ptr(raw), 42);

    CHECK_OK(conc_value_new(&val, &(conc_value_opts){ .size = 100000,
                                                       .lock = true }));
    conc_lock *l = conc_value_lock(val);
    CHECK(l != NULL);
    CHECK_EQ(conc_value_size(val), 100000);
    unsigned char *p = conc_value_ptr(val);
    for (size_t i = 0; i < 100000; i++) {
        CHECK_EQ(p[i], 0);
    }
    CHECK_OK(conc_lock_acquire(l, CONC_FOREVER));
    CHECK(conc_lock_locked(l));
    CHECK_ERR(conc_lock_acquire(l, 0), CONC_ETIMEDOUT);
    CHECK_OK(conc_lock_release(l));
    conc_value_free(raw);
    conc_value_free(val);
    conc_value_free(NULL);
    CHECK(conc_value_ptr(NULL) == NULL);
    CHECK_EQ(conc_value_size(NULL), 0);
    CHECK(conc_value_lock(NULL) == NULL);
}

TEST(value_bad_arguments_are_einval)
{
    conc_value *v = (conc_value *)1;
    CHECK_ERR(conc_value_new(NULL, &(conc_value_opts){ .size = 4 }),
              CONC_EINVAL);
    CHECK_ERR(conc_value_new(&v, NULL), CONC_EINVAL);
    CHECK(v == NULL);
    CHECK_ERR(conc_value_new(&v, &(conc_value_opts){ .size = 0 }),
              CONC_EINVAL);
    CHECK_ERR(conc_value_new(&v, &(conc_value_opts){ .size = SIZE_MAX }),
              CONC_EINVAL);
    CHECK_ERR(conc_value_new(&v, &(conc_value_opts){ .size = 4,
                                                     .name = "a/b" }),
              CONC_EINVAL);
    CHECK_ERR(conc_value_new(&v, &(conc_value_opts){ .size = 4,
                                                     .name = "" }),
              CONC_EINVAL);
    CHECK_ERR(conc_value_open(NULL, "/conc_tv"), CONC_EINVAL);
    CHECK_ERR(conc_value_open(&v, NULL), CONC_EINVAL);
    CHECK_ERR(conc_value_open(&v, "x/y"), CONC_EINVAL);
    errno = 0;
    CHECK_ERR(conc_value_open(&v, "/conc_test_no_such_value"), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    CHECK(v == NULL);
}

static conc_value *counter;

static int add_under_lock(void *arg)
{
    int n = *(int *)arg;
    long *c = conc_value_ptr(counter);
    conc_lock *l = conc_value_lock(counter);
    for (int i = 0; i < n; i++) {
        if (conc_lock_acquire(l, CONC_FOREVER) != 0) {
            return 3;
        }
        long v = *c; /* v.value += 1, which is not atomic by itself */
        *c = v + 1;
        if (conc_lock_release(l) != 0) {
            return 4;
        }
    }
    return 0;
}

TEST(value_lock_makes_increments_exact_across_processes)
{
    CHECK_OK(conc_value_new(&counter, &(conc_value_opts){ .size = sizeof(long),
                                                           .lock = true }));
    int n = 20000;
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = th_fork(add_under_lock, &n);
    }
    CHECK_EQ(add_under_lock(&n), 0);
    for (int i = 0; i < 3; i++) {
        int st = th_wait(kids[i], 60);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK_EQ(*(long *)conc_value_ptr(counter), 4L * n);
    conc_value_free(counter);
}

static conc_value *array;

static int fill_array(void *arg)
{
    (void)arg;
    int *a = conc_value_ptr(array);
    size_t n = conc_value_size(array) / sizeof(int);
    for (size_t i = 0; i < n; i++) {
        a[i] = (int)(i * i);
    }
    return 0;
}

TEST(value_array_is_shared_with_a_child)
{
    /* Array('i', 1000) as a RawArray. */
    CHECK_OK(conc_value_new(&array, &(conc_value_opts){ .size = 1000 * sizeof(int) }));
    int st = th_wait(th_fork(fill_array, NULL), 20);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    int *a = conc_value_ptr(array);
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ(a[i], i * i);
    }
    conc_value_free(array);
}

TEST(value_named_opened_by_an_unrelated_process)
{
    char name[128];
    snprintf(name, sizeof name, "/conc_test_value_%d", (int)getpid());
    conc_value *v = NULL, *o = NULL;
    CHECK_OK(conc_value_new(&v, &(conc_value_opts){ .size = 200,
                                                     .name = name }));
    CHECK(conc_value_lock(v) == NULL);
    CHECK_EQ((uintptr_t)conc_value_ptr(v) % 64, 0);
    strcpy(conc_value_ptr(v), "shared text");
    /* Opened here too: same bytes, same size. */
    CHECK_OK(conc_value_open(&o, name));
    CHECK_EQ(conc_value_size(o), 200);
    CHECK_STR((char *)conc_value_ptr(o), "shared text");
    conc_value_free(o);
    char *argv[] = { (char *)th_prog("prog_shm_peer"), "value", name, NULL };
    char *out = NULL;
    int st = th_run(argv, &out, 20);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        th_fail(__FILE__, __LINE__, "peer: status %#x, output:\n%s",
                (unsigned)st, out);
    }
    CHECK(strstr(out, "size 200\n") != NULL);
    CHECK(strstr(out, "text shared text\n") != NULL);
    CHECK(strstr(out, "lock none\n") != NULL);
    free(out);
    CHECK_STR((char *)conc_value_ptr(v) + 64, "pong");
    /* Creating the same name again fails and leaves it alone. */
    conc_value *dup = NULL;
    errno = 0;
    CHECK_ERR(conc_value_new(&dup, &(conc_value_opts){ .size = 8,
                                                        .name = name }),
              CONC_ESYS);
    CHECK_EQ(errno, EEXIST);
    conc_value_free(v);
    CHECK(!th_shm_exists(name));
}

/* A named Value with a lock: the lock lives in the segment, so a process
 * that only knows the name gets the same lock, and increments from both
 * sides are exact. */
TEST(value_named_with_lock_shares_the_lock_by_name)
{
    char name[128];
    snprintf(name, sizeof name, "/conc_test_lval_%d", (int)getpid());
    conc_value *v = NULL;
    CHECK_OK(conc_value_new(&v, &(conc_value_opts){ .size = sizeof(long),
                                                     .lock = true,
                                                     .name = name }));
    conc_lock *l = conc_value_lock(v);
    CHECK(l != NULL);
    CHECK_EQ((uintptr_t)conc_value_ptr(v) % 64, 0);
    volatile long *cnt = conc_value_ptr(v);
    enum { N = 20000 };
    char n_text[16];
    snprintf(n_text, sizeof n_text, "%d", N);
    char *argv[] = { (char *)th_prog("prog_shm_peer"), "incr", name, n_text,
                     NULL };
    pid_t peer = fork();
    if (peer == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    for (int i = 0; i < N; i++) {
        CHECK_OK(conc_lock_acquire(l, 10));
        long c = *cnt;
        if (i % 64 == 0) {
            sched_yield();
        }
        *cnt = c + 1;
        CHECK_OK(conc_lock_release(l));
    }
    int st = th_wait(peer, 30);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ(*cnt, 2 * N);
    /* Opened here too: the same lock word, seen as held. */
    conc_value *o = NULL;
    CHECK_OK(conc_value_open(&o, name));
    CHECK(conc_value_lock(o) != NULL);
    CHECK_OK(conc_lock_acquire(l, 1));
    CHECK(conc_lock_locked(conc_value_lock(o)));
    CHECK_ERR(conc_lock_acquire(conc_value_lock(o), 0), CONC_ETIMEDOUT);
    CHECK_OK(conc_lock_release(conc_value_lock(o)));
    CHECK(!conc_lock_locked(l));
    conc_value_free(o);
    conc_value_free(v);
    CHECK(!th_shm_exists(name));
}

TEST(value_open_rejects_a_segment_that_is_not_a_value)
{
    char name[128];
    snprintf(name, sizeof name, "/conc_test_notvalue_%d", (int)getpid());
    conc_shm *m = NULL;
    conc_value *v = NULL;
    CHECK_OK(conc_shm_create(&m, name, 4096)); /* zero magic */
    CHECK_ERR(conc_value_open(&v, name), CONC_EINVAL);
    CHECK(v == NULL);
    memset(conc_shm_ptr(m), 0xab, 4096); /* garbage magic */
    CHECK_ERR(conc_value_open(&v, name), CONC_EINVAL);
    conc_shm_free(m);
}

TEST(value_fault_loops)
{
    for (int lock = 0; lock < 2; lock++) {
        int n;
        for (n = 1;; n++) {
            conc_value *v = NULL;
            conc__fault_arm(n);
            int err = conc_value_new(&v, &(conc_value_opts){ .size = 64,
                                                              .lock = lock });
            bool fired = conc__fault_fired();
            conc__fault_arm(0);
            if (!fired) {
                CHECK_OK(err);
                conc_value_free(v);
                break;
            }
            CHECK_ERR(err, CONC_ENOMEM);
            CHECK(v == NULL);
            CHECK(n < 50);
        }
        CHECK(n >= 2 + lock);
    }
    char name[128];
    snprintf(name, sizeof name, "/conc_test_vfault_%d", (int)getpid());
    conc_value *v = NULL;
    for (int n = 1;; n++) {
        conc__fault_arm(n);
        int err = conc_value_new(&v, &(conc_value_opts){ .size = 64,
                                                          .name = name });
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (!fired) {
            CHECK_OK(err);
            break;
        }
        CHECK(err == CONC_ENOMEM || err == CONC_ESYS);
        CHECK(!th_shm_exists(name));
        CHECK(n < 50);
    }
    for (int n = 1;; n++) {
        conc_value *o = NULL;
        conc__fault_arm(n);
        int err = conc_value_open(&o, name);
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (!fired) {
            CHECK_OK(err);
            conc_value_free(o);
            break;
        }
        CHECK(err == CONC_ENOMEM || err == CONC_ESYS);
        CHECK(o == NULL);
        CHECK(n < 50);
    }
    conc_value_free(v);
    CHECK(!th_shm_exists(name));
}

/* A detail that names the function and says what is wrong. */
static void check_detail(const char *a, const char *b)
{
    if (strstr(conc_errdetail(), a) == NULL ||
        strstr(conc_errdetail(), b) == NULL) {
        th_fail(__FILE__, __LINE__, "detail \"%s\" lacks \"%s\" or \"%s\"",
                conc_errdetail(), a, b);
    }
}

TEST(value_open_checks_its_header_and_says_why)
{
    char name[128];
    snprintf(name, sizeof name, "/conc_test_vhdr_%d", (int)getpid());
    conc_value *v = NULL, *o = (conc_value *)1;
    CHECK_OK(conc_value_new(&v, &(conc_value_opts){ .size = 100,
                                                     .lock = true,
                                                     .name = name }));
    conc_shm *m;
    CHECK_OK(conc_shm_open(&m, name));
    uint32_t *w = conc_shm_ptr(m); /* magic (2 words), version, flags */
    uint64_t *size = (uint64_t *)(void *)(w + 4);
    CHECK_EQ(*size, 100);
    *size = 4096; /* more than the segment holds */
    CHECK_ERR(conc_value_open(&o, name), CONC_ECORRUPT);
    check_detail("conc_value_open: ", "header's size is 4096");
    CHECK(o == NULL);
    *size = 0;
    CHECK_ERR(conc_value_open(&o, name), CONC_ECORRUPT);
    *size = 100;
    w[3] |= 4; /* an unknown flag */
    CHECK_ERR(conc_value_open(&o, name), CONC_ECORRUPT);
    check_detail("conc_value_open: ", "flags word is 5");
    w[3] = 1;
    w[16] ^= 1; /* the lock slot's magic */
    CHECK_ERR(conc_value_open(&o, name), CONC_ECORRUPT);
    check_detail("conc_value_open: ", "lock slot holds no lock");
    w[16] ^= 1;
    w[2] = 7; /* another layout version */
    CHECK_ERR(conc_value_open(&o, name), CONC_EINVAL);
    check_detail("conc_value_open: ", "layout version 7");
    w[2] = 1;
    CHECK_OK(conc_value_open(&o, name));
    CHECK_EQ(conc_value_size(o), 100);
    conc_value_free(o);
    conc_shm_free(m);
    conc_value_free(v);
}

TEST(value_errors_say_what_and_where)
{
    char name[128];
    snprintf(name, sizeof name, "/conc_test_vdet_%d", (int)getpid());
    conc_value *v = NULL, *o = NULL;
    CHECK_ERR(conc_value_new(&v, &(conc_value_opts){ .size = 8,
                                                      .name = "a/b" }),
              CONC_EINVAL);
    check_detail("conc_value_new: ", "name 'a/b'");
    CHECK_ERR(conc_value_new(&v, &(conc_value_opts){ .size = 0 }),
              CONC_EINVAL);
    check_detail("conc_value_new: ", "size 0");
    CHECK_ERR(conc_value_open(&o, name), CONC_ESYS);
    check_detail("conc_value_open: shm_open('", "No such file");
    CHECK_OK(conc_value_new(&v, &(conc_value_opts){ .size = 8,
                                                     .name = name }));
    CHECK_ERR(conc_value_new(&o, &(conc_value_opts){ .size = 8,
                                                      .name = name }),
              CONC_ESYS);
    check_detail("conc_value_new: shm_open('", "File exists");
    /* Another user's segment. */
    if (geteuid() == 0) {
        int fd = shm_open(name, O_RDWR, 0);
        CHECK(fd >= 0);
        CHECK_EQ(fchown(fd, 65534, (gid_t)-1), 0);
        close(fd);
        CHECK_ERR(conc_value_open(&o, name), CONC_EPERM);
        check_detail("conc_value_open: ", "belongs to uid 65534");
        CHECK_OK(conc_shm_share(0600, 65534));
        CHECK_OK(conc_value_open(&o, name));
        conc_value_free(o);
    }
    /* Not a value at all. */
    char other[140];
    snprintf(other, sizeof other, "%s_q", name);
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .name = other,
                                                     .capacity_bytes =
                                                         64 }));
    CHECK_ERR(conc_value_open(&o, other), CONC_EINVAL);
    check_detail("conc_value_open: ", "is not a libconc value");
    conc_queue_free(q);
    conc_value_free(v);
}
