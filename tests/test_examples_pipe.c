/* test_examples_pipe.c - the listener/client example run as the tour runs
 * it: three clients with the key each have two lines echoed upper-cased,
 * one with the wrong key is refused on both sides, and the server stops
 * after serving the three. */
#include "harness.h"

TEST(example_echo_listener_with_authkey)
{
    char *out = th_run_example("seed001_echo_listener_authkey", NULL, NULL,
                               60);
    CHECK(strstr(out, "listening on tcp:127.0.0.1:") != NULL);
    CHECK_EQ(th_count(out, " sent 'hello', got 'HELLO'\n"), 3);
    CHECK_EQ(th_count(out, " sent 'from a client', got 'FROM A CLIENT'\n"),
             3);
    CHECK(strstr(out, "a client with the wrong key: CONC_EAUTH\n") != NULL);
    CHECK(strstr(out, "served 3 clients, refused 1\n") != NULL);
    CHECK(strstr(out, "OK: every client echoed, the wrong key refused") !=
          NULL);
    free(out);
}
