/* seed003_pool_2_submit_and_callback.c - submit() returns a Future; get
 * its result by blocking on it, or have a callback called instead.
 * Ports seed 003's ThreadPoolExecutor / ProcessPoolExecutor usage:
 *
 *     future_result = pool.submit(work, arg)
 *     r = future_result.result()               # blocks until done
 *     future_result.add_done_callback(when_done)   # or: don't block
 *
 * conc_pool_submit queues the task and hands back a conc_future at once;
 * conc_future_result waits for it (with a timeout if you like).  With
 * conc_future_add_done_callback nothing waits: the callback runs when the
 * task completes - in the pool's manager thread for a process pool (in the
 * worker thread for a thread pool), or at once in the caller if the task
 * is already done.  A failing task reports its own code and message
 * (Python's exception) through conc_future_error_message.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* work(x): sleeps a little (some I/O, say) and returns x * 10; x < 0
 * fails like a raised exception. */
static int work(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    int x;
    memcpy(&x, in, len < sizeof x ? len : sizeof x);
    struct timespec ts = { 0, 50 * 1000000L };
    nanosleep(&ts, NULL);
    if (x < 0) {
        conc_buf_error(out, "ValueError: negative input %d", x);
        return 1;
    }
    int y = x * 10;
    return conc_buf_append(out, &y, sizeof y);
}

static atomic_int called;

static void when_done(conc_future *f, void *arg)
{
    const char *what = arg;
    conc_msg m;
    int err = conc_future_result(f, &m, 0); /* done: never blocks */
    if (err == 0) {
        int y;
        memcpy(&y, m.data, sizeof y);
        printf("callback for %s: result %d\n", what, y);
    } else {
        printf("callback for %s: failed (%d) with \"%s\"\n", what, err,
               conc_future_error_message(f));
    }
    conc_msg_free(&m);
    atomic_fetch_add(&called, 1);
}

int main(void)
{
    conc_pool *pool;
    int err = conc_pool_new(&pool, &(conc_pool_opts){ .workers = 3 });
    if (err != 0) {
        fprintf(stderr, "pool: %s\n", conc_strerror(err));
        return 1;
    }
    int ok = 1;
    /* 1. submit, then block on result() */
    int x = 10;
    conc_future *f;
    conc_pool_submit(pool, work, &x, sizeof x, &f);
    printf("submitted work(10); done yet? %s\n",
           conc_future_done(f) ? "yes" : "no");
    conc_msg m;
    err = conc_future_result(f, &m, 5.0);
    int y = 0;
    if (err == 0) {
        memcpy(&y, m.data, sizeof y);
    }
    printf("future.result() -> %d (done now? %s)\n", y,
           conc_future_done(f) ? "yes" : "no");
    ok &= err == 0 && y == 100;
    conc_msg_free(&m);
    conc_future_free(f);

    /* 2. submit with callbacks, and do not block at all */
    int a = 40, b = -1;
    conc_future *fa, *fb;
    conc_pool_submit(pool, work, &a, sizeof a, &fa);
    conc_pool_submit(pool, work, &b, sizeof b, &fb);
    conc_future_add_done_callback(fa, when_done, "work(40)");
    conc_future_add_done_callback(fb, when_done, "work(-1)");
    printf("callbacks registered; main goes on without waiting\n");
    conc_future_free(fa); /* the pool keeps what it needs */
    conc_future_free(fb);

    /* shutdown(wait=True): every submitted task, and its callback, ran */
    conc_pool_shutdown(pool, true, false);
    ok &= atomic_load(&called) == 2;
    printf("after shutdown(wait=True): %d callbacks ran\n",
           atomic_load(&called));
    conc_pool_free(pool);
    return ok ? 0 : 1;
}
