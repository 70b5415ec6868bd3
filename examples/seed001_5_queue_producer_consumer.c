/* seed001_5_queue_producer_consumer.c - producers and consumers, one
 * sentinel per consumer.  Ports the producer-consumer model of seeds 000
 * (3.10), 001 and 004: three producer processes each make six buns
 * ('包子0'..'包子5'; the seed sleeps 0.5 s per bun, here 0.05 s) and put
 * them on one queue; two consumer processes take buns until they get the
 * end signal (the seed's None; here an empty message) and "eat" each one
 * (the seed: 1 s, here 0.05 s).  main joins the producers, then puts one
 * sentinel per consumer - "as many signals as there are consumers" - and
 * joins the consumers.  Every consumer also reports each bun it ate on a
 * second queue, so main can check that all 18 were eaten exactly once.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { PRODUCERS = 3, CONSUMERS = 2, BUNS = 6 };

static conc_queue *q;     /* buns, then the sentinels */
static conc_queue *eaten; /* what the consumers ate, for main's check */

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int producer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < BUNS; i++) {
        char res[32];
        int n = snprintf(res, sizeof res, "bun %d.%d", id, i);
        sleep_s(0.05);
        printf("producer %d made %s\n", id, res);
        if (conc_queue_put(q, res, (size_t)n, 10.0) != 0) {
            return 1;
        }
    }
    return 0;
}

static int consumer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (;;) {
        char res[32];
        size_t len = 0;
        int err = conc_queue_get_into(q, res, sizeof res - 1, &len, 10.0);
        if (err != 0) {
            printf("consumer %d: %s\n", id, conc_strerror(err));
            return 1;
        }
        if (len == 0) {
            printf("consumer %d got the end signal\n", id);
            return 0; /* if res is None: break */
        }
        res[len] = '\0';
        sleep_s(0.05);
        printf("consumer %d (pid %d) ate %s\n", id, (int)getpid(), res);
        if (conc_queue_put(eaten, res, len, 10.0) != 0) {
            return 1;
        }
    }
}

static int run_all(conc_process **ps)
{
    int err = 0;
    for (int i = 0; i < PRODUCERS + CONSUMERS && err == 0; i++) {
        bool prod = i < PRODUCERS;
        int id = prod ? i + 1 : i - PRODUCERS + 1;
        err = conc_process_new(&ps[i], &(conc_process_opts){
                                           .target = prod ? producer
                                                          : consumer,
                                           .arg = (void *)(intptr_t)id });
        if (err == 0) {
            err = conc_process_start(ps[i]);
        }
    }
    for (int i = 0; i < PRODUCERS && err == 0; i++) {
        err = conc_process_join(ps[i], 30.0);
    }
    /* One end signal per consumer, once every producer is done. */
    for (int i = 0; i < CONSUMERS && err == 0; i++) {
        err = conc_queue_put(q, NULL, 0, 10.0);
    }
    for (int i = PRODUCERS; i < PRODUCERS + CONSUMERS && err == 0; i++) {
        err = conc_process_join(ps[i], 30.0);
    }
    for (int i = 0; i < PRODUCERS + CONSUMERS && err == 0; i++) {
        int code = -1;
        err = conc_process_exitcode(ps[i], &code);
        if (err == 0 && code != 0) {
            err = CONC_ETASK;
        }
    }
    return err;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_process *ps[PRODUCERS + CONSUMERS] = { 0 };
    int err = conc_queue_new(&q, NULL);
    if (err == 0) {
        err = conc_queue_new(&eaten, NULL);
    }
    if (err == 0) {
        err = run_all(ps);
    }
    int count[PRODUCERS][BUNS] = { { 0 } };
    int total = 0;
    bool ok = err == 0;
    while (err == 0) {
        char res[32];
        size_t len = 0;
        if (conc_queue_get_into(eaten, res, sizeof res - 1, &len, 0) != 0) {
            break;
        }
        res[len] = '\0';
        int p = 0, i = 0;
        if (sscanf(res, "bun %d.%d", &p, &i) == 2 && p >= 1 &&
            p <= PRODUCERS && i >= 0 && i < BUNS) {
            count[p - 1][i]++;
            total++;
        } else {
            ok = false;
        }
    }
    for (int p = 0; p < PRODUCERS; p++) {
        for (int i = 0; i < BUNS; i++) {
            ok = ok && count[p][i] == 1;
        }
    }
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
    }
    printf("main: all done - %d buns eaten\n", total);
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++) {
        conc_process_free(ps[i]);
    }
    conc_queue_free(eaten);
    conc_queue_free(q);
    printf("%s\n", ok ? "OK: every bun eaten exactly once" : "FAILED");
    return ok ? 0 : 1;
}
