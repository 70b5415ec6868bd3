/* test_invariant.c - the invariant macros of src/conc_int.h do what they
 * say in each build: with CONC_INVARIANTS (the sanitizer flavours, a
 * Debug build) a false CONC__ALWAYS, a true CONC__NEVER and a false
 * CONC__ASSERT abort the process with "invariant broken at FILE:LINE:
 * EXPR" on stderr; without it (the plain flavour) CONC__ALWAYS and
 * CONC__NEVER are the bare condition, so the safe path runs, and
 * CONC__ASSERT does not even evaluate its argument.  Each case runs in a
 * forked child whose stderr comes back through a pipe.  The last test
 * breaks an invariant inside the library itself, so the library's own
 * build is held to the same rule as this file's. */
#include "harness.h"

#include "conc_int.h"
#include "queue_int.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#ifdef CONC_INVARIANTS
#define CHECKED true
#else
#define CHECKED false
#endif

/* What a child wrote on stderr and how it ended. */
typedef struct outcome {
    int status;
    char err[1024];
} outcome;

static int child_fd = -1;

/* Runs fn in a forked child with stderr into a pipe. */
static outcome run_child(int (*fn)(void *))
{
    outcome o = { 0, { 0 } };
    int p[2];
    CHECK(pipe(p) == 0);
    child_fd = p[1];
    pid_t pid = th_fork(fn, NULL);
    close(p[1]);
    size_t got = 0;
    ssize_t n;
    while ((n = read(p[0], o.err + got, sizeof o.err - 1 - got)) > 0) {
        got += (size_t)n;
    }
    o.err[got] = '\0';
    close(p[0]);
    o.status = th_wait(pid, 30);
    return o;
}

static void to_pipe(void)
{
    dup2(child_fd, 2);
    close(child_fd);
}

/* Exit codes of the children that did not abort: which path ran. */
enum { SAFE_PATH = 7, FELL_THROUGH = 8, NOT_EVALUATED = 9, EVALUATED = 10 };

static volatile int zero = 0; /* so the compiler cannot fold the tests */

static int always_false(void *arg)
{
    (void)arg;
    to_pipe();
    if (!CONC__ALWAYS(zero == 1)) {
        return SAFE_PATH;
    }
    return FELL_THROUGH;
}

static int never_true(void *arg)
{
    (void)arg;
    to_pipe();
    if (CONC__NEVER(zero == 0)) {
        return SAFE_PATH;
    }
    return FELL_THROUGH;
}

static int evaluations;

static bool counted(bool v)
{
    evaluations++;
    return v;
}

static int assert_false(void *arg)
{
    (void)arg;
    to_pipe();
    CONC__ASSERT(counted(zero == 1));
    return evaluations == 0 ? NOT_EVALUATED : EVALUATED;
}

/* The child aborted (checked builds) with the message naming this file,
 * a line and the expression; or (release) exited with want. */
static void expect(outcome o, const char *expr, int want)
{
    if (CHECKED) {
        CHECK(WIFSIGNALED(o.status));
        CHECK_EQ(WTERMSIG(o.status), SIGABRT);
        CHECK(strstr(o.err, "libconc: invariant broken at ") != NULL);
        CHECK(strstr(o.err, "test_invariant.c:") != NULL);
        if (strstr(o.err, expr) == NULL) {
            th_fail(__FILE__, __LINE__, "\"%s\" lacks \"%s\"", o.err, expr);
        }
    } else {
        CHECK(WIFEXITED(o.status));
        CHECK_EQ(WEXITSTATUS(o.status), want);
        CHECK_STR(o.err, "");
    }
}

TEST(always_false_aborts_or_takes_the_safe_path)
{
    expect(run_child(always_false), "ALWAYS(zero == 1)", SAFE_PATH);
}

TEST(never_true_aborts_or_takes_the_safe_path)
{
    expect(run_child(never_true), "NEVER(zero == 0)", SAFE_PATH);
}

TEST(assert_false_aborts_or_is_not_evaluated)
{
    expect(run_child(assert_false), "counted(zero == 1)", NOT_EVALUATED);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
/* The sanitizer flavours are the ones that check (CMakeLists.txt). */
TEST(sanitizer_flavours_check)
{
    CHECK(CHECKED);
}
#endif

/* Facts that hold pass silently in every build, and the macros' values
 * are the conditions'. */
TEST(true_facts_pass)
{
    int one = 1 + zero;
    CHECK(CONC__ALWAYS(one == 1));
    CHECK(!CONC__NEVER(one == 2));
    CONC__ASSERT(one == 1);
    evaluations = 0;
    CONC__ASSERT(counted(one == 1));
    CHECK_EQ(evaluations, CHECKED ? 1 : 0);
}

/* conc__queue_format() is documented for capacities of 1 to
 * CONC_QUEUE_MAX_CAPACITY; a capacity of 0 breaks the invariant it
 * states at its top, inside the library's own code. */
static int format_zero(void *arg)
{
    (void)arg;
    to_pipe();
    size_t size = conc__queue_map_size(1, 1);
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        return 1;
    }
    conc__queue_format(map, size, 0, 0, 1);
    munmap(map, size);
    return FELL_THROUGH;
}

TEST(the_library_is_built_the_same_way)
{
    outcome o = run_child(format_zero);
    if (CHECKED) {
        CHECK(WIFSIGNALED(o.status));
        CHECK_EQ(WTERMSIG(o.status), SIGABRT);
        CHECK(strstr(o.err, "libconc: invariant broken at ") != NULL);
        if (strstr(o.err, "queue_map.c:") == NULL) {
            th_fail(__FILE__, __LINE__, "\"%s\" lacks queue_map.c", o.err);
        }
    } else {
        CHECK(WIFEXITED(o.status));
        CHECK_EQ(WEXITSTATUS(o.status), FELL_THROUGH);
        CHECK_STR(o.err, "");
    }
}
