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

/* conc_thread_new - CONC_EINVAL for NULL out, opts or target; CONC_ENOMEM. */
CONC_API int conc_thread_new(conc_thread **out, const conc_thread_opts *opts);

/* conc_thread_start - CONC_ESTATE when started before; CONC_ESYS. */
CONC_API int conc_thread_start(conc_thread *t);

/* conc_thread_join - waits at most timeout seconds for the thread to end.
 * 0 once ended, CONC_ETIMEDOUT, CONC_ESTATE before start or when a thread
 * joins itself. */
CONC_API int conc_thread_join(conc_thread *t, double timeout);

/* conc_thread_result - the target's return value, once joined;
 * CONC_ESTATE before. */
CONC_API int conc_thread_result(conc_thread *t, void **result);

CONC_API bool conc_thread_is_alive(conc_thread *t);
CONC_API const char *conc_thread_name(const conc_thread *t);

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
