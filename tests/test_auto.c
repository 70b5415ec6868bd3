/* test_auto.c - CONC_AUTO, CONC_AUTO_MSG and CONC_TAKE (conc/auto.h):
 * objects are freed when their scope ends, on every way out of it, and an
 * object taken out survives. */
#include "harness.h"

#include <conc/auto.h>

static const char *name_of(const char *tag)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "conc-test-auto-%s-%d", tag, (int)getpid());
    return buf;
}

/* Leaves its scope early, on an error path, with a named queue made: the
 * queue is freed there, and with it (it made it) the name. */
static int make_then_fail(const char *name)
{
    CONC_AUTO(conc_queue) q = NULL;
    CONC_AUTO(conc_lock) l = NULL;
    int err = conc_queue_new(&q, &(conc_queue_opts){ .name = name });
    if (err != 0) {
        return err;
    }
    if (!th_shm_exists(name)) {
        return -1;
    }
    (void)l;
    return CONC_EINVAL; /* the "error" that leaves early; l is NULL */
}

TEST(auto_frees_on_an_early_return)
{
    const char *name = name_of("early");
    CHECK_ERR(make_then_fail(name), CONC_EINVAL);
    CHECK(!th_shm_exists(name));
}

TEST(auto_frees_at_the_end_of_a_block_and_a_loop_body)
{
    const char *name = name_of("block");
    {
        CONC_AUTO(conc_value) v = NULL;
        CHECK_OK(conc_value_new(&v, &(conc_value_opts){ .size = 8,
                                                        .name = name }));
        CHECK(th_shm_exists(name));
    }
    CHECK(!th_shm_exists(name));
    for (int i = 0; i < 3; i++) {
        CONC_AUTO(conc_shm) m = NULL;
        CHECK_OK(conc_shm_create(&m, name, 4096));
        if (i == 1) {
            continue; /* freed on continue too: the next create works */
        }
        CHECK(th_shm_exists(name));
    }
    CHECK(!th_shm_exists(name));
}

static conc_dict *make_kept(const char *name)
{
    CONC_AUTO(conc_dict) d = NULL;
    if (conc_dict_new(&d, &(conc_dict_opts){ .name = name }) != 0) {
        return NULL;
    }
    return CONC_TAKE(d); /* d is NULL now: nothing freed at the } */
}

TEST(auto_take_keeps_an_object_past_its_scope)
{
    const char *name = name_of("take");
    conc_dict *d = make_kept(name);
    CHECK(d != NULL);
    CHECK(th_shm_exists(name));
    CHECK_OK(conc_dict_set(d, "k", 1, "v", 1));
    conc_dict_free(d);
    CHECK(!th_shm_exists(name));
}

TEST(auto_msg_releases_its_bytes)
{
    /* Under ASan a message whose bytes were not freed is a leak report,
     * which fails the test; plainly, the scope's end must not crash on a
     * zeroed message either. */
    CONC_AUTO(conc_queue) q = NULL;
    CHECK_OK(conc_queue_new(&q, NULL));
    CHECK_OK(conc_queue_put(q, "hello", 5, 1));
    {
        CONC_AUTO_MSG m = { 0 };
        CHECK_OK(conc_queue_get(q, &m, 1));
        CHECK_EQ(m.len, 5);
    }
    {
        CONC_AUTO_MSG empty = { 0 };
        (void)empty;
    }
}
