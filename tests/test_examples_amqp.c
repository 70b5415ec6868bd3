/* test_examples_amqp.c - the examples on RabbitMQ: seed001_9 runs its
 * producer and consumer programs, which share nothing but the queue's
 * location, once in shared memory, once on Redis (a throwaway server) and
 * once on RabbitMQ (the suite's broker), and each run must have every bun
 * eaten exactly once.  Only the argument differs between the runs.
 */
#include "amqp_server.h"
#include "redis_server.h"

static void check_buns(char *out)
{
    CHECK_EQ(th_count(out, " made bun "), 10);
    CHECK_EQ(th_count(out, " ate bun "), 10);
    for (int p = 1; p <= 2; p++) {
        for (int i = 0; i < 5; i++) {
            char needle[32];
            snprintf(needle, sizeof needle, " ate bun %d.%d\n", p, i);
            CHECK_EQ(th_count(out, needle), 1);
        }
    }
    CHECK(strstr(out, "main: 10 buns eaten") != NULL);
    CHECK(strstr(out, "OK: every bun eaten exactly once") != NULL);
}

TEST(example_any_backend_shared_memory)
{
    char *out = th_run_example("seed001_9_same_program_any_backend", "",
                               NULL, 60);
    CHECK(strstr(out, "in shared memory") != NULL);
    check_buns(out);
    free(out);
}

TEST(example_any_backend_rabbitmq)
{
    if (!conc__net_backend_built("amqp")) {
        return;
    }
    th_amqp a;
    th_amqp_get(&a);
    char *out = th_run_example("seed001_9_same_program_any_backend", a.url,
                               NULL, 90);
    CHECK(strstr(out, "on a server") != NULL);
    check_buns(out);
    free(out);
}

TEST(example_any_backend_redis)
{
    if (!conc__net_backend_built("redis")) {
        return;
    }
    th_redis r;
    th_redis_start(&r, NULL);
    char *out = th_run_example("seed001_9_same_program_any_backend", r.url,
                               NULL, 60);
    CHECK(strstr(out, "on a server") != NULL);
    check_buns(out);
    free(out);
    th_redis_stop(&r);
}
