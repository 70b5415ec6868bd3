/* test_shm.c - conc_shm: named shared memory.  Create/open/ptr/size/
 * name/unlink/free, mode 0600, EEXIST/ENOENT, name validation, the
 * creator's unlink at free and at exit (also a conc_process child's, and
 * only after the exit has joined the children; not in a forked child or
 * an opener), an unrelated exec'd process, fault loops over every
 * allocation and OS call, the refusal of segments of another user or
 * open to others and the conc_shm_share opt-in, and the error details. */
#include "harness.h"

#include "shared_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
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

/* A conc_process child is a creator too: when its target returns, the
 * segments it made and never freed are unlinked. */
/* Runs prog_shm_peer MODE NAME and fails the test unless it exited 0.
 * Returns its output (to free) and sets *left when NAME was still in
 * /dev/shm afterwards (then removed: no test leaves it behind). */
static char *run_peer(const char *mode, const char *name, bool *left)
{
    char *argv[] = { (char *)th_prog("prog_shm_peer"), (char *)mode,
                     (char *)name, NULL };
    char *out = NULL;
    int st = th_run(argv, &out, 30);
    *left = th_shm_exists(name);
    if (*left) {
        shm_unlink(name);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        th_fail(__FILE__, __LINE__, "peer %s: status %#x, output:\n%s",
                mode, (unsigned)st, out);
    }
    return out;
}

TEST(shm_child_creator_unlinks_when_its_target_returns)
{
    char name[128];
    test_name(name, sizeof name, "childexit");
    bool left;
    char *out = run_peer("child-create", name, &left);
    CHECK(strstr(out, "child exit 0\n") != NULL);
    free(out);
    CHECK(!left);
}

/* The exit unlinks only after it has joined the children, whichever the
 * program did first, start a child or name a segment: a child still
 * running can open what its parent made. */
TEST(shm_creator_exit_unlinks_after_joining_children)
{
    char name[128];
    test_name(name, sizeof name, "exitjoin");
    bool left;
    char *out = run_peer("exit-with-child", name, &left);
    CHECK_STR(out, "child opened\n");
    free(out);
    CHECK(!left);
}

/* Fails each allocation and OS call of a create in turn until it goes
 * through: each failure leaves nothing behind and says where it failed.
 * Returns how many calls were made (the last one succeeded); *m is the
 * segment made. */
static int create_fault_loop(const char *name, conc_shm **m)
{
    int n;
    for (n = 1;; n++) {
        conc__fault_arm(n);
        int err = conc_shm_create(m, name, 8192);
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (!fired) {
            CHECK_OK(err);
            return n;
        }
        CHECK(err == CONC_ENOMEM || err == CONC_ESYS);
        CHECK(strstr(conc_errdetail(), "conc_shm_create: ") != NULL);
        CHECK(*m == NULL);
        CHECK(!th_shm_exists(name)); /* nothing left behind */
        CHECK(n < 50);
    }
}

TEST(shm_fault_loop_create_and_open)
{
    char name[128];
    test_name(name, sizeof name, "fault");
    int n;
    conc_shm *m = NULL;
    /* calloc, shm_open, ftruncate, mmap each failed once */
    CHECK(create_fault_loop(name, &m) >= 5);
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
    CHECK(n >= 5); /* calloc, shm_open, fstat, mmap each failed once */
    conc_shm_free(o);
    conc_shm_free(m);
    CHECK(!th_shm_exists(name));
}

/* ---- trust: owner and mode ------------------------------------------------ */

static void chown_chmod(const char *name, uid_t uid, mode_t mode)
{
    int fd = shm_open(name, O_RDWR, 0);
    CHECK(fd >= 0);
    if (uid != (uid_t)-1) {
        CHECK_EQ(fchown(fd, uid, (gid_t)-1), 0);
    }
    CHECK_EQ(fchmod(fd, mode), 0);
    close(fd);
}

#define CHECK_DETAIL(...)                                                    \
    do {                                                                     \
        const char *th_keys_[] = { __VA_ARGS__ };                            \
        for (size_t th_i_ = 0; th_i_ < sizeof th_keys_ / sizeof *th_keys_;   \
             th_i_++) {                                                      \
            if (strstr(conc_errdetail(), th_keys_[th_i_]) == NULL) {         \
                th_fail(__FILE__, __LINE__, "detail \"%s\" lacks \"%s\"",    \
                        conc_errdetail(), th_keys_[th_i_]);                  \
            }                                                                \
        }                                                                    \
    } while (0)

TEST(shm_open_refuses_another_users_segment_unless_trusted)
{
    if (geteuid() != 0) {
        printf("    (not root: fchown to another user is not possible)\n");
        return;
    }
    char name[128];
    test_name(name, sizeof name, "owner");
    conc_shm *a = NULL, *b = (conc_shm *)1;
    CHECK_OK(conc_shm_create(&a, name, 4096));
    chown_chmod(name, 65534, 0600);
    CHECK_ERR(conc_shm_open(&b, name), CONC_EPERM);
    CHECK_DETAIL("conc_shm_open: ", name, "belongs to uid 65534");
    CHECK(b == NULL);
    CHECK_OK(conc_shm_share(0600, 65534));
    CHECK_OK(conc_shm_open(&b, name));
    conc_shm_free(b);
    CHECK_OK(conc_shm_share(0600, (uid_t)-1));
    CHECK_ERR(conc_shm_open(&b, name), CONC_EPERM);
    /* The creator still unlinks its own segment, whoever owns it now. */
    conc_shm_free(a);
    CHECK(!th_shm_exists(name));
}

TEST(shm_open_refuses_a_segment_open_to_others_unless_shared)
{
    char name[128];
    test_name(name, sizeof name, "mode");
    conc_shm *a = NULL, *b = (conc_shm *)1;
    CHECK_OK(conc_shm_create(&a, name, 4096));
    const mode_t wide[] = { 0644, 0660, 0606, 0666, 0610 };
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++) {
        chown_chmod(name, (uid_t)-1, wide[i]);
        CHECK_ERR(conc_shm_open(&b, name), CONC_EPERM);
        char want[32];
        snprintf(want, sizeof want, "has mode 0%o", (unsigned)wide[i]);
        CHECK_DETAIL("conc_shm_open: ", want);
    }
    /* The opt-in accepts what it grants, no more. */
    CHECK_OK(conc_shm_share(0664, (uid_t)-1));
    chown_chmod(name, (uid_t)-1, 0644);
    CHECK_OK(conc_shm_open(&b, name));
    conc_shm_free(b);
    chown_chmod(name, (uid_t)-1, 0662);
    CHECK_ERR(conc_shm_open(&b, name), CONC_EPERM);
    conc_shm_free(a);
}

TEST(shm_share_sets_the_creation_mode_whatever_the_umask)
{
    char name[128];
    test_name(name, sizeof name, "share");
    char path[256];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    umask(077);
    conc_shm *a = NULL;
    struct stat st;
    CHECK_OK(conc_shm_share(0660, (uid_t)-1));
    CHECK_OK(conc_shm_create(&a, name, 64));
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0660);
    conc_shm_free(a);
    /* A queue, a value and a lock alike. */
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .name = name,
                                                     .capacity_bytes =
                                                         64 }));
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0660);
    conc_queue_free(q);
    CHECK_OK(conc_shm_share(0600, (uid_t)-1));
    CHECK_OK(conc_shm_create(&a, name, 64));
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0600);
    conc_shm_free(a);
    /* Bad modes change nothing. */
    const mode_t bad[] = { 0700, 0400, 0200, 01600, 0777, 0 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_ERR(conc_shm_share(bad[i], (uid_t)-1), CONC_EINVAL);
        CHECK_DETAIL("conc_shm_share: mode");
    }
    CHECK_OK(conc_shm_create(&a, name, 64));
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0600);
    conc_shm_free(a);
}

TEST(shm_fault_loop_create_with_a_sharing_mode)
{
    char name[128];
    test_name(name, sizeof name, "sharefault");
    CHECK_OK(conc_shm_share(0640, (uid_t)-1));
    conc_shm *m = NULL;
    /* calloc, shm_open, fchmod, ftruncate, mmap each failed once */
    CHECK(create_fault_loop(name, &m) >= 6);
    conc_shm_free(m);
}

TEST(shm_errors_say_what_and_where)
{
    char name[128];
    test_name(name, sizeof name, "detail");
    conc_shm *a = NULL, *b = NULL;
    CHECK_ERR(conc_shm_create(&a, "a/b", 64), CONC_EINVAL);
    CHECK_DETAIL("conc_shm_create: name 'a/b'");
    CHECK_ERR(conc_shm_open(&a, "/x/y"), CONC_EINVAL);
    CHECK_DETAIL("conc_shm_open: name '/x/y'");
    CHECK_ERR(conc_shm_create(&a, name, 0), CONC_EINVAL);
    CHECK_DETAIL("conc_shm_create: size 0");
    CHECK_ERR(conc_shm_open(&a, name), CONC_ESYS);
    CHECK_DETAIL("conc_shm_open: shm_open('", name, "No such file");
    CHECK_OK(conc_shm_create(&a, name, 64));
    CHECK_ERR(conc_shm_create(&b, name, 64), CONC_ESYS);
    CHECK_DETAIL("conc_shm_create: shm_open('", name, "File exists");
    CHECK_OK(conc_shm_unlink(a));
    CHECK_ERR(conc_shm_unlink(a), CONC_ESYS);
    CHECK_DETAIL("conc_shm_unlink: shm_unlink('", name, "No such file");
    conc_shm_free(a);
    /* A segment whose creator never sized it. */
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    errno = 0;
    CHECK_ERR(conc_shm_open(&a, name), CONC_ESYS);
    CHECK_EQ(errno, ENODATA);
    CHECK_DETAIL("conc_shm_open: '", name, "' has size 0");
    close(fd);
    shm_unlink(name);
}

/* Under RLIMIT_FSIZE (200 kB here), a segment or a dict that would grow
 * a file past it is an error of the call, never the end of the process:
 * the kernel's SIGXFSZ (whose default action kills) is held back around
 * the growth, and taken back.  In a child, whose limit and exit code the
 * test reads: 0, or the step that went wrong. */
static int grows_past_fsize(void *arg)
{
    (void)arg;
    struct rlimit rl = { 200000, 200000 };
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) {
        return 2;
    }
    char name[64];
    test_name(name, sizeof name, "fsize");
    conc_shm *m = NULL;
    int err = conc_shm_create(&m, name, 1 << 20);
    if (err == 0 || m != NULL || th_shm_exists(name)) {
        return 3;
    }
    if (strstr(conc_errdetail(), "File too large") == NULL) {
        return 4;
    }
    /* an anonymous dict (a memfd) grows as entries come */
    conc_dict *d = NULL;
    if (conc_dict_new(&d, &(conc_dict_opts){ .capacity_bytes = 4 << 20 }) !=
        0) {
        return 5;
    }
    static char val[4096];
    int i = 0;
    for (; i < 1000; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        err = conc_dict_set(d, key, strlen(key), val, sizeof val);
        if (err != 0) {
            break;
        }
    }
    if (err != CONC_ENOMEM || i < 10) {
        return 6;
    }
    conc_dict_free(d);
    /* still alive, and the signal is not left pending to kill us later */
    sigset_t pending;
    sigpending(&pending);
    return sigismember(&pending, SIGXFSZ) ? 7 : 0;
}

TEST(growth_past_the_file_size_limit_is_an_error_not_a_signal)
{
    int st = th_wait(th_fork(grows_past_fsize, NULL), 30);
    CHECK(WIFEXITED(st));
    CHECK_EQ(WEXITSTATUS(st), 0);
}

/* /dev/shm full: a named object is allocated when it is made, or as it
 * grows, so no room is the call's CONC_ENOMEM and never a SIGBUS at the
 * first touch of a page (ftruncate alone made sparse files: the
 * constructors of named locks and values, conc_shm_create's caller and
 * a named queue's puts died of SIGBUS).  In a child with a private
 * mount of a 512 KiB /dev/shm; exit code 0, 77 where mounts cannot be
 * made private (no CAP_SYS_ADMIN: skipped), or the step that failed. */
static int fills_dev_shm(void *arg)
{
    (void)arg;
    if (unshare(CLONE_NEWNS) != 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=512k") != 0) {
        return 77;
    }
    conc_shm *m = NULL;
    if (conc_shm_create(&m, "big", 1 << 20) != CONC_ENOMEM || m != NULL ||
        th_shm_exists("big")) {
        return 2;
    }
    /* two more named queues of 8 MiB, for after /dev/shm is full: one
     * whose tail ends exactly at its first hw (16 records of 4096 bytes:
     * a get reads the record header there), and one left empty (its
     * first record, at offset 0, will be longer than hw) */
    conc_queue *at_hw = NULL, *empty = NULL;
    if (conc_queue_new(&at_hw, &(conc_queue_opts){
                                   .name = "athw",
                                   .capacity_bytes = 8 << 20 }) != 0 ||
        conc_queue_new(&empty, &(conc_queue_opts){
                                   .name = "empty",
                                   .capacity_bytes = 8 << 20 }) != 0) {
        return 7;
    }
    static char rec[4096 - 16];
    for (int i = 0; i < 16; i++) {
        conc_msg got;
        if (conc_queue_put(at_hw, rec, sizeof rec, 0) != 0 ||
            conc_queue_get(at_hw, &got, 0) != 0) {
            return 8;
        }
        conc_msg_free(&got);
    }
    /* a named queue of 8 MiB: made (its first step of ring allocated),
     * then puts until the ring cannot grow: CONC_ENOMEM, nothing lost */
    conc_queue *q = NULL;
    if (conc_queue_new(&q, &(conc_queue_opts){ .name = "q",
                                                .capacity_bytes = 8 << 20 }) !=
        0) {
        return 3;
    }
    static char msg[8192];
    int n = 0, err = 0;
    for (; n < 1024; n++) {
        memset(msg, n & 0xff, sizeof msg);
        err = conc_queue_put(q, msg, sizeof msg, 0);
        if (err != 0) {
            break;
        }
    }
    if (err != CONC_ENOMEM || n < 8 || n >= 1024 ||
        strstr(conc_errdetail(), "growing") == NULL) {
        return 4;
    }
    for (int i = 0; i < n; i++) {
        conc_msg got;
        if (conc_queue_get(q, &got, 0) != 0 || got.len != sizeof msg ||
            ((unsigned char *)got.data)[100] != (i & 0xff)) {
            return 5;
        }
        conc_msg_free(&got);
    }
    /* what is left fills the file up */
    int fd = open("/dev/shm/filler", O_RDWR | O_CREAT, 0600);
    off_t room = 0;
    while (fd >= 0 && posix_fallocate(fd, room, 4096) == 0) {
        room += 4096;
    }
    conc_msg got;
    static char big[100 << 10];
    if (conc_queue_get(at_hw, &got, 0.05) != CONC_EEMPTY ||
        conc_queue_put(empty, big, sizeof big, 0) != CONC_ENOMEM) {
        return 9;
    }
    conc_lock *l = NULL;
    conc_value *v = NULL;
    if (conc_lock_new(&l, &(conc_lock_opts){ .name = "l" }) != CONC_ENOMEM ||
        conc_value_new(&v, &(conc_value_opts){ .size = 8, .name = "v" }) !=
            CONC_ENOMEM ||
        th_shm_exists("l") || th_shm_exists("v")) {
        return 6;
    }
    conc_queue_free(q);
    conc_queue_free(at_hw);
    conc_queue_free(empty);
    close(fd);
    return 0;
}

TEST(named_objects_on_a_full_dev_shm_are_enomem_not_sigbus)
{
    int st = th_wait(th_fork(fills_dev_shm, NULL), 60);
    CHECK(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) {
        printf("    (mounts cannot be made private here: skipped)\n");
        return;
    }
    CHECK_EQ(WEXITSTATUS(st), 0);
}
