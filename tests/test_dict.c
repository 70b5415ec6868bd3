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
#include <pthread.h>
#include <sys/wait.h>

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

TEST(dict_open_checks_magic_version_and_layout)
{
    char name[128];
    snprintf(name, sizeof name, "/conc_test_dictbad_%d", (int)getpid());
    conc_shm *m = NULL;
    conc_dict *d = NULL;
    /* Not a dict at all, or another version: CONC_EINVAL. */
    CHECK_OK(conc_shm_create(&m, name, 1 << 20));
    open_fails(name, CONC_EINVAL, "not a conc_dict");
    conc_shm_free(m);
    CHECK_OK(conc_shm_create(&m, name, 100));
    open_fails(name, CONC_EINVAL, "too few");
    conc_shm_free(m);
    /* A real dict, then its header damaged in turn. */
    conc_dict *real = NULL;
    CHECK_OK(conc_dict_new(&real, &(conc_dict_opts){ .name = name,
                                                      .capacity_bytes = 1 << 20 }));
    CHECK_OK(conc_dict_set(real, S("k"), S("v")));
    CHECK_OK(conc_shm_open(&m, name));
    dict_hdr *h = conc_shm_ptr(m);
    CHECK_OK(conc_dict_open(&d, name));
    conc_dict_free(d);
    h->version ^= 0xff;
    open_fails(name, CONC_EINVAL, "layout version");
    h->version ^= 0xff;
    uint64_t magic = atomic_load(&h->magic);
    atomic_store(&h->magic, magic ^ 1);
    open_fails(name, CONC_EINVAL, "not a conc_dict");
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
    atomic_store(&h->ix, IX_ACTIVE | (uint64_t)99 << 32); /* cursor past */
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
