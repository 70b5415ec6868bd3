/* conc/thread.h - threads: Python's threading.Thread.
 *
 * Non-daemon threads that were started and not joined are joined when the
 * program's main returns (exit()); daemon threads are not waited for.
 */
#ifndef CONC_THREAD_H
#define CONC_THREAD_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_thread conc_thread;
typedef void *(*conc_thread_fn)(void *arg);

typedef struct conc_thread_opts {
    conc_thread_fn target; /* required */
    void *arg;
    const char *name;      /* NULL: "Thread-N" */
    bool daemon;
} conc_thread_opts;

/* conc_thread_new - a thread object, not yet started; the name defaults
 * to "Thread-N" and becomes the kernel thread name (first 15 bytes).
 * CONC_EINVAL for NULL out, opts or target; CONC_ENOMEM. */
CONC_API int conc_thread_new(conc_thread **out, const conc_thread_opts *opts);

/* conc_thread_start - starts the thread and returns once it runs (ident
 * is valid then).  CONC_EINVAL for NULL; CONC_ESTATE when started before;
 * CONC_ENOMEM; CONC_ESYS when pthread_create fails (errno kept).  A failed
 * start leaves t as new. */
CONC_API int conc_thread_start(conc_thread *t);

/* conc_thread_join - waits at most timeout seconds for the thread to end.
 * 0 once ended, CONC_ETIMEDOUT, CONC_ESTATE before start or when a thread
 * joins itself, CONC_EINVAL for NULL or a bad timeout.  Waits on the
 * monotonic clock; a signal neither ends the wait early nor restarts its
 * clock; any number of threads may join at once.  In a forked child the
 * parent's threads do not exist: join returns 0 at once there. */
CONC_API int conc_thread_join(conc_thread *t, double timeout);

/* conc_thread_result - the target's return value, once a join returned 0
 * (NULL if the target called pthread_exit); CONC_ESTATE before;
 * CONC_EINVAL for NULLs. */
CONC_API int conc_thread_result(conc_thread *t, void **result);

/* conc_thread_is_alive - started and its target has not returned. */
CONC_API bool conc_thread_is_alive(conc_thread *t);
/* conc_thread_name - the name given or "Thread-N"; owned by t; NULL for
 * NULL. */
CONC_API const char *conc_thread_name(const conc_thread *t);

/* conc_current_thread_name - Python's threading.current_thread().name:
 * the name of the conc_thread that calls it (as conc_thread_name), or of
 * the pool worker thread ("ThreadPoolWorker-N", or the pool's
 * name_prefix and a number); "MainThread" in a process's first thread
 * (a pool's process workers and conc_process children included); and
 * "Dummy-<kernel thread id>" in a thread started without libconc
 * (Python's _DummyThread).  A child forked from a thread keeps that
 * thread's name, as Python's does after os.fork().  Never NULL; valid
 * while the calling thread runs. */
CONC_API const char *conc_current_thread_name(void);

/* conc_thread_ident - the kernel thread id (Python's native_id); 0 before
 * start. */
CONC_API pid_t conc_thread_ident(const conc_thread *t);

/* conc_thread_free - NULL is a no-op.  A running thread is detached and
 * keeps running (a non-daemon one is still joined at exit). */
CONC_API void conc_thread_free(conc_thread *t);

#ifdef __cplusplus
}
#endif
#endif
