/* queue_test_util.h - small helpers shared by the shared-memory queue's
 * tests (test_queue.c, test_queue_hostile.c, test_queue_lanes.c): shared
 * memory for children, a checked byte pattern for message contents,
 * string puts and gets that say what went wrong, and the check of an
 * open that must be refused. */
#ifndef CONC_QUEUE_TEST_UTIL_H
#define CONC_QUEUE_TEST_UTIL_H

#include "harness.h"

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>

/* Zeroed memory shared with children forked later. */
static inline void *shared_map(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    return p;
}

/* splitmix64's finaliser: the pattern's generator. */
static inline uint64_t mix(uint64_t x)
{
    x += UINT64_C(0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}

/* n bytes that depend on seed and on every position. */
static inline void pattern(unsigned char *b, size_t n, uint64_t seed)
{
    uint64_t x = mix(seed);
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0) {
            x = mix(x);
        }
        b[i] = (unsigned char)(x >> (8 * (i % 8)));
    }
}

static inline bool pattern_ok(const unsigned char *b, size_t n,
                              uint64_t seed)
{
    uint64_t x = mix(seed);
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0) {
            x = mix(x);
        }
        if (b[i] != (unsigned char)(x >> (8 * (i % 8)))) {
            return false;
        }
    }
    return true;
}

static inline void put_str(conc_queue *q, const char *s)
{
    CHECK_OK(conc_queue_put(q, s, strlen(s), 1));
}

/* Gets one message (5 s at most) and checks it is want. */
static inline void get_str(conc_queue *q, const char *want)
{
    conc_msg m;
    int err = conc_queue_get(q, &m, 5);
    if (err != 0) {
        th_fail(__FILE__, __LINE__, "get (wanted \"%s\"): %s, \"%s\"", want,
                conc_errname(err), conc_errdetail());
    }
    if (m.len != strlen(want) || memcmp(m.data, want, m.len) != 0) {
        th_fail(__FILE__, __LINE__, "got \"%.*s\", wanted \"%s\"",
                (int)m.len, m.data ? (char *)m.data : "", want);
    }
    conc_msg_free(&m);
}

/* Three messages through the exec'd peer program (prog_queue_peer, which
 * opens the queue by name): it takes them in order and puts them back in
 * capitals, and says what it took on its output. */
static inline void echo_through_peer(conc_queue *q, const char *name)
{
    put_str(q, "alpha");
    put_str(q, "beta");
    put_str(q, "gamma");
    char *out = NULL;
    char *argv[] = { (char *)th_prog("prog_queue_peer"), (char *)name,
                     "echo", "3", NULL };
    int st = th_run(argv, &out, 20);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_STR(out, "alpha\nbeta\ngamma\n");
    free(out);
    get_str(q, "ALPHA");
    get_str(q, "BETA");
    get_str(q, "GAMMA");
}

/* Writes a header field of width 4 or 8 bytes at off, as a peer would. */
static inline void poke(void *base, size_t off, int width, uint64_t v)
{
    if (width == 4) {
        uint32_t x = (uint32_t)v;
        memcpy((char *)base + off, &x, 4);
    } else {
        memcpy((char *)base + off, &v, 8);
    }
}

/* conc_queue_open(name) must fail with want, leave the handle NULL, and
 * give a detail that names conc_queue_open and contains key; what names
 * the case in the failure. */
#define CHECK_OPEN_REFUSED(name, want, key, what)                            \
    do {                                                                     \
        conc_queue *q_or_ = (conc_queue *)1;                                 \
        int err_or_ = conc_queue_open(&q_or_, name);                         \
        if (err_or_ != (want) || strstr(conc_errdetail(), key) == NULL ||    \
            strstr(conc_errdetail(), "conc_queue_open") == NULL) {           \
            th_fail(__FILE__, __LINE__, "%s: %s, \"%s\"", what,              \
                    conc_errname(err_or_), conc_errdetail());                \
        }                                                                    \
        CHECK(q_or_ == NULL);                                                \
    } while (0)

#endif
