/* seed003_pool_1_map_squares.c - map a function over a list with a pool.
 * Ports seed 003's two map examples:
 *
 *     with Pool(5) as p:                       # processes
 *         print(p.map(f, [1, 2, 3]))           # [1, 4, 9]
 *
 *     with ThreadPoolExecutor(max_workers=4, thread_name_prefix="test_") as pool:
 *         for i in pool.map(f, [1, 2, 3, 4]):  # 1 4 9 16
 *             print(i)
 *
 * One engine serves both: conc_pool with .kind = CONC_PROCESSES (forked
 * workers, Python's Pool) or CONC_THREADS (ThreadPoolExecutor).  A task
 * takes bytes and appends bytes; here an int in and its square out.
 * Results come back in input order whatever order the workers finish in.
 * The thread version uses conc_pool_imap, whose iterator hands out each
 * result as soon as it and those before it are done (Executor.map).
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <stdio.h>
#include <string.h>

static int f(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    int x;
    if (len != sizeof x) {
        conc_buf_error(out, "want an int, got %zu bytes", len);
        return 1;
    }
    memcpy(&x, in, sizeof x);
    int y = x * x;
    return conc_buf_append(out, &y, sizeof y);
}

static int as_int(const conc_msg *m)
{
    int v = 0;
    memcpy(&v, m->data, sizeof v);
    return v;
}

int main(void)
{
    int ok = 1;
    /* with Pool(5) as p: print(p.map(f, [1, 2, 3])) */
    conc_pool *p;
    int err = conc_pool_new(&p, &(conc_pool_opts){ .kind = CONC_PROCESSES,
                                                   .workers = 5 });
    if (err != 0) {
        fprintf(stderr, "pool: %s\n", conc_strerror(err));
        return 1;
    }
    int xs[3] = { 1, 2, 3 };
    conc_msg in[3], out[3];
    for (int i = 0; i < 3; i++) {
        in[i] = (conc_msg){ &xs[i], sizeof xs[i] };
    }
    err = conc_pool_map(p, f, in, 3, out, NULL);
    if (err != 0) {
        fprintf(stderr, "map: %s\n", conc_strerror(err));
        ok = 0;
    } else {
        printf("Pool(5).map(f, [1, 2, 3]) -> [%d, %d, %d]\n", as_int(&out[0]),
               as_int(&out[1]), as_int(&out[2]));
        ok &= as_int(&out[0]) == 1 && as_int(&out[1]) == 4 &&
              as_int(&out[2]) == 9;
    }
    for (int i = 0; i < 3; i++) {
        conc_msg_free(&out[i]);
    }
    conc_pool_free(p); /* leaving `with Pool()` terminates it */

    /* ThreadPoolExecutor(max_workers=4, thread_name_prefix="test_") */
    err = conc_pool_new(&p, &(conc_pool_opts){ .kind = CONC_THREADS,
                                               .workers = 4,
                                               .name_prefix = "test_" });
    if (err != 0) {
        fprintf(stderr, "pool: %s\n", conc_strerror(err));
        return 1;
    }
    int ys[4] = { 1, 2, 3, 4 };
    conc_msg yin[4];
    for (int i = 0; i < 4; i++) {
        yin[i] = (conc_msg){ &ys[i], sizeof ys[i] };
    }
    conc_iter *it;
    err = conc_pool_imap(p, f, yin, 4, &it, NULL);
    if (err != 0) {
        fprintf(stderr, "imap: %s\n", conc_strerror(err));
        return 1;
    }
    printf("ThreadPoolExecutor(4).map(f, [1, 2, 3, 4]):\n");
    conc_msg m;
    int n = 0;
    while ((err = conc_iter_next(it, &m, CONC_FOREVER)) != CONC_ECLOSED) {
        if (err != 0) {
            fprintf(stderr, "item: %s\n", conc_strerror(err));
            ok = 0;
            break;
        }
        printf("%d\n", as_int(&m));
        ok &= as_int(&m) == ys[n] * ys[n];
        n++;
        conc_msg_free(&m);
    }
    ok &= n == 4;
    conc_iter_free(it);
    conc_pool_shutdown(p, true, false); /* pool.shutdown(wait=True) */
    conc_pool_free(p);
    printf("%s\n", ok ? "both maps gave the squares in input order"
                      : "WRONG RESULTS");
    return ok ? 0 : 1;
}
