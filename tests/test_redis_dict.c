/* test_redis_dict.c - conc_dict on Redis (.url), on a real redis-server
 * each test starts: the mapping calls, update as an atomic read-modify-
 * write across processes (exact counts), its callback run again when
 * another writer got in first - and only then (writers of other keys
 * cost no retry) - including a key deleted and set back to the same
 * value between the read and the write (a version, not the value, is
 * compared), two round trips for an uncontended update (counted), and
 * the errors of a bad name.
 */
#include "harness.h"
#include "redis_server.h"

#include "os.h" /* conc__fault_arm */

#include <stdatomic.h>
#include <sys/mman.h>

#define NEED_REDIS()                                                         \
    do {                                                                     \
        if (!conc__net_backend_built("redis")) {                             \
            return;                                                          \
        }                                                                    \
    } while (0)

static conc_dict *mkd(const char *url, const char *name)
{
    conc_dict *d = NULL;
    int err = conc_dict_new(&d, &(conc_dict_opts){ .url = url,
                                                   .name = name });
    if (err != 0) {
        th_fail(__FILE__, __LINE__, "conc_dict_new: %s: %s",
                conc_errname(err), conc_errdetail());
    }
    return d;
}

TEST(redis_dict_mapping_calls)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = mkd(r.url, "m");
    conc_msg m;
    CHECK_EQ(conc_dict_len(d), 0);
    CHECK_ERR(conc_dict_get(d, "a", 1, &m), CONC_EEMPTY);
    CHECK_OK(conc_dict_set(d, "a", 1, "apple", 5));
    CHECK_OK(conc_dict_set(d, "", 0, NULL, 0)); /* empty key, empty value */
    CHECK_OK(conc_dict_set(d, "a", 1, "avocado", 7));
    CHECK_EQ(conc_dict_len(d), 2);
    CHECK(conc_dict_contains(d, "a", 1));
    CHECK(conc_dict_contains(d, "", 0));
    CHECK(!conc_dict_contains(d, "b", 1));
    CHECK_OK(conc_dict_get(d, "a", 1, &m));
    CHECK(m.len == 7 && memcmp(m.data, "avocado", 7) == 0);
    conc_msg_free(&m);
    CHECK_OK(conc_dict_get(d, "", 0, &m));
    CHECK(m.len == 0 && m.data == NULL);
    char buf[4];
    size_t len = 0;
    CHECK_ERR(conc_dict_get_into(d, "a", 1, buf, sizeof buf, &len),
              CONC_ETOOBIG);
    CHECK_EQ(len, 7);
    conc_msg *keys = NULL;
    size_t n = 0;
    CHECK_OK(conc_dict_keys(d, &keys, &n));
    CHECK_EQ(n, 2);
    CHECK((keys[0].len == 1) != (keys[1].len == 1));
    conc_dict_keys_free(keys);
    CHECK_OK(conc_dict_del(d, "a", 1));
    CHECK_ERR(conc_dict_del(d, "a", 1), CONC_EEMPTY);
    /* Another handle, by URL, sees the same dict. */
    conc_dict *o = NULL;
    CHECK_OK(conc_dict_open(&o, th_redis_url_of(&r, "m")));
    CHECK_EQ(conc_dict_len(o), 1);
    CHECK_OK(conc_dict_set(o, "z", 1, "zz", 2));
    CHECK(conc_dict_contains(d, "z", 1));
    conc_dict_free(o);
    conc_dict_free(d);
    th_redis_stop(&r);
}

/* ---- update ------------------------------------------------------------------------- */

typedef struct counter_arg {
    atomic_int calls;
} counter_arg;

static int incr(const void *old, size_t oldlen, bool found, conc_buf *out,
                void *arg)
{
    counter_arg *a = arg;
    atomic_fetch_add(&a->calls, 1);
    long v = 0;
    if (found) {
        char t[32];
        snprintf(t, sizeof t, "%.*s", (int)oldlen, (const char *)old);
        v = atol(t);
    }
    char t[32];
    int k = snprintf(t, sizeof t, "%ld", v + 1);
    return conc_buf_append(out, t, (size_t)k);
}

static long read_long(conc_dict *d, const char *key)
{
    char buf[32];
    size_t len = 0;
    CHECK_OK(conc_dict_get_into(d, key, strlen(key), buf, sizeof buf - 1,
                                &len));
    buf[len] = '\0';
    return atol(buf);
}

typedef struct upd_box {
    char url[320];
    char key[8];
    atomic_int calls;
} upd_box;

static int updater(void *arg)
{
    upd_box *b = arg;
    conc_dict *d = NULL;
    if (conc_dict_open(&d, b->url) != 0) {
        return 10;
    }
    counter_arg a = { 0 };
    for (int i = 0; i < 100; i++) {
        if (conc_dict_update(d, b->key, strlen(b->key), incr, &a) != 0) {
            return 11;
        }
    }
    atomic_fetch_add(&b->calls, atomic_load(&a.calls));
    conc_dict_free(d);
    return 0;
}

static upd_box *boxes(const th_redis *r, int n)
{
    upd_box *b = mmap(NULL, sizeof *b * (size_t)n, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(b, 0, sizeof *b * (size_t)n);
    for (int i = 0; i < n; i++) {
        snprintf(b[i].url, sizeof b[i].url, "%s", th_redis_url_of(r, "u"));
    }
    return b;
}

TEST(redis_dict_update_is_atomic_across_processes)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = mkd(r.url, "u");
    upd_box *b = boxes(&r, 4);
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        snprintf(b[i].key, sizeof b[i].key, "n");
        kids[i] = th_fork(updater, &b[i]);
    }
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(WEXITSTATUS(th_wait(kids[i], 60.0)), 0);
    }
    CHECK_EQ(read_long(d, "n"), 400);
    int calls = 0;
    for (int i = 0; i < 4; i++) {
        calls += atomic_load(&b[i].calls);
    }
    CHECK(calls >= 400); /* lost races ran fn again */
    printf("    400 updates, fn ran %d times\n", calls);
    munmap(b, sizeof *b * 4);
    conc_dict_free(d);
    th_redis_stop(&r);
}

TEST(redis_dict_writers_of_other_keys_cost_no_retry)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = mkd(r.url, "u");
    upd_box *b = boxes(&r, 2);
    snprintf(b[0].key, sizeof b[0].key, "x");
    snprintf(b[1].key, sizeof b[1].key, "y");
    pid_t k0 = th_fork(updater, &b[0]), k1 = th_fork(updater, &b[1]);
    CHECK_EQ(WEXITSTATUS(th_wait(k0, 60.0)), 0);
    CHECK_EQ(WEXITSTATUS(th_wait(k1, 60.0)), 0);
    CHECK_EQ(read_long(d, "x"), 100);
    CHECK_EQ(read_long(d, "y"), 100);
    CHECK_EQ(atomic_load(&b[0].calls), 100);
    CHECK_EQ(atomic_load(&b[1].calls), 100);
    munmap(b, sizeof *b * 2);
    conc_dict_free(d);
    th_redis_stop(&r);
}

typedef struct aba_arg {
    conc_dict *other;
    int calls;
} aba_arg;

/* On its first run, another handle deletes the key and sets it back to
 * the very value fn is looking at: the write must still be refused. */
static int aba_fn(const void *old, size_t oldlen, bool found, conc_buf *out,
                  void *arg)
{
    aba_arg *a = arg;
    a->calls++;
    if (a->calls == 1) {
        conc_dict_del(a->other, "k", 1);
        conc_dict_set(a->other, "k", 1, old, oldlen);
    }
    (void)found;
    return conc_buf_append(out, "new", 3);
}

static int refuse(const void *old, size_t oldlen, bool found, conc_buf *out,
                  void *arg)
{
    (void)old;
    (void)oldlen;
    (void)found;
    (void)out;
    (*(int *)arg)++;
    return 42;
}

TEST(redis_dict_update_compares_versions_not_values)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = mkd(r.url, "v");
    aba_arg a = { mkd(r.url, "v"), 0 };
    CHECK_OK(conc_dict_set(d, "k", 1, "same", 4));
    CHECK_OK(conc_dict_update(d, "k", 1, aba_fn, &a));
    CHECK_EQ(a.calls, 2);
    conc_msg m;
    CHECK_OK(conc_dict_get(d, "k", 1, &m));
    CHECK(m.len == 3 && memcmp(m.data, "new", 3) == 0);
    conc_msg_free(&m);
    /* fn's own non-zero result: returned, nothing written. */
    int n = 0;
    CHECK_ERR(conc_dict_update(d, "k", 1, refuse, &n), 42);
    CHECK_EQ(n, 1);
    CHECK_OK(conc_dict_get(d, "k", 1, &m));
    CHECK(m.len == 3);
    conc_msg_free(&m);
    conc_dict_free(a.other);
    conc_dict_free(d);
    th_redis_stop(&r);
}

/* An update fn whose first append finds no memory (the seam fails it)
 * and that goes on as if all was well. */
static int careless_fn(const void *old, size_t oldlen, bool found,
                       conc_buf *out, void *arg)
{
    (void)old, (void)oldlen, (void)found, (void)arg;
    static const char big[1000];
    conc__fault_arm(1);
    conc_buf_append(out, big, sizeof big);
    conc__fault_arm(0);
    conc_buf_append(out, "0123456789", 10);
    return 0;
}

/* The value such a fn meant to write was cut short: nothing is written,
 * and the update says why (it used to store the 10 bytes). */
TEST(redis_dict_update_with_a_refused_append_writes_nothing)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = mkd(r.url, "cut");
    CHECK_OK(conc_dict_set(d, "k", 1, "before", 6));
    CHECK_ERR(conc_dict_update(d, "k", 1, careless_fn, NULL), CONC_ENOMEM);
    CHECK(strstr(conc_errdetail(), "cut short") != NULL);
    conc_msg m;
    CHECK_OK(conc_dict_get(d, "k", 1, &m));
    CHECK(m.len == 6 && memcmp(m.data, "before", 6) == 0);
    conc_msg_free(&m);
    conc_dict_free(d);
    th_redis_stop(&r);
}

TEST(redis_dict_uncontended_update_is_two_round_trips)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = mkd(r.url, "rt");
    counter_arg a = { 0 };
    CHECK_OK(conc_dict_update(d, "c", 1, incr, &a)); /* connection made */
    uint64_t trips = conc__net_round_trips();
    long long calls = th_redis_calls(&r, "evalsha");
    CHECK_OK(conc_dict_update(d, "c", 1, incr, &a));
    CHECK_EQ(conc__net_round_trips() - trips, 2);
    CHECK_EQ(th_redis_calls(&r, "evalsha") - calls, 2);
    CHECK_EQ(read_long(d, "c"), 2);
    conc_dict_free(d);
    th_redis_stop(&r);
}

TEST(redis_dict_errors)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = NULL;
    CHECK_ERR(conc_dict_open(&d, th_redis_url_of(&r, "none")), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "no dict 'none'") != NULL);
    CHECK(d == NULL);
    free(th_redis_cmd(&r, "LPUSH", "conc:{d:lst}", "x", NULL));
    CHECK_ERR(conc_dict_new(&d, &(conc_dict_opts){ .url = r.url,
                                                    .name = "lst" }),
              CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "holds a list") != NULL);
    CHECK_ERR(conc_dict_new(&d, &(conc_dict_opts){ .url = r.url,
                                                    .name = "c",
                                                    .capacity_bytes = 1 }),
              CONC_EINVAL);
    d = mkd(r.url, "live");
    free(th_redis_cmd(&r, "SET", "conc:{d:live}", "str", NULL));
    CHECK_ERR(conc_dict_set(d, "k", 1, "v", 1), CONC_ECORRUPT);
    conc_msg m;
    CHECK_ERR(conc_dict_get(d, "k", 1, &m), CONC_ECORRUPT);
    CHECK(!conc_dict_contains(d, "k", 1));
    conc_dict_free(d);
    th_redis_stop(&r);
}

/* conc_dict_add on a server is an update that adds: it creates the key,
 * adds to it, refuses a value that is not 8 bytes and an overflow, and
 * adds atomically across processes; conc_dict_items then sees the sum. */
TEST(redis_dict_add_and_items)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = mkd(r.url, "adds");
    int64_t now = 0;
    CHECK_OK(conc_dict_add(d, "n", 1, 5, &now));
    CHECK(now == 5);
    CHECK_OK(conc_dict_add(d, "n", 1, -7, &now));
    CHECK(now == -2);
    CHECK_OK(conc_dict_set(d, "s", 1, "abc", 3));
    CHECK_ERR(conc_dict_add(d, "s", 1, 1, &now), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "not an 8-byte integer") != NULL);
    CHECK_OK(conc_dict_add(d, "big", 3, INT64_MAX, NULL));
    CHECK_ERR(conc_dict_add(d, "big", 3, 1, &now), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "overflows") != NULL);
    enum { PROCS = 3, EACH = 200 };
    pid_t kids[PROCS];
    for (int i = 0; i < PROCS; i++) {
        kids[i] = fork();
        CHECK(kids[i] >= 0);
        if (kids[i] == 0) {
            conc_dict *c = mkd(r.url, "adds");
            for (int j = 0; j < EACH; j++) {
                if (conc_dict_add(c, "n", 1, 1, NULL) != 0) {
                    _exit(1);
                }
            }
            conc_dict_free(c);
            _exit(0);
        }
    }
    for (int i = 0; i < PROCS; i++) {
        CHECK(th_wait(kids[i], 60) == 0);
    }
    unsigned char v[8];
    size_t len = 0;
    CHECK_OK(conc_dict_get_into(d, "n", 1, v, sizeof v, &len));
    CHECK(len == 8);
    int64_t got = 0;
    for (int i = 7; i >= 0; i--) {
        got = (int64_t)(((uint64_t)got << 8) | v[i]);
    }
    CHECK(got == -2 + PROCS * EACH);
    conc_dict_item *items = NULL;
    size_t n = 0;
    CHECK_OK(conc_dict_items(d, &items, &n));
    CHECK_EQ(n, 3); /* n, s, big */
    bool seen = false;
    for (size_t i = 0; i < n; i++) {
        if (items[i].klen == 1 && memcmp(items[i].key, "n", 1) == 0) {
            CHECK(items[i].vlen == 8 && memcmp(items[i].val, v, 8) == 0);
            seen = true;
        }
    }
    CHECK(seen);
    conc_dict_array_free(items);
    conc_dict_free(d);
    th_redis_stop(&r);
}

/* ---- items ------------------------------------------------------------------------- */

/* Entry i of the items test: key and value of sizes around the 8-byte
 * rounding, empty ones, binary bytes (NULs). */
static const size_t item_klen[] = { 0, 1, 7, 8, 9, 3, 64, 1000 };
static const size_t item_vlen[] = { 5, 0, 8, 9, 7, 0, 4097, 1 };
#define NITEMS (sizeof item_klen / sizeof item_klen[0])

static void item_bytes(unsigned char *p, size_t len, int i, int salt)
{
    for (size_t j = 0; j < len; j++) {
        p[j] = (unsigned char)(j * 31 + (size_t)i * 7 + (size_t)salt);
    }
    if (len > 0) {
        p[0] = (unsigned char)i; /* keys of equal length still differ */
    }
}

TEST(redis_dict_items_values)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = mkd(r.url, "it");
    conc_dict_item *items = (conc_dict_item *)&r; /* must be reset */
    size_t n = 99;
    CHECK_OK(conc_dict_items(d, &items, &n));
    CHECK(items == NULL && n == 0);
    static unsigned char k[NITEMS][1000], v[NITEMS][4097];
    for (int i = 0; i < (int)NITEMS; i++) {
        item_bytes(k[i], item_klen[i], i, 0);
        item_bytes(v[i], item_vlen[i], i, 1);
        CHECK_OK(conc_dict_set(d, k[i], item_klen[i], v[i], item_vlen[i]));
    }
    uint64_t trips = conc__net_round_trips();
    long long calls = th_redis_calls(&r, "hgetall");
    CHECK_OK(conc_dict_items(d, &items, &n));
    CHECK_EQ(conc__net_round_trips() - trips, 1);
    CHECK_EQ(th_redis_calls(&r, "hgetall") - calls, 1);
    CHECK_EQ(n, NITEMS);
    bool seen[NITEMS] = { false };
    const unsigned char *after = (const unsigned char *)(items + n);
    for (size_t i = 0; i < n; i++) {
        const conc_dict_item *it = &items[i];
        /* the layout: NULL when empty, else 8-aligned past the array */
        CHECK((it->klen == 0) == (it->key == NULL));
        CHECK((it->vlen == 0) == (it->val == NULL));
        CHECK(it->key == NULL || ((uintptr_t)it->key % 8 == 0 &&
                                  (const unsigned char *)it->key >= after));
        CHECK(it->val == NULL || ((uintptr_t)it->val % 8 == 0 &&
                                  (const unsigned char *)it->val >= after));
        int w = -1;
        for (int j = 0; j < (int)NITEMS; j++) {
            if (it->klen == item_klen[j] &&
                (it->klen == 0 || memcmp(it->key, k[j], it->klen) == 0)) {
                w = j;
            }
        }
        CHECK(w >= 0 && !seen[w]);
        seen[w] = true;
        CHECK_EQ(it->vlen, item_vlen[w]);
        CHECK(it->vlen == 0 || memcmp(it->val, v[w], it->vlen) == 0);
        /* the same entry as keys + get gives */
        conc_msg m;
        CHECK_OK(conc_dict_get(d, it->key, it->klen, &m));
        CHECK(m.len == it->vlen &&
              (m.len == 0 || memcmp(m.data, it->val, m.len) == 0));
        conc_msg_free(&m);
    }
    conc_msg *keys = NULL;
    size_t nk = 0;
    CHECK_OK(conc_dict_keys(d, &keys, &nk));
    CHECK_EQ(nk, n);
    conc_dict_keys_free(keys);
    conc_dict_array_free(items);
    /* emptied again: NULL, 0 */
    for (int i = 0; i < (int)NITEMS; i++) {
        CHECK_OK(conc_dict_del(d, k[i], item_klen[i]));
    }
    items = (conc_dict_item *)&r;
    CHECK_OK(conc_dict_items(d, &items, &n));
    CHECK(items == NULL && n == 0);
    CHECK_ERR(conc_dict_items(d, NULL, &n), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "conc_dict_items") != NULL);
    conc_dict_free(d);
    th_redis_stop(&r);
}

/* A writer that sets "a" then "b" to the same counter, each set waiting
 * for its answer, so at every moment on the server a == b or a == b + 1;
 * each value is the counter in 16 digits and a filler whose length and
 * byte the counter decides, so a torn value shows. */
static size_t snap_val(unsigned char *p, long c)
{
    snprintf((char *)p, 17, "%016ld", c);
    size_t fill = (size_t)(c * 37 % 3000);
    memset(p + 16, 'A' + (int)(c % 26), fill);
    return 16 + fill;
}

static long snap_parse(const conc_dict_item *it)
{
    if (it->vlen < 16) {
        return -1;
    }
    char t[17];
    memcpy(t, it->val, 16);
    t[16] = '\0';
    long c = atol(t);
    unsigned char want[16 + 3000];
    if (snap_val(want, c) != it->vlen ||
        memcmp(want, it->val, it->vlen) != 0) {
        return -1;
    }
    return c;
}

static int snap_writer(void *arg)
{
    const char *url = arg;
    conc_dict *d = NULL;
    if (conc_dict_open(&d, url) != 0) {
        return 10;
    }
    unsigned char v[16 + 3000];
    for (long c = 1; c <= 3000; c++) {
        size_t len = snap_val(v, c);
        if (conc_dict_set(d, "a", 1, v, len) != 0 ||
            conc_dict_set(d, "b", 1, v, len) != 0) {
            return 11;
        }
    }
    conc_dict_free(d);
    return 0;
}

TEST(redis_dict_items_is_one_snapshot)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = mkd(r.url, "snap");
    unsigned char v[16 + 3000];
    size_t len = snap_val(v, 0);
    CHECK_OK(conc_dict_set(d, "a", 1, v, len));
    CHECK_OK(conc_dict_set(d, "b", 1, v, len));
    char url[320];
    snprintf(url, sizeof url, "%s", th_redis_url_of(&r, "snap"));
    pid_t w = th_fork(snap_writer, url);
    int snaps = 0, between = 0;
    long last_b = -1;
    for (;;) {
        int st = 0;
        bool done = waitpid(w, &st, WNOHANG) == w;
        conc_dict_item *items = NULL;
        size_t n = 0;
        CHECK_OK(conc_dict_items(d, &items, &n));
        CHECK_EQ(n, 2);
        long a = -1, b = -1;
        for (size_t i = 0; i < n; i++) {
            long c = snap_parse(&items[i]);
            CHECK(c >= 0); /* every value whole, as written */
            if (items[i].klen == 1 && *(const char *)items[i].key == 'a') {
                a = c;
            } else {
                b = c;
            }
        }
        conc_dict_array_free(items);
        CHECK(a == b || a == b + 1); /* the dict as it stood at one moment */
        CHECK(b >= last_b);          /* and moments in order */
        last_b = b;
        between += a != b;
        snaps++;
        if (done) {
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            CHECK_EQ(a, 3000);
            break;
        }
    }
    printf("    %d snapshots, %d between the writer's two sets\n", snaps,
           between);
    conc_dict_free(d);
    th_redis_stop(&r);
}

TEST(redis_dict_items_errors)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, NULL);
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){
                                   .url = r.url, .name = "ie",
                                   .net_timeout = CONC_TIMEOUT(1.0) }));
    CHECK_OK(conc_dict_set(d, "k", 1, "v", 1));
    /* the values hash replaced by another type */
    free(th_redis_cmd(&r, "DEL", "conc:{d:ie}", NULL));
    free(th_redis_cmd(&r, "SET", "conc:{d:ie}", "str", NULL));
    conc_dict_item *items = NULL;
    size_t n = 0;
    CHECK_ERR(conc_dict_items(d, &items, &n), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "conc_dict_items") != NULL);
    CHECK(items == NULL && n == 0);
    free(th_redis_cmd(&r, "DEL", "conc:{d:ie}", NULL));
    /* a stopped server: an error within net_timeout (1 s) */
    th_redis_signal(&r, SIGSTOP);
    double t0 = th_now();
    int err = conc_dict_items(d, &items, &n);
    double took = th_now() - t0;
    CHECK(err == CONC_ETIMEDOUT || err == CONC_ENET);
    CHECK(took >= 0.9 && took < 3.0);
    CHECK(strstr(conc_errdetail(), "conc_dict_items") != NULL);
    CHECK(items == NULL && n == 0);
    th_redis_signal(&r, SIGCONT);
    CHECK_OK(conc_dict_items(d, &items, &n));
    CHECK(items == NULL && n == 0);
    /* a vanished server */
    th_redis_kill(&r);
    err = conc_dict_items(d, &items, &n);
    CHECK(err == CONC_ENET || err == CONC_ETIMEDOUT);
    CHECK(strstr(conc_errdetail(), "conc_dict_items") != NULL);
    CHECK(items == NULL && n == 0);
    conc_dict_free(d);
    th_redis_stop(&r);
}

/* A server whose HGETALL answer is not pairs of strings: SMEMBERS (three
 * members: a key without its value) and MGET (a nil) answer to the name
 * HGETALL there.  Each is CONC_ECORRUPT with its own detail, no array. */
TEST(redis_dict_items_checks_the_answer)
{
    NEED_REDIS();
    th_redis r;
    th_redis_start(&r, "hgetall=SMEMBERS");
    conc_dict *d = mkd(r.url, "odd");
    free(th_redis_cmd(&r, "SADD", "conc:{d:odd}", "x", "y", "z", NULL));
    conc_dict_item *items = NULL;
    size_t n = 0;
    CHECK_ERR(conc_dict_items(d, &items, &n), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "odd count") != NULL);
    CHECK(strstr(conc_errdetail(), "conc_dict_items") != NULL);
    CHECK(items == NULL && n == 0);
    conc_dict_free(d);
    th_redis_stop(&r);
    th_redis_start(&r, "hgetall=MGET");
    d = mkd(r.url, "nil");
    CHECK_OK(conc_dict_set(d, "k", 1, "v", 1));
    CHECK_ERR(conc_dict_items(d, &items, &n), CONC_ECORRUPT);
    CHECK(strstr(conc_errdetail(), "not a string") != NULL);
    CHECK(items == NULL && n == 0);
    conc_dict_free(d);
    th_redis_stop(&r);
}
