/* sync_self.c - who the calling thread is, as an owner-stamped lock word
 * (src/sync_int.h) records it, and whether the thread an identity names
 * still runs.  Every lock of libconc stamps its word with this identity
 * and judges a holder dead with conc__sync_alive().
 *
 * Identity.  stamp << 32 | tid: the tid of the calling thread and the low
 * 32 bits of its kernel start time (clock ticks since boot, /proc), so a
 * reused tid is not taken for the holder.  It is computed once per thread
 * and cached in initial-exec TLS, so the fast paths read it without a
 * call.  The stamp wraps after ~497 days of ticks: fooling it takes a new
 * thread with the dead holder's tid started in the same 10 ms tick, i.e.
 * pid_max threads created within 10 ms.  Identities are only meaningful
 * within one PID namespace: processes sharing a lock must share it too.
 *
 * Liveness.  A holder is dead when its tid is gone from /proc, a zombie,
 * or runs with another start time (the tid was reused).  Each check reads
 * /proc (about 10 us), so only waiters and failed tries pay it.  When
 * /proc shows nothing of the holder - hidepid hiding another user's
 * process, /proc not mounted or covered - the kernel is asked instead
 * (kill(tid, 0), conc__os_thread_alive): the holder is dead only if no
 * task has its id.  So a lock never has two holders; a holder whose tid
 * was reused by a process we cannot see is waited for until that one
 * ends.
 *
 * Fork.  The child's only thread has a new tid, so a pthread_atfork child
 * handler clears the cached identity.  It is registered when the library
 * is loaded, before main: not a pthread_once on first use, since a thread
 * forking while another is inside that once would leave the child's
 * once-control "in progress" for ever and its first lock call would hang.
 * A prepare handler counts the forks (conc__sync_forks), which tells
 * conc_lock which locks no other process can map yet (lock.c).  A
 * process forked without glibc's fork() (raw clone, _Fork, vfork) skips
 * the handlers, keeps its parent's identity and count, and must not call
 * libconc at all: besides objects made before it, the queue's producer
 * places (queue.c, PRODUCER THREADS) are per process and would take the
 * forking thread's for a gone thread's.  libconc's process module uses
 * fork(), and README says so to users.
 */
#include "sync_int.h"

#include <pthread.h>
#include <unistd.h>

_Thread_local uint64_t conc__sync_self
    __attribute__((tls_model("initial-exec")));

/* Written only by the child's single thread, before it can start others;
 * read-only everywhere else. */
unsigned long conc__sync_fork_epoch = 1;

/* Bumped by a thread about to fork; read by lock calls (see sync_int.h).
 * Relaxed everywhere: a reader that matters is the only thread of its
 * process (lock.c), so it reads its own writes; fork orders the rest. */
_Atomic uint64_t conc__sync_forks = 1;

/* Before every fork, in the parent: from here on, no object made so far
 * is this process's alone (the child will map it too). */
static void atfork_prepare(void)
{
    atomic_fetch_add_explicit(&conc__sync_forks, 1, memory_order_relaxed);
}

/* The child's only thread got a new tid: forget the parent's. */
static void atfork_child(void)
{
    conc__sync_self = 0;
    conc__sync_fork_epoch++;
}

/* Runs when the library is loaded, before any thread of the program can
 * exist.  Not a pthread_once on first use: a thread forking while another
 * is inside that once would leave the child's once-control "in progress"
 * for ever, and the child's first lock call would hang. */
__attribute__((constructor)) static void sync_init(void)
{
    pthread_atfork(atfork_prepare, NULL, atfork_child);
}

uint64_t conc__sync_self_slow(void)
{
    pid_t tid = conc__os_gettid();
    uint64_t st = conc__os_proc_starttime(tid);
    uint64_t id = ((uint64_t)(uint32_t)st << 32) |
                  ((uint64_t)(uint32_t)tid & CONC__OL_TID_MASK);
    /* A tid is never 0 and fits the mask (pid_max is at most 2^22), so
     * the identity marks a word as held and leaves WAITERS clear. */
    CONC__ASSERT((id & CONC__OL_TID_MASK) == (uint64_t)tid && tid > 0);
    conc__sync_self = id;
    return id;
}

/* Whether the holder named by word s still runs.  Reads /proc: slow path
 * only. */
bool conc__sync_alive(uint64_t s)
{
    pid_t tid = (pid_t)(s & CONC__OL_TID_MASK);
    uint32_t stamp = (uint32_t)(s >> 32);
    uint64_t st = conc__os_proc_starttime(tid);
    if (st == 0) {
        /* /proc shows nothing of it: the kernel says whether any task
         * has that id (conc__os_thread_alive). */
        return conc__os_thread_alive(tid, 0);
    }
    /* Seen: not a zombie, and the same thread (stamp) as the holder. */
    return conc__os_thread_alive(tid, st) &&
           (stamp == 0 || (uint32_t)st == stamp);
}
