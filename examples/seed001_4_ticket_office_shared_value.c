/* seed001_4_ticket_office_shared_value.c - the ticket office again, with
 * the count in shared memory instead of db.txt.  Seeds 000 (3.8) and 001
 * end their ticket programs by wishing for "a solution that is fast
 * (processes share one block of memory) and handles the locking for us".
 * Here it is: the count lives in a conc_value (Python's Value('i', 1)),
 * which carries its own lock (get_lock()).  Ten buyers are processes:
 * each looks the count up at once, without the lock (so all of them
 * usually see 1), then buys under the value's lock - read, a short delay,
 * write count-1.  Exactly one of the ten gets the ticket, the other nine
 * find it sold out, and the count ends at 0: no file, no JSON, and no
 * read of a half-written count.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdio.h>
#include <time.h>

#define N_BUYERS 10

enum { WENT_HOME = 0, BOUGHT = 1, BROKEN = 2 };

static conc_value *tickets; /* one long: the count */

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The buyer process: search, then get under the value's lock. */
static int buyer(void *arg)
{
    int id = (int)(long)arg;
    volatile long *count = conc_value_ptr(tickets);
    sleep_s(0.05); /* the seeds' network delay, scaled down */
    printf("<buyer %d> searched: %ld ticket(s) left\n", id, *count);
    conc_lock *lock = conc_value_lock(tickets);
    int err = conc_lock_acquire(lock, 30.0);
    if (err != 0 && err != CONC_EOWNERDEAD) {
        printf("<buyer %d> acquire: %s\n", id, conc_strerror(err));
        return BROKEN;
    }
    int code = WENT_HOME;
    long left = *count;
    sleep_s(0.01); /* reading takes a while... */
    if (left > 0) {
        *count = left - 1;
        printf("<buyer %d> bought a ticket!\n", id);
        code = BOUGHT;
    } else {
        printf("<buyer %d>: sold out, no ticket left\n", id);
    }
    conc_lock_release(lock);
    return code;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_process *p[N_BUYERS] = { NULL };
    int err = conc_value_new(&tickets, &(conc_value_opts){ .size = sizeof(long),
                                                            .lock = true });
    if (err != 0) {
        printf("main: conc_value_new: %s\n", conc_strerror(err));
        return 1;
    }
    *(long *)conc_value_ptr(tickets) = 1; /* {"count": 1} */
    int sold = 0, broken = 0;
    for (int i = 0; i < N_BUYERS; i++) {
        err = conc_process_new(&p[i], &(conc_process_opts){
                                          .target = buyer,
                                          .arg = (void *)(long)i });
        if (err == 0) {
            err = conc_process_start(p[i]);
        }
        if (err != 0) {
            printf("main: starting buyer %d: %s\n", i, conc_strerror(err));
            broken++;
        }
    }
    for (int i = 0; i < N_BUYERS; i++) {
        int code = BROKEN;
        if (p[i] != NULL && conc_process_pid(p[i]) != 0 &&
            conc_process_join(p[i], 30.0) == 0 &&
            conc_process_exitcode(p[i], &code) == 0) {
            sold += code == BOUGHT;
            broken += code != BOUGHT && code != WENT_HOME;
        }
        conc_process_free(p[i]);
    }
    long left = *(long *)conc_value_ptr(tickets);
    printf("%d ticket(s) sold, %d buyer(s) broken; the count is now %ld\n",
           sold, broken, left);
    conc_value_free(tickets);
    bool ok = sold == 1 && broken == 0 && left == 0;
    printf("%s: exactly one of ten buyers got the ticket\n",
           ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
