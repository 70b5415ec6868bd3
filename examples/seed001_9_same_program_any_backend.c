/* seed001_9_same_program_any_backend.c - seed 001's producers and
 * consumers as separate programs that share only where the queue is, and
 * the same program moved from one computer's shared memory to Redis or
 * RabbitMQ by that one string.
 *
 * main makes two queues (the buns, and one where consumers report what
 * they ate), then execs two producer and two consumer programs, giving
 * each nothing but the queues' locations; producers put five buns each,
 * consumers eat until an end signal (an empty message) and acknowledge
 * each bun with task_done.  main waits for the producers, puts one end
 * signal per consumer, waits for the consumers, and checks that every
 * bun was eaten exactly once.  Not one line differs between backends:
 *
 *   seed001_9_same_program_any_backend                 shared memory
 *   seed001_9_same_program_any_backend redis://127.0.0.1:6379/0
 *   seed001_9_same_program_any_backend amqp://guest:guest@127.0.0.1/%2f
 *
 * Without an argument $CONC_QUEUE_SERVER is used when set (the tour sets
 * it to a throwaway broker), else shared memory.  On a server the
 * location is URL/NAME; in shared memory it is the segment's NAME.  Queue
 * names carry this run's pid and time, so runs never meet.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { NPROD = 2, NCONS = 2, NBUNS = 5 };

static conc_queue *attach(const char *where)
{
    conc_queue *q = NULL;
    int err = conc_queue_open(&q, where);
    if (err != 0) {
        fprintf(stderr, "%s: %s (%s)\n", where, conc_strerror(err),
                conc_errdetail());
    }
    return q;
}

static int produce(const char *where, int id)
{
    conc_queue *q = attach(where);
    for (int i = 0; q != NULL && i < NBUNS; i++) {
        char bun[24];
        int n = snprintf(bun, sizeof bun, "bun %d.%d", id, i);
        if (conc_queue_put(q, bun, (size_t)n, 10.0) != 0) {
            return 1;
        }
        printf("producer %d made %s\n", id, bun);
    }
    conc_queue_free(q);
    return q == NULL;
}

static int consume(const char *where, const char *report_to, int id)
{
    conc_queue *q = attach(where), *eaten = attach(report_to);
    int rc = q == NULL || eaten == NULL;
    while (rc == 0) {
        conc_msg bun;
        if (conc_queue_get(q, &bun, 10.0) != 0) {
            rc = 1;
            break;
        }
        bool end = bun.len == 0;
        if (!end) {
            printf("consumer %d ate %.*s\n", id, (int)bun.len,
                   (char *)bun.data);
            rc = conc_queue_put(eaten, bun.data, bun.len, 10.0) != 0;
        }
        conc_msg_free(&bun);
        rc = rc || conc_queue_task_done(q) != 0;
        if (end) {
            break;
        }
    }
    conc_queue_free(eaten);
    conc_queue_free(q);
    return rc;
}

/* Makes queue name at server (NULL: shared memory); *where gets how the
 * other programs reach it. */
static conc_queue *make(const char *server, const char *name, char *where,
                        size_t cap)
{
    conc_queue *q = NULL;
    int err = conc_queue_new(&q, &(conc_queue_opts){ .url = server,
                                                      .name = name });
    if (err != 0) {
        printf("main: %s (%s)\n", conc_strerror(err), conc_errdetail());
        return NULL;
    }
    if (server != NULL) {
        snprintf(where, cap, "%s/%s", server, name);
    } else {
        snprintf(where, cap, "%s", name);
    }
    return q;
}

static pid_t start(const char *role, const char *where, int id,
                   const char *report_to)
{
    char sid[8];
    snprintf(sid, sizeof sid, "%d", id);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", "seed001_9", role, where, sid, report_to,
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

static bool finished(pid_t pid)
{
    int st = 0;
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
           WEXITSTATUS(st) == 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && strcmp(argv[1], "producer") == 0) {
        return produce(argv[2], atoi(argv[3]));
    }
    if (argc == 5 && strcmp(argv[1], "consumer") == 0) {
        return consume(argv[2], argv[4], atoi(argv[3]));
    }
    const char *server = argc > 1 ? argv[1] : getenv("CONC_QUEUE_SERVER");
    if (server != NULL && server[0] == '\0') {
        server = NULL;
    }
    char name[64], rname[80], where[600], report_to[600];
    snprintf(name, sizeof name, "buns-%d-%ld", (int)getpid(),
             (long)time(NULL));
    snprintf(rname, sizeof rname, "%s-eaten", name);
    conc_queue *buns = make(server, name, where, sizeof where);
    conc_queue *eaten = buns != NULL
                            ? make(server, rname, report_to, sizeof report_to)
                            : NULL;
    if (eaten == NULL) {
        conc_queue_free(buns);
        return 1;
    }
    printf("main: the queue is %s\n",
           server != NULL ? "on a server" : "in shared memory");
    pid_t kids[NPROD + NCONS];
    for (int i = 0; i < NPROD + NCONS; i++) {
        kids[i] = start(i < NPROD ? "producer" : "consumer", where,
                        i < NPROD ? i + 1 : i - NPROD + 1, report_to);
    }
    bool ok = true;
    for (int i = 0; i < NPROD; i++) {
        ok = finished(kids[i]) && ok;
    }
    for (int i = 0; i < NCONS && ok; i++) {
        ok = conc_queue_put(buns, NULL, 0, 10.0) == 0;
    }
    for (int i = NPROD; i < NPROD + NCONS; i++) {
        ok = finished(kids[i]) && ok;
    }
    int seen[NPROD][NBUNS] = { { 0 } }, total = 0;
    conc_msg m;
    while (conc_queue_get(eaten, &m, 0.5) == 0) {
        char text[24] = { 0 };
        memcpy(text, m.data, m.len < sizeof text - 1 ? m.len : 0);
        conc_msg_free(&m);
        int p = 0, i = 0;
        ok = ok && sscanf(text, "bun %d.%d", &p, &i) == 2 && p >= 1 &&
             p <= NPROD && i >= 0 && i < NBUNS;
        if (ok) {
            seen[p - 1][i]++;
            total++;
        }
    }
    for (int p = 0; p < NPROD; p++) {
        for (int i = 0; i < NBUNS; i++) {
            ok = ok && seen[p][i] == 1;
        }
    }
    conc_queue_free(eaten);
    conc_queue_free(buns);
    printf("main: %d buns eaten\n%s\n", total,
           ok ? "OK: every bun eaten exactly once, across programs"
              : "FAILED");
    return ok ? 0 : 1;
}
