/* seed001_6_queue_joinable_daemons.c - JoinableQueue: no sentinels.  Ports
 * "Producer Consumer Model 3" of seed 004 (and JoinableQueue of seeds 000
 * and 001): three producers make buns, bones and swill (three of each;
 * the seed sleeps 2 s per item, here 0.05 s) and then call q.join(),
 * which returns only once every item they put has been task_done()'d.
 * Two consumers, started as daemons, eat forever (the seed: 1-3 s per
 * item, here 20-60 ms) and call task_done() after each.  main joins the
 * three producers and prints "Master": by then every item has been eaten,
 * and the daemon consumers - blocked in get() - are terminated when main
 * returns.  The program ends by itself, with no end signal at all.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { PRODUCERS = 3, CONSUMERS = 2, ITEMS = 3 };

static conc_queue *q;

static const char *const kinds[PRODUCERS] = { "Bun", "Bone", "Swill" };

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int consumer(void *arg)
{
    (void)arg;
    unsigned seed = (unsigned)getpid();
    for (;;) {
        char res[32];
        size_t len = 0;
        int err = conc_queue_get_into(q, res, sizeof res - 1, &len,
                                      CONC_FOREVER);
        if (err != 0) {
            printf("consumer: %s\n", conc_strerror(err));
            return 1;
        }
        res[len] = '\0';
        sleep_s(0.02 * (1 + rand_r(&seed) % 3)); /* randint(1, 3) */
        printf("%d ate %s\n", (int)getpid(), res);
        conc_queue_task_done(q);
    }
}

static int producer(void *arg)
{
    const char *kind = arg;
    for (int i = 0; i < ITEMS; i++) {
        char res[32];
        int n = snprintf(res, sizeof res, "%s%d", kind, i);
        sleep_s(0.05);
        if (conc_queue_put(q, res, (size_t)n, 10.0) != 0) {
            return 1;
        }
        printf("%d was manufactured %s\n", (int)getpid(), res);
    }
    /* q.join(): wait until the consumers have dealt with everything. */
    return conc_queue_join(q, 30.0) == 0 ? 0 : 1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_process *ps[PRODUCERS + CONSUMERS] = { 0 };
    int err = conc_queue_new(&q, NULL);
    for (int i = 0; i < PRODUCERS + CONSUMERS && err == 0; i++) {
        bool prod = i < PRODUCERS;
        err = conc_process_new(&ps[i], &(conc_process_opts){
                                           .target = prod ? producer
                                                          : consumer,
                                           .arg = prod ? (void *)kinds[i]
                                                       : NULL,
                                           .daemon = !prod });
        if (err == 0) {
            err = conc_process_start(ps[i]);
        }
    }
    int codes = 0;
    for (int i = 0; i < PRODUCERS && err == 0; i++) {
        int code = -1;
        err = conc_process_join(ps[i], 30.0);
        if (err == 0) {
            err = conc_process_exitcode(ps[i], &code);
        }
        codes |= code;
    }
    printf("Master\n");
    /* The producers' joins returned, so nothing is left undone. */
    bool ok = err == 0 && codes == 0 && conc_queue_empty(q) &&
              conc_queue_join(q, 0) == 0;
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
    }
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++) {
        conc_process_free(ps[i]);
    }
    printf("%s\n", ok ? "OK: all eaten; the daemon consumers end with main"
                      : "FAILED");
    /* The queue stays mapped until exit: the daemon consumers, blocked in
     * get(), are terminated as main returns. */
    return ok ? 0 : 1;
}
