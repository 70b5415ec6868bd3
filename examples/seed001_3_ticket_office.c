/* seed001_3_ticket_office.c - the ticket office: a lock versus join.
 * Ports the ticket-grabbing programs of seeds 000 (3.7), 001 (模拟抢票)
 * and 004 (mock Rob ticket).  db.txt holds {"count":1}: one ticket left.
 * Ten buyers are processes.  Part 1: each looks the count up (search,
 * all at once, so all of them usually see 1) and then buys under one
 * conc_lock (read, a short delay, write count-1): exactly one buys, the
 * other nine find 0, and db.txt ends at {"count":0}.  Part 2 drops the
 * lock and starts and joins each buyer in turn: the result is the same,
 * but even looking up is now serial - buyer 0 buys, everyone after sees
 * 0 - and it takes longer.  Compare the two times.  The file is
 * argv[1] if given, else ./db.txt.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N_BUYERS 10

/* The seeds sleep 1 s before searching, 1 s before buying and 3 s while
 * writing; scaled down here. */
#define SEARCH_DELAY 0.05
#define READ_DELAY 0.02
#define WRITE_DELAY 0.05

/* A buyer's exit code: whether it got the ticket (or failed to try). */
enum { WENT_HOME = 0, BOUGHT = 1, BROKEN = 2 };

typedef struct buyer {
    char name[32];
    conc_lock *mutex; /* NULL: no lock (part 2) */
} buyer;

static const char *db_path = "db.txt";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Reads the whole file into text (at most cap-1 bytes, NUL-terminated). */
static int db_text(char *text, size_t cap)
{
    FILE *f = fopen(db_path, "r");
    if (f == NULL) {
        return -1;
    }
    size_t n = fread(text, 1, cap - 1, f);
    text[n] = '\0';
    fclose(f);
    return 0;
}

/* json.load(open('db.txt'))['count'] */
static int db_load(long *count)
{
    char text[256];
    if (db_text(text, sizeof text) != 0) {
        return -1;
    }
    const char *key = strstr(text, "\"count\"");
    const char *colon = key != NULL ? strchr(key, ':') : NULL;
    if (colon == NULL) {
        return -1;
    }
    char *end = NULL;
    *count = strtol(colon + 1, &end, 10);
    return end == colon + 1 ? -1 : 0;
}

/* json.dump({'count': count}, open('db.txt', 'w')) - but written to a
 * file beside it and renamed over it, so a buyer searching at that moment
 * reads the old or the new content, never a half-written file. */
static int db_dump(long count)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", db_path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return -1;
    }
    int bad = fprintf(f, "{\"count\":%ld}", count) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, db_path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int search(const buyer *b)
{
    sleep_s(SEARCH_DELAY);
    long count = 0;
    if (db_load(&count) != 0) {
        printf("%s cannot read %s\n", b->name, db_path);
        return -1;
    }
    printf("%s searched: %ld ticket(s) left\n", b->name, count);
    return 0;
}

static int get(const buyer *b)
{
    sleep_s(READ_DELAY);
    long count = 0;
    if (db_load(&count) != 0) {
        printf("%s cannot read %s\n", b->name, db_path);
        return BROKEN;
    }
    if (count <= 0) {
        printf("%s: sold out, no ticket left\n", b->name);
        return WENT_HOME;
    }
    count -= 1;
    sleep_s(WRITE_DELAY);
    if (db_dump(count) != 0) {
        printf("%s cannot write %s\n", b->name, db_path);
        return BROKEN;
    }
    printf("%s bought a ticket!\n", b->name);
    return BOUGHT;
}

/* The buyer process: Python's task(name, mutex). */
static int task(void *arg)
{
    const buyer *b = arg;
    if (search(b) != 0) {
        return BROKEN;
    }
    if (b->mutex == NULL) {
        return get(b);
    }
    int err = conc_lock_acquire(b->mutex, 30.0);
    if (err == CONC_EOWNERDEAD) {
        printf("%s: the last holder died holding the lock\n", b->name);
    } else if (err != 0) {
        printf("%s: acquire: %s\n", b->name, conc_strerror(err));
        return BROKEN;
    }
    int code = get(b);
    conc_lock_release(b->mutex);
    return code;
}

/* Runs one round of ten buyers; with_lock: concurrent with a lock,
 * otherwise each started and joined in turn.  Stores the exit codes. */
static int run_round(bool with_lock, int codes[N_BUYERS], double *took)
{
    buyer buyers[N_BUYERS];
    conc_process *p[N_BUYERS] = { NULL };
    conc_lock *mutex = NULL;
    int err = 0;
    if (db_dump(1) != 0) {
        printf("main: cannot write %s\n", db_path);
        return CONC_ESYS;
    }
    if (with_lock) {
        err = conc_lock_new(&mutex, NULL);
        if (err != 0) {
            return err;
        }
    }
    double start = now();
    for (int i = 0; i < N_BUYERS; i++) {
        snprintf(buyers[i].name, sizeof buyers[i].name, "<buyer %d>", i);
        buyers[i].mutex = mutex;
        err = conc_process_new(&p[i], &(conc_process_opts){
                                          .target = task,
                                          .arg = &buyers[i] });
        if (err != 0) {
            goto cleanup;
        }
        err = conc_process_start(p[i]);
        if (err != 0) {
            goto cleanup;
        }
        if (!with_lock) {
            err = conc_process_join(p[i], 30.0);
            if (err != 0) {
                goto cleanup;
            }
        }
    }
    for (int i = 0; i < N_BUYERS; i++) {
        err = conc_process_join(p[i], 30.0);
        if (err != 0) {
            goto cleanup;
        }
        err = conc_process_exitcode(p[i], &codes[i]);
        if (err != 0) {
            goto cleanup;
        }
    }
    *took = now() - start;
cleanup:
    for (int i = 0; i < N_BUYERS; i++) {
        if (err != 0 && p[i] != NULL && conc_process_pid(p[i]) != 0) {
            conc_process_kill(p[i]);
            conc_process_join(p[i], 5.0);
        }
        conc_process_free(p[i]);
    }
    conc_lock_free(mutex);
    return err;
}

/* Prints the round's outcome; true when exactly one ticket was sold, no
 * buyer broke and the file ends at {"count":0}. */
static bool report(int part, const int codes[N_BUYERS], double took)
{
    int sold = 0, broken = 0;
    for (int i = 0; i < N_BUYERS; i++) {
        sold += codes[i] == BOUGHT;
        broken += codes[i] != BOUGHT && codes[i] != WENT_HOME;
    }
    char text[256] = "";
    long count = -1;
    if (db_text(text, sizeof text) != 0 || db_load(&count) != 0) {
        printf("main: cannot read %s\n", db_path);
        return false;
    }
    printf("part %d: %d ticket(s) sold, %d buyer(s) broken; took %.6f s\n",
           part, sold, broken, took);
    printf("part %d: db.txt now holds %s\n", part, text);
    return sold == 1 && broken == 0 && count == 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1) {
        db_path = argv[1];
    }
    int codes[N_BUYERS];
    double took = 0;

    printf("== part 1: ten buyers at once; buying under a conc_lock\n");
    int err = run_round(true, codes, &took);
    if (err != 0) {
        printf("main: part 1 failed: %s\n", conc_strerror(err));
        return 1;
    }
    bool ok1 = report(1, codes, took);

    printf("== part 2: no lock; each buyer started and joined in turn\n");
    err = run_round(false, codes, &took);
    if (err != 0) {
        printf("main: part 2 failed: %s\n", conc_strerror(err));
        return 1;
    }
    bool ok2 = report(2, codes, took) && codes[0] == BOUGHT;

    printf("%s: exactly one ticket sold in each part, db.txt ends at 0\n",
           ok1 && ok2 ? "OK" : "FAILED");
    return ok1 && ok2 ? 0 : 1;
}
