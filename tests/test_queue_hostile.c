/* test_queue_hostile.c - a conc_queue against peers that write its shared
 * memory as they like: crafted headers (every field conc_queue_open
 * copies, the overflowing ones of the hostile-peers review included),
 * truncated and grown segments, segments of another user or open to
 * others (and the conc_shm_share opt-in), a ring whose offsets, lengths,
 * head, tail, counters and lock words were rewritten, and a live lock
 * holder that never lets go.  Each case must end in an error code with a
 * detail (CONC_ECORRUPT, CONC_EINVAL, CONC_EPERM) or a garbled message,
 * never a crash, an out-of-bounds access, a loop or a hang.  Batches
 * (put_many/get_many) are tested in test_queue.c. */
#include "harness.h"

#include "queue_int.h"
#include "queue_test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char qname[64];
static const char *unique_name(const char *tag)
{
    snprintf(qname, sizeof qname, "conc-test-qh-%s-%d", tag, (int)getpid());
    return qname;
}

/* err is the call's result: it must be want, with a detail that names
 * fn and contains key. */
#define CHECK_FAIL(call, want, fn, key)                                      \
    do {                                                                     \
        CHECK_ERR(call, want);                                               \
        const char *th_d_ = conc_errdetail();                                \
        if (strstr(th_d_, fn) == NULL || strstr(th_d_, key) == NULL) {       \
            th_fail(__FILE__, __LINE__, "detail \"%s\" lacks \"%s\" or "     \
                    "\"%s\"", th_d_, fn, key);                               \
        }                                                                    \
    } while (0)

/* ---- crafted headers ------------------------------------------------------- */

typedef struct hdr_case {
    const char *what;
    size_t off;    /* offsetof(conc__qshm, field) */
    int width;     /* 4 or 8 */
    uint64_t val;
    size_t off2;   /* a second field, or SIZE_MAX */
    uint64_t val2;
    int err;
    const char *key; /* in the detail */
} hdr_case;

TEST(queue_open_checks_every_header_field)
{
    const char *name = unique_name("hdr");
    conc_queue *c, *q = (conc_queue *)1;
    CHECK_OK(conc_queue_new(&c, &(conc_queue_opts){ .name = name,
                                                     .capacity_bytes = 4096,
                                                     .maxsize = 10 }));
    conc_shm *m;
    CHECK_OK(conc_shm_open(&m, name));
    unsigned char *hdr = conc_shm_ptr(m);
    size_t real = conc_shm_size(m);
    unsigned char saved[128];
    memcpy(saved, hdr, sizeof saved);
    const size_t NONE = SIZE_MAX;
#define F(f) offsetof(conc__qshm, f)
    const hdr_case cases[] = {
        { "magic", F(magic), 8, 0x1234, NONE, 0, CONC_EINVAL,
          "not a libconc queue" },
        { "version", F(version), 4, 99, NONE, 0, CONC_EINVAL,
          "layout version 99" },
        { "capacity 0", F(capacity), 8, 0, NONE, 0, CONC_ECORRUPT,
          "header's capacity" },
        { "capacity over the maximum", F(capacity), 8,
          (uint64_t)CONC_QUEUE_MAX_CAPACITY + 1, NONE, 0, CONC_ECORRUPT,
          "header's capacity" },
        /* 16 + round16(capacity) wraps to a ring of 0 bytes (a put then
         * divided by zero). */
        { "ring of 0 bytes", F(capacity), 8, UINT64_MAX - 15, F(ring_bytes),
          0, CONC_ECORRUPT, "header's capacity" },
        /* ring_off + ring_bytes wraps below the size, with a capacity
         * that matches the ring (puts then wrote far outside). */
        { "ring end that wraps", F(capacity), 8, UINT64_MAX - 2063,
          F(ring_bytes), UINT64_MAX - 2047, CONC_ECORRUPT, "header's capacity" },
        { "ring size off by 16", F(ring_bytes), 8, 16 + 4096 + 16, NONE, 0,
          CONC_ECORRUPT, "header's ring size" },
        /* A consistent capacity and ring, bigger than the segment. */
        { "a ring bigger than the segment", F(capacity), 8, 1 << 20,
          F(ring_bytes), 16 + (1 << 20), CONC_ECORRUPT,
          "capacity needs" },
        { "ring offset 0", F(ring_off), 4, 0, NONE, 0, CONC_ECORRUPT,
          "header's ring offset" },
        { "ring offset at the top", F(ring_off), 4, UINT32_MAX, NONE, 0,
          CONC_ECORRUPT, "header's ring offset" },
        { "mapping size", F(map_size), 8, real + 4096, NONE, 0,
          CONC_ECORRUPT, "real size" },
        { "maxsize", F(maxsize), 8, UINT64_MAX, NONE, 0, CONC_ECORRUPT,
          "header's maxsize" },
        { "key", F(key), 8, 0x1234, NONE, 0, CONC_ECORRUPT, "header's key" },
        { "no lanes", F(lanes), 4, 0, NONE, 0, CONC_ECORRUPT,
          "header's lane count" },
        { "lanes over the maximum", F(lanes), 4, CONC_QUEUE_MAX_LANES + 1,
          NONE, 0, CONC_ECORRUPT, "header's lane count" },
        /* Two lanes in a segment that holds one. */
        { "lanes the segment has no room for", F(lanes), 4, 2, NONE, 0,
          CONC_ECORRUPT, "capacity needs, times its lanes" },
        { "first lane's number", F(lane), 4, 1, NONE, 0, CONC_ECORRUPT,
          "first lane's number" },
    };
#undef F
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const hdr_case *k = &cases[i];
        poke(hdr, k->off, k->width, k->val);
        if (k->off2 != NONE) {
            poke(hdr, k->off2, 8, k->val2);
        }
        CHECK_OPEN_REFUSED(name, k->err, k->key, k->what);
        memcpy(hdr, saved, sizeof saved);
    }
    /* Restored, it opens and works. */
    CHECK_OK(conc_queue_open(&q, name));
    put_str(q, "fine");
    get_str(c, "fine");
    conc_queue_free(q);
    conc_shm_free(m);
    conc_queue_free(c);
}

/* The whole attack of the review, in the smallest segment that holds a
 * header: every size field agrees with every other once the sums wrap,
 * and the ring would start at the mapping's end. */
TEST(queue_open_refuses_a_header_whose_sums_wrap)
{
    const char *name = unique_name("wrap");
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    size_t size = conc__queue_ring_off();
    CHECK_EQ(ftruncate(fd, (off_t)size), 0);
    conc__qshm *sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
                          fd, 0);
    CHECK(sh != MAP_FAILED);
    close(fd);
    sh->version = CONC__QUEUE_VERSION;
    sh->ring_off = (uint32_t)size;
    sh->capacity = UINT64_MAX - 2063;
    sh->ring_bytes = UINT64_MAX - 2047; /* 16 + capacity */
    sh->map_size = size; /* ring_off + ring_bytes, wrapped and rounded */
    sh->key = UINT64_C(1) << 63;
    atomic_store(&sh->magic, CONC__QUEUE_MAGIC);
    conc_queue *q = (conc_queue *)1;
    CHECK_FAIL(conc_queue_open(&q, name), CONC_ECORRUPT, "conc_queue_open",
               "header's capacity");
    CHECK(q == NULL);
    munmap(sh, size);
    CHECK_EQ(shm_unlink(path), 0);
}

/* A handle never re-reads what it checked at open: a peer that rewrites
 * the header afterwards changes nothing it believes. */
TEST(queue_handle_keeps_the_header_it_checked)
{
    const char *name = unique_name("keep");
    conc_queue *c, *q;
    CHECK_OK(conc_queue_new(&c, &(conc_queue_opts){ .name = name,
                                                     .capacity_bytes =
                                                         4096 }));
    CHECK_OK(conc_queue_open(&q, name));
    c->sh->ring_bytes = 0;
    c->sh->capacity = UINT64_MAX;
    c->sh->map_size = 1;
    for (int i = 0; i < 1000; i++) {
        put_str(q, "still a queue of 4096 bytes");
        get_str(c, "still a queue of 4096 bytes");
    }
    char big[5000] = { 0 };
    CHECK_ERR(conc_queue_put(q, big, sizeof big, 0), CONC_ETOOBIG);
    conc_queue_free(q);
    conc_queue_free(c);
}

static void set_size(const char *name, off_t size)
{
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    CHECK(fd >= 0);
    CHECK_EQ(ftruncate(fd, size), 0);
    close(fd);
}

TEST(queue_open_refuses_truncated_and_grown_segments)
{
    const char *name = unique_name("size");
    conc_queue *c, *q = (conc_queue *)1;
    CHECK_OK(conc_queue_new(&c, &(conc_queue_opts){ .name = name,
                                                     .capacity_bytes =
                                                         4096 }));
    size_t real = c->map_size;
    /* Cut inside the header: not even a queue's header fits. */
    set_size(name, 100);
    CHECK_FAIL(conc_queue_open(&q, name), CONC_EINVAL, "conc_queue_open",
               "too small");
    CHECK(q == NULL);
    /* Cut inside the ring, and grown past it: the header's size lies. */
    set_size(name, (off_t)(real - 4096));
    CHECK_FAIL(conc_queue_open(&q, name), CONC_ECORRUPT, "conc_queue_open",
               "real size");
    set_size(name, (off_t)(real + 4096));
    CHECK_FAIL(conc_queue_open(&q, name), CONC_ECORRUPT, "conc_queue_open",
               "real size");
    /* Size 0: a creator that never sized it; the opener waits its
     * second, then gives up. */
    set_size(name, 0);
    double t0 = th_now();
    errno = 0;
    CHECK_FAIL(conc_queue_open(&q, name), CONC_ESYS, "conc_queue_open",
               "size 0");
    CHECK_EQ(errno, ENODATA);
    CHECK(th_now() - t0 >= 0.9);
    CHECK(q == NULL);
    /* c's own mapping was cut too: free it without touching it. */
    conc_queue_free(c);
    CHECK(!th_shm_exists(name));
}

/* An opener that comes while the creator is still making the queue (the
 * segment exists but is unsized, then sized but unpublished) waits for
 * it, within its second. */
static int child_makes_it_slowly(void *arg)
{
    const char *name = arg;
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        return 1;
    }
    th_sleep(0.2);
    size_t size = conc__queue_map_size(4096, 1);
    if (ftruncate(fd, (off_t)size) != 0) {
        return 2;
    }
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        return 3;
    }
    th_sleep(0.2);
    conc__queue_format(map, size, 4096, 0, 1);
    munmap(map, size);
    return 0;
}

TEST(queue_open_waits_for_a_creator_still_making_it)
{
    const char *name = unique_name("slow");
    pid_t pid = th_fork(child_makes_it_slowly, (void *)name);
    while (!th_shm_exists(name)) {
        th_sleep(0.001);
    }
    conc_queue *q;
    double t0 = th_now();
    CHECK_OK(conc_queue_open(&q, name));
    CHECK(th_now() - t0 >= 0.3);
    CHECK_EQ(th_wait(pid, 10), 0);
    put_str(q, "made");
    get_str(q, "made");
    conc_queue_free(q);
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    CHECK_EQ(shm_unlink(path), 0);
}

/* ---- what the errors say -------------------------------------------------- */

TEST(queue_errors_say_what_and_where)
{
    const char *name = unique_name("detail");
    conc_queue *q = NULL, *o = NULL;
    CHECK_FAIL(conc_queue_new(&q, &(conc_queue_opts){ .name = "a/b" }),
               CONC_EINVAL, "conc_queue_new: ", "name 'a/b'");
    CHECK_FAIL(conc_queue_new(&q, &(conc_queue_opts){
                                      .capacity_bytes =
                                          CONC_QUEUE_MAX_CAPACITY + 1 }),
               CONC_EINVAL, "conc_queue_new: ", "CONC_QUEUE_MAX_CAPACITY");
    CHECK_FAIL(conc_queue_open(&o, name), CONC_ESYS, "conc_queue_open: ",
               "No such file");
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .name = name,
                                                     .capacity_bytes = 64 }));
    CHECK_FAIL(conc_queue_new(&o, &(conc_queue_opts){ .name = name }),
               CONC_ESYS, "conc_queue_new: shm_open('", "File exists");
    char big[65] = { 0 };
    CHECK_FAIL(conc_queue_put(q, big, sizeof big, 0), CONC_ETOOBIG,
               "conc_queue_put: ", "len 65");
    CHECK_FAIL(conc_queue_put(q, NULL, 3, 0), CONC_EINVAL,
               "conc_queue_put: ", "data is NULL");
    CHECK_FAIL(conc_queue_put(q, "x", 1, -3), CONC_EINVAL,
               "conc_queue_put: ", "timeout -3");
    conc_msg m;
    CHECK_FAIL(conc_queue_get(q, &m, 0), CONC_EEMPTY, "conc_queue_get: ",
               "no message");
    CHECK_FAIL(conc_queue_task_done(q), CONC_EINVAL,
               "conc_queue_task_done: ", "more times");
    put_str(q, "ab");
    char small[1];
    size_t len;
    CHECK_FAIL(conc_queue_get_into(q, small, 1, &len, 0), CONC_ETOOBIG,
               "conc_queue_get_into: ", "2 bytes");
    CHECK_FAIL(conc_queue_join(q, 0), CONC_ETIMEDOUT, "conc_queue_join: ",
               "task_done");
    CHECK_OK(conc_queue_close(q));
    CHECK_FAIL(conc_queue_put(q, "x", 1, 0), CONC_ECLOSED, "conc_queue_put: ",
               "closed");
    get_str(q, "ab");
    CHECK_FAIL(conc_queue_get(q, &m, 0), CONC_ECLOSED, "conc_queue_get: ",
               "closed and drained");
    conc_queue_free(q);
}

/* ---- who owns the segment -------------------------------------------------- */

static void chown_chmod(const char *name, uid_t uid, mode_t mode)
{
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    CHECK(fd >= 0);
    if (uid != (uid_t)-1) {
        CHECK_EQ(fchown(fd, uid, (gid_t)-1), 0);
    }
    CHECK_EQ(fchmod(fd, mode), 0);
    close(fd);
}

TEST(queue_open_refuses_another_users_segment_unless_trusted)
{
    if (geteuid() != 0) {
        printf("    (not root: fchown to another user is not possible)\n");
        return;
    }
    const char *name = unique_name("owner");
    conc_queue *c, *q = (conc_queue *)1;
    CHECK_OK(conc_queue_new(&c, &(conc_queue_opts){ .name = name,
                                                     .capacity_bytes =
                                                         4096 }));
    chown_chmod(name, 65534, 0600);
    CHECK_FAIL(conc_queue_open(&q, name), CONC_EPERM, "conc_queue_open",
               "belongs to uid 65534");
    CHECK(q == NULL);
    /* The opt-in: trust that user. */
    CHECK_OK(conc_shm_share(0600, 65534));
    CHECK_OK(conc_queue_open(&q, name));
    put_str(q, "trusted");
    get_str(c, "trusted");
    conc_queue_free(q);
    /* Trusting another user is not trusting everyone. */
    CHECK_OK(conc_shm_share(0600, 65533));
    CHECK_ERR(conc_queue_open(&q, name), CONC_EPERM);
    CHECK_OK(conc_shm_share(0600, (uid_t)-1));
    CHECK_ERR(conc_queue_open(&q, name), CONC_EPERM);
    conc_queue_free(c);
    CHECK(!th_shm_exists(name));
}

TEST(queue_open_refuses_a_segment_open_to_others_unless_shared)
{
    const char *name = unique_name("mode");
    conc_queue *c, *q = (conc_queue *)1;
    CHECK_OK(conc_queue_new(&c, &(conc_queue_opts){ .name = name,
                                                     .capacity_bytes =
                                                         4096 }));
    chown_chmod(name, (uid_t)-1, 0666);
    CHECK_FAIL(conc_queue_open(&q, name), CONC_EPERM, "conc_queue_open",
               "mode 0666");
    chown_chmod(name, (uid_t)-1, 0640);
    CHECK_FAIL(conc_queue_open(&q, name), CONC_EPERM, "conc_queue_open",
               "mode 0640");
    /* A process that shares with its group accepts group bits, not
     * others'. */
    CHECK_OK(conc_shm_share(0660, (uid_t)-1));
    CHECK_OK(conc_queue_open(&q, name));
    conc_queue_free(q);
    chown_chmod(name, (uid_t)-1, 0606);
    CHECK_ERR(conc_queue_open(&q, name), CONC_EPERM);
    chown_chmod(name, (uid_t)-1, 0600);
    CHECK_OK(conc_shm_share(0600, (uid_t)-1));
    CHECK_OK(conc_queue_open(&q, name));
    conc_queue_free(q);
    conc_queue_free(c);
}

/* ---- a ring rewritten under the queue ----------------------------------------- */

static conc_queue *small_queue(void)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .capacity_bytes =
                                                        4096 }));
    /* Off offset 0, so the cases meet a used ring. */
    for (int i = 0; i < 3; i++) {
        put_str(q, "warm-up");
        get_str(q, "warm-up");
    }
    return q;
}

TEST(queue_rejects_rewritten_offsets)
{
    conc_queue *q = small_queue();
    conc__qshm *sh = q->sh;
    uint64_t to = atomic_load(&sh->tail_off), ho = atomic_load(&sh->head_off);
    char buf[64];
    size_t len;
    conc_msg m;
    const uint64_t bad[] = { q->R, q->R + 16, UINT64_MAX - 15, to + 8 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        atomic_store(&sh->tail_off, bad[i]);
        CHECK_FAIL(conc_queue_put(q, "x", 1, 0), CONC_ECORRUPT,
                   "conc_queue_put", "tail offset");
        CHECK_FAIL(conc_queue_put(q, "x", 1, 0.05), CONC_ECORRUPT,
                   "conc_queue_put", "tail offset");
        size_t done = 7;
        CHECK_FAIL(conc_queue_put_many(q, &(conc_msg){ "x", 1 }, 1, &done,
                                       0),
                   CONC_ECORRUPT, "conc_queue_put_many", "tail offset");
        CHECK_EQ(done, 0);
        atomic_store(&sh->tail_off, to);
        put_str(q, "between");
        atomic_store(&sh->head_off, bad[i] == to + 8 ? ho + 8 : bad[i]);
        CHECK_FAIL(conc_queue_get(q, &m, 0), CONC_ECORRUPT,
                   "conc_queue_get", "head offset");
        CHECK(m.data == NULL && m.len == 0);
        CHECK_FAIL(conc_queue_get_into(q, buf, sizeof buf, &len, 1),
                   CONC_ECORRUPT, "conc_queue_get_into", "head offset");
        CHECK_FAIL(conc_queue_get_many(q, &m, 1, NULL, 0), CONC_ECORRUPT,
                   "conc_queue_get_many", "head offset");
        atomic_store(&sh->head_off, ho);
        get_str(q, "between");
        to = atomic_load(&sh->tail_off);
        ho = atomic_load(&sh->head_off);
    }
    conc_queue_free(q);
}

TEST(queue_rejects_a_record_length_over_the_capacity)
{
    conc_queue *q = small_queue();
    put_str(q, "victim");
    put_str(q, "next");
    conc__qrec *r = (conc__qrec *)(void *)(q->ring +
                                            atomic_load(&q->sh->head_off));
    /* 1 MiB from a 4 KiB ring: the copy would read far past the mapping. */
    atomic_store(&r->len, 1u << 20);
    conc_msg m;
    char buf[64];
    size_t len = 5;
    CHECK_FAIL(conc_queue_get(q, &m, 0), CONC_ECORRUPT, "conc_queue_get",
               "record length (1048576)");
    CHECK_FAIL(conc_queue_get_into(q, buf, sizeof buf, &len, 0),
               CONC_ECORRUPT, "conc_queue_get_into", "record length");
    CHECK_EQ(len, 0);
    atomic_store(&r->len, CONC__QUEUE_SKIP - 1);
    CHECK_ERR(conc_queue_get(q, &m, 0), CONC_ECORRUPT);
    /* Repaired by hand, the queue goes on. */
    atomic_store(&r->len, 6);
    get_str(q, "victim");
    get_str(q, "next");
    conc_queue_free(q);
}

TEST(queue_rejects_a_skip_record_at_offset_zero)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .capacity_bytes =
                                                        4096 }));
    put_str(q, "first");
    conc__qrec *r = (conc__qrec *)(void *)q->ring;
    CHECK_EQ(atomic_load(&q->sh->head_off), 0);
    atomic_store(&r->len, CONC__QUEUE_SKIP);
    conc_msg m;
    CHECK_FAIL(conc_queue_get(q, &m, 0), CONC_ECORRUPT, "conc_queue_get",
               "skip record");
    CHECK_EQ(atomic_load(&q->sh->head), 0); /* nothing passed */
    atomic_store(&r->len, 5);
    get_str(q, "first");
    conc_queue_free(q);
}

/* fuzz_queue_records found it: head and head_off are two words a peer
 * can set apart.  A get that passed a skip record then jumped to a
 * position that is not the next lap's start (an invariant broken in the
 * checked builds; a lost place in the ring in release). */
TEST(queue_rejects_a_head_apart_from_its_offset_at_a_skip_record)
{
    conc_queue *q = small_queue();
    conc__qshm *sh = q->sh;
    put_str(q, "victim");
    uint64_t h = atomic_load(&sh->head), ho = atomic_load(&sh->head_off);
    CHECK(ho != 0 && h % q->R == ho);
    conc__qrec *r = (conc__qrec *)(void *)(q->ring + ho);
    uint32_t len = atomic_load(&r->len);
    /* The record at head becomes a committed skip record for a head 16
     * bytes on, while head_off still names this record. */
    /* Second: head and offset agree, but head is within a lap of 2^64
     * (the one position in (2^64 - 1 - R, 2^64 - 1] at offset ho). */
    const uint64_t heads[] = { h + 16, UINT64_MAX - (UINT64_MAX - ho) % q->R };
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        uint64_t h2 = heads[i];
        CHECK(i == 0 || (h2 % q->R == ho && h2 > UINT64_MAX - q->R));
        atomic_store(&sh->head, h2);
        atomic_store(&r->len, CONC__QUEUE_SKIP);
        atomic_store(&r->stamp, h2 ^ q->key);
        conc_msg m;
        CHECK_FAIL(conc_queue_get(q, &m, 0), CONC_ECORRUPT, "conc_queue_get",
                   "head position");
        CHECK(m.data == NULL && m.len == 0);
        CHECK_EQ(atomic_load(&sh->head), h2); /* nothing passed */
        CHECK_EQ(atomic_load(&sh->head_off), ho);
    }
    /* Repaired by hand, the queue goes on. */
    atomic_store(&sh->head, h);
    atomic_store(&r->len, len);
    atomic_store(&r->stamp, h ^ q->key);
    get_str(q, "victim");
    conc_queue_free(q);
}

TEST(queue_rejects_head_and_tail_further_apart_than_the_ring)
{
    conc_queue *q = small_queue();
    conc__qshm *sh = q->sh;
    uint64_t t = atomic_load(&sh->tail);
    /* Head far ahead of tail (the cache says so too). */
    atomic_store(&sh->head, t + 5 * q->R);
    atomic_store(&sh->head_cache, t + 5 * q->R);
    CHECK_FAIL(conc_queue_put(q, "x", 1, 0), CONC_ECORRUPT,
               "conc_queue_put", "head");
    /* Tail far ahead of head. */
    atomic_store(&sh->head, t);
    atomic_store(&sh->head_cache, t);
    atomic_store(&sh->tail, t + 100 * q->R);
    CHECK_FAIL(conc_queue_put(q, "x", 1, 0), CONC_ECORRUPT,
               "conc_queue_put", "head");
    atomic_store(&sh->tail, t);
    put_str(q, "mended");
    get_str(q, "mended");
    conc_queue_free(q);
}

/* fuzz_queue_header found it: a head position off a record boundary,
 * read where a producer looks for a skip record at head, named a record
 * header that crossed the ring's end (here also the mapping's end). */
TEST(queue_survives_a_head_off_a_record_boundary)
{
    conc_queue *q;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .capacity_bytes =
                                                        4080 }));
    CHECK_EQ(q->R, 4096); /* the ring ends where the mapping does */
    CHECK_EQ((size_t)(q->ring - (unsigned char *)q->sh) + q->R, q->map_size);
    for (int i = 0; i < 511; i++) { /* tail to 2R - 16 */
        CHECK_OK(conc_queue_put(q, NULL, 0, 0));
        size_t len;
        CHECK_OK(conc_queue_get_into(q, NULL, 0, &len, 0));
    }
    conc__qshm *sh = q->sh;
    uint64_t t = atomic_load(&sh->tail);
    CHECK_EQ(t, 2 * q->R - 16);
    uint64_t h = t - q->R + 13; /* h % R == R - 3 */
    atomic_store(&sh->head, h);
    atomic_store(&sh->head_cache, h);
    CHECK_ERR(conc_queue_put(q, "x", 1, 0), CONC_EFULL);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0.01), CONC_EEMPTY); /* the probe too */
    atomic_store(&sh->head, t);
    atomic_store(&sh->head_cache, t);
    put_str(q, "mended");
    get_str(q, "mended");
    conc_queue_free(q);
}

TEST(queue_survives_rewritten_counters_and_high_water_mark)
{
    conc_queue *q = small_queue();
    conc__qshm *sh = q->sh;
    /* A count no ring can hold: qsize says at most one per 16 bytes. */
    atomic_store(&sh->nput, atomic_load(&sh->nget) + ((uint64_t)1 << 40));
    CHECK_EQ(conc_queue_qsize(q), q->R / 16);
    CHECK(!conc_queue_empty(q));
    atomic_store(&sh->nput, atomic_load(&sh->nget));
    CHECK_EQ(conc_queue_qsize(q), 0);
    /* Any high-water mark only moves where records go. */
    const uint64_t hws[] = { 0, 1, 17, q->R - 1, q->R + 1, UINT64_MAX };
    for (size_t i = 0; i < sizeof hws / sizeof hws[0]; i++) {
        atomic_store(&sh->hw, hws[i]);
        for (int j = 0; j < 300; j++) {
            char msg[32];
            snprintf(msg, sizeof msg, "hw %zu round %d", i, j);
            put_str(q, msg);
            get_str(q, msg);
        }
    }
    conc_queue_free(q);
}

/* A dead producer's repair walks committed records past tail; one whose
 * length is out of range ends the walk (a walk that went on would jump
 * tail 4 GiB ahead, and every later put would find the queue full). */
static int child_dies_holding_pmu(void *arg)
{
    conc_queue *q = arg;
    conc__deadline forever;
    conc__deadline_init(&forever, CONC_FOREVER);
    CHECK_OK(conc__olock_acquire(&q->sh->pmu, &forever));
    uint64_t t = atomic_load(&q->sh->tail);
    conc__qrec *r = (conc__qrec *)(void *)(q->ring + t % q->R);
    atomic_store(&r->len, 0xFFFFF000u);
    atomic_store(&r->item, (uint32_t)atomic_load(&q->sh->nput));
    atomic_store(&r->stamp, t ^ q->key);
    _exit(0);
}

TEST(queue_repair_walk_stops_at_a_length_out_of_range)
{
    conc_queue *q = small_queue();
    pid_t pid = th_fork(child_dies_holding_pmu, q);
    CHECK_EQ(th_wait(pid, 10), 0);
    put_str(q, "after the repair");
    get_str(q, "after the repair");
    conc_queue_free(q);
}

/* ---- a live holder that never lets go ---------------------------------------- */

static int child_holds_forever(void *arg)
{
    conc__olock *l = arg;
    conc__deadline forever;
    conc__deadline_init(&forever, CONC_FOREVER);
    CHECK_OK(conc__olock_acquire(l, &forever));
    raise(SIGSTOP);
    _exit(0);
}

TEST_T(queue_calls_end_when_a_live_holder_never_lets_go, 60)
{
    conc_queue *q = small_queue();
    put_str(q, "queued");
    pid_t pid = th_fork(child_holds_forever, &q->sh->pmu);
    int st;
    CHECK_EQ(waitpid(pid, &st, WUNTRACED), pid);
    CHECK(WIFSTOPPED(st));
    /* timeout 0 and short timeouts wait for the grace, then give up. */
    double t0 = th_now();
    CHECK_FAIL(conc_queue_put(q, "x", 1, 0), CONC_EFULL, "conc_queue_put",
               "lock stayed held");
    double dt = th_now() - t0;
    CHECK(dt >= 0.9 && dt < 10);
    t0 = th_now();
    CHECK_FAIL(conc_queue_put(q, "x", 1, 1.5), CONC_EFULL, "conc_queue_put",
               "lock stayed held");
    dt = th_now() - t0;
    CHECK(dt >= 1.5 && dt < 15);
    size_t done = 9;
    CHECK_ERR(conc_queue_put_many(q, &(conc_msg){ "x", 1 }, 1, &done, 0.1),
              CONC_EFULL);
    CHECK_EQ(done, 0);
    CHECK_FAIL(conc_queue_close(q), CONC_ETIMEDOUT, "conc_queue_close",
               "lock stayed held");
    /* The consumers' side is free: gets go on. */
    get_str(q, "queued");
    kill(pid, SIGKILL);
    CHECK_EQ(th_wait(pid, 10), SIGKILL);
    /* Now its holder is dead: taken over at once (after a slice). */
    put_str(q, "after");
    get_str(q, "after");
    conc_queue_free(q);

    q = small_queue();
    put_str(q, "queued");
    pid = th_fork(child_holds_forever, &q->sh->cmu);
    CHECK_EQ(waitpid(pid, &st, WUNTRACED), pid);
    conc_msg m;
    t0 = th_now();
    CHECK_FAIL(conc_queue_get(q, &m, 0.2), CONC_EEMPTY, "conc_queue_get",
               "lock stayed held");
    dt = th_now() - t0;
    CHECK(dt >= 0.9 && dt < 10);
    kill(pid, SIGKILL);
    CHECK_EQ(th_wait(pid, 10), SIGKILL);
    get_str(q, "queued");
    conc_queue_free(q);
}
