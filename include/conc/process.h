/* conc/process.h - processes: Python's multiprocessing.Process, os.getpid,
 * parent_process, active_children and cpu_count.
 *
 * A child is fork()ed from the calling program, so `arg` and every libconc
 * object created before conc_process_start() work in the child as in the
 * parent (Python's fork inheritance).  This stays safe when the program
 * already runs threads: glibc resets malloc and stdio in the child, and
 * libconc's own locks are taken around every fork by pthread_atfork
 * handlers.  Only the forking thread
 * exists in the child; the target should not wait for locks that other
 * threads of the parent might hold (its own pthread mutexes, say).
 *
 * The child runs target(arg); then, as when main returns, it joins its
 * non-daemon threads, terminates its daemon children and joins the rest,
 * flushes stdout and stderr and _exit()s with target's return value.  The
 * parent's atexit handlers do not run in the child (Python's os._exit);
 * FILE streams other than stdout and stderr are the target's to flush.  A
 * target that calls exit() itself runs the program's atexit handlers in
 * the child too (libconc's clean-up among them): return instead.
 *
 * When main returns (or exit() is called), libconc joins non-daemon
 * threads, sends SIGTERM to daemon children (SIGKILL after 2 s if they
 * linger) and joins every child - Python's order.  A daemon child gets
 * SIGKILL when its parent dies by any means, SIGKILL included.
 */
#ifndef CONC_PROCESS_H
#define CONC_PROCESS_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_process conc_process;

/* conc_process_fn - a child's body; its return value is the exit code
 * (0..255, as exit() keeps it). */
typedef int (*conc_process_fn)(void *arg);

typedef struct conc_process_opts {
    conc_process_fn target; /* required */
    void *arg;              /* passed to target in the child */
    const char *name;       /* NULL: "Process-N" ("Process-1:2" in a child) */
    bool daemon;            /* killed when the parent ends, even by SIGKILL */
} conc_process_opts;

/* conc_process_new - a process object, not yet started.  CONC_EINVAL for a
 * NULL out, opts or target; CONC_ENOMEM. */
CONC_API int conc_process_new(conc_process **out, const conc_process_opts *opts);

/* conc_process_start - forks the child, which runs target(arg) and exits
 * with its return value.  CONC_EINVAL for NULL; CONC_ESTATE when started
 * before, or when p was made in another process (a handle copied by fork);
 * CONC_EDAEMON when the caller is itself a daemon process; CONC_ENOMEM;
 * CONC_ESYS when fork fails (errno kept).  A failed start leaves p as new.
 * Safe from any thread; a daemon started from a thread other than the
 * main thread is forked by libconc's internal forker thread while the
 * caller waits, so the daemon does not die with the thread that made it. */
CONC_API int conc_process_start(conc_process *p);

/* conc_process_join - waits for the child to end, at most timeout seconds,
 * and reaps it.  0 when it has ended (again 0 on later calls),
 * CONC_ETIMEDOUT when it still runs, CONC_ESTATE before start or when p is
 * not a child of this process, CONC_EINVAL for NULL or a bad timeout.
 * Several threads may join the same child at once; a signal does not end
 * the wait early nor restart its clock. */
CONC_API int conc_process_join(conc_process *p, double timeout);

/* conc_process_is_alive - started and not yet ended (reaps it if ended).
 * false for NULL, before start, or for a handle of another process. */
CONC_API bool conc_process_is_alive(conc_process *p);

/* conc_process_terminate / conc_process_kill - SIGTERM / SIGKILL.  0 also
 * when the child has already ended (Python: no-op); CONC_ESTATE before
 * start, or when p is not a child of this process (a handle copied by
 * fork: its pid may be reused by then, so no signal is sent). */
CONC_API int conc_process_terminate(conc_process *p);
CONC_API int conc_process_kill(conc_process *p);

/* conc_process_exitcode - the exit status: the target's return value, or
 * -N when signal N ended it; 255 when something outside libconc reaped the
 * child (SIGCHLD set to SIG_IGN, a waitpid(-1)) and the status is lost.
 * CONC_ESTATE while running or before start; CONC_EINVAL for NULLs. */
CONC_API int conc_process_exitcode(conc_process *p, int *code);

/* conc_process_pid - the child's pid; 0 before start or for NULL. */
CONC_API pid_t conc_process_pid(const conc_process *p);

/* conc_process_name - the name given or "Process-N" (N counts handles
 * made by this process; "Process-1:2" for one made in child Process-1);
 * the child's kernel name (ps -o comm) is its first 15 bytes.  Owned by p;
 * NULL for NULL. */
CONC_API const char *conc_process_name(const conc_process *p);

/* conc_process_free - releases p.  A child still running is not waited
 * for here: it is reaped once it has ended, by the next
 * conc_process_start or conc_active_children (Python reaps in start() and
 * active_children() too), or at exit, so no zombie outlives the next of
 * those calls.  NULL is a no-op. */
CONC_API void conc_process_free(conc_process *p);

/* conc_current_name - "MainProcess", or this child's name (cut at 255
 * bytes).  Static; never NULL. */
CONC_API const char *conc_current_name(void);

/* conc_parent_pid - the pid of the process that started this one with
 * libconc; 0 in a process not started by libconc (Python: None). */
CONC_API pid_t conc_parent_pid(void);

/* conc_active_children - how many started children have not ended yet;
 * reaps those that have (Python's active_children()). */
CONC_API size_t conc_active_children(void);

/* conc_cpu_count - CPUs on the machine (Python: os.cpu_count()); at least 1. */
CONC_API size_t conc_cpu_count(void);

#ifdef __cplusplus
}
#endif
#endif
