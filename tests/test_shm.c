/* test_shm.c - conc_shm: named shared memory.  Create/open/ptr/size/
 * name/unlink/free, mode 0600, EEXIST/ENOENT, name validation, the
 * creator's unlink at free and at exit (and not in a forked child or an
 * opener), an unrelated exec'd process, and fault loops over every
 * allocation and OS call. */
#include "harness.h"

#include "shared_int.h"

#include <errno.h>
#include <sys/stat.h>
#include <sys/wait.h>

static void test_name(char *buf, size_t cap, const char *tag)
{
    snprintf(buf, cap, "/conc_test_%s_%d", tag, (int)getpid());
}

TEST(shm_create_open_share_bytes)
{
    char name[128];
    test_name(name, sizeof name, "basic");
    conc_shm *a = NULL, *b = NULL;
    CHECK_OK(conc_shm_create(&a, name, 10000));
    CHECK(a != NULL);
    CHECK_STR(conc_shm_name(a), name);
    CHECK_EQ(conc_shm_size(a), 10000);
    unsigned char *pa = conc_shm_ptr(a);
    CHECK(pa != NULL);
    CHECK_EQ((uintptr_t)pa % 4096, 0);
    for (size_t i = 0; i < 10000; i++) {
        CHECK_EQ(pa[i], 0); /* zero-filled */
    }
    strcpy((char *)pa, "hello");
    CHECK_OK(conc_shm_open(&b, name));
    CHECK_EQ(conc_shm_size(b), 10000);
    unsigned char *pb = conc_shm_ptr(b);
    CHECK(pb != pa);
    CHECK_STR((char *)pb, "hello");
    pb[9999] = 7;
    CHECK_EQ(pa[9999], 7);
    /* Mode 0600, whatever the umask. */
    struct stat st;
    char path[256];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0600);
    conc_shm_free(b); /* an opener: no unlink */
    CHECK(th_shm_exists(name));
    conc_shm_free(a); /* the creator: unlinks */
    CHECK(!th_shm_exists(name));
    conc_shm_free(NULL);
}

TEST(shm_name_without_slash_is_the_same_name)
{
    char name[128];
    test_name(name, sizeof name, "slash");
    conc_shm *a = NULL, *b = NULL;
    CHECK_OK(conc_shm_create(&a, name + 1, 64));
    CHECK_STR(conc_shm_name(a), name);
    CHECK_OK(conc_shm_open(&b, name));
    conc_shm_free(b);
    CHECK_OK(conc_shm_open(&b, name + 1));
    conc_shm_free(b);
    conc_shm_free(a);
    CHECK(!th_shm_exists(name));
}

TEST(shm_create_fails_when_the_name_exists)
{
    char name[128];
    test_name(name, sizeof name, "exists");
    conc_shm *a = NULL, *b = NULL;
    CHECK_OK(conc_shm_create(&a, name, 128));
    memcpy(conc_shm_ptr(a), "mine", 5);
    errno = 0;
    CHECK_ERR(conc_shm_create(&b, name, 256), CONC_ESYS);
    CHECK_EQ(errno, EEXIST);
    CHECK(b == NULL);
    /* The first segment is untouched: same size, same bytes. */
    CHECK_OK(conc_shm_open(&b, name));
    CHECK_EQ(conc_shm_size(b), 128);
    CHECK_STR((char *)conc_shm_ptr(b), "mine");
    conc_shm_free(b);
    conc_shm_free(a);
}

TEST(shm_open_missing_is_enoent)
{
    conc_shm *m = (conc_shm *)1;
    errno = 0;
    CHECK_ERR(conc_shm_open(&m, "/conc_test_no_such_segment_x"), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    CHECK(m == NULL);
}

TEST(shm_bad_arguments_are_einval)
{
    conc_shm *m = NULL;
    char longname[300];
    memset(longname, 'a', sizeof longname);
    longname[251] = '\0'; /* 251 bytes: one too many */
    const char *bad[] = { "", "/", "a/b", "/a/b", ".", "/..", longname };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_ERR(conc_shm_create(&m, bad[i], 64), CONC_EINVAL);
        CHECK_ERR(conc_shm_open(&m, bad[i]), CONC_EINVAL);
        CHECK(m == NULL);
    }
    CHECK_ERR(conc_shm_open(&m, NULL), CONC_EINVAL);
    CHECK_ERR(conc_shm_create(NULL, "/conc_x", 64), CONC_EINVAL);
    CHECK_ERR(conc_shm_open(NULL, "/conc_x"), CONC_EINVAL);
    CHECK_ERR(conc_shm_create(&m, "/conc_test_zero", 0), CONC_EINVAL);
    CHECK_ERR(conc_shm_unlink(NULL), CONC_EINVAL);
    CHECK(conc_shm_ptr(NULL) == NULL);
    CHECK_EQ(conc_shm_size(NULL), 0);
    CHECK(conc_shm_name(NULL) == NULL);
    /* 250 bytes is the longest name. */
    longname[250] = '\0';
    CHECK_OK(conc_shm_create(&m, longname, 64));
    conc_shm_free(m);
    CHECK(!th_shm_exists(longname));
}

TEST(shm_null_name_picks_a_fresh_one)
{
    conc_shm *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(conc_shm_create(&a, NULL, 100));
    CHECK_OK(conc_shm_create(&b, NULL, 100));
    CHECK(strncmp(conc_shm_name(a), "/conc_", 6) == 0);
    CHECK(strcmp(conc_shm_name(a), conc_shm_name(b)) != 0);
    CHECK_OK(conc_shm_open(&c, conc_shm_name(a)));
    conc_shm_free(c);
    char name[256];
    snprintf(name, sizeof name, "%s", conc_shm_name(a));
    conc_shm_free(a);
    conc_shm_free(b);
    CHECK(!th_shm_exists(name));
}

TEST(shm_unlink_keeps_mappings_and_frees_the_name)
{
    char name[128];
    test_name(name, sizeof name, "unlink");
    conc_shm *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(conc_shm_create(&a, name, 4096));
    CHECK_OK(conc_shm_open(&b, name));
    CHECK_OK(conc_shm_unlink(b)); /* any process may unlink */
    CHECK(!th_shm_exists(name));
    errno = 0;
    CHECK_ERR(conc_shm_unlink(a), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    errno = 0;
    CHECK_ERR(conc_shm_open(&c, name), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
    /* Both mappings still share memory. */
    ((char *)conc_shm_ptr(a))[5] = 'x';
    CHECK_EQ(((char *)conc_shm_ptr(b))[5], 'x');
    /* A new segment under the same name is someone else's: the old
     * creator's free must not unlink it. */
    CHECK_OK(conc_shm_create(&c, name, 64));
    conc_shm_free(a);
    CHECK(th_shm_exists(name));
    conc_shm_free(b);
    conc_shm_free(c);
    CHECK(!th_shm_exists(name));
}

static conc_shm *inherited;

static int child_frees_inherited(void *arg)
{
    (void)arg;
    ((char *)conc_shm_ptr(inherited))[0] = 'c';
    conc_shm_free(inherited); /* not the creator: must not unlink */
    return 0;
}

TEST(shm_forked_child_is_not_the_creator)
{
    char name[128];
    test_name(name, sizeof name, "fork");
    CHECK_OK(conc_shm_create(&inherited, name, 64));
    pid_t pid = th_fork(child_frees_inherited, NULL);
    int st = th_wait(pid, 10);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(th_shm_exists(name));
    CHECK_EQ(((char *)conc_shm_ptr(inherited))[0], 'c');
    conc_shm_free(inherited);
    CHECK(!th_shm_exists(name));
}

TEST(shm_unrelated_process_opens_by_name)
{
    char name[128];
    test_name(name, sizeof name, "peer");
    conc_shm *a = NULL;
    CHECK_OK(conc_shm_create(&a, name, 4096));
    strcpy(conc_shm_ptr(a), "ping from the test");
    char *argv[] = { (char *)th_prog("prog_shm_peer"), "shm", name, NULL };
    char *out = NULL;
    int st = th_run(argv, &out, 20);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        th_fail(__FILE__, __LINE__, "peer: status %#x, output:\n%s",
                (unsigned)st, out);
    }
    CHECK(strstr(out, "size 4096\n") != NULL);
    CHECK(strstr(out, "text ping from the test\n") != NULL);
    CHECK_STR((char *)conc_shm_ptr(a) + 64, "pong");
    free(out);
    /* The peer may unlink it too; our free then leaves the name alone. */
    char *argv2[] = { (char *)th_prog("prog_shm_peer"), "unlink", name, NULL };
    st = th_run(argv2, NULL, 20);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(!th_shm_exists(name));
    conc_shm_free(a);
}

TEST(shm_creator_exit_unlinks)
{
    char name[128];
    test_name(name, sizeof name, "atexit");
    char *argv[] = { (char *)th_prog("prog_shm_peer"), "create", name, NULL };
    char *out = NULL;
    int st = th_run(argv, &out, 20);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        th_fail(__FILE__, __LINE__, "peer: status %#x, output:\n%s",
                (unsigned)st, out);
    }
    CHECK(strstr(out, "created ") != NULL);
    free(out);
    CHECK(!th_shm_exists(name));
    /* The name is free again. */
    conc_shm *m = NULL;
    CHECK_OK(conc_shm_create(&m, name, 64));
    conc_shm_free(m);
}

TEST(shm_fault_loop_create_and_open)
{
    char name[128];
    test_name(name, sizeof name, "fault");
    int n;
    conc_shm *m = NULL;
    for (n = 1;; n++) {
        conc__fault_arm(n);
        int err = conc_shm_create(&m, name, 8192);
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (!fired) {
            CHECK_OK(err);
            break;
        }
        CHECK(err == CONC_ENOMEM || err == CONC_ESYS);
        CHECK(m == NULL);
        CHECK(!th_shm_exists(name)); /* nothing left behind */
        CHECK(n < 50);
    }
    CHECK(n >= 4); /* calloc, shm_open, ftruncate, mmap each failed once */
    conc_shm *o = NULL;
    for (n = 1;; n++) {
        conc__fault_arm(n);
        int err = conc_shm_open(&o, name);
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (!fired) {
            CHECK_OK(err);
            break;
        }
        CHECK(err == CONC_ENOMEM || err == CONC_ESYS);
        CHECK(o == NULL);
        CHECK(n < 50);
    }
    CHECK(n >= 3);
    conc_shm_free(o);
    conc_shm_free(m);
    CHECK(!th_shm_exists(name));
}
