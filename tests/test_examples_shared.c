/* test_examples_shared.c - the shared-state examples run as the tour runs
 * them, their outcomes asserted from what they print: seed 002's Manager
 * dict ({'a': 'a'} printed by the child and then by the parent), the
 * ticket office with its count in a conc_value (exactly one of ten buyers
 * gets the ticket; the count ends at 0), and the four-process word count
 * (the atomic totals are exact).  Each example also checks itself and
 * exits 1 on a failure; these tests check both. */
#include "harness.h"

#include <sys/wait.h>

TEST(example_manager_dict_prints_a_twice)
{
    char *out = th_run_example("seed002_manager_dict", NULL, NULL, 30);
    /* Exactly the seed's output: the child's print, then the parent's. */
    CHECK_STR(out, "{'a': 'a'}\n{'a': 'a'}\n");
    free(out);
}

TEST(example_ticket_office_sells_exactly_one)
{
    char *out = th_run_example("seed001_4_ticket_office_shared_value",
                               NULL, NULL, 60);
    CHECK_EQ(th_count(out, "searched: "), 10);
    CHECK_EQ(th_count(out, "bought a ticket!"), 1);
    CHECK_EQ(th_count(out, "sold out"), 9);
    CHECK(strstr(out, "1 ticket(s) sold, 0 buyer(s) broken; the count is "
                      "now 0\n") != NULL);
    CHECK(strstr(out, "OK: exactly one of ten buyers got the ticket") != NULL);
    free(out);
}

TEST(example_word_count_totals_are_exact)
{
    char *out = th_run_example("seed002_word_count_dict", NULL, NULL, 60);
    CHECK(strstr(out, "serial count: 'better' = 6000, 'is' = 6000 of 54000 "
                      "words\n") != NULL);
    CHECK(strstr(out, "conc_dict_update (atomic): 54000 words counted of "
                      "54000; 'better' = 6000, 'is' = 6000\n") != NULL);
    CHECK(strstr(out, "-> 0 update(s) lost, 0 word(s) with a wrong total\n") !=
          NULL);
    CHECK(strstr(out, "OK: the atomic totals are exact") != NULL);
    free(out);
}

TEST(example_word_count_pipeline_is_exact)
{
    char *out = th_run_example("seed002_word_count_pipeline", NULL, NULL, 60);
    CHECK(strstr(out, "11 distinct words, 3600 counted of 3600; 'the' = "
                      "1000, 'words' = 400\n") != NULL);
    CHECK(strstr(out, "OK: the pipeline's counts are exact") != NULL);
    free(out);
}
