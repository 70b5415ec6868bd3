/* test_examples_queue.c - the queue and pipe example programs (seed
 * programs ported to C: examples/seed*_queue*.c, seed*_pipe*.c) run as
 * the tour runs them, with their outcomes asserted from what they print:
 * Queue(3)'s FIFO, full/empty and the fourth put's CONC_EFULL; the
 * producer-consumer with one sentinel per consumer (18 buns, each eaten
 * once); the JoinableQueue with daemon consumers that ends by itself; the
 * queue shared by parent and child (1 then 2); the threads on Queue(5);
 * and the Pipe that ends in end of file after four messages.  Each
 * example also checks its own invariants and exits 1 when one failed;
 * these tests check the exit status and, independently, the printed
 * facts.
 */
#include "harness.h"

#include <sys/wait.h>

/* Where needle first occurs; fails the test when it does not. */
static const char *find(const char *out, const char *needle)
{
    const char *p = strstr(out, needle);
    if (p == NULL) {
        fprintf(stderr, "    --- output ---\n%s    --- end ---\n", out);
        th_fail(__FILE__, __LINE__, "\"%s\" missing from the output", needle);
    }
    return p;
}

/* a occurs, b occurs, and the first a comes before the first b. */
static void in_order(const char *out, const char *a, const char *b)
{
    if (find(out, a) >= find(out, b)) {
        fprintf(stderr, "    --- output ---\n%s    --- end ---\n", out);
        th_fail(__FILE__, __LINE__, "\"%s\" should come before \"%s\"", a, b);
    }
}

TEST(example_queue_three_puts_fifo_full_empty)
{
    double t0 = th_now();
    char *out = th_run_example("seed000_4_queue_three_puts", NULL, NULL, 30);
    double took = th_now() - t0;
    CHECK(took >= 0.3); /* the fourth put waited its 0.3 s */
    in_order(out, "q.put(hello) -> CONC_OK", "q.put([3, 3, 3]) -> CONC_OK");
    in_order(out, "q.put([3, 3, 3]) -> CONC_OK", "q.full() -> True");
    in_order(out, "q.full() -> True",
             "q.put(fourth, timeout=0.3) -> CONC_EFULL");
    in_order(out, "CONC_EFULL", "q.get() -> hello\n");
    in_order(out, "q.get() -> hello\n", "q.get() -> {'a': 1}\n");
    in_order(out, "q.get() -> {'a': 1}\n", "q.get() -> [3, 3, 3]\n");
    in_order(out, "q.get() -> [3, 3, 3]\n", "q.empty() -> True");
    in_order(out, "q.empty() -> True", "q.get_nowait() -> CONC_EEMPTY");
    CHECK_EQ(th_count(out, "q.get() -> "), 3);
    find(out, "OK: FIFO");
    free(out);
}

TEST(example_queue_producer_consumer_sentinels)
{
    char *out = th_run_example("seed001_5_queue_producer_consumer",
                               NULL, NULL, 60);
    CHECK_EQ(th_count(out, " made bun "), 18);
    CHECK_EQ(th_count(out, " ate bun "), 18);
    CHECK_EQ(th_count(out, "got the end signal"), 2);
    /* Every bun eaten exactly once, whoever ate it. */
    for (int p = 1; p <= 3; p++) {
        for (int i = 0; i < 6; i++) {
            char needle[32];
            snprintf(needle, sizeof needle, " ate bun %d.%d\n", p, i);
            CHECK_EQ(th_count(out, needle), 1);
        }
    }
    /* Both consumers took part: each printed at least one line. */
    CHECK(th_count(out, "consumer 1 (pid") >= 1);
    CHECK(th_count(out, "consumer 2 (pid") >= 1);
    in_order(out, "got the end signal", "main: all done - 18 buns eaten");
    find(out, "OK: every bun eaten exactly once");
    free(out);
}

TEST(example_queue_joinable_daemons_end_by_themselves)
{
    double t0 = th_now();
    char *out = th_run_example("seed001_6_queue_joinable_daemons",
                               NULL, NULL, 60);
    CHECK(th_now() - t0 < 30); /* ended by itself, no end signal */
    CHECK_EQ(th_count(out, " was manufactured "), 9);
    CHECK_EQ(th_count(out, " ate "), 9);
    const char *kinds[] = { "Bun", "Bone", "Swill" };
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < 3; i++) {
            char needle[32];
            snprintf(needle, sizeof needle, " ate %s%d\n", kinds[k], i);
            CHECK_EQ(th_count(out, needle), 1);
            /* Eaten before the producers' join returned. */
            in_order(out, needle, "Master\n");
        }
    }
    CHECK_EQ(th_count(out, "Master\n"), 1);
    find(out, "OK: all eaten");
    free(out);
}

TEST(example_queue_shared_by_parent_and_child)
{
    char *out = th_run_example("seed002_queue_parent_child", NULL, NULL, 30);
    CHECK(strncmp(out, "1\n2\n", 4) == 0);
    find(out, "OK: the child saw the parent's 1");
    free(out);
}

TEST(example_queue_threads_on_a_bounded_queue)
{
    char *out = th_run_example("seed002_queue_threads_bounded",
                               NULL, NULL, 60);
    CHECK_EQ(th_count(out, "put "), 12);
    CHECK_EQ(th_count(out, "got "), 12);
    /* FIFO: the n-th "got" names the n-th "put"'s digit. */
    const char *p = out, *g = out;
    for (int i = 0; i < 12; i++) {
        p = strstr(p, "put ");
        g = strstr(g, "got ");
        CHECK(p != NULL && g != NULL);
        CHECK_EQ(atoi(p + 4), atoi(g + 4));
        p += 4;
        g += 4;
    }
    in_order(out, "got ", "main: q.join() returned; OK");
    free(out);
}

TEST(example_pipe_four_messages_then_eof)
{
    double t0 = th_now();
    char *out = th_run_example("seed003_5_pipe_until_eof", NULL, NULL, 30);
    CHECK(th_now() - t0 >= 0.2); /* the child's sleep before the fourth */
    in_order(out, "[1, None, 'hello']\n", "[2, None, 'hello']\n");
    in_order(out, "[2, None, 'hello']\n", "[3, None, 'hello']\n");
    in_order(out, "[3, None, 'hello']\n", "[4, None, 'hello']\n");
    in_order(out, "[4, None, 'hello']\n", "EOFError");
    CHECK_EQ(th_count(out, ", None, 'hello']"), 4);
    CHECK_EQ(th_count(out, "EOFError"), 1);
    find(out, "OK: 4 messages, then end of file");
    free(out);
}
