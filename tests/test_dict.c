/* test_dict.c - conc_dict's contract: set/get/get_into/del/contains/len/
 * keys/update, every error code, variable sizes (empty key, empty value,
 * binary keys, a value of megabytes), full -> CONC_ENOMEM with the table
 * intact, fill-delete-refill cycles (free space coalesces), exact totals
 * from threads and from processes forked after creation, a named dict used
 * by an unrelated exec'd program, layout checks on open, memory not used
 * until needed, and fault loops for every allocation.  Invariants are
 * checked with conc__dict_check (src/shared_int.h) after each phase. */
#include "harness.h"

#include "dict_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define S(str) (str), strlen(str)

static void check_value(conc_dict *d, const void *k, size_t klen,
                        const void *want, size_t wlen)
{
    conc_msg m;
    CHECK_OK(conc_dict_get(d, k, klen, &m));
    CHECK_EQ(m.len, wlen);
    CHECK(wlen == 0 ? m.data == NULL : memcmp(m.data, want, wlen) == 0);
    conc_msg_free(&m);
}

TEST(dict_set_get_del_contains_len)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, NULL));
    CHECK_EQ(conc_dict_len(d), 0);
    CHECK(!conc_dict_contains(d, S("a")));
    conc_msg m = { (void *)1, 5 };
    CHECK_ERR(conc_dict_get(d, S("a"), &m), CONC_EEMPTY);
    CHECK(m.data == NULL && m.len == 0);
    CHECK_ERR(conc_dict_del(d, S("a")), CONC_EEMPTY);
    CHECK_OK(conc_dict_set(d, S("a"), S("apple")));
    CHECK_OK(conc_dict_set(d, S("b"), S("banana")));
    CHECK(conc_dict_contains(d, S("a")));
    CHECK_EQ(conc_dict_len(d), 2);
    check_value(d, S("a"), S("apple"));
    check_value(d, S("b"), S("banana"));
    /* Overwrite with a longer and then a shorter value. */
    CHECK_OK(conc_dict_set(d, S("a"), S("apricots and more apricots")));
    check_value(d, S("a"), S("apricots and more apricots"));
    CHECK_OK(conc_dict_set(d, S("a"), S("A")));
    check_value(d, S("a"), S("A"));
    CHECK_EQ(conc_dict_len(d), 2);
    CHECK_OK(conc_dict_del(d, S("a")));
    CHECK(!conc_dict_contains(d, S("a")));
    CHECK_ERR(conc_dict_get(d, S("a"), &m), CONC_EEMPTY);
    CHECK_ERR(conc_dict_del(d, S("a")), CONC_EEMPTY);
    CHECK_EQ(conc_dict_len(d), 1);
    /* Keys are bytes: "b" and "b\0" differ. */
    CHECK(!conc_dict_contains(d, "b\0", 2));
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
    conc_dict_free(NULL);
}

TEST(dict_empty_key_empty_value_binary_and_big)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .capacity_bytes = 16 << 20 }));
    CHECK_OK(conc_dict_set(d, NULL, 0, S("empty key")));
    CHECK_OK(conc_dict_set(d, S("empty value"), NULL, 0));
    check_value(d, NULL, 0, S("empty key"));
    check_value(d, "", 0, S("empty key"));
    check_value(d, S("empty value"), NULL, 0);
    unsigned char bin[300];
    for (int i = 0; i < 300; i++) {
        bin[i] = (unsigned char)(i * 7);
    }
    bin[0] = 0;
    CHECK_OK(conc_dict_set(d, bin, sizeof bin, bin + 1, 200));
    check_value(d, bin, sizeof bin, bin + 1, 200);
    size_t big = 5u << 20;
    unsigned char *v = malloc(big);
    for (size_t i = 0; i < big; i++) {
        v[i] = (unsigned char)(i * 31 + (i >> 12));
    }
    CHECK_OK(conc_dict_set(d, S("big"), v, big));
    check_value(d, S("big"), v, big);
    CHECK_EQ(conc_dict_len(d), 4);
    conc_msg *keys = NULL;
    size_t n = 0;
    CHECK_OK(conc_dict_keys(d, &keys, &n));
    CHECK_EQ(n, 4);
    int seen_empty = 0, seen_bin = 0;
    for (size_t i = 0; i < n; i++) {
        if (keys[i].len == 0) {
            CHECK(keys[i].data == NULL);
            seen_empty++;
        } else if (keys[i].len == sizeof bin) {
            CHECK(memcmp(keys[i].data, bin, sizeof bin) == 0);
            seen_bin++;
        }
    }
    CHECK_EQ(seen_empty, 1);
    CHECK_EQ(seen_bin, 1);
    conc_dict_keys_free(keys);
    free(v);
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
}

TEST(dict_get_into_too_small_leaves_the_entry)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, NULL));
    CHECK_OK(conc_dict_set(d, S("k"), S("0123456789")));
    char buf[16];
    memset(buf, '#', sizeof buf);
    size_t len = 0;
    CHECK_ERR(conc_dict_get_into(d, S("k"), buf, 9, &len), CONC_ETOOBIG);
    CHECK_EQ(len, 10); /* the size needed */
    CHECK_EQ(buf[0], '#');
    check_value(d, S("k"), S("0123456789"));
    len = 0;
    CHECK_OK(conc_dict_get_into(d, S("k"), buf, 10, &len));
    CHECK_EQ(len, 10);
    CHECK(memcmp(buf, "0123456789", 10) == 0);
    CHECK_ERR(conc_dict_get_into(d, S("nope"), buf, 16, &len), CONC_EEMPTY);
    CHECK_OK(conc_dict_set(d, S("e"), NULL, 0));
    CHECK_OK(conc_dict_get_into(d, S("e"), NULL, 0, &len));
    CHECK_EQ(len, 0);
    conc_dict_free(d);
}

static int incr_fn(const void *old, size_t oldlen, bool found, conc_buf *out,
                   void *arg)
{
    uint64_t v = 0;
    if (found) {
        if (oldlen != sizeof v) {
            return 99;
        }
        memcpy(&v, old, sizeof v);
    }
    v += arg ? *(uint64_t *)arg : 1;
    return conc_buf_append(out, &v, sizeof v);
}

static uint64_t read_u64(conc_dict *d, const void *k, size_t klen)
{
    uint64_t v = 0;
    size_t len = 0;
    CHECK_OK(conc_dict_get_into(d, k, klen, &v, sizeof v, &len));
    CHECK_EQ(len, sizeof v);
    return v;
}

static int refuse_fn(const void *old, size_t oldlen, bool found, conc_buf *out,
                     void *arg)
{
    (void)old;
    (void)oldlen;
    (void)found;
    conc_buf_append(out, "ignored", 7); /* not stored: fn says no */
    return *(int *)arg;
}

static int found_fn(const void *old, size_t oldlen, bool found, conc_buf *out,
                    void *arg)
{
    (void)out;
    int *seen = arg;
    seen[0] = found;
    seen[1] = (int)oldlen;
    seen[2] = old == NULL;
    return 1;
}

static conc_dict *reentry_dict;

static int reentrant_fn(const void *old, size_t oldlen, bool found,
                        conc_buf *out, void *arg)
{
    (void)old;
    (void)oldlen;
    (void)found;
    (void)out;
    int *errs = arg;
    conc_msg m;
    errs[0] = conc_dict_get(reentry_dict, S("x"), &m);
    errs[1] = conc_dict_set(reentry_dict, S("y"), S("1"));
    errs[2] = (int)conc_dict_len(reentry_dict);
    return 2;
}

static int empty_fn(const void *old, size_t oldlen, bool found, conc_buf *out,
                    void *arg)
{
    (void)old;
    (void)oldlen;
    (void)found;
    (void)out;
    (void)arg;
    return 0;
}

/* An update fn that ignores a refused append: 100000 bytes (more than
 * the buffer a thread keeps between updates, so it must grow), then 10
 * that fit, and success. */
static int careless_fn(const void *old, size_t oldlen, bool found,
                       conc_buf *out, void *arg)
{
    (void)old, (void)oldlen, (void)found, (void)arg;
    static char big[100000];
    conc_buf_append(out, big, sizeof big);
    conc_buf_append(out, "0123456789", 10);
    return 0;
}

/* A value whose bytes could not all be appended is never stored cut
 * short, whatever fn returns: the update fails with the append's reason
 * (here CONC_ENOMEM) and the entry is as it was. */
TEST(dict_update_with_a_refused_append_stores_nothing)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, NULL));
    CHECK_OK(conc_dict_set(d, S("k"), S("before")));
    conc__fault_arm(1);
    int err = conc_dict_update(d, S("k"), careless_fn, NULL);
    CHECK(conc__fault_fired());
    conc__fault_arm(0);
    CHECK_ERR(err, CONC_ENOMEM);
    CHECK(strstr(conc_errdetail(), "conc_dict_update: the update fn's "
                                   "value was cut short") != NULL);
    check_value(d, S("k"), "before", 6);
    CHECK_OK(conc_dict_update(d, S("k"), careless_fn, NULL));
    conc_msg m;
    CHECK_OK(conc_dict_get(d, S("k"), &m));
    CHECK_EQ(m.len, 100010);
    conc_msg_free(&m);
    conc_dict_free(d);
}

TEST(dict_update_is_read_modify_write)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, NULL));
    int seen[3] = { -1, -1, -1 };
    /* Absent: found false, old NULL, len 0; a non-zero return stores
     * nothing and comes back as is. */
    CHECK_ERR(conc_dict_update(d, S("c"), found_fn, seen), 1);
    CHECK_EQ(seen[0], 0);
    CHECK_EQ(seen[1], 0);
    CHECK_EQ(seen[2], 1);
    CHECK(!conc_dict_contains(d, S("c")));
    for (int i = 0; i < 10; i++) {
        CHECK_OK(conc_dict_update(d, S("c"), incr_fn, NULL));
    }
    CHECK_EQ(read_u64(d, S("c")), 10);
    CHECK_ERR(conc_dict_update(d, S("c"), found_fn, seen), 1);
    CHECK_EQ(seen[0], 1);
    CHECK_EQ(seen[1], 8);
    CHECK_EQ(seen[2], 0);
    int code = 7;
    CHECK_ERR(conc_dict_update(d, S("c"), refuse_fn, &code), 7);
    CHECK(strstr(conc_errdetail(), "conc_dict_update: the update fn "
                                   "returned 7") != NULL);
    code = CONC_ETASK;
    CHECK_ERR(conc_dict_update(d, S("c"), refuse_fn, &code), CONC_ETASK);
    CHECK_EQ(read_u64(d, S("c")), 10);
    /* An update that appends nothing stores the empty value. */
    CHECK_OK(conc_dict_update(d, S("c"), empty_fn, NULL));
    check_value(d, S("c"), NULL, 0);
    /* Calling the same dict from fn is refused, not a deadlock. */
    reentry_dict = d;
    int errs[3] = { 0, 0, -1 };
    CHECK_ERR(conc_dict_update(d, S("x"), reentrant_fn, errs), 2);
    CHECK_ERR(errs[0], CONC_ESTATE);
    CHECK_ERR(errs[1], CONC_ESTATE);
    CHECK_EQ(errs[2], 0);
    CHECK(!conc_dict_contains(d, S("y")));
    CHECK_EQ(conc_dict_len(d), 1);
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
}

TEST(dict_bad_arguments_are_einval)
{
    conc_dict *d = NULL;
    conc_msg m;
    size_t len;
    char buf[4];
    CHECK_ERR(conc_dict_new(NULL, NULL), CONC_EINVAL);
    CHECK_ERR(conc_dict_new(&d, &(conc_dict_opts){
                                    .capacity_bytes = ((size_t)1 << 38) + 1 }),
              CONC_EINVAL);
    CHECK_ERR(conc_dict_new(&d, &(conc_dict_opts){ .name = "a/b" }),
              CONC_EINVAL);
    CHECK_ERR(conc_dict_new(&d, &(conc_dict_opts){
                                    .net_timeout = CONC_TIMEOUT(1) }),
              CONC_EINVAL); /* only a server honours it */
    CHECK(d == NULL);
    CHECK(d == NULL);
    CHECK_ERR(conc_dict_open(NULL, "/x"), CONC_EINVAL);
    CHECK_ERR(conc_dict_open(&d, NULL), CONC_EINVAL);
    CHECK_ERR(conc_dict_open(&d, ""), CONC_EINVAL);
    CHECK_ERR(conc_dict_set(NULL, S("k"), S("v")), CONC_EINVAL);
    CHECK_ERR(conc_dict_get(NULL, S("k"), &m), CONC_EINVAL);
    CHECK_ERR(conc_dict_get_into(NULL, S("k"), buf, 4, &len), CONC_EINVAL);
    CHECK_ERR(conc_dict_del(NULL, S("k")), CONC_EINVAL);
    CHECK(!conc_dict_contains(NULL, S("k")));
    CHECK_EQ(conc_dict_len(NULL), 0);
    conc_msg *keys;
    size_t n;
    CHECK_ERR(conc_dict_keys(NULL, &keys, &n), CONC_EINVAL);
    CHECK_ERR(conc_dict_update(NULL, S("k"), incr_fn, NULL), CONC_EINVAL);
    CHECK_OK(conc_dict_new(&d, NULL));
    CHECK_ERR(conc_dict_set(d, NULL, 1, S("v")), CONC_EINVAL);
    CHECK_ERR(conc_dict_set(d, S("k"), NULL, 1), CONC_EINVAL);
    CHECK_ERR(conc_dict_get(d, NULL, 3, &m), CONC_EINVAL);
    CHECK_ERR(conc_dict_get(d, S("k"), NULL), CONC_EINVAL);
    CHECK_ERR(conc_dict_get_into(d, S("k"), NULL, 4, &len), CONC_EINVAL);
    CHECK_ERR(conc_dict_get_into(d, S("k"), buf, 4, NULL), CONC_EINVAL);
    CHECK_ERR(conc_dict_del(d, NULL, 2), CONC_EINVAL);
    CHECK(!conc_dict_contains(d, NULL, 2));
    CHECK_ERR(conc_dict_keys(d, NULL, &n), CONC_EINVAL);
    CHECK_ERR(conc_dict_keys(d, &keys, NULL), CONC_EINVAL);
    CHECK_ERR(conc_dict_update(d, S("k"), NULL, NULL), CONC_EINVAL);
    CHECK_ERR(conc_dict_update(d, NULL, 1, incr_fn, NULL), CONC_EINVAL);
    CHECK_EQ(conc_dict_len(d), 0);
    CHECK_OK(conc_dict_keys(d, &keys, &n));
    CHECK(keys == NULL);
    CHECK_EQ(n, 0);
    conc_dict_keys_free(NULL);
    conc_dict_free(d);
}

TEST(dict_many_keys_and_the_keys_snapshot)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .capacity_bytes = 8 << 20 }));
    enum { N = 20000 };
    char k[32], v[64];
    for (int i = 0; i < N; i++) {
        int kl = snprintf(k, sizeof k, "key-%d", i);
        int vl = snprintf(v, sizeof v, "value-%d-%.*s", i, i % 40,
                          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        CHECK_OK(conc_dict_set(d, k, (size_t)kl, v, (size_t)vl));
    }
    CHECK_EQ(conc_dict_len(d), N);
    for (int i = 0; i < N; i += 2) {
        int kl = snprintf(k, sizeof k, "key-%d", i);
        CHECK_OK(conc_dict_del(d, k, (size_t)kl));
    }
    CHECK_EQ(conc_dict_len(d), N / 2);
    conc_msg *keys = NULL;
    size_t n = 0;
    CHECK_OK(conc_dict_keys(d, &keys, &n));
    CHECK_EQ(n, N / 2);
    char *seen = calloc(N, 1);
    for (size_t i = 0; i < n; i++) {
        CHECK(keys[i].len > 4 && memcmp(keys[i].data, "key-", 4) == 0);
        char tmp[32];
        memcpy(tmp, keys[i].data, keys[i].len);
        tmp[keys[i].len] = '\0';
        int id = atoi(tmp + 4);
        CHECK(id >= 0 && id < N && id % 2 == 1);
        CHECK_EQ(seen[id], 0);
        seen[id] = 1;
    }
    conc_dict_keys_free(keys);
    /* A snapshot: later changes do not touch it, and every key in it
     * reads back whole. */
    for (int i = 1; i < N; i += 2) {
        int kl = snprintf(k, sizeof k, "key-%d", i);
        int vl = snprintf(v, sizeof v, "value-%d-%.*s", i, i % 40,
                          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        check_value(d, k, (size_t)kl, v, (size_t)vl);
    }
    free(seen);
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
}

TEST(dict_full_is_enomem_and_the_table_stays_intact)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .capacity_bytes = 64 << 10 }));
    char k[32], v[100];
    memset(v, 'v', sizeof v);
    int stored = 0, err = 0;
    for (int i = 0; i < 100000; i++) {
        int kl = snprintf(k, sizeof k, "k%d", i);
        err = conc_dict_set(d, k, (size_t)kl, v, sizeof v);
        if (err != 0) {
            break;
        }
        stored++;
    }
    CHECK_ERR(err, CONC_ENOMEM);
    CHECK(stored > 100);
    CHECK_EQ(conc_dict_len(d), stored);
    CHECK_OK(conc__dict_check(d));
    /* Full: an update and an overwrite fail too, and change nothing. */
    CHECK_ERR(conc_dict_update(d, S("new"), incr_fn, NULL), CONC_ENOMEM);
    CHECK(!conc_dict_contains(d, S("new")));
    for (int i = 0; i < stored; i++) {
        int kl = snprintf(k, sizeof k, "k%d", i);
        v[0] = 'v';
        check_value(d, k, (size_t)kl, v, sizeof v);
    }
    /* Larger than the whole dict could ever hold: CONC_ETOOBIG. */
    char *huge = calloc(1, 128 << 10);
    CHECK_ERR(conc_dict_set(d, S("huge"), huge, 128 << 10), CONC_ETOOBIG);
    free(huge);
    /* Deleting makes room again. */
    for (int i = 0; i < stored; i += 2) {
        int kl = snprintf(k, sizeof k, "k%d", i);
        CHECK_OK(conc_dict_del(d, k, (size_t)kl));
    }
    CHECK_OK(conc_dict_update(d, S("new"), incr_fn, NULL));
    CHECK_OK(conc_dict_set(d, S("another"), v, sizeof v));
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
}

TEST(dict_fill_delete_refill_does_not_fragment)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .capacity_bytes = 1 << 20 }));
    conc__dict_stats st0;
    CHECK_OK(conc__dict_stats_get(d, &st0));
    CHECK_EQ(st0.free_bytes + st0.index_bytes, st0.heap_bytes);
    size_t sizes[] = { 10, 3000, 90, 20000, 500, 60000, 1 };
    int first_big = -1;
    char *v = malloc(60000);
    for (int cycle = 0; cycle < 14; cycle++) {
        size_t vs = sizes[cycle % 7];
        memset(v, 'a' + cycle, vs);
        int stored = 0;
        char k[32];
        for (;; stored++) {
            int kl = snprintf(k, sizeof k, "c%d-%d", cycle, stored);
            int err = conc_dict_set(d, k, (size_t)kl, v, vs);
            if (err == CONC_ENOMEM) {
                break;
            }
            CHECK_OK(err);
        }
        CHECK(stored > 0);
        if (vs == 20000) {
            /* Every cycle of the same size fits the same count: nothing
             * was lost to fragmentation by the cycles in between. */
            if (first_big < 0) {
                first_big = stored;
            }
            CHECK_EQ(stored, first_big);
        }
        CHECK_OK(conc__dict_check(d));
        /* Delete in a scattered order. */
        for (int i = 0; i < stored; i++) {
            int j = (int)(((long)i * 7919) % stored);
            int kl = snprintf(k, sizeof k, "c%d-%d", cycle, j);
            CHECK_OK(conc_dict_del(d, k, (size_t)kl));
        }
        CHECK_EQ(conc_dict_len(d), 0);
        conc__dict_stats st;
        CHECK_OK(conc__dict_stats_get(d, &st));
        /* Coalesced back: nothing but the index is in use. */
        CHECK_EQ(st.free_bytes + st.index_bytes, st.heap_bytes);
    }
    /* After all the cycles, one entry nearly half the heap still fits. */
    /* The emptied dict's index shrinks back to 16 buckets within a few
     * calls that write. */
    conc__dict_stats st1;
    int calls = 0;
    for (;; calls++) {
        CHECK_OK(conc__dict_stats_get(d, &st1));
        if (!st1.migrating && st1.buckets == 16) {
            break;
        }
        CHECK(calls < 300);
        CHECK_OK(conc_dict_set(d, S("x"), S("y")));
        CHECK_OK(conc_dict_del(d, S("x")));
    }
    CHECK_EQ(st1.heap_bytes, 1 << 20); /* grown to its capacity */
    CHECK_EQ(st1.index_bytes, 64);
    size_t half = st1.heap_bytes / 2 - 4096;
    char *big = calloc(1, half);
    CHECK_OK(conc_dict_set(d, S("half"), big, half));
    free(big);
    free(v);
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
}

typedef struct thread_arg {
    conc_dict *d;
    int id;
    int n;
} thread_arg;

static void *thread_updates(void *p)
{
    thread_arg *a = p;
    char k[16];
    for (int i = 0; i < a->n; i++) {
        if (conc_dict_update(a->d, S("shared"), incr_fn, NULL) != 0) {
            return (void *)1;
        }
        int kl = snprintf(k, sizeof k, "t%d", a->id);
        if (conc_dict_update(a->d, k, (size_t)kl, incr_fn, NULL) != 0) {
            return (void *)2;
        }
        if (conc_dict_set(a->d, S("scratch"), k, (size_t)kl) != 0) {
            return (void *)3;
        }
    }
    return NULL;
}

TEST(dict_threads_update_exactly)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, NULL));
    enum { T = 4, N = 5000 };
    pthread_t th[T];
    thread_arg args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (thread_arg){ d, i, N };
        CHECK_EQ(pthread_create(&th[i], NULL, thread_updates, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        void *r = (void *)9;
        pthread_join(th[i], &r);
        CHECK(r == NULL);
    }
    CHECK_EQ(read_u64(d, S("shared")), (uint64_t)T * N);
    for (int i = 0; i < T; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "t%d", i);
        CHECK_EQ(read_u64(d, k, (size_t)kl), N);
    }
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
}

static conc_dict *proc_dict;

static int proc_updates(void *arg)
{
    int id = *(int *)arg;
    char k[16];
    int kl = snprintf(k, sizeof k, "p%d", id);
    /* A process started after the dict was filled sees what is there. */
    conc_msg m;
    if (conc_dict_get(proc_dict, S("before"), &m) != 0 || m.len != 6 ||
        memcmp(m.data, "parent", 6) != 0) {
        return 5;
    }
    conc_msg_free(&m);
    for (int i = 0; i < 5000; i++) {
        if (conc_dict_update(proc_dict, S("shared"), incr_fn, NULL) != 0 ||
            conc_dict_update(proc_dict, k, (size_t)kl, incr_fn, NULL) != 0) {
            return 6;
        }
    }
    return 0;
}

TEST(dict_processes_update_exactly)
{
    CHECK_OK(conc_dict_new(&proc_dict, NULL));
    CHECK_OK(conc_dict_set(proc_dict, S("before"), S("parent")));
    int ids[4] = { 0, 1, 2, 3 };
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        kids[i] = th_fork(proc_updates, &ids[i]);
    }
    for (int i = 0; i < 4; i++) {
        int st = th_wait(kids[i], 60);
        CHECK(WIFEXITED(st));
        CHECK_EQ(WEXITSTATUS(st), 0);
    }
    CHECK_EQ(read_u64(proc_dict, S("shared")), 20000);
    for (int i = 0; i < 4; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "p%d", i);
        CHECK_EQ(read_u64(proc_dict, k, (size_t)kl), 5000);
    }
    CHECK_EQ(conc_dict_len(proc_dict), 6);
    CHECK_OK(conc__dict_check(proc_dict));
    conc_dict_free(proc_dict);
}

TEST(dict_named_shared_with_an_unrelated_process)
{
    char name[128];
    snprintf(name, sizeof name, "/conc_test_dict_%d", (int)getpid());
    conc_dict *d = NULL, *o = NULL;
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .name = name,
                                                   .capacity_bytes = 1 << 20 }));
    CHECK_OK(conc_dict_set(d, S("from_parent"), S("hello peer")));
    char *argv[] = { (char *)th_prog("prog_dict_peer"), name, "get",
                     "from_parent", "get", "nothing", "set", "from_peer",
                     "hello parent", "incr", "n", "3000", "len", NULL };
    char *argv2[] = { (char *)th_prog("prog_dict_peer"), name, "incr", "n",
                      "3000", NULL };
    /* Two peers at once, plus updates from here. */
    char *out = NULL;
    pid_t p2 = fork();
    if (p2 == 0) {
        execv(argv2[0], argv2);
        _exit(127);
    }
    int st = th_run(argv, &out, 60);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    int st2 = th_wait(p2, 60);
    CHECK(WIFEXITED(st2) && WEXITSTATUS(st2) == 0);
    CHECK(strstr(out, "from_parent=hello peer\n") != NULL);
    CHECK(strstr(out, "nothing missing\n") != NULL);
    check_value(d, S("from_peer"), S("hello parent"));
    check_value(d, S("n"), S("6000"));
    free(out);
    /* Opened here as well: the same table. */
    errno = 0;
    int oerr = conc_dict_open(&o, name);
    if (oerr != 0) {
        th_fail(__FILE__, __LINE__, "open: %s, errno %d", conc_errname(oerr),
                errno);
    }
    CHECK_EQ(conc_dict_len(o), 3);
    CHECK_OK(conc_dict_del(o, S("n")));
    CHECK(!conc_dict_contains(d, S("n")));
    conc_dict_free(o);
    /* The name is taken while it lives. */
    conc_dict *dup = NULL;
    errno = 0;
    CHECK_ERR(conc_dict_new(&dup, &(conc_dict_opts){ .name = name }),
              CONC_ESYS);
    CHECK_EQ(errno, EEXIST);
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
    CHECK(!th_shm_exists(name));
    errno = 0;
    CHECK_ERR(conc_dict_open(&o, name), CONC_ESYS);
    CHECK_EQ(errno, ENOENT);
}

/* conc_dict_open returns err with a detail that contains want. */
static void open_fails_at(int line, const char *name, int err,
                          const char *want)
{
    conc_dict *d = (conc_dict *)1;
    int got = conc_dict_open(&d, name);
    if (got != err || d != NULL) {
        th_fail(__FILE__, line, "conc_dict_open returned %s, wanted %s",
                conc_errname(got), conc_errname(err));
    }
    if (strstr(conc_errdetail(), want) == NULL) {
        th_fail(__FILE__, line, "detail '%s' lacks '%s'", conc_errdetail(),
                want);
    }
}
#define open_fails(name, err, want) open_fails_at(__LINE__, name, err, want)

/* The named-segment layer's trust rules hold for the dict's growable
 * segment: another user's dict, or one whose mode lets others in, is
 * refused with CONC_EPERM (conc_shm_share() can allow it), and a free
 * never unlinks a name that now names someone else's dict. */
TEST(dict_open_refuses_other_users_and_free_unlinks_only_its_own)
{
    char name[128];
    snprintf(name, sizeof name, "/conc_test_dicttrust_%d", (int)getpid());
    conc_dict *a = NULL, *o = NULL;
    CHECK_OK(conc_dict_new(&a, &(conc_dict_opts){ .name = name,
                                                   .capacity_bytes = 1 << 20 }));
    CHECK_OK(conc_dict_set(a, S("k"), S("v")));
    int fd = shm_open(name, O_RDWR, 0);
    CHECK(fd >= 0);
    CHECK_EQ(fchmod(fd, 0606), 0); /* others may write, the group not */
    CHECK_ERR(conc_dict_open(&o, name), CONC_EPERM);
    CHECK(o == NULL);
    CHECK(strstr(conc_errdetail(), "conc_dict_open: ") != NULL &&
          strstr(conc_errdetail(), "other users may access it") != NULL);
    CHECK_OK(conc_shm_share(0666, (uid_t)-1));
    CHECK_OK(conc_dict_open(&o, name));
    conc_dict_free(o);
    CHECK_OK(conc_shm_share(0600, (uid_t)-1));
    CHECK_EQ(fchmod(fd, 0600), 0);
    if (geteuid() == 0) {
        CHECK_EQ(fchown(fd, 65534, (gid_t)-1), 0);
        CHECK_ERR(conc_dict_open(&o, name), CONC_EPERM);
        CHECK(strstr(conc_errdetail(), "belongs to uid 65534") != NULL);
        CHECK_OK(conc_shm_share(0600, 65534));
        CHECK_OK(conc_dict_open(&o, name));
        conc_dict_free(o);
        CHECK_OK(conc_shm_share(0600, (uid_t)-1));
        CHECK_EQ(fchown(fd, 0, (gid_t)-1), 0);
    } else {
        printf("    (not root: fchown to another user is not possible)\n");
    }
    close(fd);
    /* Someone unlinks the name and B makes a new dict under it: A's free
     * leaves B's dict where it is. */
    CHECK_EQ(shm_unlink(name), 0);
    conc_dict *b = NULL;
    CHECK_OK(conc_dict_new(&b, &(conc_dict_opts){ .name = name,
                                                   .capacity_bytes = 1 << 20 }));
    conc_dict_free(a);
    CHECK(th_shm_exists(name));
    CHECK_OK(conc_dict_open(&o, name));
    CHECK_EQ(conc_dict_len(o), 0);
    conc_dict_free(o);
    conc_dict_free(b);
    CHECK(!th_shm_exists(name));
}

TEST(dict_open_checks_magic_version_and_layout)
{
    char name[128];
    snprintf(name, sizeof name, "/conc_test_dictbad_%d", (int)getpid());
    conc_shm *m = NULL;
    conc_dict *d = NULL;
    /* Not a dict at all, or another version: CONC_EINVAL. */
    CHECK_OK(conc_shm_create(&m, name, 1 << 20));
    open_fails(name, CONC_EINVAL, "not a libconc dict");
    conc_shm_free(m);
    CHECK_OK(conc_shm_create(&m, name, 100));
    open_fails(name, CONC_EINVAL, "too small to be a libconc dict");
    conc_shm_free(m);
    /* A real dict, then its header damaged in turn. */
    conc_dict *real = NULL;
    CHECK_OK(conc_dict_new(&real, &(conc_dict_opts){ .name = name,
                                                      .capacity_bytes = 1 << 20 }));
    CHECK_OK(conc_dict_set(real, S("k"), S("v")));
    CHECK_OK(conc_shm_open(&m, name));
    conc__dict_hdr *h = conc_shm_ptr(m);
    CHECK_OK(conc_dict_open(&d, name));
    conc_dict_free(d);
    h->version ^= 0xff;
    open_fails(name, CONC_EINVAL, "layout version");
    h->version ^= 0xff;
    uint64_t magic = atomic_load(&h->magic);
    atomic_store(&h->magic, magic ^ 1);
    open_fails(name, CONC_EINVAL, "not a libconc dict");
    atomic_store(&h->magic, magic);
    /* A dict whose header lies: CONC_ECORRUPT. */
    uint64_t limit = h->limit;
    h->limit = limit + 4096; /* max_order no longer matches... */
    h->limit = (uint64_t)1 << 40; /* ...and past what refs can address */
    open_fails(name, CONC_ECORRUPT, "capacity");
    h->limit = 4096; /* smaller than the file */
    open_fails(name, CONC_ECORRUPT, "capacity");
    h->limit = limit;
    h->max_order++;
    open_fails(name, CONC_ECORRUPT, "blocks of up to");
    h->max_order--;
    uint64_t hs = atomic_load(&h->heap_size);
    atomic_store(&h->heap_size, hs + 4096); /* past the file's end */
    open_fails(name, CONC_ECORRUPT, "its file holds");
    atomic_store(&h->heap_size, (uint64_t)1 << 41); /* past the capacity */
    open_fails(name, CONC_ECORRUPT, "heap size");
    atomic_store(&h->heap_size, hs + 1); /* not a whole page */
    open_fails(name, CONC_ECORRUPT, "heap size");
    atomic_store(&h->heap_size, hs);
    uint32_t tab = atomic_load(&h->tab[0]);
    atomic_store(&h->tab[0], 3); /* inside the header */
    open_fails(name, CONC_ECORRUPT, "index table");
    atomic_store(&h->tab[0], tab | 1); /* a 256-byte table, misaligned */
    atomic_store(&h->bits[0], 6);
    open_fails(name, CONC_ECORRUPT, "index table");
    atomic_store(&h->bits[0], 4);
    atomic_store(&h->tab[0], 0xfffffff0u); /* far past the heap */
    open_fails(name, CONC_ECORRUPT, "index table");
    atomic_store(&h->tab[0], tab);
    atomic_store(&h->bits[0], 31); /* more buckets than allowed */
    open_fails(name, CONC_ECORRUPT, "index table");
    atomic_store(&h->bits[0], 4);
    atomic_store(&h->ix, (uint64_t)5 << 32); /* a cursor, no migration */
    open_fails(name, CONC_ECORRUPT, "cursor");
    atomic_store(&h->ix, CONC__IX_ACTIVE | (uint64_t)99 << 32); /* cursor past */
    open_fails(name, CONC_ECORRUPT, "migration");
    atomic_store(&h->ix, 0);
    /* Mended: it opens and works again. */
    CHECK_OK(conc_dict_open(&d, name));
    check_value(d, S("k"), S("v"));
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
    conc_shm_free(m);
    conc_dict_free(real);
    CHECK(!th_shm_exists(name));
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = atol(line + 6);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return kb;
}

TEST(dict_default_capacity_costs_memory_only_when_used)
{
    long before = rss_kb();
    conc_dict *d[4] = { 0 };
    for (int i = 0; i < 4; i++) {
        CHECK_OK(conc_dict_new(&d[i], NULL)); /* 64 MiB each */
        for (int j = 0; j < 100; j++) {
            char k[16];
            int kl = snprintf(k, sizeof k, "k%d", j);
            CHECK_OK(conc_dict_set(d[i], k, (size_t)kl, S("value")));
        }
    }
    long after = rss_kb();
    /* 256 MiB of capacity, 400 small entries: well under 8 MiB used. */
    CHECK(after - before < 8 * 1024);
    /* A tiny capacity is raised to the minimum and works. */
    conc_dict *t = NULL;
    CHECK_OK(conc_dict_new(&t, &(conc_dict_opts){ .capacity_bytes = 1 }));
    CHECK_OK(conc_dict_set(t, S("k"), S("v")));
    check_value(t, S("k"), S("v"));
    conc_dict_free(t);
    for (int i = 0; i < 4; i++) {
        conc_dict_free(d[i]);
    }
}

/* Runs call() with the n-th seam call failing, n = 1, 2, ... until it
 * succeeds; every failure must be one of the allowed codes. */
#define FAULT_LOOP(call, ok_stmt, fail_check)                                \
    do {                                                                     \
        int n_;                                                              \
        for (n_ = 1;; n_++) {                                                \
            conc__fault_arm(n_);                                             \
            int err_ = (call);                                               \
            bool fired_ = conc__fault_fired();                               \
            conc__fault_arm(0);                                              \
            if (!fired_) {                                                   \
                CHECK_OK(err_);                                              \
                ok_stmt;                                                     \
                break;                                                       \
            }                                                                \
            CHECK(err_ == CONC_ENOMEM || err_ == CONC_ESYS);                 \
            fail_check;                                                      \
            CHECK(n_ < 100);                                                 \
        }                                                                    \
    } while (0)

TEST(dict_fault_loops)
{
    conc_dict *d = NULL;
    /* A capacity given: a failure to reserve it is an error (the default
     * capacity would fall back to less, absorbing the fault). */
    FAULT_LOOP(conc_dict_new(&d, &(conc_dict_opts){ .capacity_bytes = 1 << 20 }),
               (void)0, CHECK(d == NULL));
    CHECK_OK(conc_dict_set(d, S("k"), S("value")));
    CHECK_OK(conc_dict_set(d, S("k2"), S("value2")));
    conc_msg m = { 0 };
    FAULT_LOOP(conc_dict_get(d, S("k"), &m), conc_msg_free(&m),
               CHECK(m.data == NULL));
    conc_msg *keys = NULL;
    size_t n = 0;
    FAULT_LOOP(conc_dict_keys(d, &keys, &n), conc_dict_keys_free(keys),
               CHECK(keys == NULL && n == 0));
    CHECK_EQ(n, 2);
    /* An update whose fn cannot allocate returns that, storing nothing. */
    FAULT_LOOP(conc_dict_update(d, S("u"), incr_fn, NULL), (void)0,
               CHECK(!conc_dict_contains(d, S("u"))));
    CHECK_EQ(read_u64(d, S("u")), 1);
    /* A set that must grow the file: the growth fails whole, nothing
     * changed, until it succeeds. */
    conc__dict_stats st0, st1;
    CHECK_OK(conc__dict_stats_get(d, &st0));
    char *big = calloc(1, 200 << 10);
    FAULT_LOOP(conc_dict_set(d, S("big"), big, 200 << 10), (void)0,
               CHECK(!conc_dict_contains(d, S("big"))));
    free(big);
    CHECK_OK(conc__dict_stats_get(d, &st1));
    CHECK(st1.heap_bytes > st0.heap_bytes);
    CHECK_EQ(conc_dict_len(d), 4);
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);

    char name[128];
    snprintf(name, sizeof name, "/conc_test_dictfault_%d", (int)getpid());
    d = NULL;
    FAULT_LOOP(conc_dict_new(&d, &(conc_dict_opts){ .name = name,
                                                     .capacity_bytes = 1 << 20 }),
               (void)0, CHECK(d == NULL && !th_shm_exists(name)));
    conc_dict *o = NULL;
    FAULT_LOOP(conc_dict_open(&o, name), conc_dict_free(o), CHECK(o == NULL));
    conc_dict_free(d);
    CHECK(!th_shm_exists(name));
}

static conc_dict *hammer_dict;
static _Atomic int hammer_stop;

static void *hammer_thread(void *arg)
{
    (void)arg;
    long n = 0;
    while (!atomic_load(&hammer_stop)) {
        if (conc_dict_update(hammer_dict, S("threads"), incr_fn, NULL) != 0) {
            return (void *)-1;
        }
        n++;
    }
    return (void *)n;
}

static int forked_updates(void *arg)
{
    (void)arg;
    /* The child's thread has a new identity: were the parent thread's
     * cached, this would find "its own" lock held and fail. */
    for (int i = 0; i < 2000; i++) {
        if (conc_dict_update(hammer_dict, S("children"), incr_fn, NULL) != 0) {
            return 1;
        }
    }
    return 0;
}

TEST(dict_fork_while_threads_hammer_it)
{
    CHECK_OK(conc_dict_new(&hammer_dict, NULL));
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(pthread_create(&th[i], NULL, hammer_thread, NULL), 0);
    }
    /* One update here first, so this thread's update buffer exists before
     * the first fork and the children inherit it: a child's first update
     * would otherwise allocate it, and under ASan the allocator's lock may
     * be held by a hammer thread at the fork (glibc's malloc is fork-safe,
     * ASan's is not), so that child would hang in malloc holding the dict. */
    CHECK_OK(conc_dict_update(hammer_dict, S("warm"), incr_fn, NULL));
    pid_t kids[6];
    for (int i = 0; i < 6; i++) {
        kids[i] = th_fork(forked_updates, NULL);
        for (int j = 0; j < 500; j++) {
            CHECK_OK(conc_dict_update(hammer_dict, S("main"), incr_fn, NULL));
        }
    }
    for (int i = 0; i < 6; i++) {
        int st = th_wait(kids[i], 60);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    atomic_store(&hammer_stop, 1);
    long total = 0;
    for (int i = 0; i < 2; i++) {
        void *r = NULL;
        pthread_join(th[i], &r);
        CHECK((long)r >= 0);
        total += (long)r;
    }
    CHECK_EQ(read_u64(hammer_dict, S("children")), 6 * 2000);
    CHECK_EQ(read_u64(hammer_dict, S("main")), 6 * 500);
    CHECK_EQ(read_u64(hammer_dict, S("threads")), (uint64_t)total);
    CHECK_OK(conc__dict_check(hammer_dict));
    conc_dict_free(hammer_dict);
}

/* ---- shared memory that lies --------------------------------------------
 * Each test writes into a live dict's segment what a buggy or hostile
 * peer could, then checks that every call either works or fails with
 * CONC_ECORRUPT and a detail, at once: no crash, no read outside the
 * segment, no endless walk under the lock. */

static conc__dict_hdr *hdr_of(conc_dict *d)
{
    return (conc__dict_hdr *)(void *)d->base;
}

static conc__dict_blk *entry_of(conc_dict *d, const char *key)
{
    uint32_t ref = conc__dict_ref_of(d, key, strlen(key));
    CHECK(ref != 0);
    return (conc__dict_blk *)(void *)(d->base + ((size_t)ref << CONC__DICT_UNIT_SHIFT));
}

/* err is CONC_ECORRUPT and the detail names the damage with want. */
#define CHECK_CORRUPT(call, want)                                            \
    do {                                                                     \
        CHECK_ERR(call, CONC_ECORRUPT);                                      \
        if (strstr(conc_errdetail(), want) == NULL ||                        \
            strstr(conc_errdetail(), "damaged") == NULL) {                   \
            th_fail(__FILE__, __LINE__, "detail '%s' lacks '%s'",            \
                    conc_errdetail(), want);                                 \
        }                                                                    \
    } while (0)

/* A dict of 40 keys "k0".."k39" (values "v0".."v39") whose index is not
 * migrating. */
static conc_dict *forty(void)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .capacity_bytes = 1 << 20 }));
    char k[16], v[16];
    for (int i = 0; i < 40; i++) {
        int kl = snprintf(k, sizeof k, "k%d", i);
        int vl = snprintf(v, sizeof v, "v%d", i);
        CHECK_OK(conc_dict_set(d, k, (size_t)kl, v, (size_t)vl));
    }
    conc__dict_stats st;
    for (int i = 0;; i++) {
        CHECK_OK(conc__dict_stats_get(d, &st));
        if (!st.migrating) {
            break;
        }
        CHECK(i < 100);
        CHECK_OK(conc_dict_set(d, S("k0"), S("v0")));
    }
    return d;
}

/* Every read and write of key fails with CONC_ECORRUPT naming want. */
static void all_calls_corrupt(conc_dict *d, const char *key, const char *want)
{
    conc_msg m;
    char buf[64];
    size_t len = 0;
    int64_t r = 0;
    size_t n = 9;
    conc_msg *keys = (conc_msg *)1;
    conc_dict_item *items = (conc_dict_item *)1;
    double t0 = th_now();
    CHECK(!conc_dict_contains(d, key, strlen(key)));
    CHECK(strstr(conc_errdetail(), want) != NULL);
    CHECK_CORRUPT(conc_dict_get(d, key, strlen(key), &m), want);
    CHECK(m.data == NULL && m.len == 0);
    CHECK_CORRUPT(conc_dict_get_into(d, key, strlen(key), buf, sizeof buf,
                                     &len), want);
    CHECK_CORRUPT(conc_dict_set(d, key, strlen(key), S("new")), want);
    CHECK_CORRUPT(conc_dict_del(d, key, strlen(key)), want);
    CHECK_CORRUPT(conc_dict_update(d, key, strlen(key), incr_fn, NULL), want);
    CHECK_CORRUPT(conc_dict_add(d, key, strlen(key), 1, &r), want);
    CHECK_CORRUPT(conc_dict_keys(d, &keys, &n), want);
    CHECK(keys == NULL && n == 0);
    CHECK_CORRUPT(conc_dict_items(d, &items, &n), want);
    CHECK(items == NULL && n == 0);
    CHECK(conc__dict_check(d) != 0);
    CHECK(th_now() - t0 < 5.0);
}

/* Undoes the damage and checks the dict works whole again. */
static void all_keys_back(conc_dict *d)
{
    CHECK_OK(conc__dict_check(d));
    char k[16], v[16];
    for (int i = 0; i < 40; i++) {
        int kl = snprintf(k, sizeof k, "k%d", i);
        int vl = snprintf(v, sizeof v, "v%d", i);
        check_value(d, k, (size_t)kl, v, (size_t)vl);
    }
    CHECK_EQ(conc_dict_len(d), 40);
}

TEST_T(dict_entry_pointing_to_itself_is_ecorrupt_not_a_hang, 20)
{
    conc_dict *d = forty();
    uint32_t ref = conc__dict_ref_of(d, S("k7"));
    conc__dict_blk *e = entry_of(d, "k7");
    uint32_t next = atomic_load(&e->next);
    atomic_store(&e->next, ref);
    /* A key that is not there but falls in k7's bucket: its lookup walks
     * past k7, into the loop. */
    char miss[16];
    conc_msg m;
    int i = 0;
    for (;; i++) {
        CHECK(i < 100000);
        snprintf(miss, sizeof miss, "m%d", i);
        int err = conc_dict_get(d, miss, strlen(miss), &m);
        if (err == CONC_ECORRUPT) {
            break;
        }
        CHECK_ERR(err, CONC_EEMPTY);
    }
    all_calls_corrupt(d, miss, "loops back");
    atomic_store(&e->next, next);
    all_keys_back(d);
    conc_dict_free(d);
}

TEST_T(dict_two_entries_in_a_cycle_are_ecorrupt, 20)
{
    conc_dict *d = forty();
    conc__dict_hdr *h = hdr_of(d);
    /* A chain of two or more: its second entry is made to point back at
     * the first. */
    unsigned cur = (atomic_load(&h->ix) & CONC__IX_CUR) != 0;
    uint32_t tab = atomic_load(&h->tab[cur]), bits = atomic_load(&h->bits[cur]);
    _Atomic uint32_t *heads =
        (_Atomic uint32_t *)(void *)(d->base + ((size_t)tab << CONC__DICT_UNIT_SHIFT));
    conc__dict_blk *second = NULL;
    uint32_t first = 0, saved = 0;
    for (uint32_t b = 0; b < (1u << bits) && second == NULL; b++) {
        first = atomic_load(&heads[b]);
        if (first == 0) {
            continue;
        }
        conc__dict_blk *e = (conc__dict_blk *)(void *)(d->base + ((size_t)first << CONC__DICT_UNIT_SHIFT));
        uint32_t s = atomic_load(&e->next);
        if (s != 0) {
            second = (conc__dict_blk *)(void *)(d->base + ((size_t)s << CONC__DICT_UNIT_SHIFT));
        }
    }
    CHECK(second != NULL); /* 40 keys in 64 buckets: some chain has two */
    saved = atomic_load(&second->next);
    atomic_store(&second->next, first);
    size_t n = 9;
    conc_msg *keys = NULL;
    double t0 = th_now();
    CHECK_CORRUPT(conc_dict_keys(d, &keys, &n), "loops back");
    CHECK(conc__dict_check(d) != 0);
    CHECK(th_now() - t0 < 5.0);
    atomic_store(&second->next, saved);
    all_keys_back(d);
    conc_dict_free(d);
}

TEST(dict_entry_lengths_past_their_block_are_ecorrupt)
{
    conc_dict *d = forty();
    conc__dict_blk *e = entry_of(d, "k3");
    uint64_t vlen = e->vlen;
    e->vlen = (uint64_t)2 << 30; /* 2 GiB in a 64-byte block */
    all_calls_corrupt(d, "k3", "links to");
    e->vlen = vlen;
    uint32_t klen = e->klen;
    e->klen = 1u << 30;
    all_calls_corrupt(d, "k3", "links to");
    e->klen = 41; /* 24 + 48 > 64: the key alone overflows the block */
    all_calls_corrupt(d, "k3", "links to");
    e->klen = klen;
    e->vlen = 40 - 2 + 1; /* 24 + 8 + 33 = 65: one byte too many */
    all_calls_corrupt(d, "k3", "links to");
    e->vlen = vlen;
    all_keys_back(d);
    conc_dict_free(d);
}

TEST(dict_bad_block_tags_and_orders_are_ecorrupt)
{
    conc_dict *d = forty();
    conc__dict_blk *e = entry_of(d, "k5");
    uint32_t tag = e->tag;
    e->tag = CONC__BLK_TAG(CONC__BLK_FREE, tag & 0xff); /* a free block in a chain */
    all_calls_corrupt(d, "k5", "links to");
    e->tag = CONC__BLK_TAG(CONC__BLK_USED, 40); /* an order past the largest block */
    all_calls_corrupt(d, "k5", "links to");
    e->tag = CONC__BLK_TAG(CONC__BLK_USED, 3); /* smaller than a unit */
    all_calls_corrupt(d, "k5", "links to");
    e->tag = CONC__BLK_TAG(CONC__BLK_USED, 19); /* a block reaching past the heap */
    all_calls_corrupt(d, "k5", "links to");
    e->tag = tag;
    all_keys_back(d);
    conc_dict_free(d);
}

TEST(dict_links_out_of_the_heap_or_into_a_block_are_ecorrupt)
{
    conc_dict *d = forty();
    conc__dict_hdr *h = hdr_of(d);
    conc__dict_blk *e = entry_of(d, "k9");
    uint32_t next = atomic_load(&e->next);
    uint32_t bad[] = {
        3,           /* inside the header */
        0xfffffff0u, /* far past the heap */
        (uint32_t)((CONC__DICT_HDR_SIZE + atomic_load(&h->heap_size)) >>
                   CONC__DICT_UNIT_SHIFT), /* just past the heap */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        atomic_store(&e->next, bad[i]);
        size_t n = 9;
        conc_msg *keys = NULL;
        CHECK_CORRUPT(conc_dict_keys(d, &keys, &n), "not an entry");
        CHECK(keys == NULL && n == 0);
    }
    /* Restored before the next set: "big" may hash into k9's chain. */
    atomic_store(&e->next, next);
    /* Into the middle of a block: a 1-unit offset inside a 128-byte
     * block of a long value. */
    char big[100];
    memset(big, 'b', sizeof big);
    CHECK_OK(conc_dict_set(d, S("big"), big, sizeof big));
    uint32_t bref = conc__dict_ref_of(d, S("big"));
    atomic_store(&e->next, bref + 1);
    size_t n = 9;
    conc_msg *keys = NULL;
    CHECK_CORRUPT(conc_dict_keys(d, &keys, &n), "not an entry");
    atomic_store(&e->next, next);
    CHECK_OK(conc_dict_del(d, S("big")));
    all_keys_back(d);
    conc_dict_free(d);
}

TEST(dict_index_and_heap_size_rewritten_under_an_open_handle)
{
    conc_dict *d = forty();
    conc__dict_hdr *h = hdr_of(d);
    unsigned cur = (atomic_load(&h->ix) & CONC__IX_CUR) != 0;
    uint32_t tab = atomic_load(&h->tab[cur]);
    atomic_store(&h->tab[cur], 0xffffff00u); /* the bucket array far away */
    all_calls_corrupt(d, "k1", "index table");
    atomic_store(&h->tab[cur], 2); /* inside the header */
    all_calls_corrupt(d, "k1", "index table");
    atomic_store(&h->tab[cur], tab);
    uint32_t bits = atomic_load(&h->bits[cur]);
    atomic_store(&h->bits[cur], 24); /* a table far bigger than the heap */
    all_calls_corrupt(d, "k1", "index table");
    atomic_store(&h->bits[cur], bits);
    /* heap_size past the file's end: touching it would be SIGBUS. */
    uint64_t hs = atomic_load(&h->heap_size);
    atomic_store(&h->heap_size, hs + (64 << 10));
    all_calls_corrupt(d, "k1", "its file holds");
    atomic_store(&h->heap_size, hs);
    /* A migration that cannot be: to a table of the same size. */
    atomic_store(&h->tab[!cur], tab);
    atomic_store(&h->bits[!cur], bits);
    atomic_store(&h->ix, (cur ? CONC__IX_CUR : 0) | CONC__IX_ACTIVE);
    all_calls_corrupt(d, "k1", "migration");
    atomic_store(&h->ix, cur ? CONC__IX_CUR : 0);
    all_keys_back(d);
    conc_dict_free(d);
}

TEST(dict_scribbled_free_list_fails_once_then_is_rebuilt)
{
    conc_dict *d = forty();
    conc__dict_hdr *h = hdr_of(d);
    conc__dict_stats st0, st1;
    CHECK_OK(conc__dict_stats_get(d, &st0));
    /* Every list now starts at an entry in use. */
    uint32_t used = conc__dict_ref_of(d, S("k2"));
    for (int k = 0; k <= (int)CONC__DICT_MAX_ORDER; k++) {
        atomic_store(&h->free_head[k], used);
    }
    char big[3000];
    memset(big, 'x', sizeof big);
    CHECK_CORRUPT(conc_dict_set(d, S("new"), big, sizeof big), "free list");
    /* The writer left the flag raised: the next call rebuilds the free
     * lists from the chains, and everything works again. */
    check_value(d, S("k2"), S("v2"));
    CHECK_OK(conc_dict_set(d, S("new"), big, sizeof big));
    CHECK_OK(conc__dict_stats_get(d, &st1));
    CHECK_EQ(st1.rebuilds, st0.rebuilds + 1);
    CHECK_OK(conc_dict_del(d, S("new")));
    all_keys_back(d);
    /* A free block whose links lie: its next points at itself. */
    char v[2000];
    memset(v, 'y', sizeof v);
    CHECK_OK(conc_dict_set(d, S("tmp"), v, sizeof v));
    uint32_t tref = conc__dict_ref_of(d, S("tmp"));
    CHECK_OK(conc_dict_del(d, S("tmp"))); /* its block is free now */
    conc__dict_blk *f = (conc__dict_blk *)(void *)(d->base + ((size_t)tref << CONC__DICT_UNIT_SHIFT));
    if ((f->tag >> 8) == CONC__BLK_FREE) {
        atomic_store(&f->next, tref);
        CHECK_CORRUPT(conc_dict_set(d, S("tmp"), v, sizeof v), "free");
        CHECK_OK(conc_dict_set(d, S("tmp"), v, sizeof v)); /* rebuilt */
        CHECK_OK(conc_dict_del(d, S("tmp")));
    }
    all_keys_back(d);
    conc_dict_free(d);
}

TEST_T(dict_repair_on_garbage_is_bounded_and_retried, 20)
{
    conc_dict *d = forty();
    conc__dict_hdr *h = hdr_of(d);
    uint32_t ref = conc__dict_ref_of(d, S("k4"));
    conc__dict_blk *e = entry_of(d, "k4");
    uint32_t next = atomic_load(&e->next);
    /* A writer died (the flag) and a chain loops: the repair's rebuild
     * must stop on the loop, and every call after it tries again. */
    atomic_store(&e->next, ref);
    atomic_store(&h->writing, 1);
    double t0 = th_now();
    for (int i = 0; i < 3; i++) {
        /* The rebuild meets the loop as a chain that loops or as a block
         * marked twice, whichever it sees first. */
        CHECK_CORRUPT(conc_dict_set(d, S("k1"), S("x")), "damaged");
        CHECK_EQ(conc_dict_len(d), 0);
    }
    CHECK(th_now() - t0 < 5.0);
    CHECK_EQ(atomic_load(&h->writing), 1);
    atomic_store(&e->next, next);
    /* A stale move journal and a count that lies are redone too. */
    atomic_store(&h->mig_entry, ref);
    h->count = UINT64_MAX;
    all_keys_back(d);
    CHECK_EQ(atomic_load(&h->writing), 0);
    CHECK_EQ(atomic_load(&h->mig_entry), 0);
    /* A count that lies without a repair: no call trusts it for a
     * resize past what the heap could hold, and all keys still work. */
    h->count = UINT64_MAX / 2;
    CHECK_OK(conc_dict_set(d, S("k40"), S("v40")));
    CHECK_OK(conc_dict_del(d, S("k40")));
    check_value(d, S("k39"), S("v39"));
    conc_dict_free(d);
}

/* ---- growth --------------------------------------------------------------- */

/* "key-" and 23 digits: 27 bytes, the user's word-count keys. */
static size_t key27(char *k, long i)
{
    return (size_t)snprintf(k, 32, "key-%023ld", i);
}

TEST_T(dict_grows_to_many_keys_and_its_index_shrinks_back, 120)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, NULL)); /* the default: a 64 GiB limit */
    conc__dict_stats st0, st;
    CHECK_OK(conc__dict_stats_get(d, &st0));
    CHECK_EQ(st0.heap_bytes, (64 << 10) - 4096); /* starts small */
    CHECK_EQ(st0.buckets, 16);
    enum { N = 200000 };
    char k[32];
    for (long i = 0; i < N; i++) {
        int64_t r = 0;
        CHECK_OK(conc_dict_add(d, k, key27(k, i), i, &r));
        CHECK_EQ(r, i);
    }
    CHECK_EQ(conc_dict_len(d), N);
    CHECK_OK(conc__dict_stats_get(d, &st));
    CHECK(st.grows > 10);
    CHECK(st.resizes >= 13); /* 16 -> 262144 buckets */
    CHECK(st.buckets >= N / 2);
    /* The cost per entry: a 64-byte block (24 + 32 + 8), plus the index
     * and the growth's slack. */
    double per = (double)st.heap_bytes / N;
    if (per > 64 * 1.15 + 16) {
        th_fail(__FILE__, __LINE__, "%.1f bytes per entry", per);
    }
    for (long i = 0; i < N; i += 7) {
        int64_t v = -1;
        size_t len = 0;
        CHECK_OK(conc_dict_get_into(d, k, key27(k, i), &v, sizeof v, &len));
        CHECK_EQ(len, 8);
        CHECK_EQ(v, i);
    }
    CHECK_OK(conc__dict_check(d));
    for (long i = 0; i < N; i++) {
        CHECK_OK(conc_dict_del(d, k, key27(k, i)));
    }
    for (int i = 0;; i++) {
        CHECK_OK(conc__dict_stats_get(d, &st));
        if (!st.migrating && st.buckets == 16) {
            break;
        }
        CHECK(i < 1000);
        CHECK_OK(conc_dict_set(d, S("x"), S("y")));
        CHECK_OK(conc_dict_del(d, S("x")));
    }
    /* Everything but the index is free again: the heap coalesced. */
    CHECK_EQ(st.free_bytes + st.index_bytes, st.heap_bytes);
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
}

static conc_dict *grow_dict;

/* A process that was using the dict before it grew: counts on its own
 * key and reads the parent's keys until the parent says stop. */
static int grow_user(void *arg)
{
    int id = *(int *)arg;
    char mine[16], k[32];
    int kl = snprintf(mine, sizeof mine, "child-%d", id);
    long n = 0;
    for (;;) {
        int64_t r = 0;
        if (conc_dict_add(grow_dict, mine, (size_t)kl, 1, &r) != 0 ||
            r != ++n) {
            return 2;
        }
        int64_t last = -1;
        size_t len = 0;
        int err = conc_dict_get_into(grow_dict, S("last"), &last,
                                     sizeof last, &len);
        if (err == 0 && last >= 0) {
            int64_t v = -1;
            if (conc_dict_get_into(grow_dict, k, key27(k, last), &v,
                                   sizeof v, &len) != 0 || v != last) {
                return 3;
            }
        } else if (err != CONC_EEMPTY) {
            return 4;
        }
        if (conc_dict_contains(grow_dict, S("stop"))) {
            return 0;
        }
    }
}

TEST_T(dict_grows_while_other_processes_use_it, 120)
{
    char name[128];
    snprintf(name, sizeof name, "/conc_test_dictgrow_%d", (int)getpid());
    CHECK_OK(conc_dict_new(&grow_dict, &(conc_dict_opts){ .name = name }));
    conc__dict_stats st0, st;
    CHECK_OK(conc__dict_stats_get(grow_dict, &st0));
    /* Forked children and an unrelated process, all mapped before the
     * dict grows; the peer waits for a key written at the very end. */
    int ids[2] = { 0, 1 };
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = th_fork(grow_user, &ids[i]);
    }
    char *argv[] = { (char *)th_prog("prog_dict_peer"), name, "wait-key",
                     "the-end", "get", "the-end", "len", NULL };
    fflush(stdout);
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    pid_t peer = fork();
    if (peer == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    enum { N = 60000 };
    char k[32];
    for (long i = 0; i < N; i++) {
        int64_t v = i;
        CHECK_OK(conc_dict_set(grow_dict, k, key27(k, i), &v, sizeof v));
        CHECK_OK(conc_dict_set(grow_dict, S("last"), &v, sizeof v));
    }
    CHECK_OK(conc_dict_set(grow_dict, S("stop"), S("1")));
    CHECK_OK(conc_dict_set(grow_dict, S("the-end"), S("reached")));
    for (int i = 0; i < 2; i++) {
        int status = th_wait(kids[i], 60);
        CHECK(WIFEXITED(status));
        CHECK_EQ(WEXITSTATUS(status), 0);
    }
    char out[256] = "";
    size_t got = 0;
    ssize_t r;
    while (got < sizeof out - 1 &&
           (r = read(fds[0], out + got, sizeof out - 1 - got)) > 0) {
        got += (size_t)r;
    }
    close(fds[0]);
    int status = th_wait(peer, 60);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(strstr(out, "the-end=reached\n") != NULL);
    char want[64];
    snprintf(want, sizeof want, "len %d\n", N + 5);
    CHECK(strstr(out, want) != NULL);
    CHECK_OK(conc__dict_stats_get(grow_dict, &st));
    CHECK(st.heap_bytes > 40 * st0.heap_bytes);
    CHECK(st.buckets >= 32768);
    CHECK_OK(conc__dict_check(grow_dict));
    conc_dict_free(grow_dict);
    CHECK(!th_shm_exists(name));
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#include <sys/resource.h>

static int under_ulimit_v(void *arg)
{
    (void)arg;
    struct rlimit rl = { (rlim_t)8 << 30, (rlim_t)8 << 30 };
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        return 2;
    }
    conc_dict *d = NULL;
    /* The default capacity does not fit in 8 GiB of address space: the
     * dict settles for less, and as a call that succeeds it leaves the
     * detail of the last failure as it was (the failed tries on the way
     * once stayed there). */
    conc_dict_free(NULL);
    (void)conc_lock_release(NULL); /* a detail to keep */
    char before[128];
    snprintf(before, sizeof before, "%s", conc_errdetail());
    if (conc_dict_new(&d, NULL) != 0 ||
        strcmp(conc_errdetail(), before) != 0 ||
        conc_dict_set(d, S("k"), S("v")) != 0) {
        return 3;
    }
    conc__dict_stats st;
    if (conc__dict_stats_get(d, &st) != 0 || st.limit >= ((size_t)8 << 30) ||
        st.limit < ((size_t)1 << 30)) {
        return 4;
    }
    conc_dict_free(d);
    /* A capacity asked for is not cut: CONC_ENOMEM, saying why. */
    int err = conc_dict_new(&d, &(conc_dict_opts){ .capacity_bytes =
                                                        (size_t)32 << 30 });
    if (err != CONC_ENOMEM || d != NULL ||
        strstr(conc_errdetail(), "address space") == NULL) {
        return 5;
    }
    /* Under 1 GiB of address space the default does not go below its
     * floor of 1 GiB (it once halved once more, to 512 MiB, as the limit
     * it compared counted the header page): CONC_ENOMEM. */
    rl.rlim_cur = rl.rlim_max = (rlim_t)900 << 20;
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        return 2;
    }
    err = conc_dict_new(&d, NULL);
    if (err != CONC_ENOMEM || d != NULL) {
        return 6;
    }
    return 0;
}

TEST(dict_default_capacity_settles_for_the_address_space_there_is)
{
    int status = th_wait(th_fork(under_ulimit_v, NULL), 30);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}
#endif

/* ---- add and items ----------------------------------------------------- */

TEST(dict_add_is_an_atomic_integer_add)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, NULL));
    int64_t r = 99;
    CHECK_OK(conc_dict_add(d, S("n"), 5, &r)); /* absent counts as 0 */
    CHECK_EQ(r, 5);
    CHECK_OK(conc_dict_add(d, S("n"), -12, &r));
    CHECK_EQ(r, -7);
    CHECK_OK(conc_dict_add(d, S("n"), 0, NULL));
    /* The encoding: 8 bytes, little-endian two's complement. */
    unsigned char b[8];
    size_t len = 0;
    CHECK_OK(conc_dict_get_into(d, S("n"), b, sizeof b, &len));
    CHECK_EQ(len, 8);
    CHECK(b[0] == 0xf9 && b[1] == 0xff && b[7] == 0xff);
    unsigned char le[8] = { 0x10, 0x27, 0, 0, 0, 0, 0, 0 }; /* 10000 */
    CHECK_OK(conc_dict_set(d, S("m"), le, sizeof le));
    CHECK_OK(conc_dict_add(d, S("m"), 1, &r));
    CHECK_EQ(r, 10001);
    /* Another length: CONC_EINVAL, nothing changed. */
    CHECK_OK(conc_dict_set(d, S("s"), S("text")));
    r = 42;
    CHECK_ERR(conc_dict_add(d, S("s"), 1, &r), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "not an 8-byte integer") != NULL);
    CHECK_EQ(r, 42);
    check_value(d, S("s"), S("text"));
    /* Overflow: CONC_EINVAL, nothing changed. */
    CHECK_OK(conc_dict_add(d, S("big"), INT64_MAX, &r));
    CHECK_ERR(conc_dict_add(d, S("big"), 1, &r), CONC_EINVAL);
    CHECK(strstr(conc_errdetail(), "overflows") != NULL);
    CHECK_OK(conc_dict_add(d, S("big"), 0, &r));
    CHECK_EQ(r, INT64_MAX);
    CHECK_OK(conc_dict_add(d, S("big"), INT64_MIN, &r));
    CHECK_EQ(r, -1);
    CHECK_ERR(conc_dict_add(NULL, S("n"), 1, &r), CONC_EINVAL);
    CHECK_ERR(conc_dict_add(d, NULL, 2, 1, &r), CONC_EINVAL);
    CHECK_OK(conc__dict_check(d));
    conc_dict_free(d);
}

static conc_dict *add_dict;

static int adder(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5000; i++) {
        if (conc_dict_add(add_dict, S("total"), 3, NULL) != 0 ||
            conc_dict_add(add_dict, S("down"), -1, NULL) != 0) {
            return 1;
        }
    }
    return 0;
}

TEST(dict_add_from_processes_is_exact)
{
    CHECK_OK(conc_dict_new(&add_dict, NULL));
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        kids[i] = th_fork(adder, NULL);
    }
    for (int i = 0; i < 4; i++) {
        int st = th_wait(kids[i], 60);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    int64_t r = 0;
    CHECK_OK(conc_dict_add(add_dict, S("total"), 0, &r));
    CHECK_EQ(r, 4 * 5000 * 3);
    CHECK_OK(conc_dict_add(add_dict, S("down"), 0, &r));
    CHECK_EQ(r, -4 * 5000);
    conc_dict_free(add_dict);
}

TEST(dict_items_is_one_snapshot_of_keys_and_values)
{
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, NULL));
    conc_dict_item *items = (conc_dict_item *)1;
    size_t n = 9;
    CHECK_OK(conc_dict_items(d, &items, &n));
    CHECK(items == NULL && n == 0);
    conc_dict_array_free(items);
    enum { N = 300 };
    char k[32], v[600];
    for (int i = 0; i < N; i++) {
        int kl = snprintf(k, sizeof k, "item-%d", i);
        memset(v, 'a' + i % 26, (size_t)i * 2);
        CHECK_OK(conc_dict_set(d, k, (size_t)kl, v, (size_t)i * 2));
    }
    CHECK_OK(conc_dict_set(d, NULL, 0, S("the empty key")));
    CHECK_OK(conc_dict_items(d, &items, &n));
    CHECK_EQ(n, N + 1);
    char *seen = calloc(N + 1, 1);
    for (size_t i = 0; i < n; i++) {
        const conc_dict_item *it = &items[i];
        if (it->klen == 0) {
            CHECK(it->key == NULL);
            CHECK_EQ(it->vlen, 13);
            CHECK(memcmp(it->val, "the empty key", 13) == 0);
            CHECK_EQ(seen[N], 0);
            seen[N] = 1;
            continue;
        }
        char tmp[32];
        CHECK(it->klen < sizeof tmp);
        memcpy(tmp, it->key, it->klen);
        tmp[it->klen] = '\0';
        int id = atoi(tmp + 5);
        CHECK(id >= 0 && id < N && seen[id] == 0);
        seen[id] = 1;
        CHECK_EQ(it->vlen, (size_t)id * 2);
        if (id == 0) {
            CHECK(it->val == NULL);
        } else {
            CHECK(((uintptr_t)it->val & 7) == 0);
            for (size_t j = 0; j < it->vlen; j++) {
                CHECK(((const char *)it->val)[j] == 'a' + id % 26);
            }
        }
    }
    free(seen);
    conc_dict_array_free(items);
    /* keys' array is freed by the same call. */
    conc_msg *keys = NULL;
    CHECK_OK(conc_dict_keys(d, &keys, &n));
    CHECK_EQ(n, N + 1);
    conc_dict_array_free(keys);
    CHECK_ERR(conc_dict_items(NULL, &items, &n), CONC_EINVAL);
    CHECK_ERR(conc_dict_items(d, NULL, &n), CONC_EINVAL);
    CHECK_ERR(conc_dict_items(d, &items, NULL), CONC_EINVAL);
    conc_dict_free(d);
}

/* ---- error details ------------------------------------------------------- */

#define CHECK_DETAIL(call, code, want)                                       \
    do {                                                                     \
        CHECK_ERR(call, code);                                               \
        if (strstr(conc_errdetail(), want) == NULL) {                        \
            th_fail(__FILE__, __LINE__, "detail '%s' lacks '%s'",            \
                    conc_errdetail(), want);                                 \
        }                                                                    \
    } while (0)

static int reenter_fn(const void *old, size_t oldlen, bool found,
                      conc_buf *out, void *arg)
{
    (void)old;
    (void)oldlen;
    (void)found;
    (void)out;
    conc_dict *d = arg;
    return conc_dict_set(d, S("a"), S("b"));
}

/* Growth pauses a call for about one growth step at most, index doublings
 * included: with steps of 4 KiB, a fill to 10,000 keys doubles the index
 * up to 16,384 buckets (a 64 KiB table), yet no call has the system back
 * more than a step and a page at once (the heap grows toward the table's
 * aligned place a step per call, the table gets only its first page, and
 * the migration backs the rest a stretch at a time). */
TEST(dict_index_doubling_backs_about_one_step_per_call)
{
    conc__dict_grow_step_set(4096);
    conc_dict *d = NULL;
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .capacity_bytes = 4 << 20 }));
    char k[32];
    for (uint64_t i = 0; i < 10000; i++) {
        size_t kl = (size_t)snprintf(k, sizeof k, "key-%llu",
                                     (unsigned long long)i);
        CHECK_OK(conc_dict_set(d, k, kl, &i, sizeof i));
    }
    conc__dict_stats st;
    CHECK_OK(conc__dict_stats_get(d, &st));
    CHECK(st.buckets >= 8192);
    CHECK(st.resizes >= 9);
    if (st.most_backed > 2 * 4096) {
        th_fail(__FILE__, __LINE__, "one call backed %zu bytes at once",
                st.most_backed);
    }
    CHECK_OK(conc__dict_check(d));
    for (uint64_t i = 0; i < 10000; i++) {
        size_t kl = (size_t)snprintf(k, sizeof k, "key-%llu",
                                     (unsigned long long)i);
        uint64_t v = 0;
        size_t len = 0;
        CHECK_OK(conc_dict_get_into(d, k, kl, &v, sizeof v, &len));
        CHECK(len == sizeof v && v == i);
    }
    conc_dict_free(d);
    conc__dict_grow_step_set(0);
}

TEST(dict_errors_say_what_is_wrong)
{
    conc_dict *d = NULL;
    conc_msg m;
    size_t len = 0;
    char buf[4];
    CHECK_DETAIL(conc_dict_new(NULL, NULL), CONC_EINVAL,
                 "conc_dict_new: out is NULL");
    CHECK_DETAIL(conc_dict_new(&d, &(conc_dict_opts){
                                       .capacity_bytes = (size_t)1 << 39 }),
                 CONC_EINVAL, "capacity_bytes 549755813888 is over");
    CHECK_DETAIL(conc_dict_new(&d, &(conc_dict_opts){ .name = "a/b" }),
                 CONC_EINVAL, "conc_dict_new: name 'a/b'");
    CHECK_DETAIL(conc_dict_set(NULL, S("k"), S("v")), CONC_EINVAL,
                 "conc_dict_set: d is NULL");
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .capacity_bytes = 64 << 10 }));
    CHECK_DETAIL(conc_dict_set(d, NULL, 3, S("v")), CONC_EINVAL,
                 "key is NULL with klen 3");
    CHECK_DETAIL(conc_dict_set(d, S("k"), NULL, 2), CONC_EINVAL,
                 "val is NULL with vlen 2");
    CHECK_DETAIL(conc_dict_get(d, S("k"), &m), CONC_EEMPTY,
                 "conc_dict_get: no such key");
    CHECK_DETAIL(conc_dict_del(d, S("k")), CONC_EEMPTY,
                 "conc_dict_del: no such key");
    CHECK_OK(conc_dict_set(d, S("k"), S("0123456789")));
    CHECK_DETAIL(conc_dict_get_into(d, S("k"), buf, sizeof buf, &len),
                 CONC_ETOOBIG, "the value is 10 bytes, the buffer 4");
    char *huge = calloc(1, 100 << 10);
    CHECK_DETAIL(conc_dict_set(d, S("huge"), huge, 100 << 10), CONC_ETOOBIG,
                 "more than the largest block");
    /* 40 KiB takes a 64 KiB block: the whole heap of this capacity, the
     * index's place included, so no dict of it could ever hold one. */
    CHECK_DETAIL(conc_dict_set(d, S("most"), huge, 40 << 10), CONC_ETOOBIG,
                 "more than the largest block");
    /* 20 KiB takes a 32 KiB block: one fits beside the index, a second
     * does not until the first goes. */
    CHECK_OK(conc_dict_set(d, S("one"), huge, 20 << 10));
    CHECK_DETAIL(conc_dict_set(d, S("two"), huge, 20 << 10), CONC_ENOMEM,
                 "the dict is full");
    CHECK_OK(conc_dict_del(d, S("one")));
    CHECK_OK(conc_dict_set(d, S("two"), huge, 20 << 10));
    conc_dict_free(d);
    /* Not a power of two: a 64 KiB block leaves 32 KiB of a 96 KiB heap,
     * room for the index, so 40 KiB may fit some day (full now), and 80
     * KiB never. */
    CHECK_OK(conc_dict_new(&d,
                           &(conc_dict_opts){ .capacity_bytes = 96 << 10 }));
    CHECK_DETAIL(conc_dict_set(d, S("most"), huge, 40 << 10), CONC_ENOMEM,
                 "the dict is full");
    char *huger = calloc(1, 80 << 10);
    CHECK_DETAIL(conc_dict_set(d, S("more"), huger, 80 << 10), CONC_ETOOBIG,
                 "more than the largest block");
    free(huger);
    free(huge);
    CHECK_DETAIL(conc_dict_update(d, S("k"), reenter_fn, d), CONC_ESTATE,
                 "conc_dict_set: called from inside an update fn");
    CHECK_DETAIL(conc_dict_update(d, S("k"), NULL, NULL), CONC_EINVAL,
                 "fn is NULL");
    conc_dict_free(d);
    char name[128];
    snprintf(name, sizeof name, "/conc_test_dictdetail_%d", (int)getpid());
    CHECK_DETAIL(conc_dict_open(&d, name), CONC_ESYS,
                 "conc_dict_open: shm_open");
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .name = name,
                                                   .capacity_bytes = 1 << 20 }));
    conc_dict *dup = NULL;
    CHECK_DETAIL(conc_dict_new(&dup, &(conc_dict_opts){ .name = name }),
                 CONC_ESYS, "File exists");
    CHECK(strstr(conc_errdetail(), "conc_dict_new") != NULL);
    conc_dict_free(d);
}
