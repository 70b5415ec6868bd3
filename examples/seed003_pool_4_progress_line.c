/* seed003_pool_4_progress_line.c - a long map with a live progress line,
 * its inputs produced as they are needed, and a worker killed halfway.
 * What people write in Python with tqdm over imap_unordered:
 *
 *     with Pool(2) as pool:
 *         for r in tqdm(pool.imap_unordered(work, ranges()), total=n):
 *             ...
 *
 * Here ranges() is a generator of [lo, hi) ranges: the pool takes them
 * from it (conc_pool_imap_unordered_feed) only as results are consumed,
 * at most 64 ahead, so a job of any length runs in bounded memory.  Each
 * item counts the primes in its range.  conc_iter_progress gives the
 * counts for the line (done/total, rate, eta), and conc_pool_worker_info
 * shows the workers (Python's pool._pool).  Halfway through, one busy
 * worker is killed: only the item it was running fails, with
 * CONC_EWORKERDIED (Python's imap would lose that item and hang), a new
 * worker takes its place and the run goes on.  On a terminal the line is
 * redrawn in place; otherwise it is printed every 20%.  An optional
 * argument sets the number of items (default 2000).
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SPAN 2000 /* numbers per item */

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
    for (uint64_t n = r[0] < 2 ? 2 : r[0]; n < r[1]; n++) {
        uint64_t d = 2;
        while (d * d <= n && n % d != 0) {
            d++;
        }
        count += d * d > n;
    }
    return conc_buf_append(out, &count, sizeof count);
}

/* The generator: the next range, until n of them were given. */
struct ranges {
    uint64_t next, n;
    uint64_t buf[2];
};

static int next_range(void *arg, const void **data, size_t *len)
{
    struct ranges *g = arg;
    if (g->next == g->n) {
        return 0;
    }
    g->buf[0] = g->next * SPAN;
    g->buf[1] = (g->next + 1) * SPAN;
    g->next++;
    *data = g->buf;
    *len = sizeof g->buf;
    return 1;
}

static void line(FILE *f, const conc_progress *pr, size_t total, double t0,
                 bool tty)
{
    double dt = now() - t0;
    double rate = dt > 0 ? (double)pr->done / dt : 0;
    double eta = rate > 0 ? (double)(total - pr->done) / rate : 0;
    int width = 30, fill = (int)((double)width * (double)pr->done /
                                 (double)(total ? total : 1));
    fprintf(f, "%s[%.*s%*s] %zu/%zu  %.0f items/s  eta %.1f s%s",
            tty ? "\r" : "  ", fill, "==============================",
            width - fill, "", pr->done, total, rate, eta, tty ? "" : "\n");
    fflush(f);
}

static const char *state_name(conc_worker_state s)
{
    switch (s) {
    case CONC_WORKER_STARTING: return "starting";
    case CONC_WORKER_IDLE: return "idle";
    case CONC_WORKER_BUSY: return "busy";
    case CONC_WORKER_EXITING: return "exiting";
    default: return "none";
    }
}

int main(int argc, char **argv)
{
    size_t total = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000;
    bool tty = isatty(STDOUT_FILENO);
    conc_pool *pool;
    int err = conc_pool_new(&pool, &(conc_pool_opts){ .workers = 2 });
    if (err != 0) {
        fprintf(stderr, "pool: %s\n", conc_errdetail());
        return 1;
    }
    struct ranges gen = { .n = total };
    conc_iter *it;
    err = conc_pool_imap_unordered_feed(pool, work, next_range, &gen, &it,
                                        &(conc_map_opts){ .buffersize = 64 });
    if (err != 0) {
        fprintf(stderr, "imap: %s\n", conc_errdetail());
        conc_pool_free(pool);
        return 1;
    }
    printf("counting primes below %zu in %zu items on 2 worker processes\n",
           total * SPAN, total);
    double t0 = now(), last = 0;
    uint64_t primes = 0;
    size_t ok = 0, failed = 0, next_mark = total / 5, held_max = 0;
    bool shown = false, killed = false;
    char failure[256] = "";
    for (;;) {
        conc_msg m;
        err = conc_iter_next(it, &m, 0.1);
        if (err == CONC_ECLOSED) {
            break;
        }
        if (err == 0 && m.len == sizeof(uint64_t)) {
            uint64_t c;
            memcpy(&c, m.data, sizeof c);
            primes += c;
            ok++;
        } else if (err != CONC_ETIMEDOUT) {
            failed++;
            snprintf(failure, sizeof failure, "item %zu failed: %s (%s)",
                     conc_iter_index(it), conc_errname(err),
                     conc_iter_error_message(it) ? conc_iter_error_message(it)
                                                 : "");
        }
        conc_msg_free(&m);
        conc_progress pr;
        conc_iter_progress(it, &pr);
        size_t held = gen.next - pr.returned;
        held_max = held > held_max ? held : held_max;
        if (!shown && pr.done >= total / 2) {
            /* Halfway: show the workers. */
            conc_worker_info w[2];
            size_t n;
            conc_pool_worker_info(pool, w, 2, &n);
            printf("%s", tty ? "\n" : "");
            for (size_t i = 0; i < n; i++) {
                printf("  worker %s pid %d: %s, %zu items done",
                       w[i].name, (int)w[i].pid, state_name(w[i].state),
                       w[i].tasks_done);
                if (w[i].task_item != SIZE_MAX) {
                    printf(", on item %zu for %.3f s", w[i].task_item,
                           w[i].task_seconds);
                }
                printf("\n");
            }
            shown = true;
        }
        if (shown && !killed) {
            /* Then kill the first worker seen busy. */
            conc_worker_info w[2];
            size_t n;
            conc_pool_worker_info(pool, w, 2, &n);
            for (size_t i = 0; i < n && !killed; i++) {
                if (w[i].state == CONC_WORKER_BUSY) {
                    kill(w[i].pid, SIGKILL);
                    printf("  killed %s (pid %d) on item %zu at %zu/%zu\n",
                           w[i].name, (int)w[i].pid, w[i].task_item,
                           pr.done, total);
                    killed = true;
                }
            }
        }
        if (tty ? now() - last >= 0.1
                : pr.done >= next_mark && next_mark < total) {
            line(stdout, &pr, total, t0, tty);
            last = now();
            next_mark += total / 5;
        }
    }
    conc_progress pr;
    conc_iter_progress(it, &pr);
    line(stdout, &pr, total, t0, tty);
    if (tty) {
        printf("\n");
    }
    printf("done: %zu ok, %zu failed, of %zu (%s)\n", ok, failed, pr.total,
           pr.total_known ? "the generator ended" : "more to come");
    if (failure[0] != '\0') {
        printf("%s\n", failure);
    }
    printf("primes counted in the items that succeeded: %llu\n",
           (unsigned long long)primes);
    printf("inputs held at most: %zu (buffersize 64)\n", held_max);
    conc_iter_free(it);
    conc_pool_free(pool);
    return ok + failed == total ? 0 : 1;
}
