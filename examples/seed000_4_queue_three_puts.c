/* seed000_4_queue_three_puts.c - Queue(3): a bounded FIFO between
 * processes.  Ports the Queue demo of seeds 000 (3.9), 001 and 004:
 * q = Queue(3); three puts fill it, so q.full() is True; a fourth put
 * would block for ever in the seed (the line is commented out there) -
 * here it waits 0.3 s and gives up with CONC_EFULL (Python's queue.Full);
 * three gets return the items first in, first out; q.empty() is True; and
 * the seed's last q.get(), which "gets stuck, nothing to take", returns
 * CONC_EEMPTY at once with timeout 0 (get_nowait).
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *items[3] = { "hello", "{'a': 1}", "[3, 3, 3]" };
    conc_queue *q = NULL;
    int err = conc_queue_new(&q, &(conc_queue_opts){ .maxsize = 3 });
    if (err != 0) {
        printf("Queue(3): %s\n", conc_strerror(err));
        return 1;
    }
    bool ok = true;
    for (int i = 0; i < 3 && ok; i++) {
        err = conc_queue_put(q, items[i], strlen(items[i]), CONC_FOREVER);
        printf("q.put(%s) -> %s\n", items[i], conc_errname(err));
        ok = err == 0;
    }
    bool full = conc_queue_full(q);
    printf("q.full() -> %s\n", full ? "True" : "False");
    ok = ok && full;

    double t0 = now();
    err = conc_queue_put(q, "fourth", 6, 0.3);
    double waited = now() - t0;
    printf("q.put(fourth, timeout=0.3) -> %s after %.2f s\n",
           conc_errname(err), waited);
    ok = ok && err == CONC_EFULL && waited >= 0.3;

    for (int i = 0; i < 3 && ok; i++) {
        char buf[64];
        size_t len = 0;
        err = conc_queue_get_into(q, buf, sizeof buf - 1, &len, 1.0);
        if (err != 0) {
            printf("q.get() -> %s\n", conc_errname(err));
            ok = false;
            break;
        }
        buf[len] = '\0';
        printf("q.get() -> %s\n", buf);
        ok = strcmp(buf, items[i]) == 0; /* first in, first out */
    }
    bool empty = conc_queue_empty(q);
    printf("q.empty() -> %s\n", empty ? "True" : "False");
    ok = ok && empty;

    conc_msg m;
    err = conc_queue_get(q, &m, 0);
    printf("q.get_nowait() -> %s (the seed's q.get() would hang here)\n",
           conc_errname(err));
    ok = ok && err == CONC_EEMPTY;
    conc_queue_free(q);
    printf("%s\n", ok ? "OK: FIFO, bounded at 3, nothing hangs"
                      : "FAILED");
    return ok ? 0 : 1;
}
