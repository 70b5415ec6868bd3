/* seed000_pool_apply_vs_apply_async.c - synchronous versus asynchronous
 * calls, with a process pool.  Seed 000 (同步/异步) contrasts:
 *
 *     multiprocessing.Pool().apply(f)        # synchronous: wait in place
 *     multiprocessing.Pool().apply_async(f)  # asynchronous: get a handle
 *                                            # now, the result later
 *
 * conc_pool_apply is apply: it returns only when the task is done, so
 * three calls take three task-times.  conc_pool_submit is apply_async: it
 * returns a future at once; three of them run side by side on three
 * workers and the caller collects the results afterwards, in about one
 * task-time.  Each task here waits 0.2 s (like the blocking I/O the seed
 * mentions), so the difference shows even on a single CPU.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* task(n): waits 0.2 s, returns n + the worker's pid (to show who ran it) */
static int task(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    int r[2];
    memcpy(&r[0], in, len < sizeof r[0] ? len : sizeof r[0]);
    struct timespec ts = { 0, 200 * 1000000L };
    nanosleep(&ts, NULL);
    r[1] = (int)getpid();
    return conc_buf_append(out, r, sizeof r);
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
    /* synchronous: apply, three times */
    double t0 = now();
    for (int i = 1; i <= 3; i++) {
        conc_msg m;
        err = conc_pool_apply(pool, task, &i, sizeof i, &m, 10.0);
        int r[2] = { 0, 0 };
        if (err == 0) {
            memcpy(r, m.data, sizeof r);
        }
        ok &= err == 0 && r[0] == i;
        printf("apply(task, %d) -> %d (worker pid %d), %.2f s in\n", i, r[0],
               r[1], now() - t0);
        conc_msg_free(&m);
    }
    double sync_s = now() - t0;
    printf("synchronous: 3 calls took %.2f s\n", sync_s);

    /* asynchronous: apply_async (submit) three times, then collect */
    t0 = now();
    conc_future *f[3];
    for (int i = 0; i < 3; i++) {
        int n = i + 1;
        conc_pool_submit(pool, task, &n, sizeof n, &f[i]);
    }
    printf("apply_async x3 returned after %.3f s; collecting...\n",
           now() - t0);
    for (int i = 0; i < 3; i++) {
        conc_msg m;
        err = conc_future_result(f[i], &m, 10.0);
        int r[2] = { 0, 0 };
        if (err == 0) {
            memcpy(r, m.data, sizeof r);
        }
        ok &= err == 0 && r[0] == i + 1;
        printf("result %d -> %d (worker pid %d)\n", i + 1, r[0], r[1]);
        conc_msg_free(&m);
        conc_future_free(f[i]);
    }
    double async_s = now() - t0;
    printf("asynchronous: 3 calls took %.2f s\n", async_s);
    printf("sync %.2f s vs async %.2f s\n", sync_s, async_s);
    ok &= sync_s >= 0.6;
    conc_pool_close(pool);
    conc_pool_join(pool, CONC_FOREVER);
    conc_pool_free(pool);
    return ok ? 0 : 1;
}
