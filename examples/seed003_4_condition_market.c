/* seed003_4_condition_market.c - producers and consumers on a Condition.
 * Ports seed 003's Condition market (Condition类用于上锁): the market
 * starts with 500 items; 2 producers add 100 whenever count <= 1000,
 * else they wait; 5 consumers take 5 whenever count >= 100, else they
 * wait.  Every look at count happens holding the Condition's lock, and
 * each change is followed by notify(), waking one waiter.  So the count
 * can never pass 1100 or drop under 95: watch the producers wait once it
 * passes 1000.  The seed runs forever; this market closes after 0.6 s
 * (one round per 0.05 s instead of 1 s), then checks the bounds and that
 * the books balance: 500 + 100 x produced - 5 x consumed = count.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define PRODUCERS 2
#define CONSUMERS 5
#define ROUND 0.05
#define OPEN_FOR 0.6

static conc_cond *con; /* Condition(): its own re-entrant lock */

/* All guarded by con's lock. */
static long count = 500;
static long lowest = 500, highest = 500;

static atomic_bool market_open = true;

static void sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s,
                           .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Called holding con's lock after each change. */
static void note_count(void)
{
    lowest = count < lowest ? count : lowest;
    highest = count > highest ? count : highest;
}

typedef struct trader {
    char name[16];
    long deals;   /* batches produced or consumed */
    int err;      /* the first unexpected error */
} trader;

/* One round under the lock: make a deal or wait.  Returns 0 or an error.
 * (A wait that times out is fine: the market may be closing.) */
static int trade(trader *tr, bool producer)
{
    int err = conc_cond_acquire(con, 10.0);
    if (err != 0) {
        return err;
    }
    bool can = producer ? count <= 1000 : count >= 100;
    if (!can) {
        /* self.name: the thread's own name, as Python's
         * threading.current_thread().name */
        printf("%s waits, count=%ld\n", conc_current_thread_name(), count);
        err = conc_cond_wait(con, 0.5);
        if (err == CONC_ETIMEDOUT) {
            err = 0;
        }
    } else {
        count += producer ? 100 : -5;
        tr->deals++;
        note_count();
        printf("%s %s, count=%ld\n", conc_current_thread_name(),
               producer ? "produce 100" : "consume 5", count);
        err = conc_cond_notify(con, 1);
    }
    int rel_err = conc_cond_release(con);
    return err != 0 ? err : rel_err;
}

static void *run(trader *tr, bool producer)
{
    while (atomic_load(&market_open)) {
        tr->err = trade(tr, producer);
        if (tr->err != 0) {
            printf("%s: %s\n", tr->name, conc_strerror(tr->err));
            break;
        }
        sleep_s(ROUND);
    }
    return NULL;
}

static void *producer_run(void *arg)
{
    return run(arg, true);
}

static void *consumer_run(void *arg)
{
    return run(arg, false);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    trader traders[PRODUCERS + CONSUMERS] = { 0 };
    conc_thread *t[PRODUCERS + CONSUMERS] = { NULL };
    int started = 0;
    int err = conc_cond_new(&con, NULL);
    for (int i = 0; err == 0 && i < PRODUCERS + CONSUMERS; i++) {
        bool producer = i < PRODUCERS;
        snprintf(traders[i].name, sizeof traders[i].name, "%s-%d",
                 producer ? "Producer" : "Consumer",
                 producer ? i + 1 : i - PRODUCERS + 1);
        err = conc_thread_new(&t[i], &(conc_thread_opts){
                                         .target = producer ? producer_run
                                                            : consumer_run,
                                         .arg = &traders[i],
                                         .name = traders[i].name });
        if (err == 0) {
            err = conc_thread_start(t[i]);
        }
        started += err == 0;
    }
    if (err == 0) {
        sleep_s(OPEN_FOR);
    }
    atomic_store(&market_open, false);
    /* Wake the waiters so they see the market closed. */
    if (conc_cond_acquire(con, 10.0) == 0) {
        conc_cond_notify_all(con);
        conc_cond_release(con);
    }
    long produced = 0, consumed = 0;
    int failed = 0;
    for (int i = 0; i < started; i++) {
        int join_err = conc_thread_join(t[i], 30.0);
        failed += join_err != 0 || traders[i].err != 0;
        if (i < PRODUCERS) {
            produced += traders[i].deals;
        } else {
            consumed += traders[i].deals;
        }
    }
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++) {
        conc_thread_free(t[i]);
    }
    conc_cond_free(con);
    if (err != 0) {
        printf("main: %s\n", conc_strerror(err));
    }
    printf("market closed: %ld batches produced, %ld consumed, count=%ld\n",
           produced, consumed, count);
    bool bounds = lowest >= 95 && highest <= 1100;
    printf("count stayed within [95, 1100]: lowest %ld, highest %ld - %s\n",
           lowest, highest, bounds ? "held" : "BROKEN");
    long books = 500 + 100 * produced - 5 * consumed;
    printf("ledger: 500 + 100 x %ld - 5 x %ld = %ld, count %ld - %s\n",
           produced, consumed, books, count,
           books == count ? "balanced" : "UNBALANCED");
    bool ok = err == 0 && failed == 0 && bounds && books == count;
    printf("%s: the market kept its bounds and its books\n",
           ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
