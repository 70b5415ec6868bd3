/* seed001_7_redis_producers_consumers.c - producers and consumers that
 * share nothing but a URL.  Seed 001 ends its queue chapter with the
 * limit of everything so far: producers, consumers and the queue sit on
 * one computer, which is then a single point of failure and a ceiling;
 * the way out is a queue served over the network.  Here the buns of
 * seed001_5 travel through a queue on Redis: main starts three producer
 * programs and two consumer programs - separate programs (exec'd), given
 * only the queue's URL, as they would be on other hosts - waits for the
 * producers, then puts one end signal (an empty message) per consumer.
 * Each consumer acknowledges every bun with task_done (delivery is at
 * least once: a consumer that died holding a bun would give it back) and
 * reports it on a second queue, so main can check that all 18 buns were
 * eaten exactly once.
 *
 *   seed001_7_redis_producers_consumers [redis://host:port/db]
 * The server's URL comes from the argument or $CONC_REDIS_URL (the tour
 * starts a throwaway redis-server and sets it).  Queue names carry this
 * run's pid and time, so runs never meet on a server that persists.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { PRODUCERS = 3, CONSUMERS = 2, BUNS = 6 };

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int open_q(conc_queue **q, const char *url)
{
    int err = conc_queue_open(q, url);
    if (err != 0) {
        fprintf(stderr, "open %s: %s (%s)\n", url, conc_strerror(err),
                conc_errdetail());
    }
    return err;
}

/* A producer program: six buns on the queue at url. */
static int producer(const char *url, int id)
{
    conc_queue *q = NULL;
    if (open_q(&q, url) != 0) {
        return 1;
    }
    for (int i = 0; i < BUNS; i++) {
        char bun[32];
        int n = snprintf(bun, sizeof bun, "bun %d.%d", id, i);
        sleep_s(0.05);
        printf("producer %d (pid %d) made %s\n", id, (int)getpid(), bun);
        if (conc_queue_put(q, bun, (size_t)n, 10.0) != 0) {
            return 1;
        }
    }
    conc_queue_free(q);
    return 0;
}

/* A consumer program: eats buns until the end signal, reporting each on
 * the queue at eaten_url. */
static int consumer(const char *url, const char *eaten_url, int id)
{
    conc_queue *q = NULL, *eaten = NULL;
    if (open_q(&q, url) != 0 || open_q(&eaten, eaten_url) != 0) {
        return 1;
    }
    int rc = 0;
    for (;;) {
        char bun[32];
        size_t len = 0;
        int err = conc_queue_get_into(q, bun, sizeof bun - 1, &len, 10.0);
        if (err != 0) {
            printf("consumer %d: %s\n", id, conc_strerror(err));
            rc = 1;
            break;
        }
        if (len == 0) {
            printf("consumer %d got the end signal\n", id);
            conc_queue_task_done(q);
            break;
        }
        bun[len] = '\0';
        sleep_s(0.05);
        printf("consumer %d (pid %d) ate %s\n", id, (int)getpid(), bun);
        if (conc_queue_put(eaten, bun, len, 10.0) != 0 ||
            conc_queue_task_done(q) != 0) {
            rc = 1;
            break;
        }
    }
    conc_queue_free(eaten);
    conc_queue_free(q);
    return rc;
}

/* Starts this program again with args: a separate program that gets
 * nothing from us but its arguments. */
static pid_t spawn(char *const args[])
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execv("/proc/self/exe", args);
        _exit(127);
    }
    return pid;
}

static bool wait_ok(pid_t pid)
{
    int st = 0;
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
           WEXITSTATUS(st) == 0;
}

static int run(const char *server)
{
    char name[64], url[512], eaten_url[512];
    snprintf(name, sizeof name, "buns-%d-%ld", (int)getpid(),
             (long)time(NULL));
    snprintf(url, sizeof url, "%s/%s", server, name);
    snprintf(eaten_url, sizeof eaten_url, "%s/%s-eaten", server, name);
    conc_queue *q = NULL, *eaten = NULL;
    int err = conc_queue_new(&q, &(conc_queue_opts){ .url = server,
                                                      .name = name });
    if (err == 0) {
        char en[80];
        snprintf(en, sizeof en, "%s-eaten", name);
        err = conc_queue_new(&eaten, &(conc_queue_opts){ .url = server,
                                                          .name = en });
    }
    if (err != 0) {
        printf("main: %s (%s)\n", conc_strerror(err), conc_errdetail());
        return 1;
    }
    printf("main: queue %s on %s\n", name, server);
    pid_t kids[PRODUCERS + CONSUMERS];
    char ids[PRODUCERS + CONSUMERS][8];
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++) {
        bool prod = i < PRODUCERS;
        snprintf(ids[i], sizeof ids[i], "%d", prod ? i + 1 : i - PRODUCERS + 1);
        char *args[] = { "seed001_7", prod ? "producer" : "consumer", url,
                         ids[i], eaten_url, NULL };
        kids[i] = spawn(args);
    }
    bool ok = true;
    for (int i = 0; i < PRODUCERS; i++) {
        ok = wait_ok(kids[i]) && ok;
    }
    /* One end signal per consumer, once every producer is done. */
    for (int i = 0; i < CONSUMERS && ok; i++) {
        ok = conc_queue_put(q, NULL, 0, 10.0) == 0;
    }
    for (int i = PRODUCERS; i < PRODUCERS + CONSUMERS; i++) {
        ok = wait_ok(kids[i]) && ok;
    }
    ok = ok && conc_queue_join(q, 10.0) == 0; /* every bun task_done'd */
    int count[PRODUCERS][BUNS] = { { 0 } };
    int total = 0;
    char bun[32];
    size_t len = 0;
    while (conc_queue_get_into(eaten, bun, sizeof bun - 1, &len, 0) == 0) {
        bun[len] = '\0';
        int p = 0, i = 0;
        if (sscanf(bun, "bun %d.%d", &p, &i) == 2 && p >= 1 &&
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
    printf("main: all done - %d buns eaten\n", total);
    conc_queue_free(eaten);
    conc_queue_free(q);
    printf("%s\n", ok ? "OK: every bun eaten exactly once, across programs"
                      : "FAILED");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 4 && strcmp(argv[1], "producer") == 0) {
        return producer(argv[2], atoi(argv[3]));
    }
    if (argc >= 5 && strcmp(argv[1], "consumer") == 0) {
        return consumer(argv[2], argv[4], atoi(argv[3]));
    }
    const char *server = argc > 1 ? argv[1] : getenv("CONC_REDIS_URL");
    if (server == NULL) {
        fprintf(stderr, "usage: %s redis://host:port/db (or set "
                "CONC_REDIS_URL)\n", argv[0]);
        return 2;
    }
    return run(server);
}
