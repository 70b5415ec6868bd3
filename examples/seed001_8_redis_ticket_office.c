/* seed001_8_redis_ticket_office.c - the ticket office of seed001_3, with
 * its lock and its count on Redis.  The count ("one ticket left") is a
 * conc_dict on the server instead of db.txt, and the lock a conc_lock on
 * the server: ten buyer programs, started as separate programs that know
 * only the server's URL (as if on ten hosts), all look the count up at
 * once (usually all see 1), then buy under the lock: read, a short
 * delay, write count-1.  Exactly one buys; the nine others find 0.  The
 * buyer that gets the ticket prints the lock's fencing number: a number
 * the server raises at every grant, which a real ticket database would
 * check so that a buyer stopped past its lease could not sell the ticket
 * twice.  Then the same ten buyers race without the lock (the seed's
 * lesson): more than one of them usually "buys" the last ticket.
 *
 *   seed001_8_redis_ticket_office [redis://host:port/db]
 * (or $CONC_REDIS_URL).
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

#define N_BUYERS 10
#define SEARCH_DELAY 0.05
#define READ_DELAY 0.02
#define WRITE_DELAY 0.05

enum { WENT_HOME = 0, BOUGHT = 1, BROKEN = 2 };

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static long count_of(conc_dict *db)
{
    char t[32];
    size_t len = 0;
    if (conc_dict_get_into(db, "count", 5, t, sizeof t - 1, &len) != 0) {
        return -1;
    }
    t[len] = '\0';
    return atol(t);
}

static int set_count(conc_dict *db, long v)
{
    char t[32];
    int n = snprintf(t, sizeof t, "%ld", v);
    return conc_dict_set(db, "count", 5, t, (size_t)n);
}

/* A buyer program: db_url and lock_url are all it knows. */
static int buyer(const char *db_url, const char *lock_url, int id)
{
    conc_dict *db = NULL;
    conc_lock *mutex = NULL;
    if (conc_dict_open(&db, db_url) != 0 ||
        (lock_url[0] != '-' && conc_lock_open(&mutex, lock_url) != 0)) {
        fprintf(stderr, "buyer %d: %s\n", id, conc_errdetail());
        return BROKEN;
    }
    sleep_s(SEARCH_DELAY);
    printf("buyer %d sees %ld ticket(s) left\n", id, count_of(db));
    int rc = WENT_HOME;
    if (mutex != NULL && conc_lock_acquire(mutex, 30.0) < 0) {
        return BROKEN;
    }
    long left = count_of(db);
    sleep_s(READ_DELAY);
    if (left > 0) {
        sleep_s(WRITE_DELAY);
        set_count(db, left - 1);
        uint64_t fence = 0;
        if (mutex != NULL) {
            conc_lock_fence(mutex, &fence);
            printf("buyer %d bought the ticket (fencing number %llu)\n", id,
                   (unsigned long long)fence);
        } else {
            printf("buyer %d bought the ticket\n", id);
        }
        rc = BOUGHT;
    } else {
        printf("buyer %d found none left and went home\n", id);
    }
    if (mutex != NULL && conc_lock_release(mutex) != 0) {
        rc = BROKEN;
    }
    conc_lock_free(mutex);
    conc_dict_free(db);
    return rc;
}

/* One round: ten buyer programs; returns how many bought, -1 if broken. */
static int round_of(const char *db_url, const char *lock_url)
{
    pid_t kids[N_BUYERS];
    for (int i = 0; i < N_BUYERS; i++) {
        char id[8];
        snprintf(id, sizeof id, "%d", i);
        char *args[] = { "seed001_8", "buyer", (char *)db_url,
                         (char *)lock_url, id, NULL };
        fflush(stdout);
        kids[i] = fork();
        if (kids[i] == 0) {
            execv("/proc/self/exe", args);
            _exit(127);
        }
    }
    int bought = 0;
    bool broken = false;
    for (int i = 0; i < N_BUYERS; i++) {
        int st = 0;
        if (kids[i] < 0 || waitpid(kids[i], &st, 0) != kids[i] ||
            !WIFEXITED(st) || WEXITSTATUS(st) == BROKEN) {
            broken = true;
        } else {
            bought += WEXITSTATUS(st) == BOUGHT;
        }
    }
    return broken ? -1 : bought;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 5 && strcmp(argv[1], "buyer") == 0) {
        return buyer(argv[2], argv[3], atoi(argv[4]));
    }
    const char *server = argc > 1 ? argv[1] : getenv("CONC_REDIS_URL");
    if (server == NULL) {
        fprintf(stderr, "usage: %s redis://host:port/db (or set "
                "CONC_REDIS_URL)\n", argv[0]);
        return 2;
    }
    char name[64], db_url[512], lock_url[512];
    snprintf(name, sizeof name, "office-%d-%ld", (int)getpid(),
             (long)time(NULL));
    snprintf(db_url, sizeof db_url, "%s/%s", server, name);
    snprintf(lock_url, sizeof lock_url, "%s/%s", server, name);
    conc_dict *db = NULL;
    conc_lock *mutex = NULL;
    int err = conc_dict_new(&db, &(conc_dict_opts){ .url = server,
                                                     .name = name });
    if (err == 0) {
        err = conc_lock_new(&mutex, &(conc_lock_opts){ .url = server,
                                                        .name = name });
    }
    if (err == 0) {
        err = set_count(db, 1);
    }
    if (err != 0) {
        printf("main: %s (%s)\n", conc_strerror(err), conc_errdetail());
        return 1;
    }
    printf("--- with the lock: one ticket, ten buyers ---\n");
    int with = round_of(db_url, lock_url);
    long left = count_of(db);
    printf("main: %d bought, %ld left\n", with, left);
    bool ok = with == 1 && left == 0;
    printf("--- without the lock: one ticket again, ten buyers ---\n");
    set_count(db, 1);
    int without = round_of(db_url, "-");
    printf("main: %d \"bought\" the one ticket, the count says %ld\n",
           without, count_of(db));
    ok = ok && without >= 1;
    conc_lock_free(mutex);
    conc_dict_free(db);
    printf("%s\n", ok ? "OK: with the lock on Redis exactly one buyer got "
                        "the ticket"
                      : "FAILED");
    return ok ? 0 : 1;
}
