/* seed002_redis_word_count.c - a word count spread over worker programs
 * through Redis, exact even when a worker is killed.  Seed 002 counts
 * words into a shared dict; here the work itself is shared out, as a
 * job system would: main cuts a text into 40 chunks and puts them on a
 * queue on Redis; three worker programs (separate programs that know only
 * the server's URL) take chunks, count their words, and store each
 * chunk's counts in a dict on Redis under the chunk's own key - so
 * writing a chunk twice writes the same thing, which makes a repeated
 * chunk harmless - then task_done.  Midway main kills one worker with
 * SIGKILL while it works on a chunk.  The queue delivers at least once:
 * the dead worker's chunk comes back to the others when its lease (1 s
 * here) runs out, and is counted again into the same key.  main waits
 * with join (every chunk task_done'd), then reduces: sums the 40 per-
 * chunk counts and compares them with a count made here, in one process.
 * They match exactly; a job system that popped chunks off a plain list
 * (BRPOP) would have lost the killed worker's chunk.
 *
 *   seed002_redis_word_count [redis://host:port/db]   (or $CONC_REDIS_URL)
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNKS 40
#define WORKERS 3
#define MAX_WORDS 64

static const char *zen[] = {
    "beautiful is better than ugly", "explicit is better than implicit",
    "simple is better than complex", "complex is better than complicated",
    "flat is better than nested", "sparse is better than dense",
    "readability counts", "special cases are not special enough",
    "although practicality beats purity", "errors should never pass",
    "unless explicitly silenced", "in the face of ambiguity refuse",
    "now is better than never", "namespaces are one honking great idea",
};
#define NZEN (sizeof zen / sizeof zen[0])

typedef struct tally {
    char word[MAX_WORDS][24];
    long n[MAX_WORDS];
    int len;
} tally;

static void add(tally *t, const char *w, long n)
{
    for (int i = 0; i < t->len; i++) {
        if (strcmp(t->word[i], w) == 0) {
            t->n[i] += n;
            return;
        }
    }
    if (t->len < MAX_WORDS) {
        snprintf(t->word[t->len], sizeof t->word[0], "%s", w);
        t->n[t->len++] = n;
    }
}

static void count_text(tally *t, const char *text)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", text);
    char *save = NULL;
    for (char *w = strtok_r(buf, " \n", &save); w != NULL;
         w = strtok_r(NULL, " \n", &save)) {
        add(t, w, 1);
    }
}

/* Chunk i: three lines of the Zen, chosen by i. */
static void chunk_text(int i, char *out, size_t cap)
{
    snprintf(out, cap, "%s\n%s\n%s", zen[i % NZEN], zen[(i * 7 + 3) % NZEN],
             zen[(i * 5 + 1) % NZEN]);
}

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A worker program: chunks from the queue, counts into the dict, until
 * the queue is closed. */
static int worker(const char *q_url, const char *d_url, int id)
{
    conc_queue *q = NULL;
    conc_dict *counts = NULL;
    if (conc_queue_open(&q, q_url) != 0 || conc_dict_open(&counts, d_url)) {
        fprintf(stderr, "worker %d: %s\n", id, conc_errdetail());
        return 1;
    }
    for (;;) {
        char msg[600];
        size_t len = 0;
        int err = conc_queue_get_into(q, msg, sizeof msg - 1, &len, 30.0);
        if (err == CONC_ECLOSED) {
            break;
        }
        if (err != 0) {
            fprintf(stderr, "worker %d: %s\n", id, conc_errdetail());
            return 1;
        }
        msg[len] = '\0';
        int chunk = atoi(msg);
        const char *text = strchr(msg, ' ');
        tally t = { .len = 0 };
        count_text(&t, text != NULL ? text + 1 : "");
        char val[1024];
        size_t n = 0;
        for (int i = 0; i < t.len && n < sizeof val - 40; i++) {
            n += (size_t)snprintf(val + n, sizeof val - n, "%s %ld\n",
                                  t.word[i], t.n[i]);
        }
        sleep_s(0.03); /* the "work": a worker is usually mid-chunk */
        char key[32];
        int kl = snprintf(key, sizeof key, "chunk:%d", chunk);
        /* Idempotent: the chunk's own key, its whole result. */
        if (conc_dict_set(counts, key, (size_t)kl, val, n) != 0 ||
            conc_queue_task_done(q) != 0) {
            return 1;
        }
        printf("worker %d (pid %d) counted chunk %d\n", id, (int)getpid(),
               chunk);
    }
    conc_dict_free(counts);
    conc_queue_free(q);
    return 0;
}

static pid_t spawn(const char *q_url, const char *d_url, int id)
{
    char ids[8];
    snprintf(ids, sizeof ids, "%d", id);
    char *args[] = { "seed002_redis_word_count", "worker", (char *)q_url,
                     (char *)d_url, ids, NULL };
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execv("/proc/self/exe", args);
        _exit(127);
    }
    return pid;
}

/* The reducer: the sum of every chunk's counts. */
static int reduce(conc_dict *counts, tally *sum)
{
    for (int c = 0; c < CHUNKS; c++) {
        char key[32], val[1024];
        int kl = snprintf(key, sizeof key, "chunk:%d", c);
        size_t len = 0;
        if (conc_dict_get_into(counts, key, (size_t)kl, val, sizeof val - 1,
                               &len) != 0) {
            printf("reducer: chunk %d has no counts\n", c);
            return -1;
        }
        val[len] = '\0';
        char *save = NULL;
        for (char *line = strtok_r(val, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
            char w[24];
            long n = 0;
            if (sscanf(line, "%23s %ld", w, &n) == 2) {
                add(sum, w, n);
            }
        }
    }
    return 0;
}

static int run(const char *server)
{
    char name[64], q_url[512], d_url[512];
    snprintf(name, sizeof name, "wc-%d-%ld", (int)getpid(), (long)time(NULL));
    snprintf(q_url, sizeof q_url, "%s/%s", server, name);
    snprintf(d_url, sizeof d_url, "%s/%s", server, name);
    conc_queue *q = NULL;
    conc_dict *counts = NULL;
    int err = conc_queue_new(&q, &(conc_queue_opts){ .url = server,
                                                      .name = name,
                                                      .lease = CONC_TIMEOUT(1.0) });
    if (err == 0) {
        err = conc_dict_new(&counts, &(conc_dict_opts){ .url = server,
                                                         .name = name });
    }
    if (err != 0) {
        printf("main: %s (%s)\n", conc_strerror(err), conc_errdetail());
        return 1;
    }
    tally serial = { .len = 0 };
    for (int c = 0; c < CHUNKS; c++) {
        char text[512], msg[600];
        chunk_text(c, text, sizeof text);
        count_text(&serial, text);
        int n = snprintf(msg, sizeof msg, "%d %s", c, text);
        if (conc_queue_put(q, msg, (size_t)n, 10.0) != 0) {
            return 1;
        }
    }
    printf("main: %d chunks queued for %d workers\n", CHUNKS, WORKERS);
    pid_t kids[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        kids[i] = spawn(q_url, d_url, i + 1);
    }
    /* Kill worker 1 once a few chunks are in: it is then (most likely)
     * in the middle of one. */
    while (conc_dict_len(counts) < 8) {
        sleep_s(0.005);
    }
    sleep_s(0.01);
    kill(kids[0], SIGKILL);
    waitpid(kids[0], NULL, 0);
    printf("main: killed worker 1 (pid %d) in the middle of its work\n",
           (int)kids[0]);
    err = conc_queue_join(q, 60.0);
    printf("main: every chunk done (%s)\n", conc_strerror(err));
    conc_queue_close(q);
    bool ok = err == 0;
    for (int i = 1; i < WORKERS; i++) {
        int st = 0;
        ok = waitpid(kids[i], &st, 0) == kids[i] && WIFEXITED(st) &&
             WEXITSTATUS(st) == 0 && ok;
    }
    tally sum = { .len = 0 };
    ok = reduce(counts, &sum) == 0 && ok;
    long words = 0;
    for (int i = 0; i < serial.len; i++) {
        long got = 0;
        for (int j = 0; j < sum.len; j++) {
            if (strcmp(sum.word[j], serial.word[i]) == 0) {
                got = sum.n[j];
            }
        }
        words += got;
        if (got != serial.n[i]) {
            printf("reducer: '%s' %ld, counted here %ld\n", serial.word[i],
                   got, serial.n[i]);
            ok = false;
        }
    }
    ok = ok && sum.len == serial.len;
    long better = 0;
    for (int j = 0; j < sum.len; j++) {
        better = strcmp(sum.word[j], "better") == 0 ? sum.n[j] : better;
    }
    printf("reducer: %ld words, %d distinct; 'better' %ld times\n", words,
           sum.len, better);
    conc_dict_free(counts);
    conc_queue_free(q);
    printf("%s\n", ok ? "OK: the distributed count is exact, though a "
                        "worker was killed"
                      : "FAILED");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 5 && strcmp(argv[1], "worker") == 0) {
        return worker(argv[2], argv[3], atoi(argv[4]));
    }
    const char *server = argc > 1 ? argv[1] : getenv("CONC_REDIS_URL");
    if (server == NULL) {
        fprintf(stderr, "usage: %s redis://host:port/db (or set "
                "CONC_REDIS_URL)\n", argv[0]);
        return 2;
    }
    return run(server);
}
