/* redis_lease.c - the handles of the Redis backend in this process: their
 * registry, the thread that renews their leases, and what a fork does to
 * them.
 *
 * Leases.  A consumer's deliveries and a lock's grant are leased: the
 * server keeps them for the lease (30 s by default) and gives them to
 * others once it runs out.  So that a lease is "renewed while the process
 * lives" without the caller's help - a consumer may work on one message
 * for an hour - renewer threads of the process renew every armed item
 * every period (a third of its lease), with one round trip per handle on
 * the handle's own connections (renew(it), the kind's code).  A renewal
 * waits for its server up to its own bound (a period, or net_timeout),
 * and a server that froze or vanished takes that whole bound: so the
 * renewer that takes a due item makes sure another is left to watch the
 * clock (watching, below), starting one if none is, and a renewer that
 * ends a renewal while two others watch exits.  One frozen server then
 * holds only its own items' renewals; with a single thread doing them in
 * turn, it held every other handle's too, and a healthy server's lock of
 * a 2 s lease went to another holder while its own holder lived.  So
 * two renewers in the steady state (one renews while the other watches;
 * exiting whenever another watched made a thread per renewal), and one
 * more per renewal waiting for a slow server.  A process that
 * is killed stops renewing and its leases run out; a process that is
 * stopped (SIGSTOP, a frozen VM, swap) for longer than a lease loses them
 * although it lives: no lease can tell a slow holder from a dead one.
 *   Cost: two threads per process (the first made at the first arm, the
 * second at the first renewal, never before: a program that never uses a
 * server has none; they sleep on a condition variable and wake only when
 * an item is due; more only while renewals wait for slow servers, as
 * above), and per
 * armed handle one round trip per period.  The thread blocks every
 * signal, so signals still go to the program's own threads.
 *
 * Locks and order.  reg_mu guards the list and each item's period, due
 * time and busy flag; a handle's cli->mu guards the handle.  Order:
 * reg_mu before any cli->mu, and code holding a cli->mu never takes
 * reg_mu.  The renewer marks an item busy and drops reg_mu while it
 * renews; conc__rlease_remove waits (on reg_cv) until the item is not
 * busy, so a handle is never freed under a renewal.  A renewal is bounded
 * by its own deadline (the kind sets it, at most a period), so free
 * waits at most that long, and only if it happens to race a renewal.
 *
 * Fork.  The prepare handler takes reg_mu and every listed handle's mu,
 * so the child gets none of them locked mid-update; the parent and child
 * handlers unlock them (the forking thread locked them and is the child's
 * only thread).  The child then disarms every item (the parent's leases
 * are the parent's: its deliveries, its grants), forgets the renewer (it
 * did not survive the fork) and its condition variable (the copy still
 * counts the parent renewer as a waiter: a broadcast in the child would
 * wait for it for ever), and bumps the fork generation, which makes
 * each handle drop its inherited connections and per-process state at
 * its next call (redis_conn.c, and each kind).  Registration of the
 * handlers is done at load time, not with a pthread_once on first use,
 * for the reason sync_self.c gives.
 */
#include "redis_int.h"
#include "../process_int.h"

#include <errno.h>
#include <signal.h>
#include <time.h>

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_cv;
static conc__ritem *reg_head;
/* Renewer threads alive, and those of them not inside a renewal (one
 * that waits on reg_cv, or is about to).  Under reg_mu. */
static unsigned renewers;
static unsigned watching;
/* Bumped in every forked child.  Relaxed: each process reads its own
 * value, written before any thread of the child exists. */
static _Atomic uint64_t fork_gen;

static void prepare(void)
{
    pthread_mutex_lock(&reg_mu);
    for (conc__ritem *it = reg_head; it != NULL; it = it->next) {
        pthread_mutex_lock(&it->cli->mu);
    }
}

static void parent(void)
{
    for (conc__ritem *it = reg_head; it != NULL; it = it->next) {
        pthread_mutex_unlock(&it->cli->mu);
    }
    pthread_mutex_unlock(&reg_mu);
}

static void cv_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&reg_cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void child(void)
{
    for (conc__ritem *it = reg_head; it != NULL; it = it->next) {
        it->period_ns = 0;
        it->busy = 0;
        pthread_mutex_unlock(&it->cli->mu);
    }
    renewers = 0;
    watching = 0;
    /* The parent's renewer was (or may have been) waiting on reg_cv: the
     * copy counts a waiter that does not exist here, and the child's
     * first broadcast would wait for it for ever.  A fresh one. */
    cv_init();
    atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed);
    pthread_mutex_unlock(&reg_mu);
}

__attribute__((constructor)) static void lease_init(void)
{
    cv_init();
    pthread_atfork(prepare, parent, child);
}

uint64_t conc__rlease_gen(void)
{
    return atomic_load_explicit(&fork_gen, memory_order_relaxed);
}

void conc__rlease_add(conc__ritem *it, conc__rcli *cli,
                      void (*renew)(conc__ritem *it))
{
    it->cli = cli;
    it->renew = renew;
    it->period_ns = 0;
    it->busy = 0;
    pthread_mutex_lock(&reg_mu);
    it->prev = NULL;
    it->next = reg_head;
    if (reg_head != NULL) {
        reg_head->prev = it;
    }
    reg_head = it;
    it->listed = true;
    pthread_mutex_unlock(&reg_mu);
}

void conc__rlease_remove(conc__ritem *it)
{
    pthread_mutex_lock(&reg_mu);
    while (it->busy) {
        pthread_cond_wait(&reg_cv, &reg_mu);
    }
    if (it->listed) {
        if (it->prev != NULL) {
            it->prev->next = it->next;
        } else {
            reg_head = it->next;
        }
        if (it->next != NULL) {
            it->next->prev = it->prev;
        }
        it->listed = false;
    }
    it->period_ns = 0;
    pthread_mutex_unlock(&reg_mu);
}

/* The item due first, or NULL; *due its due time. */
static conc__ritem *next_due(uint64_t *due)
{
    conc__ritem *best = NULL;
    for (conc__ritem *it = reg_head; it != NULL; it = it->next) {
        if (it->period_ns != 0 && !it->busy &&
            (best == NULL || it->due_ns < best->due_ns)) {
            best = it;
        }
    }
    if (best != NULL) {
        *due = best->due_ns;
    }
    return best;
}

static int start_renewer(const char *fn);

static void *renewer(void *arg)
{
    (void)arg;
    conc__os_set_name("conc-lease");
    pthread_mutex_lock(&reg_mu);
    for (;;) {
        uint64_t due = 0;
        conc__ritem *it = next_due(&due);
        uint64_t now = conc__now_ns();
        if (it != NULL && due <= now) {
            it->busy = 1;
            watching--;
            if (watching == 0) {
                /* Someone must watch the clock while this renewal waits
                 * for its server.  If no thread can be made, this one
                 * renews and the others wait their turn (as with one
                 * thread). */
                (void)start_renewer("conc lease renewer");
            }
            pthread_mutex_unlock(&reg_mu);
            it->renew(it);
            pthread_mutex_lock(&reg_mu);
            it->busy = 0;
            if (it->period_ns != 0) {
                it->due_ns = conc__now_ns() + it->period_ns;
            }
            pthread_cond_broadcast(&reg_cv);
            if (watching >= 2) {
                renewers--; /* two watch already: enough */
                pthread_mutex_unlock(&reg_mu);
                return NULL;
            }
            watching++;
            continue;
        }
        if (it == NULL) {
            pthread_cond_wait(&reg_cv, &reg_mu);
            continue;
        }
        struct timespec ts = { .tv_sec = (time_t)(due / 1000000000u),
                               .tv_nsec = (long)(due % 1000000000u) };
        pthread_cond_timedwait(&reg_cv, &reg_mu, &ts);
    }
    return NULL;
}

/* Starts a renewer, all signals blocked in it, counted as watching.
 * Called with reg_mu. */
static int start_renewer(const char *fn)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t th;
    void *stack = NULL;
    int r = conc__fault_hit() ? EAGAIN
                              : conc__thread_spawn(&th, true, renewer, NULL,
                                                   &stack);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        errno = r;
        return conc__fail_sys(CONC_ESYS, "%s: cannot start the lease "
                              "renewer thread", fn);
    }
    renewers++;
    watching++;
    return 0;
}

int conc__rlease_arm(conc__ritem *it, uint64_t period_ns, const char *fn)
{
    int err = 0;
    pthread_mutex_lock(&reg_mu);
    bool was = it->period_ns != 0;
    it->period_ns = period_ns;
    if (period_ns != 0 && !was) {
        it->due_ns = conc__now_ns() + period_ns;
    }
    if (period_ns != 0 && renewers == 0) {
        err = start_renewer(fn);
    }
    pthread_cond_broadcast(&reg_cv);
    pthread_mutex_unlock(&reg_mu);
    return err;
}
