/* process.c - child processes: Python's multiprocessing.Process (fork start
 * method), active_children, parent_process, current_process().name and
 * cpu_count.
 *
 * Design
 * ------
 * A child is fork()ed from the calling program itself.  The target is a C
 * function pointer and its arg points into the caller's memory, and the
 * contract promises that every object made before start works in the
 * child, so a fork server (which would have to serialise the target, as
 * Python's forkserver pickles it) cannot do the job.  The child runs
 * target(arg), then the same clean-up a normal exit runs (join non-daemon
 * threads, terminate daemon children, join all children, unlink the
 * named segments it created and never freed), flushes stdout
 * and stderr, and _exit()s with target's return value: the parent's own
 * atexit handlers never run in a child (Python's os._exit()).
 *
 * Bookkeeping.  A conc_process handle owns one child_rec once started.
 * Records of children not yet reaped sit on one list, reg.active, guarded
 * by reg_lock (a process-private pthread mutex: nothing here lives in
 * shared memory).  Every field of a child_rec is guarded by reg_lock.  A
 * child is reaped only under reg_lock (waitid(P_PID, WNOHANG)), so while a
 * record is unreaped its pid cannot be recycled, and kill() and
 * pidfd_open() on it are done under the lock too.  A handle freed while
 * its child runs leaves the record on the list (handle_gone); whoever
 * reaps it later (the next conc_process_start, conc_active_children, a
 * join at exit) frees it, so no zombie is left.  A record is freed once
 * reaped, handle_gone and not pinned by a waiter.
 *
 * Joining.  join(timeout) turns the timeout into one CLOCK_MONOTONIC
 * deadline, tries to reap, and otherwise opens a pidfd (under the lock,
 * see above) and ppoll()s it for the time left; EINTR or a wake-up just
 * loops, so a signal neither ends the wait early nor restarts its clock.
 * Several threads may join the same child at once: each polls its own
 * pidfd, and whichever takes the lock first reaps; the others see
 * `reaped`.  The pidfd is closed before join returns.  Kernels without
 * pidfd_open fall back to waitid(WNOHANG) with backed-off sleeps.  A join
 * without a deadline skips the pidfd: it sleeps in waitid(WEXITED |
 * WNOWAIT) outside the lock, which leaves the child a zombie (pid still
 * ours), then reaps under the lock - two syscalls fewer per start+join.
 * (Should another thread reap it and the pid wrap round to a new child
 * of ours in that instant, the sleeper would only wake late.)  A pidfd
 * open in a timed join at the instant another thread forks is inherited
 * by that child (O_CLOEXEC drops it at exec); it refers to a process that
 * is not the child's and is closed when the child exits.
 * Rejected: a SIGCHLD handler (it would steal the process-wide signal from
 * the program) and a reaper thread (a thread in every program that forks,
 * and one more fork-with-threads hazard).
 *
 * Fork safety with threads running.  Only the forking thread survives in
 * the child, so a lock another thread held at that instant (malloc's
 * included) would stay locked for ever there.  What we rely on:
 *  1. glibc's fork() takes and resets malloc's arena locks and the stdio
 *     locks (_IO_list_lock and every FILE lock) around the fork, so the
 *     child may malloc and printf even if another thread was inside
 *     malloc or printf at that instant.  Our pthread_atfork prepare
 *     handlers run before glibc takes those locks, so they never wait on
 *     a thread that is waiting on malloc.
 *  2. libconc's own process-local locks - reg_lock and forker.mu here,
 *     the thread registry lock in thread.c - are taken in pthread_atfork
 *     prepare handlers and released in the parent and child handlers, so
 *     the child inherits them unlocked with consistent lists.  The forking
 *     thread never holds any of them across fork().  The child handler
 *     empties the registries (the parent's children and threads are not
 *     the child's: handles copied into the child answer CONC_ESTATE, as
 *     Python's "can only join a child process"), and re-initialises the
 *     forker's condition variable, whose waiter count names threads that
 *     do not exist in the child.
 *  3. Cross-process objects (locks, queues, ...) live in shared memory and
 *     recover from a dead owner by design, so a parent thread holding one
 *     at the fork looks to the child like a live holder in another process.
 *  4. Between fork and target the child touches only its own stack, the
 *     registries above and plain syscalls (prctl, getppid, sigprocmask).
 *
 * Daemons die with their parent, even a SIGKILLed one.  A daemon child
 * asks for SIGKILL on its parent's death (PR_SET_PDEATHSIG).  The kernel
 * sends it when the *thread* that forked dies, not the process, so a
 * daemon started from a short-lived thread would be killed too early.  So
 * the fork of a daemon is done by a thread that lives as long as the
 * process: the main thread when the caller is the main thread (tid ==
 * pid), otherwise a small internal "forker" thread, created on first use,
 * that forks on the caller's behalf while the caller blocks (so the
 * caller's stack, where arg may point, is stable and copied intact; the
 * child is still a copy of the whole address space).  The forker runs
 * with every signal blocked; the child restores the caller's mask.  The
 * race where the parent dies before prctl takes effect is closed by
 * comparing getppid() with the parent's pid afterwards: if it differs the
 * parent is already gone and the child kills itself the same way.
 * Limit: a main thread that calls pthread_exit() while the process goes
 * on counts as dead for PR_SET_PDEATHSIG.  Non-daemon children get no
 * death signal (Python lets them outlive a killed parent).
 *
 * Exit.  One atexit handler (exit.c), registered on the first start of a
 * thread or a process (or the first named segment), joins non-daemon
 * conc_threads, sends SIGTERM to daemon children and joins every child
 * (Python's order), then unlinks the named segments left.  A daemon that
 * ignores SIGTERM gets DAEMON_GRACE_S seconds, then SIGKILL: exit never
 * hangs on a daemon (Python would).
 *
 * Names: "Process-N", N counting handles made in this process; in a child
 * the counter restarts and names nest, "Process-1:2" (Python's identity).
 * The child's name is set as its kernel name (ps -o comm, 15 bytes).
 * stdout and stderr are flushed before the fork (no doubled output) and by
 * the child before it exits; the child starts with their buffers emptied,
 * since what another parent thread wrote into them after the flush is the
 * parent's to print.  Other FILE streams are the caller's to flush.
 */
#include "conc_int.h"
#include "process_int.h"

#include <errno.h>
#include <poll.h>
#include <stdio_ext.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Seconds a daemon child gets to honour SIGTERM at exit before SIGKILL. */
#define DAEMON_GRACE_S 2.0

/* Exit code reported when someone else reaped our child (SIGCHLD set to
 * SIG_IGN, or a waitpid(-1) elsewhere): the real status is lost. */
#define STATUS_UNKNOWN 255

enum { P_NEW, P_STARTING, P_STARTED };

typedef struct child_rec {
    struct child_rec *next, *prev; /* on reg.active while listed */
    pid_t pid;
    int status;       /* exit code, or -signal; valid once reaped */
    unsigned pins;    /* waiters that need the record to stay */
    bool daemon;
    bool listed;
    bool reaped;
    bool handle_gone; /* conc_process_free ran */
    bool foreign;     /* copied into a child by fork: not our child */
} child_rec;

struct conc_process {
    conc_process_fn target;
    void *arg;
    char *name;
    char ident[96];    /* "1", "1:2": Python's _identity */
    bool daemon;
    pid_t owner;       /* getpid() of the process that made the handle */
    _Atomic int state; /* P_NEW -> P_STARTING -> P_STARTED */
    child_rec *rec;    /* written before the release store of P_STARTED */
};

/* ---- process-wide state --------------------------------------------------
 * reg.active: guarded by reg_lock.  The cur_* values are written once, in
 * a child before target runs (only one thread exists then), and only read
 * afterwards. */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    child_rec *active;
    child_rec *tail;
} reg;

static char cur_name[256] = "MainProcess";
static char cur_ident[96];
static pid_t cur_parent;
static bool cur_daemon;
/* Counts handles made in this process (for Process-N); relaxed: it only
 * has to hand out distinct numbers. */
static _Atomic unsigned long child_counter;

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The forker thread: forks daemons for callers that are not the main
 * thread.  req is the request in flight (NULL when none); mu guards all. */
struct fork_req {
    conc_process *p;
    const sigset_t *mask;
    pid_t parent;
    pid_t pid;
    int err_no;
    bool done;
};
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running;
    struct fork_req *req;
} forker = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false,
             NULL };

static void reg_unlink_locked(child_rec *rec)
{
    if (!rec->listed) {
        return;
    }
    if (rec->prev != NULL) {
        rec->prev->next = rec->next;
    } else {
        reg.active = rec->next;
    }
    if (rec->next != NULL) {
        rec->next->prev = rec->prev;
    } else {
        reg.tail = rec->prev;
    }
    rec->next = rec->prev = NULL;
    rec->listed = false;
}

static void reg_append_locked(child_rec *rec)
{
    CONC__ASSERT(!rec->listed && !rec->reaped); /* a new, running child */
    rec->prev = reg.tail;
    rec->next = NULL;
    if (reg.tail != NULL) {
        reg.tail->next = rec;
    } else {
        reg.active = rec;
    }
    reg.tail = rec;
    rec->listed = true;
}

static void rec_maybe_free_locked(child_rec *rec)
{
    if (rec->reaped && rec->handle_gone && rec->pins == 0) {
        CONC__ASSERT(!rec->listed); /* reaping took it off the list */
        reg_unlink_locked(rec);
        free(rec);
    }
}

/* Reaps rec if it has ended; true when it is reaped (now or before).
 * Caller holds reg_lock.  May free rec when nothing else needs it. */
static bool rec_try_reap_locked(child_rec *rec)
{
    if (rec->reaped) {
        return true;
    }
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r = waitid(P_PID, (id_t)rec->pid, &si, WEXITED | WNOHANG);
    if (r == 0 && si.si_pid == 0) {
        return false; /* still running */
    }
    if (r == 0) {
        rec->status = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
    } else if (errno == ECHILD) {
        rec->status = STATUS_UNKNOWN;
    } else {
        return false; /* EINTR: the caller looks again */
    }
    rec->reaped = true; /* running -> reaped, once: the test above */
    reg_unlink_locked(rec);
    rec_maybe_free_locked(rec);
    return true;
}

/* Reaps the children whose handles were freed and that have ended since
 * (Python's _cleanup() in start()): no one else would until the next
 * conc_active_children or the exit, and a program that starts children
 * and frees their handles would gather zombies until then.  Caller holds
 * reg_lock. */
static void reap_forgotten_locked(void)
{
    child_rec *rec = reg.active;
    while (rec != NULL) {
        child_rec *next = rec->next; /* rec may be freed by the reap */
        if (rec->handle_gone) {
            rec_try_reap_locked(rec);
        }
        rec = next;
    }
}

/* Waits until rec is reaped or dl passes: 0 or CONC_ETIMEDOUT.  The caller
 * keeps rec alive (its handle, or a pin). */
static int rec_wait(child_rec *rec, const conc__deadline *dl)
{
    long backoff_ns = 1000000;
    for (;;) {
        pthread_mutex_lock(&reg_lock);
        if (rec_try_reap_locked(rec)) {
            pthread_mutex_unlock(&reg_lock);
            return 0;
        }
        if (conc__deadline_passed(dl)) {
            pthread_mutex_unlock(&reg_lock);
            return conc__fail_lit(CONC_ETIMEDOUT, "conc_process_join: the "
                                                  "child was still running "
                                                  "at the timeout");
        }
        if (dl->forever) {
            /* No deadline: sleep in waitid itself, but with WNOWAIT, which
             * leaves the child a zombie - so its pid stays ours until we
             * reap it under the lock on the next pass.  Cheaper than a
             * pidfd and a poll.  EINTR: the next pass looks again. */
            pid_t pid = rec->pid;
            pthread_mutex_unlock(&reg_lock);
            siginfo_t si;
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) != 0 &&
                errno == ECHILD) {
                pthread_mutex_lock(&reg_lock);
                rec_try_reap_locked(rec); /* reaped by someone else */
                pthread_mutex_unlock(&reg_lock);
            }
            continue;
        }
        /* Under the lock: the child is unreaped, so the pid is still ours. */
        int fd = conc__os_pidfd_open(rec->pid);
        pthread_mutex_unlock(&reg_lock);
        double left = conc__deadline_left(dl);
        struct timespec ts;
        ts.tv_sec = (time_t)left;
        ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
        if (fd >= 0) {
            struct pollfd pfd = { .fd = fd, .events = POLLIN };
            /* EINTR, readiness and timeout all go round the loop: the
             * next pass reaps or checks the deadline. */
            (void)ppoll(&pfd, 1, dl->forever ? NULL : &ts, NULL);
            close(fd);
        } else {
            struct timespec nap = { 0, backoff_ns };
            if (!dl->forever && (ts.tv_sec == 0 && ts.tv_nsec < backoff_ns)) {
                nap = ts;
            }
            nanosleep(&nap, NULL);
            if (backoff_ns < 50000000) {
                backoff_ns *= 2;
            }
        }
    }
}

/* ---- fork handlers --------------------------------------------------- */

static void atfork_prepare(void)
{
    pthread_mutex_lock(&forker.mu);
    pthread_mutex_lock(&reg_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&reg_lock);
    pthread_mutex_unlock(&forker.mu);
}

/* In the child: the parent's children are not ours.  Records still owned
 * by a handle become foreign (the handle answers CONC_ESTATE); the rest
 * are freed.  The forker thread did not survive the fork. */
static void atfork_child(void)
{
    child_rec *rec = reg.active;
    while (rec != NULL) {
        child_rec *next = rec->next;
        rec->next = rec->prev = NULL;
        rec->listed = false;
        if (rec->handle_gone) {
            free(rec);
        } else {
            rec->foreign = true;
        }
        rec = next;
    }
    reg.active = reg.tail = NULL;
    pthread_mutex_unlock(&reg_lock);
    forker.running = false;
    forker.req = NULL;
    pthread_cond_init(&forker.cv, NULL);
    pthread_mutex_unlock(&forker.mu);
}

static void atfork_register(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* At load time as well, so the handlers are in place before any fork. */
__attribute__((constructor)) static void atfork_at_load(void)
{
    pthread_once(&atfork_once, atfork_register);
}

/* ---- exit --------------------------------------------------------------- */

/* Python's util._exit_function: terminate daemon children, then join
 * every child.  A daemon gets DAEMON_GRACE_S, then SIGKILL. */
static void children_exit_cleanup(void)
{
    pthread_mutex_lock(&reg_lock);
    for (child_rec *rec = reg.active; rec != NULL; rec = rec->next) {
        if (rec->daemon && !rec->reaped) {
            kill(rec->pid, SIGTERM);
        }
    }
    pthread_mutex_unlock(&reg_lock);
    /* One grace for all daemons, from the SIGTERMs just sent: a deadline
     * per daemon gave each a fresh one in turn (2 s times the daemons
     * that ignore SIGTERM). */
    conc__deadline grace, forever;
    conc__deadline_init(&grace, DAEMON_GRACE_S);
    conc__deadline_init(&forever, CONC_FOREVER);
    for (;;) {
        pthread_mutex_lock(&reg_lock);
        child_rec *rec = reg.active;
        if (rec == NULL) {
            pthread_mutex_unlock(&reg_lock);
            return;
        }
        rec->pins++;
        bool daemon = rec->daemon;
        pthread_mutex_unlock(&reg_lock);
        conc__deadline dl = daemon ? grace : forever;
        if (rec_wait(rec, &dl) != 0) {
            pthread_mutex_lock(&reg_lock);
            if (!rec->reaped) {
                kill(rec->pid, SIGKILL);
            }
            pthread_mutex_unlock(&reg_lock);
            conc__deadline_init(&dl, CONC_FOREVER);
            rec_wait(rec, &dl);
        }
        pthread_mutex_lock(&reg_lock);
        CONC__ASSERT(rec->pins > 0); /* ours, taken above */
        rec->pins--;
        rec_maybe_free_locked(rec);
        pthread_mutex_unlock(&reg_lock);
    }
}


/* ---- the child ---------------------------------------------------------- */

static _Noreturn void child_main(conc_process *p, const sigset_t *mask,
                                 pid_t parent)
{
    /* A fault armed in the parent is about the parent's calls. */
    conc__fault_arm(0);
    /* The parent flushed stdout and stderr before the fork, but another
     * of its threads may have written to them since (or this fork is a
     * pool's, from its manager thread): what their buffers hold now is
     * the parent's to print, and this child, which flushes both when it
     * ends, would print it a second time. */
    __fpurge(stdout);
    __fpurge(stderr);
    if (p->daemon) {
        /* Delivered when the thread that forked us dies; that thread lives
         * as long as the parent process (see the design comment).  If the
         * parent died before prctl took effect we have been re-parented
         * already and no signal will come: die the same way now. */
        conc__os_set_pdeathsig(SIGKILL);
        if (getppid() != parent) {
            kill(getpid(), SIGKILL);
        }
    }
    if (mask != NULL) {
        pthread_sigmask(SIG_SETMASK, mask, NULL);
    }
    snprintf(cur_name, sizeof cur_name, "%s", p->name);
    snprintf(cur_ident, sizeof cur_ident, "%s", p->ident);
    cur_parent = parent;
    cur_daemon = p->daemon;
    /* Relaxed: only this thread exists in the child now. */
    atomic_store_explicit(&child_counter, 0, memory_order_relaxed);
    conc__os_set_name(p->name);
    int code = p->target(p->arg);
    conc__exit_run(CONC__EXIT_STAGES - 1);
    fflush(stdout);
    fflush(stderr);
    conc__os_exit_child(code & 0xff);
}

/* Forks; returns the child's pid, or -1 with errno.  The child never
 * returns from here. */
static pid_t fork_child(conc_process *p, const sigset_t *mask, pid_t parent)
{
    pid_t pid = conc__os_fork();
    if (pid == 0) {
        child_main(p, mask, parent);
    }
    return pid;
}

static void *forker_main(void *unused)
{
    (void)unused;
    conc__os_set_name("conc-forker");
    pthread_mutex_lock(&forker.mu);
    for (;;) {
        while (forker.req == NULL) {
            pthread_cond_wait(&forker.cv, &forker.mu);
        }
        struct fork_req *req = forker.req;
        /* Not held across fork(): the prepare handler takes it. */
        pthread_mutex_unlock(&forker.mu);
        pid_t pid = fork_child(req->p, req->mask, req->parent);
        int e = errno;
        pthread_mutex_lock(&forker.mu);
        req->pid = pid;
        req->err_no = e;
        req->done = true;
        forker.req = NULL;
        pthread_cond_broadcast(&forker.cv);
    }
    return NULL;
}

/* Has the forker thread fork for us; the caller blocks meanwhile, so its
 * stack is stable and copied intact into the child. */
static pid_t fork_via_forker(conc_process *p, pid_t parent)
{
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    struct fork_req req = { .p = p, .mask = &mask, .parent = parent };
    pthread_mutex_lock(&forker.mu);
    if (!forker.running) {
        /* The forker inherits a full mask: no signal meant for the
         * program is ever delivered to it. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t th;
        void *stack;
        int r = conc__thread_spawn(&th, true, forker_main, NULL, &stack);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r != 0) {
            pthread_mutex_unlock(&forker.mu);
            errno = r;
            return -1;
        }
        forker.running = true;
    }
    while (forker.req != NULL) {
        pthread_cond_wait(&forker.cv, &forker.mu);
    }
    forker.req = &req;
    pthread_cond_broadcast(&forker.cv);
    while (!req.done) {
        pthread_cond_wait(&forker.cv, &forker.mu);
    }
    pthread_mutex_unlock(&forker.mu);
    errno = req.err_no;
    return req.pid;
}

/* ---- the public calls -------------------------------------------------- */

int conc_process_new(conc_process **out, const conc_process_opts *opts)
{
    int err;
    if (out == NULL || opts == NULL || opts->target == NULL) {
        return CONC__FAIL_NULL(out == NULL    ? "out"
                               : opts == NULL ? "opts"
                                              : "opts->target");
    }
    *out = NULL;
    pthread_once(&atfork_once, atfork_register);
    conc_process *p = conc__calloc(1, sizeof *p);
    if (p == NULL) {
        err = conc__fail(CONC_ENOMEM, "conc_process_new: out of memory");
        goto fail;
    }
    /* Relaxed: only distinct numbers are needed. */
    unsigned long n = atomic_fetch_add_explicit(&child_counter, 1,
                                                memory_order_relaxed) + 1;
    /* A nesting deeper than ident holds is cut (and says so with '~'). */
    int w = cur_ident[0] != '\0'
                ? snprintf(p->ident, sizeof p->ident, "%s:%lu", cur_ident, n)
                : snprintf(p->ident, sizeof p->ident, "%lu", n);
    if (w >= (int)sizeof p->ident) {
        p->ident[sizeof p->ident - 2] = '~';
    }
    if (opts->name != NULL) {
        p->name = conc__strdup(opts->name);
    } else {
        char buf[sizeof p->ident + 16];
        snprintf(buf, sizeof buf, "Process-%s", p->ident);
        p->name = conc__strdup(buf);
    }
    if (p->name == NULL) {
        err = conc__fail(CONC_ENOMEM, "conc_process_new: out of memory");
        goto fail_p;
    }
    p->target = opts->target;
    p->arg = opts->arg;
    p->daemon = opts->daemon;
    p->owner = getpid();
    atomic_init(&p->state, P_NEW);
    *out = p;
    return 0;
fail_p:
    free(p);
fail:
    return err;
}

int conc_process_start(conc_process *p)
{
    int err;
    if (p == NULL) {
        return CONC__FAIL_NULL("p");
    }
    if (p->owner != getpid()) {
        return conc__fail(CONC_ESTATE, "conc_process_start: the handle was "
                          "made by another process (pid %d)",
                          (int)p->owner);
    }
    int expect = P_NEW;
    /* acq_rel: pairs with the release store of P_NEW by a failed start. */
    if (!atomic_compare_exchange_strong_explicit(&p->state, &expect,
                                                 P_STARTING,
                                                 memory_order_acq_rel,
                                                 memory_order_acquire)) {
        return conc__fail_lit(CONC_ESTATE, "conc_process_start: a process "
                                           "can only be started once");
    }
    if (cur_daemon) {
        err = conc__fail_lit(CONC_EDAEMON, "conc_process_start: daemonic "
                                           "processes are not allowed to "
                                           "have children");
        goto fail_state;
    }
    child_rec *rec = conc__calloc(1, sizeof *rec);
    if (rec == NULL) {
        err = conc__fail(CONC_ENOMEM, "conc_process_start: out of memory");
        goto fail_state;
    }
    rec->daemon = p->daemon;
    pthread_once(&atfork_once, atfork_register);
    conc__exit_hook(CONC__EXIT_CHILDREN, children_exit_cleanup);
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid;
    if (p->daemon && conc__os_gettid() != parent) {
        pid = fork_via_forker(p, parent);
    } else {
        pid = fork_child(p, NULL, parent);
    }
    if (pid < 0) {
        int e = errno;
        free(rec);
        errno = e;
        err = conc__fail_sys(e == ENOMEM ? CONC_ENOMEM : CONC_ESYS,
                             "conc_process_start: fork");
        goto fail_state;
    }
    rec->pid = pid;
    pthread_mutex_lock(&reg_lock);
    reap_forgotten_locked();
    reg_append_locked(rec);
    pthread_mutex_unlock(&reg_lock);
    p->rec = rec;
    /* Only this call moves the handle out of P_STARTING (its CAS won). */
    CONC__ASSERT(atomic_load_explicit(&p->state, memory_order_relaxed) ==
                 P_STARTING);
    /* Release: publishes p->rec to every call that loads the state with
     * acquire (started_rec). */
    atomic_store_explicit(&p->state, P_STARTED, memory_order_release);
    return 0;
fail_state:
    CONC__ASSERT(atomic_load_explicit(&p->state, memory_order_relaxed) ==
                 P_STARTING);
    /* Release: pairs with the acquire CAS of the next start. */
    atomic_store_explicit(&p->state, P_NEW, memory_order_release);
    return err;
}

/* The record of a started child of this very process, or CONC_ESTATE. */
static int started_rec(const conc_process *p, child_rec **rec,
                       const char *who)
{
    /* Acquire: pairs with the release store of P_STARTED in start. */
    if (atomic_load_explicit(&p->state, memory_order_acquire) != P_STARTED) {
        return conc__fail(CONC_ESTATE, "%s: the process was not started",
                          who);
    }
    if (p->owner != getpid()) {
        return conc__fail(CONC_ESTATE, "%s: the process is not a child of "
                          "the calling process", who);
    }
    CONC__ASSERT(p->rec != NULL); /* stored before P_STARTED */
    pthread_mutex_lock(&reg_lock);
    bool foreign = p->rec->foreign;
    pthread_mutex_unlock(&reg_lock);
    if (foreign) {
        return conc__fail_lit(CONC_ESTATE, "the process is not a child of "
                                           "the calling process");
    }
    *rec = p->rec;
    return 0;
}

int conc_process_join(conc_process *p, double timeout)
{
    conc__deadline dl;
    child_rec *rec = NULL;
    if (p == NULL) {
        return CONC__FAIL_NULL("p");
    }
    int err = conc__deadline_init(&dl, timeout);
    if (err != 0) {
        return err;
    }
    err = started_rec(p, &rec, "conc_process_join");
    if (err != 0) {
        return err;
    }
    return rec_wait(rec, &dl);
}

bool conc_process_is_alive(conc_process *p)
{
    child_rec *rec = NULL;
    if (p == NULL || started_rec(p, &rec, "conc_process_is_alive") != 0) {
        return false;
    }
    pthread_mutex_lock(&reg_lock);
    bool alive = !rec_try_reap_locked(rec);
    pthread_mutex_unlock(&reg_lock);
    return alive;
}

static int send_signal(conc_process *p, int sig, const char *who)
{
    child_rec *rec = NULL;
    if (p == NULL) {
        return conc__fail(CONC_EINVAL, "%s: p is NULL", who);
    }
    int err = started_rec(p, &rec, who);
    if (err != 0) {
        return err;
    }
    pthread_mutex_lock(&reg_lock);
    /* Unreaped under the lock: the pid cannot have been recycled. */
    if (!rec->reaped && kill(rec->pid, sig) != 0 && errno != ESRCH) {
        err = conc__fail_sys(CONC_ESYS, "%s: kill(%d, %d)", who,
                             (int)rec->pid, sig);
    }
    pthread_mutex_unlock(&reg_lock);
    return err;
}

int conc_process_terminate(conc_process *p)
{
    return send_signal(p, SIGTERM, "conc_process_terminate");
}

int conc_process_kill(conc_process *p)
{
    return send_signal(p, SIGKILL, "conc_process_kill");
}

int conc_process_exitcode(conc_process *p, int *code)
{
    child_rec *rec = NULL;
    if (p == NULL || code == NULL) {
        return CONC__FAIL_NULL(p == NULL ? "p" : "code");
    }
    int err = started_rec(p, &rec, "conc_process_exitcode");
    if (err != 0) {
        return err;
    }
    pthread_mutex_lock(&reg_lock);
    if (rec_try_reap_locked(rec)) {
        *code = rec->status;
    } else {
        err = conc__fail_lit(CONC_ESTATE, "conc_process_exitcode: the "
                                          "process is still running");
    }
    pthread_mutex_unlock(&reg_lock);
    return err;
}

pid_t conc_process_pid(const conc_process *p)
{
    /* Acquire: pairs with the release store of P_STARTED in start. */
    if (p == NULL ||
        atomic_load_explicit(&p->state, memory_order_acquire) != P_STARTED) {
        return 0;
    }
    return p->rec->pid;
}

const char *conc_process_name(const conc_process *p)
{
    return p == NULL ? NULL : p->name;
}

void conc_process_free(conc_process *p)
{
    if (p == NULL) {
        return;
    }
    /* Acquire: pairs with the release store of P_STARTED in start. */
    if (atomic_load_explicit(&p->state, memory_order_acquire) == P_STARTED) {
        child_rec *rec = p->rec;
        pthread_mutex_lock(&reg_lock);
        if (p->owner != getpid() || rec->foreign) {
            /* A copy made by fork: the record is this handle's alone. */
            reg_unlink_locked(rec);
            free(rec);
        } else {
            rec_try_reap_locked(rec);
            rec->handle_gone = true;
            rec_maybe_free_locked(rec);
        }
        pthread_mutex_unlock(&reg_lock);
    }
    free(p->name);
    free(p);
}

const char *conc_current_name(void)
{
    return cur_name;
}

pid_t conc_parent_pid(void)
{
    return cur_parent;
}

size_t conc_active_children(void)
{
    size_t n = 0;
    pthread_mutex_lock(&reg_lock);
    child_rec *rec = reg.active;
    while (rec != NULL) {
        child_rec *next = rec->next; /* rec may be freed by the reap */
        if (!rec_try_reap_locked(rec)) {
            n++;
        }
        rec = next;
    }
    pthread_mutex_unlock(&reg_lock);
    return n;
}

size_t conc_cpu_count(void)
{
    return (size_t)conc__os_cpu_count();
}
