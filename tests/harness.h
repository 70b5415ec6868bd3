/* harness.h - the test harness every tests/test_*.c uses.
 *
 *   TEST(name) { ... CHECK(x); CHECK_EQ(a, b); CHECK_ERR(call, CONC_EFULL); }
 *   TEST_T(name, seconds) { ... }   // a deadline other than the default 60 s
 *
 * Each test runs in a forked child of its own, in its own process group,
 * with a deadline: a deadlock is a failure, not a hung CI.  After each test
 * the harness fails it if the test left an fd open, a child process alive
 * (the runner is a child subreaper, so orphaned grandchildren are seen
 * too: daemon descendants get 2 s to die with their parent) or a new entry
 * in /dev/shm.  The program ends with the line "N passed, N failed".
 *
 * Arguments select tests whose name contains any of them;
 * CONC_TEST_REPEAT=N runs each selected test N times (loop a flaky test).
 */
#ifndef CONC_TEST_HARNESS_H
#define CONC_TEST_HARNESS_H

#include <conc.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void (*th_fn)(void);
void th_register(const char *name, th_fn fn, double deadline_s);

#define TEST_T(name, secs)                                                   \
    static void name(void);                                                  \
    __attribute__((constructor)) static void th_reg_##name(void)             \
    {                                                                        \
        th_register(#name, name, (secs));                                    \
    }                                                                        \
    static void name(void)
#define TEST(name) TEST_T(name, 60)

_Noreturn void th_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            th_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                 \
        }                                                                    \
    } while (0)

#define CHECK_EQ(a, b)                                                       \
    do {                                                                     \
        long long th_a_ = (long long)(a), th_b_ = (long long)(b);            \
        if (th_a_ != th_b_) {                                                \
            th_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b,    \
                    th_a_, th_b_);                                           \
        }                                                                    \
    } while (0)

/* CHECK_ERR(call, CONC_EXXX): the call returns exactly that code. */
#define CHECK_ERR(call, code)                                                \
    do {                                                                     \
        int th_e_ = (int)(call), th_w_ = (int)(code);                        \
        if (th_e_ != th_w_) {                                                \
            th_fail(__FILE__, __LINE__, "%s returned %s (%d), wanted %s",    \
                    #call, conc_errname(th_e_), th_e_, conc_errname(th_w_)); \
        }                                                                    \
    } while (0)
#define CHECK_OK(call) CHECK_ERR(call, 0)

#define CHECK_STR(a, b)                                                      \
    do {                                                                     \
        const char *th_a_ = (a), *th_b_ = (b);                               \
        if (th_a_ == NULL || th_b_ == NULL || strcmp(th_a_, th_b_) != 0) {   \
            th_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a,    \
                    #b, th_a_ ? th_a_ : "(null)", th_b_ ? th_b_ : "(null)"); \
        }                                                                    \
    } while (0)

/* Monotonic seconds, for timing assertions (lower bounds exact, upper
 * bounds with 10x slack). */
double th_now(void);
void th_sleep(double seconds);

/* Runs argv (argv[0] a path) with stdout and stderr captured into *out (a
 * NUL-terminated heap string the caller frees), killing it after timeout
 * seconds.  Returns the wait status, or -1 (and fails the test) if it could
 * not be run or ran out of time. */
int th_run(char *const argv[], char **out, double timeout);

/* Runs examples/<name> with up to two arguments (NULL for none), fails the
 * test - showing the output - unless it exits 0, and returns its output
 * (stdout and stderr; the caller frees it). */
char *th_run_example(const char *name, const char *arg1, const char *arg2,
                     double timeout);

/* Whether the POSIX shared memory object name ("x" or "/x") exists. */
bool th_shm_exists(const char *name);

/* How many descriptors this process has open (-1 if /proc is not
 * there): for fault loops that check each failure leaks none. */
int th_count_fds(void);

/* A Unix socket listening at path whose queue of connections is full:
 * listen backlog 0, and one connection made into it and never accepted.
 * Returns the listening descriptor; *filler is that connection's.  A
 * non-blocking connect to it fails with EAGAIN until the first queued
 * connection is accepted.  The caller closes both and unlinks path. */
int th_unix_listener_full(const char *path, int *filler);

/* How many times needle occurs in hay. */
int th_count(const char *hay, const char *needle);

/* Path of an example program / a tests/prog_* helper, in a static buffer. */
const char *th_example(const char *name);
const char *th_prog(const char *name);

/* Fork a child that runs fn(arg) and _exit()s with its return value;
 * th_wait reaps it (fails the test after timeout) and returns the wait
 * status. */
pid_t th_fork(int (*fn)(void *), void *arg);
/* _exit(code), after writing gcov counts in a coverage build: how every
 * child the harness forks ends. */
_Noreturn void th_exit(int code);
int th_wait(pid_t pid, double timeout);

#endif
