/* process_int.h - what process.c and thread.c share: the one exit handler
 * that joins threads and children when main returns, and the thread
 * registry's join-all that a child process runs before it _exit()s. */
#ifndef CONC_PROCESS_INT_H
#define CONC_PROCESS_INT_H

#include <pthread.h>
#include <stdbool.h>

/* Registers (once per process image) the atexit handler that, in order,
 * joins every started non-daemon conc_thread, terminates daemon children
 * and joins all children.  Called by conc_thread_start and
 * conc_process_start. */
void conc__process_atexit_register(void);

/* Joins every started, not yet finished, non-daemon conc_thread of this
 * process other than the caller (Python's threading._shutdown).  Blocks
 * without limit, as Python does. */
void conc__thread_join_all(void);

/* pthread_create, detached or joinable.  Under ThreadSanitizer, in a
 * forked child, the thread gets a stack of its own (*stack, else NULL):
 * see thread.c.  Returns 0 or an errno value. */
int conc__thread_spawn(pthread_t *th, bool detached, void *(*fn)(void *),
                       void *arg, void **stack);

#endif
