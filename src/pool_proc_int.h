/* pool_proc_int.h - the process backend's (pool_proc.c) check of a
 * worker's result record, for its fuzz target, and the hooks a test task
 * uses to scribble on its own worker's rings.  Nothing else of the backend
 * is visible outside its file.
 */
#ifndef CONC_POOL_PROC_INT_H
#define CONC_POOL_PROC_INT_H

#include "conc_int.h"

/* A result record a worker wrote in its result ring, once checked. */
typedef struct conc__pool_res_view {
    uint32_t len, type, item;
    int32_t code;
    uint64_t seq;
    const unsigned char *out, *err; /* inside the ring */
    size_t outlen, errlen;
} conc__pool_res_view;

/* Checks the record at position pos of a result ring (cap bytes, pos and
 * tail byte counts that only grow) before anything of it is trusted, and
 * fills *v: 1 for a whole record that lies inside the ring and before
 * tail, with an output and an error text that fill it exactly; 0 when
 * pos == tail (nothing there); a negative number naming the check that
 * failed otherwise.  Compares only; reads nothing outside ring[0, cap). */
int conc__pool_res_check(const unsigned char *ring, size_t cap, uint64_t pos,
                         uint64_t tail, conc__pool_res_view *v);

/* For tests: inside a task run by a process worker, that worker's result
 * ring, the word that publishes its end, and the task's record number and
 * item (what a task that scribbles on memory it does not own could
 * overwrite or forge); false elsewhere. */
bool conc__pool_worker_result_ring(unsigned char **ring, size_t *cap,
                                   _Atomic uint64_t **tail, uint64_t *seq,
                                   uint32_t *item);

/* For tests: inside a task run by a process worker, that worker's task
 * ring, where the running task's record starts in it, and the word that
 * publishes the ring's end (the records behind the running one are what
 * a scribbling task could overwrite); false elsewhere. */
bool conc__pool_worker_task_ring(unsigned char **ring, size_t *cap,
                                 uint64_t *pos, _Atomic uint64_t **tail);

/* For tests: when set, called by the process backend right after it
 * took a run of queued tasks off the queue and before it starts any
 * (under the drive lock, not the pool lock), so that a test can make a
 * conc_pool_shutdown(cancel_futures) land while the run is out of the
 * queue.  NULL in every program but those tests. */
extern void (*conc__pool_test_run_taken)(conc_pool *p);

#endif
