/* main.c - the program each consumer build compiles: a few calls of
 * libconc's public API, each result checked.  Prints "consumer ok" and
 * exits 0 when all hold. */
#include <conc.h>

#include <stdio.h>
#include <string.h>

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c)) {                                                          \
            fprintf(stderr, "consumer: %s failed (%s)\n", #c,                \
                    conc_errdetail());                                       \
            return 1;                                                        \
        }                                                                    \
    } while (0)

static int child(void *arg)
{
    return conc_queue_put(arg, "hello", 5, 5.0) == 0 ? 0 : 1;
}

int main(void)
{
    CHECK(strcmp(conc_version(), CONC_VERSION_STRING) == 0);
    conc_queue *q = NULL;
    conc_process *p = NULL;
    conc_msg m = { 0 };
    int code = -1;
    CHECK(conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 3 }) == 0);
    CHECK(conc_process_new(&p, &(conc_process_opts){ .target = child,
                                                     .arg = q }) == 0);
    CHECK(conc_process_start(p) == 0);
    CHECK(conc_queue_get(q, &m, 5.0) == 0);
    CHECK(m.len == 5 && memcmp(m.data, "hello", 5) == 0);
    conc_msg_free(&m);
    CHECK(conc_process_join(p, 5.0) == 0);
    CHECK(conc_process_exitcode(p, &code) == 0 && code == 0);
    CHECK(conc_queue_get(q, &m, 0) == CONC_EEMPTY);
    CHECK(conc_queue_new(NULL, NULL) == CONC_EINVAL);
    conc_process_free(p);
    conc_queue_free(q);
    printf("consumer ok (libconc %s)\n", conc_version());
    return 0;
}
