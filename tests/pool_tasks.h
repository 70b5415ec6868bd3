/* pool_tasks.h - task functions shared by the pool tests (test_pool.c,
 * test_future.c, test_pool_crash.c). */
#ifndef POOL_TASKS_H
#define POOL_TASKS_H

#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static inline int int_in(const void *in, size_t len)
{
    int x = 0;
    if (len >= sizeof x) {
        memcpy(&x, in, sizeof x);
    }
    return x;
}

static inline int int_out(const conc_msg *m)
{
    int x = -12345;
    if (m->len == sizeof x) {
        memcpy(&x, m->data, sizeof x);
    }
    return x;
}

/* x -> x*x */
static inline int t_square(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    int x = int_in(in, len);
    x *= x;
    return conc_buf_append(out, &x, sizeof x);
}

/* copies the input */
static inline int t_echo(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    return conc_buf_append(out, in, len) == 0 ? 0 : 1;
}

/* fails with code x (x > 0), a message and a partial output */
static inline int t_fail(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    int x = int_in(in, len);
    conc_buf_append(out, "part", 4);
    conc_buf_error(out, "bad input %d", x);
    return x;
}

/* sleeps x milliseconds, returns x */
static inline int t_sleep(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    int x = int_in(in, len);
    th_sleep(x / 1000.0);
    return conc_buf_append(out, &x, sizeof x);
}

/* the kernel thread id (threads) / pid (processes) of the worker */
static inline int t_whoami(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)in;
    (void)len;
    (void)ctx;
    int tid = (int)syscall(SYS_gettid);
    return conc_buf_append(out, &tid, sizeof tid);
}

/* the worker's kernel name */
static inline int t_comm(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)in;
    (void)len;
    (void)ctx;
    char name[17] = { 0 };
    prctl(PR_GET_NAME, name, 0, 0, 0);
    return conc_buf_append(out, name, strlen(name));
}

/* the worker_ctx, as an int */
static inline int t_ctx(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)in;
    (void)len;
    int v = ctx ? *(int *)ctx : -1;
    return conc_buf_append(out, &v, sizeof v);
}

/* An address no task may write to; volatile so the compiler cannot see
 * the fault coming. */
static volatile uintptr_t pool_bad_address = 8;

/* crash kinds: 1 segfault, 2 abort, 3 exit(3), 4 SIGKILL itself, else
 * square the value */
static inline int t_crash(const void *in, size_t len, conc_buf *out, void *ctx)
{
    int x = int_in(in, len);
    switch (x) {
    case -1:
        *(volatile int *)pool_bad_address = 1; /* a real segfault */
        break;
    case -2:
        abort();
    case -3:
        exit(3);
    case -4:
        kill(getpid(), SIGKILL);
        th_sleep(5);
        break;
    default:
        break;
    }
    return t_square(in, len, out, ctx);
}

#endif
