/* conc/process.h - processes: Python's multiprocessing.Process, os.getpid,
 * parent_process, active_children and cpu_count.
 *
 * A child is fork()ed from the calling program, so `arg` and every libconc
 * object created before conc_process_start() work in the child as in the
 * parent (Python's fork inheritance).  How this stays safe when the program
 * already runs threads is explained at the top of src/process.c.
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
 * with its return value.  CONC_ESTATE when started before; CONC_EDAEMON
 * when the caller is itself a daemon process; CONC_ESYS when fork fails. */
CONC_API int conc_process_start(conc_process *p);

/* conc_process_join - waits for the child to end, at most timeout seconds,
 * and reaps it.  0 when it has ended, CONC_ETIMEDOUT when it still runs,
 * CONC_ESTATE before start, CONC_EINVAL for a bad timeout. */
CONC_API int conc_process_join(conc_process *p, double timeout);

/* conc_process_is_alive - started and not yet ended (reaps it if ended). */
CONC_API bool conc_process_is_alive(conc_process *p);

/* conc_process_terminate / conc_process_kill - SIGTERM / SIGKILL.  0 also
 * when the child has already ended (Python: no-op); CONC_ESTATE before
 * start. */
CONC_API int conc_process_terminate(conc_process *p);
CONC_API int conc_process_kill(conc_process *p);

/* conc_process_exitcode - the exit status: the target's return value, or
 * -N when signal N ended it.  CONC_ESTATE while running or before start. */
CONC_API int conc_process_exitcode(conc_process *p, int *code);

/* conc_process_pid - the child's pid; 0 before start or for NULL. */
CONC_API pid_t conc_process_pid(const conc_process *p);

/* conc_process_name - the name given or "Process-N"; the child's kernel
 * name (ps -o comm) is its first 15 bytes.  Owned by p. */
CONC_API const char *conc_process_name(const conc_process *p);

/* conc_process_free - releases p.  A child still running is not waited
 * for here: it is reaped later (conc_active_children, or at exit), so no
 * zombie is left.  NULL is a no-op. */
CONC_API void conc_process_free(conc_process *p);

/* conc_current_name - "MainProcess", or this child's name. */
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
