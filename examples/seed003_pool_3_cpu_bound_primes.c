/* seed003_pool_3_cpu_bound_primes.c - a CPU-bound map on 1 and then 2
 * worker processes.  Seed 003 (concurrent.futures中的密集并发处理): use
 * the pool's map() instead of the built-in map() to spread a map-reduce
 * over the CPUs, out of the GIL's reach:
 *
 *     with ProcessPoolExecutor() as pool:
 *         results = pool.map(work, data)
 *
 * Here work(range) counts the primes in a range of integers by trial
 * division, and the reduce adds the counts.  The same map runs on a pool
 * of 1 worker and on a pool of 2: on a machine with two free cores the
 * second should take about half the time (the speed-up is printed; other
 * load on the machine lowers it).  An optional argument sets the upper
 * bound (default 3,000,000).
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* work([lo, hi)): how many primes lie in the range */
static int work(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    uint64_t r[2];
    if (len != sizeof r) {
        return 1;
    }
    memcpy(r, in, sizeof r);
    uint64_t count = 0;
    for (uint64_t n = r[0]; n < r[1]; n++) {
        if (n < 2) {
            continue;
        }
        int prime = 1;
        for (uint64_t d = 2; d * d <= n; d++) {
            if (n % d == 0) {
                prime = 0;
                break;
            }
        }
        count += (uint64_t)prime;
    }
    return conc_buf_append(out, &count, sizeof count);
}

static int run(size_t workers, uint64_t limit, uint64_t *total, double *secs)
{
    enum { PARTS = 64 };
    uint64_t ranges[PARTS][2];
    conc_msg in[PARTS], out[PARTS];
    for (int i = 0; i < PARTS; i++) {
        ranges[i][0] = limit * (uint64_t)i / PARTS;
        ranges[i][1] = limit * (uint64_t)(i + 1) / PARTS;
        in[i] = (conc_msg){ ranges[i], sizeof ranges[i] };
    }
    conc_pool *pool;
    int err = conc_pool_new(&pool, &(conc_pool_opts){ .workers = workers });
    if (err != 0) {
        return err;
    }
    double t0 = now();
    /* chunksize 1: 64 uneven tasks (later ranges cost more) balance
     * better one by one than in 8 big chunks */
    err = conc_pool_map(pool, work, in, PARTS, out,
                        &(conc_map_opts){ .chunksize = 1 });
    *secs = now() - t0;
    *total = 0;
    for (int i = 0; i < PARTS; i++) {
        uint64_t c = 0;
        if (out[i].len == sizeof c) {
            memcpy(&c, out[i].data, sizeof c);
        }
        *total += c;
        conc_msg_free(&out[i]);
    }
    conc_pool_free(pool);
    return err;
}

int main(int argc, char **argv)
{
    uint64_t limit = argc > 1 ? strtoull(argv[1], NULL, 10) : 3000000;
    uint64_t t1, t2;
    double s1, s2;
    if (run(1, limit, &t1, &s1) != 0 || run(2, limit, &t2, &s2) != 0) {
        fprintf(stderr, "map failed\n");
        return 1;
    }
    printf("primes below %llu: %llu (1 worker, %.3f s)\n",
           (unsigned long long)limit, (unsigned long long)t1, s1);
    printf("primes below %llu: %llu (2 workers, %.3f s)\n",
           (unsigned long long)limit, (unsigned long long)t2, s2);
    printf("speed-up with 2 workers: %.2fx\n", s2 > 0 ? s1 / s2 : 0.0);
    return t1 == t2 ? 0 : 1;
}
