/* test_redis_fault.c - every failure path of the Redis backend's calls,
 * driven through the platform layer's fault seam (src/os.h): the n-th
 * allocation or OS call (socket, connect, poll, send, recv, the lease
 * thread's creation) fails, for n = 1, 2, ... until the call succeeds.
 * Each failure must return an error code with a detail, leak no file
 * descriptor, and lose nothing: a get that failed half way - the server
 * may have moved the message into the consumer's processing list - must
 * not cost the message, which the next get returns.
 */
#include "harness.h"
#include "os.h"
#include "redis_server.h"

#include <dirent.h>

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

static bool expected_failure(int err)
{
    return err == CONC_ENOMEM || err == CONC_ENET || err == CONC_ESYS ||
           err == CONC_ETIMEDOUT || err == CONC_ECORRUPT;
}

TEST(redis_fault_loop_new)
{
    if (!conc__net_backend_built("redis")) {
        return;
    }
    th_redis r;
    th_redis_start(&r, NULL);
    int fds = open_fds();
    conc_queue *q = NULL;
    int failures = 0;
    for (long n = 1;; n++) {
        conc__fault_arm(n);
        int err = conc_queue_new(&q, &(conc_queue_opts){ .url = r.url,
                                                          .name = "f" });
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (err == 0) {
            CHECK(!fired);
            break;
        }
        CHECK(fired);
        if (!expected_failure(err)) {
            th_fail(__FILE__, __LINE__, "n=%ld: %s (%s)", n,
                    conc_errname(err), conc_errdetail());
        }
        CHECK(conc_errdetail()[0] != '\0');
        CHECK(q == NULL);
        CHECK_EQ(open_fds(), fds);
        failures++;
        CHECK(n < 200);
    }
    CHECK(failures >= 5); /* the seam reached several calls */
    conc_queue_free(q);
    CHECK_EQ(open_fds(), fds);
    th_redis_stop(&r);
}

TEST(redis_fault_loop_get_loses_nothing)
{
    if (!conc__net_backend_built("redis")) {
        return;
    }
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .url = r.url,
                                                     .name = "g" }));
    int fds = open_fds();
    int failures = 0;
    for (long n = 1;; n++) {
        CHECK_OK(conc_queue_put(q, "x", 1, 2.0));
        conc__fault_arm(n);
        conc_msg m;
        int err = conc_queue_get(q, &m, 1.0);
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (err == 0) {
            CHECK(m.len == 1 && *(char *)m.data == 'x');
            conc_msg_free(&m);
            if (!fired) {
                break;
            }
            continue;
        }
        CHECK(fired);
        if (!expected_failure(err)) {
            th_fail(__FILE__, __LINE__, "n=%ld: %s (%s)", n,
                    conc_errname(err), conc_errdetail());
        }
        failures++;
        /* Nothing lost: the next get has it (given back first if the
         * failed one had it moved into its list). */
        CHECK_OK(conc_queue_get(q, &m, 2.0));
        CHECK(m.len == 1 && *(char *)m.data == 'x');
        conc_msg_free(&m);
        CHECK(n < 200);
    }
    CHECK(failures >= 3);
    conc_msg m;
    CHECK_ERR(conc_queue_get(q, &m, 0.2), CONC_EEMPTY);
    CHECK(open_fds() <= fds + 1);
    conc_queue_free(q);
    th_redis_stop(&r);
}

TEST(redis_fault_loop_put_lock_dict)
{
    if (!conc__net_backend_built("redis")) {
        return;
    }
    th_redis r;
    th_redis_start(&r, NULL);
    conc_queue *q = NULL;
    conc_lock *l = NULL;
    conc_dict *d = NULL;
    CHECK_OK(conc_queue_new(&q, &(conc_queue_opts){ .url = r.url,
                                                     .name = "p" }));
    CHECK_OK(conc_lock_new(&l, &(conc_lock_opts){ .url = r.url,
                                                   .name = "p" }));
    CHECK_OK(conc_dict_new(&d, &(conc_dict_opts){ .url = r.url,
                                                   .name = "p" }));
    size_t landed = 0;
    for (long n = 1;; n++) {
        conc__fault_arm(n);
        int err = conc_queue_put(q, "y", 1, 1.0);
        conc__fault_arm(0);
        if (err == 0) {
            break;
        }
        CHECK(expected_failure(err));
        /* It may have landed (sent, then the reply was lost), or not. */
        size_t now = conc_queue_qsize(q);
        CHECK(now == landed || now == landed + 1);
        landed = now;
    }
    for (long n = 1;; n++) {
        conc__fault_arm(n);
        int err = conc_lock_acquire(l, 1.0);
        conc__fault_arm(0);
        if (err == 0) {
            break;
        }
        CHECK(expected_failure(err));
        if (conc_lock_locked(l)) {
            /* The grant landed but its reply was lost: the lease frees
             * it; here the key is dropped to go on. */
            free(th_redis_cmd(&r, "DEL", "conc:{l:p}", "conc:{l:p}:owner",
                              NULL));
        }
    }
    CHECK_OK(conc_lock_release(l));
    for (long n = 1;; n++) {
        conc__fault_arm(n);
        int err = conc_dict_set(d, "k", 1, "v", 1);
        conc__fault_arm(0);
        if (err == 0) {
            break;
        }
        CHECK(expected_failure(err));
    }
    conc_msg m;
    CHECK_OK(conc_dict_get(d, "k", 1, &m));
    conc_msg_free(&m);
    int item_failures = 0;
    for (long n = 1;; n++) {
        conc_dict_item *items = NULL;
        size_t count = 0;
        conc__fault_arm(n);
        int err = conc_dict_items(d, &items, &count);
        bool fired = conc__fault_fired();
        conc__fault_arm(0);
        if (err == 0) {
            /* A failure the client recovers from (a retried connect)
             * still gives the whole answer. */
            CHECK(count == 1 && items[0].klen == 1 && items[0].vlen == 1 &&
                  memcmp(items[0].val, "v", 1) == 0);
            conc_dict_array_free(items);
            if (!fired) {
                break;
            }
            continue;
        }
        CHECK(fired);
        if (!expected_failure(err)) {
            th_fail(__FILE__, __LINE__, "n=%ld: %s (%s)", n,
                    conc_errname(err), conc_errdetail());
        }
        CHECK(strstr(conc_errdetail(), "conc_dict_items") != NULL);
        CHECK(items == NULL && count == 0);
        item_failures++;
        CHECK(n < 200);
    }
    CHECK(item_failures >= 1); /* the block's allocation at least */
    conc_dict_free(d);
    conc_lock_free(l);
    conc_queue_free(q);
    th_redis_stop(&r);
}
