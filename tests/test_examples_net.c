/* test_examples_net.c - the example programs that share a queue, a dict
 * and a lock through Redis (examples/seed00*_redis_*.c), run as the tour
 * runs them, each against a throwaway redis-server started here, with
 * their outcomes asserted from what they print: the buns of seed001 made
 * by three producer programs and eaten exactly once by two consumer
 * programs; the ticket office where exactly one of ten buyer programs
 * gets the last ticket under the lock on Redis (and the fencing number it
 * prints); and the word count over worker programs, exact although one
 * worker is killed mid-chunk (its chunk counted by another).  Each
 * example checks its own invariants too and exits 1 when one failed.
 */
#include "harness.h"
#include "redis_server.h"

static const char *find(const char *out, const char *needle)
{
    const char *p = strstr(out, needle);
    if (p == NULL) {
        fprintf(stderr, "    --- output ---\n%s    --- end ---\n", out);
        th_fail(__FILE__, __LINE__, "\"%s\" missing from the output", needle);
    }
    return p;
}

TEST(example_redis_producers_consumers_share_only_a_url)
{
    if (!conc__net_backend_built("redis")) {
        return;
    }
    th_redis r;
    th_redis_start(&r, NULL);
    char *out = th_run_example("seed001_7_redis_producers_consumers", r.url,
                               NULL, 60);
    CHECK_EQ(th_count(out, " made bun "), 18);
    CHECK_EQ(th_count(out, " ate bun "), 18);
    CHECK_EQ(th_count(out, "got the end signal"), 2);
    for (int p = 1; p <= 3; p++) {
        for (int i = 0; i < 6; i++) {
            char needle[32];
            snprintf(needle, sizeof needle, " ate bun %d.%d\n", p, i);
            CHECK_EQ(th_count(out, needle), 1);
        }
    }
    find(out, "main: all done - 18 buns eaten");
    find(out, "OK: every bun eaten exactly once");
    free(out);
    th_redis_stop(&r);
}

TEST(example_redis_ticket_office_one_buyer)
{
    if (!conc__net_backend_built("redis")) {
        return;
    }
    th_redis r;
    th_redis_start(&r, NULL);
    char *out = th_run_example("seed001_8_redis_ticket_office", r.url, NULL,
                               60);
    const char *locked = find(out, "--- with the lock");
    const char *unlocked = find(out, "--- without the lock");
    CHECK(locked < unlocked);
    /* In the locked round: one purchase, with a fencing number. */
    const char *bought = find(locked, "bought the ticket (fencing number ");
    CHECK(bought < unlocked);
    CHECK(strstr(bought + 1, "bought the ticket (fencing") == NULL ||
          strstr(bought + 1, "bought the ticket (fencing") > unlocked);
    find(out, "main: 1 bought, 0 left");
    find(out, "OK: with the lock on Redis exactly one buyer");
    free(out);
    th_redis_stop(&r);
}

TEST(example_redis_word_count_exact_despite_a_killed_worker)
{
    if (!conc__net_backend_built("redis")) {
        return;
    }
    th_redis r;
    th_redis_start(&r, NULL);
    char *out = th_run_example("seed002_redis_word_count", r.url, NULL, 90);
    find(out, "main: 40 chunks queued for 3 workers");
    find(out, "main: killed worker 1");
    /* Every chunk counted at least once; the killed worker's last one
     * perhaps twice (at least once), never lost. */
    for (int c = 0; c < 40; c++) {
        char needle[32];
        snprintf(needle, sizeof needle, "counted chunk %d\n", c);
        CHECK(th_count(out, needle) >= 1);
    }
    find(out, "main: every chunk done (success)");
    find(out, "OK: the distributed count is exact");
    free(out);
    th_redis_stop(&r);
}
