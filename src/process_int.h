/* process_int.h - what process.c and the thread pool take from
 * thread.c: the pthread creation that knows how to give a thread in a
 * forked child its own stack under ThreadSanitizer, and the naming of a
 * thread for conc_current_thread_name.  (Dependencies run one way:
 * process.c uses thread.c, never the reverse; the exit order lives in
 * exit.c.) */
#ifndef CONC_PROCESS_INT_H
#define CONC_PROCESS_INT_H

#include <pthread.h>
#include <stdbool.h>

/* Names the calling thread for conc_current_thread_name (a pool worker
 * thread: its name, which must outlive the thread's run). */
void conc__thread_name_set(const char *name);

/* pthread_create, detached or joinable.  Under ThreadSanitizer, in a
 * forked child, the thread gets a stack of its own (*stack, else NULL):
 * see thread.c.  Returns 0 or an errno value. */
int conc__thread_spawn(pthread_t *th, bool detached, void *(*fn)(void *),
                       void *arg, void **stack);

#endif
