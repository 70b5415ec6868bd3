/* seed002_queue_threads_bounded.c - a producer thread and a consumer
 * thread on queue.Queue(5).  Ports seed 002's threaded producer/consumer:
 * the producer puts random digits, printing "the queue is full" when
 * q.full() says so; the consumer gets and prints them.  The seed loops
 * for ever (its run ends in a KeyboardInterrupt) and its producer spins
 * printing while the queue is full; here the producer makes 12 digits,
 * one per 20 ms, blocks in put() while the queue is full, and ends with an
 * empty message as the end signal; the consumer is slower (60 ms per
 * item), so the queue fills up and never holds more than five.  The
 * consumer calls task_done() for each item and main's q.join() returns
 * once all are done.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { ITEMS = 12, MAXSIZE = 5 };

static conc_queue *q;
static int produced[ITEMS];

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void *producer(void *arg)
{
    (void)arg;
    unsigned seed = 2002;
    for (int i = 0; i < ITEMS; i++) {
        unsigned char r = (unsigned char)(rand_r(&seed) % 10);
        produced[i] = r;
        if (conc_queue_full(q)) {
            printf("the queue is full\n");
        }
        if (conc_queue_put(q, &r, 1, 10.0) != 0) {
            return (void *)(intptr_t)1;
        }
        printf("put %d on the queue\n", r);
        if (conc_queue_qsize(q) > MAXSIZE) {
            return (void *)(intptr_t)2;
        }
        sleep_s(0.02);
    }
    return conc_queue_put(q, NULL, 0, 10.0) == 0 ? NULL
                                                  : (void *)(intptr_t)3;
}

static void *consumer(void *arg)
{
    (void)arg;
    for (int i = 0;; i++) {
        unsigned char r = 0;
        size_t len = 0;
        int err = conc_queue_get_into(q, &r, 1, &len, 10.0);
        if (err != 0) {
            return (void *)(intptr_t)4;
        }
        conc_queue_task_done(q);
        if (len == 0) {
            return i == ITEMS ? NULL : (void *)(intptr_t)5;
        }
        printf("got %d from the queue\n", r);
        if (i >= ITEMS || r != produced[i]) {
            return (void *)(intptr_t)6; /* FIFO broken */
        }
        sleep_s(0.06);
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_thread *p = NULL, *c = NULL;
    int err = conc_queue_new(&q, &(conc_queue_opts){ .maxsize = MAXSIZE });
    if (err == 0) {
        err = conc_thread_new(&p, &(conc_thread_opts){ .target = producer,
                                                       .name = "producer" });
    }
    if (err == 0) {
        err = conc_thread_new(&c, &(conc_thread_opts){ .target = consumer,
                                                       .name = "consumer" });
    }
    if (err == 0) {
        err = conc_thread_start(p);
    }
    if (err == 0) {
        err = conc_thread_start(c);
    }
    void *rp = (void *)(intptr_t)-1, *rc = (void *)(intptr_t)-1;
    if (err == 0) {
        err = conc_thread_join(p, 30.0);
    }
    if (err == 0) {
        err = conc_thread_join(c, 30.0);
    }
    if (err == 0) {
        conc_thread_result(p, &rp);
        conc_thread_result(c, &rc);
        err = conc_queue_join(q, 5.0); /* q.join() */
    }
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
    }
    bool ok = err == 0 && rp == NULL && rc == NULL;
    printf("main: q.join() returned; %s\n",
           ok ? "OK: 12 items in order, never more than 5 queued"
              : "FAILED");
    conc_thread_free(p);
    conc_thread_free(c);
    conc_queue_free(q);
    return ok ? 0 : 1;
}
