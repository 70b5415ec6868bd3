/* test_examples_foundation.c - the foundation's example programs (the seed
 * programs ported to C, examples/seed00*.c) run as the tour runs them,
 * and their outcomes asserted from what they print: the counter race and
 * its lock, the ticket office, the daemon rules, join's serial versus
 * concurrent timing, terminate/is_alive, and the threading examples of
 * seed 003.  Each example also checks its own invariants and exits 1 when
 * one failed; these tests check the exit status and, independently, the
 * printed facts.  Lower time bounds are exact; upper bounds are generous.
 */
#include "harness.h"

#include <sys/stat.h>
#include <sys/wait.h>

/* The number printed right after the first occurrence of prefix. */
static double number_after(const char *out, const char *prefix)
{
    const char *p = strstr(out, prefix);
    if (p == NULL) {
        fprintf(stderr, "    --- output ---\n%s    --- end ---\n", out);
        th_fail(__FILE__, __LINE__, "no \"%s\" in the output", prefix);
    }
    char *end = NULL;
    double v = strtod(p + strlen(prefix), &end);
    if (end == p + strlen(prefix)) {
        th_fail(__FILE__, __LINE__, "no number after \"%s\"", prefix);
    }
    return v;
}

static void expect_in(const char *out, const char *needle)
{
    if (strstr(out, needle) == NULL) {
        fprintf(stderr, "    --- output ---\n%s    --- end ---\n", out);
        th_fail(__FILE__, __LINE__, "\"%s\" missing from the output", needle);
    }
}

static void expect_not_in(const char *out, const char *needle)
{
    if (strstr(out, needle) != NULL) {
        fprintf(stderr, "    --- output ---\n%s    --- end ---\n", out);
        th_fail(__FILE__, __LINE__, "\"%s\" must not be in the output",
                needle);
    }
}

/* ThreadSanitizer makes every lock operation ten times slower: the
 * counter race gets fewer updates there (the lockless loop still races;
 * the locked one stays within the test's time). */
#if defined(__SANITIZE_THREAD__)
#define RACE_UPDATES "2000000"
#else
#define RACE_UPDATES "10000000"
#endif

TEST_T(counter_race_loses_updates_and_lock_gives_zero, 300)
{
    bool wrong_seen = false;
    for (int run = 0; run < 5 && !wrong_seen; run++) {
        char *out = th_run_example("seed002_counter_race",
                                   RACE_UPDATES, NULL, 250);
        expect_in(out, "with a conc_lock: a = 0 ");
        CHECK_EQ(number_after(out, "with a conc_lock: a = "), 0);
        double racy = number_after(out, "without a lock: a = ");
        wrong_seen = racy != 0;
        free(out);
    }
    /* Two threads doing read-then-write on one counter: in five runs at
     * least one lost update (each run interleaves millions of times). */
    CHECK(wrong_seen);
}

TEST_T(ticket_office_sells_exactly_one_ticket, 120)
{
    char dir[] = "/tmp/conc-ticket-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char db[sizeof dir + 16];
    snprintf(db, sizeof db, "%s/db.txt", dir);
    char *out = th_run_example("seed001_3_ticket_office", db, NULL, 100);

    char *part2 = strstr(out, "== part 2");
    CHECK(part2 != NULL);
    *part2 = '\0';
    const char *part1 = out;
    part2++;
    /* Part 1: concurrent buyers, buying under the lock. */
    CHECK_EQ(th_count(part1, "bought a ticket!"), 1);
    CHECK_EQ(th_count(part1, "sold out"), 9);
    CHECK_EQ(th_count(part1, "searched:"), 10);
    expect_in(part1, "part 1: 1 ticket(s) sold, 0 buyer(s) broken");
    expect_in(part1, "part 1: db.txt now holds {\"count\":0}");
    /* Ten searches at once (0.05 s), then ten purchases one at a time
     * (0.02 s each) of which one also writes (0.05 s). */
    CHECK(number_after(part1, "took ") >= 0.05 + 10 * 0.02 + 0.05);
    /* Part 2: start+join each in turn: buyer 0 buys, everyone after sees
     * 0 already at the search. */
    CHECK_EQ(th_count(part2, "bought a ticket!"), 1);
    expect_in(part2, "<buyer 0> searched: 1 ticket(s) left");
    expect_in(part2, "<buyer 0> bought a ticket!");
    CHECK_EQ(th_count(part2, "searched: 0 ticket(s) left"), 9);
    expect_in(part2, "part 2: 1 ticket(s) sold, 0 buyer(s) broken");
    expect_in(part2, "part 2: db.txt now holds {\"count\":0}");
    double serial = number_after(part2, "took ");
    CHECK(serial >= 10 * (0.05 + 0.02) + 0.05);
    CHECK(serial < 10 * 10 * (0.05 + 0.02 + 0.05));
    free(out);

    /* The file itself, as the buyers left it. */
    FILE *f = fopen(db, "r");
    CHECK(f != NULL);
    char text[64] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    CHECK_STR(text, "{\"count\":0}");
    CHECK_EQ(unlink(db), 0);
    /* Empty now: no temporary file was left behind. */
    CHECK_EQ(rmdir(dir), 0);
}

TEST(daemon_ends_with_its_parent)
{
    char *out = th_run_example("seed000_3_daemon_ends_with_parent",
                               NULL, NULL, 30);
    expect_in(out, "egon is piaoing");
    expect_in(out, "main: done, returning");
    /* th_run read until every writer of the pipe was gone: had the daemon
     * survived main, its late line would be here. */
    expect_not_in(out, "piao end");
    free(out);
}

TEST(daemon_foo_dies_with_main_bar_runs_on)
{
    char *out = th_run_example("seed001_1_daemon_foo_bar", NULL, NULL, 30);
    const char *main_line = strstr(out, "main-------\n");
    CHECK(main_line != NULL);
    expect_in(out, "456\n");
    const char *end456 = strstr(out, "end456\n");
    CHECK(end456 != NULL);
    CHECK(end456 > main_line);
    expect_not_in(out, "end123");
    free(out);
}

TEST(daemon_may_not_have_children)
{
    char *out = th_run_example("seed001_2_daemon_no_children", NULL, NULL, 30);
    expect_in(out, "conc_process_start returned CONC_EDAEMON: ");
    expect_in(out, conc_strerror(CONC_EDAEMON));
    expect_in(out, "main: the daemon's exitcode is 1\n");
    expect_not_in(out, "allowed a child");
    free(out);
}

TEST(join_concurrent_takes_the_longest_serial_the_sum)
{
    char *out = th_run_example("seed000_1_join_serial_vs_concurrent",
                               NULL, NULL, 60);
    double concurrent = number_after(out, "main: concurrent total ");
    double serial = number_after(out, "main: serial total ");
    CHECK(concurrent >= 0.5);
    CHECK(concurrent < 0.5 + 0.3 + 0.2);
    CHECK(serial >= 0.5 + 0.3 + 0.2);
    CHECK(serial < 10 * (0.5 + 0.3 + 0.2));
    CHECK_EQ(th_count(out, " is done\n"), 6);
    free(out);
}

TEST(terminate_then_is_alive)
{
    /* Right after terminate the child is usually still alive, but a child
     * woken by SIGTERM on the same core may preempt main and be gone
     * before main asks (about one run in five here); so True is asserted
     * in at least one of up to five runs, the rest in every run. */
    bool alive_seen = false;
    for (int run = 0; run < 5 && !alive_seen; run++) {
        char *out = th_run_example("seed000_2_terminate_is_alive",
                                   NULL, NULL, 30);
        const char *a = strstr(out, "is_alive right after terminate: ");
        const char *b = strstr(out, "is_alive after join: False\n");
        const char *c = strstr(out, "exitcode: -15 ");
        CHECK(a != NULL && b != NULL && c != NULL);
        CHECK(a < b && b < c);
        alive_seen = strncmp(a + strlen("is_alive right after terminate: "),
                             "True\n", 5) == 0;
        expect_in(out, "name: sub-process\n");
        expect_not_in(out, "is done");
        free(out);
    }
    CHECK(alive_seen);
}

TEST(condition_market_keeps_its_bounds)
{
    char *out = th_run_example("seed003_4_condition_market", NULL, NULL, 60);
    CHECK(number_after(out, "lowest ") >= 95);
    CHECK(number_after(out, "highest ") <= 1100);
    expect_in(out, "- held\n");
    expect_in(out, "- balanced\n");
    CHECK(th_count(out, "produce 100, count=") >= 2);
    CHECK(th_count(out, "consume 5, count=") >= 5);
    free(out);
}

TEST(event_releases_all_three_workers)
{
    char *out = th_run_example("seed003_2_event_workers", NULL, NULL, 30);
    expect_in(out, "main: before set: 0 of 3 workers released\n");
    for (int i = 1; i <= 3; i++) {
        char line[64];
        snprintf(line, sizeof line, "worker-%d got the signal, ", i);
        CHECK_EQ(th_count(out, line), 1);
    }
    expect_in(out, "main: after set: 3 of 3 workers released\n");
    /* Each released after the set: a non-negative delay. */
    expect_not_in(out, "signal, -");
    free(out);
}

TEST(semaphore_releases_ten_workers_one_at_a_time)
{
    char *out = th_run_example("seed003_3_semaphore_workers", NULL, NULL, 60);
    expect_in(out, "blocked on Semaphore(0); 0 working\n");
    for (int i = 0; i < 10; i++) {
        char line[32];
        snprintf(line, sizeof line, "Working %d\n", i);
        CHECK_EQ(th_count(out, line), 1);
    }
    CHECK_EQ(th_count(out, "main: release #"), 10);
    expect_not_in(out, "workers are working");
    expect_in(out, "each released once; value left 0\n");
    free(out);
}

TEST(countdown_threads_stop_by_flag_and_by_timeout)
{
    char *out = th_run_example("seed003_1_countdown_stop", NULL, NULL, 30);
    expect_in(out, "T-minus 10\n");
    /* Stopped early: it ticked (main let it run 0.35 s) but did not
     * reach the end of its 1 s countdown. */
    double left = number_after(out, "countdown stopped by the flag with ");
    CHECK(left >= 1 && left <= 9);
    expect_not_in(out, "T-minus 1\n");
    double timeouts = number_after(out, "timeout loop stopped after ");
    CHECK(timeouts >= 1);
    expect_in(out, "io task: terminated\n");
    free(out);
}
